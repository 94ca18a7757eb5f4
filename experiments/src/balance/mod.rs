//! Experiment 4e: load balance of key placement against virtual nodes per process.
//!
//! Placement only, no network and no simulator run: N processes at the simulator's
//! addresses (`ringkv_sim::node_addr`), each at R positions `Id::of_vnode(addr, 0..R)`,
//! and K keys; every key belongs to the process holding the first position at or after
//! the key's id. For each (N, K, R) and each of several rings (different address sets),
//! the keys per process are summarised as max, 99th and 1st percentile and median, each
//! ÷ the mean K/N, and compared with the Chord paper's §6.2 ([`paper`]).
//!
//! The keys are synthetic, `key-0` … `key-{K−1}`: the reference workload has only 500
//! distinct keys, a thousandth of what the paper places. Each setup's keys are a prefix
//! of the largest setup's, so they are hashed once. Ring `t` of N processes is
//! `node_addr(t·N)` … `node_addr(t·N + N − 1)`, so ring 0 is the simulator's own ring of
//! that size and the rings of one N share no address. The positions of a ring are hashed
//! and sorted once, for the largest R; each smaller R keeps each process's first
//! positions, which is the ring those processes form with R virtual nodes.

pub mod paper;
pub mod placement;
mod report;

use ringkv_core::Id;
use ringkv_sim::node_addr;
use serde::Serialize;

use crate::runner::{par_map, progress_bar, write_csv, Options, Report};
use crate::{ExperimentError, Result};

use placement::LoadStats;

/// Virtual nodes per process measured (the paper's Figure 9 uses the same).
pub const VNODES: [u32; 5] = [1, 2, 5, 10, 20];

/// Distinct addresses `ringkv_sim::node_addr` gives (`10.a.b.c:5000`).
const ADDRESSES: usize = 1 << 24;

/// A ring size and a number of keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Processes (physical nodes).
    pub nodes: usize,
    /// Keys placed.
    pub keys: usize,
}

/// The setups measured: N = 10^3 and 10^4 with the paper's 5 × 10^5 keys (its Figure 8),
/// and N = 10^4 with 10^6 keys (its Figure 9).
pub fn setups(options: &Options) -> Vec<Setup> {
    let setup = |nodes, keys| Setup { nodes, keys };
    options.size(
        vec![setup(100, 20_000), setup(1_000, 20_000)],
        vec![
            setup(1_000, 500_000),
            setup(10_000, 500_000),
            setup(10_000, 1_000_000),
        ],
    )
}

/// Rings (address sets) per setup: `--reps`, by default 20 as in the paper (2 quick).
pub fn rings(options: &Options) -> usize {
    options.balance_reps()
}

/// The name of key `i`.
pub fn key_name(i: usize) -> String {
    format!("key-{i}")
}

/// The addresses of ring `ring` of `nodes` processes.
pub fn ring_addrs(nodes: usize, ring: usize) -> Vec<String> {
    (0..nodes).map(|i| node_addr(ring * nodes + i)).collect()
}

/// A row of `balance.csv`: one ring of one (N, K, R).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Processes (physical nodes), N.
    pub nodes: usize,
    /// Virtual nodes (ring positions) per process, R.
    pub vnodes_per_node: u32,
    /// Positions on the ring, N·R.
    pub positions: usize,
    /// Keys placed, K (`key-0` … `key-{K−1}`).
    pub keys: usize,
    /// Which ring of this (N, K, R): its addresses are `node_addr(ring·N + i)`.
    pub ring: usize,
    /// The ring's first address.
    pub first_addr: String,
    /// K / N.
    pub keys_mean: f64,
    /// Fewest keys on a process.
    pub keys_min: u64,
    /// 1st percentile of keys per process (nearest rank).
    pub keys_p1: u64,
    /// Median keys per process (nearest rank).
    pub keys_median: u64,
    /// 99th percentile of keys per process (nearest rank).
    pub keys_p99: u64,
    /// Most keys on a process.
    pub keys_max: u64,
    /// Processes with no key.
    pub nodes_empty: usize,
    /// `keys_max` ÷ `keys_mean`.
    pub max_over_mean: f64,
    /// `keys_p99` ÷ `keys_mean`.
    pub p99_over_mean: f64,
    /// `keys_p1` ÷ `keys_mean`.
    pub p1_over_mean: f64,
    /// `keys_median` ÷ `keys_mean`.
    pub median_over_mean: f64,
}

