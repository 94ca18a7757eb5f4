//! The real backend: an in-process 10-node ring on loopback (`ringkv_runtime::LocalCluster`,
//! every node on its own ephemeral port, talking real HTTP) and closed-loop HTTP clients
//! that run the reference files against it, recording a history in the checker's format.
//!
//! Each client has at most one request outstanding. Its history process id is its index,
//! and after an operation whose outcome is unknown (`info`) it continues under a fresh id,
//! as the checker requires. Times are monotonic nanoseconds since the phase began, read
//! under the lock that appends the event, so they never go backwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringkv_core::{ClusterConfig, Consistency, Routing, Timing};
use ringkv_runtime::{
    encode_segment, outcome, ClusterOptions, DataOp, HttpClient, LocalCluster, Outcome,
};
use ringkv_sim::check::{EventType, HistoryEvent, OpKind};

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
    /// bootstrap reports the whole ring.
    pub async fn start(nodes: usize, k: usize, model: Consistency) -> Result<Ring> {
        let config = ClusterConfig::new(k, model, Routing::Finger)
            .map_err(|e| ExperimentError(e.to_string()))?;
        let mut options = ClusterOptions::new(nodes, config);
        options.timing = Timing::with_failure_handling();
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
        let recorder = Arc::new(Recorder::new());
        let next_process = Arc::new(AtomicU64::new(scripts.len() as u64));
        let cpu_before = process_cpu_ns();
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(scripts.len());
        for (client, script) in scripts.into_iter().enumerate() {
            let http = self.client.clone();
            let addrs = self.addrs.clone();
            let recorder = recorder.clone();
            let next_process = next_process.clone();
            tasks.push(tokio::spawn(async move {
                let mut process = client as u64;
                let mut done = Vec::with_capacity(script.len());
                for (node, planned) in script {
                    let base = format!("http://{}", addrs[node % addrs.len()]);
                    let record =
                        execute(&http, &base, &recorder, process, client, node, planned).await;
                    if matches!(record.outcome, Outcome::Info(_)) {
                        process = next_process.fetch_add(1, Ordering::Relaxed);
                    }
                    done.push(record);
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
        let events =
            std::mem::take(&mut *recorder.events.lock().unwrap_or_else(|e| e.into_inner()));
        Phase {
            records,
            seconds,
            cpu_seconds,
            events,
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

struct Recorder {
    start: Instant,
    events: Mutex<Vec<HistoryEvent>>,
    invokes: AtomicU64,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
            invokes: AtomicU64::new(0),
        }
    }

    /// Append an event; for an invoke, return its operation id (operations are numbered
    /// in invoke order, as `History` numbers them).
    fn record(&self, event: impl FnOnce(u64) -> HistoryEvent) -> usize {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let time = self.start.elapsed().as_nanos() as u64;
        let event = event(time);
        let id = if event.kind == EventType::Invoke {
            self.invokes.fetch_add(1, Ordering::Relaxed)
        } else {
            self.invokes.load(Ordering::Relaxed)
        };
        events.push(event);
        id as usize
    }
}

async fn execute(
    http: &HttpClient,
    base: &str,
    recorder: &Recorder,
    process: u64,
    client: usize,
    node: usize,
    planned: Planned,
) -> Record {
    let op = &planned.op;
    let op_id =
        recorder.record(|t| HistoryEvent::invoke(process, op.f, &op.key, op.value.as_deref(), t));
    let started = Instant::now();
    let key = encode_segment(&op.key);
    let result = match op.f {
        OpKind::Write => {
            let value = encode_segment(op.value.as_deref().unwrap_or_default());
            http.post(&format!("{base}/insert/{key}/{value}"), None)
                .await
        }
        OpKind::Read => http.get(&format!("{base}/query/{key}")).await,
        OpKind::Delete => http.delete(&format!("{base}/delete/{key}")).await,
    };
    let latency_ns = started.elapsed().as_nanos() as u64;
    let outcome = outcome(data_op(op.f), result);
    recorder.record(|t| {
        let (kind, value) = match &outcome {
            Outcome::Ok(served) => {
                let value = if op.f == OpKind::Write {
                    op.value.clone()
                } else {
                    served.value.clone()
                };
                (EventType::Ok, value)
            }
            Outcome::Fail(_) => (EventType::Fail, None),
            Outcome::Info(_) => (EventType::Info, None),
        };
        let mut event = HistoryEvent::new(process, kind, op.f, &op.key, value.as_deref(), t);
        if let Outcome::Ok(served) = &outcome {
            event.node = served.node.clone();
            event.hops = served.hops;
        }
        event
    });
    Record {
        client,
        node,
        op_id,
        planned,
        outcome,
        latency_ns,
    }
}

/// The operation the rule in [`ringkv_runtime::outcome`] classifies.
fn data_op(f: OpKind) -> DataOp {
    match f {
        OpKind::Write => DataOp::Insert,
        OpKind::Read => DataOp::Query,
        OpKind::Delete => DataOp::Delete,
    }
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
