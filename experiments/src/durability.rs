//! What a data directory costs (issue 13): insert throughput of a ring whose nodes persist
//! every write before they forward or acknowledge it (`--data-dir`), against the same ring
//! in memory, measured side by side in one run; and how long a node holding many keys
//! takes to come back from its data directory.
//!
//! - **Throughput** (`durability_throughput.csv`): two 5-node rings in this process, one
//!   in memory and one with a data directory per node (in the system's temp dir), the same
//!   k; for each client count and repetition the same insert load (unique keys, token
//!   routing, as `dht bench --mix insert`) runs against one ring and then the other, so
//!   that both see the same machine load. The ratio is the data-directory ring's
//!   median over the memory ring's median.
//! - **Restart** (`durability_restart.csv`): a one-node ring (k = 1) with a data
//!   directory is loaded with `--restart-keys` keys (default 10⁶), stopped without
//!   departing, and started again from its directory: the time to open and read the
//!   store, and the time until it acknowledges a write again (a restarted bootstrap first
//!   waits three heartbeats for members of its ring), and a read of loaded keys.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringkv_client::load::{self, LoadOptions, LoadReport, Mix};
use ringkv_client::ClientRouting;
use ringkv_core::{ClusterConfig, Consistency, Routing, Timing};
use ringkv_runtime::{
    encode_segment, ClusterOptions, HttpClient, LocalCluster, NodeOptions, NodeServer, Role,
};
use serde::Serialize;

use crate::runner::{fixed, progress_bar, write_csv, Options, Report, Table};
use crate::{ExperimentError, Result};

/// Nodes of each throughput ring.
const NODES: usize = 5;

/// One timed load against one ring: a row of `durability_throughput.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputRow {
    /// Replication factor.
    pub k: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// `memory` or `data-dir`.
    pub mode: String,
    /// Repetition.
    pub rep: usize,
    /// Inserts acknowledged.
    pub ok: u64,
    /// Acknowledged inserts per second.
    pub ops_per_s: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Data-directory transactions over the ring during the load (0 in memory).
    pub commits: u64,
    /// Persist outputs those transactions carried (their mean batch is persists/commits).
    pub persists: u64,
}

/// The restart of a node holding many keys: the row of `durability_restart.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct RestartRow {
    /// Keys the node held.
    pub keys: u64,
    /// Seconds the load took (acknowledged inserts / s in `load_ops_per_s`).
    pub load_s: f64,
    /// Acknowledged inserts per second while loading.
    pub load_ops_per_s: f64,
    /// Size of the store (the files of its directory), bytes.
    pub file_bytes: u64,
    /// Seconds from the start call to a node that has read its whole store.
    pub open_s: f64,
    /// Seconds from the start call until it acknowledged a write again.
    pub serving_s: f64,
    /// Loaded keys read back after the restart (a sample).
    pub sampled: u64,
    /// Of those, how many were found with their value.
    pub found: u64,
}

