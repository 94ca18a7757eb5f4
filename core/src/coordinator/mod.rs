//! The configuration master: it serializes joins, departs and removals of failed members
//! and drives each through prepare → ready → commit (in waves) → ack.

mod plan;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::api::RequestError;
use crate::id::Id;
use crate::message::{Message, NodeRef};
use crate::out::Out;
use crate::rejected::Rejected;
use crate::ring::Ring;
use crate::shared::Shared;
use crate::timers::Timer;
use crate::Time;

use plan::{apply, refusal, Change, Plan, Shape};

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
    /// Waiting for `Ack` from every node of the current commit wave.
    Committing,
}

/// The change in progress.
#[derive(Clone, Debug)]
struct InFlight {
    change: Change,
    attempt: u32,
    /// Members this change takes out without their help (failed or restarted).
    removed: Vec<NodeRef>,
    epoch: u64,
    affected: Vec<NodeRef>,
    waiting: BTreeSet<Id>,
    stage: Stage,
    /// Times the current stage's messages were sent again.
    retries: u32,
    /// Commit waves still to go once the current one has acknowledged.
    later_waves: VecDeque<Vec<NodeRef>>,
    /// The plan's commit waves, in order.
    waves: Vec<Vec<NodeRef>>,
    /// The prepare sent to each affected node, for retransmission.
    prepares: Vec<(NodeRef, Message)>,
}

impl InFlight {
    /// Nodes of `among` that have not answered yet.
    fn still_waiting<'a>(&'a self, among: &'a [NodeRef]) -> impl Iterator<Item = &'a NodeRef> {
        among.iter().filter(|n| self.waiting.contains(&n.id))
    }
}

/// Authoritative membership and the change in progress.
#[derive(Clone, Debug, Default)]
pub(crate) struct Coordinator {
    ring: Ring,
    /// Last epoch handed out; every attempt gets a fresh one.
    epoch: u64,
    current: Option<InFlight>,
    queue: VecDeque<(Change, u32)>,
    /// When each member was last heard from.
    last_seen: BTreeMap<Id, Time>,
    /// The incarnation each node last asked to join with.
    incarnations: BTreeMap<Id, u64>,
}

impl Coordinator {
    /// The coordinator of a new ring whose only member is `me`.
    pub(crate) fn found(me: &NodeRef) -> Coordinator {
        let mut c = Coordinator::default();
        c.ring.insert(me.clone());
        c
    }

    /// The membership as this coordinator knows it.
    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Whether no change is in progress or queued.
    pub(crate) fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    /// `me` left a ring it was alone in.
    pub(crate) fn forget(&mut self, me: &NodeRef) {
        self.ring.remove(me.id);
    }

    /// Whether a join of `id` is queued or in progress.
    fn is_joining(&self, id: Id) -> bool {
        let joining = |c: &Change| matches!(c, Change::Join(n) if n.id == id);
        self.current.as_ref().is_some_and(|op| joining(&op.change))
            || self.queue.iter().any(|(c, _)| joining(c))
    }

    fn is_known(&self, change: &Change) -> bool {
        self.current.as_ref().is_some_and(|c| c.change == *change)
            || self.queue.iter().any(|(c, _)| c == change)
    }

    /// Queue `change` unless it is queued already.
    fn enqueue(&mut self, change: Change, attempt: u32) {
        if !self.queue.iter().any(|(q, _)| *q == change) {
            self.queue.push_back((change, attempt));
        }
    }

    // ----- inputs -----

    /// A coordination message: a join or depart request, or progress of the change.
    pub(crate) fn on_message(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        from: NodeRef,
        msg: Message,
    ) -> Result<(), Rejected> {
        match msg {
            Message::JoinRequest { node, incarnation } => {
                self.on_join_request(sh, out, node, incarnation)
            }
            Message::DepartRequest { node } if node == from => {
                self.request_change(sh, out, Change::Depart(node))
            }
            Message::DepartRequest { .. } => {
                return Err(Rejected::not_coordinator("depart_request", &from));
            }
            Message::Ready { epoch } => self.progress(sh, out, from.id, epoch, Stage::Preparing),
            Message::Ack { epoch } => self.progress(sh, out, from.id, epoch, Stage::Committing),
            other => return Err(Rejected::not_coordinator(other.kind(), &from)),
        }
        Ok(())
    }

