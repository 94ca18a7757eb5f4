//! The load behind `dht bench`: concurrent closed-loop clients against a real ring, with
//! throughput, latency percentiles and, optionally, a history in the checker's JSON Lines
//! format (`docs/history.md`), so that real traces can be checked with `dht check`.
//!
//! Each client is one process in the history: it has at most one request outstanding and
//! continues under a fresh process id after an operation whose outcome is unknown. With
//! [`ClientRouting::Random`] each client is bound to one node of the overlay (clients are spread
//! round-robin over all nodes) and the ring routes its requests; with [`ClientRouting::Token`]
//! every request goes straight to the node that serves its key ([`TokenRouter`]).
//!
//! [`run`] takes [`LoadOptions`] and returns a [`LoadReport`].

mod compare;
mod report;
mod worker;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_runtime::HttpClient;
use serde::Serialize;

use crate::history::{ProcessIds, Recorder};
use crate::ring::{overlay, OverlayError};
use crate::router::{ClientRouting, TokenRouter};
use worker::{run_phase, Phase, Shared};

pub use compare::{Comparison, Ratios};
pub use report::{Latency, LoadReport};

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// Inserts of unique keys and values.
    Insert,
    /// Queries of keys inserted beforehand (the preload is not timed).
    Query,
    /// Reads and writes (and optionally deletes) over a few keys, like the reference
    /// design's `requests` files; every written value is unique.
    Requests,
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "insert" | "inserts" | "write" | "writes" => Ok(Mix::Insert),
            "query" | "queries" | "read" | "reads" => Ok(Mix::Query),
            "requests" | "mixed" => Ok(Mix::Requests),
            _ => Err(format!("unknown mix '{s}': use insert, query or requests")),
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mix::Insert => "insert",
            Mix::Query => "query",
            Mix::Requests => "requests",
        })
    }
}

/// A load run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// `host:port` of any node; the overlay is read from it.
    pub target: String,
    /// Timed operations in total.
    pub ops: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Operation mix.
    pub mix: Mix,
    /// Distinct keys: preloaded keys for `query` (default 1000), keys touched by
    /// `requests` (default 4). Ignored by `insert`.
    pub keys: Option<usize>,
    /// Fraction of `requests` operations that write.
    pub write_ratio: f64,
    /// Fraction of `requests` operations that delete.
    pub delete_ratio: f64,
    /// Seed of the clients' choices.
    pub seed: u64,
    /// Per-request client timeout.
    pub timeout: Duration,
    /// Where to write the history, if anywhere.
    pub history: Option<PathBuf>,
    /// Prefix of generated keys, so runs against the same ring do not collide.
    pub key_prefix: String,
    /// How clients pick the node each request goes to.
    pub routing: ClientRouting,
}

impl LoadOptions {
    /// `ops` operations of `mix` by `clients` clients against `target`, no history.
    pub fn new(target: impl Into<String>, mix: Mix, ops: u64, clients: usize) -> LoadOptions {
        LoadOptions {
            target: target.into(),
            ops,
            clients,
            mix,
            keys: None,
            write_ratio: 0.2,
            delete_ratio: 0.0,
            seed: 1,
            timeout: Duration::from_secs(15),
            history: None,
            key_prefix: String::new(),
            routing: ClientRouting::Random,
        }
    }

    /// Distinct keys the mix uses (see [`LoadOptions::keys`]).
    fn key_count(&self) -> usize {
        match (self.keys, self.mix) {
            (Some(k), _) => k.max(1),
            (None, Mix::Query) => 1000,
            (None, _) => 4,
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The overlay could not be read from the target.
    #[error("cannot read the overlay from {target}: {reason}")]
    Overlay {
        /// The target.
        target: String,
        /// Why.
        reason: String,
    },
    /// The history file could not be written.
    #[error("cannot write the history to {path}: {source}")]
    History {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Nonsense options.
    #[error("{0}")]
    Options(String),
}
/// Run the load and return what it measured.
pub async fn run(options: &LoadOptions) -> Result<LoadReport, LoadError> {
    if options.clients == 0 {
        return Err(LoadError::Options("--clients must be at least 1".into()));
    }
    let client = HttpClient::new(options.timeout);
    let (nodes, router) = match options.routing {
        ClientRouting::Random => (read_overlay(&client, &options.target).await?, None),
        ClientRouting::Token => {
            let seeds = vec![options.target.clone()];
            let router = TokenRouter::learn(client.clone(), seeds)
                .await
                .map_err(|e| LoadError::Overlay {
                    target: options.target.clone(),
                    reason: e.to_string(),
                })?;
            (router.map().members().to_vec(), Some(router))
        }
    };
    let recorder = match &options.history {
        None => Recorder::discard(),
        Some(path) => Recorder::to_file(path).map_err(|source| LoadError::History {
            path: path.clone(),
            source,
        })?,
    };
    let shared = Arc::new(Shared {
        client,
        nodes: nodes.clone(),
        router,
        recorder,
        processes: ProcessIds::new(options.clients),
        options: options.clone(),
    });
    let mut preload_s = 0.0;
    if options.mix == Mix::Query {
        let started = Instant::now();
        let keys = options.key_count() as u64;
        let preload = run_phase(&shared, keys, Phase::Preload).await;
        if preload.errors.values().sum::<u64>() > 0 {
            tracing::warn!(errors = ?preload.errors, "some preload inserts failed");
        }
        preload_s = started.elapsed().as_secs_f64();
    }
    let started = Instant::now();
    let tally = run_phase(&shared, options.ops, Phase::Timed).await;
    let elapsed_s = started.elapsed().as_secs_f64();
    let history_events = shared
        .recorder
        .finish()
        .map_err(|source| LoadError::History {
            path: options.history.clone().unwrap_or_default(),
            source,
        })?;
    Ok(LoadReport {
        mix: options.mix,
        routing: options.routing,
        relearns: shared.router.as_ref().map_or(0, TokenRouter::relearns),
        nodes,
        clients: options.clients,
        ops: tally.ops,
        ok: tally.ok,
        not_found: tally.not_found,
        errors: tally.errors,
        elapsed_s,
        ops_per_s: tally.ops as f64 / elapsed_s.max(1e-9),
        latency: Latency::of(tally.latencies_us),
        mean_hops: tally.hops as f64 / tally.hops_counted.max(1) as f64,
        preload_s,
        history_events,
    })
}

async fn read_overlay(client: &HttpClient, target: &str) -> Result<Vec<String>, LoadError> {
    let failed = |reason: String| LoadError::Overlay {
        target: target.to_string(),
        reason,
    };
    let nodes = overlay(client, target).await.map_err(|e| match e {
        OverlayError::Status { status, body } => failed(format!("status {status}: {body}")),
        OverlayError::Transport(e) => failed(e.to_string()),
    })?;
    if nodes.is_empty() {
        return Err(failed("the overlay is empty".into()));
    }
    Ok(nodes)
}
