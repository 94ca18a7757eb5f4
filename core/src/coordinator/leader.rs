//! The group leader's work as configuration master: it serializes joins, departs and
//! removals of failed members and drives each through prepare → ready → decided (by the
//! group) → commit in waves → ack. A change is decided before anyone commits it, so a
//! leader that takes over finishes the last decided change and never commits one that
//! was not.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::api::RequestError;
use crate::id::Id;
use crate::message::{Message, NodeRef, Prepare};
use crate::out::Out;
use crate::rejected::Rejected;
use crate::shared::Shared;
use crate::timers::Timer;
use crate::Time;

use super::directory::{ChangeRecord, Decision, Directory};
use super::plan::{refusal, undo, Change, Plan, Shape};

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
    /// Every affected node is ready; waiting for the group to decide the change.
    Deciding,
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
    /// Nodes whose commit acknowledgement was given up (failed or being removed).
    failed: Vec<NodeRef>,
    /// The group's seats when the change started, told to the nodes with the commit.
    seats: Vec<NodeRef>,
}

impl InFlight {
    fn commit_message(&self, term: u64, sh: &Shared, now: Time) -> Message {
        Message::Commit {
            epoch: self.epoch,
            failed: self.failed.clone(),
            term,
            hold_leases: sh.comeback.holds(now),
            seats: self.seats.clone(),
        }
    }

    /// Give up waiting for `id`'s acknowledgement.
    fn give_up(&mut self, id: Id) {
        if let Some(node) = self.affected.iter().find(|n| n.id == id) {
            if !self.failed.contains(node) {
                self.failed.push(node.clone());
            }
        }
    }
}

impl InFlight {
    /// Nodes of `among` that have not answered yet.
    fn still_waiting<'a>(&'a self, among: &'a [NodeRef]) -> impl Iterator<Item = &'a NodeRef> {
        among.iter().filter(|n| self.waiting.contains(&n.id))
    }
}

/// The leader's driver of membership changes. It owns no membership: that is the
/// group's [`Directory`], passed in.
#[derive(Clone, Debug, Default)]
pub(crate) struct Leader {
    /// This leader's term: its epochs are `term << 32 | seq`.
    term: u64,
    /// Last epoch sequence number handed out in this term.
    seq: u64,
    current: Option<InFlight>,
    queue: VecDeque<(Change, u32)>,
    /// When each member was last heard from.
    last_seen: BTreeMap<Id, Time>,
    /// How regularly each member's heartbeats arrive (see [`Beats`]).
    beats: BTreeMap<Id, Beats>,
    /// The incarnation each node last asked to join with (before the join is decided).
    requested: BTreeMap<Id, u64>,
    /// A change to propose to the group (taken by the caller).
    proposal: Option<Decision>,
    /// Whether a leader that departed or lost its seat may still hand over (failure
    /// handling on): then its own departure is allowed.
    can_hand_over: bool,
    /// The group is changing seats: no change starts until a leader of the next
    /// configuration leads (it may be this one again).
    paused: bool,
}

impl Leader {
    /// The leader of `term`, taking over with every member counted as heard from so
    /// that it is found silent [`crate::Timing::takeover_wait_ns`] from now at the
    /// earliest (the leases of the previous leader have run out by then).
    pub(crate) fn new(
        term: u64,
        dir: &Directory,
        sh: &Shared,
        now: Time,
        can_hand_over: bool,
    ) -> Leader {
        let credit = sh
            .timing
            .failure_timeout_ns
            .saturating_sub(sh.timing.takeover_wait_ns());
        let seen = now.saturating_sub(credit);
        Leader {
            term,
            last_seen: dir.ring.iter().map(|n| (n.id, seen)).collect(),
            can_hand_over,
            ..Leader::default()
        }
    }

    /// The term this leader leads.
    pub(crate) fn term(&self) -> u64 {
        self.term
    }

    /// Start what is queued (after taking over).
    pub(crate) fn resume(&mut self, dir: &mut Directory, sh: &Shared, out: &mut Out) {
        self.paused = false;
        self.start_next(dir, sh, out);
    }

    /// Keep the queue and what was heard of members from an earlier leadership of this
    /// node (the group only changed seats).
    pub(crate) fn inherit(&mut self, earlier: Leader) {
        self.queue = earlier.queue;
        // The later of the two: a member's lease may run from a heartbeat answered in
        // between, so an earlier sighting must not make it look silent sooner.
        for (id, seen) in earlier.last_seen {
            let t = self.last_seen.entry(id).or_insert(seen);
            *t = (*t).max(seen);
        }
        self.requested = earlier.requested;
    }

    /// Whether no change is in progress or queued.
    pub(crate) fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    /// Whether no change is in progress (the group may change seats in between).
    pub(crate) fn is_between_changes(&self) -> bool {
        self.current.is_none()
    }

