//! The coordinator group's consensus: an omnipaxos instance per group configuration,
//! driven by core timers, whose decided log every seat folds into its [`Directory`].
//!
//! A group of one seat (a ring of one or two members, or failure handling off) runs
//! without consensus: its seat decides alone. Seats change through omnipaxos' stop sign
//! (the old configuration seals its log, and the seats of the next one start a new
//! instance from the directory as of the stop sign); a seat that is new to the group
//! gets that directory in a `GroupJoin`.

use std::collections::BTreeMap;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::Message as PaxosMessage;
use omnipaxos::storage::{NoSnapshot, StopSign, Storage, StorageOp, StorageResult};
use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig as PaxosConfig, OmniPaxos, ServerConfig};
use serde::{Deserialize, Serialize};

use crate::message::{Message, NodeRef};
use crate::out::Out;
use crate::Time;

use super::directory::{decode_seats, encode_seats, Decision, Directory, Seat};

/// A consensus message between seats of configuration `config_id`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Consensus {
    /// The group configuration it belongs to; others are dropped.
    pub config_id: u32,
    /// Its number among the messages of this link (sender to receiver, in this
    /// configuration): one that arrives after a later one is dropped.
    #[serde(default)]
    pub seq: u64,
    /// The omnipaxos message.
    pub msg: PaxosMessage<Decision>,
}

impl PartialEq for Consensus {
    // omnipaxos messages do not implement equality; their debug form is complete.
    fn eq(&self, other: &Self) -> bool {
        self.config_id == other.config_id
            && self.seq == other.seq
            && format!("{:?}", self.msg) == format!("{:?}", other.msg)
    }
}

impl Eq for Consensus {}

/// Ticks per omnipaxos election round (a heartbeat round of its leader election), and
/// per round of the group's own periodic work (the leader's log length, the directory
/// for seats that lack it): one heartbeat interval. A seat replaces its leader only
/// after a round in which the leader did not answer and then one in which no seat was
/// content with it, so a dead leader is replaced after about two rounds.
pub(crate) const TICKS_PER_ROUND: u64 = 5;

/// Ticks without a message from omnipaxos' leader after which a seat counts it as
/// quiet (see [`Group::tick`]): more than a round, in which a live leader is heard at
/// least three times (its heartbeat request, its reply to this seat's, its log
/// length), so one late message does not make it quiet.
pub(crate) const QUIET_LEADER_TICKS: u64 = TICKS_PER_ROUND + 1;

/// Ticks without a message from the leader after which a seat tells the other seats
/// how long it has been (`Message::GroupQuiet`), every tick. A live leader's consensus
/// messages reach a seat at two points of each round, so gaps of a few ticks are
/// common and a healthy group sends a few of these a second.
const QUIET_REPORT_TICKS: u64 = 3;

/// What happened in the group during one input.
#[derive(Debug)]
pub(crate) enum Event {
    /// An entry was decided and folded into the directory.
    Decided(Decision),
    /// A stop sign was decided: the directory holds the next seats, and this seat runs
    /// the next configuration (or none, if it lost its seat).
    Reconfigured {
        /// The seats before.
        before: Vec<Seat>,
    },
}

/// One seat's part in the group.
pub(crate) struct Group {
    dir: Directory,
    /// The directory as this configuration began: what a new seat is sent, since it
    /// folds the configuration's whole log into it (the current directory has some of
    /// the log folded in already, and a new seat would apply those entries twice).
    start: Directory,
    me: NodeRef,
    incarnation: u64,
    /// The consensus instance of the current configuration; `None` when solo.
    instance: Option<OmniPaxos<Decision, LogStore>>,
    /// Entries of the current configuration's log folded into `dir`.
    applied: usize,
    /// A stop sign this seat proposed and that is not yet decided.
    stopping: bool,
    /// Times in a row the leader's log was seen longer than this seat's.
    behind: u32,
    /// Group timer ticks so far, and ticks in a row this seat has been omnipaxos' leader.
    ticks: u64,
    led_ticks: u32,
    /// Numbers of the last consensus message sent to, and received from, each seat
    /// (by pid): omnipaxos assumes each link keeps order, and drops what it loses; a
    /// message overtaken by a later one is dropped here, turning reordering into loss.
    sent_seq: BTreeMap<u64, u64>,
    recv_seq: BTreeMap<u64, u64>,
    /// When each other seat of this configuration was last heard from (by pid): a
    /// leader grants leases only while a majority of the group hears it.
    heard: BTreeMap<u64, Time>,
    /// When each other seat last showed it follows this seat's own ballot (by pid): the
    /// majority a leader needs to grant leases. A seat that follows a newer leader still
    /// sends this one messages (of the newer ballot), which count as heard, not here.
    following: BTreeMap<u64, Time>,
    /// Ticks since omnipaxos' leader (as this seat knows it) was last heard from.
    leader_quiet: u64,
    /// Ticks given to the current consensus instance (its election clock counts them
    /// from 0).
    op_ticks: u64,
    /// The last `GroupQuiet` report of each seat (by pid): when it arrived, and how
    /// many ticks the seat had gone without hearing from the leader.
    quiet_reports: BTreeMap<u64, (Time, u64)>,
    outgoing: Vec<PaxosMessage<Decision>>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("dir", &self.dir)
            .field("me", &self.me)
            .field("consensus", &self.instance.is_some())
            .field("applied", &self.applied)
            .field("stopping", &self.stopping)
            .finish()
    }
}

