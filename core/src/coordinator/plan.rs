//! Planning one membership change: which members it affects, the view and fetch
//! sources each prepares, and the order in which they commit.

use crate::api::RequestError;
use crate::message::{NodeRef, Piece, Prepare, View};
use crate::ring::Ring;
use crate::shared::responsibility_of;
use crate::store::Range;

/// A membership change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A node joins.
    Join(NodeRef),
    /// A member leaves, handing its data on.
    Depart(NodeRef),
    /// A member declared failed (silent past the failure timeout) or that restarted.
    Remove(NodeRef),
}

impl Change {
    /// The node the change is about.
    pub fn node(&self) -> &NodeRef {
        match self {
            Change::Join(n) | Change::Depart(n) | Change::Remove(n) => n,
        }
    }
}

/// The parameters every prepared view shares.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) list_len: usize,
    pub(crate) k: usize,
    pub(crate) epoch: u64,
    pub(crate) config: crate::ClusterConfig,
}

/// What one change does to the ring: who is affected and what each is told to prepare.
pub(crate) struct Plan {
    /// Members taken out without their help.
    pub(crate) removed: Vec<NodeRef>,
    /// Nodes whose neighbour lists change (they prepare and commit).
    pub(crate) affected: Vec<NodeRef>,
    /// The `Prepare` for each affected node.
    pub(crate) prepares: Vec<(NodeRef, Prepare)>,
    /// The order in which affected nodes commit: every node of a wave acknowledges its
    /// commit before the next wave is sent theirs.
    ///
    /// Wave 0 holds the nodes that gain nothing (those that lose keys, and those whose
    /// neighbours alone change). A node that gains keys commits one wave after its
    /// fetch source: the source is the old holder nearest to it, often the keys' old
    /// tail, and acknowledges its commit only once its hand-over forwards have arrived,
    /// so a new tail never serves while the old one still acknowledges writes it lacks.
    /// Sources form chains (after a departure each gainer fetches from the next gainer's
    /// predecessor), so there can be up to `k + 1` waves.
    pub(crate) waves: Vec<Vec<NodeRef>>,
}

impl Plan {
    /// Plan a join, a depart, or the removal of `change`'s node together with every other
    /// `silent` member (simultaneous crashes are removed in one change, so no prepare
    /// waits for, or fetches from, a dead node). The change is applied to `ring` only
    /// while the next views are computed, then undone: the ring is never copied.
    pub(crate) fn new(ring: &mut Ring, change: &Change, silent: &[NodeRef], shape: Shape) -> Plan {
        let removed: Vec<NodeRef> = match change {
            Change::Remove(n) => {
                let mut all: Vec<NodeRef> = std::iter::once(n).chain(silent).cloned().collect();
                all.sort();
                all.dedup();
                all
            }
            _ => Vec::new(),
        };
        let mut affected = Vec::new();
        let mut near = |ring: &Ring, id| {
            affected.extend(ring.predecessors(id, shape.list_len));
            affected.extend(ring.successors(id, shape.list_len));
        };
        match change {
            // With virtual nodes the lists reach as far as they must to name `list_len`
            // processes: which of them change is worked out member by member.
            _ if shape.config.has_vnodes() => {
                let mut next = ring.clone();
                apply(&mut next, change, &removed);
                affected = lists_changed(ring, &next, shape.list_len);
                if let Change::Join(n) = change {
                    ring.insert(n.clone());
                }
            }
            Change::Join(n) => {
                ring.insert(n.clone());
                near(ring, n.id);
                affected.push(n.clone());
            }
            Change::Depart(n) => {
                near(ring, n.id);
                affected.push(n.clone());
            }
            Change::Remove(_) => removed.iter().for_each(|r| near(ring, r.id)),
        }
        affected.retain(|a| !removed.contains(a));
        affected.sort();
        affected.dedup();
        let responsibility = |ring: &Ring, node: &NodeRef| {
            let view = match ring.contains(node.id) {
                true => ring.view_of(node.id, shape.list_len, shape.epoch),
                false => View::default(),
            };
            responsibility_of(&view, node, shape.k)
        };
        if matches!(change, Change::Join(_)) {
            undo(ring, change, &removed);
        }
        let before: Vec<Range> = affected.iter().map(|n| responsibility(ring, n)).collect();
        apply(ring, change, &removed);
        let gaining: Vec<bool> = affected
            .iter()
            .zip(&before)
            .map(|(n, old)| Range::gained(*old, responsibility(ring, n)) != Range::Empty)
            .collect();
        let prepares: Vec<(NodeRef, Prepare)> = affected
            .iter()
            .map(|node| {
                (
                    node.clone(),
                    prepare_for(ring, change, &removed, node, shape),
                )
            })
            .collect();
        // On a ring left with at most k members every member already holds every key, so
        // a node that becomes a key's tail when another departs gains nothing and would
        // commit in the first wave, with the departing old tail still serving: under chain
        // replication the departing node commits first, alone.
        let first = match change {
            Change::Depart(n) if small_ring(ring, shape) && shape.config.consistency.is_chain() => {
                Some(n.id)
            }
            _ => None,
        };
        undo(ring, change, &removed);
        let vnode_chains = shape.config.has_vnodes() && shape.config.consistency.is_chain();
        let waves = commit_waves(&affected, &gaining, &prepares, first, vnode_chains);
        Plan {
            removed,
            affected,
            prepares,
            waves,
        }
    }
}

