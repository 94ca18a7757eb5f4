//! Experiment 5: crash-stop of real node processes under load (`dht experiment crash`).
//!
//! A ring of separate `dht` processes on loopback (one `dht bootstrap` and N − 1
//! `dht node --join`, default N = 5, k = 3, chain replication, failure handling on) serves a
//! closed-loop load of concurrent HTTP clients (default 8) on a few keys (default 16), half
//! inserts and half queries, for a fixed time (default 20 s; 5 s with `--quick`). At 25%
//! of that time k − 1 members that follow each other on the ring (the bootstrap's next
//! k − 1 successors, so some keys keep a single live replica) are killed with SIGKILL; at
//! 55% they are started again on their addresses and rejoin empty. The nodes run with a
//! 2 s request timeout (`--request-timeout-ms 2000`) so that requests caught by the crash
//! end (504) within the run. After the load, once
//! every node is a member again, every key is read through every node, and:
//!
//! - every acknowledged write must still be readable: a key's final value must be its
//!   last acknowledged write, or a write that may have taken effect after it (one that
//!   was concurrent with it or ended `info`);
//! - the whole history, final reads included, must be linearizable.
//!
//! Either failure makes the experiment return an error (so `dht experiment crash` exits
//! non-zero) after its files are written: `crash_real.csv` (one row per second of the
//! load), `crash_real.md` (settings, event times, totals, verdicts and the per-second
//! table) and `crash_real.png` (ok operations per second with the kill and restart
//! marked). It is not part of `dht experiment all`, which stays in-process.
//!
//! Every operation goes into a history in the checker's format, its answer classified
//! `ok`, `fail` or `info` by the rule every client uses ([`ringkv_runtime::outcome`]);
//! after an `info` the client goes on under a fresh process id.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use plotters::style::RGBColor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_client::{perform, Op, ProcessIds, Recorder};
use ringkv_runtime::{HttpClient, Outcome};
use ringkv_sim::check::{
    check_linearizability, write_event, CheckOptions, EventType, History, HistoryEvent, LinReport,
    OpKind, OpStatus, Operation, Verdict,
};
use serde::Serialize;

use crate::analysis::percentile;
use crate::plot::{self, Axis, Chart, LegendAt, Marker, Point, Series};
use crate::real::{runtime, CLIENT_TIMEOUT};
use crate::runner::{
    fixed, machine_facts, ops, progress_bar, today, write_csv, Options, Report, Table,
};
use crate::{ExperimentError, Result};

/// The kill, as a fraction of the load's duration.
pub const KILL_AT: f64 = 0.25;
/// The restart, as a fraction of the load's duration.
pub const RESTART_AT: f64 = 0.55;
/// Longest wait for a process to print its address or to join the ring.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait, after the load, for every node to be a member again.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of each final read (a read that fails is retried; every attempt is recorded).
const READ_ATTEMPTS: usize = 5;
/// Width of a row of `crash_real.csv`.
const WINDOW: Duration = Duration::from_secs(1);

/// Colour of the kill marker (red).
const KILL: RGBColor = RGBColor(214, 39, 40);

/// Settings of the crash experiment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Processes in the ring, the bootstrap included.
    pub nodes: usize,
    /// Replication factor; k − 1 nodes are killed.
    pub k: usize,
    /// Length of the load (`None`: 20 s, or 5 s with `quick`). The restart comes 30% of it
    /// after the kill, and the ring removes killed nodes after 3 s of silence (about 3.6 s
    /// in practice): below about 15 s they are restarted before the ring serves without
    /// them.
    pub duration: Option<Duration>,
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Fraction of operations that insert (the others query).
    pub write_ratio: f64,
    /// The nodes' request timeout (`--request-timeout-ms`, default 2 s instead of the
    /// nodes' 10 s). A request caught by the crash is not re-driven when the ring repairs
    /// itself: it is answered 504 after this time, and until then its client is stuck.
    pub request_timeout: Duration,
    /// The nodes' failure timeout (`--failure-timeout-ms`, default 3 s as in `dht node`):
    /// how long a killed node stays in the ring.
    pub failure_timeout: Duration,
    /// The `dht` executable to start the nodes from (`None`: this process's executable).
    pub dht: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nodes: 5,
            k: 3,
            duration: None,
            clients: 8,
            keys: 16,
            write_ratio: 0.5,
            request_timeout: Duration::from_secs(2),
            failure_timeout: Duration::from_secs(3),
            dht: None,
        }
    }
}

impl Settings {
    /// The load's length.
    pub fn duration(&self, quick: bool) -> Duration {
        self.duration
            .unwrap_or(Duration::from_secs(if quick { 5 } else { 20 }))
    }

