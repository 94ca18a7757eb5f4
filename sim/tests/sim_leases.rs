//! The fault model with leases (`docs/protocol.md`): partitions longer than the failure
//! timeout, process pauses longer than it, and clock rates that differ by up to the
//! declared bound, on top of the random crashes, restarts, joins and departures of the
//! declared model. Chain replication and CRAQ must stay linearizable and lose no
//! acknowledged write; every run must converge once the faults are over.
//!
//! A bootstrap restarted while cut off from every member is restarted as its operator
//! would, seeing the ring's other nodes up: `dht bootstrap --rejoin`, which waits for
//! its ring rather than found a new one (the simulator sets it whenever another member
//! is up; `sim/src/sim/hosts.rs`). Without it a memory-only bootstrap cannot tell a
//! restart from a first start: the README names that gap.
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
use ringkv_sim::sweep::{sweep, SweepOptions, SweepReport};
use ringkv_sim::{RandomFaults, SimConfig};

/// Seeds per CI sweep: a few seconds each in a debug build on 2 cores.
const CI_SEEDS: u64 = 120;

const SECOND: u64 = 1_000_000_000;

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

/// Safety holds on every run: no linearizability violation and no lost acknowledged
/// write. Liveness is checked too, more loosely: a run of these extreme schedules (a 4 s
/// cut during churn, with the leader crashing) may end with the ring not yet settled
/// when the run stops; such runs must stay under 1% (none in the last campaigns,
/// `results/sweep.md`). Returns the seeds that failed on liveness.
fn assert_safe(report: &SweepReport, seeds: u64) -> Vec<u64> {
    println!("{report}");
    assert_eq!(report.runs, seeds);
    assert!(report.faults > 3 * seeds, "{report}");
    let liveness = assert_no_unsafe_run(report);
    assert!(
        (liveness.len() as u64) * 100 <= seeds,
        "liveness failures on {liveness:?}\n{report}"
    );
    liveness
}

