//! Shrinking a violating key to a minimal set of operations that cannot be linearized,
//! and explaining it as a timeline.
//!
//! Every shrinking move keeps the guarantee "if the shrunk set cannot be linearized, the
//! key's full history cannot either":
//! - cutting the history after a position, turning writes still running there into
//!   `info` writes and dropping reads still running there;
//! - removing a read (fewer constraints);
//! - weakening an `ok` write to `info` (more freedom);
//! - removing an `info` write whose value no remaining read returns (it can always be
//!   left out of a linearization).
//!
//! The cut is found by binary search; removals and weakenings by delta debugging
//! (chunks, then single operations) until no single move keeps the set non-linearizable.
//! The shown operations carry their original outcomes; a set with stronger outcomes is
//! still non-linearizable.

// Hash maps and sets here are lookups and memo tables: none is iterated where the order
// could reach a verdict, a report or a history (those are sorted or B-tree ordered).
#![allow(clippy::disallowed_types)]

use std::fmt::Write as _;

use serde::Serialize;

use super::history::{History, OpKind, OpStatus, Operation};
use super::linearizability::{CheckOptions, KeyOps};
use super::search::{self, Action, Outcome, SearchOp};

/// One operation of a counterexample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineOp {
    /// Index in [`History::ops`].
    pub op: usize,
    /// Client process.
    pub process: u64,
    /// Which operation.
    pub f: OpKind,
    /// Value written, or value read (`None` = not found / absent).
    pub value: Option<String>,
    /// Outcome in the history.
    pub status: OpStatus,
    /// Invoke time (ns).
    pub invoke_time: u64,
    /// Completion time (ns), if it completed.
    pub complete_time: Option<u64>,
    /// Line of the invoke.
    pub invoke_line: usize,
    /// Line of the completion, if any.
    pub complete_line: Option<usize>,
}

/// A minimal explanation of a violation on one key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Counterexample {
    /// The key.
    pub key: String,
    /// Operations that together cannot be linearized, in invoke order.
    pub ops: Vec<TimelineOp>,
    /// True when no single operation could be removed (or weakened) without the set
    /// becoming linearizable; false when shrinking was skipped or ran out of budget.
    pub minimal: bool,
    /// Why, read by read, where a simple reason exists.
    pub reasons: Vec<String>,
    /// Human-readable explanation: summary, timeline table and reasons.
    pub explanation: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Removed,
    Weak,
    Strong,
}

struct Shrinker<'a> {
    ops: &'a [SearchOp],
    opts: &'a CheckOptions,
    steps_left: u64,
    /// Step budget of one probe.
    probe_steps: u64,
    /// The whole shrinking budget is spent.
    exhausted: bool,
    /// Some probe ran out of budget (its move was not applied).
    unsure: bool,
}

