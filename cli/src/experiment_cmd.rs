//! `dht experiment`: the reference experiments and the simulator studies, written as CSVs
//! and PNG plots (see `results/README.md`).
//!
//! `dht experiment all` starts its own 10-node rings on loopback (no setup), runs every
//! experiment for the consistency models (chain, eventual, CRAQ) and k = 1, 3, 5, writes into `results/` (or
//! `--out DIR`), shows progress bars on a terminal and ends with a summary table, which
//! it also writes to `summary.txt` in the output directory. Besides the loopback and
//! simulator runs of insert and query it runs them once more on rings whose node-to-node
//! messages are delayed by 1 ms (`--link-latency`, default const:1ms), writing
//! `insert_throughput_wan.*` and `query_throughput_wan.*`.
//!
//! `dht experiment crash` is not part of `all`: it starts a ring of separate `dht`
//! processes (this executable; default 5, k = 3, chain), runs a closed-loop load for
//! `--duration` (20 s; 5 s with `--quick`), `kill -9`s k − 1 of them at 25% of it and
//! restarts them at 55%, then reads every key back and checks the history. It writes
//! `crash_real.csv`, `crash_real.md` and `crash_real.png`. With `--victim bootstrap` it
//! kills the bootstrap instead, restarts it, kills it for good, and lets a node join and
//! another depart through the members; it writes `crash_bootstrap.*`. With `--fault
//! pause` it SIGSTOPs the bootstrap's successor instead of killing anything, and SIGCONTs
//! it at 55% (`crash_pause.*`); with `--fault partition` it cuts the bootstrap's next 2
//! successors off from the other 3 nodes until 55%, through the nodes' test-only transport
//! filter (`crash_partition.*`). The kill, pause and partition runs each keep their row of
//! a table of all three at the end of `crash_real.md`.
//!
//! Exit codes: 0 done (anomalies, such as failed inserts, are listed as warnings in the
//! summary); 2 bad arguments, or an experiment could not run or write its files, or the
//! crash experiment lost an acknowledged write or found the history not linearizable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringkv_experiments::crash;
use ringkv_experiments::runner::{self, Backend, Experiment, Options};
use ringkv_sim::Latency;

/// Which experiment.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Everything below, into one results directory.
    All,
    /// 1. Insert throughput against k (one client per node, insert_0N_part.txt).
    Insert,
    /// 2. Query throughput against k (after loading the inserts; query_0N.txt).
    Query,
    /// 3. Mixed requests_0N.txt, histories checked for linearizability.
    Requests,
    /// 4a. Staleness of eventual consistency against time since the write (simulator).
    Staleness,
    /// 4b. Lookup hops against N, fingers vs successors (simulator).
    Hops,
    /// 4c. Throughput and p99 latency against N in virtual time (simulator).
    Scaling,
    /// 4d. Linearizability violations under random faults, many seeds (simulator).
    Faults,
    /// 4e. Load balance: keys per node against virtual nodes per node R = 1, 2, 5, 10, 20,
    /// for 10^3 and 10^4 nodes at the simulator's addresses and 5·10^5 keys (and 10^6 at
    /// 10^4 nodes), each node at Id::of_vnode(addr, 0..R); max, p99, p1 and median ÷ the
    /// mean over --reps rings (default 20), against the Chord paper's §6.2. Placement
    /// only, no network; a few seconds.
    Balance,
    /// Experiment 6, the read-heavy mix (95/5 and 70/30 reads/writes): read throughput
    /// against k for chain, eventual and CRAQ; --backend sim (readmix_sim.*, keys over the
    /// ring; readmix_chain_sim.*, keys on one chain of nodes that take 100 µs a message,
    /// with 100% reads too) or real, a ring with 1 ms links or --link-latency
    /// (readmix_wan.*, keys over the ring; readmix_chain_wan.*, keys on one chain of
    /// nodes each emulating a processor of 2,000 messages a second).
    Readmix,
    /// Experiment 5: kill -9 of k − 1 dht node processes under load, then their restart (or,
    /// with --victim bootstrap, of the bootstrap; with --fault pause|partition, a SIGSTOP
    /// or a network partition instead); no acknowledged write may be lost, the history
    /// must be linearizable (not part of all).
    Crash,
    /// What --data-dir costs: inserts/s of a 5-node chain ring with data directories
    /// against the same ring in memory, side by side (k from --k, default 1,3; 16, 64 and
    /// 256 clients), and the restart time of a node holding --restart-keys keys
    /// (durability_throughput.csv, durability_restart.csv; not part of all).
    Durability,
}

