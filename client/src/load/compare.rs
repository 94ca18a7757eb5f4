//! ringkv next to a baseline that ran the same load (`dht bench --baseline`): the ratios
//! say what the ring costs, and stay meaningful on a shared machine where absolute
//! numbers move from run to run.

use std::fmt;

use serde::Serialize;

use super::LoadReport;

/// ringkv's figures as multiples of the baseline's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ratios {
    /// ringkv's throughput as a fraction of the baseline's (1 = as fast).
    pub throughput: f64,
    /// ringkv's median latency over the baseline's (1 = as fast; 3 = three times slower).
    pub p50: f64,
    /// ringkv's 99th-percentile latency over the baseline's.
    pub p99: f64,
}

/// Two runs of one load, against ringkv and against the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The ring's run.
    pub ringkv: LoadReport,
    /// The baseline's run.
    pub baseline: LoadReport,
    /// ringkv over the baseline.
    pub ratios: Ratios,
}

impl Comparison {
    /// Compare `ringkv` with `baseline`. A ratio whose denominator is 0 is 0.
    pub fn new(ringkv: LoadReport, baseline: LoadReport) -> Comparison {
        let over = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let ratios = Ratios {
            throughput: over(ringkv.ops_per_s, baseline.ops_per_s),
            p50: over(ringkv.latency.p50_us as f64, baseline.latency.p50_us as f64),
            p99: over(ringkv.latency.p99_us as f64, baseline.latency.p99_us as f64),
        };
        Comparison {
            ringkv,
            baseline,
            ratios,
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ringkv:\n{}", self.ringkv)?;
        writeln!(
            f,
            "baseline (one shared map, same HTTP stack):\n{}",
            self.baseline
        )?;
        let (r, b) = (&self.ringkv, &self.baseline);
        let ms = |us: u64| format!("{:.2}", us as f64 / 1e3);
        writeln!(
            f,
            "{:<10} {:>12} {:>12} {:>16}",
            "", "ringkv", "baseline", "ringkv/baseline"
        )?;
        writeln!(
            f,
            "{:<10} {:>12.0} {:>12.0} {:>16.2}",
            "ops/s", r.ops_per_s, b.ops_per_s, self.ratios.throughput
        )?;
        writeln!(
            f,
            "{:<10} {:>12} {:>12} {:>16.2}",
            "p50 ms",
            ms(r.latency.p50_us),
            ms(b.latency.p50_us),
            self.ratios.p50
        )?;
        write!(
            f,
            "{:<10} {:>12} {:>12} {:>16.2}",
            "p99 ms",
            ms(r.latency.p99_us),
            ms(b.latency.p99_us),
            self.ratios.p99
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Latency, Mix};
    use crate::router::ClientRouting;

    fn report(ops_per_s: f64, p50_us: u64, p99_us: u64) -> LoadReport {
        LoadReport {
            mix: Mix::Insert,
            routing: ClientRouting::Token,
            relearns: 0,
            nodes: vec!["127.0.0.1:1".into()],
            clients: 1,
            ops: 10,
            ok: 10,
            not_found: 0,
            errors: Default::default(),
            elapsed_s: 1.0,
            ops_per_s,
            latency: Latency {
                p50_us,
                p99_us,
                ..Latency::default()
            },
            mean_hops: 0.0,
            preload_s: 0.0,
            history_events: 0,
        }
    }

    #[test]
    fn ratios_are_ringkv_over_the_baseline() {
        let c = Comparison::new(
            report(5_000.0, 4_000, 20_000),
            report(20_000.0, 1_000, 4_000),
        );
        assert_eq!(
            c.ratios,
            Ratios {
                throughput: 0.25,
                p50: 4.0,
                p99: 5.0
            }
        );
        let text = c.to_string();
        assert!(text.contains("ringkv/baseline"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("ops/s") && l.ends_with("0.25")),
            "{text}"
        );
        let idle = Comparison::new(report(1.0, 1, 1), report(0.0, 0, 0));
        assert_eq!(idle.ratios.throughput, 0.0);
    }
}
