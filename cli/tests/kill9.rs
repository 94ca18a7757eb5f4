//! Crash-stop on real processes: a ring of separate `dht` node processes under a running
//! chain-replication load; `kill -9` of k − 1 of them, the ring keeps serving, they are
//! restarted on their addresses and rejoin empty. At the end every acknowledged write is
//! readable and the recorded history is linearizable.

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, Proc};

use ringkv_runtime::{encode_segment, HttpClient};
use ringkv_sim::check::{
    check_linearizability, CheckOptions, EventType, History, HistoryEvent, OpKind, Verdict,
};

/// The advertised `host:port` in a "... (advertised as H:P)" line.
fn advertised(line: &str) -> String {
    line.rsplit("advertised as ")
        .next()
        .map(|s| s.trim_end_matches(')').to_string())
        .expect("an advertised address")
}

struct Recorder {
    events: Vec<HistoryEvent>,
    start: Instant,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn push(&mut self, process: u64, kind: EventType, f: OpKind, key: &str, value: Option<&str>) {
        let time = self.now();
        self.events
            .push(HistoryEvent::new(process, kind, f, key, value, time));
    }
}

#[test]
fn kill_9_of_k_minus_1_nodes_loses_no_acknowledged_write() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = HttpClient::new(Duration::from_secs(15));
    let node_port = |p: u16| p.to_string();
    let boot_port = free_port();
    let boot = Proc::start(&[
        "bootstrap",
        "--port",
        &node_port(boot_port),
        "--k",
        "3",
        "--consistency",
        "chain",
    ]);
    let boot_addr = advertised(&boot.wait_line("advertised as"));
    let mut ports = Vec::new();
    let mut nodes: Vec<Proc> = Vec::new();
    for _ in 0..5 {
        let port = free_port();
        let p = Proc::start(&[
            "node",
            "--port",
            &node_port(port),
            "--bootstrap",
            &boot_addr,
            "--join",
        ]);
        p.wait_line("joined the ring");
        ports.push(port);
        nodes.push(p);
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut rec = Recorder {
        events: Vec::new(),
        start: Instant::now(),
    };
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut process = 0u64;
    let mut write = |rec: &mut Recorder, i: usize, via: &str| {
        let (key, value) = (format!("song-{}", i % 40), format!("v{i}"));
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
            // 4xx/5xx answers that certainly did not apply are still recorded as
            // unknown: a timeout (504) may have applied.
            _ => {
                rec.push(process, EventType::Info, OpKind::Write, &key, Some(&value));
                process += 1;
            }
        }
    };
    for i in 0..150 {
        write(&mut rec, i, &addrs[i % addrs.len()]);
    }
    // Crash k - 1 = 2 members without warning; keep writing through the others.
    nodes[1].kill9();
    nodes[3].kill9();
    let live = [&boot_addr, &addrs[0], &addrs[2], &addrs[4]];
    for i in 150..300 {
        write(&mut rec, i, live[i % live.len()]);
        if i % 30 == 0 {
            thread::sleep(Duration::from_millis(300));
        }
    }
    // Restart them on the same addresses: they come back empty and rejoin.
    for i in [1, 3] {
        let p = Proc::start(&[
            "node",
            "--port",
            &node_port(ports[i]),
            "--bootstrap",
            &boot_addr,
            "--join",
        ]);
        p.wait_line("joined the ring");
        nodes[i] = p;
    }
    for i in 300..400 {
        write(&mut rec, i, &addrs[i % addrs.len()]);
    }
    thread::sleep(Duration::from_secs(2));
    // Every acknowledged write is readable (the latest acknowledged value, or a later
    // unacknowledged one), from every node; the reads join the checked history.
    let reader = process + 1;
    for key in acked.keys() {
        for via in addrs.iter().chain([&boot_addr]) {
            let url = format!("http://{via}/query/{}", encode_segment(key));
            rec.push(reader, EventType::Invoke, OpKind::Read, key, None);
            let reply = rt.block_on(client.get(&url)).expect("query answers");
            assert_eq!(reply.status, 200, "{key} via {via}: {}", reply.text());
            let value = reply.value()["value"].as_str().map(String::from);
            rec.push(reader, EventType::Ok, OpKind::Read, key, value.as_deref());
        }
    }
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
    assert!(
        acked.len() >= 30,
        "writes were acknowledged: {}",
        acked.len()
    );
    drop(nodes);
    drop(boot);
}
