//! `dht bootstrap`, `dht node`, `dht cluster` and `dht bench`: real nodes on HTTP and the
//! load client that measures them.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ringkv_client::load::{self, Comparison, LoadOptions, LoadReport, Mix};
use ringkv_client::ClientRouting;
use ringkv_core::{ClusterConfig, Consistency, Limits, Routing, Timing};
use ringkv_runtime::{
    ActorOptions, BaselineServer, ClusterOptions, HttpClient, LocalCluster, NodeOptions,
    NodeServer, PeerLimits, RelayServer, Role, MAX_CONNECTIONS_DEFAULT,
};
use ringkv_sim::Latency;

/// Settings every node command shares.
#[derive(clap::Args, Clone, Debug)]
pub struct Tuning {
    /// A client request not answered within this time ends with 504.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub request_timeout_ms: u64,
    /// Client requests a node may have outstanding; beyond it, 503.
    #[arg(long, default_value_t = Limits::default().pending_requests_max)]
    pub pending_max: usize,
    /// Requests and message batches queued while a node is busy with another input;
    /// beyond it, 503.
    #[arg(long, default_value_t = ActorOptions::default().queue_commands_max)]
    pub queue_max: usize,
    /// Turn off heartbeats, failure detection and anti-entropy (on by default: a node
    /// that crashes is then removed from the ring and its keys re-replicated).
    #[arg(long)]
    pub no_failure_handling: bool,
    /// Silence after which the bootstrap removes a member as failed (and a node routes
    /// round its successor); heartbeats go every sixth of it, at most every 500 ms.
    /// Shorter means a shorter outage after a crash, and more false alarms on a loaded
    /// machine (a member removed by mistake rejoins, empty, and is refilled). Give every
    /// node of a ring the same value.
    #[arg(long, default_value_t = 1_200, value_name = "MS", value_parser = at_least_hundred)]
    pub failure_timeout_ms: u64,
    /// Shared secret authenticating node-to-node connections (checked once when a peer
    /// connects); every member of a ring must be given the same one. Without it the
    /// internal endpoints are open, which is fine only on loopback.
    #[arg(long, env = "RINGKV_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Most HTTP connections a node serves at once; beyond it a connection gets 503 and is
    /// closed (clients and peers count alike; keep-alive connections hold their place).
    #[arg(
        long,
        default_value_t = MAX_CONNECTIONS_DEFAULT,
        value_name = "N",
        value_parser = at_least_one
    )]
    pub max_connections: usize,
    /// Delay every node-to-node message by a duration drawn from DIST, as if the nodes
    /// were far apart: const:20ms, uniform:5ms..50ms, exp:10ms or lognormal:10ms,0.5 (the
    /// syntax of `dht sim --latency`). A message never overtakes one sent earlier to the
    /// same node. Default: no added delay.
    #[arg(long, value_name = "DIST")]
    pub link_latency: Option<Latency>,
    /// Emulate a slower machine: the node handles at most one client request or
    /// node-to-node message per DUR on average (e.g. 100us: 10,000 a second), and
    /// queues the rest, so each node of a ring run on one host has a capacity of its own
    /// (the syntax of `dht sim --service`). Default: as fast as the host allows.
    #[arg(long, value_name = "DUR", value_parser = parse_service)]
    pub service: Option<Duration>,
    /// TEST ONLY: serve `POST /admin/partition`, which makes the node drop every
    /// node-to-node message to and from the peers it names (a network partition on
    /// loopback, for fault-injection experiments). With --cluster-secret the request must
    /// carry it as a bearer token; without a secret this flag alone opens the endpoint.
    /// Never use it on a ring that serves real data.
    #[arg(long)]
    pub allow_fault_injection: bool,
    /// Keep the node's data and ring identity in DIR (created if missing; `dht cluster`
    /// gives node i the subfolder node-i). A write is on disk before it is acknowledged
    /// or passed on, and a restarted node comes back with its data and rejoins its ring;
    /// a whole ring restarted from its directories serves every acknowledged write again.
    /// A directory belongs to one node address (use fixed ports). Default: memory only.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Bytes of keys and values a node stores before it refuses new writes it heads with
    /// 507 (`store_full`); deletes still work. 0: no limit.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub max_store_bytes: usize,
}

