//! Anti-entropy: digests of a range per bucket, the other side's entries in the buckets
//! that differ, and the newer entries pushed across.
//!
//! Under eventual consistency a key's primary compares with its replicas, and each side
//! takes the other's newer entries. Under chain replication each node compares with its
//! successor the keys they hold in that order in the chain, and only pushes down: a write
//! that stopped part way (a lost message, a crash) then goes on down the chain in order,
//! so every node still holds whatever the node after it holds, which a new tail counts on
//! when it fetches from its predecessor. (Pushing straight to the tail, past a node that
//! missed the write, would let a later tail lack a write the old one served.)

use std::collections::BTreeMap;

use crate::config::Consistency;
use crate::handover::Handover;
use crate::id::Id;
use crate::message::{Message, NodeRef};
use crate::out::Out;
use crate::shared::{Phase, Shared};
use crate::store::{digest_bucket, Entry, Range, DIGEST_BUCKETS};

/// Anti-entropy tick: send digests (eventual: of the keys this node is primary for, to
/// their other replicas; chain: of the keys it holds but does not tail, to the next
/// replica).
pub(crate) fn on_tick(sh: &mut Shared, out: &mut Out) {
    let replicas = sh.config.k.min(sh.view.ring_size).saturating_sub(1);
    if sh.phase != Phase::Active || replicas == 0 {
        return;
    }
    let pairs: Vec<(Range, Vec<NodeRef>)> = match sh.config.consistency {
        Consistency::Eventual => {
            let Some(pred) = sh.view.preds.first() else {
                return;
            };
            let range = Range::Interval {
                from: pred.id,
                to: sh.me.id,
            };
            vec![(range, sh.downstream())]
        }
        Consistency::Chain | Consistency::Craq if sh.has_vnodes() => chain_pairs_by_place(sh),
        Consistency::Chain | Consistency::Craq => {
            // The keys this node holds but does not tail: (preds[m - 2], me], each of
            // which its successor holds next in the chain.
            let (Some(from), Some(next)) = (sh.view.preds.get(replicas - 1), sh.view.succs.first())
            else {
                return;
            };
            let range = Range::Interval {
                from: from.id,
                to: sh.me.id,
            };
            vec![(range, vec![next.clone()])]
        }
    };
    for (range, targets) in pairs {
        let digests = digests(sh, range);
        for to in &targets {
            let msg = Message::SyncDigest {
                range,
                digests: digests.clone(),
            };
            out.send(to, msg);
        }
    }
}

/// Under chain replication with virtual nodes: the keys this node holds at each place of
/// their chains but the tail's, each range with its next replica. The keys a node holds
/// at one place (see [`crate::placement`]) share the processes before it in the chain,
/// so the next replica too.
fn chain_pairs_by_place(sh: &Shared) -> Vec<(Range, Vec<NodeRef>)> {
    let m = sh.chain_len();
    let up = crate::placement::Upstream::of(&sh.view, &sh.me);
    let mut pairs = Vec::new();
    for p in 0..=m.saturating_sub(2).min(up.others()) {
        let (from, to) = match p {
            0 => match sh.view.preds.first() {
                Some(pred) => (pred.id, sh.me.id),
                None => continue,
            },
            _ => match (up.get(p), up.get(p - 1)) {
                (lower, Some(upper)) => (lower.map_or(sh.me.id, |n| n.id), upper.id),
                _ => continue,
            },
        };
        if let Some(next) = sh.next_in_chain(to) {
            pairs.push((Range::Interval { from, to }, vec![next]));
        }
    }
    pairs
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
    if sh.config.consistency == Consistency::Eventual {
        take_ours(sh, ho, out, theirs);
    }
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
