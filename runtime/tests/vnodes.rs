//! Virtual nodes on real HTTP: a process of several ring positions places no two
//! replicas of a key on itself, so a whole process that crashes loses nothing, under
//! eventual consistency and chain replication alike.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{apis, copies, Api, Watchdog};
use ringkv_core::{ClusterConfig, Consistency, Routing, Timing};
use ringkv_runtime::{ClusterOptions, LocalCluster};

const PROCESSES: usize = 4;
const VNODES: usize = 3;

/// Longest each wait of the test may take: twelve nodes in one test process on a loaded
/// 2-core machine (the CI runs the other tests beside it) are slow, not stuck.
const WAIT_MAX: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_process_of_virtual_nodes_crashes_and_nothing_is_lost() {
    whole_process_crashes(Consistency::Eventual).await;
}

/// The same under chain replication: each key's chain runs over two processes, and the
/// chains the crash broke are rebuilt from the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_process_of_a_chain_ring_crashes_and_nothing_is_lost() {
    whole_process_crashes(Consistency::Chain).await;
}

async fn whole_process_crashes(consistency: Consistency) {
    // Each wait is bounded: far past their sum, the test is stuck.
    let dog = Watchdog::start(
        format!("whole_process_crashes({consistency:?})"),
        Duration::from_secs(600),
    );
    let config = ClusterConfig::new(2, consistency, Routing::Finger)
        .unwrap()
        .with_vnodes(VNODES as u32)
        .unwrap();
    let mut options = ClusterOptions::new(PROCESSES, config);
    // A failure timeout long enough that a loaded machine does not remove live
    // positions by mistake (twelve actors share two cores with the other tests).
    options.timing = Timing {
        request_timeout_ns: 2_000_000_000,
        ..Timing::with_failure_timeout(2_000_000_000)
    };
    let mut cluster = LocalCluster::start(options).await.unwrap();
    dog.step("ring formed");
    let all = apis(&cluster);
    assert_eq!(all.len(), PROCESSES * VNODES);

    // Each process's positions name its first position as their process.
    let mut processes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, api) in all.iter().enumerate() {
        let node = api.node().await;
        assert_eq!(node["vnodes"], VNODES as u64, "{node}");
        let process = node["process"].as_str().unwrap().to_string();
        assert_eq!(process, cluster.addrs()[i - i % VNODES], "{node}");
        processes.entry(process).or_default().push(api.base.clone());
    }
    assert_eq!(processes.len(), PROCESSES);
    assert!(processes.values().all(|p| p.len() == VNODES));
    assert_eq!(all[0].overlay().await.len(), PROCESSES * VNODES);

    dog.step("inserting");
    let keys = 150;
    for i in 0..keys {
        let (status, body) = all[(i * 7) % all.len()]
            .insert(&format!("song-{i}"), &format!("v{i}"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    dog.step("waiting for every key's two copies");
    // Every key on its two replicas before the crash (eventual consistency replicates
    // after the acknowledgement).
    let mut replicated = false;
    let start = Instant::now();
    while start.elapsed() < WAIT_MAX {
        if copies(&all).await == (keys as u64, keys as u64) {
            replicated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replicated, "copies {:?}", copies(&all).await);

    // Process 1 (all three of its positions) crashes at once.
    dog.step("stopping process 1");
    let crashed: Vec<String> = cluster.addrs()[VNODES..2 * VNODES].to_vec();
    for _ in 0..VNODES {
        cluster.take_node(VNODES).stop().await;
    }
    let alive: Vec<Api> = all
        .iter()
        .filter(|a| !crashed.iter().any(|c| a.base.ends_with(c.as_str())))
        .cloned()
        .collect();
    dog.step("waiting for the repair");
    let left = (PROCESSES - 1) * VNODES;
    let mut repaired = false;
    let start = Instant::now();
    while start.elapsed() < WAIT_MAX {
        // Until the crashed positions are removed, an overlay walk through them fails.
        let (status, body) = alive[0].get("/overlay").await;
        let overlay: Vec<String> = match status {
            200 => serde_json::from_value(body["overlay"].clone()).unwrap_or_default(),
            _ => Vec::new(),
        };
        if overlay.len() == left
            && !overlay.iter().any(|n| crashed.contains(n))
            && copies(&alive).await == (keys as u64, keys as u64)
        {
            repaired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        repaired,
        "overlay {:?}, copies {:?}",
        alive[0].overlay().await,
        copies(&alive).await
    );
    dog.step("querying every key");
    for i in 0..keys {
        let (status, body) = alive[i % alive.len()].query(&format!("song-{i}")).await;
        assert_eq!(
            (status, body["value"].as_str()),
            (200, Some(format!("v{i}").as_str())),
            "song-{i}: {body}"
        );
    }
    dog.step("shutting the ring down");
    cluster.shutdown().await;
}
