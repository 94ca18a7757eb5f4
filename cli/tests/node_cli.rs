//! The node commands as a user runs them: real processes on loopback, free ports, stopped
//! by SIGTERM (to their PID) after a bounded wait.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringkv_runtime::HttpClient;
use serde_json::Value;

const DHT: &str = env!("CARGO_BIN_EXE_dht");

/// A child process that is killed if the test ends early.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(DHT)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dht starts");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc { child, lines }
    }

    /// The first stdout line containing `needle`, within 20 s.
    fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line with '{needle}' within 20 s");
    }

    /// SIGTERM, then wait at most 30 s for the exit.
    fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("dht did not exit within 30 s of SIGTERM");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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
