//! What happens at a key's replicas: versioned writes, chain replication head → tail,
//! eventual replication with acknowledgements, and reads.

use std::collections::{BTreeMap, VecDeque};

use rand::Rng;

use crate::api::{RequestError, Response};
use crate::config::Consistency;
use crate::craq::{self, Craq};
use crate::handover::{self, Handover, RESEND_INTERVAL_NS};
use crate::id::Id;
use crate::message::{Action, ChainStep, Message, NodeRef, Origin, Routed, REPAIR_TTL};
use crate::out::Out;
use crate::rejected::Rejected;
use crate::shared::Shared;
use crate::store::{Entry, Version};
use crate::timers::Timer;
use crate::{ReqId, Time};

/// Bound on remembered client writes per primary.
const RECENT_WRITES_MAX: usize = 1 << 16;

/// Reads (per thousand) after which an eventual replica sends its copy to the primary.
const READ_REPAIR_PER_MILLE: u32 = 100;

/// How long a replica gathers acknowledgements before sending them (well under
/// `RESEND_INTERVAL_NS`, so a gathered acknowledgement never causes a resend).
const ACK_DELAY_NS: Time = 5_000_000;

/// Acknowledgements gathered for one primary before they are sent at once.
const ACKS_PER_MESSAGE_MAX: usize = 256;

/// Sends of one replica write before the primary leaves it to anti-entropy.
const REPLICATE_TRIES_MAX: u8 = 8;

/// The longest wait between two sends of one replica write. The wait doubles from
/// `RESEND_INTERVAL_NS` after each send: a replica that is slow to acknowledge (queued
/// behind other work, paused) is not sent every write again every 50 ms, which would add
/// to the very queue that delays its acknowledgements. 50, 100, 200, 400, 800, 800 and
/// 800 ms: a write is sent for about 3 s before anti-entropy is left to repair it.
const REPLICATE_BACKOFF_MAX_NS: Time = 16 * RESEND_INTERVAL_NS;

/// Replica writes tracked at once; beyond it new ones are sent once, untracked (anti-entropy
/// still repairs them), so memory stays bounded under any load.
const REPLICATE_TRACKED_MAX: usize = 65_536;

/// Replication state of one node: duplicate suppression at the primary, replica writes
/// awaiting acknowledgement, and acknowledgements awaiting sending.
#[derive(Debug, Default)]
pub(crate) struct Replication {
    recent: RecentWrites,
    unacked: Unacked,
    acks_due: BTreeMap<NodeRef, Vec<u64>>,
    /// CRAQ's clean marks (empty under the other models).
    craq: Craq,
}

impl Replication {
    /// A routed operation reached the key's primary.
    pub(crate) fn at_primary(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        routed: Routed,
    ) {
        let Routed {
            origin,
            key,
            action,
            hops,
            redriven,
            ..
        } = routed;
        match action {
            Action::Write { value } => {
                let write = ClientWrite {
                    origin,
                    key,
                    value,
                    hops,
                    redriven,
                };
                self.write_at_primary(sh, ho, out, write)
            }
            Action::Read => read_at_primary(sh, out, origin, key, hops),
            Action::Repair { entry, ttl } => {
                // A repair with an origin is a hint: tell its holder it can let it go.
                if let Some(o) = &origin {
                    let (key, version) = (key.clone(), entry.version);
                    out.send(&o.node, Message::HintAck { key, version });
                }
                // Re-replicate even if the primary had it: the copy may have been sent to
                // the replicas of an older view. Not if it was sent to every replica of
                // this view: those that acknowledged it hold it, and the others are sent
                // it again now, as before, and on until they acknowledge. After joins, each
                // write reaches several hand-over targets that no longer hold its key,
                // and each sends a repair (seven for every write on a newly formed ring
                // of 10, k = 5), each of which sent the write to every replica again.
                ho.apply(sh, out, &key, entry.clone());
                let current = sh.store.get(&key).cloned().unwrap_or(entry);
                if !sh.config.consistency.is_chain() {
                    let (version, epoch) = (current.version, sh.view.epoch);
                    match self.unacked.cover(&key, version, epoch, out.now) {
                        Cover::None => {}
                        Cover::Settled => return,
                        Cover::Pending(again) => return send_again(out, again),
                    }
                }
                let write = ChainStep::first(None, key, current, false, hops, ttl);
                self.replicate_from_primary(sh, out, write);
            }
        }
    }

