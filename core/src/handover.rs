//! Hand-over: moving a key range to the node that gains it during a membership change.
//!
//! The **gainer** fetches the range from its sources (a snapshot in chunks) while it
//! prepares its next view. Each **source** then forwards every write it applies in that
//! range (`Forward`, acknowledged one by one) until the change commits, and for a grace
//! period afterwards. A source acknowledges its commit to the coordinator only when its
//! forwards have all arrived, so a new holder never starts serving without a write its
//! source acknowledged.
//!
//! Every write to the store goes through [`Handover::apply`], which forwards it.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Consistency;
use crate::id::Id;
use crate::message::{Action, Message, NodeRef, Routed, Writer, REPAIR_TTL};
use crate::out::Out;
use crate::rejected::Rejected;
use crate::shared::Shared;
use crate::store::{Applied, Entry, Range};
use crate::timers::Timer;
use crate::Time;

/// How long a primary or source waits for an acknowledgement before sending again.
pub(crate) const RESEND_INTERVAL_NS: Time = 50_000_000;

/// Resends of a hand-over's unacknowledged forwards before its commit (the commit, when
/// it arrives, sends them again too).
const FORWARD_RESENDS_MAX: u32 = 40;

/// Writes a source forwards to one node fetching a range from it.
#[derive(Clone, Debug)]
struct Migration {
    to: NodeRef,
    range: Range,
    epoch: u64,
    /// Set when the epoch commits: forwarding stops at this time.
    until: Option<Time>,
    next_seq: u64,
    /// Forwards sent before the commit and not yet acknowledged.
    unacked: BTreeMap<u64, (String, Entry, Option<Writer>)>,
    /// Unacknowledged forwards to a node the coordinator was removing
    /// ([`Handover::give_up_on`]): no longer awaited, but sent again every heartbeat
    /// until acknowledged or the hand-over's grace period ends, for the node may be
    /// heard again and its removal dropped (CRAQ over virtual nodes, seed 96: a joiner
    /// cut off for 4 s became the head of a key without a write its source acknowledged
    /// meanwhile, and the write lived on the tail alone).
    given_up: BTreeMap<u64, (String, Entry, Option<Writer>)>,
    /// Times the unacknowledged forwards were sent again before the commit.
    resends: u32,
}

impl Migration {
    fn unacked_forwards(&self) -> impl Iterator<Item = (NodeRef, Message)> + '_ {
        self.forwards_of(&self.unacked)
    }

    fn forwards_of<'a>(
        &'a self,
        pending: &'a BTreeMap<u64, (String, Entry, Option<Writer>)>,
    ) -> impl Iterator<Item = (NodeRef, Message)> + 'a {
        pending.iter().map(|(seq, (key, entry, writer))| {
            let msg = Message::Forward {
                epoch: self.epoch,
                seq: *seq,
                key: key.clone(),
                entry: entry.clone(),
                ttl: REPAIR_TTL,
                writer: writer.clone(),
            };
            (self.to.clone(), msg)
        })
    }
}

impl Fetch {
    /// Ask every source for `range` (each named in `parts` for its part only) as of
    /// change `epoch`, and wait for their snapshots.
    fn start(
        out: &mut Out,
        (epoch, range): (u64, Range),
        sources: &[NodeRef],
        parts: BTreeMap<Id, Range>,
        have: Vec<u64>,
    ) -> Fetch {
        for source in sources {
            let have = have.clone();
            let range = parts.get(&source.id).copied().unwrap_or(range);
            out.send(source, Message::Fetch { epoch, range, have });
        }
        Fetch {
            epoch,
            range,
            parts,
            pending: sources.iter().map(|s| (s.id, BTreeSet::new())).collect(),
            order: sources.to_vec(),
            received: BTreeMap::new(),
            marks: BTreeMap::new(),
            have,
            only: BTreeMap::new(),
        }
    }

    /// Ask `source` again unless it has sent something since the last time (a large
    /// snapshot may simply still be arriving). False if it is not a source still to
    /// answer.
    fn ask_again(&mut self, out: &mut Out, source: &NodeRef) -> bool {
        let Some(seen) = self.pending.get(&source.id) else {
            return false;
        };
        let mark = self.marks.entry(source.id).or_insert(0);
        if seen.len() > *mark {
            *mark = seen.len();
        } else {
            let range = self.parts.get(&source.id).copied().unwrap_or(self.range);
            let (epoch, have) = (self.epoch, self.have.clone());
            out.send(source, Message::Fetch { epoch, range, have });
        }
        true
    }
}

/// A completed fetch: the entries, merged, and whether it was a repair's.
type Fetched = (BTreeMap<String, Entry>, bool);

