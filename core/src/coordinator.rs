//! The bootstrap's role as configuration master: it serializes joins and departs and
//! drives each through prepare → ready → commit → ack.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::api::RequestError;
use crate::message::{Message, NodeRef, View};
use crate::node::{Node, Rejected};
use crate::ring::Ring;
use crate::store::Range;
use crate::{Output, Timer};

/// A membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Join(NodeRef),
    Depart(NodeRef),
    /// A member declared failed (silent past the failure timeout) or that restarted.
    Remove(NodeRef),
}

impl Change {
    fn node(&self) -> &NodeRef {
        match self {
            Change::Join(n) | Change::Depart(n) | Change::Remove(n) => n,
        }
    }
}

/// Attempts at one change before it is given up (each attempt ends by its deadline).
const ATTEMPTS_MAX: u32 = 3;

/// Times a commit is re-sent to nodes that have not acknowledged it.
const COMMIT_RETRIES_MAX: u32 = 15;

/// Times prepares are re-sent to nodes not ready before an attempt is abandoned.
const PREPARE_RETRIES_MAX: u32 = 5;

/// Retransmissions per membership timeout: a lost prepare, ready, commit or
/// acknowledgement costs a fifth of the timeout, not all of it (an attempt is still
/// abandoned after about the timeout plus one interval).
const RETRANSMITS_PER_TIMEOUT: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for `Ready` from every affected node.
    Preparing,
    /// Waiting for `Ack` from every affected node.
    Committing,
}

#[derive(Clone, Debug)]
struct InFlight {
    change: Change,
    attempt: u32,
    /// Members this change takes out without their help (failed or restarted).
    removed: Vec<NodeRef>,
    epoch: u64,
    affected: Vec<NodeRef>,
    waiting: BTreeSet<crate::Id>,
    stage: Stage,
    /// Times the commit was sent again to nodes that did not acknowledge it.
    commit_retries: u32,
    /// The commit waves, in order (see [`Plan::waves`]).
    waves: Vec<Vec<NodeRef>>,
    /// Waves still to commit once the current one has.
    later_waves: VecDeque<Vec<NodeRef>>,
    /// The prepare sent to each affected node, for retransmission.
    prepares: Vec<(NodeRef, Message)>,
    /// Times the prepares were sent again.
    prepare_retries: u32,
}

/// Authoritative membership and the change in progress.
#[derive(Clone, Debug, Default)]
pub(crate) struct Coordinator {
    pub(crate) ring: Ring,
    /// Last epoch handed out; every attempt gets a fresh one.
    epoch: u64,
    current: Option<InFlight>,
    queue: VecDeque<(Change, u32)>,
    /// When each member was last heard from.
    pub(crate) last_seen: BTreeMap<crate::Id, crate::Time>,
    /// The incarnation each node last asked to join with.
    incarnations: BTreeMap<crate::Id, u64>,
}

impl Coordinator {
    pub(crate) fn new() -> Coordinator {
        Coordinator::default()
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    /// Whether a join of `id` is queued or in progress.
    pub(crate) fn is_joining(&self, id: crate::Id) -> bool {
        let joining = |c: &Change| matches!(c, Change::Join(n) if n.id == id);
        self.current.as_ref().is_some_and(|op| joining(&op.change))
            || self.queue.iter().any(|(c, _)| joining(c))
    }

    fn is_known(&self, change: &Change) -> bool {
        self.current.as_ref().is_some_and(|c| c.change == *change)
            || self.queue.iter().any(|(c, _)| c == change)
    }
}

impl Node {
    pub(crate) fn on_coordination(
        &mut self,
        from: NodeRef,
        msg: Message,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        if self.coordinator.is_none() {
            // Members pass join requests on to the bootstrap; anything else is misdirected.
            if let Message::JoinRequest { .. } = msg {
                let bootstrap = self.bootstrap.clone();
                self.send_addr(&bootstrap, msg, out);
                return Ok(());
            }
            return Err(Rejected::NotBootstrap {
                kind: msg.kind(),
                from: from.addr.to_string(),
            });
        }
        match msg {
            Message::JoinRequest { node, incarnation } => self.request_join(node, incarnation, out),
            Message::DepartRequest { node } => {
                if node != from {
                    return Err(Rejected::NotBootstrap {
                        kind: "depart_request",
                        from: from.addr.to_string(),
                    });
                }
                self.request_change(Change::Depart(node), out)
            }
            Message::Ready { epoch } => self.on_progress(&from, epoch, Stage::Preparing, out),
            Message::Ack { epoch } => self.on_progress(&from, epoch, Stage::Committing, out),
            _ => {}
        }
        Ok(())
    }

