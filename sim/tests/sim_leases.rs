//! The fault model with leases (`docs/protocol.md`): partitions longer than the failure
//! timeout, process pauses longer than it, and clock rates that differ by up to the
//! declared bound, on top of the random crashes, restarts, joins and departures of the
//! declared model. Chain replication and CRAQ must stay linearizable and lose no
//! acknowledged write; every run must converge once the faults are over.
//!
//! One gap is named, not hidden: a bootstrap restarted while it is cut off from every
//! member cannot tell a restart from a first start, and after its recovery wait founds a
//! new ring (durable nodes would remember their ring). Runs whose schedule does that are
//! listed and excluded from the verdict; every other run must be safe (see
//! `assert_safe_but_the_gap`).
//!
//! The campaigns (10,000 seeds, release build, figures in `results/sweep.md`):
//!
//! ```text
//! dht sim sweep --seeds 10000 --consistency chain --faults random --failure-handling \
//!     --partition-rate 1 --partition-duration 4s
//! dht sim sweep --seeds 10000 --consistency chain --faults random --failure-handling \
//!     --pause-rate 1 --pause-duration 4s
//! ```
//!
//! and the same two with `--consistency craq`.

use ringkv_core::Consistency;
use ringkv_sim::sweep::{materialize_faults, sweep, SweepOptions, SweepReport};
use ringkv_sim::{FaultKind, RandomFaults, SimConfig};

/// Seeds per CI sweep: a few seconds each in a debug build on 2 cores.
const CI_SEEDS: u64 = 120;

const SECOND: u64 = 1_000_000_000;

/// A restarted bootstrap decides it has no ring after three heartbeat intervals (0.6 s
/// with the default timing); cut off before that, it founds a new one. One interval more,
/// for clock drift and a timer fired late.
fn recovery_window_ns() -> u64 {
    4 * ringkv_core::Timing::with_failure_handling().heartbeat_interval_ns
}

fn cut_off_model(consistency: Consistency, partition_rate: f64, pause_rate: f64) -> SimConfig {
    SimConfig {
        nodes: 10,
        k: 3,
        consistency,
        random_faults: Some(RandomFaults {
            partition_rate,
            partition_ns: 4 * SECOND,
            pause_rate,
            pause_ns: 4 * SECOND,
            ..RandomFaults::default()
        }),
        max_down: Some(2),
        failure_handling: true,
        clock_drift_per_mille: ringkv_core::config::CLOCK_DRIFT_PER_MILLE,
        ..SimConfig::default()
    }
}

/// Whether the schedule of `seed` restarts the bootstrap (node 0) while a partition cuts
/// it off, within its recovery window: the named gap.
fn restarts_the_bootstrap_cut_off(config: &SimConfig, seed: u64) -> bool {
    let schedule = materialize_faults(&SimConfig {
        seed,
        ..config.clone()
    });
    let restarts = schedule
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::Restart { node: 0 })
        .map(|f| f.at_ns);
    restarts.into_iter().any(|t| {
        schedule.faults.iter().any(|f| match &f.kind {
            FaultKind::Partition { nodes, duration_ns } => {
                nodes.contains(&0)
                    && f.at_ns < t + recovery_window_ns()
                    && f.at_ns + duration_ns > t
            }
            _ => false,
        })
    })
}

