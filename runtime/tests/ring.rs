//! A real ring on loopback: every request goes through HTTP, every message between nodes
//! too. Named for what the API and the Chord/chain-replication design promise.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{apis, copies, Api};
use ringkv_core::{ClusterConfig, Consistency, Id, Routing};
use ringkv_runtime::{ClusterOptions, LocalCluster};

fn config(k: usize, consistency: Consistency) -> ClusterConfig {
    ClusterConfig::new(k, consistency, Routing::Finger).unwrap()
}

async fn ring(nodes: usize, k: usize, consistency: Consistency) -> LocalCluster {
    LocalCluster::start(ClusterOptions::new(nodes, config(k, consistency)))
        .await
        .expect("cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_insert_query_delete_and_query_all() {
    let cluster = ring(10, 3, Consistency::Chain).await;
    let apis = apis(&cluster);
    let songs = [
        ("Like a Rolling Stone", "1965"),
        ("AC/DC: Back in Black?", "hard rock & roll"),
        ("Für Elise", "Beethoven"),
        ("*", "a key named star"),
        ("100%", "pure"),
    ];
    for (i, (key, value)) in songs.iter().enumerate() {
        let (status, body) = apis[i % 10].insert(key, value).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["key"], *key);
        assert_eq!(body["value"], *value);
        let node = body["node"].as_str().unwrap();
        assert_eq!(body["message"], format!("Inserted '{key}' at node {node}"));
    }
    for (i, (key, value)) in songs.iter().enumerate() {
        let (status, body) = apis[(i + 3) % 10].query(key).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["value"], *value);
        assert!(body["message"]
            .as_str()
            .unwrap()
            .starts_with("Song found at node "));
    }
    // An insert of an existing key replaces its value.
    let (status, _) = apis[7].insert("Like a Rolling Stone", "Highway 61").await;
    assert_eq!(status, 200);
    assert_eq!(
        apis[2].query("Like a Rolling Stone").await.1["value"],
        "Highway 61"
    );

    let all: BTreeMap<String, String> = apis[5].query_all().await.into_iter().collect();
    assert_eq!(all.len(), songs.len(), "every key once: {all:?}");
    assert_eq!(all["AC/DC: Back in Black?"], "hard rock & roll");

    let (status, body) = apis[9].delete("Für Elise").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("Deleted 'Für Elise' from node "));
    let (status, body) = apis[1].query("Für Elise").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "Song 'Für Elise' not found");
    let (status, _) = apis[4].delete("Für Elise").await;
    assert_eq!(status, 404);
    assert_eq!(apis[0].query_all().await.len(), songs.len() - 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_lists_the_ring_in_id_order_from_the_bootstrap() {
    let cluster = ring(10, 3, Consistency::Eventual).await;
    let apis = apis(&cluster);
    let overlay = apis[6].overlay().await;
    assert_eq!(overlay.len(), 10);
    assert_eq!(overlay[0], cluster.addrs()[0]);
    let boot = Id::of_addr(&overlay[0]);
    let distance = |a: &String| Id::of_addr(a).wrapping_sub(boot);
    assert!(
        overlay
            .windows(2)
            .all(|w| distance(&w[0]) < distance(&w[1])),
        "{overlay:?}"
    );
    // Each node's successor is the next in the overlay.
    for (i, addr) in overlay.iter().enumerate() {
        let node = Api::new(addr).node().await;
        assert_eq!(node["successor"]["addr"], overlay[(i + 1) % 10], "{node}");
        assert_eq!(node["k"], 3);
        assert_eq!(node["consistency"], "eventual");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_has_min_k_n_copies() {
    for (nodes, k) in [(10, 3), (3, 5)] {
        let cluster = ring(nodes, k, Consistency::Chain).await;
        let apis = apis(&cluster);
        let keys = 60;
        for i in 0..keys {
            let (status, body) = apis[i % nodes]
                .insert(&format!("song {i}"), &format!("v{i}"))
                .await;
            assert_eq!(status, 200, "{body}");
        }
        let copies_each = k.min(nodes) as u64;
        let (primary, replica) = copies(&apis).await;
        assert_eq!(primary, keys as u64, "N={nodes} k={k}");
        assert_eq!(replica, keys as u64 * (copies_each - 1), "N={nodes} k={k}");
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depart_and_rejoin_move_data_with_nothing_lost() {
    let cluster = ring(10, 3, Consistency::Chain).await;
    let apis = apis(&cluster);
    let keys = 200;
    for i in 0..keys {
        let (status, body) = apis[i % 10]
            .insert(&format!("key-{i}"), &format!("value-{i}"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for i in [3, 7, 8] {
        let (status, body) = apis[i].post("/depart", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["node"], cluster.addrs()[i]);
        let (status, body) = apis[i].post("/depart", None).await;
        assert_eq!(status, 409, "departing twice: {body}");
        let (status, body) = apis[i].query("key-1").await;
        assert_eq!(status, 409, "a departed node refuses queries: {body}");
    }
    let remaining: Vec<Api> = [0, 1, 2, 4, 5, 6, 9]
        .iter()
        .map(|&i| apis[i].clone())
        .collect();
    let settled = settle(&remaining, 7, (keys as u64, 2 * keys as u64)).await;
    assert!(
        settled,
        "overlay {:?} copies {:?}",
        apis[0].overlay().await,
        copies(&remaining).await
    );
    for i in 0..keys {
        let (status, body) = remaining[i % 7].query(&format!("key-{i}")).await;
        assert_eq!(
            (status, body["value"].as_str()),
            (200, Some(format!("value-{i}").as_str())),
            "{body}"
        );
    }
    // A departed chain node hands what it held to the keys' heads as hints (the last
    // copies of acknowledged writes, had their other holders crashed mid-hand-over):
    // every one is acknowledged by a head soon after.
    for i in [3, 7, 8] {
        let mut hints = apis[i].node().await["hints"].as_u64();
        for _ in 0..100 {
            if hints == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            hints = apis[i].node().await["hints"].as_u64();
        }
        assert_eq!(hints, Some(0), "node {i} still holds hints");
    }
    for i in [8, 3] {
        let (status, body) = apis[i].post("/join", None).await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = apis[i].post("/join", None).await;
        assert_eq!(status, 409, "joining twice");
    }
    // A joiner is answered when it has committed; its neighbours commit a moment later.
    let settled = settle(&apis, 9, (keys as u64, 2 * keys as u64)).await;
    assert!(
        settled,
        "overlay {:?} copies {:?}",
        apis[0].overlay().await,
        copies(&apis).await
    );
    assert_eq!(apis[3].query_all().await.len(), keys);
    for i in (0..keys).step_by(7) {
        let (status, body) = apis[8].query(&format!("key-{i}")).await;
        assert_eq!(status, 200, "{body}");
    }
    // The bootstrap refuses to leave while others remain.
    let (status, body) = apis[0].post("/depart", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "bootstrap_cannot_depart");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_4xx_and_change_nothing() {
    let cluster = ring(3, 2, Consistency::Chain).await;
    let apis = apis(&cluster);
    let api = &apis[1];
    assert_eq!(api.insert("kept", "1").await.0, 200);
    let long_key = "k".repeat(2000);
    let big_value = format!(
        "{{\"key\":\"big\",\"value\":\"{}\"}}",
        "v".repeat(1_100_000)
    );
    let huge_body = format!("{{\"key\":\"huge\",\"value\":\"{}\"}}", "v".repeat(3 << 20));
    let cases: Vec<(u16, (u16, serde_json::Value))> = vec![
        (400, api.insert(&long_key, "v").await),
        (400, api.post("/insert", Some(&big_value)).await),
        (
            400,
            api.post("/insert", Some("{\"key\":\"\",\"value\":\"v\"}"))
                .await,
        ),
        (400, api.post("/insert", Some("{not json")).await),
        (422, api.post("/insert", Some("{\"key\":\"k\"}")).await),
        (413, api.post("/insert", Some(&huge_body)).await),
        (400, api.post("/insert/%FF%FE/v", None).await),
        (404, api.post("/insert/only-a-key", None).await),
        (404, api.get("/nowhere").await),
        (405, api.get("/insert/k/v").await),
        (405, api.post("/query/kept", None).await),
        (404, api.query("absent").await),
        (404, api.delete("absent").await),
        (409, api.post("/join", None).await),
        (409, apis[0].post("/depart", None).await),
        (
            400,
            api.post("/internal/message", Some("[{\"bogus\":1}")).await,
        ),
        // The internal route takes bodies far above the client limit (snapshots).
        (400, api.post("/internal/message", Some(&huge_body)).await),
    ];
    for (i, (want, (status, body))) in cases.iter().enumerate() {
        assert_eq!(status, want, "case {i}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "case {i}: {body}"
        );
    }
    assert_eq!(
        api.query_all().await,
        vec![("kept".to_string(), "1".to_string())]
    );
    // A node that never joined refuses data requests with 409.
    let idle = ringkv_runtime::NodeServer::start(ringkv_runtime::NodeOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        ringkv_runtime::Role::Member {
            bootstrap: cluster.addrs()[0].clone(),
        },
    ))
    .await
    .unwrap();
    let (status, body) = Api::new(idle.addr()).insert("k", "v").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("not_joined")),
        "{body}"
    );
    idle.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_503_and_a_lost_peer_is_504_not_a_hang() {
    let mut options = ClusterOptions::new(2, config(1, Consistency::Chain));
    options.timing.request_timeout_ns = 300_000_000;
    let mut cluster = LocalCluster::start(options).await.unwrap();
    let apis = apis(&cluster);
    // Crash node 1 (no depart): requests for its keys find no one and time out.
    let addrs = cluster.addrs();
    let crashed = &addrs[1];
    // Ephemeral ports can give the crashed node a small arc: look far enough.
    let key = (0..10_000_000)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let (a, b) = (Id::of_addr(&addrs[0]), Id::of_addr(crashed));
            ringkv_core::id::in_open_closed(Id::of_key(k), a, b)
        })
        .expect("a key of the crashed node");
    let started = std::time::Instant::now();
    stop_node(&mut cluster, 1).await;
    let (status, body) = apis[0].insert(&key, "v").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    cluster.stop().await;

    // A node that accepts no outstanding request answers 503 and keeps nothing.
    let mut options = ClusterOptions::new(1, config(1, Consistency::Chain));
    options.limits.pending_requests_max = 0;
    let cluster = LocalCluster::start(options).await.unwrap();
    let api = Api::new(&cluster.addrs()[0]);
    let (status, body) = api.insert("k", "v").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("overloaded")),
        "{body}"
    );
    cluster.shutdown().await;
}

/// Wait (at most 10 s) until the overlay has `size` nodes and the nodes hold `want`
/// (primary, replica) copies.
async fn settle(apis: &[Api], size: usize, want: (u64, u64)) -> bool {
    for _ in 0..200 {
        if apis[0].overlay().await.len() == size && copies(apis).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn stop_node(cluster: &mut LocalCluster, index: usize) {
    cluster.take_node(index).stop().await;
}
