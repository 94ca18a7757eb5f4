//! The client side of a ringkv ring: what every program that sends a ring inserts,
//! queries and deletes and records what it saw needs.
//!
//! - [`ring`]: read the ring's members from any node (`GET /overlay`), and learn where
//!   each key lives ([`RingMap`], from `GET /node` on each member).
//! - [`router`]: token-aware routing: each request straight to the node that serves its
//!   key, the map learned again when answers show it stale ([`TokenRouter`]).
//! - [`member_cache`]: the rings a client remembers between runs, in a small file.
//! - [`op`]: send one operation to a node and classify its answer `ok`, `fail` or `info`
//!   (the rule is [`ringkv_runtime::outcome`](mod@ringkv_runtime::outcome)); [`op::perform`] also records it.
//! - [`history`]: a [`Recorder`] that puts the events of concurrent clients into one
//!   history in time order, in memory or in a JSON Lines file (`docs/history.md`), and
//!   the [`ProcessIds`] the clients take.
//! - [`load`]: the closed-loop load behind `dht bench`: concurrent clients, throughput,
//!   latency percentiles and, optionally, the history for `dht check`.
//!
//! ```no_run
//! use ringkv_client::load::{self, LoadOptions, Mix};
//!
//! # async fn bench() -> Result<(), ringkv_client::load::LoadError> {
//! let mut options = LoadOptions::new("127.0.0.1:5000", Mix::Requests, 10_000, 16);
//! options.history = Some("requests.jsonl".into());
//! let report = load::run(&options).await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod history;
pub mod load;
pub mod member_cache;
pub mod op;
pub mod ring;
pub mod router;

pub use history::{ProcessIds, Recorder};
pub use member_cache::{KnownRing, MemberCache};
pub use op::{perform, send, Op, Performed};
pub use ring::{learn, overlay, LearnError, OverlayError, RingMap};
pub use router::{ClientRouting, Route, TokenRouter};
