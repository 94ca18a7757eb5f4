//! `dht shell` driven through its stdin, and the one-shot client commands, against a real
//! local ring started by each test (`dht cluster --base-port 0` as a child process on
//! 127.0.0.1, killed when the test ends).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const DHT: &str = env!("CARGO_BIN_EXE_dht");
/// Longest a ring may take to start.
const CLUSTER_START_LIMIT: Duration = Duration::from_secs(90);
/// Longest one `dht` client run may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A `dht cluster` child process; killed on drop.
struct Cluster {
    child: Child,
    bootstrap: String,
    overlay: Vec<String>,
}

impl Cluster {
    fn start(nodes: usize) -> Cluster {
        let mut child = Command::new(DHT)
            .args(["cluster", "--nodes", &nodes.to_string(), "--k", "2"])
            .args([
                "--consistency",
                "chain",
                "--host",
                "127.0.0.1",
                "--base-port",
                "0",
            ])
            .env_remove("DHT_NODE")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dht cluster starts");
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        // Reads until the child's stdout closes (when the child is killed).
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut cluster = Cluster {
            child,
            bootstrap: String::new(),
            overlay: Vec::new(),
        };
        let deadline = Instant::now() + CLUSTER_START_LIMIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("dht cluster did not start within {CLUSTER_START_LIMIT:?}; it printed {seen:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = cluster.child.wait();
                    panic!("dht cluster ended ({status:?}) before serving; it printed {seen:?}")
                }
            };
            if let Some(addr) = line.strip_prefix("bootstrap: ") {
                cluster.bootstrap = addr.trim().to_string();
            } else if let Some((_, ring)) =
                line.split_once("overlay (ring order from the bootstrap): ")
            {
                cluster.overlay = ring.split(" -> ").map(|s| s.trim().to_string()).collect();
            } else if line.starts_with("serving until") {
                break;
            }
            seen.push(line);
        }
        assert!(!cluster.bootstrap.is_empty(), "no bootstrap line");
        assert_eq!(cluster.overlay.len(), nodes, "{:?}", cluster.overlay);
        assert_eq!(cluster.overlay[0], cluster.bootstrap);
        cluster.wait_healthy();
        cluster
    }

    /// Every node answers `GET /health` (bounded wait).
    fn wait_healthy(&self) {
        let deadline = Instant::now() + CLUSTER_START_LIMIT;
        for node in &self.overlay {
            while !http_get_ok(node, "/health") {
                assert!(Instant::now() < deadline, "{node} never became healthy");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.0 GET; whether it answered 200.
fn http_get_ok(node: &str, path: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(node) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {node}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// What a `dht` run printed and how it ended.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Every stdout line, each parsed as JSON.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}\n{self:?}"))
            })
            .collect()
    }

    /// The single stdout JSON document.
    fn json(&self) -> Value {
        let mut lines = self.json_lines();
        assert_eq!(lines.len(), 1, "{self:?}");
        lines.pop().unwrap()
    }

    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }
}

