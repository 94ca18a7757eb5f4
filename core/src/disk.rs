//! What a durable node keeps on its disk, and what it comes back with.
//!
//! The node does no IO: with [`crate::NodeConfig::durable`] set it emits an
//! [`crate::Output::Persist`] ahead of the other outputs of every input that changed
//! its store or its ring identity, and the driver writes it durably before it carries
//! out the outputs after it (raft-rs' `Ready`: persist, then send). A restarted node is
//! given back what was persisted ([`Recovered`]); it rejoins its ring keeping the
//! entries that are still its to hold, merged by version with what the ring sends it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::id::Id;
use crate::store::{Entry, Journal};
use crate::Time;

/// A node's identity and the ring it belonged to: written whenever they change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMeta {
    /// The address the node was started with (its id is the address's SHA-1).
    pub addr: String,
    /// The ring it was a member of (0: none yet).
    pub ring_id: u64,
    /// The ring's settings.
    pub settings: ClusterConfig,
    /// Other members it knew of when it last installed a view (the whole ring on a
    /// coordinator seat; its neighbours elsewhere), by address.
    pub members: Vec<String>,
    /// The epoch of the view it last installed.
    pub epoch: u64,
    /// Whether `members` is the whole ring (written by a coordinator seat). Absent in
    /// records written before it existed: read as neighbours only.
    #[serde(default)]
    pub whole: bool,
    /// Members a bootstrap that founded the ring again still waited for when it wrote
    /// the record, by id (they are not in its ring yet, and it may not know their
    /// addresses): members too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaited: Vec<Id>,
}

/// The whole ring as a coordinator seat last persisted it: a member back from its disk
/// sends it with its join requests, so that a restarted bootstrap that knew only its
/// neighbours learns every member the ring must wait for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingRecord {
    /// The epoch of the view the seat had installed when it wrote the record.
    pub epoch: u64,
    /// The other members, by id (the sender is one too).
    pub members: Vec<Id>,
}

/// What the driver must make durable before it carries out the outputs that follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persist {
    /// Store changes, in order.
    pub store: Journal,
    /// The node's new identity record, when it changed.
    pub meta: Option<DiskMeta>,
}

/// What a restarted durable node reads back from its disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Every stored entry, tombstones included.
    pub entries: Vec<(String, Entry)>,
    /// The identity record, if one was written.
    pub meta: Option<DiskMeta>,
}

/// Volatile state of a node that came back from its disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct Comeback {
    /// The ring its disk belongs to (0: none).
    pub(crate) ring_id: u64,
    /// Other members it knew of, by id: for a restarted bootstrap, the newest whole
    /// ring it has seen (its own record's, or one a member sent).
    pub(crate) members: BTreeSet<Id>,
    /// The epoch of the record `members` came from.
    pub(crate) members_epoch: u64,
    /// The newest epoch of any record it has seen (its own, or one a member sent): a
    /// ring founded again starts its terms above it.
    pub(crate) newest_epoch: u64,
    /// A restarted bootstrap whose record named only its neighbours: it founds the ring
    /// again only once a member's join request has told it the whole ring.
    pub(crate) partial: bool,
    /// A member that held a coordinator seat: the whole ring its record names, sent
    /// with its join requests until it is a member again.
    pub(crate) record: Option<RingRecord>,
    /// It holds entries from its disk and has not rejoined yet: they are kept through
    /// the join and merged with what the ring sends.
    pub(crate) leftovers: bool,
    /// A restarted bootstrap: the known members that asked it to join while it looked
    /// for its ring (so they restarted too).
    pub(crate) restarted: BTreeSet<Id>,
    /// After founding the ring again from its disk: members that restarted with it and
    /// must rejoin before any lease is granted (their disks hold the only copies of some
    /// keys), until `awaiting_until`.
    pub(crate) awaiting: BTreeSet<Id>,
    pub(crate) awaiting_until: Time,
    /// Once the last of them is back: leases wait until then, so that the entries the
    /// rejoined members pushed to their fellow replicas have arrived.
    pub(crate) release_at: Time,
    /// The ring is coming back from its disks: refuse writes as primary until the
    /// leader grants a lease again (in both models; chain reads wait for the lease too).
    pub(crate) hold_writes: bool,
    /// A restarted bootstrap: the coordinator term in which a member's greeting showed
    /// that this node's previous incarnation held its group's only seat.
    pub(crate) sole_seat_term: Option<u64>,
    /// A restarted bootstrap's draw for its `Rejoin` messages (0: none sent yet).
    pub(crate) rejoin_nonce: u64,
    /// A restarted bootstrap with nothing on a disk whose operator says its ring still
    /// runs ([`crate::NodeConfig::ring_runs`]): it founds the ring again only for
    /// members that showed it held the group's only seat.
    pub(crate) ring_runs: bool,
    /// A member: the `Rejoin` it last obeyed, so a late duplicate does not make it leave
    /// the ring it has joined again.
    pub(crate) rejoined_for: u64,
}

