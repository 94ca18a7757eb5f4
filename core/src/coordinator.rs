//! The bootstrap's role as configuration master: it serializes joins and departs and
//! drives each through prepare → ready → commit → ack.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::api::RequestError;
use crate::message::{Message, NodeRef, View};
use crate::node::{Node, Rejected};
use crate::ring::Ring;
use crate::{Output, Timer};

/// A membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Join(NodeRef),
    Depart(NodeRef),
    /// A member declared failed (silent past the failure timeout) or that restarted.
    Remove(NodeRef),
}

impl Change {
    fn node(&self) -> &NodeRef {
        match self {
            Change::Join(n) | Change::Depart(n) | Change::Remove(n) => n,
        }
    }
}

/// Attempts at one change before it is given up (each attempt ends by its deadline).
const ATTEMPTS_MAX: u32 = 3;

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
    attempt: u32,
    /// Members this change takes out without their help (failed or restarted).
    removed: Vec<NodeRef>,
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
    /// Last epoch handed out; every attempt gets a fresh one.
    epoch: u64,
    current: Option<InFlight>,
    queue: VecDeque<(Change, u32)>,
    /// When each member was last heard from.
    pub(crate) last_seen: BTreeMap<crate::Id, crate::Time>,
}

impl Coordinator {
    pub(crate) fn new() -> Coordinator {
        Coordinator::default()
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    fn is_known(&self, change: &Change) -> bool {
        self.current.as_ref().is_some_and(|c| c.change == *change)
            || self.queue.iter().any(|(c, _)| c == change)
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
        let restarted = match &change {
            Change::Join(n) => c.ring.contains(n.id) && n.id != self.me.id,
            _ => false,
        };
        if restarted {
            // A member asking to join again has restarted and lost its state: take the old
            // incarnation out first, then let the new one in.
            let leaving = Change::Remove(change.node().clone());
            if !c.is_known(&leaving) {
                c.queue.push_back((leaving, 0));
            }
        } else if let Some(reason) = refusal(&c.ring, &self.me, &change) {
            let node = change.node().clone();
            return self.send(&node, Message::Refused { reason }, out);
        }
        if c.queue.len() >= self.limits.membership_queue_max {
            let pending = c.queue.len();
            let node = change.node().clone();
            let reason = RequestError::Overloaded { pending };
            return self.send(&node, Message::Refused { reason }, out);
        }
        c.queue.push_back((change, 0));
        self.start_next_change(out);
    }

    /// Bootstrap: queue the removal of every member silent past the failure timeout.
    pub(crate) fn check_failures(&mut self, out: &mut Vec<Output>) {
        let (now, timeout, me) = (self.now, self.timing.failure_timeout_ns, self.me.id);
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let silent: Vec<NodeRef> = c
            .ring
            .iter()
            .filter(|n| n.id != me)
            .filter(|n| {
                let seen = *c.last_seen.entry(n.id).or_insert(now);
                now.saturating_sub(seen) > timeout
            })
            .cloned()
            .collect();
        for node in silent {
            let change = Change::Remove(node);
            if !c.is_known(&change) {
                c.queue.push_back((change, 0));
            }
        }
        self.start_next_change(out);
    }

    /// Bootstrap: the change in progress missed its deadline. Abandon an unfinished
    /// prepare and retry it later (after any removals the failure detector queued); a
    /// commit is already in force, so a missing acknowledgement just ends the change.
    pub(crate) fn on_change_deadline(&mut self, out: &mut Vec<Output>) {
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let Some(op) = c.current.take() else { return };
        if op.stage == Stage::Preparing {
            for node in op.affected.clone() {
                self.send(&node, Message::Abort { epoch: op.epoch }, out);
            }
            let Some(c) = &mut self.coordinator else {
                return;
            };
            if op.attempt + 1 < ATTEMPTS_MAX {
                c.queue.push_back((op.change, op.attempt + 1));
            } else if !matches!(op.change, Change::Remove(_)) {
                let node = op.change.node().clone();
                let reason = RequestError::JoinRefused {
                    reason: format!(
                        "the ring could not complete the change in {ATTEMPTS_MAX} attempts; retry"
                    ),
                };
                self.send(&node, Message::Refused { reason }, out);
            }
        }
        self.start_next_change(out);
    }

    fn start_next_change(&mut self, out: &mut Vec<Output>) {
        let list_len = self.config.neighbour_list_len();
        let config = self.config;
        let k = self.config.k;
        let Some(c) = &mut self.coordinator else {
            return;
        };
        if c.current.is_some() {
            return;
        }
        let Some((change, attempt)) = c.queue.pop_front() else {
            return;
        };
        if let Change::Join(n) = &change {
            if c.ring.contains(n.id) && n.id != self.me.id {
                // Its old incarnation is still listed (its removal was retried behind
                // it): remove that first.
                let leaving = Change::Remove(n.clone());
                c.queue.retain(|(q, _)| *q != leaving);
                c.queue.push_front((change, attempt));
                c.queue.push_front((leaving, 0));
                return self.start_next_change(out);
            }
        }
        if let Some(reason) = refusal(&c.ring, &self.me, &change) {
            // The ring changed while the request waited.
            if !matches!(change, Change::Remove(_)) {
                let node = change.node().clone();
                self.send(&node, Message::Refused { reason }, out);
            }
            return self.start_next_change(out);
        }
        c.epoch += 1;
        let epoch = c.epoch;
        let silent = c.silent(self.now, self.timing.failure_timeout_ns, self.me.id);
        let plan = Plan::new(&c.ring, &change, &silent, list_len);
        let mut prepares = Vec::with_capacity(plan.affected.len());
        for node in &plan.affected {
            let view = if plan.next_ring.contains(node.id) {
                plan.next_ring.view_of(node.id, list_len, epoch)
            } else {
                View {
                    epoch,
                    ..View::default()
                }
            };
            let fingers = matches!(&change, Change::Join(n) if n == node)
                .then(|| plan.next_ring.fingers_of(node.id));
            let msg = Message::Prepare {
                view,
                config,
                sources: plan.sources_for(node, k),
                fingers,
            };
            prepares.push((node.clone(), msg));
        }
        let Plan {
            next_ring,
            removed,
            affected,
            ..
        } = plan;
        c.current = Some(InFlight {
            change,
            attempt,
            epoch,
            removed,
            next_ring,
            waiting: affected.iter().map(|n| n.id).collect(),
            affected,
            stage: Stage::Preparing,
        });
        let deadline = self.now.saturating_add(self.timing.membership_timeout_ns);
        self.set_timer(Timer::Membership, deadline, out);
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
        let now = self.now;
        let Some(c) = &mut self.coordinator else {
            return;
        };
        let Some(op) = &mut c.current else { return };
        op.stage = Stage::Committing;
        op.waiting = op.affected.iter().map(|n| n.id).collect();
        c.ring = op.next_ring.clone();
        let epoch = op.epoch;
        // Every point whose successor changed: (interval start, interval end, new owner).
        let mut moved: Vec<(crate::Id, crate::Id, NodeRef)> = Vec::new();
        let mut gone: Vec<NodeRef> = op.removed.clone();
        match &op.change {
            Change::Join(n) => {
                c.last_seen.insert(n.id, now);
                if let Some(p) = c.ring.predecessor_before(n.id) {
                    moved.push((p.id, n.id, n.clone()));
                }
            }
            Change::Depart(n) => gone.push(n.clone()),
            Change::Remove(_) => {}
        }
        for n in &gone {
            c.last_seen.remove(&n.id);
            let pred = c.ring.predecessor_before(n.id);
            let succ = c.ring.successor_after(n.id);
            if let (Some(p), Some(s)) = (pred, succ) {
                moved.push((p.id, n.id, s.clone()));
            }
        }
        // Fingers that pointed into a moved interval now point at its new owner.
        let mut fingers: BTreeMap<crate::Id, Vec<(u8, NodeRef)>> = BTreeMap::new();
        let joiner = match &op.change {
            Change::Join(n) => vec![n.id],
            _ => Vec::new(),
        };
        for (from, to, owner) in moved {
            for (id, updates) in c.ring.finger_changes(from, to, &owner, &joiner) {
                fingers.entry(id).or_default().extend(updates);
            }
        }
        let targets: Vec<(NodeRef, Vec<(u8, NodeRef)>)> = fingers
            .into_iter()
            .filter_map(|(id, updates)| {
                let node = c.ring.successor(id).filter(|n| n.id == id).cloned()?;
                Some((node, updates))
            })
            .collect();
        let affected = op.affected.clone();
        let removed = op.removed.clone();
        for node in &affected {
            self.send(node, Message::Commit { epoch }, out);
        }
        for (node, updates) in targets {
            self.send(&node, Message::Fingers { epoch, updates }, out);
        }
        for node in removed {
            // If it is alive after all, it learns it is out and joins afresh.
            self.send(&node, Message::Removed { epoch }, out);
        }
    }
}

/// What one change does to the ring.
struct Plan {
    next_ring: Ring,
    /// Members taken out without their help.
    removed: Vec<NodeRef>,
    /// Nodes whose neighbour lists change (they prepare and commit).
    affected: Vec<NodeRef>,
    /// Where nodes fetch what they gain, unless removals force otherwise.
    source: Option<NodeRef>,
}

impl Plan {
    /// A join, a depart, or the removal of `change`'s node together with every other
    /// member that is silent now (simultaneous crashes are removed in one change, so no
    /// prepare waits for, or fetches from, a dead node).
    fn new(ring: &Ring, change: &Change, silent: &[NodeRef], list_len: usize) -> Plan {
        let mut next_ring = ring.clone();
        let mut removed = Vec::new();
        let mut subjects = Vec::new();
        let mut source = None;
        match change {
            Change::Join(n) => {
                next_ring.insert(n.clone());
                source = next_ring.successor_after(n.id).cloned();
                subjects.push(n.clone());
            }
            Change::Depart(n) => {
                next_ring.remove(n.id);
                source = Some(n.clone());
                subjects.push(n.clone());
            }
            Change::Remove(n) => {
                removed.push(n.clone());
                removed.extend(silent.iter().filter(|s| *s != n).cloned());
                for r in &removed {
                    next_ring.remove(r.id);
                }
            }
        }
        let around = if matches!(change, Change::Join(_)) {
            &next_ring
        } else {
            ring
        };
        let mut affected: Vec<NodeRef> = subjects.clone();
        for s in subjects.iter().chain(&removed) {
            affected.extend(around.predecessors(s.id, list_len));
            affected.extend(around.successors(s.id, list_len));
        }
        affected.retain(|a| !removed.contains(a));
        affected.sort();
        affected.dedup();
        Plan {
            next_ring,
            removed,
            affected,
            source,
        }
    }

