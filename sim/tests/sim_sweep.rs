//! Seed sweeps (`ringkv_sim::sweep`): random faults within the declared fault model
//! (`docs/protocol.md`: fewer than k nodes down at once, no partitions), failure handling
//! on, chain replication and eventual consistency for every seed. Every run is checked
//! for linearizability (chain), lost acknowledged writes (a final read of every key),
//! convergence and the quiescence invariants.
//!
//! Clock rates differ by up to the declared bound, as in `dht sim sweep`. Partitions and
//! pauses longer than the failure timeout are swept in `sim_leases.rs`.
//!
//! The CI sweep is a few hundred seeds; the campaigns (10,000 seeds, release build) are
//!
//! ```text
//! dht sim sweep --seeds 10000 --both --faults random --failure-handling
//! dht sim sweep --seeds 10000 --both --faults random --failure-handling \
//!     --drop 0.01 --dup 0.01 --timeout 200ms
//! ```
//!
//! with their figures in `results/sweep.md`.

use ringkv_core::Consistency;
use ringkv_sim::sweep::{check_run, materialize_faults, sweep, SweepOptions};
use ringkv_sim::{NetConfig, RandomFaults, SimConfig, Simulation, Synthetic, WorkloadSpec};

/// Seeds of the CI sweep (× 2 models): about 15 s in a debug build on 2 cores.
const CI_SEEDS: u64 = 500;

/// The declared fault model, as `dht sim sweep --faults random --failure-handling` runs
/// it: random crashes (at most k - 1 = 2 nodes down at once, each until the failure
/// timeout after its restart), joins and departures, no partitions; failure handling on.
fn declared_model() -> SimConfig {
    SimConfig {
        nodes: 10,
        k: 3,
        random_faults: Some(RandomFaults {
            partition_rate: 0.0,
            ..RandomFaults::default()
        }),
        max_down: Some(2),
        failure_handling: true,
        clock_drift_per_mille: ringkv_core::config::CLOCK_DRIFT_PER_MILLE,
        ..SimConfig::default()
    }
}

/// The same with message loss and duplication and a short client timeout.
fn declared_model_lossy() -> SimConfig {
    SimConfig {
        net: NetConfig {
            drop_probability: 0.01,
            dup_probability: 0.01,
            ..NetConfig::default()
        },
        timeout_ns: 200_000_000,
        ..declared_model()
    }
}

/// Asserts the sweep ran what it claims and found nothing at all: chain replication
/// linearizable, no acknowledged write lost, every run converged, every invariant held.
fn assert_clean(report: &ringkv_sim::sweep::SweepReport, seeds: u64) {
    assert_eq!(report.runs, 2 * seeds);
    // The sweep exercised what it claims to.
    assert!(report.crashes > seeds / 2, "{report}");
    assert!(report.faults > 3 * seeds, "{report}");
    assert!(report.final_reads >= 2 * seeds * 4, "{report}");
    assert!(
        report.worst_staleness_ns > 0,
        "eventual reads were never stale"
    );
    if let Some(run) = report.failures.first() {
        panic!(
            "seed {} {} failed: {:?}\n{}\nreplay: {}\n{report}",
            run.seed,
            run.consistency,
            run.failures,
            run.details.join("\n"),
            run.replay
        );
    }
    assert_eq!(report.linearizability_violations, 0, "{report}");
    assert_eq!(report.lost_acked_writes, 0, "{report}");
    assert_eq!(report.convergence_failures, 0, "{report}");
    assert_eq!(report.converged_runs, report.runs);
    assert_eq!(report.invariant_breaches, 0, "{report}");
    assert_eq!(report.impossible_reads, 0, "{report}");
    assert_eq!(report.final_reads_unanswered, 0, "{report}");
    assert_eq!(report.truncated_runs, 0, "{report}");
    assert!(report.passed(), "{report}");
}

#[test]
fn a_sweep_within_the_declared_model_is_clean() {
    let options = SweepOptions {
        seeds: CI_SEEDS,
        both: true,
        shrink: false,
        ..SweepOptions::default()
    };
    let report = sweep(&declared_model(), &options);
    println!("{report}");
    assert_clean(&report, CI_SEEDS);
}

#[test]
fn a_sweep_with_message_loss_and_duplication_is_clean() {
    let seeds = CI_SEEDS / 2;
    let options = SweepOptions {
        seeds,
        both: true,
        shrink: false,
        ..SweepOptions::default()
    };
    let report = sweep(&declared_model_lossy(), &options);
    println!("{report}");
    assert_clean(&report, seeds);
    assert!(
        report.ops_info > 0,
        "message loss left no operation uncertain"
    );
}

