//! The consistency claim, checked by `ringkv_sim::check` on the histories the simulator
//! writes: under random latency (so messages reorder), chain replication and CRAQ are
//! linearizable on every seed, while eventual consistency serves stale reads.
//! Message duplication is covered too: the primary applies a duplicated client write once.

use rayon::prelude::*;
use ringkv_core::Consistency;
use ringkv_sim::check::CheckOptions;
use ringkv_sim::{NetConfig, SimConfig, Simulation, Summary, Synthetic, WorkloadSpec};

const SEEDS: u64 = 1000;

fn config(seed: u64, consistency: Consistency, dup_probability: f64) -> SimConfig {
    let latency = ["exp:1ms", "lognormal:1ms,1", "uniform:0ms..3ms"][seed as usize % 3];
    SimConfig {
        seed,
        consistency,
        net: NetConfig {
            latency: latency.parse().unwrap(),
            dup_probability,
            ..NetConfig::default()
        },
        workload: WorkloadSpec::Synthetic(Synthetic {
            ops: 200,
            keys: 4,
            read_fraction: 0.5,
            delete_fraction: 0.1,
            ..Synthetic::default()
        }),
        ..SimConfig::default()
    }
}

fn checked(config: SimConfig) -> Summary {
    let mut r = Simulation::new(config).unwrap().run();
    let options = CheckOptions {
        parallel: false,
        ..CheckOptions::default()
    };
    r.check(&options).unwrap();
    r.summary
}

/// Seeds (of the first `seeds`) whose run of `model` is not linearizable, with the
/// replay command and the counterexample.
fn failing_seeds(model: Consistency, dup_probability: f64, seeds: u64) -> Vec<String> {
    (0..seeds)
        .into_par_iter()
        .map(|seed| checked(config(seed, model, dup_probability)))
        .filter(|s| s.linearizable.as_deref() != Some("linearizable") || s.ops_ok != 200)
        .map(|s| format!("{}\n{}", s.replay, s.counterexample.unwrap_or_default()))
        .collect()
}

fn assert_none_fail(bad: Vec<String>, seeds: u64) {
    assert!(
        bad.is_empty(),
        "{} of {seeds} seeds failed; first:\n{}",
        bad.len(),
        bad[0]
    );
}

#[test]
fn chain_replication_is_linearizable_under_reordering() {
    assert_none_fail(failing_seeds(Consistency::Chain, 0.0, SEEDS), SEEDS);
}

#[test]
fn chain_with_duplicates_is_linearizable() {
    assert_none_fail(failing_seeds(Consistency::Chain, 0.05, SEEDS), SEEDS);
}

#[test]
fn craq_is_linearizable_under_reordering() {
    assert_none_fail(failing_seeds(Consistency::Craq, 0.0, SEEDS), SEEDS);
}

#[test]
fn craq_with_duplicates_is_linearizable() {
    assert_none_fail(failing_seeds(Consistency::Craq, 0.05, SEEDS), SEEDS);
}

#[test]
fn eventual_consistency_serves_stale_reads() {
    let (stale, violations): (u64, u64) = (0..200u64)
        .into_par_iter()
        .map(|seed| {
            let s = checked(config(seed, Consistency::Eventual, 0.05));
            (
                s.stale_reads.unwrap(),
                s.linearizability_violations.unwrap(),
            )
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    println!("eventual over 200 seeds: {stale} stale reads, {violations} non-linearizable keys");
    assert!(stale > 0);
    assert!(violations > 0);
}
