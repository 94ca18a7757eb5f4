//! Invariants checked once a run has drained (no message in flight, no client waiting):
//!
//! - `coordinator`: a live node leads the coordinator group (the leader of the newest
//!   term is the authority for the checks below);
//! - `membership_busy`: the leader has no join or depart in progress or queued;
//! - `ring`: the leader's ring and the members agree, every member's view (ring size,
//!   `k + 1` predecessors and successors) is the one the ring gives it, and following
//!   successors from the leader visits every member once and comes back: one correctly
//!   ordered cycle;
//! - `placement_missing` / `placement_extra` (only for runs without crashes): every key
//!   some member holds live is held by exactly its `min(k, N)` replicas;
//! - `replica_divergence`: the replicas holding a key hold the same version of it.
//!
//! The simulator adds `node_panic` when a node's step panicked (a core assertion).
//!
//! Stale finger entries are counted but are not a breach: a stale finger only lengthens
//! a lookup.

// Hash maps and sets here are lookups and memo tables: none is iterated where the order
// could reach a verdict, a report or a history (those are sorted or B-tree ordered).
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, HashMap};

use ringkv_core::{Entry, Id, Node};

/// One simulated node as the observer sees it.
#[derive(Clone, Copy, Debug)]
pub struct NodeView<'a> {
    /// The state machine (a crashed node's state is frozen at the crash).
    pub node: &'a Node,
    /// Whether it is running.
    pub up: bool,
}

/// What the observer found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Breaches per kind.
    pub by_kind: BTreeMap<String, u64>,
    /// The first breaches, described.
    pub examples: Vec<String>,
    /// Ring size according to the bootstrap.
    pub ring_size: usize,
    /// Finger entries that differ from the ring's.
    pub stale_finger_entries: u64,
    /// Distinct keys held by some member.
    pub keys: usize,
}

/// Breaches described in [`Observation::examples`].
pub const EXAMPLES_MAX: usize = 20;

impl Observation {
    /// Total breaches.
    pub fn violations(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Record a breach of kind `kind`.
    pub fn breach(&mut self, kind: &str, detail: impl FnOnce() -> String) {
        *self.by_kind.entry(kind.to_string()).or_default() += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(format!("{kind}: {}", detail()));
        }
    }
}

/// Check the invariants over `nodes`, with the live leader of the newest coordinator
/// term as the authority. Placement is checked only when `placement` is set (runs
/// without crashes, or with failure handling that repaired them).
pub fn observe(nodes: &[NodeView<'_>], k: usize, placement: bool) -> Observation {
    let mut obs = Observation::default();
    if nodes.is_empty() {
        return obs;
    }
    let leader = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.up)
        .filter_map(|(i, n)| n.node.leader_term().map(|t| (t, i)))
        .max();
    let Some((_, leader)) = leader else {
        obs.breach("coordinator", || {
            "no live node leads the coordinator group".into()
        });
        return obs;
    };
    let boot = &nodes[leader];
    let Some(ring) = boot.node.ring() else {
        return obs;
    };
    obs.ring_size = ring.len();
    if !boot.node.membership_idle() {
        obs.breach("membership_busy", || {
            "a join or depart is still in progress or queued at the coordinator".into()
        });
    }
    let by_addr: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (&*n.node.me().addr, i))
        .collect();
    check_ring(nodes, leader, ring, &by_addr, k, &mut obs);
    check_keys(nodes, ring, &by_addr, k, placement, &mut obs);
    obs
}