/// What a gainer is fetching.
#[derive(Clone, Debug)]
struct Fetch {
    epoch: u64,
    range: Range,
    /// Sources asked for only part of `range` (see `Prepare::pieces`), with that part.
    parts: BTreeMap<Id, Range>,
    /// Sources still to answer, with the snapshot chunks received from each.
    pending: BTreeMap<Id, BTreeSet<u32>>,
    /// Sources nearest first: with several, each key is taken from the nearest that has
    /// it (see [`Handover::on_snapshot`]).
    order: Vec<NodeRef>,
    received: BTreeMap<Id, Vec<(String, Entry)>>,
    /// Chunks each source had delivered when the prepare last arrived: a source that
    /// has sent more since is making progress and is not asked again.
    marks: BTreeMap<Id, usize>,
    /// What this node already holds of `range` (see `Message::Fetch::have`).
    have: Vec<u64>,
    /// Sources whose snapshots are taken for these ranges only (see
    /// [`Handover::start_fetch_pieces`]).
    only: BTreeMap<Id, Vec<Range>>,
}

/// Both sides of every hand-over this node takes part in.
#[derive(Debug, Default)]
pub(crate) struct Handover {
    migrations: Vec<Migration>,
    fetch: Option<Fetch>,
    /// The repair fetch of a node in doubt (`Shared::unsure`), apart from the fetch of a
    /// change it prepares meanwhile, which must not replace it.
    repair: Option<Fetch>,
    /// Fetches asked of this node while it was in doubt: answered once its repair is
    /// done (from, epoch, range, digests).
    deferred: Vec<(NodeRef, u64, Range, Vec<u64>)>,
    /// A commit whose acknowledgement waits for forwards to be acknowledged.
    ack_pending: Option<u64>,
    /// With virtual nodes under chain replication, the sources of the change being
    /// prepared (its epoch) named for several pieces, with their pieces: a forward from
    /// one of them of a key another source was named for is not taken (that source may
    /// be upstream of the key's tail and send writes its chain never committed).
    designated: Option<(u64, BTreeMap<Id, Vec<Range>>)>,
    /// Eventual consistency: keys forwarded to this node for changes it prepared and has
    /// not committed, by epoch. Their primary answered the client before it replicated,
    /// and may have counted this copy among the few it made.
    forwarded: BTreeMap<u64, BTreeSet<String>>,
    /// Entries of `forwarded` keys the store dropped (the change was abandoned, or the
    /// view that committed does not hold them): sent to their primaries as repairs every
    /// heartbeat until one acknowledges (`HintAck`), so a write whose other copies crashed
    /// is not lost with the change (hinted hand-off).
    hints: BTreeMap<String, Entry>,
}

/// Hints sent per heartbeat (the rest wait for the next ones).
const HINTS_PER_TICK: usize = 256;

/// Hints a node out of the ring sends per heartbeat: a departed chain node hands over
/// every entry it held, and its operator waits for them to be acknowledged before
/// stopping it (at 256 a heartbeat, 21,500 entries took 17 s on a 10-node ring).
const DEPARTED_HINTS_PER_TICK: usize = 1024;

/// Keep `entry` of `key` as a hint, unless a hint of a newer version is held or the
/// hints are at their bound.
fn hint(hints: &mut BTreeMap<String, Entry>, sh: &Shared, key: &str, entry: &Entry) {
    let newer = hints.get(key).is_none_or(|h| h.version < entry.version);
    if newer && (hints.contains_key(key) || hints.len() < sh.limits.handover_unacked_max) {
        hints.insert(key.to_string(), entry.clone());
    }
}

impl Handover {
    // ----- every write -----

    /// Apply `entry` to the store; a newer entry is also forwarded to any node fetching a
    /// range that holds the key.
    pub(crate) fn apply(&mut self, sh: &mut Shared, out: &mut Out, key: &str, entry: Entry) {
        self.apply_write(sh, out, key, entry, None);
    }

    /// As [`Handover::apply`], for a client write (`writer`: its origin, and whether the
    /// key existed before it): its forwards name it.
    pub(crate) fn apply_write(
        &mut self,
        sh: &mut Shared,
        out: &mut Out,
        key: &str,
        entry: Entry,
        writer: Option<Writer>,
    ) {
        self.apply_sent(sh, out, (key, entry), writer, 0);
    }

