//! When a run's events happened, seconds since the load began, and what they make of a
//! moment of the load: its phase, how many nodes served, what happened in a window.

use super::settings::Fault;

/// Times of the run's events, seconds since the load began.
#[derive(Clone, Debug, Default)]
pub(super) struct Timeline {
    /// What was done to the victims: `kill_s` is when it began (the kill, the SIGSTOP,
    /// the partition), `restart_s` when it was undone (the restart, the SIGCONT, the heal).
    pub(super) fault: Fault,
    pub(super) kill_s: f64,
    /// When the overlay no longer held the killed nodes (if before the restart).
    pub(super) removed_s: Option<f64>,
    pub(super) restart_s: f64,
    /// When each restarted node was back in the ring (after a pause or a partition: when
    /// the whole ring was back, every node a member).
    pub(super) rejoined_s: Vec<f64>,
    /// The bootstrap scenario after the rejoin (`None` for the successors).
    pub(super) failover: Option<Failover>,
    /// When the load ended (its duration, or later if the failover needed it).
    pub(super) load_end_s: f64,
    /// When, after the load, every node of the final ring was a member.
    pub(super) ring_complete_s: f64,
}

/// The bootstrap scenario after the bootstrap's rejoin: it is killed for good, a new node
/// joins through a member, another member departs. Nodes are indices into the run's
/// addresses.
#[derive(Clone, Debug, Default)]
pub(super) struct Failover {
    /// The second `kill -9` of the bootstrap.
    pub(super) kill_s: f64,
    /// When the members' overlay no longer held it (if seen by the end of the depart).
    pub(super) removed_s: Option<f64>,
    /// The member the new node joins through.
    pub(super) entry: usize,
    /// The new node.
    pub(super) newcomer: usize,
    /// When it was started.
    pub(super) join_started_s: f64,
    /// When it had joined.
    pub(super) joined_s: f64,
    /// The member that departs.
    pub(super) departer: usize,
    /// When `dht depart` was sent.
    pub(super) depart_started_s: f64,
    /// When it answered that the member had departed.
    pub(super) departed_s: f64,
}

impl Timeline {
    /// When the last restarted node was back in the ring.
    pub(super) fn all_rejoined_s(&self) -> f64 {
        self.rejoined_s
            .iter()
            .copied()
            .fold(self.restart_s, f64::max)
    }

    /// Nodes running and in the ring, as far as the clients know, at `t`, in a ring of
    /// `nodes` of which `victims` are killed.
    pub(super) fn nodes_up(&self, t: f64, nodes: usize, victims: usize) -> usize {
        match &self.failover {
            // The bootstrap is down; the new node counts once it has joined, the departing
            // member no longer from the moment it is asked to depart.
            Some(f) if t >= f.kill_s => (nodes - 1 + usize::from(t >= f.joined_s))
                .saturating_sub(usize::from(t >= f.depart_started_s)),
            // The clients go on sending to both sides of a partition.
            _ if self.fault == Fault::Partition => nodes,
            _ => nodes - self.down_at(t, victims),
        }
    }

    /// The faults of the run, in order, and when they came (seconds since the load
    /// began): the kill and the restart of `killed`, then, after a failover, its kill for
    /// good (the new node's join starts right after it) and the depart of a member.
    pub(super) fn faults(&self, killed: &str) -> Vec<(String, f64)> {
        let (fault, undone) = match self.fault {
            Fault::Kill => ("kill -9", "restart"),
            Fault::Pause => ("SIGSTOP", "SIGCONT"),
            Fault::Partition => ("partition", "heal"),
        };
        let mut faults = vec![
            (format!("{fault} of {killed}"), self.kill_s),
            (format!("{undone} of {killed}"), self.restart_s),
        ];
        if let Some(f) = &self.failover {
            faults.push((
                format!("kill -9 of {killed} for good, a new node joins through a member"),
                f.kill_s,
            ));
            faults.push(("`dht depart` of a member".into(), f.depart_started_s));
        }
        faults
    }

    /// Killed nodes not yet back in the ring at `t`.
    fn down_at(&self, t: f64, victims: usize) -> usize {
        if t < self.kill_s {
            0
        } else if t < self.restart_s {
            victims
        } else {
            self.rejoined_s.iter().filter(|&&r| r > t).count()
        }
    }

