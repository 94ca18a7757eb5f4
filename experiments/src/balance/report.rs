//! The balance experiment's results across rings: per (N, K, R) the mean and range of
//! each statistic, the summary table, the plot and the comparison with the paper.

use std::path::Path;

use crate::plot::{self, Axis, Chart, LegendAt, Marker, Point, Series};
use crate::runner::{fixed, Table};
use crate::Result;

use super::paper::{paper_value, Stat, PAPER};
use super::{Row, Setup};

/// How far (relative) the measurement may be from a value the paper states before the
/// run says so: the acceptance bound of the experiment.
pub const PAPER_TOLERANCE: f64 = 0.25;

/// Mean, minimum and maximum of one statistic over rings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// Mean over rings.
    pub mean: f64,
    /// Smallest ring's value.
    pub min: f64,
    /// Largest ring's value.
    pub max: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Spread {
        let (mut sum, mut n) = (0.0, 0usize);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            sum += v;
            n += 1;
            min = min.min(v);
            max = max.max(v);
        }
        Spread {
            mean: if n == 0 { f64::NAN } else { sum / n as f64 },
            min,
            max,
        }
    }

    fn cell(&self) -> String {
        format!(
            "{} ({}–{})",
            fixed(self.mean, 2),
            fixed(self.min, 2),
            fixed(self.max, 2)
        )
    }

    fn point(&self, x: f64) -> Point {
        Point::spread(x, self.min, self.mean, self.max)
    }
}

/// One (N, K, R) over all its rings; statistics are ÷ the mean keys per node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aggregate {
    /// N and K.
    pub setup: Setup,
    /// R.
    pub vnodes: u32,
    /// The most loaded node.
    pub max: Spread,
    /// 99th percentile.
    pub p99: Spread,
    /// 1st percentile.
    pub p1: Spread,
    /// Median.
    pub median: Spread,
    /// Nodes with no key (a count, not ÷ the mean).
    pub empty: Spread,
}

impl Aggregate {
    fn stat(&self, stat: Stat) -> Spread {
        match stat {
            Stat::Max => self.max,
            Stat::P99 => self.p99,
            Stat::P1 => self.p1,
        }
    }
}

/// Group rows (sorted by N, K, R) into one aggregate per (N, K, R).
pub fn aggregate(rows: &[Row]) -> Vec<Aggregate> {
    rows.chunk_by(|a, b| {
        (a.nodes, a.keys, a.vnodes_per_node) == (b.nodes, b.keys, b.vnodes_per_node)
    })
    .filter_map(|group| {
        let first = group.first()?;
        let spread = |f: fn(&Row) -> f64| Spread::of(group.iter().map(f));
        Some(Aggregate {
            setup: Setup {
                nodes: first.nodes,
                keys: first.keys,
            },
            vnodes: first.vnodes_per_node,
            max: spread(|r| r.max_over_mean),
            p99: spread(|r| r.p99_over_mean),
            p1: spread(|r| r.p1_over_mean),
            median: spread(|r| r.median_over_mean),
            empty: spread(|r| r.nodes_empty as f64),
        })
    })
    .collect()
}

/// `n` as `10⁴` or `5·10⁵` when it is one digit times a power of ten, else `1,200`.
pub fn power_of_ten(n: usize) -> String {
    const SUPERSCRIPT: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let digits = n.to_string();
    let exponent = digits.len() - 1;
    if n < 100 || digits[1..].bytes().any(|b| b != b'0') {
        return plot::format_tick(n as f64);
    }
    let power: String = exponent
        .to_string()
        .bytes()
        .map(|b| SUPERSCRIPT[usize::from(b - b'0')])
        .collect();
    match &digits[..1] {
        "1" => format!("10{power}"),
        lead => format!("{lead}·10{power}"),
    }
}

fn setup_label(s: Setup) -> String {
    format!(
        "N = {}, {} keys",
        power_of_ten(s.nodes),
        power_of_ten(s.keys)
    )
}

/// The summary table: one row per (N, K, R), with what the paper states beside it.
pub fn table(points: &[Aggregate], rings: usize) -> Table {
    let mut table = Table::new(
        format!(
            "4e. Load balance: keys per node ÷ mean against virtual nodes per node R \
             (placement only, keys key-0…; mean over {rings} rings, min–max)"
        ),
        &[
            "N",
            "keys",
            "R",
            "max",
            "p99",
            "p1",
            "median",
            "empty nodes",
            "paper (§6.2)",
        ],
    );
    for a in points {
        let s = a.setup;
        let stated: Vec<String> = [Stat::Max, Stat::P99, Stat::P1]
            .iter()
            .filter_map(|&stat| {
                paper_value(s.nodes, s.keys, a.vnodes, stat)
                    .map(|p| format!("{} {} ({})", stat.name(), p.over_mean, p.figure))
            })
            .collect();
        table.row(vec![
            plot::format_tick(s.nodes as f64),
            plot::format_tick(s.keys as f64),
            a.vnodes.to_string(),
            a.max.cell(),
            a.p99.cell(),
            a.p1.cell(),
            a.median.cell(),
            fixed(a.empty.mean, 1),
            if stated.is_empty() {
                "-".into()
            } else {
                stated.join(", ")
            },
        ]);
    }
    table
}

