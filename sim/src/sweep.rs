//! Seed sweeps (`dht sim sweep`): many seeded runs of one configuration, each checked,
//! summarized in one table; the first failure shrunk to a smaller reproducer.
//!
//! Every run has the final phase on ([`SimConfig::final_reads`]) and is checked for:
//!
//! - **linearizability** (chain replication only, the model that promises it);
//! - **lost acknowledged writes**: keys whose final read contradicts an acknowledged write
//!   or delete ([`crate::final_reads`]), both models;
//! - **convergence**: at the end, the replicas of every key hold the same version
//!   (`replica_divergence`) and, where placement is checked, every replica holds it
//!   (`placement_missing`);
//! - the other **quiescence invariants** (`ring`, `membership_busy`, `placement_extra`,
//!   `node_panic`), **impossible reads** (a value no write produced), **unanswered final
//!   reads** (the settled ring could not serve a read) and **truncated** runs.
//!
//! Runs go in parallel (rayon) and are reported in seed order, so the report is a
//! function of the configuration and the seeds, wall-clock time aside.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Instant;

use rayon::prelude::*;
use ringkv_core::Consistency;
use serde::Serialize;

use crate::check::{self, CheckOptions};
use crate::config::SimConfig;
use crate::engine::Streams;
use crate::sim::Simulation;
use crate::workload::{Synthetic, WorkloadSpec};

/// How to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Number of seeds.
    pub seeds: u64,
    /// First seed; the sweep runs `first_seed .. first_seed + seeds`.
    pub first_seed: u64,
    /// Worker threads (`None`: one per core).
    pub jobs: Option<usize>,
    /// Run chain replication and eventual consistency for every seed (else the base
    /// configuration's model only).
    pub both: bool,
    /// Shrink the first failing run to a smaller reproducer.
    pub shrink: bool,
    /// Most runs the shrinking may make.
    pub shrink_budget: usize,
    /// Linearizability checker settings.
    pub check: CheckOptions,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            seeds: 100,
            first_seed: 0,
            jobs: None,
            both: false,
            shrink: true,
            shrink_budget: 150,
            check: CheckOptions {
                // Runs are already spread over the cores.
                parallel: false,
                ..CheckOptions::default()
            },
        }
    }
}

/// Failure kinds a run can have (in [`RunReport::failures`]).
pub mod kinds {
    /// Chain replication produced a non-linearizable history.
    pub const LINEARIZABILITY: &str = "linearizability";
    /// A final read contradicts an acknowledged write.
    pub const LOST_WRITES: &str = "lost_acked_writes";
    /// Replicas of a key disagree or miss it at the end.
    pub const CONVERGENCE: &str = "convergence";
    /// Another quiescence invariant was breached.
    pub const INVARIANT: &str = "invariant";
    /// A read returned a value no write produced.
    pub const IMPOSSIBLE_READS: &str = "impossible_reads";
    /// A final read went unanswered on the settled ring.
    pub const UNANSWERED: &str = "unanswered_final_reads";
    /// The run hit `events_max` or `time_max`.
    pub const TRUNCATED: &str = "truncated";
}

/// Seeds of runs that lost a write by design listed in a sweep's report.
pub const LOST_BY_DESIGN_SEEDS_MAX: usize = 100;

/// Invariant kinds counted as convergence failures.
pub const CONVERGENCE_KINDS: &[&str] = &["replica_divergence", "placement_missing"];

