//! What every sub-machine of a node reads: its identity and settings, its life-cycle
//! phase, the installed view and fingers, and the store. `Node` owns it and passes it
//! explicitly; the sub-machines that change it are named on each field.

use std::sync::Arc;

use serde::Serialize;

use crate::api::ReqId;
use crate::config::{ClusterConfig, Limits, Timing};
use crate::id::{in_open_closed, Id, ID_BITS};
use crate::message::{NodeRef, Origin, View};
use crate::placement::Upstream;
use crate::store::{Range, Store};

/// Where a node stands in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not a member: never joined, or departed.
    Idle,
    /// Asked the coordinator to join; not yet a member.
    Joining,
    /// A member.
    Active,
    /// A member that asked to leave; serves until the coordinator commits its departure.
    Departing,
}

/// The finger table: entry `i` is the successor of `me + 2^i`, with the epoch that set it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fingers {
    pub(crate) nodes: Vec<NodeRef>,
    epochs: Vec<u64>,
}

impl Fingers {
    /// A whole table installed at `epoch`.
    pub(crate) fn install(&mut self, nodes: Vec<NodeRef>, epoch: u64) {
        self.epochs = vec![epoch; nodes.len()];
        self.nodes = nodes;
    }

    /// The table of a one-node ring.
    pub(crate) fn alone(&mut self, me: &NodeRef) {
        self.install(vec![me.clone(); ID_BITS], 0);
    }

    /// Set entry `i` unless a newer epoch set it (updates can arrive out of order).
    pub(crate) fn update(&mut self, i: usize, node: NodeRef, epoch: u64) {
        if i < self.nodes.len() && self.epochs[i] <= epoch {
            self.nodes[i] = node;
            self.epochs[i] = epoch;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.epochs.clear();
    }
}

/// The view being prepared, as far as the data path needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gaining {
    /// Epoch of the view being prepared.
    pub(crate) epoch: u64,
    /// Keys it adds to this node's responsibility: accepted before the commit.
    pub(crate) range: Range,
    /// Keys this node is the tail of in the view being prepared: under chain replication
    /// it serves no tail read of any other key until that view commits or is abandoned.
    pub(crate) tails: Range,
}

/// A node's identity, settings, view and data.
#[derive(Debug)]
pub(crate) struct Shared {
    /// This node.
    pub(crate) me: NodeRef,
    /// Where membership requests, readiness and heartbeats go: the leader of the newest
    /// coordinator term this node has seen (at first, the address it joins through).
    pub(crate) coordinator: Arc<str>,
    /// The newest coordinator term seen; coordinator messages of older terms are refused.
    pub(crate) term: u64,
    /// When the coordinator was last heard from.
    pub(crate) coordinator_seen: crate::Time,
    /// The coordinator group's seats, where to look for the leader when it is silent.
    pub(crate) seats: Vec<NodeRef>,
    /// The address this node was started with as bootstrap (its own, for the bootstrap):
    /// members tell it which ring they form, so a restarted bootstrap finds its ring.
    pub(crate) bootstrap: Arc<str>,
    /// The ring's identity, once known.
    pub(crate) ring_id: u64,
    /// A restarted bootstrap still looking for its ring.
    pub(crate) recovering: bool,
    /// A restarted bootstrap heard that its ring exists: it will not found another.
    pub(crate) ring_seen: bool,
    /// Why this node stopped taking part (a bootstrap started against a ring with other
    /// settings).
    pub(crate) halted: Option<String>,
    /// A new tail whose fetch source failed before its forwards were all acknowledged:
    /// it serves no tail read until it has fetched again from a live predecessor.
    pub(crate) unsure: bool,
    /// Epoch of the commit that took this node out of the ring: a commit of it sent again
    /// (by a leader finishing that change) is acknowledged.
    pub(crate) left_epoch: u64,
    /// Cluster settings (a joiner learns them from its first prepare).
    pub(crate) config: ClusterConfig,
    pub(crate) limits: Limits,
    pub(crate) timing: Timing,
    /// Changed by membership.
    pub(crate) phase: Phase,
    /// Identifies this node's current attempt to be a member (see `JoinRequest`).
    pub(crate) incarnation: u64,
    /// Installed by membership.
    pub(crate) view: View,
    /// Installed and updated by membership.
    pub(crate) fingers: Fingers,
    /// Written through the hand-over (which forwards writes to new holders).
    pub(crate) store: Store,
    /// Set by membership while a view is prepared.
    pub(crate) gaining: Option<Gaining>,
    /// After departing: where to pass lookups that still arrive through stale fingers.
    pub(crate) forward_to: Option<NodeRef>,
    /// Until when (this node's clock) it may serve chain writes as a head and reads as a
    /// tail: renewed by the leader's answers to heartbeats (see [`Timing::lease_ns`]).
    pub(crate) lease_until: crate::Time,
    /// What a node restarted from its disk still has to sort out.
    pub(crate) comeback: crate::disk::Comeback,
    /// The installed view's epoch when a lease was renewed after it had run out: cut off
    /// (partitioned, paused) for that long, this node may have missed a change the ring
    /// committed without it, so under CRAQ it serves no read from its store until it
    /// installs a newer view (see [`Shared::view_trusted`]).
    pub(crate) lease_lapsed_in: Option<u64>,
    /// The driver's clock against the UNIX epoch (see `NodeConfig::clock_epoch_ns`).
    pub(crate) clock_epoch_ns: u64,
}

