//! The node state machine: inputs in, outputs out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::api::{Reply, ReqId, Request, RequestError, Response};
use crate::config::{ClusterConfig, Consistency, Limits, NodeConfig, Routing, Timing};
use crate::coordinator::Coordinator;
use crate::id::{in_open_closed, Id};
use crate::membership::{Migration, Preparing};
use crate::message::{Action, Envelope, Message, NodeRef, Origin, Routed, View};
use crate::store::{Range, Store};
use crate::{Input, Output, Time, Timer};

/// Where a node stands in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not a member: never joined, or departed.
    Idle,
    /// Asked the bootstrap to join; not yet a member.
    Joining,
    /// A member.
    Active,
    /// A member that asked to leave; serves until the bootstrap commits its departure.
    Departing,
}

/// A peer message the node dropped, and why. Nothing changed in the node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The message needs a ring member, and this node is not one.
    #[error("'{kind}' from {from} dropped: this node is {phase:?}, not a ring member")]
    NotMember {
        /// Message kind.
        kind: &'static str,
        /// Sender address.
        from: String,
        /// This node's phase.
        phase: Phase,
    },
    /// The message belongs to a configuration epoch this node is not in.
    #[error("'{kind}' from {from} dropped: epoch {epoch} does not match this node's")]
    WrongEpoch {
        /// Message kind.
        kind: &'static str,
        /// Sender address.
        from: String,
        /// The message's epoch.
        epoch: u64,
    },
    /// The message is only accepted by the bootstrap, or only from it.
    #[error("'{kind}' from {from} dropped: it is only for (or from) the bootstrap")]
    NotBootstrap {
        /// Message kind.
        kind: &'static str,
        /// Sender address.
        from: String,
    },
}

/// What `GET /node` shows of a node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// Node id (hex).
    pub id: Id,
    /// Advertised address.
    pub addr: String,
    /// Life-cycle phase.
    pub phase: Phase,
    /// Whether this node is the bootstrap.
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

/// A client request waiting for its answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingReq {
    pub(crate) deadline: Time,
}

/// One ringkv node. See the crate documentation for the driver loop.
#[derive(Debug)]
pub struct Node {
    pub(crate) me: NodeRef,
    pub(crate) bootstrap: Arc<str>,
    pub(crate) config: ClusterConfig,
    pub(crate) limits: Limits,
    pub(crate) timing: Timing,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) phase: Phase,
    /// The client request waiting for a join or depart to finish.
    pub(crate) membership_req: Option<ReqId>,
    pub(crate) view: View,
    pub(crate) fingers: Vec<NodeRef>,
    pub(crate) finger_epochs: Vec<u64>,
    pub(crate) store: Store,
    pending: BTreeMap<ReqId, PendingReq>,
    deadlines: BTreeSet<(Time, ReqId)>,
    pub(crate) timers: BTreeMap<Timer, Time>,
    /// Peers this node stopped routing through: silent past the failure timeout.
    pub(crate) suspects: BTreeSet<Id>,
    /// Pinged successors that have not answered, with the time of the first ping.
    pub(crate) unanswered: BTreeMap<Id, Time>,
    pub(crate) migrations: Vec<Migration>,
    pub(crate) preparing: Option<Preparing>,
    pub(crate) coordinator: Option<Coordinator>,
    /// After departing: where to pass lookups that still arrive through stale fingers.
    pub(crate) forward_to: Option<NodeRef>,
    local: VecDeque<Envelope>,
    /// Data-path messages that reached a joining node between its neighbours' commit and
    /// its own; handled once it commits.
    pub(crate) early: Vec<Envelope>,
    /// A commit whose acknowledgement waits for hand-over forwards to be acknowledged.
    pub(crate) ack_pending: Option<u64>,
    /// Identifies this node's current attempt to be a member (see `JoinRequest`).
    pub(crate) incarnation: u64,
    /// Client writes recently applied as primary, by (origin node, request): the network
    /// may duplicate a request, and a write must not take effect twice.
    pub(crate) applied_writes: crate::replication::RecentWrites,
    /// Replica writes sent and not yet acknowledged (eventual consistency).
    pub(crate) replicating: crate::replication::Unacked,
    /// Acknowledgements of replica writes not yet sent, by primary.
    pub(crate) acks_due: BTreeMap<NodeRef, Vec<u64>>,
    pub(crate) now: Time,
}

