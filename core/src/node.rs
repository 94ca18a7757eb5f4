//! The node state machine: inputs in, outputs out. `Node` owns the shared state and the
//! sub-machines, and dispatches each input to the one that handles it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::anti_entropy;
use crate::api::{ReqId, Request, RequestError, Response};
use crate::config::{ClusterConfig, Consistency, NodeConfig, Routing};
use crate::coordinator::Coordinator;
use crate::failure::FailureDetector;
use crate::handover::Handover;
use crate::id::Id;
use crate::membership::Membership;
use crate::message::{Action, Envelope, Message, NodeRef, Routed, View};
use crate::out::Out;
use crate::rejected::Rejected;
use crate::replication::{self, Replication};
use crate::requests::Requests;
use crate::routing::{self, Decision};
use crate::shared::{Fingers, Phase, Shared};
use crate::store::{Range, Store};
use crate::timers::Timer;
use crate::{Input, Output, Time};

/// What `GET /node` shows of a node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// Node id (hex).
    pub id: Id,
    /// Advertised address.
    pub addr: String,
    /// Life-cycle phase.
    pub phase: Phase,
    /// Whether this node is the bootstrap (the configuration master).
    pub bootstrap: bool,
    /// Configuration epoch of the installed view.
    pub epoch: u64,
    /// Number of ring members, as of the installed view.
    pub ring_size: usize,
    /// Predecessor.
    pub predecessor: Option<NodeRef>,
    /// Successor.
    pub successor: Option<NodeRef>,
    /// Distinct finger targets, in finger order.
    pub fingers: Vec<NodeRef>,
    /// Replication factor.
    pub k: usize,
    /// Replication model.
    pub consistency: Consistency,
    /// Lookup routing.
    pub routing: Routing,
    /// Live keys this node is primary for.
    pub keys_primary: usize,
    /// Live keys this node holds as a non-primary replica.
    pub keys_replica: usize,
}

/// Self-addressed messages handled within one input; a bound against a logic loop.
const LOCAL_DELIVERIES_MAX: usize = 1 << 16;

/// Timers fired by one `handle_timeout` call; a bound against a timer that re-arms
/// itself in the past.
const TIMERS_PER_CALL_MAX: usize = 64;

/// One ringkv node. See the crate documentation for the driver loop.
#[derive(Debug)]
pub struct Node {
    shared: Shared,
    out: Out,
    requests: Requests,
    /// Present on the configuration master.
    coordinator: Option<Coordinator>,
    membership: Membership,
    handover: Handover,
    replication: Replication,
    failure: FailureDetector,
}

impl Node {
    /// A node as configured. A bootstrap starts as the only member of a one-node ring; any
    /// other node starts idle and joins on a `Join` request.
    pub fn new(config: NodeConfig) -> Node {
        let me = NodeRef::new(&config.addr);
        let is_bootstrap = config.bootstrap.is_none();
        let coordinator = config.bootstrap.as_deref().unwrap_or(&config.addr).into();
        let shared = Shared {
            me: me.clone(),
            coordinator,
            config: config.cluster,
            limits: config.limits,
            timing: config.timing,
            phase: Phase::Idle,
            incarnation: 0,
            view: View::default(),
            fingers: Fingers::default(),
            store: Store::new(),
            gaining: None,
            forward_to: None,
        };
        let mut node = Node {
            out: Out::new(me, ChaCha8Rng::seed_from_u64(config.seed)),
            shared,
            requests: Requests::default(),
            coordinator: None,
            membership: Membership::default(),
            handover: Handover::default(),
            replication: Replication::default(),
            failure: FailureDetector::default(),
        };
        if is_bootstrap {
            node.found_ring();
        }
        node
    }

    // ----- the driver's calls, in the order a driver makes them -----

    /// Feed one input at time `now`; outputs are appended to `out`. A peer message that
    /// cannot be accepted is dropped and described in the error; the node is unchanged.
    pub fn handle(
        &mut self,
        now: Time,
        input: Input,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        self.out.now = now;
        let result = match input {
            Input::Request { id, request } => {
                self.on_request(id, request);
                Ok(())
            }
            Input::Message(envelope) => self.on_message(envelope),
        };
        self.finish_input(out);
        result
    }

