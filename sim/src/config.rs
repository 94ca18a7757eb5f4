//! Every knob of a simulation, and the `dht sim` command line that reproduces it.

use std::path::PathBuf;

use ringkv_core::config::MAX_K;
use ringkv_core::{ClusterConfig, Consistency, Routing, Timing};

use crate::faults::{DownCap, Fault, RandomFaults};
use crate::net::{NetConfig, PartitionMode};
use crate::units::{check_probability, Dur, ParseError};
use crate::workload::{Synthetic, WorkloadSpec};

/// A simulation is a seed plus this. `Default` is a 10-node chain ring with k = 3 running
/// the reference `requests` workload over an exponential 1 ms network.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Initial ring size (node 0 is the bootstrap): processes, each owning `vnodes` ring
    /// positions.
    pub nodes: usize,
    /// Ring positions per process (virtual nodes; `--vnodes`): process `p` is simulated
    /// as the nodes `p * vnodes ..` (each a core node with an address of its own) that
    /// crash, restart, pause, depart and are partitioned together; a key's replicas lie
    /// on distinct processes.
    pub vnodes: usize,
    /// Replication factor.
    pub k: usize,
    /// Replication model.
    pub consistency: Consistency,
    /// Lookup routing.
    pub routing: Routing,
    /// Closed-loop clients; client c is bound to node `c % nodes`. `None`: one per node.
    pub clients: Option<usize>,
    /// What the clients do.
    pub workload: WorkloadSpec,
    /// Read reference files from here instead of the embedded copies.
    pub workload_dir: Option<PathBuf>,
    /// Latency, drops, duplicates, partition mode.
    pub net: NetConfig,
    /// Scheduled faults.
    pub faults: Vec<Fault>,
    /// Random faults drawn from the seed.
    pub random_faults: Option<RandomFaults>,
    /// Random faults: at most this many nodes down at once; `None`: no cap. A node counts
    /// as down from its crash until the failure timeout after its restart, time for the
    /// ring to remove its old incarnation and refill it (see [`SimConfig::down_cap`]).
    /// `Some(k - 1)` keeps random schedules within the declared fault model. Explicit
    /// faults are never capped.
    pub max_down: Option<usize>,
    /// A client's operation not answered within this ends `info`. The nodes' own request
    /// timeout is the larger of this and the core's default, so joins and departs, which
    /// take longer than an operation, are not cut short.
    pub timeout_ns: u64,
    /// Pause between a client's operations.
    pub think_ns: u64,
    /// Run the core's failure handling (heartbeats, failure detection, anti-entropy:
    /// `Timing::with_failure_handling`). Off by default, as in the core.
    pub failure_handling: bool,
    /// The failure timeout when failure handling is on (`Timing::with_failure_timeout`;
    /// heartbeats follow from it); `None` for the core's default.
    pub failure_timeout_ns: Option<u64>,
    /// Each node's clock runs at a rate drawn from the seed within this many parts per
    /// thousand of true time (0: every clock exact). Leases hold while it stays within
    /// `ringkv_core::config::CLOCK_DRIFT_PER_MILLE`.
    pub clock_drift_per_mille: u64,
    /// After the last client operation, keep running the nodes' background work
    /// (heartbeats, anti-entropy) for this long before the invariants are checked.
    /// `None`: 0 without failure handling, else the failure timeout plus two
    /// anti-entropy rounds.
    pub settle_ns: Option<u64>,
    /// Stop after this many events (a bound against livelock); the summary says so.
    pub events_max: u64,
    /// Stop at this virtual time (ns), whatever is still queued; the summary says so.
    pub time_max_ns: u64,
    /// Keep the JSON Lines history (needed for `--history` and `--check`).
    pub record_history: bool,
    /// Final phase (`--final-reads`): once the run has settled, read every key the
    /// workload wrote or deleted, once, through a live member, on a reliable network,
    /// and count the keys whose read contradicts an acknowledged write
    /// (`lost_acked_writes`). The reads are in the history like any other (under fresh
    /// process ids). With failure handling it also checks placement after crashes.
    pub final_reads: bool,
    /// Every node has a disk (`NodeConfig::durable`): it persists before it sends, a
    /// crash keeps what it persisted, and a restarted node comes back with it
    /// (crash-with-disk). Off: a crash loses everything, as a node without `--data-dir`.
    pub disks: bool,
    /// How long a node takes to handle each message and client request (`--service`):
    /// it handles them one at a time, in arrival order, and what one sends leaves when
    /// its handling ends, so a node with more to do than this allows queues its inputs,
    /// as one machine's processor would. Timers cost nothing. 0 (the default): every
    /// input is handled the moment it arrives, and the simulator measures message delays
    /// alone.
    pub service_ns: u64,
    /// Virtual time between the end of setup and the clients' first operation
    /// (`--warmup`), the nodes' background running meanwhile. The core forwards writes in
    /// a range it handed over to the range's new holder for `Timing::handover_grace_ns`
    /// (10 s) after each membership change, and setup is nine joins: a throughput
    /// measurement that should not include that forwarding starts after it.
    pub warmup_ns: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            nodes: 10,
            vnodes: 1,
            k: 3,
            consistency: Consistency::Chain,
            routing: Routing::Finger,
            clients: None,
            workload: WorkloadSpec::default(),
            workload_dir: None,
            net: NetConfig::default(),
            faults: Vec::new(),
            random_faults: None,
            timeout_ns: 2_000_000_000,
            think_ns: 0,
            failure_handling: false,
            failure_timeout_ns: None,
            clock_drift_per_mille: 0,
            settle_ns: None,
            events_max: 2_000_000_000,
            time_max_ns: 3_600_000_000_000,
            record_history: true,
            max_down: None,
            final_reads: false,
            disks: false,
            service_ns: 0,
            warmup_ns: 0,
        }
    }
}

