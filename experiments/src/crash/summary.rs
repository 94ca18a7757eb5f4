//! The table of all faults in `crash_real.md`: one row per fault (kill, pause,
//! partition) with the longest window without an `ok` completion, the failure timeout,
//! the target, the lost writes, the linearizability verdict and the command that made it.
//!
//! Each run writes only its own row: the kill run writes `crash_real.md` anew and keeps
//! the other rows of the file it replaces; a pause or partition run replaces its row in
//! `crash_real.md` (which it creates with the table alone if there is none yet). The
//! table sits between two HTML comments, after the rest of the report.

use super::report::{command, trim};
use super::Run;
use crate::runner::Options;

const BEGIN: &str =
    "<!-- faults table: begin (each `dht experiment crash --fault F` run updates its row) -->";
const END: &str = "<!-- faults table: end -->";
/// The faults in the table's order.
const ORDER: [&str; 3] = ["kill", "pause", "partition"];

/// The row of `run`.
pub(super) fn row(run: &Run, options: &Options) -> String {
    let (a, b) = run.zero_windows().0;
    let (any_a, any_b) = run.zero_windows().1;
    let slow = run
        .after_faults()
        .first()
        .and_then(|f| f.slow)
        .map_or("never".to_string(), |(c, d)| {
            format!("{} s ({}–{} s)", trim(d - c), trim(c), trim(d))
        });
    format!(
        "| {} | {} s ({}–{} s) | {} s | {slow} | {} s | {} | {} | {} | {} | `{}` |",
        run.settings.fault.name(),
        trim(b - a),
        trim(a),
        trim(b),
        trim(any_b - any_a),
        trim(run.settings.failure_timeout.as_secs_f64()),
        if run.zero_window_met() {
            format!("met (≤ {} s)", trim(run.zero_window_target_s()))
        } else {
            format!("**not met** (> {} s)", trim(run.zero_window_target_s()))
        },
        run.lost().len(),
        run.lin.verdict.as_str(),
        crate::runner::today(),
        command(run, options)
    )
}

/// A `crash_real.md` with nothing but the table, until a kill run writes the report.
pub(super) fn stub() -> String {
    "# Crash, pause and partition of real node processes under load\n\n\
     The kill run (`dht experiment crash`) writes its report above this table.\n"
        .to_string()
}

/// `doc` without any table of its own, followed by the table: the rows of the table in
/// `old` (if any), with `row` in place of the row of its fault.
pub(super) fn splice(doc: &str, old: Option<&str>, row: &str) -> String {
    let mut rows: Vec<String> = old.map(rows_of).unwrap_or_default();
    let fault = fault_of(row);
    rows.retain(|r| fault_of(r) != fault);
    rows.push(row.to_string());
    rows.sort_by_key(|r| ORDER.iter().position(|f| Some(*f) == fault_of(r)));
    let mut out = without_table(doc).trim_end().to_string();
    out.push_str("\n\n");
    out.push_str(BEGIN);
    out.push_str(
        "\n\n## Every fault\n\n\
         The same load (chain, k = 3, 5 `dht` processes, 8 clients) under each fault; each \
         row is the latest run of its command, with its own report (`crash_real.md` above \
         for kill, `crash_pause.md`, `crash_partition.md`). The longest window without an \
         `ok` completion is over the whole load; the target, a benchmark figure, is the \
         failure timeout plus 0.5 s. A window is ended by any `ok` completion, however few \
         follow: the stretch after the fault in which `ok` operations completed at less than \
         half the rate before it (250 ms bins) tells how long the ring served poorly.\n\n\
         | fault | longest window without an ok completion | without any completion | ok rate below half after the fault | failure timeout | target | acknowledged writes lost | linearizability | run on | command |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        out.push_str(r);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(END);
    out.push('\n');
    out
}

/// The table's rows in `doc`.
fn rows_of(doc: &str) -> Vec<String> {
    let Some((_, rest)) = doc.split_once(BEGIN) else {
        return Vec::new();
    };
    let table = rest.split_once(END).map_or(rest, |(t, _)| t);
    table
        .lines()
        .filter(|l| fault_of(l).is_some())
        .map(String::from)
        .collect()
}

/// `doc` up to its table, if it has one.
fn without_table(doc: &str) -> &str {
    doc.split_once(BEGIN).map_or(doc, |(before, _)| before)
}

/// The fault a table row is about.
fn fault_of(row: &str) -> Option<&'static str> {
    let first = row.strip_prefix("| ")?.split(" |").next()?;
    ORDER.iter().copied().find(|f| *f == first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_keeps_one_row_in_order() {
        let kill = "| kill | 4 s | x |";
        let pause = "| pause | 3 s | x |";
        let doc = splice(&stub(), None, pause);
        assert_eq!(rows_of(&doc), [pause]);
        // The kill run's new report keeps the pause row, and goes first.
        let doc = splice("# Report\n\ntext\n", Some(&doc), kill);
        assert!(doc.starts_with("# Report\n\ntext\n\n"));
        assert_eq!(rows_of(&doc), [kill, pause]);
        // A new pause row replaces the old one; the partition goes last.
        let pause2 = "| pause | 2 s | y |";
        let doc = splice(&doc, Some(&doc), pause2);
        let doc = splice(&doc, Some(&doc), "| partition | 1 s | z |");
        assert_eq!(rows_of(&doc), [kill, pause2, "| partition | 1 s | z |"]);
        assert_eq!(doc.matches(BEGIN).count(), 1);
        assert!(doc.contains("# Report"));
    }
}
