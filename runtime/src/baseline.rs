//! A trivial key-value server to measure ringkv against (`dht bench --baseline`): the
//! same HTTP stack (axum, hyper, the nodes' listener with `TCP_NODELAY`), the same client
//! paths and answer shapes, one shared in-memory map, and nothing else: no ring, no
//! replication, no actor. What a ringkv request costs beyond this is the price of the
//! distributed store.
//!
//! It serves `POST /insert/{key}/{value}`, `GET /query/{key}` and `DELETE /delete/{key}`
//! with the nodes' JSON answers (`hops` always 0), and `GET /overlay` and `GET /node` so
//! that the load client finds its listeners the way it finds a ring's nodes. It calls
//! itself a ring with `k = 1`: every key has one home listener, so a token-aware client
//! sends each key to one listener and never sees an answer from elsewhere.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ringkv_core::{Id, Ring};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::answer;
use crate::conn_limit::{LimitedListener, MAX_CONNECTIONS_DEFAULT};
use crate::metrics::Metrics;

/// The map every listener shares.
type Map = Arc<Mutex<HashMap<String, String>>>;

#[derive(Clone)]
struct Listener {
    /// This listener's `host:port`.
    addr: Arc<str>,
    /// Every listener's, in the order they were bound.
    all: Arc<[String]>,
    map: Map,
}

/// A running baseline: `listeners` HTTP listeners on ephemeral loopback ports.
pub struct BaselineServer {
    addrs: Vec<String>,
    served: Served,
}

/// HTTP listeners being served (and, for the relay, the tasks beside them), and how to stop
/// them.
#[derive(Default)]
pub(crate) struct Served {
    stops: Vec<oneshot::Sender<()>>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

impl Served {
    /// Serve `router` on `listener` (limited like a node's) until stopped; `what` names it
    /// in the log if it fails.
    pub(crate) fn serve(&mut self, listener: TcpListener, router: Router, what: &'static str) {
        let listener = LimitedListener::new(
            listener,
            MAX_CONNECTIONS_DEFAULT,
            Arc::new(Metrics::default()),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        self.stops.push(stop);
        self.tasks.push(tokio::spawn(async move {
            if let Err(err) = serve.await {
                tracing::error!(%err, "{what} listener failed");
            }
        }));
    }

    /// Stop the listeners; with `abort`, end every task at once instead of waiting for
    /// requests in flight (a relay's may wait for acknowledgements that will not come).
    pub(crate) async fn stop(self, abort: bool) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for task in self.tasks {
            if abort {
                task.abort();
            }
            let _ = task.await;
        }
    }
}

impl BaselineServer {
    /// Bind `listeners` listeners on 127.0.0.1 (ports chosen by the system) and serve
    /// them on the current tokio runtime.
    pub async fn start(listeners: usize) -> std::io::Result<BaselineServer> {
        let mut bound = Vec::with_capacity(listeners);
        for _ in 0..listeners.max(1) {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            bound.push((listener.local_addr()?.to_string(), listener));
        }
        let all: Arc<[String]> = bound.iter().map(|(addr, _)| addr.clone()).collect();
        let map: Map = Arc::default();
        let mut server = BaselineServer {
            addrs: all.to_vec(),
            served: Served::default(),
        };
        for (addr, listener) in bound {
            let state = Listener {
                addr: addr.into(),
                all: all.clone(),
                map: map.clone(),
            };
            server.served.serve(listener, router(state), "baseline");
        }
        Ok(server)
    }

