//! Token-aware routing against a real ring on loopback: requests reach the node that
//! serves them, and the router learns the ring again when it changes.

use std::collections::BTreeSet;
use std::time::Duration;

use ringkv_client::op::{send, Op};
use ringkv_client::{ClientRouting, TokenRouter};
use ringkv_core::{ClusterConfig, Consistency, Routing as Lookup};
use ringkv_runtime::{ClusterOptions, HttpClient, LocalCluster, Outcome};
use ringkv_sim::check::OpKind;

async fn ring(nodes: usize, consistency: Consistency) -> LocalCluster {
    let config = ClusterConfig::new(3, consistency, Lookup::Finger).expect("k = 3 is valid");
    let mut options = ClusterOptions::new(nodes, config);
    options.base_port = 0;
    LocalCluster::start(options).await.expect("cluster starts")
}

fn op(f: OpKind, key: &str) -> Op {
    Op {
        f,
        key: key.to_string(),
        value: (f == OpKind::Write).then(|| format!("v-{key}")),
    }
}

/// Send `op` along the router's route and let it observe the answer.
async fn routed(router: &TokenRouter, http: &HttpClient, op: &Op) -> (String, Outcome) {
    let route = router.route(op);
    let outcome = send(http, &route.target, op).await;
    router.observe(&route, &outcome);
    (route.target, outcome)
}

/// Wait until the router has learned the ring `n` times since it started (bounded).
async fn relearned(router: &TokenRouter, n: u64) -> bool {
    for _ in 0..200 {
        if router.relearns() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn served_by(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Ok(served) => served.node.clone(),
        _ => None,
    }
}

#[tokio::test]
async fn requests_go_straight_to_the_serving_node() {
    let cluster = ring(5, Consistency::Chain).await;
    let http = HttpClient::new(Duration::from_secs(10));
    let router = TokenRouter::learn(http.clone(), vec![cluster.addrs()[2].clone()])
        .await
        .expect("learned");
    let map = router.map();
    assert_eq!(map.members(), cluster.overlay().await.expect("overlay"));
    assert!(map.is_settled());
    assert_eq!((map.k(), map.consistency()), (3, Consistency::Chain));
    assert_eq!(map.available().count(), 5);
    for i in 0..30 {
        let key = format!("song-{i}");
        let replicas: Vec<String> = map.replicas(&key).iter().map(|s| s.to_string()).collect();
        for f in [OpKind::Write, OpKind::Read] {
            let (target, outcome) = routed(&router, &http, &op(f, &key)).await;
            let (to, name) = match f {
                OpKind::Read => (&replicas[2], "the tail"),
                _ => (&replicas[0], "the head"),
            };
            assert_eq!(&target, to, "{key}: sent to {name}");
            assert_eq!(
                served_by(&outcome),
                Some(replicas[2].clone()),
                "{key}: tail answers"
            );
            if let Outcome::Ok(served) = &outcome {
                // The tail answers a read itself; a write's chain steps are not lookups.
                assert_eq!(served.hops.unwrap_or(0), 0, "{key}: {served:?}");
            }
        }
    }
    assert_eq!(router.relearns(), 0, "a settled ring is learned once");
    cluster.shutdown().await;
}

#[tokio::test]
async fn eventual_reads_are_spread_over_the_replicas() {
    let cluster = ring(5, Consistency::Eventual).await;
    let http = HttpClient::new(Duration::from_secs(10));
    let router = TokenRouter::learn(http.clone(), vec![cluster.addrs()[0].clone()])
        .await
        .expect("learned");
    let key = "Like a Rolling Stone";
    let (_, written) = routed(&router, &http, &op(OpKind::Write, key)).await;
    assert!(matches!(written, Outcome::Ok(_)), "{written:?}");
    let mut servers = BTreeSet::new();
    for _ in 0..9 {
        let (target, outcome) = routed(&router, &http, &op(OpKind::Read, key)).await;
        assert_eq!(
            served_by(&outcome),
            Some(target.clone()),
            "answered where sent"
        );
        servers.insert(target);
    }
    let replicas: BTreeSet<String> = router
        .map()
        .replicas(key)
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(servers, replicas);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_departed_or_stopped_node_is_routed_round_and_the_ring_learned_again() {
    let mut cluster = ring(5, Consistency::Chain).await;
    let http = HttpClient::new(Duration::from_secs(10));
    let router = TokenRouter::learn(http.clone(), vec![cluster.addrs()[0].clone()])
        .await
        .expect("learned");
    let departed = cluster.addrs()[3].clone();
    cluster.node(3).depart().await.expect("node 3 departs");
    assert!(cluster.wait_for_ring_size(4, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(150)).await; // past RELEARN_INTERVAL_MIN
    let key = (0..1000)
        .map(|i| format!("key-{i}"))
        .find(|k| router.map().replicas(k)[0] == departed)
        .expect("some key's head was node 3");
    // The first request goes to the departed node, which refuses it (not_joined); the
    // router learns the ring again and the next one goes to the new head.
    let (first, _) = routed(&router, &http, &op(OpKind::Write, &key)).await;
    assert_eq!(first, departed);
    assert!(relearned(&router, 1).await, "learned again");
    assert_eq!(router.map().members().len(), 4);
    let (second, outcome) = routed(&router, &http, &op(OpKind::Write, &key)).await;
    assert_ne!(second, departed);
    assert!(matches!(outcome, Outcome::Ok(_)), "{outcome:?}");

    // A node that stops answering is routed round before the ring notices.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopped = cluster.addrs()[1].clone();
    cluster.take_node(1).stop().await;
    let key = (0..1000)
        .map(|i| format!("title-{i}"))
        .find(|k| router.map().replicas(k)[2] == stopped)
        .expect("some key's tail (where its reads go) is node 1");
    let (first, outcome) = routed(&router, &http, &op(OpKind::Read, &key)).await;
    assert_eq!(first, stopped);
    assert!(!matches!(outcome, Outcome::Ok(_)));
    assert!(!router.map().is_available(&stopped));
    let (second, _) = routed(&router, &http, &op(OpKind::Read, &key)).await;
    assert_ne!(second, stopped);
    assert_eq!(
        ClientRouting::default(),
        ClientRouting::Random,
        "the library's default"
    );
    cluster.stop().await;
}
