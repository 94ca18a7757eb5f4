//! Crash-stop failures (the chain replication paper's fail-stop model): the bootstrap,
//! as configuration master, detects silent members and reconfigures the ring; acknowledged
//! writes survive k - 1 crashes; a restarted node rejoins empty and is refilled;
//! anti-entropy repairs lost replication; routing avoids a dead successor on its own.

mod common;

use std::collections::BTreeMap;

use common::{addr, cluster, Pump};
use ringkv_core::{
    ClusterConfig, Consistency, Envelope, Input, Message, Node, NodeConfig, NodeRef, Request,
    Response, Routing, Timing,
};

const SECOND: u64 = 1_000_000_000;

fn ring_with_failure_handling(config: ClusterConfig, n: usize) -> Pump {
    let mut pump = Pump::with_timing(config, Timing::with_failure_handling());
    for i in 1..n {
        pump.join(&addr(i));
    }
    pump
}

fn load(pump: &mut Pump, n: usize) -> BTreeMap<String, String> {
    let mut want = BTreeMap::new();
    let members = pump.members();
    for i in 0..n {
        let (key, value) = (format!("key-{i}"), format!("value-{i}"));
        let via = &members[i % members.len()];
        let reply = pump.call(
            via,
            Request::Insert {
                key: key.clone(),
                value: value.clone(),
            },
        );
        assert!(matches!(reply, Ok(Response::Inserted { .. })), "{reply:?}");
        want.insert(key, value);
    }
    want
}

fn assert_readable(pump: &mut Pump, want: &BTreeMap<String, String>) {
    for via in pump.members() {
        for (key, value) in want {
            match pump.call(&via, Request::Query { key: key.clone() }) {
                Ok(Response::Found { value: got, .. }) => assert_eq!(&got, value),
                other => panic!("{key} via {via}: {other:?}"),
            }
        }
    }
}

#[test]
fn acknowledged_writes_survive_k_minus_1_simultaneous_crashes() {
    for consistency in [Consistency::Chain, Consistency::Eventual] {
        for k in [2, 3] {
            let mut pump = ring_with_failure_handling(cluster(k, consistency, Routing::Finger), 10);
            let want = load(&mut pump, 200);
            pump.run_for(3 * SECOND); // let anti-entropy settle eventual replication
                                      // Crash k - 1 adjacent members at once: the worst case for a replica set.
            let ring = pump.bootstrap_node().ring().unwrap().clone();
            let order: Vec<String> = ring.iter().map(|n| n.addr.to_string()).collect();
            let start = order.iter().position(|a| *a != addr(0)).unwrap();
            let victims: Vec<String> = order
                .iter()
                .cycle()
                .skip(start)
                .filter(|a| **a != addr(0))
                .take(k - 1)
                .cloned()
                .collect();
            for v in &victims {
                pump.crash(v);
            }
            pump.run_for(10 * SECOND);
            assert!(pump.bootstrap_node().membership_idle());
            assert_eq!(pump.bootstrap_node().ring().unwrap().len(), 10 - (k - 1));
            pump.check_ring().unwrap();
            assert_eq!(
                pump.check_placement(),
                Ok(200),
                "{consistency} k={k} after crashing {victims:?}"
            );
            assert_readable(&mut pump, &want);
        }
    }
}

#[test]
fn a_restarted_node_rejoins_empty_and_is_refilled() {
    let mut pump = ring_with_failure_handling(cluster(3, Consistency::Chain, Routing::Finger), 8);
    let want = load(&mut pump, 150);
    let victim = addr(5);
    pump.crash(&victim);
    pump.run_for(SECOND / 2); // restarted before the failure detector noticed
    pump.join(&victim);
    pump.run_for(5 * SECOND);
    assert_eq!(pump.bootstrap_node().ring().unwrap().len(), 8);
    pump.check_ring().unwrap();
    assert_eq!(pump.check_placement(), Ok(150));
    assert!(!pump.nodes[&victim].store().is_empty(), "refilled");
    assert_readable(&mut pump, &want);
}

