//! Which nodes stored each written value, so that under eventual consistency a lost
//! acknowledged write can be told apart: one whose every copy was in the memory of nodes
//! that then crashed (the model acknowledges once the primary has a write, before every
//! replica does: a primary that crashes before it replicates, or a write that reached
//! only the replicas on one side of a partition and then lost them all, is gone, by
//! design without `--data-dir`) from one lost while a copy survived (a defect).

use std::collections::BTreeMap;

use ringkv_core::message::Action;
use ringkv_core::{Entry, Id, Input, Message, Request, Store, Version};

/// For each `(key, value)` written, the nodes that stored it from a message (and when
/// first); and when each node lost its memory in a crash.
#[derive(Debug, Default)]
pub(super) struct Reach {
    by_value: BTreeMap<(String, String), BTreeMap<u32, u64>>,
    crashes: Vec<(u32, u64)>,
    /// When each node stopped being a member other than by crashing (it departed, or
    /// was removed while it ran), and whether each is a member now.
    departures: Vec<(u32, u64)>,
    members: BTreeMap<u32, bool>,
}

impl Reach {
    /// The values `input` carries to be stored, to check against the receiver's store
    /// once it has handled it (see [`Reach::note_stored`]). A client write (a request, or
    /// routed to the primary) counts too: the primary that stores it holds a copy from
    /// then on, before its acknowledgement reaches the client (a primary that crashes
    /// while its acknowledgement is on its way lost the write by design).
    pub(super) fn carried(input: &Input) -> Vec<(String, Entry)> {
        // Every write's value is unique to it: a store holding the value holds the write.
        let client_write = |key: &str, value: &str| {
            let unmatched = Version {
                counter: u64::MAX,
                node: Id::default(),
            };
            let entry = Entry {
                value: Some(value.to_string()),
                version: unmatched,
            };
            vec![(key.to_string(), entry)]
        };
        let msg = match input {
            Input::Message(envelope) => &envelope.msg,
            Input::Request {
                request: Request::Insert { key, value },
                ..
            } => return client_write(key, value),
            _ => return Vec::new(),
        };
        match msg {
            Message::Route(routed) => match &routed.action {
                Action::Write { value: Some(value) } => client_write(&routed.key, value),
                _ => Vec::new(),
            },
            Message::Replicate { entries, .. }
            | Message::Snapshot { entries, .. }
            | Message::SyncDiff { entries, .. }
            | Message::SyncPush { entries } => entries
                .iter()
                .filter(|(_, e)| e.value.is_some())
                .cloned()
                .collect(),
            Message::Forward { key, entry, .. } if entry.value.is_some() => {
                vec![(key.clone(), entry.clone())]
            }
            Message::ChainWrite(step) if step.entry.value.is_some() => {
                vec![(step.key.clone(), step.entry.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// Node `to` handled a message carrying `carried`: note each value its store now
    /// holds (or has overwritten with a newer version).
    pub(super) fn note_stored(
        &mut self,
        to: u32,
        now: u64,
        carried: Vec<(String, Entry)>,
        store: &Store,
    ) {
        for (key, entry) in carried {
            let kept = store
                .get(&key)
                .is_some_and(|e| e.version > entry.version || e.value == entry.value);
            if let (true, Some(value)) = (kept, entry.value) {
                let holders = self.by_value.entry((key, value)).or_default();
                holders.entry(to).or_insert(now);
            }
        }
    }

    /// Node `n` crashed at `now`, losing its memory.
    pub(super) fn crashed(&mut self, n: u32, now: u64) {
        self.crashes.push((n, now));
        self.members.insert(n, false);
    }

    /// Node `n` handled an input at `now` and is (or is not) a member after it.
    pub(super) fn note_membership(&mut self, n: u32, now: u64, member: bool) {
        let was = self.members.insert(n, member).unwrap_or(false);
        if was && !member {
            self.departures.push((n, now));
        }
    }

    /// Whether `value` of `key`, acknowledged by node `acker` at `acked_at`, was lost by
    /// design: every node that stored it (`acker` first) lost it after storing it, in a
    /// crash (its copies all in memory) or by leaving the ring (handing it on), and the
    /// last of them lost it in a crash. A ring that shrank by departures to fewer
    /// members than k and then lost its last holder in a crash (4 nodes, k = 2, seed 4759
    /// of the eventual campaign with loss: three departed, then the bootstrap, alone,
    /// crashed without a disk) loses its data by design; a write whose last holder
    /// departed without handing it on is still a defect.
    pub(super) fn lost_in_crash(&self, key: &str, value: &str, acker: u32, acked_at: u64) -> bool {
        let mut holders: BTreeMap<u32, u64> = self
            .by_value
            .get(&(key.to_string(), value.to_string()))
            .cloned()
            .unwrap_or_default();
        let at = holders.entry(acker).or_insert(acked_at);
        *at = (*at).min(acked_at);
        let first_after = |events: &[(u32, u64)], node: u32, stored: u64| {
            events
                .iter()
                .filter(|&&(n, t)| n == node && t >= stored)
                .map(|&(_, t)| t)
                .min()
        };
        let mut last: Option<(u64, bool)> = None;
        for (&node, &stored) in &holders {
            let crash = first_after(&self.crashes, node, stored);
            let departure = first_after(&self.departures, node, stored);
            let lost = match (crash, departure) {
                (Some(c), Some(d)) if d < c => (d, false),
                (Some(c), _) => (c, true),
                (None, Some(d)) => (d, false),
                (None, None) => return false,
            };
            if last.is_none_or(|l| lost.0 >= l.0) {
                last = Some(lost);
            }
        }
        last.is_some_and(|(_, crashed)| crashed)
    }
}
