//! Joins and departs while writes are in flight: nothing acknowledged is lost, and once
//! the network drains every key is on exactly its replicas again.

mod common;

use std::collections::BTreeMap;

use common::{addr, cluster, Pump};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::{Consistency, Node, NodeConfig, Request, Response, Routing};

fn churn_under_load(consistency: Consistency, k: usize, seed: u64) {
    let mut pump = Pump::ring(cluster(k, consistency, Routing::Finger), 8).with_reordering(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    pump.record = std::env::var("CHURN_TRACE").is_ok();
    let mut writes = Vec::new();
    for i in 0..400 {
        let members = pump.members();
        let via = members[rng.gen_range(0..members.len())].clone();
        let (key, value) = (format!("key-{i}"), format!("value-{i}"));
        let id = pump.submit(
            &via,
            Request::Insert {
                key: key.clone(),
                value: value.clone(),
            },
        );
        writes.push((via, id, key, value));
        if i % 40 == 20 {
            // A join and a depart enter the bootstrap's queue mid-stream.
            let newcomer = addr(100 + i);
            pump.nodes.insert(
                newcomer.clone(),
                Node::new(NodeConfig::member(&newcomer, addr(0), i as u64)),
            );
            pump.submit(&newcomer, Request::Join);
            let leaving = members[1 + rng.gen_range(0..members.len() - 1)].clone();
            pump.submit(&leaving, Request::Depart);
        }
        for _ in 0..rng.gen_range(0..6) {
            pump.step();
        }
    }
    pump.drive();
    let mut acked = BTreeMap::new();
    for (via, id, key, value) in writes {
        match pump.take_reply(&via, id) {
            Some(Ok(Response::Inserted { .. })) => {
                acked.insert(key, value);
            }
            // A write caught by a membership change fails cleanly or is never
            // acknowledged (a real client times out): it may be absent.
            Some(Err(_)) | None => {}
            Some(other) => panic!("write {key} via {via}: {other:?}"),
        }
    }
    assert!(acked.len() > 200, "most writes succeed: {}", acked.len());
    pump.check_ring().unwrap();
    let held = pump.check_placement().unwrap_or_else(|e| {
        if let Ok(pat) = std::env::var("CHURN_TRACE") {
            for line in pump.log.iter().filter(|l| {
                l.contains(&pat)
                    || l.contains("Prepare")
                    || l.contains("Commit")
                    || l.contains("Fetch")
            }) {
                eprintln!("{}", &line[..line.len().min(400)]);
            }
        }
        panic!("{consistency} k={k} seed={seed}: {e}")
    });
    let _ = held;
    let reader = pump.members()[0].clone();
    for (key, value) in &acked {
        match pump.call(&reader, Request::Query { key: key.clone() }) {
            Ok(Response::Found { value: got, .. }) => assert_eq!(&got, value),
            other => {
                if std::env::var("CHURN_TRACE").is_ok() {
                    let pat = format!("\"{key}\"");
                    for line in pump.log.iter().filter(|l| {
                        l.contains(&pat)
                            || l.contains("Prepare")
                            || l.contains("Commit")
                            || l.contains("Fetch")
                    }) {
                        eprintln!("{}", &line[..line.len().min(300)]);
                    }
                }
                panic!("{consistency} k={k} seed={seed}: acknowledged {key} lost: {other:?}")
            }
        }
    }
}

/// Seeds per test; `CHURN_SEEDS=500` for a longer local campaign.
fn seeds() -> u64 {
    std::env::var("CHURN_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

#[test]
fn chain_writes_survive_concurrent_membership_changes() {
    for seed in 0..seeds() {
        for k in [1, 2, 3] {
            churn_under_load(Consistency::Chain, k, seed);
        }
    }
}

#[test]
fn eventual_writes_survive_concurrent_membership_changes() {
    for seed in 0..seeds() {
        for k in [1, 2, 3] {
            churn_under_load(Consistency::Eventual, k, seed);
        }
    }
}

#[test]
fn craq_writes_survive_concurrent_membership_changes() {
    for seed in 0..seeds() {
        for k in [1, 2, 3] {
            churn_under_load(Consistency::Craq, k, seed);
        }
    }
}