impl Shrinker<'_> {
    fn build(&self, mask: &[Mode]) -> Vec<SearchOp> {
        let mut out = Vec::with_capacity(mask.len());
        for (op, m) in self.ops.iter().zip(mask) {
            match m {
                Mode::Removed => {}
                Mode::Weak => out.push(SearchOp { ret: None, ..*op }),
                Mode::Strong => out.push(*op),
            }
        }
        out
    }

    /// True when the set is proved non-linearizable within the budget.
    fn violated(&mut self, mask: &[Mode]) -> bool {
        if self.steps_left == 0 {
            self.exhausted = true;
            return false;
        }
        let ops = self.build(mask);
        let budget = self.opts.budget(self.probe_steps.min(self.steps_left));
        let (outcome, steps) = search::search(&ops, &budget);
        self.steps_left = self.steps_left.saturating_sub(steps);
        match outcome {
            Outcome::Violation => true,
            Outcome::Linearizable => false,
            Outcome::Unknown(_) => {
                self.unsure = true;
                self.exhausted = self.steps_left == 0;
                false
            }
        }
    }

    fn initial(&self) -> Vec<Mode> {
        self.ops
            .iter()
            .map(|o| {
                if o.ret.is_some() {
                    Mode::Strong
                } else {
                    Mode::Weak
                }
            })
            .collect()
    }

    /// The history cut after position `t`.
    fn cut(&self, t: usize) -> Vec<Mode> {
        let mode = |o: &SearchOp| {
            let running = !matches!(o.ret, Some(r) if r <= t);
            match (o.call > t, running, o.action) {
                (true, _, _) | (false, true, Action::Read(_)) => Mode::Removed,
                (false, true, Action::Write(_)) => Mode::Weak,
                (false, false, _) => Mode::Strong,
            }
        };
        self.ops.iter().map(mode).collect()
    }

    /// The shortest violated prefix (binary search over history positions).
    fn shortest_prefix(&mut self) -> Vec<Mode> {
        let mut positions: Vec<usize> = self.ops.iter().map(|o| o.call).collect();
        positions.extend(self.ops.iter().filter_map(|o| o.ret));
        positions.sort_unstable();
        let (mut lo, mut hi) = (0, positions.len());
        while lo < hi && !self.exhausted {
            let mid = (lo + hi) / 2;
            if self.violated(&self.cut(positions[mid])) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        match positions.get(hi) {
            Some(&t) => self.cut(t),
            None => self.initial(),
        }
    }

    /// Remove `info` writes whose value no remaining read returns.
    fn drop_unread(&self, mask: &mut [Mode]) -> bool {
        let read: std::collections::HashSet<u32> = self
            .ops
            .iter()
            .zip(mask.iter())
            .filter_map(|(o, m)| match (o.action, m) {
                (Action::Read(v), Mode::Strong) => Some(v),
                _ => None,
            })
            .collect();
        let mut changed = false;
        for (o, m) in self.ops.iter().zip(mask.iter_mut()) {
            if let (Action::Write(v), Mode::Weak) = (o.action, *m) {
                if !read.contains(&v) {
                    *m = Mode::Removed;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Delta debugging: apply `mv` to chunks of eligible operations, then to single ones,
    /// keeping every change that leaves the set violated.
    fn reduce(&mut self, mask: &mut Vec<Mode>, mv: fn(&SearchOp, Mode) -> Option<Mode>) -> bool {
        let mut alive: Vec<usize> = (0..mask.len())
            .filter(|&i| mv(&self.ops[i], mask[i]).is_some())
            .collect();
        let mut chunk = alive.len().div_ceil(2).max(1);
        let mut changed = false;
        while !alive.is_empty() && !self.exhausted {
            let mut kept = Vec::new();
            for c in alive.chunks(chunk).rev() {
                let mut cand = mask.clone();
                for &i in c {
                    cand[i] = mv(&self.ops[i], cand[i]).unwrap_or(cand[i]);
                }
                if self.violated(&cand) {
                    *mask = cand;
                    changed = true;
                } else {
                    kept.extend_from_slice(c);
                }
            }
            kept.sort_unstable();
            alive = kept;
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
        changed
    }

    fn shrink(&mut self) -> Vec<Mode> {
        let mut mask = self.shortest_prefix();
        loop {
            let dropped = self.drop_unread(&mut mask);
            let reads = self.reduce(&mut mask, remove_read);
            let writes = self.reduce(&mut mask, weaken_write);
            if self.exhausted || !(dropped || reads || writes) {
                break;
            }
        }
        self.drop_unread(&mut mask);
        mask
    }
}

fn remove_read(op: &SearchOp, m: Mode) -> Option<Mode> {
    matches!((op.action, m), (Action::Read(_), Mode::Strong)).then_some(Mode::Removed)
}

fn weaken_write(op: &SearchOp, m: Mode) -> Option<Mode> {
    matches!((op.action, m), (Action::Write(_), Mode::Strong)).then_some(Mode::Weak)
}

/// Build the counterexample of a violating key (`prepared` must be non-linearizable).
pub(crate) fn explain(
    history: &History,
    key: &str,
    prepared: &KeyOps,
    search_steps: u64,
    opts: &CheckOptions,
) -> Counterexample {
    let (ids, minimal) = if opts.minimize {
        let mut s = Shrinker {
            ops: &prepared.ops,
            opts,
            steps_left: opts.minimize_steps,
            probe_steps: opts
                .max_steps
                .min(search_steps.saturating_mul(4).max(200_000)),
            exhausted: false,
            unsure: false,
        };
        let mask = s.shrink();
        let ids: Vec<usize> = prepared
            .ids
            .iter()
            .zip(&mask)
            .filter(|(_, m)| **m != Mode::Removed)
            .map(|(id, _)| *id)
            .collect();
        (ids, !s.exhausted && !s.unsure)
    } else {
        (prepared.ids.clone(), false)
    };
    build(history, key, &ids, minimal)
}

/// Build a counterexample from chosen operation ids (in invoke order).
pub fn build(history: &History, key: &str, ids: &[usize], minimal: bool) -> Counterexample {
    let chosen: Vec<&Operation> = ids.iter().filter_map(|&i| history.ops.get(i)).collect();
    let ops: Vec<TimelineOp> = chosen.iter().map(|o| timeline_op(o)).collect();
    let reasons = reasons(history, key, &chosen);
    let explanation = render_text(key, &ops, &reasons, minimal);
    Counterexample {
        key: key.to_string(),
        ops,
        minimal,
        reasons,
        explanation,
    }
}

fn timeline_op(o: &Operation) -> TimelineOp {
    TimelineOp {
        op: o.id,
        process: o.process,
        f: o.f,
        value: o.value.clone(),
        status: o.status,
        invoke_time: o.invoke.time,
        complete_time: o.complete.map(|c| c.time),
        invoke_line: o.invoke.line,
        complete_line: o.complete.map(|c| c.line),
    }
}

fn show(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "null".to_string(),
    }
}

/// `write("v1")`, `read() -> "v1"`, `delete()`.
pub(crate) fn describe(f: OpKind, value: &Option<String>, status: OpStatus) -> String {
    match f {
        OpKind::Write => format!("write({})", show(value)),
        OpKind::Delete => "delete()".to_string(),
        OpKind::Read if status == OpStatus::Ok => format!("read() -> {}", show(value)),
        OpKind::Read => "read()".to_string(),
    }
}

fn writes_value(o: &Operation, v: &Option<String>) -> bool {
    match o.f {
        OpKind::Write => &o.value == v,
        OpKind::Delete => v.is_none(),
        OpKind::Read => false,
    }
}

fn who(o: &Operation) -> String {
    let lines = match o.complete {
        Some(c) => format!("lines {}-{}", o.invoke.line, c.line),
        None => format!("line {}", o.invoke.line),
    };
    format!(
        "{} by process {} ({lines})",
        describe(o.f, &o.value, o.status),
        o.process
    )
}

/// Simple per-read reasons: a value never written, written only later, or overwritten.
fn reasons(history: &History, key: &str, chosen: &[&Operation]) -> Vec<String> {
    let mut out = Vec::new();
    for r in chosen
        .iter()
        .filter(|o| o.f == OpKind::Read && o.status == OpStatus::Ok)
    {
        let v = &r.value;
        let ever = history
            .ops
            .iter()
            .filter(|o| o.key == key && o.status != OpStatus::Fail && writes_value(o, v));
        let ever: Vec<&Operation> = ever.collect();
        if v.is_some() && ever.is_empty() {
            out.push(format!(
                "{} returned {}, which no write of this key ever wrote",
                who(r),
                show(v)
            ));
            continue;
        }
        if v.is_some() && ever.iter().all(|w| r.precedes(w)) {
            out.push(format!(
                "{} returned {}, but every write of it was invoked after the read completed",
                who(r),
                show(v)
            ));
            continue;
        }
        let writers: Vec<&&Operation> = chosen.iter().filter(|w| writes_value(w, v)).collect();
        let newer = chosen.iter().find(|w| {
            w.f != OpKind::Read
                && !writes_value(w, v)
                && w.precedes(r)
                && writers.iter().all(|x| x.precedes(w))
        });
        if let Some(w) = newer {
            let what = if writers.is_empty() {
                ""
            } else {
                " after every write of that value and"
            };
            out.push(format!(
                "{} returned {}, but {} completed{what} before the read was invoked",
                who(r),
                show(v),
                who(w)
            ));
        }
    }
    out
}

fn render_text(key: &str, ops: &[TimelineOp], reasons: &[String], minimal: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "key {key:?}: these {} operations cannot be linearized{}",
        ops.len(),
        if minimal { " (a minimal set)" } else { "" }
    );
    let _ = writeln!(
        s,
        "(no order of them respects both real time -- an operation that completed before \
         another was invoked comes first -- and a register's semantics)"
    );
    s.push_str(&table(ops));
    s.push_str(&ascii_timeline(ops));
    if !reasons.is_empty() {
        s.push_str("why:\n");
        for r in reasons {
            let _ = writeln!(s, "  - {r}");
        }
    }
    s
}

fn table(ops: &[TimelineOp]) -> String {
    let mut rows = vec![[
        "#".to_string(),
        "process".to_string(),
        "operation".to_string(),
        "outcome".to_string(),
        "invoke (ns)".to_string(),
        "complete (ns)".to_string(),
        "lines".to_string(),
    ]];
    for (i, o) in ops.iter().enumerate() {
        rows.push([
            (i + 1).to_string(),
            o.process.to_string(),
            describe(o.f, &o.value, o.status),
            o.status.as_str().to_string(),
            o.invoke_time.to_string(),
            o.complete_time.map_or("-".to_string(), |t| t.to_string()),
            match o.complete_line {
                Some(c) => format!("{}-{c}", o.invoke_line),
                None => o.invoke_line.to_string(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for r in &rows {
        s.push_str("  ");
        for (c, cell) in r.iter().enumerate() {
            let _ = write!(s, "{cell:<w$}  ", w = widths[c]);
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
    }
    s
}

/// One lane per process; bars from invoke to completion in history (line) order, so
/// that overlap on screen is exactly concurrency. Info/pending bars run to the right.
fn ascii_timeline(ops: &[TimelineOp]) -> String {
    if ops.is_empty() || ops.len() > 30 {
        return String::new();
    }
    let mut marks: Vec<usize> = ops.iter().map(|o| o.invoke_line).collect();
    marks.extend(ops.iter().filter_map(|o| o.complete_line));
    marks.sort_unstable();
    marks.dedup();
    let col = |line: usize| 4 * marks.partition_point(|&m| m < line);
    let end = 4 * marks.len() + 2;
    let mut lanes: Vec<(u64, Vec<char>)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        let lane = match lanes.iter().position(|(p, _)| *p == o.process) {
            Some(l) => l,
            None => {
                lanes.push((o.process, vec![' '; end + 1]));
                lanes.len() - 1
            }
        };
        let (a, b) = (col(o.invoke_line), o.complete_line.map_or(end, col));
        let row = &mut lanes[lane].1;
        for c in row.iter_mut().take(b + 1).skip(a) {
            *c = '-';
        }
        row[a] = '[';
        row[b] = if o.complete_line.is_some() { ']' } else { '>' };
        for (k, ch) in (i + 1).to_string().chars().enumerate() {
            if a + 1 + k < b {
                row[a + 1 + k] = ch;
            }
        }
    }
    let mut s =
        String::from("timeline (history order; [n-] = row n of the table, > = never completed):\n");
    for (p, row) in lanes {
        let line: String = row.into_iter().collect();
        let _ = writeln!(s, "  p{p:<6}{}", line.trim_end());
    }
    s
}
