//! The simulation driver: real `ringkv_core::Node`s on virtual time, in the shape of
//! turmoil's: this module holds the event loop and the run's stages, `hosts` the
//! simulated nodes (inputs, timers, sends, membership, faults), `clients` the workload's
//! clients and the history they record, and `finish` the final reads and the summary.
//!
//! A run has two stages. **Setup**: node 0 starts as the bootstrap and nodes `1..N` join
//! one at a time through the real protocol (a `Join` request each), over a reliable
//! network (latency only); with a warm-up (`SimConfig::warmup_ns`) the nodes' background
//! runs on, still reliably, for that long. **Client phase**: once setup has drained, drops, duplicates
//! and the fault schedule switch on and the clients start. Only the client phase is
//! measured (operations, latency, throughput); events and messages are counted
//! throughout. The run ends when it is quiescent: no message in flight, no request
//! waiting at a node, no fault or client step queued (periodic garbage-collection timers
//! do not keep a run alive). With `final_reads`, a **final phase** follows the settle
//! period: one read of every key the workload wrote, through live members, on a reliable
//! network. Then the observers check the invariants.

mod clients;
mod finish;
mod hosts;
mod reach;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use ringkv_core::{ClusterConfig, Consistency, Envelope};

use crate::check;
use crate::client::Client;
use crate::client::{ClientState, Outcome};
use crate::config::SimConfig;
use crate::engine::{EventQueue, Streams};
use crate::faults::Fault;
use crate::net::Network;
use crate::units::ParseError;
use crate::workload::{Files, Workload, WorkloadError};

use clients::Clients;
use hosts::{Hosts, Membership};

pub use hosts::node_addr;

/// Request ids with this bit set are the simulator's join and depart requests; the others
/// are `client << 32 | sequence`.
const MEMBERSHIP_BIT: u64 = 1 << 63;

/// Notes kept in the summary.
const NOTES_MAX: usize = 20;

/// Why a simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A setting is unusable.
    #[error("{0}")]
    Config(#[from] ParseError),
    /// The workload could not be loaded.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
}

