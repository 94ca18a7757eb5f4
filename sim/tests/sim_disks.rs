//! Crash-with-disk faults (`SimConfig::disks`): every node persists before it sends, a
//! crash keeps what it persisted, and whole-ring power cuts (every node down at once,
//! restarted in an order drawn from the seed) join the random crashes, restarts, joins
//! and departures of the declared model. Both models must lose no acknowledged write and
//! converge; chain replication must stay linearizable.
//!
//! The campaign (release build, figures in `results/sweep.md`):
//!
//! ```text
//! dht sim sweep --seeds 10000 --both --faults random --failure-handling --disks --power-cut-rate 1
//! ```

use ringkv_core::Consistency;
use ringkv_sim::sweep::{sweep, SweepOptions};
use ringkv_sim::{RandomFaults, SimConfig};

fn with_disks(power_cut_rate: f64, disks: bool) -> SimConfig {
    SimConfig {
        nodes: 10,
        k: 3,
        consistency: Consistency::Chain,
        random_faults: Some(RandomFaults {
            power_cut_rate,
            ..RandomFaults::default()
        }),
        max_down: Some(2),
        failure_handling: true,
        clock_drift_per_mille: ringkv_core::config::CLOCK_DRIFT_PER_MILLE,
        final_reads: true,
        record_history: true,
        disks,
        ..SimConfig::default()
    }
}

fn options(seeds: u64) -> SweepOptions {
    SweepOptions {
        seeds,
        both: true,
        shrink: false,
        ..SweepOptions::default()
    }
}

#[test]
fn power_cuts_with_disks_lose_nothing_and_stay_linearizable() {
    let report = sweep(&with_disks(1.0, true), &options(100));
    assert_eq!(report.runs, 200);
    assert_eq!(report.failed_runs, 0, "{:#?}", report.failures);
    assert_eq!(report.lost_acked_writes, 0);
    assert_eq!(report.linearizability_violations, 0);
}

#[test]
fn the_declared_model_with_disks_passes() {
    let report = sweep(&with_disks(0.0, true), &options(60));
    assert_eq!(report.failed_runs, 0, "{:#?}", report.failures);
}

/// The same power cuts without disks do lose data: the sweep sees the fault.
#[test]
fn power_cuts_without_disks_are_caught() {
    let report = sweep(&with_disks(1.0, false), &options(30));
    assert!(
        report.failed_runs > 0,
        "a ring that lost its data went unnoticed"
    );
}
