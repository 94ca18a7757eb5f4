//! What the coordinator group agrees on: the ring's membership and settings, the last
//! decided change, the leaders' terms, and the group's own seats. Every seat folds the
//! same decided log into the same directory, so any of them can take over.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::id::Id;
use crate::message::NodeRef;
use crate::ring::Ring;

use super::plan::{apply, Change};

/// Seats of a group on a ring of at least five members. Five seats survive two of
/// them down at once, the most the declared fault model takes down (k − 1 with k = 3).
pub const SEATS_MAX: usize = 5;

/// One seat of the coordinator group: a member incarnation. Its consensus identity
/// (omnipaxos' pid) is its position in the configuration's seats, from 1: omnipaxos
/// sizes its tables by the largest pid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    /// The member.
    pub node: NodeRef,
    /// Its incarnation: a restarted member (a new incarnation) does not keep the seat.
    pub incarnation: u64,
}

/// The seats of a stop sign, as its metadata: for each, the address (length-prefixed)
/// and the incarnation. A stop sign for a single seat names two pids, as omnipaxos
/// needs two in a configuration; the metadata tells the seats.
pub(crate) fn encode_seats(seats: &[Seat]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for seat in seats {
        let addr = seat.node.addr.as_bytes();
        bytes.extend_from_slice(&(addr.len() as u32).to_le_bytes());
        bytes.extend_from_slice(addr);
        bytes.extend_from_slice(&seat.incarnation.to_le_bytes());
    }
    bytes
}

/// Read [`encode_seats`]' output; `None` if it is not that.
pub(crate) fn decode_seats(mut bytes: &[u8]) -> Option<Vec<Seat>> {
    let mut seats = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let addr = std::str::from_utf8(bytes.get(4..4 + len)?).ok()?;
        let rest = bytes.get(4 + len..)?;
        let incarnation = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        seats.push(Seat {
            node: NodeRef::new(addr),
            incarnation,
        });
        bytes = rest.get(8..)?;
        if seats.len() > SEATS_MAX {
            return None;
        }
    }
    Some(seats)
}

/// A decided membership change: enough to recompute its plan on any seat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// The change's epoch (its views carry it).
    pub epoch: u64,
    /// What changed.
    pub change: Change,
    /// Members taken out without their help.
    pub removed: Vec<NodeRef>,
    /// A joiner's incarnation.
    pub incarnation: Option<u64>,
}

/// An entry of the group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The seat `pid` leads from now on: a new term begins.
    Term {
        /// The new leader.
        pid: u64,
    },
    /// A membership change is in force.
    Change(ChangeRecord),
}

impl omnipaxos::storage::Entry for Decision {
    type Snapshot = omnipaxos::storage::NoSnapshot;
}

/// The state every seat derives from the decided log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    /// The members.
    pub ring: Ring,
    /// Each member's incarnation (a join request with another one is a restart).
    pub incarnations: BTreeMap<Id, u64>,
    /// The cluster settings.
    pub settings: ClusterConfig,
    /// Identifies this ring (drawn when it was founded).
    pub ring_id: u64,
    /// Leaders so far: each term's epochs lie above every earlier term's.
    pub term: u64,
    /// Epoch of the last decided change.
    pub epoch: u64,
    /// The last decided change, which a new leader finishes committing.
    pub last_change: Option<ChangeRecord>,
    /// The group's seats.
    pub seats: Vec<Seat>,
    /// The group configuration (omnipaxos' configuration id), grows with every change
    /// of seats.
    pub config_id: u32,
    /// Epochs of the latest decided changes, oldest first (at most
    /// [`RECENT_EPOCHS_MAX`]), kept in the directory so that a seat that joins the group
    /// later has them too: a member still preparing one of them missed its commit, and is
    /// sent it rather than told to abort (see `Leader::on_heartbeat`). Absent in
    /// directories written before it existed.
    #[serde(default)]
    pub recent: Vec<u64>,
}

/// Decided epochs a directory keeps (`Directory::recent`): more changes than a partition
/// of a few failure timeouts sees.
pub const RECENT_EPOCHS_MAX: usize = 256;

impl Directory {
    /// The directory of a new ring whose only member, and only seat, is `me`.
    pub(crate) fn founded(
        me: &NodeRef,
        incarnation: u64,
        settings: ClusterConfig,
        ring_id: u64,
    ) -> Directory {
        let mut ring = Ring::new();
        ring.insert(me.clone());
        Directory {
            ring,
            incarnations: [(me.id, incarnation)].into_iter().collect(),
            settings,
            ring_id,
            term: 1,
            epoch: 0,
            last_change: None,
            seats: vec![Seat {
                node: me.clone(),
                incarnation,
            }],
            config_id: 1,
            recent: Vec::new(),
        }
    }

    /// The seats' nodes.
    pub(crate) fn seat_nodes(&self) -> Vec<NodeRef> {
        self.seats.iter().map(|s| s.node.clone()).collect()
    }

    /// Fold a decided entry in.
    pub(crate) fn apply(&mut self, decision: &Decision) {
        match decision {
            Decision::Term { .. } => self.term += 1,
            Decision::Change(record) => {
                apply(&mut self.ring, &record.change, &record.removed);
                for gone in &record.removed {
                    self.incarnations.remove(&gone.id);
                }
                match &record.change {
                    Change::Join(n) => {
                        let incarnation = record.incarnation.unwrap_or(0);
                        self.incarnations.insert(n.id, incarnation);
                    }
                    Change::Depart(n) | Change::Remove(n) => {
                        self.incarnations.remove(&n.id);
                    }
                }
                self.epoch = self.epoch.max(record.epoch);
                self.last_change = Some(record.clone());
                self.recent.push(record.epoch);
                if self.recent.len() > RECENT_EPOCHS_MAX {
                    self.recent.remove(0);
                }
            }
        }
    }