#[derive(Debug)]
enum Event {
    /// Boxed: an envelope is ~200 bytes, and the queue moves events several times.
    Deliver {
        from: u32,
        to: u32,
        envelope: Box<Envelope>,
    },
    /// A node's next timer deadline (stale unless `generation` is its latest).
    Wake {
        node: u32,
        generation: u64,
    },
    ClientWake {
        client: u32,
    },
    ClientTimeout {
        client: u32,
        seq: u32,
    },
    Fault {
        index: u32,
    },
    Heal {
        bit: u8,
    },
    /// An input waiting at a node (of life `life`): held while its process was paused,
    /// due when the pause ends; or (`served`) queued behind the node's processing time
    /// (`SimConfig::service_ns`), due when its handling ends.
    Held {
        node: u32,
        life: u32,
        input: Box<ringkv_core::Input>,
        served: bool,
    },
    /// The warm-up after setup is over: the clients start (`SimConfig::warmup_ns`).
    Start,
    /// A paused node's process goes on.
    Resume {
        node: u32,
        life: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Setup,
    /// Setup is over; the clients wait for `SimConfig::warmup_ns` to pass.
    Warmup,
    Clients,
    /// The final reads (`SimConfig::final_reads`).
    Final,
}

#[derive(Debug, Default)]
struct Counters {
    events: u64,
    stale_timers: u64,
    rejected: u64,
    crashes: u64,
    restarts: u64,
    rejoins_refused: u64,
    joins: u64,
    departs: u64,
    partitions: u64,
    pauses: u64,
    faults_skipped: u64,
    membership_failures: u64,
    setup_failures: u64,
    ops_ok: u64,
    ops_info: u64,
    ops_fail: u64,
    ops_not_issued: u64,
    history_events: u64,
    sent_before_clients: u64,
    final_reads: u64,
    final_reads_ok: u64,
    final_reads_unanswered: u64,
}

/// What the run measures and records for its summary.
#[derive(Debug, Default)]
struct Tally {
    counters: Counters,
    latencies: Vec<u64>,
    hops: Vec<u64>,
    ops_by_kind: BTreeMap<String, u64>,
    clients_start_ns: u64,
    last_completion_ns: u64,
    /// Whether any node crashed (placement is then checked only after repair).
    crashed: bool,
    notes: Vec<String>,
    /// Nodes that panicked, described.
    panics: Vec<String>,
    /// The JSON Lines history.
    history: Vec<u8>,
    /// History events recorded before the final phase began.
    final_from_event: Option<u64>,
    /// Under eventual consistency with final reads: where each written value went.
    reach: Option<reach::Reach>,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct SimResult {
    /// Figures and findings.
    pub summary: crate::summary::Summary,
    /// The JSON Lines history (empty if `record_history` was off).
    pub history: Vec<u8>,
}

impl SimResult {
    /// Run the consistency checker on the history and add its verdicts to the summary.
    pub fn check(&mut self, options: &check::CheckOptions) -> Result<(), check::HistoryError> {
        let history = check::History::parse(self.history.as_slice())?;
        let lin = check::check_linearizability(&history, options);
        let stale = check::staleness(&history);
        let s = &mut self.summary;
        s.linearizable = Some(verdict_name(lin.verdict).to_string());
        s.linearizability_violations = Some(lin.violation_keys as u64);
        s.linearizability_unknown_keys = Some(lin.unknown_keys as u64);
        s.stale_reads = Some(stale.total.stale_reads as u64);
        s.stale_fraction = Some(stale.total.stale_fraction);
        s.impossible_reads = Some(stale.total.impossible_reads as u64);
        s.counterexample = lin.counterexamples().next().map(|c| c.explanation.clone());
        if !s.replay.ends_with(" --check") {
            s.replay.push_str(" --check");
        }
        Ok(())
    }
}

fn verdict_name(v: check::Verdict) -> &'static str {
    match v {
        check::Verdict::Linearizable => "linearizable",
        check::Verdict::Violation => "violation",
        check::Verdict::Unknown => "unknown",
    }
}

/// One simulation: build it from a [`SimConfig`], then [`Simulation::run`] it.
#[derive(Debug)]
pub struct Simulation {
    /// Print every input and fault to stderr (`RINGKV_SIM_TRACE=1`), for debugging a seed.
    trace: bool,
    config: SimConfig,
    cluster: ClusterConfig,
    queue: EventQueue<Event>,
    now: u64,
    stage: Stage,
    net: Network,
    hosts: Hosts,
    clients: Clients,
    faults: Vec<Fault>,
    /// Queued deliveries.
    in_flight: u64,
    /// When the settle period after the client phase ends (set at the first quiet moment).
    settle_until: Option<u64>,
    /// Queued client steps, faults and heals.
    queued_other: u64,
    tally: Tally,
}

impl Simulation {
    /// Prepare a run: validate the configuration, load the workload, draw the faults.
    pub fn new(config: SimConfig) -> Result<Simulation, SimError> {
        config.validate()?;
        let cluster = config.cluster()?;
        let mut streams = Streams::from_seed(config.seed);
        let files = match &config.workload_dir {
            Some(dir) => Files::Dir(dir),
            None => Files::Embedded,
        };
        let clients_n = config.client_count();
        let ring: Vec<ringkv_core::Id> = (0..config.positions())
            .map(|i| ringkv_core::Id::of_addr(&node_addr(i)))
            .collect();
        let workload = Workload::build(
            &config.workload,
            clients_n,
            &files,
            &mut streams.workload,
            &ring,
        )?;
        let mut faults = config.faults.clone();
        if let Some(random) = &config.random_faults {
            faults.extend(random.generate_capped(
                config.nodes as u32,
                config.down_cap(),
                &mut streams.faults,
            ));
        }
        faults.sort_by_key(|f| f.at_ns);
        let phases = workload.phases.len();
        let mut per_client: Vec<Vec<_>> =
            (0..clients_n).map(|_| Vec::with_capacity(phases)).collect();
        for phase in workload.phases {
            for (c, ops) in phase.into_iter().enumerate() {
                per_client[c].push(ops);
            }
        }
        let on_chain = match &config.workload {
            crate::workload::WorkloadSpec::Synthetic(s) if s.clients_on_chain => {
                bootstrap_chain(config.positions(), config.vnodes.max(1), config.k)
            }
            _ => Vec::new(),
        };
        let clients: Vec<Client> = per_client
            .into_iter()
            .enumerate()
            .map(|(c, phases)| Client {
                // On the chain's (c mod k)-th node, or on the first position of process
                // `c % nodes`.
                node: match on_chain.is_empty() {
                    false => on_chain[c % on_chain.len()],
                    true => ((c % config.nodes) * config.vnodes.max(1)) as u32,
                },
                process: c as u64,
                phases,
                phase: 0,
                state: ClientState::Scheduled,
                seq: 0,
                outstanding: None,
            })
            .collect();
        let mut sim = Simulation {
            net: Network::new(config.net, streams.network),
            cluster,
            queue: EventQueue::new(),
            now: 0,
            stage: Stage::Setup,
            hosts: Hosts::new(config.positions(), streams.nodes),
            clients: Clients {
                all: clients,
                phases,
                at_rest: 0,
                next_process: clients_n as u64,
                first_final: clients_n,
                final_retries: BTreeMap::new(),
                written_keys: BTreeSet::new(),
            },
            faults,
            trace: std::env::var_os("RINGKV_SIM_TRACE").is_some(),
            in_flight: 0,
            settle_until: None,
            queued_other: 0,
            tally: Tally {
                reach: (config.final_reads && cluster.consistency == Consistency::Eventual)
                    .then(reach::Reach::default),
                ..Tally::default()
            },
            config,
        };
        for i in 0..sim.config.positions() {
            sim.add_node(i);
        }
        for c in 0..sim.clients.all.len() {
            let node = sim.clients.all[c].node as usize;
            sim.hosts.nodes[node].clients.push(c as u32);
        }
        Ok(sim)
    }

