//! Keys per process on a ring where every process holds several positions (virtual
//! nodes), and the statistics of that load.
//!
//! Placement is the protocol's: a key belongs to the first position at or after the key's
//! id, wrapping past zero (`Ring::successor`), and a position belongs to the process whose
//! address it was hashed from (`Id::of_vnode`). Nothing here touches a network.

use ringkv_core::Id;
use ringkv_sim::summary::percentile;

/// One position on the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Where it is: `Id::of_vnode(addr, vnode)`.
    pub id: Id,
    /// Index of the process that holds it (its place in the address list).
    pub process: u32,
    /// Which of the process's virtual nodes it is (0 is the process's own id).
    pub vnode: u32,
}

/// Every position of the processes at `addrs`, virtual nodes `0..vnodes` each, sorted by
/// id.
pub fn positions(addrs: &[String], vnodes: u32) -> Vec<Position> {
    let mut all: Vec<Position> = addrs
        .iter()
        .enumerate()
        .flat_map(|(process, addr)| {
            (0..vnodes).map(move |vnode| Position {
                id: Id::of_vnode(addr, vnode),
                process: process as u32,
                vnode,
            })
        })
        .collect();
    all.sort_unstable_by_key(|p| (p.id, p.process, p.vnode));
    all
}

/// The positions of each process's first `r` virtual nodes, still sorted: the ring the
/// same processes form with `r` positions each. Filtering a ring built once for the
/// largest `r` is much cheaper than hashing and sorting again for every `r`.
pub fn first_vnodes(sorted: &[Position], r: u32) -> Vec<Position> {
    sorted.iter().copied().filter(|p| p.vnode < r).collect()
}

/// Keys per process: `keys` are key ids sorted ascending, `ring` positions sorted by id
/// (as [`positions`] returns them), `processes` the number of processes. Each position
/// takes the keys in (previous position, itself], the first one also those after the
/// last position (the wrap past zero), and every process the sum over its positions.
pub fn keys_per_process(keys: &[Id], ring: &[Position], processes: usize) -> Vec<u64> {
    let mut load = vec![0u64; processes];
    let Some(last) = ring.last() else {
        return load;
    };
    // One merge of the two sorted lists: sequential reads, where a binary search per
    // position would miss the cache on every step through a million keys.
    let mut next = 0;
    for p in ring {
        let from = next;
        while next < keys.len() && keys[next] <= p.id {
            next += 1;
        }
        load[p.process as usize] += (next - from) as u64;
    }
    // Keys after the last position wrap past zero to the first one.
    debug_assert!(keys[next..].iter().all(|k| *k > last.id));
    load[ring[0].process as usize] += (keys.len() - next) as u64;
    load
}

/// The spread of keys over processes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadStats {
    /// Keys per process on average (keys / processes).
    pub mean: f64,
    /// Fewest keys on one process.
    pub min: u64,
    /// 1st percentile (nearest rank: the ⌈n/100⌉-th smallest of n loads).
    pub p1: u64,
    /// Median (nearest rank: the ⌈n/2⌉-th smallest).
    pub median: u64,
    /// 99th percentile (nearest rank: the ⌈0.99·n⌉-th smallest).
    pub p99: u64,
    /// Most keys on one process.
    pub max: u64,
    /// Processes that hold no key at all.
    pub empty: usize,
}

impl LoadStats {
    /// Statistics of the keys per process in `load` (all zeros when `load` is empty).
    pub fn of(load: &[u64]) -> LoadStats {
        let mut sorted = load.to_vec();
        sorted.sort_unstable();
        let total: u64 = sorted.iter().sum();
        LoadStats {
            mean: if sorted.is_empty() {
                0.0
            } else {
                total as f64 / sorted.len() as f64
            },
            min: sorted.first().copied().unwrap_or(0),
            p1: percentile(&sorted, 1.0),
            median: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            max: sorted.last().copied().unwrap_or(0),
            empty: sorted.iter().take_while(|&&x| x == 0).count(),
        }
    }