/// One checked run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunReport {
    /// Seed.
    pub seed: u64,
    /// `chain`, `eventual` or `craq`.
    pub consistency: String,
    /// What failed (see [`kinds`]); empty when the run passed.
    pub failures: Vec<String>,
    /// Linearizability verdict (chain only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linearizable: Option<String>,
    /// Keys found not linearizable (chain).
    pub linearizability_violations: u64,
    /// Keys whose linearizability search ran out of budget (chain).
    pub linearizability_unknown_keys: u64,
    /// Keys whose final read contradicts an acknowledged write.
    pub lost_acked_writes: u64,
    /// Eventual consistency: keys that lost a write by design, not counted above (every
    /// copy was on nodes that crashed, or a write within the clock skew overtook it; see
    /// `Summary::lost_in_crashes`).
    pub lost_by_design: u64,
    /// Final reads issued.
    pub final_reads: u64,
    /// Final reads not answered `ok`.
    pub final_reads_unanswered: u64,
    /// `replica_divergence` and `placement_missing` breaches.
    pub convergence_failures: u64,
    /// Other invariant breaches.
    pub invariant_breaches: u64,
    /// Reads of a value no write produced.
    pub impossible_reads: u64,
    /// Stale reads.
    pub stale_reads: u64,
    /// Largest staleness in time (ns).
    pub max_staleness_ns: u64,
    /// The run was cut short.
    pub truncated: bool,
    /// Faults scheduled.
    pub faults: u64,
    /// Crashes applied.
    pub crashes: u64,
    /// Client operations that completed `ok`.
    pub ops_ok: u64,
    /// Client operations that ended `info`.
    pub ops_info: u64,
    /// The workload's operations (`ok`, `info`, `fail` and never issued).
    pub workload_ops: u64,
    /// The first findings, described (invariant breaches, lost writes, counterexample).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// The `dht sim` command that replays the run.
    pub replay: String,
    /// Wall-clock seconds of the run and its check (not deterministic).
    pub wall_seconds: f64,
}

