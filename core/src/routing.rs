//! Lookups: hop by hop towards the key's successor over fingers or successors, and the
//! two ring walks (`query *` and `overlay`).

use crate::api::{Pair, RequestError, Response};
use crate::config::{Consistency, Routing};
use crate::id::{in_open, in_open_closed, Id};
use crate::message::{Action, Message, NodeRef, Origin, Routed, LAPS_MAX};
use crate::out::Out;
use crate::shared::{Phase, Shared};

/// What a member does with a routed operation.
#[derive(Debug)]
pub(crate) enum Decision {
    /// A read this replica answers (eventual), or answers or asks its tail about (CRAQ).
    ReadHere,
    /// A chain replication read that reached the key's tail: answered here.
    TailHere,
    /// This node is the key's primary.
    Primary,
    /// Pass it on.
    Forward(NodeRef),
    /// End it with this error.
    Fail(RequestError),
}

/// Where `routed` goes from this member. `suspect` tells which peers to route round.
pub(crate) fn decide(sh: &Shared, suspect: impl Fn(Id) -> bool, routed: &Routed) -> Decision {
    let key = Id::of_key(&routed.key);
    let any_replica_reads = matches!(
        sh.config.consistency,
        Consistency::Eventual | Consistency::Craq
    );
    let trusted = sh.config.consistency != Consistency::Craq || sh.view_trusted();
    let read_here = any_replica_reads
        && trusted
        && routed.action == Action::Read
        && sh.responsibility().contains(key);
    if read_here {
        return Decision::ReadHere;
    }
    // Chain replication: the key's tail answers a read that reaches it, instead of
    // routing it on to the head, which would hand it straight back. The head adds no
    // safety: the tail answers only if it is the key's tail in its own view and holds a
    // lease, wherever the read came from (`replication::tail_read`).
    let chain_read = sh.config.consistency == Consistency::Chain && routed.action == Action::Read;
    let tail = sh.chain_len() > 1 && !sh.unsure && sh.is_tail(key);
    if chain_read && tail && sh.responsibility().contains(key) {
        return Decision::TailHere;
    }
    if sh.is_primary(key) {
        return Decision::Primary;
    }
    let untrusted_replica = sh.config.consistency == Consistency::Craq
        && routed.action == Action::Read
        && !sh.view_trusted()
        && sh.responsibility().contains(key);
    if let Some(primary) = untrusted_replica.then(|| crate::craq::primary_of(sh, key)) {
        // Straight back to the primary of its view: round the ring, a trusted node's
        // shortcut could send it here again.
        return match primary {
            Some(p) => Decision::Forward(p),
            None => Decision::Primary,
        };
    }
    if routed.hops >= sh.limits.hops_max || routed.laps > LAPS_MAX {
        return Decision::Fail(RequestError::TooManyHops { hops: routed.hops });
    }
    // Not from a node whose view may be stale: its reads take chain replication's path.
    // A lookup that already went round once takes plain Chord steps from here: each
    // one ends nearer the key, whatever views disagree, so it cannot circle again.
    let shortcuts = routed.laps == 0;
    let craq_read = sh.config.consistency == Consistency::Craq
        && routed.action == Action::Read
        && shortcuts
        && sh.view_trusted();
    if let Some(Some(replica)) = craq_read.then(|| known_replica(sh, &suspect, key, routed)) {
        return Decision::Forward(replica);
    }
    if let Some(Some(tail)) = (chain_read && shortcuts).then(|| known_tail(sh, &suspect, key)) {
        return Decision::Forward(tail);
    }
    match next_hop(sh, suspect, key, shortcuts) {
        Some(next) => Decision::Forward(next),
        None => Decision::Primary,
    }
}