    /// The listeners' `host:port`.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Stop every listener and wait for them.
    pub async fn shutdown(self) {
        self.served.stop(false).await;
    }
}

fn router(state: Listener) -> Router {
    Router::new()
        .route("/insert/{key}/{value}", post(insert))
        .route("/query/{key}", get(query))
        .route("/delete/{key}", delete(remove))
        .route("/overlay", get(overlay))
        .route("/node", get(node))
        .with_state(state)
}

pub(crate) use crate::answer::JsonReply;

fn lock(map: &Map) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

async fn insert(
    State(s): State<Listener>,
    Path((key, value)): Path<(String, String)>,
) -> JsonReply {
    lock(&s.map).insert(key.clone(), value.clone());
    inserted(key, value, &s.addr)
}

/// A node's answer to an insert it made.
pub(crate) fn inserted(key: String, value: String, node: &str) -> JsonReply {
    answer::inserted(key, value, node.to_string(), 0)
}

async fn query(State(s): State<Listener>, Path(key): Path<String>) -> JsonReply {
    let value = lock(&s.map).get(&key).cloned();
    found(key, value, &s.addr)
}

/// A node's answer to a query: the value, or a 404.
pub(crate) fn found(key: String, value: Option<String>, node: &str) -> JsonReply {
    match value {
        Some(value) => answer::found(key, value, node.to_string(), 0),
        None => not_found(key, node),
    }
}

async fn remove(State(s): State<Listener>, Path(key): Path<String>) -> JsonReply {
    let existed = lock(&s.map).remove(&key).is_some();
    if !existed {
        return not_found(key, &s.addr);
    }
    deleted(key, &s.addr)
}

/// A node's answer to a delete of a key it held.
pub(crate) fn deleted(key: String, node: &str) -> JsonReply {
    answer::deleted(key, node.to_string(), 0)
}

/// A node's answer about a key it does not hold.
pub(crate) fn not_found(key: String, node: &str) -> JsonReply {
    answer::not_found(key, node.to_string(), 0)
}

async fn overlay(State(s): State<Listener>) -> JsonReply {
    (StatusCode::OK, Json(json!({ "overlay": &*s.all }).into()))
}

/// What a ring node says of itself, for a one-home-per-key ring of the listeners.
async fn node(State(s): State<Listener>) -> JsonReply {
    (StatusCode::OK, Json(node_info(&s.addr, &s.all, 1).into()))
}

/// A node's `/node` answer for listener `addr` of `all`, as a ring of them with
/// replication factor `k`: what a token-aware client needs to place keys on them.
pub(crate) fn node_info(addr: &str, all: &[String], k: usize) -> Value {
    let mut ring = Ring::new();
    for addr in all.iter() {
        ring.insert(ringkv_core::NodeRef::new(addr));
    }
    let me = Id::of_addr(addr);
    let neighbour = |n: Option<&ringkv_core::NodeRef>| {
        n.map(|n| json!({ "id": n.id.to_string(), "addr": &*n.addr }))
    };
    json!({
        "id": me.to_string(),
        "addr": addr,
        "phase": "active",
        "bootstrap": all.first().is_some_and(|a| *a == addr),
        "epoch": 0,
        "ring_size": all.len(),
        "predecessor": neighbour(ring.predecessor_before(me)),
        "successor": neighbour(ring.successor_after(me)),
        "fingers": [],
        "suspects": [],
        "hints": 0,
        "k": k,
        "consistency": "chain",
        "routing": "finger",
        "keys_primary": 0,
        "keys_replica": 0,
        "pending_requests": 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::HttpClient;
    use std::time::Duration;

    #[tokio::test]
    async fn answers_like_a_node() {
        let server = BaselineServer::start(3).await.unwrap();
        let http = HttpClient::new(Duration::from_secs(5));
        let [a, b, _] = server.addrs() else {
            panic!("three listeners")
        };
        let insert = http
            .post(&format!("http://{a}/insert/AC%2FDC/1973"), None)
            .await
            .unwrap();
        assert_eq!(insert.status, 200);
        assert_eq!(insert.value()["node"], json!(a));
        let found = http
            .get(&format!("http://{b}/query/AC%2FDC"))
            .await
            .unwrap();
        assert_eq!(
            (found.status, found.value()["value"].clone()),
            (200, json!("1973"))
        );
        let gone = http
            .delete(&format!("http://{b}/delete/AC%2FDC"))
            .await
            .unwrap();
        assert_eq!(gone.status, 200);
        let missing = http
            .get(&format!("http://{a}/query/AC%2FDC"))
            .await
            .unwrap();
        assert_eq!(missing.status, 404);
        assert_eq!(missing.value()["key"], json!("AC/DC"));
        let overlay = http.get(&format!("http://{a}/overlay")).await.unwrap();
        assert_eq!(overlay.value()["overlay"].as_array().map(Vec::len), Some(3));
        let node = http.get(&format!("http://{a}/node")).await.unwrap().value();
        assert_eq!(node["id"], json!(Id::of_addr(a).to_string()));
        assert_eq!(
            (node["k"].clone(), node["ring_size"].clone()),
            (json!(1), json!(3))
        );
        server.shutdown().await;
    }
}
