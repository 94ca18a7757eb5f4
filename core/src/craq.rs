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
//! - **Waiting for the clean notice.** A copy made dirty by a write that passed this
//!   replica since the tail last confirmed the key (a mark of an older version under this
//!   view) will be confirmed by the tail's `CraqClean` once that write commits. A read of
//!   it waits for that notice instead of asking the tail, and is answered with the version
//!   it found when the notice names exactly that version; when a notice of a newer
//!   version comes first (its own was lost), or after a few times as long as notices
//!   have been taking (`CLEAN_WAIT_MARGIN`: a lost notice and no later write, a write
//!   that never commits), it asks the tail as above. Under a read-heavy
//!   load the tail is the chain's busiest node, and each version query is an input it
//!   must take: waiting moves that work off it, at the price of a dirty read's latency
//!   (the rest of the write's way to the tail and one delay back, against two delays).
//!   Why it is linearizable: the version `v` the replica stored when the read arrived
//!   at `t` is the newest committed one at `max(t, commit of v)`, a moment before the
//!   notice arrives: no newer version can commit before it has passed this replica,
//!   which it had not at `t`, and the tail commits one primary's writes in order.
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
use crate::timers::Timer;
use crate::Time;

/// Clean marks kept at once; beyond it a replica asks the tail about further keys (still
/// correct, only slower), so memory stays bounded.
const CLEAN_KEYS_MAX: usize = 1 << 20;

/// How long a read of a dirty copy waits for the tail's clean notice before it asks the
/// tail instead, as a multiple of how long notices have been taking here: the time from
/// this replica passing a write on to the notice of it, smoothed. The wait matters only
/// when no notice of the key comes at all (the notice is lost and no later write
/// follows, or the write never commits): a notice of a newer version ends it at once.
/// It must outlast a saturated chain, whose every node queues a write (1 ms links, nodes
/// of 2,000 inputs a second and 200 clients on a chain of five: a fixed 50 ms was too
/// short, and reads that had waited then asked the tail too), and stay short on a quiet
/// ring, where a client that waited for a lost notice would otherwise give up first.
const CLEAN_WAIT_MARGIN: Time = 4;

/// Bounds of the wait.
pub(crate) const CLEAN_WAIT_MIN_NS: Time = 5_000_000;
pub(crate) const CLEAN_WAIT_MAX_NS: Time = 250_000_000;

/// The wait before any notice was timed here (a replica that has passed no write on since
/// it started or its view changed): a few link delays of a loaded ring.
pub(crate) const CLEAN_WAIT_FIRST_NS: Time = 50_000_000;

/// Writes timed at once (one per key, the latest passed on).
const IN_FLIGHT_MAX: usize = 1 << 16;

/// Reads waiting for clean notices at once; beyond it a dirty read asks the tail.
const WAITING_MAX: usize = 1 << 16;

/// A CRAQ replica's clean marks, and the reads waiting for the next one.
#[derive(Debug, Default)]
pub(crate) struct Craq {
    /// Key → the version its tail confirmed committed (`None`: the tail had no entry),
    /// under the view of `epoch`.
    clean: BTreeMap<String, Option<Version>>,
    /// Epoch of the installed view the marks were made under.
    epoch: u64,
    /// Key → reads of its dirty copy waiting for the tail to confirm it.
    waiting: BTreeMap<String, Vec<Waiting>>,
    /// Number of reads in `waiting` (kept, not counted, as every dirty read checks it).
    waiting_len: usize,
    /// Key → the latest version this replica passed down the chain under this view, and
    /// when: the tail's notice of it times the notices.
    in_flight: BTreeMap<String, (Version, Time)>,
    /// How long notices take, smoothed (0: none timed yet).
    notice_ns: Time,
}

