//! Surviving failures: heartbeats to the bootstrap, successor pings (so routing avoids a
//! dead successor without waiting for the bootstrap), removal notices, aborted changes,
//! and anti-entropy between a primary and its replicas.

use std::collections::BTreeMap;

use crate::api::Response;
use crate::id::Id;
use crate::message::{Message, NodeRef};
use crate::node::{Node, Phase, Rejected};
use crate::store::{digest_bucket, Entry, Range, DIGEST_BUCKETS};
use crate::{Output, Timer};

const SYNC_BUCKETS: u64 = DIGEST_BUCKETS as u64;

/// Successors pinged on each heartbeat.
const PINGED_SUCCESSORS: usize = 2;

/// Distinct fingers pinged on each heartbeat (a ring of N nodes has about log2 N).
const PINGED_FINGERS_MAX: usize = 24;

impl Node {
    /// Keep the periodic timers this node's role needs armed.
    pub(crate) fn arm_periodic(&mut self, out: &mut Vec<Output>) {
        let heartbeat = self.timing.heartbeat_interval_ns;
        let member = self.is_member();
        let beating = member || self.phase == Phase::Joining;
        if heartbeat > 0 && beating && !self.timers.contains_key(&Timer::Heartbeat) {
            self.set_timer(Timer::Heartbeat, self.now + heartbeat, out);
        }
        if heartbeat > 0
            && self.is_bootstrap()
            && member
            && !self.timers.contains_key(&Timer::FailureCheck)
        {
            self.set_timer(Timer::FailureCheck, self.now + heartbeat, out);
        }
        let sync = self.timing.anti_entropy_interval_ns;
        if sync > 0 && member && !self.timers.contains_key(&Timer::AntiEntropy) {
            self.set_timer(Timer::AntiEntropy, self.now + sync, out);
        }
        if self.store.tombstones() > 0 && !self.timers.contains_key(&Timer::Gc) {
            self.arm_gc(out);
        }
    }

    /// Heartbeat tick: tell the bootstrap we live, probe the nearest successors.
    pub(crate) fn on_heartbeat_tick(&mut self, out: &mut Vec<Output>) {
        if self.phase == Phase::Joining && self.preparing.is_none() {
            // The request (or the bootstrap's answer) may have been lost: ask again.
            return self.send_join_request(out);
        }
        if !self.is_member() {
            return;
        }
        if self.phase == Phase::Departing && self.preparing.is_none() {
            // Likewise for a departure the bootstrap has not started preparing.
            self.send_depart_request(out);
        }
        if !self.is_bootstrap() {
            let bootstrap = self.bootstrap.clone();
            self.send_addr(&bootstrap, Message::Heartbeat, out);
        }
        let now = self.now;
        let timeout = self.timing.failure_timeout_ns;
        // The nearest successors, and every distinct finger: routing skips any of them
        // found silent, so lookups avoid a crashed node even while the bootstrap, which
        // would repair views and fingers, is down itself.
        let mut peers: Vec<NodeRef> = self
            .view
            .succs
            .iter()
            .take(PINGED_SUCCESSORS)
            .cloned()
            .collect();
        for finger in &self.fingers {
            if peers.len() >= PINGED_SUCCESSORS + PINGED_FINGERS_MAX {
                break;
            }
            if finger.id != self.me.id && !peers.iter().any(|p| p.id == finger.id) {
                peers.push(finger.clone());
            }
        }
        self.unanswered
            .retain(|id, _| peers.iter().any(|p| p.id == *id));
        for peer in peers {
            let since = *self.unanswered.entry(peer.id).or_insert(now);
            if now.saturating_sub(since) > timeout {
                self.suspects.insert(peer.id);
            }
            self.send(&peer, Message::Ping, out);
        }
    }