    /// The phase at `t`: `healthy`, `crashed`, `repaired`, `restarting`, `recovered`, then
    /// in the bootstrap scenario `crashed again`, `repaired again`, `joined`, `departed`.
    pub(super) fn phase(&self, t: f64) -> &'static str {
        if let Some(f) = self.failover.as_ref().filter(|f| t >= f.kill_s) {
            return f.phase(t);
        }
        let (down, back) = match self.fault {
            Fault::Kill => ("crashed", "restarting"),
            Fault::Pause => ("paused", "resumed"),
            Fault::Partition => ("partitioned", "healed"),
        };
        if t < self.kill_s {
            "healthy"
        } else if t < self.restart_s {
            match self.removed_s {
                Some(r) if t >= r => "repaired",
                _ => down,
            }
        } else if t < self.all_rejoined_s() {
            back
        } else {
            "recovered"
        }
    }

    /// What happened in `[from, to)`: kill, removal, restart, rejoins, then the failover's
    /// events. `victims` are the killed nodes' addresses, `addrs` every node's.
    pub(super) fn events_within(
        &self,
        from: f64,
        to: f64,
        victims: &[String],
        addrs: &[String],
    ) -> String {
        let within = |t: f64| t >= from && t < to;
        let mut events = Vec::new();
        let (fault, undone, back) = match self.fault {
            Fault::Kill => ("kill -9", "restarted", "rejoined"),
            Fault::Pause => ("SIGSTOP", "SIGCONT", "ring whole again"),
            Fault::Partition => ("partition off", "healed", "ring whole again"),
        };
        if within(self.kill_s) {
            events.push(format!(
                "{fault} {} at {:.2} s",
                victims.join(" "),
                self.kill_s
            ));
        }
        if let Some(r) = self.removed_s.filter(|r| within(*r)) {
            events.push(format!("removed from the ring by {r:.2} s"));
        }
        if within(self.restart_s) {
            events.push(format!("{undone} at {:.2} s", self.restart_s));
        }
        for r in self.rejoined_s.iter().filter(|r| within(**r)) {
            events.push(format!("{back} at {r:.2} s"));
        }
        if let Some(f) = &self.failover {
            events.extend(f.events_within(within, victims, addrs));
        }
        events.join("; ")
    }
}

impl Failover {
    fn phase(&self, t: f64) -> &'static str {
        if t >= self.departed_s {
            "departed"
        } else if t >= self.joined_s {
            "joined"
        } else if self.removed_s.is_some_and(|r| t >= r) {
            "repaired again"
        } else {
            "crashed again"
        }
    }

    fn events_within(
        &self,
        within: impl Fn(f64) -> bool,
        victims: &[String],
        addrs: &[String],
    ) -> Vec<String> {
        let mut events = Vec::new();
        if within(self.kill_s) {
            events.push(format!(
                "kill -9 {} for good at {:.2} s",
                victims.join(" "),
                self.kill_s
            ));
        }
        if let Some(r) = self.removed_s.filter(|r| within(*r)) {
            events.push(format!("removed from the ring again by {r:.2} s"));
        }
        if within(self.joined_s) {
            events.push(format!(
                "{} joined through {} at {:.2} s (started at {:.2} s)",
                addrs[self.newcomer], addrs[self.entry], self.joined_s, self.join_started_s
            ));
        }
        if within(self.departed_s) {
            events.push(format!(
                "{} departed at {:.2} s (dht depart sent at {:.2} s)",
                addrs[self.departer], self.departed_s, self.depart_started_s
            ));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn successors() -> Timeline {
        Timeline {
            fault: Fault::Kill,
            kill_s: 1.0,
            removed_s: Some(2.0),
            restart_s: 3.0,
            rejoined_s: vec![3.2, 3.5],
            failover: None,
            load_end_s: 5.0,
            ring_complete_s: 5.5,
        }
    }

    #[test]
    fn the_timeline_names_each_stretch() {
        let tl = successors();
        let phases: Vec<_> = [0.5, 1.5, 2.5, 3.3, 4.0]
            .iter()
            .map(|&t| (tl.phase(t), tl.nodes_up(t, 5, 2)))
            .collect();
        assert_eq!(
            phases,
            [
                ("healthy", 5),
                ("crashed", 3),
                ("repaired", 3),
                ("restarting", 4),
                ("recovered", 5)
            ]
        );
        assert_eq!(
            tl.events_within(3.0, 4.0, &["n".into()], &[]),
            "restarted at 3.00 s; rejoined at 3.20 s; rejoined at 3.50 s"
        );
    }

    #[test]
    fn the_failover_follows_the_rejoin() {
        let tl = Timeline {
            rejoined_s: vec![3.2],
            failover: Some(Failover {
                kill_s: 4.0,
                removed_s: Some(4.5),
                entry: 1,
                newcomer: 3,
                join_started_s: 4.01,
                joined_s: 5.0,
                departer: 2,
                depart_started_s: 5.1,
                departed_s: 5.4,
            }),
            load_end_s: 7.0,
            ..successors()
        };
        let phases: Vec<_> = [3.5, 4.2, 4.7, 5.05, 5.2, 6.0]
            .iter()
            .map(|&t| (tl.phase(t), tl.nodes_up(t, 3, 1)))
            .collect();
        assert_eq!(
            phases,
            [
                ("recovered", 3),
                ("crashed again", 2),
                ("repaired again", 2),
                ("joined", 3),
                ("joined", 2),
                ("departed", 2)
            ]
        );
        let addrs: Vec<String> = ["b", "m1", "m2", "new"].map(String::from).into();
        assert_eq!(
            tl.events_within(5.0, 6.0, &["b".into()], &addrs),
            "new joined through m1 at 5.00 s (started at 4.01 s); \
             m2 departed at 5.40 s (dht depart sent at 5.10 s)"
        );
    }
}
