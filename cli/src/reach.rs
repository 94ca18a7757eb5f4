//! Which node a client command reaches, and where it turns when that node does not answer.
//!
//! A command is given nodes (`--node A,B,...`, `DHT_NODE`) and may remember the ring they
//! belong to (the member cache, or what a shell learned in its session). It tries, in
//! order and at most [`ATTEMPTS_MAX`] nodes: the node it aims at (the key's head with
//! token routing, else the first node given), the other nodes given, then the remembered
//! members. It moves on from a node only when the request certainly did not arrive (no
//! connection) or changes nothing (a query, `query *`, `overlay`); a write that may have
//! been applied is not sent twice. When the answer came from elsewhere than the first node
//! asked, or shows the remembered ring stale, the ring is learned again and remembered.

use ringkv_client::router::{choose, staleness, Staleness};
use ringkv_client::{KnownRing, MemberCache, RingMap};
use ringkv_runtime::{outcome, DataOp};
use ringkv_sim::check::OpKind;

use crate::client_cmd::{Answer, Client, Op, Unreachable};

/// Most nodes one request is sent to before the command gives up.
pub const ATTEMPTS_MAX: usize = 8;

/// Where a request is aimed first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Aim {
    /// At the node that serves the request's key, by the ring (learned first if it is
    /// not remembered); at the first node given when the op has no key or no ring is
    /// known.
    Token,
    /// At this node.
    To(String),
}

/// An answer, with the node that gave it and those that did not before it.
#[derive(Debug)]
pub struct Reached {
    /// The answer.
    pub answer: Answer,
    /// The node that answered.
    pub node: String,
    /// Nodes asked before it that did not answer, in order.
    pub silent: Vec<Unreachable>,
}

impl Reached {
    /// A line for stderr when the answer did not come from the first node asked.
    pub fn note(&self) -> Option<String> {
        if self.silent.is_empty() {
            return None;
        }
        let tried: Vec<String> = self
            .silent
            .iter()
            .map(|u| format!("{} ({})", u.node, u.reason))
            .collect();
        Some(format!(
            "note: no answer from {}; node {} answered",
            tried.join(", "),
            self.node
        ))
    }
}

/// Why no node answered, as one sentence for an error line (`silent` is every node
/// tried, in order).
pub fn nobody_answered(silent: &[Unreachable]) -> String {
    match silent {
        [] => "no node to ask.".to_string(),
        [one] => format!("{one}. {}", one.question()).trim_end().to_string(),
        many => {
            let tried: Vec<String> = many
                .iter()
                .map(|u| format!("{} ({})", u.node, u.reason))
                .collect();
            let last = &many[many.len() - 1];
            let applied = if last.maybe_applied {
                " (the request may still have been applied)"
            } else {
                ""
            };
            format!(
                "cannot reach any of {} nodes: {}{applied}. {}",
                many.len(),
                tried.join(", "),
                last.question()
            )
            .trim_end()
            .to_string()
        }
    }
}

/// A client's nodes: those given, and the ring it remembers.
pub struct Reach {
    client: Client,
    given: Vec<String>,
    cache: MemberCache,
    ring: Option<RingMap>,
    /// Spreads eventual reads over a key's replicas.
    turn: usize,
}

impl Reach {
    /// Nodes `given` in order, and the ring the cache remembers for them, if any.
    pub fn new(client: Client, given: Vec<String>, cache: MemberCache) -> Reach {
        let ring = cache.ring_with(&given).map(KnownRing::map);
        Reach {
            client,
            given,
            cache,
            ring,
            turn: std::process::id() as usize,
        }
    }

    /// The client, for requests that go to one node only.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The ring remembered, if any.
    pub fn ring(&self) -> Option<&RingMap> {
        self.ring.as_ref()
    }

    /// Learn the ring from the first node that lists it: `first`, the nodes given, then
    /// the members remembered. Remember it (and save it in the cache). Returns whether a
    /// ring was learned.
    pub fn learn(&mut self, first: Option<&str>) -> bool {
        for seed in self.order(first).into_iter().take(ATTEMPTS_MAX) {
            if let Ok(map) = self.client.learn(&seed) {
                self.cache
                    .remember(KnownRing::of(&map).through(&self.given));
                // A cache that cannot be written only costs the next command a learning.
                let _ = self.cache.save();
                self.ring = Some(map);
                return true;
            }
        }
        false
    }