impl RunReport {
    /// Whether the run passed every check.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Run `config` with the final reads on and check everything (see the module docs).
pub fn check_run(config: &SimConfig, options: &CheckOptions) -> RunReport {
    #[allow(clippy::disallowed_methods)] // measures the run; never reaches a result
    let wall = Instant::now();
    let mut config = config.clone();
    config.final_reads = true;
    config.record_history = true;
    let chain = config.consistency.is_linearizable();
    let seed = config.seed;
    let consistency = config.consistency.to_string();
    let result = match Simulation::new(config) {
        Ok(sim) => sim.run(),
        Err(e) => {
            return RunReport {
                seed,
                consistency,
                failures: vec![kinds::INVARIANT.into()],
                details: vec![format!("the simulation could not start: {e}")],
                ..RunReport::default()
            }
        }
    };
    let s = &result.summary;
    let mut report = RunReport {
        seed,
        consistency,
        lost_acked_writes: s.lost_acked_writes.unwrap_or(0),
        lost_by_design: s.lost_in_crashes.unwrap_or(0) + s.lost_within_skew.unwrap_or(0),
        final_reads: s.final_reads.unwrap_or(0),
        final_reads_unanswered: s.final_reads_unanswered.unwrap_or(0),
        truncated: s.truncated,
        faults: s.faults.len() as u64,
        crashes: s.crashes,
        ops_ok: s.ops_ok,
        ops_info: s.ops_info,
        workload_ops: s.ops_ok + s.ops_info + s.ops_fail + s.ops_not_issued,
        replay: format!("{} --check", s.replay),
        ..RunReport::default()
    };
    for (kind, n) in &s.violations_by_kind {
        if CONVERGENCE_KINDS.contains(&kind.as_str()) {
            report.convergence_failures += n;
        } else {
            report.invariant_breaches += n;
        }
    }
    report.details.extend(s.violations.iter().take(5).cloned());
    report.details.extend(s.lost_writes.iter().take(5).cloned());
    match check::History::parse(result.history.as_slice()) {
        Ok(history) => {
            let stale = check::staleness(&history);
            report.stale_reads = stale.total.stale_reads as u64;
            report.impossible_reads = stale.total.impossible_reads as u64;
            report.max_staleness_ns = stale.total.max_staleness_ns;
            if chain {
                let lin = check::check_linearizability(&history, options);
                report.linearizable = Some(
                    match lin.verdict {
                        check::Verdict::Linearizable => "linearizable",
                        check::Verdict::Violation => "violation",
                        check::Verdict::Unknown => "unknown",
                    }
                    .into(),
                );
                report.linearizability_violations = lin.violation_keys as u64;
                report.linearizability_unknown_keys = lin.unknown_keys as u64;
                let counterexample = lin.counterexamples().next().map(|c| c.explanation.clone());
                report.details.extend(counterexample);
            }
        }
        Err(e) => {
            report.invariant_breaches += 1;
            report
                .details
                .push(format!("the history does not parse: {e}"));
        }
    }
    let mut failures = Vec::new();
    if report.linearizability_violations > 0 {
        failures.push(kinds::LINEARIZABILITY);
    }
    if report.lost_acked_writes > 0 {
        failures.push(kinds::LOST_WRITES);
    }
    if report.convergence_failures > 0 {
        failures.push(kinds::CONVERGENCE);
    }
    if report.invariant_breaches > 0 {
        failures.push(kinds::INVARIANT);
    }
    if report.impossible_reads > 0 {
        failures.push(kinds::IMPOSSIBLE_READS);
    }
    if report.final_reads_unanswered > 0 {
        failures.push(kinds::UNANSWERED);
    }
    if report.truncated {
        failures.push(kinds::TRUNCATED);
    }
    report.failures = failures.into_iter().map(String::from).collect();
    report.wall_seconds = wall.elapsed().as_secs_f64();
    report
}

/// A failing run shrunk to a smaller one that fails the same way.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Shrunk {
    /// Seed.
    pub seed: u64,
    /// `chain`, `eventual` or `craq`.
    pub consistency: String,
    /// What the original run failed on.
    pub failures: Vec<String>,
    /// What the reproducer fails on (some of `failures`).
    pub reproducer_failures: Vec<String>,
    /// Faults of the original schedule.
    pub faults_before: usize,
    /// Faults of the reproducer.
    pub faults_after: usize,
    /// Workload operations of the original run.
    pub ops_before: u64,
    /// Workload operations of the reproducer.
    pub ops_after: u64,
    /// Runs the shrinking made.
    pub runs: usize,
    /// Whether the run budget ran out before no smaller step was left.
    pub budget_exhausted: bool,
    /// The original run's replay command.
    pub original: String,
    /// The reproducer: explicit `--fault` flags, no random faults.
    pub replay: String,
    /// The reproducer's configuration.
    #[serde(skip)]
    pub config: SimConfig,
}

/// What a sweep found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SweepReport {
    /// The base configuration (its replay command, with the first seed).
    pub base: String,
    /// First seed.
    pub first_seed: u64,
    /// Seeds swept.
    pub seeds: u64,
    /// Models run for every seed.
    pub models: Vec<String>,
    /// Runs (seeds × models).
    pub runs: u64,
    /// Runs that failed some check.
    pub failed_runs: u64,
    /// Seeds with a failing run.
    pub failed_seeds: u64,
    /// Chain runs with a linearizability violation.
    pub linearizability_violations: u64,
    /// Violating keys over those runs.
    pub linearizability_violation_keys: u64,
    /// Keys whose linearizability search ran out of budget (not a failure).
    pub linearizability_unknown_keys: u64,
    /// Keys that lost an acknowledged write, over all runs.
    pub lost_acked_writes: u64,
    /// Runs that lost an acknowledged write.
    pub lost_write_runs: u64,
    /// Eventual consistency: keys that lost a write by design, over all runs (not
    /// failures; see [`RunReport::lost_by_design`]).
    pub lost_by_design: u64,
    /// Runs with such a key.
    pub lost_by_design_runs: u64,
    /// Seeds of the first `LOST_BY_DESIGN_SEEDS_MAX` such runs, in seed order, to replay.
    pub lost_by_design_seeds: Vec<u64>,
    /// `replica_divergence` and `placement_missing` breaches, over all runs.
    pub convergence_failures: u64,
    /// Runs whose replicas all converged.
    pub converged_runs: u64,
    /// Other invariant breaches, over all runs.
    pub invariant_breaches: u64,
    /// Reads of a value no write produced.
    pub impossible_reads: u64,
    /// Final reads issued.
    pub final_reads: u64,
    /// Final reads not answered `ok`.
    pub final_reads_unanswered: u64,
    /// Runs cut short.
    pub truncated_runs: u64,
    /// Stale reads, eventual runs.
    pub eventual_stale_reads: u64,
    /// Worst staleness of an eventual read (ns).
    pub worst_staleness_ns: u64,
    /// The seed of that read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_staleness_seed: Option<u64>,
    /// Faults scheduled, over all runs.
    pub faults: u64,
    /// Crashes applied, over all runs.
    pub crashes: u64,
    /// Client operations `ok`, over all runs.
    pub ops_ok: u64,
    /// Client operations `info`, over all runs.
    pub ops_info: u64,
    /// Wall-clock seconds (not deterministic).
    pub wall_seconds: f64,
    /// The failing runs, in seed order.
    pub failures: Vec<RunReport>,
    /// The first failing run, shrunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrunk: Option<Shrunk>,
}

