//! The read-heavy mix: read throughput against k for chain replication, eventual
//! consistency and CRAQ, with 95% and 70% reads (5% and 30% writes), in the simulator and
//! on a real ring whose node-to-node messages take 1 ms.
//!
//! Ten closed-loop clients, client N on node N of a fresh 10-node ring, draw keys
//! uniformly from 50 (`mix-0` … `mix-49`); every write carries a value of its own.
//! Under chain replication every read is answered by its key's tail (sent straight
//! there when the entry node's neighbour lists show it, else by way of the head);
//! under CRAQ and eventual consistency by the first replica on its route, which is often
//! the client's own node once k is large (k of the 10 nodes hold each key). CRAQ answers a
//! read there only when its copy is clean (the tail acknowledged it), else it asks the
//! tail: writes make copies dirty, so the 70/30 mix gains less.
//!
//! - **Simulator** (`readmix_sim.csv/.png`): a synthetic workload, virtual time. The
//!   simulator models message latency (exponential, 1 ms mean), not CPU, so a read a
//!   client's own node answers takes no time at all; the figures are those of the
//!   protocol's message paths alone.
//! - **Real ring** (`readmix_wan.csv/.png`): an in-process ring on loopback HTTP whose
//!   node-to-node messages wait 1 ms (`--link-latency`, as in the `_wan` throughput
//!   runs); the keys are written once before the timed phase; wall-clock time, so
//!   the HTTP and CPU cost of every hop counts too.
//!
//! Read throughput is reads / seconds from the first operation to the last answer.

use std::path::Path;

use ringkv_core::Consistency;
use ringkv_runtime::Outcome;
use ringkv_sim::check::{History, OpKind, OpStatus};
use ringkv_sim::workload::Op;
use ringkv_sim::{KeyDist, SimConfig, Synthetic, WorkloadSpec};
use serde::Serialize;

use crate::analysis::{five_numbers, min_median_max, percentile};
use crate::plot::{self, Axis, Chart, LegendAt, Point, Series};
use crate::real::{self, Ring};
use crate::runner::{
    fixed, model_name, ops, par_map, progress_bar, simulate, write_csv, Backend, Options, Report,
    Table, MODELS, WAN_LATENCY,
};
use crate::workloads::{Planned, FILES};
use crate::{ExperimentError, Result};

/// The read shares, in percent: 95/5 and 70/30.
pub const READ_PERCENTS: [u32; 2] = [95, 70];

/// Keys the clients draw from.
const KEYS: u64 = 50;

/// One repetition of one (model, k, mix) point: a row of `readmix_sim.csv` or
/// `readmix_wan.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `real` or `sim`.
    pub backend: String,
    /// `chain`, `eventual` or `craq`.
    pub model: String,
    /// Replication factor.
    pub k: usize,
    /// Share of reads, percent (the rest are writes).
    pub read_percent: u32,
    /// Repetition, from 1.
    pub rep: usize,
    /// Ring size.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Timed operations.
    pub ops: usize,
    /// Of them, reads.
    pub reads: usize,
    /// Of them, writes.
    pub writes: usize,
    /// Of them, answered with success.
    pub ok: usize,
    /// Of them, failed or timed out.
    pub errors: usize,
    /// First operation to last answer: wall-clock (real) or virtual (sim) seconds.
    pub seconds: f64,
    /// `wall` or `virtual`.
    pub time_base: String,
    /// `reads / seconds`.
    pub read_throughput_ops_per_s: f64,
    /// `ops / seconds`.
    pub throughput_ops_per_s: f64,
    /// Median latency of successful reads, ms.
    pub read_latency_p50_ms: f64,
    /// 99th percentile latency of successful reads, ms.
    pub read_latency_p99_ms: f64,
    /// The delay on every node-to-node message (real ring), e.g. `const:1ms`; empty in
    /// the simulator (exponential 1 ms links).
    pub link_latency: String,
}

/// Run the read-heavy mix on `options.backend`: the simulator, or a real ring with
/// `options.link_latency` (default 1 ms) links.
pub fn run(options: &Options) -> Result<Report> {
    let points = points(options);
    let bar = progress_bar(options, "readmix", points.len() as u64);
    let rows = match options.backend {
        Backend::Sim => measure_sim(options, &points, &bar)?,
        Backend::Real => measure_real(options, &points, &bar)?,
    };
    bar.finish_and_clear();
    report(options, &rows)
}