    fn request_join(&mut self, node: NodeRef, incarnation: u64, out: &mut Vec<Output>) {
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let known = c.incarnations.insert(node.id, incarnation);
        if known == Some(incarnation) && c.ring.contains(node.id) {
            return; // a duplicate of a request already carried out
        }
        let restarted = known.is_some_and(|k| k != incarnation);
        let join = Change::Join(node.clone());
        let in_progress = c
            .current
            .as_ref()
            .filter(|op| restarted && op.change == join)
            .map(|op| (op.stage, op.epoch, op.affected.clone()));
        match in_progress {
            // The node restarted while its own join was being prepared: that attempt is
            // void (the new incarnation holds nothing it fetched); start afresh.
            Some((Stage::Preparing, epoch, affected)) => {
                c.current = None;
                for n in affected {
                    self.send(&n, Message::Abort { epoch }, out);
                }
            }
            // ... or committed: the ring now lists its old incarnation, which holds nothing.
            // Finish the change without waiting for it, then take it out and let the new
            // incarnation in.
            Some((Stage::Committing, epoch, _)) => {
                for change in [Change::Remove(node.clone()), join] {
                    if !c.queue.iter().any(|(q, _)| *q == change) {
                        c.queue.push_back((change, 0));
                    }
                }
                self.progress(node.id, epoch, Stage::Committing, out);
                return self.start_next_change(out);
            }
            None => {}
        }
        self.request_change(Change::Join(node), out);
    }

    fn request_change(&mut self, change: Change, out: &mut Vec<Output>) {
        let Some(c) = &mut self.coordinator else {
            return;
        };
        if c.is_known(&change) {
            return; // a duplicate request
        }
        let restarted = match &change {
            Change::Join(n) => c.ring.contains(n.id) && n.id != self.me.id,
            _ => false,
        };
        if restarted {
            // A member asking to join again has restarted and lost its state: take the old
            // incarnation out first, then let the new one in.
            let leaving = Change::Remove(change.node().clone());
            if !c.is_known(&leaving) {
                c.queue.push_back((leaving, 0));
            }
        } else if let Some(reason) = refusal(&c.ring, &self.me, &change) {
            let node = change.node().clone();
            return self.send(&node, Message::Refused { reason }, out);
        }
        if c.queue.len() >= self.limits.membership_queue_max {
            let pending = c.queue.len();
            let node = change.node().clone();
            let reason = RequestError::Overloaded { pending };
            return self.send(&node, Message::Refused { reason }, out);
        }
        c.queue.push_back((change, 0));
        if restarted {
            self.preempt_for_removals(out);
        }
        self.start_next_change(out);
    }

    /// Bootstrap: queue the removal of every member silent past the failure timeout.
    pub(crate) fn check_failures(&mut self, out: &mut Vec<Output>) {
        let (now, timeout, me) = (self.now, self.timing.failure_timeout_ns, self.me.id);
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let silent: Vec<NodeRef> = c
            .ring
            .iter()
            .filter(|n| n.id != me)
            .filter(|n| {
                let seen = *c.last_seen.entry(n.id).or_insert(now);
                now.saturating_sub(seen) > timeout
            })
            .cloned()
            .collect();
        for node in silent {
            let change = Change::Remove(node);
            if !c.is_known(&change) {
                c.queue.push_back((change, 0));
            }
        }
        self.preempt_for_removals(out);
        self.start_next_change(out);
    }

