//! What a load run measured, and how `dht bench` prints it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::Mix;
use crate::router::ClientRouting;

/// Latency summary in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: u64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples` (all zero without any).
    pub fn of(mut samples: Vec<u64>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        Latency {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: *samples.last().unwrap_or(&0),
            mean_us: samples.iter().sum::<u64>() / samples.len() as u64,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// The mix.
    pub mix: Mix,
    /// How requests found their node.
    pub routing: ClientRouting,
    /// Times a token-aware client learned the ring again (0 with random routing).
    pub relearns: u64,
    /// Nodes the clients were spread over.
    pub nodes: Vec<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// Timed operations issued.
    pub ops: u64,
    /// Operations that succeeded (a read of an absent key included).
    pub ok: u64,
    /// Reads and deletes that found no value (counted in `ok`).
    pub not_found: u64,
    /// Failed operations by cause (`"<status> <code>"` or `transport`).
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the timed phase, seconds.
    pub elapsed_s: f64,
    /// Timed operations per second.
    pub ops_per_s: f64,
    /// Latency of every timed operation, successful or not.
    pub latency: Latency,
    /// Mean routing hops of the successful operations that report them.
    pub mean_hops: f64,
    /// Seconds spent preloading keys (`query` mix).
    pub preload_s: f64,
    /// History events written.
    pub history_events: u64,
}

impl LoadReport {
    /// Failed operations.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ops of '{}' by {} clients over {} nodes ({} routing) in {:.2} s: {:.0} ops/s",
            self.ops,
            self.mix,
            self.clients,
            self.nodes.len(),
            self.routing,
            self.elapsed_s,
            self.ops_per_s
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {:.2} ms",
            l.p50_us as f64 / 1e3,
            l.p90_us as f64 / 1e3,
            l.p99_us as f64 / 1e3,
            l.max_us as f64 / 1e3,
            l.mean_us as f64 / 1e3
        )?;
        write!(
            f,
            "ok: {} (not found: {}), mean hops {:.2}, errors: {}",
            self.ok,
            self.not_found,
            self.mean_hops,
            self.error_count()
        )?;
        for (cause, n) in &self.errors {
            write!(f, "\n  {cause}: {n}")?;
        }
        if self.preload_s > 0.0 {
            write!(f, "\npreload: {:.2} s", self.preload_s)?;
        }
        if self.relearns > 0 {
            write!(f, "\nring learned again: {} times", self.relearns)?;
        }
        if self.history_events > 0 {
            write!(f, "\nhistory: {} events", self.history_events)?;
        }
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::of((1..=100).collect());
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (50, 99, 100));
        assert_eq!(Latency::of(vec![]).p50_us, 0);
    }
}
