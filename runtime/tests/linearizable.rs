//! Chain replication promises linearizable reads and writes per key while the ring is
//! stable: concurrent clients on every node of a real ring, their history recorded by the
//! load client and checked by the simulator's checker.

use ringkv_client::load::{self, LoadOptions, Mix};
use ringkv_core::{ClusterConfig, Consistency, Routing};
use ringkv_runtime::{ClusterOptions, LocalCluster};
use ringkv_sim::check::{check_linearizability, CheckOptions, History, Verdict};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_replication_histories_are_linearizable() {
    let config = ClusterConfig::new(3, Consistency::Chain, Routing::Finger).unwrap();
    let cluster = LocalCluster::start(ClusterOptions::new(10, config))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("ringkv-lin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chain.jsonl");
    let mut options = LoadOptions::new(cluster.addrs()[3].clone(), Mix::Requests, 3000, 16);
    options.keys = Some(4);
    options.write_ratio = 0.3;
    options.delete_ratio = 0.05;
    options.history = Some(path.clone());
    let report = load::run(&options).await.expect("load runs");
    assert_eq!(report.nodes.len(), 10);
    assert_eq!(report.ops, 3000);
    assert_eq!(report.error_count(), 0, "{report}");
    assert_eq!(report.history_events, 6000);

    let history =
        History::parse(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    assert_eq!(history.ops.len(), 3000);
    let verdict = check_linearizability(&history, &CheckOptions::default());
    assert_eq!(
        verdict.verdict,
        Verdict::Linearizable,
        "{:?}",
        verdict.counterexamples().next()
    );
    std::fs::remove_dir_all(&dir).unwrap();
    cluster.shutdown().await;
}
