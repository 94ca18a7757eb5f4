//! What every experiment shares: options, the backend, progress bars, result tables, CSV
//! writing, and `run` / `run_all`, which the `dht experiment` command calls.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ringkv_core::Consistency;
use ringkv_sim::Latency;
use serde::Serialize;

use crate::{
    balance, consistency, crash, durability, faults, hops, readmix, scaling, staleness, throughput,
    ExperimentError, Result,
};

/// The replication models of the reference experiments (insert, query, requests) and
/// the read-heavy mix, in the order every table and plot uses.
pub const MODELS: [Consistency; 3] = [Consistency::Chain, Consistency::Eventual, Consistency::Craq];

/// The two models of the simulator studies that predate CRAQ (staleness, scaling,
/// faults): CRAQ's writes are chain replication's, and its reads are linearizable.
pub const BASE_MODELS: [Consistency; 2] = [Consistency::Chain, Consistency::Eventual];

/// The model's name in CSVs and legends: `chain`, `eventual` or `craq`.
pub fn model_name(model: Consistency) -> &'static str {
    match model {
        Consistency::Chain => "chain",
        Consistency::Eventual => "eventual",
        Consistency::Craq => "craq",
    }
}

/// Where the reference experiments run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A real 10-node ring on loopback HTTP in this process; wall-clock time.
    Real,
    /// The deterministic simulator; virtual time.
    Sim,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "real" | "http" => Ok(Backend::Real),
            "sim" | "simulator" => Ok(Backend::Sim),
            other => Err(format!("unknown backend '{other}': use real or sim")),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Real => "real",
            Backend::Sim => "sim",
        })
    }
}

/// One experiment, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Experiment {
    /// 1. Insert throughput against k.
    Insert,
    /// 2. Query throughput against k.
    Query,
    /// 3. Mixed requests, checked for linearizability.
    Requests,
    /// 4a. Staleness of eventual consistency against time since the write.
    Staleness,
    /// 4b. Lookup hops against N, fingers vs successors.
    Hops,
    /// 4c. Throughput and p99 latency against N, virtual time.
    Scaling,
    /// 4d. Linearizability violations under faults, many seeds.
    Faults,
    /// 4e. Keys per node against virtual nodes per node (placement only, no network).
    Balance,
    /// The read-heavy mix, experiment 6 (95/5 and 70/30): read throughput against k for
    /// chain, eventual and CRAQ, in the simulator or on a real ring with 1 ms links.
    ReadMix,
    /// Everything above.
    All,
    /// Experiment 5: `kill -9` of k − 1 separate node processes under load, then their
    /// restart (or of the bootstrap, see [`crash::Victim`]); every acknowledged write must
    /// survive and the history be linearizable. Not part of [`Experiment::All`]: it starts
    /// `dht` processes (see [`crash`]).
    Crash,
    /// What a data directory costs: inserts/s with `--data-dir` against memory, side by
    /// side, and the restart time of a node holding many keys (see [`durability`]). Not
    /// part of [`Experiment::All`].
    Durability,
}

impl Experiment {
    /// Every single experiment `all` runs, in its order ([`Experiment::Crash`] runs only on
    /// its own).
    pub const EACH: [Experiment; 9] = [
        Experiment::Insert,
        Experiment::Query,
        Experiment::Requests,
        Experiment::Staleness,
        Experiment::Hops,
        Experiment::Scaling,
        Experiment::Faults,
        Experiment::Balance,
        Experiment::ReadMix,
    ];

    /// The subcommand name.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Insert => "insert",
            Experiment::Query => "query",
            Experiment::Requests => "requests",
            Experiment::Staleness => "staleness",
            Experiment::Hops => "hops",
            Experiment::Scaling => "scaling",
            Experiment::Faults => "faults",
            Experiment::Balance => "balance",
            Experiment::ReadMix => "readmix",
            Experiment::All => "all",
            Experiment::Crash => "crash",
            Experiment::Durability => "durability",
        }
    }

    /// Whether `--backend` does not apply: it runs only in the simulator, or (balance)
    /// computes placement without any network.
    pub fn sim_only(self) -> bool {
        matches!(
            self,
            Experiment::Staleness
                | Experiment::Hops
                | Experiment::Scaling
                | Experiment::Faults
                | Experiment::Balance
        )
    }
}

