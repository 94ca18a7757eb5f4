//! A self-contained HTML report with an SVG timeline per violating key, in the spirit of
//! Porcupine's visualization: one lane per process, one bar per operation from invoke
//! to completion, the counterexample's operations in red.
//!
//! The horizontal axis is history (line) order, not time: two bars overlap exactly when
//! the operations are concurrent. Times and line numbers are in each bar's tooltip.

// Hash maps and sets here are lookups and memo tables: none is iterated where the order
// could reach a verdict, a report or a history (those are sorted or B-tree ordered).
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use super::counterexample::{describe, Counterexample};
use super::history::{History, OpStatus, Operation};
use super::linearizability::{KeyVerdict, LinReport};

/// At most this many operations are drawn per key (those around the counterexample).
const MAX_DRAWN: usize = 600;
/// At most this many violating keys get a section.
const MAX_KEYS: usize = 50;

const LANE: usize = 30;
const STEP: usize = 14;
const LEFT: usize = 90;

/// Escape text for HTML and SVG.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Render the whole report as one HTML document.
pub fn render_html(history: &History, report: &LinReport) -> String {
    let mut s = String::new();
    s.push_str(HEAD);
    let _ = write!(
        s,
        "<h1>ringkv linearizability report</h1>\n<p class=\"summary\">verdict: <b class=\"{v:?}\">{v:?}</b> \
         &mdash; {} operations on {} keys: {} linearizable, {} violated, {} unknown.</p>\n",
        report.ops,
        report.keys,
        report.ok_keys,
        report.violation_keys,
        report.unknown_keys,
        v = report.verdict,
    );
    let unknown: Vec<&str> = report
        .results
        .iter()
        .filter(|(_, r)| matches!(r.verdict, KeyVerdict::Unknown { .. }))
        .map(|(k, _)| k.as_str())
        .collect();
    if !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .take(100)
            .map(|k| esc(&format!("{k:?}")))
            .collect();
        let _ = writeln!(
            s,
            "<p>Keys without a verdict (budget exceeded): {}</p>",
            list.join(", ")
        );
    }
    let by_key = history.ops_by_key();
    for (n, cx) in report.counterexamples().enumerate() {
        if n == MAX_KEYS {
            let _ = writeln!(
                s,
                "<p>&hellip; and {} more violating keys.</p>",
                report.violation_keys - n
            );
            break;
        }
        let ids = by_key
            .iter()
            .find(|(k, _)| *k == cx.key)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[]);
        key_section(&mut s, history, ids, cx);
    }
    if report.violation_keys == 0 {
        s.push_str("<p>No violation found: nothing to draw.</p>\n");
    }
    s.push_str("</body>\n</html>\n");
    s
}

fn key_section(s: &mut String, history: &History, ids: &[usize], cx: &Counterexample) {
    let _ = writeln!(
        s,
        "<section>\n<h2>key {}</h2>",
        esc(&format!("{:?}", cx.key))
    );
    let _ = writeln!(s, "<pre>{}</pre>", esc(&cx.explanation));
    let red: HashMap<usize, usize> = cx
        .ops
        .iter()
        .enumerate()
        .map(|(n, o)| (o.op, n + 1))
        .collect();
    let drawn = window(history, ids, &red);
    if drawn.len() < ids.len() {
        let _ = writeln!(
            s,
            "<p>Showing {} of the key's {} operations (those around the counterexample).</p>",
            drawn.len(),
            ids.len()
        );
    }
    s.push_str("<div class=\"scroll\">\n");
    svg(s, &drawn, &red);
    s.push_str(
        "</div>\n<p class=\"legend\"><span class=\"sw bad\"></span> counterexample \
        <span class=\"sw ok\"></span> ok <span class=\"sw info\"></span> info / pending \
        <span class=\"sw fail\"></span> fail &mdash; horizontal axis: history (line) order; \
         hover a bar for its times and lines</p>\n</section>\n",
    );
}

/// The operations to draw: all of them if few, else those overlapping the span of the
/// counterexample in history order.
fn window<'a>(
    history: &'a History,
    ids: &[usize],
    red: &HashMap<usize, usize>,
) -> Vec<&'a Operation> {
    let ops: Vec<&Operation> = ids.iter().filter_map(|&i| history.ops.get(i)).collect();
    if ops.len() <= MAX_DRAWN {
        return ops;
    }
    let reds: Vec<&&Operation> = ops.iter().filter(|o| red.contains_key(&o.id)).collect();
    let lo = reds.iter().map(|o| o.invoke.index).min().unwrap_or(0);
    let hi = reds
        .iter()
        .map(|o| end_index(o))
        .max()
        .unwrap_or(usize::MAX);
    let mut out: Vec<&Operation> = ops
        .into_iter()
        .filter(|o| red.contains_key(&o.id) || (o.invoke.index <= hi && end_index(o) >= lo))
        .collect();
    if out.len() > MAX_DRAWN {
        let mut extra = 0;
        out.retain(|o| {
            let keep = red.contains_key(&o.id) || extra < MAX_DRAWN;
            extra += usize::from(!red.contains_key(&o.id));
            keep
        });
    }
    out
}