impl Which {
    fn experiment(self) -> Experiment {
        match self {
            Which::All => Experiment::All,
            Which::Insert => Experiment::Insert,
            Which::Query => Experiment::Query,
            Which::Requests => Experiment::Requests,
            Which::Staleness => Experiment::Staleness,
            Which::Hops => Experiment::Hops,
            Which::Scaling => Experiment::Scaling,
            Which::Faults => Experiment::Faults,
            Which::Balance => Experiment::Balance,
            Which::Readmix => Experiment::ReadMix,
            Which::Crash => Experiment::Crash,
            Which::Durability => Experiment::Durability,
        }
    }
}

/// Who the crash experiment kills.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VictimArg {
    /// The bootstrap's next k − 1 successors: killed at 25% of the load, restarted at 55%
    /// (crash_real.csv/.md/.png).
    Successors,
    /// The bootstrap process: killed at 25%, restarted with the same command at 55% (it
    /// rejoins its ring), killed for good at 75%; while it is down a new node joins through
    /// a member and another member departs (crash_bootstrap.csv/.md/.png).
    Bootstrap,
}

impl VictimArg {
    fn victim(self) -> crash::Victim {
        match self {
            VictimArg::Successors => crash::Victim::Successors,
            VictimArg::Bootstrap => crash::Victim::Bootstrap,
        }
    }
}

/// What the crash experiment does to its victims.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultArg {
    /// kill -9 (see --victim), restart at 55% of the load (crash_real.* or
    /// crash_bootstrap.*).
    Kill,
    /// SIGSTOP of the bootstrap's successor at 25% of the load, SIGCONT at 55% (6 s with
    /// the default 20 s load): crash_pause.csv/.md/.png.
    Pause,
    /// The bootstrap's next ⌊(N − 1)/2⌋ successors (2 of 5) cut off from the other nodes
    /// at 25% of the load, healed at 55%, through the nodes' test-only transport filter
    /// (they run with --allow-fault-injection and a cluster secret of the run's own):
    /// crash_partition.csv/.md/.png.
    Partition,
}

impl FaultArg {
    fn fault(self) -> crash::Fault {
        match self {
            FaultArg::Kill => crash::Fault::Kill,
            FaultArg::Pause => crash::Fault::Pause,
            FaultArg::Partition => crash::Fault::Partition,
        }
    }
}

