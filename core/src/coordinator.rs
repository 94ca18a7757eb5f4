//! The bootstrap's role as configuration master: it serializes joins and departs and
//! drives each through prepare → ready → commit → ack.

use std::collections::{BTreeSet, VecDeque};

use crate::api::RequestError;
use crate::message::{Message, NodeRef, View};
use crate::node::{Node, Rejected};
use crate::ring::Ring;
use crate::Output;

/// A membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Join(NodeRef),
    Depart(NodeRef),
}

impl Change {
    fn node(&self) -> &NodeRef {
        match self {
            Change::Join(n) | Change::Depart(n) => n,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for `Ready` from every affected node.
    Preparing,
    /// Waiting for `Ack` from every affected node.
    Committing,
}

#[derive(Clone, Debug)]
struct InFlight {
    change: Change,
    epoch: u64,
    next_ring: Ring,
    affected: Vec<NodeRef>,
    waiting: BTreeSet<crate::Id>,
    stage: Stage,
}

/// Authoritative membership and the change in progress.
#[derive(Clone, Debug, Default)]
pub(crate) struct Coordinator {
    pub(crate) ring: Ring,
    epoch: u64,
    current: Option<InFlight>,
    queue: VecDeque<Change>,
}

impl Coordinator {
    pub(crate) fn new() -> Coordinator {
        Coordinator::default()
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    fn is_known(&self, change: &Change) -> bool {
        self.current.as_ref().is_some_and(|c| c.change == *change) || self.queue.contains(change)
    }
}

impl Node {
    pub(crate) fn on_coordination(
        &mut self,
        from: NodeRef,
        msg: Message,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        if self.coordinator.is_none() {
            // Members pass join requests on to the bootstrap; anything else is misdirected.
            if let Message::JoinRequest { .. } = msg {
                let bootstrap = self.bootstrap.clone();
                self.send_addr(&bootstrap, msg, out);
                return Ok(());
            }
            return Err(Rejected::NotBootstrap {
                kind: msg.kind(),
                from: from.addr.to_string(),
            });
        }
        match msg {
            Message::JoinRequest { node } => self.request_change(Change::Join(node), out),
            Message::DepartRequest { node } => {
                if node != from {
                    return Err(Rejected::NotBootstrap {
                        kind: "depart_request",
                        from: from.addr.to_string(),
                    });
                }
                self.request_change(Change::Depart(node), out)
            }
            Message::Ready { epoch } => self.on_progress(&from, epoch, Stage::Preparing, out),
            Message::Ack { epoch } => self.on_progress(&from, epoch, Stage::Committing, out),
            _ => {}
        }
        Ok(())
    }

    fn request_change(&mut self, change: Change, out: &mut Vec<Output>) {
        let Some(c) = &mut self.coordinator else {
            return;
        };
        if c.is_known(&change) {
            return; // a duplicate request
        }
        if let Some(reason) = refusal(&c.ring, &self.me, &change) {
            let node = change.node().clone();
            return self.send(&node, Message::Refused { reason }, out);
        }
        if c.queue.len() >= self.limits.membership_queue_max {
            let pending = c.queue.len();
            let node = change.node().clone();
            let reason = RequestError::Overloaded { pending };
            return self.send(&node, Message::Refused { reason }, out);
        }
        c.queue.push_back(change);
        self.start_next_change(out);
    }

    fn start_next_change(&mut self, out: &mut Vec<Output>) {
        let list_len = self.config.neighbour_list_len();
        let config = self.config;
        let Some(c) = &mut self.coordinator else {
            return;
        };
        if c.current.is_some() {
            return;
        }
        let Some(change) = c.queue.pop_front() else {
            return;
        };
        if let Some(reason) = refusal(&c.ring, &self.me, &change) {
            // The ring changed while the request waited.
            let node = change.node().clone();
            self.send(&node, Message::Refused { reason }, out);
            return self.start_next_change(out);
        }
        let epoch = c.epoch + 1;
        let mut next_ring = c.ring.clone();
        let (subject, source, around) = match &change {
            Change::Join(n) => {
                next_ring.insert(n.clone());
                let source = next_ring
                    .successor_after(n.id)
                    .cloned()
                    .unwrap_or_else(|| n.clone());
                (n.clone(), source, &next_ring)
            }
            Change::Depart(n) => {
                next_ring.remove(n.id);
                (n.clone(), n.clone(), &c.ring)
            }
        };
        // Nodes whose neighbour lists mention the subject, and the subject itself.
        let mut affected = around.predecessors(subject.id, list_len);
        affected.extend(around.successors(subject.id, list_len));
        affected.push(subject.clone());
        affected.sort();
        affected.dedup();
        let mut prepares = Vec::with_capacity(affected.len());
        for node in &affected {
            let view = if next_ring.contains(node.id) {
                next_ring.view_of(node.id, list_len, epoch)
            } else {
                View {
                    epoch,
                    ..View::default()
                }
            };
            let fingers = matches!(&change, Change::Join(n) if n == node)
                .then(|| next_ring.fingers_of(node.id));
            let msg = Message::Prepare {
                view,
                config,
                source: source.clone(),
                fingers,
            };
            prepares.push((node.clone(), msg));
        }
        c.current = Some(InFlight {
            change,
            epoch,
            next_ring,
            waiting: affected.iter().map(|n| n.id).collect(),
            affected,
            stage: Stage::Preparing,
        });
        for (node, msg) in prepares {
            self.send(&node, msg, out);
        }
    }

    fn on_progress(&mut self, from: &NodeRef, epoch: u64, stage: Stage, out: &mut Vec<Output>) {
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let Some(op) = &mut c.current else { return };
        if op.epoch != epoch || op.stage != stage {
            return; // a late duplicate
        }
        op.waiting.remove(&from.id);
        if !op.waiting.is_empty() {
            return;
        }
        match stage {
            Stage::Preparing => self.commit_change(out),
            Stage::Committing => {
                c.current = None;
                self.start_next_change(out);
            }
        }
    }

    fn commit_change(&mut self, out: &mut Vec<Output>) {
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let Some(op) = &mut c.current else { return };
        op.stage = Stage::Committing;
        op.waiting = op.affected.iter().map(|n| n.id).collect();
        c.ring = op.next_ring.clone();
        c.epoch = op.epoch;
        let epoch = op.epoch;
        let affected = op.affected.clone();
        // Fingers that pointed at the interval the change moved now point at its new owner.
        let fingers = match &op.change {
            Change::Join(n) => c
                .ring
                .predecessor_before(n.id)
                .map(|p| c.ring.finger_changes(p.id, n.id, n, &[n.id]))
                .unwrap_or_default(),
            Change::Depart(n) => {
                let pred = c.ring.predecessor_before(n.id).cloned();
                let succ = c.ring.successor_after(n.id).cloned();
                match (pred, succ) {
                    (Some(p), Some(s)) => c.ring.finger_changes(p.id, n.id, &s, &[]),
                    _ => Default::default(),
                }
            }
        };
        let targets: Vec<(NodeRef, Vec<(u8, NodeRef)>)> = fingers
            .into_iter()
            .filter_map(|(id, updates)| {
                let node = c.ring.successor(id).filter(|n| n.id == id).cloned()?;
                Some((node, updates))
            })
            .collect();
        for node in &affected {
            self.send(node, Message::Commit { epoch }, out);
        }
        for (node, updates) in targets {
            self.send(&node, Message::Fingers { epoch, updates }, out);
        }
    }
}

/// Why `change` cannot be made to `ring` (coordinated by `bootstrap`), if it cannot.
fn refusal(ring: &Ring, bootstrap: &NodeRef, change: &Change) -> Option<RequestError> {
    match change {
        Change::Join(n) if ring.contains(n.id) => Some(RequestError::AlreadyJoined),
        Change::Join(_) if !ring.contains(bootstrap.id) => Some(RequestError::JoinRefused {
            reason: "the bootstrap is not in a ring; ask it to join first".into(),
        }),
        Change::Depart(n) if !ring.contains(n.id) => Some(RequestError::NotJoined),
        Change::Depart(n) if n.id == bootstrap.id => Some(RequestError::BootstrapCannotDepart {
            others: ring.len() - 1,
        }),
        _ => None,
    }
}
