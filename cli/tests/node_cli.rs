//! The node commands as a user runs them: real processes on loopback, free ports, stopped
//! by SIGTERM (to their PID) after a bounded wait.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Proc, DHT};

use ringkv_runtime::HttpClient;
use serde_json::Value;

/// The address after the last space of `line` ("... listening on H:P (...)" or "bootstrap: H:P").
fn addr_in(line: &str, after: &str) -> String {
    let rest = &line[line.find(after).expect("marker") + after.len()..];
    rest.split_whitespace().next().unwrap().to_string()
}

fn get(url: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let reply = HttpClient::new(Duration::from_secs(10))
            .get(url)
            .await
            .expect("GET");
        (reply.status, reply.value())
    })
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ringkv-cli-{}-{name}", std::process::id()))
}

/// `dht bench --baseline --relay --json` of 300 operations by 4 clients against the ring
/// at `bootstrap`, with `load` options; its report.
fn compare(bootstrap: &str, load: &[&str]) -> Value {
    let out = Command::new(DHT)
        .args([
            "bench",
            "--target",
            bootstrap,
            "--ops",
            "300",
            "--clients",
            "4",
        ])
        .args(load)
        .args(["--baseline", "--relay", "--json"])
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON comparison")
}

#[test]
fn cluster_bench_and_check_a_real_history() {
    let cluster = Proc::start(&["cluster", "--nodes", "4", "--k", "2", "--base-port", "0"]);
    let bootstrap = addr_in(&cluster.wait_line("bootstrap: "), "bootstrap: ");
    let overlay = cluster.wait_line("overlay");
    assert_eq!(overlay.matches("->").count(), 3, "{overlay}");
    cluster.wait_line("serving until Ctrl-C");

    let history = temp_file("history.jsonl");
    let bench = Command::new(DHT)
        .args([
            "bench",
            "--target",
            &bootstrap,
            "--ops",
            "400",
            "--clients",
            "8",
            "--mix",
            "requests",
        ])
        .args(["--json", "--history"])
        .arg(&history)
        .output()
        .expect("bench runs");
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let report: Value = serde_json::from_slice(&bench.stdout).expect("JSON report");
    assert_eq!(report["ops"], 400);
    assert_eq!(report["nodes"].as_array().unwrap().len(), 4);
    assert_eq!(report["history_events"], 800);
    assert_eq!(report["routing"], "token", "the default");

    let check = Command::new(DHT)
        .arg("check")
        .arg(&history)
        .output()
        .expect("check runs");
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let _ = std::fs::remove_file(&history);

    // The same load against the baseline and the relay, with random routing.
    let both = compare(
        &bootstrap,
        &["--mix", "query", "--keys", "50", "--routing", "random"],
    );
    for side in ["ringkv", "baseline", "relay"] {
        assert_eq!(both[side]["ok"], 300, "{side}: {both}");
        assert_eq!(
            both[side]["nodes"].as_array().map(Vec::len),
            Some(4),
            "{side}"
        );
        assert_eq!(both[side]["routing"], "random");
    }
    assert_ne!(both["ringkv"]["nodes"], both["baseline"]["nodes"]);
    assert_ne!(both["relay"]["nodes"], both["baseline"]["nodes"]);
    for ratios in ["ratios", "relay_ratios", "ringkv_over_relay"] {
        let throughput = both[ratios]["throughput"].as_f64().expect("a ratio");
        assert!(throughput > 0.0, "{ratios}: {both}");
        assert!(
            both[ratios]["p99"].as_f64().is_some_and(|r| r > 0.0),
            "{ratios}: {both}"
        );
    }
    let relay_over_baseline = both["relay"]["ops_per_s"].as_f64().unwrap_or(0.0)
        / both["baseline"]["ops_per_s"].as_f64().unwrap_or(1.0);
    let reported = both["relay_ratios"]["throughput"].as_f64().unwrap_or(0.0);
    assert!((reported - relay_over_baseline).abs() < 1e-9, "{both}");

    // A token-aware client finds the relay's keys where the relay keeps them: its answers
    // name the node a ring's would, so the client never takes its map for stale.
    let token = compare(&bootstrap, &["--mix", "insert", "--routing", "token"]);
    for side in ["ringkv", "baseline", "relay"] {
        assert_eq!(token[side]["ok"], 300, "{side}: {token}");
        assert_eq!(token[side]["relearns"], 0, "{side}: {token}");
    }

    // The relay is a variant of the baseline run.
    let alone = Command::new(DHT)
        .args(["bench", "--target", &bootstrap, "--relay"])
        .output()
        .expect("bench runs");
    assert_eq!(alone.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("--baseline"), "{stderr}");

    let status = cluster.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bootstrap_and_node_processes_join_and_depart_on_sigterm() {
    let boot = Proc::start(&[
        "bootstrap",
        "--port",
        "0",
        "--k",
        "2",
        "--consistency",
        "eventual",
    ]);
    let boot_addr = addr_in(&boot.wait_line("listening on "), "listening on ");
    let node = Proc::start(&["node", "--port", "0", "--bootstrap", &boot_addr, "--join"]);
    let node_addr = addr_in(&node.wait_line("listening on "), "listening on ");
    node.wait_line("joined the ring");

    let (status, body) = get(&format!("http://{boot_addr}/overlay"));
    assert_eq!(status, 200);
    assert_eq!(body["overlay"].as_array().unwrap().len(), 2, "{body}");
    let (_, info) = get(&format!("http://{node_addr}/node"));
    assert_eq!(
        info["consistency"], "eventual",
        "k and the model are learned: {info}"
    );
    assert_eq!(info["k"], 2);

    assert!(node.terminate().success());
    let (_, body) = get(&format!("http://{boot_addr}/overlay"));
    assert_eq!(
        body["overlay"],
        serde_json::json!([boot_addr]),
        "the node departed"
    );
    assert!(boot.terminate().success());
}

/// Virtual nodes as a user runs them: the bootstrap's `--vnodes 3` is the ring's setting,
/// a `dht node` learns it from its join and starts its two further positions, every
/// position names its process, a key written through one is read through another, and
/// SIGTERM takes all of a process's positions out of the ring.
#[test]
fn a_ring_with_virtual_nodes_places_each_process_three_times() {
    ring_with_virtual_nodes("eventual");
}

/// The same under chain replication: a key's chain runs over both processes.
#[test]
fn a_chain_ring_with_virtual_nodes_places_each_process_three_times() {
    ring_with_virtual_nodes("chain");
}

fn ring_with_virtual_nodes(consistency: &str) {
    let boot = Proc::start(&[
        "bootstrap",
        "--port",
        "0",
        "--k",
        "2",
        "--consistency",
        consistency,
        "--vnodes",
        "3",
    ]);
    let boot_addr = addr_in(&boot.wait_line("listening on "), "listening on ");
    boot.wait_line("further ring positions");
    let node = Proc::start(&["node", "--port", "0", "--bootstrap", &boot_addr, "--join"]);
    let node_addr = addr_in(&node.wait_line("listening on "), "listening on ");
    let extra = node.wait_line("further ring positions");
    assert!(extra.contains("2 further"), "{extra}");

    let (status, body) = get(&format!("http://{boot_addr}/overlay"));
    assert_eq!(status, 200);
    let overlay: Vec<String> = serde_json::from_value(body["overlay"].clone()).unwrap();
    assert_eq!(overlay.len(), 6, "{body}");
    let mut per_process = std::collections::BTreeMap::new();
    for addr in &overlay {
        let (_, info) = get(&format!("http://{addr}/node"));
        assert_eq!(info["vnodes"], 3, "{info}");
        *per_process
            .entry(info["process"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    let expected: std::collections::BTreeMap<String, i32> =
        [(boot_addr.clone(), 3), (node_addr.clone(), 3)].into();
    assert_eq!(per_process, expected);

    let key = "Hey%20Jude";
    let (status, body) = rt_post(&format!("http://{}/insert/{key}/v1", overlay[1]));
    assert_eq!(status, 200, "{body}");
    // A chain read sees the acknowledged write at once; an eventual read may reach a
    // replica the write has not reached yet (it is replicated after the acknowledgement).
    let read = || get(&format!("http://{}/query/{key}", overlay[4]));
    let (mut status, mut body) = read();
    let start = std::time::Instant::now();
    while consistency == "eventual"
        && body["value"].as_str() != Some("v1")
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
        (status, body) = read();
    }
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some("v1")),
        "{body}"
    );

    assert!(node.terminate().success());
    let (_, body) = get(&format!("http://{boot_addr}/overlay"));
    let left: Vec<String> = serde_json::from_value(body["overlay"].clone()).unwrap();
    assert_eq!(left.len(), 3, "the node's three positions departed: {body}");
    let (status, body) = get(&format!("http://{boot_addr}/query/{key}"));
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some("v1")),
        "{body}"
    );
    assert!(boot.terminate().success());

    // A setting out of range is refused with a reason.
    let refused = common::run_bounded(
        &["bootstrap", "--port", "0", "--vnodes", "0"],
        Duration::from_secs(20),
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("between 1 and"), "{stderr}");
}