/// Self-addressed messages handled within one input; a bound against a logic loop.
const LOCAL_DELIVERIES_MAX: usize = 1 << 16;

impl Node {
    /// A node as configured. A bootstrap starts as the only member of a one-node ring; any
    /// other node starts idle and joins on a `Join` request.
    pub fn new(config: NodeConfig) -> Node {
        let me = NodeRef::new(&config.addr);
        let is_bootstrap = config.bootstrap.is_none();
        let bootstrap: Arc<str> = match &config.bootstrap {
            Some(addr) => Arc::from(addr.as_str()),
            None => me.addr.clone(),
        };
        let mut node = Node {
            me,
            bootstrap,
            config: config.cluster,
            limits: config.limits,
            timing: config.timing,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            phase: Phase::Idle,
            membership_req: None,
            view: View::default(),
            fingers: Vec::new(),
            finger_epochs: Vec::new(),
            store: Store::new(),
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            timers: BTreeMap::new(),
            suspects: BTreeSet::new(),
            unanswered: BTreeMap::new(),
            migrations: Vec::new(),
            preparing: None,
            coordinator: None,
            forward_to: None,
            local: VecDeque::new(),
            early: Vec::new(),
            incarnation: 0,
            ack_pending: None,
            applied_writes: Default::default(),
            replicating: Default::default(),
            acks_due: BTreeMap::new(),
            now: 0,
        };
        if is_bootstrap {
            node.found_ring();
        }
        node
    }

    /// Feed one input at time `now`; outputs are appended to `out`. A peer message that
    /// cannot be accepted is dropped and described in the error; the node is unchanged.
    pub fn handle(
        &mut self,
        now: Time,
        input: Input,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        self.now = now;
        let result = match input {
            Input::Request { id, request } => {
                self.on_request(id, request, out);
                Ok(())
            }
            Input::Message(envelope) => self.on_message(envelope, out),
            Input::Timer(timer) => {
                self.on_timer(timer, out);
                Ok(())
            }
        };
        self.deliver_local(out);
        self.arm_request_timer(out);
        self.arm_periodic(out);
        self.check_invariants();
        result
    }

    /// Arm the node's periodic timers (heartbeats, failure checks, anti-entropy) at
    /// `now`. Optional: the first input arms them too; a driver that wants a fresh
    /// bootstrap to watch for failures before any input calls this once at start.
    pub fn start(&mut self, now: Time, out: &mut Vec<Output>) {
        self.now = now;
        self.arm_periodic(out);
    }

    // ----- getters -----

    /// This node's id and address.
    pub fn me(&self) -> &NodeRef {
        &self.me
    }

    /// Life-cycle phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the node is a ring member (active or departing).
    pub fn is_member(&self) -> bool {
        matches!(self.phase, Phase::Active | Phase::Departing)
    }

    /// Whether this node is the bootstrap.
    pub fn is_bootstrap(&self) -> bool {
        self.coordinator.is_some()
    }

    /// Cluster settings in force at this node.
    pub fn cluster(&self) -> ClusterConfig {
        self.config
    }

    /// The installed view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The local store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The finger table (empty when not a member).
    pub fn fingers(&self) -> &[NodeRef] {
        &self.fingers
    }

    /// Number of client requests awaiting an answer.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// The ring membership as the bootstrap knows it (`None` on other nodes).
    pub fn ring(&self) -> Option<&crate::Ring> {
        self.coordinator.as_ref().map(|c| &c.ring)
    }

