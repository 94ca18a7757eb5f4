//! Experiment 4c: throughput and p99 latency against ring size, in virtual time.
//!
//! Simulator runs on rings of 10 to 1,000 nodes, one closed-loop client per node (so the
//! offered load grows with the ring), each doing 50 operations of a requests-like mix (80%
//! queries, 20% inserts) over 10·N keys, k = 3, exponential 1 ms links, finger routing.
//! The simulator models network latency, not CPU, so throughput here is what the protocol
//! (hops, chain length) allows, not what a machine can serve.

use std::path::Path;

use ringkv_core::Consistency;
use ringkv_sim::{SimConfig, Simulation, Synthetic, WorkloadSpec};
use serde::Serialize;

use crate::plot::{self, Axis, Chart, LegendAt, Point, Series};
use crate::runner::{
    fixed, model_name, ops, par_map, progress_bar, write_csv, Options, Report, Table, BASE_MODELS,
};
use crate::{ExperimentError, Result};

/// Operations per client.
pub const OPS_PER_CLIENT: u64 = 50;
/// Replication factor used.
pub const K: usize = 3;

/// A row of `scaling.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `chain` or `eventual`.
    pub model: String,
    /// Replication factor.
    pub k: usize,
    /// Ring size.
    pub nodes: usize,
    /// Closed-loop clients (one per node).
    pub clients: usize,
    /// Operations issued.
    pub ops: u64,
    /// Operations answered with success.
    pub ok: u64,
    /// Virtual seconds of the client phase.
    pub virtual_seconds: f64,
    /// Successful operations per virtual second.
    pub throughput_ops_per_s: f64,
    /// Median latency, ms (virtual).
    pub latency_p50_ms: f64,
    /// 99th percentile latency, ms (virtual).
    pub latency_p99_ms: f64,
    /// Mean lookup hops.
    pub hops_mean: f64,
    /// Simulator seed.
    pub seed: u64,
}

/// Ring sizes measured.
pub fn sizes(options: &Options) -> Vec<usize> {
    options.size(vec![10, 30, 100], vec![10, 30, 100, 300, 1000])
}

/// Run experiment 4c.
pub fn run(options: &Options) -> Result<Report> {
    let mut plan = Vec::new();
    for n in sizes(options).into_iter().rev() {
        for model in BASE_MODELS {
            plan.push((n, model));
        }
    }
    let bar = progress_bar(options, "scaling", plan.len() as u64);
    bar.set_message("simulator, one client per node");
    let results = par_map(&plan, |&(nodes, model)| -> Result<Row> {
        let config = SimConfig {
            seed: options.seed,
            nodes,
            k: K,
            consistency: model,
            clients: Some(nodes),
            workload: WorkloadSpec::Synthetic(Synthetic {
                ops: OPS_PER_CLIENT * nodes as u64,
                keys: 10 * nodes as u64,
                read_fraction: 0.8,
                ..Synthetic::default()
            }),
            record_history: false,
            ..SimConfig::default()
        };
        let s = Simulation::new(config)
            .map_err(|e| ExperimentError(e.to_string()))?
            .run()
            .summary;
        bar.inc(1);
        Ok(Row {
            model: model_name(model).into(),
            k: K,
            nodes,
            clients: nodes,
            ops: OPS_PER_CLIENT * nodes as u64,
            ok: s.ops_ok,
            virtual_seconds: s.virtual_seconds,
            throughput_ops_per_s: s.throughput_ops_per_virtual_second,
            latency_p50_ms: s.latency_p50_ns as f64 / 1e6,
            latency_p99_ms: s.latency_p99_ns as f64 / 1e6,
            hops_mean: s.lookup_hops_mean,
            seed: options.seed,
        })
    });
    bar.finish_and_clear();
    let mut rows = results.into_iter().collect::<Result<Vec<Row>>>()?;
    rows.sort_by(|a, b| a.model.cmp(&b.model).then(a.nodes.cmp(&b.nodes)));
    let csv = options.path("scaling.csv");
    let png = options.path("scaling.png");
    write_csv(&csv, &rows)?;
    plot(&png, &rows)?;
    let mut table = Table::new(
        format!("4c. Scaling in virtual time (simulator, 1 client per node, {OPS_PER_CLIENT} ops each, k={K})"),
        &["model", "N", "ops/virtual s", "p50 ms", "p99 ms", "hops"],
    );
    for r in &rows {
        table.row(vec![
            r.model.clone(),
            r.nodes.to_string(),
            ops(r.throughput_ops_per_s),
            fixed(r.latency_p50_ms, 2),
            fixed(r.latency_p99_ms, 2),
            fixed(r.hops_mean, 2),
        ]);
    }
    let warnings = rows
        .iter()
        .filter(|r| r.ok < r.ops)
        .map(|r| {
            format!(
                "{} N={}: {} of {} operations did not succeed",
                r.model,
                r.nodes,
                r.ops - r.ok,
                r.ops
            )
        })
        .collect();
    Ok(Report {
        name: "scaling",
        files: vec![csv, png],
        table,
        warnings,
        seconds: 0.0,
    })
}

fn plot(path: &Path, rows: &[Row]) -> Result<()> {
    let nmax = rows.iter().map(|r| r.nodes).max().unwrap_or(10) as f64;
    let nmin = rows.iter().map(|r| r.nodes).min().unwrap_or(10) as f64;
    let series = |value: &dyn Fn(&Row) -> f64| -> Vec<Series> {
        BASE_MODELS
            .into_iter()
            .map(|m| {
                let name = model_name(m);
                let label = match m {
                    Consistency::Chain => "chain replication",
                    Consistency::Eventual => "eventual consistency",
                    Consistency::Craq => "CRAQ",
                };
                Series::new(
                    label,
                    plot::model_color(m),
                    plot::model_marker(m),
                    rows.iter()
                        .filter(|r| r.model == name)
                        .map(|r| Point::at(r.nodes as f64, value(r)))
                        .collect(),
                )
            })
            .collect()
    };
    let tput_hi = rows
        .iter()
        .map(|r| r.throughput_ops_per_s)
        .fold(1.0, f64::max);
    let tput_lo = rows
        .iter()
        .map(|r| r.throughput_ops_per_s)
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let x = || Axis::log("ring size N (nodes, log scale)", nmin * 0.8, nmax * 1.25);
    let throughput = Chart {
        title: "Throughput".into(),
        x: x(),
        y: Axis::log(
            "throughput (operations / virtual s, log scale)",
            tput_lo / 2.0,
            tput_hi * 2.0,
        ),
        legend: LegendAt::UpperLeft,
        series: series(&|r| r.throughput_ops_per_s),
        note: Some(format!(
            "one client per node, {OPS_PER_CLIENT} ops each (80% queries), k = {K}"
        )),
    };
    let p99 = Chart {
        title: "99th percentile latency".into(),
        x: x(),
        y: Axis::fit_from_zero(
            "p99 latency (ms, virtual)",
            rows.iter().map(|r| r.latency_p99_ms),
        ),
        legend: LegendAt::UpperLeft,
        series: series(&|r| r.latency_p99_ms),
        note: Some("simulator, exponential links with 1 ms mean, finger routing".into()),
    };
    plot::draw_panels(
        path,
        plot::WIDE,
        Some("Scaling with ring size (simulator, virtual time)"),
        &[throughput, p99],
    )
}