/// Safety holds on every run but the named gap's: no linearizability violation and no lost
/// acknowledged write. Liveness is checked too, more loosely: a few runs of these extreme
/// schedules (a 4 s cut during churn, with the leader crashing) end with a stray copy or a
/// member that has not yet rejoined when the run stops (`results/sweep.md`); they must stay
/// under 1% of the runs. Returns the seeds that failed outside the gap.
fn assert_safe_but_the_gap(config: &SimConfig, report: &SweepReport, seeds: u64) -> Vec<u64> {
    println!("{report}");
    assert_eq!(report.runs, seeds);
    assert!(report.faults > 3 * seeds, "{report}");
    let mut liveness = Vec::new();
    for run in &report.failures {
        let gap = restarts_the_bootstrap_cut_off(config, run.seed);
        println!("seed {} {:?} gap={gap}", run.seed, run.failures);
        if gap {
            continue;
        }
        let unsafe_run = run
            .failures
            .iter()
            .any(|f| f == "linearizability" || f == "lost_acked_writes");
        assert!(
            !unsafe_run,
            "seed {} failed: {:?}\n{}\nreplay: {}",
            run.seed,
            run.failures,
            run.details.join("\n"),
            run.replay
        );
        liveness.push(run.seed);
    }
    assert!(
        (liveness.len() as u64) * 100 <= seeds,
        "liveness failures on {liveness:?}\n{report}"
    );
    liveness
}

/// Sweep `config` over the CI seeds and check it.
fn sweep_and_check(config: SimConfig) {
    let options = SweepOptions {
        seeds: CI_SEEDS,
        shrink: false,
        ..SweepOptions::default()
    };
    let report = sweep(&config, &options);
    assert_safe_but_the_gap(&config, &report, CI_SEEDS);
}

#[test]
fn chain_stays_linearizable_across_partitions_longer_than_the_failure_timeout() {
    sweep_and_check(cut_off_model(Consistency::Chain, 1.0, 0.0));
}

#[test]
fn chain_stays_linearizable_across_long_process_pauses() {
    sweep_and_check(cut_off_model(Consistency::Chain, 0.0, 1.0));
}

#[test]
fn craq_stays_linearizable_across_partitions_longer_than_the_failure_timeout() {
    sweep_and_check(cut_off_model(Consistency::Craq, 1.0, 0.0));
}

#[test]
fn craq_stays_linearizable_across_long_process_pauses() {
    sweep_and_check(cut_off_model(Consistency::Craq, 0.0, 1.0));
}

/// The gap's classifier picks out exactly the schedules it describes.
#[test]
fn the_gap_is_recognised_from_the_schedule() {
    let mut config = cut_off_model(Consistency::Chain, 0.0, 0.0);
    config.random_faults = None;
    let with = |specs: &[&str]| SimConfig {
        faults: specs.iter().map(|s| s.parse().unwrap()).collect(),
        ..config.clone()
    };
    let gap = with(&[
        "crash:0@100ms",
        "restart:0@300ms",
        "partition:0,4@200ms..4s",
    ]);
    assert!(restarts_the_bootstrap_cut_off(&gap, 0));
    let healed_first = with(&["crash:0@100ms", "restart:0@5s", "partition:0,4@200ms..4s"]);
    assert!(!restarts_the_bootstrap_cut_off(&healed_first, 0));
    let other_node = with(&[
        "crash:0@100ms",
        "restart:0@300ms",
        "partition:3,4@200ms..4s",
    ]);
    assert!(!restarts_the_bootstrap_cut_off(&other_node, 0));
}

/// The campaigns of `results/sweep.md` (10,000 seeds each, chain then CRAQ), in a
/// release build:
/// `cargo test --release -p ringkv-sim --test sim_leases -- --ignored --nocapture`.
/// Prints every failing seed with whether it is the named gap; fails on any unsafe run
/// outside it, or on liveness failures in more than 1% of the runs.
#[test]
#[ignore = "four 10,000-seed campaigns: a few minutes in a release build"]
fn the_campaigns_with_partitions_and_pauses() {
    let options = SweepOptions {
        seeds: 10_000,
        shrink: false,
        ..SweepOptions::default()
    };
    let models = [Consistency::Chain, Consistency::Craq];
    let configs = models.into_iter().flat_map(|model| {
        [
            cut_off_model(model, 1.0, 0.0),
            cut_off_model(model, 0.0, 1.0),
        ]
    });
    for config in configs {
        let report = sweep(&config, &options);
        let liveness = assert_safe_but_the_gap(&config, &report, options.seeds);
        println!("liveness failures outside the named gap: {liveness:?}");
    }
}