    /// A hand-over source forwarded a client write it applied (`writer`): this node,
    /// perhaps the key's next head, remembers it as applied, so that a copy of the
    /// write the network delivers here later is taken for the duplicate it is. Applied
    /// afresh, it would get a new version and overwrite any write acknowledged since
    /// (seed 3951 of the loss and duplication campaign).
    pub(crate) fn note_forwarded(
        &mut self,
        sh: &Shared,
        now: Time,
        version: crate::store::Version,
        writer: &crate::message::Writer,
    ) {
        self.recent.expire(now, dedup_horizon(sh));
        if self.recent.get(&writer.0).is_none() {
            self.recent.record(&writer.0, version, writer.1, now);
        }
    }

    fn write_at_primary(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        write: ClientWrite,
    ) {
        let ClientWrite {
            origin,
            key,
            value,
            hops,
            redriven,
        } = write;
        if let Some(o) = &origin {
            // Duplicates arrive within the request timeout; older entries can go.
            self.recent.expire(out.now, dedup_horizon(sh));
            if let Some(seen) = self.recent.get(o) {
                let Some((version, existed)) = seen else {
                    return; // refused before: it must stay not done
                };
                // Applied here already (a duplicate, or re-driven after a failure, perhaps
                // to this node as the key's new head): send that same write down the
                // chain again so the tail acknowledges it, unless a later one replaced it.
                let same = sh.store.get(&key).filter(|e| e.version == version).cloned();
                if let Some(entry) = same.filter(|_| sh.holds_lease(out.now)) {
                    let write = ChainStep::first(origin, key, entry, existed, hops, REPAIR_TTL);
                    self.replicate_from_primary(sh, out, write);
                }
                return;
            }
            if redriven {
                // Not applied here: perhaps nowhere, perhaps at a head that failed since
                // and down part of its chain. Applying it afresh could apply it twice.
                return;
            }
        }
        // After the duplicate check: a refusal of a duplicate must not answer for a first
        // copy that was applied. A ring founded again from its disks takes no write
        // until its members are back: a key's newest version may be on one of them,
        // above any this node would assign.
        if !sh.holds_lease(out.now) || sh.comeback.hold_writes {
            if let Some(o) = &origin {
                self.recent.refused(o, out.now);
            }
            let node = sh.addr();
            return out.respond(origin, Err(RequestError::LeaseExpired { node }));
        }
        let max = sh.limits.store_bytes_max;
        let adds = value.as_ref().map_or(0, |v| key.len() + v.len());
        if max > 0 && adds > 0 && sh.store.bytes().saturating_add(adds) > max {
            if let Some(o) = &origin {
                self.recent.refused(o, out.now);
            }
            let (node, bytes) = (sh.addr(), sh.store.bytes());
            return out.respond(origin, Err(RequestError::StoreFull { node, bytes, max }));
        }
        let existed = sh.store.value(&key).is_some();
        let entry = Entry {
            value,
            version: sh.store.next_version(sh.me.id, sh.wall_us(out.now)),
        };
        if let Some(o) = &origin {
            self.recent.record(o, entry.version, existed, out.now);
        }
        let writer = origin.clone().map(|o| (o, existed));
        ho.apply_write(sh, out, &key, entry.clone(), writer);
        let write = ChainStep::first(origin, key, entry, existed, hops, REPAIR_TTL);
        self.replicate_from_primary(sh, out, write);
    }

