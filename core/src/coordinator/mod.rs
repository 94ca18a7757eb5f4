//! The configuration master, replicated: a small group of members (the coordinator
//! group: one seat on a ring of one or two members, three on three or four, five from
//! five) agree through omnipaxos on every membership change, and the group's leader
//! drives the changes (see [`leader`]). Any seat can take over: a new leader's term is
//! itself decided, its epochs lie above every earlier one (epoch = term << 32 | seq),
//! and members follow only the newest term they have seen, so two leaders never both
//! commit. With failure handling off the bootstrap is the only seat, as before.

mod directory;
mod group;
mod leader;
mod plan;

use std::collections::BTreeSet;

use crate::id::Id;
use crate::message::{Message, NodeRef};
use crate::out::Out;
use crate::rejected::Rejected;
use crate::ring::Ring;
use crate::shared::Shared;
use crate::timers::Timer;
use crate::Time;

pub use directory::{ChangeRecord, Decision, Directory, Seat, SEATS_MAX};
pub use group::Consensus;
pub use plan::Change;

use group::{Event, Group, TICKS_PER_ROUND};
use leader::Leader;

/// Times a new seat is sent the directory before the sender gives up (each tick).
const GROUP_JOIN_SENDS_MAX: u32 = 50;

/// This node's seat in the coordinator group, and its leadership when it leads.
#[derive(Debug)]
pub(crate) struct Coordination {
    group: Group,
    /// The leader's driver, once this seat's term is decided.
    leader: Option<Leader>,
    /// A driver set aside while the group changed seats, taken up again if this seat
    /// leads the next configuration.
    parked: Option<Leader>,
    /// Whether this seat proposed its term and waits for it to be decided.
    term_proposed: bool,
    /// New seats that still need the directory, with the sends left.
    welcoming: Vec<(NodeRef, u32)>,
    /// Seats that acknowledged this configuration's directory.
    answered: BTreeSet<Id>,
}

/// What the node should do after the coordination handled an input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing more.
    Stay,
    /// This node no longer holds a seat: drop the coordination.
    Retire,
}

impl Coordination {
    /// The coordination of a new ring founded by this node, its terms starting above
    /// `after` (a ring founded again: every epoch of its previous life lies below its
    /// new ones, so a record written before the power cut never looks newer).
    pub(crate) fn found(sh: &Shared, out: &mut Out, ring_id: u64, after: u64) -> Coordination {
        let mut dir = Directory::founded(&sh.me, sh.incarnation, sh.config, ring_id);
        dir.term = dir.term.max(after + 1);
        Coordination::seated(sh, out, dir, true)
    }

    /// A seat starting from `dir` (a new seat of an existing group).
    pub(crate) fn seated(sh: &Shared, out: &mut Out, dir: Directory, lead: bool) -> Coordination {
        let mut c = Coordination {
            group: Group::new(dir, sh.me.clone(), sh.incarnation, lead),
            leader: None,
            parked: None,
            term_proposed: false,
            welcoming: Vec::new(),
            answered: BTreeSet::new(),
        };
        c.after(sh, out, Vec::new());
        c
    }

