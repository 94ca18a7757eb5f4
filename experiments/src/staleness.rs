//! Experiment 4a: how stale eventual consistency is, against time since the write.
//!
//! In the spirit of PBS (Bailis et al., "Probabilistically Bounded Staleness for Practical
//! Partial Quorums", VLDB 2012): the probability that a read returns the latest value,
//! as a function of the time t between the completion of the latest write to its key and
//! the read's start. Simulator runs of the reference `requests` workload (10 nodes, 10
//! clients, exponential 1 ms links), many seeds per k; every read that has a completed
//! write before it is classified by the checker's definitions (fresh = a latest value or a
//! concurrent write's value) and bucketed by t. Chain replication is run the same way as
//! a reference: every one of its reads should be fresh.

use std::path::Path;

use ringkv_core::Consistency;
use ringkv_sim::{Reference, SimConfig, WorkloadSpec};
use serde::Serialize;

use crate::analysis::{classify_reads, ReadClass};
use crate::plot::{self, Axis, Chart, LegendAt, Marker, Point, Series};
use crate::runner::{
    fixed, model_name, par_map, progress_bar, simulate, write_csv, Options, Report, Table,
    BASE_MODELS,
};
use crate::{ExperimentError, Result};

/// Bucket edges of t, ms (the last bucket is open-ended).
pub const EDGES_MS: [f64; 14] = [
    0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0,
];

/// A row of `staleness.csv`: one (model, k, t bucket).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `chain` or `eventual`.
    pub model: String,
    /// Replication factor.
    pub k: usize,
    /// Bucket start (ms since the latest write completed), inclusive.
    pub t_from_ms: f64,
    /// Bucket end, exclusive (`inf` for the last).
    pub t_to_ms: f64,
    /// Reads in the bucket.
    pub reads: usize,
    /// Of them, fresh.
    pub fresh_reads: usize,
    /// Of them, stale (or impossible).
    pub stale_reads: usize,
    /// `fresh_reads / reads` (empty when the bucket has no reads).
    pub p_fresh: Option<f64>,
    /// Simulator seeds pooled.
    pub seeds: usize,
}

/// Run experiment 4a.
pub fn run(options: &Options) -> Result<Report> {
    let seeds = options.size(3, 100);
    let mut plan = Vec::new();
    for &k in &options.ks {
        for model in BASE_MODELS {
            for s in 0..seeds {
                plan.push((k, model, options.seed + s as u64));
            }
        }
    }
    let bar = progress_bar(options, "staleness", plan.len() as u64);
    bar.set_message("simulator, requests workload");
    let samples = par_map(&plan, |&(k, model, seed)| -> Result<Vec<(u64, bool)>> {
        let config = SimConfig {
            seed,
            nodes: options.nodes,
            k,
            consistency: model,
            workload: WorkloadSpec::Reference(Reference::Requests),
            workload_dir: options.workload_dir.clone(),
            ..SimConfig::default()
        };
        let (_, history) = simulate(config)?;
        bar.inc(1);
        Ok(classify_reads(&history)
            .into_iter()
            .filter_map(|r| r.since_write_ns.map(|t| (t, r.class == ReadClass::Fresh)))
            .collect())
    });
    bar.finish_and_clear();
    let mut rows = Vec::new();
    let mut table = Table::new(
        format!("4a. Staleness against time since the write (simulator, requests workload, {seeds} seeds per k)"),
        &["model", "k", "reads after a write", "stale", "P(fresh) t<0.5ms", "P(fresh) 0.5-1ms", "P(fresh) t>=2ms"],
    );
    let mut warnings = Vec::new();
    for &k in &options.ks {
        for model in BASE_MODELS {
            let mut all: Vec<(u64, bool)> = Vec::new();
            for (i, &(pk, pm, _)) in plan.iter().enumerate() {
                if pk == k && pm == model {
                    match &samples[i] {
                        Ok(s) => all.extend_from_slice(s),
                        Err(e) => return Err(ExperimentError(e.0.clone())),
                    }
                }
            }
            let bucketed = buckets(&all);
            for (i, (reads, fresh)) in bucketed.iter().enumerate() {
                rows.push(Row {
                    model: model_name(model).into(),
                    k,
                    t_from_ms: EDGES_MS[i],
                    t_to_ms: EDGES_MS.get(i + 1).copied().unwrap_or(f64::INFINITY),
                    reads: *reads,
                    fresh_reads: *fresh,
                    stale_reads: reads - fresh,
                    p_fresh: (*reads > 0).then(|| *fresh as f64 / *reads as f64),
                    seeds,
                });
            }
            let p = |pred: &dyn Fn(f64) -> bool| {
                let sel: Vec<bool> = all
                    .iter()
                    .filter(|(t, _)| pred(*t as f64 / 1e6))
                    .map(|(_, f)| *f)
                    .collect();
                if sel.is_empty() {
                    f64::NAN
                } else {
                    sel.iter().filter(|f| **f).count() as f64 / sel.len() as f64
                }
            };
            let stale = all.iter().filter(|(_, f)| !f).count();
            table.row(vec![
                model_name(model).into(),
                k.to_string(),
                all.len().to_string(),
                stale.to_string(),
                fixed(p(&|t| t < 0.5), 3),
                fixed(p(&|t| (0.5..1.0).contains(&t)), 3),
                fixed(p(&|t| t >= 2.0), 3),
            ]);
            if model == Consistency::Chain && stale > 0 {
                warnings.push(format!("chain k={k}: {stale} stale reads in the simulator"));
            }
        }
    }
    let csv = options.path("staleness.csv");
    let png = options.path("staleness.png");
    write_csv(&csv, &rows)?;
    plot(&png, options, &rows, seeds)?;
    Ok(Report {
        name: "staleness",
        files: vec![csv, png],
        table,
        warnings,
        seconds: 0.0,
    })
}

