//! A small in-test message pump: a handful of real `Node`s joined by a queue, with
//! optional seeded reordering, message interception, and placement checks.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::{
    ClusterConfig, Consistency, Envelope, Id, Input, Node, NodeConfig, Output, Reply, ReqId,
    Request, Routing,
};

/// Upper bound on deliveries in one `drive`, so a protocol loop fails the test instead of
/// hanging it.
pub const STEPS_MAX: usize = 5_000_000;

pub fn addr(i: usize) -> String {
    format!("10.0.{}.{}:5000", i / 256, i % 256)
}

pub fn cluster(k: usize, consistency: Consistency, routing: Routing) -> ClusterConfig {
    ClusterConfig::new(k, consistency, routing).expect("valid test config")
}

pub struct Pump {
    pub nodes: BTreeMap<String, Node>,
    queue: VecDeque<(Arc<str>, Envelope)>,
    pub held: Vec<(Arc<str>, Envelope)>,
    replies: BTreeMap<(String, ReqId), Reply>,
    pub now: u64,
    next_req: ReqId,
    reorder: Option<ChaCha8Rng>,
    pub delivered: usize,
    pub log: Vec<String>,
    pub record: bool,
    pub bootstrap: String,
    timing: ringkv_core::Timing,
    /// Nodes cut off from every other: messages from or to them are lost.
    pub isolated: BTreeSet<String>,
    /// Broken links: messages between the two nodes of a pair, either way, are lost.
    pub cut_links: BTreeSet<(String, String)>,
}

impl Pump {
    /// A one-node ring (the bootstrap at `addr(0)`).
    pub fn new(config: ClusterConfig) -> Pump {
        let bootstrap = addr(0);
        let mut nodes = BTreeMap::new();
        nodes.insert(
            bootstrap.clone(),
            Node::new(NodeConfig::bootstrap(&bootstrap, config, 0)),
        );
        Pump {
            nodes,
            queue: VecDeque::new(),
            held: Vec::new(),
            replies: BTreeMap::new(),
            now: 0,
            next_req: 1,
            reorder: None,
            delivered: 0,
            log: Vec::new(),
            record: false,
            bootstrap,
            timing: ringkv_core::Timing::default(),
            isolated: BTreeSet::new(),
            cut_links: BTreeSet::new(),
        }
    }

    /// A one-node ring whose nodes use `timing` (e.g. with failure handling on).
    pub fn with_timing(config: ClusterConfig, timing: ringkv_core::Timing) -> Pump {
        let mut pump = Pump::new(config);
        let bootstrap = pump.bootstrap.clone();
        let mut node_config = NodeConfig::bootstrap(&bootstrap, config, 0);
        node_config.timing = timing;
        pump.nodes.insert(bootstrap, Node::new(node_config));
        pump.timing = timing;
        pump
    }

    /// Crash-stop node `a`: it vanishes with its state; messages to it are lost.
    pub fn crash(&mut self, a: &str) {
        self.nodes.remove(a);
    }

