//! Experiment 3: the mixed `requests` files, and what consistency the answers had.
//!
//! Per (model, k), two kinds of run, each on a fresh ring and repeated: the ten clients running
//! `requests/requests_0N.txt` concurrently (client N at node N), and, as the reference
//! experiment does, one client sending every request of the ten files in order, each to a
//! random node (seeded). Each run's history is checked by the linearizability checker
//! (`ringkv_sim::check`), and every read is classified fresh / stale / impossible by the
//! checker's staleness definitions. The reference's own rule ("a read differing from the
//! last value this client inserted is stale") is reported alongside only for comparison:
//! it is wrong under concurrency, where another client's newer write is not stale.
//!
//! Written values are the file's integer made unique, `<int>#<NN>:<line>`, and an insert
//! replaces the value (the reference adds the integers).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::Consistency;
use ringkv_sim::check::{
    check_linearizability, write_event, CheckOptions, History, OpKind, OpStatus,
};
use ringkv_sim::{Reference, SimConfig, WorkloadSpec};
use serde::Serialize;

use crate::analysis::{classify_reads, counts, reference_rule_stale, ReadClass};
use crate::real::{self, Ring};
use crate::runner::{
    fixed, model_name, progress_bar, simulate, write_csv, Backend, Options, Report, Table, MODELS,
};
use crate::throughput::scripts;
use crate::workloads::{self, Planned};
use crate::{ExperimentError, Result};

/// Concurrent clients or one sequential client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Ten clients at once, client N at node N.
    Concurrent,
    /// One client, every request in file order, each to a random node.
    Sequential,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Concurrent => "concurrent",
            Mode::Sequential => "sequential",
        }
    }
}

/// A row of `requests_consistency.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `real` or `sim`.
    pub backend: String,
    /// `chain`, `eventual` or `craq`.
    pub model: String,
    /// Replication factor.
    pub k: usize,
    /// `concurrent` (10 clients) or `sequential` (1 client, random nodes).
    pub mode: String,
    /// Repetition, from 1.
    pub rep: usize,
    /// Clients.
    pub clients: usize,
    /// Operations.
    pub operations: usize,
    /// Inserts.
    pub writes: usize,
    /// Queries.
    pub reads: usize,
    /// Operations answered with success.
    pub ok: usize,
    /// Operations whose outcome is unknown (timeouts).
    pub info: usize,
    /// Operations that certainly failed.
    pub fail: usize,
    /// Reads that returned a latest value (or a concurrent write's).
    pub fresh_reads: usize,
    /// Reads that returned a superseded value.
    pub stale_reads: usize,
    /// Reads of a value never written before or during them.
    pub impossible_reads: usize,
    /// `stale_reads / reads answered`.
    pub stale_fraction: f64,
    /// Reads the reference's rule calls stale (differs from the last value this client
    /// inserted); for comparison only.
    pub reference_rule_stale: usize,
    /// Checker verdict: `linearizable`, `violation` or `unknown`.
    pub linearizability: String,
    /// Keys found not linearizable.
    pub violation_keys: usize,
    /// Keys whose check ran out of budget.
    pub unknown_keys: usize,
    /// Duration of the run: wall (real) or virtual (sim) seconds.
    pub seconds: f64,
    /// Why the first violating key is not linearizable (one line), if any.
    pub example: String,
    /// The delay added to every node-to-node message, e.g. `const:1ms` (real backend with
    /// `--link-latency` only: `requests_consistency_wan.csv`; absent from the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_latency: Option<String>,
}

/// A row of `requests_values.csv`: what one query returned under each model (first
/// repetition).
#[derive(Clone, Debug, Serialize)]
pub struct ValueRow {
    /// `real` or `sim`.
    pub backend: String,
    /// `concurrent` or `sequential`.
    pub mode: String,
    /// Replication factor.
    pub k: usize,
    /// The requests file (`NN` of `requests_NN.txt`).
    pub file: usize,
    /// Line in that file.
    pub line: usize,
    /// The queried title.
    pub key: String,
    /// The value chain replication returned (empty: not found).
    pub chain_value: String,
    /// `fresh`, `stale`, `impossible`, or the failure (`fail`, `info`).
    pub chain_read: String,
    /// The value eventual consistency returned.
    pub eventual_value: String,
    /// As `chain_read`.
    pub eventual_read: String,
    /// The value CRAQ returned.
    pub craq_value: String,
    /// As `chain_read`.
    pub craq_read: String,
}