    /// Whether the bootstrap has no membership change in progress or queued (always true
    /// on other nodes).
    pub fn membership_idle(&self) -> bool {
        self.coordinator.as_ref().is_none_or(|c| c.is_idle())
    }

    /// Keys this node must hold under its installed view.
    pub fn responsibility(&self) -> Range {
        responsibility_of(&self.view, &self.me, self.config.k)
    }

    /// Whether this node is the primary (the successor) of `key`.
    pub fn is_primary(&self, key: Id) -> bool {
        match self.view.preds.first() {
            None => self.view.ring_size == 1,
            Some(pred) => in_open_closed(key, pred.id, self.me.id),
        }
    }

    /// A summary for operators.
    pub fn status(&self) -> NodeStatus {
        let primary = self
            .store
            .live_entries()
            .filter(|(k, _)| self.is_primary(Id::of_key(k)))
            .count();
        let mut fingers = self.fingers.clone();
        fingers.dedup();
        NodeStatus {
            id: self.me.id,
            addr: self.me.addr.to_string(),
            phase: self.phase,
            bootstrap: self.is_bootstrap(),
            epoch: self.view.epoch,
            ring_size: self.view.ring_size,
            predecessor: self.view.preds.first().cloned(),
            successor: self.view.succs.first().cloned(),
            fingers,
            k: self.config.k,
            consistency: self.config.consistency,
            routing: self.config.routing,
            keys_primary: primary,
            keys_replica: self.store.live_len() - primary,
        }
    }

    // ----- inputs -----

    fn on_request(&mut self, id: ReqId, request: Request, out: &mut Vec<Output>) {
        if let Err(err) = self.validate(&request) {
            return out.push(Output::Reply {
                id,
                reply: Err(err),
            });
        }
        if self.pending.len() >= self.limits.pending_requests_max {
            let pending = self.pending.len();
            return out.push(Output::Reply {
                id,
                reply: Err(RequestError::Overloaded { pending }),
            });
        }
        match request {
            Request::Join => return self.client_join(id, out),
            Request::Depart => return self.client_depart(id, out),
            _ if !self.is_member() => {
                return out.push(Output::Reply {
                    id,
                    reply: Err(RequestError::NotJoined),
                })
            }
            _ => {}
        }
        self.wait_for(id);
        let origin = Some(self.origin(id));
        let routed = |key: String, action: Action| Routed {
            origin,
            key,
            action,
            hops: 0,
            laps: 0,
        };
        match request {
            Request::Insert { key, value } => {
                self.route(routed(key, Action::Write { value: Some(value) }), out)
            }
            Request::Delete { key } => self.route(routed(key, Action::Write { value: None }), out),
            Request::Query { key } => self.route(routed(key, Action::Read), out),
            Request::QueryAll => self.start_collect(id, out),
            Request::Overlay => {
                let walk = Message::OverlayWalk {
                    origin: self.origin(id),
                    nodes: Vec::new(),
                };
                let bootstrap = self.bootstrap.clone();
                self.send_addr(&bootstrap, walk, out);
            }
            Request::Join | Request::Depart => {}
        }
    }

    fn validate(&self, request: &Request) -> Result<(), RequestError> {
        let (key, value) = match request {
            Request::Insert { key, value } => (key, Some(value)),
            Request::Query { key } | Request::Delete { key } => (key, None),
            _ => return Ok(()),
        };
        if key.is_empty() {
            return Err(RequestError::EmptyKey);
        }
        if key.len() > self.limits.key_bytes_max {
            return Err(RequestError::KeyTooLarge {
                len: key.len(),
                max: self.limits.key_bytes_max,
            });
        }
        match value {
            Some(v) if v.len() > self.limits.value_bytes_max => Err(RequestError::ValueTooLarge {
                len: v.len(),
                max: self.limits.value_bytes_max,
            }),
            _ => Ok(()),
        }
    }