impl Tuning {
    fn limits(&self) -> Limits {
        Limits {
            pending_requests_max: self.pending_max,
            store_bytes_max: self.max_store_bytes,
            ..Limits::default()
        }
    }

    fn timing(&self) -> Timing {
        let failure_timeout_ns = self.failure_timeout_ms.saturating_mul(1_000_000);
        let base = if self.no_failure_handling {
            Timing {
                failure_timeout_ns,
                ..Timing::default()
            }
        } else {
            Timing::with_failure_timeout(failure_timeout_ns)
        };
        Timing {
            request_timeout_ns: self.request_timeout_ms.saturating_mul(1_000_000),
            ..base
        }
    }

    fn actor(&self) -> ActorOptions {
        ActorOptions {
            queue_commands_max: self.queue_max,
            peers: PeerLimits {
                link_latency: self.link_latency,
                ..PeerLimits::default()
            },
            service: self.service,
            ..ActorOptions::default()
        }
    }
}

/// Ring settings chosen at the bootstrap and learned by every joining node.
#[derive(clap::Args, Clone, Debug)]
pub struct RingArgs {
    /// Replication factor: each key is stored on min(k, N) nodes.
    #[arg(long, default_value_t = 3)]
    pub k: usize,
    /// Replication model: chain (linearizable), eventual, or craq (linearizable, reads at
    /// every replica).
    #[arg(long, default_value = "chain")]
    pub consistency: Consistency,
    /// Lookup routing: finger (Chord, O(log N) hops) or successor (O(N) hops).
    #[arg(long, default_value = "finger")]
    pub routing: Routing,
    /// Ring positions per process (virtual nodes), a setting of the whole ring: every
    /// process (this one, and each `dht node` that joins) takes R places on the ring,
    /// each a node on a port of its own, which evens out how many keys each process
    /// holds; a key's k replicas (its chain, under chain replication and CRAQ) always
    /// lie on k distinct processes.
    #[arg(long, default_value_t = 1, value_name = "R")]
    pub vnodes: u32,
}

impl RingArgs {
    fn config(&self) -> anyhow::Result<ClusterConfig> {
        Ok(ClusterConfig::new(self.k, self.consistency, self.routing)?.with_vnodes(self.vnodes)?)
    }
}