/// A warning for every value the paper states that the measurement misses by more than
/// [`PAPER_TOLERANCE`] (values of 0 are compared absolutely: within 0.05 of the mean).
pub fn against_paper(points: &[Aggregate]) -> Vec<String> {
    PAPER
        .iter()
        .filter_map(|p| {
            let a = points.iter().find(|a| {
                a.setup.nodes == p.nodes && a.setup.keys == p.keys && a.vnodes == p.vnodes
            })?;
            let measured = a.stat(p.stat).mean;
            let off = if p.over_mean > 0.0 {
                (measured - p.over_mean).abs() / p.over_mean > PAPER_TOLERANCE
            } else {
                measured.abs() > 0.05
            };
            off.then(|| {
                format!(
                    "{}/mean at N={}, K={}, R={} is {measured:.2}, the paper states {} ({}): more than {:.0}% apart",
                    p.stat.name(),
                    p.nodes,
                    p.keys,
                    p.vnodes,
                    p.over_mean,
                    p.figure,
                    PAPER_TOLERANCE * 100.0
                )
            })
        })
        .collect()
}

/// `balance.png`: percentiles (left) and the maximum (right) against R, one line per
/// (N, K), mean over rings with min–max bars, the paper's stated values as grey markers.
pub fn plot(path: &Path, points: &[Aggregate], rings: usize) -> Result<()> {
    let mut setups: Vec<Setup> = points.iter().map(|a| a.setup).collect();
    setups.dedup();
    // The smallest setup in the colour itself, larger ones darker.
    let color = |i: usize| {
        let t = if setups.len() < 2 {
            0.0
        } else {
            -0.5 * i as f64 / (setups.len() - 1) as f64
        };
        plot::shade(plot::PLACEMENT, t)
    };
    let line = |i: usize, s: Setup, label: String, stat: Stat| {
        Series::new(
            label,
            color(i),
            Marker::Circle,
            points
                .iter()
                .filter(|a| a.setup == s)
                .map(|a| a.stat(stat).point(f64::from(a.vnodes)))
                .collect(),
        )
    };
    let paper = |figure: &str, stats: &[Stat], marker: Marker| -> Option<Series> {
        let stated: Vec<_> = PAPER
            .iter()
            .filter(|p| p.figure == figure && stats.contains(&p.stat))
            .collect();
        let first = stated.first()?;
        Some(
            Series::new(
                format!(
                    "paper {figure} (N = {}, {} keys)",
                    power_of_ten(first.nodes),
                    power_of_ten(first.keys)
                ),
                plot::REFERENCE,
                marker,
                stated
                    .iter()
                    .map(|p| Point::at(f64::from(p.vnodes), p.over_mean))
                    .collect(),
            )
            .markers_only(),
        )
    };
    let mut percentiles = Vec::new();
    let mut maxima = Vec::new();
    for (i, &s) in setups.iter().enumerate() {
        percentiles.push(line(i, s, setup_label(s), Stat::P99));
        // The title tells p1 (dashed) from p99: one legend entry per setup is enough.
        percentiles.push(line(i, s, String::new(), Stat::P1).dashed());
        maxima.push(line(i, s, setup_label(s), Stat::Max));
    }
    percentiles.extend(paper("Fig. 8", &[Stat::P99, Stat::P1], Marker::Diamond));
    percentiles.extend(paper("Fig. 9", &[Stat::P99, Stat::P1], Marker::Square));
    maxima.extend(paper("Fig. 8", &[Stat::Max], Marker::Diamond));
    let top = |stat: Stat| {
        points
            .iter()
            .map(|a| a.stat(stat).max)
            .chain(PAPER.iter().filter(|p| p.stat == stat).map(|p| p.over_mean))
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max)
    };
    let x = || {
        Axis::log("virtual nodes per node R (log scale)", 0.8, 25.0).with_ticks(
            crate::balance::VNODES
                .iter()
                .map(|&r| f64::from(r))
                .collect(),
        )
    };
    let note = format!("mean of {rings} rings (marker), min–max (bar); keys key-0, key-1, …");
    let left = Chart {
        title: "99th (solid) and 1st (dashed) percentile".into(),
        x: x(),
        y: Axis::linear("keys per node ÷ mean", -0.2, top(Stat::P99) * 1.25),
        legend: LegendAt::UpperRight,
        series: percentiles,
        note: Some(note.clone()),
    };
    let right = Chart {
        title: "Most loaded node".into(),
        x: x(),
        y: Axis::linear("maximum keys per node ÷ mean", 0.0, top(Stat::Max) * 1.15),
        legend: LegendAt::UpperRight,
        series: maxima,
        note: Some(note),
    };
    plot::draw_panels(
        path,
        plot::WIDE,
        Some("Keys per node against virtual nodes per node (placement only)"),
        &[left, right],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_ten_read_as_such() {
        assert_eq!(power_of_ten(10_000), "10⁴");
        assert_eq!(power_of_ten(500_000), "5·10⁵");
        assert_eq!(power_of_ten(1_000_000), "10⁶");
        assert_eq!(power_of_ten(1_200), "1,200");
        assert_eq!(power_of_ten(20), "20");
    }

    #[test]
    fn spreads_and_the_paper_check() {
        let s = Spread::of([1.0, 3.0, 2.0].into_iter());
        assert_eq!((s.mean, s.min, s.max), (2.0, 1.0, 3.0));
        let at = |p99: f64| Aggregate {
            setup: Setup {
                nodes: 10_000,
                keys: 1_000_000,
            },
            vnodes: 20,
            max: s,
            p99: Spread::of([p99].into_iter()),
            p1: Spread::of([0.5].into_iter()),
            median: s,
            empty: s,
        };
        // The paper states p99 1.6 and p1 0.5 at R = 20 with 10⁶ keys.
        assert!(against_paper(&[at(1.9)]).is_empty());
        let w = against_paper(&[at(2.1)]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("p99/mean") && w[0].contains("1.6"),
            "{w:?}"
        );
    }
}
