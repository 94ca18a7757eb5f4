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
//! end (504) within the run. After the load, once every node is a member again, every
//! key written is read through every node, and:
//!
//! - every final read must be answered, and no acknowledged write may be lost: by the
//!   simulator's check ([`ringkv_sim::final_reads`]), a final read may return only an
//!   insert that no acknowledged insert invoked after its completion overwrote, or one
//!   whose outcome is unknown;
//! - the whole history, final reads included, must be linearizable.
//!
//! Any failure makes the experiment return an error (so `dht experiment crash` exits
//! non-zero) after its files are written: `crash_real.csv` (one row per second of the
//! load), `crash_real.md` (settings, event times, totals, verdicts and the per-second
//! table) and `crash_real.png` (ok operations per second with the kill and restart
//! marked). It is not part of `dht experiment all`, which stays in-process.
//!
//! Every operation goes into a history in the checker's format, its answer classified
//! `ok`, `fail` or `info` by the rule every client uses ([`ringkv_runtime::outcome`](mod@ringkv_runtime::outcome));
//! after an `info` the client goes on under a fresh process id.
//!
//! The parts: `fleet` starts, kills and restarts the node processes; `load` runs the
//! clients and the final reads; `analysis` reads the history (throughput per second and
//! per stretch of the crash, lost writes, linearizability); `report` writes the CSV,
//! Markdown and PNG.

mod analysis;
mod fleet;
mod load;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringkv_client::Recorder;
use ringkv_runtime::HttpClient;
use ringkv_sim::check::{History, HistoryEvent, LinReport};

use crate::real::{runtime, CLIENT_TIMEOUT};
use crate::runner::{progress_bar, Options, Report};
use crate::{ExperimentError, Result};
use analysis::Timeline;
use fleet::{overlay, wait_ring, Fleet};
use load::Unanswered;

pub use analysis::Row;

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
    let result = measured.and_then(|run| report::write(options, &run));
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
    /// Events of the load: the final reads are the history's events from this one on.
    load_events: usize,
    /// The keys read back after the load (every key written).
    read_back: Vec<String>,
    /// Final reads that never got an `ok` answer.
    unanswered: Vec<Unanswered>,
    /// (keys as primary, keys as replica) per node after the run.
    stored: Vec<(u64, u64)>,
    lin: LinReport,
    /// Seconds the linearizability check took.
    check_s: f64,
    events: Vec<HistoryEvent>,
}

/// What the steps of a run share.
struct Ctx<'a> {
    options: &'a Options,
    rt: &'a tokio::runtime::Runtime,
    http: HttpClient,
    bar: &'a indicatif::ProgressBar,
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
    let cx = Ctx {
        options,
        rt,
        http: HttpClient::new(CLIENT_TIMEOUT),
        bar,
    };
    let (addrs, victims) = start_ring(&cx, fleet)?;
    let rec = Arc::new(Recorder::in_memory());
    let running = load::start(rt, &cx.http, &rec, &addrs, s, options.seed, duration);
    let mut tl = crash_and_restart(&cx, fleet, &running, &rec, &victims, duration)?;
    bar.set_message("waiting for the clients' last requests");
    let processes = running.finish(rt)?;
    fleet.check_alive()?;

    bar.set_message("waiting for the ring to be complete");
    wait_ring(rt, &cx.http, &addrs, SETTLE_TIMEOUT)?;
    tl.ring_complete_s = rec.elapsed().as_secs_f64();

    bar.set_message("final reads");
    let load_history = History::from_events(rec.events())
        .map_err(|e| ExperimentError(format!("the load's history is malformed: {e}")))?;
    let read_back = analysis::written_keys(&load_history);
    let unanswered = load::read_back(rt, &cx.http, &rec, &processes, &read_back, &addrs);
    let stored = stored_keys(&cx, &addrs);

    bar.set_message("checking linearizability");
    let events = rec.take_events();
    let history = History::from_events(events.iter().cloned())
        .map_err(|e| ExperimentError(format!("the history is malformed: {e}")))?;
    let (lin, check_s) = analysis::check(&history);
    Ok(Run {
        settings: s.clone(),
        duration,
        addrs,
        victims,
        tl,
        history,
        load_ops: load_history.ops.len(),
        load_events: load_history.events,
        read_back,
        unanswered,
        stored,
        lin,
        check_s,
        events,
    })
}