/// Arguments of `dht experiment`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExperimentArgs {
    /// The experiment to run.
    #[arg(value_enum)]
    pub which: Which,
    /// Directory for the CSV and PNG files (created if missing).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Small sizes (for tests): 2 runs per throughput point, 1 per requests run, few
    /// seeds, small rings; a 5 s load for crash.
    #[arg(long)]
    pub quick: bool,
    /// Backend of insert, query and requests: real (an in-process ring on loopback HTTP,
    /// wall-clock time) or sim (the simulator, virtual time). The other experiments
    /// always run in the simulator (balance computes placement only).
    #[arg(long, default_value = "real")]
    pub backend: String,
    /// Repetitions of each throughput point (default 14; 2 with --quick; with
    /// --link-latency, and in the wide-area run of all, 7; 1 with --quick), of each
    /// requests run (default 7; 1 with --quick), of each readmix point (default 3 on the
    /// real ring, 1 on its one chain, 5 in the simulator; 1 with --quick), and rings
    /// (address sets) per
    /// balance setup (default 20; 2 with --quick).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Replication factors, comma-separated (default 1,3,5: insert, query, requests,
    /// staleness; hops, scaling and faults use k = 3). crash takes one (default 3) and
    /// kills k − 1 nodes.
    #[arg(long, value_delimiter = ',')]
    pub k: Vec<usize>,
    /// crash only: who is killed (default successors). With bootstrap, the bootstrap is
    /// restarted with its own command and must rejoin its ring losing nothing; once it is
    /// killed for good, the new node joins with --bootstrap <a member>, the depart is
    /// `dht depart` of the last member, and the load (sent to the bootstrap only while it
    /// is in the ring) runs at least 2 s past the depart.
    #[arg(long, value_enum, value_name = "VICTIM")]
    pub victim: Option<VictimArg>,
    /// crash only: what is done to the victims (default kill). pause and partition take
    /// members that are not the bootstrap (no --victim), and write crash_pause.* and
    /// crash_partition.*; each of the three updates its row of the table of all faults in
    /// crash_real.md.
    #[arg(long, value_enum, value_name = "FAULT")]
    pub fault: Option<FaultArg>,
    /// crash only: processes in the ring, the bootstrap included (default 5).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// crash only: length of the load, e.g. 20s, 5s, 1500ms (default 20s; 5s with
    /// --quick). The kill is at 25% of it, the restart at 55% (with --victim bootstrap,
    /// the kill for good at 75%, and the load is extended to 2 s past the depart if need be).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// crash only: the nodes' --request-timeout-ms, after which a request caught by the
    /// crash is answered 504 (default 2000).
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// crash only: the nodes' --failure-timeout-ms, how long a killed node stays in the
    /// ring (default 1200, as for `dht node`).
    #[arg(long, value_name = "MS")]
    pub failure_timeout_ms: Option<u64>,
    /// Base seed of the simulator runs (and of the sequential client's node choices).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Read the workload files from this directory instead of the embedded copies of
    /// experiments/workloads/.
    #[arg(long)]
    pub workload_dir: Option<PathBuf>,
    /// Also write each requests run's history (and the crash run's) to
    /// OUT/histories/*.jsonl (for `dht check`).
    #[arg(long)]
    pub histories: bool,
    /// No progress bars (they are hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// insert, query, requests and readmix on the real backend: delay every node-to-node message of
    /// the ring by a draw from DIST, as if the nodes were far apart (the rings' nodes get
    /// `dht cluster --link-latency DIST`; clients' requests to their node are not
    /// delayed). DIST is const:1ms, uniform:0.5ms..2ms, exp:1ms or lognormal:1ms,0.5 (the
    /// syntax of `dht sim --latency`); a bare duration such as 1ms means const:1ms. The
    /// files are then named *_wan.csv/.png and have a link_latency column. all: the
    /// latency of its wide-area run (default const:1ms); its other runs have none.
    #[arg(long, value_name = "DIST", value_parser = parse_link_latency)]
    pub link_latency: Option<Latency>,
    /// durability only: keys loaded into the node whose restart is timed (default
    /// 1000000; 5000 with --quick).
    #[arg(long, value_name = "N")]
    pub restart_keys: Option<u64>,
}

