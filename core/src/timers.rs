//! The node's one timer table. Sub-machines arm and disarm named timers; the driver asks
//! [`crate::Node::poll_timeout`] when the next one is due and calls
//! [`crate::Node::handle_timeout`] then (quinn-proto's shape).

use crate::Time;

/// The timers a node uses. Each is armed at most once at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The earliest deadline of an outstanding client request.
    Requests,
    /// Tombstone garbage collection (armed while tombstones exist).
    Gc,
    /// Heartbeat to the coordinator and pings to successors and fingers.
    Heartbeat,
    /// The coordinator looks for members it has not heard from.
    FailureCheck,
    /// Deadline of the membership change in progress (coordinator).
    Membership,
    /// Anti-entropy round with this node's replicas.
    AntiEntropy,
    /// Resend replica writes (eventual consistency) and hand-over forwards not yet
    /// acknowledged.
    Replicate,
    /// Send the acknowledgements of replica writes gathered since the last time.
    ReplicateAcks,
    /// Drive the coordinator group's consensus (a seat).
    Group,
    /// A restarted bootstrap stops looking for its ring and founds a new one.
    Recover,
    /// CRAQ reads that waited for a clean notice long enough ask the tail.
    CraqWait,
    /// Send the hints a node holds again, when no heartbeat does (failure handling off).
    Hints,
}

impl Timer {
    /// Every timer, in the order ties are fired.
    pub const ALL: [Timer; 12] = [
        Timer::Requests,
        Timer::Gc,
        Timer::Heartbeat,
        Timer::FailureCheck,
        Timer::Membership,
        Timer::AntiEntropy,
        Timer::Replicate,
        Timer::ReplicateAcks,
        Timer::Group,
        Timer::Recover,
        Timer::CraqWait,
        Timer::Hints,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// When each timer fires, if armed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    at: [Option<Time>; Timer::ALL.len()],
}

impl Timers {
    /// Arm `timer` at `at`, replacing an earlier setting.
    pub(crate) fn set(&mut self, timer: Timer, at: Time) {
        self.at[timer.index()] = Some(at);
    }

    /// Disarm `timer`.
    pub(crate) fn cancel(&mut self, timer: Timer) {
        self.at[timer.index()] = None;
    }

    /// When `timer` fires, if armed.
    pub(crate) fn get(&self, timer: Timer) -> Option<Time> {
        self.at[timer.index()]
    }

    /// Whether `timer` is armed.
    pub(crate) fn is_armed(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Time> {
        self.at.iter().flatten().min().copied()
    }

    /// Disarm and return the earliest timer due at `now` (ties in [`Timer::ALL`] order).
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<Timer> {
        let (timer, _) = Timer::ALL
            .iter()
            .filter_map(|t| self.get(*t).map(|at| (*t, at)))
            .filter(|(_, at)| *at <= now)
            .min_by_key(|(t, at)| (*at, *t))?;
        self.cancel(timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_pop_in_time_then_table_order() {
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Gc, 30);
        t.set(Timer::Heartbeat, 10);
        t.set(Timer::Requests, 30);
        t.set(Timer::Heartbeat, 20);
        assert_eq!(t.next(), Some(20));
        assert_eq!(t.pop_due(19), None);
        assert_eq!(t.pop_due(100), Some(Timer::Heartbeat));
        assert_eq!(t.pop_due(100), Some(Timer::Requests));
        assert_eq!(t.pop_due(100), Some(Timer::Gc));
        assert_eq!(t.pop_due(100), None);
        t.set(Timer::Replicate, 5);
        t.cancel(Timer::Replicate);
        assert!(!t.is_armed(Timer::Replicate));
    }
}
