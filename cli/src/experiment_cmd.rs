//! `dht experiment`: the reference experiments and the simulator studies, written as CSVs
//! and PNG plots (see `results/README.md`).
//!
//! `dht experiment all` starts its own 10-node rings on loopback (no setup), runs every
//! experiment for both consistency models and k = 1, 3, 5, writes into `results/` (or
//! `--out DIR`), shows progress bars on a terminal and ends with a summary table, which
//! it also writes to `summary.txt` in the output directory.
//!
//! Exit codes: 0 done (anomalies, such as failed inserts, are listed as warnings in the
//! summary); 2 bad arguments, or an experiment could not run or write its files.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use ringkv_experiments::runner::{self, Backend, Experiment, Options};

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
    /// seeds, small rings.
    #[arg(long)]
    pub quick: bool,
    /// Backend of insert, query and requests: real (an in-process ring on loopback HTTP,
    /// wall-clock time) or sim (the simulator, virtual time). The other experiments
    /// always run in the simulator.
    #[arg(long, default_value = "real")]
    pub backend: String,
    /// Repetitions of each throughput point (default 20; 2 with --quick) and of each
    /// requests run (default 10; 1 with --quick).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Replication factors, comma-separated (insert, query, requests, staleness; hops,
    /// scaling and faults use k = 3).
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    pub k: Vec<usize>,
    /// Base seed of the simulator runs (and of the sequential client's node choices).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Read the workload files from this directory instead of the embedded copies of
    /// experiments/workloads/.
    #[arg(long)]
    pub workload_dir: Option<PathBuf>,
    /// Also write each requests run's history to OUT/histories/*.jsonl (for `dht check`).
    #[arg(long)]
    pub histories: bool,
    /// No progress bars (they are hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Run `dht experiment`.
pub fn run(args: ExperimentArgs) -> anyhow::Result<ExitCode> {
    let backend: Backend = args.backend.parse().map_err(anyhow::Error::msg)?;
    if args.k.is_empty()
        || args
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
    let mut k = args.k.clone();
    k.sort_unstable();
    k.dedup();
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
    };
    let experiment = args.which.experiment();
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
    print!("{summary}");
    println!("files:");
    for r in &reports {
        for f in &r.files {
            println!("  {}", f.display());
        }
    }
    if experiment == Experiment::All {
        println!("  {}", options.path("summary.txt").display());
    }
    Ok(ExitCode::SUCCESS)
}
