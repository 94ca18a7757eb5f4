//! The test-only partition filter (`POST /admin/partition`), over real HTTP on loopback:
//! refused unless the node allows fault injection and the request carries the cluster
//! secret; once set, messages between the two nodes of a ring stop in either direction
//! (on the connections already open), a chain write that needs the other node is not
//! acknowledged and the drops are counted; once healed, writes go through again. Cut one
//! way only (`"direction": "send"`), a node that the others no longer hear is removed
//! while it still hears them, and rejoins once healed.

mod common;

use std::time::{Duration, Instant};

use common::{apis, Api, Watchdog};
use ringkv_core::{ClusterConfig, Consistency, Routing, Timing};
use ringkv_runtime::{ClusterOptions, HttpClient, LocalCluster};
use serde_json::Value;

const SECRET: &str = "s3cret";

async fn ring(secret: Option<&str>, allow: bool) -> LocalCluster {
    let config = ClusterConfig::new(2, Consistency::Chain, Routing::Finger).expect("k = 2");
    let mut options = ClusterOptions::new(2, config);
    options.cluster_secret = secret.map(String::from);
    options.allow_fault_injection = allow;
    // No failure handling (nothing is removed while cut off), and a short request timeout
    // so that a write that cannot complete is answered within the test.
    options.timing = Timing {
        request_timeout_ns: 1_000_000_000,
        ..Timing::default()
    };
    LocalCluster::start(options).await.expect("a 2-node ring")
}

/// `POST /admin/partition` with `body`, as `bearer` (none: no Authorization header).
async fn partition(addr: &str, bearer: Option<&str>, body: &str) -> (u16, Value) {
    let client = HttpClient::new(Duration::from_secs(10)).with_bearer(bearer);
    let url = format!("http://{addr}/admin/partition");
    let reply = client
        .post(&url, Some(body.to_string().into()))
        .await
        .expect("POST /admin/partition");
    (reply.status, reply.value())
}

fn block(addrs: &[&str]) -> String {
    serde_json::json!({ "block": addrs }).to_string()
}

