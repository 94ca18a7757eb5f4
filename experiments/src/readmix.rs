//! The read-heavy mix: read throughput against k for chain replication, eventual
//! consistency and CRAQ, with 95% and 70% reads (5% and 30% writes), in the simulator and
//! on a real ring whose node-to-node messages take 1 ms.
//!
//! Ten closed-loop clients, client N on node N of a fresh 10-node ring, draw keys
//! uniformly from 50 (`mix-0` … `mix-49`); every write carries a value of its own.
//! Under chain replication every read is answered by its key's tail (sent straight
//! there when the entry node's neighbour lists show it, else by way of the head);
//! under CRAQ and eventual consistency by the first replica on its route, which is often
//! the client's own node once k is large (k of the 10 nodes hold each key). CRAQ answers a
//! read there only when its copy is clean (the tail acknowledged it), else it asks the
//! tail: writes make copies dirty, so the 70/30 mix gains less.
//!
//! - **Simulator, keys over the ring** (`readmix_sim.csv/.png`): a synthetic workload,
//!   virtual time. Message latency is exponential (1 ms mean) and nodes take no time to
//!   handle a message, so a read a client's own node answers takes no time at all; the
//!   figures are those of the protocol's message paths alone. Every node is the head and
//!   tail of some keys, so chain replication's reads are already spread over the ring.
//! - **Simulator, one chain** (`readmix_chain_sim.csv/.png`): the setting of the CRAQ
//!   paper, where a chain's tail limits its reads. The 50 keys all lie on one chain (the
//!   same k replicas, head and tail), every node takes 100 µs to handle each message or
//!   request, one at a time (`SimConfig::service_ns`), and 200 clients (20 per node of
//!   the ring) keep the chain saturated: throughput is then the chain's capacity, not a
//!   latency. The clients sit at the chain's own nodes, spread evenly over them
//!   (`Synthetic::clients_on_chain`), as the CRAQ paper's clients send to the chain's
//!   nodes and the real one-chain run's clients do.
//! - **Real ring** (`readmix_wan.csv/.png`): an in-process ring on loopback HTTP whose
//!   node-to-node messages wait 1 ms (`--link-latency`, as in the `_wan` throughput
//!   runs); the keys are written once before the timed phase; wall-clock time, so
//!   the HTTP and CPU cost of every hop counts too. Its nodes share the machine's
//!   processors, so no one node's processor limits the ring as on separate machines.
//! - **Real ring, one chain** (`readmix_chain_wan.csv/.png`): the same ring with every
//!   node's processor emulated (`ActorOptions::service`, 500 µs an input), the 50 keys on
//!   the bootstrap's chain, and 200 clients that send each request straight to a node of
//!   the chain ([`OneChain`]).
//!
//! Simulator runs, and the real one-chain runs, start their clients 11 s after setup,
//! once the core has stopped forwarding writes in the ranges the setup's joins handed
//! over.
//!
//! Read throughput is reads / seconds from the first operation to the last answer.

use std::path::Path;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::{Consistency, Id};
use ringkv_runtime::Outcome;
use ringkv_sim::check::{History, OpKind, OpStatus};
use ringkv_sim::workload::{one_chain_keys, Op};
use ringkv_sim::{KeyDist, SimConfig, Synthetic, WorkloadSpec};
use serde::Serialize;

use crate::analysis::{five_numbers, min_median_max, percentile};
use crate::plot::{self, Axis, Chart, LegendAt, Point, Series};
use crate::real::{self, Ring};
use crate::runner::{
    fixed, model_name, ops, par_map, progress_bar, simulate, write_csv, Backend, Options, Report,
    Table, MODELS, WAN_LATENCY,
};
use crate::workloads::{Planned, FILES};
use crate::{ExperimentError, Result};

/// The read shares, in percent: 95/5 and 70/30.
pub const READ_PERCENTS: [u32; 2] = [95, 70];

/// The read shares on one chain: reads alone too, CRAQ's bound (the CRAQ paper's
/// measurements start from no writes).
pub const ONE_CHAIN_READ_PERCENTS: [u32; 3] = [100, 95, 70];

/// The read shares measured with `placement`.
fn read_percents(placement: Placement) -> &'static [u32] {
    match placement {
        Placement::Ring => &READ_PERCENTS,
        Placement::OneChain => &ONE_CHAIN_READ_PERCENTS,
    }
}

