//! CRAQ, chain replication with apportioned queries (Terrace & Freedman, USENIX ATC
//! 2009): chain replication in which every replica of a key serves reads. Writes travel
//! head → tail exactly as under chain replication (`replication.rs`); this module adds:
//!
//! - **Clean marks.** A replica keeps, per key, the version the tail has confirmed
//!   committed. Its copy is *clean* while that equals the version it stores: any other
//!   write it applies (down the chain, in a hand-over, by anti-entropy or a repair)
//!   changes the stored version and so makes the copy dirty until the tail confirms
//!   again. The tail confirms in two ways: after acknowledging a chain write it tells the
//!   key's other replicas (`CraqClean`), and it answers version queries.
//! - **Reads.** A read is answered by the first replica on its route: from its own store
//!   if it is the tail, or its copy is clean; otherwise it asks the tail
//!   (`VersionQuery`), which answers the client itself with the entry it has
//!   committed and sends the replica a clean mark of that version. (In the paper a
//!   replica keeps every dirty version and the tail answers a version number; here the
//!   tail serves the entry, so a replica keeps one version per key as under chain
//!   replication.)
//!
//! Why it stays linearizable: within one view a write reaches the tail only through
//! every other replica of its key, so once the tail has committed a version newer than a
//! replica's clean one, that replica has applied the newer one and its copy is no longer
//! clean. Across view changes:
//! - marks belong to the installed view: a new view drops them all, so data a replica
//!   fetched, was forwarded or was refilled with is uncertain until the tail confirms it;
//!   a mark is taken only from the node the replica's own view makes the tail (checked
//!   when the mark arrives);
//! - a replica serves from its store only while it holds a lease, is not preparing a view
//!   and is not unsure of its data (as a chain tail): one cut off from the ring stops
//!   before the ring replaces it; and once its lease has lapsed, not until it installs a
//!   newer view (the ring may have committed a change without it: its reads take chain
//!   replication's path meanwhile);
//! - a chain member drops a chain write that skipped a replica of its own view (sent by a
//!   node still in an older view, in which a newcomer was not yet between them) and sends
//!   it to the key's primary instead, which passes it down the whole chain; its client's
//!   origin re-drives it and the head, which applied it, sends it down again.

use std::collections::BTreeMap;

use crate::api::RequestError;
use crate::id::{in_open_closed, Id};
use crate::message::{Message, NodeRef, Origin};
use crate::out::Out;
use crate::replication::answer_read;
use crate::shared::Shared;
use crate::store::Version;

/// Clean marks kept at once; beyond it a replica asks the tail about further keys (still
/// correct, only slower), so memory stays bounded.
const CLEAN_KEYS_MAX: usize = 1 << 20;

/// A CRAQ replica's clean marks.
#[derive(Debug, Default)]
pub(crate) struct Craq {
    /// Key → the version its tail confirmed committed (`None`: the tail had no entry),
    /// under the view of `epoch`.
    clean: BTreeMap<String, Option<Version>>,
    /// Epoch of the installed view the marks were made under.
    epoch: u64,
}

impl Craq {
    /// A read of `key` reached this replica, the first on its route: answer it here, or
    /// ask the tail.
    pub(crate) fn read(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        origin: Option<Origin>,
        key: String,
        hops: u32,
    ) {
        let Some(origin) = origin else { return };
        let key_id = Id::of_key(&key);
        if sh.is_tail(key_id) {
            return crate::replication::tail_read(sh, out, origin, &key, hops);
        }
        if self.is_clean(sh, out.now, &key) {
            return crate::replication::answer_read(sh, out, Some(origin), &key, hops);
        }
        let Some(tail) = tail_of(sh, key_id) else {
            let node = sh.addr();
            return out.respond(Some(origin), Err(RequestError::RouteBroken { node }));
        };
        let query = Message::VersionQuery {
            origin,
            key,
            hops: hops + 1,
        };
        out.send(&tail, query);
    }

    /// A replica asks this node, as the key's tail, which entry it has committed.
    pub(crate) fn on_query(
        sh: &Shared,
        out: &mut Out,
        from: &NodeRef,
        (origin, key, hops): (Origin, String, u32),
    ) {
        let key_id = Id::of_key(&key);
        let node = sh.addr();
        // As a chain tail serves reads: in its own view it holds the key and is its tail.
        let serving = sh.is_member() && !sh.unsure && sh.responsibility().contains(key_id);
        if !serving || !sh.serves_tail(key_id) {
            return out.respond(Some(origin), Err(RequestError::RouteBroken { node }));
        }
        if !sh.holds_lease(out.now) {
            return out.respond(Some(origin), Err(RequestError::LeaseExpired { node }));
        }
        // The tail answers the client itself, as a chain tail serves a read: one message
        // delay fewer than handing its entry back to the replica that asked. The
        // replica still learns which version is committed, so its copy turns clean when
        // it stores that version.
        let version = sh.store.get(&key).map(|e| e.version);
        let clean = Message::CraqClean {
            key: key.clone(),
            version,
        };
        out.send(from, clean);
        answer_read(sh, out, Some(origin), &key, hops);
    }