/// One checked run.
struct Run {
    row: Row,
    /// (file, line) → (key, value, class) for every query.
    reads: BTreeMap<(usize, usize), (String, String, String)>,
}

/// Run experiment 3.
pub fn run(options: &Options) -> Result<Report> {
    let dir = options.workload_dir.as_deref();
    let files = workloads::timed_phase(Reference::Requests, dir)
        .map_err(|e| ExperimentError(e.to_string()))?;
    let mut plan = Vec::new();
    for rep in 1..=options.request_reps() {
        for &k in &options.ks {
            for mode in [Mode::Concurrent, Mode::Sequential] {
                for model in MODELS {
                    plan.push((k, mode, model, rep));
                }
            }
        }
    }
    let bar = progress_bar(options, "requests", plan.len() as u64);
    let mut runs = Vec::new();
    for &(k, mode, model, rep) in &plan {
        bar.set_message(format!(
            "{} backend, {} k={k}, {}, run {rep}/{}",
            options.backend,
            model_name(model),
            mode.name(),
            options.request_reps()
        ));
        let seed = options.seed + rep as u64 - 1;
        let outcome = match options.backend {
            // A fresh runtime per ring, as in the throughput experiments.
            Backend::Real => {
                real::runtime()?.block_on(run_real(options, &files, k, mode, model, seed))?
            }
            Backend::Sim => run_sim(options, &files, k, mode, model, seed)?,
        };
        if options.histories && rep == 1 {
            write_history(options, k, mode, model, &outcome.jsonl)?;
        }
        runs.push((
            (k, mode, model, rep),
            check(options, (k, mode, model, rep), &outcome),
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    report(options, runs)
}

/// One run: its history (checked form and JSON Lines text), the (file, line) of each
/// operation id, and its duration in seconds.
struct Outcome {
    history: History,
    jsonl: Vec<u8>,
    places: Vec<Option<(usize, usize)>>,
    seconds: f64,
}

async fn run_real(
    options: &Options,
    files: &[Vec<Planned>],
    k: usize,
    mode: Mode,
    model: Consistency,
    seed: u64,
) -> Result<Outcome> {
    let ring = Ring::start(options.nodes, k, model, options.link_latency()).await?;
    let scripts = match mode {
        Mode::Concurrent => scripts(files, options.nodes),
        Mode::Sequential => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((k as u64) << 8));
            vec![files
                .iter()
                .flatten()
                .map(|p| (rng.gen_range(0..options.nodes), p.clone()))
                .collect()]
        }
    };
    let phase = ring.run_phase(scripts).await;
    ring.stop().await;
    let mut places = vec![None; phase.records.len()];
    for r in &phase.records {
        if let Some(slot) = places.get_mut(r.op_id) {
            *slot = Some((r.planned.file, r.planned.line));
        }
    }
    let mut jsonl = Vec::new();
    for e in &phase.events {
        write_event(&mut jsonl, e)?;
    }
    let history = History::from_events(phase.events)
        .map_err(|e| ExperimentError(format!("the recorded history is malformed: {e}")))?;
    Ok(Outcome {
        history,
        jsonl,
        places,
        seconds: phase.seconds,
    })
}

fn run_sim(
    options: &Options,
    files: &[Vec<Planned>],
    k: usize,
    mode: Mode,
    model: Consistency,
    seed: u64,
) -> Result<Outcome> {
    let clients = match mode {
        Mode::Concurrent => None,
        Mode::Sequential => Some(1),
    };
    let config = SimConfig {
        seed,
        nodes: options.nodes,
        k,
        consistency: model,
        clients,
        workload: WorkloadSpec::Reference(Reference::Requests),
        workload_dir: options.workload_dir.clone(),
        ..SimConfig::default()
    };
    let (result, history) = simulate(config)?;
    let seconds = result.summary.virtual_seconds;
    // Client c runs its files in order (with one client, all ten); its process id is c
    // until an operation ends `info` (none do without faults).
    let per_client: Vec<Vec<&Planned>> = match mode {
        Mode::Concurrent => files.iter().map(|f| f.iter().collect()).collect(),
        Mode::Sequential => vec![files.iter().flatten().collect()],
    };
    let mut seen = vec![0usize; per_client.len()];
    let places = history
        .ops
        .iter()
        .map(|op| {
            let c = usize::try_from(op.process)
                .ok()
                .filter(|&c| c < per_client.len())?;
            let p = per_client[c].get(seen[c])?;
            seen[c] += 1;
            Some((p.file, p.line))
        })
        .collect();
    Ok(Outcome {
        history,
        jsonl: result.history,
        places,
        seconds,
    })
}

fn write_history(
    options: &Options,
    k: usize,
    mode: Mode,
    model: Consistency,
    jsonl: &[u8],
) -> Result<()> {
    let dir = options.path("histories");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!(
        "requests_{}_{}_k{k}_{}{}.jsonl",
        options.backend,
        model_name(model),
        mode.name(),
        options.suffix()
    ));
    let mut out = BufWriter::new(File::create(&path)?);
    out.write_all(jsonl)?;
    out.flush()?;
    Ok(())
}

