//! A member's side of a membership change: prepare (fetch what the next view adds),
//! commit (install it, drop what it removes), and finger updates.

use std::collections::{BTreeMap, BTreeSet};

use crate::id::Id;

use crate::api::{RequestError, Response};
use crate::config::{ClusterConfig, Consistency};
use crate::message::{Message, NodeRef, View};
use crate::node::{responsibility_of, Node, Phase, Rejected};
use crate::store::{Entry, Range};
use crate::Output;

/// The fields of a `Message::Prepare`.
pub(crate) struct Prepare {
    pub(crate) view: View,
    pub(crate) config: ClusterConfig,
    pub(crate) sources: Vec<NodeRef>,
    pub(crate) fingers: Option<Vec<NodeRef>>,
    pub(crate) resync: bool,
}

/// A view change this node has been told to prepare.
#[derive(Clone, Debug)]
pub(crate) struct Preparing {
    pub(crate) view: View,
    pub(crate) fingers: Option<Vec<NodeRef>>,
    /// Keys the next view adds to this node's responsibility.
    pub(crate) gained: Range,
    /// Keys fetched from the sources: `gained`, or more after a failure (see
    /// `Message::Prepare::resync`).
    fetching: Range,
    /// Sources still to answer, with the snapshot chunks received from each.
    pending: BTreeMap<Id, BTreeSet<u32>>,
    /// Sources nearest first: with several, each key is taken from the nearest that has
    /// it (see `on_snapshot`).
    order: Vec<Id>,
    /// Entries received from each source, merged when all have answered.
    received: BTreeMap<Id, Vec<(String, Entry)>>,
    /// Chunks each source had delivered when the prepare last arrived: a source that
    /// has sent more since is making progress and is not asked again.
    marks: BTreeMap<Id, usize>,
    ready: bool,
}

/// Writes this node forwards to a node that is fetching a range from it, until the
/// fetching epoch commits, so nothing written during the hand-over is missed.
#[derive(Clone, Debug)]
pub(crate) struct Migration {
    pub(crate) to: NodeRef,
    pub(crate) range: Range,
    pub(crate) epoch: u64,
    /// Set when the epoch commits: forwarding stops at this time.
    pub(crate) until: Option<crate::Time>,
    /// Next `Forward` sequence number.
    pub(crate) next_seq: u64,
    /// Forwards sent and not yet acknowledged.
    pub(crate) unacked: BTreeMap<u64, (String, Entry)>,
    /// Times the unacknowledged forwards were sent again before the commit.
    pub(crate) resends: u32,
}

impl Migration {
    /// Its forwards not yet acknowledged, ready to send again.
    pub(crate) fn unacked_forwards(&self) -> impl Iterator<Item = (NodeRef, Message)> + '_ {
        self.unacked.iter().map(|(seq, (key, entry))| {
            let msg = Message::Forward {
                epoch: self.epoch,
                seq: *seq,
                key: key.clone(),
                entry: entry.clone(),
                ttl: crate::message::REPAIR_TTL,
            };
            (self.to.clone(), msg)
        })
    }
}

impl Node {
    fn check_from_bootstrap(&self, from: &NodeRef, kind: &'static str) -> Result<(), Rejected> {
        if *from.addr == *self.bootstrap {
            Ok(())
        } else {
            Err(Rejected::NotBootstrap {
                kind,
                from: from.addr.to_string(),
            })
        }
    }