    fn on_message(&mut self, envelope: Envelope, out: &mut Vec<Output>) -> Result<(), Rejected> {
        if self.is_early(&envelope.msg) {
            if self.early.len() < self.limits.pending_requests_max {
                self.early.push(envelope);
            }
            return Ok(());
        }
        let Envelope { from, msg } = envelope;
        // A join request from a member comes from a restarted incarnation: it does not
        // show that the member the bootstrap knows is alive.
        if !matches!(msg, Message::JoinRequest { .. }) {
            self.heard_from(&from);
        }
        match msg {
            Message::JoinRequest { .. }
            | Message::DepartRequest { .. }
            | Message::Ready { .. }
            | Message::Ack { .. } => self.on_coordination(from, msg, out),
            Message::Refused { reason } => self.on_refused(&from, reason, out),
            Message::Prepare {
                view,
                config,
                sources,
                fingers,
                resync,
            } => {
                let prepare = crate::membership::Prepare {
                    view,
                    config,
                    sources,
                    fingers,
                    resync,
                };
                self.on_prepare(&from, prepare, out)
            }
            Message::Fetch { epoch, range } => self.on_fetch(from, epoch, range, out),
            Message::Snapshot {
                epoch,
                chunk,
                chunks,
                entries,
            } => self.on_snapshot(&from, epoch, chunk, chunks, entries, out),
            Message::Commit { epoch } => self.on_commit(&from, epoch, out),
            Message::Fingers { epoch, updates } => self.on_fingers(&from, epoch, updates),
            Message::ChangeDone { .. } => self.on_change_done(&from, out),
            Message::Route(mut routed) => {
                // Progress means this node lies between the sender and the key.
                let key = Id::of_key(&routed.key);
                if from.id != self.me.id && !in_open_closed(self.me.id, from.id, key) {
                    routed.laps += 1;
                }
                self.route(routed, out);
                Ok(())
            }
            Message::TailRead { origin, key, hops } => {
                self.tail_read(origin, &key, hops, out);
                Ok(())
            }
            Message::ChainWrite {
                origin,
                key,
                entry,
                existed,
                position,
                chain_len,
                hops,
                ttl,
            } => {
                let write = crate::replication::ChainStep {
                    ttl,
                    origin,
                    key,
                    entry,
                    existed,
                    position,
                    chain_len,
                    hops,
                };
                self.on_chain_write(write, out);
                Ok(())
            }
            Message::Replicate { entries, ttl, seq } => {
                self.on_replicate(&from, entries, ttl, out)?;
                if seq != 0 {
                    self.ack_replicate(from, seq, out);
                }
                Ok(())
            }
            Message::ReplicateAck { seqs } => {
                for seq in seqs {
                    self.replicating.acknowledge(&from, seq);
                }
                Ok(())
            }
            Message::Forward {
                epoch,
                seq,
                key,
                entry,
                ttl,
            } => {
                // Taken like a replica write, and acknowledged. Under chain replication a
                // forward for a change this node is neither preparing nor has installed
                // belongs to an abandoned change: its source may be upstream of this
                // node's chain position, so it is acknowledged but not applied.
                let current = self.view.epoch == epoch
                    || self
                        .preparing
                        .as_ref()
                        .is_some_and(|p| p.view.epoch == epoch);
                if current || self.config.consistency == Consistency::Eventual {
                    self.offer(&key, entry, ttl, out);
                }
                self.send(&from, Message::ForwardAck { epoch, seq }, out);
                Ok(())
            }
            Message::ForwardAck { epoch, seq } => {
                self.on_forward_ack(&from, epoch, seq, out);
                Ok(())
            }
            Message::Done { req, reply } => {
                self.finish(req, reply, out);
                Ok(())
            }
            Message::CollectAll {
                origin,
                pairs,
                visited,
            } => {
                self.on_collect(origin, pairs, visited, out);
                Ok(())
            }
            Message::OverlayWalk { origin, nodes } => {
                self.on_overlay_walk(origin, nodes, out);
                Ok(())
            }
            Message::Heartbeat => {
                self.on_heartbeat(&from, out);
                Ok(())
            }
            Message::Pong => Ok(()),
            Message::Ping => {
                self.send(&from, Message::Pong, out);
                Ok(())
            }
            Message::Removed { .. } => self.on_removed(&from, out),
            Message::Abort { epoch } => self.on_abort(&from, epoch),
            Message::SyncDigest { range, digests } => {
                self.on_sync_digest(from, range, digests, out);
                Ok(())
            }
            Message::SyncDiff {
                range,
                buckets,
                entries,
            } => {
                self.on_sync_diff(from, range, buckets, entries, out);
                Ok(())
            }
            Message::SyncPush { entries } => {
                self.on_sync_push(entries, out);
                Ok(())
            }
        }
    }

