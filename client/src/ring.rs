//! The ring as a client sees it: its members (`GET /overlay` on any node), and where each
//! key lives, learned from the members themselves (`GET /node` on each).
//!
//! A key's replicas are the same `min(k, N)` nodes the nodes compute
//! ([`ringkv_core::Ring::replicas`]): a node's id is SHA-1 of its advertised `host:port`,
//! which is what `/overlay` lists, so the overlay and the ring's `k` are all a client needs.

use std::collections::BTreeSet;
use std::time::Duration;

use ringkv_core::{Consistency, Id, NodeRef, Ring};
use ringkv_runtime::{ClientError, HttpClient};
use serde::Deserialize;

/// Why the ring's members could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// No HTTP answer.
    #[error(transparent)]
    Transport(#[from] ClientError),
    /// An answer other than 200.
    #[error("GET /overlay: status {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The body, as text.
        body: String,
    },
}

/// The ring's members in ring order from the bootstrap, as `host:port`, asked of the node
/// at `addr` (`GET /overlay`). A 200 answer without a list reads as an empty ring.
pub async fn overlay(http: &HttpClient, addr: &str) -> Result<Vec<String>, OverlayError> {
    let reply = http.get(&format!("http://{addr}/overlay")).await?;
    if reply.status != 200 {
        return Err(OverlayError::Status {
            status: reply.status,
            body: reply.text(),
        });
    }
    Ok(reply.value()["overlay"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// How long a node may take to answer `GET /overlay` or `GET /node` while a ring is
/// learned: one that does not answer within it is better routed round than waited for
/// (an overlay walk that meets a crashed member waits for the node's request timeout).
pub const LEARN_WAIT: Duration = Duration::from_secs(2);

/// Most members a learned ring may list: a bound on the `/node` requests one learning
/// sends, far above any ring this code runs.
pub const MEMBERS_MAX: usize = 1024;

/// A ring as a client learned it: its members, `k` and consistency model, and which
/// members answered.
#[derive(Clone, Debug)]
pub struct RingMap {
    ring: Ring,
    /// In overlay order (ring order from the bootstrap).
    members: Vec<String>,
    k: usize,
    consistency: Consistency,
    /// Members that did not answer `GET /node`, or answered that they are not active.
    unavailable: BTreeSet<String>,
    /// Whether every member that answered reported the neighbours the overlay implies.
    settled: bool,
}

impl RingMap {
    /// A ring of `members` (in overlay order) with replication factor `k`, every member
    /// taken as available: what a client remembered from an earlier learning.
    pub fn new(members: Vec<String>, k: usize, consistency: Consistency) -> RingMap {
        let mut ring = Ring::new();
        for addr in &members {
            ring.insert(NodeRef::new(addr));
        }
        RingMap {
            ring,
            members,
            k: k.max(1),
            consistency,
            unavailable: BTreeSet::new(),
            settled: true,
        }
    }

    /// Members in overlay order, `host:port`.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Replication factor.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Consistency model.
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// Whether the members agreed with the overlay on their neighbours when learned (a
    /// ring in the middle of a join or departure does not).
    pub fn is_settled(&self) -> bool {
        self.settled
    }

    /// Whether `addr` answered as an active member when learned (and has not failed
    /// since, see [`RingMap::mark_unavailable`]).
    pub fn is_available(&self, addr: &str) -> bool {
        !self.unavailable.contains(addr)
    }

    /// Members that answered as active, in overlay order.
    pub fn available(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .map(String::as_str)
            .filter(|m| self.is_available(m))
    }

    /// Record that `addr` did not answer.
    pub fn mark_unavailable(&mut self, addr: &str) {
        if self.members.iter().any(|m| m == addr) {
            self.unavailable.insert(addr.to_string());
        }
    }

    /// The key's `min(k, N)` replicas, head (primary) first and tail last.
    pub fn replicas(&self, key: &str) -> Vec<&str> {
        self.ring
            .replicas(Id::of_key(key), self.k)
            .iter()
            .filter_map(|n| self.member(&n.addr))
            .collect()
    }

    /// The member named `addr`, borrowed from the map.
    fn member(&self, addr: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.as_str() == addr)
            .map(String::as_str)
    }
}

/// Why no ring could be learned.
#[derive(Debug, thiserror::Error)]
#[error("cannot learn the ring from {}", describe(.attempts))]
pub struct LearnError {
    /// Each node asked and why it did not do.
    pub attempts: Vec<(String, String)>,
}

fn describe(attempts: &[(String, String)]) -> String {
    if attempts.is_empty() {
        return "no node (none given)".into();
    }
    let tried: Vec<String> = attempts
        .iter()
        .map(|(node, why)| format!("{node} ({why})"))
        .collect();
    tried.join(", ")
}

/// What a node says of itself on `GET /node` (the fields a client needs).
#[derive(Deserialize)]
struct NodeInfo {
    id: String,
    addr: String,
    phase: String,
    k: usize,
    consistency: Consistency,
    ring_size: usize,
    predecessor: Option<Neighbour>,
    successor: Option<Neighbour>,
}

#[derive(Deserialize)]
struct Neighbour {
    addr: String,
}

/// Learn the ring from the first of `seeds` that lists it (`GET /overlay`), then ask every
/// member about itself (`GET /node`, concurrently); each answer is awaited at most
/// [`LEARN_WAIT`].
/// Members that do not answer, answer with another address or id, or are not active are
/// kept in the ring (the nodes still place keys on them) but marked unavailable.
pub async fn learn(http: &HttpClient, seeds: &[String]) -> Result<RingMap, LearnError> {
    let mut attempts = Vec::new();
    for seed in seeds {
        match learn_from(http, seed).await {
            Ok(map) => return Ok(map),
            Err(why) => attempts.push((seed.clone(), why)),
        }
    }
    Err(LearnError { attempts })
}

async fn learn_from(http: &HttpClient, seed: &str) -> Result<RingMap, String> {
    let members = match tokio::time::timeout(LEARN_WAIT, overlay(http, seed)).await {
        Ok(listed) => listed.map_err(|e| e.to_string())?,
        Err(_) => return Err(format!("no overlay within {} ms", LEARN_WAIT.as_millis())),
    };
    if members.is_empty() {
        return Err("the overlay is empty".into());
    }
    if members.len() > MEMBERS_MAX {
        return Err(format!(
            "the overlay lists {} members, more than {MEMBERS_MAX}",
            members.len()
        ));
    }
    let mut asks = tokio::task::JoinSet::new();
    for (i, addr) in members.iter().enumerate() {
        let (http, addr) = (http.clone(), addr.clone());
        asks.spawn(async move {
            let info = tokio::time::timeout(LEARN_WAIT, node_info(&http, &addr)).await;
            (i, info.ok().flatten())
        });
    }
    let mut infos: Vec<Option<NodeInfo>> = members.iter().map(|_| None).collect();
    while let Some(done) = asks.join_next().await {
        if let Ok((i, Some(info))) = done {
            infos[i] = Some(info);
        }
    }
    let Some(first) = infos.iter().flatten().find(|i| i.phase == "active") else {
        return Err("no member of its overlay answered GET /node as active".into());
    };
    let mut map = RingMap::new(members.clone(), first.k, first.consistency);
    let n = members.len();
    for (addr, info) in members.iter().zip(&infos) {
        let active = info.as_ref().is_some_and(|i| {
            i.phase == "active" && i.addr == *addr && Id::from_hex(&i.id) == Some(Id::of_addr(addr))
        });
        if !active {
            map.unavailable.insert(addr.clone());
        }
    }
    map.settled = infos.iter().flatten().all(|info| agrees(&map, info, n));
    Ok(map)
}

/// Whether a member's own view (ring size, predecessor, successor) is the one the
/// overlay implies.
fn agrees(map: &RingMap, info: &NodeInfo, n: usize) -> bool {
    if n == 1 {
        return info.ring_size == 1;
    }
    let me = NodeRef::new(&info.addr);
    let pred = map.ring.predecessor_before(me.id).map(|p| &*p.addr);
    let succ = map.ring.successor_after(me.id).map(|s| &*s.addr);
    info.ring_size == n
        && info.predecessor.as_ref().map(|p| p.addr.as_str()) == pred
        && info.successor.as_ref().map(|s| s.addr.as_str()) == succ
}

async fn node_info(http: &HttpClient, addr: &str) -> Option<NodeInfo> {
    let reply = http.get(&format!("http://{addr}/node")).await.ok()?;
    (reply.status == 200).then(|| reply.json().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: usize, k: usize) -> RingMap {
        let members = (0..n).map(|i| format!("10.0.0.{i}:5000")).collect();
        RingMap::new(members, k, Consistency::Chain)
    }

    #[test]
    fn replicas_are_the_nodes_own_placement() {
        let m = map(10, 3);
        let ring = &m.ring;
        for key in ["a", "Like a Rolling Stone", "key-17"] {
            let want: Vec<String> = ring
                .replicas(Id::of_key(key), 3)
                .iter()
                .map(|n| n.addr.to_string())
                .collect();
            assert_eq!(m.replicas(key), want);
        }
        assert_eq!(map(2, 3).replicas("a").len(), 2, "min(k, N)");
    }

    #[test]
    fn unavailable_members_stay_in_the_placement() {
        let mut m = map(4, 2);
        let head = m.replicas("x")[0].to_string();
        m.mark_unavailable(&head);
        m.mark_unavailable("not-a-member:1");
        assert!(!m.is_available(&head));
        assert_eq!(m.replicas("x")[0], head);
        assert_eq!(m.available().count(), 3);
    }

    #[test]
    fn learn_errors_list_every_node_tried() {
        let err = LearnError {
            attempts: vec![
                ("a:1".into(), "refused".into()),
                ("b:2".into(), "empty".into()),
            ],
        };
        assert_eq!(
            err.to_string(),
            "cannot learn the ring from a:1 (refused), b:2 (empty)"
        );
    }
}
