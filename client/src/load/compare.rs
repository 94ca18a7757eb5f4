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
    /// The relay's run (`dht bench --relay`): the baseline's listeners relaying each
    /// write through the key's `k` listeners and each read to its last, over sockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<LoadReport>,
    /// The relay over the baseline: the least `k` copies over sockets cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_ratios: Option<Ratios>,
    /// ringkv over the relay: what ringkv's protocol costs beyond moving the copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringkv_over_relay: Option<Ratios>,
}

/// `a` over `b`, the throughput as a fraction and latencies as multiples. A ratio whose
/// denominator is 0 is 0.
fn ratios(a: &LoadReport, b: &LoadReport) -> Ratios {
    let over = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ratios {
        throughput: over(a.ops_per_s, b.ops_per_s),
        p50: over(a.latency.p50_us as f64, b.latency.p50_us as f64),
        p99: over(a.latency.p99_us as f64, b.latency.p99_us as f64),
    }
}

impl Comparison {
    /// Compare `ringkv` with `baseline`. A ratio whose denominator is 0 is 0.
    pub fn new(ringkv: LoadReport, baseline: LoadReport) -> Comparison {
        Comparison {
            ratios: ratios(&ringkv, &baseline),
            ringkv,
            baseline,
            relay: None,
            relay_ratios: None,
            ringkv_over_relay: None,
        }
    }

    /// Add the relay's run of the same load.
    pub fn with_relay(mut self, relay: LoadReport) -> Comparison {
        self.relay_ratios = Some(ratios(&relay, &self.baseline));
        self.ringkv_over_relay = Some(ratios(&self.ringkv, &relay));
        self.relay = Some(relay);
        self
    }
}

/// A line of the printed comparison: its name, a run's figure, and the ratio of it.
type Row = (&'static str, fn(&LoadReport) -> String, fn(&Ratios) -> f64);

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ringkv:\n{}", self.ringkv)?;
        writeln!(
            f,
            "baseline (one shared map, same HTTP stack):\n{}",
            self.baseline
        )?;
        if let Some(relay) = &self.relay {
            writeln!(
                f,
                "relay (the baseline's listeners passing each write through k of them):\n{relay}"
            )?;
        }
        let (r, b) = (&self.ringkv, &self.baseline);
        let rows: [Row; 3] = [
            ("ops/s", |l| format!("{:.0}", l.ops_per_s), |r| r.throughput),
            (
                "p50 ms",
                |l| format!("{:.2}", l.latency.p50_us as f64 / 1e3),
                |r| r.p50,
            ),
            (
                "p99 ms",
                |l| format!("{:.2}", l.latency.p99_us as f64 / 1e3),
                |r| r.p99,
            ),
        ];
        write!(
            f,
            "{:<10} {:>12} {:>12} {:>16}",
            "", "ringkv", "baseline", "ringkv/baseline"
        )?;
        if self.relay.is_some() {
            write!(
                f,
                " {:>12} {:>15} {:>13}",
                "relay", "relay/baseline", "ringkv/relay"
            )?;
        }
        for (name, figure, ratio) in rows {
            write!(
                f,
                "\n{:<10} {:>12} {:>12} {:>16.2}",
                name,
                figure(r),
                figure(b),
                ratio(&self.ratios)
            )?;
            if let (Some(relay), Some(rb), Some(rr)) =
                (&self.relay, &self.relay_ratios, &self.ringkv_over_relay)
            {
                write!(
                    f,
                    " {:>12} {:>15.2} {:>13.2}",
                    figure(relay),
                    ratio(rb),
                    ratio(rr)
                )?;
            }
        }
        Ok(())
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
        let json = serde_json::to_value(&c).unwrap();
        assert!(
            json.get("relay").is_none(),
            "no relay fields without a relay run"
        );
    }

    #[test]
    fn a_relay_run_is_compared_with_both() {
        let c = Comparison::new(
            report(5_000.0, 4_000, 20_000),
            report(20_000.0, 1_000, 4_000),
        )
        .with_relay(report(10_000.0, 2_000, 8_000));
        let relay_over_baseline = Ratios {
            throughput: 0.5,
            p50: 2.0,
            p99: 2.0,
        };
        let ringkv_over_relay = Ratios {
            throughput: 0.5,
            p50: 2.0,
            p99: 2.5,
        };
        assert_eq!(c.relay_ratios, Some(relay_over_baseline));
        assert_eq!(c.ringkv_over_relay, Some(ringkv_over_relay));
        assert_eq!(c.ratios.throughput, 0.25);
        let text = c.to_string();
        let ops = text.lines().find(|l| l.starts_with("ops/s")).unwrap();
        assert_eq!(
            ops.split_whitespace().collect::<Vec<_>>(),
            ["ops/s", "5000", "20000", "0.25", "10000", "0.50", "0.50"],
            "{text}"
        );
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["relay_ratios"]["throughput"], 0.5);
        assert_eq!(json["ringkv_over_relay"]["p99"], 2.5);
    }
}