/// No run of `report` broke linearizability or lost an acknowledged write; the seeds of
/// the runs that failed otherwise (liveness).
fn assert_no_unsafe_run(report: &SweepReport) -> Vec<u64> {
    let mut liveness = Vec::new();
    for run in &report.failures {
        println!("seed {} {:?}", run.seed, run.failures);
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
    liveness
}

/// The options of a CI sweep over `seeds` seeds, without shrinking.
fn ci_options(seeds: u64) -> SweepOptions {
    SweepOptions {
        seeds,
        shrink: false,
        ..SweepOptions::default()
    }
}

/// Sweep `config` over the CI seeds and check safety only (see `assert_no_unsafe_run`).
fn sweep_for_safety(config: &SimConfig) {
    let report = sweep(config, &ci_options(CI_SEEDS));
    println!("{report}");
    assert_eq!(report.runs, CI_SEEDS);
    assert_no_unsafe_run(&report);
}

/// Sweep `config` over the CI seeds and check it.
fn sweep_and_check(config: SimConfig) {
    let options = ci_options(CI_SEEDS);
    let report = sweep(&config, &options);
    assert_safe(&report, CI_SEEDS);
}

/// Small rings and long chains, where the ring is often left with at most k members and
/// every chain runs round the whole ring (where most of the hand-over bugs of
/// 2026-12-04 were): 4 nodes with disks under chain replication, and k = 5 (up to 4 down)
/// under CRAQ, 4 s partitions. Safety only: a coordinator group of three seats loses its
/// majority for good when two of them restart before it has replaced the first (the
/// README's fault model), so on 4 nodes about 6% of the runs end unsettled.
#[test]
fn small_rings_and_long_chains_stay_safe_across_partitions() {
    let small = SimConfig {
        nodes: 4,
        disks: true,
        ..cut_off_model(Consistency::Chain, 1.0, 0.0)
    };
    let long = SimConfig {
        k: 5,
        max_down: Some(4),
        ..cut_off_model(Consistency::Craq, 1.0, 0.0)
    };
    for config in [small, long] {
        sweep_for_safety(&config);
    }
}

/// One-way link failures (`--one-way`): every partition cuts one direction only, half
/// of them what their nodes send, half what they are sent. On 10 nodes (chain) as
/// safe and as live as two-way partitions; on 4 nodes with disks (CRAQ), where the
/// one-way campaign of 2026-12-04 found most of its causes of violations, safety only
/// (the coordinator-majority gap leaves some runs unsettled, as with two-way ones).
#[test]
fn partitions_that_cut_one_way_only_stay_safe() {
    let one_way = |config: SimConfig| SimConfig {
        random_faults: config.random_faults.map(|r| RandomFaults {
            one_way_fraction: 1.0,
            ..r
        }),
        ..config
    };
    let options = ci_options(CI_SEEDS);
    let ten = one_way(cut_off_model(Consistency::Chain, 1.0, 0.0));
    assert_safe(&sweep(&ten, &options), CI_SEEDS);
    let small = one_way(SimConfig {
        nodes: 4,
        disks: true,
        ..cut_off_model(Consistency::Craq, 1.0, 0.0)
    });
    sweep_for_safety(&small);
}

/// The coordinator leader's own links cut one way for 4 s, on top of the random
/// crashes, joins and departures: all it sends lost (the seats elect another leader
/// while it still hears them, and it must stop granting leases on its own), or all it
/// is sent lost (it hears nobody while the seats still hear it). Safe and settled on
/// every run (2,000 seeds of each on 2026-12-04, chain and CRAQ: no failure).
#[test]
fn a_leader_cut_off_one_way_grants_no_lease_past_its_successor() {
    for (cut, consistency) in [
        ("partition-out", Consistency::Chain),
        ("partition-in", Consistency::Chain),
        ("partition-out", Consistency::Craq),
    ] {
        let config = SimConfig {
            faults: vec![format!("{cut}:0@300ms..4300ms").parse().unwrap()],
            ..cut_off_model(consistency, 0.0, 0.0)
        };
        let options = ci_options(CI_SEEDS / 2);
        assert_safe(&sweep(&config, &options), CI_SEEDS / 2);
    }
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

/// The campaigns of `results/sweep.md` (10,000 seeds each, chain then CRAQ), in a
/// release build:
/// `cargo test --release -p ringkv-sim --test sim_leases -- --ignored --nocapture`.
/// Prints every failing seed; fails on any unsafe run, or on liveness failures in more
/// than 1% of the runs.
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
        let liveness = assert_safe(&report, options.seeds);
        println!("liveness failures: {liveness:?}");
    }
}

/// Eventual consistency under the same partitions: a lost write is a failure unless the
/// model allows it (`ringkv_sim::final_reads::EventualLoss`). In seed 5292 every node
/// that held an acknowledged write crashed (memory only) before the heal: it is counted
/// apart, not as a failure (seed 2641 did this until the core of 2026-12-03 evening
/// changed its timing, seed 5032 until an eventual joiner fetched from all its
/// successors, seed 924 until departing nodes hinted every entry, 2026-12-04 night, seed
/// 2843 until a primary's resends of replica writes backed off, seed 2860 until hand-over
/// targets said which keys they hold, 2026-12-05; seeds 0-2999 now have none, seeds
/// 3000-8999 eight, 5292 among them since before that change). In seed 151 two writes of
/// one key on the two sides came 25 ms apart, within the clock skew at 2.6 s (rates 4%
/// apart at most), and the earlier one won (seed 2048 is another such).
#[test]
fn eventual_losses_the_model_allows_are_told_apart() {
    for (seed, in_crashes, within_skew) in [(5292, 1, 0), (151, 0, 1)] {
        let config = SimConfig {
            seed,
            final_reads: true,
            record_history: true,
            ..cut_off_model(Consistency::Eventual, 1.0, 0.0)
        };
        let result = ringkv_sim::Simulation::new(config).unwrap().run();
        let s = &result.summary;
        assert_eq!(
            s.lost_acked_writes,
            Some(0),
            "seed {seed}: {:?}",
            s.lost_writes
        );
        assert_eq!(s.lost_in_crashes, Some(in_crashes), "seed {seed}");
        assert_eq!(s.lost_within_skew, Some(within_skew), "seed {seed}");
    }
}