/// Repetitions per point: 1 with `quick`, else `--reps`, else 3 (real) or 5 (sim).
fn reps(options: &Options) -> usize {
    let default = match (options.quick, options.backend) {
        (true, _) => 1,
        (false, Backend::Real) => 3,
        (false, Backend::Sim) => 5,
    };
    options.reps.unwrap_or(default).max(1)
}

/// Timed operations per client.
fn ops_per_client(options: &Options) -> usize {
    match options.backend {
        Backend::Real => options.size(30, 150),
        Backend::Sim => options.size(100, 400),
    }
}

/// (rep, k, model), repetitions outermost; each runs both mixes.
fn points(options: &Options) -> Vec<(usize, usize, Consistency)> {
    let mut out = Vec::new();
    for rep in 1..=reps(options) {
        for &k in &options.ks {
            for model in MODELS {
                out.push((rep, k, model));
            }
        }
    }
    out
}

fn measure_sim(
    options: &Options,
    points: &[(usize, usize, Consistency)],
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Row>> {
    bar.set_message("simulator");
    let per_client = ops_per_client(options);
    let runs = par_map(points, |&(rep, k, model)| -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        for percent in READ_PERCENTS {
            let config = SimConfig {
                seed: options.seed + rep as u64 - 1,
                nodes: options.nodes,
                k,
                consistency: model,
                clients: Some(FILES),
                workload: WorkloadSpec::Synthetic(Synthetic {
                    ops: (per_client * FILES) as u64,
                    keys: KEYS,
                    read_fraction: f64::from(percent) / 100.0,
                    delete_fraction: 0.0,
                    key_dist: KeyDist::Uniform,
                }),
                ..SimConfig::default()
            };
            let (_, history) = simulate(config)?;
            let ops: Vec<Sample> = history
                .ops
                .iter()
                .map(|o| Sample {
                    read: o.f == OpKind::Read,
                    ok: o.status == OpStatus::Ok,
                    start_ns: o.invoke.time,
                    end_ns: o.complete.map_or(o.invoke.time, |c| c.time),
                })
                .collect();
            rows.push(row(options, (model, k, percent, rep), &ops, None));
        }
        bar.inc(1);
        Ok(rows)
    });
    let mut rows = Vec::new();
    for r in runs {
        rows.extend(r?);
    }
    Ok(rows)
}

fn measure_real(
    options: &Options,
    points: &[(usize, usize, Consistency)],
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Row>> {
    let latency = options.link_latency.unwrap_or(WAN_LATENCY);
    let per_client = ops_per_client(options);
    let mut rows = Vec::new();
    for &(rep, k, model) in points {
        bar.set_message(format!("real ring, {} k={k}, run {rep}", model_name(model)));
        let rt = real::runtime()?;
        rt.block_on(async {
            let ring = Ring::start(options.nodes, k, model, Some(latency)).await?;
            // Every key once, so that reads find values (not timed).
            let _ = ring.run_phase(load_scripts(options.nodes)).await;
            for percent in READ_PERCENTS {
                let seed = options.seed ^ (rep as u64) << 8 ^ u64::from(percent);
                let scripts = mix_scripts(options.nodes, per_client, percent, seed);
                let phase = ring.run_phase(scripts).await;
                let samples = real_samples(&phase)?;
                let cell = Some(latency.to_string());
                rows.push(row(options, (model, k, percent, rep), &samples, cell));
            }
            ring.stop().await;
            Ok::<(), ExperimentError>(())
        })?;
        bar.inc(1);
    }
    Ok(rows)
}

/// The untimed load: client c writes keys c, c + 10, … once.
fn load_scripts(nodes: usize) -> Vec<Vec<(usize, Planned)>> {
    (0..FILES)
        .map(|c| {
            (c as u64..KEYS)
                .step_by(FILES)
                .enumerate()
                .map(|(i, key)| {
                    let op = Op {
                        f: OpKind::Write,
                        key: format!("mix-{key}"),
                        value: Some(format!("load{c}.{i}")),
                    };
                    (c % nodes.max(1), planned(c, i, op))
                })
                .collect()
        })
        .collect()
}

/// Client c's timed operations on node c: `percent`% reads of uniform keys, the rest
/// writes of values of their own.
fn mix_scripts(
    nodes: usize,
    per_client: usize,
    percent: u32,
    seed: u64,
) -> Vec<Vec<(usize, Planned)>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..FILES)
        .map(|c| {
            (0..per_client)
                .map(|i| {
                    let key = format!("mix-{}", rng.gen_range(0..KEYS));
                    let read = rng.gen_range(0..100) < percent;
                    let op = match read {
                        true => Op {
                            f: OpKind::Read,
                            key,
                            value: None,
                        },
                        false => Op {
                            f: OpKind::Write,
                            key,
                            value: Some(format!("m{percent}.{c}.{i}")),
                        },
                    };
                    (c % nodes.max(1), planned(c, i, op))
                })
                .collect()
        })
        .collect()
}

