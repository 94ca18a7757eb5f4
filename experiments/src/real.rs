//! The real backend: an in-process 10-node ring on loopback (`ringkv_runtime::LocalCluster`,
//! every node on its own ephemeral port, talking real HTTP) and closed-loop HTTP clients
//! that run the reference files against it, recording a history in the checker's format.
//!
//! Each client has at most one request outstanding. Its history process id is its index,
//! and after an operation whose outcome is unknown (`info`) it continues under a fresh id,
//! as the checker requires. Times are monotonic nanoseconds since the phase began, read
//! under the lock that appends the event, so they never go backwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;

use ringkv_client::{perform, ProcessIds, Recorder};
use ringkv_core::{ClusterConfig, Consistency, Routing, Timing};
use ringkv_runtime::{ClusterOptions, HttpClient, LocalCluster, Outcome};
use ringkv_sim::check::HistoryEvent;
use ringkv_sim::Latency;

use crate::workloads::Planned;
use crate::{ExperimentError, Result};

/// Per-request client timeout.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A running ring and a client pool for it.
pub struct Ring {
    cluster: LocalCluster,
    addrs: Vec<String>,
    client: HttpClient,
}

impl Ring {
    /// Start `nodes` nodes on 127.0.0.1 (ephemeral ports) with finger routing, the given
    /// model and k, failure handling on (as `dht cluster` runs them), and wait until the
    /// bootstrap reports the whole ring. With a `link_latency` every node-to-node message
    /// waits a draw from it before it is sent (`dht cluster --link-latency`); the clients'
    /// requests to their node and its answers are not delayed.
    pub async fn start(
        nodes: usize,
        k: usize,
        model: Consistency,
        link_latency: Option<Latency>,
    ) -> Result<Ring> {
        Ring::start_paced(nodes, k, model, link_latency, None).await
    }

    /// [`Ring::start`] with every node's processor emulated (`dht cluster --service`):
    /// each handles at most one request or message per `service`, so that each node of
    /// the ring has a capacity of its own, as on machines of their own.
    pub async fn start_paced(
        nodes: usize,
        k: usize,
        model: Consistency,
        link_latency: Option<Latency>,
        service: Option<Duration>,
    ) -> Result<Ring> {
        let config = ClusterConfig::new(k, model, Routing::Finger)
            .map_err(|e| ExperimentError(e.to_string()))?;
        let mut options = ClusterOptions::new(nodes, config);
        options.timing = Timing::with_failure_handling();
        options.actor.peers.link_latency = link_latency;
        options.actor.service = service;
        let cluster = LocalCluster::start(options)
            .await
            .map_err(|e| ExperimentError(format!("cannot start a {nodes}-node ring: {e}")))?;
        if !cluster
            .wait_for_ring_size(nodes, Duration::from_secs(30))
            .await
        {
            let mut cluster = cluster;
            cluster.stop().await;
            return Err(ExperimentError(format!(
                "the {nodes}-node ring did not form within 30 s"
            )));
        }
        let addrs = cluster.addrs();
        Ok(Ring {
            cluster,
            addrs,
            client: HttpClient::new(CLIENT_TIMEOUT),
        })
    }

    /// The nodes' `host:port` in ring order from the bootstrap, as the bootstrap reports it.
    pub async fn overlay(&self) -> Result<Vec<String>> {
        self.cluster
            .overlay()
            .await
            .map_err(|e| ExperimentError(format!("cannot read the ring's overlay: {e}")))
    }

    /// The nodes' `host:port`, in the order they were started (node 0 is the bootstrap).
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Stop every node (no departs: the ring is thrown away).
    pub async fn stop(mut self) {
        self.cluster.stop().await;
    }

    /// Run one phase: client `c` sends `scripts[c]` in order, each operation to the node
    /// it names, all clients concurrently. Returns when every client is done.
    pub async fn run_phase(&self, scripts: Vec<Vec<(usize, Planned)>>) -> Phase {
        self.run_phase_from_afar(scripts, None).await
    }