impl FromStr for Experiment {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Experiment::EACH
            .iter()
            .chain([Experiment::All, Experiment::Crash, Experiment::Durability].iter())
            .find(|e| e.name() == s)
            .copied()
            .ok_or_else(|| format!("unknown experiment '{s}'"))
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Output directory for CSVs and PNGs.
    pub out: PathBuf,
    /// Small sizes, for tests (well under a minute in a debug build).
    pub quick: bool,
    /// Backend of the insert, query and requests experiments (the others are simulator-only).
    pub backend: Backend,
    /// Repetitions of each throughput point (`None`: [`REPS`], or 2 with `quick`; with a
    /// link latency [`WAN_REPS`], or 1), of each requests run (`None`: [`REQUEST_REPS`],
    /// or 1 with `quick`), of each read-heavy point (`None`: 3 on the real ring, 5 in the
    /// simulator, or 1 with `quick`),
    /// and rings (address sets) per balance setup (as throughput).
    pub reps: Option<usize>,
    /// Replication factors.
    pub ks: Vec<usize>,
    /// Ring size of the reference experiments.
    pub nodes: usize,
    /// Base seed of simulator runs.
    pub seed: u64,
    /// Read the workload files from here instead of the copies embedded from
    /// `experiments/workloads/`.
    pub workload_dir: Option<PathBuf>,
    /// Draw progress bars (they are hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Also write each requests run's history (`histories/*.jsonl`, for `dht check`).
    pub histories: bool,
    /// Settings of the crash experiment (its own ring size, k and duration).
    pub crash: crash::Settings,
    /// Real backend only: delay every node-to-node message of the rings by a draw from
    /// this distribution (the runtime's `--link-latency`), as if the nodes were far apart.
    /// Insert, query and requests then write their files with the suffix `_wan`
    /// ([`Options::suffix`]) and a `link_latency` column. In [`Experiment::All`] it is the
    /// latency of the extra wide-area run only (`None` there: [`WAN_LATENCY`]); every other
    /// run of `all` has none.
    pub link_latency: Option<Latency>,
    /// Durability only: keys loaded into the node whose restart is timed (`None`: 10⁶, or
    /// 5,000 with `quick`).
    pub restart_keys: Option<u64>,
}

/// The link latency of the wide-area run of `dht experiment all`: 1 ms on every
/// node-to-node message.
pub const WAN_LATENCY: Latency = Latency::Const { ns: 1_000_000 };

/// Repetitions of each throughput point with a link latency, unless `reps` says otherwise
/// (1 with `quick`). Fewer than the loopback run's [`REPS`] so that `dht experiment all` stays
/// within its 10 minutes on a busy 2-core machine: with 1 ms links a fresh 10-node ring
/// takes about 1.3 s to form (the joins cross the slow links) and its insert and query
/// phases about 1.2 s, so 20 repetitions of the 6 points added about 5 minutes. With
/// CRAQ, a third model, 7 repetitions of 9 points took about as long as 10 of 6 did; with
/// a token-aware phase after each of the reference's (about 0.5 s more per ring), 5.
pub const WAN_REPS: usize = 5;

/// Repetitions of each loopback throughput point, unless `reps` says otherwise (2 with
/// `quick`): 14 of the 9 (model, k) points take about as long as 20 of the 6 before CRAQ.
pub const REPS: usize = 14;

/// Repetitions of each requests run, unless `reps` says otherwise (1 with `quick`): 7 of
/// three models, about as long as 10 of two.
pub const REQUEST_REPS: usize = 7;

impl Options {
    /// Defaults: results into `out`, k = 1, 3, 5, 10 nodes, the real backend.
    pub fn new(out: impl Into<PathBuf>) -> Options {
        Options {
            out: out.into(),
            quick: false,
            backend: Backend::Real,
            reps: None,
            ks: vec![1, 3, 5],
            nodes: 10,
            seed: 1,
            workload_dir: None,
            progress: true,
            histories: false,
            crash: crash::Settings::default(),
            link_latency: None,
            restart_keys: None,
        }
    }

    /// The link latency of the rings, if any (real backend only).
    pub fn link_latency(&self) -> Option<Latency> {
        match self.backend {
            Backend::Real => self.link_latency,
            Backend::Sim => None,
        }
    }