impl SweepReport {
    /// Whether every run passed.
    pub fn passed(&self) -> bool {
        self.failed_runs == 0
    }

    fn add(&mut self, run: &RunReport) {
        self.runs += 1;
        if run.linearizability_violations > 0 {
            self.linearizability_violations += 1;
        }
        self.linearizability_violation_keys += run.linearizability_violations;
        self.linearizability_unknown_keys += run.linearizability_unknown_keys;
        self.lost_acked_writes += run.lost_acked_writes;
        self.lost_write_runs += u64::from(run.lost_acked_writes > 0);
        self.lost_by_design += run.lost_by_design;
        self.lost_by_design_runs += u64::from(run.lost_by_design > 0);
        if run.lost_by_design > 0 && self.lost_by_design_seeds.len() < LOST_BY_DESIGN_SEEDS_MAX {
            self.lost_by_design_seeds.push(run.seed);
        }
        self.convergence_failures += run.convergence_failures;
        self.converged_runs += u64::from(run.convergence_failures == 0);
        self.invariant_breaches += run.invariant_breaches;
        self.impossible_reads += run.impossible_reads;
        self.final_reads += run.final_reads;
        self.final_reads_unanswered += run.final_reads_unanswered;
        self.truncated_runs += u64::from(run.truncated);
        self.faults += run.faults;
        self.crashes += run.crashes;
        self.ops_ok += run.ops_ok;
        self.ops_info += run.ops_info;
        if run.consistency == "eventual" {
            self.eventual_stale_reads += run.stale_reads;
            if run.max_staleness_ns > self.worst_staleness_ns {
                self.worst_staleness_ns = run.max_staleness_ns;
                self.worst_staleness_seed = Some(run.seed);
            }
        }
        if !run.passed() {
            self.failed_runs += 1;
            self.failures.push(run.clone());
        }
    }
}

