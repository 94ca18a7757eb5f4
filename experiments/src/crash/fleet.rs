//! The node processes of a run: starting `dht bootstrap` and `dht node --join` processes
//! on loopback, killing them with SIGKILL, pausing and resuming them (SIGSTOP, SIGCONT),
//! restarting them on their addresses, and making one depart (`dht depart`). Signals go
//! only to the processes the fleet started, by their PIDs.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

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

    /// Send `signal` (`STOP`, `CONT`) to this process, which must still run.
    fn signal(&mut self, signal: &str) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(ExperimentError(format!(
                "cannot send SIG{signal}: the process already ended ({status})"
            )));
        }
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .stdin(Stdio::null())
            .status();
        match sent {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(ExperimentError(format!(
                "kill -{signal} {pid} ended with {status}"
            ))),
            Err(e) => Err(ExperimentError(format!(
                "cannot run kill -{signal} {pid}: {e}"
            ))),
        }
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
    /// The ring's replication factor (`--k` of the bootstrap).
    k: usize,
    /// `--request-timeout-ms` of every node.
    request_timeout_ms: String,
    /// `--failure-timeout-ms` of every node.
    failure_timeout_ms: String,
    /// With fault injection (the partition), the cluster secret every node gets (in its
    /// environment, not on its command line) and that the partition requests carry;
    /// the nodes then run with `--allow-fault-injection`.
    fault_secret: Option<String>,
    starts: usize,
}

impl Fleet {
    pub(super) fn new(
        dht: PathBuf,
        k: usize,
        request_timeout: Duration,
        failure_timeout: Duration,
        fault_secret: Option<String>,
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
            k,
            request_timeout_ms: request_timeout.as_millis().max(1).to_string(),
            failure_timeout_ms: failure_timeout.as_millis().max(100).to_string(),
            fault_secret,
            starts: 0,
        })
    }

    /// Start `dht ARGS` with stdout piped (read by a thread) and stderr into a log file.
    fn spawn(&mut self, args: &[String]) -> Result<NodeProc> {
        self.starts += 1;
        let log = self.logs.join(format!("start-{:02}.log", self.starts));
        let stderr = File::create(&log)
            .map_err(|e| ExperimentError(format!("cannot create {}: {e}", log.display())))?;
        let mut command = Command::new(&self.dht);
        command.args(args).env("RUST_LOG", "warn");
        if let Some(secret) = &self.fault_secret {
            command
                .arg("--allow-fault-injection")
                .env("RINGKV_CLUSTER_SECRET", secret);
        }
        let mut child = command
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
    pub(super) fn start_bootstrap(&mut self) -> Result<String> {
        self.start(self.bootstrap_args(0), false, None)
    }

    /// Start the bootstrap again, killed, with the command it was started with on the port
    /// it had, plus `--rejoin` (its ring runs: the operator's restart command); returns
    /// once it listens (it then waits for its ring and rejoins it).
    pub(super) fn restart_bootstrap(&mut self) -> Result<()> {
        let port = port_of(&self.addrs[0])?;
        let mut args = self.bootstrap_args(port);
        args.push("--rejoin".to_string());
        self.start(args, false, Some(0)).map(|_| ())
    }

    /// Start a new member on a free port that joins through node `entry`; returns its
    /// address once it has joined. It becomes the last node.
    pub(super) fn join_through(&mut self, entry: usize) -> Result<String> {
        let args = self.member_args(0, entry);
        self.start(args, true, None)
    }

    /// `dht depart --node` node `i` (the process keeps running, out of the ring). The
    /// command neither reads nor writes the user's file of remembered ring members.
    pub(super) fn depart(&self, i: usize) -> Result<()> {
        let addr = &self.addrs[i];
        let timeout_s = START_TIMEOUT.as_secs().to_string();
        let args = [
            "depart",
            "--node",
            addr,
            "--timeout",
            &timeout_s,
            "--no-cache",
        ];
        let out = Command::new(&self.dht)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ExperimentError(format!("cannot run dht {}: {e}", args.join(" "))))?;
        if out.status.success() {
            return Ok(());
        }
        Err(ExperimentError(format!(
            "dht {} ended with {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    /// `dht bootstrap` on `port`, with the ring's settings.
    fn bootstrap_args(&self, port: u16) -> Vec<String> {
        let port = port.to_string();
        let k = self.k.to_string();
        let args = [
            "bootstrap",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--k",
            &k,
            "--consistency",
            "chain",
            "--request-timeout-ms",
            &self.request_timeout_ms,
            "--failure-timeout-ms",
            &self.failure_timeout_ms,
        ];
        args.map(String::from).to_vec()
    }

    /// `dht node --join` on `port`, joining through node `entry`.
    fn member_args(&self, port: u16, entry: usize) -> Vec<String> {
        let port = port.to_string();
        let args = [
            "node",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--bootstrap",
            &self.addrs[entry],
            "--join",
            "--request-timeout-ms",
            &self.request_timeout_ms,
            "--failure-timeout-ms",
            &self.failure_timeout_ms,
        ];
        args.map(String::from).to_vec()
    }

    /// Start `dht ARGS` and wait until it listens (and, for a member, has joined); it
    /// takes slot `slot`, or becomes the last node. Returns its address. A start that
    /// fails (a restart whose port is briefly unavailable) is retried.
    fn start(&mut self, args: Vec<String>, joins: bool, slot: Option<usize>) -> Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let what = format!("dht {} --port {}", args[0], args[4]);
        loop {
            let mut p = self.spawn(&args)?;
            let started = p
                .wait_line("advertised as", deadline, &what)
                .and_then(|line| advertised(&line))
                .and_then(|addr| {
                    if joins {
                        p.wait_line("joined the ring", deadline, &what)?;
                    }
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

    /// SIGSTOP node `i`: it keeps its state and its sockets but runs no more.
    pub(super) fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, "STOP")
    }

    /// SIGCONT node `i`, paused.
    pub(super) fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, "CONT")
    }

    fn signal(&mut self, i: usize, signal: &str) -> Result<()> {
        let addr = &self.addrs[i];
        match self.procs[i].as_mut() {
            Some(p) => p
                .signal(signal)
                .map_err(|e| ExperimentError(format!("node {i} ({addr}): {e}"))),
            None => Err(ExperimentError(format!(
                "node {i} ({addr}) is not running: cannot send SIG{signal}"
            ))),
        }
    }

    /// Start a member that joins through the bootstrap; returns its address once it has
    /// joined.
    pub(super) fn start_member(&mut self) -> Result<String> {
        let args = self.member_args(0, 0);
        self.start(args, true, None)
    }

    /// Restart member `i` on its port, joining through the bootstrap; returns when it has
    /// joined.
    pub(super) fn restart(&mut self, i: usize) -> Result<()> {
        let args = self.member_args(port_of(&self.addrs[i])?, 0);
        self.start(args, true, Some(i)).map(|_| ())
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
