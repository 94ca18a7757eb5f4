//! Faults: total loss, crashes, restarts, churn, partitions and random schedules never
//! stop the simulator, and every operation is accounted for.

use ringkv_core::Consistency;
use ringkv_sim::{
    Fault, NetConfig, PartitionMode, RandomFaults, SimConfig, Simulation, Summary, Synthetic,
    WorkloadSpec,
};

fn accounted(s: &Summary, total: u64) {
    assert_eq!(
        s.ops_ok + s.ops_info + s.ops_fail + s.ops_not_issued,
        total,
        "{s}"
    );
    assert!(s.quiescent, "{s}");
}

fn faults(specs: &[&str]) -> Vec<Fault> {
    specs.iter().map(|f| f.parse().unwrap()).collect()
}

/// With every message lost, only what a client's own node serves alone completes: a chain
/// read that enters at its key's tail (answered there, `hops` 0). Every write, and every
/// read that needs another node, ends `info`.
#[test]
fn total_loss_makes_every_operation_that_needs_the_network_info() {
    let config = SimConfig {
        nodes: 5,
        net: NetConfig {
            drop_probability: 1.0,
            ..NetConfig::default()
        },
        timeout_ns: 50_000_000,
        ..SimConfig::default()
    };
    let result = Simulation::new(config).unwrap().run();
    let s = &result.summary;
    accounted(s, 500);
    assert_eq!(s.ops_fail, 0, "{s}");
    assert!(s.ops_info > 0 && s.messages_dropped > 0, "{s}");
    let text = String::from_utf8(result.history.clone()).expect("UTF-8");
    let done: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a history line"))
        .filter(|e: &serde_json::Value| e["type"] == "ok")
        .collect();
    assert_eq!(done.len() as u64, s.ops_ok);
    for e in &done {
        assert_eq!((&e["f"], &e["hops"]), (&"read".into(), &0.into()), "{e}");
    }
}

#[test]
fn crashing_a_member_does_not_stop_the_simulator() {
    for consistency in [Consistency::Chain, Consistency::Eventual, Consistency::Craq] {
        let config = SimConfig {
            consistency,
            faults: faults(&["crash:3@5ms", "crash:7@20ms"]),
            timeout_ns: 100_000_000,
            ..SimConfig::default()
        };
        let s = Simulation::new(config).unwrap().run().summary;
        accounted(&s, 500);
        assert_eq!(s.crashes, 2);
        assert!(s.ops_ok > 0, "{s}");
    }
}

#[test]
fn restart_comes_back_empty_and_asks_to_rejoin() {
    let config = SimConfig {
        faults: faults(&["crash:4@5ms", "restart:4@50ms", "restart:4@60ms"]),
        timeout_ns: 100_000_000,
        ..SimConfig::default()
    };
    let s = Simulation::new(config).unwrap().run().summary;
    accounted(&s, 500);
    assert_eq!((s.crashes, s.restarts), (1, 1));
    assert_eq!(s.faults_skipped, 1, "restarting a running node is skipped");
    // Either the core takes the node back, or it refuses (no failure detection): both
    // are reported, neither is a crash of the simulator.
    assert_eq!(
        s.joins + s.rejoins_refused + s.membership_failures,
        1,
        "{s}"
    );
    println!("{s}");
}

#[test]
fn churn_on_a_clean_network_keeps_every_invariant() {
    for consistency in [Consistency::Chain, Consistency::Eventual, Consistency::Craq] {
        let config = SimConfig {
            consistency,
            faults: faults(&[
                "join@1ms",
                "depart:3@2ms",
                "join@10ms",
                "depart:5@30ms",
                "join@40ms",
            ]),
            workload: WorkloadSpec::Synthetic(Synthetic {
                ops: 2000,
                keys: 200,
                ..Synthetic::default()
            }),
            ..SimConfig::default()
        };
        let s = Simulation::new(config).unwrap().run().summary;
        accounted(&s, 2000);
        assert_eq!((s.joins, s.departs), (3, 2), "{s}");
        assert_eq!(s.ring_size, 11);
        assert_eq!(s.invariant_violations, 0, "{s}");
    }
}

fn partitioned(mode: PartitionMode) -> SimConfig {
    SimConfig {
        seed: 3,
        consistency: Consistency::Eventual,
        net: NetConfig {
            partition_mode: mode,
            ..NetConfig::default()
        },
        faults: faults(&["partition:1-4@2ms..80ms"]),
        workload: WorkloadSpec::Synthetic(Synthetic {
            ops: 1000,
            keys: 20,
            read_fraction: 0.3,
            ..Synthetic::default()
        }),
        timeout_ns: 300_000_000,
        ..SimConfig::default()
    }
}

#[test]
fn a_healed_partition_lets_eventual_replicas_converge() {
    let s = Simulation::new(partitioned(PartitionMode::Hold))
        .unwrap()
        .run()
        .summary;
    accounted(&s, 1000);
    assert_eq!(s.partitions, 1);
    assert!(s.messages_held > 0, "{s}");
    assert_eq!(s.invariant_violations, 0, "{s}");
}

#[test]
fn a_dropping_partition_is_reported_not_fatal() {
    let s = Simulation::new(partitioned(PartitionMode::Drop))
        .unwrap()
        .run()
        .summary;
    accounted(&s, 1000);
    assert!(s.messages_partitioned > 0, "{s}");
    assert!(s.ops_info > 0, "{s}");
}

#[test]
fn random_faults_never_panic() {
    let mut crashes = 0;
    for seed in 0..12 {
        for consistency in [Consistency::Chain, Consistency::Eventual, Consistency::Craq] {
            let config = SimConfig {
                seed,
                consistency,
                net: NetConfig {
                    latency: "exp:2ms".parse().unwrap(),
                    drop_probability: 0.01,
                    dup_probability: 0.02,
                    ..NetConfig::default()
                },
                random_faults: Some(RandomFaults {
                    crash_rate: 10.0,
                    join_rate: 10.0,
                    depart_rate: 10.0,
                    partition_rate: 10.0,
                    partition_ns: 20_000_000,
                    horizon_ns: 200_000_000,
                    ..RandomFaults::default()
                }),
                timeout_ns: 50_000_000,
                ..SimConfig::default()
            };
            let s = Simulation::new(config).unwrap().run().summary;
            accounted(&s, 500);
            crashes += s.crashes;
            if seed == 0 {
                println!("{s}");
            }
        }
    }
    assert!(crashes > 10);
}