    /// Whether `msg` is for the data path of a node that is prepared to join but has not
    /// yet installed its view (its neighbours may have installed theirs already).
    fn is_early(&self, msg: &Message) -> bool {
        let prepared = self.phase == Phase::Joining && self.preparing.is_some();
        prepared
            && matches!(
                msg,
                Message::Route(_)
                    | Message::TailRead { .. }
                    | Message::ChainWrite { .. }
                    | Message::CollectAll { .. }
                    | Message::OverlayWalk { .. }
            )
    }

    /// Handle the messages that arrived before this node's join committed.
    pub(crate) fn release_early(&mut self) {
        let early = std::mem::take(&mut self.early);
        self.local.extend(early);
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Vec<Output>) {
        self.timers.remove(&timer);
        match timer {
            Timer::Requests => self.expire_requests(out),
            Timer::Gc => {
                let cutoff = self.now.saturating_sub(self.timing.tombstone_ttl_ns);
                self.store.collect_tombstones(cutoff);
            }
            Timer::Heartbeat => self.on_heartbeat_tick(out),
            Timer::FailureCheck => self.check_failures(out),
            Timer::Membership => self.on_change_deadline(out),
            Timer::AntiEntropy => self.on_sync_tick(out),
            Timer::Replicate => self.resend_replicates(out),
            Timer::ReplicateAcks => self.flush_replicate_acks(out),
        }
    }

    // ----- helpers shared by the protocol modules -----

    /// Start as the single member of a new ring.
    fn found_ring(&mut self) {
        let mut coordinator = Coordinator::new();
        coordinator.ring.insert(self.me.clone());
        self.coordinator = Some(coordinator);
        self.view = View {
            epoch: 0,
            ring_size: 1,
            preds: Vec::new(),
            succs: Vec::new(),
        };
        self.fingers = vec![self.me.clone(); crate::id::ID_BITS];
        self.finger_epochs = vec![0; crate::id::ID_BITS];
        self.phase = Phase::Active;
        self.forward_to = None;
    }

    fn client_join(&mut self, id: ReqId, out: &mut Vec<Output>) {
        if self.phase != Phase::Idle {
            return out.push(Output::Reply {
                id,
                reply: Err(RequestError::AlreadyJoined),
            });
        }
        if self.coordinator.is_some() {
            // A bootstrap that departed alone starts its ring afresh.
            self.found_ring();
            let me = self.me.clone();
            return out.push(Output::Reply {
                id,
                reply: Ok(Response::Joined {
                    predecessor: me.clone(),
                    successor: me,
                }),
            });
        }
        self.membership_req = Some(id);
        self.wait_for(id);
        self.start_joining(out);
    }

    /// Become a joiner with a fresh incarnation and ask the bootstrap to let us in.
    pub(crate) fn start_joining(&mut self, out: &mut Vec<Output>) {
        self.phase = Phase::Joining;
        self.incarnation = self.now ^ self.rng.gen::<u64>();
        self.send_join_request(out);
    }

    /// (Re)send this joiner's request to the bootstrap.
    pub(crate) fn send_join_request(&mut self, out: &mut Vec<Output>) {
        let bootstrap = self.bootstrap.clone();
        let request = Message::JoinRequest {
            node: self.me.clone(),
            incarnation: self.incarnation,
        };
        self.send_addr(&bootstrap, request, out);
    }