impl Shared {
    /// The wall time at `now`, in microseconds: the floor of the versions this node
    /// assigns (see [`crate::store::Store::next_version`]).
    pub(crate) fn wall_us(&self, now: crate::Time) -> u64 {
        self.clock_epoch_ns.saturating_add(now) / 1_000
    }

    /// Whether the node is a ring member (active or departing).
    pub(crate) fn is_member(&self) -> bool {
        matches!(self.phase, Phase::Active | Phase::Departing)
    }

    /// Whether this node may serve chain writes as a head and reads as a tail at `now`:
    /// it holds a lease, or leases do not apply (eventual consistency, or no failure
    /// handling, where nothing removes a member).
    pub(crate) fn holds_lease(&self, now: crate::Time) -> bool {
        !self.config.consistency.is_chain() || self.timing.lease_ns() == 0 || now < self.lease_until
    }

    /// The leader answered a heartbeat this node sent at `sent` with a lease.
    pub(crate) fn renew_lease(&mut self, sent: crate::Time, now: crate::Time) {
        if sent <= now && self.lease_until > 0 && sent > self.lease_until {
            self.lease_lapsed_in = Some(self.view.epoch);
        }
        if sent <= now {
            self.lease_until = self.lease_until.max(sent + self.timing.lease_ns());
            self.comeback.hold_writes = false;
        }
    }

    /// Whether this node's installed view can be trusted to place it in its keys' chains:
    /// false from a lapse of its lease until it installs a newer view (a commit stops
    /// waiting for a member found silent, so one cut off may hold a view the ring has
    /// left behind). Under CRAQ a node serves reads from its store only with a trusted
    /// view; otherwise its reads take chain replication's path (to the head, answered by
    /// the tail of the head's view).
    pub(crate) fn view_trusted(&self) -> bool {
        self.lease_lapsed_in != Some(self.view.epoch)
    }

    /// Keys this node must hold under its installed view.
    pub(crate) fn responsibility(&self) -> Range {
        responsibility_of(&self.view, &self.me, self.config.k)
    }

    /// Whether this node is the primary (the successor) of `key`.
    pub(crate) fn is_primary(&self, key: Id) -> bool {
        self.primary_range().contains(key)
    }

