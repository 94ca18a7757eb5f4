//! The ringkv protocol as deterministic, sans-IO state machines.
//!
//! A [`Node`] is one member of a Chord ring (SHA-1 identifiers, finger tables) that
//! stores each key on `min(k, N)` nodes and replicates writes either by chain
//! replication (strong) or eventually (fast). It does no IO and reads no clock: a driver
//! feeds it [`Input`]s together with the current time and carries out the [`Output`]s it
//! pushes into a caller-owned buffer.
//!
//! The driver loop, the same in the simulator and in the HTTP runtime (quinn-proto's
//! shape): feed inputs with [`Node::handle`], carry out the outputs, and sleep until
//! [`Node::poll_timeout`], then call [`Node::handle_timeout`].
//!
//! ```
//! use ringkv_core::{ClusterConfig, Input, Node, NodeConfig, Output, Request, Response};
//!
//! let mut node = Node::new(NodeConfig::bootstrap("127.0.0.1:5000", ClusterConfig::default(), 7));
//! let mut out = Vec::new();
//! let now = 0; // nanoseconds on the driver's monotonic clock
//! let insert = Request::Insert { key: "Imagine".into(), value: "1971".into() };
//! node.handle(now, Input::Request { id: 1, request: insert }, &mut out).unwrap();
//! for output in out.drain(..) {
//!     match output {
//!         // With a durable node, write this to disk before carrying out what follows it.
//!         Output::Persist(_changes) => {}
//!         Output::Send { to, envelope } => { /* deliver `envelope` to the node at `to` */ }
//!         Output::Reply { id, reply } => assert!(matches!(reply, Ok(Response::Inserted { .. }))),
//!     }
//! }
//! if let Some(at) = node.poll_timeout() {
//!     // sleep until `at`, then:
//!     node.handle_timeout(at, &mut out);
//! }
//! ```
//!
//! Inside, a [`Node`] is a dispatcher over sub-machines that own their state and write
//! into one output context; modules import in one direction:
//! `node` → `coordinator`, `membership`, `replication`, `routing`, `failure`,
//! `anti_entropy` → `handover` → `shared`, `out`, `timers`, `message`, `store`, `ring`.
//!
//! Membership changes (join, depart, removal of a failed member) are serialized by the
//! bootstrap, which acts as the configuration master: it prepares the affected nodes'
//! next views, lets the nodes that gain keys fetch them, then commits, so that after
//! every change each key is on exactly its `min(k, N)` replicas. Lookups travel hop by
//! hop over fingers (or successors only).
#![deny(missing_docs)]

pub mod api;
pub mod config;
pub mod id;
pub mod message;
pub mod store;

mod anti_entropy;
pub mod coordinator;
mod craq;
pub mod disk;
mod failure;
mod handover;
mod membership;
mod node;
mod out;
mod placement;
mod rejected;
mod replication;
mod requests;
mod ring;
mod routing;
mod shared;
mod timers;

pub use api::{Pair, Reply, ReqId, Request, RequestError, Response};
pub use config::{ClusterConfig, Consistency, Limits, NodeConfig, Routing, Timing};
pub use coordinator::{Change, ChangeRecord, Consensus, Decision, Directory, Seat};
pub use disk::{DiskMeta, Persist, Recovered, RingRecord};
pub use id::Id;
pub use message::{ChainStep, Envelope, Message, NodeRef, Prepare, RingInfo, View};
pub use node::{Node, NodeStatus};
pub use rejected::Rejected;
pub use ring::Ring;
pub use shared::Phase;
pub use store::{Entry, Journal, Range, Store, Version};
pub use timers::Timer;

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
    /// Write this durably before carrying out any output after it (durable nodes only).
    Persist(disk::Persist),
}
