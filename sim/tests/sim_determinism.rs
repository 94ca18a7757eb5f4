//! Same seed + same configuration ⇒ byte-identical history and summary (wall-clock
//! fields aside); a different seed ⇒ a different run.

use ringkv_core::Consistency;
use ringkv_sim::{NetConfig, RandomFaults, SimConfig, SimResult, Simulation};

fn noisy(seed: u64, consistency: Consistency) -> SimConfig {
    SimConfig {
        seed,
        nodes: 8,
        consistency,
        net: NetConfig {
            latency: "lognormal:1ms,0.8".parse().unwrap(),
            drop_probability: 0.02,
            dup_probability: 0.05,
            ..NetConfig::default()
        },
        random_faults: Some(RandomFaults {
            horizon_ns: 300_000_000,
            ..RandomFaults::default()
        }),
        timeout_ns: 100_000_000,
        ..SimConfig::default()
    }
}

fn run(config: SimConfig) -> SimResult {
    Simulation::new(config).unwrap().run()
}

#[test]
fn same_seed_same_bytes() {
    for consistency in [Consistency::Chain, Consistency::Eventual, Consistency::Craq] {
        let a = run(noisy(42, consistency));
        let b = run(noisy(42, consistency));
        assert!(!a.history.is_empty());
        assert!(a.history == b.history, "histories differ for {consistency}");
        assert_eq!(
            a.summary.deterministic_json(),
            b.summary.deterministic_json()
        );
        assert!(a.summary.events > 1000);
    }
}

#[test]
fn different_seeds_differ() {
    let a = run(noisy(1, Consistency::Chain));
    let b = run(noisy(2, Consistency::Chain));
    assert_ne!(a.history, b.history);
}

#[test]
fn history_is_ordered_and_well_formed() {
    let r = run(noisy(7, Consistency::Eventual));
    let history = ringkv_sim::check::History::parse(r.history.as_slice()).expect("parses");
    assert_eq!(
        history.ops.len() as u64,
        r.summary.ops_ok + r.summary.ops_info + r.summary.ops_fail
    );
    let mut last = 0;
    for line in r.history.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        let t = v["time"].as_u64().unwrap();
        assert!(t >= last, "time goes backwards");
        last = t;
    }
}