    /// Send `op` aimed at `aim`, falling back as the module documentation says.
    pub fn send(&mut self, op: &Op, aim: Aim) -> Result<Reached, Vec<Unreachable>> {
        let route = match (&aim, op.key()) {
            (Aim::Token, Some(key)) => {
                if self.ring.is_none() {
                    self.learn(None);
                }
                self.turn = self.turn.wrapping_add(1);
                let turn = self.turn;
                self.ring
                    .as_ref()
                    .map(|map| choose(map, kind(op), key, turn))
            }
            _ => None,
        };
        let first = match (&aim, &route) {
            (_, Some(route)) => Some(route.target.as_str()),
            (Aim::To(node), None) => Some(node.as_str()),
            (Aim::Token, None) => None,
        };
        let mut silent = Vec::new();
        for node in self.order(first).into_iter().take(ATTEMPTS_MAX) {
            match self.client.reply(&node, op) {
                Ok(reply) => {
                    let answer = Answer::from_reply(&reply);
                    let aimed = route.as_ref().is_some_and(|r| r.target == node);
                    if aimed && left_the_ring(&answer) {
                        // The remembered ring named a node that has left it since (it
                        // refuses every request, applying nothing): go on to the nodes
                        // given, which route the request (the ring is learned again from
                        // the one that answers).
                        silent.push(Unreachable {
                            node,
                            reason: "it is not in the ring any more".to_string(),
                            maybe_applied: false,
                        });
                        continue;
                    }
                    let stale = match (&route, data_op(op)) {
                        (Some(route), Some(data)) => {
                            staleness(route, &outcome(data, Ok(reply.clone())))
                                != Staleness::Current
                        }
                        _ => false,
                    };
                    if stale || !silent.is_empty() {
                        self.learn(Some(&node));
                    }
                    return Ok(Reached {
                        answer,
                        node,
                        silent,
                    });
                }
                Err(unreachable) => {
                    let may_resend = !unreachable.maybe_applied || op.is_read_only();
                    silent.push(unreachable);
                    if !may_resend {
                        break;
                    }
                }
            }
        }
        Err(silent)
    }

    /// `first`, the nodes given, then the remembered members that answered when
    /// learned, each once.
    fn order(&self, first: Option<&str>) -> Vec<String> {
        let mut order: Vec<String> = Vec::new();
        let members = self.ring.iter().flat_map(|r| r.available());
        let all = first
            .into_iter()
            .chain(self.given.iter().map(String::as_str))
            .chain(members);
        for node in all {
            if !order.iter().any(|o| o == node) {
                order.push(node.to_string());
            }
        }
        order
    }
}

/// Whether a node answered that it is not in the ring (409 `not_joined`: it departed,
/// or has not joined yet), which it does before it looks at the request.
fn left_the_ring(answer: &Answer) -> bool {
    answer.status == 409 && answer.body["code"] == "not_joined"
}

fn kind(op: &Op) -> OpKind {
    match op {
        Op::Insert { .. } => OpKind::Write,
        Op::Delete { .. } => OpKind::Delete,
        _ => OpKind::Read,
    }
}

fn data_op(op: &Op) -> Option<DataOp> {
    match op {
        Op::Insert { .. } => Some(DataOp::Insert),
        Op::Query { .. } => Some(DataOp::Query),
        Op::Delete { .. } => Some(DataOp::Delete),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silent(node: &str, maybe_applied: bool) -> Unreachable {
        Unreachable {
            node: node.into(),
            reason: "Connection refused (os error 111)".into(),
            maybe_applied,
        }
    }

    #[test]
    fn one_silent_node_reads_as_before_and_several_are_listed() {
        assert_eq!(
            nobody_answered(&[silent("a:1", false)]),
            "cannot reach node a:1: Connection refused (os error 111). Is a node running there?"
        );
        assert_eq!(
            nobody_answered(&[silent("a:1", false), silent("b:2", false)]),
            "cannot reach any of 2 nodes: a:1 (Connection refused (os error 111)), \
             b:2 (Connection refused (os error 111)). Is a node running there?"
        );
        let reached = Reached {
            answer: Answer {
                status: 200,
                body: serde_json::json!({}),
            },
            node: "c:3".into(),
            silent: vec![silent("a:1", false)],
        };
        assert_eq!(
            reached.note().as_deref(),
            Some("note: no answer from a:1 (Connection refused (os error 111)); node c:3 answered")
        );
    }

    #[test]
    fn the_aim_comes_first_then_the_given_nodes_then_the_members() {
        let client = Client::new(std::time::Duration::from_secs(1)).unwrap();
        let mut cache = MemberCache::default();
        cache.remember(KnownRing {
            members: vec!["m:1".into(), "g:2".into(), "m:3".into()],
            k: 2,
            consistency: ringkv_core::Consistency::Chain,
            learned_at_s: 0,
            entries: Vec::new(),
        });
        let reach = Reach::new(client, vec!["g:1".into(), "g:2".into()], cache);
        assert_eq!(reach.ring().map(|r| r.members().len()), Some(3));
        assert_eq!(
            reach.order(Some("m:3")),
            ["m:3", "g:1", "g:2", "m:1"].map(String::from)
        );
    }
}