    /// Bootstrap: the change in progress missed its deadline. Abandon an unfinished
    /// prepare and retry it later (after any removals the failure detector queued); a
    /// commit is already in force, so a missing acknowledgement just ends the change.
    pub(crate) fn on_change_deadline(&mut self, out: &mut Vec<Output>) {
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let Some(mut op) = c.current.take() else {
            return;
        };

        match op.stage {
            Stage::Committing if op.commit_retries < COMMIT_RETRIES_MAX => {
                // A commit may have been lost: send it again to whoever has not acknowledged.
                op.commit_retries += 1;
                let epoch = op.epoch;
                let waiting: Vec<NodeRef> = op
                    .affected
                    .iter()
                    .filter(|n| op.waiting.contains(&n.id))
                    .cloned()
                    .collect();
                c.current = Some(op);
                let deadline = self.now.saturating_add(self.retransmit_interval());
                self.set_timer(Timer::Membership, deadline, out);
                for node in waiting {
                    self.send(&node, Message::Commit { epoch }, out);
                }
                return;
            }
            Stage::Committing if !op.later_waves.is_empty() => {
                // A wave did not all answer (they will be found silent and removed); the
                // change is in force, so commit the rest.
                let wave = op.later_waves.pop_front().unwrap_or_default();
                op.waiting = wave.iter().map(|n| n.id).collect();
                op.commit_retries = 0;
                let epoch = op.epoch;
                c.current = Some(op);
                let deadline = self.now.saturating_add(self.retransmit_interval());
                self.set_timer(Timer::Membership, deadline, out);
                for node in wave {
                    self.send(&node, Message::Commit { epoch }, out);
                }
                return;
            }
            Stage::Committing => {
                // In force even though some never acknowledged: tell the joiner (or the
                // node that departed).
                if let Change::Join(n) | Change::Depart(n) = &op.change {
                    let epoch = op.epoch;
                    let n = n.clone();
                    self.send(&n, Message::ChangeDone { epoch }, out);
                }
            }
            Stage::Preparing
                if op.prepare_retries < PREPARE_RETRIES_MAX
                    && !c
                        .silent(self.now, self.timing.failure_timeout_ns, self.me.id)
                        .iter()
                        .any(|n| op.waiting.contains(&n.id)) =>
            {
                // Something was lost: send the prepares again to whoever is not ready.
                op.prepare_retries += 1;
                let resend: Vec<(NodeRef, Message)> = op
                    .prepares
                    .iter()
                    .filter(|(n, _)| op.waiting.contains(&n.id))
                    .cloned()
                    .collect();
                c.current = Some(op);
                let deadline = self.now.saturating_add(self.retransmit_interval());
                self.set_timer(Timer::Membership, deadline, out);
                for (node, msg) in resend {
                    self.send(&node, msg, out);
                }
                return;
            }
            Stage::Preparing => {
                for node in op.affected.clone() {
                    self.send(&node, Message::Abort { epoch: op.epoch }, out);
                }
                let Some(c) = &mut self.coordinator else {
                    return;
                };
                if op.attempt + 1 < ATTEMPTS_MAX {
                    c.queue.push_back((op.change, op.attempt + 1));
                } else if !matches!(op.change, Change::Remove(_)) {
                    let node = op.change.node().clone();
                    let reason = RequestError::JoinRefused {
                        reason: format!(
                            "the ring could not complete the change in {ATTEMPTS_MAX} attempts; retry"
                        ),
                    };
                    self.send(&node, Message::Refused { reason }, out);
                }
            }
        }
        self.start_next_change(out);
    }