/// Keys the clients draw from.
const KEYS: u64 = 50;

/// One repetition of one (model, k, mix) point: a row of `readmix_sim.csv` or
/// `readmix_wan.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `real` or `sim`.
    pub backend: String,
    /// `chain`, `eventual` or `craq`.
    pub model: String,
    /// Replication factor.
    pub k: usize,
    /// Share of reads, percent (the rest are writes).
    pub read_percent: u32,
    /// Repetition, from 1.
    pub rep: usize,
    /// Ring size.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Timed operations.
    pub ops: usize,
    /// Of them, reads.
    pub reads: usize,
    /// Of them, writes.
    pub writes: usize,
    /// Of them, answered with success.
    pub ok: usize,
    /// Of them, failed or timed out.
    pub errors: usize,
    /// First operation to last answer: wall-clock (real) or virtual (sim) seconds.
    pub seconds: f64,
    /// `wall` or `virtual`.
    pub time_base: String,
    /// `reads / seconds`.
    pub read_throughput_ops_per_s: f64,
    /// `ops / seconds`.
    pub throughput_ops_per_s: f64,
    /// Median latency of successful reads, ms.
    pub read_latency_p50_ms: f64,
    /// 99th percentile latency of successful reads, ms.
    pub read_latency_p99_ms: f64,
    /// The delay on every node-to-node message (real ring), e.g. `const:1ms`; empty in
    /// the simulator (exponential 1 ms links).
    pub link_latency: String,
    /// Where the keys lie: `ring` (spread over the whole ring) or `one-chain` (every key
    /// on the same k replicas).
    pub placement: String,
    /// The simulator's processing time per message and request at a node, µs (0: none;
    /// the real ring's processors are real).
    pub service_us: u64,
}

/// Where the mix's keys lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Spread over the whole ring, so every node is the head and tail of some keys
    /// (`readmix_sim`, `readmix_wan`).
    Ring,
    /// On one chain: every key's replicas, head and tail are the same k nodes, as the
    /// objects of a single chain in the CRAQ paper (`readmix_chain_sim`).
    OneChain,
}

impl Placement {
    /// The name in the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Ring => "ring",
            Placement::OneChain => "one-chain",
        }
    }
}

/// One chain in the simulator: how long a node takes to handle a message or request (a
/// node handles 10,000 a second), so that a saturated node limits throughput as a
/// machine's processor would.
pub const ONE_CHAIN_SERVICE_NS: u64 = 100_000;

/// One chain on the real ring: each node's emulated processor (`dht cluster --service`)
/// takes one request or message per 500 µs, 2,000 a second. Slower than the simulator's,
/// so that the five nodes of a k = 5 chain together (10,000 a second) stay well within
/// what the host's two cores can serve (the HTTP of every request is real): the
/// emulated processors, not the host, must be what limits the chain.
pub const REAL_ONE_CHAIN_SERVICE_NS: u64 = 500_000;

/// One chain on the real ring: how long after it has formed a fresh ring starts its timed
/// runs (its load is written meanwhile). For 10 s after each join the core also forwards writes in the ranges the join handed over
/// to their new holder, and under eventual consistency every replica that applies a
/// write forwards it: started at once, the runs would measure that window
/// (`results/README.md` §6).
const REAL_ONE_CHAIN_SETTLE: Duration = Duration::from_secs(11);

/// A node's processing time on one chain with `backend`.
fn one_chain_service_ns(backend: Backend) -> u64 {
    match backend {
        Backend::Sim => ONE_CHAIN_SERVICE_NS,
        Backend::Real => REAL_ONE_CHAIN_SERVICE_NS,
    }
}

/// One chain: closed-loop clients per node, enough to keep chain replication's tail
/// saturated (with 1 ms links a client has at most a few hundred operations a second
/// in flight).
pub const ONE_CHAIN_CLIENTS_PER_NODE: usize = 20;

/// Simulator runs start their clients this long after setup, once the core has stopped
/// forwarding writes to the holders of ranges the setup's joins handed over.
const WARMUP_NS: u64 = 11_000_000_000;

