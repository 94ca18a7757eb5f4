//! The versioned key/value store each node keeps, with tombstones for deletes.

mod key;
mod slots;

use std::collections::{btree_map, BTreeMap};

use serde::{Deserialize, Serialize};

use crate::id::in_open_closed;
use crate::{Id, Time};
use key::Key;
use slots::Slots;

/// Order of writes to one key. Assigned by the key's primary from a Lamport clock; ties
/// between primaries (possible only while a key changes primary) break by node id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Lamport counter.
    pub counter: u64,
    /// Id of the primary that assigned it.
    pub node: Id,
}

/// A stored value or a tombstone, with its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `None` is a tombstone: the key was deleted at this version.
    pub value: Option<String>,
    /// The write's version.
    pub version: Version,
}

/// What the store keeps per key besides the key itself: 64 bytes.
#[derive(Clone, Debug)]
struct Slot {
    entry: Entry,
    /// The top 64 bits of the key's id (SHA-1), enough to place the key in a range
    /// unless it shares them with a bound (then the id is computed again); the whole id
    /// would cost 24 bytes more a key.
    id_prefix: u64,
}

/// A responsibility or hand-over range of key ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Range {
    /// No key.
    Empty,
    /// Every key.
    All,
    /// Keys whose id is in `(from, to]`.
    Interval {
        /// Exclusive start.
        from: Id,
        /// Inclusive end.
        to: Id,
    },
}

impl Range {
    /// Whether the range holds `id`.
    pub fn contains(&self, id: Id) -> bool {
        match *self {
            Range::Empty => false,
            Range::All => true,
            Range::Interval { from, to } => in_open_closed(id, from, to),
        }
    }

    /// `(x, x]` is the whole circle: as `All`.
    fn whole(self) -> Range {
        match self {
            Range::Interval { from, to } if from == to => Range::All,
            r => r,
        }
    }

    /// Keys in both ranges, or `None` if they are two separate arcs (each range wraps
    /// round the other's ends), which one range cannot express.
    pub fn intersect(self, other: Range) -> Option<Range> {
        let (a1, a2, b1, b2) = match (self.whole(), other.whole()) {
            (Range::Empty, _) | (_, Range::Empty) => return Some(Range::Empty),
            (Range::All, r) | (r, Range::All) => return Some(r),
            (Range::Interval { from: a1, to: a2 }, Range::Interval { from: b1, to: b2 }) => {
                (a1, a2, b1, b2)
            }
        };
        // Offsets clockwise from `a1`: `self` is (0, oa2], `other` (ob1, ob2], wrapping
        // past 0 when ob1 > ob2.
        let (oa2, ob1, ob2) = (a1.distance_to(a2), a1.distance_to(b1), a1.distance_to(b2));
        let interval = |from, to| Range::Interval { from, to };
        let nearer_end = if ob2 < oa2 { b2 } else { a2 };
        if ob1 < ob2 {
            return Some(match ob1 < ob2.min(oa2) {
                true => interval(b1, nearer_end),
                false => Range::Empty,
            });
        }
        // `other` wraps: its part after b1, and its part up to b2.
        let after_b1 = ob1 < oa2;
        let up_to_b2 = ob2 != Id::ZERO;
        match (after_b1, up_to_b2) {
            (true, true) => None,
            (true, false) => Some(interval(b1, a2)),
            (false, true) => Some(interval(a1, nearer_end)),
            (false, false) => Some(Range::Empty),
        }
    }

    /// Keys in either of two ranges of one node, each `(x, self]` or an arc that ends
    /// where the other starts (a responsibility and what a prepared view adds to it), or
    /// `None` if they are neither.
    pub fn join_adjacent(self, other: Range) -> Option<Range> {
        match (self.whole(), other.whole()) {
            (Range::Empty, r) | (r, Range::Empty) => Some(r),
            (Range::All, _) | (_, Range::All) => Some(Range::All),
            (Range::Interval { from: a1, to: a2 }, Range::Interval { from: b1, to: b2 }) => {
                // `(a1, a2]` then `(a2, b2]`: one arc, unless the second reaches round
                // to a1 or past it.
                let then = |a1: Id, a2: Id, b2: Id| match in_open_closed(a1, a2, b2) {
                    true => Range::All,
                    false => Range::Interval { from: a1, to: b2 },
                };
                if b1 == a2 {
                    Some(then(a1, a2, b2))
                } else if a1 == b2 {
                    Some(then(b1, b2, a2))
                } else if self == other {
                    Some(self)
                } else {
                    None
                }
            }
        }
    }