    /// The key's tail committed `version`.
    pub(crate) fn on_clean(
        &mut self,
        sh: &Shared,
        from: &NodeRef,
        key: String,
        version: Option<Version>,
    ) {
        self.confirm(sh, from, &key, version);
    }

    /// `from` says it has committed `version` of `key` (`None`: no entry): a clean mark,
    /// if `from` is the key's tail in this replica's view and the replica stores that
    /// version (or, for `None`, nothing either: a write must pass it before the tail).
    fn confirm(&mut self, sh: &Shared, from: &NodeRef, key: &str, version: Option<Version>) {
        self.settle(sh);
        let key_id = Id::of_key(key);
        let stored = sh.store.get(key).map(|e| e.version);
        let from_tail = tail_of(sh, key_id).is_some_and(|t| t.id == from.id);
        if !settled(sh, key_id) || !from_tail || stored != version {
            return;
        }
        if self.clean.len() < CLEAN_KEYS_MAX || self.clean.contains_key(key) {
            self.clean.insert(key.to_string(), version);
        }
    }

    /// Whether this replica's copy of `key` is clean and it may serve it at `now`.
    fn is_clean(&mut self, sh: &Shared, now: crate::Time, key: &str) -> bool {
        self.settle(sh);
        let stored = sh.store.get(key).map(|e| e.version);
        let marked = self.clean.get(key).copied();
        settled(sh, Id::of_key(key)) && sh.holds_lease(now) && marked == Some(stored)
    }

    /// Drop the marks of an earlier view.
    fn settle(&mut self, sh: &Shared) {
        if self.epoch != sh.view.epoch {
            self.clean.clear();
            self.epoch = sh.view.epoch;
        }
    }

    /// Number of clean marks held (for tests).
    #[cfg(test)]
    fn marks(&self) -> usize {
        self.clean.len()
    }
}

/// After the tail acknowledged a chain write of `key`: tell the key's other replicas
/// which version it has committed.
pub(crate) fn announce_clean(sh: &Shared, out: &mut Out, key: &str) {
    let Some(version) = sh.store.get(key).map(|e| e.version) else {
        return;
    };
    let others = sh.chain_len().saturating_sub(1);
    let upstream: Vec<NodeRef> = match sh.has_vnodes() {
        true => {
            let chain = sh.chain_of(Id::of_key(key)).unwrap_or_default();
            chain.into_iter().filter(|n| n.id != sh.me.id).collect()
        }
        false => sh.view.preds.iter().take(others).cloned().collect(),
    };
    for to in &upstream {
        let msg = Message::CraqClean {
            key: key.to_string(),
            version: Some(version),
        };
        out.send(to, msg);
    }
}

/// Whether this replica's data for `key` is settled: a member, not preparing a view, not
/// unsure of its data, holding the key under its installed view.
fn settled(sh: &Shared, key: Id) -> bool {
    let member = sh.is_member() && sh.view_trusted();
    member && sh.gaining.is_none() && !sh.unsure && sh.responsibility().contains(key)
}

/// The tail of `key` in this node's view, for a node that holds the key.
fn tail_of(sh: &Shared, key: Id) -> Option<NodeRef> {
    if sh.is_tail(key) {
        return Some(sh.me.clone());
    }
    if sh.has_vnodes() {
        return sh.chain_of(key)?.pop();
    }
    let ahead = sh.chain_len().checked_sub(1 + position(sh, key)?)?;
    sh.view.succs.get(ahead.checked_sub(1)?).cloned()
}

/// The primary of `key` in this node's view, for a node that holds the key and is not its
/// primary: where a read goes from a replica whose view is not trusted (chain
/// replication's path: the primary hands it to its tail, or, under CRAQ, serves it).
pub(crate) fn primary_of(sh: &Shared, key: Id) -> Option<NodeRef> {
    let position = position(sh, key)?;
    if sh.has_vnodes() {
        position.checked_sub(1)?;
        return sh.chain_of(key)?.into_iter().next();
    }
    sh.view.preds.get(position.checked_sub(1)?).cloned()
}

