//! The HTTP API of one node (see `docs/http-api.md`): client routes, operator routes, the
//! upgrade that opens a peer connection ([`crate::inbound`]), the JSON route peer
//! messages may also be posted to, and the test-only fault injection route
//! ([`crate::fault`]). Every error is JSON `{"error": "..."}`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ringkv_core::{Reply, Request, RequestError, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::actor::{NodeHandle, Unavailable};
use crate::answer::{self, JsonReply};
use crate::fault::{parse_block_list, PeerFilter};
use crate::inbound::{decode_json_batch, Inbound, INTERNAL_PATH};
use crate::metrics::{add, Gauges, Metrics};
use crate::wire::PEER_PATH;

/// Largest body of a client request (the JSON form of insert).
pub const CLIENT_BODY_BYTES_MAX: usize = 2 << 20;
/// Largest body of a batch of peer messages (snapshots during a hand-over are large).
pub const INTERNAL_BODY_BYTES_MAX: usize = 64 << 20;
/// Path of the test-only partition filter (see [`crate::fault`]).
pub const PARTITION_PATH: &str = "/admin/partition";

/// What every handler of a node shares (behind one `Arc`: axum clones the state for each
/// request).
struct AppState {
    node: NodeHandle,
    metrics: Arc<Metrics>,
    /// The cluster secret the internal endpoint requires, if any.
    secret: Option<Arc<str>>,
    /// Where peer connections are handed.
    inbound: Arc<Inbound>,
    /// The partition filter `POST /admin/partition` sets; `None` unless the node was
    /// started with fault injection allowed.
    faults: Option<Arc<PeerFilter>>,
}

/// The router of one node. With `secret`, the internal endpoints (and the fault injection
/// endpoint) accept only requests that carry `Authorization: Bearer <secret>`; peer
/// connections go to `inbound`. With `faults` (test only), `POST /admin/partition` sets
/// that filter; without, it answers 404.
pub fn router(
    node: NodeHandle,
    metrics: Arc<Metrics>,
    secret: Option<Arc<str>>,
    inbound: Arc<Inbound>,
    faults: Option<Arc<PeerFilter>>,
) -> Router {
    let state = AppState {
        node,
        metrics,
        secret,
        inbound,
        faults,
    };
    Router::new()
        .route("/insert/{key}/{value}", post(insert_path))
        .route("/insert", post(insert_json))
        .route("/query/{key}", get(query))
        .route("/delete/{key}", delete(delete_key))
        .route("/join", post(join))
        .route("/depart", post(depart))
        .route("/overlay", get(overlay))
        .route("/health", get(health))
        .route("/node", get(node_status))
        .route("/metrics", get(render_metrics))
        .route(PEER_PATH, get(peer_connection))
        .route(PARTITION_PATH, post(set_partition).get(get_partition))
        .route(
            INTERNAL_PATH,
            post(internal_message).layer(DefaultBodyLimit::max(INTERNAL_BODY_BYTES_MAX)),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(CLIENT_BODY_BYTES_MAX))
        .with_state(Arc::new(state))
}

fn error(status: StatusCode, message: impl Into<String>) -> JsonReply {
    (status, Json(json!({ "error": message.into() }).into()))
}

// ----- client routes -----

