//! `dht experiment crash --quick`: the crash-stop experiment on real processes, run as a
//! user runs it, with either victim (k − 1 successors, or the bootstrap: killed, restarted,
//! killed for good, then a join and a depart through the members), and with the other
//! faults (a SIGSTOP of a member, a network partition through the nodes' test-only
//! filter). It must exit 0 (no acknowledged write lost, the history linearizable), write
//! its CSV, Markdown and PNG, and leave no node process behind.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

mod common;

use common::{csv, out_dir, run_bounded};

/// The experiments of this file run one at a time: each starts a ring of processes and a
/// timed load, which another one beside it would slow down.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The addresses in the node table of a crash Markdown report.
fn node_addrs(md: &str) -> Vec<SocketAddr> {
    md.lines()
        .filter_map(|l| l.strip_prefix("| 127.0.0.1:"))
        .filter_map(|l| l.split(' ').next())
        .filter_map(|port| format!("127.0.0.1:{port}").parse().ok())
        .collect()
}

/// Nothing listens any more on `addrs`: every node process ended with the experiment.
fn assert_nothing_listens(addrs: Vec<SocketAddr>) {
    for a in addrs {
        assert!(
            TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_err(),
            "a node still listens on {a}"
        );
    }
}

/// `dht experiment crash ARGS --quick --no-progress --out DIR`, which must exit 0 and
/// report its verdict on lost writes; its stdout.
fn run_quick_crash(args: &[&str], dir: &Path, limit: Duration) -> String {
    let dir = dir.to_str().unwrap();
    let mut argv = vec!["experiment", "crash"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--quick", "--no-progress", "--out", dir]);
    let out = run_bounded(&argv, limit);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("acknowledged writes lost"), "{stdout}");
    stdout
}

/// The report's verdicts: no acknowledged write lost, the history linearizable.
fn assert_safe(md: &str) {
    assert!(
        md.contains("| **acknowledged writes lost** | **0** |"),
        "{md}"
    );
    assert!(md.contains("| **linearizable** ("), "{md}");
}

