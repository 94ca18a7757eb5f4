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
    /// Other members it knew of when it last installed a view (the whole ring on the
    /// coordinator's leader; its neighbours elsewhere), by address.
    pub members: Vec<String>,
    /// The epoch of the view it last installed.
    pub epoch: u64,
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
    /// Other members it knew of, by id.
    pub(crate) members: BTreeSet<Id>,
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
        if self.ring_runs && self.rejoin_nonce == 0 {
            return false;
        }
        self.members.is_empty() || self.restarted.len() * 2 > self.members.len()
    }
}