/// `--one-chain`: the most keys times nodes (the names tried to find the keys).
const ONE_CHAIN_SCAN_MAX: u64 = 1 << 24;

/// Largest ring the simulator builds (node addresses are `10.x.y.z:5000`).
pub const NODES_MAX: usize = 1 << 20;

impl SimConfig {
    /// Number of clients.
    pub fn client_count(&self) -> usize {
        self.clients.unwrap_or(self.nodes)
    }

    /// The nodes' timing: the core's defaults (or its failure-handling defaults), with
    /// the request timeout raised to `timeout_ns` if that is longer.
    pub fn timing(&self) -> Timing {
        let mut timing = match (self.failure_handling, self.failure_timeout_ns) {
            (true, Some(ns)) => Timing::with_failure_timeout(ns),
            (true, None) => Timing::with_failure_handling(),
            (false, _) => Timing::default(),
        };
        timing.request_timeout_ns = timing.request_timeout_ns.max(self.timeout_ns);
        timing
    }

    /// The cap on simultaneous crashes of random schedules: `max_down` nodes, each down
    /// from its crash until the failure timeout after its restart.
    pub fn down_cap(&self) -> Option<DownCap> {
        self.max_down.map(|max_down| DownCap {
            max_down,
            repair_ns: self.timing().failure_timeout_ns,
        })
    }

    /// How long the background runs after the last client operation.
    pub fn settle(&self) -> u64 {
        self.settle_ns.unwrap_or_else(|| {
            let t = self.timing();
            if self.failure_handling {
                t.failure_timeout_ns + 2 * t.anti_entropy_interval_ns
            } else {
                0
            }
        })
    }

    /// The cluster settings the bootstrap starts with.
    pub fn cluster(&self) -> Result<ClusterConfig, ParseError> {
        let vnodes = u32::try_from(self.vnodes).unwrap_or(u32::MAX);
        ClusterConfig::new(self.k, self.consistency, self.routing)
            .and_then(|c| c.with_vnodes(vnodes))
            .map_err(|e| ParseError(e.to_string()))
    }

