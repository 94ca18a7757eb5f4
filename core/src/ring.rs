//! A whole ring's membership in id order: the bootstrap's authoritative list, and the
//! oracle tests use for placement.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Included, Unbounded};

use serde::{Deserialize, Serialize};

use crate::id::{Id, ID_BITS};
use crate::message::{NodeRef, View};

/// Members of a ring, ordered by id. On the wire, the list of members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<NodeRef>", into = "Vec<NodeRef>")]
pub struct Ring {
    members: BTreeMap<Id, NodeRef>,
}

impl From<Vec<NodeRef>> for Ring {
    fn from(nodes: Vec<NodeRef>) -> Ring {
        let mut ring = Ring::new();
        for node in nodes {
            ring.insert(node);
        }
        ring
    }
}

impl From<Ring> for Vec<NodeRef> {
    fn from(ring: Ring) -> Vec<NodeRef> {
        ring.members.into_values().collect()
    }
}

impl Ring {
    /// An empty ring.
    pub fn new() -> Ring {
        Ring::default()
    }

    /// Add a member; returns false if its id is already present.
    pub fn insert(&mut self, node: NodeRef) -> bool {
        if self.members.contains_key(&node.id) {
            return false;
        }
        self.members.insert(node.id, node);
        true
    }

    /// Remove a member; returns false if it was absent.
    pub fn remove(&mut self, id: Id) -> bool {
        self.members.remove(&id).is_some()
    }