impl Comeback {
    /// Whether a leader that founded the ring again still withholds leases at `now`.
    pub(crate) fn holds(&self, now: Time) -> bool {
        !self.awaiting.is_empty() || now < self.release_at
    }

    /// Whether enough of the members this bootstrap knew have shown they restarted for
    /// it to found the ring again: a majority of them. Fewer may mean it is cut off from
    /// a ring that still runs, which it must join rather than split from.
    pub(crate) fn may_refound(&self) -> bool {
        if (self.ring_runs && self.rejoin_nonce == 0) || self.partial {
            return false;
        }
        self.members.is_empty() || self.restarted.len() * 2 > self.members.len()
    }

    /// A restarted bootstrap: member `from` asked to join, with the ring its record
    /// names. A newer record than the one it holds replaces it (departed members drop
    /// out, members that joined since come in).
    pub(crate) fn asked_to_join(&mut self, me: Id, from: Id, record: Option<&RingRecord>) {
        let seen = record.map_or(0, |r| r.epoch);
        self.newest_epoch = self.newest_epoch.max(seen);
        if let Some(r) = record.filter(|r| self.partial || r.epoch > self.members_epoch) {
            self.members = r.members.iter().copied().chain([from]).collect();
            self.members.remove(&me);
            self.members_epoch = r.epoch;
            self.partial = false;
            let members = &self.members;
            self.restarted.retain(|id| members.contains(id));
        }
        if self.members.contains(&from) {
            self.restarted.insert(from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> Id {
        Id::of_addr(&format!("10.0.0.{i}:5000"))
    }

    /// A bootstrap whose record named only neighbours 1 and 2.
    fn partial() -> Comeback {
        Comeback {
            members: [id(1), id(2)].into(),
            members_epoch: 9,
            partial: true,
            ..Comeback::default()
        }
    }

    #[test]
    fn a_bootstrap_that_knew_only_its_neighbours_waits_for_a_seats_record() {
        let mut cb = partial();
        cb.asked_to_join(id(0), id(1), None);
        cb.asked_to_join(id(0), id(2), None);
        assert!(
            !cb.may_refound(),
            "every neighbour asked, but the ring is unknown"
        );
        // A seat's record, older than the bootstrap's own partial one, still names the
        // whole ring: it replaces the neighbours.
        let record = RingRecord {
            epoch: 4,
            members: vec![id(0), id(1), id(2), id(4), id(5)],
        };
        cb.asked_to_join(id(0), id(3), Some(&record));
        let expected: BTreeSet<Id> = [1, 2, 3, 4, 5].map(id).into();
        assert_eq!(cb.members, expected);
        assert_eq!(cb.restarted, [id(1), id(2), id(3)].into());
        assert!(cb.may_refound(), "3 of 5 asked");
    }

    #[test]
    fn the_newest_record_wins_and_drops_members_that_left() {
        let mut cb = partial();
        let old = RingRecord {
            epoch: 4,
            members: vec![id(1), id(2), id(5)],
        };
        cb.asked_to_join(id(0), id(3), Some(&old));
        cb.asked_to_join(id(0), id(5), None);
        assert!(cb.restarted.contains(&id(5)));
        // Member 5 departed at epoch 6: a newer record leaves it out.
        let newer = RingRecord {
            epoch: 6,
            members: vec![id(1), id(2)],
        };
        cb.asked_to_join(id(0), id(1), Some(&newer));
        assert_eq!(cb.members, [1, 2].map(id).into());
        assert_eq!(cb.restarted, [id(1)].into());
        // An older record changes nothing.
        cb.asked_to_join(id(0), id(2), Some(&old));
        assert_eq!(cb.members, [1, 2].map(id).into());
    }
}
