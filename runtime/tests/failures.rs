//! With failure handling on, the runtime drives the core's heartbeat, failure-check and
//! anti-entropy timers on real tokio time: a node that crashes (stops without departing) is
//! removed from the ring and its keys stay readable, with `min(k, N)` copies restored.

mod common;

use std::time::Duration;

use common::{apis, copies, Api, Watchdog};
use ringkv_core::{ClusterConfig, Consistency, Routing};
use ringkv_runtime::{ClusterOptions, LocalCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_removed_and_nothing_is_lost() {
    let _dog = Watchdog::start(
        "a_crashed_node_is_removed_and_nothing_is_lost".into(),
        Duration::from_secs(600),
    );
    let config = ClusterConfig::new(3, Consistency::Chain, Routing::Finger).unwrap();
    let mut options = ClusterOptions::new(6, config);
    options.timing = common::fast_failure_handling();
    let mut cluster = LocalCluster::start(options).await.unwrap();
    let all = apis(&cluster);
    let keys = 120;
    for i in 0..keys {
        let (status, body) = all[i % 6]
            .insert(&format!("song-{i}"), &format!("v{i}"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let crashed = cluster.addrs()[4].clone();
    cluster.take_node(4).stop().await;
    let alive: Vec<Api> = all
        .iter()
        .filter(|a| !a.base.ends_with(&crashed))
        .cloned()
        .collect();

    let mut removed = false;
    for _ in 0..200 {
        // Until the bootstrap removes it, an overlay walk through the crashed node times out.
        let (status, body) = alive[0].get("/overlay").await;
        let overlay: Vec<String> = match status {
            200 => serde_json::from_value(body["overlay"].clone()).unwrap(),
            _ => Vec::new(),
        };
        if overlay.len() == 5
            && !overlay.contains(&crashed)
            && copies(&alive).await == (keys as u64, 2 * keys as u64)
        {
            removed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        removed,
        "overlay {:?}, copies {:?}",
        alive[0].overlay().await,
        copies(&alive).await
    );
    for i in 0..keys {
        let (status, body) = alive[i % 5].query(&format!("song-{i}")).await;
        assert_eq!(
            (status, body["value"].as_str()),
            (200, Some(format!("v{i}").as_str())),
            "{body}"
        );
    }
    cluster.shutdown().await;
}