/// A read of a dirty copy, waiting for the tail's clean notice of the version it found.
#[derive(Debug)]
struct Waiting {
    origin: Origin,
    hops: u32,
    /// The version the replica stored when the read arrived, and its value (`None`: a
    /// tombstone).
    version: Version,
    value: Option<String>,
    /// The view it arrived under: a notice of another view does not answer it.
    epoch: u64,
    /// When it stops waiting and asks the tail.
    until: Time,
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
        self.serve(sh, out, origin, (key, hops), true)
    }

    /// Answer a read here, ask the tail, or (`may_wait`) wait for the tail's notice.
    fn serve(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        origin: Origin,
        (key, hops): (String, u32),
        may_wait: bool,
    ) {
        let key_id = Id::of_key(&key);
        if sh.is_tail(key_id) {
            return crate::replication::tail_read(sh, out, origin, &key, hops);
        }
        if self.is_clean(sh, out.now, &key) {
            return crate::replication::answer_read(sh, out, Some(origin), &key, hops);
        }
        if let Some(version) = self.commit_awaited(sh, out.now, &key).filter(|_| may_wait) {
            let until = out.now + self.wait_ns();
            let waiting = Waiting {
                origin,
                hops,
                version,
                value: sh.store.value(&key).map(str::to_string),
                epoch: self.epoch,
                until,
            };
            self.waiting.entry(key).or_default().push(waiting);
            self.waiting_len += 1;
            return out.arm(Timer::CraqWait, until);
        }
        Self::ask_tail(sh, out, origin, key, hops)
    }

    /// Send a read of a dirty copy to the key's tail.
    fn ask_tail(sh: &Shared, out: &mut Out, origin: Origin, key: String, hops: u32) {
        let key_id = Id::of_key(&key);
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

    /// The key's tail committed `version`: mark the copy clean, and answer the reads
    /// that waited for exactly that version.
    pub(crate) fn on_clean(
        &mut self,
        sh: &Shared,
        out: &mut Out,
        from: &NodeRef,
        key: String,
        version: Option<Version>,
    ) {
        self.confirm(sh, from, &key, version);
        let Some(version) = version else { return };
        let key_id = Id::of_key(&key);
        let from_tail = tail_of(sh, key_id).is_some_and(|t| t.id == from.id);
        if !from_tail || !settled(sh, key_id) {
            return;
        }
        self.time_notice(&key, version, out.now);
        let epoch = self.epoch;
        let Some(reads) = self.waiting.get_mut(&key) else {
            return;
        };
        // A notice of a newer version: the one a read waits for was lost, or its write
        // was overtaken and will not commit; it asks the tail now.
        let (done, rest): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(reads)
            .into_iter()
            .partition(|w| w.epoch == epoch && w.version <= version);
        self.waiting_len -= done.len();
        match rest.is_empty() {
            true => {
                self.waiting.remove(&key);
            }
            false => *reads = rest,
        }
        for w in done {
            match w.version == version {
                true => {
                    let read = (w.value, w.hops);
                    crate::replication::answer_value(sh, out, Some(w.origin), &key, read);
                }
                false => self.serve(sh, out, w.origin, (key.clone(), w.hops), false),
            }
        }
    }

    /// The wait timer fired: reads that waited long enough ask the tail (or, if their
    /// copy turned clean meanwhile, are answered here).
    pub(crate) fn on_wait_timer(&mut self, sh: &Shared, out: &mut Out) {
        let now = out.now;
        let mut due = Vec::new();
        let mut next: Option<Time> = None;
        self.waiting.retain(|key, reads| {
            let (late, rest): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(reads)
                .into_iter()
                .partition(|w| w.until <= now);
            for w in &rest {
                next = Some(next.map_or(w.until, |n| n.min(w.until)));
            }
            due.extend(late.into_iter().map(|w| (key.clone(), w)));
            *reads = rest;
            !reads.is_empty()
        });
        self.waiting_len -= due.len();
        match next {
            Some(at) => out.set_timer(Timer::CraqWait, at),
            None => out.cancel_timer(Timer::CraqWait),
        }
        for (key, w) in due {
            self.serve(sh, out, w.origin, (key, w.hops), false);
        }
    }

    /// The version a read of `key` may wait for the tail to confirm: the copy's, if a
    /// write passed this replica since the tail confirmed an older version under this
    /// view (its notice will follow when it commits).
    fn commit_awaited(&mut self, sh: &Shared, now: crate::Time, key: &str) -> Option<Version> {
        self.settle(sh);
        let stored = sh.store.get(key).map(|e| e.version)?;
        let marked = *self.clean.get(key)?;
        let newer = marked.is_none_or(|m| m < stored);
        let room = self.waiting_len < WAITING_MAX;
        let ok = newer && room && settled(sh, Id::of_key(key)) && sh.holds_lease(now);
        ok.then_some(stored)
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
            self.in_flight.clear();
            self.epoch = sh.view.epoch;
        }
    }

    /// This replica applied `version` of `key` and passed it down the chain.
    pub(crate) fn passed_on(&mut self, sh: &Shared, key: &str, version: Version, now: Time) {
        self.settle(sh);
        if let Some(timed) = self.in_flight.get_mut(key) {
            *timed = (version, now);
        } else if self.in_flight.len() < IN_FLIGHT_MAX {
            self.in_flight.insert(key.to_string(), (version, now));
        }
    }

    /// The tail's notice of `version` of `key` arrived at `now`: how long it took, if
    /// this replica passed that version on.
    fn time_notice(&mut self, key: &str, version: Version, now: Time) {
        let Some(&(passed, at)) = self.in_flight.get(key) else {
            return;
        };
        if passed > version {
            return;
        }
        self.in_flight.remove(key);
        if passed == version {
            let took = now.saturating_sub(at);
            self.notice_ns = match self.notice_ns {
                0 => took.max(1),
                ns => (ns - ns / 8 + took / 8).max(1),
            };
        }
    }

    /// How long a read may wait for a notice.
    fn wait_ns(&self) -> Time {
        match self.notice_ns {
            0 => CLEAN_WAIT_FIRST_NS,
            ns => (CLEAN_WAIT_MARGIN * ns).clamp(CLEAN_WAIT_MIN_NS, CLEAN_WAIT_MAX_NS),
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
        let mut o = out(&sh.me);
        assert!(!craq.is_clean(&sh, o.now, &key), "nothing confirmed yet");
        craq.on_clean(&sh, &mut o, &ring[2], key.clone(), Some(entry(1).version));
        assert!(
            !craq.is_clean(&sh, o.now, &key),
            "the head does not confirm"
        );
        craq.on_clean(&sh, &mut o, &tail, key.clone(), Some(entry(1).version));
        assert!(craq.is_clean(&sh, o.now, &key));
        sh.store.apply(0, &key, entry(2));
        assert!(
            !craq.is_clean(&sh, o.now, &key),
            "a newer write makes it dirty"
        );
        craq.on_clean(&sh, &mut o, &tail, key.clone(), Some(entry(2).version));
        assert!(craq.is_clean(&sh, o.now, &key));
        sh.view.epoch += 1;
        assert!(
            !craq.is_clean(&sh, o.now, &key),
            "a new view drops the marks"
        );
        assert_eq!(craq.marks(), 0);
        craq.on_clean(&sh, &mut o, &tail, key.clone(), Some(entry(2).version));
        sh.unsure = true;
        assert!(
            !craq.is_clean(&sh, o.now, &key),
            "an unsure replica asks the tail"
        );
    }

    /// A dirty copy with no mark to go by (nothing confirmed under this view, so no write
    /// is known to be on its way) asks the tail at once; once clean, it is read here.
    #[test]
    fn a_dirty_read_asks_the_tail_and_a_clean_one_is_answered_here() {
        let ring = ring(6);
        let key = key_at(&ring, 2);
        let mut sh = member(&ring, 3);
        let tail = ring[4].clone();
        let mut craq = Craq::default();
        sh.store.apply(0, &key, entry(1));
        let mut o = out(&sh.me);
        craq.read(&sh, &mut o, Some(origin(9)), key.clone(), 1);
        let sent_now = sent(&mut o);
        let asked = sent_now.iter().any(|(to, msg)| {
            *to == tail.addr.to_string() && matches!(msg, Message::VersionQuery { .. })
        });
        assert!(asked, "{sent_now:?}");
        assert_eq!(craq.waiting_len, 0, "it does not wait");
        craq.on_clean(&sh, &mut o, &tail, key.clone(), Some(entry(1).version));
        craq.read(&sh, &mut o, Some(origin(9)), key.clone(), 1);
        let sent_now = sent(&mut o);
        assert_eq!(answer(&sent_now, 9).as_deref(), Some("v1"), "{sent_now:?}");
    }

    #[test]
    fn an_absent_key_is_clean_until_a_write_reaches_the_replica() {
        let ring = ring(6);
        let key = key_at(&ring, 2);
        let mut sh = member(&ring, 3);
        let tail = ring[4].clone();
        let mut craq = Craq::default();
        let mut o = out(&sh.me);
        craq.on_clean(&sh, &mut o, &tail, key.clone(), None);
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

    fn origin(req: u64) -> Origin {
        Origin {
            node: NodeRef::new("10.0.0.200:5000"),
            req,
            incarnation: 1,
        }
    }

    /// What `o` has sent since the last call: (destination, message).
    fn sent(o: &mut Out) -> Vec<(String, Message)> {
        let mut all = Vec::new();
        o.drain_into(&mut all);
        all.into_iter()
            .filter_map(|s| match s {
                crate::Output::Send { to, envelope } => Some((to.to_string(), envelope.msg)),
                _ => None,
            })
            .collect()
    }

    /// The value of the read `req` answered in `sent`, if it was.
    fn answer(sent: &[(String, Message)], req: u64) -> Option<String> {
        sent.iter().find_map(|(_, msg)| match msg {
            Message::Done {
                req: r,
                reply: Ok(Response::Found { value, .. }),
            } if *r == req => Some(value.clone()),
            _ => None,
        })
    }

    /// The middle replica of a key of `ring[2]` (6 nodes, k = 3), clean at version 1, then
    /// dirtied by version 2.
    fn dirtied(ring: &[NodeRef]) -> (Shared, Craq, Out, String) {
        let key = key_at(ring, 2);
        let mut sh = member(ring, 3);
        sh.lease_until = u64::MAX;
        let mut craq = Craq::default();
        let mut o = out(&sh.me);
        sh.store.apply(0, &key, entry(1));
        craq.on_clean(&sh, &mut o, &ring[4], key.clone(), Some(entry(1).version));
        sh.store.apply(0, &key, entry(2));
        (sh, craq, o, key)
    }

    #[test]
    fn a_read_of_a_copy_dirtied_since_its_mark_waits_for_the_tails_notice_of_that_version() {
        let ring = ring(6);
        let tail = ring[4].clone();
        let (mut sh, mut craq, mut o, key) = dirtied(&ring);
        craq.read(&sh, &mut o, Some(origin(7)), key.clone(), 1);
        assert_eq!(sent(&mut o), vec![], "it waits instead of asking the tail");
        assert_eq!(o.timer(Timer::CraqWait), Some(CLEAN_WAIT_FIRST_NS));
        // Version 3 passes too; a notice from a non-tail, or of an older version, does
        // not answer the read: only version 2 is known to be what the replica held.
        sh.store.apply(0, &key, entry(3));
        craq.on_clean(&sh, &mut o, &ring[2], key.clone(), Some(entry(2).version));
        craq.on_clean(&sh, &mut o, &tail, key.clone(), Some(entry(1).version));
        assert_eq!(sent(&mut o), vec![]);
        craq.on_clean(&sh, &mut o, &tail, key.clone(), Some(entry(2).version));
        let sent = sent(&mut o);
        assert_eq!(answer(&sent, 7).as_deref(), Some("v2"), "{sent:?}");
        assert!(craq.waiting.is_empty());
        assert_eq!(craq.waiting_len, 0);
    }

    #[test]
    fn a_read_waits_a_few_times_as_long_as_notices_have_been_taking() {
        let ring = ring(6);
        let (mut sh, mut craq, mut o, key) = dirtied(&ring);
        assert_eq!(craq.wait_ns(), CLEAN_WAIT_FIRST_NS, "nothing timed yet");
        // Version 2 was passed on at 1 ms; its notice arrives at 4 ms.
        craq.passed_on(&sh, &key, entry(2).version, 1_000_000);
        o.now = 4_000_000;
        craq.on_clean(&sh, &mut o, &ring[4], key.clone(), Some(entry(2).version));
        assert_eq!(craq.wait_ns(), CLEAN_WAIT_MARGIN * 3_000_000);
        sh.store.apply(0, &key, entry(3));
        craq.read(&sh, &mut o, Some(origin(7)), key.clone(), 1);
        let until = 4_000_000 + CLEAN_WAIT_MARGIN * 3_000_000;
        assert_eq!(o.timer(Timer::CraqWait), Some(until));
        // A notice of a version passed on before a newer one times nothing; and the
        // wait never falls below its floor.
        craq.passed_on(&sh, &key, entry(4).version, 5_000_000);
        craq.on_clean(&sh, &mut o, &ring[4], key.clone(), Some(entry(3).version));
        assert_eq!(craq.wait_ns(), CLEAN_WAIT_MARGIN * 3_000_000);
        for i in 5..60 {
            craq.passed_on(&sh, &key, entry(i).version, o.now);
            o.now += 10_000;
            craq.on_clean(&sh, &mut o, &ring[4], key.clone(), Some(entry(i).version));
        }
        assert_eq!(craq.wait_ns(), CLEAN_WAIT_MIN_NS);
    }

    #[test]
    fn a_notice_of_a_newer_version_sends_a_waiting_read_to_the_tail() {
        let ring = ring(6);
        let (mut sh, mut craq, mut o, key) = dirtied(&ring);
        craq.read(&sh, &mut o, Some(origin(7)), key.clone(), 1);
        sh.store.apply(0, &key, entry(3));
        sh.store.apply(0, &key, entry(4));
        // The notice of version 2 was lost; version 3's arrives.
        craq.on_clean(&sh, &mut o, &ring[4], key.clone(), Some(entry(3).version));
        let sent = sent(&mut o);
        let asked = sent.iter().any(|(to, m)| {
            *to == ring[4].addr.to_string()
                && matches!(m, Message::VersionQuery { origin, .. } if origin.req == 7)
        });
        assert!(asked, "{sent:?}");
        assert_eq!(craq.waiting_len, 0);
    }

    #[test]
    fn a_read_asks_the_tail_when_no_notice_came_in_time() {
        let ring = ring(6);
        let (sh, mut craq, mut o, key) = dirtied(&ring);
        craq.read(&sh, &mut o, Some(origin(7)), key.clone(), 1);
        o.now = CLEAN_WAIT_FIRST_NS / 2;
        craq.read(&sh, &mut o, Some(origin(8)), key.clone(), 1);
        o.now = CLEAN_WAIT_FIRST_NS;
        craq.on_wait_timer(&sh, &mut o);
        let sent = sent(&mut o);
        let asked: Vec<u64> = sent
            .iter()
            .filter(|(to, _)| *to == ring[4].addr.to_string())
            .filter_map(|(_, msg)| match msg {
                Message::VersionQuery { origin, .. } => Some(origin.req),
                _ => None,
            })
            .collect();
        assert_eq!(asked, vec![7], "{sent:?}");
        assert_eq!(craq.waiting_len, 1);
        assert_eq!(o.timer(Timer::CraqWait), Some(CLEAN_WAIT_FIRST_NS * 3 / 2));
    }

    #[test]
    fn a_notice_of_a_later_view_does_not_answer_a_read_that_waited_under_an_earlier_one() {
        let ring = ring(6);
        let (mut sh, mut craq, mut o, key) = dirtied(&ring);
        craq.read(&sh, &mut o, Some(origin(7)), key.clone(), 1);
        sh.view.epoch += 1;
        craq.on_clean(&sh, &mut o, &ring[4], key.clone(), Some(entry(2).version));
        assert_eq!(sent(&mut o), vec![]);
        // Its wait over, it is served as a new read would be: the copy is clean now.
        o.now = CLEAN_WAIT_FIRST_NS;
        craq.on_wait_timer(&sh, &mut o);
        assert_eq!(answer(&sent(&mut o), 7).as_deref(), Some("v2"));
    }
}