    /// Apply `entry`, and forward it if newer, except to the targets of hand-overs
    /// already in the view of epoch `sent_under` its sender had (see
    /// [`Handover::forward`]).
    fn apply_sent(
        &mut self,
        sh: &mut Shared,
        out: &mut Out,
        (key, entry): (&str, Entry),
        writer: Option<Writer>,
        sent_under: u64,
    ) {
        let applied = sh.store.apply(out.now, key, entry.clone());
        if applied == Applied::Changed {
            self.forward(sh, out, (key, &entry), REPAIR_TTL, writer, sent_under);
        }
    }

    /// A replica write arrived, sent under its primary's view of epoch `sent_under` (0:
    /// not known): store it if this node should hold the key; otherwise, unless it is
    /// itself a repair, pass it to whoever took the range over and to the key's current
    /// primary (which re-replicates it).
    pub(crate) fn offer(
        &mut self,
        sh: &mut Shared,
        out: &mut Out,
        (key, entry): (&str, Entry),
        ttl: u8,
        sent_under: u64,
    ) {
        if sh.accepts(Id::of_key(key)) {
            return self.apply_sent(sh, out, (key, entry), None, sent_under);
        }
        if ttl > 0 {
            self.forward(sh, out, (key, &entry), ttl - 1, None, 0);
            repair(out, key, entry, ttl - 1);
        }
    }

    /// Send a write to every node fetching a range that holds its key, but not, after
    /// its hand-over committed, to one the write's primary sent it to itself (its view,
    /// of epoch `sent_under`, already had that hand-over; 0: not known).
    fn forward(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        (key, entry): (&str, &Entry),
        ttl: u8,
        writer: Option<Writer>,
        sent_under: u64,
    ) {
        if self.migrations.is_empty() {
            return;
        }
        let now = out.now;
        self.migrations.retain(|m| m.until.is_none_or(|t| t > now));
        let id = Id::of_key(key);
        let cap = sh.limits.handover_unacked_max;
        let mut tracked = false;
        let chain = sh.config.consistency.is_chain();
        // A view at or after the hand-over's lists the target wherever it holds the key.
        let sent_there = |m: &Migration| m.until.is_some() && m.epoch <= sent_under;
        for m in self
            .migrations
            .iter_mut()
            .filter(|m| m.range.contains(id) && !sent_there(m))
        {
            if chain && sh.precedes_past_another(id, m.to.id) {
                // A chain write reaches a replica only through the replicas before it. A
                // migration can outlive the view in which its target came next (a member
                // joined between them); forwarded past that member, the write would let
                // the target (perhaps the tail) serve what the member never had, and a
                // chain later rebuilt from the member would lose a value clients read.
                continue;
            }
            let seq = m.next_seq;
            m.next_seq += 1;
            // Only forwards sent before the commit gate the commit's acknowledgement;
            // those sent during the grace period afterwards are best effort.
            if m.until.is_none() && m.unacked.len() < cap {
                m.unacked
                    .insert(seq, (key.to_string(), entry.clone(), writer.clone()));
                tracked = true;
            }
            let msg = Message::Forward {
                epoch: m.epoch,
                seq,
                key: key.to_string(),
                entry: entry.clone(),
                ttl,
                writer: writer.clone(),
            };
            out.send(&m.to, msg);
        }
        if tracked {
            out.arm(Timer::Replicate, out.after(RESEND_INTERVAL_NS));
        }
    }

    // ----- source side -----

    /// A gainer asks for `range` as of change `epoch`: send it, then forward writes in it.
    pub(crate) fn on_fetch(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        from: NodeRef,
        epoch: u64,
        range: Range,
        have: &[u64],
    ) -> Result<(), Rejected> {
        if !sh.is_member() {
            return Err(Rejected::not_member("fetch", &from, sh.phase));
        }
        if sh.unsure && sh.config.consistency.is_chain() {
            // In doubt, this node may lack writes its chains acknowledged: a fetcher that
            // took its store could serve as a new tail without them (k = 5, seed 4344: a
            // new leader in doubt prepared its next change, and a member fetched from
            // it). It answers once its repair is done.
            self.deferred
                .retain(|(f, e, ..)| !(*f == from && *e == epoch));
            if self.deferred.len() < sh.limits.migrations_max {
                self.deferred.push((from, epoch, range, have.to_vec()));
            }
            return Ok(());
        }
        let mut entries = match have.is_empty() {
            true => sh.store.entries_in(range),
            false => sh.store.entries_differing(range, have),
        };
        if sh.config.consistency.is_chain() {
            // Only what this node holds for the ring: its installed range, and what it
            // gains in the same change. Anything else is left over from a change that was
            // never decided (a cut-off leader prepares changes it cannot decide), not yet
            // trimmed because this node has not heard of the next change; a fetch that
            // took it could make the fetcher, as a new tail, serve a write no chain ever
            // committed (CRAQ partitions, seed 8930).
            let held = sh.responsibility();
            let gaining = sh.gaining.filter(|g| g.epoch == epoch).map(|g| g.range);
            entries.retain(|(key, _)| {
                let id = Id::of_key(key);
                held.contains(id) || gaining.is_some_and(|r| r.contains(id))
            });
        }
        let chunks = chunk_entries(
            entries,
            sh.limits.snapshot_chunk_entries,
            sh.limits.snapshot_chunk_bytes,
        );
        let count = chunks.len() as u32;
        for (chunk, entries) in chunks.into_iter().enumerate() {
            let msg = Message::Snapshot {
                epoch,
                chunk: chunk as u32,
                chunks: count,
                entries,
            };
            out.send(&from, msg);
        }
        let known = self
            .migrations
            .iter()
            .any(|m| m.to == from && m.epoch == epoch);
        if !known && self.migrations.len() < sh.limits.migrations_max {
            // A repair fetch for a change already installed here forwards for the grace
            // period only, untracked.
            let until = (sh.is_member() && epoch <= sh.view.epoch)
                .then(|| out.after(sh.timing.handover_grace_ns));
            self.migrations.push(Migration {
                to: from,
                range,
                epoch,
                until,
                next_seq: 0,
                unacked: BTreeMap::new(),
                given_up: BTreeMap::new(),
                resends: 0,
            });
        }
        Ok(())
    }

