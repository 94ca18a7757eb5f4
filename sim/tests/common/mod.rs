//! Configurations shared by the simulation tests.

use ringkv_sim::{NetConfig, RandomFaults, SimConfig};

/// `base` with the campaigns' harshest random faults: process faults (pauses at
/// `pause_rate`), 4 s partitions, 1% message loss and duplication, at most one node (or
/// process) down at once, a 200 ms client timeout and the nodes' clock drift.
pub fn cut_off_and_lossy(base: SimConfig, pause_rate: f64) -> SimConfig {
    SimConfig {
        random_faults: Some(RandomFaults {
            partition_rate: 1.0,
            partition_ns: 4_000_000_000,
            pause_rate,
            ..RandomFaults::default()
        }),
        max_down: Some(1),
        net: NetConfig {
            drop_probability: 0.01,
            dup_probability: 0.01,
            ..NetConfig::default()
        },
        timeout_ns: 200_000_000,
        clock_drift_per_mille: ringkv_core::config::CLOCK_DRIFT_PER_MILLE,
        ..base
    }
}