    /// Any message from a member shows it is alive.
    pub(crate) fn heard_from(&mut self, peer: &NodeRef, now: Time) {
        if self.ring.contains(peer.id) {
            self.last_seen.insert(peer.id, now);
        }
    }

    /// A heartbeat from a node that is not in the ring means it missed the notice of its
    /// removal; send it again so the node rejoins.
    pub(crate) fn on_heartbeat(&self, sh: &Shared, out: &mut Out, from: &NodeRef) {
        if !self.ring.contains(from.id) && !self.is_joining(from.id) {
            out.send(
                from,
                Message::Removed {
                    epoch: sh.view.epoch,
                },
            );
        }
    }

    fn on_join_request(&mut self, sh: &Shared, out: &mut Out, node: NodeRef, incarnation: u64) {
        if self.incarnations.len() >= sh.limits.incarnations_max
            && !self.incarnations.contains_key(&node.id)
        {
            // Forget incarnations of nodes no longer members: they only tell duplicates
            // of requests already carried out, and a non-member's join is carried out
            // again harmlessly.
            let ring = &self.ring;
            self.incarnations.retain(|id, _| ring.contains(*id));
        }
        let known = self.incarnations.insert(node.id, incarnation);
        if known == Some(incarnation) && self.ring.contains(node.id) {
            return; // a duplicate of a request already carried out
        }
        let restarted = known.is_some_and(|k| k != incarnation);
        let join = Change::Join(node.clone());
        let in_progress = self
            .current
            .as_ref()
            .filter(|op| restarted && op.change == join)
            .map(|op| (op.stage, op.epoch, op.affected.clone()));
        match in_progress {
            // The node restarted while its own join was being prepared: that attempt is
            // void (the new incarnation holds nothing it fetched); start afresh.
            Some((Stage::Preparing, epoch, affected)) => {
                self.current = None;
                for n in &affected {
                    out.send(n, Message::Abort { epoch });
                }
            }
            // ... or committed: the ring now lists its old incarnation, which holds nothing.
            // Finish the change without waiting for it, then take it out and let the new
            // incarnation in.
            Some((Stage::Committing, epoch, _)) => {
                self.enqueue(Change::Remove(node.clone()), 0);
                self.enqueue(join, 0);
                self.progress(sh, out, node.id, epoch, Stage::Committing);
                return self.start_next(sh, out);
            }
            None => {}
        }
        self.request_change(sh, out, Change::Join(node));
    }

    fn request_change(&mut self, sh: &Shared, out: &mut Out, change: Change) {
        if self.is_known(&change) {
            return; // a duplicate request
        }
        let restarted = match &change {
            Change::Join(n) => self.ring.contains(n.id) && n.id != sh.me.id,
            _ => false,
        };
        if restarted {
            // A member asking to join again has restarted and lost its state: take the old
            // incarnation out first, then let the new one in.
            let leaving = Change::Remove(change.node().clone());
            if !self.is_known(&leaving) {
                self.queue.push_back((leaving, 0));
            }
        } else if let Some(reason) = refusal(&self.ring, &sh.me, &change) {
            return out.send(change.node(), Message::Refused { reason });
        }
        if self.queue.len() >= sh.limits.membership_queue_max {
            let reason = RequestError::Overloaded {
                pending: self.queue.len(),
            };
            return out.send(change.node(), Message::Refused { reason });
        }
        self.queue.push_back((change, 0));
        if restarted {
            self.preempt_for_removals(sh, out);
        }
        self.start_next(sh, out);
    }

    /// Failure check: queue the removal of every member silent past the failure timeout.
    pub(crate) fn check_failures(&mut self, sh: &Shared, out: &mut Out) {
        let now = out.now;
        for node in self.ring.iter().filter(|n| n.id != sh.me.id) {
            self.last_seen.entry(node.id).or_insert(now);
        }
        for node in self.silent(now, sh) {
            let change = Change::Remove(node);
            if !self.is_known(&change) {
                self.queue.push_back((change, 0));
            }
        }
        self.preempt_for_removals(sh, out);
        self.start_next(sh, out);
    }