/// This node's position in `key`'s chain in its view: 0 at the primary, i when
/// `preds[i - 1]` is the primary.
fn position(sh: &Shared, key: Id) -> Option<usize> {
    if sh.has_vnodes() {
        return crate::shared::position_in_view(&sh.view, &sh.me, sh.config.k, key);
    }
    if sh.is_primary(key) {
        return Some(0);
    }
    let pred_id = |i: usize| sh.view.preds.get(i).map_or(sh.me.id, |n| n.id);
    (1..sh.chain_len()).find(|&i| {
        let primary = sh.view.preds.get(i - 1).map_or(sh.me.id, |n| n.id);
        in_open_closed(key, pred_id(i), primary)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Response;
    use crate::config::{ClusterConfig, Consistency, Routing};
    use crate::message::View;
    use crate::shared::{Fingers, Phase};
    use crate::store::Entry;
    use crate::store::Store;
    use rand::SeedableRng;

    /// Node `me` (of `ring`, sorted by id) with its view of a stable ring and k = 3.
    fn member(ring: &[NodeRef], me: usize) -> Shared {
        let n = ring.len();
        let k = 3;
        let len = (k + 1).min(n - 1);
        let preds = (1..=len).map(|i| ring[(me + n - i) % n].clone()).collect();
        let succs = (1..=len).map(|i| ring[(me + i) % n].clone()).collect();
        let timing = crate::config::Timing::default();
        Shared {
            me: ring[me].clone(),
            coordinator: ring[0].addr.clone(),
            term: 1,
            coordinator_seen: 0,
            seats: Vec::new(),
            bootstrap: ring[0].addr.clone(),
            ring_id: 1,
            recovering: false,
            ring_seen: false,
            halted: None,
            unsure: false,
            left_epoch: 0,
            config: ClusterConfig::new(k, Consistency::Craq, Routing::Finger).unwrap(),
            limits: Default::default(),
            timing,
            phase: Phase::Active,
            incarnation: 1,
            view: View {
                epoch: 7,
                ring_size: n,
                preds,
                succs,
            },
            fingers: Fingers::default(),
            store: Store::new(),
            gaining: None,
            forward_to: None,
            lease_until: 0,
            lease_lapsed_in: None,
            clock_epoch_ns: 0,
            comeback: Default::default(),
        }
    }

    fn ring(n: usize) -> Vec<NodeRef> {
        let mut ring: Vec<NodeRef> = (0..n)
            .map(|i| NodeRef::new(&format!("10.0.0.{i}:5000")))
            .collect();
        ring.sort_by_key(|r| r.id);
        ring
    }

    /// A key whose primary is `ring[p]`.
    fn key_at(ring: &[NodeRef], p: usize) -> String {
        let n = ring.len();
        (0..)
            .map(|i| format!("key-{i}"))
            .find(|k| in_open_closed(Id::of_key(k), ring[(p + n - 1) % n].id, ring[p].id))
            .unwrap()
    }

    fn out(me: &NodeRef) -> Out {
        Out::new(me.clone(), rand_chacha::ChaCha8Rng::seed_from_u64(1))
    }

    fn entry(counter: u64) -> Entry {
        Entry {
            value: Some(format!("v{counter}")),
            version: Version {
                counter,
                node: Id::ZERO,
            },
        }
    }

    #[test]
    fn every_replica_finds_the_same_tail() {
        let ring = ring(8);
        for p in 0..8 {
            let key = key_at(&ring, p);
            let id = Id::of_key(&key);
            for pos in 0..3 {
                let sh = member(&ring, (p + pos) % 8);
                let tail = tail_of(&sh, id).unwrap();
                assert_eq!(tail.id, ring[(p + 2) % 8].id, "primary {p}, position {pos}");
            }
        }
    }

    #[test]
    fn a_copy_is_clean_only_at_the_version_the_tail_confirmed_under_this_view() {
        let ring = ring(6);
        let key = key_at(&ring, 2);
        let mut sh = member(&ring, 3); // the middle replica of (2, 3, 4)
        let tail = ring[4].clone();
        let mut craq = Craq::default();
        sh.store.apply(0, &key, entry(1));
        let o = out(&sh.me);
        assert!(!craq.is_clean(&sh, o.now, &key), "nothing confirmed yet");
        craq.on_clean(&sh, &ring[2], key.clone(), Some(entry(1).version));
        assert!(
            !craq.is_clean(&sh, o.now, &key),
            "the head does not confirm"
        );
        craq.on_clean(&sh, &tail, key.clone(), Some(entry(1).version));
        assert!(craq.is_clean(&sh, o.now, &key));
        sh.store.apply(0, &key, entry(2));
        assert!(
            !craq.is_clean(&sh, o.now, &key),
            "a newer write makes it dirty"
        );
        craq.on_clean(&sh, &tail, key.clone(), Some(entry(2).version));
        assert!(craq.is_clean(&sh, o.now, &key));
        sh.view.epoch += 1;
        assert!(
            !craq.is_clean(&sh, o.now, &key),
            "a new view drops the marks"
        );
        assert_eq!(craq.marks(), 0);
        craq.on_clean(&sh, &tail, key.clone(), Some(entry(2).version));
        sh.unsure = true;
        assert!(
            !craq.is_clean(&sh, o.now, &key),
            "an unsure replica asks the tail"
        );
    }

    #[test]
    fn a_dirty_read_asks_the_tail_and_a_clean_one_is_answered_here() {
        let ring = ring(6);
        let key = key_at(&ring, 2);
        let mut sh = member(&ring, 3);
        let tail = ring[4].clone();
        let mut craq = Craq::default();
        sh.store.apply(0, &key, entry(1));
        let origin = Origin {
            node: ring[0].clone(),
            req: 9,
            incarnation: 1,
        };
        let mut o = out(&sh.me);
        craq.read(&sh, &mut o, Some(origin.clone()), key.clone(), 1);
        let mut sent = Vec::new();
        o.drain_into(&mut sent);
        let asked = sent.iter().any(|s| match s {
            crate::Output::Send { to, envelope } => {
                **to == *tail.addr && matches!(envelope.msg, Message::VersionQuery { .. })
            }
            _ => false,
        });
        assert!(asked, "{sent:?}");
        craq.on_clean(&sh, &tail, key.clone(), Some(entry(1).version));
        craq.read(&sh, &mut o, Some(origin), key.clone(), 1);
        let mut sent = Vec::new();
        o.drain_into(&mut sent);
        let answered = sent.iter().any(|s| match s {
            crate::Output::Send { envelope, .. } => matches!(
                &envelope.msg,
                Message::Done { reply: Ok(Response::Found { value, .. }), .. } if value == "v1"
            ),
            _ => false,
        });
        assert!(answered, "{sent:?}");
    }

    #[test]
    fn an_absent_key_is_clean_until_a_write_reaches_the_replica() {
        let ring = ring(6);
        let key = key_at(&ring, 2);
        let mut sh = member(&ring, 3);
        let tail = ring[4].clone();
        let mut craq = Craq::default();
        let o = out(&sh.me);
        craq.on_clean(&sh, &tail, key.clone(), None);
        assert!(craq.is_clean(&sh, o.now, &key), "the tail has none either");
        sh.store.apply(0, &key, entry(1));
        assert!(!craq.is_clean(&sh, o.now, &key), "a write makes it dirty");
    }

    #[test]
    fn the_tail_answers_a_version_query_to_the_client_and_marks_the_asker_clean() {
        let ring = ring(6);
        let key = key_at(&ring, 2);
        let mut tail = member(&ring, 4);
        tail.lease_until = u64::MAX;
        let asker = ring[3].clone();
        let origin = Origin {
            node: ring[0].clone(),
            req: 5,
            incarnation: 1,
        };
        let mut o = out(&tail.me);
        let query = (origin.clone(), key.clone(), 2);
        Craq::on_query(&tail, &mut o, &asker, query.clone());
        let mut sent = Vec::new();
        o.drain_into(&mut sent);
        let to = |s: &crate::Output| match s {
            crate::Output::Send { to, envelope } => Some((to.to_string(), envelope.msg.clone())),
            _ => None,
        };
        let sent: Vec<_> = sent.iter().filter_map(to).collect();
        let none_yet = sent.iter().any(|(to, msg)| {
            *to == asker.addr.to_string()
                && matches!(msg, Message::CraqClean { version: None, key: k } if *k == key)
        });
        assert!(none_yet, "the asker learns the tail has no entry: {sent:?}");
        let answered = sent.iter().any(|(to, msg)| {
            *to == origin.node.addr.to_string()
                && matches!(
                    msg,
                    Message::Done {
                        reply: Ok(Response::NotFound { .. }),
                        ..
                    }
                )
        });
        assert!(answered, "the client hears from the tail itself: {sent:?}");
        tail.store.apply(0, &key, entry(3));
        Craq::on_query(&tail, &mut o, &asker, query);
        let mut sent = Vec::new();
        o.drain_into(&mut sent);
        let version = Some(entry(3).version);
        let marked = sent.iter().filter_map(to).any(|(to, msg)| {
            *to == asker.addr.to_string()
                && matches!(msg, Message::CraqClean { version: v, .. } if v == version)
        });
        assert!(marked, "{sent:?}");
    }

    #[test]
    fn a_write_that_skipped_a_replica_is_recognised() {
        use crate::replication::skipped_a_replica;
        let ring = ring(6);
        let key = Id::of_key(&key_at(&ring, 2));
        let tail = member(&ring, 4);
        assert!(!skipped_a_replica(&tail, &ring[3], key), "from the nearest");
        assert!(
            skipped_a_replica(&tail, &ring[2], key),
            "the head skipped 3"
        );
        let head = member(&ring, 2);
        assert!(
            !skipped_a_replica(&head, &ring[0], key),
            "the primary heads"
        );
    }
}