    /// The consensus identity of the seat of `node` in `incarnation`, if it holds one.
    pub(crate) fn pid(&self, node: &NodeRef, incarnation: u64) -> Option<u64> {
        let i = self
            .seats
            .iter()
            .position(|s| s.node.id == node.id && s.incarnation == incarnation)?;
        Some(i as u64 + 1)
    }

    /// The seat with consensus identity `pid`.
    pub(crate) fn seat(&self, pid: u64) -> Option<&Seat> {
        let i = usize::try_from(pid).ok()?.checked_sub(1)?;
        self.seats.get(i)
    }

    /// Whether `seat`'s holder is a member in the same incarnation.
    fn holds(&self, seat: &Seat) -> bool {
        self.ring.contains(seat.node.id)
            && self.incarnations.get(&seat.node.id) == Some(&seat.incarnation)
    }

    /// The seats the group should have now: one on a ring of one or two members (a
    /// group of two would stop at the first failure), three on three or four, five from
    /// five. Seats still held by the same incarnation stay; free ones go to the members
    /// that follow the first remaining seat on the ring.
    ///
    /// With virtual nodes the group counts processes, not members, and seats go to
    /// members of distinct processes: a process that stops takes one seat with it.
    pub(crate) fn desired_seats(&self) -> Vec<Seat> {
        let n = self.ring.len();
        let size = match self.ring.processes() {
            0 => 0,
            1 | 2 => 1,
            3 | 4 => 3,
            _ => SEATS_MAX,
        };
        let mut seats: Vec<Seat> = Vec::new();
        for seat in self.seats.iter().filter(|s| self.holds(s)) {
            // Seats travel as addresses: the ring knows their processes.
            let node = self.ring.canonical(&seat.node);
            if seats.len() < size && !seats.iter().any(|s| s.node.same_process(&node)) {
                seats.push(Seat {
                    node,
                    ..seat.clone()
                });
            }
        }
        let start = seats
            .first()
            .map(|s| s.node.id)
            .or_else(|| self.ring.iter().next().map(|m| m.id));
        if let Some(start) = start {
            for member in self.ring.successors(start, n) {
                if seats.len() >= size {
                    break;
                }
                if seats.iter().all(|s| !s.node.same_process(&member)) {
                    if let Some(incarnation) = self.incarnations.get(&member.id) {
                        let incarnation = *incarnation;
                        seats.push(Seat {
                            node: member,
                            incarnation,
                        });
                    }
                }
            }
            if seats.is_empty() {
                if let Some(first) = self.ring.iter().next() {
                    if let Some(incarnation) = self.incarnations.get(&first.id) {
                        seats.push(Seat {
                            node: first.clone(),
                            incarnation: *incarnation,
                        });
                    }
                }
            }
        }
        seats
    }

    /// Whether the group runs alone (one seat, no consensus).
    pub(crate) fn is_solo(&self) -> bool {
        self.seats.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: usize) -> NodeRef {
        NodeRef::new(&format!("10.0.0.{i}:5000"))
    }

    fn joined(dir: &mut Directory, i: usize) {
        let epoch = dir.epoch + 1;
        dir.apply(&Decision::Change(ChangeRecord {
            epoch,
            change: Change::Join(node(i)),
            removed: Vec::new(),
            incarnation: Some(i as u64),
        }));
    }

    #[test]
    fn seats_grow_with_the_ring_and_keep_their_holders() {
        let mut dir = Directory::founded(&node(0), 0, ClusterConfig::default(), 7);
        assert_eq!(dir.desired_seats().len(), 1);
        joined(&mut dir, 1);
        assert_eq!(dir.desired_seats().len(), 1, "two members: one seat");
        joined(&mut dir, 2);
        dir.seats = dir.desired_seats();
        assert_eq!(dir.seats.len(), 3);
        assert!(
            dir.seats.iter().any(|s| s.node == node(0)),
            "the founder keeps its seat"
        );
        for i in 3..8 {
            joined(&mut dir, i);
        }
        let five = dir.desired_seats();
        assert_eq!(five.len(), SEATS_MAX);
        for s in &dir.seats {
            assert!(five.contains(s), "{s:?} kept");
        }
        // A seat holder that restarted (new incarnation) loses its seat: its old
        // incarnation is not kept.
        let gone = dir.seats[1].clone();
        dir.seats = five;
        dir.incarnations.insert(gone.node.id, 999);
        assert!(!dir.desired_seats().contains(&gone));
    }

    #[test]
    fn seats_round_trip_through_stop_sign_metadata() {
        let seats: Vec<Seat> = (0..5)
            .map(|i| Seat {
                node: node(i),
                incarnation: i as u64 * 7,
            })
            .collect();
        assert_eq!(decode_seats(&encode_seats(&seats)), Some(seats));
        assert_eq!(decode_seats(&[1, 2, 3]), None);
        assert_eq!(decode_seats(&[]), Some(Vec::new()));
    }

    #[test]
    fn directories_round_trip_through_json() {
        let mut dir = Directory::founded(&node(0), 3, ClusterConfig::default(), 7);
        joined(&mut dir, 1);
        let json = serde_json::to_string(&dir).unwrap();
        assert_eq!(serde_json::from_str::<Directory>(&json).unwrap(), dir);
    }
}
