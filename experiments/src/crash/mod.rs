//! Experiment 5: crash-stop of real node processes under load (`dht experiment crash`).
//!
//! A ring of separate `dht` processes on loopback (one `dht bootstrap` and N − 1
//! `dht node --join`, default N = 5, k = 3, chain replication, failure handling on) serves a
//! closed-loop load of concurrent HTTP clients (default 8) on a few keys (default 16), half
//! inserts and half queries, for a fixed time (default 20 s; 5 s with `--quick`). What is
//! done is the [`Fault`]: `kill` (the default), or `pause` and `partition` (see
//! `nemesis`): a SIGSTOP of the bootstrap's successor, or the bootstrap's next ⌊(N − 1)/2⌋
//! successors cut off from the other nodes through their test-only transport filter, both
//! from 25% of the load to 55% (6 s of the default 20 s), written as `crash_pause.*` and
//! `crash_partition.*`. Who is killed is the [`Victim`]:
//!
//! - **successors** (the default): at 25% of that time k − 1 members that follow each
//!   other on the ring (the bootstrap's next k − 1 successors, so some keys keep a single
//!   live replica) are killed with SIGKILL; at 55% they are started again on their
//!   addresses and rejoin empty;
//! - **bootstrap**: at 25% the bootstrap process is killed with SIGKILL; at 55% it is
//!   started again with its command (on its port) and rejoins its ring; at 75%, once it
//!   is back, it is killed for good, a new node joins through a member (`--bootstrap
//!   <member>`), and then another member departs (`dht depart`). The load goes on at
//!   least 2 s past the depart, longer than its duration if need be.
//!
//! The nodes run with a 2 s request timeout (`--request-timeout-ms 2000`) so that requests
//! caught by the crash end (504) within the run. The clients send each request to a
//! random node that is up: a node leaves their list when it is killed or asked to
//! depart, and comes back (or in) once it is in the ring, so they never depend on the
//! bootstrap. After the load, once every node of the final ring is a member, every key
//! written is read through every node of it, and:
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
//! table) and `crash_real.png` (ok operations per second with the events marked);
//! `crash_bootstrap.*` with the bootstrap as victim. The kill, pause and partition runs
//! also keep their row of a table of all three at the end of `crash_real.md` (`summary`):
//! the longest window of the load without an `ok` completion against the target of the
//! failure timeout plus 0.5 s, the lost writes and the verdict. It is not part of `dht
//! experiment all`, which stays in-process.
//!
//! Every operation goes into a history in the checker's format, its answer classified
//! `ok`, `fail` or `info` by the rule every client uses ([`ringkv_runtime::outcome`](mod@ringkv_runtime::outcome));
//! after an `info` the client goes on under a fresh process id.
//!
//! The parts: `settings` is what a run is asked to do; `fleet` starts, kills, restarts
//! and departs the node processes, and `ring` watches what they say of their ring; `load`
//! runs the clients and the final reads; `successors`, `bootstrap` and `nemesis` (pause,
//! partition) are the scenarios' schedules, on the load's `clock`; `timeline` holds when their events
//! happened; `analysis` reads the history (throughput per second, lost writes,
//! linearizability) and `stretches` the throughput between the events and the stall
//! after each fault; `report`, `markdown` and `chart` write the CSV, Markdown and PNG.

mod analysis;
mod bootstrap;
mod chart;
mod clock;
mod fleet;
mod load;
mod markdown;
mod nemesis;
mod report;
mod ring;
mod settings;
mod stretches;
mod successors;
mod summary;
mod timeline;

use std::sync::Arc;
use std::time::Duration;

use ringkv_client::Recorder;
use ringkv_runtime::HttpClient;
use ringkv_sim::check::{History, HistoryEvent, LinReport};

use crate::real::{runtime, CLIENT_TIMEOUT};
use crate::runner::{progress_bar, Options, Report};
use crate::{ExperimentError, Result};
use fleet::Fleet;
use load::Unanswered;
use ring::{overlay, wait_ring};
use timeline::Timeline;

pub use analysis::Row;
pub use settings::{Fault, Settings, Victim};

/// The kill, as a fraction of the load's duration.
pub const KILL_AT: f64 = 0.25;
/// The restart, as a fraction of the load's duration.
pub const RESTART_AT: f64 = 0.55;
/// With the bootstrap as victim: its second kill, for good (once it is back in the ring),
/// as a fraction of the load's duration.
pub const KILL_FOR_GOOD_AT: f64 = 0.75;
/// With the bootstrap as victim: the least time the load goes on after the depart.
pub const LOAD_AFTER_DEPART: Duration = Duration::from_secs(2);
/// Longest wait for a process to print its address or to join the ring.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait, after the load, for every node to be a member again.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of each final read (a read that fails is retried; every attempt is recorded).
const READ_ATTEMPTS: usize = 5;
/// Width of a row of the CSV.
const WINDOW: Duration = Duration::from_secs(1);

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
    // The partition goes through the nodes' test-only filter, which takes a cluster
    // secret of the run's own.
    let secret = (s.fault == Fault::Partition).then(|| format!("{:032x}", rand::random::<u128>()));
    let mut fleet = Fleet::new(
        dht,
        s.k,
        s.request_timeout,
        s.failure_timeout,
        secret.clone(),
    )?;
    let logs = fleet.logs.clone();
    let measured = measure(options, duration, &rt, &mut fleet, &bar, secret.as_deref());
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
    /// Every node's address; 0 is the bootstrap, a node that joined later comes last.
    addrs: Vec<String>,
    /// Indices of the killed nodes.
    victims: Vec<usize>,
    /// The ring at the end, which the final reads go through.
    final_ring: Vec<String>,
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
    /// (keys as primary, keys as replica) per node after the run (`None`: no answer).
    stored: Vec<Option<(u64, u64)>>,
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