    /// Keys in `new` that are not in `old`, for two responsibility ranges of the same node
    /// (both of the form `(x, self]`, `All` or `Empty`).
    pub fn gained(old: Range, new: Range) -> Range {
        match (old, new) {
            (_, Range::Empty) | (Range::All, _) => Range::Empty,
            (Range::Empty, new) => new,
            (Range::Interval { from, to }, Range::All) => Range::Interval { from: to, to: from },
            (Range::Interval { from: old_from, .. }, Range::Interval { from: new_from, to }) => {
                // The new range reaches further back exactly when the old start lies inside it.
                if old_from != new_from && in_open_closed(old_from, new_from, to) {
                    Range::Interval {
                        from: new_from,
                        to: old_from,
                    }
                } else {
                    Range::Empty
                }
            }
        }
    }
}

/// Outcome of offering an entry to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The entry was newer and replaced what was there.
    Changed,
    /// The store already had this version or a newer one.
    Stale,
}

/// Buckets per anti-entropy digest: a mismatch costs one bucket's entries.
pub const DIGEST_BUCKETS: usize = 64;

/// Buckets of the digests a node back from its disk sends with a fetch: the source then
/// sends only the entries of the buckets that differ, so a node that missed a few writes
/// gets about those back, not its whole range. Finer than [`DIGEST_BUCKETS`] because
/// they are computed once per fetch, not kept up to date.
pub const FETCH_BUCKETS: usize = 4096;

/// Ranges whose digests are kept up to date at once (a node compares its own range and
/// its predecessors' ranges: about k of them).
const DIGEST_CACHE_MAX: usize = 16;

/// Keys, their latest entries, and a Lamport clock for versions.
///
/// Laid out for millions of keys: the map from key to slot holds only the key (inline
/// when short, see `key::Key`) and a slot number; the slots themselves sit densely in
/// chunks (`slots::Slots`), renumbered when entries are dropped (hand-overs, tombstone
/// collection). Only tombstones need the time they were written, so only they have it,
/// in a map of their own.
#[derive(Clone, Debug, Default)]
pub struct Store {
    /// Key → its slot in `slots`, in key order (iteration order reaches outputs).
    index: BTreeMap<Key, usize>,
    /// Every entry, tombstones included; `index` refers to each exactly once.
    slots: Slots<Slot>,
    /// Local time each tombstone was written (tombstones expire by it); exactly the
    /// keys whose entry is a tombstone.
    tombstone_times: BTreeMap<Key, Time>,
    clock: u64,
    live: usize,
    /// Anti-entropy digests per range, kept up to date on every write so a sync round
    /// costs O(buckets), not a scan of the store.
    digests: BTreeMap<(Id, Id), Vec<u64>>,
    /// Bytes of keys and values held (tombstones count their key), for the store limit.
    bytes: usize,
    /// Changes not yet handed to the driver to persist; `None` when the node has no disk.
    journal: Option<Journal>,
}

/// The store's changes since the driver last took them: what a durable node must write
/// to its disk before it sends anything that depends on them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    /// Everything was dropped first (before `changes`).
    pub cleared: bool,
    /// Keys written (`Some`) or dropped (`None`), in the order it happened.
    pub changes: Vec<(String, Option<Entry>)>,
}