#[test]
fn anti_entropy_repairs_lost_replication() {
    let mut pump =
        ring_with_failure_handling(cluster(3, Consistency::Eventual, Routing::Finger), 6);
    // Every replication message is lost: only primaries have the writes.
    for i in 0..100 {
        let via = addr(i % 6);
        pump.submit(
            &via,
            Request::Insert {
                key: format!("k{i}"),
                value: format!("v{i}"),
            },
        );
        pump.drive_holding(|e| matches!(e.msg, Message::Replicate { .. }));
    }
    pump.held.clear();
    assert!(
        pump.check_placement().is_err(),
        "replicas are missing before repair"
    );
    pump.run_for(5 * SECOND);
    assert_eq!(pump.check_placement(), Ok(100));
}

#[test]
fn routing_avoids_a_dead_successor_without_the_bootstrap() {
    let mut pump =
        ring_with_failure_handling(cluster(3, Consistency::Eventual, Routing::Successor), 8);
    let want = load(&mut pump, 100);
    pump.run_for(3 * SECOND);
    // With the bootstrap gone nobody reconfigures the ring; nodes must route round a
    // crashed member by themselves.
    pump.crash(&addr(0));
    let ring = pump.nodes[&addr(1)].view().clone();
    let dead = ring.succs[0].addr.to_string();
    pump.crash(&dead);
    pump.run_for(5 * SECOND);
    // Eventual reads are served by any live replica on the route.
    assert_readable(&mut pump, &want);
}