    /// Send a write the primary has applied to the other replicas; answer the client at
    /// once (eventual) or leave that to the tail (chain).
    fn replicate_from_primary(&mut self, sh: &Shared, out: &mut Out, mut write: ChainStep) {
        let chain_len = sh.chain_len();
        if sh.config.consistency.is_chain() && chain_len > 1 {
            // A view without a successor cannot carry a chain: no acknowledgement then
            // (views are checked when they arrive, so this does not happen).
            let Some(next) = sh.downstream().into_iter().next() else {
                return;
            };
            write.chain_len = chain_len as u8;
            write.position = 1;
            if sh.config.consistency == Consistency::Craq {
                self.craq
                    .passed_on(sh, &write.key, write.entry.version, out.now);
            }
            return out.send(&next, Message::ChainWrite(write));
        }
        let mut seqs = Vec::with_capacity(chain_len.saturating_sub(1));
        for to in &sh.downstream() {
            let sent = (write.ttl, sh.view.epoch, out.now);
            let seq = self.unacked.track(to, &write.key, &write.entry, sent);
            seqs.push(seq);
            let msg = Message::Replicate {
                entries: vec![(write.key.clone(), write.entry.clone())],
                ttl: write.ttl,
                seq,
                epoch: sh.view.epoch,
            };
            out.send(to, msg);
        }
        let version = write.entry.version;
        self.unacked
            .begin_round(&write.key, version, sh.view.epoch, seqs);
        if !self.unacked.is_empty() {
            out.arm(Timer::Replicate, out.after(RESEND_INTERVAL_NS));
        }
        let reply = write_reply(sh, &write.key, &write.entry, write.existed, write.hops);
        out.respond(write.origin, Ok(reply));
    }

    /// A chain write reached this node: apply it, pass it on, or (at the tail) answer.
    pub(crate) fn on_chain_write(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        from: &NodeRef,
        mut step: ChainStep,
    ) {
        if !sh.is_member() {
            // Left the ring while the write travelled: the chain continues at the node that
            // took over this one's keys. Never acknowledge from outside the ring.
            if let Some(next) = sh.forward_to.clone() {
                out.send(&next, Message::ChainWrite(step));
            }
            return;
        }
        if !sh.holds_lease(out.now) {
            // Cut off or paused long enough to be replaced: this step may be stale (sent
            // by a head that has since crashed, its version above what its restarted
            // incarnation assigns). Dropped: a client write waiting on it is re-driven
            // or ends `info`.
            return;
        }
        let key_id = Id::of_key(&step.key);
        if !sh.accepts(key_id) {
            // The chain this write was sent down no longer holds here: repair it towards
            // the current replicas, but neither pass it on nor acknowledge it (the client
            // sees a timeout: the write may or may not take effect).
            return ho.offer(sh, out, (&step.key, step.entry), step.ttl, 0);
        }
        let craq = sh.config.consistency == Consistency::Craq;
        if skipped_a_replica(sh, from, key_id) {
            // Sent under an older view, past a replica of this one that may not have it:
            // it must not be committed (or served) ahead of that replica, nor held here
            // without it, or a tail may serve what the node before it lacks (3 nodes,
            // seed 1324 of one-way partitions: a tail served a write a joiner before it
            // never had, and the joiner, tail once the other was gone, an older value).
            // The key's primary passes it down the whole chain; the client's origin
            // re-drives it.
            if step.ttl > 0 {
                handover::repair(out, &step.key, step.entry, step.ttl - 1);
            }
            return;
        }
        let writer = step.origin.clone().map(|o| (o, step.existed));
        ho.apply_write(sh, out, &step.key, step.entry.clone(), writer);
        if let Some(o) = &step.origin {
            self.recent.expire(out.now, dedup_horizon(sh));
            self.recent
                .record(o, step.entry.version, step.existed, out.now);
        }
        let next_position = step.position as usize + 1;
        if next_position < step.chain_len as usize {
            if let Some(next) = sh.next_in_chain(key_id) {
                if craq {
                    self.craq
                        .passed_on(sh, &step.key, step.entry.version, out.now);
                }
                step.position = next_position as u8;
                return out.send(&next, Message::ChainWrite(step));
            }
        }
        // Only a node that is the key's tail in its own view acknowledges: the write is
        // then on the whole chain. Not if a newer version from another primary is already
        // here: it may have been read, and this write cannot be ordered after it. (A newer
        // version from the same primary was assigned after this write reached it, so this
        // write can be ordered just before that one.)
        let superseded = sh.store.get(&step.key).is_some_and(|e| {
            e.version > step.entry.version && e.version.node != step.entry.version.node
        });
        if sh.is_tail(key_id) && !superseded {
            let reply = write_reply(sh, &step.key, &step.entry, step.existed, step.hops);
            out.respond(step.origin, Ok(reply));
            if craq {
                craq::announce_clean(sh, out, &step.key);
            }
        }
    }

    /// A read reached a replica of its key on its route (eventual consistency and CRAQ).
    pub(crate) fn read_here(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        origin: Option<Origin>,
        key: String,
        hops: u32,
    ) {
        match sh.config.consistency {
            Consistency::Craq => self.craq.read(sh, out, origin, key, hops),
            _ => answer_read(sh, out, origin, &key, hops),
        }
    }

