//! What happens at a key's replicas: versioned writes, chain replication head → tail,
//! eventual replication, reads, and repair of misdelivered replica writes.

use crate::api::{RequestError, Response};
use crate::config::Consistency;
use crate::id::Id;
use crate::message::{Action, Message, NodeRef, Origin, Routed, REPAIR_TTL};
use crate::node::{Node, Rejected};
use crate::store::{Applied, Entry};
use crate::{Output, ReqId, Time, Timer};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A versioned write on its way through a key's replicas (for chain replication: as
/// received by one chain member).
pub(crate) struct ChainStep {
    pub(crate) origin: Option<Origin>,
    pub(crate) key: String,
    pub(crate) entry: Entry,
    pub(crate) existed: bool,
    pub(crate) position: u8,
    pub(crate) chain_len: u8,
    pub(crate) hops: u32,
    pub(crate) ttl: u8,
}

/// Bound on remembered client writes per primary.
const RECENT_WRITES_MAX: usize = 1 << 16;

/// Client writes a primary applied recently, to drop duplicates the network delivers.
#[derive(Debug, Default)]
pub(crate) struct RecentWrites {
    seen: BTreeSet<(Id, u64, ReqId)>,
    order: VecDeque<(Time, (Id, u64, ReqId))>,
}

impl RecentWrites {
    /// Record `origin`'s write; false if it was seen within `horizon` (a duplicate).
    fn first_time(&mut self, origin: &Origin, now: Time, horizon: Time) -> bool {
        while let Some(&(t, key)) = self.order.front() {
            if now.saturating_sub(t) <= horizon && self.order.len() < RECENT_WRITES_MAX {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
        let key = (origin.node.id, origin.incarnation, origin.req);
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back((now, key));
        true
    }
}

impl ChainStep {
    fn new(
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

    fn into_message(self, position: u8) -> Message {
        Message::ChainWrite {
            origin: self.origin,
            key: self.key,
            entry: self.entry,
            existed: self.existed,
            position,
            chain_len: self.chain_len,
            hops: self.hops,
            ttl: self.ttl,
        }
    }
}

impl Node {
    /// Apply `entry` to the store; a newer entry is also forwarded to any node fetching
    /// a range that holds the key.
    pub(crate) fn apply_entry(
        &mut self,
        key: &str,
        entry: Entry,
        out: &mut Vec<Output>,
    ) -> Applied {
        let applied = self.store.apply(self.now, key, entry.clone());
        if applied == Applied::Changed {
            self.forward_to_migrations(key, &entry, REPAIR_TTL, out);
        }
        applied
    }

    /// Send a write to every node fetching a range that holds its key.
    fn forward_to_migrations(&mut self, key: &str, entry: &Entry, ttl: u8, out: &mut Vec<Output>) {
        if self.migrations.is_empty() {
            return;
        }
        let now = self.now;
        self.migrations.retain(|m| m.until.is_none_or(|t| t > now));
        let id = Id::of_key(key);
        let mut sends = Vec::new();
        for m in self.migrations.iter_mut().filter(|m| m.range.contains(id)) {
            let seq = m.next_seq;
            m.next_seq += 1;
            // Only forwards sent before the commit gate the commit's acknowledgement;
            // those sent during the grace period afterwards are best effort.
            if m.until.is_none() {
                m.unacked.insert(seq, (key.to_string(), entry.clone()));
            }
            let msg = Message::Forward {
                epoch: m.epoch,
                seq,
                key: key.to_string(),
                entry: entry.clone(),
                ttl,
            };
            sends.push((m.to.clone(), msg));
        }
        let tracked = !sends.is_empty() && self.migrations.iter().any(|m| m.until.is_none());
        for (to, msg) in sends {
            self.send(&to, msg, out);
        }
        if tracked {
            self.arm_resend_timer(out);
        }
    }

    /// Arm the resend timer (replica writes and hand-over forwards not yet acknowledged).
    fn arm_resend_timer(&mut self, out: &mut Vec<Output>) {
        if !self.timers.contains_key(&Timer::Replicate) {
            let at = self.now.saturating_add(REPLICATE_RETRY_NS);
            self.set_timer(Timer::Replicate, at, out);
        }
    }

    /// Hand-over forwards not yet acknowledged, before their change commits here: sent
    /// again (a bounded number of times), so a lost one does not wait for the commit (which
    /// resends them too) — the source may crash first, and with it the only copy of a
    /// write its chain acknowledged.
    fn resend_pending_forwards(&mut self, out: &mut Vec<Output>) -> bool {
        let mut sends = Vec::new();
        let mut pending = false;
        for m in self.migrations.iter_mut() {
            if m.until.is_some() || m.unacked.is_empty() || m.resends >= FORWARD_RESENDS_MAX {
                continue;
            }
            m.resends += 1;
            pending = true;
            sends.extend(m.unacked_forwards());
        }
        for (to, msg) in sends {
            self.send(&to, msg, out);
        }
        pending
    }

    /// A replica write arrived: store it if this node should hold the key; otherwise,
    /// unless it is itself a repair, send it on to the key's current primary, which passes
    /// it to the key's current replicas.
    pub(crate) fn offer(&mut self, key: &str, entry: Entry, ttl: u8, out: &mut Vec<Output>) {
        if self.accepts(Id::of_key(key)) {
            self.apply_entry(key, entry, out);
            return;
        }
        if ttl > 0 {
            // A node that handed this key's range over still passes it to the new holder
            // for the grace period (it may not hold the new view yet), and to the primary.
            self.forward_to_migrations(key, &entry, ttl - 1, out);
            self.repair(key, entry, ttl - 1, out);
        }
    }

    /// Whether this node should store `key` now: under its installed view, or under the
    /// view it is preparing.
    fn accepts(&self, key: Id) -> bool {
        let now = self.is_member() && self.responsibility().contains(key);
        now || self
            .preparing
            .as_ref()
            .is_some_and(|p| p.gained.contains(key))
    }

    /// Number of replicas per key: `min(k, N)`.
    fn chain_len(&self) -> usize {
        self.config.k.min(self.view.ring_size.max(1))
    }

    pub(crate) fn at_primary(&mut self, routed: Routed, out: &mut Vec<Output>) {
        let Routed {
            origin,
            key,
            action,
            hops,
            ..
        } = routed;
        match action {
            Action::Write { value } => self.write_at_primary(origin, key, value, hops, out),
            Action::Read => self.read_at_primary(origin, key, hops, out),
            Action::Repair { entry, ttl } => {
                // Re-replicate even if the primary had it: the copy may have been sent to
                // the replicas of an older view.
                self.apply_entry(&key, entry.clone(), out);
                let current = self.store.get(&key).cloned().unwrap_or(entry);
                let write = ChainStep::new(None, key, current, false, hops, ttl);
                self.replicate_from_primary(write, out);
            }
        }
    }

    fn write_at_primary(
        &mut self,
        origin: Option<Origin>,
        key: String,
        value: Option<String>,
        hops: u32,
        out: &mut Vec<Output>,
    ) {
        if let Some(o) = &origin {
            // Duplicates arrive within the request timeout; older entries can go.
            let horizon = self.timing.request_timeout_ns;
            if !self.applied_writes.first_time(o, self.now, horizon) {
                return;
            }
        }
        let existed = self.store.value(&key).is_some();
        let entry = Entry {
            value,
            version: self.store.next_version(self.me.id),
        };
        self.apply_entry(&key, entry.clone(), out);
        let write = ChainStep::new(origin, key, entry, existed, hops, REPAIR_TTL);
        self.replicate_from_primary(write, out);
    }

    /// Send a write the primary has applied to the other replicas; answer the client at
    /// once (eventual) or leave that to the tail (chain). `write.position` and
    /// `write.chain_len` are filled in here.
    fn replicate_from_primary(&mut self, mut write: ChainStep, out: &mut Vec<Output>) {
        let chain_len = self.chain_len();
        if self.config.consistency == Consistency::Chain && chain_len > 1 {
            write.chain_len = chain_len as u8;
            let next = self.view.succs[0].clone();
            return self.send(&next, write.into_message(1), out);
        }
        let replicas: Vec<NodeRef> = self
            .view
            .succs
            .iter()
            .take(chain_len - 1)
            .cloned()
            .collect();
        for to in replicas {
            let seq = self
                .replicating
                .track(&to, &write.key, &write.entry, write.ttl);
            let msg = Message::Replicate {
                entries: vec![(write.key.clone(), write.entry.clone())],
                ttl: write.ttl,
                seq,
            };
            self.send(&to, msg, out);
        }
        if !self.replicating.is_empty() {
            self.arm_resend_timer(out);
        }
        let reply = self.write_reply(&write.key, &write.entry, write.existed, write.hops);
        self.respond(write.origin, Ok(reply), out);
    }

    fn write_reply(&self, key: &str, entry: &Entry, existed: bool, hops: u32) -> Response {
        let node = self.me.addr.to_string();
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

    fn read_at_primary(
        &mut self,
        origin: Option<Origin>,
        key: String,
        hops: u32,
        out: &mut Vec<Output>,
    ) {
        let chain_len = self.chain_len();
        if self.config.consistency == Consistency::Chain && chain_len > 1 {
            let Some(origin) = origin else { return };
            let tail = self.view.succs[chain_len - 2].clone();
            let msg = Message::TailRead {
                origin,
                key,
                hops: hops + 1,
            };
            return self.send(&tail, msg, out);
        }
        self.answer_read(origin, &key, hops, out);
    }

    /// Answer a read from the local store.
    pub(crate) fn answer_read(
        &mut self,
        origin: Option<Origin>,
        key: &str,
        hops: u32,
        out: &mut Vec<Output>,
    ) {
        if !self.is_member() {
            let node = self.me.addr.to_string();
            return self.respond(origin, Err(RequestError::RouteBroken { node }), out);
        }
        let node = self.me.addr.to_string();
        let reply = match self.store.value(key) {
            Some(value) => Response::Found {
                key: key.to_string(),
                value: value.to_string(),
                node,
                hops,
            },
            None => Response::NotFound {
                key: key.to_string(),
                node,
                hops,
            },
        };
        self.respond(origin, Ok(reply), out);
        self.maybe_read_repair(key, out);
    }

    /// Read repair (eventual consistency): after answering a read, a replica that is not
    /// the key's primary sends its copy, now and then, to the primary, which keeps the
    /// newer of the two and re-replicates it to every replica. Stale replicas catch up on
    /// the keys clients read, between anti-entropy rounds; a primary that missed a write
    /// (it took over the key while the write travelled) learns it back.
    fn maybe_read_repair(&mut self, key: &str, out: &mut Vec<Output>) {
        if self.config.consistency != Consistency::Eventual || self.is_primary(Id::of_key(key)) {
            return;
        }
        let Some(entry) = self.store.get(key).cloned() else {
            return;
        };
        if self.rng.gen_range(0..1000) >= READ_REPAIR_PER_MILLE {
            return;
        }
        self.repair(key, entry, REPAIR_TTL, out);
    }

    pub(crate) fn on_chain_write(&mut self, step: ChainStep, out: &mut Vec<Output>) {
        if !self.is_member() {
            // Left the ring while the write travelled: the chain continues at the node that
            // took over this one's keys. Never acknowledge from outside the ring.
            if let Some(next) = self.forward_to.clone() {
                let position = step.position;
                let msg = step.into_message(position);
                self.send(&next, msg, out);
            }
            return;
        }
        let key_id = Id::of_key(&step.key);
        if !self.accepts(key_id) {
            // The chain this write was sent down no longer holds here: repair it towards
            // the current replicas, but neither pass it on nor acknowledge it (the client
            // sees a timeout: the write may or may not take effect).
            return self.offer(&step.key, step.entry, step.ttl, out);
        }
        self.apply_entry(&step.key, step.entry.clone(), out);
        let next_position = step.position as usize + 1;
        if next_position < step.chain_len as usize {
            if let Some(next) = self.view.succs.first().cloned() {
                let msg = step.into_message(next_position as u8);
                return self.send(&next, msg, out);
            }
        }
        // Only a node that is the key's tail in its own view acknowledges: the write is
        // then on the whole chain. Not if a newer version from another primary is already
        // here: it may have been read, and this write cannot be ordered after it. (A newer
        // version from the same primary was assigned after this write reached it, so this
        // write can be ordered just before that one.)
        let superseded = self.store.get(&step.key).is_some_and(|e| {
            e.version > step.entry.version && e.version.node != step.entry.version.node
        });
        if self.is_tail(key_id) && !superseded {
            let reply = self.write_reply(&step.key, &step.entry, step.existed, step.hops);
            self.respond(step.origin, Ok(reply), out);
        }
    }

    /// Chain replication read at the tail: answered only by a node that, in its own view,
    /// holds the key and is its tail; otherwise the ring is changing and the client retries.
    pub(crate) fn tail_read(
        &mut self,
        origin: Origin,
        key: &str,
        hops: u32,
        out: &mut Vec<Output>,
    ) {
        let key_id = Id::of_key(key);
        if self.is_member() && self.responsibility().contains(key_id) && self.is_tail(key_id) {
            return self.answer_read(Some(origin), key, hops, out);
        }
        let node = self.me.addr.to_string();
        self.respond(Some(origin), Err(RequestError::RouteBroken { node }), out);
    }

    /// Whether this node is the last of `key`'s `min(k, N)` replicas in its own view.
    pub(crate) fn is_tail(&self, key: Id) -> bool {
        let m = self.chain_len();
        if m <= 1 {
            return self.is_primary(key);
        }
        // The key's primary is this node's (m - 1)-th predecessor.
        let (Some(first), far) = (self.view.preds.get(m - 2), self.view.preds.get(m - 1)) else {
            return false;
        };
        let from = far.map_or(self.me.id, |n| n.id);
        crate::id::in_open_closed(key, from, first.id)
    }

    pub(crate) fn on_replicate(
        &mut self,
        from: &NodeRef,
        entries: Vec<(String, Entry)>,
        ttl: u8,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        if !self.is_member() && self.preparing.is_none() && self.forward_to.is_none() {
            return Err(Rejected::NotMember {
                kind: "replicate",
                from: from.addr.to_string(),
                phase: self.phase,
            });
        }
        for (key, entry) in entries {
            self.offer(&key, entry, ttl, out);
        }
        Ok(())
    }

    /// A replica write reached a node that should not hold the key (the ring changed
    /// while it travelled): send it on to the key's current primary instead of storing it.
    fn repair(&mut self, key: &str, entry: Entry, ttl: u8, out: &mut Vec<Output>) {
        let routed = Routed {
            origin: None,
            key: key.to_string(),
            action: Action::Repair { entry, ttl },
            hops: 0,
            laps: 0,
        };
        // A node that has left passes it to the node that took over its keys.
        self.route(routed, out);
    }
}

/// Reads (per thousand) after which an eventual replica sends its copy to the primary.
const READ_REPAIR_PER_MILLE: u32 = 100;

/// How long a replica gathers acknowledgements before sending them (well under
/// `REPLICATE_RETRY_NS`, so a gathered acknowledgement never causes a resend).
const ACK_DELAY_NS: crate::Time = 5_000_000;

/// Acknowledgements gathered for one primary before they are sent at once.
const ACKS_PER_MESSAGE_MAX: usize = 256;

/// How long a primary waits for a replica to acknowledge a write before sending it again.
const REPLICATE_RETRY_NS: crate::Time = 50_000_000;

/// Resends of a hand-over's unacknowledged forwards before its commit (the commit, when
/// it arrives, sends them again too).
const FORWARD_RESENDS_MAX: u32 = 40;

/// Sends of one replica write before the primary leaves it to anti-entropy.
const REPLICATE_TRIES_MAX: u8 = 8;

/// Replica writes tracked at once; beyond it new ones are sent once, untracked (anti-entropy
/// still repairs them), so memory stays bounded under any load.
const REPLICATE_TRACKED_MAX: usize = 65_536;

/// A replica write waiting for its acknowledgement.
#[derive(Clone, Debug)]
struct Pending {
    to: NodeRef,
    key: String,
    entry: Entry,
    ttl: u8,
    tries: u8,
}

/// Replica writes a primary has sent and not yet seen acknowledged, by sequence number.
#[derive(Clone, Debug, Default)]
pub(crate) struct Unacked {
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
}

impl Unacked {
    /// Remember a replica write to `to`; its sequence number, or 0 (untracked) when full.
    fn track(&mut self, to: &NodeRef, key: &str, entry: &Entry, ttl: u8) -> u64 {
        if self.pending.len() >= REPLICATE_TRACKED_MAX {
            return 0;
        }
        self.next_seq += 1;
        let pending = Pending {
            to: to.clone(),
            key: key.to_string(),
            entry: entry.clone(),
            ttl,
            tries: 1,
        };
        self.pending.insert(self.next_seq, pending);
        self.next_seq
    }

    /// `from` acknowledged write `seq`.
    pub(crate) fn acknowledge(&mut self, from: &NodeRef, seq: u64) {
        if self.pending.get(&seq).is_some_and(|p| p.to.id == from.id) {
            self.pending.remove(&seq);
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl Node {
    /// Acknowledge replica write `seq` from `primary`: gathered, sent within
    /// `ACK_DELAY_NS` (or at once when many are waiting).
    pub(crate) fn ack_replicate(&mut self, primary: NodeRef, seq: u64, out: &mut Vec<Output>) {
        let due = self.acks_due.entry(primary.clone()).or_default();
        due.push(seq);
        if due.len() >= ACKS_PER_MESSAGE_MAX {
            let seqs = std::mem::take(due);
            self.acks_due.remove(&primary);
            self.send(&primary, Message::ReplicateAck { seqs }, out);
            return;
        }
        if !self.timers.contains_key(&Timer::ReplicateAcks) {
            let at = self.now.saturating_add(ACK_DELAY_NS);
            self.set_timer(Timer::ReplicateAcks, at, out);
        }
    }

    /// Send every gathered acknowledgement.
    pub(crate) fn flush_replicate_acks(&mut self, out: &mut Vec<Output>) {
        self.timers.remove(&Timer::ReplicateAcks);
        for (primary, seqs) in std::mem::take(&mut self.acks_due) {
            if !seqs.is_empty() {
                self.send(&primary, Message::ReplicateAck { seqs }, out);
            }
        }
    }

    /// Resend every unacknowledged replica write (each a bounded number of times), and
    /// hand-over forwards not yet acknowledged.
    pub(crate) fn resend_replicates(&mut self, out: &mut Vec<Output>) {
        self.timers.remove(&Timer::Replicate);
        let mut sends = Vec::new();
        self.replicating.pending.retain(|seq, p| {
            if p.tries >= REPLICATE_TRIES_MAX {
                return false;
            }
            p.tries += 1;
            let msg = Message::Replicate {
                entries: vec![(p.key.clone(), p.entry.clone())],
                ttl: p.ttl,
                seq: *seq,
            };
            sends.push((p.to.clone(), msg));
            true
        });
        for (to, msg) in sends {
            self.send(&to, msg, out);
        }
        let forwards = self.resend_pending_forwards(out);
        if !self.replicating.is_empty() || forwards {
            self.arm_resend_timer(out);
        }
    }
}