    /// Simulated core nodes: `nodes` processes of `vnodes` positions each.
    pub fn positions(&self) -> usize {
        self.nodes * self.vnodes.max(1)
    }

    /// Reject settings the simulator cannot run.
    pub fn validate(&self) -> Result<(), ParseError> {
        if self.nodes == 0 || self.nodes > NODES_MAX {
            return Err(ParseError(format!(
                "--nodes must be between 1 and {NODES_MAX}"
            )));
        }
        if self.k == 0 || self.k > MAX_K {
            return Err(ParseError(format!("--k must be between 1 and {MAX_K}")));
        }
        if self.vnodes == 0 || self.positions() > NODES_MAX {
            return Err(ParseError(format!(
                "--vnodes must be at least 1, and --nodes times --vnodes at most {NODES_MAX}"
            )));
        }
        self.cluster()?;
        if self.client_count() == 0 || self.client_count() > NODES_MAX {
            return Err(ParseError(format!(
                "--clients must be between 1 and {NODES_MAX}"
            )));
        }
        if self.timeout_ns == 0 {
            return Err(ParseError("--timeout must be positive".into()));
        }
        if let WorkloadSpec::Synthetic(s) = &self.workload {
            // About `nodes` names are tried per key found.
            if s.one_chain && s.keys.saturating_mul(self.nodes as u64) > ONE_CHAIN_SCAN_MAX {
                return Err(ParseError(format!(
                    "--one-chain: --keys times --nodes must be at most {ONE_CHAIN_SCAN_MAX}"
                )));
            }
            if s.clients_on_chain && !s.one_chain {
                return Err(ParseError(
                    "--clients-on-chain places the clients on the chain of --one-chain: use both"
                        .into(),
                ));
            }
        }
        check_probability(self.net.drop_probability, "--drop")?;
        check_probability(self.net.dup_probability, "--dup")?;
        Ok(())
    }

    /// The `dht sim` command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut args = vec![
            "dht sim".to_string(),
            format!("--nodes {}", self.nodes),
            format!("--k {}", self.k),
            format!("--consistency {}", self.consistency),
            format!("--routing {}", self.routing),
            format!("--seed {}", self.seed),
        ];
        if self.vnodes > 1 {
            args.push(format!("--vnodes {}", self.vnodes));
        }
        if let Some(c) = self.clients {
            args.push(format!("--clients {c}"));
        }
        args.push(format!("--workload {}", self.workload.name()));
        if let WorkloadSpec::Synthetic(s) = &self.workload {
            args.push(synthetic_args(s));
        }
        if let Some(dir) = &self.workload_dir {
            args.push(format!(
                "--workload-dir {}",
                shell_quote(&dir.display().to_string())
            ));
        }
        args.push(format!("--latency {}", self.net.latency));
        args.push(format!("--drop {}", self.net.drop_probability));
        args.push(format!("--dup {}", self.net.dup_probability));
        if self.net.partition_mode != PartitionMode::Drop {
            args.push(format!("--partition-mode {}", self.net.partition_mode));
        }
        args.push(format!("--timeout {}", Dur(self.timeout_ns)));
        if self.think_ns > 0 {
            args.push(format!("--think {}", Dur(self.think_ns)));
        }
        for f in &self.faults {
            args.push(format!("--fault {}", shell_quote(&f.to_string())));
        }
        if let Some(r) = &self.random_faults {
            args.push(random_fault_args(r));
            if let Some(max) = self.max_down {
                args.push(format!("--max-down {max}"));
            }
        }
        if self.failure_handling {
            args.push("--failure-handling".into());
        }
        if let Some(ns) = self.failure_timeout_ns {
            args.push(format!("--failure-timeout {}", Dur(ns)));
        }
        if self.clock_drift_per_mille > 0 {
            args.push(format!("--clock-drift {}", self.clock_drift_per_mille));
        }
        if let Some(ns) = self.settle_ns {
            args.push(format!("--settle {}", Dur(ns)));
        }
        if self.final_reads {
            args.push("--final-reads".into());
        }
        if self.disks {
            args.push("--disks".into());
        }
        if self.service_ns > 0 {
            args.push(format!("--service {}", Dur(self.service_ns)));
        }
        if self.warmup_ns > 0 {
            args.push(format!("--warmup {}", Dur(self.warmup_ns)));
        }
        let defaults = SimConfig::default();
        if self.events_max != defaults.events_max {
            args.push(format!("--events-max {}", self.events_max));
        }
        if self.time_max_ns != defaults.time_max_ns {
            args.push(format!("--time-max {}", Dur(self.time_max_ns)));
        }
        args.join(" ")
    }
}

