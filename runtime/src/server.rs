//! One node: a listener, its HTTP server and the actor that owns its state machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringkv_core::{ClusterConfig, Limits, Node, NodeConfig, Reply, Request, Response, Timing};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::actor::{self, ActorOptions, NodeHandle, Unavailable};
use crate::conn_limit::{LimitedListener, MAX_CONNECTIONS_DEFAULT};
use crate::dial::Dialer;
use crate::fault::PeerFilter;
use crate::inbound::Inbound;
use crate::metrics::Metrics;

/// Whether a node founds the ring or joins one.
#[derive(Clone, Debug)]
pub enum Role {
    /// The bootstrap: starts as a one-node ring with these settings.
    Bootstrap(ClusterConfig),
    /// An ordinary node that joins through the bootstrap at this `host:port`.
    Member {
        /// The bootstrap's advertised address.
        bootstrap: String,
    },
}

/// Everything needed to start one node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// `host:port` other nodes and clients reach this node at; by default the bound
    /// address (which must then not be a wildcard such as 0.0.0.0).
    pub advertise: Option<String>,
    /// Bootstrap or member.
    pub role: Role,
    /// Seed of the node's random number generator; by default derived from its address.
    pub seed: Option<u64>,
    /// Core input limits.
    pub limits: Limits,
    /// Core timeouts.
    pub timing: Timing,
    /// Runtime bounds.
    pub actor: ActorOptions,
    /// Bound of opening a peer connection and of each write on one.
    pub peer_timeout: Duration,
    /// Shared secret every cluster member presents when it opens a peer connection (and
    /// on JSON posts of peer messages); connections and posts without it are refused with
    /// 401. `None`: node-to-node traffic is open (fine on a loopback-only ring).
    pub cluster_secret: Option<String>,
    /// Most HTTP connections (clients and peers alike) served at once; a connection
    /// beyond it is answered `503` (`code` `too_many_connections`, `retry-after: 1`) and
    /// closed, without reaching the node. Values below 1 count as 1. Default
    /// [`MAX_CONNECTIONS_DEFAULT`] (1024).
    pub max_connections: usize,
    /// For a bootstrap: look for the ring it belonged to (its members tell it every
    /// heartbeat) before founding a new one, and rejoin that ring if there is one. Off
    /// by default; `dht bootstrap` turns it on.
    pub recover: bool,
    /// For a bootstrap with `recover`: its ring still runs (its operator sees the other
    /// nodes up). It then never founds a ring of its own, however long it hears nothing,
    /// and waits for its members' greetings (see `NodeConfig::ring_runs`): a bootstrap
    /// without a data directory, cut off from its members when it restarts, cannot tell
    /// otherwise. Off by default; `dht bootstrap --rejoin` turns it on.
    pub ring_runs: bool,
    /// TEST ONLY: serve `POST /admin/partition`, which cuts the node off from chosen peers
    /// (every message to and from them is dropped) until healed. With a cluster secret the
    /// request must carry it; without one, this flag alone opens the endpoint. Off by
    /// default: the endpoint then answers 404.
    pub allow_fault_injection: bool,
    /// Keep the node's data and identity in this directory (created if missing), and
    /// come back with them after a restart. `None`: in memory only.
    pub data_dir: Option<std::path::PathBuf>,
    /// With virtual nodes: the advertised address of the first position of the process
    /// this node is a further position of (see [`crate::vnodes`]). `None`: the node
    /// is a process of its own (or its first position).
    pub process: Option<String>,
}

impl NodeOptions {
    /// A node on `bind` with default limits and timing.
    pub fn new(bind: SocketAddr, role: Role) -> NodeOptions {
        NodeOptions {
            bind,
            advertise: None,
            role,
            seed: None,
            limits: Limits::default(),
            timing: Timing::default(),
            actor: ActorOptions::default(),
            peer_timeout: Duration::from_secs(10),
            cluster_secret: None,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            recover: false,
            ring_runs: false,
            allow_fault_injection: false,
            data_dir: None,
            process: None,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The node would advertise an address no peer can reach.
    #[error("listening on {0}, a wildcard address: give the address peers should use with --advertise HOST:PORT")]
    NeedAdvertise(SocketAddr),
    /// The data directory cannot be used.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The data directory holds a ring with other settings than the command line's.
    #[error(
        "the data directory {path} holds a ring with k = {disk_k} and {disk_model} replication, \
         but this bootstrap was started with k = {k} and {model}: start it with the ring's \
         settings, or give it an empty data directory for a new ring"
    )]
    OtherSettings {
        /// The database file.
        path: std::path::PathBuf,
        /// The disk's settings.
        disk_k: usize,
        /// The disk's model.
        disk_model: ringkv_core::Consistency,
        /// The command line's.
        k: usize,
        /// The command line's model.
        model: ringkv_core::Consistency,
    },
}

