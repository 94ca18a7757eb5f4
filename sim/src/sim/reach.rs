//! Which nodes stored each written value, so that under eventual consistency a lost
//! acknowledged write can be told apart: one whose every copy was in the memory of nodes
//! that then crashed (the model acknowledges once the primary has a write, before every
//! replica does: a primary that crashes before it replicates, or a write that reached
//! only the replicas on one side of a partition and then lost them all, is gone, by
//! design without `--data-dir`) from one lost while a copy survived (a defect).

use std::collections::BTreeMap;

use ringkv_core::{Entry, Message, Store};

/// For each `(key, value)` written, the nodes that stored it from a message (and when
/// first); and when each node lost its memory in a crash.
#[derive(Debug, Default)]
pub(super) struct Reach {
    by_value: BTreeMap<(String, String), BTreeMap<u32, u64>>,
    crashes: Vec<(u32, u64)>,
}

impl Reach {
    /// The values `msg` carries to be stored, to check against the receiver's store once
    /// it has handled the message (see [`Reach::note_stored`]).
    pub(super) fn carried(msg: &Message) -> Vec<(String, Entry)> {
        match msg {
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
    }

    /// Whether `value` of `key`, acknowledged by node `acker` at `acked_at`, was lost by
    /// design: every node that stored it (`acker` first) crashed after storing it, its
    /// copies all in memory.
    pub(super) fn lost_in_crash(&self, key: &str, value: &str, acker: u32, acked_at: u64) -> bool {
        let mut holders: BTreeMap<u32, u64> = self
            .by_value
            .get(&(key.to_string(), value.to_string()))
            .cloned()
            .unwrap_or_default();
        let at = holders.entry(acker).or_insert(acked_at);
        *at = (*at).min(acked_at);
        holders.iter().all(|(&node, &stored)| {
            self.crashes
                .iter()
                .any(|&(n, crashed)| n == node && crashed >= stored)
        })
    }
}
