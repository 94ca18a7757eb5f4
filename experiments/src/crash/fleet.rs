//! The node processes of a run: starting `dht bootstrap` and `dht node --join` processes
//! on loopback, killing them with SIGKILL, restarting them on their addresses, and
//! waiting until they form a complete ring.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringkv_runtime::HttpClient;

use super::START_TIMEOUT;
use crate::{ExperimentError, Result};

/// A started `dht` process and the lines of its stdout.
struct NodeProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl NodeProc {
    /// The first stdout line containing `needle`, before `deadline`.
    fn wait_line(&mut self, needle: &str, deadline: Instant, what: &str) -> Result<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(ExperimentError(format!(
                        "{what}: no '{needle}' line within {} s{}",
                        START_TIMEOUT.as_secs(),
                        log_tail(&self.log)
                    )))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: the process ended (give it a moment to be reaped).
                    let mut status = None;
                    for _ in 0..20 {
                        status = self.child.try_wait().ok().flatten();
                        if status.is_some() {
                            break;
                        }
                        thread::sleep(Duration::from_millis(25));
                    }
                    let status = status.map_or("still running".into(), |s| s.to_string());
                    return Err(ExperimentError(format!(
                        "{what}: the process ended ({status}) before printing '{needle}'{}",
                        log_tail(&self.log)
                    )));
                }
            }
        }
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a node's log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
    if tail.is_empty() {
        format!(" (log: {})", log.display())
    } else {
        format!("; last lines of {}:\n    {tail}", log.display())
    }
}

/// The node processes of one run. Dropping it kills (SIGKILL) and reaps every process it
/// started that is still running, and nothing else.
pub(super) struct Fleet {
    dht: PathBuf,
    /// Where the nodes' logs go (kept when the run fails).
    pub(super) logs: PathBuf,
    procs: Vec<Option<NodeProc>>,
    /// `127.0.0.1:port` of each node; index 0 is the bootstrap.
    pub(super) addrs: Vec<String>,
    /// `--request-timeout-ms` of every node.
    request_timeout_ms: String,
    /// `--failure-timeout-ms` of every node.
    failure_timeout_ms: String,
    starts: usize,
}

