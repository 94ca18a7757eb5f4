//! A whole ring in one process: every node has its own listener and actor, and they talk
//! over real loopback HTTP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ringkv_core::{ClusterConfig, Limits, Request, Response, Timing};

use crate::actor::ActorOptions;
use crate::server::{NodeOptions, NodeServer, Role, StartError};

/// How to lay out a local ring.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes, the bootstrap included: processes, each of `cluster.vnodes`
    /// ring positions (see [`crate::vnodes`]).
    pub nodes: usize,
    /// k, consistency model and routing.
    pub cluster: ClusterConfig,
    /// Address every node listens on.
    pub host: IpAddr,
    /// Port of the bootstrap; the others use the next ports. 0: every node on a free port.
    pub base_port: u16,
    /// Core input limits.
    pub limits: Limits,
    /// Core timeouts.
    pub timing: Timing,
    /// Runtime bounds.
    pub actor: ActorOptions,
    /// Cluster secret for node-to-node messages (see [`NodeOptions::cluster_secret`]).
    pub cluster_secret: Option<String>,
    /// HTTP connections each node serves at once (see [`NodeOptions::max_connections`]).
    pub max_connections: usize,
    /// TEST ONLY: every node serves `POST /admin/partition` (see
    /// [`NodeOptions::allow_fault_injection`]).
    pub allow_fault_injection: bool,
    /// Node i keeps its data in `DIR/node-i` (see [`NodeOptions::data_dir`]).
    pub data_dir: Option<std::path::PathBuf>,
}

impl ClusterOptions {
    /// `nodes` nodes on 127.0.0.1, free ports, default limits.
    pub fn new(nodes: usize, cluster: ClusterConfig) -> ClusterOptions {
        ClusterOptions {
            nodes,
            cluster,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 0,
            limits: Limits::default(),
            timing: Timing::default(),
            actor: ActorOptions::default(),
            cluster_secret: None,
            max_connections: crate::MAX_CONNECTIONS_DEFAULT,
            allow_fault_injection: false,
            data_dir: None,
        }
    }

    fn node_options(&self, index: usize, role: Role) -> Result<NodeOptions, ClusterError> {
        let port = if self.base_port == 0 {
            0
        } else {
            u16::try_from(usize::from(self.base_port) + index).map_err(|_| {
                ClusterError::PortRange {
                    base: self.base_port,
                    nodes: self.nodes,
                }
            })?
        };
        let mut options = NodeOptions::new(SocketAddr::new(self.host, port), role);
        options.limits = self.limits;
        options.timing = self.timing;
        options.actor = self.actor;
        options.cluster_secret = self.cluster_secret.clone();
        options.max_connections = self.max_connections;
        options.allow_fault_injection = self.allow_fault_injection;
        options.data_dir = self
            .data_dir
            .as_ref()
            .map(|d| d.join(format!("node-{index}")));
        Ok(options)
    }
}

/// Why a local ring could not be formed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A cluster needs at least its bootstrap.
    #[error("a cluster needs at least 1 node")]
    Empty,
    /// Ports past 65535.
    #[error("{nodes} nodes from port {base} run past port 65535")]
    PortRange {
        /// Base port.
        base: u16,
        /// Node count.
        nodes: usize,
    },
    /// A node did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A node could not join.
    #[error("node {addr} could not join: {reason}")]
    Join {
        /// The node.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// A running local ring; node 0 is the bootstrap.
pub struct LocalCluster {
    nodes: Vec<NodeServer>,
}

impl LocalCluster {
    /// Start the bootstrap, then every other node, each joining in turn.
    pub async fn start(options: ClusterOptions) -> Result<LocalCluster, ClusterError> {
        if options.nodes == 0 {
            return Err(ClusterError::Empty);
        }
        let bootstrap =
            NodeServer::start(options.node_options(0, Role::Bootstrap(options.cluster))?).await?;
        let role = Role::Member {
            bootstrap: bootstrap.addr().to_string(),
        };
        let mut cluster = LocalCluster {
            nodes: vec![bootstrap],
        };
        let bootstrap_addr = cluster.nodes[0].addr().to_string();
        let vnodes = options.cluster.vnodes.max(1) as usize;
        for index in 0..options.nodes {
            if index > 0 {
                let node = match NodeServer::start(options.node_options(index, role.clone())?).await
                {
                    Ok(node) => node,
                    Err(err) => {
                        cluster.stop().await;
                        return Err(err.into());
                    }
                };
                let joined = node.join().await;
                let addr = node.addr().to_string();
                cluster.nodes.push(node);
                if let Err(reason) = joined {
                    cluster.stop().await;
                    return Err(ClusterError::Join { addr, reason });
                }
            }
            if vnodes > 1 {
                // The process's further positions, on free ports.
                let Some(first) = cluster.nodes.last() else {
                    continue;
                };
                let first_options = options.node_options(index, role.clone())?;
                let started =
                    crate::vnodes::start_positions(first, &first_options, &bootstrap_addr, vnodes)
                        .await;
                match started {
                    Ok(nodes) => cluster.nodes.extend(nodes),
                    Err(reason) => {
                        let addr = first.addr().to_string();
                        cluster.stop().await;
                        return Err(ClusterError::Join { addr, reason });
                    }
                }
            }
        }
        Ok(cluster)
    }

    /// The nodes, bootstrap first.
    pub fn nodes(&self) -> &[NodeServer] {
        &self.nodes
    }

    /// Node `i` (0 is the bootstrap).
    pub fn node(&self, i: usize) -> &NodeServer {
        &self.nodes[i]
    }

    /// Take node `i` out of the cluster, e.g. to stop it as if it crashed.
    pub fn take_node(&mut self, i: usize) -> NodeServer {
        self.nodes.remove(i)
    }

    /// Advertised addresses, bootstrap first.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr().to_string()).collect()
    }

    /// The ring in order from the bootstrap, as the ring itself reports it.
    pub async fn overlay(&self) -> Result<Vec<String>, String> {
        match self.nodes[0].request(Request::Overlay).await {
            Ok(Ok(Response::Overlay { nodes })) => Ok(nodes),
            Ok(Ok(other)) => Err(format!("unexpected answer {other:?}")),
            Ok(Err(err)) => Err(err.to_string()),
            Err(err) => Err(err.to_string()),
        }
    }

    /// Depart every node (last joined first, the bootstrap last), then stop them all.
    pub async fn shutdown(mut self) {
        while let Some(node) = self.nodes.pop() {
            node.shutdown().await;
        }
    }

    /// Stop every node without departing.
    pub async fn stop(&mut self) {
        let stops = self.nodes.drain(..).map(|n| n.stop());
        for stop in stops {
            stop.await;
        }
    }

    /// Wait until the bootstrap reports a ring of `size` nodes, at most `limit`.
    pub async fn wait_for_ring_size(&self, size: usize, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Ok(nodes) = self.overlay().await {
                if nodes.len() == size {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
