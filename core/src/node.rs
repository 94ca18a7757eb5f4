//! The node state machine: inputs in, outputs out. `Node` owns the shared state and the
//! sub-machines, and dispatches each input to the one that handles it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::anti_entropy;
use crate::api::{ReqId, Request, RequestError, Response};
use crate::config::{ClusterConfig, Consistency, NodeConfig, Routing};
use crate::coordinator::{Coordination, Directory, Outcome};
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
    /// Whether this node leads the coordinator group now (the configuration master; at
    /// first the bootstrap).
    pub bootstrap: bool,
    /// The coordinator this node follows.
    pub coordinator: String,
    /// The newest coordinator term it has seen.
    pub term: u64,
    /// Why this node stopped taking part, if it did.
    pub halted: Option<String>,
    /// Configuration epoch of the installed view.
    pub epoch: u64,
    /// Number of ring members, as of the installed view (a node whose neighbours did not
    /// change is not sent the ring's newer views: its count can be older than the ring's).
    pub ring_size: usize,
    /// Predecessor.
    pub predecessor: Option<NodeRef>,
    /// Successor.
    pub successor: Option<NodeRef>,
    /// Distinct finger targets, in finger order.
    pub fingers: Vec<NodeRef>,
    /// Peers this node routes round because they were silent past the failure timeout.
    pub suspects: Vec<Id>,
    /// Writes this node holds as hints for their primaries, not yet acknowledged: a
    /// departed node's entries until their heads (or primaries) have them, and writes
    /// forwarded for an abandoned change under eventual consistency (`docs/protocol.md`).
    pub hints: usize,
    /// Replication factor.
    pub k: usize,
    /// Replication model.
    pub consistency: Consistency,
    /// Lookup routing.
    pub routing: Routing,
    /// Ring positions per process (virtual nodes).
    pub vnodes: u32,
    /// The process this node is a position of: the advertised address of its first
    /// position (its own address when it is a process of its own).
    pub process: String,
    /// Live keys this node is primary for.
    pub keys_primary: usize,
    /// Live keys this node holds as a non-primary replica.
    pub keys_replica: usize,
}

/// Heartbeat intervals a restarted bootstrap waits to hear of its ring before it founds
/// a new one (members tell it every interval).
const RECOVERY_HEARTBEATS: u64 = 3;

/// Failure timeouts a bootstrap that founded its ring again from its disk withholds
/// leases while members that restarted with it have not rejoined.
const AWAIT_FAILURE_TIMEOUTS: u64 = 20;

/// Failure timeouts a node outside the ring keeps a seat of a group it does not hear
/// (see `Node::retire_if_left_behind`).
const LEFT_BEHIND_FAILURE_TIMEOUTS: u64 = 5;

/// Self-addressed messages handled within one input; a bound against a logic loop.
const LOCAL_DELIVERIES_MAX: usize = 1 << 16;

/// Timers fired by one `handle_timeout` call; a bound against a timer that re-arms
/// itself in the past.
const TIMERS_PER_CALL_MAX: usize = 64;

/// How often a node without heartbeats sends the hints it holds again: as often as a
/// heartbeat would at most.
const HINTS_RESEND_NS: Time = crate::config::HEARTBEAT_INTERVAL_MAX_NS;

/// One ringkv node. See the crate documentation for the driver loop.
#[derive(Debug)]
pub struct Node {
    shared: Shared,
    out: Out,
    requests: Requests,
    /// Present on the seats of the coordinator group (one of them leads).
    coordination: Option<Coordination>,
    membership: Membership,
    handover: Handover,
    replication: Replication,
    failure: FailureDetector,
    /// How late the timer being handled fired: a timer far behind its deadline shows
    /// that the process was stopped (a pause) or starved.
    timer_late: Time,
    /// Durable: what the identity record was last persisted for (ring, view epoch,
    /// phase, the seat's directory epoch, how many members a refounded ring awaits).
    persisted: Option<(u64, u64, Phase, Option<u64>, usize)>,
    durable: bool,
    /// Since when this node, not a member, has run a seat without hearing from a
    /// majority of its group (see `retire_if_left_behind`).
    left_behind_since: Option<Time>,
}

