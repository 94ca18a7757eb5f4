//! The failure detector: heartbeats to the coordinator, and pings to the nearest
//! successors and every distinct finger, so routing skips a silent peer without waiting
//! for the coordinator to repair the ring.

use std::collections::{BTreeMap, BTreeSet};

use crate::id::Id;
use crate::message::{Message, NodeRef};
use crate::out::Out;
use crate::shared::Shared;
use crate::Time;

/// Successors pinged on each heartbeat.
const PINGED_SUCCESSORS: usize = 2;

/// Distinct fingers pinged on each heartbeat (a ring of N nodes has about log2 N).
const PINGED_FINGERS_MAX: usize = 24;

/// Which peers this node stopped routing through, and which pings are unanswered.
#[derive(Debug, Default)]
pub(crate) struct FailureDetector {
    /// Peers silent past the failure timeout.
    suspects: BTreeSet<Id>,
    /// Pinged peers that have not answered, with the time of the first unanswered ping.
    unanswered: BTreeMap<Id, Time>,
    /// When this node last asked for a lease outside the heartbeat cycle.
    lease_asked: Time,
}

impl FailureDetector {
    /// Heartbeat tick of a member: tell the coordinator we live (and where we stand),
    /// tell the address we were started with as bootstrap which ring we form, and probe
    /// the peers routing depends on. `cut_off`: this node leads the coordinator group
    /// but has not heard from a majority of it for a failure timeout.
    pub(crate) fn on_tick(&mut self, sh: &Shared, out: &mut Out, cut_off: bool) {
        self.heartbeat(sh, out, cut_off);
        if *sh.bootstrap != *sh.me.addr {
            out.send_addr(&sh.bootstrap, Message::Hello(sh.ring_info()));
        }
        let (now, timeout) = (out.now, sh.timing.failure_timeout_ns);
        // The nearest successors, and every distinct finger: routing skips any of them
        // found silent, so lookups avoid a crashed node even while the coordinator, which
        // would repair views and fingers, is down itself.
        let mut peers: Vec<&NodeRef> = sh.view.succs.iter().take(PINGED_SUCCESSORS).collect();
        for finger in &sh.fingers.nodes {
            if peers.len() >= PINGED_SUCCESSORS + PINGED_FINGERS_MAX {
                break;
            }
            if finger.id != sh.me.id && !peers.iter().any(|p| p.id == finger.id) {
                peers.push(finger);
            }
        }
        self.unanswered
            .retain(|id, _| peers.iter().any(|p| p.id == *id));
        for peer in peers {
            let since = *self.unanswered.entry(peer.id).or_insert(now);
            if now.saturating_sub(since) > timeout {
                self.suspects.insert(peer.id);
            }
            out.send(peer, Message::Ping);
        }
    }

    /// The heartbeat goes to the coordinator; when it has been silent for half the
    /// failure timeout, to every seat of the coordinator group, whose leader answers
    /// (and the others point at it).
    pub(crate) fn heartbeat(&self, sh: &Shared, out: &mut Out, cut_off: bool) {
        let heartbeat = Message::Heartbeat {
            term: sh.term,
            epoch: sh.view.epoch,
            preparing: sh.gaining.map(|g| g.epoch),
            sent: out.now,
        };
        let silence = out.now.saturating_sub(sh.coordinator_seen);
        if silence > sh.timing.failure_timeout_ns || cut_off {
            // Silent for the whole failure timeout: the lead may have moved, while this
            // node was cut off, to a seat it does not know. Its neighbours know. (So for
            // a leader cut off from its group: the others may have elected another.)
            // Every node of its view and finger table: its nearest neighbours may have
            // left or be cut off as well.
            let mut asked: Vec<&NodeRef> = Vec::new();
            let known = sh
                .view
                .succs
                .iter()
                .chain(&sh.view.preds)
                .chain(&sh.fingers.nodes);
            for n in known {
                if n.id != sh.me.id && !asked.iter().any(|a| a.id == n.id) {
                    asked.push(n);
                }
            }
            for n in asked {
                out.send(n, heartbeat.clone());
            }
        }
        if silence > sh.timing.failure_timeout_ns / 2 && !sh.seats.is_empty() {
            for seat in sh.seats.iter().filter(|s| s.id != sh.me.id) {
                out.send(seat, heartbeat.clone());
            }
            if sh.seats.iter().any(|s| *s.addr == *sh.coordinator) {
                return;
            }
        }
        if *sh.coordinator != *sh.me.addr {
            out.send_addr(&sh.coordinator, heartbeat);
        }
    }

    /// A chain member without a lease (it just joined, or it was cut off) asks for one
    /// at once rather than at its next heartbeat, at most ten times per lease period.
    pub(crate) fn ask_for_lease(&mut self, sh: &Shared, out: &mut Out) {
        let lease = sh.timing.lease_ns();
        if out.now.saturating_sub(self.lease_asked) >= lease / 10 || self.lease_asked == 0 {
            self.lease_asked = out.now;
            self.heartbeat(sh, out, false);
        }
    }

    /// Any message from a peer shows it is alive.
    pub(crate) fn heard_from(&mut self, peer: &NodeRef) {
        if !self.unanswered.is_empty() {
            self.unanswered.remove(&peer.id);
        }
        if !self.suspects.is_empty() {
            self.suspects.remove(&peer.id);
        }
    }

    /// The peers routing avoids, in id order.
    pub(crate) fn suspects(&self) -> impl Iterator<Item = Id> + '_ {
        self.suspects.iter().copied()
    }

    /// Whether routing should avoid `id`.
    pub(crate) fn is_suspect(&self, id: Id) -> bool {
        self.suspects.contains(&id)
    }
}