    fn validate(&self, duration: Duration) -> Result<()> {
        let bad = |m: String| Err(ExperimentError(m));
        if self.k < 2 || self.k > ringkv_core::config::MAX_K {
            return bad(format!(
                "crash: k must be between 2 and {} (k − 1 nodes are killed), not {}",
                ringkv_core::config::MAX_K,
                self.k
            ));
        }
        if self.nodes < self.k {
            return bad(format!(
                "crash: the ring needs at least k = {} nodes (k − 1 of them besides the bootstrap are killed), not {}",
                self.k, self.nodes
            ));
        }
        if duration < Duration::from_secs(2) {
            return bad(format!(
                "crash: the load must last at least 2 s, not {:.1} s",
                duration.as_secs_f64()
            ));
        }
        if self.clients == 0 || self.keys == 0 || !(0.0..=1.0).contains(&self.write_ratio) {
            return bad(
                "crash: clients and keys must be at least 1, the write ratio in 0..1".into(),
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Node processes

/// A started `dht` process and the lines of its stdout.
struct NodeProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl NodeProc {
    /// The first stdout line containing `needle`, before `deadline`.
    fn wait_line(&mut self, needle: &str, deadline: Instant, what: &str) -> Result<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(ExperimentError(format!(
                        "{what}: no '{needle}' line within {} s{}",
                        START_TIMEOUT.as_secs(),
                        log_tail(&self.log)
                    )))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: the process ended (give it a moment to be reaped).
                    let mut status = None;
                    for _ in 0..20 {
                        status = self.child.try_wait().ok().flatten();
                        if status.is_some() {
                            break;
                        }
                        thread::sleep(Duration::from_millis(25));
                    }
                    let status = status.map_or("still running".into(), |s| s.to_string());
                    return Err(ExperimentError(format!(
                        "{what}: the process ended ({status}) before printing '{needle}'{}",
                        log_tail(&self.log)
                    )));
                }
            }
        }
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a node's log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
    if tail.is_empty() {
        format!(" (log: {})", log.display())
    } else {
        format!("; last lines of {}:\n    {tail}", log.display())
    }
}

/// The node processes of one run. Dropping it kills (SIGKILL) and reaps every process it
/// started that is still running, and nothing else.
struct Fleet {
    dht: PathBuf,
    logs: PathBuf,
    procs: Vec<Option<NodeProc>>,
    /// `127.0.0.1:port` of each node; index 0 is the bootstrap.
    addrs: Vec<String>,
    /// `--request-timeout-ms` of every node.
    request_timeout_ms: String,
    /// `--failure-timeout-ms` of every node.
    failure_timeout_ms: String,
    starts: usize,
}

impl Fleet {
    fn new(dht: PathBuf, request_timeout: Duration, failure_timeout: Duration) -> Result<Fleet> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let logs =
            std::env::temp_dir().join(format!("ringkv-crash-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&logs)
            .map_err(|e| ExperimentError(format!("cannot create {}: {e}", logs.display())))?;
        Ok(Fleet {
            dht,
            logs,
            procs: Vec::new(),
            addrs: Vec::new(),
            request_timeout_ms: request_timeout.as_millis().max(1).to_string(),
            failure_timeout_ms: failure_timeout.as_millis().max(100).to_string(),
            starts: 0,
        })
    }

    /// Start `dht ARGS` with stdout piped (read by a thread) and stderr into a log file.
    fn spawn(&mut self, args: &[String]) -> Result<NodeProc> {
        self.starts += 1;
        let log = self.logs.join(format!("start-{:02}.log", self.starts));
        let stderr = File::create(&log)
            .map_err(|e| ExperimentError(format!("cannot create {}: {e}", log.display())))?;
        let mut child = Command::new(&self.dht)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                ExperimentError(format!(
                    "cannot start {} {}: {e}",
                    self.dht.display(),
                    args.join(" ")
                ))
            })?;
        let stdout = child.stdout.take();
        let (tx, lines) = mpsc::channel();
        if let Some(stdout) = stdout {
            thread::spawn(move || {
                for line in BufReader::new(stdout)
                    .lines()
                    .map_while(std::result::Result::ok)
                {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(NodeProc { child, lines, log })
    }

    /// Start the bootstrap on a free port; returns its address.
    fn start_bootstrap(&mut self, k: usize) -> Result<String> {
        let args = [
            "bootstrap",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--k",
            &k.to_string(),
            "--consistency",
            "chain",
            "--request-timeout-ms",
            &self.request_timeout_ms,
            "--failure-timeout-ms",
            &self.failure_timeout_ms,
        ]
        .map(String::from);
        let mut p = self.spawn(&args)?;
        let line = p.wait_line(
            "advertised as",
            Instant::now() + START_TIMEOUT,
            "dht bootstrap",
        );
        self.procs.push(Some(p));
        let addr = advertised(&line?)?;
        self.addrs.push(addr.clone());
        Ok(addr)
    }

    /// Start a member on `port` (0: a free one) that joins at start and wait until it has
    /// joined; returns its address. A restart whose port is briefly unavailable is retried.
    fn start_member(&mut self, port: u16, slot: Option<usize>) -> Result<String> {
        let args = [
            "node",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--bootstrap",
            &self.addrs[0],
            "--join",
            "--request-timeout-ms",
            &self.request_timeout_ms,
            "--failure-timeout-ms",
            &self.failure_timeout_ms,
        ]
        .map(String::from);
        let deadline = Instant::now() + START_TIMEOUT;
        let what = format!("dht node --port {port}");
        loop {
            let mut p = self.spawn(&args)?;
            let started = p
                .wait_line("advertised as", deadline, &what)
                .and_then(|line| advertised(&line))
                .and_then(|addr| {
                    p.wait_line("joined the ring", deadline, &what)?;
                    Ok(addr)
                });
            match started {
                Ok(addr) => {
                    match slot {
                        Some(i) => self.procs[i] = Some(p),
                        None => {
                            self.procs.push(Some(p));
                            self.addrs.push(addr.clone());
                        }
                    }
                    return Ok(addr);
                }
                Err(err) => {
                    p.kill9();
                    if Instant::now() + Duration::from_millis(500) >= deadline {
                        return Err(err);
                    }
                    tracing::warn!(%err, "a node did not start; retrying");
                    thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// `kill -9` node `i`.
    fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill9();
        }
    }

    /// Restart node `i` on its port; returns when it has joined.
    fn restart(&mut self, i: usize) -> Result<()> {
        let port = port_of(&self.addrs[i])?;
        self.start_member(port, Some(i)).map(|_| ())
    }

    /// Whether every process still runs (none crashed on its own).
    fn check_alive(&mut self) -> Result<()> {
        for (i, p) in self.procs.iter_mut().enumerate() {
            if let Some(p) = p {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(ExperimentError(format!(
                        "node {} ({}) exited on its own: {status}{}",
                        i,
                        self.addrs[i],
                        log_tail(&p.log)
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            p.kill9();
        }
    }
}

/// The advertised `host:port` in a "... (advertised as H:P)" line.
fn advertised(line: &str) -> Result<String> {
    line.rsplit_once("advertised as ")
        .map(|(_, a)| a.trim().trim_end_matches(')').to_string())
        .filter(|a| port_of(a).is_ok())
        .ok_or_else(|| ExperimentError(format!("no address in the line '{line}'")))
}

fn port_of(addr: &str) -> Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| ExperimentError(format!("no port in the address '{addr}'")))
}

// ---------------------------------------------------------------------------------------
// Ring views

/// The ring in order from the bootstrap (`GET /overlay`).
async fn overlay(http: &HttpClient, boot: &str) -> std::result::Result<Vec<String>, String> {
    ringkv_client::overlay(http, boot)
        .await
        .map_err(|e| e.to_string())
}

/// Whether the bootstrap's overlay holds exactly `addrs` and every node says it is a
/// member (`GET /health`).
async fn ring_complete(http: &HttpClient, addrs: &[String]) -> bool {
    let Ok(ring) = overlay(http, &addrs[0]).await else {
        return false;
    };
    let ring: BTreeSet<&String> = ring.iter().collect();
    if ring != addrs.iter().collect::<BTreeSet<_>>() {
        return false;
    }
    for a in addrs {
        match http.get(&format!("http://{a}/health")).await {
            Ok(r) if r.status == 200 && r.value()["member"] == serde_json::Value::Bool(true) => {}
            _ => return false,
        }
    }
    true
}

/// Poll until the ring is complete, at most `limit`.
fn wait_ring(
    rt: &tokio::runtime::Runtime,
    http: &HttpClient,
    addrs: &[String],
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let quick = HttpClient::new(Duration::from_secs(2));
    while Instant::now() < deadline {
        if rt.block_on(ring_complete(&quick, addrs)) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    let seen = rt
        .block_on(overlay(http, &addrs[0]))
        .map_or_else(|e| e, |r| r.join(", "));
    Err(ExperimentError(format!(
        "the ring did not hold all {} nodes with every node a member within {} s (overlay: {seen})",
        addrs.len(),
        limit.as_secs()
    )))
}

// ---------------------------------------------------------------------------------------
// Load and history

/// One read or insert sent to `addr`, recorded; returns its completion type and the value
/// an `ok` read returned.
async fn operation(
    http: &HttpClient,
    rec: &Recorder,
    process: u64,
    addr: &str,
    f: OpKind,
    key: &str,
    value: Option<&str>,
) -> (EventType, Option<String>) {
    let op = Op {
        f,
        key: key.to_string(),
        value: value.map(str::to_string),
    };
    match perform(http, rec, process, addr, &op).await.outcome {
        Outcome::Ok(served) => (EventType::Ok, served.value),
        Outcome::Fail(_) => (EventType::Fail, None),
        Outcome::Info(_) => (EventType::Info, None),
    }
}

/// What every client task shares.
struct Load {
    http: HttpClient,
    rec: Arc<Recorder>,
    addrs: Vec<String>,
    live: Vec<AtomicBool>,
    processes: ProcessIds,
    end: Instant,
    keys: usize,
    write_ratio: f64,
    seed: u64,
}

fn key_name(i: usize) -> String {
    format!("key-{i:02}")
}

/// A closed-loop client: one request at a time, to a random node believed up, until the
/// load ends.
async fn client(load: Arc<Load>, id: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(load.seed.wrapping_mul(1000).wrapping_add(id as u64));
    let mut process = id as u64;
    let mut n = 0u64;
    while Instant::now() < load.end {
        let up: Vec<usize> = (0..load.addrs.len())
            .filter(|&i| load.live[i].load(Ordering::Relaxed))
            .collect();
        let node = up[rng.gen_range(0..up.len())];
        let key = key_name(rng.gen_range(0..load.keys));
        let (f, value) = if rng.gen_bool(load.write_ratio) {
            n += 1;
            (OpKind::Write, Some(format!("c{id}-{n}")))
        } else {
            (OpKind::Read, None)
        };
        let (kind, _) = operation(
            &load.http,
            &load.rec,
            process,
            &load.addrs[node],
            f,
            &key,
            value.as_deref(),
        )
        .await;
        if kind == EventType::Info {
            process = load.processes.fresh();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Results

/// A row of `crash_real.csv`: one window of the load, by completion time.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Window start, seconds since the load began.
    pub t_from_s: f64,
    /// Window end.
    pub t_to_s: f64,
    /// At the window's middle: `healthy`, `crashed` (k − 1 nodes killed), `repaired`
    /// (killed nodes removed from the ring), `restarting` (restarted, not all rejoined)
    /// or `recovered`.
    pub phase: String,
    /// Nodes running and in the ring (as far as the clients know) at the window's middle.
    pub nodes_up: usize,
    /// Operations that completed `ok` in the window.
    pub ops_ok: u64,
    /// Of them, inserts.
    pub writes_ok: u64,
    /// Of them, queries.
    pub reads_ok: u64,
    /// Operations that completed `info` (unknown outcome) in the window.
    pub ops_info: u64,
    /// Operations that completed `fail` in the window.
    pub ops_fail: u64,
    /// `ops_ok` per second.
    pub throughput_ok_per_s: f64,
    /// Median latency of the window's `ok` operations, ms (empty without any).
    pub latency_p50_ms: Option<f64>,
    /// Largest latency of the window's `ok` operations, ms (empty without any).
    pub latency_max_ms: Option<f64>,
    /// What happened in the window (kill, restart, rejoin, removal from the ring).
    pub events: String,
}

/// Times of the run's events, seconds since the load began.
#[derive(Clone, Debug, Default)]
struct Timeline {
    kill_s: f64,
    removed_s: Option<f64>,
    restart_s: f64,
    rejoined_s: Vec<f64>,
    load_end_s: f64,
    ring_complete_s: f64,
}

impl Timeline {
    fn all_rejoined_s(&self) -> f64 {
        self.rejoined_s
            .iter()
            .copied()
            .fold(self.restart_s, f64::max)
    }

    /// Killed nodes not yet back in the ring at `t`.
    fn down_at(&self, t: f64, victims: usize) -> usize {
        if t < self.kill_s {
            0
        } else if t < self.restart_s {
            victims
        } else {
            self.rejoined_s.iter().filter(|&&r| r > t).count()
        }
    }

    fn phase(&self, t: f64) -> &'static str {
        if t < self.kill_s {
            "healthy"
        } else if t < self.restart_s {
            match self.removed_s {
                Some(r) if t >= r => "repaired",
                _ => "crashed",
            }
        } else if t < self.all_rejoined_s() {
            "restarting"
        } else {
            "recovered"
        }
    }
}

/// A key's final state: what the final reads may return and what they did.
#[derive(Clone, Debug)]
struct KeyCheck {
    key: String,
    acked_writes: usize,
    /// The acknowledged write that completed last.
    last_acked: Option<String>,
    /// Values the final reads may return: the last acknowledged write's, or of a write
    /// that may take effect after it.
    allowed: BTreeSet<String>,
    /// (node, value read or why not).
    reads: Vec<(String, std::result::Result<Option<String>, String>)>,
}

impl KeyCheck {
    /// Whether the last acknowledged write is no longer readable through some node.
    fn lost(&self) -> bool {
        self.last_acked.is_some()
            && self.reads.iter().any(|(_, r)| match r {
                Ok(Some(v)) => !self.allowed.contains(v),
                _ => true,
            })
    }
}

/// For each key written during the load: its last acknowledged write and the values that
/// may overwrite it.
fn key_checks(history: &History) -> Vec<KeyCheck> {
    let mut out = Vec::new();
    for (key, ids) in history.ops_by_key() {
        let writes: Vec<_> = ids
            .iter()
            .map(|&i| &history.ops[i])
            .filter(|o| o.f == OpKind::Write)
            .collect();
        if writes.is_empty() {
            continue;
        }
        let acked: Vec<_> = writes.iter().filter(|o| o.status == OpStatus::Ok).collect();
        let last = acked
            .iter()
            .max_by_key(|o| o.complete.map_or(0, |c| c.index))
            .copied();
        let allowed = match last {
            Some(w) => writes
                .iter()
                .filter(|o| o.status != OpStatus::Fail && !o.precedes(w))
                .filter_map(|o| o.value.clone())
                .collect(),
            None => BTreeSet::new(),
        };
        out.push(KeyCheck {
            key: key.to_string(),
            acked_writes: acked.len(),
            last_acked: last.and_then(|w| w.value.clone()),
            allowed,
            reads: Vec::new(),
        });
    }
    out
}

/// The rows of `crash_real.csv`: the load in windows of one second, by completion time
/// (the clients' last requests, answered after the load's end, are in the totals only).
fn windows(run: &Run) -> Vec<Row> {
    let tl = &run.tl;
    let w = WINDOW.as_secs_f64();
    let victims = run.victim_addrs();
    let count = (tl.load_end_s / w).ceil().max(1.0) as usize;
    let mut rows = Vec::with_capacity(count);
    for i in 0..count {
        let (from, to) = (i as f64 * w, ((i + 1) as f64 * w).min(tl.load_end_s));
        let mid = (from + to) / 2.0;
        let mut row = Row {
            t_from_s: from,
            t_to_s: to,
            phase: tl.phase(mid).into(),
            nodes_up: run.addrs.len() - tl.down_at(mid, victims.len()),
            ops_ok: 0,
            writes_ok: 0,
            reads_ok: 0,
            ops_info: 0,
            ops_fail: 0,
            throughput_ok_per_s: 0.0,
            latency_p50_ms: None,
            latency_max_ms: None,
            events: String::new(),
        };
        let mut latencies = Vec::new();
        for o in run.load() {
            let Some(c) = o.complete else { continue };
            let t = c.time as f64 / 1e9;
            if t < from || t >= to {
                continue;
            }
            match o.status {
                OpStatus::Ok => {
                    row.ops_ok += 1;
                    if o.f == OpKind::Write {
                        row.writes_ok += 1;
                    } else {
                        row.reads_ok += 1;
                    }
                    latencies.push(c.time - o.invoke.time);
                }
                OpStatus::Fail => row.ops_fail += 1,
                OpStatus::Info | OpStatus::Pending => row.ops_info += 1,
            }
        }
        latencies.sort_unstable();
        row.throughput_ok_per_s = row.ops_ok as f64 / (to - from);
        if let Some(max) = latencies.last() {
            row.latency_p50_ms = Some(percentile(&latencies, 50.0) as f64 / 1e6);
            row.latency_max_ms = Some(*max as f64 / 1e6);
        }
        let within = |t: f64| t >= from && t < to;
        let mut events = Vec::new();
        if within(tl.kill_s) {
            events.push(format!(
                "kill -9 {} at {:.2} s",
                victims.join(" "),
                tl.kill_s
            ));
        }
        if let Some(r) = tl.removed_s.filter(|r| within(*r)) {
            events.push(format!("removed from the ring by {r:.2} s"));
        }
        if within(tl.restart_s) {
            events.push(format!("restarted at {:.2} s", tl.restart_s));
        }
        for r in tl.rejoined_s.iter().filter(|r| within(**r)) {
            events.push(format!("rejoined at {r:.2} s"));
        }
        row.events = events.join("; ");
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------------------------------
// The experiment

/// Run experiment 5 with `options.crash`.
pub fn run(options: &Options) -> Result<Report> {
    let s = &options.crash;
    let duration = s.duration(options.quick);
    s.validate(duration)?;
    let dht = match &s.dht {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| ExperimentError(format!("cannot find the dht executable: {e}")))?,
    };
    let rt = runtime()?;
    let bar = progress_bar(options, "crash", duration.as_secs().max(1));
    let mut fleet = Fleet::new(dht, s.request_timeout, s.failure_timeout)?;
    let logs = fleet.logs.clone();
    let measured = measure(options, duration, &rt, &mut fleet, &bar);
    bar.finish_and_clear();
    // Every node process ends here, whatever happened.
    drop(fleet);
    let result = measured.and_then(|run| report(options, &run));
    match result {
        Ok(report) => {
            let _ = std::fs::remove_dir_all(&logs);
            Ok(report)
        }
        Err(e) => Err(ExperimentError(format!(
            "{e} (node logs kept in {})",
            logs.display()
        ))),
    }
}

/// Everything one run measured.
struct Run {
    settings: Settings,
    duration: Duration,
    /// Every node's address; 0 is the bootstrap.
    addrs: Vec<String>,
    /// Indices of the killed nodes.
    victims: Vec<usize>,
    tl: Timeline,
    /// The load's operations (the first `load_ops`), then the final reads.
    history: History,
    load_ops: usize,
    checks: Vec<KeyCheck>,
    /// (keys as primary, keys as replica) per node after the run.
    stored: Vec<(u64, u64)>,
    lin: LinReport,
    check_s: f64,
    events: Vec<HistoryEvent>,
}

/// Start the ring, run the load with the kill and the restart, wait for the ring, read
/// every key back and check the history.
fn measure(
    options: &Options,
    duration: Duration,
    rt: &tokio::runtime::Runtime,
    fleet: &mut Fleet,
    bar: &indicatif::ProgressBar,
) -> Result<Run> {
    let s = &options.crash;
    let n = s.nodes;
    let http = HttpClient::new(CLIENT_TIMEOUT);
    // The ring: a bootstrap and n − 1 members joined one after the other.
    bar.set_message(format!("starting {n} dht processes"));
    let boot = fleet.start_bootstrap(s.k)?;
    for _ in 1..n {
        fleet.start_member(0, None)?;
    }
    let addrs = fleet.addrs.clone();
    wait_ring(rt, &http, &addrs, START_TIMEOUT)?;
    // The victims: the bootstrap's next k − 1 successors, consecutive on the ring.
    let ring = rt
        .block_on(overlay(&http, &boot))
        .map_err(|e| ExperimentError(format!("GET /overlay from the bootstrap: {e}")))?;
    let victims: Vec<usize> = ring
        .iter()
        .filter(|a| **a != boot)
        .take(s.k - 1)
        .filter_map(|a| addrs.iter().position(|x| x == a))
        .collect();
    if victims.len() != s.k - 1 {
        return Err(ExperimentError(format!(
            "the overlay {ring:?} does not hold the started nodes"
        )));
    }
    let victim_addrs: Vec<String> = victims.iter().map(|&i| addrs[i].clone()).collect();

    // The load, and meanwhile the kill and the restart.
    let rec = Arc::new(Recorder::in_memory());
    let load = Arc::new(Load {
        http: http.clone(),
        rec: rec.clone(),
        addrs: addrs.clone(),
        live: (0..n).map(|_| AtomicBool::new(true)).collect(),
        processes: ProcessIds::new(s.clients),
        end: rec.start() + duration,
        keys: s.keys,
        write_ratio: s.write_ratio,
        seed: options.seed,
    });
    let tasks: Vec<_> = (0..s.clients)
        .map(|c| rt.spawn(client(load.clone(), c)))
        .collect();
    let at = |f: f64| rec.start() + duration.mul_f64(f);
    let tick = |msg: &str| {
        bar.set_position(rec.elapsed().as_secs());
        bar.set_message(msg.to_string());
    };
    let mut tl = Timeline::default();
    let poll = HttpClient::new(Duration::from_millis(500));
    sleep_until(at(KILL_AT), || tick("load on every node"));
    fleet.check_alive()?;
    for &v in &victims {
        load.live[v].store(false, Ordering::Relaxed);
        fleet.kill9(v);
    }
    tl.kill_s = rec.elapsed().as_secs_f64();
    // Until the restart, note when the bootstrap has removed the victims from the ring.
    while Instant::now() < at(RESTART_AT) {
        tick(&format!("{} nodes killed", victims.len()));
        if tl.removed_s.is_none() {
            if let Ok(r) = rt.block_on(overlay(&poll, &boot)) {
                if !r.iter().any(|a| victim_addrs.contains(a)) {
                    tl.removed_s = Some(rec.elapsed().as_secs_f64());
                }
            }
        }
        thread::sleep(
            at(RESTART_AT)
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
        );
    }
    tl.restart_s = rec.elapsed().as_secs_f64();
    tick("restarting the killed nodes");
    for &v in &victims {
        fleet.restart(v)?;
        tl.rejoined_s.push(rec.elapsed().as_secs_f64());
        load.live[v].store(true, Ordering::Relaxed);
    }
    sleep_until(load.end, || tick("load on every node"));
    tl.load_end_s = duration.as_secs_f64();
    // Every client ends its last request within the client timeout.
    bar.set_message("waiting for the clients' last requests");
    let joined = rt.block_on(async {
        tokio::time::timeout(CLIENT_TIMEOUT + Duration::from_secs(5), async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await
    });
    if joined.is_err() {
        return Err(ExperimentError(
            "the clients did not finish within the client timeout".into(),
        ));
    }
    fleet.check_alive()?;

    // Settle: every node a member again.
    bar.set_message("waiting for the ring to be complete");
    wait_ring(rt, &http, &addrs, SETTLE_TIMEOUT)?;
    tl.ring_complete_s = rec.elapsed().as_secs_f64();

    // Final reads of every written key through every node (retried; every attempt is
    // part of the history).
    bar.set_message("final reads");
    let load_events = rec.events();
    let load_history = History::from_events(load_events)
        .map_err(|e| ExperimentError(format!("the load's history is malformed: {e}")))?;
    let load_ops = load_history.ops.len();
    let mut checks = key_checks(&load_history);
    for check in checks.iter_mut() {
        let process = load.processes.fresh();
        for addr in &addrs {
            let mut last = Err(String::new());
            for attempt in 0..READ_ATTEMPTS {
                if attempt > 0 {
                    thread::sleep(Duration::from_millis(200));
                }
                let (kind, value) = rt.block_on(operation(
                    &http,
                    &rec,
                    process,
                    addr,
                    OpKind::Read,
                    &check.key,
                    None,
                ));
                if kind == EventType::Ok {
                    last = Ok(value);
                    break;
                }
                last = Err(format!("{kind:?}").to_lowercase());
            }
            check.reads.push((addr.clone(), last));
        }
    }
    // Keys stored per node (the restarted nodes are refilled).
    let stored: Vec<(u64, u64)> = addrs
        .iter()
        .map(|a| {
            let v = rt
                .block_on(http.get(&format!("http://{a}/node")))
                .map(|r| r.value())
                .unwrap_or_default();
            (
                v["keys_primary"].as_u64().unwrap_or(0),
                v["keys_replica"].as_u64().unwrap_or(0),
            )
        })
        .collect();

    bar.set_message("checking linearizability");
    let events = rec.take_events();
    let history = History::from_events(events.iter().cloned())
        .map_err(|e| ExperimentError(format!("the history is malformed: {e}")))?;
    let checked = Instant::now();
    let lin = check_linearizability(&history, &CheckOptions::default());
    Ok(Run {
        settings: s.clone(),
        duration,
        addrs,
        victims,
        tl,
        history,
        load_ops,
        checks,
        stored,
        lin,
        check_s: checked.elapsed().as_secs_f64(),
        events,
    })
}

impl Run {
    fn victim_addrs(&self) -> Vec<String> {
        self.victims
            .iter()
            .map(|&i| self.addrs[i].clone())
            .collect()
    }

    fn load(&self) -> &[Operation] {
        &self.history.ops[..self.load_ops]
    }

    fn count(&self, statuses: &[OpStatus]) -> usize {
        self.load()
            .iter()
            .filter(|o| statuses.contains(&o.status))
            .count()
    }

    /// `ok` operations per second completed in `[from, to)` (`NaN` for an empty span).
    fn rate(&self, from: f64, to: f64) -> f64 {
        if to <= from {
            return f64::NAN;
        }
        let ok = self
            .load()
            .iter()
            .filter(|o| o.status == OpStatus::Ok)
            .filter_map(|o| o.complete.map(|c| c.time as f64 / 1e9))
            .filter(|t| *t >= from && *t < to)
            .count();
        ok as f64 / (to - from)
    }

    /// When the first operation invoked after the kill completed `ok`.
    fn serving_again_s(&self) -> Option<f64> {
        let kill_ns = (self.tl.kill_s * 1e9) as u64;
        self.load()
            .iter()
            .filter(|o| o.status == OpStatus::Ok && o.invoke.time > kill_ns)
            .filter_map(|o| o.complete.map(|c| c.time as f64 / 1e9))
            .reduce(f64::min)
    }

    fn lost(&self) -> Vec<&KeyCheck> {
        self.checks.iter().filter(|c| c.lost()).collect()
    }

    /// Throughput figures: (what, span, ok ops/s).
    fn figures(&self) -> Vec<(String, String, f64)> {
        let tl = &self.tl;
        let span = |a: f64, b: f64| format!("{}–{} s", fixed(a, 1), fixed(b, 1));
        let mut out = vec![(
            "before the kill".to_string(),
            span(0.0, tl.kill_s),
            self.rate(0.0, tl.kill_s),
        )];
        match tl.removed_s.filter(|r| *r < tl.restart_s) {
            Some(r) => {
                out.push((
                    "while the killed nodes are still in the ring".into(),
                    span(tl.kill_s, r),
                    self.rate(tl.kill_s, r),
                ));
                out.push((
                    format!(
                        "after their removal ({} nodes serve)",
                        self.addrs.len() - self.victims.len()
                    ),
                    span(r, tl.restart_s),
                    self.rate(r, tl.restart_s),
                ));
            }
            None => out.push((
                "while the killed nodes are down (not removed before the restart)".into(),
                span(tl.kill_s, tl.restart_s),
                self.rate(tl.kill_s, tl.restart_s),
            )),
        }
        out.push((
            "after the restart and rejoin".into(),
            span(tl.all_rejoined_s(), tl.load_end_s),
            self.rate(tl.all_rejoined_s(), tl.load_end_s),
        ));
        out
    }

    fn command(&self, options: &Options) -> String {
        let s = &self.settings;
        format!(
            "dht experiment crash --nodes {} --k {} --duration {}s --request-timeout-ms {} --failure-timeout-ms {} --seed {} --out {}",
            s.nodes,
            s.k,
            trim(self.duration.as_secs_f64()),
            s.request_timeout.as_millis(),
            s.failure_timeout.as_millis(),
            options.seed,
            options.out.display()
        )
    }

    fn markdown(&self, options: &Options, rows: &[Row]) -> String {
        let s = &self.settings;
        let tl = &self.tl;
        let n = self.addrs.len();
        let lin = &self.lin;
        let lost = self.lost();
        let mut md = String::new();
        md.push_str("# Crash-stop of real node processes under load\n\n");
        md.push_str(&format!(
            "Written by `dht experiment crash` on {} ({}).\n\n```sh\n{}\n```\n\n",
            today(),
            machine_facts(),
            self.command(options)
        ));
        md.push_str(&format!(
            "A ring of {n} separate `dht` processes on 127.0.0.1 (one `dht bootstrap`, {} \
             `dht node --join`), k = {}, chain replication, failure handling on (heartbeats, \
             removal after {} s of silence, anti-entropy every 2 s), request timeout {} ms. {} \
             closed-loop HTTP clients, one request at a time each to a random node that is up, \
             on {} keys, {}% inserts and {}% queries, for {} s. At {}% of the load, `kill -9` \
             (SIGKILL) of k − 1 = {} members that are consecutive on the ring (the bootstrap's \
             next successors, so the keys they share with the bootstrap keep one live replica); \
             at {}% they are started again on their addresses and rejoin empty. Times are \
             seconds since the load began.\n\n",
            n - 1,
            s.k,
            trim(s.failure_timeout.as_secs_f64()),
            s.request_timeout.as_millis(),
            s.clients,
            s.keys,
            fixed(100.0 * s.write_ratio, 0),
            fixed(100.0 * (1.0 - s.write_ratio), 0),
            trim(self.duration.as_secs_f64()),
            fixed(100.0 * KILL_AT, 0),
            self.victims.len(),
            fixed(100.0 * RESTART_AT, 0),
        ));
        let mut kv = Vec::new();
        kv.push(("nodes N, k".to_string(), format!("{n}, {}", s.k)));
        kv.push((
            "killed (`kill -9`)".into(),
            format!(
                "{} at {} s",
                self.victim_addrs().join(", "),
                fixed(tl.kill_s, 2)
            ),
        ));
        kv.push((
            "removed from the ring".into(),
            tl.removed_s.map_or("not before the restart".into(), |r| {
                format!(
                    "by {} s ({} s after the kill)",
                    fixed(r, 2),
                    fixed(r - tl.kill_s, 1)
                )
            }),
        ));
        kv.push((
            "first ok answer to a request sent after the kill".into(),
            self.serving_again_s().map_or("none".into(), |t| {
                format!(
                    "at {} s ({} s after the kill)",
                    fixed(t, 2),
                    fixed(t - tl.kill_s, 1)
                )
            }),
        ));
        kv.push((
            "restarted".into(),
            format!(
                "at {} s; rejoined at {} s",
                fixed(tl.restart_s, 2),
                tl.rejoined_s
                    .iter()
                    .map(|r| fixed(*r, 2))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        kv.push((
            "ring complete again (checked after the load)".into(),
            format!(
                "at {} s (the load ended at {} s)",
                fixed(tl.ring_complete_s, 2),
                fixed(tl.load_end_s, 2)
            ),
        ));
        let acked = self
            .load()
            .iter()
            .filter(|o| o.f == OpKind::Write && o.status == OpStatus::Ok)
            .count();
        kv.push((
            "operations ok / info / fail".into(),
            format!(
                "{} / {} / {} (of {}; {acked} acknowledged inserts)",
                self.count(&[OpStatus::Ok]),
                self.count(&[OpStatus::Info, OpStatus::Pending]),
                self.count(&[OpStatus::Fail]),
                self.load_ops
            ),
        ));
        for (what, span, rate) in self.figures() {
            kv.push((
                format!("ok ops/s {what}"),
                format!("{} ({span})", ops(rate)),
            ));
        }
        kv.push((
            "final reads".into(),
            format!(
                "{} keys × {n} nodes, after the ring was complete; {} keys with an acknowledged insert",
                self.checks.len(),
                self.checks.iter().filter(|c| c.last_acked.is_some()).count()
            ),
        ));
        kv.push((
            "**acknowledged writes lost**".into(),
            format!("**{}**", lost.len()),
        ));
        kv.push((
            "**linearizability** (the whole history, final reads included)".into(),
            format!(
                "**{}** ({} operations on {} keys: {} linearizable, {} violated, {} unknown; checked in {} s)",
                lin.verdict.as_str(),
                lin.ops,
                lin.keys,
                lin.ok_keys,
                lin.violation_keys,
                lin.unknown_keys,
                fixed(self.check_s, 2)
            ),
        ));
        md.push_str("| | |\n|---|---|\n");
        for (k, v) in kv {
            md.push_str(&format!("| {k} | {v} |\n"));
        }
        md.push_str(
            "\nA write counts as lost when a final read of its key, through any node, does not \
             return the key's last acknowledged insert, nor an insert that may have taken effect \
             after it (one concurrent with it, or with an unknown outcome).\n\n",
        );
        md.push_str("Keys stored per node after the run:\n\n");
        md.push_str("| node | role | keys as primary | keys as replica |\n|---|---|---|---|\n");
        for (i, a) in self.addrs.iter().enumerate() {
            let role = if i == 0 {
                "bootstrap"
            } else if self.victims.contains(&i) {
                "killed, restarted"
            } else {
                "member"
            };
            let (p, r) = self.stored[i];
            md.push_str(&format!("| {a} | {role} | {p} | {r} |\n"));
        }
        md.push_str("\n![ok operations per second](crash_real.png)\n\n");
        md.push_str(
            "Per second of the load (operations by completion time; the same rows as \
             `crash_real.csv`):\n\n",
        );
        md.push_str(
            "| t (s) | phase | nodes up | ok | of them inserts | info | fail | ok ops/s | p50 ms | max ms | events |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in rows {
            md.push_str(&format!(
                "| {}–{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                trim(r.t_from_s),
                trim(r.t_to_s),
                r.phase,
                r.nodes_up,
                r.ops_ok,
                r.writes_ok,
                r.ops_info,
                r.ops_fail,
                ops(r.throughput_ok_per_s),
                fixed(r.latency_p50_ms.unwrap_or(f64::NAN), 1),
                fixed(r.latency_max_ms.unwrap_or(f64::NAN), 1),
                r.events
            ));
        }
        if !lost.is_empty() {
            md.push_str("\nLost acknowledged writes:\n\n");
            for c in lost.iter().take(20) {
                md.push_str(&format!(
                    "- `{}`: last acknowledged `{}` (of {} acknowledged); reads: {}\n",
                    c.key,
                    c.last_acked.as_deref().unwrap_or(""),
                    c.acked_writes,
                    c.reads
                        .iter()
                        .map(|(a, r)| format!("{a} → {r:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if let Some(c) = lin.counterexamples().next() {
            md.push_str(&format!(
                "\nFirst linearizability counterexample:\n\n```text\n{}\n```\n",
                c.explanation
            ));
        }
        md
    }
}

/// A number of seconds without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Write the files of a run; an error if a write was lost or the history is not
/// linearizable.
fn report(options: &Options, run: &Run) -> Result<Report> {
    let rows = windows(run);
    let csv = options.path("crash_real.csv");
    write_csv(&csv, &rows)?;
    let png = options.path("crash_real.png");
    draw(&png, run, &rows)?;
    let md = options.path("crash_real.md");
    std::fs::write(&md, run.markdown(options, &rows))
        .map_err(|e| ExperimentError(format!("cannot write {}: {e}", md.display())))?;
    let mut files = vec![csv, md.clone(), png];
    if options.histories {
        let dir = options.path("histories");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ExperimentError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("crash_real.jsonl");
        let written = File::create(&path).and_then(|f| {
            let mut out = std::io::BufWriter::new(f);
            run.events
                .iter()
                .try_for_each(|e| write_event(&mut out, e))?;
            std::io::Write::flush(&mut out)
        });
        written.map_err(|e| ExperimentError(format!("cannot write {}: {e}", path.display())))?;
        files.push(path);
    }

    let s = &run.settings;
    let lost = run.lost();
    let verdict = run.lin.verdict;
    let mut table = Table::new(
        format!(
            "5. kill -9 of k − 1 = {} of {} dht processes under load (chain, k = {}, {} s, {} clients)",
            run.victims.len(),
            run.addrs.len(),
            s.k,
            trim(run.duration.as_secs_f64()),
            s.clients
        ),
        &["", "span", "ok ops/s"],
    );
    for (what, span, rate) in run.figures() {
        table.row(vec![what, span, ops(rate)]);
    }
    table.row(vec![
        "acknowledged writes lost".into(),
        String::new(),
        lost.len().to_string(),
    ]);
    table.row(vec![
        "linearizability".into(),
        String::new(),
        verdict.as_str().into(),
    ]);
    let mut problems = Vec::new();
    if !lost.is_empty() {
        problems.push(format!(
            "{} acknowledged writes lost (keys {})",
            lost.len(),
            lost.iter()
                .map(|c| c.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if verdict != Verdict::Linearizable {
        problems.push(format!(
            "the history is not proven linearizable: {} ({} keys violated, {} unknown)",
            verdict.as_str(),
            run.lin.violation_keys,
            run.lin.unknown_keys
        ));
    }
    if !problems.is_empty() {
        return Err(ExperimentError(format!(
            "{} (see {})",
            problems.join("; "),
            md.display()
        )));
    }
    Ok(Report {
        name: "crash",
        files,
        table,
        warnings: Vec::new(),
        seconds: 0.0,
    })
}

/// Sleep until `t`, calling `tick` every 100 ms.
fn sleep_until(t: Instant, tick: impl Fn()) {
    loop {
        let left = t.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        tick();
        thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// `crash_real.png`: ok operations per second, with the kill, the removal from the ring
/// and the restart marked.
fn draw(path: &Path, run: &Run, rows: &[Row]) -> Result<()> {
    let tl = &run.tl;
    let s = &run.settings;
    let mid = |r: &Row| (r.t_from_s + r.t_to_s) / 2.0;
    let ok: Vec<Point> = rows
        .iter()
        .map(|r| Point::at(mid(r), r.throughput_ok_per_s))
        .collect();
    let y = Axis::fit_from_zero(
        "operations per second",
        rows.iter().map(|r| r.throughput_ok_per_s),
    );
    let x_hi = rows.last().map_or(tl.load_end_s, |r| r.t_to_s);
    let vline = |label: String, x: f64, color: RGBColor| {
        Series::new(
            label,
            color,
            Marker::None,
            vec![Point::at(x, 0.0), Point::at(x, y.hi)],
        )
        .dashed()
    };
    let mut series = vec![
        Series::new("ok ops/s", plot::CHAIN, Marker::Circle, ok),
        vline(
            format!(
                "kill -9 of {} at {} s",
                run.victims.len(),
                fixed(tl.kill_s, 1)
            ),
            tl.kill_s,
            KILL,
        ),
    ];
    if let Some(r) = tl.removed_s {
        series.push(vline(
            format!("removed from the ring by {} s", fixed(r, 1)),
            r,
            plot::SUCCESSOR,
        ));
    }
    series.push(vline(
        format!("restart at {} s", fixed(tl.restart_s, 1)),
        tl.restart_s,
        plot::FINGER,
    ));
    let chart = Chart {
        title: format!(
            "kill -9 of {} of {} dht processes (chain, k = {})",
            run.victims.len(),
            run.addrs.len(),
            s.k
        ),
        x: Axis::linear("time since the load began (s)", 0.0, x_hi),
        y,
        legend: LegendAt::UpperRight,
        series,
        note: Some(format!(
            "{} clients, {} keys; ok operations per 1 s window, by completion time; node request timeout {} ms",
            s.clients,
            s.keys,
            s.request_timeout.as_millis()
        )),
    };
    plot::draw(path, plot::SIZE, &chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(p: u64, kind: EventType, f: OpKind, v: Option<&str>, t: u64) -> HistoryEvent {
        HistoryEvent::new(p, kind, f, "k", v, t)
    }

    #[test]
    fn the_last_acknowledged_write_or_a_later_one_must_be_read() {
        use EventType::*;
        use OpKind::*;
        let history = History::from_events(vec![
            ev(0, Invoke, Write, Some("a"), 1),
            ev(0, Ok, Write, Some("a"), 2),
            ev(1, Invoke, Write, Some("b"), 3),
            ev(2, Invoke, Write, Some("c"), 4),
            ev(1, Info, Write, None, 5),
            ev(2, Ok, Write, Some("c"), 6),
            ev(3, Invoke, Write, Some("d"), 7),
            ev(3, Fail, Write, None, 8),
        ])
        .unwrap();
        let mut checks = key_checks(&history);
        assert_eq!(checks.len(), 1);
        let c = &mut checks[0];
        assert_eq!(c.last_acked.as_deref(), Some("c"));
        assert_eq!(c.allowed, BTreeSet::from(["b", "c"].map(String::from)));
        c.reads = vec![("n".into(), std::result::Result::Ok(Some("b".into())))];
        assert!(!c.lost());
        c.reads = vec![("n".into(), std::result::Result::Ok(Some("a".into())))];
        assert!(c.lost());
        c.reads = vec![("n".into(), std::result::Result::Ok(Some("d".into())))];
        assert!(c.lost());
        c.reads = vec![("n".into(), std::result::Result::Ok(None))];
        assert!(c.lost());
    }

    #[test]
    fn addresses_are_parsed_from_the_announcement() {
        let a =
            advertised("node listening on 127.0.0.1:4242 (advertised as 127.0.0.1:4242)").unwrap();
        assert_eq!(a, "127.0.0.1:4242");
        assert_eq!(port_of(&a).unwrap(), 4242);
        assert!(advertised("no address").is_err());
    }
}