impl Group {
    /// The group of `me` in `incarnation`, from `dir` (its seats include it). `lead`
    /// prefers this seat as the next leader (it led the configuration before).
    pub(crate) fn new(dir: Directory, me: NodeRef, incarnation: u64, lead: bool) -> Group {
        let mut group = Group {
            start: dir.clone(),
            dir,
            me,
            incarnation,
            instance: None,
            applied: 0,
            stopping: false,
            behind: 0,
            ticks: 0,
            led_ticks: 0,
            sent_seq: BTreeMap::new(),
            recv_seq: BTreeMap::new(),
            heard: BTreeMap::new(),
            following: BTreeMap::new(),
            leader_quiet: 0,
            op_ticks: 0,
            quiet_reports: BTreeMap::new(),
            outgoing: Vec::new(),
        };
        group.start_instance(lead);
        group
    }

    fn start_instance(&mut self, lead: bool) {
        self.start = self.dir.clone();
        self.applied = 0;
        self.stopping = false;
        self.behind = 0;
        self.led_ticks = 0;
        self.sent_seq.clear();
        self.recv_seq.clear();
        self.heard.clear();
        self.following.clear();
        self.leader_quiet = 0;
        self.op_ticks = 0;
        self.quiet_reports.clear();
        self.instance = None;
        if self.dir.is_solo() {
            return;
        }
        let config = PaxosConfig {
            configuration_id: self.dir.config_id,
            nodes: (1..=self.dir.seats.len() as u64).collect(),
            flexible_quorum: None,
        };
        let server = ServerConfig {
            pid: self.my_pid(),
            election_tick_timeout: TICKS_PER_ROUND,
            resend_message_tick_timeout: 2,
            leader_priority: u32::from(lead),
            ..ServerConfig::default()
        };
        // A configuration the directory built is valid (two seats or more, pids from 1).
        self.instance = config.build_for_server(server, LogStore::default()).ok();
        if lead {
            // The seat that led the last configuration leads the next at once, rather
            // than after an election round.
            if let Some(op) = &mut self.instance {
                op.try_become_leader();
            }
        }
    }

    /// The directory as of the last decided entry.
    pub(crate) fn dir(&self) -> &Directory {
        &self.dir
    }

    /// The directory as this configuration began, for its new seats (see `start`).
    pub(crate) fn dir_at_start(&self) -> &Directory {
        &self.start
    }

    /// The directory, for the leader's changes to the ring it plans on (they are
    /// undone before they return; decided entries alone change it for good).
    pub(crate) fn dir_mut(&mut self) -> &mut Directory {
        &mut self.dir
    }

    /// This seat's consensus identity (0: no seat).
    pub(crate) fn my_pid(&self) -> u64 {
        self.dir.pid(&self.me, self.incarnation).unwrap_or(0)
    }

    /// Whether this seat may lead: it is the single seat, or omnipaxos' leader in the
    /// accept phase.
    pub(crate) fn is_leader(&self) -> bool {
        match &self.instance {
            None => self.is_seated(),
            Some(op) => op.get_current_leader() == Some((self.my_pid(), true)),
        }
    }

    /// Whether omnipaxos elected this seat, in either phase: a leader still gathering
    /// promises may be waiting for seats that never got the directory.
    pub(crate) fn is_elected(&self) -> bool {
        match &self.instance {
            None => self.is_seated(),
            Some(op) => op.get_current_leader().map(|(pid, _)| pid) == Some(self.my_pid()),
        }
    }

