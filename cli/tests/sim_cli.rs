//! `dht sim` end to end: the documented command line, JSON summary fields, determinism
//! across processes, `--check`, and clear errors.

use std::path::PathBuf;
use std::process::{Command, Output};

fn dht(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dht"))
        .arg("sim")
        .args(args)
        .current_dir(std::env::temp_dir()) // the workloads are embedded: any directory works
        .output()
        .expect("dht runs")
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ringkv-sim-cli-{}-{name}", std::process::id()))
}

fn summary(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

const REQUIRED: &[&str] = &[
    "events",
    "wall_seconds",
    "events_per_second",
    "ops_ok",
    "ops_info",
    "ops_fail",
    "virtual_seconds",
    "throughput_ops_per_virtual_second",
    "latency_p50_ns",
    "latency_p99_ns",
    "lookup_hops_mean",
    "lookup_hops_p99",
    "messages_sent",
    "invariant_violations",
];

#[test]
fn the_documented_command_line_works_and_is_deterministic_across_processes() {
    let (h1, h2) = (temp("a.jsonl"), temp("b.jsonl"));
    let args = |h: &PathBuf| {
        vec![
            "--nodes",
            "10",
            "--k",
            "3",
            "--consistency",
            "chain",
            "--seed",
            "42",
            "--workload",
            "requests",
            "--clients",
            "10",
            "--latency",
            "exp:1ms",
            "--drop",
            "0.01",
            "--dup",
            "0.01",
            "--failure-handling",
            "--history",
        ]
        .into_iter()
        .map(String::from)
        .chain([h.display().to_string(), "--json".into()])
        .collect::<Vec<_>>()
    };
    let run = |h: &PathBuf| {
        let a = args(h);
        dht(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut s1 = summary(&run(&h1));
    let mut s2 = summary(&run(&h2));
    for field in REQUIRED {
        assert!(s1.get(*field).is_some(), "missing {field}");
    }
    let (b1, b2) = (std::fs::read(&h1).unwrap(), std::fs::read(&h2).unwrap());
    assert!(
        !b1.is_empty() && b1 == b2,
        "histories differ across processes"
    );
    for field in ["wall_seconds", "events_per_second"] {
        s1.as_object_mut().unwrap().remove(field);
        s2.as_object_mut().unwrap().remove(field);
    }
    assert_eq!(s1, s2);
    assert_eq!(
        s1["ops_ok"].as_u64().unwrap() + s1["ops_info"].as_u64().unwrap(),
        500
    );
    let _ = std::fs::remove_file(h1);
    let _ = std::fs::remove_file(h2);
}

#[test]
fn check_adds_verdicts() {
    let chain = summary(&dht(&[
        "--seed",
        "3",
        "--latency",
        "uniform:0ms..2ms",
        "--check",
        "--json",
    ]));
    assert_eq!(chain["linearizable"], "linearizable");
    assert_eq!(chain["stale_reads"], 0);
    let eventual = dht(&[
        "--consistency",
        "eventual",
        "--seed",
        "3",
        "--workload",
        "synthetic",
        "--ops",
        "2000",
        "--keys",
        "3",
        "--check",
        "--json",
    ]);
    let eventual = summary(&eventual);
    assert!(eventual["stale_reads"].as_u64().unwrap() > 0, "{eventual}");
}

/// `--consistency craq` runs CRAQ, names it in the summary and the replay command, and is
/// checked linearizable like chain; `dht sim sweep --consistency craq` counts its
/// violations.
#[test]
fn craq_is_chosen_by_name_and_checked() {
    let craq = summary(&dht(&[
        "--consistency",
        "craq",
        "--seed",
        "3",
        "--workload",
        "synthetic",
        "--ops",
        "2000",
        "--keys",
        "3",
        "--check",
        "--json",
    ]));
    assert_eq!(craq["consistency"], "craq", "{craq}");
    assert_eq!(craq["linearizable"], "linearizable", "{craq}");
    assert_eq!(craq["stale_reads"], 0, "{craq}");
    assert!(craq["replay"]
        .as_str()
        .unwrap_or_default()
        .contains("--consistency craq"));
    let out = dht(&[
        "sweep",
        "--consistency",
        "craq",
        "--seeds",
        "3",
        "--faults",
        "random",
        "--failure-handling",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("craq linearizability violations"))
        .unwrap_or_default();
    assert!(
        line.trim_end().ends_with("0 runs (0 keys; 0 keys unknown)"),
        "{text}"
    );
}

#[test]
fn the_table_names_the_figures_and_the_replay_command() {
    let out = dht(&[
        "--nodes",
        "5",
        "--routing",
        "successor",
        "--workload",
        "insert",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("lookup hops mean"), "{text}");
    assert!(
        text.contains("replay: dht sim --nodes 5 --k 3 --consistency chain --routing successor"),
        "{text}"
    );
}

#[test]
fn bad_flags_are_explained() {
    for (args, needle) in [
        (
            vec!["--latency", "gamma:1ms"],
            "latency kind 'gamma' unknown",
        ),
        (vec!["--drop", "1.5"], "between 0 and 1"),
        (vec!["--fault", "crash@1s"], "needs a node"),
        (vec!["--workload", "nope"], "workload 'nope' unknown"),
        (vec!["--k", "0"], "k"),
        (vec!["--one-chain"], "use it with --workload synthetic"),
        (vec!["--service", "fast"], "--service: duration 'fast'"),
        (
            vec![
                "--workload",
                "synthetic",
                "--one-chain",
                "--keys",
                "2000000",
            ],
            "--keys times --nodes must be at most",
        ),
    ] {
        let out = dht(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn faults_on_the_command_line_run() {
    let out = dht(&[
        "--fault",
        "crash:3@5ms",
        "--fault",
        "partition:1,2@1ms..20ms",
        "--faults",
        "random",
        "--json",
    ]);
    // Crashes may leave replicas diverged (exit 1 with the replay command) but never crash dht.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(s["crashes"].as_u64().unwrap() >= 1);
    if out.status.code() == Some(1) {
        assert!(String::from_utf8_lossy(&out.stderr).contains("replay with:"));
    }
}

#[test]
fn the_replay_command_reproduces_the_run() {
    let first = dht(&[
        "--seed",
        "9",
        "--nodes",
        "7",
        "--workload",
        "synthetic",
        "--ops",
        "300",
        "--keys",
        "5",
        "--key-dist",
        "zipf:1.1",
        "--one-chain",
        "--service",
        "20us",
        "--warmup",
        "2s",
        "--latency",
        "lognormal:1ms,0.7",
        "--dup",
        "0.02",
        "--partition-mode",
        "hold",
        "--fault",
        "join@3ms",
        "--faults",
        "random",
        "--crash-rate",
        "0",
        "--fault-horizon",
        "100ms",
        "--timeout",
        "300ms",
        "--json",
    ]);
    let mut a: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let replay = a["replay"].as_str().unwrap().to_string();
    let args: Vec<&str> = replay
        .strip_prefix("dht sim ")
        .unwrap()
        .split_whitespace()
        .chain(["--json"])
        .collect();
    let mut b: serde_json::Value = serde_json::from_slice(&dht(&args).stdout).unwrap();
    for field in ["wall_seconds", "events_per_second"] {
        a.as_object_mut().unwrap().remove(field);
        b.as_object_mut().unwrap().remove(field);
    }
    assert_eq!(a, b, "replay: {replay}");
    assert!(
        replay.contains("--one-chain") && replay.contains("--service 20us --warmup 2s"),
        "{replay}"
    );
}

#[test]
fn a_sweep_within_the_declared_model_prints_the_table_and_passes() {
    let out = dht(&[
        "sweep",
        "--seeds",
        "4",
        "--first-seed",
        "100",
        "--both",
        "--faults",
        "random",
        "--failure-handling",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "seeds 100..=103 (4), chain + eventual",
        "--max-down 2",
        "--partition-rate 0",
        "--final-reads",
        "seeds run / runs                   4 / 8",
        "chain linearizability violations   0 runs",
        "lost acknowledged writes           0 keys",
        "convergence failures               0 (100.00% of runs converged)",
        "worst staleness (eventual)",
        "result: PASS",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let json = dht(&[
        "sweep",
        "--seeds",
        "2",
        "--faults",
        "random",
        "--failure-handling",
        "--json",
    ]);
    assert!(json.status.success());
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["runs"], 2);
    assert_eq!(report["models"], serde_json::json!(["chain"]));
    for field in [
        "failed_runs",
        "linearizability_violations",
        "lost_acked_writes",
        "convergence_failures",
        "invariant_breaches",
        "worst_staleness_ns",
        "wall_seconds",
    ] {
        assert!(report.get(field).is_some(), "missing {field}");
    }
}

/// k = 1 with a crash loses the crashed node's keys by design: the sweep exits 1, names
/// the seed and its replay command, and shrinks it to a reproducer that fails too.
#[test]
fn a_failing_sweep_exits_1_with_a_replay_and_a_shrunk_reproducer() {
    let out = dht(&[
        "sweep",
        "--seeds",
        "10",
        "--k",
        "1",
        "--max-down",
        "1",
        "--consistency",
        "chain",
        "--workload",
        "synthetic",
        "--ops",
        "200",
        "--keys",
        "20",
        "--faults",
        "random",
        "--timeout",
        "200ms",
        "--failure-handling",
        "--shrink-budget",
        "60",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("note: k or more nodes may be down at once"));
    assert!(stdout.contains("lost_acked_writes"), "{stdout}");
    assert!(stdout.contains("result: FAIL"), "{stdout}");
    assert!(stderr.contains("replay the first (seed "), "{stderr}");
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    let replay = lines
        .iter()
        .find(|l| l.starts_with("dht sim ") && l.contains("--faults random"))
        .expect("the failing run's replay command");
    assert!(
        replay.ends_with("--max-down 1 --failure-handling --clock-drift 20 --final-reads --check"),
        "{replay}"
    );
    let shrunk = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("dht sim ") && l.contains("--fault "))
        .expect("a shrunk reproducer");
    assert!(!shrunk.contains("--faults random"), "{shrunk}");
    assert!(
        stdout.contains(shrunk),
        "the table names the reproducer too"
    );
    // Both commands reproduce the failure.
    for command in [replay, shrunk] {
        let args: Vec<&str> = command
            .strip_prefix("dht sim ")
            .unwrap()
            .split_whitespace()
            .chain(["--json"])
            .collect();
        let again = dht(&args);
        assert_eq!(again.status.code(), Some(1), "{command}");
        let s: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
        assert!(
            s["lost_acked_writes"].as_u64().unwrap() > 0,
            "{command}: {s}"
        );
        assert!(String::from_utf8_lossy(&again.stderr).contains("lost acknowledged write"));
    }
}

#[test]
fn sweep_flags_are_checked() {
    for (args, needle) in [
        (vec!["sweep", "--seeds", "0"], "--seeds must be at least 1"),
        (vec!["sweep", "--jobs", "0"], "--jobs must be at least 1"),
        (
            vec!["sweep", "--history", "h.jsonl"],
            "--history is per run",
        ),
        (vec!["sweep", "--max-down", "two"], "--max-down 'two'"),
        (vec!["--nodes", "3", "sweep"], "cannot be used with"),
    ] {
        let out = dht(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