    /// `value` as a multiple of the mean (0 when there are no keys).
    pub fn over_mean(&self, value: u64) -> f64 {
        if self.mean > 0.0 {
            value as f64 / self.mean
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::{NodeRef, Ring};

    /// The id whose last byte is `v` and the others 0.
    fn id(v: u8) -> Id {
        let mut raw = [0u8; 20];
        raw[19] = v;
        Id::from_bytes(raw)
    }

    fn at(v: u8, process: u32, vnode: u32) -> Position {
        Position {
            id: id(v),
            process,
            vnode,
        }
    }

    #[test]
    fn one_position_each_on_a_tiny_ring() {
        // Positions 10, 20, 30 of processes 0, 1, 2. Key 10 sits on a position and is
        // its own; 35 wraps past zero to 10.
        let ring = [at(10, 0, 0), at(20, 1, 0), at(30, 2, 0)];
        let keys = [id(5), id(10), id(15), id(25), id(35)];
        assert_eq!(keys_per_process(&keys, &ring, 3), vec![3, 1, 1]);
        // A process with no position, and no keys at all.
        assert_eq!(keys_per_process(&keys, &ring, 4), vec![3, 1, 1, 0]);
        assert_eq!(keys_per_process(&[], &ring, 3), vec![0, 0, 0]);
        assert_eq!(keys_per_process(&keys, &[], 2), vec![0, 0]);
    }

    #[test]
    fn virtual_positions_add_up_per_process() {
        // Process 0 at 10 and 30, process 1 at 20 and 40.
        let ring = [at(10, 0, 0), at(20, 1, 0), at(30, 0, 1), at(40, 1, 1)];
        let keys = [id(1), id(12), id(25), id(26), id(33), id(41), id(200)];
        // 1, 41, 200 → 10 (p0); 12 → 20 (p1); 25, 26 → 30 (p0); 33 → 40 (p1).
        assert_eq!(keys_per_process(&keys, &ring, 2), vec![5, 2]);
        // With one virtual node each, only 10 and 20 are left: 12 → 20 (p1), every
        // other key → 10 (p0), 25 … 200 by wrapping past zero.
        let one = first_vnodes(&ring, 1);
        assert_eq!(one, vec![at(10, 0, 0), at(20, 1, 0)]);
        assert_eq!(keys_per_process(&keys, &one, 2), vec![6, 1]);
    }

    #[test]
    fn statistics_are_nearest_rank_multiples_of_the_mean() {
        let load: Vec<u64> = (1..=100).rev().collect();
        let s = LoadStats::of(&load);
        assert_eq!(s.mean, 50.5);
        assert_eq!((s.min, s.p1, s.median, s.p99, s.max), (1, 1, 50, 99, 100));
        assert_eq!(s.empty, 0);
        assert!((s.over_mean(s.max) - 100.0 / 50.5).abs() < 1e-12);
        let s = LoadStats::of(&[0, 0, 6]);
        assert_eq!((s.mean, s.p1, s.median, s.p99, s.empty), (2.0, 0, 0, 6, 2));
        assert_eq!(s.over_mean(s.max), 3.0);
        assert_eq!(LoadStats::of(&[]).over_mean(5), 0.0);
    }

    /// The merge agrees with the protocol's own placement, `Ring::successor`, on a ring
    /// of virtual positions built from real addresses.
    #[test]
    fn placement_matches_the_core_ring() {
        let addrs: Vec<String> = (0..40).map(ringkv_sim::node_addr).collect();
        let all = positions(&addrs, 5);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id), "sorted, no ties");
        let mut keys: Vec<Id> = (0..3000).map(|i| Id::of_key(&format!("key-{i}"))).collect();
        keys.sort_unstable();
        for r in [1, 2, 5] {
            let ring_r = first_vnodes(&all, r);
            assert_eq!(ring_r.len(), 40 * r as usize);
            let mut oracle = Ring::new();
            for (process, addr) in addrs.iter().enumerate() {
                for vnode in 0..r {
                    // The oracle's member "address" is the process index.
                    oracle.insert(NodeRef {
                        id: Id::of_vnode(addr, vnode),
                        addr: process.to_string().into(),
                        process: None,
                    });
                }
            }
            let mut expected = vec![0u64; addrs.len()];
            for k in &keys {
                let owner = oracle.successor(*k).unwrap();
                expected[owner.addr.parse::<usize>().unwrap()] += 1;
            }
            assert_eq!(
                keys_per_process(&keys, &ring_r, addrs.len()),
                expected,
                "r = {r}"
            );
        }
        assert_eq!(
            all.iter()
                .find(|p| p.process == 3 && p.vnode == 0)
                .map(|p| p.id),
            Some(Id::of_addr(&addrs[3])),
            "virtual node 0 is the process's own id"
        );
    }
}