/// Arguments of `dht bootstrap`.
#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    /// Address to listen on (0.0.0.0 for multi-machine deployments, with --advertise).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 5000)]
    pub port: u16,
    /// HOST:PORT other machines reach this node at (default: the listening address).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub ring: RingArgs,
    /// Found a new ring at once. By default a bootstrap first listens for the members of
    /// the ring it belonged to (they greet their bootstrap address every heartbeat) for
    /// three heartbeats, and rejoins that ring if one answers: restarting a bootstrap
    /// keeps the ring's data. With --no-failure-handling there are no heartbeats and it
    /// always founds a new ring.
    #[arg(long)]
    pub new_ring: bool,
    /// This bootstrap's ring still runs (its other nodes are up): wait for it however
    /// long it takes, and never found a new ring. Restart a bootstrap that has no
    /// --data-dir with it: cut off from its members as it starts (a partition, a paused
    /// host), it cannot otherwise tell a restart from a first start, and after three
    /// heartbeats it founds a new, empty ring that clients reaching it would see (etcd's
    /// --initial-cluster-state existing). Meanwhile it refuses requests (409 not_joined,
    /// as a node outside the ring does). With a
    /// --data-dir that holds its ring the disk tells it, and this changes nothing.
    #[arg(long, conflicts_with = "new_ring")]
    pub rejoin: bool,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// Arguments of `dht node`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 5001)]
    pub port: u16,
    /// HOST:PORT other machines reach this node at (default: the listening address).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// The bootstrap's HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5000")]
    pub bootstrap: String,
    /// Join the ring at start (otherwise: `curl -X POST http://HOST:PORT/join`).
    #[arg(long)]
    pub join: bool,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// Arguments of `dht cluster`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Nodes in the ring, the bootstrap included (with --vnodes R: processes, each of R
    /// ring positions).
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    #[command(flatten)]
    pub ring: RingArgs,
    /// Address every node listens on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port of the bootstrap; the others use the next ports (0: any free ports).
    #[arg(long, default_value_t = 5000)]
    pub base_port: u16,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// Arguments of `dht bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// HOST:PORT of any node; the ring is learned from it.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub target: String,
    /// How each request finds its node: token (straight to the node that serves its key,
    /// as learned from the ring) or random (each client sends to one node of the overlay,
    /// which routes the request through the ring, as clients of the reference design do).
    #[arg(long, default_value = "token", value_name = "token|random")]
    pub routing: ClientRouting,
    /// Then run the same load against a trivial key-value server started in this process
    /// (as many listeners as the ring has nodes, one shared map, the same HTTP stack),
    /// and report ringkv's throughput and latency as multiples of its.
    #[arg(long)]
    pub baseline: bool,
    /// With --baseline, also run the load against a relay server: the baseline's
    /// listeners, each keeping its own map, passing every write through the key's k
    /// listeners (the ring's k, on a SHA-1 ring of them) over persistent TCP connections
    /// and relaying every read to its last, in binary frames, with no protocol beyond
    /// that. The least that keeping k copies in separate processes costs: ringkv's
    /// figures over the relay's are the price of its protocol.
    #[arg(long, requires = "baseline")]
    pub relay: bool,
    /// Timed operations.
    #[arg(long, default_value_t = 100_000)]
    pub ops: u64,
    /// Concurrent clients (each one request at a time).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// insert (unique keys), query (preloaded keys) or requests (reads/writes on few keys).
    #[arg(long, default_value = "insert")]
    pub mix: Mix,
    /// Distinct keys: preloaded for query (default 1000), touched by requests (default 4).
    #[arg(long)]
    pub keys: Option<usize>,
    /// Fraction of requests-mix operations that write.
    #[arg(long, default_value_t = 0.2)]
    pub write_ratio: f64,
    /// Fraction of requests-mix operations that delete.
    #[arg(long, default_value_t = 0.0)]
    pub delete_ratio: f64,
    /// Seed of the clients' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Per-request client timeout.
    #[arg(long, default_value_t = 15_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Prefix of generated keys (to keep runs against one ring apart).
    #[arg(long, default_value = "")]
    pub key_prefix: String,
    /// Write the history (JSON Lines, `dht check` format) to this file.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Threads of the load client (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// `dht bootstrap`: serve the bootstrap node until SIGINT/SIGTERM.