    /// The keys this node is the primary of: those [`Shared::is_primary`] says yes to.
    pub(crate) fn primary_range(&self) -> Range {
        match self.view.preds.first() {
            None if self.view.ring_size == 1 => Range::All,
            None => Range::Empty,
            Some(pred) => Range::Interval {
                from: pred.id,
                to: self.me.id,
            },
        }
    }

    /// Number of replicas per key: `min(k, N)` (with virtual nodes, `min(k, processes)`).
    pub(crate) fn chain_len(&self) -> usize {
        chain_len_of(&self.view, &self.me, self.config.k)
    }

    /// The replicas of `key` in order, as this node's neighbour lists show them (with
    /// virtual nodes the members between two replicas may belong to processes already
    /// in the chain, so it is worked out per key). `None` if the lists do not reach them.
    pub(crate) fn chain_of(&self, key: Id) -> Option<Vec<NodeRef>> {
        crate::placement::chain_in_view(&self.view, &self.me, key, self.chain_len())
    }

    /// Chains over virtual nodes: the pieces of `range` a repair takes from the node
    /// before this one in their chains (see [`upstream_pieces`]).
    pub(crate) fn upstream_pieces(
        &self,
        range: Range,
        skip: impl Fn(&NodeRef) -> bool,
    ) -> Vec<crate::message::Piece> {
        upstream_pieces(&self.view, &self.me, self.config.k, range, skip)
    }

    /// The replicas after this node of the keys it is the primary of.
    pub(crate) fn downstream(&self) -> Vec<NodeRef> {
        let want = self.chain_len().saturating_sub(1);
        crate::placement::downstream(&self.view, &self.me, want)
    }

    /// The node after this one in `key`'s chain, if this node holds the key and is not
    /// its tail.
    pub(crate) fn next_in_chain(&self, key: Id) -> Option<NodeRef> {
        if !self.has_vnodes() {
            return self.view.succs.first().cloned();
        }
        let chain = self.chain_of(key)?;
        let me = chain.iter().position(|n| n.id == self.me.id)?;
        chain.get(me + 1).cloned()
    }

    /// Whether the ring places keys with virtual nodes in mind (see [`crate::placement`]).
    pub(crate) fn has_vnodes(&self) -> bool {
        self.config.has_vnodes()
    }

    /// Whether this node is the last of `key`'s `min(k, N)` replicas in its own view.
    pub(crate) fn is_tail(&self, key: Id) -> bool {
        tails_of(&self.view, &self.me, self.config.k).contains(key)
    }

    /// Whether this node may answer a read of `key` as its tail: the tail in its
    /// installed view, and in the view it is preparing, if any. A tail whose keys a
    /// prepared change hands to another stops answering for them at once: the leader
    /// commits that other node only after this one answered the prepare, and the new
    /// tail, which held the keys upstream, may serve a write this node has not
    /// acknowledged yet. Both serving at once let a read see that write and a later one
    /// miss it (4 nodes, seed 3587: a join made the old tail's predecessor the tail, and
    /// both committed in the first wave).
    pub(crate) fn serves_tail(&self, key: Id) -> bool {
        self.is_tail(key) && self.gaining.is_none_or(|g| g.tails.contains(key))
    }

    /// This node's place in `key`'s chain under its installed view (0: the head), if it
    /// holds the key.
    pub(crate) fn chain_position(&self, key: Id) -> Option<usize> {
        if !self.is_member() || !self.responsibility().contains(key) {
            return None;
        }
        position_in_view(&self.view, &self.me, self.config.k, key)
    }

    /// Whether `node` comes after this node in `key`'s chain, under the installed view,
    /// with another of the key's replicas between them.
    pub(crate) fn precedes_past_another(&self, key: Id, node: Id) -> bool {
        let Some(p) = self.chain_position(key) else {
            return false;
        };
        if self.has_vnodes() {
            let Some(chain) = self.chain_of(key) else {
                return false;
            };
            return chain.iter().skip(p + 2).any(|n| n.id == node);
        }
        let after = self.chain_len().saturating_sub(1 + p);
        self.view
            .succs
            .iter()
            .take(after)
            .skip(1)
            .any(|n| n.id == node)
    }