    pub(crate) fn on_prepare(
        &mut self,
        from: &NodeRef,
        prepare: Prepare,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        let Prepare {
            view,
            config,
            sources,
            fingers,
            resync,
        } = prepare;
        self.check_from_bootstrap(from, "prepare")?;
        // A joiner accepts only the prepare of its own join (the one that carries its
        // finger table); any other is meant for an earlier incarnation at this address.
        let foreign = self.phase == Phase::Joining && fingers.is_none();
        if self.phase == Phase::Idle || foreign {
            return Err(Rejected::NotMember {
                kind: "prepare",
                from: from.addr.to_string(),
                phase: self.phase,
            });
        }
        // Epochs only grow: a prepare older than the view installed or being prepared is
        // a late duplicate, and taking it would drop the newer change.
        let newest = self
            .preparing
            .as_ref()
            .map_or(self.view.epoch, |p| p.view.epoch.max(self.view.epoch));
        let installed = self.is_member() && view.epoch <= self.view.epoch;
        if installed || view.epoch < newest {
            return Err(Rejected::WrongEpoch {
                kind: "prepare",
                from: from.addr.to_string(),
                epoch: view.epoch,
            });
        }
        if let Some(p) = &mut self.preparing {
            if p.view.epoch == view.epoch {
                // Sent again (something was lost): answer again if ready, else fetch
                // again from the sources that have not answered and have sent nothing
                // since the last time (a large snapshot may simply still be arriving).
                if p.ready {
                    self.send_ready(view.epoch, out);
                    return Ok(());
                }
                let (epoch, range) = (p.view.epoch, p.fetching);
                let mut missing: Vec<NodeRef> = Vec::new();
                for source in sources {
                    let Some(seen) = p.pending.get(&source.id) else {
                        continue;
                    };
                    let mark = p.marks.entry(source.id).or_insert(0);
                    if seen.len() > *mark {
                        *mark = seen.len();
                    } else {
                        missing.push(source);
                    }
                }
                for source in missing {
                    self.send(&source, Message::Fetch { epoch, range }, out);
                }
                return Ok(());
            }
        }
        if self.phase == Phase::Joining {
            self.config = config;
        }
        let old = if self.is_member() {
            self.responsibility()
        } else {
            Range::Empty
        };
        let new = responsibility_of(&view, &self.me, self.config.k);
        let gained = Range::gained(old, new);
        let epoch = view.epoch;
        // Whatever this node holds outside its responsibility is left over from an
        // abandoned change (its abort may arrive after this prepare) or an older view:
        // the gained range must come from the sources alone.
        match old {
            Range::Empty => self.store.clear(),
            keep => {
                self.store.retain_range(keep);
            }
        }
        // After a failure, a chain member whose nearest predecessor changed takes again
        // from it every key it does not head: that predecessor precedes it in each of
        // those chains, so holds every acknowledged write.
        let chain = self.config.consistency == Consistency::Chain;
        let new_pred = view.preds.first().map(|p| p.id);
        let pred_changed = self.view.preds.first().map(|p| p.id) != new_pred;
        let fetching = match (new, new_pred) {
            (Range::Interval { from, .. }, Some(p1))
                if resync && chain && self.is_member() && pred_changed && p1 != from =>
            {
                Range::Interval { from, to: p1 }
            }
            _ => gained,
        };
        let mut sources: Vec<NodeRef> = match fetching {
            Range::Empty => Vec::new(),
            _ => sources.into_iter().filter(|s| s.id != self.me.id).collect(),
        };
        if self.config.consistency == Consistency::Chain {
            // The nearest source is this node's predecessor in every chain it joins, so it
            // holds every acknowledged write; a farther one (upstream, nearer the head)
            // may also hold writes its chain never committed, which a new tail must not
            // serve. So a chain member fetches from, and is forwarded to by, the nearest
            // source only.
            sources.truncate(1);
        }
        self.preparing = Some(Preparing {
            view,
            fingers,
            gained,
            fetching,
            pending: sources.iter().map(|s| (s.id, BTreeSet::new())).collect(),
            order: sources.iter().map(|s| s.id).collect(),
            received: BTreeMap::new(),
            marks: BTreeMap::new(),
            ready: false,
        });
        if sources.is_empty() {
            self.mark_ready(out);
        }
        for source in sources {
            let fetch = Message::Fetch {
                epoch,
                range: fetching,
            };
            self.send(&source, fetch, out);
        }
        Ok(())
    }

    fn mark_ready(&mut self, out: &mut Vec<Output>) {
        if let Some(p) = &mut self.preparing {
            p.ready = true;
            let epoch = p.view.epoch;
            self.send_ready(epoch, out);
        }
    }

    fn send_ready(&mut self, epoch: u64, out: &mut Vec<Output>) {
        let bootstrap = self.bootstrap.clone();
        self.send_addr(&bootstrap, Message::Ready { epoch }, out);
    }

    pub(crate) fn on_fetch(
        &mut self,
        from: NodeRef,
        epoch: u64,
        range: Range,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        if !self.is_member() {
            return Err(Rejected::NotMember {
                kind: "fetch",
                from: from.addr.to_string(),
                phase: self.phase,
            });
        }
        let chunks = chunk_entries(
            self.store.entries_in(range),
            self.limits.snapshot_chunk_entries,
            self.limits.snapshot_chunk_bytes,
        );
        let count = chunks.len() as u32;
        for (chunk, entries) in chunks.into_iter().enumerate() {
            let msg = Message::Snapshot {
                epoch,
                chunk: chunk as u32,
                chunks: count,
                entries,
            };
            self.send(&from, msg, out);
        }
        if !self
            .migrations
            .iter()
            .any(|m| m.to == from && m.epoch == epoch)
        {
            self.migrations.push(Migration {
                to: from,
                range,
                epoch,
                until: None,
                next_seq: 0,
                unacked: BTreeMap::new(),
                resends: 0,
            });
        }
        Ok(())
    }