    /// Bootstrap: a member the change in progress waits for is about to be removed
    /// (found silent, or restarted). Waiting for its deadline would stall every key near
    /// it, so a prepare is abandoned at once and retried after the removal, and a commit
    /// stops waiting for it (a dead or restarted node serves nothing, so skipping its
    /// turn in the first wave is safe).
    fn preempt_for_removals(&mut self, out: &mut Vec<Output>) {
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let removing: BTreeSet<crate::Id> = c
            .queue
            .iter()
            .filter_map(|(q, _)| match q {
                Change::Remove(n) => Some(n.id),
                _ => None,
            })
            .collect();
        let Some(op) = &c.current else { return };
        let blocked: Vec<crate::Id> = op
            .waiting
            .iter()
            .filter(|id| removing.contains(id))
            .copied()
            .collect();
        if blocked.is_empty() {
            return;
        }
        let (epoch, stage) = (op.epoch, op.stage);
        match stage {
            Stage::Preparing => {
                let Some(op) = c.current.take() else { return };
                c.queue.push_front((op.change, op.attempt));
                for node in op.affected {
                    self.send(&node, Message::Abort { epoch }, out);
                }
                self.start_next_change(out);
            }
            Stage::Committing => {
                for id in blocked {
                    self.progress(id, epoch, stage, out);
                }
            }
        }
    }

    /// How long the bootstrap waits for answers before sending a change's messages again.
    fn retransmit_interval(&self) -> crate::Time {
        (self.timing.membership_timeout_ns / RETRANSMITS_PER_TIMEOUT).max(1)
    }

    fn start_next_change(&mut self, out: &mut Vec<Output>) {
        let list_len = self.config.neighbour_list_len();
        let config = self.config;
        let k = self.config.k;
        let Some(c) = &mut self.coordinator else {
            return;
        };
        if c.current.is_some() {
            return;
        }
        // Removals go first: until a failed or restarted member is out, every change
        // near it would wait for (or fetch from) a node that cannot answer.
        if let Some(i) = c
            .queue
            .iter()
            .position(|(q, _)| matches!(q, Change::Remove(_)))
        {
            if let Some(removal) = c.queue.remove(i) {
                c.queue.push_front(removal);
            }
        }
        let Some((change, attempt)) = c.queue.pop_front() else {
            if self.timers.remove(&Timer::Membership).is_some() {
                out.push(Output::CancelTimer {
                    timer: Timer::Membership,
                });
            }
            return;
        };
        if let Change::Join(n) = &change {
            if c.ring.contains(n.id) && n.id != self.me.id {
                // Its old incarnation is still listed (its removal was retried behind
                // it): remove that first.
                let leaving = Change::Remove(n.clone());
                let tried = c
                    .queue
                    .iter()
                    .find(|(q, _)| *q == leaving)
                    .map_or(0, |(_, a)| *a);
                c.queue.retain(|(q, _)| *q != leaving);
                c.queue.push_front((change, attempt));
                c.queue.push_front((leaving, tried));
                return self.start_next_change(out);
            }
        }
        if let Some(reason) = refusal(&c.ring, &self.me, &change) {
            // The ring changed while the request waited. A departure of a node no longer
            // listed is not answered: that node was removed as failed, and its address may
            // already be a new incarnation that is joining.
            let gone = matches!(&change, Change::Depart(n) if !c.ring.contains(n.id));
            if !matches!(change, Change::Remove(_)) && !gone {
                let node = change.node().clone();
                self.send(&node, Message::Refused { reason }, out);
            }
            return self.start_next_change(out);
        }
        c.epoch += 1;
        let epoch = c.epoch;
        // A removal takes every member known to be gone along: the silent ones and those
        // whose removal is queued (restarted nodes).
        let silent = match change {
            Change::Remove(_) => {
                let mut gone = c.silent(self.now, self.timing.failure_timeout_ns, self.me.id);
                gone.extend(c.queue.iter().filter_map(|(q, _)| match q {
                    Change::Remove(n) if c.ring.contains(n.id) => Some(n.clone()),
                    _ => None,
                }));
                gone
            }
            _ => Vec::new(),
        };
        let shape = Shape {
            list_len,
            k,
            epoch,
            config,
        };
        let Plan {
            removed,
            affected,
            prepares,
            waves,
        } = Plan::new(&mut c.ring, &change, &silent, shape);
        c.current = Some(InFlight {
            change,
            attempt,
            epoch,
            removed,
            waiting: affected.iter().map(|n| n.id).collect(),
            affected,
            stage: Stage::Preparing,
            commit_retries: 0,
            waves,
            later_waves: VecDeque::new(),
            prepares: prepares.clone(),
            prepare_retries: 0,
        });
        let deadline = self.now.saturating_add(self.retransmit_interval());
        self.set_timer(Timer::Membership, deadline, out);
        for (node, msg) in prepares {
            self.send(&node, msg, out);
        }
    }