fn end_index(o: &Operation) -> usize {
    o.complete.map_or(usize::MAX, |c| c.index)
}

fn svg(s: &mut String, ops: &[&Operation], red: &HashMap<usize, usize>) {
    let mut marks: Vec<usize> = ops.iter().map(|o| o.invoke.index).collect();
    marks.extend(ops.iter().filter_map(|o| o.complete.map(|c| c.index)));
    marks.sort_unstable();
    marks.dedup();
    let x = |index: usize| LEFT + STEP * marks.partition_point(|&m| m < index);
    let right = LEFT + STEP * (marks.len() + 2);
    let procs: Vec<u64> = ops
        .iter()
        .map(|o| o.process)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let height = LANE * procs.len() + 20;
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"monospace\" font-size=\"11\">",
        right + 10
    );
    for (l, p) in procs.iter().enumerate() {
        let y = 10 + LANE * l;
        let _ = writeln!(
            s,
            "<text x=\"4\" y=\"{}\">p{p}</text><line x1=\"{LEFT}\" x2=\"{right}\" y1=\"{}\" y2=\"{}\" class=\"lane\"/>",
            y + 18,
            y + LANE - 2,
            y + LANE - 2
        );
    }
    for o in ops {
        let lane = procs.binary_search(&o.process).unwrap_or(0);
        let x0 = x(o.invoke.index);
        let x1 = o.complete.map_or(right, |c| x(c.index));
        bar(
            s,
            o,
            x0,
            x1.max(x0 + 6),
            10 + LANE * lane,
            red.get(&o.id).copied(),
        );
    }
    s.push_str("</svg>\n");
}

/// One operation's bar; `row` is its row in the counterexample table, if it is in it.
fn bar(s: &mut String, o: &Operation, x0: usize, x1: usize, y: usize, row: Option<usize>) {
    let class = match (row, o.status) {
        (Some(_), _) => "bad",
        (None, OpStatus::Ok) => "ok",
        (None, OpStatus::Fail) => "fail",
        (None, _) => "info",
    };
    let described = describe(o.f, &o.value, o.status);
    let label = match row {
        Some(n) => format!("#{n} {described}"),
        None => described,
    };
    let end = match o.complete {
        Some(c) => format!(
            "completed {} at t={} (line {})",
            o.status.as_str(),
            c.time,
            c.line
        ),
        None => "never completed".to_string(),
    };
    let tip = format!(
        "process {}: {label}\ninvoked at t={} (line {})\n{end}",
        o.process, o.invoke.time, o.invoke.line
    );
    let w = x1 - x0;
    let fit = w.saturating_sub(6) / 7;
    let shown: String = if label.chars().count() <= fit {
        label
    } else {
        label
            .chars()
            .take(fit.saturating_sub(1))
            .chain(std::iter::once('…'))
            .collect()
    };
    let _ = writeln!(
        s,
        "<g class=\"{class}\"><title>{}</title><rect x=\"{x0}\" y=\"{}\" width=\"{w}\" height=\"{}\" rx=\"4\"/>\
         <text x=\"{}\" y=\"{}\">{}</text></g>",
        esc(&tip),
        y + 3,
        LANE - 8,
        x0 + 4,
        y + 17,
        esc(&shown)
    );
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ringkv linearizability report</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
pre { background: #f6f6f6; padding: 1em; white-space: pre-wrap; }
.scroll { overflow-x: auto; border: 1px solid #ddd; padding: 4px; }
.Linearizable { color: #1a7f37; } .Violation { color: #c62828; } .Unknown { color: #b26a00; }
.lane { stroke: #eee; }
g rect { stroke-width: 1.5; }
g.ok rect { fill: #cfe3ff; stroke: #4a7bd0; }
g.bad rect { fill: #ffcdd2; stroke: #c62828; stroke-width: 2.5; }
g.info rect { fill: #eeeeee; stroke: #888; stroke-dasharray: 4 3; }
g.fail rect { fill: #fafafa; stroke: #bbb; }
g.fail text { fill: #999; text-decoration: line-through; }
g:hover rect { filter: brightness(0.9); }
.sw { display: inline-block; width: 1.2em; height: 0.8em; border: 1.5px solid; margin: 0 0.3em 0 1em; }
.sw.ok { background: #cfe3ff; border-color: #4a7bd0; } .sw.bad { background: #ffcdd2; border-color: #c62828; }
.sw.info { background: #eee; border-color: #888; border-style: dashed; } .sw.fail { background: #fafafa; border-color: #bbb; }
</style>
</head>
<body>
"#;