impl Fleet {
    pub(super) fn new(
        dht: PathBuf,
        request_timeout: Duration,
        failure_timeout: Duration,
    ) -> Result<Fleet> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let logs =
            std::env::temp_dir().join(format!("ringkv-crash-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&logs)
            .map_err(|e| ExperimentError(format!("cannot create {}: {e}", logs.display())))?;
        Ok(Fleet {
            dht,
            logs,
            procs: Vec::new(),
            addrs: Vec::new(),
            request_timeout_ms: request_timeout.as_millis().max(1).to_string(),
            failure_timeout_ms: failure_timeout.as_millis().max(100).to_string(),
            starts: 0,
        })
    }

    /// Start `dht ARGS` with stdout piped (read by a thread) and stderr into a log file.
    fn spawn(&mut self, args: &[String]) -> Result<NodeProc> {
        self.starts += 1;
        let log = self.logs.join(format!("start-{:02}.log", self.starts));
        let stderr = File::create(&log)
            .map_err(|e| ExperimentError(format!("cannot create {}: {e}", log.display())))?;
        let mut child = Command::new(&self.dht)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                ExperimentError(format!(
                    "cannot start {} {}: {e}",
                    self.dht.display(),
                    args.join(" ")
                ))
            })?;
        let stdout = child.stdout.take();
        let (tx, lines) = mpsc::channel();
        if let Some(stdout) = stdout {
            thread::spawn(move || {
                for line in BufReader::new(stdout)
                    .lines()
                    .map_while(std::result::Result::ok)
                {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(NodeProc { child, lines, log })
    }

    /// Start the bootstrap on a free port; returns its address.
    pub(super) fn start_bootstrap(&mut self, k: usize) -> Result<String> {
        let args = [
            "bootstrap",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--k",
            &k.to_string(),
            "--consistency",
            "chain",
            "--request-timeout-ms",
            &self.request_timeout_ms,
            "--failure-timeout-ms",
            &self.failure_timeout_ms,
        ]
        .map(String::from);
        let mut p = self.spawn(&args)?;
        let line = p.wait_line(
            "advertised as",
            Instant::now() + START_TIMEOUT,
            "dht bootstrap",
        );
        self.procs.push(Some(p));
        let addr = advertised(&line?)?;
        self.addrs.push(addr.clone());
        Ok(addr)
    }

    /// Start a member on `port` (0: a free one) that joins at start and wait until it has
    /// joined; returns its address. A restart whose port is briefly unavailable is retried.
    pub(super) fn start_member(&mut self, port: u16, slot: Option<usize>) -> Result<String> {
        let args = [
            "node",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--bootstrap",
            &self.addrs[0],
            "--join",
            "--request-timeout-ms",
            &self.request_timeout_ms,
            "--failure-timeout-ms",
            &self.failure_timeout_ms,
        ]
        .map(String::from);
        let deadline = Instant::now() + START_TIMEOUT;
        let what = format!("dht node --port {port}");
        loop {
            let mut p = self.spawn(&args)?;
            let started = p
                .wait_line("advertised as", deadline, &what)
                .and_then(|line| advertised(&line))
                .and_then(|addr| {
                    p.wait_line("joined the ring", deadline, &what)?;
                    Ok(addr)
                });
            match started {
                Ok(addr) => {
                    match slot {
                        Some(i) => self.procs[i] = Some(p),
                        None => {
                            self.procs.push(Some(p));
                            self.addrs.push(addr.clone());
                        }
                    }
                    return Ok(addr);
                }
                Err(err) => {
                    p.kill9();
                    if Instant::now() + Duration::from_millis(500) >= deadline {
                        return Err(err);
                    }
                    tracing::warn!(%err, "a node did not start; retrying");
                    thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// `kill -9` node `i`.
    pub(super) fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill9();
        }
    }

    /// Restart node `i` on its port; returns when it has joined.
    pub(super) fn restart(&mut self, i: usize) -> Result<()> {
        let port = port_of(&self.addrs[i])?;
        self.start_member(port, Some(i)).map(|_| ())
    }

    /// Whether every process still runs (none crashed on its own).
    pub(super) fn check_alive(&mut self) -> Result<()> {
        for (i, p) in self.procs.iter_mut().enumerate() {
            if let Some(p) = p {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(ExperimentError(format!(
                        "node {} ({}) exited on its own: {status}{}",
                        i,
                        self.addrs[i],
                        log_tail(&p.log)
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            p.kill9();
        }
    }
}

/// The advertised `host:port` in a "... (advertised as H:P)" line.
fn advertised(line: &str) -> Result<String> {
    line.rsplit_once("advertised as ")
        .map(|(_, a)| a.trim().trim_end_matches(')').to_string())
        .filter(|a| port_of(a).is_ok())
        .ok_or_else(|| ExperimentError(format!("no address in the line '{line}'")))
}

fn port_of(addr: &str) -> Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| ExperimentError(format!("no port in the address '{addr}'")))
}

/// The ring in order from the bootstrap (`GET /overlay`).
pub(super) async fn overlay(
    http: &HttpClient,
    boot: &str,
) -> std::result::Result<Vec<String>, String> {
    ringkv_client::overlay(http, boot)
        .await
        .map_err(|e| e.to_string())
}

/// Whether the bootstrap's overlay holds exactly `addrs` and every node says it is a
/// member (`GET /health`).
async fn ring_complete(http: &HttpClient, addrs: &[String]) -> bool {
    let Ok(ring) = overlay(http, &addrs[0]).await else {
        return false;
    };
    let ring: BTreeSet<&String> = ring.iter().collect();
    if ring != addrs.iter().collect::<BTreeSet<_>>() {
        return false;
    }
    for a in addrs {
        match http.get(&format!("http://{a}/health")).await {
            Ok(r) if r.status == 200 && r.value()["member"] == serde_json::Value::Bool(true) => {}
            _ => return false,
        }
    }
    true
}

/// Poll until the ring is complete, at most `limit`.
pub(super) fn wait_ring(
    rt: &tokio::runtime::Runtime,
    http: &HttpClient,
    addrs: &[String],
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let quick = HttpClient::new(Duration::from_secs(2));
    while Instant::now() < deadline {
        if rt.block_on(ring_complete(&quick, addrs)) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    let seen = rt
        .block_on(overlay(http, &addrs[0]))
        .map_or_else(|e| e, |r| r.join(", "));
    Err(ExperimentError(format!(
        "the ring did not hold all {} nodes with every node a member within {} s (overlay: {seen})",
        addrs.len(),
        limit.as_secs()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_parsed_from_the_announcement() {
        let a =
            advertised("node listening on 127.0.0.1:4242 (advertised as 127.0.0.1:4242)").unwrap();
        assert_eq!(a, "127.0.0.1:4242");
        assert_eq!(port_of(&a).unwrap(), 4242);
        assert!(advertised("no address").is_err());
    }
}
