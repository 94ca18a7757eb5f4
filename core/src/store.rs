//! The versioned key/value store each node keeps, with tombstones for deletes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::in_open_closed;
use crate::{Id, Time};

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

#[derive(Clone, Debug)]
struct Slot {
    /// SHA-1 of the key, computed once.
    id: Id,
    entry: Entry,
    /// Local time the slot last changed; tombstones expire by it.
    written_at: Time,
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

/// Ranges whose digests are kept up to date at once (a node compares its own range and
/// its predecessors' ranges: about k of them).
const DIGEST_CACHE_MAX: usize = 16;

/// Keys, their latest entries, and a Lamport clock for versions.
#[derive(Clone, Debug, Default)]
pub struct Store {
    slots: BTreeMap<String, Slot>,
    clock: u64,
    live: usize,
    /// Anti-entropy digests per range, kept up to date on every write so a sync round
    /// costs O(buckets), not a scan of the store.
    digests: BTreeMap<(Id, Id), Vec<u64>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// The next version this node assigns as primary for `key`: newer than anything the
    /// node has seen, for any key.
    pub fn next_version(&mut self, node: Id) -> Version {
        self.clock += 1;
        Version {
            counter: self.clock,
            node,
        }
    }

    /// Apply `entry` if it is newer than what is stored.
    pub fn apply(&mut self, now: Time, key: &str, entry: Entry) -> Applied {
        self.clock = self.clock.max(entry.version.counter);
        if let Some(slot) = self.slots.get_mut(key) {
            if slot.entry.version >= entry.version {
                return Applied::Stale;
            }
            let was_live = slot.entry.value.is_some();
            let is_live = entry.value.is_some();
            let (id, old) = (slot.id, entry_hash(key, &slot.entry));
            let new = entry_hash(key, &entry);
            slot.entry = entry;
            slot.written_at = now;
            self.live = self.live + is_live as usize - was_live as usize;
            self.update_digests(id, old, new);
            return Applied::Changed;
        }
        self.live += entry.value.is_some() as usize;
        let id = Id::of_key(key);
        self.update_digests(id, 0, entry_hash(key, &entry));
        self.slots.insert(
            key.to_string(),
            Slot {
                id,
                entry,
                written_at: now,
            },
        );
        Applied::Changed
    }

    /// The entry for `key`, tombstone included.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.slots.get(key).map(|s| &s.entry)
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
        self.slots.len()
    }

    /// Whether there are no entries at all.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Entries (tombstones included) whose key id lies in `range`, in key order.
    pub fn entries_in(&self, range: Range) -> Vec<(String, Entry)> {
        if range == Range::Empty {
            return Vec::new();
        }
        self.slots
            .iter()
            .filter(|(_, s)| range.contains(s.id))
            .map(|(k, s)| (k.clone(), s.entry.clone()))
            .collect()
    }

    /// Live pairs, in key order.
    pub fn live_entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.slots
            .iter()
            .filter_map(|(k, s)| s.entry.value.as_deref().map(|v| (k.as_str(), v)))
    }

    /// All entries, tombstones included, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.slots.iter().map(|(k, s)| (k.as_str(), &s.entry))
    }

    /// Drop every entry whose key id is outside `keep`. Returns how many were dropped.
    pub fn retain_range(&mut self, keep: Range) -> usize {
        self.digests.clear();
        let before = self.slots.len();
        let mut live = 0;
        self.slots.retain(|_, s| {
            let kept = keep.contains(s.id);
            live += (kept && s.entry.value.is_some()) as usize;
            kept
        });
        self.live = live;
        before - self.slots.len()
    }

    /// Remove tombstones written before `cutoff`. Returns how many were removed.
    pub fn collect_tombstones(&mut self, cutoff: Time) -> usize {
        self.digests.clear();
        let before = self.slots.len();
        self.slots
            .retain(|_, s| s.entry.value.is_some() || s.written_at >= cutoff);
        before - self.slots.len()
    }

    /// Number of tombstones.
    pub fn tombstones(&self) -> usize {
        self.slots.len() - self.live
    }

    /// Entries in `range` with their key ids, tombstones included, in key order.
    pub fn entries_with_ids(&self, range: Range) -> impl Iterator<Item = (&str, Id, &Entry)> {
        self.slots
            .iter()
            .filter(move |(_, s)| range.contains(s.id))
            .map(|(k, s)| (k.as_str(), s.id, &s.entry))
    }

    /// Anti-entropy digests of the entries in `(from, to]`: one per bucket, each the
    /// wrapping sum of its entries' hashes (so order does not matter). Computed once per
    /// range, then kept up to date by every write.
    pub fn range_digests(&mut self, from: Id, to: Id) -> Vec<u64> {
        if let Some(d) = self.digests.get(&(from, to)) {
            return d.clone();
        }
        let range = Range::Interval { from, to };
        let mut d = vec![0u64; DIGEST_BUCKETS];
        for (key, slot) in self.slots.iter().filter(|(_, s)| range.contains(s.id)) {
            let b = digest_bucket(slot.id);
            d[b] = d[b].wrapping_add(entry_hash(key, &slot.entry));
        }
        if self.digests.len() >= DIGEST_CACHE_MAX {
            self.digests.clear();
        }
        self.digests.insert((from, to), d.clone());
        d
    }

    fn update_digests(&mut self, id: Id, old: u64, new: u64) {
        let b = digest_bucket(id);
        for ((from, to), d) in self.digests.iter_mut() {
            if in_open_closed(id, *from, *to) {
                d[b] = d[b].wrapping_sub(old).wrapping_add(new);
            }
        }
    }

    /// Forget everything (a node that departed or restarted).
    pub fn clear(&mut self) {
        self.digests.clear();
        self.slots.clear();
        self.live = 0;
    }
}

/// The digest bucket of a key id.
pub fn digest_bucket(id: Id) -> usize {
    (id.prefix_u64() % DIGEST_BUCKETS as u64) as usize
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
        assert_eq!(s.next_version(Id::ZERO).counter, 42);
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