    /// CRAQ reads that waited for a clean notice long enough ask the tail.
    pub(crate) fn craq_wait(&mut self, sh: &Shared, out: &mut Out) {
        self.craq.on_wait_timer(sh, out);
    }

    /// CRAQ traffic between a key's replicas and its tail.
    pub(crate) fn on_craq(&mut self, sh: &Shared, out: &mut Out, from: &NodeRef, msg: Message) {
        match msg {
            Message::CraqClean { key, version } => self.craq.on_clean(sh, out, from, key, version),
            Message::VersionQuery { origin, key, hops } => {
                Craq::on_query(sh, out, from, (origin, key, hops))
            }
            _ => {}
        }
    }

    /// Eventual replica writes (or hand-over repairs) arrived, sent under the primary's
    /// view of `epoch`; acknowledge when asked.
    pub(crate) fn on_replicate(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        from: NodeRef,
        entries: Vec<(String, Entry)>,
        (ttl, seq, epoch): (u8, u64, u64),
    ) -> Result<(), Rejected> {
        if !sh.is_member() && sh.gaining.is_none() && sh.forward_to.is_none() {
            return Err(Rejected::not_member("replicate", &from, sh.phase));
        }
        for (key, entry) in entries {
            ho.offer(sh, out, (&key, entry), ttl, epoch);
        }
        if seq != 0 {
            self.ack(out, from, seq);
        }
        Ok(())
    }

    /// Acknowledge replica write `seq` from `primary`: gathered, sent within
    /// `ACK_DELAY_NS` (or at once when many are waiting).
    fn ack(&mut self, out: &mut Out, primary: NodeRef, seq: u64) {
        let due = self.acks_due.entry(primary.clone()).or_default();
        due.push(seq);
        if due.len() >= ACKS_PER_MESSAGE_MAX {
            let seqs = std::mem::take(due);
            self.acks_due.remove(&primary);
            return out.send(&primary, Message::ReplicateAck { seqs });
        }
        out.arm(Timer::ReplicateAcks, out.after(ACK_DELAY_NS));
    }

    /// A replica acknowledged replica writes.
    pub(crate) fn on_replicate_ack(&mut self, from: &NodeRef, seqs: Vec<u64>) {
        for seq in seqs {
            self.unacked.acknowledge(from, seq);
        }
    }

    /// Send every gathered acknowledgement.
    pub(crate) fn flush_acks(&mut self, out: &mut Out) {
        for (primary, seqs) in std::mem::take(&mut self.acks_due) {
            if !seqs.is_empty() {
                out.send(&primary, Message::ReplicateAck { seqs });
            }
        }
    }

    /// Resend every unacknowledged replica write (each a bounded number of times), and
    /// hand-over forwards not yet acknowledged.
    pub(crate) fn resend(&mut self, ho: &mut Handover, out: &mut Out) {
        let again = self.unacked.due_again(out.now);
        send_again(out, again);
        let forwards = ho.resend_pending(out);
        if !self.unacked.is_empty() || forwards {
            out.arm(Timer::Replicate, out.after(RESEND_INTERVAL_NS));
        }
    }
}

/// Send replica writes again, under their sequence numbers.
fn send_again(out: &mut Out, writes: Vec<(u64, Pending)>) {
    for (seq, p) in writes {
        let msg = Message::Replicate {
            entries: vec![(p.key, p.entry)],
            ttl: p.ttl,
            seq,
            epoch: p.epoch,
        };
        out.send(&p.to, msg);
    }
}

/// A read reached the key's primary: chain reads go on to the tail.
fn read_at_primary(sh: &Shared, out: &mut Out, origin: Option<Origin>, key: String, hops: u32) {
    let chain_len = sh.chain_len();
    if sh.config.consistency.is_chain() && chain_len > 1 {
        let Some(origin) = origin else { return };
        let Some(tail) = sh.downstream().pop() else {
            let node = sh.addr();
            return out.respond(Some(origin), Err(RequestError::RouteBroken { node }));
        };
        let msg = Message::TailRead {
            origin,
            key,
            hops: hops + 1,
        };
        return out.send(&tail, msg);
    }
    answer_read(sh, out, origin, &key, hops);
}

