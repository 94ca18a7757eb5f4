//! What an answer to an insert, query or delete says about the operation: `ok`, `fail` or
//! `info`, as the history format defines them (`docs/history.md`). Every client that
//! records histories (`dht bench`, the experiments) classifies answers with [`outcome()`],
//! so the rule lives here, next to [`ClientError`] and the node's error codes
//! (`docs/http-api.md`).
//!
//! `fail` means the operation **certainly** did not take effect; `info` that it may have.
//! Calling an operation `fail` that took effect would make the checker wrong, calling one
//! `info` that did not only makes it search more; so anything not proven is `info`.
//!
//! | answer | insert, delete | query |
//! |---|---|---|
//! | 200 | `ok` | `ok` |
//! | 404 naming the key (not found) | delete: `ok`, nothing found | `ok`, no value |
//! | no connection, bad URL ([`ClientError::not_delivered`]) | `fail` | `fail` |
//! | broken exchange, client timeout | `info` | `fail` |
//! | any other 4xx (refused; nothing changed) | `fail` | `fail` |
//! | 503 `overloaded`, `busy`, `too_many_connections`, `lease_expired` (nothing was done) | `fail` | `fail` |
//! | 503 `stopped`, `route_broken`, `too_many_hops`; 504 `timeout`; any other 5xx | `info` | `fail` |
//!
//! A query never changes anything, so a query without an `ok` answer is `fail` whatever
//! happened. Why the 5xx codes fall on either side: see [`ErrorCode::nothing_done`].

use std::fmt;

use crate::client::{ClientError, HttpReply};

/// The operations whose answers [`outcome()`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataOp {
    /// `POST /insert/{key}/{value}` (or `POST /insert` with a JSON body).
    Insert,
    /// `GET /query/{key}`.
    Query,
    /// `DELETE /delete/{key}`.
    Delete,
}

impl DataOp {
    /// Whether the operation can change what is stored.
    pub fn writes(self) -> bool {
        self != DataOp::Query
    }
}

/// The `code` of a node's error answer (`docs/http-api.md`), parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the key is empty.
    EmptyKey,
    /// 400: the key is over the limit.
    KeyTooLarge,
    /// 400: the value is over the limit.
    ValueTooLarge,
    /// 409: the node is not in the ring.
    NotJoined,
    /// 409: the node is already in the ring (or joining or departing).
    AlreadyJoined,
    /// 409: the bootstrap cannot depart while others remain.
    BootstrapCannotDepart,
    /// 409: the node leads a ring coming back from its disks and cannot depart yet.
    RingRecovering,
    /// 409: the bootstrap refused a join.
    JoinRefused,
    /// 503: too many requests outstanding at the node; nothing was done.
    Overloaded,
    /// 503: the node's request queue is full; nothing was done.
    Busy,
    /// 503: the node already serves its limit of connections; nothing was done.
    TooManyConnections,
    /// 503: the node is shutting down.
    Stopped,
    /// 503: a node on the route left the ring.
    RouteBroken,
    /// 503: the key's head or tail could not confirm it still serves the key; nothing
    /// was done.
    LeaseExpired,
    /// 503: the node could not persist the write; it may or may not take effect.
    StorageFailed,
    /// 507: the key's head holds its store limit of bytes; nothing was done.
    StoreFull,
    /// 503: the request was forwarded too often.
    TooManyHops,
    /// 504: no answer within the node's request timeout.
    Timeout,
    /// A code this client does not know (a newer node, or not a ringkv node).
    Other(String),
}

impl ErrorCode {
    /// Every code a node can send, in the order of `docs/http-api.md`.
    pub const KNOWN: [ErrorCode; 18] = [
        ErrorCode::EmptyKey,
        ErrorCode::KeyTooLarge,
        ErrorCode::ValueTooLarge,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::BootstrapCannotDepart,
        ErrorCode::RingRecovering,
        ErrorCode::JoinRefused,
        ErrorCode::Overloaded,
        ErrorCode::Busy,
        ErrorCode::TooManyConnections,
        ErrorCode::Stopped,
        ErrorCode::RouteBroken,
        ErrorCode::LeaseExpired,
        ErrorCode::StorageFailed,
        ErrorCode::StoreFull,
        ErrorCode::TooManyHops,
        ErrorCode::Timeout,
    ];