/// The full campaigns of `results/sweep.md` (10,000 seeds each, both models), in a
/// release build: `cargo test --release -p ringkv-sim --test sim_sweep -- --ignored`.
/// Campaign 1 must be clean. Campaign 2 (message loss) must fail no run beyond the one
/// analysed there: seed 5368 under eventual consistency (a primary that crashes before
/// its replica writes arrive); every run must converge.
#[test]
#[ignore = "two 10,000-seed campaigns: about 80 s in a release build"]
fn the_campaigns_of_results_sweep_md() {
    let options = SweepOptions {
        seeds: 10_000,
        both: true,
        shrink: false,
        ..SweepOptions::default()
    };
    let report = sweep(&declared_model(), &options);
    println!("{report}");
    assert!(report.passed(), "{report}");
    let report = sweep(&declared_model_lossy(), &options);
    println!("{report}");
    let known = [(5368, "eventual")];
    for run in &report.failures {
        assert!(
            known.contains(&(run.seed, run.consistency.as_str())),
            "seed {} {}: {:?}\nreplay: {}",
            run.seed,
            run.consistency,
            run.failures,
            run.replay
        );
    }
    assert_eq!(report.convergence_failures, 0, "{report}");
    assert_eq!(report.invariant_breaches, 0, "{report}");
}

#[test]
fn sweeps_are_deterministic_whatever_the_thread_count() {
    let run = |jobs| {
        let options = SweepOptions {
            seeds: 12,
            first_seed: 40,
            jobs: Some(jobs),
            both: true,
            shrink: false,
            ..SweepOptions::default()
        };
        let mut report = sweep(&declared_model_lossy(), &options);
        report.wall_seconds = 0.0;
        for run in &mut report.failures {
            run.wall_seconds = 0.0;
        }
        serde_json::to_value(&report).unwrap()
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn materialized_faults_replay_the_same_run() {
    let config = SimConfig {
        seed: 7,
        ..declared_model()
    };
    let explicit = materialize_faults(&config);
    assert!(explicit.random_faults.is_none() && !explicit.faults.is_empty());
    let a = Simulation::new(config).unwrap().run();
    let b = Simulation::new(explicit.clone()).unwrap().run();
    assert_eq!(a.history, b.history);
    assert_eq!(a.summary.faults, b.summary.faults);
    let replay = b.summary.replay;
    assert!(replay.contains("--fault ") && !replay.contains("--faults random"));
}

/// With k = 1 a crash loses the keys of the crashed node: the sweep must say so, and
/// shrink the failure to a reproducer with explicit faults. (Chain replication: under
/// eventual consistency a write whose every copy crashed is counted apart, as the
/// model's own loss.)
#[test]
fn a_sweep_outside_the_model_fails_and_shrinks() {
    let base = SimConfig {
        k: 1,
        max_down: Some(1),
        consistency: Consistency::Chain,
        workload: WorkloadSpec::Synthetic(Synthetic {
            ops: 200,
            keys: 20,
            ..Synthetic::default()
        }),
        ..declared_model()
    };
    let options = SweepOptions {
        seeds: 20,
        shrink_budget: 60,
        ..SweepOptions::default()
    };
    let report = sweep(&base, &options);
    println!("{report}");
    assert!(!report.passed());
    assert!(report.lost_acked_writes > 0, "{report}");
    let first = &report.failures[0];
    assert!(first.replay.contains("--final-reads --check"));
    let shrunk = report.shrunk.as_ref().expect("the first failure is shrunk");
    assert_eq!(shrunk.seed, first.seed);
    assert!(shrunk.faults_after < shrunk.faults_before, "{shrunk:?}");
    assert!(shrunk.ops_after <= shrunk.ops_before, "{shrunk:?}");
    assert!(shrunk.runs <= 60);
    assert!(
        !shrunk.replay.contains("--faults random"),
        "{}",
        shrunk.replay
    );
    // The reproducer is the printed command, and fails as reported.
    assert_eq!(
        format!("{} --check", shrunk.config.replay_command()),
        shrunk.replay
    );
    let again = check_run(&shrunk.config, &options.check);
    assert_eq!(again.failures, shrunk.reproducer_failures);
    assert!(again.lost_acked_writes > 0, "{again:?}");
}
