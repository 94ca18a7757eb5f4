//! The load client behind `dht bench`: concurrent HTTP clients against a real ring, with
//! throughput, latency percentiles and, optionally, a history in the checker's JSON Lines
//! format (`ringkv_sim::check::HistoryEvent`), so real traces can be checked with
//! `dht check`.
//!
//! Each client is one process in the history: it has at most one request outstanding, is
//! bound to one node of the overlay (clients are spread round-robin over all nodes), and
//! continues under a fresh process id after an operation whose outcome is unknown.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_runtime::{encode_segment, outcome, Cause, DataOp, HttpClient, Outcome};
use ringkv_sim::check::{write_event, EventType, HistoryEvent, OpKind};
use serde::Serialize;

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// Inserts of unique keys and values.
    Insert,
    /// Queries of keys inserted beforehand (the preload is not timed).
    Query,
    /// Reads and writes (and optionally deletes) over a few keys, like the reference
    /// design's `requests` files; every written value is unique.
    Requests,
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "insert" | "inserts" | "write" | "writes" => Ok(Mix::Insert),
            "query" | "queries" | "read" | "reads" => Ok(Mix::Query),
            "requests" | "mixed" => Ok(Mix::Requests),
            _ => Err(format!("unknown mix '{s}': use insert, query or requests")),
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mix::Insert => "insert",
            Mix::Query => "query",
            Mix::Requests => "requests",
        })
    }
}

/// A load run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// `host:port` of any node; the overlay is read from it.
    pub target: String,
    /// Timed operations in total.
    pub ops: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Operation mix.
    pub mix: Mix,
    /// Distinct keys: preloaded keys for `query` (default 1000), keys touched by
    /// `requests` (default 4). Ignored by `insert`.
    pub keys: Option<usize>,
    /// Fraction of `requests` operations that write.
    pub write_ratio: f64,
    /// Fraction of `requests` operations that delete.
    pub delete_ratio: f64,
    /// Seed of the clients' choices.
    pub seed: u64,
    /// Per-request client timeout.
    pub timeout: Duration,
    /// Where to write the history, if anywhere.
    pub history: Option<PathBuf>,
    /// Prefix of generated keys, so runs against the same ring do not collide.
    pub key_prefix: String,
}

impl LoadOptions {
    /// `ops` operations of `mix` by `clients` clients against `target`, no history.
    pub fn new(target: impl Into<String>, mix: Mix, ops: u64, clients: usize) -> LoadOptions {
        LoadOptions {
            target: target.into(),
            ops,
            clients,
            mix,
            keys: None,
            write_ratio: 0.2,
            delete_ratio: 0.0,
            seed: 1,
            timeout: Duration::from_secs(15),
            history: None,
            key_prefix: String::new(),
        }
    }

