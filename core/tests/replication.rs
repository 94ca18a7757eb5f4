//! What chain replication (van Renesse & Schneider), CRAQ (Terrace & Freedman) and the
//! eventual mode promise: acknowledged chain and CRAQ writes are read back, CRAQ reads are
//! answered by any replica yet return only committed values, eventual replicas converge,
//! versions keep a late message from undoing a newer write or resurrecting a delete.

mod common;

use common::{addr, cluster, Pump};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::{Consistency, Envelope, Message, Request, RequestError, Response, Routing};

fn insert(key: &str, value: &str) -> Request {
    Request::Insert {
        key: key.into(),
        value: value.into(),
    }
}

fn query(key: &str) -> Request {
    Request::Query { key: key.into() }
}

fn found(reply: &Result<Response, RequestError>) -> Option<String> {
    match reply {
        Ok(Response::Found { value, .. }) => Some(value.clone()),
        Ok(Response::NotFound { .. }) => None,
        other => panic!("unexpected reply {other:?}"),
    }
}

#[test]
fn chain_read_after_acknowledged_write_returns_it_under_reordering() {
    read_after_acknowledged_write_returns_it(Consistency::Chain);
}

#[test]
fn craq_read_after_acknowledged_write_returns_it_under_reordering() {
    read_after_acknowledged_write_returns_it(Consistency::Craq);
}