fn synthetic_args(s: &Synthetic) -> String {
    format!(
        "--ops {} --keys {} --read-fraction {} --delete-fraction {} --key-dist {}{}",
        s.ops,
        s.keys,
        s.read_fraction,
        s.delete_fraction,
        s.key_dist,
        if s.one_chain { " --one-chain" } else { "" }
    ) + if s.clients_on_chain {
        " --clients-on-chain"
    } else {
        ""
    }
}

fn random_fault_args(r: &RandomFaults) -> String {
    let restart = match r.restart_after_ns {
        Some(ns) => Dur(ns).to_string(),
        None => "never".into(),
    };
    format!(
        "--faults random --crash-rate {} --restart-after {restart} --join-rate {} --depart-rate {} \
         --partition-rate {} --partition-duration {} --fault-horizon {}",
        r.crash_rate,
        r.join_rate,
        r.depart_rate,
        r.partition_rate,
        Dur(r.partition_ns),
        Dur(r.horizon_ns)
    ) + &match r.one_way_fraction > 0.0 {
        true => format!(" --one-way {}", r.one_way_fraction),
        false => String::new(),
    } + &pause_args(r)
        + &match r.power_cut_rate > 0.0 {
            true => format!(" --power-cut-rate {}", r.power_cut_rate),
            false => String::new(),
        }
}

fn pause_args(r: &RandomFaults) -> String {
    match r.pause_rate > 0.0 {
        true => format!(
            " --pause-rate {} --pause-duration {}",
            r.pause_rate,
            Dur(r.pause_ns)
        ),
        false => String::new(),
    }
}

/// Quote `s` for a POSIX shell if it needs it.
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.,:@/=+".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_command_names_every_changed_knob() {
        let config = SimConfig {
            seed: 42,
            faults: vec!["crash:3@1ms".parse().unwrap()],
            random_faults: Some(RandomFaults::default()),
            service_ns: 50_000,
            warmup_ns: 11_000_000_000,
            ..SimConfig::default()
        };
        let cmd = config.replay_command();
        assert!(cmd.starts_with(
            "dht sim --nodes 10 --k 3 --consistency chain --routing finger --seed 42"
        ));
        assert!(cmd.contains("--latency exp:1ms --drop 0 --dup 0"));
        assert!(cmd.contains("--fault crash:3@1ms"));
        assert!(cmd.contains("--faults random --crash-rate 1 --restart-after 200ms"));
        assert!(cmd.contains("--service 50us --warmup 11s"), "{cmd}");
        assert!(!SimConfig::default().replay_command().contains("--service"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = [
            SimConfig {
                nodes: 0,
                ..SimConfig::default()
            },
            SimConfig {
                k: 0,
                ..SimConfig::default()
            },
            SimConfig {
                clients: Some(0),
                ..SimConfig::default()
            },
            SimConfig {
                net: NetConfig {
                    drop_probability: 2.0,
                    ..NetConfig::default()
                },
                ..SimConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        assert!(SimConfig::default().validate().is_ok());
    }
}
