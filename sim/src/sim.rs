//! The simulation driver: real `ringkv_core::Node`s on virtual time.
//!
//! A run has two stages. **Setup**: node 0 starts as the bootstrap and nodes `1..N` join
//! one at a time through the real protocol (a `Join` request each), over a reliable
//! network (latency only). **Client phase**: once setup has drained, drops, duplicates
//! and the fault schedule switch on and the clients start. Only the client phase is
//! measured (operations, latency, throughput); events and messages are counted
//! throughout. The run ends when it is quiescent: no message in flight, no request
//! waiting at a node, no fault or client step queued (periodic garbage-collection timers
//! do not keep a run alive). With `final_reads`, a **final phase** follows the settle
//! period: one read of every key the workload wrote, through live members, on a reliable
//! network. Then the observers check the invariants.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use ringkv_core::{
    ClusterConfig, Envelope, Input, Node, NodeConfig, Output, Reply, Request, Response, Timer,
};

use crate::check::{self, write_event, EventType, HistoryEvent};
use crate::client::{classify, Client, ClientState, Outcome, Outstanding};
use crate::config::SimConfig;
use crate::engine::{EventQueue, Streams};
use crate::faults::{Fault, FaultKind};
use crate::final_reads::lost_acked_writes;
use crate::net::{Fate, Network};
use crate::observe::{observe, NodeView};
use crate::summary::{percentile, Summary};
use crate::units::ParseError;
use crate::workload::{ClientOps, Files, Op, OpKind, Workload, WorkloadError};

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
    Timer {
        node: u32,
        timer: Timer,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Setup,
    Clients,
    /// The final reads (`SimConfig::final_reads`).
    Final,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Membership {
    Join,
    Rejoin,
    Depart,
}

#[derive(Debug)]
struct SimNode {
    node: Node,
    up: bool,
    /// Armed timers and the generation of their queued event.
    timers: BTreeMap<Timer, u64>,
    /// Clients bound to this node.
    clients: Vec<u32>,
    /// The join or depart the simulator asked of this node, if unanswered.
    membership: Option<Membership>,
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

/// The outcome of a run.
#[derive(Debug)]
pub struct SimResult {
    /// Figures and findings.
    pub summary: Summary,
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
    nodes: Vec<SimNode>,
    index: HashMap<Arc<str>, u32>,
    bootstrap_addr: Arc<str>,
    net: Network,
    node_seeds: ChaCha8Rng,
    clients: Vec<Client>,
    phases: usize,
    clients_at_rest: usize,
    next_process: u64,
    faults: Vec<Fault>,
    membership_seq: u64,
    timer_generation: u64,
    next_join: usize,
    out: Vec<Output>,
    /// Queued deliveries.
    in_flight: u64,
    /// Armed request-deadline timers (the only timers that mean a client waits).
    armed_requests: u64,
    /// When the settle period after the client phase ends (set at the first quiet moment).
    settle_until: Option<u64>,
    /// Queued client steps, faults and heals.
    queued_other: u64,
    counters: Counters,
    latencies: Vec<u64>,
    hops: Vec<u64>,
    ops_by_kind: BTreeMap<String, u64>,
    clients_start_ns: u64,
    last_completion_ns: u64,
    crashed: bool,
    notes: Vec<String>,
    /// Nodes that panicked, described.
    panics: Vec<String>,
    history: Vec<u8>,
    /// Keys the workload wrote or deleted (kept only with `final_reads`).
    written_keys: BTreeSet<String>,
    /// Clients from this index on are the final phase's readers.
    first_final_client: usize,
    /// History events recorded before the final phase began.
    final_from_event: Option<u64>,
}

fn input_kind(input: &Input) -> String {
    match input {
        Input::Request { request, .. } => format!("request {}", request.op_name()),
        Input::Message(envelope) => format!(
            "message {} from {}",
            envelope.msg.kind(),
            envelope.from.addr
        ),
        Input::Timer(timer) => format!("timer {timer:?}"),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// Address of simulated node `i`.
pub fn node_addr(i: usize) -> String {
    format!("10.{}.{}.{}:5000", (i >> 16) & 255, (i >> 8) & 255, i & 255)
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
        let workload = Workload::build(&config.workload, clients_n, &files, &mut streams.workload)?;
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
        let clients = per_client
            .into_iter()
            .enumerate()
            .map(|(c, phases)| Client {
                node: (c % config.nodes) as u32,
                process: c as u64,
                phases,
                phase: 0,
                state: ClientState::Scheduled,
                seq: 0,
                outstanding: None,
            })
            .collect();
        let bootstrap_addr: Arc<str> = Arc::from(node_addr(0));
        let mut sim = Simulation {
            net: Network::new(config.net, streams.network),
            node_seeds: streams.nodes,
            cluster,
            queue: EventQueue::new(),
            now: 0,
            stage: Stage::Setup,
            nodes: Vec::with_capacity(config.nodes),
            index: HashMap::with_capacity(config.nodes),
            bootstrap_addr,
            clients,
            phases,
            clients_at_rest: 0,
            next_process: clients_n as u64,
            faults,
            membership_seq: 0,
            timer_generation: 0,
            next_join: 1,
            trace: std::env::var_os("RINGKV_SIM_TRACE").is_some(),
            out: Vec::new(),
            in_flight: 0,
            armed_requests: 0,
            settle_until: None,
            queued_other: 0,
            counters: Counters::default(),
            latencies: Vec::new(),
            hops: Vec::new(),
            ops_by_kind: BTreeMap::new(),
            clients_start_ns: 0,
            last_completion_ns: 0,
            crashed: false,
            notes: Vec::new(),
            panics: Vec::new(),
            history: Vec::new(),
            written_keys: BTreeSet::new(),
            first_final_client: clients_n,
            final_from_event: None,
            config,
        };
        for i in 0..sim.config.nodes {
            sim.add_node(i);
        }
        for c in 0..sim.clients.len() {
            let node = sim.clients[c].node as usize;
            sim.nodes[node].clients.push(c as u32);
        }
        Ok(sim)
    }

    /// Run to quiescence (or `events_max`), check the invariants, and summarize.
    pub fn run(mut self) -> SimResult {
        let wall = Instant::now();
        if self.config.nodes > 1 {
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
            if self.counters.events >= self.config.events_max {
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
                self.counters.events += 1;
                self.deliver(from, to, envelope);
            }
            Event::Timer {
                node,
                timer,
                generation,
            } => {
                let armed = self.nodes[node as usize].timers.get(&timer) == Some(&generation);
                if !armed {
                    self.counters.stale_timers += 1;
                    return;
                }
                self.counters.events += 1;
                self.disarm(node, timer);
                self.handle(node, Input::Timer(timer));
            }
            Event::ClientWake { client } => {
                self.queued_other -= 1;
                self.counters.events += 1;
                self.client_wake(client as usize);
            }
            Event::ClientTimeout { client, seq } => {
                let c = client as usize;
                let waiting = self.clients[c]
                    .outstanding
                    .as_ref()
                    .is_some_and(|o| o.seq == seq);
                if !waiting {
                    self.counters.stale_timers += 1;
                    return;
                }
                self.counters.events += 1;
                let pending = self.clients[c].outstanding.take().expect("checked above");
                let why = format!("no answer within {} ns", self.config.timeout_ns);
                self.complete(c, pending, Outcome::Info(why));
            }
            Event::Fault { index } => {
                self.queued_other -= 1;
                self.counters.events += 1;
                self.apply_fault(index as usize);
            }
            Event::Heal { bit } => {
                self.queued_other -= 1;
                self.counters.events += 1;
                self.net.partitions.heal(bit);
            }
        }
    }

    /// Whether anything but periodic background work is pending: a message in flight, a
    /// request waiting at a node, a queued client step or fault, or a membership change
    /// the bootstrap is still driving (with its deadline timer armed).
    fn busy(&self) -> bool {
        if self.in_flight + self.armed_requests + self.queued_other > 0 {
            return true;
        }
        let boot = &self.nodes[0];
        boot.up && !boot.node.membership_idle() && boot.timers.contains_key(&Timer::Membership)
    }

    /// Nothing is in flight. Move the run on if something remains to do; false = done.
    fn on_quiet(&mut self) -> bool {
        match self.stage {
            Stage::Setup => {
                if self.next_join < self.config.nodes {
                    // A join never answered (cannot happen on the reliable setup network,
                    // but never hang on it).
                    self.counters.setup_failures += 1;
                    self.note(format!(
                        "setup: join of node {} never completed",
                        self.next_join
                    ));
                    self.next_join += 1;
                    if self.next_join < self.config.nodes {
                        self.request_membership(self.next_join as u32, Membership::Join);
                        return true;
                    }
                }
                self.start_clients();
                true
            }
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

    // ----- nodes -----

    fn node_config(&mut self, i: usize) -> NodeConfig {
        let seed = self.node_seeds.next_u64();
        let addr = node_addr(i);
        let mut config = if i == 0 {
            NodeConfig::bootstrap(addr, self.cluster, seed)
        } else {
            NodeConfig::member(addr, self.bootstrap_addr.to_string(), seed)
        };
        config.timing = self.config.timing();
        config
    }

    fn add_node(&mut self, i: usize) {
        debug_assert_eq!(i, self.nodes.len());
        let config = self.node_config(i);
        self.index.insert(Arc::from(config.addr.as_str()), i as u32);
        self.nodes.push(SimNode {
            node: Node::new(config),
            up: true,
            timers: BTreeMap::new(),
            clients: Vec::new(),
            membership: None,
        });
    }

    /// Feed `input` to node `n` and carry out what it asks. A node that panics (a core
    /// assertion) is reported as a breach and crash-stopped, so the run goes on and the
    /// summary names the replay command.
    fn handle(&mut self, n: u32, input: Input) {
        let mut out = std::mem::take(&mut self.out);
        let node = &mut self.nodes[n as usize];
        debug_assert!(node.up);
        let now = self.now;
        let kind = input_kind(&input);
        if self.trace {
            eprintln!("{} n{} {:?}", now, n, input);
        }
        let step =
            std::panic::catch_unwind(AssertUnwindSafe(|| node.node.handle(now, input, &mut out)));
        match step {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.counters.rejected += 1,
            Err(payload) => {
                out.clear();
                self.out = out;
                let message = panic_message(payload.as_ref());
                self.panics.push(format!(
                    "node {n} panicked at t={now} ns on {kind}: {message}"
                ));
                self.crash(n);
                return;
            }
        }
        for output in out.drain(..) {
            self.on_output(n, output);
        }
        self.out = out;
    }

    fn on_output(&mut self, n: u32, output: Output) {
        match output {
            Output::Send { to, envelope } => self.send(n, &to, envelope),
            Output::Reply { id, reply } if id & MEMBERSHIP_BIT != 0 => {
                self.on_membership_reply(n, reply)
            }
            Output::Reply { id, reply } => self.on_client_reply(id, reply),
            Output::SetTimer { timer, at } => {
                self.timer_generation += 1;
                let generation = self.timer_generation;
                if self.nodes[n as usize]
                    .timers
                    .insert(timer, generation)
                    .is_none()
                    && timer == Timer::Requests
                {
                    self.armed_requests += 1;
                }
                let event = Event::Timer {
                    node: n,
                    timer,
                    generation,
                };
                self.queue.push(at.max(self.now), event);
            }
            Output::CancelTimer { timer } => self.disarm(n, timer),
        }
    }

    fn disarm(&mut self, n: u32, timer: Timer) {
        if self.nodes[n as usize].timers.remove(&timer).is_some() && timer == Timer::Requests {
            self.armed_requests -= 1;
        }
    }

    fn send(&mut self, from: u32, to: &str, envelope: Envelope) {
        let Some(&dst) = self.index.get(to) else {
            self.net.stats.unroutable += 1;
            return;
        };
        if let Fate::Deliver {
            delay_ns,
            duplicate_ns,
        } = self.net.transmit(self.now, from, dst)
        {
            let envelope = Box::new(envelope);
            if let Some(dup) = duplicate_ns {
                self.schedule_delivery(dup, from, dst, envelope.clone());
            }
            self.schedule_delivery(delay_ns, from, dst, envelope);
        }
    }

    fn schedule_delivery(&mut self, delay_ns: u64, from: u32, to: u32, envelope: Box<Envelope>) {
        self.in_flight += 1;
        self.queue
            .push(self.now + delay_ns, Event::Deliver { from, to, envelope });
    }

    fn deliver(&mut self, from: u32, to: u32, envelope: Box<Envelope>) {
        if !self.nodes[to as usize].up {
            self.net.stats.vanished += 1;
            return;
        }
        match self.net.on_arrival(self.now, from, to) {
            Ok(()) => {
                self.net.stats.delivered += 1;
                self.handle(to, Input::Message(*envelope));
            }
            Err(Some(delay_ns)) => self.schedule_delivery(delay_ns, from, to, envelope),
            Err(None) => {}
        }
    }

    // ----- membership -----

    fn request_membership(&mut self, n: u32, what: Membership) {
        self.membership_seq += 1;
        let id = MEMBERSHIP_BIT | self.membership_seq;
        let request = match what {
            Membership::Join | Membership::Rejoin => Request::Join,
            Membership::Depart => Request::Depart,
        };
        self.nodes[n as usize].membership = Some(what);
        self.handle(n, Input::Request { id, request });
    }

    fn on_membership_reply(&mut self, n: u32, reply: Reply) {
        let what = self.nodes[n as usize].membership.take();
        if self.stage == Stage::Setup {
            if let Err(e) = &reply {
                self.counters.setup_failures += 1;
                self.note(format!("setup: join of node {n} failed: {e}"));
            }
            if n as usize == self.next_join {
                self.next_join += 1;
                if self.next_join < self.config.nodes {
                    self.request_membership(self.next_join as u32, Membership::Join);
                }
            }
            return;
        }
        match (what, reply) {
            (_, Ok(Response::Joined { .. })) => {
                self.counters.joins += 1;
                self.unpark_clients(n);
            }
            (_, Ok(Response::Departed { .. })) => self.counters.departs += 1,
            (Some(Membership::Rejoin), Err(ringkv_core::RequestError::AlreadyJoined)) => {
                self.counters.rejoins_refused += 1;
                self.note(format!(
                    "node {n} restarted but the bootstrap refused its rejoin: it still lists the node \
                     (no failure detection in the core yet)"
                ));
            }
            (what, reply) => {
                self.counters.membership_failures += 1;
                self.note(format!("node {n} {what:?} ended with {reply:?}"));
            }
        }
    }

    // ----- clients -----

    fn start_clients(&mut self) {
        self.stage = Stage::Clients;
        self.clients_start_ns = self.now;
        self.last_completion_ns = self.now;
        self.counters.sent_before_clients = self.net.stats.sent;
        self.net.set_faulty(true);
        for index in 0..self.faults.len() {
            self.queued_other += 1;
            let at = self.now + self.faults[index].at_ns;
            self.queue.push(
                at,
                Event::Fault {
                    index: index as u32,
                },
            );
        }
        for c in 0..self.clients.len() {
            self.schedule_wake(c, self.now);
        }
    }

    fn schedule_wake(&mut self, c: usize, at: u64) {
        self.set_state(c, ClientState::Scheduled);
        self.queued_other += 1;
        self.queue.push(at, Event::ClientWake { client: c as u32 });
    }

    fn set_state(&mut self, c: usize, state: ClientState) {
        let at_rest = |s: ClientState| matches!(s, ClientState::Barrier | ClientState::Done);
        let old = std::mem::replace(&mut self.clients[c].state, state);
        match (at_rest(old), at_rest(state)) {
            (false, true) => self.clients_at_rest += 1,
            (true, false) => self.clients_at_rest -= 1,
            _ => {}
        }
    }

    fn client_wake(&mut self, c: usize) {
        let client = &mut self.clients[c];
        if client.phase >= self.phases {
            self.set_state(c, ClientState::Done);
            return self.maybe_release_barrier();
        }
        let n = client.node as usize;
        if !self.nodes[n].up || !self.nodes[n].node.is_member() {
            return self.set_state(c, ClientState::Parked);
        }
        let phase = client.phase;
        match client.phases[phase].next_op() {
            Some(op) => self.invoke(c, op),
            None => {
                self.set_state(c, ClientState::Barrier);
                self.maybe_release_barrier();
            }
        }
    }

    fn invoke(&mut self, c: usize, op: Op) {
        let client = &mut self.clients[c];
        client.seq = client.seq.wrapping_add(1);
        let seq = client.seq;
        let (node, process) = (client.node, client.process);
        let id = ((c as u64) << 32) | u64::from(seq);
        let request = match op.f {
            OpKind::Write => Request::Insert {
                key: op.key.clone(),
                value: op.value.clone().unwrap_or_default(),
            },
            OpKind::Read => Request::Query {
                key: op.key.clone(),
            },
            OpKind::Delete => Request::Delete {
                key: op.key.clone(),
            },
        };
        let value = if op.f == OpKind::Write {
            op.value.as_deref()
        } else {
            None
        };
        if self.config.final_reads && op.f != OpKind::Read && c < self.first_final_client {
            self.written_keys.insert(op.key.clone());
        }
        let event = HistoryEvent::invoke(process, op.f, &op.key, value, self.now);
        self.record(&event);
        self.clients[c].outstanding = Some(Outstanding {
            seq,
            op,
            invoked_ns: self.now,
        });
        self.set_state(c, ClientState::Waiting);
        // Not counted as pending work: while the operation is outstanding its request
        // waits at the node, whose deadline timer keeps the run busy.
        let timeout = Event::ClientTimeout {
            client: c as u32,
            seq,
        };
        self.queue.push(self.now + self.config.timeout_ns, timeout);
        self.handle(node, Input::Request { id, request });
    }

    fn on_client_reply(&mut self, id: u64, reply: Reply) {
        let c = (id >> 32) as usize;
        let Some(client) = self.clients.get_mut(c) else {
            return;
        };
        if client.outstanding.as_ref().map(|o| o.seq) != Some(id as u32) {
            return; // the client already gave up on it
        }
        let pending = client.outstanding.take().expect("checked above");
        let outcome = classify(&pending.op, &reply);
        self.complete(c, pending, outcome);
    }

    fn complete(&mut self, c: usize, pending: Outstanding, outcome: Outcome) {
        let process = self.clients[c].process;
        let op = &pending.op;
        let written = if op.f == OpKind::Write {
            op.value.as_deref()
        } else {
            None
        };
        let (kind, value, node, hops) = match &outcome {
            Outcome::Ok { value, node, hops } => (
                EventType::Ok,
                value.as_deref(),
                Some(node.clone()),
                Some(*hops),
            ),
            Outcome::Fail(_) => (EventType::Fail, written, None, None),
            Outcome::Info(_) => (EventType::Info, written, None, None),
        };
        let mut event = HistoryEvent::new(process, kind, op.f, &op.key, value, self.now);
        event.node = node;
        event.hops = hops.map(u64::from);
        self.record(&event);
        if c >= self.first_final_client {
            // A final read: not part of the client phase's figures.
            match &outcome {
                Outcome::Ok { .. } => self.counters.final_reads_ok += 1,
                Outcome::Fail(why) | Outcome::Info(why) => {
                    self.counters.final_reads_unanswered += 1;
                    let node = self.clients[c].node;
                    self.note(format!(
                        "the final read of {:?} through node {node} ended {}: {why}",
                        op.key,
                        if kind == EventType::Fail {
                            "fail"
                        } else {
                            "info"
                        }
                    ));
                }
            }
            if matches!(outcome, Outcome::Info(_)) {
                self.clients[c].process = self.next_process;
                self.next_process += 1;
            }
            let at = self.now + self.config.think_ns;
            return self.schedule_wake(c, at);
        }
        let label = match kind {
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            _ => "info",
        };
        *self
            .ops_by_kind
            .entry(format!("{}.{label}", op.f.as_str()))
            .or_default() += 1;
        self.last_completion_ns = self.now;
        match outcome {
            Outcome::Ok { hops, .. } => {
                self.counters.ops_ok += 1;
                self.latencies.push(self.now - pending.invoked_ns);
                self.hops.push(u64::from(hops));
            }
            Outcome::Fail(_) => self.counters.ops_fail += 1,
            Outcome::Info(_) => {
                self.counters.ops_info += 1;
                self.clients[c].process = self.next_process;
                self.next_process += 1;
            }
        }
        let at = self.now + self.config.think_ns;
        self.schedule_wake(c, at);
    }

    fn maybe_release_barrier(&mut self) {
        if self.clients_at_rest < self.clients.len() {
            return;
        }
        for c in 0..self.clients.len() {
            if self.clients[c].state == ClientState::Barrier {
                self.clients[c].phase += 1;
                self.schedule_wake(c, self.now);
            }
        }
    }

    fn unpark_clients(&mut self, n: u32) {
        for i in 0..self.nodes[n as usize].clients.len() {
            let c = self.nodes[n as usize].clients[i] as usize;
            if self.clients[c].state == ClientState::Parked {
                self.schedule_wake(c, self.now);
            }
        }
    }

    /// At quiescence: parked clients give up their current phase (their node will not
    /// come back), so the others can go on. Returns whether anything was scheduled.
    fn release_stuck_clients(&mut self) -> bool {
        for c in 0..self.clients.len() {
            match self.clients[c].state {
                ClientState::Parked => {
                    let phase = self.clients[c].phase;
                    self.counters.ops_not_issued += self.clients[c].phases[phase].abandon();
                    self.set_state(c, ClientState::Barrier);
                }
                ClientState::Waiting => {
                    // Unreachable while nodes keep request timers; never hang on it.
                    if let Some(pending) = self.clients[c].outstanding.take() {
                        self.complete(c, pending, Outcome::Info("no answer at quiescence".into()));
                    }
                }
                _ => {}
            }
        }
        self.maybe_release_barrier();
        self.queued_other > 0
    }

    fn record(&mut self, event: &HistoryEvent) {
        self.counters.history_events += 1;
        // The final phase needs the history to tell lost writes.
        if self.config.record_history || self.config.final_reads {
            write_event(&mut self.history, event).expect("writing to memory cannot fail");
        }
    }

    fn note(&mut self, note: String) {
        if self.notes.len() < NOTES_MAX {
            self.notes.push(note);
        }
    }

    /// Start the final phase: one reader per live member, key j (in key order) read
    /// through member j mod m, on a reliable network (no drops or duplicates; every
    /// partition has healed). Returns whether a read was scheduled.
    fn start_final_reads(&mut self) -> bool {
        if self.stage == Stage::Final {
            return false;
        }
        self.stage = Stage::Final;
        self.net.set_faulty(false);
        self.final_from_event = Some(self.counters.history_events);
        let members: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&n| self.nodes[n as usize].up && self.nodes[n as usize].node.is_member())
            .collect();
        self.counters.final_reads = self.written_keys.len() as u64;
        if members.is_empty() || self.written_keys.is_empty() {
            self.counters.final_reads_unanswered += self.written_keys.len() as u64;
            if !self.written_keys.is_empty() {
                self.note("no live member is left for the final reads".into());
            }
            return false;
        }
        let mut reads: Vec<VecDeque<Op>> = vec![VecDeque::new(); members.len()];
        let keys = std::mem::take(&mut self.written_keys);
        for (j, key) in keys.into_iter().enumerate() {
            reads[j % members.len()].push_back(Op {
                f: OpKind::Read,
                key,
                value: None,
            });
        }
        // The readers run the last phase; the earlier ones are empty.
        self.phases = self.phases.max(1);
        let last = self.phases - 1;
        for (m, ops) in members.into_iter().zip(reads) {
            if ops.is_empty() {
                continue;
            }
            let c = self.clients.len();
            let mut phases: Vec<ClientOps> = (0..last)
                .map(|_| ClientOps::List(VecDeque::new()))
                .collect();
            phases.push(ClientOps::List(ops));
            self.clients.push(Client {
                node: m,
                process: self.next_process,
                phases,
                phase: last,
                state: ClientState::Scheduled,
                seq: 0,
                outstanding: None,
            });
            self.next_process += 1;
            self.nodes[m as usize].clients.push(c as u32);
            self.schedule_wake(c, self.now);
        }
        true
    }

    // ----- faults -----

    fn apply_fault(&mut self, index: usize) {
        let kind = self.faults[index].kind.clone();
        if self.trace {
            eprintln!("{} FAULT {:?}", self.now, kind);
        }
        let count = self.nodes.len();
        let exists = |n: u32| (n as usize) < count;
        let applied = match kind {
            FaultKind::Crash { node } if exists(node) && self.nodes[node as usize].up => {
                self.crash(node);
                true
            }
            FaultKind::Restart { node } if exists(node) && !self.nodes[node as usize].up => {
                self.restart(node);
                true
            }
            FaultKind::Join => {
                let n = self.nodes.len();
                self.add_node(n);
                self.request_membership(n as u32, Membership::Join);
                true
            }
            FaultKind::Depart { node }
                if exists(node)
                    && self.nodes[node as usize].up
                    && self.nodes[node as usize].node.phase() == ringkv_core::Phase::Active =>
            {
                self.request_membership(node, Membership::Depart);
                true
            }
            FaultKind::Partition { nodes, duration_ns } => {
                let until = self.now + duration_ns;
                match self.net.partitions.start(&nodes, until) {
                    Some(bit) => {
                        self.counters.partitions += 1;
                        self.queued_other += 1;
                        self.queue.push(until, Event::Heal { bit });
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        };
        if !applied {
            self.counters.faults_skipped += 1;
        }
    }

    fn crash(&mut self, n: u32) {
        self.crashed = true;
        self.counters.crashes += 1;
        let node = &mut self.nodes[n as usize];
        node.up = false;
        node.membership = None;
        let waiting = node
            .timers
            .keys()
            .filter(|t| **t == Timer::Requests)
            .count() as u64;
        node.timers.clear();
        self.armed_requests -= waiting;
        for i in 0..self.nodes[n as usize].clients.len() {
            let c = self.nodes[n as usize].clients[i] as usize;
            if let Some(pending) = self.clients[c].outstanding.take() {
                self.complete(
                    c,
                    pending,
                    Outcome::Info("the client's node crashed".into()),
                );
            }
        }
    }

    fn restart(&mut self, n: u32) {
        self.counters.restarts += 1;
        let config = self.node_config(n as usize);
        let node = &mut self.nodes[n as usize];
        node.node = Node::new(config);
        node.up = true;
        if n == 0 {
            self.note("the bootstrap restarted: it founds a new one-node ring".into());
            self.unpark_clients(0);
        } else {
            self.request_membership(n, Membership::Rejoin);
        }
    }

    // ----- the end -----

    fn finish(mut self, truncated: bool, wall_seconds: f64) -> SimResult {
        // Operations of clients that never got to run them.
        for (c, client) in self.clients.iter_mut().enumerate() {
            for ops in client.phases.iter_mut().skip(client.phase) {
                let n = ops.abandon();
                if c < self.first_final_client {
                    self.counters.ops_not_issued += n;
                } else {
                    self.counters.final_reads_unanswered += n;
                }
            }
        }
        let views: Vec<NodeView<'_>> = self
            .nodes
            .iter()
            .map(|n| NodeView {
                node: &n.node,
                up: n.up,
            })
            .collect();
        // After crashes, placement holds again only once failure handling has repaired
        // the ring; the final phase runs after that repair has had time to finish.
        let placement = !self.crashed || (self.config.final_reads && self.config.failure_handling);
        let mut obs = observe(&views, self.config.k, placement);
        for panic in &self.panics {
            obs.breach("node_panic", || panic.clone());
        }
        self.latencies.sort_unstable();
        self.hops.sort_unstable();
        let c = &self.counters;
        let net = &self.net.stats;
        let config = &self.config;
        let virtual_ns = self
            .last_completion_ns
            .saturating_sub(self.clients_start_ns);
        let virtual_seconds = virtual_ns as f64 / 1e9;
        let mean = |v: &[u64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<u64>() as f64 / v.len() as f64
            }
        };
        let mut summary = Summary {
            seed: config.seed,
            nodes: config.nodes,
            k: config.k,
            consistency: config.consistency.to_string(),
            routing: config.routing.to_string(),
            clients: self.clients.len(),
            workload: config.workload.name().to_string(),
            latency: config.net.latency.to_string(),
            drop: config.net.drop_probability,
            dup: config.net.dup_probability,
            partition_mode: config.net.partition_mode.to_string(),
            timeout_ns: config.timeout_ns,
            faults: self.faults.iter().map(Fault::to_string).collect(),
            events: c.events,
            wall_seconds,
            events_per_second: if wall_seconds > 0.0 {
                c.events as f64 / wall_seconds
            } else {
                0.0
            },
            quiescent: !truncated,
            truncated,
            ops_ok: c.ops_ok,
            ops_info: c.ops_info,
            ops_fail: c.ops_fail,
            ops_not_issued: c.ops_not_issued,
            ops_by_kind: self.ops_by_kind.clone(),
            virtual_seconds,
            setup_virtual_seconds: self.clients_start_ns as f64 / 1e9,
            throughput_ops_per_virtual_second: if virtual_ns > 0 {
                c.ops_ok as f64 / virtual_seconds
            } else {
                0.0
            },
            latency_p50_ns: percentile(&self.latencies, 50.0),
            latency_p99_ns: percentile(&self.latencies, 99.0),
            latency_mean_ns: mean(&self.latencies),
            latency_max_ns: self.latencies.last().copied().unwrap_or(0),
            lookup_hops_mean: mean(&self.hops),
            lookup_hops_p99: percentile(&self.hops, 99.0),
            messages_sent: net.sent,
            messages_sent_client_phase: net.sent - c.sent_before_clients,
            messages_delivered: net.delivered,
            messages_dropped: net.dropped,
            messages_duplicated: net.duplicated,
            messages_partitioned: net.partitioned,
            messages_held: net.held,
            messages_vanished: net.vanished,
            messages_rejected: c.rejected,
            crashes: c.crashes,
            restarts: c.restarts,
            rejoins_refused: c.rejoins_refused,
            joins: c.joins,
            departs: c.departs,
            partitions: c.partitions,
            faults_skipped: c.faults_skipped,
            membership_failures: c.membership_failures,
            setup_failures: c.setup_failures,
            ring_size: obs.ring_size,
            keys_stored: obs.keys,
            invariant_violations: obs.violations(),
            violations_by_kind: obs.by_kind.clone(),
            violations: obs.examples.clone(),
            stale_finger_entries: obs.stale_finger_entries,
            history_events: c.history_events,
            notes: self.notes.clone(),
            replay: config.replay_command(),
            ..Summary::default()
        };
        if let Some(from) = self.final_from_event {
            summary.final_reads = Some(c.final_reads);
            summary.final_reads_ok = Some(c.final_reads_ok);
            summary.final_reads_unanswered = Some(c.final_reads_unanswered);
            match check::History::parse(self.history.as_slice()) {
                Ok(history) => {
                    let lost = lost_acked_writes(&history, from as usize);
                    summary.lost_acked_writes = Some(lost.keys);
                    summary.lost_writes = lost.examples;
                }
                Err(e) => summary.notes.push(format!(
                    "the history does not parse ({e}): lost writes unknown"
                )),
            }
        } else if config.final_reads {
            // The run ended (truncated) before its final phase.
            summary.final_reads = Some(0);
            summary.final_reads_ok = Some(0);
            summary.final_reads_unanswered = Some(c.final_reads_unanswered);
        }
        if !config.record_history {
            self.history.clear();
        }
        SimResult {
            summary,
            history: std::mem::take(&mut self.history),
        }
    }
}