/// A running node. Stop it with [`NodeServer::shutdown`] (depart first) or
/// [`NodeServer::stop`].
pub struct NodeServer {
    addr: String,
    local_addr: SocketAddr,
    handle: NodeHandle,
    metrics: Arc<Metrics>,
    is_bootstrap: bool,
    actor_task: JoinHandle<()>,
    actor_stop: oneshot::Sender<()>,
    /// How long the actor task may take to send what its peer queues hold once stopped.
    actor_grace: Duration,
    inbound: Arc<Inbound>,
    http_task: JoinHandle<()>,
    http_stop: oneshot::Sender<()>,
}

/// How long a stopping server waits for open connections to finish.
const HTTP_DRAIN: Duration = Duration::from_secs(3);

/// Longest a node stopping after its departure waits for its hints to be acknowledged.
pub const HINTS_DRAIN_MAX: Duration = Duration::from_secs(30);

/// Longest it waits without any being acknowledged.
pub const HINTS_STALL_MAX: Duration = Duration::from_secs(5);

impl NodeServer {
    /// Bind, then start the actor and the HTTP server.
    pub async fn start(options: NodeOptions) -> Result<NodeServer, StartError> {
        let listener =
            TcpListener::bind(options.bind)
                .await
                .map_err(|source| StartError::Bind {
                    addr: options.bind,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: options.bind,
            source,
        })?;
        let addr = match &options.advertise {
            // Port 0 advertised: the port bound (further positions of a process).
            Some(addr) if addr.ends_with(":0") => {
                format!("{}:{}", &addr[..addr.len() - 2], local_addr.port())
            }
            Some(addr) => addr.clone(),
            None if local_addr.ip().is_unspecified() => {
                return Err(StartError::NeedAdvertise(local_addr))
            }
            None => local_addr.to_string(),
        };
        let seed = options.seed.unwrap_or_else(|| seed_of(&addr));
        let (mut config, is_bootstrap) = match &options.role {
            Role::Bootstrap(cluster) => (NodeConfig::bootstrap(addr.clone(), *cluster, seed), true),
            Role::Member { bootstrap } => (
                NodeConfig::member(addr.clone(), bootstrap.clone(), seed),
                false,
            ),
        };
        config.limits = options.limits;
        config.timing = options.timing;
        config.process = options.process.clone().filter(|p| *p != addr);
        config.recover = options.recover && is_bootstrap;
        config.ring_runs = options.ring_runs && config.recover;
        // The actor's clock starts about now: versions take wall time as their floor.
        config.clock_epoch_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let storage = match &options.data_dir {
            None => None,
            Some(dir) => {
                let (storage, recovered) = crate::storage::Storage::open(dir, &addr)?;
                if let (Some(meta), Role::Bootstrap(cluster)) = (&recovered.meta, &options.role) {
                    if meta.settings != *cluster {
                        return Err(StartError::OtherSettings {
                            path: storage.path().to_path_buf(),
                            disk_k: meta.settings.k,
                            disk_model: meta.settings.consistency,
                            k: cluster.k,
                            model: cluster.consistency,
                        });
                    }
                }
                // A bootstrap back from its disk looks for its ring before anything else.
                if recovered.meta.as_ref().is_some_and(|m| m.ring_id != 0) && is_bootstrap {
                    config.recover = true;
                }
                tracing::info!(
                    path = %storage.path().display(),
                    entries = recovered.entries.len(),
                    ring = ?recovered.meta.as_ref().map(|m| format!("{:016x}", m.ring_id)),
                    "data directory opened"
                );
                config.durable = true;
                config.recovered = Some(recovered);
                Some(storage)
            }
        };
        let metrics = Arc::new(Metrics::default());
        let filter = Arc::new(PeerFilter::default());
        let secret: Option<Arc<str>> = options.cluster_secret.as_deref().map(Arc::from);
        let dialer = Dialer {
            secret: secret.clone(),
            timeout: options.peer_timeout,
        };
        let running = actor::spawn(
            Node::new(config),
            options.timing.request_timeout_ns,
            options.actor,
            dialer,
            metrics.clone(),
            filter.clone(),
            storage,
        );
        let inbound = Arc::new(Inbound::new(
            running.handle.clone(),
            metrics.clone(),
            secret.clone(),
            filter.clone(),
        ));
        let faults = options.allow_fault_injection.then_some(filter);
        let app = crate::http::router(
            running.handle.clone(),
            metrics.clone(),
            secret,
            inbound.clone(),
            faults,
        );
        let (http_stop, stopped) = oneshot::channel::<()>();
        // Sets TCP_NODELAY on every accepted connection.
        let listener = LimitedListener::new(listener, options.max_connections, metrics.clone());
        let http_task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(err) = serve.await {
                tracing::error!(%err, "HTTP server failed");
            }
        });
        tracing::info!(
            %addr,
            %local_addr,
            bootstrap = is_bootstrap,
            max_connections = options.max_connections,
            fault_injection = options.allow_fault_injection,
            link_latency = %options
                .actor
                .peers
                .link_latency
                .map_or("none".to_string(), |l| l.to_string()),
            service = %options
                .actor
                .service
                .map_or("none".to_string(), |d| format!("{d:?}")),
            "node started"
        );
        Ok(NodeServer {
            addr,
            local_addr,
            handle: running.handle,
            metrics,
            is_bootstrap,
            actor_task: running.task,
            actor_stop: running.stop,
            actor_grace: options.actor.drain_grace,
            inbound,
            http_task,
            http_stop,
        })
    }

    /// Advertised `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The socket address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://host:port` of this node.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether this node is the bootstrap.
    pub fn is_bootstrap(&self) -> bool {
        self.is_bootstrap
    }

    /// The handle to the node's actor.
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Why the node stopped taking part, if it did (a bootstrap started with settings
    /// other than its ring's); `None` while it runs normally or cannot be asked.
    pub async fn halted(&self) -> Option<String> {
        self.handle
            .inspect(|node| node.halted().map(str::to_string))
            .await
            .ok()
            .flatten()
    }

    /// Ask the node directly (without HTTP). The core answers every request by its
    /// deadline; the wait is bounded anyway (by [`NodeHandle::wait`]), as this is how a
    /// process joins, departs and stops, which must end even if the node misbehaves.
    pub async fn request(&self, request: Request) -> Result<Reply, Unavailable> {
        let wait = self.handle.wait();
        match tokio::time::timeout(wait, self.handle.request(request)).await {
            Ok(reply) => reply,
            Err(_) => Err(Unavailable::TimedOut(wait.as_millis() as u64)),
        }
    }

    /// Join the ring (a member that is idle).
    pub async fn join(&self) -> Result<Response, String> {
        flatten(self.request(Request::Join).await)
    }

    /// Leave the ring, handing the node's data on.
    pub async fn depart(&self) -> Result<Response, String> {
        flatten(self.request(Request::Depart).await)
    }

    /// Depart if this node is a member (the bootstrap only when it is alone), then stop.
    pub async fn shutdown(self) {
        self.depart_if_member().await;
        self.stop().await;
    }

    /// As [`NodeServer::shutdown`], but after departing wait (up to [`HINTS_DRAIN_MAX`])
    /// until the keys' heads have acknowledged the entries this node handed them as hints:
    /// they may be the last copies of writes whose other holders crashed during the
    /// hand-over. For a process leaving a ring that goes on (`dht node`, `dht bootstrap`);
    /// a whole ring stopping at once has no use for them.
    pub async fn shutdown_handing_over(self) {
        if self.depart_if_member().await {
            self.deliver_hints().await;
        }
        self.stop().await;
    }

    /// Whether this node departed.
    async fn depart_if_member(&self) -> bool {
        let member = self
            .handle
            .inspect(|n| n.is_member())
            .await
            .unwrap_or(false);
        if !member {
            return false;
        }
        match self.depart().await {
            Ok(_) => {
                tracing::info!(addr = %self.addr, "departed");
                true
            }
            Err(err) => {
                tracing::warn!(addr = %self.addr, %err, "could not depart before stopping");
                false
            }
        }
    }

    /// Wait until no hint is left, for at most [`HINTS_DRAIN_MAX`], and no longer than
    /// [`HINTS_STALL_MAX`] without an acknowledgement (the rest of the ring may be
    /// stopping too, or cut off).
    async fn deliver_hints(&self) {
        let start = tokio::time::Instant::now();
        let (mut fewest, mut progress) = (usize::MAX, start);
        loop {
            let left = self.handle.inspect(|n| n.status().hints).await.unwrap_or(0);
            if left == 0 {
                tracing::info!(addr = %self.addr, waited = ?start.elapsed(), "every hint acknowledged");
                return;
            }
            let now = tokio::time::Instant::now();
            if left < fewest {
                (fewest, progress) = (left, now);
            }
            if now >= start + HINTS_DRAIN_MAX || now >= progress + HINTS_STALL_MAX {
                tracing::warn!(addr = %self.addr, hints = left, "stopping with hints unacknowledged");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop serving at once, without departing (peers see a crash). What the node's peer
    /// queues hold is still sent for up to the actor's `drain_grace`.
    pub async fn stop(self) {
        let _ = self.http_stop.send(());
        // Peer connections were upgraded out of the HTTP server, which no longer tracks them.
        self.inbound.close();
        if tokio::time::timeout(HTTP_DRAIN, self.http_task)
            .await
            .is_err()
        {
            tracing::warn!(addr = %self.addr, "HTTP connections still open after {HTTP_DRAIN:?}");
        }
        let _ = self.actor_stop.send(());
        // The task ends once its peer queues drained (at most the drain grace); bounded
        // anyway, so that stopping a node always ends.
        let abort = self.actor_task.abort_handle();
        if tokio::time::timeout(self.actor_grace + HTTP_DRAIN, self.actor_task)
            .await
            .is_err()
        {
            tracing::warn!(addr = %self.addr, "the node's task did not end; aborting it");
            abort.abort();
        }
        tracing::info!(addr = %self.addr, "node stopped");
    }
}

fn flatten(reply: Result<Reply, Unavailable>) -> Result<Response, String> {
    match reply {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(err)) => Err(err.to_string()),
        Err(unavailable) => Err(unavailable.to_string()),
    }
}

/// A seed derived from the advertised address (FNV-1a), so a node's behaviour does not
/// depend on when it started.
fn seed_of(addr: &str) -> u64 {
    addr.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