    /// The change in progress missed its deadline. Abandon an unfinished prepare and
    /// retry it later (after any removals the failure detector queued); a commit is
    /// already in force, so a missing acknowledgement just ends the change.
    pub(crate) fn on_deadline(&mut self, sh: &Shared, out: &mut Out) {
        let Some(mut op) = self.current.take() else {
            return;
        };
        match op.stage {
            Stage::Committing if op.retries < COMMIT_RETRIES_MAX => {
                // A commit may have been lost: send it again to whoever has not acknowledged.
                op.retries += 1;
                let commit = Message::Commit { epoch: op.epoch };
                let waiting: Vec<NodeRef> = op.still_waiting(&op.affected).cloned().collect();
                self.current = Some(op);
                self.send_and_rearm(sh, out, waiting.iter().map(|n| (n, commit.clone())));
                return;
            }
            Stage::Committing if !op.later_waves.is_empty() => {
                // A wave did not all answer (they will be found silent and removed); the
                // change is in force, so commit the rest.
                self.current = Some(op);
                return self.commit_next_wave(sh, out, true);
            }
            Stage::Committing => done_notice(&op, out),
            Stage::Preparing
                if op.retries < PREPARE_RETRIES_MAX && !self.waits_for_silent(&op, sh, out.now) =>
            {
                // Something was lost: send the prepares again to whoever is not ready.
                op.retries += 1;
                let resend: Vec<(NodeRef, Message)> = op
                    .prepares
                    .iter()
                    .filter(|(n, _)| op.waiting.contains(&n.id))
                    .cloned()
                    .collect();
                self.current = Some(op);
                self.send_and_rearm(sh, out, resend.iter().map(|(n, m)| (n, m.clone())));
                return;
            }
            Stage::Preparing => self.abandon(out, op),
        }
        self.start_next(sh, out);
    }

    /// Give up the prepare of `op`: abort it at the affected nodes, and retry it later or
    /// refuse it once it has used its attempts.
    fn abandon(&mut self, out: &mut Out, op: InFlight) {
        for node in &op.affected {
            out.send(node, Message::Abort { epoch: op.epoch });
        }
        if op.attempt + 1 < ATTEMPTS_MAX {
            self.queue.push_back((op.change, op.attempt + 1));
        } else if !matches!(op.change, Change::Remove(_)) {
            let reason = RequestError::JoinRefused {
                reason: format!(
                    "the ring could not complete the change in {ATTEMPTS_MAX} attempts; retry"
                ),
            };
            out.send(op.change.node(), Message::Refused { reason });
        }
    }

    /// Whether `op` waits for a member silent past the failure timeout.
    fn waits_for_silent(&self, op: &InFlight, sh: &Shared, now: Time) -> bool {
        self.silent(now, sh)
            .iter()
            .any(|n| op.waiting.contains(&n.id))
    }

    /// Send `msgs` and re-arm the deadline for the next retransmission.
    fn send_and_rearm<'a>(
        &self,
        sh: &Shared,
        out: &mut Out,
        msgs: impl Iterator<Item = (&'a NodeRef, Message)>,
    ) {
        out.set_timer(Timer::Membership, out.after(retransmit_interval(sh)));
        for (node, msg) in msgs {
            out.send(node, msg);
        }
    }

