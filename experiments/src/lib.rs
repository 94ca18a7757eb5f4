//! Workloads, experiments and reports for ringkv: the experiments behind `dht experiment`
//! ([`runner`]), which write CSVs and PNG plots into `results/`. The load client behind
//! `dht bench` is `ringkv_client::load`.
//!
//! | experiment | module | backend | output |
//! |---|---|---|---|
//! | 1. insert throughput against k | [`throughput`] | real or sim | `insert_throughput.csv/.png` (`_wan` with a link latency) |
//! | 2. query throughput against k | [`throughput`] | real or sim | `query_throughput.csv/.png` (`_wan` with a link latency) |
//! | 3. mixed requests, checked | [`consistency`] | real or sim | `requests_consistency.csv`, `requests_values.csv` |
//! | 4a. staleness against time | [`staleness`] | sim | `staleness.csv/.png` |
//! | 4b. hops against N | [`hops`] | sim | `hops.csv/.png` |
//! | 4c. throughput, p99 against N | [`scaling`] | sim | `scaling.csv/.png` |
//! | 4d. violations under faults | [`faults`] | sim | `faults.csv` |
//! | 4e. keys per node against virtual nodes | [`balance`] | placement only | `balance.csv/.png` |
//! | 6. read-heavy mix (95/5, 70/30): read throughput against k | [`readmix`] | sim (keys over the ring; and on one chain of nodes taking 100 µs a message, 100/95/70% reads), or real with 1 ms links | `readmix_sim.csv/.png`, `readmix_chain_sim.csv/.png`, `readmix_wan.csv/.png` |
//! | 5. `kill -9` of k − 1 node processes under load | [`crash`] | separate `dht` processes | `crash_real.csv/.md/.png` |
//! | 5, `--victim bootstrap`: `kill -9`, restart and loss of the bootstrap | [`crash`] | separate `dht` processes | `crash_bootstrap.csv/.md/.png` |
//! | 5, `--fault pause`: SIGSTOP of a member for 6 s | [`crash`] | separate `dht` processes | `crash_pause.csv/.md/.png` |
//! | 5, `--fault partition`: 2 of 5 nodes cut off for 6 s | [`crash`] | separate `dht` processes | `crash_partition.csv/.md/.png` |
//!
//! `all` runs 1–4e and 6 (in the simulator, and on the real ring with 1 ms links), and 1
//! and 2 also with 1 ms node-to-node links
//! ([`runner::WAN_LATENCY`]); the crash experiment starts `dht` processes and runs on its own
//! (`dht experiment crash`).
//!
//! ```no_run
//! use ringkv_experiments::runner::{run, Experiment, Options};
//!
//! let mut options = Options::new("results");
//! options.quick = true;
//! for report in run(Experiment::Insert, &options).unwrap() {
//!     println!("{}", report.table);
//! }
//! ```
pub mod analysis;
pub mod balance;
pub mod consistency;
pub mod crash;
pub mod durability;
pub mod faults;
pub mod hops;
pub mod plot;
pub mod readmix;
pub mod real;
pub mod runner;
pub mod scaling;
pub mod staleness;
pub mod throughput;
pub mod workloads;

/// Why an experiment could not run or write its results.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExperimentError(pub String);

/// Experiments' result type.
pub type Result<T> = std::result::Result<T, ExperimentError>;

impl From<std::io::Error> for ExperimentError {
    fn from(e: std::io::Error) -> Self {
        ExperimentError(e.to_string())
    }
}