    /// The change to propose to the group, if one is ready.
    pub(crate) fn take_proposal(&mut self) -> Option<Decision> {
        self.proposal.take()
    }

    /// Stop starting changes: the group is changing seats.
    pub(crate) fn pause(&mut self) {
        self.paused = true;
    }

    /// The group refused to take a change (it is changing seats): abandon its prepare and
    /// put it back in the queue for the next leader.
    pub(crate) fn refused_proposal(&mut self, out: &mut Out) {
        let Some(op) = self.current.take() else {
            return;
        };
        abort_at_affected(&op, self.term, out);
        self.queue.push_front((op.change, op.attempt));
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
        dir: &mut Directory,
        sh: &Shared,
        out: &mut Out,
        from: NodeRef,
        msg: Message,
    ) -> Result<(), Rejected> {
        match msg {
            Message::JoinRequest {
                node,
                incarnation,
                prepared,
                ..
            } => self.on_join_request(dir, sh, out, node, incarnation, prepared),
            Message::DepartRequest { node } if node == from => {
                self.request_change(dir, sh, out, Change::Depart(node))
            }
            Message::DepartRequest { .. } => {
                return Err(Rejected::not_coordinator("depart_request", &from));
            }
            Message::Ready { epoch } => {
                self.progress(dir, sh, out, from.id, epoch, Stage::Preparing)
            }
            Message::Ack { epoch } => {
                self.progress(dir, sh, out, from.id, epoch, Stage::Committing)
            }
            other => return Err(Rejected::not_coordinator(other.kind(), &from)),
        }
        Ok(())
    }

    /// Any message from a member shows it is alive.
    pub(crate) fn heard_from(&mut self, dir: &Directory, peer: &NodeRef, now: Time) {
        if dir.ring.contains(peer.id) || self.last_seen.contains_key(&peer.id) {
            self.last_seen.insert(peer.id, now);
        }
    }

    /// A member's heartbeat. A node that is not in the ring missed the notice of its
    /// removal: send it again, so it rejoins. A member still preparing a view whose
    /// change was never decided (its leader lost the lead) is told to abort it; one
    /// preparing a decided change that no wave will reach any more is told to commit it.
    pub(crate) fn on_heartbeat(
        &mut self,
        dir: &Directory,
        out: &mut Out,
        from: &NodeRef,
        preparing: Option<u64>,
    ) {
        if self.beats.len() < dir.ring.len() + 16 || self.beats.contains_key(&from.id) {
            self.beats.entry(from.id).or_default().arrived(out.now);
        }
        let term = self.term;
        if !dir.ring.contains(from.id) && !self.is_joining(from.id) {
            out.send(
                from,
                Message::Removed {
                    epoch: dir.epoch,
                    term,
                },
            );
            return;
        }
        if let Some(epoch) = preparing {
            self.settle_preparing(dir, out, from, epoch);
        }
    }

    /// `from` is preparing the view of `epoch`: if no change of this leader's is about
    /// it, tell it to abort it (never decided) or to commit it (the last decided one).
    fn settle_preparing(&self, dir: &Directory, out: &mut Out, from: &NodeRef, epoch: u64) {
        let term = self.term;
        let current = self.current.as_ref().map(|op| op.epoch);
        if current == Some(epoch) {
            return;
        }
        // A change decided before the last one counts too: its commit was lost (say
        // behind a partition) and later changes that did not touch this member's
        // neighbours went on without it. Told to abort, it dropped the decided view and
        // kept the one before it for good, since no later prepare came to correct it
        // (eventual, k = 2, seed 1645 of the partition campaign: two members whose
        // neighbour departed kept it as their neighbour).
        if epoch == dir.epoch || dir.recent.contains(&epoch) {
            // The change went on without it (it was silent): hand-over forwards meant for
            // it may be lost and its sources gone since, so it is named failed itself and
            // fetches again from its nearest predecessor before it serves as a tail.
            let failed = vec![from.clone()];
            out.send(
                from,
                Message::Commit {
                    epoch,
                    failed,
                    term,
                    // A straggler's commit: its lease comes with its heartbeats.
                    hold_leases: true,
                    seats: dir.seat_nodes(),
                },
            );
        } else {
            out.send(from, Message::Abort { epoch, term });
        }
    }

