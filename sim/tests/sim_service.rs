//! Nodes with a processing time (`SimConfig::service_ns`): a node handles one input at a
//! time, so a node with more to do than its processor allows limits throughput, as on
//! separate machines; and keys placed on one chain (`Synthetic::one_chain`) all load the
//! same replicas. The model changes timing only: runs stay linearizable and
//! deterministic.

use ringkv_core::{Consistency, Id};
use ringkv_sim::check::CheckOptions;
use ringkv_sim::workload::one_chain_keys;
use ringkv_sim::{
    node_addr, RandomFaults, SimConfig, Simulation, Summary, Synthetic, WorkloadSpec,
};

/// `clients` closed-loop clients reading and writing 50 keys on one chain of a 10-node
/// ring.
fn one_chain(consistency: Consistency, k: usize, service_ns: u64, reads: f64) -> SimConfig {
    SimConfig {
        seed: 3,
        k,
        consistency,
        clients: Some(100),
        workload: WorkloadSpec::Synthetic(Synthetic {
            ops: 4000,
            keys: 50,
            read_fraction: reads,
            one_chain: true,
            ..Synthetic::default()
        }),
        service_ns,
        warmup_ns: 11_000_000_000,
        record_history: false,
        ..SimConfig::default()
    }
}

fn run(config: SimConfig) -> Summary {
    let s = Simulation::new(config).unwrap().run().summary;
    assert_eq!(s.ops_ok, 4000, "{s}");
    assert_eq!(s.invariant_violations, 0, "{s}");
    s
}

#[test]
fn one_chain_keys_share_their_primary() {
    let ring: Vec<Id> = (0..10).map(|i| Id::of_addr(&node_addr(i))).collect();
    let keys = one_chain_keys(&ring, 50);
    assert_eq!(keys.len(), 50);
    let mut sorted = ring.clone();
    sorted.sort();
    for key in &keys {
        let id = Id::of_key(key);
        let primary = sorted.iter().find(|&&n| n >= id).unwrap_or(&sorted[0]);
        assert_eq!(*primary, ring[0], "{key}");
    }
}

#[test]
fn a_busy_node_limits_throughput() {
    // k = 1 on one chain: one node handles every request, 100 µs each, so 4,000 take at
    // least 0.4 virtual seconds however many clients wait; without a processing time
    // they take only message delays.
    let busy = run(one_chain(Consistency::Chain, 1, 100_000, 0.9));
    assert!(busy.virtual_seconds >= 0.4, "{busy}");
    assert!(busy.throughput_ops_per_virtual_second <= 10_000.0, "{busy}");
    let free = run(one_chain(Consistency::Chain, 1, 0, 0.9));
    assert!(
        free.throughput_ops_per_virtual_second > 2.0 * busy.throughput_ops_per_virtual_second,
        "{free}\n{busy}"
    );
}

#[test]
fn craq_spreads_one_chains_reads_over_its_replicas() {
    // Chain replication's reads all go to the chain's one tail, whatever k; CRAQ's clean
    // reads are answered by every replica (the CRAQ paper's setting: one chain).
    let chain = run(one_chain(Consistency::Chain, 5, 100_000, 1.0));
    let craq = run(one_chain(Consistency::Craq, 5, 100_000, 1.0));
    let (c, q) = (
        chain.throughput_ops_per_virtual_second,
        craq.throughput_ops_per_virtual_second,
    );
    assert!(c <= 10_000.0, "{chain}");
    assert!(q > 2.5 * c, "craq {q} against chain {c}");
}

/// `one_chain` with the clients at the chain's own nodes, as the CRAQ paper's are.
fn on_chain(consistency: Consistency, k: usize, reads: f64) -> SimConfig {
    let mut config = one_chain(consistency, k, 100_000, reads);
    if let WorkloadSpec::Synthetic(s) = &mut config.workload {
        s.clients_on_chain = true;
    }
    // 40 clients a node of a 5-node chain: enough to keep it busy.
    config.clients = Some(200);
    config
}

#[test]
fn clients_on_the_chain_send_straight_to_its_nodes() {
    // k = 1: the chain is the bootstrap alone, so no request takes a lookup hop.
    let s = run(on_chain(Consistency::Chain, 1, 0.5));
    assert_eq!(s.lookup_hops_mean, 0.0, "{s}");
    assert!(
        s.replay.contains("--one-chain --clients-on-chain"),
        "{}",
        s.replay
    );
    let spread = run(one_chain(Consistency::Chain, 1, 100_000, 0.5));
    assert!(spread.lookup_hops_mean > 0.5, "{spread}");
}

#[test]
fn craq_keeps_its_read_advantage_with_a_few_writes() {
    // 5% writes leave keys dirty for a while after each: a read of a copy a write
    // dirtied waits for the tail's clean notice rather than asking the tail, which
    // would make the tail the chain's bottleneck again. In this short run: 2.5x with
    // waiting, 1.9x without.
    let chain = run(on_chain(Consistency::Chain, 5, 0.95));
    let craq = run(on_chain(Consistency::Craq, 5, 0.95));
    let (c, q) = (
        chain.throughput_ops_per_virtual_second,
        craq.throughput_ops_per_virtual_second,
    );
    assert!(q > 2.3 * c, "craq {q} against chain {c}");
}

#[test]
fn a_processing_time_keeps_runs_deterministic_and_linearizable() {
    for consistency in [Consistency::Chain, Consistency::Craq] {
        let config = SimConfig {
            seed: 11,
            consistency,
            workload: WorkloadSpec::Synthetic(Synthetic {
                ops: 600,
                keys: 8,
                read_fraction: 0.6,
                ..Synthetic::default()
            }),
            random_faults: Some(RandomFaults {
                partition_rate: 1.0,
                ..RandomFaults::default()
            }),
            max_down: Some(2),
            failure_handling: true,
            final_reads: true,
            service_ns: 50_000,
            ..SimConfig::default()
        };
        let first = Simulation::new(config.clone()).unwrap().run();
        let second = Simulation::new(config.clone()).unwrap().run();
        assert_eq!(first.history, second.history, "{consistency}");
        let mut checked = first;
        checked.check(&CheckOptions::default()).unwrap();
        let s = &checked.summary;
        assert_eq!(s.linearizability_violations, Some(0), "{s}");
        assert_eq!(s.lost_acked_writes, Some(0), "{s}");
        assert!(s.replay.contains("--service 50us"), "{}", s.replay);
    }
}