    /// Whether this node should store `key` now: under its installed view, or under the
    /// view it is preparing.
    pub(crate) fn accepts(&self, key: Id) -> bool {
        let now = self.is_member() && self.responsibility().contains(key);
        now || self.gaining.is_some_and(|g| g.range.contains(key))
    }

    /// The keys [`Shared::accepts`] takes, as one range (`None` if they are not one).
    pub(crate) fn accepted_range(&self) -> Option<Range> {
        let held = match self.is_member() {
            true => self.responsibility(),
            false => Range::Empty,
        };
        match self.gaining {
            Some(g) => held.join_adjacent(g.range),
            None => Some(held),
        }
    }

    /// Whether `epoch` is the installed view's or the one being prepared.
    pub(crate) fn is_current_epoch(&self, epoch: u64) -> bool {
        self.view.epoch == epoch || self.gaining.is_some_and(|g| g.epoch == epoch)
    }

    /// This node as the origin of client request `id`.
    pub(crate) fn origin(&self, id: ReqId) -> Origin {
        Origin {
            node: self.me.clone(),
            req: id,
            incarnation: self.incarnation,
        }
    }

    /// Take a coordinator message of `term` from `from`, if it is not stale: a newer term
    /// makes its sender the coordinator.
    pub(crate) fn follow(&mut self, from: &NodeRef, term: u64, now: crate::Time) -> bool {
        if term < self.term || (term == self.term && *from.addr != *self.coordinator) {
            return false;
        }
        if term > self.term {
            self.term = term;
            self.coordinator = from.addr.clone();
        }
        self.coordinator_seen = now;
        true
    }

    /// What this node tells its bootstrap address about the ring.
    pub(crate) fn ring_info(&self) -> crate::message::RingInfo {
        crate::message::RingInfo {
            ring_id: self.ring_id,
            settings: self.config,
            term: self.term,
            coordinator: NodeRef::new(&self.coordinator),
            seats: self.seats.clone(),
        }
    }

    /// This node's address, for answers that name it.
    pub(crate) fn addr(&self) -> String {
        self.me.addr.to_string()
    }
}

/// Number of replicas per key under `view`: `min(k, N)`, with virtual nodes
/// `min(k, processes)`.
pub(crate) fn chain_len_of(view: &View, me: &NodeRef, k: usize) -> usize {
    k.min(crate::placement::processes_in_view(view, me)).max(1)
}

/// Where `me` is in `key`'s chain under `view` (0: the primary), if `key` lies in one of
/// the ranges it holds (see [`crate::placement`]).
pub(crate) fn position_in_view(view: &View, me: &NodeRef, k: usize, key: Id) -> Option<usize> {
    match view.preds.first() {
        None if view.ring_size == 1 => return Some(0),
        None => return None,
        Some(pred) if in_open_closed(key, pred.id, me.id) => return Some(0),
        Some(_) => {}
    }
    let up = Upstream::of(view, me);
    let deepest = chain_len_of(view, me, k).saturating_sub(1).min(up.others());
    (1..=deepest).find(|&p| {
        let (Some(upper), lower) = (up.get(p - 1), up.get(p).map_or(me.id, |n| n.id)) else {
            return false;
        };
        in_open_closed(key, lower, upper.id)
    })
}

