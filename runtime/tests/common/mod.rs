//! Helpers shared by the integration tests: a JSON client bound to one node.
#![allow(dead_code)]

use std::time::Duration;

use ringkv_core::Timing;
use ringkv_runtime::{encode_segment, HttpClient, LocalCluster};
use serde_json::Value;

/// One node's API over real HTTP.
#[derive(Clone)]
pub struct Api {
    pub client: HttpClient,
    pub base: String,
}

impl Api {
    pub fn new(addr: &str) -> Api {
        Api {
            client: HttpClient::new(Duration::from_secs(20)),
            base: format!("http://{addr}"),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let reply = match self.client.get(&url).await {
            Ok(reply) => reply,
            // A pooled keep-alive connection the server had just closed (e.g. after
            // answering an oversized body early): the request never arrived; send again.
            Err(_) => self.client.get(&url).await.expect("GET"),
        };
        (reply.status, reply.value())
    }

    pub async fn post(&self, path: &str, body: Option<&str>) -> (u16, Value) {
        let body = body.map(|b| bytes::Bytes::from(b.to_string()));
        let url = format!("{}{path}", self.base);
        let reply = match self.client.post(&url, body.clone()).await {
            Ok(reply) => reply,
            // As in `get`: only a connection closed before the request was read fails
            // this way; tests never rely on a POST failing at the transport level.
            Err(_) => self.client.post(&url, body).await.expect("POST"),
        };
        (reply.status, reply.value())
    }

    pub async fn delete_path(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let reply = match self.client.delete(&url).await {
            Ok(reply) => reply,
            Err(_) => self.client.delete(&url).await.expect("DELETE"),
        };
        (reply.status, reply.value())
    }

    pub async fn insert(&self, key: &str, value: &str) -> (u16, Value) {
        self.post(
            &format!("/insert/{}/{}", encode_segment(key), encode_segment(value)),
            None,
        )
        .await
    }

    pub async fn query(&self, key: &str) -> (u16, Value) {
        self.get(&format!("/query/{}", encode_segment(key))).await
    }

    pub async fn delete(&self, key: &str) -> (u16, Value) {
        self.delete_path(&format!("/delete/{}", encode_segment(key)))
            .await
    }

    pub async fn query_all(&self) -> Vec<(String, String)> {
        let (status, body) = self.get("/query/*").await;
        assert_eq!(status, 200, "{body}");
        body["pairs"]
            .as_array()
            .expect("pairs")
            .iter()
            .map(|p| {
                (
                    p["key"].as_str().unwrap().to_string(),
                    p["value"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub async fn overlay(&self) -> Vec<String> {
        let (status, body) = self.get("/overlay").await;
        assert_eq!(status, 200, "{body}");
        body["overlay"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    pub async fn node(&self) -> Value {
        let (status, body) = self.get("/node").await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

pub fn apis(cluster: &LocalCluster) -> Vec<Api> {
    cluster.addrs().iter().map(|a| Api::new(a)).collect()
}

/// Total (primary, replica) live keys over the given nodes, as `GET /node` reports them.
pub async fn copies(apis: &[Api]) -> (u64, u64) {
    let mut primary = 0;
    let mut replica = 0;
    for api in apis {
        let node = api.node().await;
        if node["phase"] == "active" {
            primary += node["keys_primary"].as_u64().unwrap();
            replica += node["keys_replica"].as_u64().unwrap();
        }
    }
    (primary, replica)
}

/// Failure handling on loopback time scales: heartbeats every 100 ms, a member silent for
/// 600 ms removed, anti-entropy every 500 ms, requests answered within 2 s.
pub fn fast_failure_handling() -> Timing {
    Timing {
        heartbeat_interval_ns: 100_000_000,
        failure_timeout_ns: 600_000_000,
        membership_timeout_ns: 2_000_000_000,
        anti_entropy_interval_ns: 500_000_000,
        request_timeout_ns: 2_000_000_000,
        ..Timing::with_failure_handling()
    }
}

/// Ends the whole test process, naming the test and the step it was at, if the test is
/// still running after `limit`: a test that hangs (a stuck runtime thread stops every
/// timeout inside the test) fails in minutes with a clue, instead of holding the CI
/// until its own limit.
pub struct Watchdog {
    step: std::sync::Arc<std::sync::Mutex<String>>,
    done: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    pub fn start(test: String, limit: Duration) -> Watchdog {
        let step = std::sync::Arc::new(std::sync::Mutex::new("start".to_string()));
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let seen = step.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
                let step = seen.lock().map(|s| s.clone()).unwrap_or_default();
                // Straight to the stream: the test harness captures `eprintln!`.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n{test}: still running after {limit:?}, at step `{step}`; ending the test process"
                );
                std::process::exit(99);
            }
        });
        Watchdog { step, done }
    }

    /// Name the step the test is at.
    pub fn step(&self, step: &str) {
        if let Ok(mut s) = self.step.lock() {
            *s = step.to_string();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.done.send(());
    }
}