    /// The membership, as this seat's directory has it (only the leader's is authoritative
    /// for the change in progress).
    pub(crate) fn ring(&self) -> &Ring {
        &self.group.dir().ring
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Directory {
        self.group.dir()
    }

    /// Whether this seat leads (its term is decided).
    pub(crate) fn is_leading(&self) -> bool {
        self.leader.is_some()
    }

    /// Whether no change is in progress or queued here.
    pub(crate) fn is_idle(&self) -> bool {
        match &self.leader {
            Some(leader) => leader.is_idle() && !self.group.is_stopping(),
            // A seat waits only while its group has no settled leader (an election, or a
            // leader whose term is not decided yet).
            None => self.group.follows_settled_leader(),
        }
    }

    /// The seats of the group.
    pub(crate) fn seat_nodes(&self) -> Vec<NodeRef> {
        self.group
            .dir()
            .seats
            .iter()
            .map(|s| s.node.clone())
            .collect()
    }

    // ----- inputs -----

    /// A join or depart request, or progress of the change. Seats that do not lead pass
    /// requests on to the leader they know; progress is only for the leader.
    pub(crate) fn on_message(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        from: NodeRef,
        msg: Message,
    ) -> Result<Outcome, Rejected> {
        let Some(leader) = &mut self.leader else {
            // A depart request is taken only from the departing node itself, so one
            // passed on would be refused: the node retries with the leader it learns.
            let to = self.group.leader().filter(|to| to.id != sh.me.id).cloned();
            let kind = msg.kind();
            return match (to, msg.join_forwarded()) {
                (Some(to), Some(msg)) => {
                    out.send(&to, msg);
                    Ok(Outcome::Stay)
                }
                _ => Err(Rejected::not_coordinator(kind, &from)),
            };
        };
        let dir = self.group.dir_mut();
        let result = leader.on_message(dir, sh, out, from, msg);
        let outcome = self.after(sh, out, Vec::new());
        result.map(|_| outcome)
    }

    /// A member's heartbeat: the leader answers with its term (and sorts out stale
    /// prepares); another seat points the member at the leader it knows.
    pub(crate) fn on_heartbeat(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        from: &NodeRef,
        preparing: Option<u64>,
        sent: Time,
    ) {
        let dir = self.group.dir();
        // Only a member of the ring gets a lease: a node the ring removed while it was cut
        // off still holds its old view, in which it may be the tail of keys whose chains
        // have moved on, and it learns of its removal only after this answer.
        let lease =
            (self.may_grant_leases(sh, out.now) && dir.ring.contains(from.id)).then_some(sent);
        match &mut self.leader {
            Some(leader) => {
                leader.on_heartbeat(dir, out, from, preparing);
                let term = leader.term();
                out.send(from, self.announcement(term, sh.me.clone(), lease));
            }
            None => {
                if let Some(l) = self.group.leader().cloned() {
                    if l.id != sh.me.id {
                        out.send(from, self.announcement(dir.term, l, None));
                    }
                }
            }
        }
    }

    /// Whether this seat leads and heard from a majority of its group recently enough to
    /// grant leases (see [`crate::Timing::lease_ns`]): a leader cut off from its group
    /// stops granting before any other seat can be elected and remove a member.
    pub(crate) fn may_grant_leases(&self, sh: &Shared, now: Time) -> bool {
        self.leader.is_some() && !sh.comeback.holds(now) && self.followed_by_majority(sh, now)
    }

    /// Whether a majority of the group showed, within the lease grant window, that it
    /// follows this seat's own ballot. Hearing them is not enough: right after a partition
    /// heals, the seats that elected another leader meanwhile still send this one messages
    /// (of the newer ballot) before it learns it is deposed (chain partitions, seed 28441:
    /// a deposed leader granted a lease, and a member of its old view served a value the
    /// ring had overwritten).
    fn followed_by_majority(&self, sh: &Shared, now: Time) -> bool {
        let window = sh.timing.lease_grant_window_ns();
        self.group
            .majority_following_since(now)
            .is_some_and(|t| now.saturating_sub(t) < window)
    }

    /// Whether this seat leads but has heard from no majority of its group for a
    /// failure timeout: the group may have gone on without it (elected another leader,
    /// moved to seats it does not know) while it was cut off or paused. It then asks the
    /// ring where the lead is, as a member silent from its leader does.
    pub(crate) fn leads_cut_off(&self, sh: &Shared, now: Time) -> bool {
        let timeout = sh.timing.failure_timeout_ns;
        self.leader.is_some()
            && self
                .group
                .majority_heard_since(now)
                .is_none_or(|t| now.saturating_sub(t) > timeout)
    }

    /// Whether this seat heard from a majority of its group within the lease grant
    /// window ([`crate::Timing::lease_grant_window_ns`]).
    pub(crate) fn hears_majority(&self, sh: &Shared, now: Time) -> bool {
        let window = sh.timing.lease_grant_window_ns();
        self.group
            .majority_heard_since(now)
            .is_some_and(|t| now.saturating_sub(t) < window)
    }

    fn announcement(&self, term: u64, leader: NodeRef, lease_from: Option<Time>) -> Message {
        Message::Leader {
            term,
            leader,
            seats: self.seat_nodes(),
            ring_id: self.group.dir().ring_id,
            config_id: self.group.dir().config_id,
            lease_from,
        }
    }

    /// Omnipaxos' leader told how long its log is: catch up if behind.
    pub(crate) fn on_leader_log(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        leader: &NodeRef,
        config_id: u32,
        log_len: u64,
        decided: u64,
    ) -> Outcome {
        let events = self
            .group
            .on_leader_log(leader, config_id, log_len, decided, out);
        self.after(sh, out, events)
    }

    /// A seat says how long it has not heard from omnipaxos' leader.
    pub(crate) fn on_quiet(
        &mut self,
        from: &NodeRef,
        config_id: u32,
        pid: u64,
        quiet: u64,
        now: Time,
    ) {
        self.group.on_quiet(from, config_id, pid, quiet, now);
    }

    /// A consensus message from another seat.
    pub(crate) fn on_consensus(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        from: &NodeRef,
        consensus: Consensus,
    ) -> Outcome {
        if consensus.config_id < self.group.dir().config_id {
            // A seat of an older configuration that missed its end: tell it who leads now
            // (it gives up its seat when it is not among the new ones).
            if let Some(leader) = self.group.leader().cloned() {
                out.send(from, self.announcement(self.group.dir().term, leader, None));
            }
            return Outcome::Stay;
        }
        let events = self.group.on_consensus(consensus, out);
        self.after(sh, out, events)
    }

    /// A new seat acknowledged the directory.
    pub(crate) fn on_group_join_ack(&mut self, from: &NodeRef, config_id: u32) -> Outcome {
        if config_id == self.group.dir().config_id {
            self.welcoming.retain(|(n, _)| n.id != from.id);
            self.answered.insert(from.id);
        }
        self.retire_if_done()
    }

    /// A seat that lost its seat stays until the new seats have the directory.
    fn retire_if_done(&self) -> Outcome {
        match !self.group.is_seated() && self.welcoming.is_empty() {
            true => Outcome::Retire,
            false => Outcome::Stay,
        }
    }

    /// The configuration this seat runs.
    pub(crate) fn config_id(&self) -> u32 {
        self.group.dir().config_id
    }

    /// The group timer: drive omnipaxos, and send the directory to new seats again.
    pub(crate) fn on_tick(&mut self, sh: &Shared, out: &mut Out) -> Outcome {
        let events = self.group.tick(out, group_tick_ns(sh));
        let mut to: Vec<NodeRef> = Vec::new();
        for (node, left) in &mut self.welcoming {
            *left = left.saturating_sub(1);
            to.push(node.clone());
        }
        self.welcoming.retain(|(_, left)| *left > 0);
        // A new seat cut off for longer than its welcome lasted (a partition) never
        // learns it has a seat, and with other seats down the group may lack a majority
        // without it for good: the elected seat sends it the directory once a round
        // until it answers. So does every seat that hears from no majority of its group:
        // the seats that got the directory may be too few to elect anyone without the
        // ones that missed it (the old leader left, and the seat omnipaxos still takes
        // for leader restarted without a disk). (A seat that restarted since refuses
        // it: seats name an incarnation.)
        let sends = self.group.is_elected() || !self.hears_majority(sh, out.now);
        if sends && self.group.at_round() {
            for node in self.group.other_seats() {
                if !to.iter().any(|n| n.id == node.id) && !self.answered.contains(&node.id) {
                    to.push(node);
                }
            }
        }
        if !to.is_empty() {
            let dir = self.group.dir_at_start();
            for node in &to {
                out.send(node, Message::GroupJoin(Box::new(dir.clone())));
            }
        }
        match self.after(sh, out, events) {
            Outcome::Stay => self.retire_if_done(),
            retire => retire,
        }
    }

    /// Failure check (leader).
    pub(crate) fn check_failures(&mut self, sh: &Shared, out: &mut Out) -> Outcome {
        // A leader that does not hear a majority of its group is more likely cut off
        // itself than its members silent: it proposes no removal, and the silence it
        // sees meanwhile counts for nothing once it hears its group again (each member
        // gets a whole failure timeout from then). Accepted by itself alone, such a
        // proposal survived in its log, and the next leader, adopting the accepted
        // entries it found, decided it after the heal: the members that had gone on
        // without it were removed, and it was left alone with what it held when cut off
        // (3 nodes, seed 8440).
        let may_remove = self.hears_majority(sh, out.now);
        if let Some(leader) = &mut self.leader {
            leader.check_failures(self.group.dir_mut(), sh, out, may_remove);
        }
        self.after(sh, out, Vec::new())
    }

    /// The change in progress missed its deadline (leader).
    pub(crate) fn on_deadline(&mut self, sh: &Shared, out: &mut Out) -> Outcome {
        if let Some(leader) = &mut self.leader {
            leader.on_deadline(self.group.dir_mut(), sh, out);
        }
        self.after(sh, out, Vec::new())
    }

    /// Any message from a member shows it is alive.
    pub(crate) fn heard_from(&mut self, peer: &NodeRef, now: Time) {
        if let Some(leader) = &mut self.leader {
            leader.heard_from(self.group.dir(), peer, now);
        }
    }

    /// This node left a ring it was alone in (failure handling off).
    pub(crate) fn forget(&mut self, me: &NodeRef) {
        self.group.dir_mut().ring.remove(me.id);
    }

    // ----- after every input -----

    /// Handle what the group decided, take up or give up the lead, propose what the
    /// leader has ready, and change seats when the ring needs others.
    fn after(&mut self, sh: &Shared, out: &mut Out, mut events: Vec<Event>) -> Outcome {
        // Bounded: each round either handles events or proposes; proposals alone decide
        // at once, and a change is proposed once.
        for _ in 0..16 {
            for event in std::mem::take(&mut events) {
                if self.on_event(sh, out, event) == Outcome::Retire {
                    return Outcome::Retire;
                }
            }
            self.follow_leadership(sh, out, &mut events);
            if let Some(leader) = &mut self.leader {
                if let Some(decision) = leader.take_proposal() {
                    match self.group.propose(decision, out) {
                        Some(decided) => events.extend(decided),
                        None => leader.refused_proposal(out),
                    }
                }
            }
            self.maybe_change_seats(sh, out, &mut events);
            if events.is_empty() {
                break;
            }
        }
        self.arm_tick(sh, out);
        Outcome::Stay
    }

    fn on_event(&mut self, sh: &Shared, out: &mut Out, event: Event) -> Outcome {
        match event {
            Event::Decided(Decision::Term { pid }) => {
                self.term_proposed = false;
                if pid == self.group.my_pid() && self.group.is_leader() {
                    self.establish(sh, out);
                } else if let Some(old) = self.leader.take() {
                    self.parked = Some(old);
                }
            }
            Event::Decided(Decision::Change(record)) => {
                if let Some(leader) = &mut self.leader {
                    leader.on_decided(self.group.dir_mut(), sh, out, &record);
                }
            }
            Event::Reconfigured { before } => {
                if let Some(old) = self.leader.take() {
                    self.parked = Some(old);
                }
                self.term_proposed = false;
                self.answered.clear();
                // Every other seat gets the directory until it acknowledges: a seat of
                // the previous configuration may not have learned that its stop sign
                // was decided.
                let _ = before;
                for node in self.group.other_seats() {
                    if !self.welcoming.iter().any(|(n, _)| n.id == node.id) {
                        self.welcoming.push((node, GROUP_JOIN_SENDS_MAX));
                    }
                }
                let dir = self.group.dir_at_start().clone();
                for (node, _) in &self.welcoming {
                    out.send(node, Message::GroupJoin(Box::new(dir.clone())));
                }
                if !self.group.is_seated() && self.welcoming.is_empty() {
                    return Outcome::Retire;
                }
            }
        }
        Outcome::Stay
    }

    /// Take up the lead when omnipaxos makes this seat leader (by getting its term
    /// decided), and give it up when it does not any more.
    fn follow_leadership(&mut self, sh: &Shared, out: &mut Out, events: &mut Vec<Event>) {
        if !self.group.is_seated() {
            self.leader = None;
            return;
        }
        let leads = self.group.is_leader();
        if !leads {
            if let Some(old) = self.leader.take() {
                self.parked = Some(old);
            }
            self.term_proposed = false;
            // A stop sign this seat proposed is decided by the next leader, or not at all.
            self.group.forget_stopping();
            return;
        }
        if self.leader.is_none()
            && !self.term_proposed
            && !self.group.is_stopping()
            && self.group.settled_leader()
        {
            self.term_proposed = true;
            let pid = self.group.my_pid();
            match self.group.propose(Decision::Term { pid }, out) {
                Some(decided) => events.extend(decided),
                None => self.term_proposed = false,
            }
        }
        let _ = sh;
    }

    /// This seat's term is decided: lead. Tell every member, and finish the last
    /// decided change.
    fn establish(&mut self, sh: &Shared, out: &mut Out) {
        let dir = self.group.dir();
        let can_hand_over = sh.timing.heartbeat_interval_ns > 0;
        let mut leader = Leader::new(dir.term, dir, sh, out.now, can_hand_over);
        // Only from the term just before: a driver parked while other seats led holds
        // requests those leaders carried out since (CRAQ, 4 nodes, seed 1479 of one-way
        // partitions: a join queued two terms earlier, taken up again, made the new
        // leader take the member, which had been removed and let in again as a new
        // incarnation meanwhile, for a restarted one, and remove it at once while it
        // still held a lease). Nodes ask again for what is dropped.
        if let Some(earlier) = self.parked.take().filter(|e| e.term() + 1 == dir.term) {
            leader.inherit(earlier);
        }
        let announcement = self.announcement(dir.term, sh.me.clone(), None);
        for member in dir.ring.iter().filter(|n| n.id != sh.me.id) {
            out.send(member, announcement.clone());
        }
        leader.redrive(self.group.dir_mut(), sh, out);
        leader.resume(self.group.dir_mut(), sh, out);
        self.leader = Some(leader);
    }

    /// Between changes, when the ring needs other seats (it grew, shrank, or a seat's
    /// holder left), the leader changes them.
    fn maybe_change_seats(&mut self, sh: &Shared, out: &mut Out, events: &mut Vec<Event>) {
        let Some(leader) = &self.leader else { return };
        if !leader.is_between_changes() || self.group.is_stopping() {
            return;
        }
        // Without failure handling there is no timer to drive a group: one seat.
        if sh.timing.heartbeat_interval_ns == 0 {
            return;
        }
        // A ring coming back from its disks keeps this seat alone until the members it
        // waits for are back: only this node knows the wait, so a leader elected among
        // new seats would grant leases at once and serve keys whose only copies are
        // still on their way back. Alone, a crash of this node stops the ring instead,
        // and its restart takes the ring back (`Message::Rejoin`).
        if sh.comeback.holds(out.now) {
            return;
        }
        let desired = self.group.dir().desired_seats();
        if desired.is_empty() || desired == self.group.dir().seats {
            return;
        }
        let changed = self.group.reconfigure(desired, out);
        if self.group.is_stopping() || !changed.is_empty() {
            if let Some(leader) = &mut self.leader {
                leader.pause();
            }
        }
        events.extend(changed);
    }

    /// Keep the group timer armed while omnipaxos runs (or new seats wait).
    fn arm_tick(&self, sh: &Shared, out: &mut Out) {
        let interval = group_tick_ns(sh);
        if interval > 0 && (!self.group.dir().is_solo() || !self.welcoming.is_empty()) {
            out.arm(Timer::Group, out.after(interval));
        }
    }
}

/// How often the group timer fires: a fifth of a heartbeat interval, so omnipaxos'
/// election round lasts one heartbeat interval. 0 when failure handling is off.
pub(crate) fn group_tick_ns(sh: &Shared) -> Time {
    match sh.timing.heartbeat_interval_ns {
        0 => 0,
        hb => (hb / TICKS_PER_ROUND).max(1_000_000),
    }
}
