//! `dht sim`: a seeded, deterministic simulation of a ringkv ring (see `docs/simulator.md`).
//! `dht sim sweep`: many seeds of one configuration, every run checked, one table.
//!
//! Exit codes: 0 the run held its invariants (and, with `--check` under chain
//! replication, was linearizable; with `--final-reads`, lost no acknowledged write) —
//! for a sweep, every run passed every check; 1 a run failed (the replay command is
//! printed on stderr; a sweep also prints a shrunk reproducer); 2 bad arguments or an
//! I/O error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ringkv_core::{Consistency, Routing};
use ringkv_sim::check::CheckOptions;
use ringkv_sim::sweep::{sweep, SweepOptions};
use ringkv_sim::units::{parse_duration_ns, parse_probability};
use ringkv_sim::{
    Fault, KeyDist, Latency, NetConfig, PartitionMode, RandomFaults, SimConfig, Simulation,
    Synthetic, WorkloadSpec,
};

/// Arguments of `dht sim`: one run, or `dht sim sweep`.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    /// The run.
    #[command(flatten)]
    pub opts: SimOptions,
    /// `sweep`: many seeds instead of one run.
    #[command(subcommand)]
    pub action: Option<SimAction>,
}

/// What `dht sim` does besides one run.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SimAction {
    /// Run many seeds, check every run, print one table; shrink the first failure.
    ///
    /// Every run is checked for linearizability (chain), lost acknowledged writes (a
    /// final read of every key written), convergence and the quiescence invariants.
    /// Random faults default to the declared fault model: at most k - 1 nodes down at
    /// once, no partitions. Exits 1 if any run failed, printing its replay command and a
    /// shrunk reproducer.
    Sweep(SweepArgs),
}

/// Arguments of `dht sim sweep`.
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// Every flag of `dht sim` (the seed is the first seed).
    #[command(flatten)]
    pub opts: SimOptions,
    /// Number of seeds.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// First seed (default: --seed, 0).
    #[arg(long)]
    pub first_seed: Option<u64>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Run chain replication and eventual consistency for every seed.
    #[arg(long)]
    pub both: bool,
    /// Do not shrink the first failing run.
    #[arg(long)]
    pub no_shrink: bool,
    /// Most runs the shrinking may make.
    #[arg(long, default_value_t = 150)]
    pub shrink_budget: usize,
}