    /// A source forwarded a write it applied in a range this node is taking over: taken
    /// like a replica write, and acknowledged. Under chain replication a forward for a
    /// change this node is neither preparing nor has installed belongs to an abandoned
    /// change: its source may be upstream of this node's chain position, so it is
    /// acknowledged but not applied.
    #[allow(clippy::too_many_arguments)] // the fields of `Message::Forward`
    pub(crate) fn on_forward(
        &mut self,
        sh: &mut Shared,
        out: &mut Out,
        from: &NodeRef,
        epoch: u64,
        seq: u64,
        key: &str,
        entry: Entry,
        ttl: u8,
    ) {
        let take = !self.designated_elsewhere(from, epoch, key);
        if take && (sh.is_current_epoch(epoch) || !sh.config.consistency.is_chain()) {
            if !sh.config.consistency.is_chain() && epoch > sh.view.epoch {
                let held: usize = self.forwarded.values().map(BTreeSet::len).sum();
                if held < sh.limits.handover_unacked_max {
                    self.forwarded
                        .entry(epoch)
                        .or_default()
                        .insert(key.to_string());
                }
            }
            self.offer(sh, out, (key, entry), ttl, 0);
        }
        // A later change may have taken the key elsewhere: say what this node holds, or
        // the source would go on forwarding every write in the range for the rest of its
        // grace period, each sent on from here to the key's primary (after the joins that
        // formed a ring of 10, k = 5, about 30 forwards for every write).
        let eventual = !sh.config.consistency.is_chain();
        let held = match eventual && !sh.accepts(Id::of_key(key)) {
            true => sh.accepted_range(),
            false => None,
        };
        out.send(from, Message::ForwardAck { epoch, seq, held });
    }

    /// The store is about to keep only `keep` (`None`: nothing): entries forwarded for
    /// changes not committed here whose keys fall outside it become hints.
    pub(crate) fn hint_dropped(&mut self, sh: &Shared, keep: Option<Range>) {
        if self.forwarded.is_empty() {
            return;
        }
        for keys in self.forwarded.values_mut() {
            keys.retain(|k| {
                let kept = keep.is_some_and(|r| r.contains(Id::of_key(k)));
                if !kept {
                    if let Some(e) = sh.store.get(k) {
                        hint(&mut self.hints, sh, k, e);
                    }
                }
                kept
            });
        }
        self.forwarded.retain(|_, keys| !keys.is_empty());
    }

    /// Every entry of the store outside `keep` becomes a hint (up to the bound): for a
    /// node about to drop them while some may be the last copies of acknowledged writes.
    pub(crate) fn hint_outside(&mut self, sh: &Shared, keep: Range) {
        for (key, entry) in sh.store.entries_in(Range::All) {
            if !keep.contains(Id::of_key(&key)) {
                hint(&mut self.hints, sh, &key, &entry);
            }
        }
    }

    /// Every entry of the store becomes a hint (up to the bound): for a node about to
    /// drop them all while some may be the last copies of acknowledged writes.
    pub(crate) fn hint_all(&mut self, sh: &Shared) {
        for (key, entry) in sh.store.entries_in(Range::All) {
            hint(&mut self.hints, sh, &key, &entry);
        }
    }