    /// A member the change in progress waits for is about to be removed (found silent,
    /// or restarted). Waiting for its deadline would stall every key near it, so a
    /// prepare is abandoned at once and retried after the removal, and a commit stops
    /// waiting for it (a dead or restarted node serves nothing, so skipping its turn in
    /// the first wave is safe).
    fn preempt_for_removals(&mut self, sh: &Shared, out: &mut Out) {
        let removing: BTreeSet<Id> = self
            .queue
            .iter()
            .filter_map(|(q, _)| match q {
                Change::Remove(n) => Some(n.id),
                _ => None,
            })
            .collect();
        let Some(op) = &self.current else { return };
        let blocked: Vec<Id> = op
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
                let Some(op) = self.current.take() else {
                    return;
                };
                for node in &op.affected {
                    out.send(node, Message::Abort { epoch });
                }
                self.queue.push_front((op.change, op.attempt));
                self.start_next(sh, out);
            }
            Stage::Committing => {
                for id in blocked {
                    self.progress(sh, out, id, epoch, stage);
                }
            }
        }
    }

    /// Start the next queued change, removals first, if none is in progress.
    fn start_next(&mut self, sh: &Shared, out: &mut Out) {
        if self.current.is_some() {
            return;
        }
        // Removals go first: until a failed or restarted member is out, every change
        // near it would wait for (or fetch from) a node that cannot answer.
        if let Some(i) = self
            .queue
            .iter()
            .position(|(q, _)| matches!(q, Change::Remove(_)))
        {
            if let Some(removal) = self.queue.remove(i) {
                self.queue.push_front(removal);
            }
        }
        let Some((change, attempt)) = self.queue.pop_front() else {
            return out.cancel_timer(Timer::Membership);
        };
        if let Change::Join(n) = &change {
            if self.ring.contains(n.id) && n.id != sh.me.id {
                // Its old incarnation is still listed (its removal was retried behind
                // it): remove that first.
                let leaving = Change::Remove(n.clone());
                let tried = self
                    .queue
                    .iter()
                    .find(|(q, _)| *q == leaving)
                    .map_or(0, |(_, a)| *a);
                self.queue.retain(|(q, _)| *q != leaving);
                self.queue.push_front((change, attempt));
                self.queue.push_front((leaving, tried));
                return self.start_next(sh, out);
            }
        }
        if let Some(reason) = refusal(&self.ring, &sh.me, &change) {
            // The ring changed while the request waited. A departure of a node no longer
            // listed is not answered: that node was removed as failed, and its address may
            // already be a new incarnation that is joining.
            let gone = matches!(&change, Change::Depart(n) if !self.ring.contains(n.id));
            if !matches!(change, Change::Remove(_)) && !gone {
                out.send(change.node(), Message::Refused { reason });
            }
            return self.start_next(sh, out);
        }
        self.prepare(sh, out, change, attempt);
    }

    /// Plan `change` under a fresh epoch and send its prepares.
    fn prepare(&mut self, sh: &Shared, out: &mut Out, change: Change, attempt: u32) {
        self.epoch += 1;
        let epoch = self.epoch;
        // A removal takes every member known to be gone along: the silent ones and those
        // whose removal is queued (restarted nodes).
        let gone = match change {
            Change::Remove(_) => {
                let mut gone = self.silent(out.now, sh);
                gone.extend(self.queue.iter().filter_map(|(q, _)| match q {
                    Change::Remove(n) if self.ring.contains(n.id) => Some(n.clone()),
                    _ => None,
                }));
                gone
            }
            _ => Vec::new(),
        };
        let shape = Shape {
            list_len: sh.config.neighbour_list_len(),
            k: sh.config.k,
            epoch,
            config: sh.config,
        };
        let plan = Plan::new(&mut self.ring, &change, &gone, shape);
        let prepares: Vec<(NodeRef, Message)> = plan
            .prepares
            .into_iter()
            .map(|(n, p)| (n, Message::Prepare(p)))
            .collect();
        self.current = Some(InFlight {
            change,
            attempt,
            epoch,
            removed: plan.removed,
            waiting: plan.affected.iter().map(|n| n.id).collect(),
            affected: plan.affected,
            stage: Stage::Preparing,
            retries: 0,
            later_waves: VecDeque::new(),
            waves: plan.waves,
            prepares: prepares.clone(),
        });
        self.send_and_rearm(sh, out, prepares.iter().map(|(n, m)| (n, m.clone())));
    }

    /// `id` has done its part of stage `stage` of change `epoch` (or will never do it).
    fn progress(&mut self, sh: &Shared, out: &mut Out, id: Id, epoch: u64, stage: Stage) {
        let Some(op) = &mut self.current else { return };
        if op.epoch != epoch || op.stage != stage {
            return; // a late duplicate
        }
        op.waiting.remove(&id);
        if !op.waiting.is_empty() {
            return;
        }
        match stage {
            Stage::Preparing => self.commit(sh, out),
            Stage::Committing if !op.later_waves.is_empty() => {
                self.commit_next_wave(sh, out, false)
            }
            Stage::Committing => {
                if let Some(op) = self.current.take() {
                    done_notice(&op, out);
                }
                self.start_next(sh, out);
            }
        }
    }

    /// Every affected node is ready: the change is in force. Commit it wave by wave (a
    /// key's old tail stops serving, and its hand-over forwards have all arrived, before
    /// its new tail starts), and send the finger updates and removal notices.
    fn commit(&mut self, sh: &Shared, out: &mut Out) {
        let now = out.now;
        let Some(op) = &mut self.current else { return };
        op.stage = Stage::Committing;
        op.retries = 0;
        op.later_waves = op.waves.iter().filter(|w| !w.is_empty()).cloned().collect();
        let (change, removed, epoch) = (op.change.clone(), op.removed.clone(), op.epoch);
        apply(&mut self.ring, &change, &removed);
        if let Change::Join(n) = &change {
            self.last_seen.insert(n.id, now);
        }
        let mut gone: Vec<NodeRef> = removed.clone();
        if let Change::Depart(n) = &change {
            gone.push(n.clone());
        }
        for n in &gone {
            self.last_seen.remove(&n.id);
        }
        let fingers = self.finger_updates(&change, &gone);
        self.commit_next_wave(sh, out, false);
        for (node, updates) in fingers {
            out.send(&node, Message::Fingers { epoch, updates });
        }
        for node in &removed {
            // If it is alive after all, it learns it is out and joins afresh.
            out.send(node, Message::Removed { epoch });
        }
    }

    /// Send the commit to the next wave and wait for its acknowledgements. A wave that
    /// follows one that acknowledged shares the change's deadline and retransmissions;
    /// one sent because the previous wave never answered (`forced`) gets its own.
    fn commit_next_wave(&mut self, sh: &Shared, out: &mut Out, forced: bool) {
        let Some(op) = &mut self.current else { return };
        let wave = op.later_waves.pop_front().unwrap_or_default();
        op.waiting = wave.iter().map(|n| n.id).collect();
        let commit = Message::Commit { epoch: op.epoch };
        if forced {
            op.retries = 0;
            self.send_and_rearm(sh, out, wave.iter().map(|n| (n, commit.clone())));
        } else {
            for node in &wave {
                out.send(node, commit.clone());
            }
        }
    }

    /// Finger entries that change once `change` (with `gone` leaving) is applied: those
    /// that pointed into an interval whose owner changed now point at its new owner.
    fn finger_updates(
        &self,
        change: &Change,
        gone: &[NodeRef],
    ) -> Vec<(NodeRef, Vec<(u8, NodeRef)>)> {
        // Every point whose successor changed: (interval start, interval end, new owner).
        let mut moved: Vec<(Id, Id, NodeRef)> = Vec::new();
        if let Change::Join(n) = change {
            if let Some(p) = self.ring.predecessor_before(n.id) {
                moved.push((p.id, n.id, n.clone()));
            }
        }
        for n in gone {
            let pred = self.ring.predecessor_before(n.id);
            let succ = self.ring.successor_after(n.id);
            if let (Some(p), Some(s)) = (pred, succ) {
                moved.push((p.id, n.id, s.clone()));
            }
        }
        let joiner = match change {
            Change::Join(n) => vec![n.id],
            _ => Vec::new(),
        };
        let mut fingers: BTreeMap<Id, Vec<(u8, NodeRef)>> = BTreeMap::new();
        for (from, to, owner) in moved {
            for (id, updates) in self.ring.finger_changes(from, to, &owner, &joiner) {
                fingers.entry(id).or_default().extend(updates);
            }
        }
        fingers
            .into_iter()
            .filter_map(|(id, updates)| {
                let node = self.ring.successor(id).filter(|n| n.id == id).cloned()?;
                Some((node, updates))
            })
            .collect()
    }

    /// Members other than the coordinator not heard from within the failure timeout.
    fn silent(&self, now: Time, sh: &Shared) -> Vec<NodeRef> {
        let timeout = sh.timing.failure_timeout_ns;
        self.ring
            .iter()
            .filter(|n| n.id != sh.me.id)
            .filter(|n| {
                self.last_seen
                    .get(&n.id)
                    .is_some_and(|seen| now.saturating_sub(*seen) > timeout)
            })
            .cloned()
            .collect()
    }
}

/// A join or depart is in force everywhere: tell the node that asked.
fn done_notice(op: &InFlight, out: &mut Out) {
    if let Change::Join(n) | Change::Depart(n) = &op.change {
        out.send(n, Message::ChangeDone { epoch: op.epoch });
    }
}

/// How long the coordinator waits for answers before sending a change's messages again.
fn retransmit_interval(sh: &Shared) -> Time {
    (sh.timing.membership_timeout_ns / RETRANSMITS_PER_TIMEOUT).max(1)
}