/// Run the experiment with the client counts of `--quick` or the default.
pub fn run(options: &Options) -> Result<Report> {
    let started = Instant::now();
    let quick = options.quick;
    let reps = options.reps.unwrap_or(if quick { 1 } else { 3 });
    let clients: &[usize] = if quick { &[16] } else { &[16, 64, 256] };
    let ops: u64 = if quick { 2_000 } else { 20_000 };
    let restart_keys = options
        .restart_keys
        .unwrap_or(if quick { 5_000 } else { 1_000_000 });
    let ks: Vec<usize> = options.ks.iter().copied().filter(|&k| k <= NODES).collect();
    let scratch = std::env::temp_dir().join(format!("ringkv-durability-{}", std::process::id()));
    let bar = progress_bar(
        options,
        "durability",
        (ks.len() * clients.len() * reps * 2 + 1) as u64,
    );
    let nodes_rt = runtime(None)?;
    let client_rt = runtime(Some(1))?;
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    for &k in &ks {
        let dir = scratch.join(format!("k{k}"));
        let memory = nodes_rt.block_on(start_ring(k, None))?;
        let disk = match nodes_rt.block_on(start_ring(k, Some(dir.clone()))) {
            Ok(ring) => ring,
            Err(err) => {
                nodes_rt.block_on(memory.shutdown());
                return Err(err);
            }
        };
        for &c in clients {
            for rep in 0..reps {
                for (mode, ring) in [("memory", &memory), ("data-dir", &disk)] {
                    bar.set_message(format!("k = {k}, {c} clients, {mode}"));
                    let before = storage_counts(ring);
                    let report = client_rt.block_on(insert_load(
                        &ring.addrs()[0],
                        ops,
                        c,
                        &format!("k{k}-c{c}-r{rep}-"),
                    ));
                    let after = storage_counts(ring);
                    bar.inc(1);
                    let report = match report {
                        Ok(r) => r,
                        Err(err) => {
                            warnings.push(format!("k = {k}, {c} clients, {mode}: {err}"));
                            continue;
                        }
                    };
                    if report.error_count() > 0 {
                        warnings.push(format!(
                            "k = {k}, {c} clients, {mode}: {} inserts failed ({:?})",
                            report.error_count(),
                            report.errors
                        ));
                    }
                    rows.push(row(k, c, mode, rep, &report, before, after));
                }
            }
        }
        nodes_rt.block_on(async {
            memory.shutdown().await;
            disk.shutdown().await;
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    bar.set_message(format!("restart with {restart_keys} keys"));
    let restart = restart_time(
        &nodes_rt,
        &client_rt,
        &scratch.join("restart"),
        restart_keys,
    );
    bar.inc(1);
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&scratch);
    let restart = restart?;

    std::fs::create_dir_all(&options.out)
        .map_err(|e| ExperimentError(format!("cannot create {}: {e}", options.out.display())))?;
    let throughput_csv = options.path("durability_throughput.csv");
    let restart_csv = options.path("durability_restart.csv");
    write_csv(&throughput_csv, &rows)?;
    write_csv(&restart_csv, std::slice::from_ref(&restart))?;
    if restart.found < restart.sampled {
        warnings.push(format!(
            "after the restart {} of {} sampled keys were read back",
            restart.found, restart.sampled
        ));
    }

    let mut table = Table::new(
        "durability: inserts/s of a 5-node ring with data directories against the same ring in memory (medians, side by side)",
        &["k", "clients", "memory", "data-dir", "ratio", "mean batch"],
    );
    for &k in &ks {
        for &c in clients {
            let median = |mode: &str| {
                let mut v: Vec<f64> = rows
                    .iter()
                    .filter(|r| r.k == k && r.clients == c && r.mode == mode)
                    .map(|r| r.ops_per_s)
                    .collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(0.0)
            };
            let (m, d) = (median("memory"), median("data-dir"));
            let (commits, persists) = rows
                .iter()
                .filter(|r| r.k == k && r.clients == c && r.mode == "data-dir")
                .fold((0, 0), |(c, p), r| (c + r.commits, p + r.persists));
            table.row(vec![
                k.to_string(),
                c.to_string(),
                fixed(m, 0),
                fixed(d, 0),
                fixed(if m > 0.0 { d / m } else { 0.0 }, 2),
                fixed(persists as f64 / commits.max(1) as f64, 1),
            ]);
        }
    }
    table.row(vec![
        format!("restart: {} keys", restart.keys),
        format!("{:.1} MB store", restart.file_bytes as f64 / 1e6),
        format!("open {:.2} s", restart.open_s),
        format!("serving {:.2} s", restart.serving_s),
        format!("{}/{} read", restart.found, restart.sampled),
        String::new(),
    ]);
    Ok(Report {
        name: "durability",
        files: vec![throughput_csv, restart_csv],
        table,
        warnings,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| ExperimentError(format!("cannot start the tokio runtime: {e}")))
}

fn config(k: usize) -> Result<ClusterConfig> {
    ClusterConfig::new(k, Consistency::Chain, Routing::Finger)
        .map_err(|e| ExperimentError(e.to_string()))
}

/// A 5-node chain ring with failure handling (as `dht cluster` runs), in memory or with
/// a data directory per node under `dir`.
async fn start_ring(k: usize, dir: Option<PathBuf>) -> Result<LocalCluster> {
    let mut options = ClusterOptions::new(NODES, config(k)?);
    options.base_port = 0;
    options.timing = Timing::with_failure_handling();
    options.data_dir = dir;
    let cluster = LocalCluster::start(options)
        .await
        .map_err(|e| ExperimentError(format!("cannot start a {NODES}-node ring: {e}")))?;
    if !cluster
        .wait_for_ring_size(NODES, Duration::from_secs(30))
        .await
    {
        let mut cluster = cluster;
        cluster.stop().await;
        return Err(ExperimentError(format!(
            "the {NODES}-node ring did not form within 30 s"
        )));
    }
    Ok(cluster)
}

/// The ring's storage commits and persists so far.
fn storage_counts(ring: &LocalCluster) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    ring.nodes().iter().fold((0, 0), |(c, p), n| {
        let s = &n.metrics().storage;
        (c + s.commits.load(Relaxed), p + s.persists.load(Relaxed))
    })
}

async fn insert_load(
    target: &str,
    ops: u64,
    clients: usize,
    prefix: &str,
) -> std::result::Result<LoadReport, String> {
    let mut options = LoadOptions::new(target, Mix::Insert, ops, clients);
    options.routing = ClientRouting::Token;
    options.key_prefix = prefix.to_string();
    load::run(&options).await.map_err(|e| e.to_string())
}

fn row(
    k: usize,
    clients: usize,
    mode: &str,
    rep: usize,
    report: &LoadReport,
    before: (u64, u64),
    after: (u64, u64),
) -> ThroughputRow {
    ThroughputRow {
        k,
        clients,
        mode: mode.to_string(),
        rep,
        ok: report.ok,
        ops_per_s: report.ops_per_s,
        p50_ms: report.latency.p50_us as f64 / 1e3,
        p99_ms: report.latency.p99_us as f64 / 1e3,
        commits: after.0 - before.0,
        persists: after.1 - before.1,
    }
}

/// A port free now, so that the node comes back at the address its data directory names.
fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ExperimentError(format!("no free port: {e}")))
}

