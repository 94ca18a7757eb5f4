//! The ringkv protocol as deterministic, sans-IO state machines.
//!
//! A [`Node`] is one member of a Chord ring (SHA-1 identifiers, finger tables) that
//! stores each key on `min(k, N)` nodes and replicates writes either by chain
//! replication (strong) or eventually (fast). It does no IO and reads no clock: a driver
//! feeds it [`Input`]s together with the current time and carries out the [`Output`]s it
//! pushes into a caller-owned buffer.
//!
//! The driver loop, the same in the simulator and in the HTTP runtime:
//!
//! ```
//! use ringkv_core::{ClusterConfig, Input, Node, NodeConfig, Output, Request, Response};
//!
//! let mut node = Node::new(NodeConfig::bootstrap("127.0.0.1:5000", ClusterConfig::default(), 7));
//! let mut out = Vec::new();
//! let now = 0; // nanoseconds on the driver's monotonic clock
//! let insert = Request::Insert { key: "Imagine".into(), value: "1971".into() };
//! node.handle(now, Input::Request { id: 1, request: insert }, &mut out);
//! for output in out.drain(..) {
//!     match output {
//!         Output::Send { to, envelope } => { /* deliver `envelope` to the node at `to` */ }
//!         Output::Reply { id, reply } => assert!(matches!(reply, Ok(Response::Inserted { .. }))),
//!         Output::SetTimer { timer, at } => { /* call handle(at, Input::Timer(timer)) then */ }
//!         Output::CancelTimer { timer } => {}
//!     }
//! }
//! ```
//!
//! Membership changes (join, depart) are serialized by the bootstrap, which acts as the
//! configuration master: it prepares the affected nodes' next views, lets the nodes that
//! gain keys fetch them, then commits, so that after every change each key is on exactly
//! its `min(k, N)` replicas. Lookups travel hop by hop over fingers (or successors only).
#![deny(missing_docs)]

pub mod api;
pub mod config;
pub mod id;
pub mod message;
pub mod store;

mod coordinator;
mod failure;
mod membership;
mod node;
mod replication;
mod ring;
mod routing;

pub use api::{Pair, Reply, ReqId, Request, RequestError, Response};
pub use config::{ClusterConfig, Consistency, Limits, NodeConfig, Routing, Timing};
pub use id::Id;
pub use message::{Envelope, Message, NodeRef, View};
pub use node::{Node, NodeStatus, Phase, Rejected};
pub use ring::Ring;
pub use store::{Entry, Range, Store, Version};

/// Time in nanoseconds on the driver's clock (virtual in the simulator, monotonic in real
/// runs). Only differences matter.
pub type Time = u64;

/// Something that happens to a node.
#[derive(Clone, Debug)]
pub enum Input {
    /// A client's request, with an id the driver chose.
    Request {
        /// The id replies will carry.
        id: ReqId,
        /// What the client asks.
        request: Request,
    },
    /// A message from another node.
    Message(Envelope),
    /// A timer the node set has fired.
    Timer(Timer),
}

/// Something a node asks its driver to do.
#[derive(Clone, Debug)]
pub enum Output {
    /// Deliver `envelope` to the node advertised at `to`.
    Send {
        /// `host:port` of the receiver.
        to: std::sync::Arc<str>,
        /// The message.
        envelope: Envelope,
    },
    /// Answer the client request `id`.
    Reply {
        /// The request.
        id: ReqId,
        /// The answer.
        reply: Reply,
    },
    /// Fire `timer` at time `at`, replacing any earlier setting of the same timer.
    SetTimer {
        /// Which timer.
        timer: Timer,
        /// When.
        at: Time,
    },
    /// Do not fire `timer`.
    CancelTimer {
        /// Which timer.
        timer: Timer,
    },
}

/// The timers a node uses. Each is set at most once at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The earliest deadline of an outstanding client request.
    Requests,
    /// Tombstone garbage collection (armed while tombstones exist).
    Gc,
    /// Heartbeat to the bootstrap and pings to successors.
    Heartbeat,
    /// The bootstrap looks for members it has not heard from.
    FailureCheck,
    /// Deadline of the membership change in progress (bootstrap).
    Membership,
    /// Anti-entropy round with this node's replicas.
    AntiEntropy,
    /// Resend replica writes (eventual consistency) and hand-over forwards not yet
    /// acknowledged.
    Replicate,
    /// Send the acknowledgements of replica writes gathered since the last time.
    ReplicateAcks,
}