impl Journal {
    /// Whether there is nothing to persist.
    pub fn is_empty(&self) -> bool {
        !self.cleared && self.changes.is_empty()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// A store that journals its changes for a disk (see [`Store::take_journal`]).
    pub fn durable() -> Store {
        Store {
            journal: Some(Journal::default()),
            ..Store::default()
        }
    }

    /// Load entries read back from the disk: applied as writes at `now`, but not
    /// journaled (the disk has them).
    pub fn load(&mut self, now: Time, entries: impl IntoIterator<Item = (String, Entry)>) {
        let journal = self.journal.take();
        for (key, entry) in entries {
            self.apply(now, &key, entry);
        }
        self.journal = journal;
    }

    /// The changes since the last call, for the driver to persist (nothing unless the
    /// store is [`Store::durable`]).
    pub fn take_journal(&mut self) -> Option<Journal> {
        let journal = self.journal.as_mut()?;
        if journal.is_empty() {
            return None;
        }
        Some(std::mem::take(journal))
    }

    /// Bytes of keys and values held (tombstones count their key).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The Lamport clock: the highest version counter seen.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The next version this node assigns as primary: newer than anything the node has
    /// seen, for any key, and no older than the wall time `wall_us` (microseconds since
    /// the driver's epoch): a hybrid logical clock, so that of two writes to one key on
    /// two sides of a partition the later one in real time wins, up to clock skew.
    pub fn next_version(&mut self, node: Id, wall_us: u64) -> Version {
        self.clock = (self.clock + 1).max(wall_us);
        Version {
            counter: self.clock,
            node,
        }
    }

    /// Apply `entry` if it is newer than what is stored.
    pub fn apply(&mut self, now: Time, key: &str, entry: Entry) -> Applied {
        self.clock = self.clock.max(entry.version.counter);
        let is_live = entry.value.is_some();
        // One search of the index for a new key, not one to look and one to insert.
        let at = match self.index.entry(Key::new(key)) {
            btree_map::Entry::Occupied(found) => *found.get(),
            btree_map::Entry::Vacant(room) => {
                let prefix = Id::of_key(key).prefix_u64();
                let hash = entry_hash(key, &entry);
                self.live += is_live as usize;
                self.bytes += entry_bytes(key, &entry);
                if let Some(j) = &mut self.journal {
                    j.changes.push((key.to_string(), Some(entry.clone())));
                }
                room.insert(self.slots.push(Slot {
                    entry,
                    id_prefix: prefix,
                }));
                self.update_digests(prefix, key, 0, hash);
                self.note_tombstone(key, is_live, now);
                return Applied::Changed;
            }
        };
        let slot = self.slots.get_mut(at);
        if slot.entry.version >= entry.version {
            return Applied::Stale;
        }
        let was_live = slot.entry.value.is_some();
        let (prefix, old) = (slot.id_prefix, entry_hash(key, &slot.entry));
        let new = entry_hash(key, &entry);
        self.bytes = self.bytes + entry_bytes(key, &entry) - entry_bytes(key, &slot.entry);
        if let Some(j) = &mut self.journal {
            j.changes.push((key.to_string(), Some(entry.clone())));
        }
        slot.entry = entry;
        self.live = self.live + is_live as usize - was_live as usize;
        self.note_tombstone(key, is_live, now);
        self.update_digests(prefix, key, old, new);
        Applied::Changed
    }

    /// The entry for `key`, tombstone included.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        let at = *self.index.get(key.as_bytes())?;
        Some(&self.slots.get(at).entry)
    }