    /// Run to quiescence (or `events_max`), check the invariants, and summarize.
    pub fn run(mut self) -> SimResult {
        #[allow(clippy::disallowed_methods)] // measures the run; never reaches a history
        let wall = Instant::now();
        if self.config.positions() > 1 {
            self.request_membership(1, Membership::Join);
        }
        let truncated = self.event_loop();
        let wall_seconds = wall.elapsed().as_secs_f64();
        self.finish(truncated, wall_seconds)
    }

    /// Pop and handle events until the run is quiescent. Returns whether `events_max` cut
    /// it short.
    fn event_loop(&mut self) -> bool {
        loop {
            if !self.busy() && !self.on_quiet() {
                return false;
            }
            if self.tally.counters.events >= self.config.events_max {
                return true;
            }
            let Some((at, event)) = self.queue.pop() else {
                return false;
            };
            if at > self.config.time_max_ns {
                return true;
            }
            debug_assert!(at >= self.now, "time went backwards");
            self.now = at;
            self.dispatch(event);
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, envelope } => {
                self.in_flight -= 1;
                self.tally.counters.events += 1;
                self.deliver(from, to, envelope);
            }
            Event::Wake { node, generation } => {
                let armed = self.hosts.nodes[node as usize]
                    .wake
                    .is_some_and(|(_, g)| g == generation)
                    && self.hosts.nodes[node as usize].paused_until <= self.now;
                if !armed {
                    self.tally.counters.stale_timers += 1;
                    return;
                }
                self.tally.counters.events += 1;
                self.hosts.nodes[node as usize].wake = None;
                self.step(node, None);
            }
            Event::ClientWake { client } => {
                self.queued_other -= 1;
                self.tally.counters.events += 1;
                self.client_wake(client as usize);
            }
            Event::ClientTimeout { client, seq } => {
                let c = client as usize;
                let waiting = self.clients.all[c]
                    .outstanding
                    .as_ref()
                    .is_some_and(|o| o.seq == seq);
                if !waiting {
                    self.tally.counters.stale_timers += 1;
                    return;
                }
                self.tally.counters.events += 1;
                let pending = self.clients.all[c]
                    .outstanding
                    .take()
                    .expect("checked above");
                let why = format!("no answer within {} ns", self.config.timeout_ns);
                self.complete(c, pending, Outcome::Info(why));
            }
            Event::Fault { index } => {
                self.queued_other -= 1;
                self.tally.counters.events += 1;
                self.apply_fault(index as usize);
            }
            Event::Heal { bit } => {
                self.queued_other -= 1;
                self.tally.counters.events += 1;
                self.net.partitions.heal(bit);
            }
            Event::Held {
                node,
                life,
                input,
                served,
            } => {
                self.queued_other -= 1;
                self.tally.counters.events += 1;
                self.release(node, life, *input, served);
            }
            Event::Start => {
                self.queued_other -= 1;
                self.start_clients();
            }
            Event::Resume { node, life } => {
                self.queued_other -= 1;
                self.tally.counters.events += 1;
                self.resume(node, life);
            }
        }
    }

