//! Virtual nodes (`--vnodes R`): every process owns R ring positions, each a core node of
//! its own; a fault names a process and takes all its positions; a key's replicas lie on
//! distinct processes (the quiescence check compares every key's holders with
//! `Ring::replicas`, which places them so). Every model: under chain replication and CRAQ
//! a key's chain runs over k distinct processes.
//!
//! The campaigns (release build) are in `results/sweep.md`, e.g.
//!
//! ```text
//! dht sim sweep --seeds 2000 --consistency eventual --nodes 10 --vnodes 4 --k 3 \
//!     --max-down 2 --pause-rate 1 --faults random --failure-handling \
//!     --partition-rate 1 --partition-duration 4s
//! ```

mod common;

use common::cut_off_and_lossy;
use ringkv_core::Consistency;
use ringkv_sim::sweep::{sweep, SweepOptions};
use ringkv_sim::{Fault, FaultKind, RandomFaults, SimConfig, Simulation};

/// Four processes of three positions, k = 2, eventual consistency, failure handling.
fn processes() -> SimConfig {
    SimConfig {
        nodes: 4,
        vnodes: 3,
        k: 2,
        consistency: Consistency::Eventual,
        failure_handling: true,
        final_reads: true,
        ..SimConfig::default()
    }
}

/// Seeds `0..seeds` of `base`, unshrunk, the report printed.
fn sweep_of(base: &SimConfig, seeds: u64) -> ringkv_sim::sweep::SweepReport {
    let options = SweepOptions {
        seeds,
        shrink: false,
        ..SweepOptions::default()
    };
    let report = sweep(base, &options);
    println!("{report}");
    report
}

/// Fails with the first failed run's seed, findings and replay command.
fn assert_no_failed_run(report: &ringkv_sim::sweep::SweepReport) {
    if let Some(run) = report.failures.first() {
        panic!(
            "seed {} failed: {:?}\n{}\nreplay: {}",
            run.seed,
            run.failures,
            run.details.join("\n"),
            run.replay
        );
    }
}

#[test]
fn a_ring_of_processes_with_several_positions_each_serves_and_places_by_process() {
    let result = Simulation::new(processes()).unwrap().run();
    let s = &result.summary;
    assert_eq!(s.ring_size, 12, "{s}");
    assert_eq!(s.invariant_violations, 0, "{s}");
    assert_eq!(s.lost_acked_writes, Some(0), "{s}");
    assert_eq!(s.ops_fail, 0, "{s}");
}

/// A crash names a process: all its positions go down at once, and none of its keys is
/// lost (each has a replica on another process), which a ring that placed two replicas
/// of a key on one process would not survive.
#[test]
fn a_crash_takes_every_position_of_its_process_and_loses_nothing() {
    let config = SimConfig {
        faults: vec![Fault {
            at_ns: 20_000_000,
            kind: FaultKind::Crash { node: 2 },
        }],
        ..processes()
    };
    let result = Simulation::new(config).unwrap().run();
    let s = &result.summary;
    assert_eq!(s.crashes, 3, "{s}");
    assert_eq!(s.ring_size, 9, "{s}");
    assert_eq!(s.invariant_violations, 0, "{s}");
    assert_eq!(s.lost_acked_writes, Some(0), "{s}");
}

/// A process that joins brings all its positions; one that departs takes them all out.
#[test]
fn a_process_joins_and_departs_with_all_its_positions() {
    let config = SimConfig {
        faults: vec![
            Fault {
                at_ns: 10_000_000,
                kind: FaultKind::Join,
            },
            Fault {
                at_ns: 30_000_000,
                kind: FaultKind::Depart { node: 1 },
            },
        ],
        ..processes()
    };
    let result = Simulation::new(config).unwrap().run();
    let s = &result.summary;
    assert_eq!((s.joins, s.departs), (3, 3), "{s}");
    assert_eq!(s.ring_size, 12, "{s}");
    assert_eq!(s.invariant_violations, 0, "{s}");
    assert_eq!(s.lost_acked_writes, Some(0), "{s}");
}

#[test]
fn the_same_seed_gives_the_same_history_with_virtual_nodes() {
    for consistency in [Consistency::Eventual, Consistency::Chain] {
        let config = SimConfig {
            seed: 11,
            consistency,
            random_faults: Some(RandomFaults::default()),
            max_down: Some(1),
            ..processes()
        };
        let a = Simulation::new(config.clone()).unwrap().run();
        let b = Simulation::new(config).unwrap().run();
        assert!(!a.history.is_empty());
        assert_eq!(a.history, b.history, "{consistency}");
        assert_eq!(
            a.summary.deterministic_json(),
            b.summary.deterministic_json()
        );
        assert!(a.summary.crashes > 0, "{}", a.summary);
    }
}