    /// The live value of `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|e| e.value.as_deref())
    }

    /// Number of live keys.
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no entries at all.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Entries (tombstones included) whose key id lies in `range`, in key order.
    pub fn entries_in(&self, range: Range) -> Vec<(String, Entry)> {
        if range == Range::Empty {
            return Vec::new();
        }
        self.slots_in(range)
            .map(|(k, s)| (k.to_string(), s.entry.clone()))
            .collect()
    }

    /// Fetch digests of the entries in `range`: [`FETCH_BUCKETS`] wrapping sums of the
    /// entries' hashes (key and version), by key id.
    pub fn fetch_digests(&self, range: Range) -> Vec<u64> {
        self.bucket_sums(range, FETCH_BUCKETS)
    }

    /// Wrapping sums of the hashes (key and version) of the entries in `range`, in
    /// `buckets` buckets by key id: order does not matter.
    fn bucket_sums(&self, range: Range, buckets: usize) -> Vec<u64> {
        let mut d = vec![0u64; buckets];
        if range == Range::Empty {
            return d;
        }
        for (key, slot) in self.slots_in(range) {
            let b = bucket(slot.id_prefix, buckets);
            d[b] = d[b].wrapping_add(entry_hash(key, &slot.entry));
        }
        d
    }

    /// The entries in `range` that a node whose [`Store::fetch_digests`] of it are
    /// `theirs` may lack or hold in another version: those of every bucket whose digest
    /// differs from this store's. `theirs` of the wrong length: every entry.
    pub fn entries_differing(&self, range: Range, theirs: &[u64]) -> Vec<(String, Entry)> {
        if theirs.len() != FETCH_BUCKETS {
            return self.entries_in(range);
        }
        if range == Range::Empty {
            return Vec::new();
        }
        let mine = self.fetch_digests(range);
        self.slots_in(range)
            .filter(|(_, s)| {
                let b = bucket(s.id_prefix, FETCH_BUCKETS);
                mine[b] != theirs[b]
            })
            .map(|(k, s)| (k.to_string(), s.entry.clone()))
            .collect()
    }

    /// Live pairs, in key order.
    pub fn live_entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter()
            .filter_map(|(k, e)| e.value.as_deref().map(|v| (k, v)))
    }

    /// Number of live keys whose id is in `range`, from the id prefixes the store keeps:
    /// a key's id is computed only when its prefix equals a bound's.
    pub fn live_in(&self, range: Range) -> usize {
        self.slots_in(range)
            .filter(|(_, slot)| slot.entry.value.is_some())
            .count()
    }

    /// All entries, tombstones included, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.index
            .iter()
            .map(|(k, &at)| (k.as_str(), &self.slots.get(at).entry))
    }

    /// Drop every entry whose key id is outside `keep`. Returns how many were dropped.
    pub fn retain_range(&mut self, keep: Range) -> usize {
        self.digests.clear();
        let bounds = Bounds::of(keep);
        self.retain(|key, slot| bounds.holds(slot.id_prefix, key))
    }

    /// Remove tombstones written before `cutoff`. Returns how many were removed.
    pub fn collect_tombstones(&mut self, cutoff: Time) -> usize {
        self.digests.clear();
        let times = std::mem::take(&mut self.tombstone_times);
        let removed = self.retain(|key, slot| {
            slot.entry.value.is_some() || times.get(key.as_bytes()).is_some_and(|&at| at >= cutoff)
        });
        self.tombstone_times = times;
        removed
    }

    /// Number of tombstones.
    pub fn tombstones(&self) -> usize {
        self.index.len() - self.live
    }

    /// Entries in `range` with their key ids, tombstones included, in key order. The ids
    /// are computed again (SHA-1 of each key in the range): the store keeps only a prefix.
    pub fn entries_with_ids(&self, range: Range) -> impl Iterator<Item = (&str, Id, &Entry)> {
        self.slots_in(range)
            .map(|(k, s)| (k, Id::of_key(k), &s.entry))
    }

    /// Anti-entropy digests of the entries in `(from, to]`: one per bucket, each the
    /// wrapping sum of its entries' hashes (so order does not matter). Computed once per
    /// range, then kept up to date by every write.
    pub fn range_digests(&mut self, from: Id, to: Id) -> Vec<u64> {
        if let Some(d) = self.digests.get(&(from, to)) {
            return d.clone();
        }
        let d = self.bucket_sums(Range::Interval { from, to }, DIGEST_BUCKETS);
        if self.digests.len() >= DIGEST_CACHE_MAX {
            self.digests.clear();
        }
        self.digests.insert((from, to), d.clone());
        d
    }

    /// Forget everything (a node that departed or restarted).
    pub fn clear(&mut self) {
        self.digests.clear();
        self.index = BTreeMap::new();
        self.slots = Slots::default();
        self.tombstone_times = BTreeMap::new();
        self.live = 0;
        self.bytes = 0;
        if let Some(j) = &mut self.journal {
            j.cleared = true;
            j.changes.clear();
        }
    }

    /// Keep `tombstone_times` to the keys whose entry is a tombstone: `key`'s entry has
    /// just been written at `now`, live or not.
    fn note_tombstone(&mut self, key: &str, is_live: bool, now: Time) {
        if is_live {
            self.tombstone_times.remove(key.as_bytes());
        } else {
            self.tombstone_times.insert(Key::new(key), now);
        }
    }

    /// Keys and slots in `range`, in key order.
    fn slots_in(&self, range: Range) -> impl Iterator<Item = (&str, &Slot)> {
        let bounds = Bounds::of(range);
        self.index.iter().filter_map(move |(k, &at)| {
            let slot = self.slots.get(at);
            let key = k.as_str();
            bounds.holds(slot.id_prefix, key).then_some((key, slot))
        })
    }

    fn update_digests(&mut self, prefix: u64, key: &str, old: u64, new: u64) {
        let b = prefix_bucket(prefix);
        for ((from, to), d) in self.digests.iter_mut() {
            let bounds = Bounds::of(Range::Interval {
                from: *from,
                to: *to,
            });
            if bounds.holds(prefix, key) {
                d[b] = d[b].wrapping_sub(old).wrapping_add(new);
            }
        }
    }

    /// Keep the entries `keep` says yes to; the slots of the others are freed and the
    /// rest renumbered in their order (every slot number maps to the count of kept slots
    /// before it). Returns how many were dropped.
    fn retain(&mut self, mut keep: impl FnMut(&str, &Slot) -> bool) -> usize {
        let before = self.index.len();
        let mut kept = vec![false; self.slots.len()];
        let slots = &self.slots;
        let mut live = 0;
        let mut bytes = 0;
        let journal = &mut self.journal;
        self.index.retain(|key, at| {
            let slot = slots.get(*at);
            let yes = keep(key.as_str(), slot);
            kept[*at] = yes;
            live += (yes && slot.entry.value.is_some()) as usize;
            if yes {
                bytes += entry_bytes(key.as_str(), &slot.entry);
            } else if let Some(j) = journal {
                j.changes.push((key.as_str().to_string(), None));
            }
            yes
        });
        self.bytes = bytes;
        let index = &self.index;
        self.tombstone_times
            .retain(|key, _| index.contains_key(key.as_bytes()));
        let mut moved_to = Vec::with_capacity(kept.len());
        let mut next = 0;
        for &yes in &kept {
            moved_to.push(next);
            next += yes as usize;
        }
        for at in self.index.values_mut() {
            *at = moved_to[*at];
        }
        self.slots.retain(&kept);
        self.live = live;
        before - self.index.len()
    }
}