    /// When the node next wants [`Node::handle_timeout`] called, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.out.next_timeout()
    }

    /// Fire every timer due at `now`; outputs are appended to `out`. Calling it early is
    /// harmless (nothing is due).
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<Output>) {
        self.out.now = now;
        for _ in 0..TIMERS_PER_CALL_MAX {
            let Some(timer) = self.out.pop_due(now) else {
                break;
            };
            self.on_timer(timer);
            self.deliver_local();
        }
        self.finish_input(out);
    }

    /// Arm the node's periodic timers (heartbeats, failure checks, anti-entropy) at
    /// `now`. Optional: the first input arms them too; a driver that wants a fresh
    /// bootstrap to watch for failures before any input calls this once at start.
    pub fn start(&mut self, now: Time, out: &mut Vec<Output>) {
        self.out.now = now;
        self.finish_input(out);
    }

    // ----- getters -----

    /// This node's id and address.
    pub fn me(&self) -> &NodeRef {
        &self.shared.me
    }

    /// Life-cycle phase.
    pub fn phase(&self) -> Phase {
        self.shared.phase
    }

    /// Whether the node is a ring member (active or departing).
    pub fn is_member(&self) -> bool {
        self.shared.is_member()
    }

    /// Whether this node is the bootstrap (the configuration master).
    pub fn is_bootstrap(&self) -> bool {
        self.coordinator.is_some()
    }

    /// Cluster settings in force at this node.
    pub fn cluster(&self) -> ClusterConfig {
        self.shared.config
    }

    /// The installed view.
    pub fn view(&self) -> &View {
        &self.shared.view
    }

    /// The local store.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The finger table (empty when not a member).
    pub fn fingers(&self) -> &[NodeRef] {
        &self.shared.fingers.nodes
    }

    /// Number of client requests awaiting an answer.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// The ring membership as the configuration master knows it (`None` on other nodes).
    pub fn ring(&self) -> Option<&crate::Ring> {
        self.coordinator.as_ref().map(|c| c.ring())
    }

    /// Whether the configuration master has no membership change in progress or queued
    /// (always true on other nodes).
    pub fn membership_idle(&self) -> bool {
        self.coordinator.as_ref().is_none_or(|c| c.is_idle())
    }

    /// Keys this node must hold under its installed view.
    pub fn responsibility(&self) -> Range {
        self.shared.responsibility()
    }

    /// Whether this node is the primary (the successor) of `key`.
    pub fn is_primary(&self, key: Id) -> bool {
        self.shared.is_primary(key)
    }

    /// A summary for operators.
    pub fn status(&self) -> NodeStatus {
        let sh = &self.shared;
        let primary = sh
            .store
            .live_entries()
            .filter(|(k, _)| sh.is_primary(Id::of_key(k)))
            .count();
        let mut fingers = sh.fingers.nodes.clone();
        fingers.dedup();
        NodeStatus {
            id: sh.me.id,
            addr: sh.addr(),
            phase: sh.phase,
            bootstrap: self.is_bootstrap(),
            epoch: sh.view.epoch,
            ring_size: sh.view.ring_size,
            predecessor: sh.view.preds.first().cloned(),
            successor: sh.view.succs.first().cloned(),
            fingers,
            k: sh.config.k,
            consistency: sh.config.consistency,
            routing: sh.config.routing,
            keys_primary: primary,
            keys_replica: sh.store.live_len() - primary,
        }
    }

    // ----- client requests -----

    fn on_request(&mut self, id: ReqId, request: Request) {
        if let Err(err) = validate(&self.shared, &request) {
            return self.out.reply(id, Err(err));
        }
        if self.requests.len() >= self.shared.limits.pending_requests_max {
            let pending = self.requests.len();
            return self
                .out
                .reply(id, Err(RequestError::Overloaded { pending }));
        }
        match request {
            Request::Join => return self.client_join(id),
            Request::Depart => return self.client_depart(id),
            _ if !self.shared.is_member() => {
                return self.out.reply(id, Err(RequestError::NotJoined))
            }
            _ => {}
        }
        let deadline = self.out.after(self.shared.timing.request_timeout_ns);
        self.requests.wait_for(id, deadline);
        let origin = self.shared.origin(id);
        let routed = |key: String, action: Action| Routed {
            origin: Some(origin.clone()),
            key,
            action,
            hops: 0,
            laps: 0,
        };
        let (sh, out) = (&mut self.shared, &mut self.out);
        match request {
            Request::Insert { key, value } => {
                self.route(routed(key, Action::Write { value: Some(value) }))
            }
            Request::Delete { key } => self.route(routed(key, Action::Write { value: None })),
            Request::Query { key } => self.route(routed(key, Action::Read)),
            Request::QueryAll => routing::on_collect(sh, out, origin, Vec::new(), 0),
            Request::Overlay => {
                let walk = Message::OverlayWalk {
                    origin,
                    nodes: Vec::new(),
                };
                out.send_addr(&sh.coordinator.clone(), walk);
            }
            Request::Join | Request::Depart => {}
        }
    }

    fn client_join(&mut self, id: ReqId) {
        if self.shared.phase != Phase::Idle {
            return self.out.reply(id, Err(RequestError::AlreadyJoined));
        }
        if self.coordinator.is_some() {
            // A bootstrap that departed alone starts its ring afresh.
            self.found_ring();
            let me = self.shared.me.clone();
            let joined = Response::Joined {
                predecessor: me.clone(),
                successor: me,
            };
            return self.out.reply(id, Ok(joined));
        }
        let deadline = self.out.after(self.shared.timing.request_timeout_ns);
        self.requests.wait_for(id, deadline);
        self.membership.join(&mut self.shared, &mut self.out, id);
    }

    fn client_depart(&mut self, id: ReqId) {
        let refuse = match self.shared.phase {
            Phase::Idle | Phase::Joining => Some(RequestError::NotJoined),
            Phase::Departing => Some(RequestError::AlreadyJoined),
            Phase::Active => None,
        };
        if let Some(err) = refuse {
            return self.out.reply(id, Err(err));
        }
        if let Some(coordinator) = &mut self.coordinator {
            let others = coordinator.ring().len() - 1;
            if others > 0 {
                let err = RequestError::BootstrapCannotDepart { others };
                return self.out.reply(id, Err(err));
            }
            coordinator.forget(&self.shared.me);
            self.membership.leave(&mut self.shared, &mut self.handover);
            let node = self.shared.addr();
            return self.out.reply(id, Ok(Response::Departed { node }));
        }
        let deadline = self.out.after(self.shared.timing.request_timeout_ns);
        self.requests.wait_for(id, deadline);
        self.membership.depart(&mut self.shared, &mut self.out, id);
    }

    /// Take one routing step for `routed`: serve it here or pass it on.
    fn route(&mut self, mut routed: Routed) {
        let (sh, out) = (&mut self.shared, &mut self.out);
        if !sh.is_member() {
            return routing::route_while_away(sh, out, routed);
        }
        let failure = &self.failure;
        match routing::decide(sh, |id| failure.is_suspect(id), &routed) {
            Decision::ReadHere => {
                replication::answer_read(sh, out, routed.origin, &routed.key, routed.hops)
            }
            Decision::Primary => self
                .replication
                .at_primary(sh, &mut self.handover, out, routed),
            Decision::Fail(err) => out.respond(routed.origin, Err(err)),
            Decision::Forward(next) => {
                routed.hops += 1;
                out.send(&next, Message::Route(routed));
            }
        }
    }

    // ----- peer messages -----

    // Longer than most: one arm per message kind, each handing it to its sub-machine.
    fn on_message(&mut self, envelope: Envelope) -> Result<(), Rejected> {
        if let Err(reason) = envelope.msg.check() {
            let (kind, from) = (envelope.msg.kind(), envelope.from.addr.to_string());
            return Err(Rejected::Malformed { kind, from, reason });
        }
        let Some(Envelope { from, msg }) = self.membership.hold_early(&self.shared, envelope)
        else {
            return Ok(());
        };
        // A join request from a member comes from a restarted incarnation: it does not
        // show that the member the coordinator knows is alive.
        if !matches!(msg, Message::JoinRequest { .. }) {
            self.heard_from(&from);
        }
        let (sh, out, ho) = (&mut self.shared, &mut self.out, &mut self.handover);
        let m = &mut self.membership;
        match msg {
            Message::JoinRequest { .. }
            | Message::DepartRequest { .. }
            | Message::Ready { .. }
            | Message::Ack { .. } => self.on_coordination(from, msg),
            Message::Refused { reason } => m.on_refused(sh, ho, out, &from, reason),
            Message::Prepare(prepare) => m.on_prepare(sh, ho, out, &from, prepare),
            Message::Fetch { epoch, range } => ho.on_fetch(sh, out, from, epoch, range),
            Message::Snapshot {
                epoch,
                chunk,
                chunks,
                entries,
            } => self.on_snapshot(&from, epoch, chunk, chunks, entries),
            Message::Commit { epoch } => m.on_commit(sh, ho, out, &from, epoch),
            Message::Fingers { epoch, updates } => m.on_fingers(sh, &from, epoch, updates),
            Message::ChangeDone { .. } => m.on_change_done(sh, out, &from),
            Message::Removed { .. } => m.on_removed(sh, ho, out, &from),
            Message::Abort { epoch } => m.on_abort(sh, ho, &from, epoch),
            Message::Route(mut routed) => {
                routed.laps += u32::from(routing::is_lap(sh, &from, &routed.key));
                self.route(routed);
                Ok(())
            }
            Message::TailRead { origin, key, hops } => {
                replication::tail_read(sh, out, origin, &key, hops);
                Ok(())
            }
            Message::ChainWrite(step) => {
                self.replication.on_chain_write(sh, ho, out, step);
                Ok(())
            }
            Message::Replicate { entries, ttl, seq } => self
                .replication
                .on_replicate(sh, ho, out, from, entries, ttl, seq),
            Message::ReplicateAck { seqs } => {
                self.replication.on_replicate_ack(&from, seqs);
                Ok(())
            }
            Message::Forward {
                epoch,
                seq,
                key,
                entry,
                ttl,
            } => {
                ho.on_forward(sh, out, &from, epoch, seq, &key, entry, ttl);
                Ok(())
            }
            Message::ForwardAck { epoch, seq } => {
                ho.on_forward_ack(sh, out, &from, epoch, seq);
                Ok(())
            }
            Message::Done { req, reply } => {
                if self.requests.finish(req) {
                    out.reply(req, reply);
                }
                Ok(())
            }
            Message::CollectAll {
                origin,
                pairs,
                visited,
            } => {
                routing::on_collect(sh, out, origin, pairs, visited);
                Ok(())
            }
            Message::OverlayWalk { origin, nodes } => {
                routing::on_overlay_walk(sh, out, origin, nodes);
                Ok(())
            }
            Message::Heartbeat => {
                if let Some(c) = &self.coordinator {
                    c.on_heartbeat(sh, out, &from);
                }
                Ok(())
            }
            Message::Ping => {
                out.send(&from, Message::Pong);
                Ok(())
            }
            Message::Pong => Ok(()),
            Message::SyncDigest { range, digests } => {
                anti_entropy::on_digest(sh, out, from, range, digests);
                Ok(())
            }
            Message::SyncDiff {
                range,
                buckets,
                entries,
            } => {
                anti_entropy::on_diff(sh, ho, out, from, range, buckets, entries);
                Ok(())
            }
            Message::SyncPush { entries } => {
                anti_entropy::on_push(sh, ho, out, entries);
                Ok(())
            }
        }
    }

    /// Any message from a peer shows it is alive.
    fn heard_from(&mut self, from: &NodeRef) {
        self.failure.heard_from(from);
        if let Some(c) = &mut self.coordinator {
            c.heard_from(from, self.out.now);
        }
    }

    /// Membership requests and change progress: for the coordinator. A member passes a
    /// join request on to it; anything else is misdirected.
    fn on_coordination(&mut self, from: NodeRef, msg: Message) -> Result<(), Rejected> {
        match &mut self.coordinator {
            Some(c) => c.on_message(&self.shared, &mut self.out, from, msg),
            None if matches!(msg, Message::JoinRequest { .. }) => {
                let to = self.shared.coordinator.clone();
                self.out.send_addr(&to, msg);
                Ok(())
            }
            None => Err(Rejected::not_coordinator(msg.kind(), &from)),
        }
    }

    /// A snapshot chunk for the view being prepared; once all have arrived, store them
    /// and tell the coordinator this node is ready.
    fn on_snapshot(
        &mut self,
        from: &NodeRef,
        epoch: u64,
        chunk: u32,
        chunks: u32,
        entries: Vec<(String, crate::Entry)>,
    ) -> Result<(), Rejected> {
        let consistency = self.shared.config.consistency;
        let fetched =
            self.handover
                .on_snapshot(consistency, from, epoch, chunk, chunks, entries)?;
        if let Some(entries) = fetched {
            let (sh, out) = (&mut self.shared, &mut self.out);
            for (key, entry) in entries {
                self.handover.apply(sh, out, &key, entry);
            }
            self.membership.mark_ready(sh, out);
        }
        Ok(())
    }

    // ----- timers -----

    fn on_timer(&mut self, timer: Timer) {
        let (sh, out) = (&mut self.shared, &mut self.out);
        match timer {
            Timer::Requests => self.expire_requests(),
            Timer::Gc => {
                let cutoff = out.now.saturating_sub(sh.timing.tombstone_ttl_ns);
                sh.store.collect_tombstones(cutoff);
            }
            Timer::Heartbeat => {
                self.membership.on_tick(sh, out);
                if sh.is_member() {
                    self.failure.on_tick(sh, out);
                }
            }
            Timer::FailureCheck => {
                if let Some(c) = &mut self.coordinator {
                    c.check_failures(sh, out);
                }
            }
            Timer::Membership => {
                if let Some(c) = &mut self.coordinator {
                    c.on_deadline(sh, out);
                }
            }
            Timer::AntiEntropy => anti_entropy::on_tick(sh, out),
            Timer::Replicate => self.replication.resend(&mut self.handover, out),
            Timer::ReplicateAcks => self.replication.flush_acks(out),
        }
    }

    fn expire_requests(&mut self) {
        let timeout_ms = self.shared.timing.request_timeout_ns / 1_000_000;
        for id in self.requests.expire(self.out.now) {
            // The join or depart may still complete; only the client stops waiting.
            self.membership.forget_request(id);
            self.out
                .reply(id, Err(RequestError::Timeout { timeout_ms }));
        }
    }

    // ----- after every input -----

    /// Handle what the node sent itself, keep the timers its role needs armed, check the
    /// invariants, and hand the outputs to the driver.
    fn finish_input(&mut self, out: &mut Vec<Output>) {
        self.deliver_local();
        self.arm_request_timer();
        self.arm_periodic();
        self.check_invariants();
        self.out.drain_into(out);
    }

    fn deliver_local(&mut self) {
        for _ in 0..LOCAL_DELIVERIES_MAX {
            let Some(envelope) = self.out.take_local() else {
                return;
            };
            // Our own messages are well-formed; a rejection here is only a stale duplicate.
            let _ = self.on_message(envelope);
        }
        debug_assert!(false, "self-addressed message loop");
        self.out.clear_local();
    }

    fn arm_request_timer(&mut self) {
        match self.requests.next_deadline() {
            Some(at) => self.out.set_timer(Timer::Requests, at),
            None => self.out.cancel_timer(Timer::Requests),
        }
    }

    /// Keep the periodic timers this node's role needs armed.
    fn arm_periodic(&mut self) {
        let (sh, out) = (&self.shared, &mut self.out);
        let heartbeat = sh.timing.heartbeat_interval_ns;
        let member = sh.is_member();
        if heartbeat > 0 && (member || sh.phase == Phase::Joining) {
            out.arm(Timer::Heartbeat, out.after(heartbeat));
        }
        if heartbeat > 0 && self.coordinator.is_some() && member {
            out.arm(Timer::FailureCheck, out.after(heartbeat));
        }
        let sync = sh.timing.anti_entropy_interval_ns;
        if sync > 0 && member {
            out.arm(Timer::AntiEntropy, out.after(sync));
        }
        if sh.store.tombstones() > 0 && !out.is_armed(Timer::Gc) {
            // Jitter, so nodes do not sweep in lockstep.
            let interval = sh.timing.gc_interval_ns.max(1);
            let jitter = out.rng.gen_range(0..=interval / 10);
            out.set_timer(Timer::Gc, out.after(interval + jitter));
        }
    }

    fn check_invariants(&self) {
        let sh = &self.shared;
        debug_assert!(self.requests.is_consistent());
        debug_assert!(!sh.view.succs.contains(&sh.me));
        debug_assert!(!sh.view.preds.contains(&sh.me));
        debug_assert!(sh.fingers.nodes.is_empty() || sh.fingers.nodes.len() == crate::id::ID_BITS);
        debug_assert!(sh.is_member() || sh.store.is_empty() || sh.phase == Phase::Joining);
        debug_assert_eq!(
            self.out.timer(Timer::Requests),
            self.requests.next_deadline()
        );
    }

    /// Start as the single member of a new ring.
    fn found_ring(&mut self) {
        let sh = &mut self.shared;
        self.coordinator = Some(Coordinator::found(&sh.me));
        sh.view = View {
            epoch: 0,
            ring_size: 1,
            preds: Vec::new(),
            succs: Vec::new(),
        };
        sh.fingers.alone(&sh.me.clone());
        sh.phase = Phase::Active;
        sh.forward_to = None;
    }
}

/// Why `request` is refused before it is looked at, if it is.
fn validate(sh: &Shared, request: &Request) -> Result<(), RequestError> {
    let (key, value) = match request {
        Request::Insert { key, value } => (key, Some(value)),
        Request::Query { key } | Request::Delete { key } => (key, None),
        _ => return Ok(()),
    };
    if key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    let limits = &sh.limits;
    if key.len() > limits.key_bytes_max {
        return Err(RequestError::KeyTooLarge {
            len: key.len(),
            max: limits.key_bytes_max,
        });
    }
    match value {
        Some(v) if v.len() > limits.value_bytes_max => Err(RequestError::ValueTooLarge {
            len: v.len(),
            max: limits.value_bytes_max,
        }),
        _ => Ok(()),
    }
}