/// The flags of one simulation, shared by `dht sim` and `dht sim sweep`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimOptions {
    /// Initial ring size (node 0 is the bootstrap): processes, each owning --vnodes
    /// ring positions.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Ring positions per process (virtual nodes; every model): each process takes R
    /// places on the ring, a key's replicas (its chain) lie on k distinct processes,
    /// and every fault (crash, restart, pause, depart, partition) takes a whole process.
    #[arg(long, default_value_t = 1, value_name = "R")]
    pub vnodes: usize,
    /// Replication factor.
    #[arg(long, default_value_t = 3)]
    pub k: usize,
    /// chain, eventual or craq.
    #[arg(long, default_value = "chain")]
    pub consistency: Consistency,
    /// finger or successor.
    #[arg(long, default_value = "finger")]
    pub routing: Routing,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// insert, query, requests (per-node reference files), insert.txt, query.txt,
    /// requests.txt (single files), or synthetic.
    #[arg(long, default_value = "requests")]
    pub workload: String,
    /// Read the reference files from this directory instead of the embedded copies.
    #[arg(long)]
    pub workload_dir: Option<PathBuf>,
    /// Closed-loop clients; client c talks to node c mod N (default: one per node).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Synthetic: total operations.
    #[arg(long, default_value_t = 1000)]
    pub ops: u64,
    /// Synthetic: distinct keys.
    #[arg(long, default_value_t = 100)]
    pub keys: u64,
    /// Synthetic: fraction of reads.
    #[arg(long, default_value_t = 0.5)]
    pub read_fraction: f64,
    /// Synthetic: fraction of deletes.
    #[arg(long, default_value_t = 0.0)]
    pub delete_fraction: f64,
    /// Synthetic: uniform, zipf (s = 0.99) or zipf:S.
    #[arg(long, default_value = "uniform")]
    pub key_dist: String,
    /// Synthetic: every key on one chain (the same replicas, head and tail: the first
    /// --keys of k0, k1, … whose primary is the bootstrap), as the objects of a single
    /// chain in the chain replication and CRAQ papers; else keys spread over the ring.
    #[arg(long)]
    pub one_chain: bool,
    /// With --one-chain: the clients send to the chain's own nodes (client c to its
    /// (c mod k)-th node, head first), as the CRAQ paper's clients do; without it client
    /// c is on node c mod N and reaches the chain through the ring's routing.
    #[arg(long, requires = "one_chain")]
    pub clients_on_chain: bool,
    /// One-way latency: const:1ms, uniform:0.5ms..2ms, exp:1ms, lognormal:1ms,0.5.
    #[arg(long, default_value = "exp:1ms")]
    pub latency: String,
    /// Probability a message is lost (client phase).
    #[arg(long, default_value = "0")]
    pub drop: String,
    /// Probability a message is delivered twice (client phase).
    #[arg(long, default_value = "0")]
    pub dup: String,
    /// What a partition does to messages across it: drop, or hold until the heal.
    #[arg(long, default_value = "drop")]
    pub partition_mode: String,
    /// A client's operation unanswered after this ends `info`.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
    /// Pause between a client's operations.
    #[arg(long, default_value = "0ms")]
    pub think: String,
    /// A scheduled fault (repeatable): crash:N@T, restart:N@T, join@T, depart:N@T,
    /// partition:N,M-P@T1..T2, partition-out:N,M-P@T1..T2 (what those nodes send is lost;
    /// they still hear the others), partition-in:N,M-P@T1..T2 (what they are sent is
    /// lost), pause:N@T1..T2 (the process stops, as under kill -STOP).
    /// Times count from the start of the client phase.
    #[arg(long = "fault", value_name = "SPEC")]
    pub fault: Vec<String>,
    /// `random` draws faults from the seed with the rates below; `none` (default) does not.
    #[arg(long, default_value = "none")]
    pub faults: String,
    /// Random faults: crashes per virtual second.
    #[arg(long, default_value_t = 1.0)]
    pub crash_rate: f64,
    /// Random faults: delay from a crash to the restart, or `never`.
    #[arg(long, default_value = "200ms")]
    pub restart_after: String,
    /// Random faults: joins per virtual second.
    #[arg(long, default_value_t = 2.0)]
    pub join_rate: f64,
    /// Random faults: departures per virtual second.
    #[arg(long, default_value_t = 2.0)]
    pub depart_rate: f64,
    /// Random faults: partitions per virtual second [default: 1; 0 in sweeps, where
    /// partitions are outside the declared fault model unless asked for].
    #[arg(long)]
    pub partition_rate: Option<f64>,
    /// Random faults: how long a partition lasts.
    #[arg(long, default_value = "100ms")]
    pub partition_duration: String,
    /// Random faults: the share of partitions (0 to 1) that cut one direction only,
    /// half of them losing what the cut-off nodes send and half what they are sent (a
    /// firewall rule that blocks one side, a failed transmit path); the rest cut both.
    #[arg(long, default_value = "0", value_name = "FRACTION")]
    pub one_way: String,
    /// Random faults: process pauses per virtual second (any node; the process stops,
    /// as under `kill -STOP`, and goes on after --pause-duration).
    #[arg(long, default_value_t = 0.0)]
    pub pause_rate: f64,
    /// Random faults: how long a pause lasts.
    #[arg(long, default_value = "4s")]
    pub pause_duration: String,
    /// Random faults: whole-ring power cuts per virtual second (every node crashes at
    /// once; all restart --restart-after later, in an order drawn from the seed). Use
    /// with --disks, or the ring's data is gone.
    #[arg(long, default_value_t = 0.0)]
    pub power_cut_rate: f64,
    /// Every node has a disk, as `dht node --data-dir`: it persists before it sends, a
    /// crash keeps what it persisted and a restarted node comes back with it.
    #[arg(long)]
    pub disks: bool,
    /// How long a node takes to handle each message and client request: it handles them
    /// one at a time, in arrival order, as one machine's processor would, so a node with
    /// more to do than that allows queues them (timers cost nothing). 0: inputs are handled
    /// the moment they arrive, and only message delays take time.
    #[arg(long, default_value = "0ms", value_name = "DUR")]
    pub service: String,
    /// Virtual time between the end of setup (the initial joins) and the clients' first
    /// operation, the nodes' background running meanwhile: past 10 s, the writes the
    /// core forwards to a range's new holder after each join have stopped.
    #[arg(long, default_value = "0ms", value_name = "DUR")]
    pub warmup: String,
    /// Each node's clock rate differs from true time by up to this many parts per
    /// thousand, drawn from the seed [default: 0; in sweeps 20, the bound leases are
    /// declared safe under].
    #[arg(long, value_name = "PER_MILLE")]
    pub clock_drift: Option<u64>,
    /// Random faults are drawn over this much of the client phase.
    #[arg(long, default_value = "1s")]
    pub fault_horizon: String,
    /// Random faults: at most this many nodes down at once (from a crash until the
    /// failure timeout after the restart), or `none` [default: none; k - 1 in sweeps,
    /// the declared fault model].
    #[arg(long)]
    pub max_down: Option<String>,
    /// After the run settles, read every key the workload wrote, through live members,
    /// and count lost acknowledged writes (on in sweeps).
    #[arg(long)]
    pub final_reads: bool,
    /// Run the core's heartbeats, failure detection and anti-entropy.
    #[arg(long)]
    pub failure_handling: bool,
    /// With --failure-handling: silence after which a member is removed as failed
    /// (heartbeats go every sixth of it, at most every 500 ms), as
    /// `dht node --failure-timeout-ms` on real nodes [default: 1.2s].
    #[arg(long, value_name = "DUR")]
    pub failure_timeout: Option<String>,
    /// Background time after the last operation before the invariants are checked.
    #[arg(long)]
    pub settle: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub events_max: Option<u64>,
    /// Stop at this virtual time.
    #[arg(long)]
    pub time_max: Option<String>,
    /// Write the JSON Lines history here.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Check the history (linearizability, stale reads) and add the verdicts.
    #[arg(long)]
    pub check: bool,
    /// Print one JSON summary object instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl SimOptions {
    /// The simulation these flags describe; `sweep` selects the sweep's defaults (random
    /// faults within the declared model, final reads on).
    pub fn to_config(&self, sweep: bool) -> anyhow::Result<SimConfig> {
        let partition_rate = self.partition_rate.unwrap_or(if sweep { 0.0 } else { 1.0 });
        let max_down =
            match self.max_down.as_deref() {
                None if sweep => Some(self.k.saturating_sub(1)),
                None | Some("none") => None,
                Some(n) => Some(n.parse::<usize>().map_err(|_| {
                    anyhow::anyhow!("--max-down '{n}': use a number of nodes or none")
                })?),
            };
        let synthetic = Synthetic {
            ops: self.ops,
            keys: self.keys,
            read_fraction: self.read_fraction,
            delete_fraction: self.delete_fraction,
            key_dist: self.key_dist.parse::<KeyDist>()?,
            one_chain: self.one_chain,
            clients_on_chain: self.clients_on_chain,
        };
        let random_faults = match self.faults.as_str() {
            "none" => None,
            "random" => Some(RandomFaults {
                crash_rate: self.crash_rate,
                restart_after_ns: match self.restart_after.as_str() {
                    "never" => None,
                    d => Some(parse_duration_ns(d)?),
                },
                join_rate: self.join_rate,
                depart_rate: self.depart_rate,
                partition_rate,
                partition_ns: parse_duration_ns(&self.partition_duration)?,
                one_way_fraction: parse_probability(&self.one_way)
                    .map_err(|e| anyhow::anyhow!("--one-way: {e}"))?,
                pause_rate: self.pause_rate,
                power_cut_rate: self.power_cut_rate,
                pause_ns: parse_duration_ns(&self.pause_duration)?,
                horizon_ns: parse_duration_ns(&self.fault_horizon)?,
            }),
            other => anyhow::bail!(
                "--faults '{other}': use none or random (explicit faults go in --fault)"
            ),
        };
        let rates = [
            self.crash_rate,
            self.join_rate,
            self.depart_rate,
            partition_rate,
            self.pause_rate,
            self.power_cut_rate,
        ];
        if rates.iter().any(|r| !r.is_finite() || *r < 0.0) {
            anyhow::bail!("fault rates must be non-negative numbers");
        }
        let faults = self
            .fault
            .iter()
            .map(|f| f.parse::<Fault>())
            .collect::<Result<Vec<_>, _>>()?;
        let workload = WorkloadSpec::parse(&self.workload, synthetic)?;
        if self.one_chain && !matches!(workload, WorkloadSpec::Synthetic(_)) {
            anyhow::bail!(
                "--one-chain places the synthetic workload's keys: use it with --workload synthetic"
            );
        }
        let defaults = SimConfig::default();
        let config = SimConfig {
            seed: self.seed,
            nodes: self.nodes,
            vnodes: self.vnodes,
            k: self.k,
            consistency: self.consistency,
            routing: self.routing,
            clients: self.clients,
            workload,
            workload_dir: self.workload_dir.clone(),
            net: NetConfig {
                latency: self.latency.parse::<Latency>()?,
                drop_probability: parse_probability(&self.drop)?,
                dup_probability: parse_probability(&self.dup)?,
                partition_mode: self.partition_mode.parse::<PartitionMode>()?,
            },
            faults,
            random_faults,
            timeout_ns: parse_duration_ns(&self.timeout)?,
            think_ns: parse_duration_ns(&self.think)?,
            failure_handling: self.failure_handling,
            failure_timeout_ns: self
                .failure_timeout
                .as_deref()
                .map(parse_failure_timeout)
                .transpose()?,
            clock_drift_per_mille: match self.clock_drift {
                Some(d) if d >= 500 => {
                    anyhow::bail!("--clock-drift {d}: use less than 500 per mille")
                }
                Some(d) => d,
                None if sweep => ringkv_core::config::CLOCK_DRIFT_PER_MILLE,
                None => 0,
            },
            settle_ns: self.settle.as_deref().map(parse_duration_ns).transpose()?,
            events_max: self.events_max.unwrap_or(defaults.events_max),
            time_max_ns: match &self.time_max {
                Some(t) => parse_duration_ns(t)?,
                None => defaults.time_max_ns,
            },
            record_history: self.history.is_some() || self.check || sweep,
            max_down,
            final_reads: self.final_reads || sweep,
            disks: self.disks,
            service_ns: parse_duration_ns(&self.service)
                .map_err(|e| anyhow::anyhow!("--service: {e}"))?,
            warmup_ns: parse_duration_ns(&self.warmup)
                .map_err(|e| anyhow::anyhow!("--warmup: {e}"))?,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Run `dht sim` or `dht sim sweep`.
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(SimAction::Sweep(sweep_args)) => run_sweep(sweep_args),
        None => run_one(args.opts),
    }
}