/// What an entry counts against the store limit.
fn entry_bytes(key: &str, entry: &Entry) -> usize {
    key.len() + entry.value.as_ref().map_or(0, |v| v.len())
}

/// A range's bounds as id prefixes too, so that most keys are placed by their stored
/// prefix alone.
#[derive(Clone, Copy)]
struct Bounds {
    range: Range,
    from_prefix: u64,
    to_prefix: u64,
}

impl Bounds {
    fn of(range: Range) -> Bounds {
        let (from_prefix, to_prefix) = match range {
            Range::Interval { from, to } => (from.prefix_u64(), to.prefix_u64()),
            _ => (0, 0),
        };
        Bounds {
            range,
            from_prefix,
            to_prefix,
        }
    }

    /// Whether the key `key`, whose id starts with `prefix`, lies in the range: exactly
    /// `range.contains(Id::of_key(key))`. A prefix that differs from both bounds' decides
    /// every comparison `in_open_closed` makes; otherwise the id is computed.
    fn holds(&self, prefix: u64, key: &str) -> bool {
        let Range::Interval { from, to } = self.range else {
            return self.range == Range::All;
        };
        if prefix == self.from_prefix || prefix == self.to_prefix {
            return self.range.contains(Id::of_key(key));
        }
        if from < to {
            self.from_prefix < prefix && prefix < self.to_prefix
        } else {
            prefix > self.from_prefix || prefix < self.to_prefix
        }
    }
}

/// The digest bucket of a key id.
pub fn digest_bucket(id: Id) -> usize {
    prefix_bucket(id.prefix_u64())
}

/// The digest bucket of a key whose id starts with `prefix`.
fn prefix_bucket(prefix: u64) -> usize {
    bucket(prefix, DIGEST_BUCKETS)
}

/// The bucket, of `buckets`, of a key whose id starts with `prefix`.
fn bucket(prefix: u64, buckets: usize) -> usize {
    (prefix % buckets as u64) as usize
}

