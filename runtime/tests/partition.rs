//! The test-only partition filter (`POST /admin/partition`), over real HTTP on loopback:
//! refused unless the node allows fault injection and the request carries the cluster
//! secret; once set, messages between the two nodes of a ring stop in either direction
//! (on the connections already open), a chain write that needs the other node is not
//! acknowledged and the drops are counted; once healed, writes go through again.

mod common;

use std::time::{Duration, Instant};

use common::{apis, Api};
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