impl Node {
    /// A node as configured. A bootstrap starts as the only member of a one-node ring; any
    /// other node starts idle and joins on a `Join` request.
    pub fn new(config: NodeConfig) -> Node {
        let me = match &config.process {
            Some(process) => NodeRef::of_process(&config.addr, process),
            None => NodeRef::new(&config.addr),
        };
        let is_bootstrap = config.bootstrap.is_none();
        let bootstrap: std::sync::Arc<str> =
            config.bootstrap.as_deref().unwrap_or(&config.addr).into();
        let recovering = is_bootstrap && config.recover && config.timing.heartbeat_interval_ns > 0;
        let mut store = match config.durable {
            true => Store::durable(),
            false => Store::new(),
        };
        let mut comeback = crate::disk::Comeback::default();
        let mut settings = config.cluster;
        // A disk that names the ring says more than the operator can: its own rule holds.
        comeback.ring_runs = recovering
            && config.ring_runs
            && config.recovered.as_ref().is_none_or(|r| r.meta.is_none());
        if let Some(recovered) = config.recovered {
            store.load(0, recovered.entries);
            comeback.leftovers = !store.is_empty();
            if let Some(meta) = recovered.meta {
                comeback.ring_id = meta.ring_id;
                comeback.members = meta
                    .members
                    .iter()
                    .map(|a| Id::of_addr(a))
                    .chain(meta.awaited.iter().copied())
                    .filter(|id| *id != me.id)
                    .collect();
                comeback.members_epoch = meta.epoch;
                comeback.newest_epoch = meta.epoch;
                comeback.partial = is_bootstrap && !meta.whole && !comeback.members.is_empty();
                comeback.record = (meta.whole && !is_bootstrap).then(|| crate::disk::RingRecord {
                    epoch: meta.epoch,
                    members: comeback.members.iter().copied().collect(),
                });
                if is_bootstrap {
                    // The ring's settings are the disk's, whatever the command line says.
                    settings = meta.settings;
                }
            }
        }
        let shared = Shared {
            me: me.clone(),
            coordinator: bootstrap.clone(),
            term: 0,
            coordinator_seen: 0,
            seats: Vec::new(),
            bootstrap,
            ring_id: 0,
            recovering,
            ring_seen: false,
            unsure: false,
            halted: None,
            left_epoch: 0,
            config: settings,
            limits: config.limits,
            timing: config.timing,
            phase: Phase::Idle,
            incarnation: 0,
            view: View::default(),
            fingers: Fingers::default(),
            store,
            gaining: None,
            forward_to: None,
            lease_until: 0,
            comeback,
            lease_lapsed_in: None,
            clock_epoch_ns: config.clock_epoch_ns,
        };
        let mut node = Node {
            out: Out::new(me, ChaCha8Rng::seed_from_u64(config.seed)),
            shared,
            requests: Requests::default(),
            coordination: None,
            membership: Membership::default(),
            handover: Handover::default(),
            replication: Replication::default(),
            failure: FailureDetector::default(),
            timer_late: 0,
            persisted: None,
            durable: config.durable,
            left_behind_since: None,
        };
        if is_bootstrap && !recovering {
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
        self.keep_lease();
        let result = match input {
            Input::Request { id, request } => {
                self.on_request(id, request);
                Ok(())
            }
            Input::Message(envelope) if self.shared.halted.is_some() => {
                let (kind, phase) = (envelope.msg.kind(), self.shared.phase);
                Err(Rejected::not_member(kind, &envelope.from, phase))
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
        self.keep_lease();
        for _ in 0..TIMERS_PER_CALL_MAX {
            let due = self.out.next_timeout().unwrap_or(now);
            let Some(timer) = self.out.pop_due(now) else {
                break;
            };
            self.timer_late = now.saturating_sub(due);
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

    /// Before each input: a leader that may grant leases holds one itself; a chain member
    /// whose lease ran out asks the leader for one.
    fn keep_lease(&mut self) {
        let (sh, out) = (&mut self.shared, &mut self.out);
        if let Some(c) = &self.coordination {
            let cb = &mut sh.comeback;
            if !cb.awaiting.is_empty() {
                let ring = c.ring();
                cb.awaiting.retain(|id| !ring.contains(*id));
                if out.now >= cb.awaiting_until {
                    cb.awaiting.clear();
                }
                if cb.awaiting.is_empty() {
                    cb.release_at = out.after(sh.timing.heartbeat_interval_ns);
                }
            }
            if !cb.holds(out.now) && c.is_leading() {
                cb.hold_writes = false;
            }
        }
        if sh.timing.lease_ns() == 0 || !sh.config.consistency.is_chain() || !sh.is_member() {
            return;
        }
        let now = out.now;
        if let Some(c) = &self.coordination {
            if c.may_grant_leases(sh, now) {
                return sh.renew_lease(now, now);
            }
        }
        if now >= sh.lease_until && *sh.coordinator != *sh.me.addr {
            self.failure.ask_for_lease(sh, out);
        }
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

    /// Whether this node leads the coordinator group (the configuration master).
    pub fn is_bootstrap(&self) -> bool {
        self.coordination.as_ref().is_some_and(|c| c.is_leading())
    }

    /// The term this node leads, if it leads the coordinator group.
    pub fn leader_term(&self) -> Option<u64> {
        let c = self.coordination.as_ref().filter(|c| c.is_leading())?;
        Some(c.dir().term)
    }

    /// Whether this node holds a seat of the coordinator group.
    pub fn is_seated(&self) -> bool {
        self.coordination.is_some()
    }

    /// The coordinator group's directory, on a seat.
    pub fn directory(&self) -> Option<&Directory> {
        self.coordination.as_ref().map(|c| c.dir())
    }

    /// The coordinator seat's state, for debugging a simulation.
    #[doc(hidden)]
    pub fn debug_coordination(&self) -> String {
        format!("{:?}", self.coordination)
    }

    /// Why this node stopped taking part (a bootstrap started with settings other than
    /// its ring's), if it did. A driver reports it and stops the node.
    pub fn halted(&self) -> Option<&str> {
        self.shared.halted.as_deref()
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

    /// The ring membership as the configuration master knows it (`None` on nodes that do
    /// not lead the coordinator group).
    pub fn ring(&self) -> Option<&crate::Ring> {
        self.coordination
            .as_ref()
            .filter(|c| c.is_leading())
            .map(|c| c.ring())
    }

    /// Whether this node's seat has no membership change in progress or queued (always
    /// true on nodes without a seat).
    pub fn membership_idle(&self) -> bool {
        self.coordination.as_ref().is_none_or(|c| c.is_idle())
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
        // Counted from the ids the store keeps, not by hashing every key: an operator's
        // or a token-aware client's look at a node holding millions of keys must not
        // stall it for as many SHA-1s.
        let primary = sh.store.live_in(sh.primary_range());
        let mut fingers = sh.fingers.nodes.clone();
        fingers.dedup();
        NodeStatus {
            id: sh.me.id,
            addr: sh.addr(),
            phase: sh.phase,
            bootstrap: self.is_bootstrap(),
            coordinator: sh.coordinator.to_string(),
            term: sh.term,
            halted: sh.halted.clone(),
            epoch: sh.view.epoch,
            ring_size: sh.view.ring_size,
            predecessor: sh.view.preds.first().cloned(),
            successor: sh.view.succs.first().cloned(),
            fingers,
            suspects: self.failure.suspects().collect(),
            hints: self.handover.hints_len(),
            k: sh.config.k,
            consistency: sh.config.consistency,
            routing: sh.config.routing,
            vnodes: sh.config.vnodes,
            process: sh.me.process().to_string(),
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
        if let Some(reason) = &self.shared.halted {
            let reason = reason.clone();
            return self
                .out
                .reply(id, Err(RequestError::JoinRefused { reason }));
        }
        match request {
            Request::Join => return self.client_join(id),
            Request::Depart => return self.client_depart(id),
            _ if !self.shared.is_member() => {
                return self.out.reply(id, Err(RequestError::NotJoined))
            }
            _ => {}
        }
        let data_path = matches!(
            request,
            Request::Insert { .. } | Request::Delete { .. } | Request::Query { .. }
        );
        if data_path && self.cut_off() {
            // Whatever it forwarded would wait out its timeout behind the cut; refused
            // now, before anything is sent, the client may retry through another node.
            let node = self.shared.addr();
            return self.out.reply(id, Err(RequestError::LeaseExpired { node }));
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
            redriven: false,
        };
        let data = match request {
            Request::Insert { key, value } => {
                Some(routed(key, Action::Write { value: Some(value) }))
            }
            Request::Delete { key } => Some(routed(key, Action::Write { value: None })),
            Request::Query { key } => Some(routed(key, Action::Read)),
            other => {
                self.on_other_request(origin, other);
                None
            }
        };
        if let Some(routed) = data {
            if self.shared.timing.heartbeat_interval_ns > 0 {
                let now = self.out.now;
                self.requests.wait_for_routed(id, deadline, &routed, now);
            }
            self.route(routed);
        }
    }

    /// Whether this chain member is cut off from the coordinator group: no lease, and no
    /// word from the leader for a whole failure timeout (the ring has removed it, or will
    /// before it could serve). A leader is never cut off from itself.
    fn cut_off(&self) -> bool {
        let sh = &self.shared;
        let now = self.out.now;
        sh.timing.lease_ns() > 0
            && sh.config.consistency.is_chain()
            && *sh.coordinator != *sh.me.addr
            && self.coordination.as_ref().is_none_or(|c| !c.is_leading())
            && !sh.holds_lease(now)
            && now.saturating_sub(sh.coordinator_seen) > sh.timing.failure_timeout_ns
    }

    /// Re-drive the reads and writes whose answer has not come within a heartbeat
    /// interval, on the current view: a route or chain through a member that failed
    /// ends at it, and the ring has removed it (or routes round it) by now. Writes are
    /// deduplicated by request id at the key's replicas, so a write that did take effect
    /// is acknowledged again rather than applied twice.
    fn redrive(&mut self) {
        let interval = self.shared.timing.heartbeat_interval_ns;
        if interval == 0 || !self.shared.is_member() {
            return;
        }
        for routed in self.requests.due_again(self.out.now, interval) {
            self.route(Routed {
                redriven: true,
                ..routed
            });
        }
    }

    /// A request that is not a read or a write of one key.
    fn on_other_request(&mut self, origin: crate::message::Origin, request: Request) {
        let (sh, out) = (&mut self.shared, &mut self.out);
        match request {
            Request::Insert { .. } | Request::Delete { .. } | Request::Query { .. } => {}
            Request::QueryAll => routing::on_collect(sh, out, origin, Vec::new(), 0),
            Request::Overlay => {
                let walk = Message::OverlayWalk {
                    origin,
                    nodes: Vec::new(),
                };
                // The walk starts at the coordinator (at first the bootstrap); one that is
                // handing over after leaving the ring would break it.
                let to = match self.coordination.as_ref().is_some_and(|_| !sh.is_member()) {
                    true => sh.me.addr.clone(),
                    false => sh.coordinator.clone(),
                };
                out.send_addr(&to, walk);
            }
            Request::Join | Request::Depart => {}
        }
    }

    fn client_join(&mut self, id: ReqId) {
        if self.shared.phase != Phase::Idle {
            return self.out.reply(id, Err(RequestError::AlreadyJoined));
        }
        if self.shared.recovering {
            // Answered once the bootstrap has found its ring and joined it, or founded one.
            let deadline = self.out.after(self.shared.timing.request_timeout_ns);
            self.requests.wait_for(id, deadline);
            return self.membership.wait_recovery(id);
        }
        let alone = self
            .coordination
            .as_ref()
            .is_some_and(|c| c.ring().len() <= 1 && c.is_leading());
        if alone {
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
        let can_hand_over = self.shared.timing.heartbeat_interval_ns > 0;
        if let Some(c) = self.coordination.as_mut().filter(|c| c.is_leading()) {
            if self.shared.comeback.holds(self.out.now) {
                // Only this leader knows which members the ring still waits for (their
                // disks hold the only copies of some keys): a leader after it would
                // grant leases at once, and their keys would be served without them.
                return self.out.reply(id, Err(RequestError::RingRecovering));
            }
            let others = c.ring().len().saturating_sub(1);
            if others > 0 && !can_hand_over {
                let err = RequestError::BootstrapCannotDepart { others };
                return self.out.reply(id, Err(err));
            }
            if others == 0 {
                c.forget(&self.shared.me);
                self.membership.leave(&mut self.shared, &mut self.handover);
                let node = self.shared.addr();
                return self.out.reply(id, Ok(Response::Departed { node }));
            }
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
                let (origin, key, hops) = (routed.origin, routed.key, routed.hops);
                self.replication.read_here(sh, out, origin, key, hops)
            }
            Decision::TailHere => {
                if let Some(origin) = routed.origin {
                    replication::tail_read(sh, out, origin, &routed.key, routed.hops);
                }
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
        if self.shared.recovering {
            return self.while_recovering(envelope);
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
            Message::Refused { reason, term } => m.on_refused(sh, ho, out, &from, reason, term),
            Message::Prepare(prepare) => m.on_prepare(sh, ho, out, &from, prepare),
            Message::Fetch { epoch, range, have } => {
                ho.on_fetch(sh, out, from, epoch, range, &have)
            }
            Message::Snapshot {
                epoch,
                chunk,
                chunks,
                entries,
            } => self.on_snapshot(&from, epoch, chunk, chunks, entries),
            Message::Commit {
                epoch,
                failed,
                term,
                hold_leases,
                seats,
            } => {
                let commit = crate::membership::CommitOrder {
                    epoch,
                    failed: &failed,
                    term,
                    hold_leases,
                    seats,
                };
                m.on_commit(sh, ho, out, &from, commit)
            }
            Message::Fingers {
                epoch,
                term,
                updates,
            } => m.on_fingers(sh, out, &from, epoch, term, updates),
            Message::ChangeDone { term, .. } => m.on_change_done(sh, out, &from, term),
            Message::Removed { term, .. } => m.on_removed(sh, ho, out, &from, term),
            Message::Abort { epoch, term } => m.on_abort(sh, ho, out, &from, epoch, term),
            Message::Unreachable { term, nodes, .. } => {
                if !sh.follow(&from, term, out.now) {
                    return Err(Rejected::not_coordinator("unreachable", &from));
                }
                ho.give_up_on(sh, out, &nodes);
                Ok(())
            }
            Message::Leader {
                term,
                leader,
                seats,
                ring_id,
                config_id,
                lease_from,
            } => {
                let unseated = !seats.iter().any(|s| s.id == sh.me.id);
                // A seat of an older configuration that never learned it was replaced;
                // or a leader cut off from its group, told of a later term by a member
                // (whose pointer names no configuration): its group elected another
                // and went on without it.
                let newer = term > sh.term && !seats.is_empty();
                let stale = self.coordination.as_ref().is_some_and(|c| {
                    unseated
                        && (c.config_id() < config_id || (newer && !c.hears_majority(sh, out.now)))
                });
                if stale {
                    self.coordination = None;
                }
                m.on_leader(sh, out, &from, term, leader, seats, ring_id, lease_from);
                Ok(())
            }
            Message::Hello(info) => {
                // A member greets its bootstrap address with the group it follows. A seat
                // of an older configuration that never learned it was replaced (its own
                // seats left meanwhile, so nobody tells it) gives up its seat when the
                // greeting names a later term, without it, and it hears from no majority
                // of its own group (a bootstrap whose process departed kept pinging the
                // departed seats of its old group for ever, seed 915 of eventual
                // campaigns with virtual nodes).
                let unseated =
                    !info.seats.is_empty() && !info.seats.iter().any(|s| s.id == sh.me.id);
                let stale = self.coordination.as_ref().is_some_and(|c| {
                    unseated && info.term > c.dir().term && !c.hears_majority(sh, out.now)
                });
                if stale {
                    self.coordination = None;
                }
                Ok(())
            }
            Message::Rejoin { .. }
                if self.coordination.as_ref().is_some_and(|c| {
                    c.seat_nodes()
                        .iter()
                        .any(|s| s.id != from.id && s.id != sh.me.id)
                }) =>
            {
                // This node holds a seat of a group with other seats besides the
                // bootstrap's: the group leads on without it, so nobody rejoins.
                Err(Rejected::not_coordinator("rejoin", &from))
            }
            Message::Rejoin { ring_id, nonce } => m.on_rejoin(sh, ho, out, &from, ring_id, nonce),
            Message::Consensus(consensus) => {
                let outcome = match &mut self.coordination {
                    Some(c) => c.on_consensus(sh, out, &from, *consensus),
                    None => {
                        // A seat of a configuration that ended without it learning so, and
                        // whose other seats departed or restarted, hears from no seat of a
                        // newer one (seed 11251 of chain partitions: it kept its seat for
                        // good). A member tells it whom it follows; a later term whose
                        // seats leave it out, with no majority of its own group heard,
                        // makes it give its seat up (the `Leader` arm above).
                        let follows = sh.is_member() && sh.term > 0 && !sh.seats.is_empty();
                        if follows && sh.coordinator != from.addr {
                            Membership::point_at_leader(sh, out, &from);
                        }
                        return Err(Rejected::not_coordinator("consensus", &from));
                    }
                };
                self.after_coordination(outcome);
                Ok(())
            }
            Message::GroupJoin(dir) => {
                self.on_group_join(&from, *dir);
                Ok(())
            }
            Message::GroupLog {
                config_id,
                log_len,
                decided,
            } => {
                let outcome = match &mut self.coordination {
                    Some(c) => c.on_leader_log(sh, out, &from, config_id, log_len, decided),
                    None => return Err(Rejected::not_coordinator("group_log", &from)),
                };
                self.after_coordination(outcome);
                Ok(())
            }
            Message::GroupQuiet {
                config_id,
                pid,
                quiet,
            } => {
                if let Some(c) = &mut self.coordination {
                    c.on_quiet(&from, config_id, pid, quiet, out.now);
                }
                Ok(())
            }
            Message::GroupJoinAck { config_id } => {
                let outcome = match &mut self.coordination {
                    Some(c) => c.on_group_join_ack(&from, config_id),
                    None => Outcome::Stay,
                };
                self.after_coordination(outcome);
                Ok(())
            }
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
                self.replication.on_chain_write(sh, ho, out, &from, step);
                Ok(())
            }
            msg @ (Message::CraqClean { .. } | Message::VersionQuery { .. }) => {
                self.replication.on_craq(sh, out, &from, msg);
                Ok(())
            }
            Message::Replicate {
                entries,
                ttl,
                seq,
                epoch,
            } => self
                .replication
                .on_replicate(sh, ho, out, from, entries, (ttl, seq, epoch)),
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
                writer,
            } => {
                if let Some(w) = &writer {
                    self.replication
                        .note_forwarded(sh, out.now, entry.version, w);
                }
                ho.on_forward(sh, out, &from, epoch, seq, &key, entry, ttl);
                Ok(())
            }
            Message::ForwardAck { epoch, seq, held } => {
                ho.on_forward_ack(sh, out, &from, (epoch, seq), held);
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
            Message::Heartbeat {
                preparing, sent, ..
            } => match &mut self.coordination {
                Some(c) => {
                    c.on_heartbeat(sh, out, &from, preparing, sent);
                    Ok(())
                }
                // A member points a node cut off while the lead moved at the leader it
                // follows. So does a node that departed, asked by one that still counts
                // it a neighbour: one removed while cut off, whose every neighbour left
                // meanwhile, so nobody in the ring hears it to tell it of its removal
                // (eventual, 4 nodes, seeds 2802 and 2143 of the partition campaign: it
                // went on answering reads with its older copies); the leader that let
                // this node go is newer news than its own.
                None if sh.term > 0 && (sh.is_member() || departed_elsewhere(sh)) => {
                    Membership::point_at_leader(sh, out, &from);
                    Ok(())
                }
                None => Err(Rejected::not_coordinator("heartbeat", &from)),
            },
            Message::Ping => {
                out.send(&from, Message::Pong);
                Ok(())
            }
            Message::Pong => Ok(()),
            Message::HintAck { key, version } => {
                self.handover.on_hint_ack(&key, version);
                Ok(())
            }
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
        if let Some(c) = &mut self.coordination {
            c.heard_from(from, self.out.now);
        }
    }

    /// Membership requests and change progress: for the coordinator. A member passes a
    /// join request on to it; anything else is misdirected.
    fn on_coordination(&mut self, from: NodeRef, msg: Message) -> Result<(), Rejected> {
        match &mut self.coordination {
            Some(c) => {
                let outcome = c.on_message(&self.shared, &mut self.out, from, msg)?;
                self.after_coordination(outcome);
                Ok(())
            }
            None if matches!(msg, Message::JoinRequest { .. }) => {
                let to = self.shared.coordinator.clone();
                match msg.join_forwarded() {
                    Some(msg) if *to != *self.shared.me.addr => self.out.send_addr(&to, msg),
                    _ => {}
                }
                Ok(())
            }
            None => Err(Rejected::not_coordinator(msg.kind(), &from)),
        }
    }

    /// A node that is no longer a member (it departed, or was removed) holds no seat of
    /// any later configuration: the ring seats members only. If it still runs a seat of
    /// an older one whose other seats it has not heard from (as a majority) for
    /// [`LEFT_BEHIND_FAILURE_TIMEOUTS`] failure timeouts, that configuration ended without
    /// it learning so, and its other seats may have left too, so nobody will tell it: it
    /// gives the seat up. (Departed nodes of a simulated ring, which stay up, kept
    /// sending consensus messages to one another for good: seed 89 of eventual sweeps
    /// with virtual nodes, where every departure of a process is several.)
    fn retire_if_left_behind(&mut self) {
        let now = self.out.now;
        let sh = &self.shared;
        let left_behind = sh.phase == Phase::Idle
            && !sh.recovering
            && self
                .coordination
                .as_ref()
                .is_some_and(|c| !c.hears_majority(sh, now));
        if !left_behind {
            self.left_behind_since = None;
            return;
        }
        let since = *self.left_behind_since.get_or_insert(now);
        let grace = LEFT_BEHIND_FAILURE_TIMEOUTS.saturating_mul(sh.timing.failure_timeout_ns);
        if now.saturating_sub(since) > grace {
            self.coordination = None;
            self.left_behind_since = None;
        }
    }

    /// Drop the seat the coordination gave up.
    fn after_coordination(&mut self, outcome: Outcome) {
        if outcome == Outcome::Retire {
            self.coordination = None;
        }
    }

    /// A seat of the group's previous configuration sent this node the directory it
    /// starts its new seat from.
    fn on_group_join(&mut self, from: &NodeRef, dir: Directory) {
        let (sh, out) = (&mut self.shared, &mut self.out);
        let seated = dir
            .seats
            .iter()
            .any(|s| s.node.id == sh.me.id && s.incarnation == sh.incarnation);
        let newer = self
            .coordination
            .as_ref()
            .is_none_or(|c| c.config_id() < dir.config_id);
        let config_id = dir.config_id;
        if seated && newer && sh.is_member() {
            sh.ring_id = dir.ring_id;
            // The seats it names in its hellos: a restarted bootstrap that heard only the
            // seats of the commit that let this node in (itself alone) would think it
            // had led alone and tell this seat to rejoin, while the group goes on.
            if dir.seats.len() <= crate::coordinator::SEATS_MAX {
                sh.seats = dir.seat_nodes();
            }
            self.coordination = Some(Coordination::seated(sh, out, dir, false));
        }
        if seated {
            out.send(from, Message::GroupJoinAck { config_id });
        }
    }

    /// A restarted bootstrap takes only the news of the ring it belongs to: a member's
    /// `Hello`. With other settings than it was started with, it stops and says why.
    fn while_recovering(&mut self, envelope: Envelope) -> Result<(), Rejected> {
        let Envelope { from, msg } = envelope;
        let Message::Hello(info) = msg else {
            if let Message::JoinRequest { ring, .. } = &msg {
                // A member it knew asks to join: that member restarted too.
                let me = self.shared.me.id;
                let cb = &mut self.shared.comeback;
                cb.asked_to_join(me, from.id, ring.as_ref());
            }
            return Err(Rejected::not_member(msg.kind(), &from, self.shared.phase));
        };
        let sh = &mut self.shared;
        if info.settings != sh.config {
            let reason = format!(
                "this bootstrap was started with k = {}, {} replication and {} routing, but \
                 the ring it belongs to (reached through {}) has k = {}, {} and {}: start it \
                 with the ring's settings, or give it another address for a new ring",
                sh.config.k,
                sh.config.consistency,
                sh.config.routing,
                from.addr,
                info.settings.k,
                info.settings.consistency,
                info.settings.routing
            );
            sh.halted = Some(reason.clone());
            sh.recovering = false;
            self.out.cancel_timer(Timer::Recover);
            self.membership.refuse_recovery(sh, &mut self.out, reason);
            return Ok(());
        }
        // A member that has not heard of the group's seats yet (it joined just before the
        // crash) proves nothing by itself; one that has proves it for every member that
        // follows the same term.
        let cb = &mut sh.comeback;
        let named_me = info.coordinator.id == sh.me.id;
        let proves_sole = !info.seats.is_empty() && info.seats.iter().all(|s| s.id == sh.me.id);
        if named_me && proves_sole {
            cb.sole_seat_term = Some(info.term);
        }
        let sole_seat =
            proves_sole || (info.seats.is_empty() && cb.sole_seat_term == Some(info.term));
        if named_me && sole_seat {
            // The member follows this node's previous incarnation, which was the group's
            // only seat: nobody leads its ring now. It rejoins keeping its entries, as a
            // member back from its disk, and counts among those that restarted; the
            // ring is founded again (same id) once most have, with no lease until they
            // are all back.
            if cb.ring_id != 0 && info.ring_id != 0 && cb.ring_id != info.ring_id {
                return Err(Rejected::not_member("hello", &from, sh.phase));
            }
            if info.ring_id != 0 {
                cb.ring_id = info.ring_id;
            }
            cb.members.insert(from.id);
            cb.restarted.insert(from.id);
            if cb.rejoin_nonce == 0 {
                cb.rejoin_nonce = self.out.rng.gen::<u64>().max(1);
            }
            let rejoin = Message::Rejoin {
                ring_id: info.ring_id,
                nonce: cb.rejoin_nonce,
            };
            self.out.send(&from, rejoin);
            return Ok(());
        }
        // A ring exists: never found another one now.
        sh.ring_seen = true;
        self.out.cancel_timer(Timer::Recover);
        if info.coordinator.id == sh.me.id {
            // The member still follows this node's previous incarnation; it will find the
            // group's new leader among the other seats and say so in a later hello.
            return Ok(());
        }
        sh.recovering = false;
        sh.coordinator = info.coordinator.addr.clone();
        sh.term = info.term;
        sh.ring_id = info.ring_id;
        self.membership.rejoin(sh, &mut self.out);
        Ok(())
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
        if let Some((entries, repair)) = fetched {
            let (sh, out) = (&mut self.shared, &mut self.out);
            self.membership
                .take_fetched(sh, &mut self.handover, out, epoch, entries);
            // A repair fetch, for the view installed (see `Membership::on_commit`), ends
            // doubt, and the fetches asked of this node meanwhile are answered; a fetch for
            // a view being prepared does not end it.
            if repair {
                sh.unsure = false;
                self.handover.answer_deferred(sh, out);
            } else {
                self.membership.mark_ready(sh, out);
            }
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
                self.membership.on_tick(sh, &mut self.handover, out);
                if sh.is_member() {
                    let cut_off = self
                        .coordination
                        .as_ref()
                        .is_some_and(|c| c.leads_cut_off(sh, out.now));
                    self.failure.on_tick(sh, out, cut_off);
                }
                self.handover.send_hints(sh, out);
                self.handover.resend_given_up(out);
                self.redrive();
            }
            Timer::FailureCheck => {
                let outcome = self
                    .coordination
                    .as_mut()
                    .map(|c| c.check_failures(sh, out));
                self.after_coordination(outcome.unwrap_or(Outcome::Stay));
            }
            Timer::Membership => {
                let outcome = self.coordination.as_mut().map(|c| c.on_deadline(sh, out));
                self.after_coordination(outcome.unwrap_or(Outcome::Stay));
            }
            Timer::Group => {
                let outcome = self.coordination.as_mut().map(|c| c.on_tick(sh, out));
                self.after_coordination(outcome.unwrap_or(Outcome::Stay));
                self.retire_if_left_behind();
            }
            Timer::Recover => {
                // Fired late, the wait shows nothing: this process was stopped, and what
                // members sent meanwhile is still to be read. Wait again.
                let late = self.timer_late > self.shared.timing.heartbeat_interval_ns;
                let may_refound = self.shared.comeback.may_refound();
                if self.shared.recovering && !late && may_refound {
                    // No member told this bootstrap of a ring, and (back from its disk)
                    // most members it knew have restarted too: found it (again).
                    self.shared.recovering = false;
                    self.found_ring();
                    self.membership.founded(&self.shared, &mut self.out);
                }
            }
            Timer::AntiEntropy => anti_entropy::on_tick(sh, out),
            Timer::Replicate => self.replication.resend(&mut self.handover, out),
            Timer::ReplicateAcks => self.replication.flush_acks(out),
            Timer::CraqWait => self.replication.craq_wait(sh, out),
            Timer::Hints => self.handover.send_hints(sh, out),
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
        self.check_ring_of_disk();
        if self.durable && self.shared.halted.is_none() {
            self.persist(out);
        }
        self.out.drain_into(out);
    }

    /// A node back from its disk that was pointed at another ring stops before the
    /// join touches its data.
    fn check_ring_of_disk(&mut self) {
        let sh = &mut self.shared;
        let cb = &sh.comeback;
        let other_ring = cb.ring_id != 0 && sh.ring_id != 0 && sh.ring_id != cb.ring_id;
        if cb.leftovers && other_ring && sh.halted.is_none() {
            sh.halted = Some(format!(
                "the data directory holds data of ring {:016x}, but this node was \
                     pointed at ring {:016x}: point it at a member of its own ring, or start \
                     it with an empty data directory to join this one",
                cb.ring_id, sh.ring_id
            ));
        }
    }

    /// Hand the driver what changed on disk, ahead of the outputs that depend on it.
    fn persist(&mut self, out: &mut Vec<Output>) {
        let sh = &mut self.shared;
        let seat_epoch = self.coordination.as_ref().map(|c| c.dir().epoch);
        let awaited = &sh.comeback.awaiting;
        let key = (
            sh.ring_id,
            sh.view.epoch,
            sh.phase,
            seat_epoch,
            awaited.len(),
        );
        // The record is of the node as a member: one that left (departed, or removed)
        // or is back from its disk keeps the record of its last membership until it is
        // a member again. A crash meanwhile must find it still: a departed bootstrap
        // whose record named no member would found its ring again alone, restarted
        // while cut off from a ring that runs on (seed 8889 of the chain campaign with
        // 4 s partitions and disks). A bootstrap that founded the ring again writes the
        // members it still waits for into its record (and not the members that left
        // since: a restart would wait for them in vain).
        let settled = sh.ring_id != 0 && !sh.comeback.leftovers && sh.is_member();
        let meta = (settled && self.persisted != Some(key)).then(|| {
            self.persisted = Some(key);
            // A seat knows the whole ring: a restarted bootstrap that knew only its
            // neighbours learns from it which members to wait for.
            let members: Vec<String> = match self.coordination.as_ref() {
                Some(c) => c
                    .ring()
                    .iter()
                    .filter(|n| n.id != sh.me.id)
                    .map(|n| n.addr.to_string())
                    .collect(),
                None => sh
                    .view
                    .preds
                    .iter()
                    .chain(&sh.view.succs)
                    .map(|n| n.addr.to_string())
                    .collect(),
            };
            crate::disk::DiskMeta {
                addr: sh.me.addr.to_string(),
                ring_id: sh.ring_id,
                settings: sh.config,
                members,
                epoch: sh.view.epoch,
                whole: self.coordination.is_some(),
                awaited: awaited.iter().copied().collect(),
            }
        });
        let store = sh.store.take_journal();
        if store.is_some() || meta.is_some() {
            out.push(Output::Persist(crate::disk::Persist {
                store: store.unwrap_or_default(),
                meta,
            }));
        }
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
        // A node that left with hints still to deliver (removed while it departed) sends
        // them again every heartbeat until acknowledged: the first sends may have been
        // lost (4 nodes, eventual, seed 2954 of one-way partitions: removed while its
        // outgoing messages were lost, it never sent its hints again, and writes only it
        // held were gone).
        let hinting = self.handover.hints_len() > 0;
        if heartbeat > 0 && (member || sh.phase == Phase::Joining || hinting) {
            out.arm(Timer::Heartbeat, out.after(heartbeat));
        }
        if heartbeat == 0 && hinting {
            // Without heartbeats (failure handling off) hints went once, when the node
            // left or its range shrank: one lost or refused then (a lookup ended while
            // views changed under it) stayed here for good.
            out.arm(Timer::Hints, out.after(HINTS_RESEND_NS));
        }
        let leading = self.coordination.as_ref().is_some_and(|c| c.is_leading());
        if heartbeat > 0 && leading && member {
            // Four times a heartbeat interval: a member found silent waits at most a
            // quarter of an interval for its removal to start, not a whole one.
            out.arm(Timer::FailureCheck, out.after((heartbeat / 4).max(1)));
        }
        if sh.recovering && !sh.ring_seen {
            // Members tell their bootstrap address of their ring every heartbeat.
            out.arm(Timer::Recover, out.after(RECOVERY_HEARTBEATS * heartbeat));
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
        debug_assert!(
            sh.is_member()
                || sh.store.is_empty()
                || sh.phase == Phase::Joining
                || sh.comeback.leftovers
        );
        debug_assert_eq!(
            self.out.timer(Timer::Requests),
            self.requests.next_deadline()
        );
    }

    /// Start as the single member, and the only coordinator seat, of a new ring.
    fn found_ring(&mut self) {
        let (sh, out) = (&mut self.shared, &mut self.out);
        sh.incarnation = out.now ^ out.rng.gen::<u64>();
        sh.ring_id = out.rng.gen();
        let cb = &mut sh.comeback;
        if cb.ring_id != 0 {
            // Back from its disk, or told of its ring by members it led alone: the same
            // ring again.
            sh.ring_id = std::mem::take(&mut cb.ring_id);
        }
        // No lease until the members it knew (back from its disk: the whole ring of the
        // newest record it has seen), and those that restarted with it or that it told
        // to rejoin, are back: they hold the other copies (for a bootstrap without a
        // disk, the only ones). Awaiting only those that asked before it founded the ring
        // would let a member answer for a key whose every holder came back later.
        let restarted = std::mem::take(&mut cb.restarted);
        cb.awaiting = restarted
            .into_iter()
            .chain(cb.members.iter().copied())
            .collect();
        cb.hold_writes = !cb.awaiting.is_empty();
        cb.awaiting_until = out.after(AWAIT_FAILURE_TIMEOUTS * sh.timing.failure_timeout_ns);
        cb.leftovers = false;
        sh.coordinator = sh.me.addr.clone();
        sh.seats = vec![sh.me.clone()];
        let after = sh.comeback.newest_epoch >> 32;
        let coordination = Coordination::found(sh, out, sh.ring_id, after);
        sh.term = coordination.dir().term;
        sh.view = View {
            epoch: 0,
            ring_size: 1,
            preds: Vec::new(),
            succs: Vec::new(),
        };
        sh.fingers.alone(&sh.me.clone());
        sh.phase = Phase::Active;
        sh.forward_to = None;
        self.coordination = Some(coordination);
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

/// Whether this node departed from a ring whose leader is another node.
fn departed_elsewhere(sh: &Shared) -> bool {
    sh.left_epoch != 0 && *sh.coordinator != *sh.me.addr
}
