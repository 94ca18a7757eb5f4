//! Cluster-wide and per-node settings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Time;

/// How writes are replicated and reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Chain replication: writes pass head → tail and are acknowledged by the tail;
    /// reads are served by the tail. Linearizable per key while the ring is stable.
    Chain,
    /// Eventual consistency: the primary applies and acknowledges at once and replicates
    /// afterwards; a read is answered by the first replica on its route.
    Eventual,
    /// CRAQ (chain replication with apportioned queries, Terrace & Freedman 2009): writes
    /// pass head → tail as in chain replication, and the tail's acknowledgement marks
    /// them clean at the other replicas; a read is answered by the first replica on its
    /// route, from its store when its copy is clean, else with the version the tail has
    /// committed. Linearizable per key, like chain.
    Craq,
}

impl Consistency {
    /// Whether writes travel head → tail and are acknowledged by the tail (chain and
    /// CRAQ): such models fetch hand-overs from the nearest source only, push
    /// anti-entropy downstream only, and take leases.
    pub fn is_chain(self) -> bool {
        matches!(self, Consistency::Chain | Consistency::Craq)
    }

    /// Whether the model promises linearizability per key (chain and CRAQ).
    pub fn is_linearizable(self) -> bool {
        self.is_chain()
    }
}

/// How a lookup travels round the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Chord finger tables: O(log N) hops.
    Finger,
    /// Successor pointers only: O(N) hops, as in simple course implementations.
    Successor,
}

/// Settings chosen when the bootstrap starts and learned by every node that joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Replication factor: each key is stored on `min(k, N)` nodes.
    pub k: usize,
    /// Replication model.
    pub consistency: Consistency,
    /// Lookup routing.
    pub routing: Routing,
    /// Ring positions each process owns (virtual nodes; 1: one each). With more than one,
    /// a key's replicas are its successor and the next members of *other* processes, so
    /// they lie on `min(k, processes)` distinct processes.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub vnodes: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl ClusterConfig {
    /// A validated configuration; `k` must be between 1 and [`MAX_K`].
    pub fn new(
        k: usize,
        consistency: Consistency,
        routing: Routing,
    ) -> Result<ClusterConfig, ConfigError> {
        if k == 0 || k > MAX_K {
            return Err(ConfigError::BadK(k));
        }
        Ok(ClusterConfig {
            k,
            consistency,
            routing,
            vnodes: 1,
        })
    }

    /// This configuration with `vnodes` ring positions per process (1 to [`MAX_VNODES`]).
    pub fn with_vnodes(self, vnodes: u32) -> Result<ClusterConfig, ConfigError> {
        if vnodes == 0 || vnodes > MAX_VNODES {
            return Err(ConfigError::BadVnodes(vnodes));
        }
        Ok(ClusterConfig { vnodes, ..self })
    }

    /// Whether processes own more than one ring position each.
    pub fn has_vnodes(&self) -> bool {
        self.vnodes > 1
    }

    /// Length of the predecessor and successor lists each node keeps. One more than k, so
    /// a node always knows the whole replica set of the keys it holds and one spare.
    pub fn neighbour_list_len(&self) -> usize {
        self.k + 1
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            k: 3,
            consistency: Consistency::Chain,
            routing: Routing::Finger,
            vnodes: 1,
        }
    }
}

/// Most ring positions one process may own.
pub const MAX_VNODES: u32 = 256;

/// Largest replication factor accepted: each write fans out to k nodes, and neighbour lists
/// are k + 1 long, so a bound keeps message sizes and work per event small.
pub const MAX_K: usize = 64;