    /// Change `epoch` committed here and the store was trimmed to its view: what was
    /// forwarded for it, or for older changes, and is still held is held for good.
    pub(crate) fn forget_forwarded(&mut self, epoch: u64) {
        self.forwarded.retain(|e, _| *e > epoch);
    }

    /// Send the hints to their keys' primaries: routed from here by a member, through
    /// the coordinator by a node that is not one (it cannot route).
    pub(crate) fn send_hints(&self, sh: &Shared, out: &mut Out) {
        if self.hints.is_empty() {
            return;
        }
        // No request waits on a hint: its origin only says where the `HintAck` goes.
        let origin = sh.origin(0);
        let (via, per_tick) = match sh.is_member() {
            true => (sh.me.addr.clone(), HINTS_PER_TICK),
            false => (sh.coordinator.clone(), DEPARTED_HINTS_PER_TICK),
        };
        for (key, entry) in self.hints.iter().take(per_tick) {
            let routed = Routed {
                origin: Some(origin.clone()),
                key: key.clone(),
                action: Action::Repair {
                    entry: entry.clone(),
                    ttl: REPAIR_TTL,
                },
                hops: 0,
                laps: 0,
                redriven: false,
            };
            out.send_addr(&via, Message::Route(routed));
        }
    }

    /// Hints not yet acknowledged.
    pub(crate) fn hints_len(&self) -> usize {
        self.hints.len()
    }

    /// A primary applied the hint of `key` at `version`.
    pub(crate) fn on_hint_ack(&mut self, key: &str, version: crate::store::Version) {
        if self.hints.get(key).is_some_and(|h| h.version <= version) {
            self.hints.remove(key);
        }
    }

    /// The gainer got forward `seq` of change `epoch`; if it did not hold the key, it
    /// says what it holds (`held`), and only writes in that range are forwarded to it
    /// from now on.
    pub(crate) fn on_forward_ack(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        from: &NodeRef,
        (epoch, seq): (u64, u64),
        held: Option<Range>,
    ) {
        for m in self
            .migrations
            .iter_mut()
            .filter(|m| m.to == *from && m.epoch == epoch)
        {
            m.unacked.remove(&seq);
            m.given_up.remove(&seq);
            if let Some(narrower) = held.and_then(|h| m.range.intersect(h)) {
                m.range = narrower;
            }
        }
        if let Some(pending) = self.ack_pending {
            self.ack_when_handed_over(sh, out, pending);
        }
    }

    /// Change `epoch` committed here: forwarding for it (and older ones) ends after the
    /// grace period.
    pub(crate) fn committed(&mut self, epoch: u64, until: Time) {
        for m in self.migrations.iter_mut().filter(|m| m.epoch <= epoch) {
            m.until.get_or_insert(until);
        }
    }

    /// Acknowledge commit `epoch` once every forward this node sent for it has arrived
    /// (the coordinator lets new holders serve only after that).
    pub(crate) fn ack_when_handed_over(&mut self, sh: &Shared, out: &mut Out, epoch: u64) {
        let waiting = self
            .migrations
            .iter()
            .any(|m| m.epoch <= epoch && !m.unacked.is_empty());
        if waiting {
            self.ack_pending = Some(epoch);
            return;
        }
        self.ack_pending = None;
        out.send_addr(&sh.coordinator, Message::Ack { epoch });
    }

    /// The coordinator is removing `nodes`: forwards to them need not arrive. A commit
    /// acknowledgement that waited only for those goes now.
    pub(crate) fn give_up_on(&mut self, sh: &Shared, out: &mut Out, nodes: &[NodeRef]) {
        for m in self.migrations.iter_mut() {
            if nodes.iter().any(|n| n.id == m.to.id) {
                let gone = std::mem::take(&mut m.unacked);
                m.given_up.extend(gone);
            }
        }
        if let Some(pending) = self.ack_pending {
            self.ack_when_handed_over(sh, out, pending);
        }
    }

    /// Whether the acknowledgement of commit `epoch` waits for forwards.
    pub(crate) fn is_ack_pending(&self, epoch: u64) -> bool {
        self.ack_pending == Some(epoch)
    }

    /// The commit was sent again while its acknowledgement waits: resend the forwards.
    pub(crate) fn resend_forwards(&mut self, out: &mut Out, epoch: u64) {
        for m in self.migrations.iter().filter(|m| m.epoch <= epoch) {
            for (to, msg) in m.unacked_forwards() {
                out.send(&to, msg);
            }
        }
    }