/// Run every seed of `opts` on `base` (its seed and, with `both`, its model replaced),
/// check each run, and shrink the first failure (unless `opts.shrink` is off).
pub fn sweep(base: &SimConfig, opts: &SweepOptions) -> SweepReport {
    #[allow(clippy::disallowed_methods)] // measures the run; never reaches a result
    let wall = Instant::now();
    let models = if opts.both {
        vec![Consistency::Chain, Consistency::Eventual]
    } else {
        vec![base.consistency]
    };
    let cases: Vec<SimConfig> = (0..opts.seeds)
        .flat_map(|i| {
            models.iter().map(move |&consistency| SimConfig {
                seed: opts.first_seed.wrapping_add(i),
                consistency,
                final_reads: true,
                record_history: true,
                ..base.clone()
            })
        })
        .collect();
    let run_all = || -> Vec<RunReport> {
        cases
            .par_iter()
            .map(|config| check_run(config, &opts.check))
            .collect()
    };
    let runs = match opts.jobs {
        Some(jobs) => match rayon::ThreadPoolBuilder::new().num_threads(jobs).build() {
            Ok(pool) => pool.install(run_all),
            Err(_) => run_all(),
        },
        None => run_all(),
    };
    let mut report = SweepReport {
        base: SimConfig {
            seed: opts.first_seed,
            final_reads: true,
            ..base.clone()
        }
        .replay_command(),
        first_seed: opts.first_seed,
        seeds: opts.seeds,
        models: models.iter().map(ToString::to_string).collect(),
        ..SweepReport::default()
    };
    for run in &runs {
        report.add(run);
    }
    report.failed_seeds = report
        .failures
        .iter()
        .map(|r| r.seed)
        .collect::<BTreeSet<_>>()
        .len() as u64;
    if opts.shrink {
        if let Some(index) = runs.iter().position(|r| !r.passed()) {
            report.shrunk = Some(shrink(&cases[index], &runs[index], opts));
        }
    }
    report.wall_seconds = wall.elapsed().as_secs_f64();
    report
}

/// The configuration with its random faults drawn and written out as explicit faults:
/// the same run, replayable with `--fault` flags alone.
pub fn materialize_faults(config: &SimConfig) -> SimConfig {
    let mut faults = config.faults.clone();
    if let Some(random) = &config.random_faults {
        let mut streams = Streams::from_seed(config.seed);
        faults.extend(random.generate_capped(
            config.nodes as u32,
            config.down_cap(),
            &mut streams.faults,
        ));
    }
    // As the simulator orders them: stable, so faults at the same time keep their order.
    faults.sort_by_key(|f| f.at_ns);
    SimConfig {
        faults,
        random_faults: None,
        max_down: None,
        ..config.clone()
    }
}

/// Shrink failing run `config` (whose report is `original`): remove faults, simplify the
/// network and shrink the workload while the run still fails in one of the same ways, in
/// at most `opts.shrink_budget` runs.
pub fn shrink(config: &SimConfig, original: &RunReport, opts: &SweepOptions) -> Shrunk {
    let mut shrinker = Shrinker {
        kinds: original.failures.clone(),
        options: &opts.check,
        budget: opts.shrink_budget,
        runs: 0,
        exhausted: false,
    };
    let mut best = materialize_faults(config);
    let mut best_report = match shrinker.fails(&best) {
        Some(r) => r,
        None => {
            // Materializing should replay the run exactly; if not, keep the original.
            best = config.clone();
            original.clone()
        }
    };
    let faults_before = best.faults.len();
    for _round in 0..2 {
        let before = (
            best.faults.len(),
            best_report.workload_ops,
            best.client_count(),
        );
        shrinker.remove_faults(&mut best, &mut best_report);
        shrinker.simplify_network(&mut best, &mut best_report);
        shrinker.shrink_workload(&mut best, &mut best_report);
        if before
            == (
                best.faults.len(),
                best_report.workload_ops,
                best.client_count(),
            )
            || shrinker.exhausted
        {
            break;
        }
    }
    Shrunk {
        seed: config.seed,
        consistency: config.consistency.to_string(),
        failures: original.failures.clone(),
        reproducer_failures: best_report.failures.clone(),
        faults_before,
        faults_after: best.faults.len(),
        ops_before: original.workload_ops,
        ops_after: best_report.workload_ops,
        runs: shrinker.runs,
        budget_exhausted: shrinker.exhausted,
        original: original.replay.clone(),
        replay: best_report.replay,
        config: best,
    }
}

struct Shrinker<'a> {
    kinds: Vec<String>,
    options: &'a CheckOptions,
    budget: usize,
    runs: usize,
    exhausted: bool,
}