/// Start the ring, run the load with the victim's scenario, wait for the final ring, read
/// every key back through it and check the history.
fn measure(
    options: &Options,
    duration: Duration,
    rt: &tokio::runtime::Runtime,
    fleet: &mut Fleet,
    bar: &indicatif::ProgressBar,
    secret: Option<&str>,
) -> Result<Run> {
    let s = &options.crash;
    let cx = Ctx {
        options,
        rt,
        http: HttpClient::new(CLIENT_TIMEOUT),
        bar,
    };
    let victims = start_ring(&cx, fleet)?;
    let rec = Arc::new(Recorder::in_memory());
    let running = load::start(rt, &cx.http, &rec, &fleet.addrs, s, options.seed, duration);
    let mut tl = match (s.fault, s.victim) {
        (Fault::Kill, Victim::Successors) => {
            successors::crash_and_restart(&cx, fleet, &running, &rec, &victims, duration)?
        }
        (Fault::Kill, Victim::Bootstrap) => {
            bootstrap::crash_rejoin_fail_over(&cx, fleet, &running, &rec, duration)?
        }
        (fault, _) => nemesis::fault_and_heal(
            &cx, fleet, &running, &rec, &victims, duration, fault, secret,
        )?,
    };
    bar.set_message("waiting for the clients' last requests");
    let processes = running.finish(rt)?;
    fleet.check_alive()?;

    bar.set_message("waiting for the ring to be complete");
    let addrs = fleet.addrs.clone();
    let final_ring = final_ring(&addrs, &tl);
    wait_ring(
        rt,
        &cx.http,
        &final_ring[0],
        &final_ring,
        SETTLE_TIMEOUT,
        || {},
    )?;
    tl.ring_complete_s = rec.elapsed().as_secs_f64();

    bar.set_message("final reads");
    let load_history = History::from_events(rec.events())
        .map_err(|e| ExperimentError(format!("the load's history is malformed: {e}")))?;
    let read_back = analysis::written_keys(&load_history);
    let unanswered = load::read_back(rt, &cx.http, &rec, &processes, &read_back, &final_ring);
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
        final_ring,
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

/// The ring at the end: every node but, after a failover, the bootstrap and the member
/// that departed. The bootstrap, when it is in it, comes first.
fn final_ring(addrs: &[String], tl: &Timeline) -> Vec<String> {
    let gone: Vec<usize> = tl
        .failover
        .as_ref()
        .map_or(Vec::new(), |f| vec![0, f.departer]);
    addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| !gone.contains(i))
        .map(|(_, a)| a.clone())
        .collect()
}

/// Start a bootstrap and n − 1 members joined one after the other, wait until they form
/// the ring, and choose the victims: the bootstrap's next successors, consecutive on the
/// ring (k − 1 to kill, one to pause, ⌊(N − 1)/2⌋ to cut off), or the bootstrap. Returns
/// the victims' indices.
fn start_ring(cx: &Ctx, fleet: &mut Fleet) -> Result<Vec<usize>> {
    let s = &cx.options.crash;
    cx.bar
        .set_message(format!("starting {} dht processes", s.nodes));
    let boot = fleet.start_bootstrap()?;
    for _ in 1..s.nodes {
        fleet.start_member()?;
    }
    let addrs = &fleet.addrs;
    wait_ring(cx.rt, &cx.http, &boot, addrs, START_TIMEOUT, || {})?;
    let ring = cx
        .rt
        .block_on(overlay(&cx.http, &boot))
        .map_err(|e| ExperimentError(format!("GET /overlay from the bootstrap: {e}")))?;
    let count = match s.victim {
        Victim::Successors => s.victim_count(),
        Victim::Bootstrap => s.k - 1,
    };
    let successors: Vec<usize> = ring
        .iter()
        .filter(|a| **a != boot)
        .take(count)
        .filter_map(|a| addrs.iter().position(|x| x == a))
        .collect();
    if successors.len() != count {
        return Err(ExperimentError(format!(
            "the overlay {ring:?} does not hold the started nodes"
        )));
    }
    Ok(match s.victim {
        Victim::Successors => successors,
        Victim::Bootstrap => vec![0],
    })
}

/// (keys as primary, keys as replica) each node reports (`GET /node`); the restarted
/// nodes are refilled. `None` for a node that does not answer (one killed for good).
fn stored_keys(cx: &Ctx, addrs: &[String]) -> Vec<Option<(u64, u64)>> {
    let count = |v: &serde_json::Value, field: &str| v[field].as_u64().unwrap_or(0);
    addrs
        .iter()
        .map(|a| {
            let v = cx
                .rt
                .block_on(cx.http.get(&format!("http://{a}/node")))
                .ok()?
                .value();
            Some((count(&v, "keys_primary"), count(&v, "keys_replica")))
        })
        .collect()
}