#[test]
fn crash_experiment_quick_loses_nothing_and_is_linearizable() {
    let _serial = serial();
    let dir = out_dir("crash");
    let started = Instant::now();
    run_quick_crash(&[], &dir, Duration::from_secs(120));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );

    // The CSV: one row per second of the 5 s load, ok operations before the kill.
    let (header, rows) = csv(&dir.join("crash_real.csv"));
    for col in [
        "t_from_s",
        "t_to_s",
        "phase",
        "nodes_up",
        "ops_ok",
        "ops_info",
        "ops_fail",
        "throughput_ok_per_s",
        "events",
    ] {
        assert!(
            header.iter().any(|h| h == col),
            "no column {col}: {header:?}"
        );
    }
    assert_eq!(rows.len(), 5, "{rows:?}");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let ok: Vec<u64> = rows
        .iter()
        .map(|r| r[col("ops_ok")].parse().unwrap())
        .collect();
    assert!(ok[0] > 0, "no ok operations in the first second: {ok:?}");
    assert!(
        rows.iter().any(|r| r[col("events")].contains("kill -9")),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r[col("phase")] == "crashed"),
        "{rows:?}"
    );

    // The summary: nothing lost, linearizable.
    let md = std::fs::read_to_string(dir.join("crash_real.md")).unwrap();
    assert_safe(&md);
    assert!(
        md.contains("dht experiment crash --nodes 5 --k 3 --duration 5s"),
        "{md}"
    );
    let png = std::fs::read(dir.join("crash_real.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));

    // Every node process was killed when the experiment ended: nothing listens any more
    // on the addresses of the node table.
    let addrs = node_addrs(&md);
    assert_eq!(addrs.len(), 5, "{md}");
    assert_nothing_listens(addrs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn crash_experiment_with_the_bootstrap_as_victim_loses_nothing_and_is_linearizable() {
    let _serial = serial();
    let dir = out_dir("crash-bootstrap");
    run_quick_crash(&["--victim", "bootstrap"], &dir, Duration::from_secs(150));
    assert!(!dir.join("crash_real.csv").exists());

    // The CSV: the bootstrap's two kills, its rejoin, the join and the depart, and ok
    // operations before the first kill and after the depart (the load goes on 2 s past
    // it).
    let (header, rows) = csv(&dir.join("crash_bootstrap.csv"));
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}: {header:?}"))
    };
    let events: Vec<&str> = rows.iter().map(|r| r[col("events")].as_str()).collect();
    for what in [
        "kill -9",
        "rejoined at",
        "for good at",
        "joined through",
        "departed at",
    ] {
        assert!(
            events.iter().any(|e| e.contains(what)),
            "{what}: {events:?}"
        );
    }
    let ok: Vec<u64> = rows
        .iter()
        .map(|r| r[col("ops_ok")].parse().unwrap())
        .collect();
    assert!(ok[0] > 0, "no ok operations in the first second: {ok:?}");
    let last = rows.len() - 1;
    assert_eq!(rows[last][col("phase")], "departed", "{rows:?}");
    assert!(
        ok[last - 1] + ok[last] > 0,
        "no ok operations in the last two seconds, after the depart: {ok:?}"
    );

    // The summary: nothing lost, linearizable, the command that repeats the run.
    let md = std::fs::read_to_string(dir.join("crash_bootstrap.md")).unwrap();
    assert_safe(&md);
    assert!(
        md.contains("dht experiment crash --victim bootstrap --nodes 5 --k 3 --duration 5s"),
        "{md}"
    );
    assert!(md.contains("](crash_bootstrap.png)"), "{md}");
    let png = std::fs::read(dir.join("crash_bootstrap.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));

    // The five first nodes and the one that joined: none is left running.
    let addrs = node_addrs(&md);
    assert_eq!(addrs.len(), 6, "{md}");
    assert_nothing_listens(addrs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dht experiment crash --fault FAULT --quick`: exit 0, nothing lost, linearizable, its
/// files written (and its row of the table of all faults in crash_real.md), the fault and
/// its end in the CSV, no node left running.
fn quick_fault_run(fault: &str, begins: &str, ends: &str) {
    let _serial = serial();
    let dir = out_dir(&format!("crash-{fault}"));
    let stdout = run_quick_crash(&["--fault", fault], &dir, Duration::from_secs(120));
    assert!(
        stdout.contains("longest window without an ok completion"),
        "{stdout}"
    );

    let stem = format!("crash_{fault}");
    let (header, rows) = csv(&dir.join(format!("{stem}.csv")));
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}: {header:?}"))
    };
    assert_eq!(rows.len(), 5, "{rows:?}");
    let ok: Vec<u64> = rows
        .iter()
        .map(|r| r[col("ops_ok")].parse().unwrap())
        .collect();
    assert!(ok[0] > 0, "no ok operations in the first second: {ok:?}");
    let events: Vec<&str> = rows.iter().map(|r| r[col("events")].as_str()).collect();
    for what in [begins, ends] {
        assert!(
            events.iter().any(|e| e.contains(what)),
            "{what}: {events:?}"
        );
    }

    let md = std::fs::read_to_string(dir.join(format!("{stem}.md"))).unwrap();
    assert_safe(&md);
    assert!(
        md.contains("| **longest window without an ok completion** (the whole load) |"),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "dht experiment crash --fault {fault} --nodes 5 --k 3 --duration 5s"
        )),
        "{md}"
    );
    assert!(md.contains(&format!("]({stem}.png)")), "{md}");
    let png = std::fs::read(dir.join(format!("{stem}.png"))).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    // Its row of the table of all faults, in crash_real.md (created for it).
    let real = std::fs::read_to_string(dir.join("crash_real.md")).unwrap();
    let row = real
        .lines()
        .find(|l| l.starts_with(&format!("| {fault} | ")))
        .unwrap_or_else(|| panic!("no {fault} row in crash_real.md:\n{real}"));
    assert!(row.contains("| 0 | linearizable |"), "{row}");
    assert!(!dir.join("crash_real.csv").exists());

    let addrs = node_addrs(&md);
    assert_eq!(addrs.len(), 5, "{md}");
    assert_nothing_listens(addrs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_paused_member_loses_nothing_and_stays_linearizable() {
    quick_fault_run("pause", "SIGSTOP", "SIGCONT");
}

#[test]
fn a_partition_loses_nothing_and_stays_linearizable() {
    quick_fault_run("partition", "partition off", "healed");
}

#[test]
fn crash_options_are_checked() {
    let _serial = serial();
    let dir = out_dir("crash-args");
    let d = dir.to_str().unwrap();
    for args in [
        vec!["experiment", "crash", "--k", "1", "--out", d],
        vec!["experiment", "crash", "--k", "3,5", "--out", d],
        vec!["experiment", "crash", "--nodes", "2", "--out", d],
        vec!["experiment", "crash", "--duration", "soon", "--out", d],
        vec!["experiment", "crash", "--victim", "everyone", "--out", d],
        vec!["experiment", "crash", "--fault", "flood", "--out", d],
        vec![
            "experiment",
            "crash",
            "--fault",
            "pause",
            "--victim",
            "bootstrap",
            "--out",
            d,
        ],
        vec!["experiment", "hops", "--fault", "pause", "--out", d],
        vec![
            "experiment",
            "crash",
            "--victim",
            "bootstrap",
            "--nodes",
            "2",
            "--k",
            "2",
            "--out",
            d,
        ],
        vec!["experiment", "hops", "--victim", "bootstrap", "--out", d],
        vec!["experiment", "hops", "--duration", "5s", "--out", d],
    ] {
        let out = run_bounded(&args, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
