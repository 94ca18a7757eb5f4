//! When a node cannot take more data: a full disk (here a file-size limit set on the
//! running node with `prlimit`, which fails the store's growth with EFBIG as a full disk
//! fails it with ENOSPC) and the configured store limit (`--max-store-bytes`). Writes are
//! refused with a JSON error, reads go on being served, and nothing is acknowledged that
//! was not persisted: after `kill -9` and a restart without the limit every acknowledged
//! write is back.
//!
//! The limit is set once the node runs rather than with `ulimit -f` before it starts:
//! the store's journal is created at its full size (64 MiB, a sparse file that takes
//! disk blocks only as it is written), which a file-size limit refuses outright while a
//! full disk does not.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, Proc, DHT};

use ringkv_runtime::HttpClient;

/// A one-node ring (k = 1) on `port` with its data in `dir`.
fn bootstrap(port: u16, dir: &Path, extra: &[&str]) -> Proc {
    let dir = dir.to_str().expect("a UTF-8 temp path");
    let mut args = vec![
        "bootstrap".to_string(),
        "--port".into(),
        port.to_string(),
        "--k".into(),
        "1".into(),
        "--data-dir".into(),
        dir.into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut command = Command::new(DHT);
    command
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    Proc::spawn(command)
}

/// Limit the size of the files `proc` writes to `bytes` from now on (`prlimit`,
/// util-linux): writes past it fail with EFBIG (the node ignores SIGXFSZ).
fn limit_file_size(proc: &Proc, bytes: u64) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(proc.child.id().to_string())
        .arg(format!("--fsize={bytes}"))
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit failed: {status}");
}

/// Insert `key` through `node`; the status and the JSON body.
fn insert(
    rt: &tokio::runtime::Runtime,
    client: &HttpClient,
    node: &str,
    key: &str,
    value: &str,
) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "key": key, "value": value }).to_string();
    match rt.block_on(client.post(&format!("http://{node}/insert"), Some(body.into()))) {
        Ok(r) => (r.status, r.value()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

fn query(
    rt: &tokio::runtime::Runtime,
    client: &HttpClient,
    node: &str,
    key: &str,
) -> (u16, serde_json::Value) {
    match rt.block_on(client.get(&format!("http://{node}/query/{key}"))) {
        Ok(r) => (r.status, r.value()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// The first acknowledged insert once the bootstrap has founded its ring (it refuses
/// writes, 409, while it looks for a ring it belonged to).
fn wait_until_serving(rt: &tokio::runtime::Runtime, client: &HttpClient, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if insert(rt, client, node, "probe", "1").0 == 200 {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("{node} did not take writes within 30 s");
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_acknowledges_only_what_is_on_disk() {
    let dir = common::out_dir("disk-full");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = HttpClient::new(Duration::from_secs(15));
    let port = free_port();
    let node = format!("127.0.0.1:{port}");
    let mut full = bootstrap(port, &dir, &[]);
    full.wait_line("advertised as");
    wait_until_serving(&rt, &client, &node);
    limit_file_size(&full, 2 << 20);

    let value = "v".repeat(600);
    let mut acked = vec!["probe".to_string()];
    let mut refusals = 0;
    let mut refusal = serde_json::Value::Null;
    for i in 0..10_000 {
        let key = format!("song-{i}");
        let (status, body) = insert(&rt, &client, &node, &key, &value);
        match status {
            200 => acked.push(key),
            503 => {
                refusals += 1;
                refusal = body;
                if refusals == 20 {
                    break;
                }
            }
            other => panic!("{key}: unexpected status {other}: {body}"),
        }
    }
    assert!(
        acked.len() > 100,
        "writes before the disk filled: {}",
        acked.len()
    );
    assert_eq!(refusals, 20, "the disk never filled");
    assert_eq!(refusal["code"], "storage_failed", "{refusal}");
    assert!(
        refusal["error"]
            .as_str()
            .is_some_and(|e| e.contains("ringkv.fjall")),
        "the error names the file: {refusal}"
    );
    // Reads are still served while writes fail.
    for key in acked.iter().step_by(acked.len() / 10) {
        let (status, body) = query(&rt, &client, &node, key);
        assert_eq!(status, 200, "{key} while the disk is full: {body}");
    }
    assert_eq!(
        insert(&rt, &client, &node, "one-more", "x").0,
        503,
        "still full"
    );

    // Power cut, then the node comes back with room: everything it acknowledged is there.
    full.kill9();
    let back = bootstrap(port, &dir, &[]);
    back.wait_line("advertised as");
    wait_until_serving(&rt, &client, &node);
    for key in &acked {
        let (status, body) = query(&rt, &client, &node, key);
        assert_eq!(status, 200, "{key} after the restart: {body}");
        if key != "probe" {
            assert_eq!(body["value"], value.as_str(), "{key}");
        }
    }
    assert_eq!(insert(&rt, &client, &node, "after", "x").0, 200);
    drop(back);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_store_limit_refuses_writes_with_507_and_keeps_serving() {
    let dir = common::out_dir("store-limit");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = HttpClient::new(Duration::from_secs(15));
    let port = free_port();
    let node = format!("127.0.0.1:{port}");
    let p = bootstrap(port, &dir, &["--max-store-bytes", "20000"]);
    p.wait_line("advertised as");
    wait_until_serving(&rt, &client, &node);
    let value = "v".repeat(500);
    let mut acked = Vec::new();
    let mut refused = serde_json::Value::Null;
    for i in 0..200 {
        let key = format!("song-{i}");
        match insert(&rt, &client, &node, &key, &value) {
            (200, _) => acked.push(key),
            (507, body) => {
                refused = body;
                break;
            }
            (other, body) => panic!("{key}: unexpected status {other}: {body}"),
        }
    }
    assert_eq!(refused["code"], "store_full", "{refused}");
    // About 20,000 bytes' worth were taken, no more.
    assert!(
        (20..=40).contains(&acked.len()),
        "acknowledged {}",
        acked.len()
    );
    for key in &acked {
        assert_eq!(query(&rt, &client, &node, key).0, 200, "{key}");
    }
    // A delete makes room again.
    let deleted = rt.block_on(client.delete(&format!("http://{node}/delete/{}", acked[0])));
    assert!(deleted.is_ok_and(|r| r.status == 200));
    assert_eq!(insert(&rt, &client, &node, "after-delete", "x").0, 200);
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
