//! The files of a run — `crash_real.csv` (one row per second), `crash_real.md` (settings,
//! event times, totals, verdicts, tables; see `markdown`), `crash_real.png` (ok operations
//! per second with the events marked; see `chart`), optionally the history; named
//! `crash_bootstrap.*` with the bootstrap as victim, `crash_pause.*` and
//! `crash_partition.*` with those faults — and the summary table; the kill, pause and
//! partition runs also keep their row of the table of all faults in `crash_real.md` (see
//! `summary`). A lost write, an unanswered final read or a history not proven
//! linearizable makes the run an error, after the files are written.

use std::fs::File;
use std::path::PathBuf;

use ringkv_sim::check::{write_event, Verdict};

use super::analysis::windows;
use super::chart::draw;
use super::markdown::markdown;
use super::settings::Fault;
use super::summary;
use super::{Run, Victim, READ_ATTEMPTS};
use crate::runner::{ops, write_csv, Options, Report, Table};
use crate::{ExperimentError, Result};

/// Write the files of a run; an error if a write was lost, a final read went unanswered
/// or the history is not linearizable.
pub(super) fn write(options: &Options, run: &Run) -> Result<Report> {
    let rows = windows(run);
    let stem = run.settings.stem();
    let csv = options.path(&format!("{stem}.csv"));
    write_csv(&csv, &rows)?;
    let png = options.path(&format!("{stem}.png"));
    draw(&png, run, &rows)?;
    let md = options.path(&format!("{stem}.md"));
    let mut files = vec![csv, md.clone(), png];
    let report = markdown(run, options, &rows);
    if run.settings.victim == Victim::Successors {
        // The table of all faults lives in crash_real.md: the kill run writes it anew
        // with the other faults' rows kept, the others update their row in it.
        let real = options.path("crash_real.md");
        let row = summary::row(run, options);
        if run.settings.fault == Fault::Kill {
            let old = std::fs::read_to_string(&real).ok();
            let text = summary::splice(&report, old.as_deref(), &row);
            write_text(&md, &text)?;
        } else {
            write_text(&md, &report)?;
            let old = std::fs::read_to_string(&real).ok();
            let base = old.clone().unwrap_or_else(summary::stub);
            write_text(&real, &summary::splice(&base, old.as_deref(), &row))?;
            files.push(real);
        }
    } else {
        write_text(&md, &report)?;
    }
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

fn write_text(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text)
        .map_err(|e| ExperimentError(format!("cannot write {}: {e}", path.display())))
}

/// `histories/crash_real.jsonl` (or `crash_bootstrap.jsonl`, ...), for `dht check`.
fn write_history(options: &Options, run: &Run) -> Result<PathBuf> {
    let dir = options.path("histories");
    std::fs::create_dir_all(&dir)
        .map_err(|e| ExperimentError(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(format!("{}.jsonl", run.settings.stem()));
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

impl Run {
    /// The scenario in a few words, e.g. `kill -9 of k − 1 = 2 of 5 dht processes`.
    pub(super) fn what(&self) -> String {
        let s = &self.settings;
        let span = trim(self.tl.restart_s - self.tl.kill_s);
        match (s.fault, s.victim) {
            (Fault::Kill, Victim::Successors) => format!(
                "kill -9 of k − 1 = {} of {} dht processes",
                self.victims.len(),
                s.nodes
            ),
            (Fault::Kill, Victim::Bootstrap) => format!(
                "kill -9 of the bootstrap of {} dht processes, its restart, its kill for good, a join and a depart",
                s.nodes
            ),
            (Fault::Pause, _) => format!(
                "SIGSTOP of {} of {} dht processes for {span} s",
                self.victims.len(),
                s.nodes
            ),
            (Fault::Partition, _) => format!(
                "partition of {} dht processes into {} | {} for {span} s",
                s.nodes,
                self.victims.len(),
                s.nodes - self.victims.len()
            ),
        }
    }
}

/// The summary table `dht experiment crash` prints.
fn table(run: &Run) -> Table {
    let s = &run.settings;
    let what = run.what();
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
    let (ok, any) = run.zero_windows();
    table.row(vec![
        "longest window without an ok completion".into(),
        format!("{}–{} s", trim(ok.0), trim(ok.1)),
        format!(
            "{} s (target ≤ {} s: {})",
            trim(ok.1 - ok.0),
            trim(run.zero_window_target_s()),
            if run.zero_window_met() {
                "met"
            } else {
                "not met"
            }
        ),
    ]);
    table.row(vec![
        "longest window without any completion".into(),
        format!("{}–{} s", trim(any.0), trim(any.1)),
        format!("{} s", trim(any.1 - any.0)),
    ]);
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
    let victim = match (s.fault, s.victim) {
        (Fault::Kill, Victim::Successors) => "",
        (Fault::Kill, Victim::Bootstrap) => " --victim bootstrap",
        (Fault::Pause, _) => " --fault pause",
        (Fault::Partition, _) => " --fault partition",
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