/// Bounds on what one node accepts. Inputs beyond them are refused with a typed error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest key in bytes (UTF-8).
    pub key_bytes_max: usize,
    /// Largest value in bytes (UTF-8).
    pub value_bytes_max: usize,
    /// Client requests a node may have outstanding at once; beyond it, `Overloaded`.
    pub pending_requests_max: usize,
    /// Membership operations the bootstrap queues while one is in progress.
    pub membership_queue_max: usize,
    /// Largest number of forwards a request may take before it is dropped as looping.
    pub hops_max: u32,
    /// Entries per snapshot chunk during a data hand-over.
    pub snapshot_chunk_entries: usize,
    /// Approximate bytes per snapshot chunk (a chunk holds at least one entry).
    pub snapshot_chunk_bytes: usize,
    /// Hand-over forwards a source tracks per gainer until they are acknowledged; beyond
    /// it, forwards are still sent but not awaited (a ring this far behind is overloaded;
    /// anti-entropy repairs what such a forward misses).
    pub handover_unacked_max: usize,
    /// Gainers a node forwards writes to at once.
    pub migrations_max: usize,
    /// Data-path messages a joining node holds until its join commits.
    pub early_messages_max: usize,
    /// Node incarnations the coordinator remembers, to tell a duplicate join request
    /// from a restarted node's.
    pub incarnations_max: usize,
    /// Bytes of keys and values a node stores before it refuses writes it heads with
    /// `StoreFull` (0: no limit). Replicas and hand-overs are not refused: what the ring
    /// accepted must reach its replicas.
    pub store_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 1024,
            value_bytes_max: 1 << 20,
            pending_requests_max: 16_384,
            membership_queue_max: 1024,
            hops_max: 1 << 16,
            snapshot_chunk_entries: 4096,
            snapshot_chunk_bytes: 4 << 20,
            handover_unacked_max: 1 << 18,
            migrations_max: 1024,
            early_messages_max: 16_384,
            incarnations_max: 1 << 16,
            store_bytes_max: 0,
        }
    }
}

/// Per-node timing settings, in nanoseconds of the driver's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// A client request not answered within this time ends with `Timeout`.
    pub request_timeout_ns: Time,
    /// A tombstone older than this is garbage-collected. It must exceed the longest time a
    /// replication message can be in flight, or a late message could resurrect a delete.
    pub tombstone_ttl_ns: Time,
    /// How often tombstones are swept.
    pub gc_interval_ns: Time,
    /// How long after a membership change commits a node still forwards writes in a
    /// handed-over range to its new holder, so replica writes that were sent under the old
    /// view (and arrive late) reach the new replica too.
    pub handover_grace_ns: Time,
    /// How often a member tells the bootstrap it is alive and pings its successors;
    /// 0 turns failure detection off (the default, so a driver that never fires timers
    /// loses nothing; real deployments use [`Timing::with_failure_handling`]).
    pub heartbeat_interval_ns: Time,
    /// Silence after which the bootstrap declares a member failed and a node stops routing
    /// through a successor.
    pub failure_timeout_ns: Time,
    /// A membership change not finished within this time is aborted and retried.
    pub membership_timeout_ns: Time,
    /// How often a primary compares digests of its keys with its replicas and repairs
    /// differences; 0 turns anti-entropy off.
    pub anti_entropy_interval_ns: Time,
}

/// The most often a member heartbeats, however short its failure timeout.
pub const HEARTBEAT_INTERVAL_MAX_NS: Time = 500_000_000;

/// The shortest failure timeout accepted: heartbeats go every sixth of it, and a
/// shorter one would mistake scheduling hiccups for crashes.
pub const FAILURE_TIMEOUT_MIN_NS: Time = 100_000_000;

/// The declared bound on how much the clock rates of two nodes may differ, in parts per
/// thousand (a node's second lasts between 0.98 and 1.02 of another's). Leases are safe
/// while it holds: the failure timeout exceeds the lease and the grant window together
/// by more than this drift (see [`Timing::lease_ns`]).
pub const CLOCK_DRIFT_PER_MILLE: u64 = 20;

impl Timing {
    /// How long a chain member may serve as a key's head or tail after it sent the
    /// heartbeat whose answer granted its lease (half the failure timeout); 0 when failure
    /// handling is off (no leases: nothing removes a member then).
    ///
    /// Why it is safe: the leader removes a member only after hearing nothing from it for
    /// the failure timeout, and a leader grants leases only while it heard from a majority
    /// of its group within [`Timing::lease_grant_window_ns`], so a deposed leader stops
    /// granting within that window, before any new leader (elected by that majority, with
    /// every member counted as just heard from) can remove anyone. Lease plus window is
    /// 5/6 of the failure timeout, which leaves 1/6 for clock drift (far above
    /// [`CLOCK_DRIFT_PER_MILLE`]).
    pub fn lease_ns(&self) -> Time {
        match self.heartbeat_interval_ns {
            0 => 0,
            _ => self.failure_timeout_ns / 2,
        }
    }

    /// A leader grants leases only if a majority of its group's seats was heard from
    /// within this time (a third of the failure timeout).
    pub fn lease_grant_window_ns(&self) -> Time {
        self.failure_timeout_ns / 3
    }