pub fn run_bootstrap(args: BootstrapArgs) -> anyhow::Result<ExitCode> {
    init_tracing("info");
    if args.rejoin && args.tuning.no_failure_handling {
        // Without heartbeats no member greets its bootstrap: it could never find its ring.
        anyhow::bail!(
            "--rejoin waits for the members' greetings, which come with their heartbeats: \
             it cannot be used with --no-failure-handling"
        );
    }
    let mut options = NodeOptions::new(
        SocketAddr::new(args.host, args.port),
        Role::Bootstrap(args.ring.config()?),
    );
    options.advertise = args.advertise;
    apply_tuning(&mut options, &args.tuning);
    options.recover = !args.new_ring;
    options.ring_runs = args.rejoin;
    let recovering = options.recover && !args.tuning.no_failure_handling;
    let waits_for_good = recovering && args.rejoin;
    let vnodes = args.ring.vnodes as usize;
    runtime()?.block_on(async move {
        survive_file_size_limit(options.data_dir.as_deref());
        let first_options = options.clone();
        let server = NodeServer::start(options).await?;
        announce(&format!(
            "bootstrap listening on {} (advertised as {})",
            server.local_addr(),
            server.addr()
        ));
        if waits_for_good {
            announce(
                "waiting for the ring this bootstrap belongs to (its members greet it every \
                 heartbeat); it founds no new ring",
            );
        } else if recovering {
            announce(
                "looking for the ring this bootstrap belonged to (three heartbeats); \
                 founding a new one if none answers",
            );
        }
        let extra = tokio::select! {
            _ = shutdown_signal() => {
                server.shutdown_handing_over().await;
                return Ok(ExitCode::SUCCESS);
            }
            extra = more_positions(&server, &first_options, server.addr(), vnodes) => extra,
        };
        let extra = match extra {
            Ok(extra) => extra,
            Err(err) => {
                server.stop().await;
                anyhow::bail!("the bootstrap's further ring positions could not join: {err}");
            }
        };
        let halted = tokio::select! {
            _ = shutdown_signal() => None,
            reason = watch_halted(&server) => Some(reason),
        };
        match halted {
            None => {
                depart_positions(extra).await;
                server.shutdown_handing_over().await;
                Ok(ExitCode::SUCCESS)
            }
            Some(reason) => {
                for node in extra {
                    node.stop().await;
                }
                server.stop().await;
                anyhow::bail!("the bootstrap stopped: {reason}")
            }
        }
    })
}

/// Start this process's further ring positions (virtual nodes: `vnodes - 1` of them),
/// once its first position, `first`, is a member, each joining through `bootstrap`.
async fn more_positions(
    first: &NodeServer,
    first_options: &NodeOptions,
    bootstrap: &str,
    vnodes: usize,
) -> Result<Vec<NodeServer>, String> {
    if vnodes <= 1 {
        return Ok(Vec::new());
    }
    // A bootstrap looking for its ring first: its positions join once it is in one.
    while first.handle().inspect(|n| n.is_member()).await != Ok(true) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let nodes =
        ringkv_runtime::vnodes::start_positions(first, first_options, bootstrap, vnodes).await?;
    announce(&format!(
        "{} further ring positions (virtual nodes) joined: {}",
        nodes.len(),
        nodes
            .iter()
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(nodes)
}

/// Depart this process's further positions, last first.
async fn depart_positions(mut extra: Vec<NodeServer>) {
    while let Some(node) = extra.pop() {
        node.shutdown_handing_over().await;
    }
}

/// Wait until the node halts (a bootstrap started against a ring with other settings),
/// and say why.
async fn watch_halted(server: &NodeServer) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(reason) = server.halted().await {
            return reason;
        }
    }
}