    /// The nodes `node` fetches its gained keys from. After a removal, its `k - 1`
    /// nearest new predecessors: a surviving old replica of any key it gains lies
    /// among them (it precedes the newcomer in the key's new replica set).
    fn sources_for(&self, node: &NodeRef, k: usize) -> Vec<NodeRef> {
        match &self.source {
            Some(s) => vec![s.clone()],
            None => self
                .next_ring
                .predecessors(node.id, k.saturating_sub(1).max(1)),
        }
    }
}

impl Coordinator {
    /// Members other than `me` not heard from within `timeout`.
    fn silent(&self, now: crate::Time, timeout: crate::Time, me: crate::Id) -> Vec<NodeRef> {
        self.ring
            .iter()
            .filter(|n| n.id != me)
            .filter(|n| {
                self.last_seen
                    .get(&n.id)
                    .is_some_and(|seen| now.saturating_sub(*seen) > timeout)
            })
            .cloned()
            .collect()
    }
}

/// Why `change` cannot be made to `ring` (coordinated by `bootstrap`), if it cannot.
fn refusal(ring: &Ring, bootstrap: &NodeRef, change: &Change) -> Option<RequestError> {
    match change {
        Change::Join(n) if ring.contains(n.id) => Some(RequestError::AlreadyJoined),
        Change::Remove(n) if !ring.contains(n.id) || n.id == bootstrap.id => {
            Some(RequestError::NotJoined)
        }
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
