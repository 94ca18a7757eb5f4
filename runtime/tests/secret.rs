//! Internal endpoints accept only cluster members: with a cluster secret, a node-to-node
//! message without it (or with a wrong one) gets 401 and changes nothing.

mod common;

use std::time::Duration;

use common::{apis, Api};
use ringkv_core::{ClusterConfig, Consistency, Routing};
use ringkv_runtime::{ClusterOptions, HttpClient, LocalCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_messages_need_the_cluster_secret() {
    let config = ClusterConfig::new(2, Consistency::Chain, Routing::Finger).unwrap();
    let mut options = ClusterOptions::new(3, config);
    options.cluster_secret = Some("s3cret".into());
    let cluster = LocalCluster::start(options)
        .await
        .expect("a ring with a secret forms");
    let apis = apis(&cluster);
    // The members, which share the secret, work as usual.
    let (status, body) = apis[1].insert("Imagine", "1971").await;
    assert_eq!(status, 200, "{body}");
    // A forged replica write for the same key, without and with a wrong secret.
    let forged = format!(
        r#"[{{"from":{{"id":"{}","addr":"{}"}},"msg":{{"type":"replicate","entries":[["Imagine",{{"value":"forged","version":{{"counter":999999,"node":"{}"}}}}]],"ttl":0}}}}]"#,
        ringkv_core::Id::of_addr(&cluster.addrs()[0]),
        cluster.addrs()[0],
        ringkv_core::Id::of_addr(&cluster.addrs()[0]),
    );
    for secret in [None, Some("wrong")] {
        for addr in cluster.addrs() {
            let client = HttpClient::new(Duration::from_secs(5)).with_bearer(secret);
            let url = format!("http://{addr}/internal/message");
            let reply = client
                .post(&url, Some(forged.clone().into()))
                .await
                .expect("POST");
            assert_eq!(reply.status, 401, "{secret:?} at {addr}: {}", reply.text());
            assert!(reply.value()["error"]
                .as_str()
                .unwrap_or("")
                .contains("cluster secret"));
        }
    }
    for api in &apis {
        let (status, body) = api.query("Imagine").await;
        assert_eq!(
            (status, body["value"].as_str()),
            (200, Some("1971")),
            "unchanged"
        );
    }
    let (status, _) = Api::new(&cluster.addrs()[2]).get("/health").await;
    assert_eq!(status, 200);
    cluster.shutdown().await;
}