impl Shrinker<'_> {
    /// Run `config`; its report if it fails in one of the original ways.
    fn fails(&mut self, config: &SimConfig) -> Option<RunReport> {
        if self.runs >= self.budget {
            self.exhausted = true;
            return None;
        }
        self.runs += 1;
        let report = check_run(config, self.options);
        report
            .failures
            .iter()
            .any(|k| self.kinds.contains(k))
            .then_some(report)
    }

    /// Try `candidate`; keep it if it still fails.
    fn attempt(
        &mut self,
        best: &mut SimConfig,
        best_report: &mut RunReport,
        candidate: SimConfig,
    ) -> bool {
        match self.fails(&candidate) {
            Some(report) => {
                *best = candidate;
                *best_report = report;
                true
            }
            None => false,
        }
    }

    /// Remove chunks of faults, halving the chunk size down to single faults.
    fn remove_faults(&mut self, best: &mut SimConfig, best_report: &mut RunReport) {
        let mut size = (best.faults.len() / 2).max(1);
        while !best.faults.is_empty() && !self.exhausted {
            let mut i = 0;
            while i < best.faults.len() && !self.exhausted {
                let mut candidate = best.clone();
                let end = (i + size).min(candidate.faults.len());
                candidate.faults.drain(i..end);
                if !self.attempt(best, best_report, candidate) {
                    i += size;
                }
            }
            if size == 1 {
                break;
            }
            size /= 2;
        }
    }

    fn simplify_network(&mut self, best: &mut SimConfig, best_report: &mut RunReport) {
        if best.net.drop_probability > 0.0 && !self.exhausted {
            let mut candidate = best.clone();
            candidate.net.drop_probability = 0.0;
            self.attempt(best, best_report, candidate);
        }
        if best.net.dup_probability > 0.0 && !self.exhausted {
            let mut candidate = best.clone();
            candidate.net.dup_probability = 0.0;
            self.attempt(best, best_report, candidate);
        }
    }

    /// Fewer operations: a reference workload is tried as a small synthetic one, a
    /// synthetic one with half its operations; then fewer clients.
    fn shrink_workload(&mut self, best: &mut SimConfig, best_report: &mut RunReport) {
        if let WorkloadSpec::Reference(_) = best.workload {
            let small = |ops, keys| Synthetic {
                ops,
                keys,
                ..Synthetic::default()
            };
            for spec in [small(200, 50), small(200, 10), small(100, 5)] {
                if self.exhausted {
                    return;
                }
                let candidate = SimConfig {
                    workload: WorkloadSpec::Synthetic(spec),
                    ..best.clone()
                };
                if self.attempt(best, best_report, candidate) {
                    break;
                }
            }
        }
        while let WorkloadSpec::Synthetic(s) = best.workload {
            if s.ops <= 8 || self.exhausted {
                break;
            }
            let candidate = SimConfig {
                workload: WorkloadSpec::Synthetic(Synthetic {
                    ops: s.ops / 2,
                    ..s
                }),
                ..best.clone()
            };
            if !self.attempt(best, best_report, candidate) {
                break;
            }
        }
        loop {
            let clients = best.client_count();
            if clients <= 1 || self.exhausted {
                break;
            }
            let candidate = SimConfig {
                clients: Some(clients / 2),
                ..best.clone()
            };
            if !self.attempt(best, best_report, candidate) {
                break;
            }
        }
    }
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<34} {value}")
        };
        let last = self.first_seed.wrapping_add(self.seeds.saturating_sub(1));
        writeln!(
            f,
            "ringkv sweep: seeds {}..={} ({}), {}",
            self.first_seed,
            last,
            self.seeds,
            self.models.join(" + ")
        )?;
        row(f, "base", self.base.clone())?;
        row(
            f,
            "seeds run / runs",
            format!("{} / {}", self.seeds, self.runs),
        )?;
        row(
            f,
            "failed seeds / runs",
            format!("{} / {}", self.failed_seeds, self.failed_runs),
        )?;
        if self.models.iter().any(|m| m == "chain" || m == "craq") {
            // Named after the model when one linearizable model runs (as before CRAQ).
            let label = match self.models.iter().any(|m| m == "craq") {
                true => "craq linearizability violations",
                false => "chain linearizability violations",
            };
            row(
                f,
                label,
                format!(
                    "{} runs ({} keys; {} keys unknown)",
                    self.linearizability_violations,
                    self.linearizability_violation_keys,
                    self.linearizability_unknown_keys
                ),
            )?;
        }
        row(
            f,
            "lost acknowledged writes",
            format!(
                "{} keys ({} runs; {} final reads, {} unanswered)",
                self.lost_acked_writes,
                self.lost_write_runs,
                self.final_reads,
                self.final_reads_unanswered
            ),
        )?;
        if self.lost_by_design > 0 {
            row(
                f,
                "  lost by design (not failures)",
                format!(
                    "{} keys ({} runs): every copy on nodes that crashed (memory only), or \
                     overtaken within the clock skew",
                    self.lost_by_design, self.lost_by_design_runs
                ),
            )?;
        }
        let converged = if self.runs > 0 {
            100.0 * self.converged_runs as f64 / self.runs as f64
        } else {
            100.0
        };
        row(
            f,
            "convergence failures",
            format!(
                "{} ({:.2}% of runs converged)",
                self.convergence_failures, converged
            ),
        )?;
        row(
            f,
            "invariant breaches",
            format!(
                "{} (impossible reads {}, truncated runs {})",
                self.invariant_breaches, self.impossible_reads, self.truncated_runs
            ),
        )?;
        if self.models.iter().any(|m| m == "eventual") {
            let seed = self
                .worst_staleness_seed
                .map_or(String::new(), |s| format!(", seed {s}"));
            row(
                f,
                "worst staleness (eventual)",
                format!(
                    "{:.3} ms{seed} ({} stale reads)",
                    self.worst_staleness_ns as f64 / 1e6,
                    self.eventual_stale_reads
                ),
            )?;
        }
        row(
            f,
            "faults / crashes",
            format!("{} / {}", self.faults, self.crashes),
        )?;
        row(
            f,
            "client ops ok / info",
            format!("{} / {}", self.ops_ok, self.ops_info),
        )?;
        row(
            f,
            "wall time",
            format!(
                "{:.1} s ({:.0} runs/s)",
                self.wall_seconds,
                self.runs as f64 / self.wall_seconds.max(1e-9)
            ),
        )?;
        if !self.failures.is_empty() {
            writeln!(f, "failing runs (seed, model, what failed, replay):")?;
            for run in self.failures.iter().take(FAILURES_SHOWN) {
                writeln!(
                    f,
                    "  seed {} {}: {}",
                    run.seed,
                    run.consistency,
                    run.failures.join(", ")
                )?;
                for detail in run.details.iter().take(2) {
                    let first = detail.lines().next().unwrap_or("");
                    writeln!(f, "    {first}")?;
                }
                writeln!(f, "    replay: {}", run.replay)?;
            }
            if self.failures.len() > FAILURES_SHOWN {
                writeln!(
                    f,
                    "  … and {} more (--json lists them all)",
                    self.failures.len() - FAILURES_SHOWN
                )?;
            }
        }
        if let Some(s) = &self.shrunk {
            writeln!(
                f,
                "shrunk seed {} ({}): {} faults -> {}, {} ops -> {}, in {} runs{}; fails on {}",
                s.seed,
                s.consistency,
                s.faults_before,
                s.faults_after,
                s.ops_before,
                s.ops_after,
                s.runs,
                if s.budget_exhausted {
                    " (budget exhausted)"
                } else {
                    ""
                },
                s.reproducer_failures.join(", ")
            )?;
            writeln!(f, "smallest reproducer:")?;
            writeln!(f, "  {}", s.replay)?;
        }
        write!(f, "result: {}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

/// Failing runs listed in the table (`--json` has them all).
pub const FAILURES_SHOWN: usize = 20;
