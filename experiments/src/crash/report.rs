//! The files of a run — `crash_real.csv` (one row per second), `crash_real.md` (settings,
//! event times, totals, verdicts, tables), `crash_real.png` (ok operations per second with
//! the kill and restart marked), optionally the history — and the summary table. A lost
//! write, an unanswered final read or a history not proven linearizable makes the run an
//! error, after the files are written.

use std::fs::File;
use std::path::{Path, PathBuf};

use plotters::style::RGBColor;
use ringkv_sim::check::{write_event, OpKind, OpStatus, Verdict};

use super::analysis::{windows, Row};
use super::{Run, KILL_AT, READ_ATTEMPTS, RESTART_AT};
use crate::plot::{self, Axis, Chart, LegendAt, Marker, Point, Series};
use crate::runner::{fixed, machine_facts, ops, today, write_csv, Options, Report, Table};
use crate::{ExperimentError, Result};

/// Colour of the kill marker (red).
const KILL: RGBColor = RGBColor(214, 39, 40);

/// Lost writes described in `crash_real.md`.
const LOST_SHOWN_MAX: usize = 20;

/// Write the files of a run; an error if a write was lost, a final read went unanswered
/// or the history is not linearizable.
pub(super) fn write(options: &Options, run: &Run) -> Result<Report> {
    let rows = windows(run);
    let csv = options.path("crash_real.csv");
    write_csv(&csv, &rows)?;
    let png = options.path("crash_real.png");
    draw(&png, run, &rows)?;
    let md = options.path("crash_real.md");
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

/// `histories/crash_real.jsonl`, for `dht check`.
fn write_history(options: &Options, run: &Run) -> Result<PathBuf> {
    let dir = options.path("histories");
    std::fs::create_dir_all(&dir)
        .map_err(|e| ExperimentError(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join("crash_real.jsonl");
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
    let mut table = Table::new(
        format!(
            "5. kill -9 of k − 1 = {} of {} dht processes under load (chain, k = {}, {} s, {} clients)",
            run.victims.len(),
            run.addrs.len(),
            s.k,
            trim(run.duration.as_secs_f64()),
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
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The command that repeats the run.
fn command(run: &Run, options: &Options) -> String {
    let s = &run.settings;
    format!(
        "dht experiment crash --nodes {} --k {} --duration {}s --request-timeout-ms {} --failure-timeout-ms {} --seed {} --out {}",
        s.nodes,
        s.k,
        trim(run.duration.as_secs_f64()),
        s.request_timeout.as_millis(),
        s.failure_timeout.as_millis(),
        options.seed,
        options.out.display()
    )
}

/// `crash_real.md`.
fn markdown(run: &Run, options: &Options, rows: &[Row]) -> String {
    let mut md = intro(run, options);
    md.push_str("| | |\n|---|---|\n");
    for (k, v) in facts(run) {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str(
        "\nA write counts as lost when a final read of its key, through any node, returns \
         neither an insert that may still be the key's value nor one with an unknown outcome: \
         an acknowledged insert is overwritten once another acknowledged insert of the key \
         began after it ended (the simulator's check, `ringkv_sim::final_reads`).\n\n",
    );
    md.push_str(&node_table(run));
    md.push_str("\n![ok operations per second](crash_real.png)\n\n");
    md.push_str(&window_table(rows));
    md.push_str(&failures(run));
    md
}

/// The title, the command and the setup in words.
fn intro(run: &Run, options: &Options) -> String {
    let s = &run.settings;
    let mut md = String::from("# Crash-stop of real node processes under load\n\n");
    md.push_str(&format!(
        "Written by `dht experiment crash` on {} ({}).\n\n```sh\n{}\n```\n\n",
        today(),
        machine_facts(),
        command(run, options)
    ));
    md.push_str(&format!(
        "A ring of {n} separate `dht` processes on 127.0.0.1 (one `dht bootstrap`, {} \
         `dht node --join`), k = {}, chain replication, failure handling on (heartbeats, \
         removal after {} s of silence, anti-entropy every 2 s), request timeout {} ms. {} \
         closed-loop HTTP clients, one request at a time each to a random node that is up, \
         on {} keys, {}% inserts and {}% queries, for {} s. At {}% of the load, `kill -9` \
         (SIGKILL) of k − 1 = {} members that are consecutive on the ring (the bootstrap's \
         next successors, so the keys they share with the bootstrap keep one live replica); \
         at {}% they are started again on their addresses and rejoin empty. Times are \
         seconds since the load began.\n\n",
        run.addrs.len() - 1,
        s.k,
        trim(s.failure_timeout.as_secs_f64()),
        s.request_timeout.as_millis(),
        s.clients,
        s.keys,
        fixed(100.0 * s.write_ratio, 0),
        fixed(100.0 * (1.0 - s.write_ratio), 0),
        trim(run.duration.as_secs_f64()),
        fixed(100.0 * KILL_AT, 0),
        run.victims.len(),
        fixed(100.0 * RESTART_AT, 0),
        n = run.addrs.len(),
    ));
    md
}

/// The rows of the summary: settings, event times, totals, verdicts.
fn facts(run: &Run) -> Vec<(String, String)> {
    let s = &run.settings;
    let n = run.addrs.len();
    let mut kv = vec![("nodes N, k".to_string(), format!("{n}, {}", s.k))];
    kv.extend(event_facts(run));
    let acked = run
        .load()
        .iter()
        .filter(|o| o.f == OpKind::Write && o.status == OpStatus::Ok)
        .count();
    kv.push((
        "operations ok / info / fail".into(),
        format!(
            "{} / {} / {} (of {}; {acked} acknowledged inserts)",
            run.count(&[OpStatus::Ok]),
            run.count(&[OpStatus::Info, OpStatus::Pending]),
            run.count(&[OpStatus::Fail]),
            run.load_ops
        ),
    ));
    for (what, span, rate) in run.figures() {
        kv.push((
            format!("ok ops/s {what}"),
            format!("{} ({span})", ops(rate)),
        ));
    }
    kv.extend(verdict_facts(run));
    kv
}

/// When the kill, the removal, the first answer after the kill, the restart and the
/// complete ring happened.
fn event_facts(run: &Run) -> Vec<(String, String)> {
    let tl = &run.tl;
    let after_kill = |t: f64| fixed(t - tl.kill_s, 1);
    let rejoined: Vec<String> = tl.rejoined_s.iter().map(|r| fixed(*r, 2)).collect();
    vec![
        (
            "killed (`kill -9`)".into(),
            format!(
                "{} at {} s",
                run.victim_addrs().join(", "),
                fixed(tl.kill_s, 2)
            ),
        ),
        (
            "removed from the ring".into(),
            tl.removed_s.map_or("not before the restart".into(), |r| {
                format!("by {} s ({} s after the kill)", fixed(r, 2), after_kill(r))
            }),
        ),
        (
            "first ok answer to a request sent after the kill".into(),
            run.serving_again_s().map_or("none".into(), |t| {
                format!("at {} s ({} s after the kill)", fixed(t, 2), after_kill(t))
            }),
        ),
        (
            "restarted".into(),
            format!(
                "at {} s; rejoined at {} s",
                fixed(tl.restart_s, 2),
                rejoined.join(", ")
            ),
        ),
        (
            "ring complete again (checked after the load)".into(),
            format!(
                "at {} s (the load ended at {} s)",
                fixed(tl.ring_complete_s, 2),
                fixed(tl.load_end_s, 2)
            ),
        ),
    ]
}

/// The final reads, lost writes and the linearizability verdict.
fn verdict_facts(run: &Run) -> Vec<(String, String)> {
    let lin = &run.lin;
    let acked_keys = run.final_reads().iter().filter(|k| k.acked > 0).count();
    let mut kv = vec![(
        "final reads".to_string(),
        format!(
            "{} keys × {} nodes, after the ring was complete; {acked_keys} keys with an acknowledged insert",
            run.read_back.len(),
            run.addrs.len(),
        ),
    )];
    if !run.unanswered.is_empty() {
        kv.push((
            "**final reads without an answer**".into(),
            format!("**{}**", run.unanswered.len()),
        ));
    }
    kv.push((
        "**acknowledged writes lost**".into(),
        format!("**{}**", run.lost().len()),
    ));
    kv.push((
        "**linearizability** (the whole history, final reads included)".into(),
        format!(
            "**{}** ({} operations on {} keys: {} linearizable, {} violated, {} unknown; checked in {} s)",
            lin.verdict.as_str(),
            lin.ops,
            lin.keys,
            lin.ok_keys,
            lin.violation_keys,
            lin.unknown_keys,
            fixed(run.check_s, 2)
        ),
    ));
    kv
}

/// Keys stored per node after the run.
fn node_table(run: &Run) -> String {
    let mut md = String::from("Keys stored per node after the run:\n\n");
    md.push_str("| node | role | keys as primary | keys as replica |\n|---|---|---|---|\n");
    for (i, a) in run.addrs.iter().enumerate() {
        let role = if i == 0 {
            "bootstrap"
        } else if run.victims.contains(&i) {
            "killed, restarted"
        } else {
            "member"
        };
        let (p, r) = run.stored[i];
        md.push_str(&format!("| {a} | {role} | {p} | {r} |\n"));
    }
    md
}

/// The rows of `crash_real.csv` as a table.
fn window_table(rows: &[Row]) -> String {
    let mut md = String::from(
        "Per second of the load (operations by completion time; the same rows as \
         `crash_real.csv`):\n\n",
    );
    md.push_str(
        "| t (s) | phase | nodes up | ok | of them inserts | info | fail | ok ops/s | p50 ms | max ms | events |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {}–{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            trim(r.t_from_s),
            trim(r.t_to_s),
            r.phase,
            r.nodes_up,
            r.ops_ok,
            r.writes_ok,
            r.ops_info,
            r.ops_fail,
            ops(r.throughput_ok_per_s),
            fixed(r.latency_p50_ms.unwrap_or(f64::NAN), 1),
            fixed(r.latency_max_ms.unwrap_or(f64::NAN), 1),
            r.events
        ));
    }
    md
}

/// The lost writes, the unanswered final reads and the first linearizability
/// counterexample, where there are any.
fn failures(run: &Run) -> String {
    let mut md = String::new();
    let lost = run.lost();
    if !lost.is_empty() {
        md.push_str("\nLost acknowledged writes:\n\n");
        for k in lost.iter().take(LOST_SHOWN_MAX) {
            let described = k.describe().unwrap_or_default();
            md.push_str(&format!("- {described} ({} acknowledged)\n", k.acked));
        }
    }
    if !run.unanswered.is_empty() {
        md.push_str(&format!(
            "\nFinal reads without an `ok` answer in {READ_ATTEMPTS} attempts:\n\n"
        ));
        for u in &run.unanswered {
            md.push_str(&format!("- `{}` through {}\n", u.key, u.node));
        }
    }
    if let Some(c) = run.lin.counterexamples().next() {
        md.push_str(&format!(
            "\nFirst linearizability counterexample:\n\n```text\n{}\n```\n",
            c.explanation
        ));
    }
    md
}

/// `crash_real.png`: ok operations per second, with the kill, the removal from the ring
/// and the restart marked.
fn draw(path: &Path, run: &Run, rows: &[Row]) -> Result<()> {
    let tl = &run.tl;
    let s = &run.settings;
    let mid = |r: &Row| (r.t_from_s + r.t_to_s) / 2.0;
    let ok: Vec<Point> = rows
        .iter()
        .map(|r| Point::at(mid(r), r.throughput_ok_per_s))
        .collect();
    let y = Axis::fit_from_zero(
        "operations per second",
        rows.iter().map(|r| r.throughput_ok_per_s),
    );
    let x_hi = rows.last().map_or(tl.load_end_s, |r| r.t_to_s);
    let mut series = vec![Series::new("ok ops/s", plot::CHAIN, Marker::Circle, ok)];
    series.extend(markers(run, y.hi));
    let chart = Chart {
        title: format!(
            "kill -9 of {} of {} dht processes (chain, k = {})",
            run.victims.len(),
            run.addrs.len(),
            s.k
        ),
        x: Axis::linear("time since the load began (s)", 0.0, x_hi),
        y,
        legend: LegendAt::UpperRight,
        series,
        note: Some(format!(
            "{} clients, {} keys; ok operations per 1 s window, by completion time; node request timeout {} ms",
            s.clients,
            s.keys,
            s.request_timeout.as_millis()
        )),
    };
    plot::draw(path, plot::SIZE, &chart)
}

/// Dashed vertical lines up to `y_hi` at the kill, the removal and the restart.
fn markers(run: &Run, y_hi: f64) -> Vec<Series> {
    let tl = &run.tl;
    let vline = |label: String, x: f64, color: RGBColor| {
        Series::new(
            label,
            color,
            Marker::None,
            vec![Point::at(x, 0.0), Point::at(x, y_hi)],
        )
        .dashed()
    };
    let mut series = vec![vline(
        format!(
            "kill -9 of {} at {} s",
            run.victims.len(),
            fixed(tl.kill_s, 1)
        ),
        tl.kill_s,
        KILL,
    )];
    if let Some(r) = tl.removed_s {
        series.push(vline(
            format!("removed from the ring by {} s", fixed(r, 1)),
            r,
            plot::SUCCESSOR,
        ));
    }
    series.push(vline(
        format!("restart at {} s", fixed(tl.restart_s, 1)),
        tl.restart_s,
        plot::FINGER,
    ));
    series
}