/// Run `dht experiment`.
pub fn run(args: ExperimentArgs) -> anyhow::Result<ExitCode> {
    let backend: Backend = args.backend.parse().map_err(anyhow::Error::msg)?;
    let experiment = args.which.experiment();
    if args
        .k
        .iter()
        .any(|&k| k == 0 || k > ringkv_core::config::MAX_K)
    {
        anyhow::bail!(
            "--k takes replication factors between 1 and {}",
            ringkv_core::config::MAX_K
        );
    }
    if args.reps == Some(0) {
        anyhow::bail!("--reps must be at least 1");
    }
    let mut k = if args.k.is_empty() && experiment == Experiment::Durability {
        vec![1, 3]
    } else if args.k.is_empty() {
        vec![1, 3, 5]
    } else {
        args.k.clone()
    };
    k.sort_unstable();
    k.dedup();
    let mut crash = crash::Settings::default();
    if experiment == Experiment::Crash {
        match args.k.as_slice() {
            [] => {}
            [one] => crash.k = *one,
            _ => anyhow::bail!("crash takes one replication factor (--k 3), not a list"),
        }
        crash.nodes = args.nodes.unwrap_or(crash.nodes);
        crash.victim = args.victim.map_or(crash.victim, VictimArg::victim);
        crash.fault = args.fault.map_or(crash.fault, FaultArg::fault);
        crash.duration = args.duration;
        if let Some(ms) = args.request_timeout_ms {
            if ms == 0 {
                anyhow::bail!("--request-timeout-ms must be at least 1");
            }
            crash.request_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = args.failure_timeout_ms {
            if ms < 100 {
                anyhow::bail!("--failure-timeout-ms must be at least 100");
            }
            crash.failure_timeout = Duration::from_millis(ms);
        }
    } else if args.nodes.is_some()
        || args.victim.is_some()
        || args.fault.is_some()
        || args.duration.is_some()
        || args.request_timeout_ms.is_some()
        || args.failure_timeout_ms.is_some()
    {
        anyhow::bail!(
            "--victim, --fault, --nodes, --duration, --request-timeout-ms and --failure-timeout-ms apply to the crash experiment only"
        );
    }
    if args.link_latency.is_some() {
        if !matches!(
            experiment,
            Experiment::Insert
                | Experiment::Query
                | Experiment::Requests
                | Experiment::ReadMix
                | Experiment::All
        ) {
            anyhow::bail!(
                "--link-latency applies to insert, query, requests, readmix and all only"
            );
        }
        if backend != Backend::Real {
            anyhow::bail!(
                "--link-latency applies to the real backend (the simulator has its own exp:1ms links)"
            );
        }
    }
    let options = Options {
        out: args.out.clone(),
        quick: args.quick,
        backend,
        reps: args.reps,
        ks: k,
        nodes: 10,
        seed: args.seed,
        workload_dir: args.workload_dir.clone(),
        progress: !args.no_progress,
        histories: args.histories,
        crash,
        link_latency: args.link_latency,
        restart_keys: args.restart_keys,
    };
    if args.restart_keys.is_some() && experiment != Experiment::Durability {
        anyhow::bail!("--restart-keys applies to the durability experiment only");
    }
    if args.restart_keys == Some(0) {
        anyhow::bail!("--restart-keys must be at least 1");
    }
    let load_before = runner::load_average();
    let started = Instant::now();
    let reports = runner::run(experiment, &options)
        .with_context(|| format!("experiment {}", experiment.name()))?;
    let command = std::iter::once("dht".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let summary = runner::summary(&reports, &command, started.elapsed(), load_before);
    if experiment == Experiment::All {
        let path = options.path("summary.txt");
        std::fs::write(&path, &summary)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    crate::stdout::write(&summary.to_string());
    crate::stdout::line("files:");
    for r in &reports {
        for f in &r.files {
            crate::stdout::line(format_args!("  {}", f.display()));
        }
    }
    if experiment == Experiment::All {
        crate::stdout::line(format_args!("  {}", options.path("summary.txt").display()));
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration: `12s`, `1.5s`, `800ms`, or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = t.strip_suffix('s') {
        (s, 1.0)
    } else {
        (t, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * scale < 86_400.0 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!(
            "'{text}' is not a duration: use e.g. 12s, 1.5s or 800ms"
        )),
    }
}

/// A link latency: the simulator's syntax (`const:1ms`, `uniform:0.5ms..2ms`, `exp:1ms`,
/// `lognormal:1ms,0.5`), or a bare duration (`1ms`, `250us`) meaning a constant one.
fn parse_link_latency(text: &str) -> Result<Latency, String> {
    let t = text.trim();
    let spelled = if t.contains(':') {
        t.to_string()
    } else {
        format!("const:{t}")
    };
    spelled.parse::<Latency>().map_err(|e| {
        format!("'{text}' is not a link latency ({e}); a bare duration such as 1ms means const:1ms")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("12s"), Ok(Duration::from_secs(12)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("800ms"), Ok(Duration::from_millis(800)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn link_latencies_parse() {
        let one_ms = Latency::Const { ns: 1_000_000 };
        assert_eq!(parse_link_latency("1ms"), Ok(one_ms));
        assert_eq!(parse_link_latency(" const:1ms "), Ok(one_ms));
        assert_eq!(
            parse_link_latency("250us"),
            Ok(Latency::Const { ns: 250_000 })
        );
        assert_eq!(
            parse_link_latency("exp:1ms"),
            Ok(Latency::Exp { mean_ns: 1_000_000 })
        );
        assert_eq!(
            parse_link_latency("uniform:0.5ms..2ms"),
            Ok(Latency::Uniform {
                lo_ns: 500_000,
                hi_ns: 2_000_000
            })
        );
        assert!(matches!(
            parse_link_latency("lognormal:1ms,0.5"),
            Ok(Latency::LogNormal {
                median_ns: 1_000_000,
                ..
            })
        ));
        // The CSV cell reads back as the same latency.
        assert_eq!(parse_link_latency(&one_ms.to_string()), Ok(one_ms));
        for bad in ["", "fast", "poisson:1ms", "uniform:2ms..1ms", "const:-1ms"] {
            let err = parse_link_latency(bad).err();
            assert!(err.is_some(), "{bad:?} parsed");
        }
        let err = parse_link_latency("slow").err().unwrap_or_default();
        assert!(err.contains("const:1ms"), "{err}");
    }
}
