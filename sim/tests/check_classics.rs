//! Hand-written classic histories for the linearizability checker and the staleness report.

use ringkv_sim::check::{
    check_linearizability, render_html, staleness, CheckOptions, History, KeyVerdict, LinReport,
    Verdict,
};

/// Build a history on key `k` from compact lines: (process, type, f, value); times are
/// 100 ns apart, in line order.
fn hist(lines: &[(u64, &str, &str, Option<&str>)]) -> History {
    let mut text = String::new();
    for (i, (p, ty, f, v)) in lines.iter().enumerate() {
        let value = v.map_or("null".to_string(), |v| format!("{v:?}"));
        text.push_str(&format!(
            "{{\"process\": {p}, \"type\": \"{ty}\", \"f\": \"{f}\", \"key\": \"k\", \"value\": {value}, \"time\": {}}}\n",
            100 * (i + 1)
        ));
    }
    History::parse_str(&text).expect("valid history")
}

fn check(h: &History) -> LinReport {
    check_linearizability(h, &CheckOptions::default())
}

fn cx_size(r: &LinReport) -> usize {
    r.counterexamples().next().map_or(0, |c| c.ops.len())
}

const W1: Option<&str> = Some("v1");
const W2: Option<&str> = Some("v2");

#[test]
fn check_stale_read_after_completed_write() {
    let h = hist(&[
        (1, "invoke", "write", W1),
        (1, "ok", "write", W1),
        (2, "invoke", "read", None),
        (2, "ok", "read", None),
    ]);
    let r = check(&h);
    assert_eq!(r.verdict, Verdict::Violation);
    assert_eq!(cx_size(&r), 2);
    let h = hist(&[
        (1, "invoke", "write", W1),
        (1, "ok", "write", W1),
        (3, "invoke", "read", None),
        (3, "ok", "read", W1),
        (1, "invoke", "write", W2),
        (1, "ok", "write", W2),
        (2, "invoke", "read", None),
        (2, "ok", "read", W1),
    ]);
    let r = check(&h);
    assert_eq!(r.verdict, Verdict::Violation);
    let cx = r.counterexamples().next().expect("counterexample");
    assert!(cx.minimal);
    assert_eq!(cx.ops.len(), 3, "{}", cx.explanation);
    assert!(
        cx.explanation.contains("write(\"v2\")"),
        "{}",
        cx.explanation
    );
    assert!(
        cx.reasons
            .iter()
            .any(|s| s.contains("completed after every write")),
        "{:?}",
        cx.reasons
    );
}

#[test]
fn check_concurrent_write_and_read_either_way() {
    for seen in [None, W1] {
        let h = hist(&[
            (1, "invoke", "write", W1),
            (2, "invoke", "read", None),
            (2, "ok", "read", seen),
            (1, "ok", "write", W1),
        ]);
        assert_eq!(check(&h).verdict, Verdict::Linearizable, "read {seen:?}");
    }
    // Two reads inside one write cannot go back: new then old is a violation.
    let h = hist(&[
        (1, "invoke", "write", W1),
        (2, "invoke", "read", None),
        (2, "ok", "read", W1),
        (3, "invoke", "read", None),
        (3, "ok", "read", None),
        (1, "ok", "write", W1),
    ]);
    assert_eq!(check(&h).verdict, Verdict::Violation);
}

#[test]
fn check_info_write_that_appears_later() {
    let base = [
        (1, "invoke", "write", W1),
        (1, "info", "write", W1),
        (2, "invoke", "read", None),
        (2, "ok", "read", None),
        (3, "invoke", "read", None),
        (3, "ok", "read", W1),
    ];
    assert_eq!(check(&hist(&base)).verdict, Verdict::Linearizable);
    let mut more = base.to_vec();
    more.extend([(4, "invoke", "read", None), (4, "ok", "read", None)]);
    let r = check(&hist(&more));
    assert_eq!(r.verdict, Verdict::Violation);
    assert_eq!(cx_size(&r), 3);
    // A pending write (no completion at all) behaves the same.
    let pending = [
        (1, "invoke", "write", W1),
        (3, "invoke", "read", None),
        (3, "ok", "read", W1),
    ];
    assert_eq!(check(&hist(&pending)).verdict, Verdict::Linearizable);
}

