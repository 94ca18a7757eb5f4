//! On a clean network every invariant holds at quiescence: one ordered ring, every key
//! on exactly min(k, N) replicas, replicas in agreement.

use ringkv_core::{Consistency, Routing};
use ringkv_sim::{NetConfig, SimConfig, Simulation, Synthetic, WorkloadSpec};

#[test]
fn clean_runs_keep_every_invariant() {
    let shapes = [
        (1, 3),
        (2, 3),
        (3, 3),
        (4, 3),
        (10, 1),
        (10, 5),
        (30, 3),
        (7, 7),
    ];
    for (nodes, k) in shapes {
        for consistency in [Consistency::Chain, Consistency::Eventual, Consistency::Craq] {
            for routing in [Routing::Finger, Routing::Successor] {
                let config = SimConfig {
                    seed: nodes as u64 * 31 + k as u64,
                    nodes,
                    k,
                    consistency,
                    routing,
                    net: NetConfig {
                        latency: "uniform:0ms..3ms".parse().unwrap(),
                        ..NetConfig::default()
                    },
                    workload: WorkloadSpec::Synthetic(Synthetic {
                        ops: 600,
                        keys: 50,
                        read_fraction: 0.4,
                        delete_fraction: 0.2,
                        ..Synthetic::default()
                    }),
                    ..SimConfig::default()
                };
                let s = Simulation::new(config).unwrap().run().summary;
                let label = format!("N={nodes} k={k} {consistency} {routing}");
                assert_eq!(s.ops_ok, 600, "{label}: {s}");
                assert_eq!(s.ring_size, nodes, "{label}");
                assert_eq!(s.invariant_violations, 0, "{label}: {s}");
                assert_eq!(s.stale_finger_entries, 0, "{label}");
            }
        }
    }
}
