//! Simulator benchmark: a plain `main` printing Markdown (`cargo bench -p ringkv-sim
//! --bench sim`). Figures: events per second on one core, a 1,000-node ring with
//! 100,000 operations, a 10,000-node ring with its peak memory, lookup hops for N = 10 …
//! 10,000 with finger and successor routing, and the consistency sweep (chain vs
//! eventual over 1,000 seeds, checked).
//!
//! `SIM_BENCH_QUICK=1` shrinks every size (for a smoke run).
// A benchmark measures wall time: that is its job.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use rayon::prelude::*;
use ringkv_core::{Consistency, Routing};
use ringkv_sim::check::CheckOptions;
use ringkv_sim::{NetConfig, SimConfig, SimResult, Simulation, Summary, Synthetic, WorkloadSpec};

fn quick() -> bool {
    std::env::var_os("SIM_BENCH_QUICK").is_some()
}

fn scale(n: u64) -> u64 {
    if quick() {
        (n / 20).max(10)
    } else {
        n
    }
}

/// Peak resident memory of this process in MiB (Linux), reset by [`reset_peak`].
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU time of the calling thread (user + system), from `/proc/thread-self/stat`.
/// Other processes on the machine inflate wall time, not this.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn synthetic(ops: u64, keys: u64, read_fraction: f64) -> WorkloadSpec {
    WorkloadSpec::Synthetic(Synthetic {
        ops,
        keys,
        read_fraction,
        ..Synthetic::default()
    })
}

/// A run's summary, its wall time and its CPU time (s).
fn run(config: SimConfig) -> (Summary, f64, f64) {
    let cpu = cpu_seconds().unwrap_or(0.0);
    let start = Instant::now();
    let result: SimResult = Simulation::new(config).expect("valid config").run();
    let wall = start.elapsed().as_secs_f64();
    (result.summary, wall, cpu_seconds().unwrap_or(0.0) - cpu)
}

fn throughput() {
    println!("## Events per second (one core)\n");
    println!(
        "| ring | workload | events | wall s | events/s (wall) | CPU s | events/CPU s | ok ops |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (nodes, k, consistency) in [
        (100, 3, Consistency::Chain),
        (100, 3, Consistency::Eventual),
        (1000, 3, Consistency::Chain),
    ] {
        let config = SimConfig {
            seed: 1,
            nodes,
            k,
            consistency,
            clients: Some(nodes),
            workload: synthetic(scale(300_000), 10_000, 0.5),
            record_history: false,
            ..SimConfig::default()
        };
        let (s, wall, cpu) = run(config);
        println!(
            "| N={nodes} k={k} {consistency} | synthetic {} ops, 50% reads | {} | {wall:.2} | {:.0} | {cpu:.2} | {:.0} | {} |",
            scale(300_000),
            s.events,
            s.events_per_second,
            s.events as f64 / cpu.max(0.01),
            s.ops_ok
        );
    }
    println!();
}

fn big_rings() {
    println!("## Large rings\n");
    println!("| ring | ops | events | setup virtual s | wall s (total) | CPU s | events/s (wall) | ok | p50 ms | p99 ms | hops mean | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (nodes, ops) in [(1000usize, 100_000u64), (10_000, 100_000)] {
        let nodes = scale(nodes as u64) as usize;
        let ops = scale(ops);
        reset_peak();
        let config = SimConfig {
            seed: 2,
            nodes,
            clients: Some(nodes.min(1000)),
            workload: synthetic(ops, 100_000, 0.5),
            record_history: false,
            ..SimConfig::default()
        };
        let (s, wall, cpu) = run(config);
        println!(
            "| N={nodes} k=3 chain finger | {ops} | {} | {:.3} | {wall:.2} | {cpu:.2} | {:.0} | {} | {:.3} | {:.3} | {:.2} | {} |",
            s.events,
            s.setup_virtual_seconds,
            s.events_per_second,
            s.ops_ok,
            s.latency_p50_ns as f64 / 1e6,
            s.latency_p99_ns as f64 / 1e6,
            s.lookup_hops_mean,
            peak_mib().map_or("n/a".into(), |m| format!("{m:.0}"))
        );
        assert_eq!(s.invariant_violations, 0, "{s}");
    }
    println!();
}