#[test]
fn check_failed_write_never_takes_effect() {
    let base = [
        (1, "invoke", "write", W1),
        (1, "fail", "write", W1),
        (2, "invoke", "read", None),
    ];
    let mut ok = base.to_vec();
    ok.push((2, "ok", "read", None));
    assert_eq!(check(&hist(&ok)).verdict, Verdict::Linearizable);
    let mut bad = base.to_vec();
    bad.push((2, "ok", "read", W1));
    assert_eq!(check(&hist(&bad)).verdict, Verdict::Violation);
}

#[test]
fn check_read_of_value_never_written() {
    let h = hist(&[
        (1, "invoke", "write", W1),
        (1, "ok", "write", W1),
        (2, "invoke", "read", None),
        (2, "ok", "read", Some("zz")),
    ]);
    let r = check(&h);
    assert_eq!(r.verdict, Verdict::Violation);
    let cx = r.counterexamples().next().expect("counterexample");
    assert_eq!(cx.ops.len(), 1);
    assert!(
        cx.reasons[0].contains("no write of this key ever wrote"),
        "{:?}",
        cx.reasons
    );
    // Reading a value whose write starts only after the read: also a violation.
    let h = hist(&[
        (2, "invoke", "read", None),
        (2, "ok", "read", W1),
        (1, "invoke", "write", W1),
        (1, "ok", "write", W1),
    ]);
    let r = check(&h);
    assert_eq!(r.verdict, Verdict::Violation);
    let cx = r.counterexamples().next().expect("counterexample");
    // The read alone cannot be linearized in the history cut after it.
    assert_eq!(cx.ops.len(), 1);
    assert!(
        cx.reasons[0].contains("invoked after the read completed"),
        "{:?}",
        cx.reasons
    );
}

#[test]
fn check_delete_then_read() {
    let mut lines = vec![
        (1, "invoke", "write", W1),
        (1, "ok", "write", W1),
        (1, "invoke", "delete", None),
        (1, "ok", "delete", None),
        (2, "invoke", "read", None),
    ];
    let mut ok = lines.clone();
    ok.push((2, "ok", "read", None));
    assert_eq!(check(&hist(&ok)).verdict, Verdict::Linearizable);
    lines.push((2, "ok", "read", W1));
    let r = check(&hist(&lines));
    assert_eq!(r.verdict, Verdict::Violation);
    assert_eq!(cx_size(&r), 3);
}

#[test]
fn check_keys_are_independent() {
    let text = r#"{"process": 1, "type": "invoke", "f": "write", "key": "a", "value": "1", "time": 1}
{"process": 2, "type": "invoke", "f": "read", "key": "b", "value": null, "time": 2}
{"process": 1, "type": "ok", "f": "write", "key": "a", "value": "1", "time": 3}
{"process": 2, "type": "ok", "f": "read", "key": "b", "value": "1", "time": 4}
{"process": 3, "type": "invoke", "f": "read", "key": "a", "value": null, "time": 5}
{"process": 3, "type": "ok", "f": "read", "key": "a", "value": 1, "time": 6}
"#;
    let h = History::parse_str(text).expect("valid");
    let r = check(&h);
    assert_eq!(r.verdict, Verdict::Violation);
    assert_eq!((r.keys, r.ok_keys, r.violation_keys), (2, 1, 1));
    assert!(matches!(r.results["a"].verdict, KeyVerdict::Ok));
    assert!(matches!(
        r.results["b"].verdict,
        KeyVerdict::Violation { .. }
    ));
}

#[test]
fn check_budget_exceeded_is_unknown() {
    // Many concurrent writes, then a read of a value none wrote: a full search is needed.
    let mut lines = Vec::new();
    let values: Vec<String> = (0..12).map(|i| format!("x{i}")).collect();
    for (p, v) in values.iter().enumerate() {
        lines.push((p as u64, "invoke", "write", Some(v.as_str())));
    }
    for (p, v) in values.iter().enumerate() {
        lines.push((p as u64, "ok", "write", Some(v.as_str())));
    }
    lines.push((99, "invoke", "read", None));
    lines.push((99, "ok", "read", Some("x0")));
    lines.push((98, "invoke", "read", None));
    lines.push((98, "ok", "read", Some("x1")));
    let h = hist(&lines);
    let opts = CheckOptions {
        max_steps: 5,
        ..CheckOptions::default()
    };
    let r = check_linearizability(&h, &opts);
    assert_eq!(r.verdict, Verdict::Unknown);
    assert_eq!(r.verdict.exit_code(), 3);
    assert!(
        matches!(&r.results["k"].verdict, KeyVerdict::Unknown { reason } if reason.contains("5 steps"))
    );
    // With the default budget the search settles it.
    assert_eq!(check(&h).verdict, Verdict::Violation);
}