    /// Bootstrap: a heartbeat from a node that is not in the ring means it missed the
    /// notice of its removal; send it again so the node rejoins.
    pub(crate) fn on_heartbeat(&mut self, from: &NodeRef, out: &mut Vec<Output>) {
        let Some(c) = &self.coordinator else { return };
        if !c.ring.contains(from.id) && !c.is_joining(from.id) {
            let epoch = self.view.epoch;
            self.send(from, Message::Removed { epoch }, out);
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
        if let Some(c) = &mut self.coordinator {
            if c.ring.contains(peer.id) {
                c.last_seen.insert(peer.id, self.now);
            }
        }
    }

    /// The bootstrap told us we were removed (we were silent too long). Leave, and come
    /// back empty through a fresh join, as a restarted node does.
    pub(crate) fn on_removed(
        &mut self,
        from: &NodeRef,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        if *from.addr != *self.bootstrap {
            return Err(Rejected::NotBootstrap {
                kind: "removed",
                from: from.addr.to_string(),
            });
        }
        if !self.is_member() {
            return Ok(());
        }
        let departing = self.phase == Phase::Departing;
        self.leave();
        if departing {
            if let Some(id) = self.membership_req.take() {
                let node = self.me.addr.to_string();
                self.finish(id, Ok(Response::Departed { node }), out);
            }
            return Ok(());
        }
        self.start_joining(out);
        Ok(())
    }

    /// The change being prepared was abandoned: forget its next view and hand-overs.
    pub(crate) fn on_abort(&mut self, from: &NodeRef, epoch: u64) -> Result<(), Rejected> {
        if *from.addr != *self.bootstrap {
            return Err(Rejected::NotBootstrap {
                kind: "abort",
                from: from.addr.to_string(),
            });
        }
        if self
            .preparing
            .as_ref()
            .is_some_and(|p| p.view.epoch == epoch)
        {
            self.preparing = None;
            // Drop what the abandoned change had us fetch.
            match self.is_member() {
                true => {
                    let keep = self.responsibility();
                    self.store.retain_range(keep);
                }
                false => self.store.clear(),
            }
        }
        self.migrations.retain(|m| m.epoch != epoch);
        Ok(())
    }

    /// Anti-entropy tick: send digests of our primary range to our replicas.
    pub(crate) fn on_sync_tick(&mut self, out: &mut Vec<Output>) {
        let replicas = self.config.k.min(self.view.ring_size).saturating_sub(1);
        if self.phase != Phase::Active || replicas == 0 {
            return;
        }
        let Some(pred) = self.view.preds.first() else {
            return;
        };
        let range = Range::Interval {
            from: pred.id,
            to: self.me.id,
        };
        let digests = self.digests(range);
        let targets: Vec<NodeRef> = self.view.succs.iter().take(replicas).cloned().collect();
        for to in targets {
            let msg = Message::SyncDigest {
                range,
                digests: digests.clone(),
            };
            self.send(&to, msg, out);
        }
    }

    pub(crate) fn on_sync_digest(
        &mut self,
        from: NodeRef,
        range: Range,
        digests: Vec<u64>,
        out: &mut Vec<Output>,
    ) {
        if !self.is_member() || digests.len() != SYNC_BUCKETS as usize {
            return;
        }
        let mine = self.digests(range);
        let buckets: Vec<u32> = (0..SYNC_BUCKETS as u32)
            .filter(|&b| mine[b as usize] != digests[b as usize])
            .collect();
        if buckets.is_empty() {
            return;
        }
        let entries = self.entries_in_buckets(range, &buckets);
        self.send(
            &from,
            Message::SyncDiff {
                range,
                buckets,
                entries,
            },
            out,
        );
    }

    pub(crate) fn on_sync_diff(
        &mut self,
        from: NodeRef,
        range: Range,
        buckets: Vec<u32>,
        entries: Vec<(String, Entry)>,
        out: &mut Vec<Output>,
    ) {
        if !self.is_member() {
            return;
        }
        let theirs: BTreeMap<String, Entry> = entries.into_iter().collect();
        let mut push = Vec::new();
        for (key, entry) in self.entries_in_buckets(range, &buckets) {
            let newer = theirs.get(&key).is_none_or(|t| t.version < entry.version);
            if newer {
                push.push((key, entry));
            }
        }
        for (key, entry) in theirs {
            if self.responsibility().contains(Id::of_key(&key)) {
                self.apply_entry(&key, entry, out);
            }
        }
        if !push.is_empty() {
            self.send(&from, Message::SyncPush { entries: push }, out);
        }
    }

    pub(crate) fn on_sync_push(&mut self, entries: Vec<(String, Entry)>, out: &mut Vec<Output>) {
        if !self.is_member() {
            return;
        }
        for (key, entry) in entries {
            if self.responsibility().contains(Id::of_key(&key)) {
                self.apply_entry(&key, entry, out);
            }
        }
    }

    fn digests(&mut self, range: Range) -> Vec<u64> {
        match range {
            Range::Interval { from, to } => self.store.range_digests(from, to),
            _ => vec![0; DIGEST_BUCKETS],
        }
    }

    fn entries_in_buckets(&self, range: Range, buckets: &[u32]) -> Vec<(String, Entry)> {
        self.store
            .entries_with_ids(range)
            .filter(|(_, id, _)| buckets.contains(&(bucket(*id) as u32)))
            .map(|(k, _, e)| (k.to_string(), e.clone()))
            .collect()
    }
}

fn bucket(id: Id) -> usize {
    digest_bucket(id)
}