/// With the bootstrap down, nothing repairs finger tables; a node pings its distinct
/// fingers and routes round one found silent, so lookups that would hop through a
/// crashed finger still arrive.
#[test]
fn routing_avoids_a_dead_finger_without_the_bootstrap() {
    let n = 24;
    let mut pump =
        ring_with_failure_handling(cluster(3, Consistency::Eventual, Routing::Finger), n);
    let want = load(&mut pump, 200);
    pump.run_for(3 * SECOND);
    pump.crash(&addr(0));
    // A finger of some node that is not among its pinged successors nor the bootstrap.
    let boot = ringkv_core::Id::of_addr(&addr(0));
    let dead = (1..n)
        .find_map(|i| {
            let node = &pump.nodes[&addr(i)];
            let near: Vec<_> = node.view().succs.iter().take(3).map(|s| s.id).collect();
            node.fingers()
                .iter()
                .rev()
                .find(|f| f.id != node.me().id && f.id != boot && !near.contains(&f.id))
                .map(|f| f.addr.to_string())
        })
        .expect("a far finger exists in a ring of 24");
    pump.crash(&dead);
    pump.run_for(5 * SECOND);
    // Every lookup is answered by a live replica: none is lost at the dead finger.
    for via in pump.members() {
        for (key, value) in &want {
            match pump.call_timed(&via, Request::Query { key: key.clone() }) {
                Ok(Response::Found { value: got, .. }) => assert_eq!(&got, value),
                other => panic!("{key} via {via}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_falsely_suspected_node_is_removed_and_rejoins() {
    let mut pump = ring_with_failure_handling(cluster(2, Consistency::Chain, Routing::Finger), 6);
    let want = load(&mut pump, 80);
    // Node 3's heartbeats are lost for a while: the bootstrap removes it, tells it, and it
    // comes back through a fresh join.
    let silent = addr(3);
    for _ in 0..40 {
        pump.run_for(SECOND / 10);
        pump.drive_holding(|e| {
            e.from.addr.as_ref() == silent && matches!(e.msg, Message::Heartbeat { .. })
        });
        pump.held.clear();
    }
    pump.run_for(10 * SECOND);
    assert_eq!(pump.bootstrap_node().ring().unwrap().len(), 6);
    assert!(pump.nodes[&silent].is_member());
    pump.check_ring().unwrap();
    assert_eq!(pump.check_placement(), Ok(80));
    assert_readable(&mut pump, &want);
}

/// A ring of two has one coordinator seat, the bootstrap's. Restarted without its state,
/// the bootstrap hears from its member that it led the group alone: it tells the member
/// to rejoin keeping its entries, founds the ring again, grants no lease until the member
/// is back, and every acknowledged write is read again. A late copy of that `Rejoin`
/// does not make the member leave the ring it has joined again.
#[test]
fn a_restarted_bootstrap_that_led_its_group_alone_takes_its_ring_back() {
    for consistency in [Consistency::Chain, Consistency::Eventual, Consistency::Craq] {
        let config = cluster(2, consistency, Routing::Finger);
        let mut pump = ring_with_failure_handling(config, 2);
        let want = load(&mut pump, 40);
        pump.run_for(2 * SECOND);
        let (bootstrap, member) = (addr(0), addr(1));
        pump.crash(&bootstrap);
        pump.run_for(SECOND / 2);
        let mut restarted = NodeConfig::bootstrap(&bootstrap, config, 7);
        restarted.timing = Timing::with_failure_handling();
        restarted.recover = true;
        pump.nodes.insert(bootstrap.clone(), Node::new(restarted));
        pump.record = true;
        pump.run_for(10 * SECOND);
        assert!(pump.bootstrap_node().is_member(), "{consistency:?}");
        assert_eq!(pump.bootstrap_node().ring().map(|r| r.len()), Some(2));
        assert!(pump.nodes[&member].is_member());
        assert_readable(&mut pump, &want);

        let rejoin = pump
            .log
            .iter()
            .find_map(|line| line.split("Rejoin { ").nth(1))
            .expect("the restarted bootstrap sent a Rejoin")
            .to_string();
        let field = |name: &str| -> u64 {
            let rest = rejoin.split(&format!("{name}: ")).nth(1).unwrap();
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let late = Envelope {
            from: NodeRef::new(&bootstrap),
            msg: Message::Rejoin {
                ring_id: field("ring_id"),
                nonce: field("nonce"),
            },
        };
        let now = pump.now + 1_000;
        let mut out = Vec::new();
        let node = pump.nodes.get_mut(&member).unwrap();
        assert!(node.handle(now, Input::Message(late), &mut out).is_err());
        assert!(
            node.is_member(),
            "{consistency:?}: a late Rejoin made the member leave"
        );
        assert_readable(&mut pump, &want);
    }
}

/// Insert keys whose primary is `victim` through it, and return what it acknowledged.
fn acknowledged_by(pump: &mut Pump, victim: &str) -> BTreeMap<String, String> {
    let mut want = BTreeMap::new();
    for i in 0..600 {
        let key = format!("cut-{i}");
        if !pump.nodes[victim].is_primary(ringkv_core::Id::of_key(&key)) {
            continue;
        }
        let value = format!("acknowledged-{i}");
        let insert = Request::Insert {
            key: key.clone(),
            value: value.clone(),
        };
        let reply = pump.call(victim, insert);
        assert!(matches!(reply, Ok(Response::Inserted { .. })), "{reply:?}");
        want.insert(key, value);
    }
    assert!(
        want.len() >= 10,
        "the victim is primary of {} keys",
        want.len()
    );
    want
}

/// Under eventual consistency a primary acknowledges before it replicates. Cut off from
/// every other node it goes on acknowledging writes, is removed as failed, and on the
/// heal is told so: it rejoins keeping its entries and pushes them to its fellow
/// replicas, so every write it acknowledged is read again from every member.
#[test]
fn an_eventual_primary_cut_off_and_removed_keeps_what_it_acknowledged() {
    let mut pump =
        ring_with_failure_handling(cluster(2, Consistency::Eventual, Routing::Finger), 5);
    pump.run_for(SECOND);
    let victim = addr(3);
    pump.isolated.insert(victim.clone());
    let want = acknowledged_by(&mut pump, &victim);
    pump.run_for(8 * SECOND);
    let ring = pump.bootstrap_node().ring().unwrap();
    assert!(
        !ring.contains(ringkv_core::Id::of_addr(&victim)),
        "the victim was removed"
    );
    pump.isolated.clear();
    pump.run_for(10 * SECOND);
    assert!(pump.nodes[&victim].is_member(), "the victim joined again");
    assert_eq!(pump.bootstrap_node().ring().unwrap().len(), 5);
    assert_readable(&mut pump, &want);
}

/// Seeds for the random fault campaign; `FAULT_SEEDS=500` for a longer local run.
fn fault_seeds() -> u64 {
    std::env::var("FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// Writes keep arriving while up to k - 1 members crash and later restart; at the end
/// every acknowledged write is readable and placement is exact.
#[test]
fn random_crashes_and_restarts_lose_no_acknowledged_write() {
    use rand::{Rng, SeedableRng};
    for seed in 0..fault_seeds() {
        for consistency in [Consistency::Chain, Consistency::Eventual] {
            let k = 3;
            let mut pump = ring_with_failure_handling(cluster(k, consistency, Routing::Finger), 9);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut acked = BTreeMap::new();
            let mut down: Vec<String> = Vec::new();
            for round in 0..12 {
                // A burst of writes through random live members.
                let mut ids = Vec::new();
                for j in 0..15 {
                    let members = pump.members();
                    let via = members[rng.gen_range(0..members.len())].clone();
                    let (key, value) = (
                        format!("k{}", rng.gen_range(0..60)),
                        format!("r{round}-{j}"),
                    );
                    let id = pump.submit(
                        &via,
                        Request::Insert {
                            key: key.clone(),
                            value: value.clone(),
                        },
                    );
                    ids.push((via, id, key, value));
                }
                // A fault: crash a member (never more than k - 1 down), or restart one.
                if !down.is_empty() && rng.gen_bool(0.4) {
                    let back = down.remove(rng.gen_range(0..down.len()));
                    pump.join(&back);
                } else if down.len() < k - 1 {
                    let candidates: Vec<String> = pump
                        .members()
                        .into_iter()
                        .filter(|a| *a != addr(0))
                        .collect();
                    let victim = candidates[rng.gen_range(0..candidates.len())].clone();
                    pump.crash(&victim);
                    down.push(victim);
                }
                pump.run_for(rng.gen_range(1..6) * SECOND);
                for (via, id, key, value) in ids {
                    if let Some(Ok(Response::Inserted { .. })) = pump.take_reply(&via, id) {
                        // Later acknowledged writes to a key supersede earlier ones only if
                        // they are the latest version; keep every acknowledged value.
                        acked.entry(key).or_insert_with(Vec::new).push(value);
                    }
                }
            }
            for back in down.drain(..) {
                pump.join(&back);
            }
            pump.run_for(15 * SECOND);
            let tag = format!("{consistency} seed={seed}");
            assert!(pump.bootstrap_node().membership_idle(), "{tag}");
            pump.check_ring().unwrap_or_else(|e| panic!("{tag}: {e}"));
            pump.check_placement()
                .unwrap_or_else(|e| panic!("{tag}: {e}"));
            let reader = pump.members()[0].clone();
            for (key, values) in &acked {
                match pump.call(&reader, Request::Query { key: key.clone() }) {
                    // The surviving value must be one of the acknowledged ones (or a
                    // later unacknowledged write to the same key).
                    Ok(Response::Found { .. }) => {}
                    other => panic!("{tag}: acknowledged {key} ({values:?}) lost: {other:?}"),
                }
            }
        }
    }
}

/// A chain member cut off from the coordinator (a partition, or its process paused)
/// stops serving once its lease runs out, and serves again as soon as a heartbeat renews
/// it; it is not removed while it was away for less than the failure timeout.
#[test]
fn a_member_cut_off_past_its_lease_refuses_then_renews() {
    let timing = Timing::with_failure_handling();
    let config = cluster(1, Consistency::Chain, Routing::Finger);
    let mut pump = ring_with_failure_handling(config, 3);
    pump.run_for(SECOND);
    let away = addr(2);
    let key = (0..1000)
        .map(|i| format!("key-{i}"))
        .find(|k| pump.nodes[&away].is_primary(ringkv_core::Id::of_key(k)))
        .expect("some key has node 2 as its only replica");
    let insert = Request::Insert {
        key: key.clone(),
        value: "v".into(),
    };
    assert!(matches!(
        pump.call(&away, insert),
        Ok(Response::Inserted { .. })
    ));
    // Cut off for longer than the lease, shorter than the failure timeout.
    let node = pump.nodes.remove(&away).expect("node 2");
    let gap = timing.lease_ns() + SECOND / 4;
    assert!(gap < timing.failure_timeout_ns);
    pump.run_for(gap);
    pump.nodes.insert(away.clone(), node);
    let id = pump.submit(&away, Request::Query { key: key.clone() });
    match pump.take_reply(&away, id) {
        Some(Err(ringkv_core::RequestError::LeaseExpired { node })) => assert_eq!(node, away),
        other => panic!("a read at a tail without a lease: {other:?}"),
    }
    // Its request for a lease went out with that input; once answered, it serves again.
    pump.drive();
    match pump.call(&away, Request::Query { key }) {
        Ok(Response::Found { value, .. }) => assert_eq!(value, "v"),
        other => panic!("after the lease was renewed: {other:?}"),
    }
    assert!(pump.nodes[&away].is_member());
}

/// A chain member cut off from the coordinator group for longer than the failure timeout
/// (so without a lease) refuses a client's read or write of a key it does not hold at
/// once, before anything is sent, rather than forwarding it behind the cut where it would
/// wait out the request timeout: the client may retry through another node. Healed, it
/// learns it was removed, rejoins and serves again.
#[test]
fn a_member_cut_off_past_the_failure_timeout_refuses_at_once() {
    let timing = Timing::with_failure_handling();
    let config = cluster(2, Consistency::Chain, Routing::Finger);
    let mut pump = ring_with_failure_handling(config, 5);
    let want = load(&mut pump, 40);
    pump.run_for(SECOND);
    let away = addr(3);
    let elsewhere = want
        .keys()
        .find(|k| {
            let id = ringkv_core::Id::of_key(k);
            !pump.nodes[&away].is_primary(id)
        })
        .expect("a key node 3 is not primary of")
        .clone();
    pump.isolated.insert(away.clone());
    pump.run_for(timing.failure_timeout_ns + SECOND);
    let id = pump.submit(
        &away,
        Request::Query {
            key: elsewhere.clone(),
        },
    );
    match pump.take_reply(&away, id) {
        Some(Err(ringkv_core::RequestError::LeaseExpired { node })) => assert_eq!(node, away),
        other => panic!("a request at a cut-off member: {other:?}"),
    }
    pump.isolated.clear();
    pump.run_for(5 * SECOND);
    assert!(pump.nodes[&away].is_member());
    assert_readable(&mut pump, &want);
}

/// A crashed leader of the coordinator group is removed soon after the failure timeout
/// (1.3 s here, in an instant network): a seat stands for election as soon as the leader
/// has been quiet for more than a round (omnipaxos alone waits two to three rounds: 1.7
/// s), and the new leader waits only until its predecessor's leases have certainly run
/// out (`takeover_wait_ns`), not a whole failure timeout from taking over (1.9 s). Never
/// before the failure timeout, which leases rely on.
#[test]
fn a_crashed_leader_is_removed_within_two_tenths_of_a_second_of_the_failure_timeout() {
    let timing = Timing::with_failure_handling();
    let mut pump = Pump::with_timing(cluster(3, Consistency::Chain, Routing::Finger), timing);
    for i in 1..6 {
        pump.join(&addr(i));
    }
    pump.run_for(2 * SECOND);
    let leader = addr(0);
    pump.crash(&leader);
    let step = SECOND / 100;
    let removed_after = (1..=400).find_map(|i| {
        pump.run_for(step);
        let gone = pump.nodes.values().all(|n| {
            let v = n.view();
            v.succs.iter().chain(&v.preds).all(|m| *m.addr != *leader)
        });
        gone.then_some(i * step)
    });
    let removed_after = removed_after.expect("the crashed leader is removed");
    assert!(
        removed_after >= timing.failure_timeout_ns,
        "removed {removed_after} ns after the crash, sooner than the failure timeout"
    );
    assert!(
        removed_after <= timing.failure_timeout_ns + 2 * SECOND / 10,
        "removed {removed_after} ns after the crash"
    );
    assert!(pump.nodes.values().all(|n| n.is_member()));
}

/// A seat stands for election when the leader has been quiet for more than a round; a
/// leader that is heard (here over a network that reorders messages) is never deposed,
/// so its term does not change while the ring runs.
#[test]
fn a_leader_that_is_heard_keeps_its_term() {
    let timing = Timing::with_failure_handling();
    let config = cluster(3, Consistency::Chain, Routing::Finger);
    let mut pump = Pump::with_timing(config, timing).with_reordering(7);
    for i in 1..6 {
        pump.join(&addr(i));
    }
    pump.run_for(2 * SECOND);
    let leader = addr(0);
    let term = pump.nodes[&leader].leader_term();
    assert!(term.is_some(), "the bootstrap leads the group");
    for _ in 0..20 {
        pump.run_for(SECOND);
        assert_eq!(pump.nodes[&leader].leader_term(), term);
        let mut others = pump.nodes.iter().filter(|(a, _)| **a != leader);
        assert!(others.all(|(_, n)| n.leader_term().is_none()));
    }
}

/// A seat stands for election early only when a majority of the group has not heard
/// from the leader: one broken link between the leader and a seat (which the seats
/// around it do not share) does not depose a leader that the rest of its group hears,
/// and that may still be granting leases to members on its side.
#[test]
fn a_link_broken_between_the_leader_and_one_seat_does_not_depose_it() {
    let timing = Timing::with_failure_handling();
    let mut pump = Pump::with_timing(cluster(3, Consistency::Chain, Routing::Finger), timing);
    for i in 1..7 {
        pump.join(&addr(i));
    }
    pump.run_for(2 * SECOND);
    let leader = addr(0);
    let term = pump.nodes[&leader].leader_term();
    assert!(term.is_some(), "the bootstrap leads the group");
    let dir = pump.nodes[&leader]
        .directory()
        .expect("the leader holds a seat");
    let seats: Vec<String> = dir.seats.iter().map(|s| s.node.addr.to_string()).collect();
    assert_eq!(seats.len(), 5, "five seats on seven members");
    // Each link is broken for less than the failure timeout, after which the leader
    // would remove the seat it cannot hear (a false removal, but not a deposition).
    for seat in seats.iter().filter(|s| **s != leader) {
        pump.cut_links.insert((leader.clone(), seat.clone()));
        for _ in 0..10 {
            pump.run_for(SECOND / 10);
            let leading: Vec<&String> = pump
                .nodes
                .iter()
                .filter(|(_, n)| n.leader_term().is_some())
                .map(|(a, _)| a)
                .collect();
            assert_eq!(leading, [&leader], "the link to {seat} broken");
        }
        pump.cut_links.clear();
        pump.run_for(2 * SECOND);
    }
    assert_eq!(pump.nodes[&leader].leader_term(), term);
}
