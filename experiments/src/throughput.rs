//! Experiments 1 and 2: insert and query throughput against k, for both models.
//!
//! As in the reference experiments, a fresh 10-node ring per (model, k, repetition), and ten
//! concurrent clients: client N sends `insert/insert_0N_part.txt` (then, for the query
//! experiment, `queries/query_0N.txt`) to node N, one request at a time. Throughput is
//! operations / seconds of the phase (wall-clock seconds on the real backend, virtual
//! seconds in the simulator). Each point is repeated; the plot shows the median, the
//! interquartile range (thick bar) and the min–max spread (whiskers). Repetitions are interleaved (rep 1 of every configuration, then rep 2,
//! ...) so a slow spell on a shared machine does not hit one configuration only.
//!
//! With a link latency ([`Options::link_latency`], the real backend's `--link-latency`) the
//! rings' node-to-node messages are held back, the run becomes latency-bound instead of
//! CPU-bound, and the files are `insert_throughput_wan.csv/.png` and
//! `query_throughput_wan.csv/.png`, with a `link_latency` column.

use std::collections::BTreeMap;
use std::path::Path;

use ringkv_client::{router, RingMap};
use ringkv_core::Consistency;
use ringkv_runtime::Outcome;
use ringkv_sim::check::OpKind;
use ringkv_sim::{Reference, SimConfig, WorkloadSpec};
use serde::Serialize;

use crate::analysis::{five_numbers, min_median_max, percentile, span, Span};
use crate::plot::{self, Axis, Chart, LegendAt, Point, Series};
use crate::real::{self, Phase, Ring};
use crate::runner::{
    fixed, model_name, ops, par_map, progress_bar, simulate, write_csv, Backend, Options, Report,
    Table, MODELS,
};
use crate::workloads::{self, Planned};
use crate::{ExperimentError, Result};

/// Which throughput experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Experiment 1.
    Insert,
    /// Experiment 2.
    Query,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Insert => "insert",
            Which::Query => "query",
        }
    }
}