    fn keys(&self) -> usize {
        match (self.keys, self.mix) {
            (Some(k), _) => k.max(1),
            (None, Mix::Query) => 1000,
            (None, _) => 4,
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The overlay could not be read from the target.
    #[error("cannot read the overlay from {target}: {reason}")]
    Overlay {
        /// The target.
        target: String,
        /// Why.
        reason: String,
    },
    /// The history file could not be written.
    #[error("cannot write the history to {path}: {source}")]
    History {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Nonsense options.
    #[error("{0}")]
    Options(String),
}

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
    fn of(mut samples: Vec<u64>) -> Latency {
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
            "{} ops of '{}' by {} clients over {} nodes in {:.2} s: {:.0} ops/s",
            self.ops,
            self.mix,
            self.clients,
            self.nodes.len(),
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
        if self.history_events > 0 {
            write!(f, "\nhistory: {} events", self.history_events)?;
        }
        Ok(())
    }
}

/// Run the load and return what it measured.
pub async fn run(options: &LoadOptions) -> Result<LoadReport, LoadError> {
    if options.clients == 0 {
        return Err(LoadError::Options("--clients must be at least 1".into()));
    }
    let client = HttpClient::new(options.timeout);
    let nodes = read_overlay(&client, &options.target).await?;
    let recorder = Arc::new(Recorder::open(options.history.as_ref())?);
    let shared = Arc::new(Shared {
        client,
        nodes: nodes.clone(),
        recorder: recorder.clone(),
        next_process: AtomicU64::new(options.clients as u64),
        options: options.clone(),
    });
    let mut preload_s = 0.0;
    if options.mix == Mix::Query {
        let started = Instant::now();
        let keys = options.keys() as u64;
        let preload = run_phase(&shared, keys, Phase::Preload).await;
        if preload.errors.values().sum::<u64>() > 0 {
            tracing::warn!(errors = ?preload.errors, "some preload inserts failed");
        }
        preload_s = started.elapsed().as_secs_f64();
    }
    let started = Instant::now();
    let tally = run_phase(&shared, options.ops, Phase::Timed).await;
    let elapsed_s = started.elapsed().as_secs_f64();
    let history_events = recorder.finish().map_err(|source| LoadError::History {
        path: options.history.clone().unwrap_or_default(),
        source,
    })?;
    Ok(LoadReport {
        mix: options.mix,
        nodes,
        clients: options.clients,
        ops: tally.ops,
        ok: tally.ok,
        not_found: tally.not_found,
        errors: tally.errors,
        elapsed_s,
        ops_per_s: tally.ops as f64 / elapsed_s.max(1e-9),
        latency: Latency::of(tally.latencies_us),
        mean_hops: tally.hops as f64 / tally.hops_counted.max(1) as f64,
        preload_s,
        history_events,
    })
}

async fn read_overlay(client: &HttpClient, target: &str) -> Result<Vec<String>, LoadError> {
    let failed = |reason: String| LoadError::Overlay {
        target: target.to_string(),
        reason,
    };
    let reply = client
        .get(&format!("http://{target}/overlay"))
        .await
        .map_err(|e| failed(e.to_string()))?;
    if reply.status != 200 {
        return Err(failed(format!("status {}: {}", reply.status, reply.text())));
    }
    let nodes: Vec<String> = reply.value()["overlay"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if nodes.is_empty() {
        return Err(failed("the overlay is empty".into()));
    }
    Ok(nodes)
}

struct Shared {
    client: HttpClient,
    nodes: Vec<String>,
    recorder: Arc<Recorder>,
    next_process: AtomicU64,
    options: LoadOptions,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preload,
    Timed,
}

#[derive(Default)]
struct Tally {
    ops: u64,
    ok: u64,
    not_found: u64,
    errors: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
    hops: u64,
    hops_counted: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.ok += other.ok;
        self.not_found += other.not_found;
        for (cause, n) in other.errors {
            *self.errors.entry(cause).or_default() += n;
        }
        self.latencies_us.extend(other.latencies_us);
        self.hops += other.hops;
        self.hops_counted += other.hops_counted;
    }
}

/// `ops` operations shared out among the clients through a common counter.
async fn run_phase(shared: &Arc<Shared>, ops: u64, phase: Phase) -> Tally {
    let next_op = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(shared.options.clients);
    for client in 0..shared.options.clients {
        let shared = shared.clone();
        let next_op = next_op.clone();
        tasks.push(tokio::spawn(async move {
            let mut worker = Worker::new(&shared, client, phase);
            worker.run(&shared, &next_op, ops).await;
            worker.tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(err) => tracing::error!(%err, "a client task failed"),
        }
    }
    total
}

/// One operation.
struct Op {
    f: OpKind,
    key: String,
    value: Option<String>,
}

struct Worker {
    process: u64,
    base: String,
    rng: ChaCha8Rng,
    phase: Phase,
    writes: u64,
    tally: Tally,
}

impl Worker {
    fn new(shared: &Shared, client: usize, phase: Phase) -> Worker {
        let node = &shared.nodes[client % shared.nodes.len()];
        let stream = if phase == Phase::Preload { 1 << 32 } else { 0 };
        Worker {
            process: client as u64,
            base: format!("http://{node}"),
            rng: ChaCha8Rng::seed_from_u64(
                shared.options.seed ^ (client as u64 + stream).wrapping_mul(0x9E37_79B9),
            ),
            phase,
            writes: 0,
            tally: Tally::default(),
        }
    }

    async fn run(&mut self, shared: &Shared, next_op: &AtomicU64, ops: u64) {
        loop {
            let n = next_op.fetch_add(1, Ordering::Relaxed);
            if n >= ops {
                return;
            }
            let op = self.choose(shared, n);
            self.execute(shared, op).await;
        }
    }

    fn choose(&mut self, shared: &Shared, n: u64) -> Op {
        let o = &shared.options;
        let prefix = &o.key_prefix;
        let write = |key: String, value: String| Op {
            f: OpKind::Write,
            key,
            value: Some(value),
        };
        match (self.phase, o.mix) {
            (Phase::Preload, _) => write(format!("{prefix}song-{n}"), format!("value-{n}")),
            (Phase::Timed, Mix::Insert) => write(format!("{prefix}key-{n}"), format!("value-{n}")),
            (Phase::Timed, Mix::Query) => Op {
                f: OpKind::Read,
                key: format!("{prefix}song-{}", self.rng.gen_range(0..o.keys())),
                value: None,
            },
            (Phase::Timed, Mix::Requests) => {
                let key = format!("{prefix}title-{}", self.rng.gen_range(0..o.keys()));
                let roll: f64 = self.rng.gen();
                if roll < o.write_ratio {
                    self.writes += 1;
                    write(key, format!("p{}-{}", self.process, self.writes))
                } else if roll < o.write_ratio + o.delete_ratio {
                    Op {
                        f: OpKind::Delete,
                        key,
                        value: None,
                    }
                } else {
                    Op {
                        f: OpKind::Read,
                        key,
                        value: None,
                    }
                }
            }
        }
    }

    async fn execute(&mut self, shared: &Shared, op: Op) {
        let recorder = &shared.recorder;
        recorder.record(|time| {
            HistoryEvent::invoke(self.process, op.f, &op.key, op.value.as_deref(), time)
        });
        let started = Instant::now();
        let result = match op.f {
            OpKind::Write => {
                let value = op.value.as_deref().unwrap_or_default();
                let url = format!(
                    "{}/insert/{}/{}",
                    self.base,
                    encode_segment(&op.key),
                    encode_segment(value)
                );
                shared.client.post(&url, None).await
            }
            OpKind::Read => {
                shared
                    .client
                    .get(&format!("{}/query/{}", self.base, encode_segment(&op.key)))
                    .await
            }
            OpKind::Delete => {
                shared
                    .client
                    .delete(&format!("{}/delete/{}", self.base, encode_segment(&op.key)))
                    .await
            }
        };
        let outcome = outcome(data_op(op.f), result);
        let latency_us = started.elapsed().as_micros() as u64;
        recorder.record(|time| completion(self.process, &op, &outcome, time));
        self.count(&outcome, latency_us);
        if matches!(outcome, Outcome::Info(_)) {
            self.process = shared.next_process.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&mut self, outcome: &Outcome, latency_us: u64) {
        self.tally.ops += 1;
        self.tally.latencies_us.push(latency_us);
        match outcome {
            Outcome::Ok(served) => {
                self.tally.ok += 1;
                if !served.found {
                    self.tally.not_found += 1;
                }
                if let Some(hops) = served.hops {
                    self.tally.hops += hops;
                    self.tally.hops_counted += 1;
                }
            }
            Outcome::Fail(cause) | Outcome::Info(cause) => {
                *self.tally.errors.entry(label(cause)).or_default() += 1;
            }
        }
    }
}

fn completion(process: u64, op: &Op, outcome: &Outcome, time: u64) -> HistoryEvent {
    match outcome {
        Outcome::Ok(served) => {
            let value = if op.f == OpKind::Write {
                op.value.as_deref()
            } else {
                served.value.as_deref()
            };
            let mut event = HistoryEvent::new(process, EventType::Ok, op.f, &op.key, value, time);
            event.node = served.node.clone();
            event.hops = served.hops;
            event
        }
        Outcome::Fail(_) => HistoryEvent::new(process, EventType::Fail, op.f, &op.key, None, time),
        Outcome::Info(_) => HistoryEvent::new(process, EventType::Info, op.f, &op.key, None, time),
    }
}

/// The operation the rule in [`ringkv_runtime::outcome`] classifies.
fn data_op(f: OpKind) -> DataOp {
    match f {
        OpKind::Write => DataOp::Insert,
        OpKind::Read => DataOp::Query,
        OpKind::Delete => DataOp::Delete,
    }
}

/// A failure's key in [`LoadReport::errors`]: every transport error counts as one cause.
fn label(cause: &Cause) -> String {
    match cause {
        Cause::Transport(_) => "transport".into(),
        status => status.to_string(),
    }
}

/// Writes history events in time order: the clock is read under the same lock the event
/// is written under, so times never go backwards in the file.
struct Recorder {
    start: Instant,
    out: Option<Mutex<(BufWriter<File>, u64)>>,
}

impl Recorder {
    fn open(path: Option<&PathBuf>) -> Result<Recorder, LoadError> {
        let out = match path {
            None => None,
            Some(path) => {
                let file = File::create(path).map_err(|source| LoadError::History {
                    path: path.clone(),
                    source,
                })?;
                Some(Mutex::new((BufWriter::with_capacity(1 << 20, file), 0)))
            }
        };
        Ok(Recorder {
            start: Instant::now(),
            out,
        })
    }

    fn record(&self, event: impl FnOnce(u64) -> HistoryEvent) {
        let Some(out) = &self.out else { return };
        let mut guard = out.lock().unwrap_or_else(|e| e.into_inner());
        let time = self.start.elapsed().as_nanos() as u64;
        let (writer, count) = &mut *guard;
        if let Err(err) = write_event(writer, &event(time)) {
            tracing::error!(%err, "history write failed");
        }
        *count += 1;
    }

    /// Flush the file and return the number of events written.
    fn finish(&self) -> std::io::Result<u64> {
        let Some(out) = &self.out else { return Ok(0) };
        let mut guard = out.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.flush()?;
        Ok(guard.1)
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
