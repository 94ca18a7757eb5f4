//! Helpers shared by the tests that run `dht` as separate processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The `dht` binary under test.
pub const DHT: &str = env!("CARGO_BIN_EXE_dht");

/// How long a process may take to print a line a test waits for: a debug build on a
/// loaded 2-core machine (the CI's) is slow, not stuck; 20 s was once not enough for a
/// join while two other processes kept both cores busy.
const LINE_WAIT: Duration = Duration::from_secs(60);

/// A child process that is killed if the test ends early.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn start(args: &[&str]) -> Proc {
        let mut command = Command::new(DHT);
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Proc::spawn(command)
    }

    /// Run `command` (whose stdout must be piped) as a `dht` process. Its stderr, if
    /// piped, is read beside stdout, so that a test that waits in vain can show why.
    pub fn spawn(mut command: Command) -> Proc {
        let mut child = command.spawn().expect("dht starts");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let tx = tx.clone();
            thread::spawn(move || forward_lines(stderr, "stderr: ", tx));
        }
        thread::spawn(move || forward_lines(stdout, "", tx));
        Proc { child, lines }
    }

    /// The first stdout line containing `needle`, within [`LINE_WAIT`]. If none comes,
    /// the panic message shows the process's last lines of output and whether it ended.
    pub fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + LINE_WAIT;
        let mut seen = Vec::new();
        let mut ended = false;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) && !line.starts_with("stderr: ") => return line,
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    ended = true;
                    break;
                }
            }
        }
        let last = seen[seen.len().saturating_sub(20)..].join("\n");
        let how = match ended {
            true => "the process closed its output (it ended)",
            false => "the process is still running",
        };
        panic!("no line with '{needle}' within {LINE_WAIT:?}; {how}; its last output:\n{last}");
    }

    /// SIGTERM, then wait at most 30 s for the exit.
    pub fn terminate(mut self) -> ExitStatus {
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

/// Send each line `from` writes to `tx`, after `prefix`.
fn forward_lines(from: impl Read, prefix: &str, tx: mpsc::Sender<String>) {
    for line in BufReader::new(from).lines().map_while(Result::ok) {
        if tx.send(format!("{prefix}{line}")).is_err() {
            return;
        }
    }
}

impl Proc {
    /// Send `signal` (`STOP`, `CONT`, ...) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), pid.as_str()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// `kill -9`: no depart, no goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A fresh output directory for test `name` under the system's temp dir.
pub fn out_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringkv-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Run `dht ARGS`, killing it if it has not ended within `limit`.
pub fn run_bounded(args: &[&str], limit: Duration) -> std::process::Output {
    let child = Command::new(DHT)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dht starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("dht runs"),
        Err(_) => {
            // Only the process this test started.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("dht {} did not end within {limit:?}", args.join(" "));
        }
    }
}

/// Header and rows of a simple CSV (no quoted fields).
pub fn csv(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines
        .next()
        .expect("a header")
        .split(',')
        .map(String::from)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

/// A loopback port that is free now, for a node the test may kill and start again on the
/// same address. Drawn outside the system's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`): a port from that range, free while its
/// node is down, can be taken meanwhile by any outgoing connection or `bind(0)` of the
/// tests running beside it, and the restarted node then cannot listen (seen once in CI:
/// "Address already in use"). Ports handed out are not handed out again by this process.
pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let (lo, hi) = ephemeral_range();
    // The larger stretch outside the range, above the well-known and registered ports
    // most services use.
    let below = (10_000u32, u32::from(lo));
    let above = (u32::from(hi) + 1, 65_536u32);
    let (from, to) = if below.1.saturating_sub(below.0) >= above.1.saturating_sub(above.0) {
        below
    } else {
        above
    };
    let span = to.saturating_sub(from);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    if span > 0 {
        // Start somewhere different in every process, so that test binaries run one
        // after the other do not reuse each other's ports (TIME_WAIT, lingering clients).
        let seed = std::process::id().wrapping_mul(2_654_435_761)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        for i in 0..span.min(5_000) {
            let port = (from + (seed.wrapping_add(i.wrapping_mul(7_919)) % span)) as u16;
            if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    // No free port outside the range: one from it (the restart may then find it taken).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    given.insert(port);
    port
}

/// The system's ephemeral port range (Linux's default where it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    let read = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let parsed = read.and_then(|text| {
        let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
        Some((parts.next()??, parts.next()??))
    });
    parsed.unwrap_or((32_768, 60_999))
}
