//! What clients ask of a node and what it answers.

use serde::{Deserialize, Serialize};

use crate::NodeRef;

/// Identifies one client request at the node that received it. Chosen by the driver;
/// unique among that node's outstanding requests.
pub type ReqId = u64;

/// A client's request to one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Store `value` under `key`, replacing any earlier value.
    Insert {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read the value of `key`.
    Query {
        /// The key.
        key: String,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Every key/value pair in the DHT, each key once.
    QueryAll,
    /// The ring's nodes in ring order, starting from the bootstrap.
    Overlay,
    /// Join the ring through the bootstrap.
    Join,
    /// Hand this node's data on and leave the ring.
    Depart,
}

impl Request {
    /// Short name of the operation, for metrics and logs.
    pub fn op_name(&self) -> &'static str {
        match self {
            Request::Insert { .. } => "insert",
            Request::Query { .. } => "query",
            Request::Delete { .. } => "delete",
            Request::QueryAll => "query_all",
            Request::Overlay => "overlay",
            Request::Join => "join",
            Request::Depart => "depart",
        }
    }
}

/// One key/value pair of a `query *` answer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pair {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// `host:port` of the key's primary node.
    pub node: String,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// The write was applied (chain: by the whole chain; eventual: by the primary).
    Inserted {
        /// The key.
        key: String,
        /// The value written.
        value: String,
        /// Node that acknowledged the write.
        node: String,
        /// Forwards the request took to reach the key's primary.
        hops: u32,
    },
    /// The key has a value.
    Found {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// Node that answered.
        node: String,
        /// Forwards the request took.
        hops: u32,
    },
    /// The key has no value. An answer, not an error.
    NotFound {
        /// The key.
        key: String,
        /// Node that answered.
        node: String,
        /// Forwards the request took.
        hops: u32,
    },
    /// The delete was applied.
    Deleted {
        /// The key.
        key: String,
        /// Whether the key had a value before the delete, as seen by the primary.
        existed: bool,
        /// Node that acknowledged the delete.
        node: String,
        /// Forwards the request took.
        hops: u32,
    },
    /// Every pair in the DHT.
    All {
        /// The pairs, sorted by key.
        pairs: Vec<Pair>,
    },
    /// The ring in order from the bootstrap.
    Overlay {
        /// `host:port` of each node.
        nodes: Vec<String>,
    },
    /// This node is now a member.
    Joined {
        /// Its predecessor.
        predecessor: NodeRef,
        /// Its successor.
        successor: NodeRef,
    },
    /// This node has handed its data on and left.
    Departed {
        /// The node that left.
        node: String,
    },
}

impl Response {
    /// Forwards the request took, for the operations that route.
    pub fn hops(&self) -> Option<u32> {
        match self {
            Response::Inserted { hops, .. }
            | Response::Found { hops, .. }
            | Response::NotFound { hops, .. }
            | Response::Deleted { hops, .. } => Some(*hops),
            _ => None,
        }
    }
}

/// Why a request was refused or could not complete. The node's state is unchanged unless
/// the variant says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum RequestError {
    /// The key is empty.
    #[error("the key is empty")]
    EmptyKey,
    /// The key is longer than the limit.
    #[error("the key is {len} bytes; the limit is {max}")]
    KeyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is longer than the limit.
    #[error("the value is {len} bytes; the limit is {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// This node is not a member of the ring (never joined, or departed).
    #[error("this node is not in the ring: join it first")]
    NotJoined,
    /// This node is already a member, or is joining or departing.
    #[error("this node is already in the ring (or joining or departing)")]
    AlreadyJoined,
    /// The bootstrap cannot leave the ring it coordinates.
    #[error("{}", bootstrap_cannot_depart(*others))]
    BootstrapCannotDepart {
        /// How many other processes are members.
        others: usize,
    },
    /// The node leads a ring coming back from its disks (a whole-ring restart) and
    /// waits for members that hold the only copies of some keys: it cannot hand its
    /// place on until they are back.
    #[error("this node leads the ring while it comes back from its disks and waits for members that restarted with it; depart once they are back")]
    RingRecovering,
    /// The bootstrap refused a join.
    #[error("join refused: {reason}")]
    JoinRefused {
        /// Why.
        reason: String,
    },
    /// Too many requests are outstanding at this node (or at the bootstrap's queue).
    #[error("the node is overloaded: {pending} requests outstanding; retry later")]
    Overloaded {
        /// How many are outstanding.
        pending: usize,
    },
    /// No answer within the node's request timeout. The operation may or may not have
    /// taken effect.
    #[error("no answer within {timeout_ms} ms; the operation may or may not have taken effect")]
    Timeout {
        /// The timeout.
        timeout_ms: u64,
    },
    /// The request took more forwards than the limit; the ring may be changing.
    #[error("the request was forwarded {hops} times without reaching its node; retry")]
    TooManyHops {
        /// Forwards taken.
        hops: u32,
    },
    /// A node on the route was no longer a member; retry.
    #[error("node {node} on the route is no longer in the ring; retry")]
    RouteBroken {
        /// That node.
        node: String,
    },
    /// The key's head (for a write) or tail (for a read) could not confirm with the
    /// coordinator group that it still holds that role (a partition or a pause cut it
    /// off); nothing was done. Retry: the ring either renews its lease or replaces it.
    #[error("node {node} cannot confirm it still serves this key (its lease expired); nothing was done, retry")]
    LeaseExpired {
        /// That node.
        node: String,
    },
    /// The node could not write to its data directory (disk full, IO error): the write
    /// was not acknowledged. It may still take effect (it was applied in memory and may
    /// be persisted with a later write).
    #[error("node {node} could not persist the write ({reason}); it was not acknowledged and may or may not take effect")]
    StorageFailed {
        /// That node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The key's head (primary) holds as many bytes as its store limit allows; nothing
    /// was done. Deletes still work.
    #[error("node {node} holds {bytes} bytes of keys and values, its limit is {max}: the write was refused (nothing was done); delete keys or raise --max-store-bytes")]
    StoreFull {
        /// That node.
        node: String,
        /// Bytes it holds.
        bytes: usize,
        /// Its limit.
        max: usize,
    },
}

/// What a node answers to one request.
pub type Reply = Result<Response, RequestError>;

/// Why the bootstrap cannot depart: while other processes are members it would leave
/// them without their bootstrap; alone, it would leave no ring.
fn bootstrap_cannot_depart(others: usize) -> String {
    match others {
        0 => "the bootstrap is the last member of its ring and cannot depart; stop its \
              process to end the ring"
            .to_string(),
        n => format!(
            "the bootstrap cannot depart while {n} other process(es) are members; depart \
             them first, then stop the bootstrap's process"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lone bootstrap is not told to depart other nodes first: there are none.
    #[test]
    fn a_bootstrap_refused_departure_says_what_to_do() {
        let alone = RequestError::BootstrapCannotDepart { others: 0 }.to_string();
        assert!(alone.contains("last member"), "{alone}");
        assert!(!alone.contains("depart them"), "{alone}");
        let others = RequestError::BootstrapCannotDepart { others: 2 }.to_string();
        assert!(others.contains("2 other process(es)"), "{others}");
    }
}