/// Whether every key's chain runs round the whole ring: at most k members, or with
/// virtual nodes at most k processes.
fn small_ring(ring: &Ring, shape: Shape) -> bool {
    match shape.config.has_vnodes() {
        true => ring.processes() <= shape.k,
        false => ring.len() <= shape.k,
    }
}

/// Group `affected` into commit waves (see [`Plan::waves`]): `gaining[i]` tells whether
/// `affected[i]` gains keys, and its prepare names its fetch sources, nearest first.
fn commit_waves(
    affected: &[NodeRef],
    gaining: &[bool],
    prepares: &[(NodeRef, Prepare)],
    first: Option<crate::Id>,
    all_sources: bool,
) -> Vec<Vec<NodeRef>> {
    // The sources a gainer commits after: its nearest, or with virtual nodes (each piece
    // of a gain from its own source) every one.
    let sources_of = |i: usize| -> Vec<usize> {
        let Some((_, prepare)) = prepares.get(i) else {
            return Vec::new();
        };
        let others = prepare.sources.iter().filter(|s| s.id != affected[i].id);
        let named: Vec<&NodeRef> = match all_sources {
            true => others.collect(),
            false => others.take(1).collect(),
        };
        named
            .into_iter()
            .filter_map(|s| affected.iter().position(|a| a.id == s.id))
            .collect()
    };
    let sources: Vec<Vec<usize>> = (0..affected.len()).map(sources_of).collect();
    let mut level: Vec<usize> = gaining.iter().map(|g| usize::from(*g)).collect();
    if let Some(first) = first {
        for (l, node) in level.iter_mut().zip(affected) {
            if node.id != first {
                *l = (*l).max(1);
            }
        }
    }
    // Longest path along "fetches from" edges. Joins and departures never form a cycle
    // (see `prepare_for`). A removal that leaves at most k members can: there each part
    // of a gain comes from an old replica of it (`pieces_for`), which holds it before
    // the change, and every old chain of a gained key lost a member, so none
    // acknowledges a write the sources would have to forward (a removed node's lease ran
    // out before its removal was decided): the order does not matter. The loop is
    // bounded regardless.
    for _ in 0..affected.len() {
        let mut changed = false;
        for i in 0..affected.len() {
            if !gaining[i] {
                continue;
            }
            for &src in &sources[i] {
                let want = level[src] + 1;
                if want > level[i] && want <= affected.len() {
                    level[i] = want;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let depth = level.iter().copied().max().unwrap_or(0);
    let mut waves = vec![Vec::new(); depth + 1];
    for (node, l) in affected.iter().zip(level) {
        waves[l].push(node.clone());
    }
    waves
}

/// The `Prepare` for `node`, computed on the next ring.
fn prepare_for(
    next: &Ring,
    change: &Change,
    removed: &[NodeRef],
    node: &NodeRef,
    shape: Shape,
) -> Prepare {
    let view = if next.contains(node.id) {
        next.view_of(node.id, shape.list_len, shape.epoch)
    } else {
        View {
            epoch: shape.epoch,
            ..View::default()
        }
    };
    let fingers = matches!(change, Change::Join(n) if n == node).then(|| next.fingers_of(node.id));
    // Under chain replication on a ring of at most k members every chain runs round the
    // whole ring (see the join and departure rules below).
    let small_chain_ring = next.len() <= shape.k && shape.config.consistency.is_chain();
    // Where `node` fetches what it gains. After a removal, its `k - 1` nearest new
    // predecessors: a surviving old replica of any key it gains lies among them (it
    // precedes the newcomer in the key's new replica set).
    let sources = match change {
        // A joiner fetches from its successor, which follows it in every chain it joins,
        // so holds nothing those chains have not passed through the joiner's place. Not
        // on a ring of at most k members under chain replication: there every chain runs
        // round the whole ring, the successor heads the keys of which the joiner becomes
        // the tail and may hold writes they never committed; the predecessor, their old
        // tail, holds only committed ones and precedes the joiner in every other chain.
        Change::Join(n) if small_chain_ring => {
            next.predecessor_before(n.id).cloned().into_iter().collect()
        }
        // Under eventual consistency replicas lag one another, and the node that stops
        // holding a range when the joiner takes it may hold the only copy of a write
        // (4 nodes with disks, seed 621 of one-way partitions: a primary cut off from
        // one replica was removed before anti-entropy ran, and the replica that had its
        // last write dropped it when a node joined; the joiner had fetched its
        // successor's older copy). The joiner fetches from every successor that held
        // what it gains, and the newest version wins.
        Change::Join(n) if shape.config.consistency == crate::Consistency::Eventual => {
            next.successors(n.id, shape.k)
        }
        Change::Join(n) => next.successor_after(n.id).cloned().into_iter().collect(),
        // On a ring left with at most k members every member gains, each what its
        // predecessor held, so fetching from predecessors forms a cycle and some node would
        // commit (and serve as a new tail) before the source whose forwards it waits for
        // (seed 1290 of 4-node chain partitions with disks). The departing node's
        // successor gains just the keys the departing node was the tail of: it fetches
        // from the departing node, which holds only committed writes there and commits
        // first, once its forwards have arrived; that breaks the cycle.
        Change::Depart(n)
            if small_chain_ring && next.successor_after(n.id).is_some_and(|s| s.id == node.id) =>
        {
            let mut sources = vec![n.clone()];
            sources.extend(next.predecessors(node.id, shape.k.saturating_sub(1)));
            sources
        }
        // The departing node holds everything but may, as a head, hold writes its chain
        // never committed: nearer holders come first, the departing node last (it alone
        // holds the keys when k = 1).
        Change::Depart(n) => {
            let mut sources = next.predecessors(node.id, shape.k.saturating_sub(1));
            sources.push(n.clone());
            sources
        }
        Change::Remove(_) => next.predecessors(node.id, shape.k.saturating_sub(1).max(1)),
    };
    // With virtual nodes: from every member that held part of the gain and can still
    // send it, nearest first; the newest version wins (eventual consistency). Under chain
    // replication the pieces below name the sources instead.
    let sources = match shape.config.has_vnodes() {
        true => holders_of_gain(next, change, removed, node, shape),
        false => sources,
    };
    // After a removal that leaves at most k members, each part of the gain from its own
    // source (`pieces_for`); the sources are then those parts' sources. The same for a
    // joiner on such a ring (`join_pieces`).
    let pieces = match change {
        _ if shape.config.has_vnodes() && shape.config.consistency.is_chain() => {
            vnode_chain_pieces(next, change, removed, node, shape.k)
        }
        Change::Join(n) if n == node && small_chain_ring => join_pieces(next, node),
        Change::Join(_) => Vec::new(),
        _ => pieces_for(next, removed, node, shape),
    };
    let sources = match pieces.is_empty() {
        true => sources,
        false => pieces.iter().map(|p| p.source.clone()).collect(),
    };
    Prepare {
        view,
        config: shape.config,
        sources,
        fingers,
        resync: matches!(change, Change::Remove(_)),
        term: 0,
        decided: 0,
        pieces,
    }
}

/// With virtual nodes: the members whose neighbour lists differ between `old` and `next`
/// (those of either ring; a joiner and a departing node among them), in id order.
fn lists_changed(old: &Ring, next: &Ring, list_len: usize) -> Vec<NodeRef> {
    let lists = |ring: &Ring, id| {
        let view = ring.view_of(id, list_len, 0);
        (view.preds, view.succs)
    };
    let mut changed: Vec<NodeRef> = Vec::new();
    for node in old.iter().chain(next.iter()) {
        if changed.contains(node) {
            continue;
        }
        let same = old.contains(node.id)
            && next.contains(node.id)
            && lists(old, node.id) == lists(next, node.id);
        if !same {
            changed.push(node.clone());
        }
    }
    changed.sort();
    changed
}

/// With virtual nodes: the members of the ring before `change` that held keys `node`
/// gains by it and can still send them (members of the ring after it, or the departing
/// node), nearest first clockwise from `node`. Empty if it gains nothing.
fn holders_of_gain(
    next: &Ring,
    change: &Change,
    removed: &[NodeRef],
    node: &NodeRef,
    shape: Shape,
) -> Vec<NodeRef> {
    let mut old = next.clone();
    undo(&mut old, change, removed);
    let held = |ring: &Ring, n: &NodeRef| match ring.contains(n.id) {
        true => responsibility_of(&ring.view_of(n.id, shape.list_len, 0), n, shape.k),
        false => Range::Empty,
    };
    let gained = Range::gained(held(&old, node), held(next, node));
    if gained == Range::Empty {
        return Vec::new();
    }
    old.successors(node.id, old.len())
        .into_iter()
        .filter(|m| m.id != node.id && !removed.contains(m))
        .filter(|m| held(&old, m).intersect(gained) != Some(Range::Empty))
        .collect()
}

/// Under chain replication with virtual nodes: what `node` fetches, key by key, for
/// `change` (`next` is the ring after it). A position's chains do not follow from its
/// neighbours alone, so the coordinator walks every stretch of keys whose old and new
/// chains are each one chain (between consecutive members of either ring) and names one
/// source for each stretch `node` must fetch, with the rules the single-position ring
/// follows for its one range:
///
/// - a key `node` gains by joining comes from the first old holder after it in the
///   key's new chain (it holds nothing the chain has not passed through the joiner's
///   place), else from the old tail the join pushed out of the chain, which holds only
///   committed writes; else (the chain runs round every process) from the nearest old
///   holder before it;
/// - a key `node` gains otherwise comes from the nearest old holder before it in the
///   new chain (it holds every acknowledged write, and no write the node after `node`
///   lacks), else from the departing node, else from the old holder nearest the old head;
/// - after a removal, a key `node` keeps but whose node just before it changed is
///   fetched again from that node, which holds every write it applied, if it held the
///   key before (the removed node may have taken writes with it that its successor
///   never got).
///
/// Stretches from one source are merged when adjacent; pieces come clockwise from `node`.
fn vnode_chain_pieces(
    next: &Ring,
    change: &Change,
    removed: &[NodeRef],
    node: &NodeRef,
    k: usize,
) -> Vec<Piece> {
    if !next.contains(node.id) {
        return Vec::new();
    }
    let mut old = next.clone();
    undo(&mut old, change, removed);
    let departing = match change {
        Change::Depart(n) => Some(n),
        _ => None,
    };
    let joiner = matches!(change, Change::Join(n) if n.id == node.id);
    let resync = matches!(change, Change::Remove(_));
    let can_send = |n: &NodeRef| {
        n.id != node.id && (next.contains(n.id) || departing.is_some_and(|d| d.id == n.id))
    };
    // Every member id of either ring, clockwise from just after `node`.
    let mut ids: Vec<crate::Id> = old.iter().chain(next.iter()).map(|n| n.id).collect();
    ids.sort();
    ids.dedup();
    let start = ids.iter().position(|id| *id > node.id).unwrap_or(0);
    ids.rotate_left(start);
    let mut pieces: Vec<Piece> = Vec::new();
    for (i, &to) in ids.iter().enumerate() {
        let from = ids[(i + ids.len() - 1) % ids.len()];
        let new_chain = next.replicas(to, k);
        let Some(at) = new_chain.iter().position(|n| n.id == node.id) else {
            continue;
        };
        let old_chain = old.replicas(to, k);
        let held_before = |n: &NodeRef| old_chain.iter().any(|o| o.id == n.id);
        let upstream = || {
            new_chain[..at]
                .iter()
                .rev()
                .find(|n| held_before(n) && can_send(n))
        };
        let source = match old_chain.iter().position(|n| n.id == node.id) {
            None if joiner => new_chain[at + 1..]
                .iter()
                .find(|n| held_before(n))
                .or_else(|| {
                    old_chain
                        .iter()
                        .rev()
                        .find(|o| !new_chain.iter().any(|n| n.id == o.id))
                })
                .or_else(upstream),
            None => upstream()
                .or_else(|| departing.filter(|d| held_before(d)))
                .or_else(|| old_chain.iter().find(|o| can_send(o))),
            Some(was) if resync && at > 0 => {
                let before = new_chain[at - 1].clone();
                let changed = was == 0 || old_chain[was - 1].id != before.id;
                (changed && held_before(&before) && can_send(&before)).then_some(&new_chain[at - 1])
            }
            Some(_) => None,
        };
        let Some(source) = source else { continue };
        let range = match ids.len() {
            1 => Range::All,
            _ => Range::Interval { from, to },
        };
        match pieces.last_mut() {
            Some(Piece {
                range: Range::Interval { to: end, .. },
                source: last,
            }) if last.id == source.id && *end == from => *end = to,
            _ => pieces.push(Piece {
                range,
                source: source.clone(),
            }),
        }
    }
    pieces
}

/// Under chain replication, after the removal of `removed` leaves `next` with at most k
/// members: each part of what `node` gains (the keys of one old primary, runs of them
/// merged) and the last of that part's old replicas still in the ring, which holds every
/// write the part's old chain acknowledged. There every member gains, and each
/// member's nearest predecessor may gain the same keys in the same change, so holds
/// none of them yet; those fetches form a cycle the commit waves cannot order (k = 5,
/// seed 1557 of the 4 s partition campaign: a 5/5 split). Empty when it does not apply,
/// or when some part has no old replica left.
fn pieces_for(next: &Ring, removed: &[NodeRef], node: &NodeRef, shape: Shape) -> Vec<Piece> {
    let chain = shape.config.consistency.is_chain();
    if !chain || removed.is_empty() || next.len() > shape.k || !next.contains(node.id) {
        return Vec::new();
    }
    let mut old = next.clone();
    removed.iter().for_each(|r| {
        old.insert(r.clone());
    });
    let before = responsibility_of(&old.view_of(node.id, shape.list_len, 0), node, shape.k);
    let after = responsibility_of(&next.view_of(node.id, shape.list_len, 0), node, shape.k);
    let Range::Interval { from, to } = Range::gained(before, after) else {
        return Vec::new();
    };
    let mut pieces: Vec<Piece> = Vec::new();
    let mut at = from;
    // The old primaries of the gained keys, in ring order: `(from, to]` ends at one.
    for primary in old.successors(from, old.len()) {
        let chain = old.replicas(primary.id, shape.k);
        let survivor = chain
            .iter()
            .rev()
            .find(|n| n.id != node.id && next.contains(n.id));
        let Some(source) = survivor else {
            return Vec::new();
        };
        match pieces.last_mut() {
            Some(Piece {
                range: Range::Interval { to: end, .. },
                source: last,
            }) if last.id == source.id => *end = primary.id,
            _ => pieces.push(Piece {
                range: Range::Interval {
                    from: at,
                    to: primary.id,
                },
                source: source.clone(),
            }),
        }
        at = primary.id;
        if primary.id == to {
            return pieces;
        }
    }
    Vec::new()
}

/// Under chain replication, a joiner `node` on a ring of at most k members (`next` counts
/// it):
/// the keys it becomes the head of, `(predecessor, joiner]`, come from its successor,
/// their old head, and every other key from its predecessor (see `prepare_for`). Fetched
/// from the predecessor, the old tail of those keys, the head's range would lack writes
/// the old head applied and its chain never committed, while the old head, now next in
/// their chain, keeps them: a head holding less than the node after it breaks what chain
/// repairs count on (a tail removed later is replaced by a node without a value clients
/// read), and under CRAQ the head answers clean reads of its older value (4 nodes with
/// disks, seed 178 of one-way partitions: a head whose outgoing messages were lost
/// applied a write no other node had). Empty when the predecessor is the successor.
fn join_pieces(next: &Ring, node: &NodeRef) -> Vec<Piece> {
    let (Some(pred), Some(succ)) = (
        next.predecessor_before(node.id),
        next.successor_after(node.id),
    ) else {
        return Vec::new();
    };
    if pred.id == succ.id {
        return Vec::new();
    }
    vec![
        Piece {
            range: Range::Interval {
                from: node.id,
                to: pred.id,
            },
            source: pred.clone(),
        },
        Piece {
            range: Range::Interval {
                from: pred.id,
                to: node.id,
            },
            source: succ.clone(),
        },
    ]
}

/// Make `change` (whose removals are `removed`) to `ring`.
pub(crate) fn apply(ring: &mut Ring, change: &Change, removed: &[NodeRef]) {
    match change {
        Change::Join(n) => {
            ring.insert(n.clone());
        }
        Change::Depart(n) => {
            ring.remove(n.id);
        }
        Change::Remove(_) => removed.iter().for_each(|r| {
            ring.remove(r.id);
        }),
    }
}

/// Undo [`apply`].
pub(crate) fn undo(ring: &mut Ring, change: &Change, removed: &[NodeRef]) {
    match change {
        Change::Join(n) => {
            ring.remove(n.id);
        }
        Change::Depart(n) => {
            ring.insert(n.clone());
        }
        Change::Remove(_) => removed.iter().for_each(|r| {
            ring.insert(r.clone());
        }),
    }
}

/// Why `change` cannot be made to `ring` (coordinated by the node `bootstrap`), if it cannot.
pub(crate) fn refusal(ring: &Ring, bootstrap: &NodeRef, change: &Change) -> Option<RequestError> {
    match change {
        Change::Join(n) if ring.contains(n.id) => Some(RequestError::AlreadyJoined),
        Change::Remove(n) if !ring.contains(n.id) || n.id == bootstrap.id => {
            Some(RequestError::NotJoined)
        }
        Change::Join(_) if !ring.contains(bootstrap.id) => Some(RequestError::JoinRefused {
            reason: "the bootstrap is not in a ring; ask it to join first".into(),
        }),
        Change::Depart(n) if !ring.contains(n.id) => Some(RequestError::NotJoined),
        Change::Depart(n) if n.id == bootstrap.id => Some(RequestError::BootstrapCannotDepart {
            others: ring.processes().saturating_sub(1),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, Consistency};

    fn ring(n: usize) -> (Ring, Vec<NodeRef>) {
        let nodes: Vec<NodeRef> = (0..n)
            .map(|i| NodeRef::new(&format!("10.0.0.{i}:5000")))
            .collect();
        let mut ring = Ring::default();
        for node in &nodes {
            ring.insert(node.clone());
        }
        (ring, nodes)
    }

    fn shape(k: usize) -> Shape {
        Shape {
            list_len: k + 1,
            k,
            epoch: 1,
            config: ClusterConfig {
                k,
                consistency: Consistency::Chain,
                ..ClusterConfig::default()
            },
        }
    }

    /// Position `v` of process `p`.
    fn member(p: usize, v: usize) -> NodeRef {
        let addr = |p: usize, v: usize| format!("10.0.0.{p}:{}", 5000 + v);
        NodeRef::of_process(&addr(p, v), &addr(p, 0))
    }

    /// A ring of `processes` processes of `vnodes` positions each, and the shape of its
    /// changes under `consistency` with replication factor `k`.
    fn ring_of_processes(
        processes: usize,
        vnodes: usize,
        k: usize,
        consistency: Consistency,
    ) -> (Ring, Shape) {
        let mut ring = Ring::default();
        for p in 0..processes {
            for v in 0..vnodes {
                ring.insert(member(p, v));
            }
        }
        let shape = Shape {
            config: ClusterConfig {
                consistency,
                vnodes: vnodes as u32,
                ..shape(k).config
            },
            ..shape(k)
        };
        (ring, shape)
    }

    fn wave_of(plan: &Plan, id: crate::Id) -> usize {
        plan.waves
            .iter()
            .position(|w| w.iter().any(|n| n.id == id))
            .expect("every affected node commits in some wave")
    }

    /// A joiner fetches from its successor, except under chain replication on a ring of
    /// at most k members, where the successor heads the keys the joiner becomes the tail
    /// of: then from its predecessor, their old tail, all but the keys it becomes the
    /// head of, which come from their old head, its successor.
    #[test]
    fn a_joiner_of_a_ring_of_at_most_k_members_fetches_from_its_predecessor() {
        for (n, k, consistency, small) in [
            // (members before the join, k, model, a chain ring of at most k members)
            (1, 3, Consistency::Chain, true),
            (2, 3, Consistency::Chain, true),
            (2, 3, Consistency::Craq, true),
            (4, 5, Consistency::Chain, true),
            (3, 3, Consistency::Chain, false),
            (6, 3, Consistency::Craq, false),
            (2, 3, Consistency::Eventual, false),
            (6, 3, Consistency::Eventual, false),
        ] {
            let (mut next, _) = ring(n);
            let joiner = NodeRef::new("10.0.0.99:5000");
            next.insert(joiner.clone());
            let shape = Shape {
                config: ClusterConfig {
                    consistency,
                    ..shape(k).config
                },
                ..shape(k)
            };
            let prepare = prepare_for(&next, &Change::Join(joiner.clone()), &[], &joiner, shape);
            let pred = next.predecessor_before(joiner.id).unwrap();
            let succ = next.successor_after(joiner.id).unwrap();
            let sources: Vec<_> = prepare.sources.iter().map(|s| s.id).collect();
            let case = format!("{n} + 1 nodes, k={k}, {consistency}");
            match (small, pred == succ) {
                // Eventual: from every successor that held what it gains.
                (false, _) if consistency == Consistency::Eventual => {
                    let all: Vec<_> = next.successors(joiner.id, k).iter().map(|s| s.id).collect();
                    assert_eq!(sources, all, "{case}");
                    assert!(sources.len() > 1, "{case}");
                }
                (false, _) => {
                    assert_eq!(sources, vec![succ.id], "{case}");
                    assert!(prepare.pieces.is_empty(), "{case}");
                }
                (true, true) => {
                    assert_eq!(sources, vec![pred.id], "{case}");
                    assert!(prepare.pieces.is_empty(), "{case}");
                }
                (true, false) => {
                    let tail_part = Range::Interval {
                        from: joiner.id,
                        to: pred.id,
                    };
                    let head_part = Range::Interval {
                        from: pred.id,
                        to: joiner.id,
                    };
                    let pieces: Vec<_> = prepare
                        .pieces
                        .iter()
                        .map(|p| (p.range, p.source.id))
                        .collect();
                    assert_eq!(
                        pieces,
                        vec![(tail_part, pred.id), (head_part, succ.id)],
                        "{case}"
                    );
                    assert_eq!(sources, vec![pred.id, succ.id], "{case}");
                    // In the chain of the keys the joiner heads, its successor, their old
                    // head, comes next.
                    let chain = next.replicas(joiner.id, k);
                    assert_eq!(chain[0].id, joiner.id, "{case}");
                    assert_eq!(chain[1].id, succ.id, "{case}");
                }
            }
        }
    }

    /// Every affected node commits exactly once, and each node that fetches commits in a
    /// later wave than its nearest source, for departures, removals and joins.
    #[test]
    fn fetchers_commit_after_their_sources() {
        for (k, n) in (1..=4).flat_map(|k| [(k, 12), (k, k), (k, k + 1), (k, k + 2)]) {
            let (mut ring, nodes) = ring(n);
            let mut changes = vec![Change::Join(NodeRef::new("10.0.0.99:5000"))];
            // On a ring of at most k members everyone holds every key: a departure
            // gains nobody anything.
            if n > k {
                changes.push(Change::Depart(nodes[n / 3].clone()));
            }
            // A removal leaving at most k members forms a cycle of sources, harmless
            // there (see `commit_waves`).
            if n > k + 1 {
                changes.push(Change::Remove(nodes[n / 2].clone()));
            }
            for change in changes {
                let plan = Plan::new(&mut ring, &change, &[], shape(k));
                let committed: usize = plan.waves.iter().map(Vec::len).sum();
                assert_eq!(committed, plan.affected.len(), "{change:?} k={k} n={n}");
                let mut fetchers = 0;
                for (node, prepare) in &plan.prepares {
                    let Some(src) = prepare.sources.iter().find(|s| s.id != node.id) else {
                        continue;
                    };
                    if !plan.affected.contains(src) || wave_of(&plan, node.id) == 0 {
                        continue;
                    }
                    fetchers += 1;
                    assert!(
                        wave_of(&plan, node.id) > wave_of(&plan, src.id),
                        "{change:?} k={k} n={n}: {node:?} commits with or before its source {src:?}"
                    );
                }
                if k > 1 && n > k + 1 {
                    assert!(fetchers > 0, "{change:?} k={k}: nobody fetched");
                }
                // The plan left the ring as it found it.
                assert_eq!(ring.len(), n);
            }
        }
    }

    /// After a departure with k = 3, the gainers form a chain of sources: up to k + 1
    /// waves, the departing node (which gains nothing) in the first.
    #[test]
    fn a_departure_commits_in_waves_along_the_sources() {
        let (mut ring, nodes) = ring(10);
        let change = Change::Depart(nodes[4].clone());
        let plan = Plan::new(&mut ring, &change, &[], shape(3));
        assert_eq!(wave_of(&plan, nodes[4].id), 0);
        assert!(plan.waves.len() >= 3, "{:?}", plan.waves);
        assert!(plan.waves.len() <= 3 + 1, "{:?}", plan.waves);
    }

    /// A node departing a ring that is left with at most k members commits alone, before
    /// every other (chain modes): the others gain nothing, and one of them becomes a tail.
    #[test]
    fn a_node_departing_a_small_ring_commits_alone_first() {
        for (n, consistency, alone) in [
            (3, Consistency::Chain, true),
            (4, Consistency::Craq, true),
            (5, Consistency::Chain, false),
            (3, Consistency::Eventual, false),
        ] {
            let (mut ring, nodes) = ring(n);
            let shape = Shape {
                config: ClusterConfig {
                    consistency,
                    ..shape(3).config
                },
                ..shape(3)
            };
            let plan = Plan::new(&mut ring, &Change::Depart(nodes[1].clone()), &[], shape);
            assert_eq!(wave_of(&plan, nodes[1].id), 0);
            let first_alone = plan.waves[0].len() == 1;
            assert_eq!(
                first_alone, alone,
                "{n} nodes, {consistency}: {:?}",
                plan.waves
            );
        }
    }

    /// With virtual nodes (eventual consistency): every member whose neighbour lists a
    /// change alters prepares, and what each gains was held, before the change, by one
    /// of the sources it fetches from.
    #[test]
    fn with_virtual_nodes_the_affected_cover_the_change_and_sources_hold_the_gain() {
        for (k, processes, vnodes) in [(2, 4, 3), (3, 5, 3), (3, 3, 4), (2, 6, 2)] {
            let (mut ring, shape) = ring_of_processes(processes, vnodes, k, Consistency::Eventual);
            let members: Vec<NodeRef> = ring.iter().cloned().collect();
            let changes = [
                Change::Join(member(1, 7)),
                Change::Join(member(processes + 1, 0)),
                Change::Depart(members[3].clone()),
                Change::Remove(members[5].clone()),
            ];
            for change in changes {
                let before = ring.clone();
                let plan = Plan::new(&mut ring, &change, &[], shape);
                assert_eq!(ring, before, "the plan left the ring as it found it");
                let mut next = ring.clone();
                apply(&mut next, &change, &plan.removed);
                let lists = |r: &Ring, id| {
                    let v = r.view_of(id, shape.list_len, 0);
                    (v.preds, v.succs)
                };
                for m in next.iter() {
                    if !ring.contains(m.id) || lists(&ring, m.id) != lists(&next, m.id) {
                        assert!(plan.affected.contains(m), "{change:?}: {m:?} not affected");
                    }
                }
                let held = |r: &Ring, n: &NodeRef| match r.contains(n.id) {
                    true => responsibility_of(&r.view_of(n.id, shape.list_len, 0), n, k),
                    false => Range::Empty,
                };
                let mut gainers = 0;
                for (node, prepare) in &plan.prepares {
                    let gained = Range::gained(held(&ring, node), held(&next, node));
                    if gained == Range::Empty {
                        continue;
                    }
                    gainers += 1;
                    for i in 0..400 {
                        let key = crate::Id::of_key(&format!("key-{i}"));
                        if !gained.contains(key) {
                            continue;
                        }
                        let sourced = prepare.sources.iter().any(|s| held(&ring, s).contains(key));
                        assert!(sourced, "{change:?}: {node:?} gains {key:?} from no holder");
                    }
                }
                assert!(gainers > 0, "{change:?}: nobody gained");
            }
        }
    }

    /// With virtual nodes under chain replication: every key a member gains comes, by a
    /// piece of its prepare, from a node that held the key before the change and can
    /// still send it; a joiner takes it from the first old holder after it in the key's
    /// new chain when there is one (it holds nothing the chain has not passed through
    /// the joiner's place), any other gainer from an old holder before it when there is
    /// one; and a gainer commits in a later wave than every source it fetches from.
    #[test]
    fn with_virtual_nodes_chains_fetch_each_key_from_an_old_holder_in_chain_order() {
        let keys: Vec<crate::Id> = (0..600)
            .map(|i| crate::Id::of_key(&format!("key-{i}")))
            .collect();
        for (k, processes, vnodes) in [(2, 4, 3), (3, 5, 3), (3, 3, 4), (2, 6, 2), (3, 4, 2)] {
            let (mut ring, shape) = ring_of_processes(processes, vnodes, k, Consistency::Chain);
            let members: Vec<NodeRef> = ring.iter().cloned().collect();
            let process_of =
                |p: usize| -> Vec<NodeRef> { (0..vnodes).map(|v| member(p, v)).collect() };
            let crashed = process_of(1);
            let changes = [
                (Change::Join(member(1, 7)), Vec::new()),
                (Change::Join(member(processes + 1, 0)), Vec::new()),
                (Change::Depart(members[3].clone()), Vec::new()),
                (Change::Remove(crashed[0].clone()), crashed[1..].to_vec()),
            ];
            for (change, silent) in changes {
                let case = format!("k={k} {processes}x{vnodes} {change:?}");
                let plan = Plan::new(&mut ring, &change, &silent, shape);
                let mut next = ring.clone();
                apply(&mut next, &change, &plan.removed);
                let mut fetched = 0;
                for (node, prepare) in &plan.prepares {
                    for &key in &keys {
                        let new_chain = next.replicas(key, k);
                        let old_chain = ring.replicas(key, k);
                        let Some(at) = new_chain.iter().position(|n| n.id == node.id) else {
                            continue;
                        };
                        if old_chain.iter().any(|n| n.id == node.id) {
                            continue;
                        }
                        let held_before = |n: &NodeRef| old_chain.iter().any(|o| o.id == n.id);
                        let pieces: Vec<&Piece> = prepare
                            .pieces
                            .iter()
                            .filter(|p| p.range.contains(key))
                            .collect();
                        assert_eq!(
                            pieces.len(),
                            1,
                            "{case}: {node:?} gains {key:?}: {pieces:?}"
                        );
                        let source = &pieces[0].source;
                        fetched += 1;
                        assert!(held_before(source), "{case}: {source:?} never held {key:?}");
                        let departing = matches!(&change, Change::Depart(d) if d == source);
                        assert!(
                            next.contains(source.id) || departing,
                            "{case}: {source:?} is gone"
                        );
                        let source_at = new_chain.iter().position(|n| n.id == source.id);
                        match &change {
                            Change::Join(_) => {
                                if new_chain[at + 1..].iter().any(held_before) {
                                    assert!(source_at > Some(at), "{case}: {key:?} from upstream");
                                }
                            }
                            _ => {
                                if new_chain[..at].iter().any(held_before) {
                                    assert!(
                                        source_at < Some(at),
                                        "{case}: {key:?} from downstream"
                                    );
                                }
                            }
                        }
                        // A removal leaving at most k processes may form a cycle of
                        // sources, harmless there (see `commit_waves`).
                        let cycle_harmless =
                            matches!(change, Change::Remove(_)) && next.processes() <= k;
                        if plan.affected.contains(source) && !cycle_harmless {
                            assert!(
                                wave_of(&plan, node.id) > wave_of(&plan, source.id),
                                "{case}: {node:?} commits with or before its source {source:?}"
                            );
                        }
                    }
                }
                // Left with fewer than k processes, every key's chain keeps its members.
                if next.processes() >= k {
                    assert!(fetched > 0, "{case}: nobody gained");
                }
            }
        }
    }

    /// A removal of half a ring of 10 with k = 5 leaves k members, each gaining keys its
    /// nearest predecessor gains too. Each part of a member's gain names the last of
    /// that part's old replicas still in the ring, and the parts cover the gain.
    #[test]
    fn after_a_removal_leaving_k_members_each_part_comes_from_an_old_replica() {
        let k = 5;
        let (mut ring, nodes) = ring(10);
        let old = ring.clone();
        let gone: Vec<NodeRef> = [2, 4, 5, 6, 8].iter().map(|&i| nodes[i].clone()).collect();
        let change = Change::Remove(gone[0].clone());
        let plan = Plan::new(&mut ring, &change, &gone[1..], shape(k));
        let mut next = ring.clone();
        gone.iter().for_each(|g| {
            next.remove(g.id);
        });
        let mut nearest_lacked = false;
        for (node, prepare) in &plan.prepares {
            assert!(
                !prepare.pieces.is_empty(),
                "{node:?} gains and has no pieces"
            );
            let nearest = next.predecessor_before(node.id).unwrap();
            for piece in &prepare.pieces {
                let Range::Interval { to, .. } = piece.range else {
                    panic!("{piece:?}");
                };
                // Every old primary in the piece had the source in its chain, last of
                // the survivors.
                for primary in old.iter().filter(|p| piece.range.contains(p.id)) {
                    let chain = old.replicas(primary.id, k);
                    let last = chain.iter().rev().find(|n| next.contains(n.id)).unwrap();
                    assert_eq!(last.id, piece.source.id, "{node:?}, primary {primary:?}");
                    nearest_lacked |= !chain.contains(nearest);
                }
                assert!(old.contains(to));
            }
            let sources: Vec<_> = prepare.pieces.iter().map(|p| p.source.clone()).collect();
            assert_eq!(prepare.sources, sources);
        }
        assert!(
            nearest_lacked,
            "the nearest predecessors held every gained key"
        );
        // Not under eventual consistency, nor when more than k members are left.
        let eventual = Shape {
            config: ClusterConfig {
                consistency: Consistency::Eventual,
                ..shape(k).config
            },
            ..shape(k)
        };
        let plan = Plan::new(&mut ring, &change, &gone[1..], eventual);
        assert!(plan.prepares.iter().all(|(_, p)| p.pieces.is_empty()));
        let plan = Plan::new(&mut ring, &change, &gone[1..], shape(3));
        assert!(plan.prepares.iter().all(|(_, p)| p.pieces.is_empty()));
    }
}
