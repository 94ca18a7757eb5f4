//! The files of a run — `crash_real.csv` (one row per second), `crash_real.md` (settings,
//! event times, totals, verdicts, tables; see `markdown`), `crash_real.png` (ok operations
//! per second with the events marked; see `chart`), optionally the history; named
//! `crash_bootstrap.*` with the bootstrap as victim — and the summary table. A lost write,
//! an unanswered final read or a history not proven linearizable makes the run an error,
//! after the files are written.

use std::fs::File;
use std::path::PathBuf;

use ringkv_sim::check::{write_event, Verdict};

use super::analysis::windows;
use super::chart::draw;
use super::markdown::markdown;
use super::{Run, Victim, READ_ATTEMPTS};
use crate::runner::{ops, write_csv, Options, Report, Table};
use crate::{ExperimentError, Result};

/// Write the files of a run; an error if a write was lost, a final read went unanswered
/// or the history is not linearizable.
pub(super) fn write(options: &Options, run: &Run) -> Result<Report> {
    let rows = windows(run);
    let stem = run.settings.victim.stem();
    let csv = options.path(&format!("{stem}.csv"));
    write_csv(&csv, &rows)?;
    let png = options.path(&format!("{stem}.png"));
    draw(&png, run, &rows)?;
    let md = options.path(&format!("{stem}.md"));
    std::fs::write(&md, markdown(run, options, &rows))
        .map_err(|e| ExperimentError(format!("cannot write {}: {e}", md.display())))?;
    let mut files = vec![csv, md.clone(), png];
    if options.histories {
        files.push(write_history(options, run)?);
    }
    let problems = problems(run);
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
        table: table(run),
        warnings: Vec::new(),
        seconds: 0.0,
    })
}

/// `histories/crash_real.jsonl` (or `crash_bootstrap.jsonl`), for `dht check`.
fn write_history(options: &Options, run: &Run) -> Result<PathBuf> {
    let dir = options.path("histories");
    std::fs::create_dir_all(&dir)
        .map_err(|e| ExperimentError(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(format!("{}.jsonl", run.settings.victim.stem()));
    let written = File::create(&path).and_then(|f| {
        let mut out = std::io::BufWriter::new(f);
        run.events
            .iter()
            .try_for_each(|e| write_event(&mut out, e))?;
        std::io::Write::flush(&mut out)
    });
    written.map_err(|e| ExperimentError(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// The summary table `dht experiment crash` prints.
fn table(run: &Run) -> Table {
    let s = &run.settings;
    let what = match s.victim {
        Victim::Successors => format!(
            "kill -9 of k − 1 = {} of {} dht processes",
            run.victims.len(),
            s.nodes
        ),
        Victim::Bootstrap => format!(
            "kill -9 of the bootstrap of {} dht processes, its restart, its kill for good, a join and a depart",
            s.nodes
        ),
    };
    let mut table = Table::new(
        format!(
            "5. {what} under load (chain, k = {}, {} s, {} clients)",
            s.k,
            trim(run.tl.load_end_s),
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
        run.lost().len().to_string(),
    ]);
    table.row(vec![
        "linearizability".into(),
        String::new(),
        run.lin.verdict.as_str().into(),
    ]);
    table
}

/// What makes the run fail, one sentence each.
fn problems(run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let lost = run.lost();
    if !lost.is_empty() {
        problems.push(format!(
            "{} acknowledged writes lost (keys {})",
            lost.len(),
            lost.iter().map(|k| k.key).collect::<Vec<_>>().join(", ")
        ));
    }
    if !run.unanswered.is_empty() {
        problems.push(format!(
            "{} final reads got no answer in {READ_ATTEMPTS} attempts ({})",
            run.unanswered.len(),
            run.unanswered
                .iter()
                .map(|u| format!("{} through {}", u.key, u.node))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if run.lin.verdict != Verdict::Linearizable {
        problems.push(format!(
            "the history is not proven linearizable: {} ({} keys violated, {} unknown)",
            run.lin.verdict.as_str(),
            run.lin.violation_keys,
            run.lin.unknown_keys
        ));
    }
    problems
}

/// A number of seconds without trailing zeros.
pub(super) fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The command that repeats the run.
pub(super) fn command(run: &Run, options: &Options) -> String {
    let s = &run.settings;
    let victim = match s.victim {
        Victim::Successors => "",
        Victim::Bootstrap => " --victim bootstrap",
    };
    format!(
        "dht experiment crash{victim} --nodes {} --k {} --duration {}s --request-timeout-ms {} --failure-timeout-ms {} --seed {} --out {}",
        s.nodes,
        s.k,
        trim(run.duration.as_secs_f64()),
        s.request_timeout.as_millis(),
        s.failure_timeout.as_millis(),
        options.seed,
        options.out.display()
    )
}