/// Chain replication read at the tail: answered only by a node that, in its own view,
/// holds the key and is its tail; otherwise the ring is changing and the client retries.
pub(crate) fn tail_read(sh: &Shared, out: &mut Out, origin: Origin, key: &str, hops: u32) {
    let key_id = Id::of_key(key);
    let serving = sh.is_member() && !sh.unsure;
    if serving && sh.responsibility().contains(key_id) && sh.serves_tail(key_id) {
        return answer_read(sh, out, Some(origin), key, hops);
    }
    let node = sh.addr();
    out.respond(Some(origin), Err(RequestError::RouteBroken { node }));
}

/// Answer a read from the local store.
pub(crate) fn answer_read(
    sh: &Shared,
    out: &mut Out,
    origin: Option<Origin>,
    key: &str,
    hops: u32,
) {
    let value = sh.store.value(key).map(str::to_string);
    answer_value(sh, out, origin, key, (value, hops));
    maybe_read_repair(sh, out, key);
}

/// Answer a read with `value` (`None`: not found), read from this node's store.
pub(crate) fn answer_value(
    sh: &Shared,
    out: &mut Out,
    origin: Option<Origin>,
    key: &str,
    (value, hops): (Option<String>, u32),
) {
    let node = sh.addr();
    if !sh.is_member() {
        return out.respond(origin, Err(RequestError::RouteBroken { node }));
    }
    if !sh.holds_lease(out.now) {
        return out.respond(origin, Err(RequestError::LeaseExpired { node }));
    }
    let key = key.to_string();
    let reply = match value {
        Some(value) => Response::Found {
            key,
            value,
            node,
            hops,
        },
        None => Response::NotFound { key, node, hops },
    };
    out.respond(origin, Ok(reply));
}

/// Read repair (eventual consistency): after answering a read, a replica that is not the
/// key's primary sends its copy, now and then, to the primary, which keeps the newer of
/// the two and re-replicates it to every replica. Stale replicas catch up on the keys
/// clients read, between anti-entropy rounds; a primary that missed a write (it took
/// over the key while the write travelled) learns it back.
fn maybe_read_repair(sh: &Shared, out: &mut Out, key: &str) {
    if sh.config.consistency != Consistency::Eventual || sh.is_primary(Id::of_key(key)) {
        return;
    }
    let Some(entry) = sh.store.get(key).cloned() else {
        return;
    };
    if out.rng.gen_range(0..1000) >= READ_REPAIR_PER_MILLE {
        return;
    }
    handover::repair(out, key, entry, REPAIR_TTL);
}

fn write_reply(sh: &Shared, key: &str, entry: &Entry, existed: bool, hops: u32) -> Response {
    let node = sh.addr();
    let key = key.to_string();
    match &entry.value {
        Some(value) => Response::Inserted {
            key,
            value: value.clone(),
            node,
            hops,
        },
        None => Response::Deleted {
            key,
            existed,
            node,
            hops,
        },
    }
}

impl ChainStep {
    /// A write as the primary applied it; `position` and `chain_len` are set when it is
    /// sent down the chain.
    fn first(
        origin: Option<Origin>,
        key: String,
        entry: Entry,
        existed: bool,
        hops: u32,
        ttl: u8,
    ) -> ChainStep {
        ChainStep {
            origin,
            key,
            entry,
            existed,
            position: 0,
            chain_len: 1,
            hops,
            ttl,
        }
    }
}

/// Who asked for a write: the origin node, its incarnation and the request id.
type WriteId = (Id, u64, ReqId);

/// A client's write as it reaches the key's head.
struct ClientWrite {
    origin: Option<Origin>,
    key: String,
    value: Option<String>,
    hops: u32,
    redriven: bool,
}

/// Client writes this node applied recently (as a head, or down a chain), with the
/// version each got and whether the key existed before it: a duplicate the network
/// delivers, or a write its origin re-drove after a member failed, is not applied twice.
#[derive(Debug, Default)]
struct RecentWrites {
    /// `None`: refused here (no lease), so a copy that arrives later must not apply it.
    seen: BTreeMap<WriteId, Option<(crate::store::Version, bool)>>,
    order: VecDeque<(Time, WriteId)>,
}

impl RecentWrites {
    fn id(origin: &Origin) -> WriteId {
        (origin.node.id, origin.incarnation, origin.req)
    }