fn check_ring(
    nodes: &[NodeView<'_>],
    leader: usize,
    ring: &ringkv_core::Ring,
    by_addr: &HashMap<&str, usize>,
    k: usize,
    obs: &mut Observation,
) {
    let list_len = k + 1;
    for member in ring.iter() {
        let ok = by_addr
            .get(&*member.addr)
            .is_some_and(|&i| nodes[i].node.is_member());
        if !ok {
            obs.breach("ring", || {
                format!("the ring lists {} but it is not a member", member.addr)
            });
        }
    }
    // A crashed node's state is frozen at the crash: what it believes is not checked.
    for n in nodes.iter().filter(|n| n.up && n.node.is_member()) {
        let me = n.node.me();
        if !ring.contains(me.id) {
            obs.breach("ring", || {
                format!("{} is a member but not in the ring", me.addr)
            });
            continue;
        }
        let view = n.node.view();
        // Nodes a change does not affect keep an older ring size; it only matters up to
        // k + 1 (chain length and whole-ring responsibility), and is exact there.
        let expected = ring.view_of(me.id, list_len, view.epoch);
        let good = view.ring_size.min(list_len) == ring.len().min(list_len)
            && view.succs == expected.succs
            && view.preds == expected.preds;
        if !good {
            obs.breach("ring", || {
                format!(
                    "{}'s view (size {}, succ {:?}) is not the ring's",
                    me.addr,
                    view.ring_size,
                    view.succs.first()
                )
            });
        }
        let fingers = ring.fingers_of(me.id);
        obs.stale_finger_entries += n
            .node
            .fingers()
            .iter()
            .zip(&fingers)
            .filter(|(a, b)| a.id != b.id)
            .count() as u64;
    }
    // Walk the successor pointers from the leader (or, if it has left the ring while
    // handing over, from a member): one cycle through every member.
    let first = match nodes[leader].node.is_member() {
        true => Some(leader),
        false => ring.iter().find_map(|m| by_addr.get(&*m.addr).copied()),
    };
    let Some(mut at) = first else { return };
    let start = nodes[at].node.me().id;
    let mut seen = 0usize;
    loop {
        let view = nodes[at].node.view();
        seen += 1;
        let Some(next) = view.succs.first() else {
            break;
        };
        if next.id == start || seen > ring.len() {
            break;
        }
        match by_addr.get(&*next.addr) {
            Some(&i) if nodes[i].node.is_member() => at = i,
            _ => {
                obs.breach("ring", || {
                    format!("the successor walk reaches {}, not a member", next.addr)
                });
                return;
            }
        }
    }
    if seen != ring.len() {
        obs.breach("ring", || {
            format!(
                "the successor walk from the leader visits {seen} nodes; the ring has {}",
                ring.len()
            )
        });
    }
}

fn check_keys(
    nodes: &[NodeView<'_>],
    ring: &ringkv_core::Ring,
    by_addr: &HashMap<&str, usize>,
    k: usize,
    placement: bool,
    obs: &mut Observation,
) {
    let mut holders: BTreeMap<&str, Vec<(usize, &Entry)>> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if !n.up || !n.node.is_member() {
            continue;
        }
        for (key, entry) in n.node.store().iter() {
            holders.entry(key).or_default().push((i, entry));
        }
    }
    obs.keys = holders.len();
    for (key, held) in &holders {
        let replicas: Vec<usize> = ring
            .replicas(Id::of_key(key), k)
            .iter()
            .filter_map(|r| by_addr.get(&*r.addr).copied())
            .collect();
        if placement {
            let live = held.iter().any(|(_, e)| e.value.is_some());
            for &r in &replicas {
                if live && !held.iter().any(|(i, _)| *i == r) {
                    obs.breach("placement_missing", || {
                        format!(
                            "key {key:?} is missing on replica {}",
                            nodes[r].node.me().addr
                        )
                    });
                }
            }
            for (i, _) in held {
                if !replicas.contains(i) {
                    obs.breach("placement_extra", || {
                        format!(
                            "key {key:?} is held by {}, not one of its replicas",
                            nodes[*i].node.me().addr
                        )
                    });
                }
            }
        }
        let mut on_replicas = held.iter().filter(|(i, _)| replicas.contains(i));
        if let Some((_, first)) = on_replicas.next() {
            if let Some((i, other)) = on_replicas.find(|(_, e)| e != first) {
                obs.breach("replica_divergence", || {
                    format!(
                        "key {key:?}: {:?} (v{}) on one replica, {:?} (v{}) on {}",
                        first.value,
                        first.version.counter,
                        other.value,
                        other.version.counter,
                        nodes[*i].node.me().addr
                    )
                });
            }
        }
    }
}
