//! ringkv nodes on tokio timers and axum HTTP.
//!
//! The protocol is `ringkv-core`'s state machine, unchanged; this crate only drives it:
//!
//! - [`actor`]: each node's state machine behind a lock, stepped in turns by the task that
//!   brings an input (inputs that find it busy wait in a bounded queue, taken first by the
//!   next turn), and by one task per node that sleeps until the next timer deadline.
//! - [`http`]: the client and operator API (`docs/http-api.md`), the upgrade that opens a
//!   peer connection, and a JSON route for peer messages (debugging).
//! - [`peer`]: per-destination queues whose sender tasks write what is queued as binary
//!   frames ([`wire`]) on one long-lived connection per destination ([`dial`]);
//!   [`inbound`]: the receiving side, which hands frames to the actor in order.
//! - [`server`]: one node (listener + HTTP server + actor); [`cluster`]: a whole ring in
//!   one process.
//! - [`fault`]: the test-only partition filter behind `POST /admin/partition`.
//! - [`conn_limit`]: the listener that caps a node's open HTTP connections.
//! - [`baseline`]: a trivial key-value server on the same HTTP stack, to measure ringkv
//!   against (`dht bench --baseline`).
//! - [`client`]: the HTTP client nodes, tools and tests use; [`outcome`](mod@outcome): the one rule
//!   that tells from an answer whether an operation took effect (`ok`/`fail`/`info`).
//!
//! No protocol decision is made here: what to send, when to time out and what to answer
//! all come from the core's outputs.
#![deny(missing_docs)]

pub mod actor;
pub mod answer;
pub mod baseline;
pub mod client;
pub mod cluster;
pub mod conn_limit;
pub mod dial;
pub mod fault;
pub mod http;
pub mod inbound;
pub mod metrics;
pub mod outcome;
pub mod peer;
pub mod relay;
mod sender;
pub mod server;
pub mod storage;
pub mod vnodes;
pub mod wire;

pub use actor::{ActorOptions, NodeHandle, Unavailable};
pub use baseline::BaselineServer;
pub use client::{encode_segment, ClientError, HttpClient, HttpReply};
pub use cluster::{ClusterError, ClusterOptions, LocalCluster};
pub use conn_limit::MAX_CONNECTIONS_DEFAULT;
pub use fault::{Direction, PeerFilter};
pub use metrics::Metrics;
pub use outcome::{outcome, Cause, DataOp, ErrorCode, Outcome, Served};
pub use peer::PeerLimits;
pub use relay::RelayServer;
pub use server::{NodeOptions, NodeServer, Role, StartError};