    /// The node this seat believes leads, if it knows.
    pub(crate) fn leader(&self) -> Option<&NodeRef> {
        let pid = match &self.instance {
            None => 1,
            Some(op) => op.get_current_leader()?.0,
        };
        self.dir.seat(pid).map(|s| &s.node)
    }

    /// Whether this seat follows a leader of its configuration that leads (omnipaxos'
    /// accept phase) and whose term was decided (a single seat follows nobody).
    pub(crate) fn follows_settled_leader(&self) -> bool {
        let me = self.my_pid();
        match &self.instance {
            None => !self.is_seated(),
            Some(op) => {
                let follows = op
                    .get_current_leader()
                    .is_some_and(|(pid, accepting)| pid != me && accepting);
                follows && self.applied > 0
            }
        }
    }

    /// This seat no longer leads: a stop sign it proposed is no longer its to wait for.
    pub(crate) fn forget_stopping(&mut self) {
        self.stopping = false;
    }

    /// Whether a stop sign is proposed and not decided yet (no change can be decided).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Propose `decision`. Alone, it is decided at once. `None` when omnipaxos refuses
    /// it (a stop sign is accepted: the configuration takes no more entries).
    pub(crate) fn propose(&mut self, decision: Decision, out: &mut Out) -> Option<Vec<Event>> {
        match &mut self.instance {
            None => {
                self.dir.apply(&decision);
                Some(vec![Event::Decided(decision)])
            }
            Some(op) => match op.append(decision) {
                Ok(()) => Some(self.poll(out)),
                Err(_) => None,
            },
        }
    }

    /// Propose the next seats: a stop sign, or alone, the switch itself.
    pub(crate) fn reconfigure(&mut self, seats: Vec<Seat>, out: &mut Out) -> Vec<Event> {
        let next_id = self.dir.config_id + 1;
        match &mut self.instance {
            None => {
                let before = std::mem::replace(&mut self.dir.seats, seats);
                self.dir.config_id = next_id;
                self.after_stop(before, true)
            }
            Some(op) => {
                // A single seat runs without omnipaxos, which wants two in a
                // configuration: the metadata names the seats.
                let next = PaxosConfig {
                    configuration_id: next_id,
                    nodes: (1..=seats.len().max(2) as u64).collect(),
                    flexible_quorum: None,
                };
                if op.reconfigure(next, Some(encode_seats(&seats))).is_ok() {
                    self.stopping = true;
                }
                self.poll(out)
            }
        }
    }

    /// A consensus message from a seat.
    pub(crate) fn on_consensus(&mut self, consensus: Consensus, out: &mut Out) -> Vec<Event> {
        let (from, to) = (consensus.msg.get_sender(), consensus.msg.get_receiver());
        let known = self.dir.seat(from).is_some();
        if consensus.config_id != self.dir.config_id || to != self.my_pid() || !known {
            return Vec::new();
        }
        let last = self.recv_seq.entry(from).or_insert(0);
        if consensus.seq <= *last {
            return Vec::new();
        }
        *last = consensus.seq;
        self.heard.insert(from, out.now);
        let Some(op) = &mut self.instance else {
            return Vec::new();
        };
        let mine = op.get_promise();
        if mine.pid == op.get_pid() && follows(&consensus.msg, mine) {
            self.following.insert(from, out.now);
        }
        if op.get_current_leader().is_some_and(|(pid, _)| pid == from) {
            self.leader_quiet = 0;
        }
        op.handle_incoming(consensus.msg);
        self.poll(out)
    }

    /// The latest time by which a majority of the seats (this one counted, as of `now`)
    /// had been heard from; `None` if a majority never was.
    pub(crate) fn majority_heard_since(&self, now: Time) -> Option<Time> {
        self.majority_since(&self.heard, now)
    }

    /// As [`Group::majority_heard_since`], counting only seats that showed they follow
    /// this seat's ballot (see `following`): what a leader needs to grant leases.
    pub(crate) fn majority_following_since(&self, now: Time) -> Option<Time> {
        self.majority_since(&self.following, now)
    }

    fn majority_since(&self, seen: &BTreeMap<u64, Time>, now: Time) -> Option<Time> {
        let others_needed = self.dir.seats.len() / 2;
        if others_needed == 0 || self.instance.is_none() {
            return Some(now);
        }
        let me = self.my_pid();
        let mut times: Vec<Time> = seen
            .iter()
            .filter(|(pid, _)| **pid != me)
            .map(|(_, t)| *t)
            .collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        times.get(others_needed - 1).copied()
    }