    /// The member with `node`'s id as this ring holds it (with its process), or `node`
    /// itself if it is not a member.
    pub fn canonical(&self, node: &NodeRef) -> NodeRef {
        self.members.get(&node.id).unwrap_or(node).clone()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: Id) -> bool {
        self.members.contains_key(&id)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members in id order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeRef> {
        self.members.values()
    }

    /// The ids of `marked` that lie in a run of at least `len` members in a row (ring
    /// order, wrapping round) that are all marked. With `len` = `min(k, N)`, such a run
    /// holds every replica of the keys between its members.
    pub fn runs_of(&self, marked: &BTreeSet<Id>, len: usize) -> BTreeSet<Id> {
        let ids: Vec<Id> = self.members.keys().copied().collect();
        let mut found = BTreeSet::new();
        let Some(start) = ids.iter().position(|id| !marked.contains(id)) else {
            // Every member is marked: one run round the whole ring.
            if len <= ids.len() {
                found.extend(ids.iter().copied());
            }
            return found;
        };
        let mut run: Vec<Id> = Vec::new();
        // From just after an unmarked member round to it again, so no run is split.
        for i in 1..=ids.len() {
            let id = ids[(start + i) % ids.len()];
            if marked.contains(&id) {
                run.push(id);
                continue;
            }
            if run.len() >= len.max(1) {
                found.extend(run.iter().copied());
            }
            run.clear();
        }
        found
    }

    /// The ids of `marked` that hold, all marked together, every replica of some keys:
    /// the members of each chain ([`Ring::chain`], replication factor `k`) whose members
    /// are all marked. Without virtual nodes, the runs of `min(k, N)` marked members in a
    /// row ([`Ring::runs_of`]); with them a run of positions of one process holds one
    /// replica of each key, not all.
    pub fn whole_chains_of(&self, marked: &BTreeSet<Id>, k: usize) -> BTreeSet<Id> {
        if self.members.values().all(|n| n.process.is_none()) {
            return self.runs_of(marked, k.min(self.len()));
        }
        let mut found = BTreeSet::new();
        for first in self.members.values().filter(|m| marked.contains(&m.id)) {
            let chain = self.chain(first, k);
            if chain.iter().all(|c| marked.contains(&c.id)) {
                found.extend(chain.iter().map(|c| c.id));
            }
        }
        found
    }

    /// The first member at or after `id` (clockwise): the node responsible for `id`.
    pub fn successor(&self, id: Id) -> Option<&NodeRef> {
        self.members
            .range((Included(id), Unbounded))
            .next()
            .or_else(|| self.members.iter().next())
            .map(|(_, n)| n)
    }

    /// The first member strictly after `id`.
    pub fn successor_after(&self, id: Id) -> Option<&NodeRef> {
        self.members
            .range((Excluded(id), Unbounded))
            .next()
            .or_else(|| self.members.iter().next())
            .map(|(_, n)| n)
    }

    /// The first member strictly before `id`.
    pub fn predecessor_before(&self, id: Id) -> Option<&NodeRef> {
        self.members
            .range(..id)
            .next_back()
            .or_else(|| self.members.iter().next_back())
            .map(|(_, n)| n)
    }

    /// Up to `n` members clockwise after `id`, excluding `id` itself, without repeats.
    pub fn successors(&self, id: Id, n: usize) -> Vec<NodeRef> {
        let after = self.members.range((Excluded(id), Unbounded));
        let wrapped = self.members.range(..id);
        after
            .chain(wrapped)
            .map(|(_, node)| node.clone())
            .take(n)
            .collect()
    }

    /// Up to `n` members counter-clockwise before `id`, excluding `id`, nearest first.
    pub fn predecessors(&self, id: Id, n: usize) -> Vec<NodeRef> {
        let before = self.members.range(..id).rev();
        let wrapped = self.members.range((Excluded(id), Unbounded)).rev();
        before
            .chain(wrapped)
            .map(|(_, node)| node.clone())
            .take(n)
            .collect()
    }

    /// The nodes that must hold a key with id `key`: its successor and the next
    /// `min(k, N) - 1` members (with virtual nodes, the next members of other processes:
    /// see [`Ring::chain`]).
    pub fn replicas(&self, key: Id, k: usize) -> Vec<NodeRef> {
        match self.successor(key) {
            Some(primary) => self.chain(primary, k),
            None => Vec::new(),
        }
    }

    /// Number of distinct processes among the members (see [`NodeRef::process`]).
    pub fn processes(&self) -> usize {
        let all: BTreeSet<&str> = self.members.values().map(NodeRef::process).collect();
        all.len()
    }

    /// The replica chain of the keys member `primary` is the successor of: `primary`, then
    /// each following member whose process is not in the chain yet, `min(k, processes)`
    /// members in all. Without virtual nodes, `primary` and the next `min(k, N) - 1`.
    pub fn chain(&self, primary: &NodeRef, k: usize) -> Vec<NodeRef> {
        let mut chain = vec![primary.clone()];
        for node in self.after(primary.id) {
            if chain.len() >= k {
                break;
            }
            if !chain.iter().any(|c| c.same_process(node)) {
                chain.push(node.clone());
            }
        }
        chain
    }

    /// Every other member clockwise from `id`, nearest first.
    fn after(&self, id: Id) -> impl Iterator<Item = &NodeRef> {
        let after = self.members.range((Excluded(id), Unbounded));
        after.chain(self.members.range(..id)).map(|(_, n)| n)
    }

    /// Every other member counter-clockwise from `id`, nearest first.
    fn before(&self, id: Id) -> impl Iterator<Item = &NodeRef> {
        let before = self.members.range(..id).rev();
        let wrapped = self.members.range((Excluded(id), Unbounded)).rev();
        before.chain(wrapped).map(|(_, n)| n)
    }

    /// The view member `id` should have, with neighbour lists of `list_len`. With virtual
    /// nodes the lists run on until they name `list_len` processes other than the
    /// member's own (members of processes already named lie between), and the
    /// predecessor list stops at the nearest other position of the member's own process
    /// (named last): together they show every member of every chain the member is in.
    pub fn view_of(&self, id: Id, list_len: usize, epoch: u64) -> View {
        let Some(me) = self.members.get(&id) else {
            return View {
                epoch,
                ring_size: self.len(),
                preds: self.predecessors(id, list_len),
                succs: self.successors(id, list_len),
            };
        };
        let reach = |nodes: &mut dyn Iterator<Item = &NodeRef>, stop_at_own: bool| {
            let mut seen: Vec<&str> = Vec::new();
            let mut list = Vec::new();
            for node in nodes {
                if seen.len() >= list_len {
                    break;
                }
                list.push(node.clone());
                if node.same_process(me) {
                    if stop_at_own {
                        break;
                    }
                } else if !seen.contains(&node.process()) {
                    seen.push(node.process());
                }
            }
            list
        };
        View {
            epoch,
            ring_size: self.len(),
            preds: reach(&mut self.before(id), true),
            succs: reach(&mut self.after(id), false),
        }
    }

    /// The whole finger table of member `id`: entry `i` is the successor of `id + 2^i`.
    pub fn fingers_of(&self, id: Id) -> Vec<NodeRef> {
        (0..ID_BITS)
            .filter_map(|i| self.successor(id.wrapping_add(Id::pow2(i))).cloned())
            .collect()
    }

    /// Finger entries that change when the successor of every point in `(from, to]`
    /// becomes `new_owner` (a join of `to` with predecessor `from`, or the departure of
    /// `to` handing `(from, to]` to its successor). Members listed in `skip` are left out.
    /// Returns, per member in id order, the `(index, node)` pairs to set.
    pub fn finger_changes(
        &self,
        from: Id,
        to: Id,
        new_owner: &NodeRef,
        skip: &[Id],
    ) -> BTreeMap<Id, Vec<(u8, NodeRef)>> {
        let mut changes: BTreeMap<Id, Vec<(u8, NodeRef)>> = BTreeMap::new();
        for i in 0..ID_BITS {
            let offset = Id::pow2(i);
            // Member x has finger i in (from, to] exactly when x ∈ (from - 2^i, to - 2^i].
            let lo = from.wrapping_sub(offset);
            let hi = to.wrapping_sub(offset);
            for member in self.in_open_closed(lo, hi) {
                if !skip.contains(&member.id) {
                    changes
                        .entry(member.id)
                        .or_default()
                        .push((i as u8, new_owner.clone()));
                }
            }
        }
        changes
    }

    /// Members whose id lies in `(lo, hi]`, wrapping; `(x, x]` is the whole ring.
    fn in_open_closed(&self, lo: Id, hi: Id) -> Vec<&NodeRef> {
        if lo < hi {
            return self
                .members
                .range((Excluded(lo), Included(hi)))
                .map(|(_, n)| n)
                .collect();
        }
        let tail = self.members.range((Excluded(lo), Unbounded));
        let head = self.members.range(..=hi);
        tail.chain(head).map(|(_, n)| n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring_of(n: usize) -> Ring {
        let mut ring = Ring::new();
        for i in 0..n {
            ring.insert(NodeRef::new(&format!("10.0.0.{i}:5000")));
        }
        ring
    }

    #[test]
    fn runs_of_finds_marked_runs_round_the_ring() {
        let ring = ring_of(8);
        let ids: Vec<Id> = ring.iter().map(|n| n.id).collect();
        let marked = |idx: &[usize]| idx.iter().map(|&i| ids[i]).collect::<BTreeSet<Id>>();
        // 6, 7, 0 form a run across the wrap; 3 stands alone.
        let m = marked(&[0, 3, 6, 7]);
        assert_eq!(ring.runs_of(&m, 3), marked(&[0, 6, 7]));
        assert_eq!(ring.runs_of(&m, 1), m);
        assert_eq!(ring.runs_of(&m, 4), BTreeSet::new());
        assert_eq!(ring.runs_of(&marked(&[]), 1), BTreeSet::new());
        let all = marked(&[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(ring.runs_of(&all, 3), all);
    }

    proptest! {
        /// A marked member is reported exactly when the run of marked members around it
        /// (walking both ways in ring order) is at least `len` long.
        #[test]
        fn runs_of_matches_a_walk(n in 1usize..12, mask in 0u32..4096, len in 1usize..5) {
            let ring = ring_of(n);
            let ids: Vec<Id> = ring.iter().map(|n| n.id).collect();
            let marked: BTreeSet<Id> =
                (0..n).filter(|i| mask & (1 << i) != 0).map(|i| ids[i]).collect();
            let found = ring.runs_of(&marked, len);
            for i in 0..n {
                if !marked.contains(&ids[i]) {
                    prop_assert!(!found.contains(&ids[i]));
                    continue;
                }
                let mut run = 1;
                while run < n && marked.contains(&ids[(i + run) % n]) { run += 1; }
                let mut back = 1;
                while run + back - 1 < n && marked.contains(&ids[(i + n - back) % n]) { back += 1; }
                let total = (run + back - 1).min(n);
                prop_assert_eq!(found.contains(&ids[i]), total >= len, "member {} run {}", i, total);
            }
        }
    }

    #[test]
    fn lists_never_repeat_or_include_self() {
        let ring = ring_of(3);
        for node in ring.iter() {
            let succs = ring.successors(node.id, 5);
            let preds = ring.predecessors(node.id, 5);
            assert_eq!(succs.len(), 2);
            assert_eq!(preds.len(), 2);
            assert!(!succs.contains(node));
            assert_eq!(succs[0], *ring.successor_after(node.id).unwrap());
            assert_eq!(preds[0], *ring.predecessor_before(node.id).unwrap());
        }
    }

    proptest! {
        #[test]
        fn finger_changes_match_recomputed_tables(n in 1usize..40, pick in 0usize..1000) {
            let mut ring = ring_of(n);
            let newcomer = NodeRef::new(&format!("10.0.1.{pick}:6000"));
            let before: BTreeMap<Id, Vec<NodeRef>> =
                ring.iter().map(|m| (m.id, ring.fingers_of(m.id))).collect();
            ring.insert(newcomer.clone());
            let pred = ring.predecessor_before(newcomer.id).unwrap().id;
            let changes = ring.finger_changes(pred, newcomer.id, &newcomer, &[newcomer.id]);
            for (id, mut table) in before {
                for (i, node) in changes.get(&id).cloned().unwrap_or_default() {
                    table[i as usize] = node;
                }
                prop_assert_eq!(table, ring.fingers_of(id));
            }
        }

        #[test]
        fn whole_chains_are_runs_without_virtual_nodes_and_chains_with_them(
            owners in proptest::collection::vec(0usize..5, 1..25),
            marks in proptest::collection::vec(any::<bool>(), 25),
            k in 1usize..5,
        ) {
            let mut plain = Ring::new();
            let mut tagged = Ring::new();
            for (i, owner) in owners.iter().enumerate() {
                let addr = format!("10.0.1.{i}:5000");
                plain.insert(NodeRef::new(&addr));
                tagged.insert(NodeRef::of_process(&addr, &format!("10.0.0.{owner}:5000")));
            }
            let marked: BTreeSet<Id> = plain
                .iter()
                .zip(&marks)
                .filter(|(_, m)| **m)
                .map(|(n, _)| n.id)
                .collect();
            prop_assert_eq!(
                plain.whole_chains_of(&marked, k),
                plain.runs_of(&marked, k.min(plain.len()))
            );
            // With processes: exactly the marked members of some chain all marked.
            let found = tagged.whole_chains_of(&marked, k);
            for m in tagged.iter() {
                let in_whole = tagged
                    .iter()
                    .map(|p| tagged.chain(p, k))
                    .any(|c| c.iter().any(|x| x.id == m.id) && c.iter().all(|x| marked.contains(&x.id)));
                prop_assert_eq!(found.contains(&m.id), in_whole);
            }
        }

        #[test]
        fn replicas_are_min_k_n_distinct_successors(n in 1usize..30, k in 1usize..8, key in any::<[u8; 20]>()) {
            let ring = ring_of(n);
            let key = Id::from_bytes(key);
            let set = ring.replicas(key, k);
            prop_assert_eq!(set.len(), k.min(n));
            prop_assert_eq!(&set[0], ring.successor(key).unwrap());
            let mut ids: Vec<Id> = set.iter().map(|n| n.id).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), k.min(n));
        }
    }
}