impl Row {
    fn new(setup: Setup, vnodes: u32, ring: usize, first_addr: &str, s: &LoadStats) -> Row {
        Row {
            nodes: setup.nodes,
            vnodes_per_node: vnodes,
            positions: setup.nodes * vnodes as usize,
            keys: setup.keys,
            ring,
            first_addr: first_addr.to_string(),
            keys_mean: s.mean,
            keys_min: s.min,
            keys_p1: s.p1,
            keys_median: s.median,
            keys_p99: s.p99,
            keys_max: s.max,
            nodes_empty: s.empty,
            max_over_mean: s.over_mean(s.max),
            p99_over_mean: s.over_mean(s.p99),
            p1_over_mean: s.over_mean(s.p1),
            median_over_mean: s.over_mean(s.median),
        }
    }
}

/// Run experiment 4e.
pub fn run(options: &Options) -> Result<Report> {
    let setups = setups(options);
    let rings = rings(options);
    let mut sizes: Vec<usize> = setups.iter().map(|s| s.nodes).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let largest = sizes.last().copied().unwrap_or(0);
    if rings.saturating_mul(largest) > ADDRESSES {
        return Err(ExperimentError(format!(
            "{rings} rings of {largest} nodes need more than the {ADDRESSES} simulator addresses; use --reps {} or fewer",
            ADDRESSES / largest.max(1)
        )));
    }
    let bar = progress_bar(options, "balance", (sizes.len() * rings) as u64);
    bar.set_message("placement only, no network");
    let key_sets = sorted_key_sets(&setups);
    let vnodes_max = VNODES.iter().copied().max().unwrap_or(1);
    // Largest rings first, so the two worker threads finish together.
    let plan: Vec<(usize, usize)> = sizes
        .iter()
        .rev()
        .flat_map(|&nodes| (0..rings).map(move |ring| (nodes, ring)))
        .collect();
    let per_ring = par_map(&plan, |&(nodes, ring)| {
        let addrs = ring_addrs(nodes, ring);
        let all = placement::positions(&addrs, vnodes_max);
        let mut rows = Vec::new();
        for r in VNODES {
            let positions = placement::first_vnodes(&all, r);
            for (setup, keys) in key_sets.iter().filter(|(s, _)| s.nodes == nodes) {
                let load = placement::keys_per_process(keys, &positions, nodes);
                let first = addrs.first().map_or("", String::as_str);
                rows.push(Row::new(*setup, r, ring, first, &LoadStats::of(&load)));
            }
        }
        bar.inc(1);
        rows
    });
    bar.finish_and_clear();
    let mut rows: Vec<Row> = per_ring.into_iter().flatten().collect();
    rows.sort_by_key(|r| (r.nodes, r.keys, r.vnodes_per_node, r.ring));
    let csv = options.path("balance.csv");
    let png = options.path("balance.png");
    write_csv(&csv, &rows)?;
    let points = report::aggregate(&rows);
    report::plot(&png, &points, rings)?;
    Ok(Report {
        name: "balance",
        files: vec![csv, png],
        table: report::table(&points, rings),
        warnings: report::against_paper(&points),
        seconds: 0.0,
    })
}

/// Each setup with its keys' ids, sorted. Keys are hashed once, on two threads: every
/// setup's keys are `key-0` … `key-{K−1}`, a prefix of the largest setup's.
fn sorted_key_sets(setups: &[Setup]) -> Vec<(Setup, Vec<Id>)> {
    let most = setups.iter().map(|s| s.keys).max().unwrap_or(0);
    let half = most.div_ceil(2);
    let ids: Vec<Id> = par_map(&[0..half, half..most], |range| {
        range
            .clone()
            .map(|i| Id::of_key(&key_name(i)))
            .collect::<Vec<Id>>()
    })
    .concat();
    setups
        .iter()
        .map(|s| {
            let mut keys = ids[..s.keys].to_vec();
            keys.sort_unstable();
            (*s, keys)
        })
        .collect()
}