    /// Unacknowledged forwards before their change commits: sent again (a bounded number
    /// of times), so a lost one does not wait for the commit — the source may crash
    /// first, and with it the only copy of a write its chain acknowledged. Whether any
    /// is still waiting.
    pub(crate) fn resend_pending(&mut self, out: &mut Out) -> bool {
        let mut pending = false;
        for m in self.migrations.iter_mut() {
            if m.until.is_some() || m.unacked.is_empty() || m.resends >= FORWARD_RESENDS_MAX {
                continue;
            }
            m.resends += 1;
            pending = true;
            for (to, msg) in m.unacked_forwards() {
                out.send(&to, msg);
            }
        }
        pending
    }

    /// Heartbeat: forwards given up on (see `Migration::given_up`) go again, until their
    /// hand-over's grace period ends.
    pub(crate) fn resend_given_up(&mut self, out: &mut Out) {
        let now = out.now;
        for m in &mut self.migrations {
            if m.until.is_some_and(|t| t <= now) {
                m.given_up.clear();
            }
        }
        for m in &self.migrations {
            for (to, msg) in m.forwards_of(&m.given_up) {
                out.send(&to, msg);
            }
        }
    }

    /// Change `epoch` was abandoned: stop forwarding for it.
    pub(crate) fn abort(&mut self, epoch: u64) {
        self.migrations.retain(|m| m.epoch != epoch);
        if self.fetch.as_ref().is_some_and(|f| f.epoch == epoch) {
            self.fetch = None;
        }
    }

    /// This node left the ring. Forwards still unacknowledged stay, to be sent again.
    pub(crate) fn leave(&mut self) {
        self.migrations.retain(|m| !m.unacked.is_empty());
        self.fetch = None;
        // A departing node hands its whole range over (`push_own_range`); hints it holds
        // stay, sent while it still runs.
        self.forwarded.clear();
    }

    // ----- gainer side -----

    /// Fetch `range` for change `epoch` from `sources` (nearest first), telling them by
    /// `have` (fetch digests; empty: nothing) what this node already holds of it.
    /// Returns true when there is nothing to fetch.
    pub(crate) fn start_fetch(
        &mut self,
        out: &mut Out,
        epoch: u64,
        range: Range,
        sources: &[NodeRef],
        have: Vec<u64>,
    ) -> bool {
        self.start_fetch_parts(out, epoch, range, sources, BTreeMap::new(), have)
    }

    /// As [`Handover::start_fetch`], each source asked for its own part of `range` only
    /// (see `Prepare::pieces`).
    pub(crate) fn start_fetch_pieces(
        &mut self,
        out: &mut Out,
        epoch: u64,
        range: Range,
        pieces: &[crate::message::Piece],
    ) -> bool {
        let (sources, parts, only) = by_source(pieces);
        let several = only.values().any(|ranges| ranges.len() > 1);
        self.designated = several.then(|| (epoch, only.clone()));
        let started = self.start_fetch_parts(out, epoch, range, &sources, parts, Vec::new());
        if let Some(f) = &mut self.fetch {
            f.only = only;
        }
        started
    }

    /// Whether a forward of `key` for change `epoch` from `from` is one to take: not when
    /// the change named another source for the key (see [`Handover::start_fetch_pieces`]).
    fn designated_elsewhere(&self, from: &NodeRef, epoch: u64, key: &str) -> bool {
        let Some((e, only)) = &self.designated else {
            return false;
        };
        let Some(ranges) = only.get(&from.id).filter(|_| *e == epoch) else {
            return false;
        };
        let id = Id::of_key(key);
        !ranges.iter().any(|r| r.contains(id))
    }

    fn start_fetch_parts(
        &mut self,
        out: &mut Out,
        epoch: u64,
        range: Range,
        sources: &[NodeRef],
        parts: BTreeMap<Id, Range>,
        have: Vec<u64>,
    ) -> bool {
        self.fetch = None;
        if sources.is_empty() {
            return true;
        }
        self.fetch = Some(Fetch::start(out, (epoch, range), sources, parts, have));
        false
    }

    /// A node in doubt asks `source` again for `range` as of its installed view `epoch`
    /// (see `Membership::repair_if_source_failed`).
    pub(crate) fn start_repair(
        &mut self,
        out: &mut Out,
        epoch: u64,
        range: Range,
        source: &NodeRef,
    ) {
        let sources = std::slice::from_ref(source);
        self.repair = Some(Fetch::start(
            out,
            (epoch, range),
            sources,
            BTreeMap::new(),
            Vec::new(),
        ));
    }

    /// As [`Handover::start_repair`], each piece of `range` from its own source (chains
    /// over virtual nodes: see `Shared::upstream_pieces`).
    pub(crate) fn start_repair_pieces(
        &mut self,
        out: &mut Out,
        epoch: u64,
        range: Range,
        pieces: &[crate::message::Piece],
    ) {
        let (sources, parts, only) = by_source(pieces);
        let mut repair = Fetch::start(out, (epoch, range), &sources, parts, Vec::new());
        repair.only = only;
        self.repair = Some(repair);
    }