/// Run the read-heavy mix on `options.backend`: in the simulator with the keys spread
/// over the ring and again on one chain of nodes with a processing time, or on a real
/// ring with `options.link_latency` (default 1 ms) links.
pub fn run(options: &Options) -> Result<Vec<Report>> {
    let placements: &[Placement] = match options.backend {
        Backend::Sim => &[Placement::Ring, Placement::OneChain],
        Backend::Real => &[Placement::Ring, Placement::OneChain],
    };
    let mut reports = Vec::new();
    for &placement in placements {
        let points = points(options, placement);
        let name = match placement {
            Placement::Ring => "readmix",
            Placement::OneChain => "readmix, one chain",
        };
        let bar = progress_bar(options, name, points.len() as u64);
        let (rows, failures) = match options.backend {
            Backend::Sim => (measure_sim(options, placement, &points, &bar)?, Vec::new()),
            Backend::Real => measure_real(options, placement, &points, &bar)?,
        };
        bar.finish_and_clear();
        let mut report = report(options, placement, &rows)?;
        report.warnings.extend(failures);
        reports.push(report);
    }
    Ok(reports)
}

/// Clients of a run: one per reference file (`FILES`, each on its own node) with the
/// keys on the ring; enough to saturate a chain on one chain (but in a quick real run).
fn clients(options: &Options, placement: Placement) -> usize {
    match (placement, options.backend) {
        (Placement::Ring, _) => FILES,
        // A quick run on the real ring only checks the path (it runs beside other tests,
        // in a debug build): fewer clients, each with more operations.
        (Placement::OneChain, Backend::Real) if options.quick => options.nodes * 2,
        (Placement::OneChain, _) => options.nodes * ONE_CHAIN_CLIENTS_PER_NODE,
    }
}

/// Repetitions per point: 1 with `quick`, else `--reps`, else 3 (real), 1 (real, one
/// chain: its emulated processors, not the shared host, bound it, so its runs agree far
/// more, and each ring must first wait out its joins' hand-over window) or 5 (sim).
fn reps(options: &Options, placement: Placement) -> usize {
    let default = match (options.quick, options.backend, placement) {
        (true, _, _) => 1,
        (false, Backend::Real, Placement::Ring) => 3,
        (false, Backend::Real, Placement::OneChain) => 1,
        (false, Backend::Sim, _) => 5,
    };
    options.reps.unwrap_or(default).max(1)
}

/// Timed operations per client.
fn ops_per_client(options: &Options, placement: Placement) -> usize {
    match (options.backend, placement) {
        (Backend::Real, Placement::Ring) => options.size(30, 150),
        (Backend::Real, Placement::OneChain) => options.size(25, 15),
        (Backend::Sim, Placement::Ring) => options.size(100, 400),
        (Backend::Sim, Placement::OneChain) => options.size(20, 100),
    }
}

/// (rep, k, model), repetitions outermost; each runs both mixes.
fn points(options: &Options, placement: Placement) -> Vec<(usize, usize, Consistency)> {
    let mut out = Vec::new();
    for rep in 1..=reps(options, placement) {
        for &k in &options.ks {
            for model in MODELS {
                out.push((rep, k, model));
            }
        }
    }
    out
}

fn measure_sim(
    options: &Options,
    placement: Placement,
    points: &[(usize, usize, Consistency)],
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Row>> {
    bar.set_message("simulator");
    let per_client = ops_per_client(options, placement);
    let clients = clients(options, placement);
    let service_ns = match placement {
        Placement::Ring => 0,
        Placement::OneChain => one_chain_service_ns(options.backend),
    };
    let runs = par_map(points, |&(rep, k, model)| -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        for &percent in read_percents(placement) {
            let config = SimConfig {
                seed: options.seed + rep as u64 - 1,
                nodes: options.nodes,
                k,
                consistency: model,
                clients: Some(clients),
                workload: WorkloadSpec::Synthetic(Synthetic {
                    ops: (per_client * clients) as u64,
                    keys: KEYS,
                    read_fraction: f64::from(percent) / 100.0,
                    delete_fraction: 0.0,
                    key_dist: KeyDist::Uniform,
                    one_chain: placement == Placement::OneChain,
                    clients_on_chain: placement == Placement::OneChain,
                }),
                service_ns,
                warmup_ns: WARMUP_NS,
                ..SimConfig::default()
            };
            let (_, history) = simulate(config)?;
            let ops: Vec<Sample> = history
                .ops
                .iter()
                .map(|o| Sample {
                    read: o.f == OpKind::Read,
                    ok: o.status == OpStatus::Ok,
                    start_ns: o.invoke.time,
                    end_ns: o.complete.map_or(o.invoke.time, |c| c.time),
                })
                .collect();
            let setup = Setup {
                placement,
                clients,
                service_ns,
                link_latency: None,
            };
            rows.push(row(options, (model, k, percent, rep), &ops, setup));
        }
        bar.inc(1);
        Ok(rows)
    });
    let mut rows = Vec::new();
    for r in runs {
        rows.extend(r?);
    }
    Ok(rows)
}