    fn on_progress(&mut self, from: &NodeRef, epoch: u64, stage: Stage, out: &mut Vec<Output>) {
        self.progress(from.id, epoch, stage, out);
    }

    /// `id` has done its part of stage `stage` of change `epoch` (or will never do it).
    fn progress(&mut self, id: crate::Id, epoch: u64, stage: Stage, out: &mut Vec<Output>) {
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let Some(op) = &mut c.current else { return };
        if op.epoch != epoch || op.stage != stage {
            return; // a late duplicate
        }
        op.waiting.remove(&id);
        if !op.waiting.is_empty() {
            return;
        }
        match stage {
            Stage::Preparing => self.commit_change(out),
            Stage::Committing if !op.later_waves.is_empty() => {
                let wave = op.later_waves.pop_front().unwrap_or_default();
                op.waiting = wave.iter().map(|n| n.id).collect();
                for node in wave {
                    self.send(&node, Message::Commit { epoch }, out);
                }
            }
            Stage::Committing => {
                let done = c.current.take().map(|op| (op.change, op.epoch));
                if let Some((Change::Join(n) | Change::Depart(n), epoch)) = done {
                    self.send(&n, Message::ChangeDone { epoch }, out);
                }
                self.start_next_change(out);
            }
        }
    }

    fn commit_change(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let Some(op) = &mut c.current else { return };
        op.stage = Stage::Committing;
        // Wave by wave (see `Plan::waves`): a key's old tail stops serving, and its
        // hand-over forwards have all arrived, before its new tail starts.
        op.later_waves = op.waves.iter().filter(|w| !w.is_empty()).cloned().collect();
        let first_wave = op.later_waves.pop_front().unwrap_or_default();
        op.waiting = first_wave.iter().map(|n| n.id).collect();
        apply(&mut c.ring, &op.change, &op.removed);
        let epoch = op.epoch;
        // Every point whose successor changed: (interval start, interval end, new owner).
        let mut moved: Vec<(crate::Id, crate::Id, NodeRef)> = Vec::new();
        let mut gone: Vec<NodeRef> = op.removed.clone();
        match &op.change {
            Change::Join(n) => {
                c.last_seen.insert(n.id, now);
                if let Some(p) = c.ring.predecessor_before(n.id) {
                    moved.push((p.id, n.id, n.clone()));
                }
            }
            Change::Depart(n) => gone.push(n.clone()),
            Change::Remove(_) => {}
        }
        for n in &gone {
            c.last_seen.remove(&n.id);
            let pred = c.ring.predecessor_before(n.id);
            let succ = c.ring.successor_after(n.id);
            if let (Some(p), Some(s)) = (pred, succ) {
                moved.push((p.id, n.id, s.clone()));
            }
        }
        // Fingers that pointed into a moved interval now point at its new owner.
        let mut fingers: BTreeMap<crate::Id, Vec<(u8, NodeRef)>> = BTreeMap::new();
        let joiner = match &op.change {
            Change::Join(n) => vec![n.id],
            _ => Vec::new(),
        };
        for (from, to, owner) in moved {
            for (id, updates) in c.ring.finger_changes(from, to, &owner, &joiner) {
                fingers.entry(id).or_default().extend(updates);
            }
        }
        let targets: Vec<(NodeRef, Vec<(u8, NodeRef)>)> = fingers
            .into_iter()
            .filter_map(|(id, updates)| {
                let node = c.ring.successor(id).filter(|n| n.id == id).cloned()?;
                Some((node, updates))
            })
            .collect();
        let removed = op.removed.clone();
        for node in &first_wave {
            self.send(node, Message::Commit { epoch }, out);
        }
        for (node, updates) in targets {
            self.send(&node, Message::Fingers { epoch, updates }, out);
        }
        for node in removed {
            // If it is alive after all, it learns it is out and joins afresh.
            self.send(&node, Message::Removed { epoch }, out);
        }
    }
}

/// The parameters every prepared view shares.
#[derive(Clone, Copy)]
struct Shape {
    list_len: usize,
    k: usize,
    epoch: u64,
    config: crate::ClusterConfig,
}

/// What one change does to the ring: who is affected and what each is told to prepare.
struct Plan {
    /// Members taken out without their help.
    removed: Vec<NodeRef>,
    /// Nodes whose neighbour lists change (they prepare and commit).
    affected: Vec<NodeRef>,
    /// The `Prepare` for each affected node.
    prepares: Vec<(NodeRef, Message)>,
    /// The order in which affected nodes commit: every node of a wave acknowledges its
    /// commit before the next wave is sent theirs.
    ///
    /// Wave 0 holds the nodes that gain nothing (those that lose keys, and those whose
    /// neighbours alone change). A node that gains keys commits one wave after its
    /// fetch source: the source is the old holder nearest to it, often the keys' old
    /// tail, and acknowledges its commit only once its hand-over forwards have arrived,
    /// so a new tail never serves while the old one still acknowledges writes it lacks.
    /// Sources form chains (after a departure each gainer fetches from the next gainer's
    /// predecessor), so there can be up to `k + 1` waves.
    waves: Vec<Vec<NodeRef>>,
}

impl Plan {
    /// Plan a join, a depart, or the removal of `change`'s node together with every other
    /// `silent` member (simultaneous crashes are removed in one change, so no prepare
    /// waits for, or fetches from, a dead node). The change is applied to `ring` only
    /// while the next views are computed, then undone: the ring is never copied.
    fn new(ring: &mut Ring, change: &Change, silent: &[NodeRef], shape: Shape) -> Plan {
        let removed: Vec<NodeRef> = match change {
            Change::Remove(n) => {
                let mut all: Vec<NodeRef> = std::iter::once(n).chain(silent).cloned().collect();
                all.sort();
                all.dedup();
                all
            }
            _ => Vec::new(),
        };
        let mut affected = Vec::new();
        let mut near = |ring: &Ring, id| {
            affected.extend(ring.predecessors(id, shape.list_len));
            affected.extend(ring.successors(id, shape.list_len));
        };
        match change {
            Change::Join(n) => {
                ring.insert(n.clone());
                near(ring, n.id);
                affected.push(n.clone());
            }
            Change::Depart(n) => {
                near(ring, n.id);
                affected.push(n.clone());
            }
            Change::Remove(_) => removed.iter().for_each(|r| near(ring, r.id)),
        }
        affected.retain(|a| !removed.contains(a));
        affected.sort();
        affected.dedup();
        let responsibility = |ring: &Ring, node: &NodeRef| {
            let view = match ring.contains(node.id) {
                true => ring.view_of(node.id, shape.list_len, shape.epoch),
                false => View::default(),
            };
            crate::node::responsibility_of(&view, node, shape.k)
        };
        if matches!(change, Change::Join(_)) {
            undo(ring, change, &removed);
        }
        let before: Vec<Range> = affected.iter().map(|n| responsibility(ring, n)).collect();
        apply(ring, change, &removed);
        let gaining: Vec<bool> = affected
            .iter()
            .zip(&before)
            .map(|(n, old)| Range::gained(*old, responsibility(ring, n)) != Range::Empty)
            .collect();
        let prepares: Vec<(NodeRef, Message)> = affected
            .iter()
            .map(|node| (node.clone(), prepare_for(ring, change, node, shape)))
            .collect();
        undo(ring, change, &removed);
        let waves = commit_waves(&affected, &gaining, &prepares);
        Plan {
            removed,
            affected,
            prepares,
            waves,
        }
    }
}

/// Group `affected` into commit waves (see [`Plan::waves`]): `gaining[i]` tells whether
/// `affected[i]` gains keys, and its prepare names its fetch sources, nearest first.
fn commit_waves(
    affected: &[NodeRef],
    gaining: &[bool],
    prepares: &[(NodeRef, Message)],
) -> Vec<Vec<NodeRef>> {
    let source_of = |i: usize| -> Option<usize> {
        let Some((_, Message::Prepare { sources, .. })) = prepares.get(i) else {
            return None;
        };
        let nearest = sources.iter().find(|s| s.id != affected[i].id)?;
        affected.iter().position(|a| a.id == nearest.id)
    };
    let sources: Vec<Option<usize>> = (0..affected.len()).map(source_of).collect();
    let mut level: Vec<usize> = gaining.iter().map(|g| usize::from(*g)).collect();
    // Longest path along "fetches from" edges; they never form a cycle (sources are
    // predecessors after a departure or removal and the successor of a joiner), but the
    // loop is bounded regardless.
    for _ in 0..affected.len() {
        let mut changed = false;
        for i in 0..affected.len() {
            if let (true, Some(src)) = (gaining[i], sources[i]) {
                let want = level[src] + 1;
                if want > level[i] && want <= affected.len() {
                    level[i] = want;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let depth = level.iter().copied().max().unwrap_or(0);
    let mut waves = vec![Vec::new(); depth + 1];
    for (node, l) in affected.iter().zip(level) {
        waves[l].push(node.clone());
    }
    waves
}

/// The `Prepare` for `node`, computed on the next ring.
fn prepare_for(next: &Ring, change: &Change, node: &NodeRef, shape: Shape) -> Message {
    let view = if next.contains(node.id) {
        next.view_of(node.id, shape.list_len, shape.epoch)
    } else {
        View {
            epoch: shape.epoch,
            ..View::default()
        }
    };
    let fingers = matches!(change, Change::Join(n) if n == node).then(|| next.fingers_of(node.id));
    // Where `node` fetches what it gains. After a removal, its `k - 1` nearest new
    // predecessors: a surviving old replica of any key it gains lies among them (it
    // precedes the newcomer in the key's new replica set).
    let sources = match change {
        Change::Join(n) => next.successor_after(n.id).cloned().into_iter().collect(),
        // The departing node holds everything but may, as a head, hold writes its chain
        // never committed: nearer holders come first, the departing node last (it alone
        // holds the keys when k = 1).
        Change::Depart(n) => {
            let mut sources = next.predecessors(node.id, shape.k.saturating_sub(1));
            sources.push(n.clone());
            sources
        }
        Change::Remove(_) => next.predecessors(node.id, shape.k.saturating_sub(1).max(1)),
    };
    Message::Prepare {
        view,
        config: shape.config,
        sources,
        fingers,
        resync: matches!(change, Change::Remove(_)),
    }
}

/// Make `change` (whose removals are `removed`) to `ring`.
fn apply(ring: &mut Ring, change: &Change, removed: &[NodeRef]) {
    match change {
        Change::Join(n) => {
            ring.insert(n.clone());
        }
        Change::Depart(n) => {
            ring.remove(n.id);
        }
        Change::Remove(_) => removed.iter().for_each(|r| {
            ring.remove(r.id);
        }),
    }
}

/// Undo [`apply`].
fn undo(ring: &mut Ring, change: &Change, removed: &[NodeRef]) {
    match change {
        Change::Join(n) => {
            ring.remove(n.id);
        }
        Change::Depart(n) => {
            ring.insert(n.clone());
        }
        Change::Remove(_) => removed.iter().for_each(|r| {
            ring.insert(r.clone());
        }),
    }
}

impl Coordinator {
    /// Members other than `me` not heard from within `timeout`.
    fn silent(&self, now: crate::Time, timeout: crate::Time, me: crate::Id) -> Vec<NodeRef> {
        self.ring
            .iter()
            .filter(|n| n.id != me)
            .filter(|n| {
                self.last_seen
                    .get(&n.id)
                    .is_some_and(|seen| now.saturating_sub(*seen) > timeout)
            })
            .cloned()
            .collect()
    }
}

/// Why `change` cannot be made to `ring` (coordinated by `bootstrap`), if it cannot.
fn refusal(ring: &Ring, bootstrap: &NodeRef, change: &Change) -> Option<RequestError> {
    match change {
        Change::Join(n) if ring.contains(n.id) => Some(RequestError::AlreadyJoined),
        Change::Remove(n) if !ring.contains(n.id) || n.id == bootstrap.id => {
            Some(RequestError::NotJoined)
        }
        Change::Join(_) if !ring.contains(bootstrap.id) => Some(RequestError::JoinRefused {
            reason: "the bootstrap is not in a ring; ask it to join first".into(),
        }),
        Change::Depart(n) if !ring.contains(n.id) => Some(RequestError::NotJoined),
        Change::Depart(n) if n.id == bootstrap.id => Some(RequestError::BootstrapCannotDepart {
            others: ring.len() - 1,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, Consistency};

    fn ring(n: usize) -> (Ring, Vec<NodeRef>) {
        let nodes: Vec<NodeRef> = (0..n)
            .map(|i| NodeRef::new(&format!("10.0.0.{i}:5000")))
            .collect();
        let mut ring = Ring::default();
        for node in &nodes {
            ring.insert(node.clone());
        }
        (ring, nodes)
    }

    fn shape(k: usize) -> Shape {
        Shape {
            list_len: k + 1,
            k,
            epoch: 1,
            config: ClusterConfig {
                k,
                consistency: Consistency::Chain,
                ..ClusterConfig::default()
            },
        }
    }

    fn wave_of(plan: &Plan, id: crate::Id) -> usize {
        plan.waves
            .iter()
            .position(|w| w.iter().any(|n| n.id == id))
            .expect("every affected node commits in some wave")
    }

    /// Every affected node commits exactly once, and each node that fetches commits in a
    /// later wave than its nearest source, for departures, removals and joins.
    #[test]
    fn fetchers_commit_after_their_sources() {
        for k in 1..=4 {
            let (mut ring, nodes) = ring(12);
            let changes = [
                Change::Depart(nodes[3].clone()),
                Change::Remove(nodes[5].clone()),
                Change::Join(NodeRef::new("10.0.0.99:5000")),
            ];
            for change in changes {
                let plan = Plan::new(&mut ring, &change, &[], shape(k));
                let committed: usize = plan.waves.iter().map(Vec::len).sum();
                assert_eq!(committed, plan.affected.len(), "{change:?} k={k}");
                let mut fetchers = 0;
                for (node, msg) in &plan.prepares {
                    let Message::Prepare { sources, .. } = msg else {
                        panic!("not a prepare")
                    };
                    let Some(src) = sources.iter().find(|s| s.id != node.id) else {
                        continue;
                    };
                    if !plan.affected.contains(src) || wave_of(&plan, node.id) == 0 {
                        continue;
                    }
                    fetchers += 1;
                    assert!(
                        wave_of(&plan, node.id) > wave_of(&plan, src.id),
                        "{change:?} k={k}: {node:?} commits with or before its source {src:?}"
                    );
                }
                if k > 1 {
                    assert!(fetchers > 0, "{change:?} k={k}: nobody fetched");
                }
                // The plan left the ring as it found it.
                assert_eq!(ring.len(), 12);
            }
        }
    }

    /// After a departure with k = 3, the gainers form a chain of sources: up to k + 1
    /// waves, the departing node (which gains nothing) in the first.
    #[test]
    fn a_departure_commits_in_waves_along_the_sources() {
        let (mut ring, nodes) = ring(10);
        let change = Change::Depart(nodes[4].clone());
        let plan = Plan::new(&mut ring, &change, &[], shape(3));
        assert_eq!(wave_of(&plan, nodes[4].id), 0);
        assert!(plan.waves.len() >= 3, "{:?}", plan.waves);
        assert!(plan.waves.len() <= 3 + 1, "{:?}", plan.waves);
    }
}