/// Keys a node at `me` is the tail of under `view` with replication factor `k`: the range
/// of its `(min(k, N) - 1)`-th predecessor (with virtual nodes, of its upstream list).
pub(crate) fn tails_of(view: &View, me: &NodeRef, k: usize) -> Range {
    let m = chain_len_of(view, me, k);
    if view.ring_size == 0 {
        return Range::Empty;
    }
    if m <= 1 {
        return match view.preds.first() {
            None if view.ring_size == 1 => Range::All,
            None => Range::Empty,
            Some(pred) => Range::Interval {
                from: pred.id,
                to: me.id,
            },
        };
    }
    let up = Upstream::of(view, me);
    if m - 1 > up.others() {
        return Range::Empty;
    }
    match (up.get(m - 2), up.get(m - 1)) {
        (Some(first), far) => Range::Interval {
            from: far.map_or(me.id, |n| n.id),
            to: first.id,
        },
        (None, _) => Range::Empty,
    }
}

/// Chains over virtual nodes: for each stretch of `range` (keys `me` holds under
/// `view`) whose chain has a node before `me` that `skip` does not rule out, the nearest
/// such node, which holds every write of those keys the chain acknowledged (the member
/// just before a node differs per key there, so a repair cannot take the whole range
/// from its nearest predecessor). Stretches `me` heads have none. Adjacent stretches
/// from one source are merged; pieces come clockwise.
pub(crate) fn upstream_pieces(
    view: &View,
    me: &NodeRef,
    k: usize,
    range: Range,
    skip: impl Fn(&NodeRef) -> bool,
) -> Vec<crate::message::Piece> {
    let len = chain_len_of(view, me, k);
    let mut pieces: Vec<crate::message::Piece> = Vec::new();
    let mut to = me.id;
    // Stretch by stretch back from `me`; on a ring where `me` holds every key, round to
    // `me` again.
    let mut bounds: Vec<Id> = view
        .preds
        .iter()
        .map(|p| p.id)
        .take_while(|id| *id != me.id)
        .collect();
    if range == Range::All {
        bounds.push(me.id);
    }
    for from in bounds {
        if from == to || !range.contains(to) {
            break;
        }
        // Keys in `(from, to]` share their successor, `to`, and so their chain.
        let chain = crate::placement::chain_in_view(view, me, to, len);
        let source = chain.and_then(|chain| {
            let at = chain.iter().position(|n| n.id == me.id)?;
            chain[..at].iter().rev().find(|n| !skip(n)).cloned()
        });
        if let Some(source) = source {
            match pieces.last_mut() {
                Some(crate::message::Piece {
                    range: Range::Interval { from: start, .. },
                    source: last,
                }) if last.id == source.id && *start == to => *start = from,
                _ => pieces.push(crate::message::Piece {
                    range: Range::Interval { from, to },
                    source,
                }),
            }
        }
        to = from;
    }
    pieces.reverse();
    pieces
}