    pub(crate) fn on_snapshot(
        &mut self,
        from: &NodeRef,
        epoch: u64,
        chunk: u32,
        chunks: u32,
        entries: Vec<(String, Entry)>,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        let matches = self
            .preparing
            .as_ref()
            .is_some_and(|p| p.view.epoch == epoch && !p.ready && chunk < chunks);
        if !matches {
            return Err(Rejected::WrongEpoch {
                kind: "snapshot",
                from: from.addr.to_string(),
                epoch,
            });
        }
        let complete = match &mut self.preparing {
            Some(p) => {
                if let Some(seen) = p.pending.get_mut(&from.id) {
                    if seen.insert(chunk) {
                        p.received.entry(from.id).or_default().extend(entries);
                    }
                    if seen.len() as u32 >= chunks {
                        p.pending.remove(&from.id);
                    }
                }
                p.pending.is_empty()
            }
            None => false,
        };
        if complete {
            for (key, entry) in self.merge_received() {
                self.apply_entry(&key, entry, out);
            }
            self.mark_ready(out);
        }
        Ok(())
    }

    /// The fetched entries. Under chain replication each key is taken from the nearest
    /// source that has it (in practice there is one source: see `on_prepare`): after a
    /// failure the sources are the newcomer's predecessors in the key's chain; the nearest
    /// holds every acknowledged write but the fewest unacknowledged ones, so a new tail
    /// never exposes a write an upstream node applied but the chain never committed.
    /// Under eventual consistency replicas may lag one another, so the newest version
    /// wins (last writer wins, as everywhere else in that model).
    fn merge_received(&mut self) -> BTreeMap<String, Entry> {
        let newest_wins = self.config.consistency == Consistency::Eventual;
        let Some(p) = &mut self.preparing else {
            return BTreeMap::new();
        };
        let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
        for id in &p.order {
            for (key, entry) in p.received.remove(id).unwrap_or_default() {
                match merged.entry(key) {
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(entry);
                    }
                    std::collections::btree_map::Entry::Occupied(mut slot) => {
                        if newest_wins && entry.version > slot.get().version {
                            slot.insert(entry);
                        }
                    }
                }
            }
        }
        merged
    }

    pub(crate) fn on_commit(
        &mut self,
        from: &NodeRef,
        epoch: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        self.check_from_bootstrap(from, "commit")?;
        if self.ack_pending == Some(epoch) {
            // Still waiting for hand-over forwards to be acknowledged: send them again.
            self.resend_forwards(epoch, out);
            return Ok(());
        }
        let prepared = self
            .preparing
            .as_ref()
            .is_some_and(|p| p.view.epoch == epoch && p.ready);
        if !prepared {
            if self.view.epoch == epoch {
                // A duplicate commit: acknowledge again.
                self.send_addr(&self.bootstrap.clone(), Message::Ack { epoch }, out);
                return Ok(());
            }
            return Err(Rejected::WrongEpoch {
                kind: "commit",
                from: from.addr.to_string(),
                epoch,
            });
        }
        let Some(p) = self.preparing.take() else {
            return Ok(());
        };
        let until = self.now.saturating_add(self.timing.handover_grace_ns);
        for m in self.migrations.iter_mut().filter(|m| m.epoch <= epoch) {
            m.until.get_or_insert(until);
        }
        if p.view.ring_size == 0 {
            self.leave();
            self.ack_when_handed_over(epoch, out);
            // The client hears of the departure when the whole change is done
            // (`ChangeDone`): the nodes after this one commit in later waves, and until
            // then the ring it would see still routes through this node.
            return Ok(());
        }
        self.view = p.view;
        if let Some(fingers) = p.fingers {
            self.finger_epochs = vec![epoch; fingers.len()];
            self.fingers = fingers;
        }
        let keep = self.responsibility();
        self.store.retain_range(keep);
        self.ack_when_handed_over(epoch, out);
        if self.phase == Phase::Joining {
            self.phase = Phase::Active;
            self.forward_to = None;
            self.release_early();
            // The client hears of the join when the whole change is done (`ChangeDone`),
            // so that the ring it then sees already includes this node everywhere.
        }
        Ok(())
    }

    /// The bootstrap finished the change that let this node in: answer the join.
    pub(crate) fn on_change_done(
        &mut self,
        from: &NodeRef,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        self.check_from_bootstrap(from, "change_done")?;
        if self.phase == Phase::Idle {
            // The change that took this node out is done everywhere.
            if let Some(id) = self.membership_req.take() {
                let node = self.me.addr.to_string();
                self.finish(id, Ok(Response::Departed { node }), out);
            }
            return Ok(());
        }
        if self.phase != Phase::Active {
            return Ok(());
        }
        if let Some(id) = self.membership_req.take() {
            let reply = match (self.view.preds.first(), self.view.succs.first()) {
                (Some(p), Some(s)) => Ok(Response::Joined {
                    predecessor: p.clone(),
                    successor: s.clone(),
                }),
                _ => Err(RequestError::NotJoined),
            };
            self.finish(id, reply, out);
        }
        Ok(())
    }

    /// Acknowledge commit `epoch` once every hand-over forward this node sent for it has
    /// arrived (the bootstrap lets new holders serve only after that).
    fn ack_when_handed_over(&mut self, epoch: u64, out: &mut Vec<Output>) {
        let waiting = self
            .migrations
            .iter()
            .any(|m| m.epoch <= epoch && !m.unacked.is_empty());
        if waiting {
            self.ack_pending = Some(epoch);
            return;
        }
        self.ack_pending = None;
        let bootstrap = self.bootstrap.clone();
        self.send_addr(&bootstrap, Message::Ack { epoch }, out);
    }

    fn resend_forwards(&mut self, epoch: u64, out: &mut Vec<Output>) {
        let mut sends = Vec::new();
        for m in self.migrations.iter().filter(|m| m.epoch <= epoch) {
            sends.extend(m.unacked_forwards());
        }
        for (to, msg) in sends {
            self.send(&to, msg, out);
        }
    }

    pub(crate) fn on_forward_ack(
        &mut self,
        from: &NodeRef,
        epoch: u64,
        seq: u64,
        out: &mut Vec<Output>,
    ) {
        for m in self
            .migrations
            .iter_mut()
            .filter(|m| m.to == *from && m.epoch == epoch)
        {
            m.unacked.remove(&seq);
        }
        if let Some(pending) = self.ack_pending {
            self.ack_when_handed_over(pending, out);
        }
    }

    pub(crate) fn on_fingers(
        &mut self,
        from: &NodeRef,
        epoch: u64,
        updates: Vec<(u8, NodeRef)>,
    ) -> Result<(), Rejected> {
        self.check_from_bootstrap(from, "fingers")?;
        if self.fingers.is_empty() {
            return Err(Rejected::NotMember {
                kind: "fingers",
                from: from.addr.to_string(),
                phase: self.phase,
            });
        }
        for (i, node) in updates {
            let i = i as usize;
            // Updates can arrive out of order; an older epoch never overwrites a newer one.
            if i < self.fingers.len() && self.finger_epochs[i] <= epoch {
                self.fingers[i] = node;
                self.finger_epochs[i] = epoch;
            }
        }
        Ok(())
    }
}