/// CRAQ: a replica of `key` among this node's neighbours, when its predecessor and
/// successor lists reach the key (any replica answers a CRAQ read, so the read goes
/// straight to one instead of hop by hop to the primary). The replica is chosen by the
/// request id, so reads of one key spread over its replicas; suspected ones are skipped.
fn known_replica(
    sh: &Shared,
    suspect: &impl Fn(Id) -> bool,
    key: Id,
    routed: &Routed,
) -> Option<NodeRef> {
    let turn = routed.origin.as_ref().map_or(0, |o| o.req as usize);
    if sh.has_vnodes() {
        let alive: Vec<NodeRef> = sh
            .chain_of(key)?
            .into_iter()
            .filter(|n| n.id != sh.me.id && !suspect(n.id))
            .collect();
        return alive.get(turn % alive.len().max(1)).cloned();
    }
    let around = neighbourhood(sh);
    let primary = primary_index(&around, key)?;
    let known = around.len().min(primary + sh.chain_len());
    let alive: Vec<&NodeRef> = around[primary..known]
        .iter()
        .copied()
        .filter(|n| n.id != sh.me.id && !suspect(n.id))
        .collect();
    alive.get(turn % alive.len().max(1)).map(|n| (*n).clone())
}

/// Chain replication: the tail of `key` among this node's neighbours, when its
/// predecessor and successor lists reach it and it is not suspected (a read goes
/// straight to the node that answers it; a tail whose view differs routes it on).
fn known_tail(sh: &Shared, suspect: &impl Fn(Id) -> bool, key: Id) -> Option<NodeRef> {
    if sh.has_vnodes() {
        let tail = sh.chain_of(key)?.pop()?;
        return (tail.id != sh.me.id && !suspect(tail.id)).then_some(tail);
    }
    let around = neighbourhood(sh);
    let tail = around.get(primary_index(&around, key)? + sh.chain_len() - 1)?;
    (tail.id != sh.me.id && !suspect(tail.id)).then(|| (*tail).clone())
}

/// This node's neighbourhood in ring order: its farthest predecessor first, through this
/// node, to its farthest successor (on a small ring the two lists overlap; the order
/// still holds).
fn neighbourhood(sh: &Shared) -> Vec<&NodeRef> {
    sh.view
        .preds
        .iter()
        .rev()
        .chain(std::iter::once(&sh.me))
        .chain(&sh.view.succs)
        .collect()
}

/// Where in `around` (see [`neighbourhood`]) the primary of `key` is, when the lists
/// reach it: the ranges between neighbours. On a ring of up to `2k + 2` members the lists
/// overlap and these ranges cover the whole ring. The range from the farthest successor
/// round to the farthest predecessor is never taken as known, even when the view counts
/// exactly as many members as the lists hold: a node far from the ring's later joins keeps
/// the count of the last view it installed, and members that joined since sit in that
/// range (sending their keys to the farthest predecessor sent them round the ring, and
/// back, until the hop limit).
fn primary_index(around: &[&NodeRef], key: Id) -> Option<usize> {
    (1..around.len()).find(|&i| in_open_closed(key, around[i - 1].id, around[i].id))
}

/// The next node towards the successor of `key`, for a node that is not its primary.
/// Suspected peers (silent past the failure timeout) are skipped while another choice
/// exists, so routing survives a crash before the coordinator repairs the ring. Without
/// `shortcuts`, only Chord's own steps: the successor or the closest preceding finger.
fn next_hop(
    sh: &Shared,
    suspect: impl Fn(Id) -> bool,
    key: Id,
    shortcuts: bool,
) -> Option<NodeRef> {
    let first = sh.view.succs.first()?;
    let alive = |n: &&NodeRef| !suspect(n.id);
    let succ = sh.view.succs.iter().find(alive).unwrap_or(first);
    if in_open_closed(key, sh.me.id, first.id) {
        // The key's primary; if it seems dead, its next replica.
        return Some(succ.clone());
    }
    if sh.config.routing == Routing::Successor {
        return Some(succ.clone());
    }
    if let Some(primary) = shortcuts
        .then(|| primary_in_view(sh, &suspect, key))
        .flatten()
    {
        return Some(primary);
    }
    // Closest preceding finger: the farthest finger still before the key.
    sh.fingers
        .nodes
        .iter()
        .rev()
        .filter(alive)
        .find(|f| in_open(f.id, sh.me.id, key))
        .or(Some(succ))
        .cloned()
}

