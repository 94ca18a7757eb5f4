//! `dht check`: check a JSON Lines history for linearizability (per key) and measure
//! read staleness.
//!
//! Exit status: 0 linearizable, 1 violation found, 2 malformed input (or unreadable
//! file), 3 some key's search budget ran out (and no violation was found).

use std::fmt::Write as _;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringkv_sim::check::{
    check_linearizability, render_html, staleness, CheckOptions, History, HistoryError, KeyVerdict,
    LinReport, StaleStats, StalenessReport,
};

/// Arguments of `dht check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// History file (JSON Lines, format in docs/history.md); `-` reads standard input.
    pub history: PathBuf,
    /// Print a machine-readable JSON report on standard output instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write an HTML timeline of each violating key's operations to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Search steps allowed per key before its verdict is `unknown`.
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub max_steps: u64,
    /// Wall-clock time allowed per key search, in milliseconds (default: no limit).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Do not shrink violations to minimal counterexamples.
    #[arg(long)]
    pub no_minimize: bool,
    /// Print at most this many counterexamples (text output).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_counterexamples: usize,
}

fn read_history(path: &PathBuf) -> anyhow::Result<Result<History, HistoryError>> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(History::parse_str(&text));
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(History::parse(BufReader::new(file)))
}

fn malformed(args: &CheckArgs, err: &HistoryError) -> anyhow::Result<ExitCode> {
    eprintln!("{}: malformed history: {err}", args.history.display());
    if args.json {
        let doc = serde_json::json!({ "verdict": "malformed", "exit_code": 2, "error": err });
        crate::stdout::line(serde_json::to_string_pretty(&doc)?);
    }
    Ok(ExitCode::from(2))
}

/// Run the command.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let history = match read_history(&args.history)? {
        Ok(h) => h,
        Err(e) => return malformed(&args, &e),
    };
    let opts = CheckOptions {
        max_steps: args.max_steps,
        timeout: args.timeout_ms.map(Duration::from_millis),
        minimize: !args.no_minimize,
        ..CheckOptions::default()
    };
    let lin = check_linearizability(&history, &opts);
    let stale = staleness(&history);
    let code = lin.verdict.exit_code();
    if let Some(path) = &args.report {
        std::fs::write(path, render_html(&history, &lin))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let out = if args.json {
        let doc = serde_json::json!({
            "verdict": lin.verdict,
            "exit_code": code,
            "history": { "events": history.events, "ops": history.ops.len(), "keys": lin.keys },
            "linearizability": lin,
            "staleness": stale,
        });
        serde_json::to_string_pretty(&doc)? + "\n"
    } else {
        text_report(&args, &history, &lin, &stale, start.elapsed())
    };
    crate::stdout::write(&out);
    Ok(ExitCode::from(code))
}

fn percent(f: f64) -> String {
    format!("{:.3}%", 100.0 * f)
}

fn stale_line(s: &StaleStats) -> String {
    format!(
        "{} of {} reads stale ({}), {} impossible; versions behind max {} mean {:.2}; \
         staleness max {} ns mean {:.1} ns",
        s.stale_reads,
        s.reads,
        percent(s.stale_fraction),
        s.impossible_reads,
        s.max_versions_behind,
        s.mean_versions_behind,
        s.max_staleness_ns,
        s.mean_staleness_ns
    )
}

fn text_report(
    args: &CheckArgs,
    history: &History,
    lin: &LinReport,
    stale: &StalenessReport,
    elapsed: Duration,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "history: {} events, {} operations on {} keys",
        history.events,
        history.ops.len(),
        lin.keys
    );
    let _ = writeln!(
        s,
        "linearizability: {} keys linearizable, {} violated, {} unknown ({} search steps)",
        lin.ok_keys, lin.violation_keys, lin.unknown_keys, lin.steps
    );
    for (n, cx) in lin.counterexamples().enumerate() {
        if n == args.max_counterexamples {
            let more = lin.violation_keys - n;
            let _ = writeln!(
                s,
                "... and {more} more violating keys (see --json or --report)"
            );
            break;
        }
        let _ = write!(s, "\n{}", cx.explanation);
    }
    for (key, r) in &lin.results {
        if let KeyVerdict::Unknown { reason } = &r.verdict {
            let _ = writeln!(s, "key {key:?}: unknown ({reason}; raise --max-steps)");
        }
    }
    let _ = writeln!(s, "\nstaleness: {}", stale_line(&stale.total));
    for (node, st) in &stale.per_node {
        let _ = writeln!(s, "  node {node}: {}", stale_line(st));
    }
    if let Some(path) = &args.report {
        let _ = writeln!(s, "report: wrote {}", path.display());
    }
    let _ = writeln!(
        s,
        "verdict: {} (checked in {:.3} s)",
        lin.verdict.as_str(),
        elapsed.as_secs_f64()
    );
    s
}
