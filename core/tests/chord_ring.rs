//! What the Chord paper and the issue promise of the ring: joins and departs keep every
//! key on exactly `min(k, N)` nodes, every key is reachable from every node, and finger
//! routing takes O(log N) hops.

mod common;

use std::collections::BTreeMap;

use common::{addr, cluster, reference_inserts, Pump};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::{Consistency, Id, Request, Response, Routing};

fn expected(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

fn load_reference(pump: &mut Pump) -> BTreeMap<String, String> {
    let pairs = reference_inserts();
    let members = pump.members();
    for (i, (key, value)) in pairs.iter().enumerate() {
        let via = &members[i % members.len()];
        let reply = pump.call(
            via,
            Request::Insert {
                key: key.clone(),
                value: value.clone(),
            },
        );
        assert!(
            matches!(reply, Ok(Response::Inserted { .. })),
            "{key}: {reply:?}"
        );
    }
    expected(&pairs)
}

fn assert_all_found_everywhere(pump: &mut Pump, want: &BTreeMap<String, String>) {
    for via in pump.members() {
        for (key, value) in want {
            match pump.call(&via, Request::Query { key: key.clone() }) {
                Ok(Response::Found { value: got, .. }) => {
                    assert_eq!(&got, value, "{key} via {via}")
                }
                other => panic!("{key} via {via}: {other:?}"),
            }
        }
    }
}

#[test]
fn ten_node_ring_stores_reference_workload_on_min_k_n_nodes() {
    for consistency in [Consistency::Chain, Consistency::Eventual] {
        for k in [1, 3, 5] {
            let mut pump = Pump::ring(cluster(k, consistency, Routing::Finger), 10);
            pump.check_ring().unwrap();
            let want = load_reference(&mut pump);
            assert_eq!(
                want.len(),
                496,
                "the reference file has 496 distinct titles"
            );
            assert_eq!(pump.check_placement(), Ok(496), "{consistency} k={k}");
            assert_all_found_everywhere(&mut pump, &want);
        }
    }
}

#[test]
fn departs_and_new_joins_move_data_with_nothing_lost() {
    for consistency in [Consistency::Chain, Consistency::Eventual] {
        for k in [1, 3, 5] {
            let mut pump = Pump::ring(cluster(k, consistency, Routing::Finger), 10);
            let want = load_reference(&mut pump);
            for i in [3, 7, 1] {
                pump.depart(&addr(i));
                pump.check_ring().unwrap();
                assert_eq!(
                    pump.check_placement(),
                    Ok(496),
                    "after depart of {i}, {consistency} k={k}"
                );
            }
            for i in [11, 12, 3] {
                pump.join(&addr(i));
                pump.check_ring().unwrap();
                assert_eq!(
                    pump.check_placement(),
                    Ok(496),
                    "after join of {i}, {consistency} k={k}"
                );
            }
            assert_all_found_everywhere(&mut pump, &want);
        }
    }
}

#[test]
fn ring_shrinks_to_the_bootstrap_and_grows_again() {
    let mut pump = Pump::ring(cluster(3, Consistency::Chain, Routing::Finger), 4);
    let want = load_reference(&mut pump);
    for i in 1..4 {
        pump.depart(&addr(i));
        assert_eq!(pump.check_placement(), Ok(496));
    }
    assert_eq!(pump.members(), vec![addr(0)]);
    for i in 1..4 {
        pump.join(&addr(i));
        assert_eq!(pump.check_placement(), Ok(496));
    }
    assert_all_found_everywhere(&mut pump, &want);
}

#[test]
fn query_all_returns_every_key_once_and_overlay_walks_from_the_bootstrap() {
    let mut pump = Pump::ring(cluster(3, Consistency::Eventual, Routing::Finger), 10);
    let want = load_reference(&mut pump);
    let Ok(Response::All { pairs }) = pump.call(&addr(6), Request::QueryAll) else {
        panic!("query * failed")
    };
    let got: BTreeMap<String, String> = pairs
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    assert_eq!(pairs.len(), want.len(), "each key once");
    assert_eq!(got, want);
    let Ok(Response::Overlay { nodes }) = pump.call(&addr(4), Request::Overlay) else {
        panic!("overlay failed")
    };
    let ring = pump.bootstrap_node().ring().unwrap();
    let mut in_order: Vec<String> = ring.iter().map(|n| n.addr.to_string()).collect();
    let start = in_order.iter().position(|a| *a == addr(0)).unwrap();
    in_order.rotate_left(start);
    assert_eq!(nodes, in_order);
}

/// On a ring of at most `2k + 2` members the views (`k + 1` predecessors and successors)
/// overlap and show every member's range, so a lookup goes straight to the key's primary:
/// one hop from any other member (a chain read adds the head -> tail step), none from the
/// primary.
#[test]
fn a_lookup_goes_straight_to_a_primary_its_view_lists() {
    let n = 8usize;
    for consistency in [Consistency::Chain, Consistency::Eventual, Consistency::Craq] {
        let mut pump = Pump::ring(cluster(3, consistency, Routing::Finger), n);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for i in 0..200 {
            let via = addr(rng.gen_range(0..n));
            let key = format!("key-{i}");
            let insert = Request::Insert {
                key: key.clone(),
                value: "v".to_string(),
            };
            let hops = match pump.call(&via, insert) {
                Ok(r) => r.hops().unwrap(),
                Err(e) => panic!("{e}"),
            };
            assert!(hops <= 1, "insert of {key} via {via}: {hops} hops");
            let hops = match pump.call(&via, Request::Query { key: key.clone() }) {
                Ok(r) => r.hops().unwrap(),
                Err(e) => panic!("{e}"),
            };
            // Chain: straight to the tail when the lists show it, else to the head and
            // on to the tail; eventual and CRAQ (the write is clean by now): to any
            // replica.
            let most = if consistency == Consistency::Chain {
                2
            } else {
                1
            };
            assert!(hops <= most, "query of {key} via {via}: {hops} hops");
        }
    }
}

#[test]
fn finger_routing_takes_logarithmic_hops_successor_routing_linear() {
    let n = 1000usize;
    let mut mean = BTreeMap::new();
    for routing in [Routing::Finger, Routing::Successor] {
        let mut pump = Pump::ring(cluster(1, Consistency::Chain, routing), n);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut total = 0u64;
        let lookups = 300;
        for i in 0..lookups {
            let via = addr(rng.gen_range(0..n));
            match pump.call(
                &via,
                Request::Query {
                    key: format!("key-{i}"),
                },
            ) {
                Ok(r) => total += r.hops().unwrap() as u64,
                Err(e) => panic!("{e}"),
            }
        }
        mean.insert(routing, total as f64 / lookups as f64);
    }
    let log2n = (n as f64).log2();
    eprintln!("mean hops over {n} nodes: {mean:?}");
    assert!(
        mean[&Routing::Finger] < log2n,
        "finger mean hops {:?}",
        mean
    );
    assert!(
        mean[&Routing::Successor] > n as f64 / 4.0,
        "successor mean hops {:?}",
        mean
    );
}

#[test]
fn concurrent_joins_and_departs_are_serialized_by_the_bootstrap() {
    let mut pump =
        Pump::ring(cluster(3, Consistency::Chain, Routing::Finger), 6).with_reordering(5);
    let want = load_reference(&mut pump);
    // Three joins and two departs submitted at once, delivered in random order.
    for i in 20..23 {
        let a = addr(i);
        pump.nodes.insert(
            a.clone(),
            ringkv_core::Node::new(ringkv_core::NodeConfig::member(&a, addr(0), i as u64)),
        );
    }
    let mut ids = Vec::new();
    for i in 20..23 {
        ids.push((addr(i), pump.submit(&addr(i), Request::Join)));
    }
    for i in [2, 4] {
        ids.push((addr(i), pump.submit(&addr(i), Request::Depart)));
    }
    pump.drive();
    for (a, id) in ids {
        let reply = pump.take_reply(&a, id).expect("answered");
        assert!(reply.is_ok(), "{a}: {reply:?}");
    }
    pump.check_ring().unwrap();
    assert_eq!(pump.check_placement(), Ok(496));
    assert_all_found_everywhere(&mut pump, &want);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any sequence of joins and departs keeps the placement invariant and loses nothing.
    #[test]
    fn random_churn_keeps_placement(
        k in 1usize..5,
        eventual in any::<bool>(),
        ops in proptest::collection::vec((any::<bool>(), 1usize..12), 1..14),
    ) {
        let consistency = if eventual { Consistency::Eventual } else { Consistency::Chain };
        let mut pump = Pump::ring(cluster(k, consistency, Routing::Finger), 3);
        let mut want = BTreeMap::new();
        for i in 0..60 {
            let (key, value) = (format!("k{i}"), format!("v{i}"));
            let via = pump.members()[i % pump.members().len()].clone();
            pump.call(&via, Request::Insert { key: key.clone(), value: value.clone() }).unwrap();
            want.insert(key, value);
        }
        for (join, i) in ops {
            let a = addr(i);
            let member = pump.members().contains(&a);
            if join && !member {
                pump.join(&a);
            } else if !join && member {
                pump.depart(&a);
            }
            prop_assert_eq!(pump.check_placement(), Ok(want.len()));
            prop_assert_eq!(pump.check_ring(), Ok(()));
        }
        let via = pump.members()[0].clone();
        for (key, value) in &want {
            let got = pump.call(&via, Request::Query { key: key.clone() });
            let ok = matches!(&got, Ok(Response::Found { value: v, .. }) if v == value);
            prop_assert!(ok, "{key}: {got:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every key is found from every member of a ring grown by joins in any order, the
    /// sizes just past what a node's neighbour lists hold included. A node far from the
    /// later joins keeps the ring size of the last view it installed: a lookup shortcut
    /// that took that size for the ring's sent keys of the newest node's range round and
    /// round the ring (503 `too_many_hops` from real k = 1 rings).
    #[test]
    fn every_member_finds_every_key_of_a_ring_grown_in_any_order(
        k in 1usize..4,
        extra in 0usize..5,
        order in Just((1..40).collect::<Vec<usize>>()).prop_shuffle(),
        consistency in prop_oneof![
            Just(Consistency::Chain),
            Just(Consistency::Eventual),
            Just(Consistency::Craq),
        ],
    ) {
        let n = 2 * k + 4 + extra;
        let mut pump = Pump::new(cluster(k, consistency, Routing::Finger));
        for &i in order.iter().take(n - 1) {
            pump.join(&addr(i));
        }
        let mut want = BTreeMap::new();
        for i in 0..40 {
            let (key, value) = (format!("k{i}"), format!("v{i}"));
            let via = pump.members()[i % n].clone();
            let reply = pump.call(&via, Request::Insert { key: key.clone(), value: value.clone() });
            prop_assert!(reply.is_ok(), "insert {} via {}: {:?}", key, via, reply);
            want.insert(key, value);
        }
        for via in pump.members() {
            for (key, value) in &want {
                let got = pump.call(&via, Request::Query { key: key.clone() });
                let ok = matches!(&got, Ok(Response::Found { value: v, .. }) if v == value);
                prop_assert!(ok, "{} via {}: {:?}", key, via, got);
            }
        }
    }
}

#[test]
fn node_ids_are_sha1_of_address() {
    let pump = Pump::ring(cluster(1, Consistency::Chain, Routing::Finger), 2);
    let node = &pump.nodes[&addr(1)];
    assert_eq!(node.me().id, Id::of_addr(&addr(1)));
}

/// A lookup that keeps arriving at nodes that are not between its sender and its key
/// (views that disagree) is ended after `LAPS_MAX` such hops, with `TooManyHops`, instead
/// of circling until the hop ceiling (duplicated messages would multiply every lap).
#[test]
fn a_lookup_that_keeps_circling_is_ended() {
    use ringkv_core::id::in_open_closed;
    use ringkv_core::message::{Action, Origin, Routed, LAPS_MAX};
    use ringkv_core::{Envelope, Input, Message, Output, RequestError};

    let mut pump = Pump::ring(cluster(3, Consistency::Chain, Routing::Finger), 6);
    let a = addr(1);
    let node = &pump.nodes[&a];
    let me = node.me().clone();
    let succ = node.view().succs[0].clone();
    let origin_node = ringkv_core::NodeRef::new(&addr(2));
    // A key this node is not primary for, and not between its successor and the key:
    // a hop from the successor to here goes backwards.
    let key = (0..10_000)
        .map(|i| format!("key-{i}"))
        .find(|k| {
            let id = Id::of_key(k);
            !in_open_closed(me.id, succ.id, id)
                && !in_open_closed(id, node.view().preds[0].id, me.id)
        })
        .expect("such a key exists");
    let routed = |laps| Routed {
        origin: Some(Origin {
            node: origin_node.clone(),
            req: 7,
            incarnation: 1,
        }),
        key: key.clone(),
        action: Action::Read,
        hops: 3,
        laps,
        redriven: false,
    };
    let now = pump.now;
    let mut deliver = |laps| {
        let node = pump.nodes.get_mut(&a).expect("node a");
        let mut out = Vec::new();
        let envelope = Envelope {
            from: succ.clone(),
            msg: Message::Route(routed(laps)),
        };
        node.handle(now, Input::Message(envelope), &mut out)
            .expect("a route is accepted");
        out
    };
    // Below the bound the lookup is passed on.
    let out = deliver(0);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Send { envelope: Envelope { msg: Message::Route(r), .. }, .. } if r.laps == 1
    )));
    // At the bound it is answered to its origin as looping.
    let out = deliver(LAPS_MAX);
    let answered = out.iter().any(|o| match o {
        Output::Send { to, envelope } => {
            **to == *addr(2)
                && matches!(
                    &envelope.msg,
                    Message::Done {
                        reply: Err(RequestError::TooManyHops { .. }),
                        ..
                    }
                )
        }
        _ => false,
    });
    assert!(answered, "{out:?}");
}
