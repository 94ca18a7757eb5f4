//! The simulated nodes: each a real `ringkv_core::Node`, fed its inputs and woken at
//! its next timer deadline; its sends go through the simulated network. Joins, departs,
//! crashes and restarts, from the setup stage or the fault schedule.

// `Hosts::index` is a lookup-only hash map (address → node), never iterated.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use ringkv_core::{Envelope, Input, Node, NodeConfig, Output, Reply, Request, Response};

use super::{Event, Simulation, Stage, MEMBERSHIP_BIT};
use crate::client::Outcome;
use crate::faults::FaultKind;
use crate::net::Fate;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Membership {
    Join,
    Rejoin,
    Depart,
}

#[derive(Debug)]
pub(super) struct SimNode {
    pub(super) node: Node,
    pub(super) up: bool,
    /// The deadline of the node's queued wake-up and its generation.
    pub(super) wake: Option<(u64, u64)>,
    /// Whether client requests wait at the node (counted in `nodes_waiting`).
    pub(super) waiting: bool,
    /// Clients bound to this node.
    pub(super) clients: Vec<u32>,
    /// The join or depart the simulator asked of this node, if unanswered.
    pub(super) membership: Option<Membership>,
    /// While the node's process is paused (a `pause` fault): until when. Its inputs wait
    /// until then, and its timers fire then.
    pub(super) paused_until: u64,
    /// Counts the node's crashes: inputs held for a paused process are dropped if it
    /// crashed meanwhile.
    pub(super) life: u32,
    /// How fast its clock runs, in millionths of true time.
    pub(super) rate_ppm: u64,
    /// What it persisted (`SimConfig::disks`); survives crashes.
    pub(super) disk: Option<Disk>,
    /// With a service time (`SimConfig::service_ns`): when the node finishes the inputs
    /// it has taken in so far.
    pub(super) busy_until: u64,
}

/// A simulated node's disk: what it persisted, applied in order.
#[derive(Clone, Debug, Default)]
pub(super) struct Disk {
    entries: std::collections::BTreeMap<String, ringkv_core::Entry>,
    meta: Option<ringkv_core::DiskMeta>,
}

impl Disk {
    fn write(&mut self, persist: ringkv_core::Persist) {
        if persist.store.cleared {
            self.entries.clear();
        }
        for (key, entry) in persist.store.changes {
            match entry {
                Some(e) => self.entries.insert(key, e),
                None => self.entries.remove(&key),
            };
        }
        if let Some(meta) = persist.meta {
            self.meta = Some(meta);
        }
    }

    fn recovered(&self) -> ringkv_core::Recovered {
        ringkv_core::Recovered {
            entries: self
                .entries
                .iter()
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
            meta: self.meta.clone(),
        }
    }
}

impl SimNode {
    /// The node's clock at true (virtual) time `t`.
    fn local(&self, t: u64) -> u64 {
        (u128::from(t) * u128::from(self.rate_ppm) / 1_000_000) as u64
    }

    /// The earliest true time at which the node's clock reads `local` or later.
    fn global(&self, local: u64) -> u64 {
        let t = (u128::from(local) * 1_000_000).div_ceil(u128::from(self.rate_ppm));
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    fn paused(&self, now: u64) -> bool {
        self.paused_until > now
    }
}

/// Every simulated node, and how to reach it by address.
#[derive(Debug)]
pub(super) struct Hosts {
    pub(super) nodes: Vec<SimNode>,
    pub(super) index: HashMap<Arc<str>, u32>,
    pub(super) bootstrap_addr: Arc<str>,
    /// Seeds of the nodes' random number generators, in creation order.
    pub(super) seeds: ChaCha8Rng,
    /// Generation of the latest wake-up queued for any node.
    pub(super) wake_generation: u64,
    /// Nodes where client requests wait for an answer.
    pub(super) waiting: u64,
    /// The next node of the initial ring to join (setup stage).
    pub(super) next_join: usize,
    pub(super) membership_seq: u64,
    /// Output buffer, reused across inputs.
    pub(super) out: Vec<Output>,
}

impl Hosts {
    pub(super) fn new(nodes: usize, seeds: ChaCha8Rng) -> Hosts {
        Hosts {
            nodes: Vec::with_capacity(nodes),
            index: HashMap::with_capacity(nodes),
            bootstrap_addr: Arc::from(node_addr(0)),
            seeds,
            wake_generation: 0,
            waiting: 0,
            next_join: 1,
            membership_seq: 0,
            out: Vec::new(),
        }
    }
}

impl Simulation {
    // ----- nodes -----

