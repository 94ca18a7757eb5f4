//! Token-aware routing: send each request straight to the node that serves it, as
//! Cassandra's token-aware drivers and Redis Cluster clients do, instead of to any node
//! and through the ring's lookups.
//!
//! A [`TokenRouter`] keeps a [`RingMap`] learned from the ring ([`ring::learn`]) and, per
//! operation, picks a [`Route`]:
//!
//! | operation | chain | eventual |
//! |---|---|---|
//! | insert, delete | the key's head (primary) | the head |
//! | query | the key's tail, which answers it | any replica, in turn |
//!
//! (CRAQ: as chain for writes, as eventual for reads.) A chain read sent to a node that
//! is not the key's tail in its own view (the ring moved) is routed on by that node, to
//! the head and from there to the tail.
//!
//! The map is learned again in the background (at most one learning at a time, and not
//! more often than [`RELEARN_INTERVAL_MIN`]; requests meanwhile use the map they have)
//! when an answer shows it is stale: an answer served by
//! another node than the map predicts (the ring has moved the key: a redirect in all but
//! name), a node that does not answer, or an error that says the ring is changing
//! (`route_broken`, `too_many_hops`, `not_joined`, `stopped`, `timeout`). A node that does
//! not answer is routed round at once, before the learning is done. Requests never need
//! token routing to be correct: any member routes any request.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ringkv_core::Consistency;
use ringkv_runtime::{Cause, ErrorCode, HttpClient, Outcome};
use ringkv_sim::check::OpKind;
use serde::Serialize;

use crate::op::Op;
use crate::ring::{self, LearnError, RingMap};

/// How a client picks the node a request goes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientRouting {
    /// To an entry node that need not hold the key; the ring routes the request (Chord
    /// lookups). What the reference design's clients do.
    #[default]
    Random,
    /// Straight to the node that serves the key ([`TokenRouter`]).
    Token,
}

impl FromStr for ClientRouting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "random" | "entry" | "any" => Ok(ClientRouting::Random),
            "token" | "token-aware" | "direct" => Ok(ClientRouting::Token),
            _ => Err(format!("unknown routing '{s}': use random or token")),
        }
    }
}

impl fmt::Display for ClientRouting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientRouting::Random => "random",
            ClientRouting::Token => "token",
        })
    }
}

/// Shortest time between two learnings of the ring by one router: a ring in the middle
/// of a change makes every answer look stale, and each learning costs one request per
/// member.
pub const RELEARN_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// Where one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The node to send it to, `host:port`.
    pub target: String,
    /// The node the answer should name as having served it, if the map is current; `None`
    /// when the map cannot tell (the request goes through the ring).
    pub expected: Option<String>,
    /// Learnings of the ring before the route was computed.
    generation: u64,
}

/// What an answer says about the map a route came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staleness {
    /// Nothing: the answer came from where the map said.
    Current,
    /// Learn the ring again.
    Relearn,
    /// The target did not answer: route round it now, and learn the ring again.
    TargetDown,
}

/// Judge an answer to a request sent along `route`.
pub fn staleness(route: &Route, outcome: &Outcome) -> Staleness {
    let cause = match outcome {
        Outcome::Ok(served) => {
            let moved = match (&route.expected, &served.node) {
                (Some(expected), Some(node)) => expected != node,
                _ => false,
            };
            return if moved {
                Staleness::Relearn
            } else {
                Staleness::Current
            };
        }
        Outcome::Fail(cause) | Outcome::Info(cause) => cause,
    };
    match cause {
        Cause::Transport(_) => Staleness::TargetDown,
        Cause::Status { code, .. } => match code {
            Some(
                ErrorCode::RouteBroken
                | ErrorCode::LeaseExpired
                | ErrorCode::TooManyHops
                | ErrorCode::NotJoined
                | ErrorCode::Stopped
                | ErrorCode::Timeout,
            ) => Staleness::Relearn,
            _ => Staleness::Current,
        },
    }
}

/// The route of an operation of kind `kind` on `key` in `map`. `turn` spreads eventual
/// and CRAQ reads over the replicas, and requests whose replica is unavailable over the members.
pub fn choose(map: &RingMap, kind: OpKind, key: &str, turn: usize) -> Route {
    let replicas = map.replicas(key);
    let (Some(&head), Some(&tail)) = (replicas.first(), replicas.last()) else {
        return through_ring(map, turn);
    };
    let (target, expected) = match (kind, map.consistency()) {
        (OpKind::Read, Consistency::Eventual | Consistency::Craq) => {
            let up: Vec<&str> = replicas
                .iter()
                .copied()
                .filter(|r| map.is_available(r))
                .collect();
            match up.get(turn % up.len().max(1)) {
                Some(&replica) => (replica, replica),
                None => return through_ring(map, turn),
            }
        }
        (OpKind::Read, Consistency::Chain) => (tail, tail),
        (_, Consistency::Chain | Consistency::Craq) => (head, tail),
        (_, Consistency::Eventual) => (head, head),
    };
    if !map.is_available(target) {
        return through_ring(map, turn);
    }
    Route {
        target: target.to_string(),
        expected: Some(expected.to_string()),
        generation: 0,
    }
}

