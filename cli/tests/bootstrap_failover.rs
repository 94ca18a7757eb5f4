//! The bootstrap is no single point of failure, on separate `dht` processes:
//!
//! - a bootstrap killed with `kill -9` and started again with the same command rejoins
//!   its ring, and the ring keeps every key (the reproduction of the bug where a
//!   restarted bootstrap founded a new, empty ring);
//! - under a concurrent chain load recording a history, the bootstrap is killed,
//!   restarted, then killed for good; a new node joins through a member within the
//!   failure timeout + 2 s, another departs, every acknowledged write is readable from
//!   every node, and the history is linearizable.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, Proc, DHT};

use ringkv_runtime::{encode_segment, HttpClient};
use ringkv_sim::check::{
    check_linearizability, CheckOptions, EventType, History, HistoryEvent, OpKind, Verdict,
};

/// Run a one-shot `dht` client command; its stdout parsed as JSON, or `None` if it
/// failed.
fn dht_json(args: &[&str]) -> Option<serde_json::Value> {
    let cache = std::env::temp_dir().join(format!("ringkv-failover-cache-{}", std::process::id()));
    let out = Command::new(DHT)
        .args(args)
        .env("XDG_CACHE_HOME", &cache)
        .env("RUST_LOG", "warn")
        .output()
        .expect("dht runs");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The overlay as `via` sees it.
fn overlay(via: &str) -> Vec<String> {
    dht_json(&["overlay", "--node", via])
        .and_then(|v| {
            v["overlay"].as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Poll `cond` every 200 ms until it holds or `within` has passed.
fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    cond()
}

/// A ring on separate processes: `dht bootstrap --port P --k 3` and `members`
/// `dht node --bootstrap 127.0.0.1:P --join`, with `keys` keys `key<i>` = `value<i>`
/// inserted through the bootstrap. Returns the bootstrap's port, its process, the
/// members' processes and their addresses.
fn ring_with_keys(members: usize, keys: usize) -> (String, Proc, Vec<Proc>, Vec<String>) {
    let port = free_port().to_string();
    let boot_addr = format!("127.0.0.1:{port}");
    let boot = Proc::start(&["bootstrap", "--port", port.as_str(), "--k", "3"]);
    boot.wait_line("advertised as");
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..members {
        let p = free_port().to_string();
        let node = Proc::start(&["node", "--port", &p, "--bootstrap", &boot_addr, "--join"]);
        node.wait_line("joined the ring");
        addrs.push(format!("127.0.0.1:{p}"));
        nodes.push(node);
    }
    for i in 0..keys {
        let (key, value) = (format!("key{i}"), format!("value{i}"));
        let reply = dht_json(&["insert", &key, &value, "--node", &boot_addr]);
        assert!(reply.is_some(), "insert {key}");
    }
    (port, boot, nodes, addrs)
}

/// The reproduction, step for step: `dht bootstrap --port P --k 3`, four
/// `dht node --bootstrap 127.0.0.1:P --join`, 20 keys inserted, `kill -9` of the
/// bootstrap, the same command again. The ring lists all five nodes and serves all 20
/// keys, from the bootstrap too.
#[test]
fn a_restarted_bootstrap_keeps_every_key() {
    let (port, mut boot, nodes, addrs) = ring_with_keys(4, 20);
    let boot_addr = format!("127.0.0.1:{port}");
    let boot_cmd = ["bootstrap", "--port", port.as_str(), "--k", "3"];
    let all = dht_json(&["query", "*", "--node", &addrs[0]]).expect("query *");
    assert_eq!(all["count"], 20, "{all}");

    boot.kill9();
    let boot = Proc::start(&boot_cmd);
    boot.wait_line("advertised as");
    // It rejoins its ring once the group has removed its killed incarnation (the
    // failure timeout, 3 s by default), holding its share of the keys again.
    let rejoined = wait_until(Duration::from_secs(30), || {
        let ring = overlay(&addrs[0]);
        ring.len() == 5 && ring.contains(&boot_addr)
    });
    assert!(
        rejoined,
        "the bootstrap is back in the ring: {:?}",
        overlay(&addrs[0])
    );
    for via in addrs.iter().chain([&boot_addr]) {
        let all = dht_json(&["query", "*", "--node", via]).expect("query *");
        assert_eq!(all["count"], 20, "every key, through {via}: {all}");
    }
    for i in 0..20 {
        let key = format!("key{i}");
        let found = dht_json(&["query", &key, "--node", &boot_addr]).expect("query");
        assert_eq!(found["value"], format!("value{i}"), "{key}: {found}");
    }
    drop(nodes);
    drop(boot);
}

/// The gap a memory-only bootstrap had: restarted while it hears none of its members (here
/// they are all paused with SIGSTOP, as a partition or a frozen host would), it founded
/// a new, empty ring after three heartbeats. Restarted with `--rejoin`, it founds
/// nothing and refuses requests (409 `not_joined`) however long the silence lasts,
/// then rejoins its ring once its members are heard again, which serves every key
/// through it.
#[test]
fn a_bootstrap_restarted_with_rejoin_waits_for_its_ring_while_cut_off() {
    let (port, mut boot, nodes, addrs) = ring_with_keys(3, 10);
    let boot_addr = format!("127.0.0.1:{port}");
    let boot_cmd = ["bootstrap", "--port", port.as_str(), "--k", "3"];

    // The members stop all at once (none removes another), then the bootstrap dies and
    // comes back while it can hear none of them.
    for node in &nodes {
        node.signal("STOP");
    }
    boot.kill9();
    let mut rejoin_cmd = boot_cmd.to_vec();
    rejoin_cmd.push("--rejoin");
    let boot = Proc::start(&rejoin_cmd);
    boot.wait_line("it founds no new ring");
    // Well past the three heartbeats after which it used to found a ring.
    thread::sleep(Duration::from_secs(3));
    let client = HttpClient::new(Duration::from_secs(5));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("http://{boot_addr}/query/key0");
    let reply = rt
        .block_on(client.get(&url))
        .expect("the bootstrap answers");
    // Not in a ring: refused as any node outside the ring is, so clients go elsewhere.
    assert_eq!(reply.status, 409, "no ring yet: {:?}", reply.value());
    assert_eq!(reply.value()["code"], "not_joined");
    assert!(
        dht_json(&["query", "key0", "--node", &boot_addr]).is_none(),
        "a query through the waiting bootstrap is refused"
    );

    for node in &nodes {
        node.signal("CONT");
    }
    let rejoined = wait_until(Duration::from_secs(30), || {
        let ring = overlay(&addrs[0]);
        ring.len() == 4 && ring.contains(&boot_addr)
    });
    assert!(rejoined, "back in its ring: {:?}", overlay(&addrs[0]));
    let all = wait_until(Duration::from_secs(10), || {
        dht_json(&["query", "*", "--node", &boot_addr]).is_some_and(|v| v["count"] == 10)
    });
    assert!(all, "every key through the bootstrap");
    for i in 0..10 {
        let key = format!("key{i}");
        let found = dht_json(&["query", &key, "--node", &boot_addr]).expect("query");
        assert_eq!(found["value"], format!("value{i}"), "{key}: {found}");
    }
    drop(nodes);
    drop(boot);
}

/// A shared record of the clients' operations.
#[derive(Clone)]
struct Recorder {
    events: Arc<Mutex<Vec<HistoryEvent>>>,
    start: Instant,
}

impl Recorder {
    fn push(&self, process: u64, kind: EventType, f: OpKind, key: &str, value: Option<&str>) {
        // The time is read under the lock, so the history stays in time order.
        let mut events = self.events.lock().expect("history lock");
        let time = self.start.elapsed().as_nanos() as u64;
        events.push(HistoryEvent::new(process, kind, f, key, value, time));
    }
}

/// One closed-loop client: writes and reads a few keys through the members in turn,
/// until told to stop; returns the values it saw acknowledged, in order, per key.
fn client_loop(
    c: u64,
    members: Vec<String>,
    rec: Recorder,
    stop: Arc<AtomicBool>,
) -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = HttpClient::new(Duration::from_secs(10));
    let mut process = c * 1_000_000;
    let mut acked = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let via = &members[(i as usize + c as usize) % members.len()];
        let key = format!("k{}", i % 6);
        if i % 3 == 2 {
            let url = format!("http://{via}/query/{}", encode_segment(&key));
            rec.push(process, EventType::Invoke, OpKind::Read, &key, None);
            match rt.block_on(client.get(&url)) {
                Ok(r) if r.status == 200 => {
                    let value = r.value()["value"].as_str().map(String::from);
                    rec.push(process, EventType::Ok, OpKind::Read, &key, value.as_deref());
                }
                Ok(r) if r.status == 404 => {
                    rec.push(process, EventType::Ok, OpKind::Read, &key, None);
                }
                _ => {
                    rec.push(process, EventType::Fail, OpKind::Read, &key, None);
                }
            }
        } else {
            let value = format!("c{c}-{i}");
            let url = format!(
                "http://{via}/insert/{}/{}",
                encode_segment(&key),
                encode_segment(&value)
            );
            rec.push(
                process,
                EventType::Invoke,
                OpKind::Write,
                &key,
                Some(&value),
            );
            match rt.block_on(client.post(&url, None)) {
                Ok(r) if r.status == 200 => {
                    rec.push(process, EventType::Ok, OpKind::Write, &key, Some(&value));
                    acked.push((key, value));
                }
                // Anything else may or may not have applied: unknown, and the process
                // is not used again.
                _ => {
                    rec.push(process, EventType::Info, OpKind::Write, &key, Some(&value));
                    process += 1;
                }
            }
        }
        i += 1;
        thread::sleep(Duration::from_millis(5));
    }
    acked
}

#[test]
fn the_ring_outlives_its_bootstrap() {
    const FAILURE_TIMEOUT_MS: u64 = 1_000;
    let timeout = FAILURE_TIMEOUT_MS.to_string();
    let port = free_port().to_string();
    let boot_addr = format!("127.0.0.1:{port}");
    let boot_cmd = [
        "bootstrap",
        "--port",
        port.as_str(),
        "--k",
        "3",
        "--consistency",
        "chain",
        "--failure-timeout-ms",
        timeout.as_str(),
    ];
    let mut boot = Proc::start(&boot_cmd);
    boot.wait_line("advertised as");
    let start_node = |port: &str, via: &str| {
        Proc::start(&[
            "node",
            "--port",
            port,
            "--bootstrap",
            via,
            "--join",
            "--failure-timeout-ms",
            &timeout,
        ])
    };
    let mut nodes = Vec::new();
    let mut members = Vec::new();
    for _ in 0..4 {
        let p = free_port().to_string();
        let node = start_node(&p, &boot_addr);
        node.wait_line("joined the ring");
        members.push(format!("127.0.0.1:{p}"));
        nodes.push(node);
    }

    // The load: three clients, through the members only (the bootstrap comes and goes).
    let rec = Recorder {
        events: Arc::new(Mutex::new(Vec::new())),
        start: Instant::now(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3u64)
        .map(|c| {
            let (m, r, s) = (members.clone(), rec.clone(), stop.clone());
            thread::spawn(move || client_loop(c, m, r, s))
        })
        .collect();
    thread::sleep(Duration::from_secs(1));

    // Kill the bootstrap and start it again: it rejoins.
    boot.kill9();
    thread::sleep(Duration::from_millis(500));
    let mut boot = Proc::start(&boot_cmd);
    boot.wait_line("advertised as");
    let back = wait_until(Duration::from_secs(30), || {
        overlay(&members[0]).contains(&boot_addr)
    });
    assert!(
        back,
        "the restarted bootstrap rejoined: {:?}",
        overlay(&members[0])
    );
    thread::sleep(Duration::from_secs(1));

    // Kill it for good; a new node joins through a member, within the failure timeout
    // + 2 s of the kill.
    boot.kill9();
    let killed = Instant::now();
    let p = free_port().to_string();
    let newcomer = start_node(&p, &members[1]);
    newcomer.wait_line("joined the ring");
    let join_took = killed.elapsed();
    assert!(
        join_took <= Duration::from_millis(FAILURE_TIMEOUT_MS + 2_000),
        "the join through a member took {join_took:?}"
    );
    let newcomer_addr = format!("127.0.0.1:{p}");
    nodes.push(newcomer);
    // ... and another member departs.
    let departed = members.remove(3);
    let reply = dht_json(&["depart", "--node", &departed]).expect("depart answers");
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("departed")),
        "{reply}"
    );
    members.push(newcomer_addr);
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let mut latest: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for client in clients {
        for (key, value) in client.join().expect("client thread") {
            latest.entry(key).or_default().push(value);
        }
    }
    let ring = overlay(&members[0]);
    assert_eq!(ring.len(), 4, "three members and the newcomer: {ring:?}");
    assert!(
        !ring.contains(&boot_addr) && !ring.contains(&departed),
        "{ring:?}"
    );

    // Every acknowledged write is readable from every node: the checker judges these
    // reads with the rest of the history (a read must see the last write or a later one).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = HttpClient::new(Duration::from_secs(10));
    let reader = 9_000_000_000;
    for key in latest.keys() {
        for via in &members {
            let url = format!("http://{via}/query/{}", encode_segment(key));
            rec.push(reader, EventType::Invoke, OpKind::Read, key, None);
            let reply = rt
                .block_on(client.get(&url))
                .expect("the query is answered");
            assert_eq!(reply.status, 200, "{key} via {via}: {}", reply.text());
            let value = reply.value()["value"].as_str().map(String::from);
            rec.push(reader, EventType::Ok, OpKind::Read, key, value.as_deref());
        }
    }
    let events = std::mem::take(&mut *rec.events.lock().expect("history lock"));
    let history = History::from_events(events).expect("a well-formed history");
    let report = check_linearizability(&history, &CheckOptions::default());
    assert_eq!(
        report.verdict,
        Verdict::Linearizable,
        "{:?}",
        report
            .counterexamples()
            .map(|c| c.explanation.clone())
            .collect::<Vec<_>>()
    );
    let acked: usize = latest.values().map(Vec::len).sum();
    assert!(acked >= 50, "writes were acknowledged: {acked}");
    drop(nodes);
    drop(boot);
}