    /// How long a new leader waits, from taking over, before it may remove a member it
    /// has not heard from: until every lease its predecessor may have granted has run
    /// out, in any node's clock. The predecessor lost its majority before the new leader
    /// was elected, so it granted nothing later than the grant window after that, and a
    /// lease lasts [`Timing::lease_ns`]; both are stretched by the drift bound (the
    /// grantor's and the holder's clocks may run fast, the new leader's slow). About 87%
    /// of the failure timeout: a crashed leader is removed that much sooner than if the
    /// new leader counted every member as heard from when it took over.
    pub fn takeover_wait_ns(&self) -> Time {
        let d = CLOCK_DRIFT_PER_MILLE;
        let bound = u128::from(self.lease_ns() + self.lease_grant_window_ns());
        let wait = (bound * u128::from(1000 + d)).div_ceil(u128::from(1000 - d));
        Time::try_from(wait)
            .unwrap_or(Time::MAX)
            .min(self.failure_timeout_ns)
    }

    /// Defaults plus heartbeats, failure detection and anti-entropy, with the default
    /// failure timeout.
    pub fn with_failure_handling() -> Timing {
        Timing::with_failure_timeout(Timing::default().failure_timeout_ns)
    }

    /// Failure handling on, with a member declared failed after `failure_timeout_ns` of
    /// silence (at least [`FAILURE_TIMEOUT_MIN_NS`]). Heartbeats go every sixth of it, at
    /// most every [`HEARTBEAT_INTERVAL_MAX_NS`], so a live member misses about five
    /// before it is suspected.
    pub fn with_failure_timeout(failure_timeout_ns: Time) -> Timing {
        let failure_timeout_ns = failure_timeout_ns.max(FAILURE_TIMEOUT_MIN_NS);
        Timing {
            heartbeat_interval_ns: HEARTBEAT_INTERVAL_MAX_NS.min(failure_timeout_ns / 6),
            failure_timeout_ns,
            anti_entropy_interval_ns: 2_000_000_000,
            ..Timing::default()
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            request_timeout_ns: 10_000_000_000,
            tombstone_ttl_ns: 60_000_000_000,
            gc_interval_ns: 10_000_000_000,
            handover_grace_ns: 10_000_000_000,
            heartbeat_interval_ns: 0,
            failure_timeout_ns: 1_200_000_000,
            membership_timeout_ns: 5_000_000_000,
            anti_entropy_interval_ns: 0,
        }
    }
}

/// Everything needed to create one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Advertised `host:port`; the node id is its SHA-1.
    pub addr: String,
    /// Address of the bootstrap, or `None` if this node is the bootstrap.
    pub bootstrap: Option<String>,
    /// Cluster settings; only the bootstrap's are used, joiners learn them.
    pub cluster: ClusterConfig,
    /// Input limits.
    pub limits: Limits,
    /// Timeouts and periods.
    pub timing: Timing,
    /// Seed of the node's random number generator.
    pub seed: u64,
    /// For a bootstrap: look for the ring it belonged to before founding one (a
    /// restart). Members tell their bootstrap address of their ring every heartbeat, so
    /// it waits three heartbeat intervals; without failure handling it founds at once.
    pub recover: bool,
    /// For a bootstrap restarted with `recover` and nothing on a disk: its operator says
    /// the ring it belonged to still runs (etcd's `--initial-cluster-state existing`).
    /// It then never founds a ring of its own: it waits until a member names its ring,
    /// however long a partition keeps them apart, or shows that this bootstrap held the
    /// group's only seat (then it founds the ring again, same id, as members rejoin).
    /// Without it, a memory-only bootstrap cut off from its ring when it restarts cannot
    /// tell a restart from a first start and founds an empty ring after its wait.
    pub ring_runs: bool,
    /// Persist: emit [`crate::Output::Persist`] for the driver's disk (see
    /// [`crate::disk`]).
    pub durable: bool,
    /// What a durable node read back from its disk at start.
    pub recovered: Option<crate::disk::Recovered>,
    /// Where the driver's clock stands against the UNIX epoch: the wall time, in
    /// nanoseconds, at which it read 0. Write versions take the wall time as their
    /// floor (a hybrid logical clock), so that last-writer-wins follows real time
    /// across nodes up to their clock skew. 0 in the simulator, whose nodes share one
    /// virtual epoch.
    pub clock_epoch_ns: u64,
    /// With virtual nodes: the process this node is a position of (the address of the
    /// process's first position), when it is not the first. `None`: a process of its own.
    pub process: Option<String>,
}