/// The rows of the real runs, and the first failed operations' outcomes (three a run at
/// most), so that a failed run says why.
fn measure_real(
    options: &Options,
    placement: Placement,
    points: &[(usize, usize, Consistency)],
    bar: &indicatif::ProgressBar,
) -> Result<(Vec<Row>, Vec<String>)> {
    let mut failures = Vec::new();
    let latency = options.link_latency.unwrap_or(WAN_LATENCY);
    let per_client = ops_per_client(options, placement);
    let clients = clients(options, placement);
    let service_ns = match placement {
        Placement::Ring => 0,
        Placement::OneChain => one_chain_service_ns(options.backend),
    };
    let service = (service_ns > 0).then(|| Duration::from_nanos(service_ns));
    // Keys over the ring: a fresh ring for every run. One chain: one ring for every
    // run of a (model, k), which first waits out the hand-over window of its joins (as
    // the simulator's runs do), too long to wait for every run.
    let mut groups: Vec<Vec<(usize, usize, Consistency)>> = Vec::new();
    for &point in points {
        let (_, k, model) = point;
        match groups
            .iter_mut()
            .find(|g| placement == Placement::OneChain && g[0].1 == k && g[0].2 == model)
        {
            Some(group) => group.push(point),
            None => groups.push(vec![point]),
        }
    }
    let settle = match placement {
        Placement::Ring => Duration::ZERO,
        Placement::OneChain => REAL_ONE_CHAIN_SETTLE,
    };
    let mut rows = Vec::new();
    for group in groups {
        let (first_rep, k, model) = group[0];
        let name = match placement {
            Placement::Ring => "real ring",
            Placement::OneChain => "real ring, one chain",
        };
        bar.set_message(format!(
            "{name}, {} k={k}, run {first_rep}",
            model_name(model)
        ));
        let rt = real::runtime()?;
        rt.block_on(async {
            let ring = Ring::start_paced(options.nodes, k, model, Some(latency), service).await?;
            // The ring has formed: its last join's window ends `settle` from now.
            let settled = tokio::time::Instant::now() + settle;
            let chain = match placement {
                Placement::Ring => None,
                Placement::OneChain => Some(OneChain::of(&ring, k).await?),
            };
            // Every key once, so that reads find values (not timed).
            let load = match &chain {
                None => load_scripts(options.nodes),
                Some(chain) => chain.load_scripts(clients),
            };
            let _ = ring.run_phase(load).await;
            tokio::time::sleep_until(settled).await;
            for &(rep, _, _) in &group {
                for &percent in read_percents(placement) {
                    let seed = options.seed ^ (rep as u64) << 8 ^ u64::from(percent);
                    let scripts = match &chain {
                        None => mix_scripts(options.nodes, per_client, percent, seed),
                        Some(chain) => chain.mix_scripts(model, clients, per_client, percent, seed),
                    };
                    let phase = ring.run_phase(scripts).await;
                    let samples = real_samples(&phase)?;
                    failures.extend(
                        phase
                            .records
                            .iter()
                            .filter(|r| !matches!(r.outcome, Outcome::Ok(_)))
                            .take(3)
                            .map(|r| {
                                format!(
                                    "{} k={k} {percent}% reads, node {}: {:?} failed: {:?}",
                                    model_name(model),
                                    r.node,
                                    r.planned.op.f,
                                    r.outcome
                                )
                            }),
                    );
                    let setup = Setup {
                        placement,
                        clients,
                        service_ns,
                        link_latency: Some(latency.to_string()),
                    };
                    rows.push(row(options, (model, k, percent, rep), &samples, setup));
                }
            }
            ring.stop().await;
            Ok::<(), ExperimentError>(())
        })?;
        bar.inc(group.len() as u64);
    }
    Ok((rows, failures))
}