fn hops_table() {
    println!("## Lookup hops (k = 1, reads of random keys, exp:1ms, no timeout)\n");
    println!("| N | finger mean | finger p99 | successor mean | successor p99 | 0.5·log2 N |");
    println!("|---|---|---|---|---|---|");
    for nodes in [10usize, 100, 1000, 10_000] {
        let nodes = if quick() { nodes.min(1000) } else { nodes };
        let mut cells = Vec::new();
        for routing in [Routing::Finger, Routing::Successor] {
            let ops = if routing == Routing::Successor && nodes >= 1000 {
                1000
            } else {
                5000
            };
            let config = SimConfig {
                seed: 3,
                nodes,
                k: 1,
                routing,
                clients: Some(nodes.min(100)),
                workload: synthetic(ops, 1_000_000, 1.0),
                // Successor-only lookups on 10,000 nodes take seconds of virtual time.
                timeout_ns: 3_600_000_000_000,
                record_history: false,
                ..SimConfig::default()
            };
            let (s, _, _) = run(config);
            cells.push(format!("{:.2} | {}", s.lookup_hops_mean, s.lookup_hops_p99));
        }
        println!(
            "| {nodes} | {} | {} | {:.2} |",
            cells[0],
            cells[1],
            0.5 * (nodes as f64).log2()
        );
    }
    println!();
}

fn sweep() {
    let seeds = scale(1000);
    println!("## Consistency sweep: reference `requests` workload, 10 nodes, k = 3, {seeds} seeds, checked\n");
    println!("Latency exp:1ms (random latency, so messages reorder); each seed runs the whole");
    println!("workload (500 ops, 10 clients) and `--check` runs on its history.\n");
    println!("| consistency | dup | seeds not linearizable | non-linearizable keys | stale reads | reads | ok ops | info ops | wall s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (consistency, dup) in [
        (Consistency::Chain, 0.0),
        (Consistency::Chain, 0.05),
        (Consistency::Eventual, 0.0),
        (Consistency::Eventual, 0.05),
    ] {
        let start = Instant::now();
        let rows: Vec<Summary> = (0..seeds)
            .into_par_iter()
            .map(|seed| {
                let config = SimConfig {
                    seed,
                    consistency,
                    net: NetConfig {
                        dup_probability: dup,
                        ..NetConfig::default()
                    },
                    ..SimConfig::default()
                };
                let mut r = Simulation::new(config).unwrap().run();
                let options = CheckOptions {
                    parallel: false,
                    ..CheckOptions::default()
                };
                r.check(&options).unwrap();
                r.summary
            })
            .collect();
        let bad = rows
            .iter()
            .filter(|s| s.linearizable.as_deref() != Some("linearizable"))
            .count();
        let keys: u64 = rows
            .iter()
            .map(|s| s.linearizability_violations.unwrap_or(0))
            .sum();
        let stale: u64 = rows.iter().map(|s| s.stale_reads.unwrap_or(0)).sum();
        let reads: u64 = rows
            .iter()
            .map(|s| s.ops_by_kind.get("read.ok").copied().unwrap_or(0))
            .sum();
        let ok: u64 = rows.iter().map(|s| s.ops_ok).sum();
        let info: u64 = rows.iter().map(|s| s.ops_info).sum();
        println!(
            "| {consistency} | {dup} | {bad} | {keys} | {stale} | {reads} | {ok} | {info} | {:.1} |",
            start.elapsed().as_secs_f64()
        );
    }
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument names the sections to run.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let on = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    println!("# ringkv simulator benchmark\n");
    println!(
        "Release build, one simulation per core-thread (the sweep uses {} threads). Quick mode: {}.\n",
        rayon::current_num_threads(),
        quick()
    );
    if on("throughput") {
        throughput();
    }
    if on("big") {
        big_rings();
    }
    if on("hops") {
        hops_table();
    }
    if on("sweep") {
        sweep();
    }
}