/// Random crashes, restarts, joins, departures, pauses and 4 s partitions of whole
/// processes, with message loss: no acknowledged write lost, every run converged.
#[test]
fn a_sweep_of_process_faults_with_virtual_nodes_is_clean() {
    let base = cut_off_and_lossy(processes(), 1.0);
    let seeds = 120;
    let report = sweep_of(&base, seeds);
    assert_eq!(report.runs, seeds);
    assert!(report.faults > 3 * seeds, "{report}");
    assert!(report.crashes > seeds / 2, "{report}");
    assert_no_failed_run(&report);
    assert_eq!(report.lost_acked_writes, 0, "{report}");
    assert_eq!(report.convergence_failures, 0, "{report}");
}

/// Processes that crash for good (no restart) are removed, every position of them, and
/// the ring goes on: a run of positions of one process on the ring holds one replica of
/// each key, not all, so it is not kept as if it held the only copies (91 of 300 such
/// seeds never settled before).
#[test]
fn processes_that_crash_for_good_are_removed_whole() {
    let base = SimConfig {
        nodes: 5,
        vnodes: 4,
        random_faults: Some(RandomFaults {
            crash_rate: 2.0,
            restart_after_ns: None,
            ..RandomFaults::default()
        }),
        max_down: Some(1),
        ..processes()
    };
    let seeds = 100;
    let report = sweep_of(&base, seeds);
    assert!(report.crashes > seeds, "{report}");
    assert_no_failed_run(&report);
}

/// Chain replication and CRAQ with virtual nodes: a key's chain runs over k distinct
/// processes, and every hand-over fetches each stretch of keys from an old holder in
/// chain order. Random process faults (crashes, restarts, joins, departures, pauses,
/// 4 s partitions) with message loss: every run linearizable, nothing acknowledged lost.
#[test]
fn chains_over_virtual_nodes_stay_linearizable_under_process_faults() {
    for consistency in [Consistency::Chain, Consistency::Craq] {
        let base = SimConfig {
            consistency,
            ..cut_off_and_lossy(processes(), 1.0)
        };
        let seeds = 60;
        let report = sweep_of(&base, seeds);
        assert_eq!(report.runs, seeds);
        assert!(report.crashes > seeds / 2, "{report}");
        assert_no_failed_run(&report);
        assert_eq!(report.linearizability_violations, 0, "{report}");
        assert_eq!(report.lost_acked_writes, 0, "{report}");
    }
}

/// A chain over processes of several positions each: the crash of a whole process
/// loses no acknowledged write, and the history stays linearizable.
#[test]
fn a_chain_survives_the_crash_of_a_whole_process() {
    for consistency in [Consistency::Chain, Consistency::Craq] {
        let config = SimConfig {
            consistency,
            faults: vec![Fault {
                at_ns: 20_000_000,
                kind: FaultKind::Crash { node: 2 },
            }],
            ..processes()
        };
        let mut result = Simulation::new(config).unwrap().run();
        result.check(&Default::default()).unwrap();
        let s = &result.summary;
        assert_eq!(s.linearizable.as_deref(), Some("linearizable"), "{s}");
        assert_eq!(s.crashes, 3, "{s}");
        assert_eq!(s.ring_size, 9, "{s}");
        assert_eq!(s.invariant_violations, 0, "{s}");
        assert_eq!(s.lost_acked_writes, Some(0), "{s}");
    }
}

/// CRAQ over processes of three positions, 1% loss, 4 s partitions, seed 96 of the
/// campaign: a joining position fetched its range and was cut off; its source, still the
/// key's head, acknowledged a write whose hand-over forward the cut dropped, and gave the
/// forward up when the coordinator set out to remove the joiner. The removal was dropped
/// once the cut healed, and the joiner, now before its source in the key's chain, never
/// took the write: the head ended a version behind its tail (only the tail held an
/// acknowledged write). Forwards given up on now go again every heartbeat until
/// acknowledged or the hand-over's grace period ends.
#[test]
fn a_joiner_cut_off_after_its_fetch_gets_the_forwards_its_source_gave_up_on() {
    let config = SimConfig {
        seed: 96,
        consistency: Consistency::Craq,
        ..cut_off_and_lossy(processes(), 0.0)
    };
    let mut result = Simulation::new(config).unwrap().run();
    result.check(&Default::default()).unwrap();
    let s = &result.summary;
    // The campaign's run, as its replay command named it.
    assert!(
        s.replay.starts_with(
            "dht sim --nodes 4 --k 2 --consistency craq --routing finger --seed 96 --vnodes 3 \
             --workload requests --latency exp:1ms --drop 0.01 --dup 0.01 --timeout 200ms \
             --faults random --crash-rate 1 --restart-after 200ms --join-rate 2 --depart-rate 2 \
             --partition-rate 1 --partition-duration 4s --fault-horizon 1s --max-down 1 \
             --failure-handling --clock-drift 20 --final-reads"
        ),
        "{}",
        s.replay
    );
    assert!(s.partitions > 0, "{s}");
    assert_eq!(s.invariant_violations, 0, "{s}");
    assert_eq!(s.linearizable.as_deref(), Some("linearizable"), "{s}");
    assert_eq!(s.lost_acked_writes, Some(0), "{s}");
}