fn check(options: &Options, (k, mode, model, rep): Key, outcome: &Outcome) -> Result<Run> {
    let Outcome {
        history,
        places,
        seconds,
        ..
    } = outcome;
    let seconds = *seconds;
    let lin = check_linearizability(history, &CheckOptions::default());
    let classes = classify_reads(history);
    let c = counts(history);
    let count = |class: ReadClass| classes.iter().filter(|r| r.class == class).count();
    let class_of: BTreeMap<usize, ReadClass> = classes.iter().map(|r| (r.op, r.class)).collect();
    let mut reads = BTreeMap::new();
    for op in history.ops.iter().filter(|o| o.f == OpKind::Read) {
        let Some(Some(place)) = places.get(op.id) else {
            continue;
        };
        let verdict = match (op.status, class_of.get(&op.id)) {
            (OpStatus::Ok, Some(class)) => class.as_str().to_string(),
            (status, _) => status.as_str().to_string(),
        };
        let value = if op.status == OpStatus::Ok {
            op.value.clone().unwrap_or_default()
        } else {
            String::new()
        };
        reads.insert(*place, (op.key.clone(), value, verdict));
    }
    let example = lin
        .counterexamples()
        .next()
        .map(|cx| {
            let why = cx
                .reasons
                .first()
                .cloned()
                .unwrap_or_else(|| "no linearization exists".into());
            format!("key {:?}: {why}", cx.key)
        })
        .unwrap_or_default();
    let answered = classes.len();
    Ok(Run {
        row: Row {
            backend: options.backend.to_string(),
            model: model_name(model).into(),
            k,
            mode: mode.name().into(),
            rep,
            clients: if mode == Mode::Concurrent {
                workloads::FILES
            } else {
                1
            },
            operations: c.ops,
            writes: c.writes,
            reads: c.reads,
            ok: c.ok,
            info: c.info,
            fail: c.fail,
            fresh_reads: count(ReadClass::Fresh),
            stale_reads: count(ReadClass::Stale),
            impossible_reads: count(ReadClass::Impossible),
            stale_fraction: if answered == 0 {
                0.0
            } else {
                count(ReadClass::Stale) as f64 / answered as f64
            },
            reference_rule_stale: reference_rule_stale(history),
            linearizability: lin.verdict.as_str().into(),
            violation_keys: lin.violation_keys,
            unknown_keys: lin.unknown_keys,
            seconds,
            example,
            link_latency: options.link_latency_cell(),
        },
        reads,
    })
}

/// (k, mode, model, repetition).
type Key = (usize, Mode, Consistency, usize);