fn rt_post(url: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let reply = HttpClient::new(Duration::from_secs(10))
            .post(url, None)
            .await
            .expect("POST");
        (reply.status, reply.value())
    })
}

/// A node stopped with SIGTERM departs, then waits until the keys' heads have
/// acknowledged the entries it handed them as hints (`hints` in `GET /node`), and only
/// then exits: every key is still there, and it did not give up on any hint.
#[test]
fn a_chain_node_stopped_by_sigterm_hands_its_entries_over_before_exiting() {
    let boot = Proc::start(&["bootstrap", "--port", "0", "--k", "2"]);
    let boot_addr = addr_in(&boot.wait_line("listening on "), "listening on ");
    let node = Proc::start(&["node", "--port", "0", "--bootstrap", &boot_addr, "--join"]);
    node.wait_line("joined the ring");
    let log = temp_file("sigterm-node.log");
    let mut command = Command::new(DHT);
    command
        .args(["node", "--port", "0", "--bootstrap", &boot_addr, "--join"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let leaver = Proc::spawn(command);
    let leaver_addr = addr_in(&leaver.wait_line("listening on "), "listening on ");
    leaver.wait_line("joined the ring");

    let load = Command::new(DHT)
        .args([
            "bench",
            "--target",
            &boot_addr,
            "--ops",
            "3000",
            "--clients",
            "8",
        ])
        .args(["--mix", "insert", "--json"])
        .output()
        .expect("bench runs");
    assert!(load.status.success(), "{load:?}");
    let (_, info) = get(&format!("http://{leaver_addr}/node"));
    let held =
        info["keys_primary"].as_u64().unwrap_or(0) + info["keys_replica"].as_u64().unwrap_or(0);
    assert!(held > 0, "the leaver holds entries to hand over: {info}");

    assert!(leaver.terminate().success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("departed"), "{text}");
    assert!(text.contains("every hint acknowledged"), "{text}");
    assert!(!text.contains("hints unacknowledged"), "{text}");
    let (status, body) = get(&format!("http://{boot_addr}/query/*"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 3000, "every key is still in the ring");
    assert!(node.terminate().success());
    assert!(boot.terminate().success());
    let _ = std::fs::remove_file(&log);
}

/// `--rejoin` cannot be combined with a flag that defeats it: each is refused before the
/// node starts, with a message that says why.
#[test]
fn bootstrap_rejoin_refuses_flags_that_defeat_it() {
    let run = |extra: &str| {
        let out = Command::new(DHT)
            .args(["bootstrap", "--port", "0", "--rejoin", extra])
            .output()
            .expect("dht runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run("--new-ring");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with '--new-ring'"), "{err}");
    let (code, err) = run("--no-failure-handling");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--no-failure-handling"), "{err}");
    assert!(err.contains("greetings"), "{err}");
}
