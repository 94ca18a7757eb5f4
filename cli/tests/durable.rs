//! Durability on real processes: a 5-node ring with data directories takes a few
//! thousand acknowledged inserts, then every process is killed with `kill -9` at once
//! and all are restarted from their directories. Every acknowledged write is then
//! readable from every node; under chain replication the history, final reads included,
//! is linearizable. And a 10-node ring whose bootstrap holds no coordinator seat, restarted
//! with the only holders of some keys last, answers nothing wrong while they are out.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, Proc};

use ringkv_runtime::{encode_segment, HttpClient};
use ringkv_sim::check::{
    check_linearizability, CheckOptions, EventType, History, HistoryEvent, OpKind, Verdict,
};

const NODES: usize = 5;
const INSERTS: usize = 2_000;
const KEYS: usize = 400;

/// Node 0 is the bootstrap; the others join through it.
fn start(i: usize, ports: &[u16], model: &str, dir: &Path) -> Proc {
    let port = ports[i].to_string();
    let data = dir.join(format!("node-{i}"));
    let data = data.to_str().expect("a UTF-8 temp path");
    let boot = format!("127.0.0.1:{}", ports[0]);
    let args: Vec<&str> = match i {
        0 => vec![
            "bootstrap",
            "--port",
            &port,
            "--k",
            "3",
            "--consistency",
            model,
            "--data-dir",
            data,
        ],
        _ => vec![
            "node",
            "--port",
            &port,
            "--bootstrap",
            &boot,
            "--join",
            "--data-dir",
            data,
        ],
    };
    Proc::start(&args)
}

struct Recorder {
    events: Vec<HistoryEvent>,
    start: Instant,
}

impl Recorder {
    fn push(&mut self, process: u64, kind: EventType, f: OpKind, key: &str, value: Option<&str>) {
        let time = self.start.elapsed().as_nanos() as u64;
        self.events
            .push(HistoryEvent::new(process, kind, f, key, value, time));
    }
}