/// Run `dht sim sweep`.
fn run_sweep(args: SweepArgs) -> anyhow::Result<ExitCode> {
    if args.opts.history.is_some() {
        anyhow::bail!(
            "--history is per run: replay a seed with the dht sim command the sweep prints"
        );
    }
    if args.seeds == 0 {
        anyhow::bail!("--seeds must be at least 1");
    }
    if args.jobs == Some(0) {
        anyhow::bail!("--jobs must be at least 1");
    }
    let first_seed = match args.first_seed {
        Some(s) if args.opts.seed != 0 && s != args.opts.seed => {
            anyhow::bail!("--seed and --first-seed disagree: give one of them")
        }
        Some(s) => s,
        None => args.opts.seed,
    };
    let config = args.opts.to_config(true)?;
    let options = SweepOptions {
        seeds: args.seeds,
        first_seed,
        jobs: args.jobs,
        both: args.both,
        shrink: !args.no_shrink,
        shrink_budget: args.shrink_budget,
        ..SweepOptions::default()
    };
    let mut notes = Vec::new();
    if let Some(r) = &config.random_faults {
        let cut_off = r.partition_rate > 0.0 || r.pause_rate > 0.0;
        if r.power_cut_rate > 0.0 && !config.disks {
            notes.push(
                "power cuts without --disks: every node comes back empty, and the ring's data \
                 is lost by design",
            );
        }
        if cut_off && r.crash_rate > 0.0 && r.restart_after_ns.is_some() && !config.disks {
            notes.push(
                "a bootstrap restarted while other members are up is restarted as \
                 `dht bootstrap --rejoin` (its operator knows its ring runs): it waits for \
                 its ring however long a partition cuts it off (docs/protocol.md)",
            );
        }
        if config.max_down.is_none_or(|m| m >= config.k) && r.crash_rate > 0.0 {
            notes.push(
                "k or more nodes may be down at once: keys whose whole replica set crashed \
                 are lost by design",
            );
        }
        if !config.failure_handling && r.crash_rate > 0.0 {
            notes.push(
                "crashes without --failure-handling are never repaired: expect unanswered \
                 reads and diverged replicas",
            );
        }
    }
    let report = sweep(&config, &options);
    if args.opts.json {
        crate::stdout::line(serde_json::to_string(&report)?);
    } else {
        for note in &notes {
            crate::stdout::line(format_args!("note: {note}"));
        }
        crate::stdout::line(&report);
    }
    if report.passed() {
        return Ok(ExitCode::SUCCESS);
    }
    let first = &report.failures[0];
    eprintln!(
        "the sweep found {} failing run(s) over {} seed(s); replay the first (seed {}, {}) with:
  {}",
        report.failed_runs, report.failed_seeds, first.seed, first.consistency, first.replay
    );
    if let Some(shrunk) = &report.shrunk {
        eprintln!(
            "smallest reproducer found:
  {}",
            shrunk.replay
        );
    }
    Ok(ExitCode::from(1))
}