fn read_after_acknowledged_write_returns_it(consistency: Consistency) {
    for k in [1, 3, 5] {
        let mut pump =
            Pump::ring(cluster(k, consistency, Routing::Finger), 10).with_reordering(k as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for round in 0..200 {
            let key = format!("key-{}", rng.gen_range(0..8));
            // Concurrent noise on other keys keeps the network busy while we wait.
            for j in 0..3 {
                let via = addr(rng.gen_range(0..10));
                pump.submit(&via, insert(&format!("noise-{j}"), &format!("n{round}")));
            }
            let value = format!("v{round}");
            let writer = addr(rng.gen_range(0..10));
            let id = pump.submit(&writer, insert(&key, &value));
            let mut reply = pump.take_reply(&writer, id);
            while reply.is_none() {
                assert!(pump.step(), "the write is acknowledged");
                reply = pump.take_reply(&writer, id);
            }
            assert!(matches!(reply, Some(Ok(Response::Inserted { .. }))));
            // Acknowledged: a read from any node, started now, must see it.
            let reader = addr(rng.gen_range(0..10));
            let rid = pump.submit(&reader, query(&key));
            let mut read = pump.take_reply(&reader, rid);
            while read.is_none() {
                assert!(pump.step());
                read = pump.take_reply(&reader, rid);
            }
            assert_eq!(
                found(&read.unwrap()),
                Some(value),
                "{consistency} k={k} round {round}"
            );
        }
        pump.drive();
        assert!(pump.check_placement().is_ok());
    }
}

/// CRAQ (section 2.3 of the paper): once the tail's acknowledgement has marked a write
/// clean, every replica answers reads of it itself.
#[test]
fn craq_clean_reads_are_answered_by_whichever_replica_they_reach() {
    let mut pump = Pump::ring(cluster(3, Consistency::Craq, Routing::Finger), 10);
    pump.call(&addr(2), insert("Imagine", "1971")).unwrap();
    pump.drive();
    let ring = pump.bootstrap_node().ring().unwrap().clone();
    let replicas = ring.replicas(ringkv_core::Id::of_key("Imagine"), 3);
    for replica in &replicas {
        let via = replica.addr.to_string();
        let Ok(Response::Found {
            node, value, hops, ..
        }) = pump.call(&via, query("Imagine"))
        else {
            panic!("not found via {via}")
        };
        assert_eq!((node.as_str(), value.as_str()), (via.as_str(), "1971"));
        assert_eq!(hops, 0, "answered where it entered");
    }
}

/// CRAQ (section 2.3): a replica whose newest version is dirty (not yet acknowledged by
/// the tail) answers with the version the tail has committed.
/// A read of a copy a write in flight made dirty waits for the tail's clean notice of
/// that write and is answered with it; if no notice comes in time, it asks the tail and
/// gets the version the tail has committed.
#[test]
fn craq_dirty_reads_wait_for_the_commit_or_return_the_committed_version() {
    let mut pump = Pump::ring(cluster(3, Consistency::Craq, Routing::Finger), 10);
    pump.call(&addr(2), insert("song", "old")).unwrap();
    pump.drive();
    let ring = pump.bootstrap_node().ring().unwrap().clone();
    let replicas = ring.replicas(ringkv_core::Id::of_key("song"), 3);
    let head = replicas[0].addr.to_string();
    let to_tail =
        |e: &ringkv_core::Envelope| matches!(&e.msg, Message::ChainWrite(s) if s.position == 2);
    // The new write reaches the head and the middle, not the tail.
    let id = pump.submit(&head, insert("song", "new"));
    pump.drive_holding(to_tail);
    assert!(!pump.held.is_empty(), "the write waits before the tail");
    assert_eq!(pump.take_reply(&head, id), None, "not acknowledged yet");
    let mut reads = Vec::new();
    for dirty in &replicas[..2] {
        let via = dirty.addr.to_string();
        assert_eq!(pump.nodes[&via].store().value("song"), Some("new"));
        reads.push((via.clone(), pump.submit(&via, query("song"))));
    }
    pump.drive_holding(to_tail);
    for (via, read) in &reads {
        assert_eq!(
            pump.take_reply(via, *read),
            None,
            "{via} waits for the notice"
        );
    }
    pump.release_held();
    pump.drive();
    assert!(matches!(
        pump.take_reply(&head, id),
        Some(Ok(Response::Inserted { .. }))
    ));
    for (via, read) in &reads {
        let reply = pump.take_reply(via, *read).expect("answered on the notice");
        assert_eq!(found(&reply), Some("new".into()), "{via}");
    }
    for replica in &replicas {
        let via = replica.addr.to_string();
        assert_eq!(found(&pump.call(&via, query("song"))), Some("new".into()));
    }
    // A write that never reaches the tail: the reads that waited for it ask the tail
    // once their wait is over, and get what it committed.
    let _ = pump.submit(&head, insert("song", "newest"));
    pump.drive_holding(to_tail);
    let reads: Vec<_> = replicas[..2]
        .iter()
        .map(|r| r.addr.to_string())
        .map(|via| (via.clone(), pump.submit(&via, query("song"))))
        .collect();
    pump.drive_holding(to_tail);
    pump.run_for(300_000_000);
    for (via, read) in &reads {
        let reply = pump.take_reply(via, *read).expect("asked the tail");
        assert_eq!(found(&reply), Some("new".into()), "{via}");
    }
}

#[test]
fn chain_reads_are_served_by_the_tail() {
    let mut pump = Pump::ring(cluster(3, Consistency::Chain, Routing::Finger), 10);
    pump.call(&addr(2), insert("Imagine", "1971")).unwrap();
    let ring = pump.bootstrap_node().ring().unwrap().clone();
    let replicas = ring.replicas(ringkv_core::Id::of_key("Imagine"), 3);
    let Ok(Response::Found { node, .. }) = pump.call(&addr(5), query("Imagine")) else {
        panic!("not found")
    };
    assert_eq!(node, replicas[2].addr.to_string(), "the tail answers");
}

/// A chain read sent to the key's tail is answered there (no hop to the head and back),
/// one sent to a node whose neighbour lists show the tail goes straight to it, and the
/// head hands it on in one hop. No other replica answers one: a read reaching the head or
/// the middle of the chain is answered by the tail.
#[test]
fn chain_reads_go_straight_to_the_tail() {
    let mut pump = Pump::ring(cluster(3, Consistency::Chain, Routing::Finger), 10);
    pump.call(&addr(2), insert("Imagine", "1971")).unwrap();
    pump.drive();
    let ring = pump.bootstrap_node().ring().unwrap().clone();
    let replicas = ring.replicas(ringkv_core::Id::of_key("Imagine"), 3);
    let tail = replicas[2].addr.to_string();
    let read = |pump: &mut Pump, via: &str| match pump.call(via, query("Imagine")) {
        Ok(Response::Found {
            node, value, hops, ..
        }) => (node, value, hops),
        other => panic!("via {via}: {other:?}"),
    };
    assert_eq!(read(&mut pump, &tail), (tail.clone(), "1971".into(), 0));
    for replica in &replicas[..2] {
        let (node, value, hops) = read(&mut pump, replica.addr.as_ref());
        assert_eq!(
            (node.as_str(), value.as_str(), hops),
            (tail.as_str(), "1971", 1)
        );
    }
    // On 10 nodes with k = 3 every member's lists (4 each way) reach every key's tail
    // except from the far side; the members just after the tail see it among their
    // predecessors.
    let after = ring
        .successor_after(replicas[2].id)
        .unwrap()
        .addr
        .to_string();
    let (node, _, hops) = read(&mut pump, &after);
    assert_eq!(
        (node.as_str(), hops),
        (tail.as_str(), 1),
        "straight to the tail"
    );
}

#[test]
fn eventual_replicas_converge_after_concurrent_writes_and_deletes() {
    for k in [2, 3, 5] {
        let mut pump = Pump::ring(cluster(k, Consistency::Eventual, Routing::Finger), 10)
            .with_reordering(40 + k as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for i in 0..600 {
            let key = format!("hot-{}", rng.gen_range(0..5));
            let via = addr(rng.gen_range(0..10));
            let req = if rng.gen_bool(0.2) {
                Request::Delete { key }
            } else {
                insert(&key, &format!("v{i}"))
            };
            pump.submit(&via, req);
            // Deliver a few messages between submissions so writes overlap in flight.
            for _ in 0..rng.gen_range(0..4) {
                pump.step();
            }
        }
        pump.drive();
        pump.check_placement()
            .unwrap_or_else(|e| panic!("k={k}: {e}"));
    }
}

#[test]
fn eventual_reads_may_be_stale_before_replication_arrives() {
    let mut pump = Pump::ring(cluster(3, Consistency::Eventual, Routing::Finger), 10);
    pump.call(&addr(0), insert("song", "old")).unwrap();
    // Hold back replication of the new value: the primary acknowledges at once.
    let id = pump.submit(&addr(0), insert("song", "new"));
    pump.drive_holding(|e| matches!(e.msg, Message::Replicate { .. }));
    assert!(matches!(
        pump.take_reply(&addr(0), id),
        Some(Ok(Response::Inserted { .. }))
    ));
    let ring = pump.bootstrap_node().ring().unwrap().clone();
    let replicas = ring.replicas(ringkv_core::Id::of_key("song"), 3);
    let last = replicas[2].addr.to_string();
    let stale = pump.call(&last, query("song"));
    assert_eq!(
        found(&stale),
        Some("old".into()),
        "a replica that has not heard yet answers stale"
    );
    pump.release_held();
    pump.drive();
    assert_eq!(found(&pump.call(&last, query("song"))), Some("new".into()));
}

/// A replica write that is lost is sent again by the primary until acknowledged, so a
/// replica does not wait for anti-entropy (off here) to learn an acknowledged write.
#[test]
fn a_lost_replica_write_is_resent_until_acknowledged() {
    let mut pump = Pump::ring(cluster(3, Consistency::Eventual, Routing::Finger), 6);
    let id = pump.submit(&addr(0), insert("song", "new"));
    pump.drive_holding(|e| matches!(e.msg, Message::Replicate { .. }));
    assert!(matches!(
        pump.take_reply(&addr(0), id),
        Some(Ok(Response::Inserted { .. }))
    ));
    // Every replica write is lost.
    assert!(!pump.held.is_empty());
    pump.held.clear();
    assert!(
        pump.check_placement().is_err(),
        "only the primary holds the key"
    );
    // The primary's retry timer sends them again.
    pump.run_for(200_000_000);
    pump.drive();
    assert_eq!(pump.check_placement(), Ok(1));
    // Acknowledged: no further resends once the replicas have answered.
    let before = pump.delivered;
    pump.run_for(2_000_000_000);
    pump.drive();
    assert_eq!(pump.delivered, before, "resends stop once acknowledged");
}

/// After joins commit, the nodes that handed ranges over keep forwarding the writes they
/// apply in them for a grace period. Under eventual consistency a replica write that a
/// primary sent under a view that already has those joins is not forwarded by the replica
/// that applies it: the primary sent it to every replica itself. Only the primary's own
/// forwards of client writes remain, and every write still reaches all its replicas.
#[test]
fn replicas_do_not_forward_what_the_primary_sent_under_a_view_with_the_hand_over() {
    let mut pump = Pump::ring(cluster(3, Consistency::Eventual, Routing::Finger), 6);
    let ring = pump.bootstrap_node().ring().unwrap().clone();
    let mut forwards = 0;
    for i in 0..30 {
        let key = format!("song {i}");
        let primary = ring.replicas(ringkv_core::Id::of_key(&key), 3)[0]
            .addr
            .clone();
        let id = pump.submit(&addr(i % 6), insert(&key, "v"));
        pump.drive_holding(|e| matches!(e.msg, Message::Forward { .. }));
        assert!(matches!(
            pump.take_reply(&addr(i % 6), id),
            Some(Ok(Response::Inserted { .. }))
        ));
        for (_, env) in &pump.held {
            assert_eq!(env.from.addr, primary, "{key}: a replica forwarded it");
        }
        forwards += pump.held.len();
        pump.release_held();
        pump.drive();
    }
    assert!(
        forwards > 0,
        "the primaries still forward client writes in the grace period"
    );
    assert_eq!(pump.check_placement(), Ok(30));
}

/// Read repair: a replica that missed a write (lost, never resent here because no timer
/// fires) catches up after answering reads, without anti-entropy.
#[test]
fn reads_at_a_stale_replica_repair_it() {
    let mut pump = Pump::ring(cluster(3, Consistency::Eventual, Routing::Finger), 6);
    pump.call(&addr(0), insert("song", "old")).unwrap();
    let ring = pump.bootstrap_node().ring().unwrap().clone();
    let replicas = ring.replicas(ringkv_core::Id::of_key("song"), 3);
    let last = replicas[2].addr.to_string();
    let to_last = replicas[2].addr.clone();
    let id = pump.submit(&addr(0), insert("song", "new"));
    // The write to the last replica is lost; the others arrive.
    pump.drive_holding(|e| matches!(e.msg, Message::Replicate { .. }));
    let held = std::mem::take(&mut pump.held);
    let lost = held.iter().filter(|(to, _)| *to == to_last).count();
    pump.held = held.into_iter().filter(|(to, _)| *to != to_last).collect();
    pump.release_held();
    pump.drive();
    assert_eq!(lost, 1, "one replica write was lost");
    assert!(matches!(
        pump.take_reply(&addr(0), id),
        Some(Ok(Response::Inserted { .. }))
    ));
    assert_eq!(found(&pump.call(&last, query("song"))), Some("old".into()));
    let repaired = (0..200).any(|_| found(&pump.call(&last, query("song"))) == Some("new".into()));
    assert!(repaired, "reads never repaired the stale replica");
    assert_eq!(pump.check_placement(), Ok(1));
}

#[test]
fn a_late_replica_message_does_not_resurrect_a_delete() {
    for consistency in [Consistency::Eventual, Consistency::Chain, Consistency::Craq] {
        let mut pump = Pump::ring(cluster(3, consistency, Routing::Finger), 10);
        let is_replica_write = |e: &Envelope| {
            matches!(
                e.msg,
                Message::Replicate { .. } | Message::ChainWrite { .. }
            )
        };
        // The insert's replication is held back...
        let id = pump.submit(&addr(1), insert("ghost", "boo"));
        pump.drive_holding(is_replica_write);
        let held = std::mem::take(&mut pump.held);
        assert!(!held.is_empty());
        let _ = pump.take_reply(&addr(1), id);
        // ...a delete goes through (re-sending what was held of the insert's chain first
        // in chain mode so the chain can acknowledge), then the stale copies arrive.
        if consistency.is_chain() {
            pump.held = held.clone();
            pump.release_held();
            pump.drive();
        }
        pump.call(
            &addr(4),
            Request::Delete {
                key: "ghost".into(),
            },
        )
        .unwrap();
        pump.held = held;
        pump.release_held();
        pump.drive();
        for a in pump.members() {
            assert_eq!(
                found(&pump.call(&a, query("ghost"))),
                None,
                "{consistency} via {a}"
            );
        }
        for node in pump.nodes.values() {
            assert_eq!(
                node.store().value("ghost"),
                None,
                "{consistency}: no copy anywhere"
            );
        }
    }
}

#[test]
fn insert_of_existing_key_replaces_value_and_delete_reports_absence() {
    let mut pump = Pump::ring(cluster(3, Consistency::Chain, Routing::Finger), 5);
    pump.call(&addr(1), insert("k", "1")).unwrap();
    pump.call(&addr(2), insert("k", "2")).unwrap();
    assert_eq!(found(&pump.call(&addr(3), query("k"))), Some("2".into()));
    let del = pump.call(&addr(4), Request::Delete { key: "k".into() });
    assert!(matches!(del, Ok(Response::Deleted { existed: true, .. })));
    let again = pump.call(&addr(4), Request::Delete { key: "k".into() });
    assert!(matches!(
        again,
        Ok(Response::Deleted { existed: false, .. })
    ));
    assert!(matches!(
        pump.call(&addr(0), query("k")),
        Ok(Response::NotFound { .. })
    ));
}

#[test]
fn a_duplicated_write_request_takes_effect_once() {
    for consistency in [Consistency::Chain, Consistency::Eventual, Consistency::Craq] {
        let mut pump = Pump::ring(cluster(3, consistency, Routing::Finger), 6);
        // The first write's lookup messages are copied before delivery...
        let first = pump.submit(&addr(1), insert("song", "first"));
        pump.drive_holding(|e| matches!(e.msg, Message::Route(_)));
        let copies = pump.held.clone();
        assert!(!copies.is_empty(), "the write was routed");
        pump.release_held();
        pump.drive();
        assert!(pump.take_reply(&addr(1), first).is_some());
        pump.call(&addr(2), insert("song", "second")).unwrap();
        // ...and delivered again after a later write: it must not overwrite it.
        pump.held = copies;
        pump.release_held();
        pump.drive();
        assert_eq!(
            found(&pump.call(&addr(3), query("song"))),
            Some("second".into()),
            "{consistency}"
        );
    }
}