fn planned(file: usize, i: usize, op: Op) -> Planned {
    Planned {
        file,
        line: i + 1,
        op,
    }
}

/// One timed operation, in either backend.
struct Sample {
    read: bool,
    ok: bool,
    start_ns: u64,
    end_ns: u64,
}

/// The samples of a real phase: its records' kinds and outcomes, with times from the
/// phase's history (nanoseconds since the phase began).
fn real_samples(phase: &real::Phase) -> Result<Vec<Sample>> {
    let history =
        History::from_events(phase.events.clone()).map_err(|e| ExperimentError(e.to_string()))?;
    Ok(phase
        .records
        .iter()
        .map(|r| {
            let op = history.ops.get(r.op_id);
            let start_ns = op.map_or(0, |o| o.invoke.time);
            let end_ns = op.and_then(|o| o.complete).map_or(start_ns, |c| c.time);
            Sample {
                read: r.planned.op.f == OpKind::Read,
                ok: matches!(r.outcome, Outcome::Ok(_)),
                start_ns,
                end_ns: end_ns.max(start_ns),
            }
        })
        .collect())
}

fn row(
    options: &Options,
    (model, k, percent, rep): (Consistency, usize, u32, usize),
    samples: &[Sample],
    link_latency: Option<String>,
) -> Row {
    let first = samples.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let last = samples.iter().map(|s| s.end_ns).max().unwrap_or(first);
    let seconds = (last - first) as f64 / 1e9;
    let reads = samples.iter().filter(|s| s.read).count();
    let ok = samples.iter().filter(|s| s.ok).count();
    let mut latencies: Vec<u64> = samples
        .iter()
        .filter(|s| s.read && s.ok)
        .map(|s| s.end_ns - s.start_ns)
        .collect();
    latencies.sort_unstable();
    let per_s = |n: usize| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    Row {
        backend: options.backend.to_string(),
        model: model_name(model).into(),
        k,
        read_percent: percent,
        rep,
        nodes: options.nodes,
        clients: FILES,
        ops: samples.len(),
        reads,
        writes: samples.len() - reads,
        ok,
        errors: samples.len() - ok,
        seconds,
        time_base: match options.backend {
            Backend::Real => "wall".into(),
            Backend::Sim => "virtual".into(),
        },
        read_throughput_ops_per_s: per_s(reads),
        throughput_ops_per_s: per_s(samples.len()),
        read_latency_p50_ms: percentile(&latencies, 50.0) as f64 / 1e6,
        read_latency_p99_ms: percentile(&latencies, 99.0) as f64 / 1e6,
        link_latency: link_latency.unwrap_or_default(),
    }
}

/// Read throughput samples of (model, k, mix).
fn samples(rows: &[Row], model: &str, k: usize, percent: u32) -> Vec<f64> {
    rows.iter()
        .filter(|r| r.model == model && r.k == k && r.read_percent == percent)
        .map(|r| r.read_throughput_ops_per_s)
        .collect()
}

/// Median read throughput of (model, k, mix).
pub fn median(rows: &[Row], model: &str, k: usize, percent: u32) -> f64 {
    min_median_max(&samples(rows, model, k, percent)).1
}

fn file_stem(options: &Options) -> &'static str {
    match options.backend {
        Backend::Sim => "readmix_sim",
        Backend::Real => "readmix_wan",
    }
}