/// Any available member (any member when none is), which routes the request itself.
fn through_ring(map: &RingMap, turn: usize) -> Route {
    let up: Vec<&str> = map.available().collect();
    let all: Vec<&str> = map.members().iter().map(String::as_str).collect();
    let pool = if up.is_empty() { all } else { up };
    Route {
        target: pool
            .get(turn % pool.len().max(1))
            .map_or_else(String::new, |m| m.to_string()),
        expected: None,
        generation: 0,
    }
}

/// A ring map shared by concurrent clients, learned again when answers show it stale.
/// Cheap to clone; clones share the map.
#[derive(Clone)]
pub struct TokenRouter {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    /// Where the ring was first learned from; asked again when no known member answers.
    seeds: Vec<String>,
    map: RwLock<Arc<RingMap>>,
    /// A learning is under way.
    learning: AtomicBool,
    last_learned: Mutex<Instant>,
    /// Learnings since the first.
    relearns: AtomicU64,
    turn: AtomicUsize,
}

impl TokenRouter {
    /// Learn the ring from the first of `seeds` that answers ([`ring::learn`]).
    pub async fn learn(http: HttpClient, seeds: Vec<String>) -> Result<TokenRouter, LearnError> {
        let map = ring::learn(&http, &seeds).await?;
        Ok(TokenRouter::with_map(http, seeds, map))
    }

    /// A router that starts from `map` (remembered from an earlier learning, say).
    pub fn with_map(http: HttpClient, seeds: Vec<String>, map: RingMap) -> TokenRouter {
        TokenRouter {
            inner: Arc::new(Inner {
                http,
                seeds,
                map: RwLock::new(Arc::new(map)),
                learning: AtomicBool::new(false),
                last_learned: Mutex::new(Instant::now()),
                relearns: AtomicU64::new(0),
                turn: AtomicUsize::new(0),
            }),
        }
    }

    /// The current map.
    pub fn map(&self) -> Arc<RingMap> {
        self.inner
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many times the ring was learned again.
    pub fn relearns(&self) -> u64 {
        self.inner.relearns.load(Ordering::Relaxed)
    }

    /// Where to send `op`.
    pub fn route(&self, op: &Op) -> Route {
        let generation = self.relearns();
        let map = self.map();
        let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed);
        Route {
            generation,
            ..choose(&map, op.f, &op.key, turn)
        }
    }

    /// Take note of how a request sent along `route` ended: route round a node that did
    /// not answer, and learn the ring again, in a task of its own, when the answer shows
    /// the map stale. Call it inside a tokio runtime.
    pub fn observe(&self, route: &Route, outcome: &Outcome) {
        let verdict = staleness(route, outcome);
        if verdict == Staleness::TargetDown {
            self.mark_down(&route.target);
        }
        // A learning under way will do for this answer too; no task for it.
        if verdict != Staleness::Current && !self.inner.learning.load(Ordering::Acquire) {
            let router = self.clone();
            let seen = route.generation;
            tokio::spawn(async move { router.relearn(seen).await });
        }
    }

    /// Learn the ring again now, and wait for it (unless another learning is under way
    /// or one ended less than [`RELEARN_INTERVAL_MIN`] ago).
    pub async fn learn_again(&self) {
        self.relearn(self.relearns()).await;
    }