/// `dht node`: serve an ordinary node (joining at start with `--join`) until a signal,
/// then depart and exit.
pub fn run_node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    init_tracing("info");
    let role = Role::Member {
        bootstrap: args.bootstrap.clone(),
    };
    let mut options = NodeOptions::new(SocketAddr::new(args.host, args.port), role);
    options.advertise = args.advertise;
    apply_tuning(&mut options, &args.tuning);
    runtime()?.block_on(async move {
        survive_file_size_limit(options.data_dir.as_deref());
        let first_options = options.clone();
        let server = NodeServer::start(options).await?;
        announce(&format!(
            "node listening on {} (advertised as {})",
            server.local_addr(),
            server.addr()
        ));
        let mut extra = Vec::new();
        if args.join {
            if let Err(err) = join_with_retries(&server).await {
                server.stop().await;
                anyhow::bail!("could not join through {}: {err}", args.bootstrap);
            }
            announce(&format!("joined the ring through {}", args.bootstrap));
            // The ring's setting, learned from the join: further positions of this process.
            let vnodes = server
                .handle()
                .inspect(|n| n.status().vnodes)
                .await
                .unwrap_or(1) as usize;
            extra = match more_positions(&server, &first_options, &args.bootstrap, vnodes).await {
                Ok(extra) => extra,
                Err(err) => {
                    server.shutdown_handing_over().await;
                    anyhow::bail!("this node's further ring positions could not join: {err}");
                }
            };
        }
        shutdown_signal().await;
        depart_positions(extra).await;
        server.shutdown_handing_over().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `dht cluster`: a whole ring in this process, until SIGINT/SIGTERM; then every node
/// departs, last joined first.
pub fn run_cluster(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    init_tracing("info");
    let mut options = ClusterOptions::new(args.nodes, args.ring.config()?);
    options.host = args.host;
    options.base_port = args.base_port;
    options.limits = args.tuning.limits();
    options.timing = args.tuning.timing();
    options.actor = args.tuning.actor();
    options.cluster_secret = args.tuning.cluster_secret.clone();
    options.max_connections = args.tuning.max_connections;
    options.allow_fault_injection = args.tuning.allow_fault_injection;
    options.data_dir = args.tuning.data_dir.clone();
    runtime()?.block_on(async move {
        survive_file_size_limit(options.data_dir.as_deref());
        let cluster = LocalCluster::start(options).await?;
        let overlay = cluster.overlay().await.map_err(anyhow::Error::msg)?;
        match args.ring.vnodes {
            1 => announce(&format!(
                "ringkv cluster: {} nodes, k = {}, {} replication, {} routing",
                overlay.len(),
                args.ring.k,
                args.ring.consistency,
                args.ring.routing
            )),
            r => announce(&format!(
                "ringkv cluster: {} processes of {r} ring positions each ({} nodes), k = {}, \
                 {} replication, {} routing",
                args.nodes,
                overlay.len(),
                args.ring.k,
                args.ring.consistency,
                args.ring.routing
            )),
        }
        announce(&format!("bootstrap: {}", cluster.addrs()[0]));
        if let Some(latency) = args.tuning.link_latency {
            announce(&format!(
                "link latency: every node-to-node message delayed by {latency}"
            ));
        }
        if let Some(service) = args.tuning.service {
            announce(&format!(
                "emulated processor: each node handles at most one request or message per {service:?}"
            ));
        }
        announce(&format!(
            "overlay (ring order from the bootstrap): {}",
            overlay.join(" -> ")
        ));
        announce("serving until Ctrl-C");
        shutdown_signal().await;
        announce("departing every node ...");
        cluster.shutdown().await;
        announce("all nodes departed");
        Ok(ExitCode::SUCCESS)
    })
}

/// `dht bench`: run the load client and print throughput and latency (with `--baseline`,
/// next to the baseline's).
pub fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    init_tracing("warn");
    let mut options = LoadOptions::new(args.target, args.mix, args.ops, args.clients);
    options.routing = args.routing;
    options.keys = args.keys;
    options.write_ratio = args.write_ratio;
    options.delete_ratio = args.delete_ratio;
    options.seed = args.seed;
    options.timeout = Duration::from_millis(args.timeout_ms);
    options.history = args.history;
    options.key_prefix = args.key_prefix;
    // One thread is plenty for the clients and leaves the other core to the nodes under
    // test on a small machine; `--threads` gives the load client more.
    let clients = bench_runtime(args.threads)?;
    let report = clients.block_on(load::run(&options))?;
    let failed = report.ops > 0 && report.ok == 0;
    if !args.baseline {
        print_report(&report, args.json)?;
    } else {
        let baseline = run_baseline(&clients, &options, report.nodes.len())?;
        let mut comparison = Comparison::new(report, baseline);
        if args.relay {
            let relay = run_relay(&clients, &options, comparison.ringkv.nodes.len())?;
            comparison = comparison.with_relay(relay);
        }
        print_report(&comparison, args.json)?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The load of `options` against a baseline server of `listeners` listeners, served by
/// a runtime of its own with as many threads as a `dht cluster` has (so it gets the
/// cores the ring got), while the clients stay on theirs.
fn run_baseline(
    clients: &tokio::runtime::Runtime,
    options: &LoadOptions,
    listeners: usize,
) -> anyhow::Result<LoadReport> {
    let servers = runtime()?;
    let server = servers
        .block_on(BaselineServer::start(listeners))
        .context("cannot start the baseline server")?;
    let report = load_at(clients, options, server.addrs());
    servers.block_on(server.shutdown());
    report.context("baseline run")
}

/// The load of `options` against the server whose listeners are `addrs` (learned from
/// the first), without a history.
fn load_at(
    clients: &tokio::runtime::Runtime,
    options: &LoadOptions,
    addrs: &[String],
) -> anyhow::Result<LoadReport> {
    let mut against = options.clone();
    against.target = addrs.first().context("a server without listeners")?.clone();
    against.history = None;
    Ok(clients.block_on(load::run(&against))?)
}

/// The load of `options` against a relay server of `listeners` listeners keeping the
/// ring's k copies of each write as its consistency model does (both learned from the ring
/// at `options.target`), on a runtime of its own as the baseline's.
fn run_relay(
    clients: &tokio::runtime::Runtime,
    options: &LoadOptions,
    listeners: usize,
) -> anyhow::Result<LoadReport> {
    let http = HttpClient::new(options.timeout);
    let ring = clients
        .block_on(ringkv_client::learn(
            &http,
            std::slice::from_ref(&options.target),
        ))
        .with_context(|| format!("cannot learn the ring's k from {}", options.target))?;
    let servers = runtime()?;
    let server = servers
        .block_on(RelayServer::start(listeners, ring.k(), ring.consistency()))
        .context("cannot start the relay server")?;
    let report = load_at(clients, options, server.addrs());
    servers.block_on(server.shutdown());
    report.context("relay run")
}

fn print_report<R: serde::Serialize + std::fmt::Display>(
    report: &R,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        crate::stdout::line(serde_json::to_string_pretty(report)?);
    } else {
        crate::stdout::line(report);
    }
    Ok(())
}

/// Parse a failure timeout: at least 100 ms (heartbeats go every sixth of it).
fn at_least_hundred(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(ms) if ms < 100 => Err("must be at least 100 (milliseconds)".to_string()),
        Ok(ms) => Ok(ms),
        Err(err) => Err(format!("expected a whole number of milliseconds: {err}")),
    }
}

/// Parse an emulated processing time per input (`--service`): at most 1 s, since a node
/// slower than that would miss its own heartbeats.
fn parse_service(text: &str) -> Result<Duration, String> {
    let ns = ringkv_sim::units::parse_duration_ns(text).map_err(|e| e.to_string())?;
    if ns > 1_000_000_000 {
        return Err(format!("'{text}' is more than 1s a message"));
    }
    Ok(Duration::from_nanos(ns))
}

/// Parse a count that must be at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(err) => Err(format!("expected a whole number: {err}")),
    }
}