fn report(options: &Options, runs: Vec<(Key, Result<Run>)>) -> Result<Report> {
    let mut done: BTreeMap<Key, Run> = BTreeMap::new();
    for (key, run) in runs {
        done.insert(key, run?);
    }
    let rows: Vec<Row> = done.values().map(|r| r.row.clone()).collect();
    let csv = options.path(&format!("requests_consistency{}.csv", options.suffix()));
    write_csv(&csv, &rows)?;
    let mut values = Vec::new();
    for &k in &options.ks {
        for mode in [Mode::Concurrent, Mode::Sequential] {
            let (Some(chain), Some(eventual)) = (
                done.get(&(k, mode, Consistency::Chain, 1)),
                done.get(&(k, mode, Consistency::Eventual, 1)),
            ) else {
                continue;
            };
            let craq = done.get(&(k, mode, Consistency::Craq, 1));
            for (place, (key, cv, cc)) in &chain.reads {
                let read_of = |run: Option<&Run>| {
                    run.and_then(|r| r.reads.get(place))
                        .map(|(_, v, c)| (v.clone(), c.clone()))
                        .unwrap_or_default()
                };
                let (ev, ec) = read_of(Some(eventual));
                let (qv, qc) = read_of(craq);
                values.push(ValueRow {
                    backend: options.backend.to_string(),
                    mode: mode.name().into(),
                    k,
                    file: place.0,
                    line: place.1,
                    key: key.clone(),
                    chain_value: cv.clone(),
                    chain_read: cc.clone(),
                    eventual_value: ev,
                    eventual_read: ec,
                    craq_value: qv,
                    craq_read: qc,
                });
            }
        }
    }
    let values_csv = options.path(&format!("requests_values{}.csv", options.suffix()));
    write_csv(&values_csv, &values)?;
    let reps = options.request_reps();
    let mut table = Table::new(
        format!(
            "3. Requests: consistency of the answers ({} backend{}, {reps} run(s) each, checked histories)",
            options.backend,
            options
                .link_latency()
                .map(|l| format!(", {l} links"))
                .unwrap_or_default()
        ),
        &[
            "model",
            "k",
            "mode",
            "ops",
            "reads",
            "stale",
            "stale %",
            "ref. rule 'stale'",
            "linearizability",
        ],
    );
    let mut warnings = Vec::new();
    for &k in &options.ks {
        for mode in [Mode::Concurrent, Mode::Sequential] {
            for model in MODELS {
                let mine: Vec<&Row> = done
                    .iter()
                    .filter(|((rk, rm, rmodel, _), _)| *rk == k && *rm == mode && *rmodel == model)
                    .map(|(_, r)| &r.row)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let sum = |f: &dyn Fn(&Row) -> usize| mine.iter().map(|r| f(r)).sum::<usize>();
                let answered = sum(&|r| r.fresh_reads + r.stale_reads + r.impossible_reads);
                let stale = sum(&|r| r.stale_reads);
                let linearizable = mine
                    .iter()
                    .filter(|r| r.linearizability == "linearizable")
                    .count();
                let violations = mine
                    .iter()
                    .filter(|r| r.linearizability == "violation")
                    .count();
                let verdict = if linearizable == mine.len() {
                    format!("linearizable ({linearizable}/{})", mine.len())
                } else if violations > 0 {
                    format!("violation in {violations}/{}", mine.len())
                } else {
                    format!("unknown in {}/{}", mine.len() - linearizable, mine.len())
                };
                table.row(vec![
                    model_name(model).into(),
                    k.to_string(),
                    mode.name().into(),
                    sum(&|r| r.operations).to_string(),
                    sum(&|r| r.reads).to_string(),
                    stale.to_string(),
                    fixed(100.0 * stale as f64 / answered.max(1) as f64, 2),
                    sum(&|r| r.reference_rule_stale).to_string(),
                    verdict,
                ]);
            }
        }
    }
    for r in &rows {
        let promised = r.model == "chain" || r.model == "craq";
        if promised && r.linearizability != "linearizable" {
            warnings.push(format!(
                "{} k={} {} run {}: {} ({} keys){}",
                r.model,
                r.k,
                r.mode,
                r.rep,
                r.linearizability,
                r.violation_keys,
                if r.example.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.example)
                }
            ));
        }
        if r.ok < r.operations {
            warnings.push(format!(
                "{} k={} {} run {}: {} of {} operations did not succeed",
                r.model,
                r.k,
                r.mode,
                r.rep,
                r.operations - r.ok,
                r.operations
            ));
        }
    }
    Ok(Report {
        name: "requests",
        files: vec![csv, values_csv],
        table,
        warnings,
        seconds: 0.0,
    })
}