fn report(options: &Options, rows: &[Row]) -> Result<Report> {
    let stem = file_stem(options);
    let csv = options.path(&format!("{stem}.csv"));
    let png = options.path(&format!("{stem}.png"));
    write_csv(&csv, rows)?;
    plot(&png, options, rows)?;
    let (backend, unit) = match options.backend {
        Backend::Sim => ("simulator".to_string(), "reads/virtual s"),
        Backend::Real => (
            format!(
                "real ring, {} links",
                options.link_latency.unwrap_or(WAN_LATENCY)
            ),
            "reads/s",
        ),
    };
    let mut table = Table::new(
        format!(
            "Read-heavy mix: read throughput ({backend}, {} nodes, {FILES} clients, {} runs per point)",
            options.nodes,
            reps(options)
        ),
        &[
            "reads %",
            "model",
            "k",
            &format!("median {unit}"),
            "min",
            "max",
            "× chain",
            "read p99 ms (median)",
            "errors",
        ][..],
    );
    let mut warnings = Vec::new();
    for percent in READ_PERCENTS {
        for model in MODELS {
            let m = model_name(model);
            for &k in &options.ks {
                let (lo, med, hi) = min_median_max(&samples(rows, m, k, percent));
                let chain = median(rows, "chain", k, percent);
                let mine: Vec<&Row> = rows
                    .iter()
                    .filter(|r| r.model == m && r.k == k && r.read_percent == percent)
                    .collect();
                let p99: Vec<f64> = mine.iter().map(|r| r.read_latency_p99_ms).collect();
                let errors: usize = mine.iter().map(|r| r.errors).sum();
                let total: usize = mine.iter().map(|r| r.ops).sum();
                table.row(vec![
                    percent.to_string(),
                    m.into(),
                    k.to_string(),
                    ops(med),
                    ops(lo),
                    ops(hi),
                    fixed(med / chain, 2),
                    fixed(min_median_max(&p99).1, 2),
                    format!("{errors}/{total}"),
                ]);
                if errors > 0 {
                    warnings.push(format!(
                        "{m} k={k} {percent}% reads: {errors} of {total} operations failed"
                    ));
                }
            }
        }
    }
    Ok(Report {
        name: match options.backend {
            Backend::Sim => "readmix (sim)",
            Backend::Real => "readmix (wan)",
        },
        files: vec![csv, png],
        table,
        warnings,
        seconds: 0.0,
    })
}

/// Two panels side by side, 95% and 70% reads: read throughput against k per model.
fn plot(path: &Path, options: &Options, rows: &[Row]) -> Result<()> {
    let kmax = options.ks.iter().max().copied().unwrap_or(1) as f64;
    let dodge = 0.08 * kmax.max(1.0) / 5.0;
    let top = rows
        .iter()
        .map(|r| r.read_throughput_ops_per_s)
        .fold(0.0, f64::max);
    let (backend, time) = match options.backend {
        Backend::Sim => ("simulator, exp(1 ms) links".to_string(), "virtual time"),
        Backend::Real => (
            format!(
                "real ring, {} links",
                options.link_latency.unwrap_or(WAN_LATENCY)
            ),
            "wall clock",
        ),
    };
    let charts: Vec<Chart> = READ_PERCENTS
        .iter()
        .map(|&percent| {
            let series = MODELS
                .into_iter()
                .enumerate()
                .map(|(i, model)| {
                    let m = model_name(model);
                    let points = options
                        .ks
                        .iter()
                        .map(|&k| {
                            let five = five_numbers(&samples(rows, m, k, percent));
                            Point::boxed(k as f64 + (i as f64 - 1.0) * dodge, five)
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
            Chart {
                title: format!("{percent}% reads, {}% writes: read throughput vs k", 100 - percent),
                x: Axis::linear("replication factor k", 0.5, kmax + 0.5)
                    .with_ticks(options.ks.iter().map(|&k| k as f64).collect()),
                y: Axis::linear(
                    format!("reads/s ({time})"),
                    0.0,
                    (top * 1.15).max(1.0),
                ),
                legend: LegendAt::UpperLeft,
                series,
                note: Some(format!(
                    "{backend}; {} nodes, {FILES} clients, {KEYS} keys; median of {} runs, whiskers min–max",
                    options.nodes,
                    reps(options)
                )),
            }
        })
        .collect();
    plot::draw_panels(path, plot::WIDE, None, &charts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_mix_reads_and_writes_as_asked_with_unique_values() {
        let scripts = mix_scripts(10, 200, 95, 3);
        assert_eq!(scripts.len(), FILES);
        let all: Vec<&Planned> = scripts.iter().flatten().map(|(_, p)| p).collect();
        let reads = all.iter().filter(|p| p.op.f == OpKind::Read).count();
        assert!((1800..=1960).contains(&reads), "{reads} of 2000");
        let values: std::collections::BTreeSet<_> =
            all.iter().filter_map(|p| p.op.value.clone()).collect();
        assert_eq!(values.len(), all.len() - reads);
        let load: usize = load_scripts(10).iter().map(Vec::len).sum();
        assert_eq!(load as u64, KEYS);
    }
}