async fn insert_path(
    State(s): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> JsonReply {
    match path {
        Ok(Path((key, value))) => s.call(Request::Insert { key, value }).await,
        Err(rejection) => s.refused("insert", path_error(rejection)),
    }
}

#[derive(Deserialize)]
struct InsertBody {
    key: String,
    value: String,
}

async fn insert_json(
    State(s): State<Arc<AppState>>,
    body: Result<Json<InsertBody>, JsonRejection>,
) -> JsonReply {
    match body {
        Ok(Json(InsertBody { key, value })) => s.call(Request::Insert { key, value }).await,
        Err(rejection) => {
            let message = format!(
                "{}; send a JSON object {{\"key\": \"...\", \"value\": \"...\"}} with Content-Type: application/json",
                rejection.body_text()
            );
            s.refused("insert", error(rejection.status(), message))
        }
    }
}

async fn query(
    State(s): State<Arc<AppState>>,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
) -> JsonReply {
    // A literal `*` asks for every pair; a key named `*` is sent encoded, as `%2A`.
    if uri.path() == "/query/*" {
        return s.call(Request::QueryAll).await;
    }
    match path {
        Ok(Path(key)) => s.call(Request::Query { key }).await,
        Err(rejection) => s.refused("query", path_error(rejection)),
    }
}

async fn delete_key(
    State(s): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> JsonReply {
    match path {
        Ok(Path(key)) => s.call(Request::Delete { key }).await,
        Err(rejection) => s.refused("delete", path_error(rejection)),
    }
}

async fn join(State(s): State<Arc<AppState>>) -> JsonReply {
    s.call(Request::Join).await
}

async fn depart(State(s): State<Arc<AppState>>) -> JsonReply {
    s.call(Request::Depart).await
}

async fn overlay(State(s): State<Arc<AppState>>) -> JsonReply {
    s.call(Request::Overlay).await
}

fn path_error(rejection: PathRejection) -> JsonReply {
    let message = format!(
        "{}; percent-encode keys and values as single path segments (e.g. '/' as %2F, '?' as %3F)",
        rejection.body_text()
    );
    error(StatusCode::BAD_REQUEST, message)
}

impl AppState {
    /// Ask the node, map the answer to HTTP and count it.
    async fn call(&self, request: Request) -> JsonReply {
        let op = request.op_name();
        let started = Instant::now();
        let reply = match self.node.request(request).await {
            Ok(reply) => reply_json(reply),
            Err(unavailable) => unavailable_json(unavailable),
        };
        self.metrics
            .record_request(op, reply.0.as_u16(), started.elapsed());
        reply
    }

    /// Count a request refused before it reached the node.
    fn refused(&self, op: &str, reply: JsonReply) -> JsonReply {
        self.metrics
            .record_request(op, reply.0.as_u16(), std::time::Duration::ZERO);
        reply
    }
}

/// The HTTP form of a node's answer.
pub fn reply_json(reply: Reply) -> JsonReply {
    match reply {
        Ok(response) => response_json(response),
        Err(err) => request_error_json(&err),
    }
}

fn response_json(response: Response) -> JsonReply {
    let ok = |body: Value| (StatusCode::OK, Json(body.into()));
    match response {
        Response::Inserted {
            key,
            value,
            node,
            hops,
        } => answer::inserted(key, value, node, hops),
        Response::Found {
            key,
            value,
            node,
            hops,
        } => answer::found(key, value, node, hops),
        Response::NotFound { key, node, hops } => answer::not_found(key, node, hops),
        Response::Deleted {
            key,
            existed: true,
            node,
            hops,
        } => answer::deleted(key, node, hops),
        Response::Deleted {
            key,
            existed: false,
            node,
            hops,
        } => answer::not_found(key, node, hops),
        Response::All { pairs } => ok(json!({ "count": pairs.len(), "pairs": pairs })),
        Response::Overlay { nodes } => ok(json!({ "overlay": nodes })),
        Response::Joined {
            predecessor,
            successor,
        } => ok(json!({
            "message": format!("Joined the ring between {} and {}", predecessor.addr, successor.addr),
            "predecessor": &*predecessor.addr,
            "successor": &*successor.addr,
        })),
        Response::Departed { node } => ok(json!({
            "message": format!("Node {node} departed; its data was handed on"),
            "node": node,
        })),
    }
}

/// HTTP status of a refused or failed request.
pub fn request_error_status(err: &RequestError) -> StatusCode {
    match err {
        RequestError::EmptyKey
        | RequestError::KeyTooLarge { .. }
        | RequestError::ValueTooLarge { .. } => StatusCode::BAD_REQUEST,
        RequestError::NotJoined
        | RequestError::AlreadyJoined
        | RequestError::BootstrapCannotDepart { .. }
        | RequestError::RingRecovering
        | RequestError::JoinRefused { .. } => StatusCode::CONFLICT,
        RequestError::Overloaded { .. }
        | RequestError::TooManyHops { .. }
        | RequestError::RouteBroken { .. }
        | RequestError::LeaseExpired { .. }
        | RequestError::StorageFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
        RequestError::StoreFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        RequestError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
    }
}

/// `{"error": message, "code": kind, ...details}` with the matching status.
fn request_error_json(err: &RequestError) -> JsonReply {
    let mut body = serde_json::to_value(err).unwrap_or_else(|_| json!({}));
    if let Value::Object(fields) = &mut body {
        if let Some(kind) = fields.remove("error") {
            fields.insert("code".into(), kind);
        }
        fields.insert("error".into(), Value::String(err.to_string()));
    }
    (request_error_status(err), Json(body.into()))
}

fn unavailable_json(unavailable: Unavailable) -> JsonReply {
    let (status, code) = match unavailable {
        Unavailable::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        Unavailable::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
        Unavailable::TimedOut(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
    };
    (
        status,
        Json(json!({ "error": unavailable.to_string(), "code": code }).into()),
    )
}

// ----- operator routes -----

async fn health(State(s): State<Arc<AppState>>) -> JsonReply {
    let probe = s.node.inspect(|n| (n.phase(), n.is_member())).await;
    match probe {
        Ok((phase, member)) => (
            StatusCode::OK,
            Json(
                json!({ "status": "ok", "node": s.node.addr(), "phase": phase, "member": member })
                    .into(),
            ),
        ),
        Err(unavailable) => unavailable_json(unavailable),
    }
}

async fn node_status(State(s): State<Arc<AppState>>) -> JsonReply {
    let status = s.node.inspect(|n| (n.status(), n.pending_requests())).await;
    match status {
        Ok((status, pending)) => {
            let mut body = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
            if let Value::Object(fields) = &mut body {
                fields.insert("pending_requests".into(), json!(pending));
            }
            (StatusCode::OK, Json(body.into()))
        }
        Err(unavailable) => unavailable_json(unavailable),
    }
}

async fn render_metrics(State(s): State<Arc<AppState>>) -> HttpResponse {
    let gauges = s
        .node
        .inspect(|n| Gauges {
            keys_stored: n.store().live_len(),
            pending_requests: n.pending_requests(),
            member: n.is_member(),
        })
        .await;
    match gauges {
        Ok(gauges) => {
            let text = s.metrics.render(s.node.addr(), gauges);
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
        Err(unavailable) => unavailable_json(unavailable).into_response(),
    }
}

// ----- internal routes -----

async fn peer_connection(State(s): State<Arc<AppState>>, mut request: HttpRequest) -> HttpResponse {
    let upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>();
    s.inbound.accept(request.headers(), upgrade)
}

/// Whether `headers` carry `Authorization: Bearer <secret>`.
pub(crate) fn has_secret(headers: &HeaderMap, secret: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| same_secret(g.as_bytes(), secret.as_bytes()))
}

async fn internal_message(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> HttpResponse {
    if let Some(secret) = &s.secret {
        if !has_secret(&headers, secret) {
            add(&s.metrics.peer.messages_malformed, 1);
            let message = "node-to-node messages need the cluster secret (--cluster-secret)";
            return error(StatusCode::UNAUTHORIZED, message).into_response();
        }
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), rejection.body_text()).into_response(),
    };
    let (envelopes, malformed) = match decode_json_batch(&body) {
        Ok(parsed) => parsed,
        Err(err) => {
            add(&s.metrics.peer.messages_malformed, 1);
            let message = format!("expected a JSON array of envelopes: {err}");
            return error(StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    add(&s.metrics.peer.messages_malformed, malformed);
    let envelopes = s.inbound.admit(envelopes);
    let kinds = envelopes.iter().map(|e| e.msg.kind());
    s.metrics.peer.count_kinds(kinds, false);
    if envelopes.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    match s.node.deliver(envelopes).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(unavailable) => unavailable_json(unavailable).into_response(),
    }
}

// ----- test-only fault injection -----

/// The filter, if fault injection is on and the request may use it; else the refusal:
/// 404 when it is off, 403 without the cluster secret (when one is configured).
fn fault_access(s: &AppState, headers: &HeaderMap) -> Result<Arc<PeerFilter>, Box<JsonReply>> {
    let Some(filter) = &s.faults else {
        let body = json!({
            "error": "fault injection is off on this node (it is for tests: start the node with --allow-fault-injection)",
            "code": "fault_injection_disabled",
        });
        return Err(Box::new((StatusCode::NOT_FOUND, Json(body.into()))));
    };
    if let Some(secret) = &s.secret {
        if !has_secret(headers, secret) {
            let body = json!({
                "error": "fault injection needs the cluster secret (Authorization: Bearer <secret>)",
                "code": "forbidden",
            });
            return Err(Box::new((StatusCode::FORBIDDEN, Json(body.into()))));
        }
    }
    Ok(filter.clone())
}

fn partition_json(s: &AppState, filter: &PeerFilter) -> JsonReply {
    let blocked: Vec<String> = filter.blocked().iter().cloned().collect();
    let direction = filter.direction();
    (
        StatusCode::OK,
        Json(json!({ "node": s.node.addr(), "blocked": blocked, "direction": direction }).into()),
    )
}

/// `POST /admin/partition` `{"block": ["host:port", ...]}`: drop every peer message to and
/// from those nodes from now on, or with `"direction": "send"` / `"receive"` only those to
/// or only those from them (an empty list heals).
async fn set_partition(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> JsonReply {
    let filter = match fault_access(&s, &headers) {
        Ok(filter) => filter,
        Err(refusal) => return *refusal,
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let body = json!({ "error": rejection.body_text(), "code": "bad_request" });
            return (rejection.status(), Json(body.into()));
        }
    };
    match parse_block_list(&body) {
        Ok((addrs, direction)) => {
            tracing::warn!(node = %s.node.addr(), blocked = ?addrs, ?direction, "test-only partition filter set");
            filter.set_direction(addrs, direction);
            partition_json(&s, &filter)
        }
        Err(message) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": message, "code": "bad_request" }).into()),
        ),
    }
}

/// `GET /admin/partition`: the nodes this one is cut off from.
async fn get_partition(State(s): State<Arc<AppState>>, headers: HeaderMap) -> JsonReply {
    match fault_access(&s, &headers) {
        Ok(filter) => partition_json(&s, &filter),
        Err(refusal) => *refusal,
    }
}

/// Compare secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ----- fallbacks -----

const ROUTES: &str = "POST /insert/{key}/{value}, POST /insert, GET /query/{key}, GET /query/*, \
DELETE /delete/{key}, POST /join, POST /depart, GET /overlay, GET /health, GET /node, GET /metrics";

async fn no_route(method: Method, uri: Uri) -> JsonReply {
    let message = format!(
        "no endpoint {method} {}; endpoints: {ROUTES} (keys and values are single percent-encoded path segments)",
        uri.path()
    );
    error(StatusCode::NOT_FOUND, message)
}

async fn wrong_method(method: Method, uri: Uri) -> JsonReply {
    let message = format!(
        "{method} is not allowed on {}; endpoints: {ROUTES}",
        uri.path()
    );
    error(StatusCode::METHOD_NOT_ALLOWED, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_errors_become_json_with_a_code() {
        let (status, Json(body)) = request_error_json(&RequestError::Timeout { timeout_ms: 10 });
        let body = body.to_value();
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["code"], "timeout");
        assert_eq!(body["timeout_ms"], 10);
        assert!(body["error"].as_str().unwrap().contains("10 ms"));
        let (status, Json(body)) = request_error_json(&RequestError::NotJoined);
        let body = body.to_value();
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["code"], "not_joined");
    }

    #[test]
    fn absent_keys_are_404_with_details() {
        let (status, Json(body)) = reply_json(Ok(Response::Deleted {
            key: "k".into(),
            existed: false,
            node: "n".into(),
            hops: 2,
        }));
        let body = body.to_value();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "Song 'k' not found");
        assert_eq!(body["hops"], 2);
    }
}