    /// Whether every source the repair in progress still waits for passes `stays`.
    pub(crate) fn repair_sources_all(&self, stays: impl Fn(&&NodeRef) -> bool) -> bool {
        let Some(f) = &self.repair else { return false };
        !f.pending.is_empty()
            && f.order
                .iter()
                .filter(|s| f.pending.contains_key(&s.id))
                .all(|s| stays(&s))
    }

    /// Ask each source the repair in progress still waits for again, if it has sent
    /// nothing since the last time.
    pub(crate) fn ask_repair_again(&mut self, out: &mut Out) {
        let Some(f) = &mut self.repair else { return };
        let waiting: Vec<NodeRef> = f
            .order
            .iter()
            .filter(|s| f.pending.contains_key(&s.id))
            .cloned()
            .collect();
        for source in &waiting {
            f.ask_again(out, source);
        }
    }

    /// Epoch of the repair fetch in progress, if one is.
    pub(crate) fn repair_epoch(&self) -> Option<u64> {
        self.repair.as_ref().map(|f| f.epoch)
    }

    /// Ask for the repair again: of `source` afresh if it is another node than before,
    /// else only if nothing has arrived since the last time.
    pub(crate) fn refetch_repair(&mut self, out: &mut Out, source: &NodeRef) {
        let Some(f) = &mut self.repair else { return };
        if !f.ask_again(out, source) {
            let (epoch, range) = (f.epoch, f.range);
            self.start_repair(out, epoch, range, source);
        }
    }

    /// The repair is done: answer the fetches deferred meanwhile.
    pub(crate) fn answer_deferred(&mut self, sh: &Shared, out: &mut Out) {
        for (from, epoch, range, have) in std::mem::take(&mut self.deferred) {
            // A fetcher that is no longer a member's is refused as on arrival.
            let _ = self.on_fetch(sh, out, from, epoch, range, &have);
        }
    }

    /// The prepare came again (something was lost): ask again the sources that have not
    /// answered and have sent nothing since the last time (a large snapshot may simply
    /// still be arriving).
    pub(crate) fn refetch(&mut self, out: &mut Out, sources: &[NodeRef]) {
        let Some(f) = &mut self.fetch else { return };
        for source in sources {
            f.ask_again(out, source);
        }
    }

    /// A snapshot chunk arrived. When every source has sent everything, the fetched
    /// entries, merged (see [`merge`]), and whether they are a repair's.
    pub(crate) fn on_snapshot(
        &mut self,
        consistency: Consistency,
        from: &NodeRef,
        epoch: u64,
        chunk: u32,
        chunks: u32,
        entries: Vec<(String, Entry)>,
    ) -> Result<Option<Fetched>, Rejected> {
        let asked = |f: &Option<Fetch>| {
            f.as_ref()
                .is_some_and(|f| f.epoch == epoch && f.pending.contains_key(&from.id))
        };
        let repair = !asked(&self.fetch) && asked(&self.repair);
        let slot = match repair {
            true => &mut self.repair,
            false => &mut self.fetch,
        };
        let Some(f) = slot.as_mut().filter(|f| f.epoch == epoch) else {
            return Err(Rejected::wrong_epoch("snapshot", from, epoch));
        };
        if let Some(seen) = f.pending.get_mut(&from.id) {
            if seen.insert(chunk) {
                let only = f.only.get(&from.id);
                let wanted = |key: &String| {
                    only.is_none_or(|r| r.iter().any(|r| r.contains(Id::of_key(key))))
                };
                let entries = entries.into_iter().filter(|(key, _)| wanted(key));
                f.received.entry(from.id).or_default().extend(entries);
            }
            if seen.len() as u32 >= chunks {
                f.pending.remove(&from.id);
            }
        }
        if !f.pending.is_empty() {
            return Ok(None);
        }
        let Some(mut f) = slot.take() else {
            return Ok(None);
        };
        Ok(Some((merge(&mut f, consistency), repair)))
    }
}

/// The distinct sources of `pieces` in order; for each, the stretch from its first piece
/// to its last (what it is asked for: a source named for several pieces is asked once);
/// and its pieces (what is taken from what it sends, see `Fetch::only`).
type BySource = (Vec<NodeRef>, BTreeMap<Id, Range>, BTreeMap<Id, Vec<Range>>);