/// One repetition of one (model, k) point: a row of `insert_throughput.csv` or
/// `query_throughput.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `real` or `sim`.
    pub backend: String,
    /// `chain`, `eventual` or `craq`.
    pub model: String,
    /// Replication factor.
    pub k: usize,
    /// Repetition, from 1.
    pub rep: usize,
    /// Ring size.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Timed operations.
    pub ops: usize,
    /// Of them, answered with success (a query finding nothing counts as success).
    pub ok: usize,
    /// Of them, failed or timed out.
    pub errors: usize,
    /// Queries that found no value (every queried title was inserted, so 0 is expected).
    pub not_found: usize,
    /// Length of the timed phase: wall-clock seconds (real) or virtual seconds (sim).
    pub seconds: f64,
    /// `wall` or `virtual`.
    pub time_base: String,
    /// `ops / seconds`.
    pub throughput_ops_per_s: f64,
    /// Median latency of successful operations, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile latency of successful operations, ms.
    pub latency_p99_ms: f64,
    /// CPU seconds this process (all nodes and clients) used during the phase (real
    /// backend, Linux; empty otherwise).
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds / seconds`: cores kept busy (this machine has two).
    pub cpu_cores_busy: Option<f64>,
    /// CPU time per operation, µs.
    pub cpu_us_per_op: Option<f64>,
    /// Error causes and counts, `cause: n; ...` (empty when none).
    pub error_causes: String,
    /// The delay added to every node-to-node message, e.g. `const:1ms` (real backend with
    /// `--link-latency` only: the `_wan` files; the column is absent from the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_latency: Option<String>,
    /// How the clients reached the ring (the `_wan` files only): `random`, client N to
    /// node N as in the reference, the node routing each request on; or `token`, each
    /// request straight to the node that serves its key (`ringkv_client::router::choose`,
    /// as `dht bench --routing token`), so no lookup hop is left to depend on k.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
}

/// The `entry` of rows whose clients send each request straight to its key's node.
pub const TOKEN: &str = "token";

/// The `entry` of rows whose client N sends to node N (the reference's clients).
pub const RANDOM: &str = "random";

/// Run experiment 1 or 2 alone.
pub fn run(options: &Options, which: Which) -> Result<Report> {
    let (insert, query) = measure(options, which == Which::Insert, which == Which::Query)?;
    match which {
        Which::Insert => report(options, Which::Insert, &insert, options.suffix()),
        Which::Query => report(options, Which::Query, &query, options.suffix()),
    }
}

/// Run both on the same rings: each repetition's fresh ring is loaded by the timed
/// inserts, then the queries are timed. `suffix` is appended to the file names
/// (`insert_throughput{suffix}.csv`).
pub fn run_both(options: &Options, suffix: &str) -> Result<(Report, Report)> {
    let (insert, query) = measure(options, true, true)?;
    Ok((
        report(options, Which::Insert, &insert, suffix)?,
        report(options, Which::Query, &query, suffix)?,
    ))
}

/// Configurations in run order: repetitions outermost.
fn configs(options: &Options) -> Vec<(usize, usize, Consistency)> {
    let mut out = Vec::new();
    for rep in 1..=options.reps() {
        for &k in &options.ks {
            for model in MODELS {
                out.push((rep, k, model));
            }
        }
    }
    out
}

fn measure(options: &Options, insert: bool, query: bool) -> Result<(Vec<Row>, Vec<Row>)> {
    let name = match (insert, query) {
        (true, true) => "insert+query",
        (false, true) => "query",
        _ => "insert",
    };
    let configs = configs(options);
    let bar = progress_bar(options, name, configs.len() as u64);
    let result = match options.backend {
        Backend::Real => measure_real(options, &configs, query, &bar),
        Backend::Sim => measure_sim(options, &configs, &bar),
    };
    bar.finish_and_clear();
    result
}

fn measure_real(
    options: &Options,
    configs: &[(usize, usize, Consistency)],
    query: bool,
    bar: &indicatif::ProgressBar,
) -> Result<(Vec<Row>, Vec<Row>)> {
    let dir = options.workload_dir.as_deref();
    let inserts = workloads::timed_phase(Reference::Insert, dir)
        .map_err(|e| ExperimentError(e.to_string()))?;
    let queries = workloads::timed_phase(Reference::Query, dir)
        .map_err(|e| ExperimentError(e.to_string()))?;
    let (mut insert_rows, mut query_rows) = (Vec::new(), Vec::new());
    for &(rep, k, model) in configs {
        bar.set_message(format!(
            "real ring, {} k={k}, run {rep}/{}",
            model_name(model),
            options.reps()
        ));
        // A fresh runtime per ring: whatever a stopped ring leaves behind dies with it.
        let rt = real::runtime()?;
        rt.block_on(async {
            let ring = Ring::start(options.nodes, k, model, options.link_latency()).await?;
            let entry = options.link_latency().map(|_| RANDOM);
            let phase = ring.run_phase(scripts(&inserts, options.nodes)).await;
            insert_rows.push(real_row(options, model, k, rep, &phase, entry));
            if query {
                let phase = ring.run_phase(scripts(&queries, options.nodes)).await;
                query_rows.push(real_row(options, model, k, rep, &phase, entry));
            }
            if let Some(link) = options.link_latency() {
                // The same files again on the same ring (the inserts now overwrite, at the
                // same cost), each request sent where a token-aware client sends it. Such
                // a client talks to every node, so it is as far from each as the nodes are
                // from each other (client N of the reference sits by node N).
                let map = RingMap::new(ring.addrs().to_vec(), k, model);
                let entry = Some(TOKEN);
                let script = token_scripts(&inserts, &map);
                let phase = ring.run_phase_from_afar(script, Some(link)).await;
                insert_rows.push(real_row(options, model, k, rep, &phase, entry));
                if query {
                    let script = token_scripts(&queries, &map);
                    let phase = ring.run_phase_from_afar(script, Some(link)).await;
                    query_rows.push(real_row(options, model, k, rep, &phase, entry));
                }
            }
            ring.stop().await;
            Ok::<(), ExperimentError>(())
        })?;
        bar.inc(1);
    }
    Ok((insert_rows, query_rows))
}

/// Client N sends file N to node N (mod the ring size).
pub fn scripts(files: &[Vec<Planned>], nodes: usize) -> Vec<Vec<(usize, Planned)>> {
    files
        .iter()
        .enumerate()
        .map(|(n, file)| file.iter().map(|p| (n % nodes.max(1), p.clone())).collect())
        .collect()
}

/// Client N sends file N, each operation to the node a token-aware client picks for its
/// key in `map` (whose members are the ring's nodes in start order).
fn token_scripts(files: &[Vec<Planned>], map: &RingMap) -> Vec<Vec<(usize, Planned)>> {
    let index = |addr: &str| map.members().iter().position(|m| m == addr).unwrap_or(0);
    files
        .iter()
        .map(|file| {
            file.iter()
                .enumerate()
                .map(|(turn, p)| {
                    let route = router::choose(map, p.op.f, &p.op.key, turn);
                    (index(&route.target), p.clone())
                })
                .collect()
        })
        .collect()
}

fn real_row(
    options: &Options,
    model: Consistency,
    k: usize,
    rep: usize,
    phase: &Phase,
    entry: Option<&str>,
) -> Row {
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut not_found = 0;
    for r in &phase.records {
        match &r.outcome {
            Outcome::Ok(served) => {
                latencies.push(r.latency_ns);
                if r.planned.op.f == OpKind::Read && served.value.is_none() {
                    not_found += 1;
                }
            }
            Outcome::Fail(c) | Outcome::Info(c) => *causes.entry(c.to_string()).or_default() += 1,
        }
    }
    latencies.sort_unstable();
    let ops = phase.records.len();
    let errors: usize = causes.values().sum();
    Row {
        backend: "real".into(),
        model: model_name(model).into(),
        k,
        rep,
        nodes: options.nodes,
        clients: workloads::FILES,
        ops,
        ok: ops - errors,
        errors,
        not_found,
        seconds: phase.seconds,
        time_base: "wall".into(),
        throughput_ops_per_s: ops as f64 / phase.seconds.max(1e-9),
        latency_p50_ms: percentile(&latencies, 50.0) as f64 / 1e6,
        latency_p99_ms: percentile(&latencies, 99.0) as f64 / 1e6,
        cpu_seconds: phase.cpu_seconds,
        cpu_cores_busy: phase.cpu_seconds.map(|c| c / phase.seconds.max(1e-9)),
        cpu_us_per_op: phase.cpu_seconds.map(|c| c * 1e6 / ops.max(1) as f64),
        error_causes: causes
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect::<Vec<_>>()
            .join("; "),
        link_latency: options.link_latency_cell(),
        entry: entry.map(str::to_string),
    }
}

fn measure_sim(
    options: &Options,
    configs: &[(usize, usize, Consistency)],
    bar: &indicatif::ProgressBar,
) -> Result<(Vec<Row>, Vec<Row>)> {
    bar.set_message("simulator");
    let runs = par_map(configs, |&(rep, k, model)| -> Result<(Row, Row)> {
        let config = SimConfig {
            seed: options.seed + rep as u64 - 1,
            nodes: options.nodes,
            k,
            consistency: model,
            workload: WorkloadSpec::Reference(Reference::Query),
            workload_dir: options.workload_dir.clone(),
            ..SimConfig::default()
        };
        let (_, history) = simulate(config)?;
        let not_found = history
            .ops
            .iter()
            .filter(|o| {
                o.f == OpKind::Read
                    && o.status == ringkv_sim::check::OpStatus::Ok
                    && o.value.is_none()
            })
            .count();
        bar.inc(1);
        Ok((
            sim_row(options, model, k, rep, span(&history, OpKind::Write), 0),
            sim_row(
                options,
                model,
                k,
                rep,
                span(&history, OpKind::Read),
                not_found,
            ),
        ))
    });
    let mut insert_rows = Vec::new();
    let mut query_rows = Vec::new();
    for r in runs {
        let (i, q) = r?;
        insert_rows.push(i);
        query_rows.push(q);
    }
    Ok((insert_rows, query_rows))
}

fn sim_row(
    options: &Options,
    model: Consistency,
    k: usize,
    rep: usize,
    s: Span,
    not_found: usize,
) -> Row {
    Row {
        backend: "sim".into(),
        model: model_name(model).into(),
        k,
        rep,
        nodes: options.nodes,
        clients: workloads::FILES,
        ops: s.ops,
        ok: s.ok,
        errors: s.ops - s.ok,
        not_found,
        seconds: s.span_ns as f64 / 1e9,
        time_base: "virtual".into(),
        throughput_ops_per_s: s.throughput(),
        latency_p50_ms: s.p50_ns as f64 / 1e6,
        latency_p99_ms: s.p99_ns as f64 / 1e6,
        cpu_seconds: None,
        cpu_cores_busy: None,
        cpu_us_per_op: None,
        error_causes: String::new(),
        link_latency: None,
        entry: None,
    }
}

/// Throughputs of (model, k) with the reference's clients (`token`: with token-aware ones).
fn samples(rows: &[Row], model: &str, k: usize, token: bool) -> Vec<f64> {
    rows.iter()
        .filter(|r| r.model == model && r.k == k && is_token(r) == token)
        .map(|r| r.throughput_ops_per_s)
        .collect()
}

fn is_token(row: &Row) -> bool {
    row.entry.as_deref() == Some(TOKEN)
}

/// Median and min–max throughput per (model, k), with the reference's clients.
pub fn spread(rows: &[Row], model: &str, k: usize) -> (f64, f64, f64) {
    min_median_max(&samples(rows, model, k, false))
}

fn report(options: &Options, which: Which, rows: &[Row], suffix: &str) -> Result<Report> {
    let name = which.name();
    let csv = options.path(&format!("{name}_throughput{suffix}.csv"));
    let png = options.path(&format!("{name}_throughput{suffix}.png"));
    write_csv(&csv, rows)?;
    plot(&png, options, which, rows)?;
    let mut files = vec![csv, png];
    let cpu_known = rows.iter().any(|r| r.cpu_us_per_op.is_some());
    // With a link latency the CPU time is in the table and the CSV, and the throughput
    // plot's note gives the cores busy; no separate CPU plot.
    if cpu_known && options.link_latency().is_none() {
        let cpu_png = options.path(&format!("{name}_cpu{suffix}.png"));
        plot_cpu(&cpu_png, options, which, rows)?;
        files.push(cpu_png);
    }
    let backend = match options.link_latency() {
        Some(latency) => format!("{} backend, {latency} links", options.backend),
        None => format!("{} backend", options.backend),
    };
    let unit = if options.backend == Backend::Real {
        "ops/s"
    } else {
        "ops/virtual s"
    };
    let mut table = Table::new(
        format!(
            "{}. {} throughput ({backend}, {} nodes, {} clients, {} runs per point)",
            if which == Which::Insert { 1 } else { 2 },
            if which == Which::Insert {
                "Insert"
            } else {
                "Query"
            },
            options.nodes,
            workloads::FILES,
            options.reps()
        ),
        &[
            "model",
            "k",
            &format!("median {unit}"),
            "min",
            "max",
            "p99 ms (median)",
            "CPU µs/op (median)",
            "cores busy (median)",
            "errors",
        ][..],
    );
    if !cpu_known {
        table
            .header
            .retain(|h| !h.starts_with("CPU") && !h.starts_with("cores"));
    }
    let mut warnings = Vec::new();
    let entries: &[bool] = match rows.iter().any(is_token) {
        true => &[false, true],
        false => &[false],
    };
    for (model, &token) in MODELS
        .into_iter()
        .flat_map(|m| entries.iter().map(move |t| (m, t)))
    {
        let m = model_name(model);
        let label = match token {
            true => format!("{m}, token"),
            false => m.to_string(),
        };
        for &k in &options.ks {
            let mine: Vec<&Row> = rows
                .iter()
                .filter(|r| r.model == m && r.k == k && is_token(r) == token)
                .collect();
            let throughputs: Vec<f64> = mine.iter().map(|r| r.throughput_ops_per_s).collect();
            let (lo, med, hi) = min_median_max(&throughputs);
            let p99: Vec<f64> = mine.iter().map(|r| r.latency_p99_ms).collect();
            let median_of = |f: &dyn Fn(&Row) -> Option<f64>| {
                let v: Vec<f64> = mine.iter().filter_map(|r| f(r)).collect();
                if v.is_empty() {
                    "-".to_string()
                } else {
                    fixed(min_median_max(&v).1, if v[0] < 10.0 { 2 } else { 0 })
                }
            };
            let errors: usize = mine.iter().map(|r| r.errors).sum();
            let total: usize = mine.iter().map(|r| r.ops).sum();
            let mut cells = vec![
                label.clone(),
                k.to_string(),
                ops(med),
                ops(lo),
                ops(hi),
                fixed(min_median_max(&p99).1, 2),
            ];
            if cpu_known {
                cells.push(median_of(&|r| r.cpu_us_per_op));
                cells.push(median_of(&|r| r.cpu_cores_busy));
            }
            cells.push(format!("{errors}/{total}"));
            table.row(cells);
            if errors > 0 {
                let causes: Vec<&str> = mine
                    .iter()
                    .map(|r| r.error_causes.as_str())
                    .filter(|c| !c.is_empty())
                    .collect();
                warnings.push(format!(
                    "{label} k={k}: {errors} of {total} {name}s failed ({})",
                    causes.join("; ")
                ));
            }
            let not_found: usize = mine.iter().map(|r| r.not_found).sum();
            if not_found > 0 {
                warnings.push(format!("{label} k={k}: {not_found} queries found no value"));
            }
        }
    }
    Ok(Report {
        name: match (which, options.backend, options.link_latency().is_some()) {
            (Which::Insert, Backend::Real, false) => "insert",
            (Which::Query, Backend::Real, false) => "query",
            (Which::Insert, Backend::Real, true) => "insert (wan)",
            (Which::Query, Backend::Real, true) => "query (wan)",
            (Which::Insert, Backend::Sim, _) => "insert (sim)",
            (Which::Query, Backend::Sim, _) => "query (sim)",
        },
        files,
        table,
        warnings,
        seconds: 0.0,
    })
}

/// CPU time per operation against k (real backend): why throughput falls.
fn plot_cpu(path: &Path, options: &Options, which: Which, rows: &[Row]) -> Result<()> {
    let dodge = 0.08 * (options.ks.iter().max().copied().unwrap_or(1) as f64).max(1.0) / 5.0;
    let mut top: f64 = 0.0;
    let mut busy = Vec::new();
    let series = MODELS
        .into_iter()
        .enumerate()
        .map(|(i, model)| {
            let m = model_name(model);
            let offset = (i as f64 - 1.0) * dodge;
            let points = options
                .ks
                .iter()
                .map(|&k| {
                    let mine = rows.iter().filter(|r| r.model == m && r.k == k);
                    let v: Vec<f64> = mine.clone().filter_map(|r| r.cpu_us_per_op).collect();
                    busy.extend(mine.filter_map(|r| r.cpu_cores_busy));
                    let five = five_numbers(&v);
                    top = top.max(five[4]);
                    Point::boxed(k as f64 + offset, five)
                })
                .collect();
            Series::new(
                m,
                plot::model_color(model),
                plot::model_marker(model),
                points,
            )
        })
        .collect();
    let kmax = options.ks.iter().max().copied().unwrap_or(1) as f64;
    let what = if which == Which::Insert {
        "insert"
    } else {
        "query"
    };
    let chart = Chart {
        title: format!("CPU time per {what} vs replication factor (whole ring, one process)"),
        x: Axis::linear("replication factor k", 0.5, kmax + 0.5)
            .with_ticks(options.ks.iter().map(|&k| k as f64).collect()),
        y: Axis::linear(format!("CPU time per {what} (µs, all nodes + clients)"), 0.0, (top * 1.2).max(1.0)),
        legend: LegendAt::UpperLeft,
        series,
        note: Some(format!(
            "process CPU time during the timed phase / operations; {} of {} cores busy (median); {} runs per point",
            fixed(min_median_max(&busy).1, 2),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            options.reps()
        )),
    };
    plot::draw(path, plot::SIZE, &chart)
}

fn plot(path: &Path, options: &Options, which: Which, rows: &[Row]) -> Result<()> {
    let dodge = 0.08 * (options.ks.iter().max().copied().unwrap_or(1) as f64).max(1.0) / 5.0;
    let mut series = Vec::new();
    let mut top: f64 = 0.0;
    let token_rows = rows.iter().any(is_token);
    let entries: &[bool] = if token_rows { &[false, true] } else { &[false] };
    for &token in entries {
        for (i, model) in MODELS.into_iter().enumerate() {
            let m = model_name(model);
            // Token-aware points sit to the right of each k, the reference's to the left.
            let offset = match (token_rows, token) {
                (false, _) => (i as f64 - 1.0) * dodge,
                (true, false) => (i as f64 - 3.0) * dodge * 0.6,
                (true, true) => (i as f64 + 1.0) * dodge * 0.6,
            };
            let points: Vec<Point> = options
                .ks
                .iter()
                .map(|&k| {
                    let five = five_numbers(&samples(rows, m, k, token));
                    top = top.max(five[4]);
                    Point::boxed(k as f64 + offset, five)
                })
                .collect();
            let label = match model {
                Consistency::Chain => "chain replication (strong)",
                Consistency::Eventual => "eventual consistency",
                Consistency::Craq => "CRAQ (chain, reads at every replica)",
            };
            let (label, color, marker) = match token {
                false => (
                    label.to_string(),
                    plot::model_color(model),
                    plot::model_marker(model),
                ),
                true => (
                    format!("{}, token-aware", label.split(" (").next().unwrap_or(label)),
                    plot::shade(plot::model_color(model), 0.45),
                    plot::Marker::Diamond,
                ),
            };
            series.push(Series::new(label, color, marker, points));
        }
    }
    let kmax = options.ks.iter().max().copied().unwrap_or(1) as f64;
    let (what, time) = match (which, options.backend) {
        (Which::Insert, Backend::Real) => ("Insert", "wall clock"),
        (Which::Query, Backend::Real) => ("Query", "wall clock"),
        (Which::Insert, Backend::Sim) => ("Insert", "virtual time"),
        (Which::Query, Backend::Sim) => ("Query", "virtual time"),
    };
    let backend = match (options.backend, options.link_latency()) {
        (Backend::Real, None) => "real HTTP ring on loopback".to_string(),
        (Backend::Real, Some(latency)) => format!("real ring, {latency} links"),
        (Backend::Sim, _) => "simulator, exp(1 ms) links".to_string(),
    };
    let per_client = rows.first().map_or(0, |r| r.ops / r.clients.max(1));
    let busy: Vec<f64> = rows.iter().filter_map(|r| r.cpu_cores_busy).collect();
    let busy = if options.link_latency().is_some() && !busy.is_empty() {
        format!(
            "; {} of {} cores busy",
            fixed(min_median_max(&busy).1, 2),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        )
    } else {
        String::new()
    };
    let chart = Chart {
        title: format!("{what} throughput vs replication factor ({} nodes, {backend})", options.nodes),
        x: Axis::linear("replication factor k", 0.5, kmax + 0.5).with_ticks(options.ks.iter().map(|&k| k as f64).collect()),
        y: Axis::linear(format!("throughput (operations/s, {time})"), 0.0, (top * 1.2).max(1.0)),
        // Token-aware clients' points start high at k = 1: the lower left is free.
        legend: match token_rows {
            true => LegendAt::LowerLeft,
            false => LegendAt::UpperRight,
        },
        series,
        note: Some(format!(
            "{} clients, {per_client} {} each{}; median of {} runs, bars: middle 50%, whiskers: min–max{busy}",
            workloads::FILES,
            if which == Which::Insert { "inserts" } else { "queries" },
            if token_rows {
                " (diamonds: token-aware, 1 ms from each node)"
            } else {
                ""
            },
            options.reps()
        )),
    };
    plot::draw(path, plot::SIZE, &chart)
}