    /// [`Ring::run_phase`] with clients `client_link` away from every node: each request
    /// waits one draw from it before it is sent, and its answer another before the client
    /// sees it (counted in the operation's latency), as for clients on machines of their
    /// own. Client `c` draws from a generator seeded with `c`.
    pub async fn run_phase_from_afar(
        &self,
        scripts: Vec<Vec<(usize, Planned)>>,
        client_link: Option<Latency>,
    ) -> Phase {
        let recorder = Arc::new(Recorder::in_memory());
        let processes = Arc::new(ProcessIds::new(scripts.len()));
        let cpu_before = process_cpu_ns();
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(scripts.len());
        for (client, script) in scripts.into_iter().enumerate() {
            let http = self.client.clone();
            let addrs = self.addrs.clone();
            let recorder = recorder.clone();
            let processes = processes.clone();
            tasks.push(tokio::spawn(async move {
                let mut process = client as u64;
                let mut done = Vec::with_capacity(script.len());
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(client as u64);
                let mut link = || {
                    let ns = client_link.map_or(0, |l| l.sample(&mut rng));
                    Duration::from_nanos(ns)
                };
                for (node, planned) in script {
                    let addr = &addrs[node % addrs.len()];
                    let op = &planned.op;
                    let (there, back) = (link(), link());
                    if !there.is_zero() {
                        tokio::time::sleep(there).await;
                    }
                    let mut performed = perform(&http, &recorder, process, addr, op).await;
                    if !back.is_zero() {
                        tokio::time::sleep(back).await;
                    }
                    performed.latency += there + back;
                    if matches!(performed.outcome, Outcome::Info(_)) {
                        process = processes.fresh();
                    }
                    done.push(Record {
                        client,
                        node,
                        op_id: performed.op_id,
                        latency_ns: performed.latency.as_nanos() as u64,
                        outcome: performed.outcome,
                        planned,
                    });
                }
                done
            }));
        }
        let mut records = Vec::new();
        for task in tasks {
            match task.await {
                Ok(done) => records.extend(done),
                Err(err) => tracing::error!(%err, "a client task failed"),
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu_seconds = match (cpu_before, process_cpu_ns()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
            _ => None,
        };
        Phase {
            records,
            seconds,
            cpu_seconds,
            events: recorder.take_events(),
        }
    }
}

/// One executed operation.
#[derive(Clone, Debug)]
pub struct Record {
    /// Client index.
    pub client: usize,
    /// Node index it was sent to.
    pub node: usize,
    /// Its id in the phase's history (`History::ops[op_id]`).
    pub op_id: usize,
    /// What and where from.
    pub planned: Planned,
    /// How it ended.
    pub outcome: Outcome,
    /// Latency, ns.
    pub latency_ns: u64,
}

/// What one phase did.
#[derive(Debug, Default)]
pub struct Phase {
    /// Every operation, grouped by client, in each client's order.
    pub records: Vec<Record>,
    /// Wall time from the first request to the last answer, seconds.
    pub seconds: f64,
    /// CPU time this process (nodes and clients) used meanwhile, seconds (Linux only).
    pub cpu_seconds: Option<f64>,
    /// The history, in the checker's event format and order.
    pub events: Vec<HistoryEvent>,
}

/// CPU time used so far by this process's live threads, ns: the sum of the first field of
/// `/proc/self/task/*/schedstat` (nanosecond resolution, unlike `/proc/self/stat`).
/// `None` where that is not available.
pub fn process_cpu_ns() -> Option<u64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (total > 0).then_some(total)
}

/// A multi-threaded tokio runtime for the nodes and the clients (one worker per core).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ringkv-exp")
        .build()
        .map_err(|e| ExperimentError(format!("cannot start the tokio runtime: {e}")))
}