    pub(super) fn node_config(&mut self, i: usize) -> NodeConfig {
        let seed = self.hosts.seeds.next_u64();
        let addr = node_addr(i);
        let restart = i < self.hosts.nodes.len();
        let mut config = if i == 0 {
            let mut config = NodeConfig::bootstrap(addr, self.cluster, seed);
            // A restarted bootstrap looks for the ring it belonged to; its operator, who
            // sees other members still running, says so (`dht bootstrap --rejoin`).
            config.recover = restart;
            config.ring_runs = restart
                && self.hosts.nodes[1..]
                    .iter()
                    .any(|n| n.up && n.node.is_member());
            config
        } else {
            NodeConfig::member(addr, self.entry_addr(i).to_string(), seed)
        };
        let first = self.process_first(i);
        if first != i {
            config.process = Some(node_addr(first));
        }
        config.timing = self.config.timing();
        config.durable = self.config.disks;
        if restart {
            config.recovered = self.hosts.nodes[i].disk.as_ref().map(Disk::recovered);
            if self.trace {
                if let Some(r) = &config.recovered {
                    eprintln!("  disk n{i}: {} entries, {:?}", r.entries.len(), r.meta);
                }
            }
        }
        config
    }

    /// Where node `i` joins: the bootstrap while it is a live member (always during
    /// setup), else the first live member, as an operator would point a new node at
    /// any member.
    fn entry_addr(&self, i: usize) -> Arc<str> {
        let live = |n: &SimNode| n.up && n.node.is_member();
        if self.hosts.nodes.first().is_none_or(live) {
            return self.hosts.bootstrap_addr.clone();
        }
        self.hosts
            .nodes
            .iter()
            .enumerate()
            .find(|(j, n)| *j != i && live(n))
            .map_or_else(
                || self.hosts.bootstrap_addr.clone(),
                |(_, n)| n.node.me().addr.clone(),
            )
    }

    pub(super) fn add_node(&mut self, i: usize) {
        debug_assert_eq!(i, self.hosts.nodes.len());
        let config = self.node_config(i);
        self.hosts
            .index
            .insert(Arc::from(config.addr.as_str()), i as u32);
        let rate_ppm = clock_rate_ppm(self.config.seed, i, self.config.clock_drift_per_mille);
        self.hosts.nodes.push(SimNode {
            node: Node::new(config),
            up: true,
            wake: None,
            waiting: false,
            clients: Vec::new(),
            membership: None,
            paused_until: 0,
            life: 0,
            rate_ppm,
            disk: self.config.disks.then(Disk::default),
            busy_until: 0,
        });
    }

    /// Feed `input` to node `n` and carry out what it asks.
    pub(super) fn handle(&mut self, n: u32, input: Input) {
        let node = &mut self.hosts.nodes[n as usize];
        if self.config.service_ns == 0 || node.paused(self.now) {
            return self.step_or_hold(n, input);
        }
        // One processor: the input is handled, and what it sends leaves, once the inputs
        // before it and its own service time are done.
        let done = node.busy_until.max(self.now) + self.config.service_ns;
        node.busy_until = done;
        self.hold(n, done, input, true);
    }

    /// Handle `input` at node `n` now, or, while its process is paused, when the pause
    /// ends.
    fn step_or_hold(&mut self, n: u32, input: Input) {
        let node = &self.hosts.nodes[n as usize];
        if node.paused(self.now) {
            let at = node.paused_until;
            return self.hold(n, at, input, false);
        }
        self.step(n, Some(input));
    }

    /// Queue `input` for node `n` until `at` (see `Event::Held`).
    fn hold(&mut self, n: u32, at: u64, input: Input, served: bool) {
        let life = self.hosts.nodes[n as usize].life;
        self.queued_other += 1;
        let input = Box::new(input);
        let event = Event::Held {
            node: n,
            life,
            input,
            served,
        };
        self.queue.push(at, event);
    }

    /// An input held at node `n` is due: handle it (its processing time done, or still
    /// to come once a pause is over), unless the node crashed meanwhile.
    pub(super) fn release(&mut self, n: u32, life: u32, input: Input, served: bool) {
        let node = &self.hosts.nodes[n as usize];
        if !node.up || node.life != life {
            if matches!(input, Input::Message(_)) {
                self.net.stats.vanished += 1;
            }
        } else if served {
            self.step_or_hold(n, input);
        } else {
            self.handle(n, input);
        }
    }

    /// Node `n`'s pause ended: it fires the timers that came due meanwhile.
    pub(super) fn resume(&mut self, n: u32, life: u32) {
        let node = &mut self.hosts.nodes[n as usize];
        if !node.up || node.life != life {
            return;
        }
        node.paused_until = 0;
        node.wake = None;
        self.step(n, None);
    }

