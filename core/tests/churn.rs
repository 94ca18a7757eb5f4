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

/// A member passes a join request on to the coordinator it believes in, one hop further
/// each time, and drops one passed on `JOIN_FORWARDS_MAX` times: nodes whose beliefs
/// point at each other (stale after a partition) cannot pass a request round for ever.
#[test]
fn a_join_request_is_passed_on_a_bounded_number_of_times() {
    use ringkv_core::message::JOIN_FORWARDS_MAX;
    use ringkv_core::{Envelope, Input, Message, NodeRef, Output};

    let mut pump = Pump::ring(cluster(1, Consistency::Chain, Routing::Finger), 3);
    let now = pump.now;
    let mut member = pump.nodes.remove(&addr(2)).expect("a member");
    let joiner = NodeRef::new(&addr(9));
    let passed_on = |member: &mut Node, hops: u8| -> Vec<(String, Message)> {
        let mut out = Vec::new();
        let msg = Message::JoinRequest {
            node: joiner.clone(),
            incarnation: 7,
            hops,
            ring: None,
            prepared: None,
        };
        let input = Input::Message(Envelope {
            from: joiner.clone(),
            msg,
        });
        member
            .handle(now + 1_000, input, &mut out)
            .expect("a join request is not refused");
        out.into_iter()
            .filter_map(|o| match o {
                Output::Send { to, envelope } => Some((to.to_string(), envelope.msg)),
                _ => None,
            })
            .collect()
    };
    for hops in 0..JOIN_FORWARDS_MAX {
        let sent = passed_on(&mut member, hops);
        let expected = Message::JoinRequest {
            node: joiner.clone(),
            incarnation: 7,
            hops: hops + 1,
            ring: None,
            prepared: None,
        };
        assert_eq!(
            sent,
            vec![(addr(0), expected)],
            "passed on after {hops} hops"
        );
    }
    assert_eq!(passed_on(&mut member, JOIN_FORWARDS_MAX), Vec::new());
}

/// Without heartbeats (failure handling off, the core's default) a departed node sent its
/// hints once, when it left: a hint lost then, or ended on its way while views changed,
/// stayed at the departed node for good (a real ring under load kept hints for the whole
/// of a test's 10 s wait). It now sends them again until each is acknowledged.
#[test]
fn a_departed_node_sends_lost_hints_again_without_heartbeats() {
    let mut pump = Pump::ring(cluster(3, Consistency::Chain, Routing::Finger), 5);
    for i in 0..60 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let reply = pump.call(&addr(i % 5), Request::Insert { key, value });
        assert!(reply.is_ok(), "{reply:?}");
    }
    let leaving = addr(3);
    let id = pump.submit(&leaving, Request::Depart);
    // Every lookup the departing node sends (its hints) is lost.
    let from_leaving = |env: &ringkv_core::Envelope| {
        *env.from.addr == *leaving && matches!(env.msg, ringkv_core::Message::Route(_))
    };
    pump.drive_holding(from_leaving);
    assert!(pump.take_reply(&leaving, id).is_some_and(|r| r.is_ok()));
    let lost = pump.held.len();
    pump.held.clear();
    let hints = |pump: &Pump| pump.nodes[&leaving].status().hints;
    assert!(
        lost > 0 && hints(&pump) > 0,
        "the departure left hints ({lost} lost)"
    );
    pump.run_for(2_000_000_000);
    assert_eq!(hints(&pump), 0, "every hint sent again and acknowledged");
    for i in 0..60 {
        let reply = pump.call(
            &addr(i % 3),
            Request::Query {
                key: format!("k{i}"),
            },
        );
        assert!(
            matches!(&reply, Ok(Response::Found { value, .. }) if *value == format!("v{i}")),
            "k{i}: {reply:?}"
        );
    }
}