    /// The group timer: advance omnipaxos' clocks, and re-prepare seats that lag.
    ///
    /// When a majority of the seats (this one counted) has not heard from the leader
    /// for [`QUIET_LEADER_TICKS`], one of them stands for election at once: the one
    /// with the highest pid (the one omnipaxos' own election would
    /// prefer among them, so the two do not duel). Omnipaxos waits for a round in which
    /// the leader did not answer and then for one in which no seat was content with it,
    /// up to three rounds with a crash in mid-round; a crashed leader is removed the
    /// takeover wait after the election, so this removes it about a round sooner.
    /// It asks what omnipaxos asks (that no majority hears the leader), and the seat
    /// still needs a majority's promises: a leader that a majority hears keeps its
    /// place (as a leader must that may still be granting leases), and a seat cut off
    /// with a minority cannot stand.
    pub(crate) fn tick(&mut self, out: &mut Out, tick_ns: Time) -> Vec<Event> {
        let me = self.my_pid();
        let now = out.now;
        let candidate = self.eager_candidate(now, tick_ns);
        let Some(op) = &mut self.instance else {
            return Vec::new();
        };
        self.leader_quiet = self.leader_quiet.saturating_add(1);
        self.op_ticks += 1;
        if candidate == Some(me) {
            op.try_become_leader();
            // End omnipaxos' election round now (its clock counts ticks): the round's
            // end adopts the new ballot as this seat's own, so its heartbeat replies
            // carry it from the next round on. Left to the round's natural end, the
            // replies would carry the old ballot for up to a round, no seat would be
            // content with the new leader, and one would stand against it.
            while !self.op_ticks.is_multiple_of(TICKS_PER_ROUND) {
                op.tick();
                self.op_ticks += 1;
            }
            self.leader_quiet = 0;
            self.quiet_reports.clear();
        }
        let led_by_other = op.get_current_leader().is_some_and(|(pid, _)| pid != me);
        if led_by_other && self.leader_quiet >= QUIET_REPORT_TICKS {
            let msg = Message::GroupQuiet {
                config_id: self.dir.config_id,
                pid: me,
                quiet: self.leader_quiet,
            };
            for seat in self.dir.seats.iter().filter(|s| s.node.id != self.me.id) {
                out.send(&seat.node, msg.clone());
            }
        }
        op.tick();
        self.ticks += 1;
        if op.get_current_leader() == Some((me, true)) {
            self.led_ticks = self.led_ticks.saturating_add(1);
            if self.ticks.is_multiple_of(TICKS_PER_ROUND) {
                // Every round, the leader tells the seats how long its log is (see
                // `on_leader_log`).
                let msg = Message::GroupLog {
                    config_id: self.dir.config_id,
                    log_len: op.get_accepted_idx() as u64,
                    decided: op.get_decided_idx() as u64,
                };
                for seat in self.dir.seats.iter().filter(|s| s.node.id != self.me.id) {
                    out.send(&seat.node, msg.clone());
                }
            }
        } else {
            self.led_ticks = 0;
        }
        self.poll(out)
    }

    /// The seat that stands for election when the leader falls quiet: if this seat and
    /// the seats that said so within the last two ticks (`GroupQuiet`) have not heard
    /// from the leader for [`QUIET_LEADER_TICKS`] (a tick less for a report, which is
    /// up to a tick old), and they are a majority of the group, the highest pid among
    /// them.
    fn eager_candidate(&self, now: Time, tick_ns: Time) -> Option<u64> {
        let op = self.instance.as_ref()?;
        let (leader, _) = op.get_current_leader()?;
        let me = self.my_pid();
        if leader == me || self.leader_quiet < QUIET_LEADER_TICKS {
            return None;
        }
        let quiet: Vec<u64> = self
            .quiet_reports
            .iter()
            .filter(|(pid, (at, q))| {
                **pid != leader
                    && **pid != me
                    && now.saturating_sub(*at) <= 2 * tick_ns
                    && *q + 1 >= QUIET_LEADER_TICKS
            })
            .map(|(pid, _)| *pid)
            .chain([me])
            .collect();
        (quiet.len() > self.dir.seats.len() / 2)
            .then(|| quiet.iter().copied().max())
            .flatten()
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
        let seated = self.dir.seat(pid).is_some_and(|s| s.node.id == from.id);
        if config_id == self.dir.config_id && seated {
            self.quiet_reports.insert(pid, (now, quiet));
        }
    }