    /// Suffix of the file names of insert, query and requests: `_wan` with a link latency,
    /// so a wide-area run never overwrites the loopback run's files.
    pub fn suffix(&self) -> &'static str {
        if self.link_latency().is_some() {
            "_wan"
        } else {
            ""
        }
    }

    /// The `link_latency` cell of the CSVs: `None` (no column) without a link latency.
    pub fn link_latency_cell(&self) -> Option<String> {
        self.link_latency().map(|l| l.to_string())
    }

    /// Repetitions of each throughput point: [`REPS`] (2 with `quick`); with a link
    /// latency [`WAN_REPS`] (1 with `quick`).
    pub fn reps(&self) -> usize {
        let wan = self.link_latency().is_some();
        self.reps
            .unwrap_or(match (self.quick, wan) {
                (true, false) => 2,
                (true, true) => 1,
                (false, false) => REPS,
                (false, true) => WAN_REPS,
            })
            .max(1)
    }

    /// Repetitions of each requests run.
    pub fn request_reps(&self) -> usize {
        self.reps
            .unwrap_or(if self.quick { 1 } else { REQUEST_REPS })
            .max(1)
    }

    /// Rings (address sets) per balance setup: 20 (2 with `quick`).
    pub fn balance_reps(&self) -> usize {
        self.reps.unwrap_or(if self.quick { 2 } else { 20 }).max(1)
    }

    /// Pick the quick or the full size.
    pub fn size<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// A file in the output directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
}

/// A plain-text table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Heading line.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Cells.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        writeln!(f, "{}", self.title)?;
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = width.get(i).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        writeln!(f, "  {}", line(&self.header))?;
        writeln!(
            f,
            "  {}",
            width
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  ")
        )?;
        for row in &self.rows {
            writeln!(f, "  {}", line(row))?;
        }
        Ok(())
    }
}

/// What one experiment produced.
#[derive(Clone, Debug)]
pub struct Report {
    /// Experiment name.
    pub name: &'static str,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Summary table.
    pub table: Table,
    /// Things a reader must know (failed inserts, violations where none were expected...).
    pub warnings: Vec<String>,
    /// Wall time of the experiment.
    pub seconds: f64,
}

/// Write rows as CSV with a header from the row type's field names.
/// Run one simulation that records its history, and parse that history.
pub fn simulate(
    config: ringkv_sim::SimConfig,
) -> Result<(ringkv_sim::SimResult, ringkv_sim::check::History)> {
    let result = ringkv_sim::Simulation::new(config)
        .map_err(|e| ExperimentError(e.to_string()))?
        .run();
    let history = ringkv_sim::check::History::parse(result.history.as_slice())
        .map_err(|e| ExperimentError(e.to_string()))?;
    Ok((result, history))
}

pub fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let file = File::create(path)
        .map_err(|e| ExperimentError(format!("cannot write {}: {e}", path.display())))?;
    let mut w = csv::Writer::from_writer(file);
    for row in rows {
        w.serialize(row)
            .map_err(|e| ExperimentError(format!("cannot write {}: {e}", path.display())))?;
    }
    w.flush()?;
    Ok(())
}