/// FNV-1a over the key and its version: stable across processes and Rust releases.
fn entry_hash(key: &str, entry: &Entry) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(key.as_bytes());
    eat(&entry.version.counter.to_be_bytes());
    eat(&entry.version.node.to_bytes());
    eat(&[entry.value.is_some() as u8]);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A range from a few bits, so ends often coincide; `Interval` with its ends
    /// anywhere, equal ends included.
    fn range_of(kind: u8, from: u8, to: u8) -> Range {
        let id = |x: u8| Id::from_bytes([x; 20]);
        match kind % 5 {
            0 => Range::Empty,
            1 => Range::All,
            _ => Range::Interval {
                from: id(from % 8),
                to: id(to % 8),
            },
        }
    }

    proptest! {
        /// `intersect` holds exactly the ids both ranges hold, when it answers; it fails
        /// to answer only for two arcs that overlap at both ends.
        #[test]
        fn intersect_holds_the_ids_in_both(
            (ka, fa, ta) in (any::<u8>(), any::<u8>(), any::<u8>()),
            (kb, fb, tb) in (any::<u8>(), any::<u8>(), any::<u8>()),
        ) {
            let (a, b) = (range_of(ka, fa, ta), range_of(kb, fb, tb));
            // Every end and the ids just past them.
            let probes: Vec<Id> = (0..8u8)
                .flat_map(|x| [Id::from_bytes([x; 20]), Id::from_bytes([x; 20]).wrapping_add(Id::pow2(0))])
                .collect();
            match a.intersect(b) {
                Some(both) => {
                    for x in &probes {
                        prop_assert_eq!(both.contains(*x), a.contains(*x) && b.contains(*x), "{:?} ∩ {:?} at {}", a, b, x);
                    }
                }
                None => {
                    // Two pieces: going round the probes (in id order), the ids in both
                    // start twice.
                    let inside: Vec<bool> = probes.iter().map(|x| a.contains(*x) && b.contains(*x)).collect();
                    let starts = (0..inside.len())
                        .filter(|&i| inside[i] && !inside[(i + inside.len() - 1) % inside.len()])
                        .count();
                    prop_assert_eq!(starts, 2, "{:?} ∩ {:?} is one piece", a, b);
                }
            }
        }

        /// `join_adjacent` holds exactly the ids either range holds, when it answers.
        #[test]
        fn join_adjacent_holds_the_ids_in_either(
            (ka, fa, ta) in (any::<u8>(), any::<u8>(), any::<u8>()),
            (kb, fb, tb) in (any::<u8>(), any::<u8>(), any::<u8>()),
        ) {
            let (a, b) = (range_of(ka, fa, ta), range_of(kb, fb, tb));
            if let Some(either) = a.join_adjacent(b) {
                for x in 0..8u8 {
                    for x in [Id::from_bytes([x; 20]), Id::from_bytes([x; 20]).wrapping_add(Id::pow2(0))] {
                        prop_assert_eq!(either.contains(x), a.contains(x) || b.contains(x), "{:?} ∪ {:?} at {}", a, b, x);
                    }
                }
            }
        }
    }

    #[test]
    fn a_responsibility_joins_what_a_prepared_view_adds() {
        let id = |x: u8| Id::from_bytes([x; 20]);
        let held = Range::Interval {
            from: id(3),
            to: id(5),
        };
        let gained = Range::Interval {
            from: id(1),
            to: id(3),
        };
        let expect = Range::Interval {
            from: id(1),
            to: id(5),
        };
        assert_eq!(held.join_adjacent(gained), Some(expect));
        assert_eq!(gained.join_adjacent(held), Some(expect));
        let rest = Range::Interval {
            from: id(5),
            to: id(3),
        };
        assert_eq!(held.join_adjacent(rest), Some(Range::All));
        let apart = Range::Interval {
            from: id(6),
            to: id(7),
        };
        assert_eq!(held.join_adjacent(apart), None);
    }

    fn v(counter: u64) -> Version {
        Version {
            counter,
            node: Id::ZERO,
        }
    }

    fn put(value: &str, counter: u64) -> Entry {
        Entry {
            value: Some(value.into()),
            version: v(counter),
        }
    }

    #[test]
    fn older_versions_are_ignored_and_tombstones_block_resurrection() {
        let mut s = Store::new();
        assert_eq!(s.apply(0, "k", put("a", 2)), Applied::Changed);
        assert_eq!(s.apply(0, "k", put("old", 1)), Applied::Stale);
        let tomb = Entry {
            value: None,
            version: v(3),
        };
        assert_eq!(s.apply(0, "k", tomb), Applied::Changed);
        assert_eq!(s.apply(0, "k", put("late", 2)), Applied::Stale);
        assert_eq!(s.value("k"), None);
        assert_eq!(s.live_len(), 0);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn clock_moves_past_seen_versions() {
        let mut s = Store::new();
        s.apply(0, "k", put("a", 41));
        assert_eq!(s.next_version(Id::ZERO, 0).counter, 42);
        // The wall time is the floor; past it, the clock counts on.
        assert_eq!(s.next_version(Id::ZERO, 1_000).counter, 1_000);
        assert_eq!(s.next_version(Id::ZERO, 999).counter, 1_001);
    }

    #[test]
    fn tombstones_expire_by_age() {
        let mut s = Store::new();
        s.apply(5, "a", put("x", 1));
        s.apply(
            5,
            "b",
            Entry {
                value: None,
                version: v(2),
            },
        );
        assert_eq!(s.collect_tombstones(4), 0);
        assert_eq!(s.collect_tombstones(6), 1);
        assert_eq!(s.value("a"), Some("x"));
    }

    #[test]
    fn cached_digests_follow_writes() {
        let mut s = Store::new();
        for i in 0..200 {
            s.apply(0, &format!("k{i}"), put("a", i + 1));
        }
        let (from, to) = (Id::of_key("k3"), Id::of_key("k77"));
        let before = s.range_digests(from, to);
        for i in 0..200 {
            s.apply(0, &format!("k{i}"), put("b", 1000 + i));
        }
        s.apply(0, "new", put("c", 5000));
        let cached = s.range_digests(from, to);
        s.digests.clear();
        assert_eq!(
            cached,
            s.range_digests(from, to),
            "incremental = recomputed"
        );
        assert_ne!(before, cached);
    }

    #[test]
    fn a_fetch_with_digests_sends_only_the_buckets_that_differ() {
        let mut source = Store::new();
        for i in 0..3000 {
            source.apply(0, &format!("k{i}"), put("a", i + 1));
        }
        // The other node has everything but missed 5 writes and one key.
        let mut behind = Store::new();
        for i in (0..3000).filter(|i| !(100..105).contains(i)) {
            behind.apply(0, &format!("k{i}"), put("a", i + 1));
        }
        for i in 0..5 {
            source.apply(0, &format!("k{i}"), put("new", 10_000 + i));
        }
        let range = Range::All;
        let sent = source.entries_differing(range, &behind.fetch_digests(range));
        let keys: Vec<&str> = sent.iter().map(|(k, _)| k.as_str()).collect();
        for i in 0..5 {
            assert!(keys.contains(&format!("k{i}").as_str()), "k{i} missed");
            assert!(keys.contains(&format!("k{}", 100 + i).as_str()));
        }
        // A bucket holds ~3000/4096 keys: the differing ones are little more than the ten.
        assert!(sent.len() < 40, "{} entries sent", sent.len());
        // An identical store is sent nothing; an empty one (or no digests) everything.
        let same = source.entries_differing(range, &source.fetch_digests(range));
        assert!(same.is_empty());
        let empty = source.entries_differing(range, &Store::new().fetch_digests(range));
        assert_eq!(empty.len(), 3000);
        assert_eq!(source.entries_differing(range, &[]).len(), 3000);
    }

    #[test]
    fn prefixes_place_keys_exactly_as_ids_do() {
        let keys: Vec<String> = (0..2000).map(|i| format!("key-{i}")).collect();
        let ids: Vec<Id> = keys.iter().map(|k| Id::of_key(k)).collect();
        // Bounds that are key ids themselves, or share a key id's top 64 bits only, are
        // where a prefix alone cannot decide.
        let near = |id: Id, low: u8| {
            let mut raw = id.to_bytes();
            raw[19] ^= low;
            Id::from_bytes(raw)
        };
        let mut bounds = vec![Id::ZERO, Id::MAX, ids[0], ids[7], near(ids[3], 1)];
        bounds.push(near(ids[11], 0x80));
        for &from in &bounds {
            for &to in &bounds {
                let range = Range::Interval { from, to };
                let b = Bounds::of(range);
                for (key, id) in keys.iter().zip(&ids) {
                    let prefix = id.prefix_u64();
                    assert_eq!(
                        b.holds(prefix, key),
                        range.contains(*id),
                        "{key} in {range:?}"
                    );
                }
            }
        }
        for range in [Range::All, Range::Empty] {
            assert_eq!(
                Bounds::of(range).holds(ids[0].prefix_u64(), &keys[0]),
                range == Range::All
            );
        }
    }

    /// What a store must behave like: a map from key to entry and write time.
    #[derive(Default)]
    struct Model(BTreeMap<String, (Entry, Time)>);

    impl Model {
        fn apply(&mut self, now: Time, key: &str, entry: Entry) -> Applied {
            match self.0.get(key) {
                Some((e, _)) if e.version >= entry.version => Applied::Stale,
                _ => {
                    self.0.insert(key.to_string(), (entry, now));
                    Applied::Changed
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_store_behaves_like_a_map(
            ops in proptest::collection::vec((0u8..8, 0u16..300, 0u64..40, proptest::bool::ANY), 1..400),
        ) {
            let mut s = Store::new();
            let mut m = Model::default();
            for (i, (kind, key, counter, live)) in ops.into_iter().enumerate() {
                let now = i as Time;
                let long = "a key long enough to be kept on the heap";
                let key = if key % 7 == 0 { format!("{long} {key}") } else { format!("k{key}") };
                match kind {
                    0 => {
                        let keep = Range::Interval { from: Id::of_key(&key), to: Id::of_key("k1") };
                        s.retain_range(keep);
                        m.0.retain(|k, _| keep.contains(Id::of_key(k)));
                    }
                    1 => {
                        s.collect_tombstones(now.saturating_sub(20));
                        m.0.retain(|_, (e, at)| e.value.is_some() || *at >= now.saturating_sub(20));
                    }
                    _ => {
                        let entry = Entry { value: live.then(|| format!("v{i}")), version: v(counter) };
                        proptest::prop_assert_eq!(s.apply(now, &key, entry.clone()), m.apply(now, &key, entry));
                    }
                }
                let got: Vec<(String, Entry)> = s.iter().map(|(k, e)| (k.to_string(), e.clone())).collect();
                let want: Vec<(String, Entry)> = m.0.iter().map(|(k, (e, _))| (k.clone(), e.clone())).collect();
                proptest::prop_assert_eq!(&got, &want);
                let live_count = want.iter().filter(|(_, e)| e.value.is_some()).count();
                proptest::prop_assert_eq!(s.live_len(), live_count);
                proptest::prop_assert_eq!(s.tombstones(), want.len() - live_count);
                proptest::prop_assert_eq!(&s.entries_in(Range::All), &want);
                // Counting by the kept id prefixes agrees with hashing every key, for a
                // range with a stored key at a bound (where the prefix cannot decide).
                let arc = Range::Interval { from: Id::of_key("k5"), to: Id::of_key(&key) };
                for range in [arc, Range::All, Range::Empty] {
                    let hashed = want
                        .iter()
                        .filter(|(k, e)| e.value.is_some() && range.contains(Id::of_key(k)))
                        .count();
                    proptest::prop_assert_eq!(s.live_in(range), hashed);
                }
            }
        }
    }

    #[test]
    fn gained_ranges() {
        let id = |n: u128| {
            Id::ZERO.wrapping_add(Id::from_bytes({
                let mut b = [0u8; 20];
                b[4..].copy_from_slice(&n.to_be_bytes());
                b
            }))
        };
        let me = id(100);
        let old = Range::Interval {
            from: id(50),
            to: me,
        };
        let wider = Range::Interval {
            from: id(20),
            to: me,
        };
        assert_eq!(
            Range::gained(old, wider),
            Range::Interval {
                from: id(20),
                to: id(50)
            }
        );
        assert_eq!(Range::gained(wider, old), Range::Empty);
        assert_eq!(
            Range::gained(old, Range::All),
            Range::Interval {
                from: me,
                to: id(50)
            }
        );
        assert_eq!(Range::gained(Range::All, old), Range::Empty);
        assert_eq!(Range::gained(Range::Empty, old), old);
    }
}