fn node_options(port: u16, dir: &Path) -> Result<NodeOptions> {
    let mut options = NodeOptions::new(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Role::Bootstrap(config(1)?),
    );
    options.timing = Timing::with_failure_handling();
    options.recover = true;
    options.data_dir = Some(dir.to_path_buf());
    Ok(options)
}

fn restart_time(
    nodes_rt: &tokio::runtime::Runtime,
    client_rt: &tokio::runtime::Runtime,
    dir: &Path,
    keys: u64,
) -> Result<RestartRow> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let client = HttpClient::new(Duration::from_secs(15));
    let server = nodes_rt
        .block_on(NodeServer::start(node_options(port, dir)?))
        .map_err(|e| ExperimentError(format!("cannot start the restart node: {e}")))?;
    let serving = client_rt.block_on(until_serving(&client, &addr, Duration::from_secs(30)));
    if serving.is_none() {
        nodes_rt.block_on(server.stop());
        return Err(ExperimentError(
            "the restart node did not take writes".into(),
        ));
    }
    let loaded = client_rt.block_on(insert_load(&addr, keys, 128, "restart-"));
    nodes_rt.block_on(server.stop());
    let loaded = loaded.map_err(|e| ExperimentError(format!("loading {keys} keys: {e}")))?;
    if loaded.error_count() > 0 {
        return Err(ExperimentError(format!(
            "loading {keys} keys: {} inserts failed",
            loaded.error_count()
        )));
    }
    let file_bytes = tree_bytes(&dir.join(ringkv_runtime::storage::STORE_DIR));

    let t0 = Instant::now();
    let server = nodes_rt
        .block_on(NodeServer::start(node_options(port, dir)?))
        .map_err(|e| ExperimentError(format!("cannot restart the node: {e}")))?;
    let open_s = t0.elapsed().as_secs_f64();
    let serving = client_rt.block_on(until_serving(&client, &addr, Duration::from_secs(120)));
    let serving_s = t0.elapsed().as_secs_f64();
    let sample: Vec<u64> = (0..100).map(|i| i * (loaded.ok / 100).max(1)).collect();
    let found = client_rt.block_on(async {
        let mut found = 0;
        for n in &sample {
            let key = format!("restart-key-{n}");
            let url = format!("http://{addr}/query/{}", encode_segment(&key));
            if let Ok(r) = client.get(&url).await {
                if r.status == 200 && r.value()["value"] == format!("value-{n}") {
                    found += 1;
                }
            }
        }
        found
    });
    nodes_rt.block_on(server.stop());
    if serving.is_none() {
        return Err(ExperimentError(format!(
            "the node holding {keys} keys did not take writes within 120 s of its restart"
        )));
    }
    Ok(RestartRow {
        keys: loaded.ok,
        load_s: loaded.elapsed_s,
        load_ops_per_s: loaded.ops_per_s,
        file_bytes,
        open_s,
        serving_s,
        sampled: sample.len() as u64,
        found,
    })
}

/// Bytes of the files under `dir` (the store is a directory of journals and tables).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(items) = std::fs::read_dir(dir) else {
        return 0;
    };
    items
        .flatten()
        .map(|item| match item.metadata() {
            Ok(m) if m.is_dir() => tree_bytes(&item.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Insert a probe until it is acknowledged (a restarted bootstrap refuses writes while
/// it waits for its ring's members); `None` if not within `limit`.
async fn until_serving(client: &HttpClient, addr: &str, limit: Duration) -> Option<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let url = format!("http://{addr}/insert/probe/1");
        if let Ok(r) = client.post(&url, None).await {
            if r.status == 200 {
                return Some(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
