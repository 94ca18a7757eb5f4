//! Anti-entropy between a primary and its replicas: digests of the primary's range per
//! bucket, the replica's entries in the buckets that differ, and the newer side's
//! entries pushed to the other.

use std::collections::BTreeMap;

use crate::handover::Handover;
use crate::id::Id;
use crate::message::{Message, NodeRef};
use crate::out::Out;
use crate::shared::{Phase, Shared};
use crate::store::{digest_bucket, Entry, Range, DIGEST_BUCKETS};

/// Anti-entropy tick: send digests of our primary range to our replicas.
pub(crate) fn on_tick(sh: &mut Shared, out: &mut Out) {
    let replicas = sh.config.k.min(sh.view.ring_size).saturating_sub(1);
    if sh.phase != Phase::Active || replicas == 0 {
        return;
    }
    let Some(pred) = sh.view.preds.first() else {
        return;
    };
    let range = Range::Interval {
        from: pred.id,
        to: sh.me.id,
    };
    let digests = digests(sh, range);
    for to in sh.view.succs.iter().take(replicas) {
        let msg = Message::SyncDigest {
            range,
            digests: digests.clone(),
        };
        out.send(to, msg);
    }
}

/// A primary's digests arrived: answer with our entries in the buckets that differ.
pub(crate) fn on_digest(
    sh: &mut Shared,
    out: &mut Out,
    from: NodeRef,
    range: Range,
    theirs: Vec<u64>,
) {
    if !sh.is_member() || theirs.len() != DIGEST_BUCKETS {
        return;
    }
    let mine = digests(sh, range);
    let buckets: Vec<u32> = (0..DIGEST_BUCKETS as u32)
        .filter(|&b| mine[b as usize] != theirs[b as usize])
        .collect();
    if buckets.is_empty() {
        return;
    }
    let entries = entries_in_buckets(sh, range, &buckets);
    let msg = Message::SyncDiff {
        range,
        buckets,
        entries,
    };
    out.send(&from, msg);
}

/// A replica's entries in differing buckets arrived: take the newer ones, push ours
/// where the replica's are older or missing.
pub(crate) fn on_diff(
    sh: &mut Shared,
    ho: &mut Handover,
    out: &mut Out,
    from: NodeRef,
    range: Range,
    buckets: Vec<u32>,
    entries: Vec<(String, Entry)>,
) {
    if !sh.is_member() {
        return;
    }
    let theirs: BTreeMap<String, Entry> = entries.into_iter().collect();
    let mut push = Vec::new();
    for (key, entry) in entries_in_buckets(sh, range, &buckets) {
        let newer = theirs.get(&key).is_none_or(|t| t.version < entry.version);
        if newer {
            push.push((key, entry));
        }
    }
    take_ours(sh, ho, out, theirs);
    if !push.is_empty() {
        out.send(&from, Message::SyncPush { entries: push });
    }
}

/// The primary pushed entries we lacked or had older.
pub(crate) fn on_push(
    sh: &mut Shared,
    ho: &mut Handover,
    out: &mut Out,
    entries: Vec<(String, Entry)>,
) {
    if !sh.is_member() {
        return;
    }
    take_ours(sh, ho, out, entries);
}

/// Apply the entries this node is responsible for (the store keeps the newer version).
fn take_ours(
    sh: &mut Shared,
    ho: &mut Handover,
    out: &mut Out,
    entries: impl IntoIterator<Item = (String, Entry)>,
) {
    for (key, entry) in entries {
        if sh.responsibility().contains(Id::of_key(&key)) {
            ho.apply(sh, out, &key, entry);
        }
    }
}

fn digests(sh: &mut Shared, range: Range) -> Vec<u64> {
    match range {
        Range::Interval { from, to } => sh.store.range_digests(from, to),
        _ => vec![0; DIGEST_BUCKETS],
    }
}

fn entries_in_buckets(sh: &Shared, range: Range, buckets: &[u32]) -> Vec<(String, Entry)> {
    sh.store
        .entries_with_ids(range)
        .filter(|(_, id, _)| buckets.contains(&(digest_bucket(*id) as u32)))
        .map(|(k, _, e)| (k.to_string(), e.clone()))
        .collect()
}