/// The key's primary when this node's neighbour lists reach it (its successor list, as
/// Chord's lookups use, and its predecessor list), unless that node is suspected: one hop
/// straight to it instead of several over fingers, each of them a message between nodes.
/// On a ring of up to `2k + 2` members the lists show every member's range, so every
/// lookup from a member takes at most one hop. A view that is out of date only costs
/// hops: the node it names routes on from there.
fn primary_in_view(sh: &Shared, suspect: &impl Fn(Id) -> bool, key: Id) -> Option<NodeRef> {
    let around = neighbourhood(sh);
    let primary = around[primary_index(&around, key)?];
    (primary.id != sh.me.id && !suspect(primary.id)).then(|| primary.clone())
}

/// Whether a hop from `from` to this node brought an operation on `key` closer; one that
/// did not is a lap (views that disagree during a change, or a dead node skipped).
pub(crate) fn is_lap(sh: &Shared, from: &NodeRef, key: &str) -> bool {
    from.id != sh.me.id && !in_open_closed(sh.me.id, from.id, Id::of_key(key))
}

/// A lookup reached a node that is not (or no longer) a member.
pub(crate) fn route_while_away(sh: &Shared, out: &mut Out, mut routed: Routed) {
    match (sh.phase, &sh.forward_to) {
        (Phase::Idle, Some(next))
            if routed.hops < sh.limits.hops_max && routed.laps <= LAPS_MAX =>
        {
            routed.hops += 1;
            out.send(next, Message::Route(routed));
        }
        _ => {
            let node = sh.addr();
            out.respond(routed.origin, Err(RequestError::RouteBroken { node }));
        }
    }
}

/// Add the pairs this node is primary for to a `query *` walk, then pass it on or
/// finish it.
pub(crate) fn on_collect(
    sh: &Shared,
    out: &mut Out,
    origin: Origin,
    mut pairs: Vec<Pair>,
    visited: u32,
) {
    if !sh.is_member() {
        let node = sh.addr();
        return out.respond(Some(origin), Err(RequestError::RouteBroken { node }));
    }
    if visited > sh.limits.hops_max {
        let err = Err(RequestError::TooManyHops { hops: visited });
        return out.respond(Some(origin), err);
    }
    let node = sh.addr();
    pairs.extend(
        sh.store
            .live_entries()
            .filter(|(k, _)| sh.is_primary(Id::of_key(k)))
            .map(|(k, v)| Pair {
                key: k.to_string(),
                value: v.to_string(),
                node: node.clone(),
            }),
    );
    match sh.view.succs.first() {
        Some(next) if next.id != origin.node.id => {
            let msg = Message::CollectAll {
                origin,
                pairs,
                visited: visited + 1,
            };
            out.send(next, msg);
        }
        _ => {
            pairs.sort();
            out.respond(Some(origin), Ok(Response::All { pairs }));
        }
    }
}

/// Add this node to an overlay walk that started at the coordinator.
pub(crate) fn on_overlay_walk(sh: &Shared, out: &mut Out, origin: Origin, mut nodes: Vec<String>) {
    let back_at_start = nodes.first().is_some_and(|first| **first == *sh.me.addr);
    if back_at_start {
        return out.respond(Some(origin), Ok(Response::Overlay { nodes }));
    }
    if !sh.is_member() {
        let node = sh.addr();
        return out.respond(Some(origin), Err(RequestError::RouteBroken { node }));
    }
    if nodes.len() as u32 > sh.limits.hops_max {
        let err = Err(RequestError::TooManyHops {
            hops: nodes.len() as u32,
        });
        return out.respond(Some(origin), err);
    }
    nodes.push(sh.addr());
    match sh.view.succs.first() {
        Some(next) => out.send(next, Message::OverlayWalk { origin, nodes }),
        None => out.respond(Some(origin), Ok(Response::Overlay { nodes })),
    }
}