/// (reads, fresh reads) per bucket of [`EDGES_MS`].
fn buckets(samples: &[(u64, bool)]) -> Vec<(usize, usize)> {
    let mut out = vec![(0, 0); EDGES_MS.len()];
    for &(t, fresh) in samples {
        let ms = t as f64 / 1e6;
        let i = EDGES_MS.iter().rposition(|&e| ms >= e).unwrap_or(0);
        out[i].0 += 1;
        out[i].1 += usize::from(fresh);
    }
    out
}

fn plot(path: &Path, options: &Options, rows: &[Row], seeds: usize) -> Result<()> {
    let last = EDGES_MS[EDGES_MS.len() - 1];
    let mid = |r: &Row| {
        if r.t_to_ms.is_finite() {
            (r.t_from_ms + r.t_to_ms) / 2.0
        } else {
            last + 0.5
        }
    };
    let mut series = Vec::new();
    let markers = [
        Marker::Triangle,
        Marker::Square,
        Marker::Diamond,
        Marker::Circle,
    ];
    let n = options.ks.len().max(1);
    for (i, &k) in options.ks.iter().enumerate() {
        let t = if n == 1 {
            0.0
        } else {
            -0.45 + 0.75 * i as f64 / (n - 1) as f64
        };
        let points = rows
            .iter()
            .filter(|r| r.model == "eventual" && r.k == k)
            .filter_map(|r| r.p_fresh.map(|p| Point::at(mid(r), p)))
            .collect();
        let label = if k == 1 {
            "eventual, k = 1 (no replica to lag)".to_string()
        } else {
            format!("eventual, k = {k}")
        };
        series.push(Series::new(
            label,
            plot::shade(plot::EVENTUAL, t),
            markers[i % markers.len()],
            points,
        ));
    }
    let chain_k = options.ks.iter().copied().max().unwrap_or(3);
    let points = rows
        .iter()
        .filter(|r| r.model == "chain" && r.k == chain_k)
        .filter_map(|r| r.p_fresh.map(|p| Point::at(mid(r), p)))
        .collect();
    series.push(
        Series::new(
            format!("chain, k = {chain_k}"),
            plot::CHAIN,
            Marker::Circle,
            points,
        )
        .dashed(),
    );
    let lowest = rows
        .iter()
        .filter_map(|r| r.p_fresh)
        .fold(1.0_f64, f64::min);
    let y_lo = ((lowest - 0.05) * 10.0).floor() / 10.0;
    let chart = Chart {
        title: "Probability a read returns the latest value (PBS-style)".into(),
        x: Axis::linear("time since the latest write to the key completed, t (ms)", 0.0, last + 0.8)
            .with_ticks(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        y: Axis::linear("P(read is fresh)", y_lo.clamp(0.0, 0.9), 1.02),
        legend: LegendAt::LowerRight,
        series,
        note: Some(format!(
            "simulator: 10 nodes, 10 clients, requests workload, exp(1 ms) links, {seeds} seeds per k; 0.2–1 ms buckets; last point: t ≥ {last} ms"
        )),
    };
    plot::draw(path, plot::SIZE, &chart)
}
