//! What the nodes say about their ring: the overlay one of them reports, a watch for the
//! removal of killed nodes, and the wait until the ring is whole with every node a member.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use ringkv_runtime::HttpClient;
use tokio::task::JoinHandle;

use crate::{ExperimentError, Result};

/// The ring in order from `via` (`GET /overlay`).
pub(super) async fn overlay(
    http: &HttpClient,
    via: &str,
) -> std::result::Result<Vec<String>, String> {
    ringkv_client::overlay(http, via)
        .await
        .map_err(|e| e.to_string())
}

/// A task polling the view of a live node (`GET /node`, every 25 ms) until its ring has
/// lost as many members as were killed: when the change that removed them reached it.
/// (The overlay walk would time out at every dead node still in the ring, which made
/// the seen removal up to half a second late.)
pub(super) struct RemovalWatch {
    /// Resolves to when the removal was seen, seconds since the start it was given.
    task: JoinHandle<f64>,
}

impl RemovalWatch {
    /// Start watching the overlay `via` reports for the removal of every node of `gone`;
    /// times are measured from `start`.
    pub(super) fn start(
        rt: &tokio::runtime::Runtime,
        via: &str,
        gone: &[String],
        start: Instant,
    ) -> RemovalWatch {
        let (via, gone) = (via.to_string(), gone.to_vec());
        let task = rt.spawn(async move {
            let poll = HttpClient::new(Duration::from_millis(500));
            let mut before: Option<u64> = None;
            loop {
                if let Ok(r) = poll.get(&format!("http://{via}/node")).await {
                    if let Some(size) = r.value()["ring_size"].as_u64().filter(|_| r.status == 200)
                    {
                        let before = *before.get_or_insert(size);
                        if size + gone.len() as u64 <= before {
                            return start.elapsed().as_secs_f64();
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        RemovalWatch { task }
    }

    /// When the removal was seen, waiting at most `grace` more for it; `None` if it was
    /// not seen by then (the watch ends either way).
    pub(super) fn seen(mut self, rt: &tokio::runtime::Runtime, grace: Duration) -> Option<f64> {
        let task = &mut self.task;
        let seen = rt.block_on(async { tokio::time::timeout(grace, task).await });
        self.task.abort();
        seen.ok().and_then(|joined| joined.ok())
    }
}

/// Whether the overlay `via` reports holds exactly `ring` and every node of it says it is
/// a member (`GET /health`).
async fn ring_complete(http: &HttpClient, via: &str, ring: &[String]) -> bool {
    let Ok(seen) = overlay(http, via).await else {
        return false;
    };
    let seen: BTreeSet<&String> = seen.iter().collect();
    if seen != ring.iter().collect::<BTreeSet<_>>() {
        return false;
    }
    for a in ring {
        match http.get(&format!("http://{a}/health")).await {
            Ok(r) if r.status == 200 && r.value()["member"] == serde_json::Value::Bool(true) => {}
            _ => return false,
        }
    }
    true
}

/// Poll until the overlay `via` reports is `ring` with every node a member, at most
/// `limit`, calling `tick` before each poll.
pub(super) fn wait_ring(
    rt: &tokio::runtime::Runtime,
    http: &HttpClient,
    via: &str,
    ring: &[String],
    limit: Duration,
    tick: impl Fn(),
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let quick = HttpClient::new(Duration::from_secs(2));
    while Instant::now() < deadline {
        tick();
        if rt.block_on(ring_complete(&quick, via, ring)) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    let seen = rt
        .block_on(overlay(http, via))
        .map_or_else(|e| e, |r| r.join(", "));
    Err(ExperimentError(format!(
        "the ring did not hold all {} nodes ({}) with every node a member within {} s (overlay from {via}: {seen})",
        ring.len(),
        ring.join(", "),
        limit.as_secs()
    )))
}
