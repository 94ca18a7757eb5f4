//! Where a node's keys lie relative to its neighbours, with or without virtual nodes.
//!
//! Without virtual nodes every member is a process of its own: a key's replicas are its
//! successor and the next `min(k, N) - 1` members, and a node at `me` holds, at place `p`
//! of their chains, the keys between its `p`-th and `(p - 1)`-th predecessors.
//!
//! With virtual nodes (`ClusterConfig::vnodes` > 1) a key's replicas are its successor and
//! then each following member of a process not yet among them (`Ring::chain`). The same
//! shape holds over the **upstream list**: walking back from `me`, the nearest member of
//! each process other than `me`'s, in the order met, up to the nearest other member of
//! `me`'s own process (which ends the list). With `u_0, u_1, …` that list, `me` holds at
//! place `p ≥ 1` exactly the keys whose successor lies in `(u_p, u_{p-1}]`, for each
//! `p` up to `min(k - 1, n)` where `n` counts the list's members of other processes:
//! every member in that interval belongs to one of the `p` processes of `u_0 … u_{p-1}`,
//! all of which lie between it and `me`, so `me` is the `(p + 1)`-th distinct process
//! from it; a member beyond `u_{k-1}` has `k` other processes before `me`; and beyond a
//! member of `me`'s own process, that member and not `me` is in the chain. Without
//! virtual nodes the upstream list is the predecessor list and the rules above are the
//! first paragraph's. The members between `me` and a key's successor may belong to
//! processes already in its chain, so the chain itself is per key (`chain_in_view`).

use crate::id::{in_open_closed, Id};
use crate::message::{NodeRef, View};

/// The upstream list of `me` under `view` (see the module documentation).
pub(crate) struct Upstream<'a> {
    /// Without virtual nodes in the view: the predecessor list itself.
    preds: &'a [NodeRef],
    /// With them: the list, built.
    built: Vec<&'a NodeRef>,
    /// Whether `built` is in use.
    vnodes: bool,
    /// Members of other processes at the list's head.
    others: usize,
}

impl<'a> Upstream<'a> {
    /// The upstream list of `me` under `view`.
    pub(crate) fn of(view: &'a View, me: &NodeRef) -> Upstream<'a> {
        if !tagged(view, me) {
            return Upstream {
                preds: &view.preds,
                built: Vec::new(),
                vnodes: false,
                others: view.preds.len(),
            };
        }
        let mut built: Vec<&NodeRef> = Vec::new();
        let mut others = 0;
        for node in &view.preds {
            if node.same_process(me) {
                built.push(node);
                break;
            }
            if !built.iter().any(|b| b.same_process(node)) {
                built.push(node);
                others += 1;
            }
        }
        Upstream {
            preds: &view.preds,
            built,
            vnodes: true,
            others,
        }
    }

    /// Entry `i`.
    pub(crate) fn get(&self, i: usize) -> Option<&'a NodeRef> {
        match self.vnodes {
            false => self.preds.get(i),
            true => self.built.get(i).copied(),
        }
    }

    /// How many entries, from the first, are members of other processes.
    pub(crate) fn others(&self) -> usize {
        self.others
    }
}

/// Whether `view` or `me` names a member of a process with several positions; without
/// such a tag every member in it is its own process and the plain rules apply.
fn tagged(view: &View, me: &NodeRef) -> bool {
    me.process.is_some()
        || view
            .preds
            .iter()
            .chain(&view.succs)
            .any(|n| n.process.is_some())
}

/// The number of distinct processes `view` shows, `me`'s included: with virtual nodes
/// the successor list names up to `k + 1` other processes, so `min(k, processes)` is
/// exact. Without them, `min(ring_size, succs + 1)`.
pub(crate) fn processes_in_view(view: &View, me: &NodeRef) -> usize {
    if view.ring_size == 0 {
        return 1;
    }
    if !tagged(view, me) {
        return view.ring_size.min(view.succs.len() + 1);
    }
    let mut seen: Vec<&str> = vec![me.process()];
    for node in &view.succs {
        if !seen.contains(&node.process()) {
            seen.push(node.process());
        }
    }
    seen.len()
}

/// The replicas after `me` of the keys `me` is the primary of: the next member of each
/// other process, nearest first, `want` at most.
pub(crate) fn downstream(view: &View, me: &NodeRef, want: usize) -> Vec<NodeRef> {
    if !tagged(view, me) {
        return view.succs.iter().take(want).cloned().collect();
    }
    let mut list: Vec<NodeRef> = Vec::new();
    for node in &view.succs {
        if list.len() >= want {
            break;
        }
        if !node.same_process(me) && !list.iter().any(|l| l.same_process(node)) {
            list.push(node.clone());
        }
    }
    list
}

/// The chain (replicas in order, `len` of them) of `key` as far as `me`'s neighbour lists
/// show it: its successor among them, then each following member of a process not yet
/// in the chain. `None` when the lists do not reach the key's successor or the chain's
/// end.
pub(crate) fn chain_in_view(
    view: &View,
    me: &NodeRef,
    key: Id,
    len: usize,
) -> Option<Vec<NodeRef>> {
    let mut around: Vec<&NodeRef> = view
        .preds
        .iter()
        .rev()
        .chain(std::iter::once(me))
        .chain(&view.succs)
        .collect();
    // Successors round the whole ring: go round once more, so chains that wrap are whole.
    if view.succs.len() + 1 >= view.ring_size {
        around.extend(std::iter::once(me).chain(&view.succs));
    }
    let primary =
        (1..around.len()).find(|&i| in_open_closed(key, around[i - 1].id, around[i].id))?;
    let mut chain: Vec<NodeRef> = Vec::with_capacity(len);
    for node in &around[primary..] {
        if chain.len() >= len {
            break;
        }
        if !chain.iter().any(|c| c.same_process(node)) {
            chain.push((*node).clone());
        }
    }
    (chain.len() == len).then_some(chain)
}
