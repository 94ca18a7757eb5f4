//! Integration tests of `dht check`: exit codes, text and JSON output, HTML report.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A file holding `text` in a fresh directory of the temp dir, removed (with anything
/// the test wrote beside the file) when the value is dropped.
struct TempFile(PathBuf);

impl std::ops::Deref for TempFile {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn temp_file(name: &str, text: &str) -> TempFile {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("dht-check-cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    TempFile(path)
}

fn dht(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dht"))
        .args(args)
        .output()
        .expect("run dht")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn line(p: u64, ty: &str, f: &str, value: &str, time: u64) -> String {
    format!(
        "{{\"process\": {p}, \"type\": \"{ty}\", \"f\": \"{f}\", \"key\": \"k\", \"value\": {value}, \"time\": {time}}}\n"
    )
}

fn linearizable() -> String {
    [
        line(1, "invoke", "write", "\"v1\"", 1000),
        line(2, "invoke", "read", "null", 1100),
        line(1, "ok", "write", "\"v1\"", 1800),
        line(2, "ok", "read", "null", 1900),
        String::new(),
        line(3, "invoke", "read", "null", 2000),
        line(3, "ok", "read", "\"v1\"", 2100),
    ]
    .concat()
}

fn stale() -> String {
    [
        line(1, "invoke", "write", "\"v1\"", 1000),
        line(1, "ok", "write", "\"v1\"", 1800),
        line(1, "invoke", "write", "\"v2\"", 2000),
        line(1, "ok", "write", "\"v2\"", 2500),
        line(2, "invoke", "read", "null", 3000).replace('}', ", \"node\": \"n7\"}"),
        line(2, "ok", "read", "\"v1\"", 3500).replace('}', ", \"node\": \"n7\"}"),
    ]
    .concat()
}

#[test]
fn check_linearizable_history_exits_0() {
    let path = temp_file("ok.jsonl", &linearizable());
    let out = dht(&["check", path.to_str().expect("utf8")]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("verdict: linearizable"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_violation_exits_1_with_counterexample_and_report() {
    let path = temp_file("stale.jsonl", &stale());
    let report = path.with_file_name("report.html");
    let out = dht(&[
        "check",
        path.to_str().expect("utf8"),
        "--report",
        report.to_str().expect("utf8"),
    ]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("these 3 operations cannot be linearized"),
        "{text}"
    );
    assert!(text.contains("read() -> \"v1\""), "{text}");
    assert!(text.contains("node n7: 1 of 1 reads stale"), "{text}");
    let html = std::fs::read_to_string(&report).expect("report written");
    assert!(html.contains("<svg") && html.contains("class=\"bad\""));
}

#[test]
fn check_json_report() {
    let path = temp_file("stale.jsonl", &stale());
    let out = dht(&["check", "--json", path.to_str().expect("utf8")]);
    assert_eq!(code(&out), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    assert_eq!(v["verdict"], "violation");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["history"]["ops"], 3);
    let k = &v["linearizability"]["results"]["k"];
    assert_eq!(k["verdict"], "violation");
    assert_eq!(k["counterexample"]["ops"].as_array().map(Vec::len), Some(3));
    assert_eq!(k["counterexample"]["ops"][2]["complete_line"], 6);
    assert_eq!(v["staleness"]["stale_reads"], 1);
    assert_eq!(v["staleness"]["per_node"]["n7"]["max_versions_behind"], 1);
}

#[test]
fn check_malformed_input_exits_2_with_line() {
    let cases = [
        ("{not json", 2, "invalid JSON"),
        (
            &line(1, "begin", "write", "\"v\"", 5),
            2,
            "unknown variant `begin`",
        ),
        (
            &line(1, "invoke", "cas", "\"v\"", 5),
            2,
            "unknown variant `cas`",
        ),
        (
            &line(9, "ok", "read", "null", 5),
            2,
            "without an outstanding invoke",
        ),
        (
            &line(1, "invoke", "read", "null", 5),
            2,
            "still outstanding",
        ),
        (
            &line(2, "invoke", "read", "null", 1),
            2,
            "earlier than the previous",
        ),
    ];
    for (bad, at, what) in cases {
        let text = line(1, "invoke", "read", "null", 3) + bad;
        let path = temp_file("bad.jsonl", &text);
        let out = dht(&["check", path.to_str().expect("utf8")]);
        assert_eq!(code(&out), 2, "{bad}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("line {at}:")) && err.contains(what),
            "{bad}: {err}"
        );
        let out = dht(&["check", "--json", path.to_str().expect("utf8")]);
        assert_eq!(code(&out), 2);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
        assert_eq!(v["error"]["line"], at);
    }
    let out = dht(&["check", "/nonexistent/history.jsonl"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn check_budget_exceeded_exits_3() {
    let path = temp_file("ok.jsonl", &linearizable());
    let out = dht(&["check", "--max-steps", "1", path.to_str().expect("utf8")]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(stdout(&out).contains("unknown"), "{}", stdout(&out));
}

#[test]
fn check_info_and_pending_ops() {
    let text = [
        line(1, "invoke", "write", "\"v1\"", 1000),
        line(1, "info", "write", "\"v1\"", 1800),
        line(2, "invoke", "read", "null", 2000),
        line(2, "ok", "read", "null", 2100),
        line(3, "invoke", "write", "\"v2\"", 2200),
        line(2, "invoke", "read", "null", 3000),
        line(2, "ok", "read", "\"v1\"", 3100),
    ]
    .concat();
    let path = temp_file("info.jsonl", &text);
    let out = dht(&["check", path.to_str().expect("utf8")]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}

/// Run `dht` with its stdout a pipe whose reading end is closed at once (as `| head`
/// does once it has its lines): its exit code and stderr.
fn dht_into_closed_pipe(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dht"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dht");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("dht ends");
    (code(&out), stderr(&out))
}

#[test]
fn a_reader_that_closes_the_pipe_early_changes_no_exit_code() {
    // The verdict stays the exit code, and nothing panics, whether the report is text or
    // JSON and whatever the verdict.
    let ok = temp_file("ok.jsonl", &linearizable());
    let bad = temp_file("stale.jsonl", &stale());
    for (path, verdict) in [(&ok, 0), (&bad, 1)] {
        for json in [false, true] {
            let mut args = vec!["check", path.to_str().expect("utf8")];
            if json {
                args.push("--json");
            }
            let (code, err) = dht_into_closed_pipe(&args);
            assert_eq!(code, verdict, "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert!(!err.contains("error"), "{args:?}: {err}");
        }
    }
    // A simulation's report, many lines long.
    let (code, err) = dht_into_closed_pipe(&["sim", "--nodes", "5", "--workload", "insert"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