/// Keys a node at `me` must hold under `view` with replication factor `k`: its own range
/// and its `k - 1` predecessors' ranges (with virtual nodes, the ranges bounded by its
/// upstream list: see [`crate::placement`]).
pub(crate) fn responsibility_of(view: &View, me: &NodeRef, k: usize) -> Range {
    if view.ring_size == 0 {
        return Range::Empty;
    }
    let up = Upstream::of(view, me);
    let deepest = k.saturating_sub(1).min(up.others());
    match up.get(deepest) {
        Some(far) => Range::Interval {
            from: far.id,
            to: me.id,
        },
        None => Range::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Ring;
    use proptest::prelude::*;

    /// A ring of one position per entry of `owners`, the entry naming its process (the
    /// first position of a process has the process's address).
    fn ring_of_owners(owners: &[usize]) -> Ring {
        let mut ring = Ring::new();
        for (i, owner) in owners.iter().enumerate() {
            let process = format!("10.0.0.{owner}:5000");
            let addr = match owners[..i].contains(owner) {
                false => process.clone(),
                true => format!("10.0.0.{owner}:{}", 6000 + i),
            };
            ring.insert(NodeRef::of_process(&addr, &process));
        }
        ring
    }

    proptest! {
        /// The keys a member tails under a view are those whose replica set, computed
        /// on the whole ring, ends at that member; the same for responsibility.
        #[test]
        fn tails_and_responsibility_match_the_ring(n in 1usize..12, k in 1usize..6, key in any::<[u8; 20]>()) {
            let mut ring = Ring::new();
            for i in 0..n {
                ring.insert(NodeRef::new(&format!("10.0.0.{i}:5000")));
            }
            let key = Id::from_bytes(key);
            let replicas = ring.replicas(key, k);
            for member in ring.iter() {
                let view = ring.view_of(member.id, k + 1, 1);
                let tail = replicas.last().is_some_and(|t| t.id == member.id);
                prop_assert_eq!(tails_of(&view, member, k).contains(key), tail);
                let holds = replicas.iter().any(|r| r.id == member.id);
                prop_assert_eq!(responsibility_of(&view, member, k).contains(key), holds);
            }
        }

        /// The same with virtual nodes: processes own several positions each, and every
        /// member's view (its upstream list, its lists' chains) places `key` where the
        /// whole ring does: the same place in the same chain of distinct processes.
        #[test]
        fn placement_with_virtual_nodes_matches_the_ring(
            owners in proptest::collection::vec(0usize..6, 1..30),
            k in 1usize..6,
            key in any::<[u8; 20]>(),
        ) {
            let ring = ring_of_owners(&owners);
            let key = Id::from_bytes(key);
            let replicas = ring.replicas(key, k);
            let distinct: std::collections::BTreeSet<&str> =
                replicas.iter().map(NodeRef::process).collect();
            prop_assert_eq!(distinct.len(), replicas.len());
            prop_assert_eq!(replicas.len(), k.min(ring.processes()));
            for member in ring.iter() {
                let view = ring.view_of(member.id, k + 1, 1);
                prop_assert!(view.check(k, 2).is_ok());
                let place = replicas.iter().position(|r| r.id == member.id);
                prop_assert_eq!(position_in_view(&view, member, k, key), place, "{:?}", member);
                prop_assert_eq!(responsibility_of(&view, member, k).contains(key), place.is_some());
                let tail = place == Some(replicas.len() - 1);
                prop_assert_eq!(tails_of(&view, member, k).contains(key), tail);
                prop_assert_eq!(chain_len_of(&view, member, k), replicas.len());
                if place.is_some() {
                    let chain = crate::placement::chain_in_view(&view, member, key, replicas.len());
                    prop_assert_eq!(chain.as_ref(), Some(&replicas));
                }
            }
        }

        /// A repair over virtual nodes takes each key a member holds from the nearest node
        /// before it in the key's chain that is not ruled out, and keys it heads (or
        /// whose nodes before it are all ruled out) from nobody.
        #[test]
        fn repair_pieces_name_the_nearest_live_node_before_each_key(
            owners in proptest::collection::vec(0usize..6, 2..30),
            k in 2usize..5,
            gone in 0usize..6,
            key in any::<[u8; 20]>(),
        ) {
            let ring = ring_of_owners(&owners);
            let gone = format!("10.0.0.{gone}:5000");
            let skip = |n: &NodeRef| n.process() == gone.as_str();
            let key = Id::from_bytes(key);
            let replicas = ring.replicas(key, k);
            for member in ring.iter() {
                let view = ring.view_of(member.id, k + 1, 1);
                let range = responsibility_of(&view, member, k);
                let pieces = upstream_pieces(&view, member, k, range, skip);
                let named: Vec<&NodeRef> = pieces
                    .iter()
                    .filter(|p| p.range.contains(key))
                    .map(|p| &p.source)
                    .collect();
                prop_assert!(named.len() <= 1, "{:?}", pieces);
                let want = replicas
                    .iter()
                    .position(|r| r.id == member.id)
                    .and_then(|at| replicas[..at].iter().rev().find(|n| !skip(n)));
                prop_assert_eq!(named.first().map(|n| n.id), want.map(|n| n.id), "{:?}", member);
            }
        }
    }
}