    /// Whether the last tick began a round of [`TICKS_PER_ROUND`] ticks.
    pub(crate) fn at_round(&self) -> bool {
        self.ticks.is_multiple_of(TICKS_PER_ROUND)
    }

    /// Whether this seat has led for a tick at least (alone: always). A new leader
    /// proposes its term only then, so the entry does not overtake the log it sends the
    /// seats when it takes over (the network may reorder them).
    pub(crate) fn settled_leader(&self) -> bool {
        self.instance.is_none() || self.led_ticks >= 1
    }

    /// The leader `leader` announced how long its log is. Omnipaxos expects each link to
    /// deliver in order and the network to say when a link comes back; ours may lose or
    /// reorder a message and says nothing, and a leader never sends again an entry a
    /// follower dropped. So a follower that sees the leader's log longer than its own
    /// twice in a row asks to be prepared again (as after a reconnection), and the
    /// leader sends it what it misses.
    pub(crate) fn on_leader_log(
        &mut self,
        leader: &NodeRef,
        config_id: u32,
        accepted: u64,
        decided: u64,
        out: &mut Out,
    ) -> Vec<Event> {
        let leader_pid = self
            .dir
            .seats
            .iter()
            .position(|s| s.node.id == leader.id)
            .map(|i| i as u64 + 1);
        let me = self.my_pid();
        if config_id != self.dir.config_id || leader_pid == Some(me) {
            return Vec::new();
        }
        let (Some(op), Some(pid)) = (&mut self.instance, leader_pid) else {
            return Vec::new();
        };
        // Behind the leader's log or decisions, or ahead of what it decided (its
        // acknowledgement of an entry this seat accepted was lost).
        let mine = op.get_accepted_idx() as u64;
        let my_decided = op.get_decided_idx() as u64;
        if mine < accepted || decided < mine || my_decided < decided {
            self.behind += 1;
        } else {
            self.behind = 0;
        }
        if self.behind >= 2 {
            self.behind = 0;
            op.reconnected(pid);
        }
        self.poll(out)
    }

    /// Send what omnipaxos queued, and fold in what it decided.
    fn poll(&mut self, out: &mut Out) -> Vec<Event> {
        let Some(op) = &mut self.instance else {
            return Vec::new();
        };
        op.take_outgoing_messages(&mut self.outgoing);
        let config_id = self.dir.config_id;
        for msg in self.outgoing.drain(..) {
            let to_pid = msg.get_receiver();
            if let Some(seat) = self.dir.seat(to_pid) {
                let to = seat.node.clone();
                let seq = self.sent_seq.entry(to_pid).or_insert(0);
                *seq += 1;
                let consensus = Consensus {
                    config_id,
                    seq: *seq,
                    msg,
                };
                out.send(&to, Message::Consensus(Box::new(consensus)));
            }
        }
        let mut events = Vec::new();
        let decided = op.read_decided_suffix(self.applied).unwrap_or_default();
        for entry in decided {
            self.applied += 1;
            match entry {
                LogEntry::Decided(decision) => {
                    self.dir.apply(&decision);
                    events.push(Event::Decided(decision));
                }
                LogEntry::StopSign(stop, true) => {
                    events.extend(self.on_stop_sign(stop));
                    break;
                }
                _ => {}
            }
        }
        events
    }

    /// A stop sign was decided: take the seats it names.
    fn on_stop_sign(&mut self, stop: StopSign) -> Vec<Event> {
        // Our own stop signs always carry the seats; one without leaves this seat alone.
        let seats = stop
            .metadata
            .as_deref()
            .and_then(decode_seats)
            .unwrap_or_default();
        let led = self.is_leader();
        let before = std::mem::replace(&mut self.dir.seats, seats);
        self.dir.config_id = stop.next_config.configuration_id;
        self.after_stop(before, led)
    }

    fn after_stop(&mut self, before: Vec<Seat>, led: bool) -> Vec<Event> {
        // A seat that lost its seat still sends the new seats the directory.
        self.start = self.dir.clone();
        if self.is_seated() {
            self.start_instance(led);
        } else {
            self.instance = None;
        }
        vec![Event::Reconfigured { before }]
    }

    /// Whether this node still holds a seat.
    pub(crate) fn is_seated(&self) -> bool {
        self.my_pid() != 0
    }

    /// The seats other than this one.
    pub(crate) fn other_seats(&self) -> Vec<NodeRef> {
        self.dir
            .seats
            .iter()
            .filter(|s| s.node.id != self.me.id)
            .map(|s| s.node.clone())
            .collect()
    }
}