fn by_source(pieces: &[crate::message::Piece]) -> BySource {
    let mut sources: Vec<NodeRef> = Vec::new();
    let mut only: BTreeMap<Id, Vec<Range>> = BTreeMap::new();
    for piece in pieces {
        if !sources.iter().any(|s| s.id == piece.source.id) {
            sources.push(piece.source.clone());
        }
        only.entry(piece.source.id).or_default().push(piece.range);
    }
    let parts = only
        .iter()
        .map(|(id, ranges)| (*id, hull(ranges)))
        .collect();
    (sources, parts, only)
}

/// The smallest range holding `ranges`, given clockwise and each starting at or after
/// the end of the one before.
fn hull(ranges: &[Range]) -> Range {
    match (ranges.first(), ranges.last()) {
        (Some(Range::Interval { from, .. }), Some(Range::Interval { to, .. })) if from != to => {
            Range::Interval {
                from: *from,
                to: *to,
            }
        }
        (Some(only), _) if ranges.len() == 1 => *only,
        _ => Range::All,
    }
}

/// The fetched entries. Under chain replication each key is taken from the nearest
/// source that has it (in practice there is one source: see `Membership::on_prepare`):
/// after a failure the sources are the newcomer's predecessors in the key's chain; the
/// nearest holds every acknowledged write but the fewest unacknowledged ones, so a new
/// tail never exposes a write an upstream node applied but the chain never committed.
/// Under eventual consistency replicas may lag one another, so the newest version wins
/// (last writer wins, as everywhere else in that model).
fn merge(f: &mut Fetch, consistency: Consistency) -> BTreeMap<String, Entry> {
    let newest_wins = !consistency.is_chain();
    let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
    for source in &f.order {
        for (key, entry) in f.received.remove(&source.id).unwrap_or_default() {
            match merged.entry(key) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(entry);
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    if newest_wins && entry.version > slot.get().version {
                        slot.insert(entry);
                    }
                }
            }
        }
    }
    merged
}

/// Send a write that reached a node which should not hold its key on to the key's
/// current primary (through this node's own routing).
pub(crate) fn repair(out: &mut Out, key: &str, entry: Entry, ttl: u8) {
    let routed = Routed {
        origin: None,
        key: key.to_string(),
        action: Action::Repair { entry, ttl },
        hops: 0,
        laps: 0,
        redriven: false,
    };
    let me = out.me().clone();
    out.send(&me, Message::Route(routed));
}

/// Split `entries` into chunks of at most `max_entries` entries and about `max_bytes`
/// bytes (a chunk always takes at least one entry); never zero chunks.
fn chunk_entries(
    entries: Vec<(String, Entry)>,
    max_entries: usize,
    max_bytes: usize,
) -> Vec<Vec<(String, Entry)>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for (key, entry) in entries {
        let size = key.len() + entry.value.as_ref().map_or(0, |v| v.len()) + 64;
        let last = chunks.last().map_or(0, |c| c.len());
        if last > 0 && (last >= max_entries.max(1) || bytes + size > max_bytes) {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push((key, entry));
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Version;

    fn entry(len: usize) -> Entry {
        Entry {
            value: Some("v".repeat(len)),
            version: Version {
                counter: 1,
                node: Id::ZERO,
            },
        }
    }

    #[test]
    fn snapshots_are_chunked_by_entries_and_bytes() {
        let small: Vec<_> = (0..10).map(|i| (format!("k{i}"), entry(10))).collect();
        assert_eq!(chunk_entries(small.clone(), 4, 1 << 20).len(), 3);
        assert_eq!(
            chunk_entries(Vec::new(), 4, 1 << 20).len(),
            1,
            "never zero chunks"
        );
        let big: Vec<_> = (0..5).map(|i| (format!("k{i}"), entry(1000))).collect();
        let chunks = chunk_entries(big, 100, 2500);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| !c.is_empty()));
        let huge = vec![("k".to_string(), entry(10_000))];
        assert_eq!(
            chunk_entries(huge, 100, 10).len(),
            1,
            "an oversized entry still goes"
        );
    }

    #[test]
    fn a_hint_goes_only_once_a_primary_acknowledged_its_version_or_a_newer_one() {
        let mut ho = Handover::default();
        let at = |counter| Version {
            counter,
            node: Id::ZERO,
        };
        let mut hinted = entry(1);
        hinted.version = at(5);
        ho.hints.insert("k".into(), hinted);
        ho.on_hint_ack("k", at(4));
        assert!(
            ho.hints.contains_key("k"),
            "an older version is not this hint"
        );
        ho.on_hint_ack("other", at(9));
        assert!(ho.hints.contains_key("k"));
        ho.on_hint_ack("k", at(5));
        assert!(ho.hints.is_empty());
    }
}