    /// Deliver messages and fire timers in time order until `duration_ns` has passed.
    pub fn run_for(&mut self, duration_ns: u64) {
        let end = self.now + duration_ns;
        for _ in 0..STEPS_MAX {
            while self.step() {}
            let next = self
                .nodes
                .iter()
                .filter_map(|(a, n)| n.poll_timeout().map(|at| (at, a.clone())))
                .min();
            match next {
                Some((at, node)) if at <= end => {
                    self.now = self.now.max(at);
                    let mut out = Vec::new();
                    let now = self.now;
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.handle_timeout(now, &mut out);
                    }
                    self.carry_out(&node, out);
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("run_for did not finish");
    }

    /// Deliver messages in a seeded random order instead of FIFO.
    pub fn with_reordering(mut self, seed: u64) -> Pump {
        self.reorder = Some(ChaCha8Rng::seed_from_u64(seed));
        self
    }

    /// A ring of `n` nodes formed by joins through the bootstrap.
    pub fn ring(config: ClusterConfig, n: usize) -> Pump {
        let mut pump = Pump::new(config);
        for i in 1..n {
            pump.join(&addr(i));
        }
        pump
    }

    /// Create node `a` and join it; panics if the join fails.
    pub fn join(&mut self, a: &str) {
        if !self.nodes.contains_key(a) {
            let seed = Id::of_addr(a).prefix_u64();
            let mut config = NodeConfig::member(a, &self.bootstrap, seed);
            config.timing = self.timing;
            self.nodes.insert(a.to_string(), Node::new(config));
        }
        let reply = if self.timing.heartbeat_interval_ns > 0 {
            self.call_timed(a, Request::Join)
        } else {
            self.call(a, Request::Join)
        };
        assert!(reply.is_ok(), "join of {a} failed: {reply:?}");
    }

    /// Depart node `a`; panics if the depart fails.
    pub fn depart(&mut self, a: &str) {
        let reply = self.call(a, Request::Depart);
        assert!(reply.is_ok(), "depart of {a} failed: {reply:?}");
    }

    /// Submit a request without driving the network.
    pub fn submit(&mut self, a: &str, request: Request) -> ReqId {
        let id = self.next_req;
        self.next_req += 1;
        self.input(a, Input::Request { id, request });
        id
    }

    /// Submit a request, drive to quiescence, and return its reply.
    pub fn call(&mut self, a: &str, request: Request) -> Reply {
        let id = self.submit(a, request);
        self.drive();
        self.take_reply(a, id)
            .expect("every request is answered once the network drains")
    }

    /// Submit a request and run the network with timers until it is answered (at most a
    /// minute of pump time).
    pub fn call_timed(&mut self, a: &str, request: Request) -> Reply {
        let id = self.submit(a, request);
        for _ in 0..600 {
            if let Some(reply) = self.take_reply(a, id) {
                return reply;
            }
            self.run_for(100_000_000);
        }
        panic!("request {id} at {a} unanswered after a minute");
    }

    pub fn take_reply(&mut self, a: &str, id: ReqId) -> Option<Reply> {
        self.replies.remove(&(a.to_string(), id))
    }

    fn input(&mut self, a: &str, input: Input) {
        self.now += 1_000;
        let mut out = Vec::new();
        let node = self.nodes.get_mut(a).expect("known node");
        let _ = node.handle(self.now, input, &mut out);
        self.carry_out(a, out);
    }

    fn carry_out(&mut self, a: &str, out: Vec<Output>) {
        for o in out {
            if self.record {
                self.log.push(format!("{a} {o:?}"));
            }
            match o {
                Output::Send { to, envelope } => self.queue.push_back((to, envelope)),
                Output::Reply { id, reply } => {
                    let old = self.replies.insert((a.to_string(), id), reply);
                    assert!(old.is_none(), "request {id} at {a} answered twice");
                }
                Output::Persist(_) => {}
            }
        }
    }

    /// Deliver one queued message; false when none is left.
    pub fn step(&mut self) -> bool {
        let next = match &mut self.reorder {
            Some(rng) if !self.queue.is_empty() => {
                let i = rng.gen_range(0..self.queue.len());
                self.queue.swap_remove_back(i)
            }
            _ => self.queue.pop_front(),
        };
        let Some((to, envelope)) = next else {
            return false;
        };
        self.delivered += 1;
        let cut = !self.isolated.is_empty()
            && (self.isolated.contains(&*to) || self.isolated.contains(&*envelope.from.addr))
            && *to != *envelope.from.addr;
        let (a, b) = (to.to_string(), envelope.from.addr.to_string());
        let broken =
            self.cut_links.contains(&(a.clone(), b.clone())) || self.cut_links.contains(&(b, a));
        if self.nodes.contains_key(&*to) && !cut && !broken {
            self.input(to.as_ref(), Input::Message(envelope));
        }
        true
    }

    /// Deliver until the network is quiet.
    pub fn drive(&mut self) {
        for _ in 0..STEPS_MAX {
            if !self.step() {
                return;
            }
        }
        panic!("network did not quiesce within {STEPS_MAX} deliveries");
    }

    /// Deliver until quiet, setting aside (not delivering) messages `hold` picks.
    pub fn drive_holding(&mut self, hold: impl Fn(&Envelope) -> bool) {
        for _ in 0..STEPS_MAX {
            let Some((to, env)) = self.queue.pop_front() else {
                return;
            };
            if hold(&env) {
                self.held.push((to, env));
            } else {
                self.queue.push_front((to, env));
                self.step();
            }
        }
        panic!("network did not quiesce");
    }

    /// Put the held messages back on the network.
    pub fn release_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.queue.extend(held);
    }

    pub fn members(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.is_member())
            .map(|(a, _)| a.clone())
            .collect()
    }

