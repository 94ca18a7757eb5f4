//! Closed-loop clients: each is bound to one node, has at most one operation outstanding,
//! and issues the next when the last one ends.
//!
//! How a node's answer becomes a history completion:
//! - `Inserted`, `Deleted`, `Found` (the value read), `NotFound` (a read of `null`) → `ok`;
//! - no answer within `--timeout` (the client gives up), the node's own `Timeout`, or the
//!   client's node crashing while the operation is outstanding → `info`: it may or may
//!   not have applied;
//! - refusals before any routing (`EmptyKey`, `KeyTooLarge`, `ValueTooLarge`, `NotJoined`,
//!   `AlreadyJoined`, `BootstrapCannotDepart`, `RingRecovering`, `JoinRefused`, `Overloaded`) → `fail`;
//! - `TooManyHops` and `RouteBroken`: `fail` for reads (a read changes nothing), `info`
//!   for writes and deletes (a duplicated or re-routed copy of the request may still
//!   have reached the primary).
//!
//! After an `info` the client continues under a fresh process id, as in Jepsen.

use ringkv_core::{Reply, RequestError, Response};

use crate::workload::{ClientOps, Op, OpKind};

/// Where a client is in its loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// A wake-up event is queued.
    Scheduled,
    /// An operation is outstanding.
    Waiting,
    /// Its node is down or not a ring member; it waits for the node to (re)join.
    Parked,
    /// Finished the current phase; waits for the other clients.
    Barrier,
    /// Finished every phase.
    Done,
}

/// The operation a client waits on.
#[derive(Clone, Debug)]
pub struct Outstanding {
    /// Request sequence number (low half of the request id).
    pub seq: u32,
    /// The operation.
    pub op: Op,
    /// When it was invoked.
    pub invoked_ns: u64,
}

/// One closed-loop client.
#[derive(Debug)]
pub struct Client {
    /// The node it talks to.
    pub node: u32,
    /// Its current process id in the history.
    pub process: u64,
    /// Its operations, per phase.
    pub phases: Vec<ClientOps>,
    /// The phase it is in.
    pub phase: usize,
    /// Where it is.
    pub state: ClientState,
    /// Last request sequence number used.
    pub seq: u32,
    /// The operation in flight.
    pub outstanding: Option<Outstanding>,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect (writes) or returned `value` (reads).
    Ok {
        /// Value written or read (`None`: not found, or a delete).
        value: Option<String>,
        /// Node that answered.
        node: String,
        /// Lookup hops.
        hops: u32,
    },
    /// It certainly did not take effect.
    Fail(String),
    /// Unknown.
    Info(String),
}

/// Classify `reply` to `op` (see the module docs).
pub fn classify(op: &Op, reply: &Reply) -> Outcome {
    match reply {
        Ok(response) => classify_response(op, response),
        Err(err) => {
            let why = err.to_string();
            match err {
                RequestError::TooManyHops { .. } | RequestError::RouteBroken { .. } => {
                    if op.f == OpKind::Read {
                        Outcome::Fail(why)
                    } else {
                        Outcome::Info(why)
                    }
                }
                RequestError::EmptyKey
                | RequestError::KeyTooLarge { .. }
                | RequestError::ValueTooLarge { .. }
                | RequestError::NotJoined
                | RequestError::AlreadyJoined
                | RequestError::BootstrapCannotDepart { .. }
                | RequestError::RingRecovering
                | RequestError::JoinRefused { .. }
                | RequestError::Overloaded { .. }
                | RequestError::LeaseExpired { .. } => Outcome::Fail(why),
                // `Timeout`, and any error added to the core later: unknown outcome.
                _ => Outcome::Info(why),
            }
        }
    }
}

fn classify_response(op: &Op, response: &Response) -> Outcome {
    let ok = |value: Option<String>, node: &str, hops: u32| Outcome::Ok {
        value,
        node: node.to_string(),
        hops,
    };
    match (op.f, response) {
        (OpKind::Write, Response::Inserted { node, hops, .. }) => ok(op.value.clone(), node, *hops),
        (
            OpKind::Read,
            Response::Found {
                value, node, hops, ..
            },
        ) => ok(Some(value.clone()), node, *hops),
        (OpKind::Read, Response::NotFound { node, hops, .. }) => ok(None, node, *hops),
        (OpKind::Delete, Response::Deleted { node, hops, .. }) => ok(None, node, *hops),
        (_, other) => Outcome::Info(format!("unexpected answer {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(f: OpKind) -> Op {
        Op {
            f,
            key: "k".into(),
            value: (f == OpKind::Write).then(|| "v#1".into()),
        }
    }

    #[test]
    fn answers_map_to_history_outcomes() {
        let found = Ok(Response::Found {
            key: "k".into(),
            value: "x".into(),
            node: "n".into(),
            hops: 2,
        });
        assert_eq!(
            classify(&op(OpKind::Read), &found),
            Outcome::Ok {
                value: Some("x".into()),
                node: "n".into(),
                hops: 2
            }
        );
        let timeout = Err(RequestError::Timeout { timeout_ms: 1 });
        assert!(matches!(
            classify(&op(OpKind::Write), &timeout),
            Outcome::Info(_)
        ));
        let broken = Err(RequestError::RouteBroken { node: "n".into() });
        assert!(matches!(
            classify(&op(OpKind::Read), &broken),
            Outcome::Fail(_)
        ));
        assert!(matches!(
            classify(&op(OpKind::Delete), &broken),
            Outcome::Info(_)
        ));
        let refused = Err(RequestError::NotJoined);
        assert!(matches!(
            classify(&op(OpKind::Write), &refused),
            Outcome::Fail(_)
        ));
    }
}
