//! The client commands keep working when the node they were pointed at is down: real
//! `dht bootstrap` and `dht node` processes on loopback (free ports, stopped by PID), the
//! entry node stopped, and the commands answered through another member.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Proc, DHT};
use ringkv_core::Id;
use serde_json::Value;

/// The address after `after` in `line` ("... listening on H:P (...)").
fn addr_in(line: &str, after: &str) -> String {
    let rest = &line[line.find(after).expect("marker") + after.len()..];
    rest.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A cache directory of this test's own (XDG_CACHE_HOME), empty.
fn cache_home(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringkv-fallback-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `dht ARGS` with its cache in `cache`; the output, whatever the exit code.
fn dht(cache: &PathBuf, args: &[&str]) -> Output {
    Command::new(DHT)
        .args(args)
        .env_remove("DHT_NODE")
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null())
        .output()
        .expect("dht runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// A bootstrap and two nodes, k = 2, chain; returns them and their addresses.
fn ring() -> (Vec<Proc>, Vec<String>) {
    let boot = Proc::start(&["bootstrap", "--port", "0", "--k", "2"]);
    let boot_addr = addr_in(&boot.wait_line("listening on "), "advertised as ");
    let boot_addr = boot_addr.trim_end_matches(')').to_string();
    let mut procs = vec![boot];
    let mut addrs = vec![boot_addr.clone()];
    for _ in 0..2 {
        let node = Proc::start(&["node", "--port", "0", "--bootstrap", &boot_addr, "--join"]);
        let addr = addr_in(&node.wait_line("listening on "), "advertised as ");
        node.wait_line("joined the ring");
        addrs.push(addr.trim_end_matches(')').to_string());
        procs.push(node);
    }
    (procs, addrs)
}

#[test]
fn one_shot_commands_fall_back_to_remembered_members() {
    let cache = cache_home("one-shot");
    let (mut procs, addrs) = ring();
    let entry = addrs[2].clone();

    // Learn the ring through the entry node; it is remembered in the cache file.
    let out = dht(&cache, &["insert", "Hey Jude", "1968", "--node", &entry]);
    assert!(out.status.success(), "{out:?}");
    let file = cache.join("ringkv").join("members.json");
    let remembered: Value = serde_json::from_slice(&std::fs::read(&file).expect("cache written"))
        .expect("cache is JSON");
    assert_eq!(
        remembered["rings"][0]["members"].as_array().map(Vec::len),
        Some(3)
    );

    // The entry node leaves and exits.
    let stopped = procs.remove(2);
    assert!(stopped.terminate().success());

    // Token routing: straight to the key's head, which is alive (or, if the head was the
    // entry node, through another member, said on stderr).
    let out = dht(&cache, &["query", "Hey Jude", "--node", &entry]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&out)["value"], "1968");

    // Random routing aims at the entry node itself, which does not answer.
    let out = dht(
        &cache,
        &["query", "Hey Jude", "--node", &entry, "--routing", "random"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&out)["value"], "1968");
    let note = text(&out.stderr);
    assert!(
        note.starts_with(&format!("note: no answer from {entry} (")) && note.contains("answered"),
        "{note}"
    );
    let answered_by = addr_in(&note, "; node ");
    assert!(addrs[..2].contains(&answered_by), "{note}");

    // Writes are sent again only when they certainly did not arrive (refused): here.
    let out = dht(
        &cache,
        &[
            "insert",
            "Let It Be",
            "1970",
            "--node",
            &entry,
            "--routing",
            "random",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = dht(&cache, &["overlay", "--node", &entry]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&out)["overlay"].as_array().map(Vec::len), Some(2));
    assert!(
        text(&out.stderr).starts_with("note: no answer from"),
        "{out:?}"
    );

    // Without the cache, a list of nodes still gets through; a lone dead node does not.
    let both = format!("{entry},{}", addrs[0]);
    let out = dht(
        &cache,
        &["query", "Let It Be", "--node", &both, "--no-cache"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&out)["value"], "1970");
    let out = dht(
        &cache,
        &["query", "Let It Be", "--node", &entry, "--no-cache"],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        text(&out.stderr).starts_with(&format!("error: cannot reach node {entry}: ")),
        "{out:?}"
    );

    // A corrupt cache is ignored, and replaced by a good one.
    std::fs::write(&file, "{ not json").expect("overwrite");
    let out = dht(&cache, &["query", "Hey Jude", "--node", &addrs[1]]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let back: Value = serde_json::from_slice(&std::fs::read(&file).expect("cache")).expect("JSON");
    assert_eq!(
        back["rings"][0]["members"].as_array().map(Vec::len),
        Some(2)
    );

    // join and depart act on one node only.
    let out = dht(&cache, &["depart", "--node", &both]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    for proc in procs.into_iter().rev() {
        assert!(proc.terminate().success());
    }
    let _ = std::fs::remove_dir_all(&cache);
}

/// A remembered member that departed (its process still runs, refusing every request with
/// 409 `not_joined`) is passed over: token routing aimed at it goes on to the node given.
#[test]
fn a_remembered_member_that_departed_is_passed_over() {
    let cache = cache_home("departed");
    let (procs, addrs) = ring();
    let (entry, leaver) = (addrs[1].clone(), addrs[2].clone());
    // Keys whose tail is the leaver (token routing sends a chain query to the tail): by
    // the ring's arithmetic, as the ids of the nodes' random ports fall.
    let mut ring: Vec<(Id, &String)> = addrs.iter().map(|a| (Id::of_addr(a), a)).collect();
    ring.sort();
    let tail_of = |key: &str| {
        let id = Id::of_key(key);
        let head = ring.iter().position(|(n, _)| *n >= id).unwrap_or(0);
        ring[(head + 1) % ring.len()].1.clone()
    };
    let keys: Vec<String> = (0..)
        .map(|i| format!("song {i}"))
        .filter(|key| tail_of(key) == leaver)
        .take(5)
        .collect();
    for key in &keys {
        let out = dht(&cache, &["insert", key, "1", "--node", &entry]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = dht(&cache, &["depart", "--node", &leaver, "--no-cache"]);
    assert!(out.status.success(), "{out:?}");

    // The remembered ring still names the leaver as these keys' tail: the first query
    // aimed at it goes on to the node given, says so on stderr, and learns the ring again.
    let out = dht(&cache, &["query", &keys[0], "--node", &entry]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&out)["value"], "1");
    assert!(
        text(&out.stderr).contains(&format!(
            "no answer from {leaver} (it is not in the ring any more)"
        )),
        "{out:?}"
    );
    for key in &keys {
        let out = dht(&cache, &["insert", key, "2", "--node", &entry]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let out = dht(&cache, &["query", key, "--node", &entry]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(json(&out)["value"], "2", "{key}");
    }

    // Asked directly, the departed node still refuses: the 409 is its answer.
    let out = dht(
        &cache,
        &["query", &keys[0], "--node", &leaver, "--routing", "random"],
    );
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stderr).contains("not in the ring"), "{out:?}");

    for proc in procs.into_iter().rev() {
        assert!(proc.terminate().success());
    }
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_shell_falls_back_to_the_members_it_learned() {
    let cache = cache_home("shell");
    let (mut procs, addrs) = ring();
    let entry = addrs[1].clone();
    let mut shell = Command::new(DHT)
        .args(["shell", "--no-cache", "--node", &entry])
        .env_remove("DHT_NODE")
        .env("XDG_CACHE_HOME", &cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shell starts");
    let mut stdin = shell.stdin.take().expect("stdin");
    let lines = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    };
    let stdout = lines(Box::new(shell.stdout.take().expect("stdout")));
    let stderr = lines(Box::new(shell.stderr.take().expect("stderr")));
    let wait = Duration::from_secs(30);

    writeln!(stdin, "insert \"Yesterday\" 1965").expect("write");
    let answer: Value =
        serde_json::from_str(&stdout.recv_timeout(wait).expect("answer")).expect("JSON answer");
    assert_eq!(answer["value"], "1965");

    // The shell's node departs and exits; the shell learned the members when it started.
    let stopped = procs.remove(1);
    assert!(stopped.terminate().success());
    writeln!(stdin, "query Yesterday").expect("write");
    let answer: Value =
        serde_json::from_str(&stdout.recv_timeout(wait).expect("answer")).expect("JSON answer");
    assert_eq!(answer["value"], "1965");
    let note = stderr.recv_timeout(wait).expect("a note");
    assert!(
        note.starts_with(&format!("note: no answer from {entry} (")),
        "{note}"
    );
    writeln!(stdin, "node").expect("write");
    let node: Value =
        serde_json::from_str(&stdout.recv_timeout(wait).expect("node")).expect("JSON");
    assert_eq!(
        node["node"],
        entry.as_str(),
        "the shell's node stays the one chosen"
    );
    writeln!(stdin, "exit").expect("write");
    drop(stdin);
    let status = shell.wait().expect("shell exits");
    assert!(status.success());

    for proc in procs.into_iter().rev() {
        assert!(proc.terminate().success());
    }
    let _ = std::fs::remove_dir_all(&cache);
}