    fn on_join_request(
        &mut self,
        dir: &mut Directory,
        sh: &Shared,
        out: &mut Out,
        node: NodeRef,
        incarnation: u64,
        prepared: Option<u64>,
    ) {
        if dir.ring.contains(node.id) && dir.incarnations.get(&node.id) == Some(&incarnation) {
            // A duplicate of a request already carried out, unless the joiner still waits
            // on the view it prepared and no change of this leader's is about it: then its
            // join was decided, but the commit was lost with the leader that decided it,
            // and the changes after it went on without it (seed 10656 of chain partitions:
            // it stayed `joining` while the ring listed it). The view it prepared is out of
            // date: it is taken out, and its next request lets it in afresh.
            let about_it = |c: &Change| c.node().id == node.id;
            let driving = self.current.as_ref().is_some_and(|op| about_it(&op.change))
                || self.queue.iter().any(|(c, _)| about_it(c));
            if prepared.is_some_and(|e| e <= dir.epoch) && !driving && node.id != sh.me.id {
                self.request_change(dir, sh, out, Change::Remove(node));
            }
            return;
        }
        let cb = &sh.comeback;
        if cb.holds(out.now) && !cb.members.contains(&node.id) && node.id != sh.me.id {
            // The ring is coming back from its disks and the members that restarted with
            // this leader, which hold the only copies of some keys, are not all back (or
            // their pushes have not landed). A node new to the ring would take over key
            // ranges now and fetch nothing for them: it asks again every heartbeat, and
            // is let in once they are back.
            return;
        }
        if self.requested.len() >= sh.limits.incarnations_max
            && !self.requested.contains_key(&node.id)
        {
            // They only tell a restart while a join is in progress: keep the joiners'.
            let joining: Vec<Id> = self
                .requested
                .keys()
                .copied()
                .filter(|id| self.is_joining(*id))
                .collect();
            self.requested.retain(|id, _| joining.contains(id));
        }
        let known = self.requested.insert(node.id, incarnation);
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
                    out.send(
                        n,
                        Message::Abort {
                            epoch,
                            term: self.term,
                        },
                    );
                }
            }
            // ... or decided: the ring lists (or will list) its old incarnation, which
            // holds nothing. Finish the change without waiting for it, then take it out
            // and let the new incarnation in.
            Some((Stage::Deciding | Stage::Committing, epoch, _)) => {
                self.enqueue(Change::Remove(node.clone()), 0);
                self.enqueue(join, 0);
                self.progress(dir, sh, out, node.id, epoch, Stage::Committing);
                return self.start_next(dir, sh, out);
            }
            None => {}
        }
        self.request_change(dir, sh, out, Change::Join(node));
    }

    fn request_change(&mut self, dir: &mut Directory, sh: &Shared, out: &mut Out, change: Change) {
        if self.is_known(&change) {
            // A duplicate request. If the node asking is still listed in the ring, its
            // old incarnation must go first; that removal may have been given up since
            // (a prepare that waited on the very node it restarted), and nothing else
            // would take it out: it answers pings, so it never looks silent.
            let listed =
                matches!(&change, Change::Join(n) if dir.ring.contains(n.id) && n.id != sh.me.id);
            let joining_now = self.current.as_ref().is_some_and(|c| c.change == change);
            let leaving = Change::Remove(change.node().clone());
            if listed && !joining_now && !self.is_known(&leaving) {
                let at = self.queue.iter().position(|(q, _)| *q == change);
                self.queue
                    .insert(at.unwrap_or(self.queue.len()), (leaving, 0));
                self.preempt_for_removals(dir, sh, out);
                self.start_next(dir, sh, out);
            }
            return;
        }
        if self.can_hand_over && !dir.ring.contains(sh.me.id) {
            // This leader left the ring and is handing the group over: the node asks
            // again, and the next leader takes it.
            return;
        }
        let restarted = match &change {
            Change::Join(n) => dir.ring.contains(n.id) && n.id != sh.me.id,
            _ => false,
        };
        if restarted {
            // A member asking to join again has restarted and lost its state: take the old
            // incarnation out first, then let the new one in.
            let leaving = Change::Remove(change.node().clone());
            if !self.is_known(&leaving) {
                self.queue.push_back((leaving, 0));
            }
        } else if let Some(reason) = self.refusal(dir, sh, &change) {
            let term = self.term;
            return out.send(change.node(), Message::Refused { reason, term });
        }
        if self.queue.len() >= sh.limits.membership_queue_max {
            let reason = RequestError::Overloaded {
                pending: self.queue.len(),
            };
            let term = self.term;
            return out.send(change.node(), Message::Refused { reason, term });
        }
        self.queue.push_back((change, 0));
        if restarted {
            self.preempt_for_removals(dir, sh, out);
        }
        self.start_next(dir, sh, out);
    }

    /// Why `change` cannot be made now, if it cannot. A leader may depart when the
    /// group can hand its lead over.
    fn refusal(&self, dir: &Directory, sh: &Shared, change: &Change) -> Option<RequestError> {
        match change {
            Change::Depart(n) if n.id == sh.me.id && self.can_hand_over && dir.ring.len() > 1 => {
                None
            }
            _ => refusal(&dir.ring, &sh.me, change),
        }
    }

    /// Failure check: queue the removal of every member silent past the failure timeout.
    pub(crate) fn check_failures(
        &mut self,
        dir: &mut Directory,
        sh: &Shared,
        out: &mut Out,
        may_remove: bool,
    ) {
        let now = out.now;
        for node in dir.ring.iter().filter(|n| n.id != sh.me.id) {
            let seen = self.last_seen.entry(node.id).or_insert(now);
            if !may_remove {
                *seen = now;
            }
        }
        let removable = match may_remove {
            true => self.removable(dir, now, sh),
            false => Vec::new(),
        };
        for node in removable {
            let change = Change::Remove(node);
            if !self.is_known(&change) {
                self.queue.push_back((change, 0));
            }
        }
        self.preempt_for_removals(dir, sh, out);
        self.start_next(dir, sh, out);
        // This node sends itself no heartbeat, so a view it was preparing for an earlier
        // leader's change, which that leader never decided, is settled here: otherwise
        // it waits for good with what that change had it fetch.
        if let Some(gaining) = sh.gaining {
            self.settle_preparing(dir, out, &sh.me, gaining.epoch);
        }
    }

    /// The change in progress missed its deadline. Abandon an unfinished prepare and
    /// retry it later (after any removals the failure detector queued); a commit is
    /// already in force, so a missing acknowledgement just ends the change.
    pub(crate) fn on_deadline(&mut self, dir: &mut Directory, sh: &Shared, out: &mut Out) {
        let Some(mut op) = self.current.take() else {
            return;
        };
        let term = self.term;
        if op.stage == Stage::Committing {
            // A node silent past the failure timeout will not acknowledge (it crashed,
            // perhaps while departing, when nobody removes it): its turn is skipped, as
            // a node about to be removed is (see `preempt_for_removals`).
            let silent: Vec<Id> = op
                .waiting
                .iter()
                .filter(|id| self.is_silent(**id, out.now, sh))
                .copied()
                .collect();
            if !silent.is_empty() {
                let epoch = op.epoch;
                for id in &silent {
                    op.give_up(*id);
                }
                self.current = Some(op);
                // Whatever comes next (the same wave, the next one, or the next change)
                // needs a deadline of its own: a commit sent now may be lost too.
                out.set_timer(Timer::Membership, out.after(retransmit_interval(sh)));
                for id in silent {
                    self.progress(dir, sh, out, id, epoch, Stage::Committing);
                }
                return;
            }
        }
        match op.stage {
            Stage::Deciding => {
                // The group decides without a deadline of ours; look again later.
                self.current = Some(op);
                out.set_timer(Timer::Membership, out.after(retransmit_interval(sh)));
                return;
            }
            Stage::Committing if op.retries < COMMIT_RETRIES_MAX => {
                // A commit may have been lost: send it again to whoever has not acknowledged.
                op.retries += 1;
                let commit = op.commit_message(term, sh, out.now);
                let waiting: Vec<NodeRef> = op.still_waiting(&op.affected).cloned().collect();
                self.current = Some(op);
                send_and_rearm(sh, out, waiting.iter().map(|n| (n, commit.clone())));
                return;
            }
            Stage::Committing if !op.later_waves.is_empty() => {
                // A wave did not all answer (they will be found silent and removed); the
                // change is in force, so commit the rest.
                self.current = Some(op);
                return self.commit_next_wave(sh, out, true);
            }
            Stage::Committing => {
                done_notice(&op, term, out);
                if let Change::Depart(n) = &op.change {
                    self.last_seen.remove(&n.id);
                    self.beats.remove(&n.id);
                }
            }
            Stage::Preparing
                if op.retries < PREPARE_RETRIES_MAX
                    && !self.waits_for_silent(dir, &op, sh, out.now) =>
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
                send_and_rearm(sh, out, resend.iter().map(|(n, m)| (n, m.clone())));
                return;
            }
            Stage::Preparing => self.abandon(out, op),
        }
        self.start_next(dir, sh, out);
    }

    /// Give up the prepare of `op`: abort it at the affected nodes, and retry it later or
    /// refuse it once it has used its attempts.
    fn abandon(&mut self, out: &mut Out, op: InFlight) {
        let term = self.term;
        abort_at_affected(&op, term, out);
        if op.attempt + 1 < ATTEMPTS_MAX {
            self.queue.push_back((op.change, op.attempt + 1));
        } else if !matches!(op.change, Change::Remove(_)) {
            let reason = RequestError::JoinRefused {
                reason: format!(
                    "the ring could not complete the change in {ATTEMPTS_MAX} attempts; retry"
                ),
            };
            out.send(op.change.node(), Message::Refused { reason, term });
        }
    }

    /// Whether `op` waits for a member silent past the failure timeout.
    fn waits_for_silent(&self, dir: &Directory, op: &InFlight, sh: &Shared, now: Time) -> bool {
        self.silent(dir, now, sh)
            .iter()
            .any(|n| op.waiting.contains(&n.id))
    }

    /// A member the change in progress waits for is about to be removed (found silent,
    /// or restarted). Waiting for its deadline would stall every key near it, so a
    /// prepare is abandoned at once and retried after the removal, and a commit stops
    /// waiting for it (a dead or restarted node serves nothing, so skipping its turn in
    /// the first wave is safe).
    fn preempt_for_removals(&mut self, dir: &mut Directory, sh: &Shared, out: &mut Out) {
        let removing: BTreeSet<Id> = self
            .queue
            .iter()
            .filter_map(|(q, _)| match q {
                Change::Remove(n) => Some(n.id),
                _ => None,
            })
            .collect();
        let Some(op) = &self.current else { return };
        if op.stage == Stage::Committing && !removing.is_empty() {
            // A node waiting to acknowledge may wait for its hand-over forwards to reach a
            // node that is being removed: they never will, and need not.
            let nodes: Vec<NodeRef> = self
                .queue
                .iter()
                .filter_map(|(q, _)| match q {
                    Change::Remove(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            let skip = Message::Unreachable {
                epoch: op.epoch,
                term: self.term,
                nodes: nodes.clone(),
            };
            for node in op.still_waiting(&op.affected) {
                out.send(node, skip.clone());
            }
            // If such a node is heard again and its removal dropped, it commits having
            // missed forwards its sources gave up on (CRAQ over virtual nodes, seed 96: a
            // joiner cut off after its fetch became the head of a key without the write
            // its source acknowledged meanwhile): its commit names it failed, so it
            // fetches again before it serves.
            if let Some(op) = &mut self.current {
                for node in nodes.iter().filter(|n| op.affected.contains(n)) {
                    if !op.failed.contains(node) {
                        op.failed.push(node.clone());
                    }
                }
            }
        }
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
        let (epoch, stage, term) = (op.epoch, op.stage, self.term);
        match stage {
            Stage::Preparing => {
                // A removal that will be kept (see `kept_silent`) does not start, and the
                // change would be prepared again at once, waiting for the same node:
                // aborting it at every failure check only repeats its prepare and fetches.
                let kept = self.kept_silent(dir, out.now, sh, sh.me.id);
                if blocked.iter().all(|id| kept.contains(id)) {
                    return;
                }
                let Some(op) = self.current.take() else {
                    return;
                };
                for node in &op.affected {
                    out.send(node, Message::Abort { epoch, term });
                }
                self.queue.push_front((op.change, op.attempt));
                self.start_next(dir, sh, out);
            }
            Stage::Deciding => {}
            Stage::Committing => {
                if let Some(op) = &mut self.current {
                    for id in &blocked {
                        op.give_up(*id);
                    }
                }
                for id in blocked {
                    self.progress(dir, sh, out, id, epoch, stage);
                }
            }
        }
    }

    /// Start the next queued change, removals first, if none is in progress.
    fn start_next(&mut self, dir: &mut Directory, sh: &Shared, out: &mut Out) {
        if self.current.is_some() || self.paused {
            return;
        }
        if self.can_hand_over && !dir.ring.contains(sh.me.id) {
            // This leader left the ring and hands the group over: what is queued is not
            // refused, its nodes ask again and the next leader carries it out.
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
        if let Change::Remove(n) = &change {
            if self.kept_silent(dir, out.now, sh, n.id).contains(&n.id) {
                // Part of a silent run that holds whole replica sets: kept (see
                // `kept_silent`); the failure check queues it again if that changes.
                return self.start_next(dir, sh, out);
            }
        }
        if let Change::Join(n) = &change {
            if dir.ring.contains(n.id) && n.id != sh.me.id {
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
                return self.start_next(dir, sh, out);
            }
        }
        if let Some(reason) = self.refusal(dir, sh, &change) {
            // The ring changed while the request waited. A departure of a node no longer
            // listed is not answered: that node was removed as failed, and its address may
            // already be a new incarnation that is joining.
            let gone = matches!(&change, Change::Depart(n) if !dir.ring.contains(n.id));
            if !matches!(change, Change::Remove(_)) && !gone {
                let term = self.term;
                out.send(change.node(), Message::Refused { reason, term });
            }
            return self.start_next(dir, sh, out);
        }
        self.prepare(dir, sh, out, change, attempt);
    }

    /// Plan `change` under a fresh epoch and send its prepares.
    fn prepare(
        &mut self,
        dir: &mut Directory,
        sh: &Shared,
        out: &mut Out,
        change: Change,
        attempt: u32,
    ) {
        self.seq += 1;
        let epoch = (self.term << 32) | self.seq;
        // The members as the ring knows them, with the process each belongs to (a
        // request names a member by address alone), so that the change record puts back
        // exactly what it took out.
        let change = match change {
            Change::Depart(n) => Change::Depart(dir.ring.canonical(&n)),
            Change::Remove(n) => Change::Remove(dir.ring.canonical(&n)),
            join => join,
        };
        // A removal takes every member known to be gone along: the silent ones and those
        // whose removal is queued (restarted nodes).
        let gone = match change {
            Change::Remove(_) => {
                let kept = self.kept_silent(dir, out.now, sh, change.node().id);
                let mut gone = self.silent(dir, out.now, sh);
                gone.retain(|n| !kept.contains(&n.id));
                gone.extend(self.queue.iter().filter_map(|(q, _)| match q {
                    Change::Remove(n) if dir.ring.contains(n.id) && !kept.contains(&n.id) => {
                        Some(n.clone())
                    }
                    _ => None,
                }));
                gone.iter().map(|n| dir.ring.canonical(n)).collect()
            }
            _ => Vec::new(),
        };
        let decided = dir.epoch;
        let plan = Plan::new(&mut dir.ring, &change, &gone, shape(sh, epoch));
        let term = self.term;
        let prepares: Vec<(NodeRef, Message)> = plan
            .prepares
            .into_iter()
            .map(|(n, p)| {
                let prepare = Prepare { term, decided, ..p };
                (n, Message::Prepare(prepare))
            })
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
            failed: Vec::new(),
            seats: dir.seat_nodes(),
        });
        send_and_rearm(sh, out, prepares.iter().map(|(n, m)| (n, m.clone())));
    }

    /// `id` has done its part of stage `stage` of change `epoch` (or will never do it).
    fn progress(
        &mut self,
        dir: &mut Directory,
        sh: &Shared,
        out: &mut Out,
        id: Id,
        epoch: u64,
        stage: Stage,
    ) {
        let Some(op) = &mut self.current else { return };
        if op.epoch != epoch || op.stage != stage {
            return; // a late duplicate
        }
        op.waiting.remove(&id);
        if !op.waiting.is_empty() {
            return;
        }
        match stage {
            Stage::Preparing => {
                // Every affected node is ready: the group decides the change before anyone
                // commits it.
                op.stage = Stage::Deciding;
                let incarnation = match &op.change {
                    Change::Join(n) => self.requested.get(&n.id).copied(),
                    _ => None,
                };
                self.proposal = Some(Decision::Change(ChangeRecord {
                    epoch: op.epoch,
                    change: op.change.clone(),
                    removed: op.removed.clone(),
                    incarnation,
                }));
            }
            Stage::Deciding => {}
            Stage::Committing if !op.later_waves.is_empty() => {
                self.commit_next_wave(sh, out, false)
            }
            Stage::Committing => {
                if let Some(op) = self.current.take() {
                    done_notice(&op, self.term, out);
                    // A departed node was watched until its part was done.
                    if let Change::Depart(n) = &op.change {
                        self.last_seen.remove(&n.id);
                        self.beats.remove(&n.id);
                    }
                }
                self.start_next(dir, sh, out);
            }
        }
    }

    /// The group decided change `record` (folded into `dir` already). If it is the
    /// change in progress, commit it.
    pub(crate) fn on_decided(
        &mut self,
        dir: &mut Directory,
        sh: &Shared,
        out: &mut Out,
        record: &ChangeRecord,
    ) {
        let ours = self
            .current
            .as_ref()
            .is_some_and(|op| op.epoch == record.epoch && op.stage == Stage::Deciding);
        if ours {
            self.commit(dir, sh, out);
        }
    }

    /// Finish committing the last decided change, which the previous leader may have
    /// left half done: its nodes that committed acknowledge again.
    pub(crate) fn redrive(&mut self, dir: &mut Directory, sh: &Shared, out: &mut Out) {
        let Some(record) = dir.last_change.clone() else {
            return;
        };
        // Plan it on the ring as it was before the change, as its leader did.
        undo(&mut dir.ring, &record.change, &record.removed);
        let plan = Plan::new(
            &mut dir.ring,
            &record.change,
            &record.removed,
            shape(sh, record.epoch),
        );
        super::plan::apply(&mut dir.ring, &record.change, &record.removed);
        // Watch every node it waits for (a departing one is no longer in the ring).
        for node in &plan.affected {
            self.last_seen.entry(node.id).or_insert(out.now);
        }
        self.current = Some(InFlight {
            change: record.change,
            attempt: 0,
            epoch: record.epoch,
            removed: plan.removed,
            waiting: BTreeSet::new(),
            affected: plan.affected,
            stage: Stage::Deciding,
            retries: 0,
            later_waves: VecDeque::new(),
            waves: plan.waves,
            prepares: Vec::new(),
            failed: Vec::new(),
            seats: dir.seat_nodes(),
        });
        self.commit(dir, sh, out);
    }

    /// The change in progress is decided: commit it wave by wave (a key's old tail stops
    /// serving, and its hand-over forwards have all arrived, before its new tail starts),
    /// and send the finger updates and removal notices.
    fn commit(&mut self, dir: &mut Directory, sh: &Shared, out: &mut Out) {
        let now = out.now;
        let term = self.term;
        let Some(op) = &mut self.current else { return };
        op.stage = Stage::Committing;
        op.retries = 0;
        op.later_waves = op.waves.iter().filter(|w| !w.is_empty()).cloned().collect();
        let (change, removed, epoch) = (op.change.clone(), op.removed.clone(), op.epoch);
        if let Change::Join(n) = &change {
            self.last_seen.insert(n.id, now);
            self.requested.remove(&n.id);
        }
        let mut gone: Vec<NodeRef> = removed.clone();
        if let Change::Depart(n) = &change {
            gone.push(n.clone());
        }
        for n in &removed {
            self.last_seen.remove(&n.id);
            self.beats.remove(&n.id);
        }
        let fingers = finger_updates(dir, &change, &gone);
        self.commit_next_wave(sh, out, true);
        for (node, updates) in fingers {
            out.send(
                &node,
                Message::Fingers {
                    epoch,
                    term,
                    updates,
                },
            );
        }
        for node in &removed {
            // If it is alive after all, it learns it is out and joins afresh.
            out.send(node, Message::Removed { epoch, term });
        }
    }

    /// Send the commit to the next wave and wait for its acknowledgements. A wave that
    /// follows one that acknowledged shares the change's deadline and retransmissions;
    /// one sent because the previous wave never answered (`forced`) gets its own.
    fn commit_next_wave(&mut self, sh: &Shared, out: &mut Out, forced: bool) {
        let term = self.term;
        let Some(op) = &mut self.current else { return };
        let wave = op.later_waves.pop_front().unwrap_or_default();
        op.waiting = wave.iter().map(|n| n.id).collect();
        let commit = op.commit_message(term, sh, out.now);
        if forced {
            op.retries = 0;
            send_and_rearm(sh, out, wave.iter().map(|n| (n, commit.clone())));
        } else {
            for node in &wave {
                out.send(node, commit.clone());
            }
        }
    }

    /// Whether `id` was heard from, but not within its failure timeout.
    fn is_silent(&self, id: Id, now: Time, sh: &Shared) -> bool {
        let timeout = self.timeout_of(id, sh);
        self.last_seen
            .get(&id)
            .is_some_and(|seen| now.saturating_sub(*seen) > timeout)
    }

    /// The silence after which `id` is declared failed: the failure timeout, longer for a
    /// member whose heartbeats have been arriving irregularly (a loaded host, a slow
    /// link), up to four times the timeout. Never shorter: leases rely on it.
    fn timeout_of(&self, id: Id, sh: &Shared) -> Time {
        let timeout = sh.timing.failure_timeout_ns;
        match self.beats.get(&id) {
            Some(b) if b.count >= Beats::WARMUP => {
                let adaptive = b
                    .mean
                    .saturating_add(b.dev.saturating_mul(Beats::DEVIATIONS));
                adaptive.clamp(timeout, timeout.saturating_mul(4))
            }
            _ => timeout,
        }
    }

    /// Silent members to remove: all but those in [`Leader::kept_silent`].
    fn removable(&self, dir: &Directory, now: Time, sh: &Shared) -> Vec<NodeRef> {
        let removing = match self.current.as_ref().map(|op| &op.change) {
            Some(Change::Remove(n)) => n.id,
            _ => sh.me.id,
        };
        let kept = self.kept_silent(dir, now, sh, removing);
        let mut silent = self.silent(dir, now, sh);
        silent.retain(|n| !kept.contains(&n.id));
        silent
    }

    /// Members that are not removed although silent or queued for removal: those in a
    /// run of `min(k, N)` members in a row that are all silent or queued for removal.
    /// Such a run holds every copy of the keys between its members; they may be alive
    /// behind a partition or paused, and removing them would hand their keys to nodes
    /// that cannot fetch them, losing every write acknowledged there. Those keys stay
    /// unavailable until a member of the run answers. A member that restarted (its new
    /// incarnation asks to join) lost what it held and is not kept. `removing` is the
    /// member whose removal is being started (out of the queue by then).
    fn kept_silent(&self, dir: &Directory, now: Time, sh: &Shared, removing: Id) -> BTreeSet<Id> {
        let mut gone: BTreeSet<Id> = self.silent(dir, now, sh).iter().map(|n| n.id).collect();
        if removing != sh.me.id && dir.ring.contains(removing) {
            gone.insert(removing);
        }
        gone.extend(self.queue.iter().filter_map(|(q, _)| match q {
            Change::Remove(n) if dir.ring.contains(n.id) => Some(n.id),
            _ => None,
        }));
        if gone.is_empty() {
            return gone;
        }
        let mut kept = dir.ring.whole_chains_of(&gone, sh.config.k);
        kept.retain(|id| !self.is_joining(*id));
        kept
    }

    /// Members other than the leader not heard from within their failure timeout.
    fn silent(&self, dir: &Directory, now: Time, sh: &Shared) -> Vec<NodeRef> {
        dir.ring
            .iter()
            .filter(|n| n.id != sh.me.id && self.is_silent(n.id, now, sh))
            .cloned()
            .collect()
    }
}

/// The arrival pattern of one member's heartbeats: a smoothed mean and mean deviation of
/// the gaps between them (as TCP estimates a round trip). A failure is declared after
/// `mean + 8 × deviation` of silence when that exceeds the failure timeout: regular
/// heartbeats leave the timeout as it is; heartbeats a loaded host delivers in bursts
/// stretch it, so a slow member is not mistaken for a dead one.
#[derive(Clone, Copy, Debug, Default)]
struct Beats {
    last: Time,
    mean: Time,
    dev: Time,
    count: u32,
}

impl Beats {
    const WARMUP: u32 = 4;
    const DEVIATIONS: u64 = 8;

    fn arrived(&mut self, now: Time) {
        if self.count > 0 {
            let gap = now.saturating_sub(self.last);
            if self.count == 1 {
                (self.mean, self.dev) = (gap, gap / 2);
            } else {
                let err = gap.abs_diff(self.mean);
                self.dev = self.dev - self.dev / 4 + err / 4;
                self.mean = self.mean - self.mean / 8 + gap / 8;
            }
        }
        self.last = now;
        self.count = self.count.saturating_add(1);
    }
}

/// The parameters of every view planned at `epoch`.
fn shape(sh: &Shared, epoch: u64) -> Shape {
    Shape {
        list_len: sh.config.neighbour_list_len(),
        k: sh.config.k,
        epoch,
        config: sh.config,
    }
}

/// Finger entries that change once `change` (with `gone` leaving) is in `dir`: those
/// that pointed into an interval whose owner changed now point at its new owner.
fn finger_updates(
    dir: &Directory,
    change: &Change,
    gone: &[NodeRef],
) -> Vec<(NodeRef, Vec<(u8, NodeRef)>)> {
    let ring = &dir.ring;
    // Every point whose successor changed: (interval start, interval end, new owner).
    let mut moved: Vec<(Id, Id, NodeRef)> = Vec::new();
    if let Change::Join(n) = change {
        if let Some(p) = ring.predecessor_before(n.id) {
            moved.push((p.id, n.id, n.clone()));
        }
    }
    for n in gone {
        let pred = ring.predecessor_before(n.id);
        let succ = ring.successor_after(n.id);
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
        for (id, updates) in ring.finger_changes(from, to, &owner, &joiner) {
            fingers.entry(id).or_default().extend(updates);
        }
    }
    fingers
        .into_iter()
        .filter_map(|(id, updates)| {
            let node = ring.successor(id).filter(|n| n.id == id).cloned()?;
            Some((node, updates))
        })
        .collect()
}

/// Send `msgs` and re-arm the deadline for the next retransmission.
fn send_and_rearm<'a>(
    sh: &Shared,
    out: &mut Out,
    msgs: impl Iterator<Item = (&'a NodeRef, Message)>,
) {
    out.set_timer(Timer::Membership, out.after(retransmit_interval(sh)));
    for (node, msg) in msgs {
        out.send(node, msg);
    }
}

/// Tell every node `op` affects that it is abandoned.
fn abort_at_affected(op: &InFlight, term: u64, out: &mut Out) {
    let epoch = op.epoch;
    for node in &op.affected {
        out.send(node, Message::Abort { epoch, term });
    }
}

/// A join or depart is in force everywhere: tell the node that asked.
fn done_notice(op: &InFlight, term: u64, out: &mut Out) {
    if let Change::Join(n) | Change::Depart(n) = &op.change {
        out.send(
            n,
            Message::ChangeDone {
                epoch: op.epoch,
                term,
            },
        );
    }
}

/// How long the leader waits for answers before sending a change's messages again.
fn retransmit_interval(sh: &Shared) -> Time {
    (sh.timing.membership_timeout_ns / RETRANSMITS_PER_TIMEOUT).max(1)
}