    fn replace(&self, map: RingMap) {
        *self.inner.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    fn mark_down(&self, addr: &str) {
        let mut guard = self.inner.map.write().unwrap_or_else(|e| e.into_inner());
        if guard.is_available(addr) {
            let mut map = (**guard).clone();
            map.mark_unavailable(addr);
            *guard = Arc::new(map);
        }
    }

    /// Learn the ring again, unless another client is doing it, it was done recently,
    /// or it was learned since the route was computed (`seen`: the learnings then).
    async fn relearn(&self, seen: u64) {
        let inner = &self.inner;
        if inner
            .learning
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let recent = {
            let last = inner.last_learned.lock().unwrap_or_else(|e| e.into_inner());
            last.elapsed() < RELEARN_INTERVAL_MIN
        };
        if !recent && seen >= self.relearns() {
            let mut seeds: Vec<String> = self.map().available().map(str::to_string).collect();
            for seed in &inner.seeds {
                if !seeds.contains(seed) {
                    seeds.push(seed.clone());
                }
            }
            if let Ok(map) = ring::learn(&inner.http, &seeds).await {
                self.replace(map);
                inner.relearns.fetch_add(1, Ordering::Relaxed);
            }
            *inner.last_learned.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
        inner.learning.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_runtime::{ClientError, Served};

    fn map(consistency: Consistency) -> RingMap {
        let members = (0..6).map(|i| format!("10.0.0.{i}:5000")).collect();
        RingMap::new(members, 3, consistency)
    }

    fn served(node: &str) -> Outcome {
        Outcome::Ok(Served {
            node: Some(node.into()),
            found: true,
            ..Served::default()
        })
    }

    #[test]
    fn writes_go_to_the_head_and_chain_answers_come_from_the_tail() {
        let m = map(Consistency::Chain);
        let r = m.replicas("song");
        for kind in [OpKind::Write, OpKind::Delete] {
            let route = choose(&m, kind, "song", 7);
            assert_eq!(route.target, r[0]);
            assert_eq!(route.expected.as_deref(), Some(r[2]));
        }
        let read = choose(&m, OpKind::Read, "song", 7);
        assert_eq!(
            (read.target.as_str(), read.expected.as_deref()),
            (r[2], Some(r[2])),
            "chain reads go straight to the tail"
        );
        let e = map(Consistency::Eventual);
        let write = choose(&e, OpKind::Write, "song", 7);
        assert_eq!(
            (write.target.as_str(), write.expected.as_deref()),
            (r[0], Some(r[0]))
        );
    }

    #[test]
    fn eventual_reads_take_the_replicas_in_turn_and_skip_unavailable_ones() {
        let mut m = map(Consistency::Eventual);
        let r: Vec<String> = m.replicas("song").iter().map(|s| s.to_string()).collect();
        let targets: Vec<String> = (0..3)
            .map(|t| choose(&m, OpKind::Read, "song", t).target)
            .collect();
        assert_eq!(targets, r);
        m.mark_unavailable(&r[1]);
        for t in 0..6 {
            let route = choose(&m, OpKind::Read, "song", t);
            assert_ne!(route.target, r[1]);
            assert_eq!(route.expected.as_ref(), Some(&route.target));
        }
    }

    #[test]
    fn craq_writes_go_to_the_head_and_reads_take_every_replica_in_turn() {
        let m = map(Consistency::Craq);
        let r: Vec<String> = m.replicas("song").iter().map(|s| s.to_string()).collect();
        let write = choose(&m, OpKind::Write, "song", 7);
        assert_eq!(
            (write.target.as_str(), write.expected.as_deref()),
            (r[0].as_str(), Some(r[2].as_str()))
        );
        let targets: Vec<String> = (0..3)
            .map(|t| choose(&m, OpKind::Read, "song", t).target)
            .collect();
        assert_eq!(targets, r);
    }

    #[test]
    fn an_unavailable_head_sends_the_request_through_the_ring() {
        let mut m = map(Consistency::Chain);
        let head = m.replicas("song")[0].to_string();
        m.mark_unavailable(&head);
        for t in 0..12 {
            let route = choose(&m, OpKind::Write, "song", t);
            assert_ne!(route.target, head);
            assert_eq!(route.expected, None);
        }
    }

    #[test]
    fn answers_from_elsewhere_and_ring_errors_make_the_map_stale() {
        let m = map(Consistency::Chain);
        let route = choose(&m, OpKind::Write, "song", 0);
        let tail = route.expected.clone().unwrap_or_default();
        assert_eq!(staleness(&route, &served(&tail)), Staleness::Current);
        assert_eq!(staleness(&route, &served("10.9.9.9:1")), Staleness::Relearn);
        let status = |code: ErrorCode| {
            Outcome::Info(Cause::Status {
                status: 503,
                code: Some(code),
            })
        };
        assert_eq!(
            staleness(&route, &status(ErrorCode::RouteBroken)),
            Staleness::Relearn
        );
        assert_eq!(
            staleness(&route, &status(ErrorCode::Overloaded)),
            Staleness::Current
        );
        let refused = Outcome::Fail(Cause::Transport(ClientError::Connect {
            url: "u".into(),
            reason: "refused".into(),
        }));
        assert_eq!(staleness(&route, &refused), Staleness::TargetDown);
    }

    #[test]
    fn routing_names_parse() {
        assert_eq!("token".parse(), Ok(ClientRouting::Token));
        assert_eq!("Random".parse(), Ok(ClientRouting::Random));
        assert!("nearest".parse::<ClientRouting>().is_err());
        assert_eq!(ClientRouting::Token.to_string(), "token");
    }
}