    /// Feed node `n` an input, or (`None`) its due timers, and carry out what it asks. A
    /// node that panics (a core assertion) is reported as a breach and crash-stopped, so
    /// the run goes on and the summary names the replay command.
    pub(super) fn step(&mut self, n: u32, input: Option<Input>) {
        let mut out = std::mem::take(&mut self.hosts.out);
        let node = &mut self.hosts.nodes[n as usize];
        debug_assert!(node.up);
        let now = node.local(self.now);
        let kind = input
            .as_ref()
            .map_or_else(|| "timers".to_string(), input_kind);
        if self.trace {
            eprintln!("{} n{} {:?}", now, n, input);
        }
        let carried = match (&self.tally.reach, &input) {
            (Some(_), Some(input)) => super::reach::Reach::carried(input),
            _ => Vec::new(),
        };
        let step = std::panic::catch_unwind(AssertUnwindSafe(|| match input {
            Some(input) => node.node.handle(now, input, &mut out),
            None => {
                node.node.handle_timeout(now, &mut out);
                Ok(())
            }
        }));
        match step {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.tally.counters.rejected += 1,
            Err(payload) => {
                out.clear();
                self.hosts.out = out;
                let message = panic_message(payload.as_ref());
                self.tally.panics.push(format!(
                    "node {n} panicked at t={now} ns on {kind}: {message}"
                ));
                self.crash(n);
                return;
            }
        }
        if let Some(reach) = &mut self.tally.reach {
            let node = &self.hosts.nodes[n as usize].node;
            reach.note_stored(n, self.now, carried, node.store());
            reach.note_membership(n, self.now, node.is_member());
        }
        self.after_step(n);
        if self.trace && std::env::var("RINGKV_SIM_TRACE_NODE").ok() == Some(n.to_string()) {
            eprintln!(
                "  state n{n}: {}",
                self.hosts.nodes[n as usize].node.debug_coordination()
            );
        }
        for output in out.drain(..) {
            self.on_output(n, output);
        }
        self.hosts.out = out;
    }

    /// Keep node `n`'s wake-up at its next timer deadline, and count whether clients
    /// wait at it.
    pub(super) fn after_step(&mut self, n: u32) {
        let node = &mut self.hosts.nodes[n as usize];
        let waiting = node.node.pending_requests() > 0;
        if waiting != node.waiting {
            node.waiting = waiting;
            match waiting {
                true => self.hosts.waiting += 1,
                false => self.hosts.waiting -= 1,
            }
        }
        let next = node.node.poll_timeout();
        if next == node.wake.map(|(at, _)| at) || node.paused(self.now) {
            return;
        }
        node.wake = None;
        if let Some(at) = next {
            self.hosts.wake_generation += 1;
            let generation = self.hosts.wake_generation;
            node.wake = Some((at, generation));
            let event = Event::Wake {
                node: n,
                generation,
            };
            let at = node.global(at);
            self.queue.push(at.max(self.now), event);
        }
    }

    pub(super) fn on_output(&mut self, n: u32, output: Output) {
        match output {
            Output::Send { to, envelope } => self.send(n, &to, envelope),
            Output::Reply { id, reply } if id & MEMBERSHIP_BIT != 0 => {
                self.on_membership_reply(n, reply)
            }
            Output::Reply { id, reply } => self.on_client_reply(id, reply),
            Output::Persist(persist) => {
                if let Some(disk) = &mut self.hosts.nodes[n as usize].disk {
                    disk.write(persist);
                }
            }
        }
    }