    fn client_depart(&mut self, id: ReqId, out: &mut Vec<Output>) {
        let refuse = match self.phase {
            Phase::Idle | Phase::Joining => Some(RequestError::NotJoined),
            Phase::Departing => Some(RequestError::AlreadyJoined),
            Phase::Active => None,
        };
        if let Some(err) = refuse {
            return out.push(Output::Reply {
                id,
                reply: Err(err),
            });
        }
        if let Some(coordinator) = &self.coordinator {
            let others = coordinator.ring.len() - 1;
            if others > 0 {
                return out.push(Output::Reply {
                    id,
                    reply: Err(RequestError::BootstrapCannotDepart { others }),
                });
            }
            self.leave();
            let node = self.me.addr.to_string();
            return out.push(Output::Reply {
                id,
                reply: Ok(Response::Departed { node }),
            });
        }
        self.phase = Phase::Departing;
        self.membership_req = Some(id);
        self.wait_for(id);
        self.send_depart_request(out);
    }

    /// (Re)send this node's request to leave to the bootstrap.
    pub(crate) fn send_depart_request(&mut self, out: &mut Vec<Output>) {
        let bootstrap = self.bootstrap.clone();
        let request = Message::DepartRequest {
            node: self.me.clone(),
        };
        self.send_addr(&bootstrap, request, out);
    }

    /// Forget ring state and data; remember the successor to pass stray lookups to.
    pub(crate) fn leave(&mut self) {
        self.forward_to = self.view.succs.first().cloned();
        self.phase = Phase::Idle;
        self.view = View::default();
        self.fingers.clear();
        self.finger_epochs.clear();
        self.store.clear();
        // Replica writes sent under the old view may still arrive: they are repaired
        // through `forward_to`. Hand-overs still waiting for acknowledgements stay, so
        // their forwards can be sent again.
        self.migrations.retain(|m| !m.unacked.is_empty());
        self.preparing = None;
        if let Some(coordinator) = &mut self.coordinator {
            coordinator.ring.remove(self.me.id);
        }
    }

    fn on_refused(
        &mut self,
        from: &NodeRef,
        reason: RequestError,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        if *from.addr != *self.bootstrap {
            return Err(Rejected::NotBootstrap {
                kind: "refused",
                from: from.addr.to_string(),
            });
        }
        match self.phase {
            Phase::Joining => {
                // Drop whatever a prepared-then-abandoned join fetched.
                self.phase = Phase::Idle;
                self.store.clear();
                self.preparing = None;
                self.early.clear();
            }
            Phase::Departing => self.phase = Phase::Active,
            _ => return Ok(()),
        }
        if let Some(id) = self.membership_req.take() {
            self.finish(id, Err(reason), out);
        }
        Ok(())
    }

    /// This node as the origin of client request `id`.
    pub(crate) fn origin(&self, id: ReqId) -> Origin {
        Origin {
            node: self.me.clone(),
            req: id,
            incarnation: self.incarnation,
        }
    }

    /// Remember that client request `id` waits for an answer.
    fn wait_for(&mut self, id: ReqId) {
        let deadline = self.now.saturating_add(self.timing.request_timeout_ns);
        if let Some(old) = self.pending.insert(id, PendingReq { deadline }) {
            self.deadlines.remove(&(old.deadline, id));
        }
        self.deadlines.insert((deadline, id));
    }

    /// Answer client request `id` if it is still waiting.
    pub(crate) fn finish(&mut self, id: ReqId, reply: Reply, out: &mut Vec<Output>) {
        if let Some(p) = self.pending.remove(&id) {
            self.deadlines.remove(&(p.deadline, id));
            out.push(Output::Reply { id, reply });
        }
    }