/// Start a bootstrap and n − 1 members joined one after the other, wait until they form
/// the ring, and choose the victims: the bootstrap's next k − 1 successors, consecutive
/// on the ring. Returns every node's address and the victims' indices.
fn start_ring(cx: &Ctx, fleet: &mut Fleet) -> Result<(Vec<String>, Vec<usize>)> {
    let s = &cx.options.crash;
    cx.bar
        .set_message(format!("starting {} dht processes", s.nodes));
    let boot = fleet.start_bootstrap(s.k)?;
    for _ in 1..s.nodes {
        fleet.start_member(0, None)?;
    }
    let addrs = fleet.addrs.clone();
    wait_ring(cx.rt, &cx.http, &addrs, START_TIMEOUT)?;
    let ring = cx
        .rt
        .block_on(overlay(&cx.http, &boot))
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
    Ok((addrs, victims))
}

/// While the load runs: kill the victims at [`KILL_AT`], note when the bootstrap has
/// removed them, restart them at [`RESTART_AT`], and wait for the load's end.
fn crash_and_restart(
    cx: &Ctx,
    fleet: &mut Fleet,
    running: &load::Running,
    rec: &Recorder,
    victims: &[usize],
    duration: Duration,
) -> Result<Timeline> {
    let at = |f: f64| rec.start() + duration.mul_f64(f);
    let now_s = || rec.elapsed().as_secs_f64();
    let tick = |msg: &str| {
        cx.bar.set_position(rec.elapsed().as_secs());
        cx.bar.set_message(msg.to_string());
    };
    let mut tl = Timeline::default();
    sleep_until(at(KILL_AT), || tick("load on every node"));
    fleet.check_alive()?;
    for &v in victims {
        running.set_live(v, false);
        fleet.kill9(v);
    }
    tl.kill_s = now_s();
    let victim_addrs: Vec<&String> = victims.iter().map(|&i| &fleet.addrs[i]).collect();
    let killed = format!("{} nodes killed", victims.len());
    let until = at(RESTART_AT);
    let boot = &fleet.addrs[0];
    tl.removed_s = watch_removal(cx, boot, &victim_addrs, until, || tick(&killed), now_s);
    tl.restart_s = now_s();
    tick("restarting the killed nodes");
    for &v in victims {
        fleet.restart(v)?;
        tl.rejoined_s.push(now_s());
        running.set_live(v, true);
    }
    sleep_until(running.end(), || tick("load on every node"));
    tl.load_end_s = duration.as_secs_f64();
    Ok(tl)
}

/// Poll the bootstrap's overlay until `until`, calling `tick` before each poll; returns
/// the time (`now_s`) of the first answer that no longer held any of `victims`.
fn watch_removal(
    cx: &Ctx,
    boot: &str,
    victims: &[&String],
    until: Instant,
    tick: impl Fn(),
    now_s: impl Fn() -> f64,
) -> Option<f64> {
    let poll = HttpClient::new(Duration::from_millis(500));
    let mut removed_s = None;
    while Instant::now() < until {
        tick();
        if removed_s.is_none() {
            if let Ok(r) = cx.rt.block_on(overlay(&poll, boot)) {
                if !r.iter().any(|a| victims.contains(&a)) {
                    removed_s = Some(now_s());
                }
            }
        }
        thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
        );
    }
    removed_s
}

/// (keys as primary, keys as replica) each node reports (`GET /node`); the restarted
/// nodes are refilled. Zero for a node that does not answer.
fn stored_keys(cx: &Ctx, addrs: &[String]) -> Vec<(u64, u64)> {
    addrs
        .iter()
        .map(|a| {
            let v = cx
                .rt
                .block_on(cx.http.get(&format!("http://{a}/node")))
                .map(|r| r.value())
                .unwrap_or_default();
            (
                v["keys_primary"].as_u64().unwrap_or(0),
                v["keys_replica"].as_u64().unwrap_or(0),
            )
        })
        .collect()
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