/// One chain of a real ring: the keys whose primary is the bootstrap, and the nodes that
/// hold them, head first (indices into [`Ring::addrs`]). The clients send each request
/// straight to a node of the chain, as the CRAQ paper's clients do: writes to the head,
/// chain replication's reads to the tail, CRAQ's and eventual consistency's reads to
/// every node of the chain in turn.
struct OneChain {
    keys: Vec<String>,
    nodes: Vec<usize>,
}

impl OneChain {
    async fn of(ring: &Ring, k: usize) -> Result<OneChain> {
        let overlay = ring.overlay().await?;
        let ids: Vec<Id> = overlay.iter().map(|addr| Id::of_addr(addr)).collect();
        let keys = one_chain_keys(&ids, KEYS);
        let nodes = overlay
            .iter()
            .take(k.max(1))
            .map(|addr| {
                ring.addrs().iter().position(|a| a == addr).ok_or_else(|| {
                    ExperimentError(format!("{addr} is in the overlay but not in the ring"))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        if nodes.first() != Some(&0) {
            return Err(ExperimentError(
                "the overlay does not start at the bootstrap".into(),
            ));
        }
        Ok(OneChain { keys, nodes })
    }

    fn head(&self) -> usize {
        self.nodes[0]
    }

    /// The node client `client` sends its `i`-th read to under `model`.
    fn reader(&self, model: Consistency, client: usize, i: usize) -> usize {
        match model {
            Consistency::Chain => self.nodes[self.nodes.len() - 1],
            Consistency::Craq | Consistency::Eventual => {
                self.nodes[(client + i) % self.nodes.len()]
            }
        }
    }

    /// The untimed load: every key once, written at the head by `clients` clients.
    fn load_scripts(&self, clients: usize) -> Vec<Vec<(usize, Planned)>> {
        load(&self.keys, clients, |_| self.head())
    }

    /// Client c's timed operations: `percent`% reads of uniform keys of the chain, the
    /// rest writes of values of their own.
    fn mix_scripts(
        &self,
        model: Consistency,
        clients: usize,
        per_client: usize,
        percent: u32,
        seed: u64,
    ) -> Vec<Vec<(usize, Planned)>> {
        let mix = Mix {
            clients,
            per_client,
            percent,
            seed,
            tag: "c",
        };
        mix.scripts(
            |rng| self.keys[rng.gen_range(0..self.keys.len())].clone(),
            |read, c, i| match read {
                true => self.reader(model, c, i),
                false => self.head(),
            },
        )
    }
}

/// The untimed load: client c writes keys c, c + 10, … once, on node c.
fn load_scripts(nodes: usize) -> Vec<Vec<(usize, Planned)>> {
    let keys: Vec<String> = (0..KEYS).map(|key| format!("mix-{key}")).collect();
    load(&keys, FILES, |c| c % nodes.max(1))
}

/// Every key once: client c of `clients` writes keys c, c + clients, …, each to
/// `node(c)`.
fn load(
    keys: &[String],
    clients: usize,
    node: impl Fn(usize) -> usize,
) -> Vec<Vec<(usize, Planned)>> {
    let clients = clients.max(1);
    (0..clients)
        .map(|c| {
            keys.iter()
                .skip(c)
                .step_by(clients)
                .enumerate()
                .map(|(i, key)| {
                    let op = Op {
                        f: OpKind::Write,
                        key: key.clone(),
                        value: Some(format!("load{c}.{i}")),
                    };
                    (node(c), planned(c, i, op))
                })
                .collect()
        })
        .collect()
}

/// Client c's timed operations on node c: `percent`% reads of uniform keys, the rest
/// writes of values of their own.
fn mix_scripts(
    nodes: usize,
    per_client: usize,
    percent: u32,
    seed: u64,
) -> Vec<Vec<(usize, Planned)>> {
    let mix = Mix {
        clients: FILES,
        per_client,
        percent,
        seed,
        tag: "m",
    };
    mix.scripts(
        |rng| format!("mix-{}", rng.gen_range(0..KEYS)),
        |_, c, _| c % nodes.max(1),
    )
}

/// A timed mix of reads and writes.
struct Mix {
    clients: usize,
    per_client: usize,
    /// Share of reads, in percent.
    percent: u32,
    seed: u64,
    /// Prefix of the written values (`{tag}{percent}.{client}.{i}`: each its own).
    tag: &'static str,
}

impl Mix {
    /// The clients' scripts: for each operation a key drawn by `key`, then read or write,
    /// sent to `node(read, client, i)`.
    fn scripts(
        &self,
        mut key: impl FnMut(&mut ChaCha8Rng) -> String,
        node: impl Fn(bool, usize, usize) -> usize,
    ) -> Vec<Vec<(usize, Planned)>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        (0..self.clients)
            .map(|c| {
                (0..self.per_client)
                    .map(|i| {
                        let key = key(&mut rng);
                        let read = rng.gen_range(0..100) < self.percent;
                        let value =
                            (!read).then(|| format!("{}{}.{c}.{i}", self.tag, self.percent));
                        let f = match read {
                            true => OpKind::Read,
                            false => OpKind::Write,
                        };
                        (node(read, c, i), planned(c, i, Op { f, key, value }))
                    })
                    .collect()
            })
            .collect()
    }
}

fn planned(file: usize, i: usize, op: Op) -> Planned {
    Planned {
        file,
        line: i + 1,
        op,
    }
}

/// One timed operation, in either backend.
struct Sample {
    read: bool,
    ok: bool,
    start_ns: u64,
    end_ns: u64,
}

/// The samples of a real phase: its records' kinds and outcomes, with times from the
/// phase's history (nanoseconds since the phase began).
fn real_samples(phase: &real::Phase) -> Result<Vec<Sample>> {
    let history =
        History::from_events(phase.events.clone()).map_err(|e| ExperimentError(e.to_string()))?;
    Ok(phase
        .records
        .iter()
        .map(|r| {
            let op = history.ops.get(r.op_id);
            let start_ns = op.map_or(0, |o| o.invoke.time);
            let end_ns = op.and_then(|o| o.complete).map_or(start_ns, |c| c.time);
            Sample {
                read: r.planned.op.f == OpKind::Read,
                ok: matches!(r.outcome, Outcome::Ok(_)),
                start_ns,
                end_ns: end_ns.max(start_ns),
            }
        })
        .collect())
}

/// How a run was set up, for its row.
struct Setup {
    placement: Placement,
    clients: usize,
    service_ns: u64,
    link_latency: Option<String>,
}

fn row(
    options: &Options,
    (model, k, percent, rep): (Consistency, usize, u32, usize),
    samples: &[Sample],
    setup: Setup,
) -> Row {
    let first = samples.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let last = samples.iter().map(|s| s.end_ns).max().unwrap_or(first);
    let seconds = (last - first) as f64 / 1e9;
    let reads = samples.iter().filter(|s| s.read).count();
    let ok = samples.iter().filter(|s| s.ok).count();
    let mut latencies: Vec<u64> = samples
        .iter()
        .filter(|s| s.read && s.ok)
        .map(|s| s.end_ns - s.start_ns)
        .collect();
    latencies.sort_unstable();
    let per_s = |n: usize| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    Row {
        backend: options.backend.to_string(),
        model: model_name(model).into(),
        k,
        read_percent: percent,
        rep,
        nodes: options.nodes,
        clients: setup.clients,
        ops: samples.len(),
        reads,
        writes: samples.len() - reads,
        ok,
        errors: samples.len() - ok,
        seconds,
        time_base: match options.backend {
            Backend::Real => "wall".into(),
            Backend::Sim => "virtual".into(),
        },
        read_throughput_ops_per_s: per_s(reads),
        throughput_ops_per_s: per_s(samples.len()),
        read_latency_p50_ms: percentile(&latencies, 50.0) as f64 / 1e6,
        read_latency_p99_ms: percentile(&latencies, 99.0) as f64 / 1e6,
        link_latency: setup.link_latency.unwrap_or_default(),
        placement: setup.placement.name().into(),
        service_us: setup.service_ns / 1_000,
    }
}

/// Read throughput samples of (model, k, mix).
fn samples(rows: &[Row], model: &str, k: usize, percent: u32) -> Vec<f64> {
    rows.iter()
        .filter(|r| r.model == model && r.k == k && r.read_percent == percent)
        .map(|r| r.read_throughput_ops_per_s)
        .collect()
}

/// Median read throughput of (model, k, mix).
pub fn median(rows: &[Row], model: &str, k: usize, percent: u32) -> f64 {
    min_median_max(&samples(rows, model, k, percent)).1
}

fn file_stem(options: &Options, placement: Placement) -> &'static str {
    match (options.backend, placement) {
        (Backend::Sim, Placement::Ring) => "readmix_sim",
        (Backend::Sim, Placement::OneChain) => "readmix_chain_sim",
        (Backend::Real, Placement::Ring) => "readmix_wan",
        (Backend::Real, Placement::OneChain) => "readmix_chain_wan",
    }
}

/// How the runs of `placement` were set up, for titles and notes.
fn describe(options: &Options, placement: Placement) -> String {
    match placement {
        Placement::Ring => format!(
            "{} nodes, {} clients, {KEYS} keys over the ring",
            options.nodes,
            clients(options, placement)
        ),
        Placement::OneChain => format!(
            "{} µs a message; {} clients, {KEYS} keys on one chain of {} nodes",
            one_chain_service_ns(options.backend) / 1_000,
            clients(options, placement),
            options.nodes
        ),
    }
}

fn report(options: &Options, placement: Placement, rows: &[Row]) -> Result<Report> {
    let stem = file_stem(options, placement);
    let csv = options.path(&format!("{stem}.csv"));
    let png = options.path(&format!("{stem}.png"));
    write_csv(&csv, rows)?;
    plot(&png, options, placement, rows)?;
    let (backend, unit) = match options.backend {
        Backend::Sim => ("simulator".to_string(), "reads/virtual s"),
        Backend::Real => (
            format!(
                "real ring, {} links",
                options.link_latency.unwrap_or(WAN_LATENCY)
            ),
            "reads/s",
        ),
    };
    let mut table = Table::new(
        format!(
            "Read-heavy mix: read throughput ({backend}, {}, {} runs per point)",
            describe(options, placement),
            reps(options, placement)
        ),
        &[
            "reads %",
            "model",
            "k",
            &format!("median {unit}"),
            "min",
            "max",
            "× chain",
            "read p99 ms (median)",
            "errors",
        ][..],
    );
    let mut warnings = Vec::new();
    for &percent in read_percents(placement) {
        for model in MODELS {
            let m = model_name(model);
            for &k in &options.ks {
                let (lo, med, hi) = min_median_max(&samples(rows, m, k, percent));
                let chain = median(rows, "chain", k, percent);
                let mine: Vec<&Row> = rows
                    .iter()
                    .filter(|r| r.model == m && r.k == k && r.read_percent == percent)
                    .collect();
                let p99: Vec<f64> = mine.iter().map(|r| r.read_latency_p99_ms).collect();
                let errors: usize = mine.iter().map(|r| r.errors).sum();
                let total: usize = mine.iter().map(|r| r.ops).sum();
                table.row(vec![
                    percent.to_string(),
                    m.into(),
                    k.to_string(),
                    ops(med),
                    ops(lo),
                    ops(hi),
                    fixed(med / chain, 2),
                    fixed(min_median_max(&p99).1, 2),
                    format!("{errors}/{total}"),
                ]);
                if errors > 0 {
                    warnings.push(format!(
                        "{m} k={k} {percent}% reads: {errors} of {total} operations failed"
                    ));
                }
            }
        }
    }
    Ok(Report {
        name: match (options.backend, placement) {
            (Backend::Sim, Placement::Ring) => "readmix (sim)",
            (Backend::Sim, Placement::OneChain) => "readmix, one chain (sim)",
            (Backend::Real, Placement::Ring) => "readmix (wan)",
            (Backend::Real, Placement::OneChain) => "readmix, one chain (wan)",
        },
        files: vec![csv, png],
        table,
        warnings,
        seconds: 0.0,
    })
}

/// A panel per read share (95% and 70% reads; on one chain 100% too), side by side:
/// read throughput against k per model.
fn plot(path: &Path, options: &Options, placement: Placement, rows: &[Row]) -> Result<()> {
    let kmax = options.ks.iter().max().copied().unwrap_or(1) as f64;
    let dodge = 0.08 * kmax.max(1.0) / 5.0;
    let top = rows
        .iter()
        .map(|r| r.read_throughput_ops_per_s)
        .fold(0.0, f64::max);
    let (backend, time) = match options.backend {
        Backend::Sim => ("simulator, exp(1 ms) links".to_string(), "virtual time"),
        Backend::Real => (
            format!(
                "real ring, {} links",
                options.link_latency.unwrap_or(WAN_LATENCY)
            ),
            "wall clock",
        ),
    };
    let charts: Vec<Chart> = read_percents(placement)
        .iter()
        .map(|&percent| {
            let series = MODELS
                .into_iter()
                .enumerate()
                .map(|(i, model)| {
                    let m = model_name(model);
                    let points = options
                        .ks
                        .iter()
                        .map(|&k| {
                            let five = five_numbers(&samples(rows, m, k, percent));
                            Point::boxed(k as f64 + (i as f64 - 1.0) * dodge, five)
                        })
                        .collect();
                    Series::new(
                        m,
                        plot::model_color(model),
                        plot::model_marker(model),
                        points,
                    )
                })
                .collect();
            Chart {
                title: match placement {
                    Placement::Ring => format!(
                        "{percent}% reads, {}% writes: read throughput vs k",
                        100 - percent
                    ),
                    Placement::OneChain => format!(
                        "One chain, {percent}% reads, {}% writes: reads vs k",
                        100 - percent
                    ),
                },
                x: Axis::linear("replication factor k", 0.5, kmax + 0.5)
                    .with_ticks(options.ks.iter().map(|&k| k as f64).collect()),
                y: Axis::linear(
                    format!("reads/s ({time})"),
                    0.0,
                    (top * 1.15).max(1.0),
                ),
                legend: LegendAt::UpperLeft,
                series,
                note: Some(match placement {
                    Placement::Ring => format!(
                        "{backend}; {}; median of {} runs, whiskers min–max",
                        describe(options, placement),
                        reps(options, placement)
                    ),
                    // The title names the chain; the note must fit half the width.
                    Placement::OneChain => format!(
                        "{backend}, {} µs a message; {} nodes, {} clients, {KEYS} keys; median of {}",
                        one_chain_service_ns(options.backend) / 1_000,
                        options.nodes,
                        clients(options, placement),
                        reps(options, placement)
                    ),
                }),
            }
        })
        .collect();
    // 800 pixels a panel, as `plot::WIDE` gives two.
    let size = (plot::WIDE.0 / 2 * charts.len() as u32, plot::WIDE.1);
    plot::draw_panels(path, size, None, &charts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_mix_reads_and_writes_as_asked_with_unique_values() {
        let scripts = mix_scripts(10, 200, 95, 3);
        assert_eq!(scripts.len(), FILES);
        let all: Vec<&Planned> = scripts.iter().flatten().map(|(_, p)| p).collect();
        let reads = all.iter().filter(|p| p.op.f == OpKind::Read).count();
        assert!((1800..=1960).contains(&reads), "{reads} of 2000");
        let values: std::collections::BTreeSet<_> =
            all.iter().filter_map(|p| p.op.value.clone()).collect();
        assert_eq!(values.len(), all.len() - reads);
        let load: usize = load_scripts(10).iter().map(Vec::len).sum();
        assert_eq!(load as u64, KEYS);
    }

    #[test]
    fn one_chain_sends_writes_to_the_head_and_reads_as_each_model_allows() {
        let chain = OneChain {
            keys: (0..50).map(|j| format!("k{j}")).collect(),
            nodes: vec![0, 3, 7],
        };
        let load = chain.load_scripts(200);
        let loaded: Vec<&Planned> = load.iter().flatten().map(|(_, p)| p).collect();
        assert_eq!(loaded.len(), 50, "every key once");
        assert!(load.iter().flatten().all(|(node, _)| *node == 0));
        for model in MODELS {
            let scripts = chain.mix_scripts(model, 200, 20, 95, 9);
            assert_eq!(scripts.len(), 200);
            let mut readers = std::collections::BTreeSet::new();
            for (node, p) in scripts.iter().flatten() {
                assert!(chain.keys.contains(&p.op.key));
                match p.op.f {
                    OpKind::Write => assert_eq!(*node, 0, "{model:?}: writes go to the head"),
                    _ => {
                        readers.insert(*node);
                    }
                }
            }
            let expected: Vec<usize> = match model {
                Consistency::Chain => vec![7],
                _ => vec![0, 3, 7],
            };
            assert_eq!(
                readers.into_iter().collect::<Vec<_>>(),
                expected,
                "{model:?}"
            );
        }
    }
}