impl NodeConfig {
    /// A bootstrap node with default limits and timing.
    pub fn bootstrap(addr: impl Into<String>, cluster: ClusterConfig, seed: u64) -> NodeConfig {
        NodeConfig {
            addr: addr.into(),
            bootstrap: None,
            cluster,
            limits: Limits::default(),
            timing: Timing::default(),
            seed,
            recover: false,
            ring_runs: false,
            durable: false,
            recovered: None,
            clock_epoch_ns: 0,
            process: None,
        }
    }

    /// An ordinary node that will join through `bootstrap`.
    pub fn member(addr: impl Into<String>, bootstrap: impl Into<String>, seed: u64) -> NodeConfig {
        NodeConfig {
            addr: addr.into(),
            bootstrap: Some(bootstrap.into()),
            cluster: ClusterConfig::default(),
            limits: Limits::default(),
            timing: Timing::default(),
            seed,
            recover: false,
            ring_runs: false,
            durable: false,
            recovered: None,
            clock_epoch_ns: 0,
            process: None,
        }
    }
}

/// A setting given in an unusable form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `k` out of range.
    #[error("replication factor k must be between 1 and {MAX_K}, got {0}")]
    BadK(usize),
    /// Unknown consistency model name.
    #[error("unknown consistency model '{0}': use 'chain', 'eventual' or 'craq'")]
    BadConsistency(String),
    /// Unknown routing name.
    #[error("unknown routing '{0}': use 'finger' or 'successor'")]
    BadRouting(String),
    /// `vnodes` out of range.
    #[error("virtual nodes per process must be between 1 and {MAX_VNODES}, got {0}")]
    BadVnodes(u32),
}

impl FromStr for Consistency {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "chain" | "strong" | "linearizable" => Ok(Consistency::Chain),
            "eventual" | "fast" => Ok(Consistency::Eventual),
            "craq" => Ok(Consistency::Craq),
            _ => Err(ConfigError::BadConsistency(s.to_string())),
        }
    }
}

impl FromStr for Routing {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "finger" | "fingers" | "chord" => Ok(Routing::Finger),
            "successor" | "linear" => Ok(Routing::Successor),
            _ => Err(ConfigError::BadRouting(s.to_string())),
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Consistency::Chain => "chain",
            Consistency::Eventual => "eventual",
            Consistency::Craq => "craq",
        })
    }
}

impl fmt::Display for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Routing::Finger => "finger",
            Routing::Successor => "successor",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_leader_waits_out_every_lease_at_the_drift_bound_and_no_longer() {
        for timeout_ms in [100, 1_200, 3_000, 60_000] {
            let t = Timing::with_failure_timeout(timeout_ms * 1_000_000);
            let wait = t.takeover_wait_ns();
            // The predecessor's last grant (grant window) and the lease it gave, on
            // clocks 2% fast, against the new leader's clock 2% slow.
            let d = CLOCK_DRIFT_PER_MILLE;
            let bound = (t.lease_ns() + t.lease_grant_window_ns()) * (1000 + d);
            assert!(wait * (1000 - d) >= bound, "{timeout_ms} ms: {wait}");
            assert!(wait < t.failure_timeout_ns, "{timeout_ms} ms: {wait}");
        }
        let t = Timing::with_failure_timeout(1_200_000_000);
        assert_eq!(t.takeover_wait_ns(), 1_040_816_327);
    }

    #[test]
    fn craq_parses_prints_and_serializes_as_craq() {
        assert_eq!("craq".parse::<Consistency>(), Ok(Consistency::Craq));
        assert_eq!("CRAQ".parse::<Consistency>(), Ok(Consistency::Craq));
        assert_eq!(Consistency::Craq.to_string(), "craq");
        let json = serde_json::to_string(&Consistency::Craq).unwrap();
        assert_eq!(json, "\"craq\"");
        assert_eq!(
            serde_json::from_str::<Consistency>(&json).unwrap(),
            Consistency::Craq
        );
        assert!(Consistency::Craq.is_chain() && Consistency::Chain.is_chain());
        assert!(!Consistency::Eventual.is_chain());
        assert!("bogus".parse::<Consistency>().is_err());
    }
}