fn apply_tuning(options: &mut NodeOptions, tuning: &Tuning) {
    options.limits = tuning.limits();
    options.timing = tuning.timing();
    options.actor = tuning.actor();
    options.cluster_secret = tuning.cluster_secret.clone();
    options.max_connections = tuning.max_connections;
    options.allow_fault_injection = tuning.allow_fault_injection;
    options.data_dir = tuning.data_dir.clone();
}

fn bench_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn init_tracing(default: &str) {
    // The storage engine narrates every open and flush at info; an operator needs its
    // warnings only (RUST_LOG still overrides).
    let default = format!("{default},fjall=warn,lsm_tree=warn");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A line on stdout, flushed at once (scripts and tests read it).
fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Attempts to reach a bootstrap that may still be starting.
const JOIN_ATTEMPTS_MAX: u32 = 10;

async fn join_with_retries(server: &NodeServer) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 1..=JOIN_ATTEMPTS_MAX {
        match server.join().await {
            Ok(_) => return Ok(()),
            // An earlier attempt that timed out may have completed since.
            Err(_) if server.handle().inspect(|n| n.is_member()).await == Ok(true) => return Ok(()),
            Err(err) => {
                tracing::warn!(attempt, %err, "join failed; retrying");
                last = err;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}

/// A durable node that hits a file-size limit (`ulimit -f`, a quota) must report the
/// failed write and keep serving reads, not die of SIGXFSZ, whose default action ends the
/// process (PostgreSQL ignores it for the same reason). Listening for the signal replaces
/// that default; the write then fails with EFBIG and is answered `storage_failed`.
fn survive_file_size_limit(data_dir: Option<&std::path::Path>) {
    #[cfg(unix)]
    if data_dir.is_some() {
        use tokio::signal::unix::{signal, SignalKind};
        // SIGXFSZ is 25 on Linux (x86, ARM, RISC-V) and on the BSDs and macOS.
        const SIGXFSZ: i32 = 25;
        match signal(SignalKind::from_raw(SIGXFSZ)) {
            Ok(mut file_too_large) => {
                tokio::spawn(async move {
                    while file_too_large.recv().await.is_some() {
                        tracing::warn!("the data file reached the file-size limit (SIGXFSZ)");
                    }
                });
            }
            Err(err) => tracing::warn!(%err, "cannot listen for SIGXFSZ"),
        }
    }
    #[cfg(not(unix))]
    let _ = data_dir;
}

/// Resolve on SIGINT or SIGTERM. A second signal exits at once.
async fn shutdown_signal() {
    wait_signal().await;
    tokio::spawn(async {
        wait_signal().await;
        eprintln!("second signal: exiting without departing");
        std::process::exit(130);
    });
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        tuning: Tuning,
    }

    fn tuning(args: &[&str]) -> Result<Tuning, clap::Error> {
        let argv = std::iter::once("test").chain(args.iter().copied());
        Wrapper::try_parse_from(argv).map(|w| w.tuning)
    }

    #[test]
    fn the_failure_timeout_sets_the_heartbeat_and_is_bounded() {
        let default = tuning(&[]).unwrap().timing();
        assert_eq!(default.failure_timeout_ns, 1_200_000_000);
        assert_eq!(default.heartbeat_interval_ns, 200_000_000);
        let slow = tuning(&["--failure-timeout-ms", "6000"]).unwrap().timing();
        assert_eq!(slow.failure_timeout_ns, 6_000_000_000);
        assert_eq!(
            slow.heartbeat_interval_ns, 500_000_000,
            "at most every 500 ms"
        );
        let off = tuning(&["--failure-timeout-ms", "1200", "--no-failure-handling"])
            .unwrap()
            .timing();
        assert_eq!(off.heartbeat_interval_ns, 0, "failure handling stays off");
        let err = tuning(&["--failure-timeout-ms", "50"]).err().unwrap();
        assert!(err.to_string().contains("at least 100"), "{err}");
        assert!(tuning(&["--max-connections", "0"]).is_err());
    }

    #[test]
    fn link_latency_takes_the_simulator_syntax() {
        assert_eq!(tuning(&[]).unwrap().actor().peers.link_latency, None);
        let slow = tuning(&["--link-latency", "const:20ms"]).unwrap().actor();
        assert_eq!(
            slow.peers.link_latency,
            Some(Latency::Const { ns: 20_000_000 })
        );
        let exp = tuning(&["--link-latency", "exp:1ms"]).unwrap().actor();
        assert_eq!(
            exp.peers.link_latency,
            Some(Latency::Exp { mean_ns: 1_000_000 })
        );
        let err = tuning(&["--link-latency", "20ms"]).err().unwrap();
        assert!(err.to_string().contains("const:1ms"), "{err}");
    }

    #[test]
    fn service_takes_a_duration_of_at_most_a_second() {
        assert_eq!(tuning(&[]).unwrap().actor().service, None);
        let paced = tuning(&["--service", "250us"]).unwrap().actor();
        assert_eq!(paced.service, Some(Duration::from_micros(250)));
        for bad in ["2s", "fast", "-1ms"] {
            assert!(tuning(&["--service", bad]).is_err(), "{bad} accepted");
        }
    }
}