    pub(super) fn send(&mut self, from: u32, to: &str, envelope: Envelope) {
        let Some(&dst) = self.hosts.index.get(to) else {
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

    pub(super) fn schedule_delivery(
        &mut self,
        delay_ns: u64,
        from: u32,
        to: u32,
        envelope: Box<Envelope>,
    ) {
        self.in_flight += 1;
        self.queue
            .push(self.now + delay_ns, Event::Deliver { from, to, envelope });
    }

    pub(super) fn deliver(&mut self, from: u32, to: u32, envelope: Box<Envelope>) {
        if !self.hosts.nodes[to as usize].up {
            self.net.stats.vanished += 1;
            return;
        }
        match self.net.on_arrival(self.now, from, to) {
            Ok(()) => {
                self.net.stats.delivered += 1;
                if let ringkv_core::Message::Snapshot { entries, .. } = &envelope.msg {
                    self.net.stats.snapshot_entries += entries.len() as u64;
                }
                self.handle(to, Input::Message(*envelope));
            }
            Err(Some(delay_ns)) => self.schedule_delivery(delay_ns, from, to, envelope),
            Err(None) => {}
        }
    }

    // ----- membership -----

    pub(super) fn request_membership(&mut self, n: u32, what: Membership) {
        self.hosts.membership_seq += 1;
        let id = MEMBERSHIP_BIT | self.hosts.membership_seq;
        let request = match what {
            Membership::Join | Membership::Rejoin => Request::Join,
            Membership::Depart => Request::Depart,
        };
        self.hosts.nodes[n as usize].membership = Some(what);
        self.handle(n, Input::Request { id, request });
    }

    pub(super) fn on_membership_reply(&mut self, n: u32, reply: Reply) {
        let what = self.hosts.nodes[n as usize].membership.take();
        if self.stage == Stage::Setup {
            if let Err(e) = &reply {
                self.tally.counters.setup_failures += 1;
                self.note(format!("setup: join of node {n} failed: {e}"));
            }
            if n as usize == self.hosts.next_join {
                self.hosts.next_join += 1;
                if self.hosts.next_join < self.config.positions() {
                    self.request_membership(self.hosts.next_join as u32, Membership::Join);
                }
            }
            return;
        }
        match (what, reply) {
            (_, Ok(Response::Joined { .. })) => {
                self.tally.counters.joins += 1;
                self.unpark_clients(n);
            }
            (_, Ok(Response::Departed { .. })) => self.tally.counters.departs += 1,
            (Some(Membership::Rejoin), Err(ringkv_core::RequestError::AlreadyJoined)) => {
                self.tally.counters.rejoins_refused += 1;
                self.note(format!(
                    "node {n} restarted but the bootstrap refused its rejoin: it still lists the node \
                     (no failure detection in the core yet)"
                ));
            }
            (what, reply) => {
                self.tally.counters.membership_failures += 1;
                self.note(format!("node {n} {what:?} ended with {reply:?}"));
            }
        }
    }

    // ----- faults -----

    /// The first position of the process node `i` is a position of.
    pub(super) fn process_first(&self, i: usize) -> usize {
        let r = self.config.vnodes.max(1);
        i - i % r
    }

    /// The positions of process `p` (a fault's node number) that exist.
    pub(super) fn positions_of(&self, p: u32) -> Vec<u32> {
        let r = self.config.vnodes.max(1) as u32;
        let count = self.hosts.nodes.len() as u32;
        (p.saturating_mul(r)..p.saturating_mul(r).saturating_add(r))
            .filter(|&n| n < count)
            .collect()
    }

    pub(super) fn apply_fault(&mut self, index: usize) {
        let kind = self.faults[index].kind.clone();
        if self.trace {
            eprintln!("{} FAULT {:?}", self.now, kind);
        }
        let count = self.hosts.nodes.len();
        // A fault names a process: with virtual nodes, all its positions take it.
        let up = |sim: &Self, n: &u32| sim.hosts.nodes[*n as usize].up;
        let applied = match kind {
            FaultKind::Crash { node } => {
                let hit: Vec<u32> = self
                    .positions_of(node)
                    .into_iter()
                    .filter(|n| up(self, n))
                    .collect();
                hit.iter().for_each(|&n| self.crash(n));
                !hit.is_empty()
            }
            FaultKind::Restart { node } => {
                let hit: Vec<u32> = self
                    .positions_of(node)
                    .into_iter()
                    .filter(|n| !up(self, n))
                    .collect();
                hit.iter().for_each(|&n| self.restart(n));
                !hit.is_empty()
            }
            FaultKind::CrashAll => {
                let up: Vec<u32> = (0..count as u32)
                    .filter(|&n| self.hosts.nodes[n as usize].up)
                    .collect();
                for &n in &up {
                    self.crash(n);
                }
                !up.is_empty()
            }
            FaultKind::RestartAll => {
                let mut down: Vec<u32> = (0..count as u32)
                    .filter(|&n| !self.hosts.nodes[n as usize].up)
                    .collect();
                // In an order drawn from the seed: a ring restarted from its disks must
                // come back whichever node starts first.
                use rand::seq::SliceRandom;
                down.shuffle(&mut self.hosts.seeds);
                for &n in &down {
                    self.restart(n);
                }
                !down.is_empty()
            }
            FaultKind::Join => {
                for _ in 0..self.config.vnodes.max(1) {
                    let n = self.hosts.nodes.len();
                    self.add_node(n);
                    self.request_membership(n as u32, Membership::Join);
                }
                true
            }
            // Never the ring's last live process: its departure dissolves the ring, its
            // data with it, as its operator asked (`dht depart` of a one-node ring).
            FaultKind::Depart { node } => {
                let active = |n: &SimNode| n.up && n.node.phase() == ringkv_core::Phase::Active;
                let mine = self.positions_of(node);
                let leaving: Vec<u32> = mine
                    .iter()
                    .copied()
                    .filter(|&n| active(&self.hosts.nodes[n as usize]))
                    .collect();
                let others = self
                    .hosts
                    .nodes
                    .iter()
                    .enumerate()
                    .any(|(i, other)| !mine.contains(&(i as u32)) && active(other));
                if !leaving.is_empty() && others {
                    leaving
                        .iter()
                        .for_each(|&n| self.request_membership(n, Membership::Depart));
                }
                !leaving.is_empty() && others
            }
            FaultKind::Pause { node, duration_ns } => {
                let hit: Vec<u32> = self
                    .positions_of(node)
                    .into_iter()
                    .filter(|&n| up(self, &n) && !self.hosts.nodes[n as usize].paused(self.now))
                    .collect();
                let until = self.now + duration_ns;
                for &n in &hit {
                    let sim_node = &mut self.hosts.nodes[n as usize];
                    sim_node.paused_until = until;
                    sim_node.wake = None;
                    let life = sim_node.life;
                    self.queued_other += 1;
                    self.queue.push(until, Event::Resume { node: n, life });
                }
                if !hit.is_empty() {
                    self.tally.counters.pauses += 1;
                }
                !hit.is_empty()
            }
            FaultKind::Partition {
                nodes,
                duration_ns,
                cut,
            } => {
                let until = self.now + duration_ns;
                // Every position of each process, also those that join later.
                let r = self.config.vnodes.max(1) as u32;
                let nodes: Vec<u32> = nodes
                    .iter()
                    .flat_map(|&p| p.saturating_mul(r)..p.saturating_mul(r).saturating_add(r))
                    .collect();
                match self.net.partitions.start(&nodes, until, cut) {
                    Some(bit) => {
                        self.tally.counters.partitions += 1;
                        self.queued_other += 1;
                        self.queue.push(until, Event::Heal { bit });
                        true
                    }
                    None => false,
                }
            }
        };
        if !applied {
            self.tally.counters.faults_skipped += 1;
        }
    }

    pub(super) fn crash(&mut self, n: u32) {
        if let Some(reach) = &mut self.tally.reach {
            // A node with a disk keeps what it acknowledged: not a loss by design.
            if !self.config.disks {
                reach.crashed(n, self.now);
            }
        }
        self.tally.crashed = true;
        self.tally.counters.crashes += 1;
        let node = &mut self.hosts.nodes[n as usize];
        node.up = false;
        node.membership = None;
        node.wake = None;
        node.paused_until = 0;
        node.busy_until = 0;
        node.life += 1;
        if std::mem::take(&mut node.waiting) {
            self.hosts.waiting -= 1;
        }
        for i in 0..self.hosts.nodes[n as usize].clients.len() {
            let c = self.hosts.nodes[n as usize].clients[i] as usize;
            if let Some(pending) = self.clients.all[c].outstanding.take() {
                self.complete(
                    c,
                    pending,
                    Outcome::Info("the client's node crashed".into()),
                );
            }
        }
    }

    pub(super) fn restart(&mut self, n: u32) {
        self.tally.counters.restarts += 1;
        let config = self.node_config(n as usize);
        let node = &mut self.hosts.nodes[n as usize];
        node.node = Node::new(config);
        node.up = true;
        if n == 0 && !self.config.failure_handling {
            self.note("the bootstrap restarted: it founds a new one-node ring".into());
            self.unpark_clients(0);
        } else {
            // With failure handling the bootstrap looks for its ring first, and joins it.
            self.request_membership(n, Membership::Rejoin);
        }
    }
}

/// Node `i`'s clock rate, in millionths of true time: within `drift_per_mille` of exact,
/// drawn from the run's seed and the node's number alone (so other draws are unchanged).
fn clock_rate_ppm(seed: u64, i: usize, drift_per_mille: u64) -> u64 {
    use rand::{Rng, SeedableRng};
    if drift_per_mille == 0 {
        return 1_000_000;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc10c_d21f_7000_0000 ^ i as u64);
    let spread = drift_per_mille.min(499) * 1_000;
    rng.gen_range(1_000_000 - spread..=1_000_000 + spread)
}

fn input_kind(input: &Input) -> String {
    match input {
        Input::Request { request, .. } => format!("request {}", request.op_name()),
        Input::Message(envelope) => format!(
            "message {} from {}",
            envelope.msg.kind(),
            envelope.from.addr
        ),
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