    /// Forget writes older than `horizon` (and the oldest, beyond the bound).
    fn expire(&mut self, now: Time, horizon: Time) {
        while let Some(&(t, id)) = self.order.front() {
            if now.saturating_sub(t) <= horizon && self.order.len() < RECENT_WRITES_MAX {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
    }

    /// What became of `origin`'s write here, if it arrived recently: applied with a
    /// version (`Some`), or refused (`None`).
    fn get(&self, origin: &Origin) -> Option<Option<(crate::store::Version, bool)>> {
        self.seen.get(&Self::id(origin)).copied()
    }

    /// `origin`'s write was applied here with `version`.
    fn record(
        &mut self,
        origin: &Origin,
        version: crate::store::Version,
        existed: bool,
        now: Time,
    ) {
        self.insert(origin, Some((version, existed)), now);
    }

    /// `origin`'s write was refused here: its client was told nothing was done.
    fn refused(&mut self, origin: &Origin, now: Time) {
        self.insert(origin, None, now);
    }

    fn insert(&mut self, origin: &Origin, what: Option<(crate::store::Version, bool)>, now: Time) {
        let id = Self::id(origin);
        if self.seen.insert(id, what).is_none() {
            self.order.push_back((now, id));
        }
    }
}

/// A replica write waiting for its acknowledgement.
#[derive(Clone, Debug)]
struct Pending {
    to: NodeRef,
    key: String,
    entry: Entry,
    ttl: u8,
    /// The epoch of the view it was sent under.
    epoch: u64,
    tries: u8,
    /// When to send it again if still unacknowledged.
    due: Time,
}

/// Replica writes a primary has sent and not yet seen acknowledged, by sequence number.
#[derive(Clone, Debug, Default)]
struct Unacked {
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    /// Per key, the latest version sent to every replica of a view, while some of those
    /// writes await their acknowledgement.
    rounds: BTreeMap<String, Round>,
    /// Per key, a version every replica of view `epoch` acknowledged: a repair of it
    /// under that view need not be replicated again.
    settled: BTreeMap<String, (Version, u64)>,
}

/// What a primary has done for a version of a key under a view (see [`Unacked::cover`]).
#[derive(Debug)]
enum Cover {
    /// Nothing known: send it to every replica.
    None,
    /// Sent to every replica; these have not acknowledged it and are due a send now.
    Pending(Vec<(u64, Pending)>),
    /// Every replica acknowledged it.
    Settled,
}

/// One version of a key sent to all the replicas of the view of `epoch`.
#[derive(Clone, Debug)]
struct Round {
    version: Version,
    epoch: u64,
    /// Its replica writes not yet acknowledged.
    seqs: Vec<u64>,
}

impl Unacked {
    /// Remember a replica write to `to`, sent with `ttl` under the view of `epoch` at
    /// `now`; its sequence number, or 0 (untracked) when full.
    fn track(&mut self, to: &NodeRef, key: &str, entry: &Entry, sent: (u8, u64, Time)) -> u64 {
        let (ttl, epoch, now) = sent;
        if self.pending.len() >= REPLICATE_TRACKED_MAX {
            return 0;
        }
        self.next_seq += 1;
        let pending = Pending {
            to: to.clone(),
            key: key.to_string(),
            entry: entry.clone(),
            ttl,
            epoch,
            tries: 1,
            due: now + RESEND_INTERVAL_NS,
        };
        self.pending.insert(self.next_seq, pending);
        self.next_seq
    }

    /// Replica writes `seqs` carry `version` of `key` to every replica of the view of
    /// `epoch`; once all are acknowledged, that version is settled under that view.
    /// Untracked writes (sequence 0) cannot be, nor can a round without replicas.
    fn begin_round(&mut self, key: &str, version: Version, epoch: u64, seqs: Vec<u64>) {
        self.settled.remove(key);
        if seqs.is_empty() || seqs.contains(&0) {
            self.rounds.remove(key);
            return;
        }
        let round = Round {
            version,
            epoch,
            seqs,
        };
        self.rounds.insert(key.to_string(), round);
    }

    /// `from` acknowledged write `seq`.
    fn acknowledge(&mut self, from: &NodeRef, seq: u64) {
        if self.pending.get(&seq).is_none_or(|p| p.to.id != from.id) {
            return;
        }
        let Some(p) = self.pending.remove(&seq) else {
            return;
        };
        let Some(round) = self.rounds.get_mut(&p.key) else {
            return;
        };
        round.seqs.retain(|s| *s != seq);
        if round.seqs.is_empty() {
            let (version, epoch) = (round.version, round.epoch);
            self.rounds.remove(&p.key);
            if self.settled.len() >= REPLICATE_TRACKED_MAX {
                // Bounded memory: forgetting only costs repairs sent again.
                self.settled.clear();
            }
            self.settled.insert(p.key, (version, epoch));
        }
    }

    /// Whether `version` of `key` went to every replica of the view of `epoch`, and each
    /// acknowledged it ([`Cover::Settled`]) or is still being sent it until it does
    /// ([`Cover::Pending`]). A repair renews the writes not yet acknowledged as a new
    /// round would: they are sent again at once, and their sends start over.
    fn cover(&mut self, key: &str, version: Version, epoch: u64, now: Time) -> Cover {
        if self.settled.get(key) == Some(&(version, epoch)) {
            return Cover::Settled;
        }
        let Some(round) = self.rounds.get(key) else {
            return Cover::None;
        };
        if round.version != version || round.epoch != epoch {
            return Cover::None;
        }
        let mut again = Vec::new();
        for seq in &round.seqs {
            if let Some(p) = self.pending.get_mut(seq) {
                p.tries = 1;
                p.due = now + RESEND_INTERVAL_NS;
                again.push((*seq, p.clone()));
            }
        }
        Cover::Pending(again)
    }

    /// The writes due to be sent again at `now`, each then due again after twice its last
    /// wait (at most `REPLICATE_BACKOFF_MAX_NS`); those sent too often are given up.
    fn due_again(&mut self, now: Time) -> Vec<(u64, Pending)> {
        let mut again = Vec::new();
        self.pending.retain(|seq, p| {
            if p.due > now {
                return true;
            }
            if p.tries >= REPLICATE_TRIES_MAX {
                // Given up: its round can no longer settle.
                if self
                    .rounds
                    .get(&p.key)
                    .is_some_and(|r| r.seqs.contains(seq))
                {
                    self.rounds.remove(&p.key);
                }
                return false;
            }
            let wait = RESEND_INTERVAL_NS
                .saturating_mul(1 << p.tries.min(16))
                .min(REPLICATE_BACKOFF_MAX_NS);
            p.tries += 1;
            p.due = now + wait;
            again.push((*seq, p.clone()));
            true
        });
        again
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// How long a replica remembers the client writes it applied: twice the request timeout,
/// since an origin re-drives a write until its own deadline, measured on another clock
/// from an earlier start.
fn dedup_horizon(sh: &Shared) -> Time {
    sh.timing.request_timeout_ns.saturating_mul(2)
}

/// Whether a chain write of `key` that `from` sent this node skipped a replica of this
/// node's view: `from` is an earlier predecessor than its nearest, and this node is not
/// the key's primary (so its nearest predecessor is a replica of the key too).
pub(crate) fn skipped_a_replica(sh: &Shared, from: &NodeRef, key: Id) -> bool {
    let preds = &sh.view.preds;
    if sh.has_vnodes() {
        // With virtual nodes the replica before this one is the key's own: any other
        // predecessor that sends the write skipped it.
        let Some(chain) = sh.chain_of(key) else {
            return false;
        };
        let Some(me) = chain.iter().position(|n| n.id == sh.me.id) else {
            return false;
        };
        let expected = me.checked_sub(1).and_then(|i| chain.get(i));
        return me > 0
            && expected.is_some_and(|e| e.id != from.id)
            && preds.iter().any(|p| p.id == from.id);
    }
    let nearest = preds.first().is_some_and(|p| p.id == from.id);
    !sh.is_primary(key) && !nearest && preds.iter().skip(1).any(|p| p.id == from.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The times (ms after the first send) at which an unacknowledged replica write is
    /// sent again, polled every `RESEND_INTERVAL_NS` as the node's timer does.
    #[test]
    fn a_replica_write_is_sent_again_with_a_growing_wait_then_given_up() {
        let to = NodeRef::new("10.0.0.2:5000");
        let entry = Entry {
            value: Some("v".into()),
            version: Version {
                counter: 1,
                node: Id::of_addr("10.0.0.1:5000"),
            },
        };
        let mut unacked = Unacked::default();
        let t0: Time = 7_000_000;
        let seq = unacked.track(&to, "key", &entry, (REPAIR_TTL, 1, t0));
        assert_ne!(seq, 0);
        let mut sent_again = Vec::new();
        let mut now = t0;
        while !unacked.is_empty() && now < t0 + 10_000_000_000 {
            now += RESEND_INTERVAL_NS;
            for (s, p) in unacked.due_again(now) {
                assert_eq!((s, p.to.id), (seq, to.id));
                sent_again.push((now - t0) / 1_000_000);
            }
        }
        assert_eq!(sent_again, [50, 150, 350, 750, 1550, 2350, 3150]);
        assert!(
            unacked.is_empty(),
            "given up after {REPLICATE_TRIES_MAX} sends"
        );

        // An acknowledged write is not sent again.
        let seq = unacked.track(&to, "key", &entry, (REPAIR_TTL, 1, t0));
        unacked.acknowledge(&to, seq);
        assert!(unacked.due_again(t0 + RESEND_INTERVAL_NS).is_empty());
        assert!(unacked.is_empty());
    }

    /// A version sent to every replica of a view covers repairs of it under that view:
    /// while its writes are pending (those not acknowledged are sent again, and their
    /// sends start over) and once all are acknowledged; not under another
    /// view, not another version, not once a write of it is given up, and not once a
    /// newer version is sent.
    #[test]
    fn a_version_sent_to_every_replica_covers_its_repairs_under_that_view() {
        let (a, b) = (NodeRef::new("10.0.0.2:5000"), NodeRef::new("10.0.0.3:5000"));
        let node = Id::of_addr("10.0.0.1:5000");
        let entry = |counter| Entry {
            value: Some("v".into()),
            version: Version { counter, node },
        };
        let (v1, v2) = (entry(1).version, entry(2).version);
        let again = |c: Cover| match c {
            Cover::Pending(w) => Some(w.into_iter().map(|(seq, p)| (seq, p.to.id)).collect()),
            _ => None,
        };
        let mut unacked = Unacked::default();
        let t0: Time = 1_000_000;
        let send = |u: &mut Unacked, e: &Entry, epoch| {
            let seqs = [&a, &b].map(|to| u.track(to, "key", e, (REPAIR_TTL, epoch, t0)));
            u.begin_round("key", e.version, epoch, seqs.to_vec());
            seqs
        };
        let [sa, sb] = send(&mut unacked, &entry(1), 7);
        let none = |c: Cover| matches!(c, Cover::None);
        assert!(none(unacked.cover("key", v1, 8, t0)), "another view");
        assert!(none(unacked.cover("key", v2, 7, t0)), "another version");
        assert!(none(unacked.cover("other", v1, 7, t0)), "another key");
        unacked.acknowledge(&b, sa); // not b's write: ignored
        unacked.acknowledge(&a, sa);
        let first = again(unacked.cover("key", v1, 7, t0 + 1));
        assert_eq!(first, Some(vec![(sb, b.id)]), "b is sent it again, a not");
        unacked.acknowledge(&b, sb);
        assert!(unacked.is_empty());
        assert!(matches!(unacked.cover("key", v1, 7, t0), Cover::Settled));

        // A newer version sent: the older one no longer covers anything.
        send(&mut unacked, &entry(2), 7);
        assert!(none(unacked.cover("key", v1, 7, t0)));

        // Repairs start the sends over: a write repaired now and then is not given up.
        let mut now = t0;
        let give_up = t0 + 4_000_000_000;
        while now < 2 * give_up {
            now += RESEND_INTERVAL_NS;
            unacked.due_again(now);
            if now < give_up && now % 1_000_000_000 < RESEND_INTERVAL_NS {
                assert!(matches!(
                    unacked.cover("key", v2, 7, now),
                    Cover::Pending(_)
                ));
            }
        }
        // Given up once the repairs stopped: no longer covered.
        assert!(unacked.is_empty());
        assert!(none(unacked.cover("key", v2, 7, now)));

        // An untracked write (the table full) leaves its round uncovered.
        unacked.begin_round("key", v2, 7, vec![5, 0]);
        assert!(none(unacked.cover("key", v2, 7, now)));
    }
}