    /// The code as it appears in the JSON body.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::EmptyKey => "empty_key",
            ErrorCode::KeyTooLarge => "key_too_large",
            ErrorCode::ValueTooLarge => "value_too_large",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::BootstrapCannotDepart => "bootstrap_cannot_depart",
            ErrorCode::RingRecovering => "ring_recovering",
            ErrorCode::JoinRefused => "join_refused",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Busy => "busy",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::Stopped => "stopped",
            ErrorCode::RouteBroken => "route_broken",
            ErrorCode::LeaseExpired => "lease_expired",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::StoreFull => "store_full",
            ErrorCode::TooManyHops => "too_many_hops",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Other(code) => code,
        }
    }

    /// The code of `text`; [`ErrorCode::Other`] for one not in [`ErrorCode::KNOWN`].
    pub fn parse(text: &str) -> ErrorCode {
        Self::KNOWN
            .into_iter()
            .find(|c| c.as_str() == text)
            .unwrap_or_else(|| ErrorCode::Other(text.to_string()))
    }

    /// Whether the answer proves that the request changed nothing, whatever its status.
    ///
    /// `overloaded` and `busy` are refusals at the door (the state machine's admission
    /// check, the actor's full queue), and `too_many_connections` is sent before the
    /// request is even read; `docs/http-api.md` promises "nothing was done" for all three.
    /// The 400 and 409 codes are refusals before anything is done. The others promise
    /// nothing: `stopped` is also the answer to every request the node had already handed
    /// to its state machine (and maybe on to a chain) when it stopped; `route_broken` and
    /// `too_many_hops` say the ring changed under the request, not where it got to; and
    /// `timeout` says that the outcome is unknown.
    pub fn nothing_done(&self) -> bool {
        match self {
            ErrorCode::EmptyKey
            | ErrorCode::KeyTooLarge
            | ErrorCode::ValueTooLarge
            | ErrorCode::NotJoined
            | ErrorCode::AlreadyJoined
            | ErrorCode::BootstrapCannotDepart
            | ErrorCode::RingRecovering
            | ErrorCode::JoinRefused
            | ErrorCode::Overloaded
            | ErrorCode::Busy
            | ErrorCode::TooManyConnections
            | ErrorCode::LeaseExpired
            | ErrorCode::StoreFull => true,
            ErrorCode::Stopped
            | ErrorCode::StorageFailed
            | ErrorCode::RouteBroken
            | ErrorCode::TooManyHops
            | ErrorCode::Timeout
            | ErrorCode::Other(_) => false,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an `ok` answer carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// The value in the answer: the value read (`None`: not found), or the value written.
    pub value: Option<String>,
    /// Whether the key was there: `false` for a query or delete answered "not found".
    pub found: bool,
    /// The node that served the operation.
    pub node: Option<String>,
    /// Routing hops the answer reports.
    pub hops: Option<u64>,
}

/// Why an operation did not end `ok`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// No HTTP answer: no connection, a broken exchange or the client's timeout.
    Transport(ClientError),
    /// An error status, with the node's `code` when the body has one.
    Status {
        /// The HTTP status.
        status: u16,
        /// The JSON `code`.
        code: Option<ErrorCode>,
    },
}

impl fmt::Display for Cause {
    /// The transport error's message, or `"<status> <code>"` (`"503 overloaded"`, `"500"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Transport(err) => err.fmt(f),
            Cause::Status {
                status,
                code: Some(code),
            } => write!(f, "{status} {code}"),
            Cause::Status { status, code: None } => write!(f, "{status}"),
        }
    }
}

/// How an operation ended, as far as its client can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Took effect (insert, delete) or returned (query).
    Ok(Served),
    /// Certainly did not take effect.
    Fail(Cause),
    /// May or may not have taken effect.
    Info(Cause),
}

impl Outcome {
    /// Why it did not end `ok`, if it did not.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::Fail(cause) | Outcome::Info(cause) => Some(cause),
        }
    }
}