/// `ringkv_messages_dropped_partition_total{direction}` of the node at `addr`.
async fn dropped(addr: &str, direction: &str) -> u64 {
    let client = HttpClient::new(Duration::from_secs(10));
    let reply = client
        .get(&format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics");
    let prefix = format!("ringkv_messages_dropped_partition_total{{direction=\"{direction}\"}} ");
    reply
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in the metrics of {addr}"))
}

/// Write `value` to keys k0..k19, in turn through each of `apis`, each until acknowledged.
async fn write_all(apis: &[Api], value: &str) {
    for i in 0..20 {
        let (api, key) = (&apis[i % apis.len()], format!("k{i}"));
        insert_eventually(api, &key, value, Duration::from_secs(10)).await;
    }
}

/// Wait, for at most `limit`, until the ring an overlay walk from `api` finds satisfies
/// `done` (a walk that fails, timing out through a member whose messages are lost, finds
/// nothing).
async fn wait_for_overlay(api: &Api, done: impl Fn(&[String]) -> bool, limit: Duration) {
    let started = Instant::now();
    loop {
        let (status, body) = api.get("/overlay").await;
        let overlay: Vec<String> = match status {
            200 => serde_json::from_value(body["overlay"].clone()).unwrap_or_default(),
            _ => Vec::new(),
        };
        if done(&overlay) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "overlay {overlay:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Insert through `api` until it is acknowledged, for at most `limit`.
async fn insert_eventually(api: &Api, key: &str, value: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let (status, body) = api.insert(key, value).await;
        if status == 200 {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "insert {key}={value} not acknowledged within {limit:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_is_off_unless_allowed_and_needs_the_secret() {
    // Not allowed: 404 whatever the request.
    let off = ring(Some(SECRET), false).await;
    let a = off.addrs()[0].clone();
    let (status, body) = partition(&a, Some(SECRET), &block(&[])).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "fault_injection_disabled", "{body}");
    assert!(body["error"].as_str().is_some(), "{body}");
    off.shutdown().await;

    // Allowed, with a secret: 403 without it or with another, 400 on a bad body.
    let on = ring(Some(SECRET), true).await;
    let [a, b] = [on.addrs()[0].clone(), on.addrs()[1].clone()];
    for bearer in [None, Some("wrong")] {
        let (status, body) = partition(&a, bearer, &block(&[&b])).await;
        assert_eq!(status, 403, "{bearer:?}: {body}");
        assert_eq!(body["code"], "forbidden", "{body}");
    }
    for bad in [r#"{"block": "x"}"#, r#"{"block": ["no-port"]}"#, "nope", ""] {
        let (status, body) = partition(&a, Some(SECRET), bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["code"], "bad_request", "{body}");
    }
    // Nothing was blocked by the refused requests.
    let api = Api::new(&a);
    let (status, body) = api.get("/admin/partition").await;
    assert_eq!(status, 403, "{body}");
    let client = HttpClient::new(Duration::from_secs(10)).with_bearer(Some(SECRET));
    let reply = client
        .get(&format!("http://{a}/admin/partition"))
        .await
        .expect("GET");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.value()["blocked"], serde_json::json!([]));
    let (status, body) = partition(&a, Some(SECRET), &block(&[&b])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blocked"], serde_json::json!([b]), "{body}");
    on.shutdown().await;

    // Allowed, without a secret: the flag alone opens it.
    let open = ring(None, true).await;
    let a = open.addrs()[0].clone();
    let (status, body) = partition(&a, None, &block(&[])).await;
    assert_eq!(status, 200, "{body}");
    open.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_stops_messages_both_ways_until_healed() {
    let _dog = Watchdog::start(
        "a_partition_stops_messages_both_ways_until_healed".into(),
        Duration::from_secs(600),
    );
    let cluster = ring(Some(SECRET), true).await;
    let addrs = cluster.addrs();
    let (a, b) = (addrs[0].as_str(), addrs[1].as_str());
    let apis = apis(&cluster);
    // Every key's chain holds both nodes: writes cross between them, on connections that
    // are open from now on.
    insert_eventually(&apis[0], "song", "v0", Duration::from_secs(10)).await;
    assert_eq!(dropped(a, "send").await, 0);
    assert_eq!(dropped(b, "receive").await, 0);

    // Only b drops (what a sends arrives on the open connection and is dropped there).
    let (status, body) = partition(b, Some(SECRET), &block(&[a])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = apis[0].insert("song", "v1").await;
    assert_ne!(status, 200, "acknowledged across the partition: {body}");
    assert!(dropped(b, "receive").await > 0);

    // Only a drops, before sending.
    let (status, body) = partition(b, Some(SECRET), &block(&[])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = partition(a, Some(SECRET), &block(&[b])).await;
    assert_eq!(status, 200, "{body}");
    let before = dropped(a, "send").await;
    let (status, body) = apis[0].insert("song", "v2").await;
    assert_ne!(status, 200, "acknowledged across the partition: {body}");
    let (status, body) = apis[1].insert("song", "v3").await;
    assert_ne!(status, 200, "acknowledged across the partition: {body}");
    assert!(dropped(a, "send").await > before);

    // Healed: writes through either node are acknowledged again, and read back.
    let (status, body) = partition(a, Some(SECRET), &block(&[])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blocked"], serde_json::json!([]), "{body}");
    insert_eventually(&apis[1], "song", "v4", Duration::from_secs(10)).await;
    insert_eventually(&apis[0], "song", "v5", Duration::from_secs(10)).await;
    for api in &apis {
        let (status, body) = api.query("song").await;
        assert_eq!(
            (status, body["value"].as_str()),
            (200, Some("v5")),
            "{body}"
        );
    }
    cluster.shutdown().await;
}

/// A one-way link failure on real nodes: everything one member sends to the others is
/// lost, everything they send it arrives. With failure handling on, the ring removes it
/// (nobody hears it) while writes go on through the others; the member learns of its
/// removal (the removal notice reaches it), and once healed it joins again and every
/// write reads back through every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_sends_are_lost_is_removed_and_rejoins_once_healed() {
    let _dog = Watchdog::start(
        "a_member_whose_sends_are_lost_is_removed_and_rejoins_once_healed".into(),
        Duration::from_secs(600),
    );
    let config = ClusterConfig::new(2, Consistency::Chain, Routing::Finger).expect("k = 2");
    let mut options = ClusterOptions::new(4, config);
    options.cluster_secret = Some(SECRET.into());
    options.allow_fault_injection = true;
    options.timing = common::fast_failure_handling();
    let cluster = LocalCluster::start(options).await.expect("a 4-node ring");
    let addrs = cluster.addrs();
    let victim = addrs[3].clone();
    let others: Vec<&str> = addrs[..3].iter().map(String::as_str).collect();
    let apis = apis(&cluster);
    write_all(&apis, "v0").await;

    let cut = serde_json::json!({ "block": others, "direction": "send" }).to_string();
    let (status, body) = partition(&victim, Some(SECRET), &cut).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["direction"], "send", "{body}");
    // Removed by the others, who no longer hear it; writes go on through them.
    let removed = |o: &[String]| o.len() == 3 && !o.contains(&victim);
    wait_for_overlay(&apis[0], removed, Duration::from_secs(20)).await;
    write_all(&apis[..3], "v1").await;
    assert!(dropped(&victim, "send").await > 0);
    assert_eq!(dropped(&victim, "receive").await, 0);

    // Healed: it joins again, and every write reads back through every node.
    let (status, body) = partition(&victim, Some(SECRET), &block(&[])).await;
    assert_eq!(status, 200, "{body}");
    let back = |o: &[String]| o.len() == 4 && o.contains(&victim);
    wait_for_overlay(&apis[0], back, Duration::from_secs(30)).await;
    for i in 0..20 {
        for api in &apis {
            let started = Instant::now();
            loop {
                let (status, body) = api.query(&format!("k{i}")).await;
                if (status, body["value"].as_str()) == (200, Some("v1")) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "k{i} through {}: {status} {body}",
                    api.base
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    cluster.shutdown().await;
}