    /// Whether anything but periodic background work is pending: a message in flight, a
    /// request waiting at a node, a queued client step or fault, or a membership change
    /// a coordinator seat is still driving.
    fn busy(&self) -> bool {
        if self.in_flight + self.hosts.waiting + self.queued_other > 0 {
            return true;
        }
        self.hosts
            .nodes
            .iter()
            .any(|n| n.up && !n.node.membership_idle())
    }

    /// Nothing is in flight. Move the run on if something remains to do; false = done.
    fn on_quiet(&mut self) -> bool {
        match self.stage {
            Stage::Setup => {
                if self.hosts.next_join < self.config.positions() {
                    // A join never answered (cannot happen on the reliable setup network,
                    // but never hang on it).
                    self.tally.counters.setup_failures += 1;
                    self.note(format!(
                        "setup: join of node {} never completed",
                        self.hosts.next_join
                    ));
                    self.hosts.next_join += 1;
                    if self.hosts.next_join < self.config.positions() {
                        self.request_membership(self.hosts.next_join as u32, Membership::Join);
                        return true;
                    }
                }
                if self.config.warmup_ns > 0 {
                    // The background runs on until the clients start.
                    self.stage = Stage::Warmup;
                    self.queued_other += 1;
                    self.queue
                        .push(self.now + self.config.warmup_ns, Event::Start);
                } else {
                    self.start_clients();
                }
                true
            }
            // `Event::Start` is queued: the run is busy until it fires.
            Stage::Warmup => true,
            Stage::Clients => {
                if self.settle_until.is_none() && self.release_stuck_clients() {
                    return true;
                }
                // Let the background (heartbeats, anti-entropy) run for the settle period.
                let until = *self
                    .settle_until
                    .get_or_insert(self.now + self.config.settle());
                if self.now < until && self.queue.peek_time().is_some_and(|t| t <= until) {
                    return true;
                }
                self.config.final_reads && self.start_final_reads()
            }
            // Readers whose node left give up; then the run is over.
            Stage::Final => self.release_stuck_clients(),
        }
    }
}

/// The positions of the bootstrap's chain in the initial ring of `positions` positions
/// (`vnodes` a process), head first: the core's own chain of the bootstrap's keys
/// ([`ringkv_core::Ring::chain`]), `k` positions of distinct processes (fewer on a
/// smaller ring).
fn bootstrap_chain(positions: usize, vnodes: usize, k: usize) -> Vec<u32> {
    let refs: Vec<ringkv_core::NodeRef> = (0..positions)
        .map(|i| ringkv_core::NodeRef::of_process(&node_addr(i), &node_addr(i / vnodes * vnodes)))
        .collect();
    let Some(bootstrap) = refs.first() else {
        return Vec::new();
    };
    let mut ring = ringkv_core::Ring::new();
    for node in &refs {
        ring.insert(node.clone());
    }
    let position = |n: &ringkv_core::NodeRef| refs.iter().position(|r| r.id == n.id);
    let chain = ring.chain(bootstrap, k);
    chain
        .iter()
        .filter_map(position)
        .map(|i| i as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::Id;

    #[test]
    fn the_bootstrap_chain_runs_from_the_bootstrap_round_the_ring_over_distinct_processes() {
        let ring: Vec<Id> = (0..12).map(|i| Id::of_addr(&node_addr(i))).collect();
        let mut sorted: Vec<usize> = (0..ring.len()).collect();
        sorted.sort_by_key(|&i| ring[i]);
        let at = sorted.iter().position(|&i| i == 0).unwrap();
        let next = |s: usize| sorted[(at + s) % sorted.len()] as u32;
        assert_eq!(bootstrap_chain(12, 1, 3), vec![0, next(1), next(2)]);
        assert_eq!(
            bootstrap_chain(12, 1, 20).len(),
            12,
            "no more than the ring"
        );
        // Two positions a process: a chain never holds two of one process.
        let chain = bootstrap_chain(12, 2, 4);
        assert_eq!(chain.len(), 4);
        assert_eq!(chain[0], 0);
        let mut processes: Vec<u32> = chain.iter().map(|p| p / 2).collect();
        processes.dedup();
        processes.sort();
        processes.dedup();
        assert_eq!(processes.len(), 4, "{chain:?}");
    }
}
