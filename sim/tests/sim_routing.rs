//! Chord's promise: with fingers a lookup takes O(log N) hops; with successor pointers
//! only it takes O(N).

use ringkv_core::Routing;
use ringkv_sim::{SimConfig, Simulation, Synthetic, WorkloadSpec};

fn hops(nodes: usize, routing: Routing) -> f64 {
    let config = SimConfig {
        seed: 5,
        nodes,
        k: 1,
        routing,
        clients: Some(nodes.min(64)),
        workload: WorkloadSpec::Synthetic(Synthetic {
            ops: 2000,
            keys: 100_000,
            read_fraction: 1.0,
            ..Synthetic::default()
        }),
        record_history: false,
        ..SimConfig::default()
    };
    let s = Simulation::new(config).unwrap().run().summary;
    assert_eq!(s.ops_ok, 2000, "{s}");
    assert_eq!(s.invariant_violations, 0, "{s}");
    s.lookup_hops_mean
}

#[test]
fn finger_hops_grow_logarithmically() {
    let sizes = [16usize, 128, 1024];
    let finger: Vec<f64> = sizes.iter().map(|&n| hops(n, Routing::Finger)).collect();
    let successor: Vec<f64> = sizes[..2]
        .iter()
        .map(|&n| hops(n, Routing::Successor))
        .collect();
    println!("N {sizes:?}: finger {finger:?}, successor {successor:?}");
    for (i, &n) in sizes.iter().enumerate() {
        // Chord: about (1/2) log2 N hops on average.
        let log = (n as f64).log2();
        assert!(finger[i] <= 0.5 * log + 1.0, "N={n}: {} hops", finger[i]);
        assert!(finger[i] >= 0.5 * log - 1.5, "N={n}: {} hops", finger[i]);
    }
    // Each 8x growth adds about 1.5 hops, not 8x the hops.
    assert!(finger[2] - finger[1] < 2.5 && finger[1] - finger[0] < 2.5);
    // Successor-only routing is linear: about N/2 hops.
    assert!(successor[1] > 4.0 * successor[0], "{successor:?}");
    assert!((successor[1] - 64.0).abs() < 16.0, "{successor:?}");
}
