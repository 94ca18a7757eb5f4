//! Deterministic simulator and consistency checker for ringkv.
//!
//! The simulator drives the real [`ringkv_core::Node`] state machines on virtual time:
//! a seeded event queue ([`engine`]), a network with latency, drops, duplicates and
//! partitions ([`net`]), crash/restart/join/depart schedules ([`faults`]), closed-loop
//! clients ([`client`]) running the reference or synthetic workloads ([`workload`]), and
//! invariant observers at quiescence ([`observe`]). A run is a seed plus a [`SimConfig`];
//! the same pair gives byte-identical histories and summaries (wall-clock fields aside).
//!
//! ```
//! use ringkv_sim::{SimConfig, Simulation};
//!
//! let config = SimConfig { seed: 7, nodes: 5, ..SimConfig::default() };
//! let result = Simulation::new(config).unwrap().run();
//! assert_eq!(result.summary.ops_ok, 500);
//! assert_eq!(result.summary.invariant_violations, 0);
//! ```
#![warn(missing_docs)]

pub mod check;
pub mod client;
pub mod config;
pub mod engine;
pub mod faults;
pub mod final_reads;
pub mod net;
pub mod observe;
pub mod sim;
pub mod summary;
pub mod sweep;
pub mod units;
pub mod workload;

pub use config::SimConfig;
pub use faults::{DownCap, Fault, FaultKind, RandomFaults};
pub use net::{Cut, Latency, NetConfig, PartitionMode};
pub use sim::{node_addr, SimError, SimResult, Simulation};
pub use summary::Summary;
pub use workload::{KeyDist, Reference, Synthetic, WorkloadSpec};
