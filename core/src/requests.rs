//! Client requests waiting at this node for their answer, and their deadlines: the one
//! place a request times out.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::ReqId;
use crate::message::Routed;
use crate::Time;

/// Outstanding client requests by id, and by deadline.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    pending: BTreeMap<ReqId, Time>,
    deadlines: BTreeSet<(Time, ReqId)>,
    /// Reads and writes this node routed, and when it last sent each: re-driven on the
    /// current view when their answer is slow to come (the route or chain may have run
    /// through a member that failed and was removed since).
    routed: BTreeMap<ReqId, (Routed, Time)>,
}

impl Requests {
    /// Number of requests waiting.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Request `id` waits for an answer until `deadline`.
    pub(crate) fn wait_for(&mut self, id: ReqId, deadline: Time) {
        if let Some(old) = self.pending.insert(id, deadline) {
            self.deadlines.remove(&(old, id));
        }
        self.deadlines.insert((deadline, id));
    }

    /// Request `id`, a read or write sent out as `routed` at `now`, waits for an answer
    /// until `deadline`.
    pub(crate) fn wait_for_routed(
        &mut self,
        id: ReqId,
        deadline: Time,
        routed: &Routed,
        now: Time,
    ) {
        self.wait_for(id, deadline);
        self.routed.insert(id, (routed.clone(), now));
    }

    /// The routed requests last sent `after` or longer before `now`, marked as sent now.
    pub(crate) fn due_again(&mut self, now: Time, after: Time) -> Vec<Routed> {
        let mut again = Vec::new();
        for (routed, sent) in self.routed.values_mut() {
            if now.saturating_sub(*sent) >= after {
                *sent = now;
                again.push(routed.clone());
            }
        }
        again
    }

    /// Whether request `id` was waiting (it no longer is).
    pub(crate) fn finish(&mut self, id: ReqId) -> bool {
        self.routed.remove(&id);
        match self.pending.remove(&id) {
            Some(deadline) => {
                self.deadlines.remove(&(deadline, id));
                true
            }
            None => false,
        }
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.deadlines.first().map(|&(t, _)| t)
    }

    /// Remove and return the requests whose deadline is `now` or earlier.
    pub(crate) fn expire(&mut self, now: Time) -> Vec<ReqId> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.remove(&(deadline, id));
            self.pending.remove(&id);
            self.routed.remove(&id);
            expired.push(id);
        }
        expired
    }

    /// Whether the two indexes agree (checked after every input in debug builds).
    pub(crate) fn is_consistent(&self) -> bool {
        self.pending.len() == self.deadlines.len()
            && self.routed.keys().all(|id| self.pending.contains_key(id))
    }
}