#[test]
fn check_html_report_highlights_counterexample() {
    let h = hist(&[
        (1, "invoke", "write", W1),
        (1, "ok", "write", W1),
        (3, "invoke", "write", W2),
        (2, "invoke", "read", None),
        (2, "ok", "read", None),
        (3, "ok", "write", W2),
    ]);
    let r = check(&h);
    let html = render_html(&h, &r);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"));
    assert_eq!(html.matches("class=\"bad\"").count(), 2, "{html}");
    assert_eq!(html.matches("class=\"ok\"").count(), 1);
    assert!(html.contains("read() -&gt; null"));
}

#[test]
fn check_staleness_versions_time_and_nodes() {
    let text = r#"{"process": 1, "type": "invoke", "f": "write", "key": "k", "value": "v1", "time": 0}
{"process": 1, "type": "ok", "f": "write", "key": "k", "value": "v1", "time": 10}
{"process": 1, "type": "invoke", "f": "write", "key": "k", "value": "v2", "time": 20}
{"process": 1, "type": "ok", "f": "write", "key": "k", "value": "v2", "time": 30}
{"process": 1, "type": "invoke", "f": "write", "key": "k", "value": "v3", "time": 40}
{"process": 1, "type": "ok", "f": "write", "key": "k", "value": "v3", "time": 50}
{"process": 2, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 100}
{"process": 2, "type": "ok", "f": "read", "key": "k", "value": "v1", "time": 110, "node": "n1"}
{"process": 2, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 120}
{"process": 2, "type": "ok", "f": "read", "key": "k", "value": "v3", "time": 130, "node": "n2"}
{"process": 2, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 140}
{"process": 3, "type": "invoke", "f": "write", "key": "k", "value": "v4", "time": 141}
{"process": 2, "type": "ok", "f": "read", "key": "k", "value": "v4", "time": 150, "node": "n2"}
{"process": 2, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 160}
{"process": 2, "type": "ok", "f": "read", "key": "k", "value": null, "time": 170, "node": "n1"}
{"process": 2, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 180}
{"process": 2, "type": "ok", "f": "read", "key": "k", "value": "v9", "time": 190}
"#;
    let h = History::parse_str(text).expect("valid");
    let s = staleness(&h);
    assert_eq!(s.total.reads, 5);
    assert_eq!(s.total.stale_reads, 2, "{s:?}");
    assert_eq!(s.total.impossible_reads, 1);
    // v1 read at 100: superseded by v2 (completed at 30) and v3: 2 versions, 70 ns.
    // null read at 160: superseded by all 3 completed writes (first at 10): 150 ns.
    assert_eq!(s.total.max_versions_behind, 3);
    assert_eq!(s.total.mean_versions_behind, 2.5);
    assert_eq!(s.total.max_staleness_ns, 150);
    assert_eq!(s.total.mean_staleness_ns, 110.0);
    assert_eq!(s.total.stale_fraction, 0.4);
    assert_eq!(s.per_node["n1"].stale_reads, 2);
    assert_eq!(s.per_node["n2"].stale_reads, 0);
    assert_eq!(s.per_node["n2"].reads, 2);
    let json = serde_json::to_value(&s).expect("serializes");
    assert_eq!(json["stale_reads"], 2);
    assert!(json["per_node"]["n1"].is_object());
}

#[test]
fn check_staleness_allows_concurrent_and_latest_writes() {
    // Two overlapping writes both completed before the read: either value is fresh.
    let text = r#"{"process": 1, "type": "invoke", "f": "write", "key": "k", "value": "a", "time": 0}
{"process": 2, "type": "invoke", "f": "write", "key": "k", "value": "b", "time": 1}
{"process": 1, "type": "ok", "f": "write", "key": "k", "value": "a", "time": 2}
{"process": 2, "type": "ok", "f": "write", "key": "k", "value": "b", "time": 3}
{"process": 3, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 4}
{"process": 3, "type": "ok", "f": "read", "key": "k", "value": "a", "time": 5}
{"process": 3, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 6}
{"process": 3, "type": "ok", "f": "read", "key": "k", "value": "b", "time": 7}
"#;
    let h = History::parse_str(text).expect("valid");
    let s = staleness(&h);
    assert_eq!((s.total.reads, s.total.stale_reads), (2, 0));
}