/// The in-memory log omnipaxos keeps through this seat.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogStore {
    log: Vec<Decision>,
    promise: Option<Ballot>,
    accepted_round: Option<Ballot>,
    decided: usize,
    trimmed: usize,
    compacted: usize,
    stopsign: Option<StopSign>,
}

impl Storage<Decision> for LogStore {
    fn write_atomically(&mut self, ops: Vec<StorageOp<Decision>>) -> StorageResult<()> {
        for op in ops {
            match op {
                StorageOp::AppendEntry(entry) => self.append_entry(entry)?,
                StorageOp::AppendEntries(entries) => self.append_entries(entries)?,
                StorageOp::AppendOnPrefix(from, entries) => self.append_on_prefix(from, entries)?,
                StorageOp::SetPromise(b) => self.set_promise(b)?,
                StorageOp::SetDecidedIndex(i) => self.set_decided_idx(i)?,
                StorageOp::SetAcceptedRound(b) => self.set_accepted_round(b)?,
                StorageOp::SetCompactedIdx(i) => self.set_compacted_idx(i)?,
                StorageOp::Trim(i) => self.trim(i)?,
                StorageOp::SetStopsign(s) => self.set_stopsign(s)?,
                StorageOp::SetSnapshot(s) => self.set_snapshot(s)?,
            }
        }
        Ok(())
    }

    fn append_entry(&mut self, entry: Decision) -> StorageResult<()> {
        self.log.push(entry);
        Ok(())
    }

    fn append_entries(&mut self, mut entries: Vec<Decision>) -> StorageResult<()> {
        self.log.append(&mut entries);
        Ok(())
    }

    fn append_on_prefix(&mut self, from: usize, entries: Vec<Decision>) -> StorageResult<()> {
        self.log.truncate(from.saturating_sub(self.trimmed));
        self.append_entries(entries)
    }

    fn set_promise(&mut self, promise: Ballot) -> StorageResult<()> {
        self.promise = Some(promise);
        Ok(())
    }

    fn set_decided_idx(&mut self, decided: usize) -> StorageResult<()> {
        self.decided = decided;
        Ok(())
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        Ok(self.decided)
    }

    fn set_accepted_round(&mut self, round: Ballot) -> StorageResult<()> {
        self.accepted_round = Some(round);
        Ok(())
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.accepted_round)
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<Decision>> {
        let (from, to) = (
            from.saturating_sub(self.trimmed),
            to.saturating_sub(self.trimmed),
        );
        Ok(self.log.get(from..to).unwrap_or(&[]).to_vec())
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.log.len())
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<Decision>> {
        let from = from.saturating_sub(self.trimmed);
        Ok(self.log.get(from..).unwrap_or(&[]).to_vec())
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.promise)
    }

    fn set_stopsign(&mut self, stopsign: Option<StopSign>) -> StorageResult<()> {
        self.stopsign = stopsign;
        Ok(())
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.stopsign.clone())
    }

    fn trim(&mut self, trimmed: usize) -> StorageResult<()> {
        let n = trimmed.saturating_sub(self.trimmed).min(self.log.len());
        self.log.drain(0..n);
        self.trimmed = trimmed;
        Ok(())
    }

    fn set_compacted_idx(&mut self, compacted: usize) -> StorageResult<()> {
        self.compacted = compacted;
        Ok(())
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        Ok(self.compacted)
    }

    fn set_snapshot(&mut self, _snapshot: Option<NoSnapshot>) -> StorageResult<()> {
        Ok(())
    }

    fn get_snapshot(&self) -> StorageResult<Option<NoSnapshot>> {
        Ok(None)
    }
}

/// Whether `msg` shows that its sender follows the leader of ballot `mine`: a heartbeat
/// reply naming it as the leader, or a promise or an acceptance in its round.
fn follows(msg: &PaxosMessage<Decision>, mine: Ballot) -> bool {
    use omnipaxos::messages::ballot_leader_election::HeartbeatMsg;
    use omnipaxos::messages::sequence_paxos::PaxosMsg;
    match msg {
        PaxosMessage::BLE(ble) => matches!(&ble.msg, HeartbeatMsg::Reply(r) if r.leader == mine),
        PaxosMessage::SequencePaxos(p) => match &p.msg {
            PaxosMsg::Promise(promise) => promise.n == mine,
            PaxosMsg::Accepted(accepted) => accepted.n == mine,
            _ => false,
        },
        // omnipaxos adds a variant with its `async_runtime` feature (off here).
        #[allow(unreachable_patterns)]
        _ => false,
    }
}
