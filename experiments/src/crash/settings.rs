//! What a crash run is asked to do: which fault ([`Fault`]), who is killed
//! ([`Victim`]) and the ring, load and timeouts around it ([`Settings`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::{ExperimentError, Result};

/// Which process the crash experiment kills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Victim {
    /// The bootstrap's next k − 1 successors: killed at 25% of the load, restarted at 55%.
    #[default]
    Successors,
    /// The bootstrap: killed at 25%, restarted at 55% (it rejoins its ring), killed for
    /// good at 75%; then a new node joins through a member and another member departs.
    Bootstrap,
}

impl Victim {
    /// The name of the scenario's files: `crash_real` or `crash_bootstrap`.
    pub fn stem(self) -> &'static str {
        match self {
            Victim::Successors => "crash_real",
            Victim::Bootstrap => "crash_bootstrap",
        }
    }
}

/// What the crash experiment does to its victims (the nemesis).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` (SIGKILL), then a restart on the same address (see [`Victim`]).
    #[default]
    Kill,
    /// SIGSTOP of one member that is not the bootstrap (the bootstrap's successor) at 25%
    /// of the load, SIGCONT at 55% (6 s with the default 20 s load): the process keeps its
    /// state and sockets, and comes back with whatever it believed before.
    Pause,
    /// A network partition at 25% of the load, healed at 55%: the bootstrap's next
    /// ⌊(N − 1)/2⌋ successors (2 of 5) on one side, the rest on the other, through each
    /// node's test-only transport filter (`POST /admin/partition`).
    Partition,
}

impl Fault {
    /// The name on the command line and in the reports: `kill`, `pause`, `partition`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
        }
    }
}

/// Settings of the crash experiment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Processes in the ring, the bootstrap included.
    pub nodes: usize,
    /// Replication factor; with the successors as victims, k − 1 nodes are killed.
    pub k: usize,
    /// Who is killed (with [`Fault::Kill`]; the other faults take the successors).
    pub victim: Victim,
    /// What is done to the victims.
    pub fault: Fault,
    /// Length of the load (`None`: 20 s, or 5 s with `quick`). The restart comes 30% of it
    /// after the kill, and the ring removes killed nodes after the failure timeout: with a
    /// short load they are restarted before the ring serves without them.
    pub duration: Option<Duration>,
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Fraction of operations that insert (the others query).
    pub write_ratio: f64,
    /// The nodes' request timeout (`--request-timeout-ms`, default 2 s instead of the
    /// nodes' 10 s). A request caught by the crash is re-driven by the node it entered
    /// once the ring has repaired itself; one that cannot complete is answered 504 after
    /// this time.
    pub request_timeout: Duration,
    /// The nodes' failure timeout (`--failure-timeout-ms`, default 1.2 s as in `dht node`):
    /// how long a killed node stays in the ring.
    pub failure_timeout: Duration,
    /// The `dht` executable to start the nodes from (`None`: this process's executable).
    pub dht: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nodes: 5,
            k: 3,
            victim: Victim::Successors,
            fault: Fault::Kill,
            duration: None,
            clients: 8,
            keys: 16,
            write_ratio: 0.5,
            request_timeout: Duration::from_secs(2),
            failure_timeout: Duration::from_millis(1_200),
            dht: None,
        }
    }
}

impl Settings {
    /// The name of the run's files: `crash_real` (kill of the successors),
    /// `crash_bootstrap`, `crash_pause` or `crash_partition`.
    pub fn stem(&self) -> &'static str {
        match self.fault {
            Fault::Kill => self.victim.stem(),
            Fault::Pause => "crash_pause",
            Fault::Partition => "crash_partition",
        }
    }

    /// How many nodes the fault takes: k − 1 killed successors (or the bootstrap), one
    /// paused member, or the ⌊(N − 1)/2⌋ successors cut off from the rest.
    pub fn victim_count(&self) -> usize {
        match (self.fault, self.victim) {
            (Fault::Kill, Victim::Successors) => self.k - 1,
            (Fault::Kill, Victim::Bootstrap) | (Fault::Pause, _) => 1,
            (Fault::Partition, _) => (self.nodes - 1) / 2,
        }
    }

    /// The load's length.
    pub fn duration(&self, quick: bool) -> Duration {
        self.duration
            .unwrap_or(Duration::from_secs(if quick { 5 } else { 20 }))
    }

    pub(super) fn validate(&self, duration: Duration) -> Result<()> {
        let bad = |m: String| Err(ExperimentError(m));
        if self.k < 2 || self.k > ringkv_core::config::MAX_K {
            return bad(format!(
                "crash: k must be between 2 and {} (k − 1 nodes are killed), not {}",
                ringkv_core::config::MAX_K,
                self.k
            ));
        }
        if self.nodes < self.k {
            return bad(format!(
                "crash: the ring needs at least k = {} nodes (k − 1 of them besides the bootstrap are killed), not {}",
                self.k, self.nodes
            ));
        }
        if self.victim == Victim::Bootstrap && self.nodes < 3 {
            return bad(format!(
                "crash: with the bootstrap as victim the ring needs at least 3 nodes (one to join through, one to depart), not {}",
                self.nodes
            ));
        }
        if self.fault != Fault::Kill && self.victim != Victim::Successors {
            return bad(format!(
                "crash: --victim applies to --fault kill only; --fault {} takes members that are not the bootstrap",
                self.fault.name()
            ));
        }
        if self.fault == Fault::Partition && self.nodes < 3 {
            return bad(format!(
                "crash: a partition needs at least 3 nodes (the bootstrap's side must keep a majority), not {}",
                self.nodes
            ));
        }
        if duration < Duration::from_secs(2) {
            return bad(format!(
                "crash: the load must last at least 2 s, not {:.1} s",
                duration.as_secs_f64()
            ));
        }
        if self.clients == 0 || self.keys == 0 || !(0.0..=1.0).contains(&self.write_ratio) {
            return bad(
                "crash: clients and keys must be at least 1, the write ratio in 0..1".into(),
            );
        }
        Ok(())
    }
}
