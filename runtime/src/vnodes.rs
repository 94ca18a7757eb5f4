//! A process that owns several ring positions (virtual nodes, `ClusterConfig::vnodes`).
//!
//! Each position is a node of its own (a core state machine with its listener, actor and
//! data directory), and each further position names the first one's advertised address
//! as its process (`NodeRef::process`), so that the core places a key's replicas on
//! distinct processes. The further positions listen on the first one's IP on any free
//! port (advertised on the first one's host), keep their data in `vnode-I` under the
//! first one's data directory, and, restarted with it, take their old addresses back.

use std::net::SocketAddr;

use crate::server::{NodeOptions, NodeServer, Role, StartError};
use crate::storage::Storage;

/// Options of further position `index` (1 to R - 1) of the process whose first position,
/// started with `first`, is advertised at `first_addr`; it joins through `bootstrap`.
pub fn position_options(
    first: &NodeOptions,
    first_addr: &str,
    bootstrap: &str,
    index: usize,
) -> Result<NodeOptions, StartError> {
    let mut options = first.clone();
    options.role = Role::Member {
        bootstrap: bootstrap.to_string(),
    };
    options.seed = None;
    options.recover = false;
    options.ring_runs = false;
    options.process = Some(first_addr.to_string());
    options.data_dir = first
        .data_dir
        .as_ref()
        .map(|d| d.join(format!("vnode-{index}")));
    // A position back from its data directory listens where it did before.
    let old = match &options.data_dir {
        Some(dir) => Storage::owner(dir)?,
        None => None,
    };
    let port = old
        .as_deref()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(0);
    options.bind = SocketAddr::new(first.bind.ip(), port);
    let host = match first_addr.rsplit_once(':') {
        Some((host, _)) => host,
        None => first_addr,
    };
    options.advertise = Some(match old {
        Some(addr) => addr,
        None => format!("{host}:0"),
    });
    Ok(options)
}

/// Start further positions 1 to `vnodes - 1` of the process whose first position is
/// `first` (started with `first_options`), each joining through `bootstrap` before the
/// next starts. On an error the positions already started are stopped.
pub async fn start_positions(
    first: &NodeServer,
    first_options: &NodeOptions,
    bootstrap: &str,
    vnodes: usize,
) -> Result<Vec<NodeServer>, String> {
    let mut started: Vec<NodeServer> = Vec::new();
    for index in 1..vnodes {
        let result = async {
            let options = position_options(first_options, first.addr(), bootstrap, index)
                .map_err(|e| e.to_string())?;
            let node = NodeServer::start(options)
                .await
                .map_err(|e| e.to_string())?;
            if let Err(reason) = node.join().await {
                let addr = node.addr().to_string();
                node.stop().await;
                return Err(format!("position {addr} could not join: {reason}"));
            }
            Ok(node)
        }
        .await;
        match result {
            Ok(node) => started.push(node),
            Err(err) => {
                for node in started {
                    node.stop().await;
                }
                return Err(err);
            }
        }
    }
    Ok(started)
}