/// A progress bar for one experiment of `len` steps.
pub fn progress_bar(options: &Options, name: &str, len: u64) -> ProgressBar {
    let bar = if options.progress {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    let style = ProgressStyle::with_template(
        "{prefix:>10.bold} [{bar:32.cyan/blue}] {pos:>3}/{len:<3} {elapsed:>4} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(name.to_string());
    bar
}

/// Run `f` over `items` on up to two threads (simulator runs are single-threaded and the
/// machine has two cores), keeping the input order.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 2);
    if threads == 1 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<R>>> =
        std::sync::Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item was mapped"))
        .collect()
}

/// Run one experiment (or all) and write its files into `options.out`.
pub fn run(experiment: Experiment, options: &Options) -> Result<Vec<Report>> {
    std::fs::create_dir_all(&options.out)
        .map_err(|e| ExperimentError(format!("cannot create {}: {e}", options.out.display())))?;
    match experiment {
        Experiment::All => {
            // Every run of `all` but the wide-area one is on loopback.
            let wan = Options {
                link_latency: Some(options.link_latency.unwrap_or(WAN_LATENCY)),
                ..options.clone()
            };
            let options = &Options {
                link_latency: None,
                ..options.clone()
            };
            let mut reports = Vec::new();
            // Insert and query share their rings: each repetition's fresh ring is loaded by
            // the timed inserts, then the queries are timed.
            let started = Instant::now();
            let (insert, query) = throughput::run_both(options, "")?;
            let seconds = started.elapsed().as_secs_f64();
            log_done(options, "insert+query", seconds);
            reports.push(Report { seconds, ..insert });
            reports.push(Report {
                seconds: 0.0,
                ..query
            });
            if options.backend == Backend::Real {
                // The same experiments in the simulator, which has network latency but no
                // CPU: the protocol's own cost of k, apart from this machine's two cores.
                let started = Instant::now();
                let sim = Options {
                    backend: Backend::Sim,
                    ..options.clone()
                };
                let (insert, query) = throughput::run_both(&sim, "_sim")?;
                let seconds = started.elapsed().as_secs_f64();
                log_done(options, "insert+query (sim)", seconds);
                reports.push(Report { seconds, ..insert });
                reports.push(Report {
                    seconds: 0.0,
                    ..query
                });
                // And on a real ring whose node-to-node messages take 1 ms: latency-bound
                // rather than CPU-bound, like separate machines.
                let started = Instant::now();
                let (insert, query) = throughput::run_both(&wan, wan.suffix())?;
                let seconds = started.elapsed().as_secs_f64();
                log_done(options, "insert+query (wan)", seconds);
                reports.push(Report { seconds, ..insert });
                reports.push(Report {
                    seconds: 0.0,
                    ..query
                });
            }
            for e in &Experiment::EACH[2..] {
                if *e != Experiment::ReadMix {
                    reports.extend(run_one(*e, options)?);
                }
            }
            // The read-heavy mix in the simulator, and (real backend) on the wide-area ring.
            let sim = Options {
                backend: Backend::Sim,
                ..options.clone()
            };
            reports.extend(run_one(Experiment::ReadMix, &sim)?);
            if options.backend == Backend::Real {
                reports.extend(run_one(Experiment::ReadMix, &wan)?);
            }
            Ok(reports)
        }
        e => run_one(e, options),
    }
}

/// Run one single experiment (not [`Experiment::All`]), timed.
fn run_one(e: Experiment, options: &Options) -> Result<Vec<Report>> {
    let started = Instant::now();
    let mut reports = match e {
        Experiment::Insert => vec![throughput::run(options, throughput::Which::Insert)?],
        Experiment::Query => vec![throughput::run(options, throughput::Which::Query)?],
        Experiment::Requests => vec![consistency::run(options)?],
        Experiment::Staleness => vec![staleness::run(options)?],
        Experiment::Hops => vec![hops::run(options)?],
        Experiment::Scaling => vec![scaling::run(options)?],
        Experiment::Faults => vec![faults::run(options)?],
        Experiment::Balance => vec![balance::run(options)?],
        Experiment::ReadMix => readmix::run(options)?,
        Experiment::Crash => vec![crash::run(options)?],
        Experiment::Durability => vec![durability::run(options)?],
        Experiment::All => {
            return Err(ExperimentError(
                "run_one takes a single experiment, not all".into(),
            ))
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if let [r] = reports.as_mut_slice() {
        r.seconds = seconds;
    }
    log_done(options, e.name(), seconds);
    Ok(reports)
}

/// Without a terminal the bars are hidden: say on stderr when each experiment is done.
fn log_done(options: &Options, name: &str, seconds: f64) {
    use std::io::IsTerminal;
    if options.progress && !std::io::stderr().is_terminal() {
        eprintln!("{name}: done in {seconds:.1} s");
    }
}

/// Facts about the machine for the reports.
pub fn machine_facts() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!(", {:.0} GiB RAM", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!(", Linux {}", s.trim()))
        .unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    format!("{cores} cores ({cpu}){mem_gib}{kernel}, {profile}")
}

/// The 1-minute load average (how busy the shared machine was), if known.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The plain-text summary of a run: machine, time, every table and warning. `load_before`
/// is the load average when the run started.
pub fn summary(
    reports: &[Report],
    command: &str,
    total: Duration,
    load_before: Option<f64>,
) -> String {
    let mut out = String::new();
    out.push_str(&format!("ringkv experiments, {}\n", today()));
    out.push_str(&format!("command: {command}\n"));
    out.push_str(&format!("machine: {}\n", machine_facts()));
    let load = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
    out.push_str(&format!(
        "load average (1 min): {} at the start, {} at the end (other processes share this machine)\n",
        load(load_before),
        load(load_average())
    ));
    out.push_str(&format!("wall time: {:.1} s\n\n", total.as_secs_f64()));
    for r in reports {
        out.push_str(&r.table.to_string());
        if r.seconds > 0.0 {
            out.push_str(&format!("  ({} took {:.1} s)\n", r.name, r.seconds));
        }
        for w in &r.warnings {
            out.push_str(&format!("  WARNING: {w}\n"));
        }
        out.push('\n');
    }
    out
}

/// Format a number of operations per second.
pub fn ops(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "-".into()
    }
}

/// Format with `d` decimals.
pub fn fixed(v: f64, d: usize) -> String {
    if v.is_finite() {
        format!("{v:.d$}")
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_dates_format() {
        let mut t = Table::new("T", &["a", "long name"]);
        t.row(vec!["1".into(), "x".into()]);
        let s = t.to_string();
        assert!(s.contains("  a  long name\n"), "{s}");
        assert_eq!(today().len(), 10);
        assert_eq!(par_map(&[1, 2, 3], |x| x * 2), vec![2, 4, 6]);
    }
}