fn whole_ring_restart(model: &str, bootstrap_last: bool) {
    let dir = common::out_dir(&format!("durable-{model}"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = HttpClient::new(Duration::from_secs(15));
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut procs: Vec<Proc> = Vec::new();
    for i in 0..NODES {
        let p = start(i, &ports, model, &dir);
        p.wait_line(if i == 0 {
            "advertised as"
        } else {
            "joined the ring"
        });
        procs.push(p);
    }
    let mut rec = Recorder {
        events: Vec::new(),
        start: Instant::now(),
    };
    // The latest acknowledged value of each key (writes to one key are sequential).
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut process = 0u64;
    for i in 0..INSERTS {
        let (key, value) = (format!("song-{}", i % KEYS), format!("v{i}"));
        let via = &addrs[i % NODES];
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
                acked.insert(key, value);
            }
            _ => {
                rec.push(process, EventType::Info, OpKind::Write, &key, Some(&value));
                process += 1;
            }
        }
    }
    assert!(
        acked.len() * 10 >= KEYS * 9,
        "most keys acknowledged: {}",
        acked.len()
    );
    // A power cut: every process at once, no depart, nothing flushed on the way out.
    for p in &mut procs {
        p.kill9();
    }
    let order: Vec<usize> = match bootstrap_last {
        true => (1..NODES).chain([0]).collect(),
        false => (0..NODES).collect(),
    };
    let mut restarted: Vec<Option<Proc>> = (0..NODES).map(|_| None).collect();
    for &i in &order {
        restarted[i] = Some(start(i, &ports, model, &dir));
    }
    for (i, p) in restarted.iter().enumerate().skip(1) {
        if let Some(p) = p {
            p.wait_line("joined the ring");
        } else {
            panic!("node {i} restarted");
        }
    }
    // Every acknowledged write, from every node: reads may be refused (503) while the
    // ring finishes coming back; they are retried, within a bound.
    let reader = process + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    for (key, value) in &acked {
        for via in &addrs {
            let url = format!("http://{via}/query/{}", encode_segment(key));
            loop {
                assert!(
                    Instant::now() < deadline,
                    "{key} via {via}: no answer in time"
                );
                let invoke = rec.start.elapsed().as_nanos() as u64;
                let reply = rt.block_on(client.get(&url));
                let found = match &reply {
                    Ok(r) if r.status == 200 => r.value()["value"].as_str().map(String::from),
                    Ok(r) if r.status == 404 => None,
                    _ => {
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                if model == "eventual" && found.as_deref() != Some(value.as_str()) {
                    // Replicas converge: wait for it.
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
                rec.events.push(HistoryEvent::new(
                    reader,
                    EventType::Invoke,
                    OpKind::Read,
                    key,
                    None,
                    invoke,
                ));
                rec.push(reader, EventType::Ok, OpKind::Read, key, found.as_deref());
                assert_eq!(
                    found.as_deref(),
                    Some(value.as_str()),
                    "{key} via {via} after the restart"
                );
                break;
            }
        }
    }
    if model == "chain" {
        let history = History::from_events(rec.events).expect("a well-formed history");
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
    }
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chain_ring_killed_whole_comes_back_with_every_acknowledged_write() {
    whole_ring_restart("chain", false);
}

#[test]
fn eventual_ring_killed_whole_comes_back_in_any_order() {
    whole_ring_restart("eventual", true);
}

/// Whether node `addr` reports itself an active member of a ring of `size`.
fn active_in_ring_of(
    rt: &tokio::runtime::Runtime,
    client: &HttpClient,
    addr: &str,
    size: u64,
) -> bool {
    match rt.block_on(client.get(&format!("http://{addr}/node"))) {
        Ok(r) if r.status == 200 => {
            let v = r.value();
            v["phase"] == "active" && v["ring_size"].as_u64() == Some(size)
        }
        _ => false,
    }
}

/// A 10-node chain ring, k = 3, whose bootstrap was restarted once (it rejoins as a plain
/// member, its coordinator seat gone to another node, so its record names only its
/// neighbours), takes 300 inserts; then every process is killed. All restart but the
/// three that follow one another on the far side of the ring from the bootstrap (the only
/// holders of the keys between them), which restart 5 s later. Meanwhile no read may
/// return anything but the acknowledged value (the ring refuses them: 503); once they are
/// back, every acknowledged write is read back. Before the seats' records travelled with
/// the join requests, the bootstrap awaited only the members that asked before it founded
/// the ring again, and the far keys were answered empty.
#[test]
fn a_ring_restarted_with_its_far_holders_last_answers_nothing_wrong_meanwhile() {
    const N: usize = 10;
    let dir = common::out_dir("durable-far");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = HttpClient::new(Duration::from_secs(5));
    let ports: Vec<u16> = (0..N).map(|_| free_port()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut procs: Vec<Proc> = Vec::new();
    for i in 0..N {
        let p = start(i, &ports, "chain", &dir);
        p.wait_line(if i == 0 {
            "advertised as"
        } else {
            "joined the ring"
        });
        procs.push(p);
    }
    procs[0].kill9();
    procs[0] = start(0, &ports, "chain", &dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !active_in_ring_of(&rt, &client, &addrs[0], N as u64) {
        assert!(Instant::now() < deadline, "the bootstrap rejoined its ring");
        thread::sleep(Duration::from_millis(100));
    }
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..300 {
        let (key, value) = (format!("far-{i}"), format!("v{i}"));
        let url = format!("http://{}/insert/{key}/{value}", addrs[i % N]);
        if let Ok(r) = rt.block_on(client.post(&url, None)) {
            if r.status == 200 {
                acked.insert(key, value);
            }
        }
    }
    assert!(
        acked.len() >= 270,
        "most inserts acknowledged: {}",
        acked.len()
    );
    for p in &mut procs {
        p.kill9();
    }
    // Ring order by id; the three members from the fourth after the bootstrap on.
    let mut order: Vec<usize> = (0..N).collect();
    order.sort_by_key(|&i| ringkv_core::Id::of_addr(&addrs[i]));
    let at = order.iter().position(|&i| i == 0).expect("the bootstrap");
    let late: Vec<usize> = (4..7).map(|d| order[(at + d) % N]).collect();
    let early: Vec<usize> = (0..N).filter(|i| !late.contains(i)).collect();
    let mut restarted: Vec<Proc> = early
        .iter()
        .map(|&i| start(i, &ports, "chain", &dir))
        .collect();
    let meanwhile = Instant::now() + Duration::from_secs(5);
    let mut answered = 0;
    while Instant::now() < meanwhile {
        for (n, (key, value)) in acked.iter().enumerate().step_by(7) {
            let via = &addrs[early[n % early.len()]];
            let url = format!("http://{via}/query/{key}");
            match rt.block_on(client.get(&url)) {
                Ok(r) if r.status == 200 || r.status == 404 => {
                    let found = r.value()["value"].as_str().map(String::from);
                    assert_eq!(
                        found.as_deref(),
                        Some(value.as_str()),
                        "{key} via {via}, holders {late:?} out"
                    );
                    answered += 1;
                }
                _ => {}
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    restarted.extend(late.iter().map(|&i| start(i, &ports, "chain", &dir)));
    let deadline = Instant::now() + Duration::from_secs(60);
    for (n, (key, value)) in acked.iter().enumerate() {
        let via = &addrs[n % N];
        let url = format!("http://{via}/query/{key}");
        loop {
            assert!(
                Instant::now() < deadline,
                "{key} via {via}: no answer in time"
            );
            match rt.block_on(client.get(&url)) {
                Ok(r) if r.status == 200 || r.status == 404 => {
                    let found = r.value()["value"].as_str().map(String::from);
                    assert_eq!(found.as_deref(), Some(value.as_str()), "{key} via {via}");
                    break;
                }
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    eprintln!("reads answered while the far holders were out: {answered} (the rest refused)");
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