    pub fn bootstrap_node(&self) -> &Node {
        &self.nodes[&self.bootstrap]
    }

    /// Check that every live key is on exactly its `min(k, N)` replicas and nowhere else,
    /// and that all copies of a key are identical. Returns the number of distinct keys.
    pub fn check_placement(&self) -> Result<usize, String> {
        let boot = self.bootstrap_node();
        let ring = boot.ring().expect("bootstrap knows the ring");
        let k = boot.cluster().k;
        let mut holders: BTreeMap<String, BTreeSet<Id>> = BTreeMap::new();
        for node in self.nodes.values() {
            if !node.is_member() && !node.store().is_empty() {
                return Err(format!("{:?} is not a member but stores data", node.me()));
            }
            for (key, _) in node.store().live_entries() {
                holders
                    .entry(key.to_string())
                    .or_default()
                    .insert(node.me().id);
            }
        }
        for (key, ids) in &holders {
            let want: BTreeSet<Id> = ring
                .replicas(Id::of_key(key), k)
                .iter()
                .map(|n| n.id)
                .collect();
            if *ids != want {
                return Err(format!(
                    "key {key:?}: held by {} nodes, should be on {} (k={k}, N={})",
                    ids.len(),
                    want.len(),
                    ring.len()
                ));
            }
            let entries: BTreeSet<String> = self
                .nodes
                .values()
                .filter(|n| ids.contains(&n.me().id))
                .map(|n| format!("{:?}", n.store().get(key)))
                .collect();
            if entries.len() != 1 {
                return Err(format!("key {key:?}: replicas disagree: {entries:?}"));
            }
        }
        Ok(holders.len())
    }

    /// Whether the bootstrap's membership matches the nodes that think they are members,
    /// and successor pointers form one cycle in id order.
    pub fn check_ring(&self) -> Result<(), String> {
        let ring = self.bootstrap_node().ring().expect("bootstrap");
        let members: Vec<Id> = ring.iter().map(|n| n.id).collect();
        for (i, id) in members.iter().enumerate() {
            let node = self
                .nodes
                .values()
                .find(|n| n.me().id == *id)
                .ok_or("member without a node")?;
            if !node.is_member() {
                return Err(format!("{:?} is listed but not a member", node.me()));
            }
            let want_succ = members[(i + 1) % members.len()];
            let succ = node.view().succs.first().map(|s| s.id).unwrap_or(*id);
            if succ != want_succ {
                return Err(format!("{:?} has the wrong successor", node.me()));
            }
            let want_fingers = ring.fingers_of(*id);
            if node.fingers() != want_fingers.as_slice() {
                return Err(format!("{:?} has stale fingers", node.me()));
            }
        }
        Ok(())
    }
}

/// The reference insert workload (`insert.txt`): `(title, value)` pairs.
pub fn reference_inserts() -> Vec<(String, String)> {
    let text = include_str!("../../../experiments/workloads/insert.txt");
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            let (title, value) = line.rsplit_once(',')?;
            Some((title.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}