/// Classify the answer to `op` (see the module docs for the rule).
pub fn outcome(op: DataOp, answer: Result<HttpReply, ClientError>) -> Outcome {
    let reply = match answer {
        Ok(reply) => reply,
        Err(err) if err.not_delivered() || !op.writes() => {
            return Outcome::Fail(Cause::Transport(err))
        }
        Err(err) => return Outcome::Info(Cause::Transport(err)),
    };
    let body = reply.value();
    let served = |found: bool| Served {
        value: body["value"].as_str().map(str::to_string),
        found,
        node: body["node"].as_str().map(str::to_string),
        hops: body["hops"].as_u64(),
    };
    match reply.status {
        200 => return Outcome::Ok(served(true)),
        // The not-found answer names the key; a 404 without it is an unknown endpoint.
        404 if op != DataOp::Insert && body.get("key").is_some() => {
            return Outcome::Ok(served(false))
        }
        _ => {}
    }
    let code = body["code"].as_str().map(ErrorCode::parse);
    let nothing_done = !op.writes()
        || (400..500).contains(&reply.status)
        || code.as_ref().is_some_and(ErrorCode::nothing_done);
    let cause = Cause::Status {
        status: reply.status,
        code,
    };
    if nothing_done {
        Outcome::Fail(cause)
    } else {
        Outcome::Info(cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_limit::rejection_response;
    use crate::http::reply_json;
    use ringkv_core::{RequestError, Response};

    const OPS: [DataOp; 3] = [DataOp::Insert, DataOp::Query, DataOp::Delete];

    fn reply(status: u16, body: impl serde::Serialize) -> Result<HttpReply, ClientError> {
        let body = serde_json::to_string(&body).expect("a JSON body");
        Ok(HttpReply {
            status,
            body: body.into(),
        })
    }

    /// The answer the node's own HTTP layer gives for `err`.
    fn answer_to(err: RequestError) -> Result<HttpReply, ClientError> {
        let (status, axum::Json(body)) = reply_json(Err(err));
        reply(status.as_u16(), body)
    }

    fn is_fail(o: &Outcome) -> bool {
        matches!(o, Outcome::Fail(_))
    }

    fn is_info(o: &Outcome) -> bool {
        matches!(o, Outcome::Info(_))
    }

    /// One of every error the core can answer a request with. The `match` stops this test
    /// from building when a variant is added, so a new code cannot go unclassified.
    fn every_request_error() -> Vec<RequestError> {
        let all = vec![
            RequestError::EmptyKey,
            RequestError::KeyTooLarge { len: 2, max: 1 },
            RequestError::ValueTooLarge { len: 2, max: 1 },
            RequestError::NotJoined,
            RequestError::AlreadyJoined,
            RequestError::BootstrapCannotDepart { others: 1 },
            RequestError::RingRecovering,
            RequestError::JoinRefused { reason: "r".into() },
            RequestError::Overloaded { pending: 9 },
            RequestError::Timeout { timeout_ms: 10 },
            RequestError::TooManyHops { hops: 40 },
            RequestError::RouteBroken { node: "n".into() },
            RequestError::LeaseExpired { node: "n".into() },
            RequestError::StoreFull {
                node: "n".into(),
                bytes: 10,
                max: 10,
            },
            RequestError::StorageFailed {
                node: "n".into(),
                reason: "disk full".into(),
            },
        ];
        for err in &all {
            match err {
                RequestError::EmptyKey
                | RequestError::KeyTooLarge { .. }
                | RequestError::ValueTooLarge { .. }
                | RequestError::NotJoined
                | RequestError::AlreadyJoined
                | RequestError::BootstrapCannotDepart { .. }
                | RequestError::RingRecovering
                | RequestError::JoinRefused { .. }
                | RequestError::Overloaded { .. }
                | RequestError::Timeout { .. }
                | RequestError::TooManyHops { .. }
                | RequestError::RouteBroken { .. }
                | RequestError::LeaseExpired { .. }
                | RequestError::StoreFull { .. }
                | RequestError::StorageFailed { .. } => {}
            }
        }
        all
    }

    #[test]
    fn every_code_the_core_answers_with_is_known() {
        for err in every_request_error() {
            let answer = answer_to(err.clone()).unwrap();
            let code = answer.value()["code"].as_str().map(ErrorCode::parse);
            assert!(
                matches!(&code, Some(c) if !matches!(c, ErrorCode::Other(_))),
                "{err:?} answers with an unknown code {code:?}"
            );
        }
    }

    #[test]
    fn codes_round_trip() {
        for code in ErrorCode::KNOWN {
            assert_eq!(ErrorCode::parse(code.as_str()), code);
        }
        assert_eq!(ErrorCode::parse("new"), ErrorCode::Other("new".into()));
    }

    #[test]
    fn request_errors_that_change_nothing_fail_the_others_are_info_for_writes() {
        for err in every_request_error() {
            let certain = matches!(
                err,
                RequestError::EmptyKey
                    | RequestError::KeyTooLarge { .. }
                    | RequestError::ValueTooLarge { .. }
                    | RequestError::NotJoined
                    | RequestError::AlreadyJoined
                    | RequestError::BootstrapCannotDepart { .. }
                    | RequestError::RingRecovering
                    | RequestError::JoinRefused { .. }
                    | RequestError::Overloaded { .. }
                    | RequestError::LeaseExpired { .. }
                    | RequestError::StoreFull { .. }
            );
            for op in OPS {
                let o = outcome(op, answer_to(err.clone()));
                let expect_fail = certain || op == DataOp::Query;
                assert_eq!(is_fail(&o), expect_fail, "{op:?} {err:?}: {o:?}");
                assert_eq!(is_info(&o), !expect_fail, "{op:?} {err:?}: {o:?}");
            }
        }
    }

    /// The actor's answers (`busy`, `stopped`, `timeout`), as `http.rs` writes them.
    #[test]
    fn unavailable_nodes() {
        let busy = || reply(503, serde_json::json!({"error": "e", "code": "busy"}));
        let stopped = || reply(503, serde_json::json!({"error": "e", "code": "stopped"}));
        let timeout = || reply(504, serde_json::json!({"error": "e", "code": "timeout"}));
        for op in OPS {
            assert!(is_fail(&outcome(op, busy())), "{op:?}");
            let unknown_for_writes = |o: &Outcome| {
                if op.writes() {
                    is_info(o)
                } else {
                    is_fail(o)
                }
            };
            assert!(unknown_for_writes(&outcome(op, stopped())), "{op:?}");
            assert!(unknown_for_writes(&outcome(op, timeout())), "{op:?}");
        }
    }

    #[test]
    fn a_connection_over_the_limit_changed_nothing() {
        let raw = rejection_response(4);
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        for op in OPS {
            let o = outcome(op, reply(503, body.clone()));
            assert!(is_fail(&o), "{op:?}: {o:?}");
            assert_eq!(
                o.cause().map(ToString::to_string).as_deref(),
                Some("503 too_many_connections")
            );
        }
    }

    #[test]
    fn answers_from_the_http_layer_itself_fail() {
        // Malformed path or JSON (400 without a code), unknown route (404 without the
        // key), wrong method, body too large or of the wrong type, a bad secret.
        for status in [400, 401, 404, 405, 413, 415, 422] {
            for op in OPS {
                let o = outcome(op, reply(status, serde_json::json!({"error": "e"})));
                assert!(is_fail(&o), "{status} {op:?}: {o:?}");
                assert_eq!(o.cause().map(ToString::to_string), Some(status.to_string()));
            }
        }
    }

    #[test]
    fn other_server_errors_are_unknown_for_writes() {
        for (status, body) in [
            (500, serde_json::json!({"error": "e"})),
            (502, serde_json::Value::Null),
            (
                503,
                serde_json::json!({"error": "e", "code": "something_new"}),
            ),
        ] {
            for op in OPS {
                let o = outcome(op, reply(status, body.clone()));
                assert_eq!(is_info(&o), op.writes(), "{status} {op:?}: {o:?}");
            }
        }
    }

    #[test]
    fn answers_that_succeeded() {
        let (status, axum::Json(found)) = reply_json(Ok(Response::Found {
            key: "k".into(),
            value: "v".into(),
            node: "n".into(),
            hops: 2,
        }));
        let o = outcome(DataOp::Query, reply(status.as_u16(), found));
        let served = Served {
            value: Some("v".into()),
            found: true,
            node: Some("n".into()),
            hops: Some(2),
        };
        assert_eq!(o, Outcome::Ok(served));
        let (status, axum::Json(absent)) = reply_json(Ok(Response::NotFound {
            key: "k".into(),
            node: "n".into(),
            hops: 1,
        }));
        for op in [DataOp::Query, DataOp::Delete] {
            let o = outcome(op, reply(status.as_u16(), absent.clone()));
            assert!(
                matches!(&o, Outcome::Ok(s) if !s.found && s.value.is_none()),
                "{o:?}"
            );
        }
        // An insert is never answered "not found"; such an answer refused it.
        assert!(is_fail(&outcome(
            DataOp::Insert,
            reply(status.as_u16(), absent)
        )));
    }

    #[test]
    fn transport_errors_are_unknown_once_the_request_may_have_left() {
        let connect = ClientError::Connect {
            url: "u".into(),
            reason: "refused".into(),
        };
        let bad_url = ClientError::BadUrl {
            url: "u".into(),
            reason: "r".into(),
        };
        let exchange = ClientError::Exchange {
            url: "u".into(),
            reason: "reset".into(),
        };
        let timeout = ClientError::Timeout {
            url: "u".into(),
            timeout_ms: 5,
        };
        for op in OPS {
            assert!(is_fail(&outcome(op, Err(connect.clone()))));
            assert!(is_fail(&outcome(op, Err(bad_url.clone()))));
            for err in [&exchange, &timeout] {
                let o = outcome(op, Err(err.clone()));
                assert_eq!(is_info(&o), op.writes(), "{op:?} {err:?}");
                assert_eq!(o.cause(), Some(&Cause::Transport(err.clone())));
            }
        }
    }
}