/// Run `dht ARGS` with `stdin` piped in and the given environment; bounded by RUN_LIMIT.
fn dht(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(DHT);
    command
        .args(args)
        .env_remove("DHT_NODE")
        .env("XDG_CACHE_HOME", cache_home())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("dht runs");
    let mut input = child.stdin.take().unwrap();
    let script = stdin.to_string();
    // A shell that exits early closes its stdin: ignore the broken pipe.
    let writer = thread::spawn(move || {
        let _ = input.write_all(script.as_bytes());
    });
    let reader = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dht {args:?} did not finish within {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Run {
        code: status.code().expect("exited normally"),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A member cache directory for the running test alone (tests run in parallel, and
/// must neither see each other's rings nor touch the user's).
fn cache_home() -> std::path::PathBuf {
    let test = thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    std::env::temp_dir().join(format!("ringkv-shell-cli-{}-{test}", std::process::id()))
}

/// Removes the running test's cache directory when the test ends, passed or not.
struct CacheHome;

impl Drop for CacheHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(cache_home());
    }
}

fn shell(node: &str, script: &str) -> Run {
    dht(&["shell", "--node", node], script, &[])
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

#[test]
fn shell_session_with_quoting_setnode_errors_and_exit() {
    let _cache = CacheHome;
    let cluster = Cluster::start(3);
    let nowhere = closed_port();
    let script = format!(
        r#"insert "Like a Rolling Stone" "http://download.nodeX"
query "Like a Rolling Stone"
insert "Don't Stop" 'say "hi" & 100%/?#'
query *
setnode 2
node
query "Don't Stop"
setnode 7
frobnicate now
insert lonely

query nope
# a comment line
setnode {nowhere}
overlay
setnode {bootstrap}
setnode 0
overlay
delete "Like a Rolling Stone"
query "Like a Rolling Stone"
exit
query "Don't Stop"
"#,
        bootstrap = cluster.bootstrap
    );
    let run = shell(&cluster.bootstrap, &script);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json_lines();
    // Nothing after `exit` ran: 15 answers.
    assert_eq!(out.len(), 15, "{run:?}");

    // insert and query of a quoted key with spaces
    assert_eq!(out[0]["key"], "Like a Rolling Stone");
    assert_eq!(out[0]["value"], "http://download.nodeX");
    assert!(out[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("Inserted 'Like a Rolling Stone' at node "));
    assert_eq!(out[1]["value"], "http://download.nodeX");
    assert!(out[1]["message"]
        .as_str()
        .unwrap()
        .starts_with("Song found at node "));
    // quotes inside quotes, and characters that must be percent-encoded
    assert_eq!(out[2]["key"], "Don't Stop");
    assert_eq!(out[2]["value"], "say \"hi\" & 100%/?#");
    // query * lists both pairs
    let pairs = out[3]["pairs"].as_array().unwrap();
    let mut keys: Vec<&str> = pairs.iter().map(|p| p["key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["Don't Stop", "Like a Rolling Stone"]);
    // setnode 2: the third node of the overlay, which then answers the query
    assert_eq!(out[4]["node"], cluster.overlay[2].as_str());
    assert_eq!(out[4]["index"], 2);
    assert_eq!(out[5]["node"], cluster.overlay[2].as_str());
    assert_eq!(out[6]["value"], "say \"hi\" & 100%/?#");
    // a missing key: the node's 404 answer, as it is
    assert_eq!(out[7]["error"], "Song 'nope' not found");
    // setnode HOST:PORT (a closed port, then the bootstrap), then setnode 0; the overlay
    // asked of the closed port comes from a member the shell learned at its start.
    assert_eq!(out[8]["node"], nowhere.as_str());
    assert_eq!(out[9]["overlay"].as_array().map(Vec::len), Some(3));
    assert_eq!(out[10]["node"], cluster.bootstrap.as_str());
    assert_eq!(out[11]["node"], cluster.bootstrap.as_str());
    assert_eq!(out[11]["index"], 0);
    let overlay: Vec<&str> = out[12]["overlay"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(overlay, cluster.overlay);
    assert!(out[13]["message"]
        .as_str()
        .unwrap()
        .starts_with("Deleted 'Like a Rolling Stone'"));
    assert_eq!(out[14]["error"], "Song 'Like a Rolling Stone' not found");
    let errors = run.stderr_lines();
    assert_eq!(errors.len(), 4, "{run:?}");
    assert_eq!(
        errors[0],
        "error: setnode 7: there are 3 nodes in the overlay, numbered 0 to 2"
    );
    assert!(
        errors[1].starts_with("error: unknown command 'frobnicate'; commands: insert, query,"),
        "{}",
        errors[1]
    );
    assert_eq!(
        errors[2],
        "error: insert takes 2 arguments, got 1; usage: insert KEY VALUE"
    );
    assert!(
        errors[3].starts_with(&format!("note: no answer from {nowhere} (")),
        "{}",
        errors[3]
    );
    assert!(
        errors[3].ends_with(&format!("; node {} answered", cluster.bootstrap)),
        "{}",
        errors[3]
    );
    drop(cluster);
}

#[test]
fn shell_queries_star_keys_departs_joins_and_ends_at_eof() {
    let _cache = CacheHome;
    let cluster = Cluster::start(3);
    let departing = cluster.overlay[1].as_str();
    let bootstrap = cluster.bootstrap.as_str();
    // No `exit`: the end of input ends the shell.
    let script = format!(
        "insert '*' star
insert plain value
query '*'
query *
setnode 1
depart
query plain
setnode {bootstrap}
overlay
setnode {departing}
join
overlay
depart
depart
"
    );
    let run = shell(bootstrap, &script);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let out = run.json_lines();
    assert_eq!(out.len(), 14, "{run:?}");
    assert_eq!(out[0]["key"], "*");
    // A quoted star is a key...
    assert_eq!(out[2]["key"], "*");
    assert_eq!(out[2]["value"], "star");
    // ... an unquoted one every pair.
    assert_eq!(out[3]["count"], 2, "{}", out[3]);
    assert_eq!(out[4]["node"], departing);
    assert_eq!(out[5]["node"], departing, "{}", out[5]);
    assert!(out[5]["message"].as_str().unwrap().contains("departed"));
    // A departed node refuses requests: its 409 answer, as it is.
    assert_eq!(out[6]["code"], "not_joined", "{}", out[6]);
    let after_depart = strings(&out[8]["overlay"]);
    assert_eq!(after_depart.len(), 2, "{after_depart:?}");
    assert!(!after_depart.contains(&departing.to_string()));
    assert!(
        out[10]["message"]
            .as_str()
            .unwrap()
            .starts_with("Joined the ring between "),
        "{}",
        out[10]
    );
    assert_eq!(strings(&out[11]["overlay"]), cluster.overlay);
    assert!(
        out[12]["message"].as_str().unwrap().contains("departed"),
        "{}",
        out[12]
    );
    // Departing twice: the node's error answer.
    assert!(out[13]["error"].is_string(), "{}", out[13]);
    drop(cluster);
}

fn strings(list: &Value) -> Vec<String> {
    serde_json::from_value(list.clone()).unwrap_or_else(|e| panic!("{list}: {e}"))
}

#[test]
fn one_shot_commands_print_the_answer_and_exit_with_its_code() {
    let _cache = CacheHome;
    let cluster = Cluster::start(3);
    let node = cluster.overlay[1].as_str();
    let n = ["--node", node];

    let run = dht(
        &[
            "insert",
            "Like a Rolling Stone",
            "http://download.nodeX",
            n[0],
            n[1],
        ],
        "",
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["value"], "http://download.nodeX");
    assert_eq!(run.stderr, "");

    // DHT_NODE stands in for --node.
    let env = [("DHT_NODE", cluster.bootstrap.as_str())];
    let run = dht(&["query", "Like a Rolling Stone"], "", &env);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["value"], "http://download.nodeX");

    // Not found: the node's JSON on stdout, one line on stderr, exit 1.
    let run = dht(&["query", "Hey Jude", n[0], n[1]], "", &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["error"], "Song 'Hey Jude' not found");
    assert_eq!(run.stderr, "error: Song 'Hey Jude' not found (HTTP 404)\n");

    // A value too long for a path goes as JSON.
    let long = "la".repeat(2000);
    let run = dht(&["insert", "-long-", &long, n[0], n[1]], "", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = dht(&["query", "-long-", n[0], n[1]], "", &[]);
    assert_eq!(run.json()["value"], long.as_str());

    // '*' is every pair; --literal makes it a key.
    let run = dht(&["query", "*", n[0], n[1]], "", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["count"], 2);
    let run = dht(&["query", "--literal", "*", n[0], n[1]], "", &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["key"], "*");

    let run = dht(&["delete", "Like a Rolling Stone", n[0], n[1]], "", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = dht(&["delete", "Like a Rolling Stone", n[0], n[1]], "", &[]);
    assert_eq!(run.code, 1, "{run:?}");

    let run = dht(&["overlay", n[0], n[1]], "", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let overlay: Vec<String> = serde_json::from_value(run.json()["overlay"].clone()).unwrap();
    assert_eq!(overlay, cluster.overlay);

    // Joining a member is refused (409): exit 1 with the node's error.
    let run = dht(&["join", n[0], n[1]], "", &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.json()["error"].is_string());
    assert!(run.stderr.ends_with("(HTTP 409)\n"), "{run:?}");

    let last = cluster.overlay[2].as_str();
    let run = dht(&["depart", "--node", last], "", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["node"], last);
    let run = dht(&["join", "--node", last], "", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.json()["predecessor"].is_string());
    drop(cluster);
}

#[test]
fn usage_errors_exit_2_and_unreachable_nodes_exit_3() {
    let _cache = CacheHome;
    let nowhere = closed_port();

    for args in [
        vec!["insert", "only-a-key", "--node", nowhere.as_str()],
        vec!["query", "k", "--node", "no-port-here"],
        vec!["query", "k", "--node", "host:99999"],
        vec!["query", "", "--node", nowhere.as_str()],
        vec!["overlay", "extra", "--node", nowhere.as_str()],
    ] {
        let run = dht(&args, "", &[]);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(run.stderr.starts_with("error: "), "{args:?}: {run:?}");
    }

    for args in [
        vec!["insert", "k", "v"],
        vec!["query", "k"],
        vec!["query", "*"],
        vec!["delete", "k"],
        vec!["overlay"],
        vec!["join"],
        vec!["depart"],
    ] {
        let run = dht(&args, "", &[("DHT_NODE", nowhere.as_str())]);
        assert_eq!(run.code, 3, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "");
        let expected = format!("error: cannot reach node {nowhere}: ");
        assert!(run.stderr.starts_with(&expected), "{args:?}: {run:?}");
        assert!(
            run.stderr
                .contains("Give another node with --node HOST:PORT or DHT_NODE."),
            "{run:?}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    }

    // The shell reports an unreachable node and carries on; the end of input ends it.
    let run = dht(
        &["shell"],
        "overlay\nquery \"a b\"\nsetnode 1\nhelp\n",
        &[("DHT_NODE", nowhere.as_str())],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let errors = run.stderr_lines();
    assert_eq!(errors.len(), 3, "{run:?}");
    for error in &errors[..2] {
        assert!(
            error.starts_with(&format!("error: cannot reach node {nowhere}: ")),
            "{error}"
        );
    }
    assert!(
        errors[2].starts_with("error: setnode 1: cannot read the overlay: cannot reach node"),
        "{}",
        errors[2]
    );
    assert!(run.stdout.starts_with("Commands"), "{run:?}");
    assert!(run.stdout.contains("setnode N | setnode HOST:PORT"));

    // The shell's own mistakes are one line each, and it goes on to `exit`.
    let run = dht(
        &["shell", "--node", &nowhere],
        "insert\nquery a b c\ninsert \"open\nsetnode x\nwhat\nexit\noverlay\n",
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "");
    let errors = run.stderr_lines();
    assert_eq!(
        errors,
        [
            "error: insert takes 2 arguments, got 0; usage: insert KEY VALUE",
            "error: query takes 1 argument, got 3; usage: query KEY | query * (quote a key or value that has spaces: insert \"Like a Rolling Stone\" \"http://...\")",
            "error: unbalanced quotes: close every ' and \" (e.g. insert \"Don't Stop\" 1979, or insert 'say \"hi\"' 1)",
            "error: setnode: 'x' is neither a node number (0 = bootstrap) nor HOST:PORT; usage: setnode N | setnode HOST:PORT",
            "error: unknown command 'what'; commands: insert, query, delete, overlay, join, depart, setnode, node, help, exit (type help)",
        ]
    );
}

#[test]
fn node_defaults_to_dht_node_then_to_port_5000() {
    let _cache = CacheHome;
    let run = dht(&["query", "--help"], "", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("[env: DHT_NODE"), "{}", run.stdout);
    assert!(
        run.stdout.contains("[default: 127.0.0.1:5000]"),
        "{}",
        run.stdout
    );
    let run = dht(&["shell", "--help"], "", &[]);
    assert!(
        run.stdout.contains("[default: 127.0.0.1:5000]"),
        "{}",
        run.stdout
    );
}