/// Run `dht sim` (one run).
fn run_one(args: SimOptions) -> anyhow::Result<ExitCode> {
    let config = args.to_config(false)?;
    let mut result = Simulation::new(config)?.run();
    if let Some(path) = &args.history {
        std::fs::write(path, &result.history)
            .with_context(|| format!("cannot write the history to {}", path.display()))?;
    }
    if args.check {
        let options = CheckOptions::default();
        result
            .check(&options)
            .context("the simulator wrote a history the checker cannot parse")?;
    }
    let summary = &result.summary;
    if args.json {
        crate::stdout::line(serde_json::to_string(summary)?);
    } else {
        crate::stdout::line(summary);
    }
    if summary.failed() {
        let mut found = Vec::new();
        if summary.invariant_violations > 0 {
            found.push(format!(
                "{} invariant breach(es)",
                summary.invariant_violations
            ));
        }
        if summary.linearizable.as_deref() == Some("violation") {
            match summary.consistency.as_str() {
                "chain" => found.push("a linearizability violation under chain replication".into()),
                "craq" => found.push("a linearizability violation under CRAQ".into()),
                _ => {}
            }
        }
        if let Some(lost) = summary.lost_acked_writes.filter(|n| *n > 0) {
            found.push(format!("{lost} lost acknowledged write(s)"));
        }
        eprintln!(
            "the run found {}; replay with:\n  {}",
            found.join(" and "),
            summary.replay
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Parse `--failure-timeout`: a duration of at least 100 ms, as on real nodes.
fn parse_failure_timeout(text: &str) -> anyhow::Result<u64> {
    let ns = parse_duration_ns(text)?;
    if ns < ringkv_core::config::FAILURE_TIMEOUT_MIN_NS {
        anyhow::bail!("--failure-timeout {text}: must be at least 100ms");
    }
    Ok(ns)
}