    /// Answer `origin`'s request: locally, or with a `Done` message.
    pub(crate) fn respond(&mut self, origin: Option<Origin>, reply: Reply, out: &mut Vec<Output>) {
        let Some(origin) = origin else { return };
        if origin.node.id == self.me.id {
            self.finish(origin.req, reply, out);
        } else {
            let done = Message::Done {
                req: origin.req,
                reply,
            };
            self.send(&origin.node, done, out);
        }
    }

    fn expire_requests(&mut self, out: &mut Vec<Output>) {
        let timeout_ms = self.timing.request_timeout_ns / 1_000_000;
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > self.now {
                break;
            }
            if self.membership_req == Some(id) {
                // The join or depart may still complete; only the client stops waiting.
                self.membership_req = None;
            }
            self.finish(id, Err(RequestError::Timeout { timeout_ms }), out);
        }
    }

    fn arm_request_timer(&mut self, out: &mut Vec<Output>) {
        let next = self.deadlines.first().map(|&(t, _)| t);
        let armed = self.timers.get(&Timer::Requests).copied();
        match (next, armed) {
            (Some(at), Some(old)) if at == old => {}
            (Some(at), _) => self.set_timer(Timer::Requests, at, out),
            (None, Some(_)) => {
                self.timers.remove(&Timer::Requests);
                out.push(Output::CancelTimer {
                    timer: Timer::Requests,
                });
            }
            (None, None) => {}
        }
    }

    /// Schedule the next tombstone sweep, with jitter so nodes do not sweep in lockstep.
    pub(crate) fn arm_gc(&mut self, out: &mut Vec<Output>) {
        let interval = self.timing.gc_interval_ns.max(1);
        let jitter = self.rng.gen_range(0..=interval / 10);
        self.set_timer(Timer::Gc, self.now + interval + jitter, out);
    }

    pub(crate) fn set_timer(&mut self, timer: Timer, at: Time, out: &mut Vec<Output>) {
        self.timers.insert(timer, at);
        out.push(Output::SetTimer { timer, at });
    }

    /// Send `msg` to `to`; messages to this node are handled before `handle` returns.
    pub(crate) fn send(&mut self, to: &NodeRef, msg: Message, out: &mut Vec<Output>) {
        let addr = to.addr.clone();
        self.send_addr(&addr, msg, out);
    }

    pub(crate) fn send_addr(&mut self, to: &Arc<str>, msg: Message, out: &mut Vec<Output>) {
        let envelope = Envelope {
            from: self.me.clone(),
            msg,
        };
        if **to == *self.me.addr {
            self.local.push_back(envelope);
        } else {
            out.push(Output::Send {
                to: to.clone(),
                envelope,
            });
        }
    }

    fn deliver_local(&mut self, out: &mut Vec<Output>) {
        for _ in 0..LOCAL_DELIVERIES_MAX {
            let Some(envelope) = self.local.pop_front() else {
                return;
            };
            // Our own messages are well-formed; a rejection here is only a stale duplicate.
            let _ = self.on_message(envelope, out);
        }
        debug_assert!(self.local.is_empty(), "self-addressed message loop");
        self.local.clear();
    }

    fn check_invariants(&self) {
        debug_assert_eq!(self.pending.len(), self.deadlines.len());
        debug_assert!(!self.view.succs.contains(&self.me));
        debug_assert!(!self.view.preds.contains(&self.me));
        debug_assert!(self.fingers.is_empty() || self.fingers.len() == crate::id::ID_BITS);
        debug_assert!(self.is_member() || self.store.is_empty() || self.phase == Phase::Joining);
    }
}

/// Keys a node at `me` must hold under `view` with replication factor `k`: its own range
/// and its `k - 1` predecessors' ranges.
pub(crate) fn responsibility_of(view: &View, me: &NodeRef, k: usize) -> Range {
    if view.ring_size == 0 {
        Range::Empty
    } else if view.ring_size <= k {
        Range::All
    } else {
        match view.preds.get(k - 1) {
            Some(far) => Range::Interval {
                from: far.id,
                to: me.id,
            },
            None => Range::All,
        }
    }
}