/// Split `entries` into chunks of at most `max_entries` entries and about `max_bytes`
/// bytes (a chunk always takes at least one entry); never zero chunks.
fn chunk_entries(
    entries: Vec<(String, Entry)>,
    max_entries: usize,
    max_bytes: usize,
) -> Vec<Vec<(String, Entry)>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for (key, entry) in entries {
        let size = key.len() + entry.value.as_ref().map_or(0, |v| v.len()) + 64;
        let last = chunks.last().map_or(0, |c| c.len());
        if last > 0 && (last >= max_entries.max(1) || bytes + size > max_bytes) {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push((key, entry));
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Version;

    fn entry(len: usize) -> Entry {
        Entry {
            value: Some("v".repeat(len)),
            version: Version {
                counter: 1,
                node: Id::ZERO,
            },
        }
    }

    #[test]
    fn snapshots_are_chunked_by_entries_and_bytes() {
        let small: Vec<_> = (0..10).map(|i| (format!("k{i}"), entry(10))).collect();
        assert_eq!(chunk_entries(small.clone(), 4, 1 << 20).len(), 3);
        assert_eq!(
            chunk_entries(Vec::new(), 4, 1 << 20).len(),
            1,
            "never zero chunks"
        );
        let big: Vec<_> = (0..5).map(|i| (format!("k{i}"), entry(1000))).collect();
        let chunks = chunk_entries(big, 100, 2500);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| !c.is_empty()));
        let huge = vec![("k".to_string(), entry(10_000))];
        assert_eq!(
            chunk_entries(huge, 100, 10).len(),
            1,
            "an oversized entry still goes"
        );
    }
}
