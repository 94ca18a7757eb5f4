//! Node faults and churn: crash, restart, join, depart, partition — from the command line
//! or drawn at random from the seed.
//!
//! Times count from the start of the client phase (after the initial ring is built).
//! Nodes are numbered as the simulator creates them: `0` is the bootstrap, `1..N` the
//! initial members, and nodes added by `join` faults get `N, N+1, …` in the order they
//! join.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::net::Cut;
use crate::units::{parse_duration_ns, Dur, ParseError};

/// What happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The node stops: no more events, messages to it vanish, its clients' operations in
    /// flight end `info`.
    Crash {
        /// The node.
        node: u32,
    },
    /// A crashed node comes back empty and asks to join again.
    Restart {
        /// The node.
        node: u32,
    },
    /// A new node joins through the bootstrap.
    Join,
    /// A member hands its data on and leaves.
    Depart {
        /// The node.
        node: u32,
    },
    /// `nodes` are cut off from every other node for `duration_ns`, then healed: both
    /// ways, or one way only (`cut`).
    Partition {
        /// The cut-off side.
        nodes: Vec<u32>,
        /// How long.
        duration_ns: u64,
        /// Which direction is lost.
        cut: Cut,
    },
    /// Every node stops at once (a power cut of the whole ring).
    CrashAll,
    /// Every stopped node comes back (with its disk, under `SimConfig::disks`).
    RestartAll,
    /// The node's process stops for `duration_ns` (`kill -STOP`, a long GC pause, a
    /// frozen VM), then goes on where it was: what arrived meanwhile is handled then,
    /// and its timers fire late. Its clock runs on meanwhile.
    Pause {
        /// The node.
        node: u32,
        /// How long.
        duration_ns: u64,
    },
}

/// A fault at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// When, in ns after the client phase starts.
    pub at_ns: u64,
    /// What.
    pub kind: FaultKind,
}

impl FromStr for Fault {
    type Err = ParseError;

    /// `crash:3@500ms`, `restart:3@1s`, `join@200ms`, `depart:4@1s`,
    /// `partition:1,2,5-7@1s..3s`, `partition-out:1@1s..3s` (what node 1 sends is lost),
    /// `partition-in:1@1s..3s` (what node 1 is sent is lost).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "use crash:N@T, restart:N@T, crash-all@T, restart-all@T, join@T, \
                     depart:N@T, pause:N@T1..T2, partition:N,M-P@T1..T2, \
                     partition-out:N,M-P@T1..T2 or partition-in:N,M-P@T1..T2";
        let (what, when) = text
            .split_once('@')
            .ok_or_else(|| ParseError(format!("fault '{text}': {usage}")))?;
        let (kind, arg) = match what.split_once(':') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (what.trim(), None),
        };
        let node = || -> Result<u32, ParseError> {
            let a =
                arg.ok_or_else(|| ParseError(format!("fault '{text}': {kind} needs a node")))?;
            a.parse()
                .map_err(|_| ParseError(format!("fault '{text}': '{a}' is not a node number")))
        };
        let cut = [Cut::Both, Cut::Out, Cut::In]
            .into_iter()
            .find(|c| c.fault_name() == kind);
        if cut.is_some() || kind == "pause" {
            let (from, to) = when
                .split_once("..")
                .ok_or_else(|| ParseError(format!("fault '{text}': {kind} needs FROM..TO")))?;
            let (at_ns, to_ns) = (parse_duration_ns(from)?, parse_duration_ns(to)?);
            if to_ns <= at_ns {
                return Err(ParseError(format!(
                    "fault '{text}': the {kind} must end after it starts"
                )));
            }
            if kind == "pause" {
                let kind = FaultKind::Pause {
                    node: node()?,
                    duration_ns: to_ns - at_ns,
                };
                return Ok(Fault { at_ns, kind });
            }
            let nodes = parse_node_list(arg.unwrap_or(""))
                .map_err(|e| ParseError(format!("fault '{text}': {e}")))?;
            let kind = FaultKind::Partition {
                nodes,
                duration_ns: to_ns - at_ns,
                cut: cut.unwrap_or_default(),
            };
            return Ok(Fault { at_ns, kind });
        }
        let kind = match kind {
            "crash" => FaultKind::Crash { node: node()? },
            "restart" => FaultKind::Restart { node: node()? },
            "depart" | "leave" => FaultKind::Depart { node: node()? },
            "join" => FaultKind::Join,
            "crash-all" => FaultKind::CrashAll,
            "restart-all" => FaultKind::RestartAll,
            other => return Err(ParseError(format!("fault kind '{other}' unknown: {usage}"))),
        };
        let at_ns = parse_duration_ns(when)?;
        Ok(Fault { at_ns, kind })
    }
}

fn parse_node_list(text: &str) -> Result<Vec<u32>, String> {
    let mut nodes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("'{s}' is not a node number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if b < a || b - a > 1_000_000 {
                    return Err(format!("bad node range '{part}'"));
                }
                nodes.extend(a..=b);
            }
            None => nodes.push(number(part)?),
        }
    }
    if nodes.is_empty() {
        return Err("a partition needs at least one node".into());
    }
    nodes.sort_unstable();
    nodes.dedup();
    Ok(nodes)
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = Dur(self.at_ns);
        match &self.kind {
            FaultKind::Crash { node } => write!(f, "crash:{node}@{at}"),
            FaultKind::Restart { node } => write!(f, "restart:{node}@{at}"),
            FaultKind::Join => write!(f, "join@{at}"),
            FaultKind::CrashAll => write!(f, "crash-all@{at}"),
            FaultKind::RestartAll => write!(f, "restart-all@{at}"),
            FaultKind::Depart { node } => write!(f, "depart:{node}@{at}"),
            FaultKind::Partition {
                nodes,
                duration_ns,
                cut,
            } => {
                let list: Vec<String> = nodes.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "{}:{}@{at}..{}",
                    cut.fault_name(),
                    list.join(","),
                    Dur(self.at_ns + duration_ns)
                )
            }
            FaultKind::Pause { node, duration_ns } => {
                write!(f, "pause:{node}@{at}..{}", Dur(self.at_ns + duration_ns))
            }
        }
    }
}

/// Rates of random faults, per virtual second, over `[0, horizon_ns)` of the client
/// phase. Any node may crash or depart, the bootstrap (node 0) included: the coordinator
/// group takes over from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomFaults {
    /// Crashes per second.
    pub crash_rate: f64,
    /// Delay from a crash to the node's restart; `None` = crashed nodes stay down.
    pub restart_after_ns: Option<u64>,
    /// New nodes joining per second.
    pub join_rate: f64,
    /// Graceful departures per second.
    pub depart_rate: f64,
    /// Partitions per second.
    pub partition_rate: f64,
    /// How long each partition lasts.
    pub partition_ns: u64,
    /// The share of partitions that cut one direction only (half of them what their
    /// nodes send, half what they are sent); the rest cut both.
    pub one_way_fraction: f64,
    /// Process pauses per second (any node, the bootstrap included).
    pub pause_rate: f64,
    /// How long each pause lasts.
    pub pause_ns: u64,
    /// Whole-ring power cuts per second: every node crashes at once and all restart
    /// `restart_after_ns` later (200 ms if crashed nodes stay down).
    pub power_cut_rate: f64,
    /// Faults are drawn over `[0, horizon_ns)`.
    pub horizon_ns: u64,
}

impl Default for RandomFaults {
    fn default() -> Self {
        RandomFaults {
            crash_rate: 1.0,
            restart_after_ns: Some(200_000_000),
            join_rate: 2.0,
            depart_rate: 2.0,
            partition_rate: 1.0,
            partition_ns: 100_000_000,
            one_way_fraction: 0.0,
            pause_rate: 0.0,
            pause_ns: 4_000_000_000,
            power_cut_rate: 0.0,
            horizon_ns: 1_000_000_000,
        }
    }
}

impl RandomFaults {
    /// Draw a schedule for a ring of `nodes` initial nodes, sorted by time.
    pub fn generate(&self, nodes: u32, rng: &mut ChaCha8Rng) -> Vec<Fault> {
        self.generate_capped(nodes, None, rng)
    }

    /// Like [`RandomFaults::generate`], but with at most `cap.max_down` nodes down at once
    /// (`None`: no cap). A node counts as down from its crash until `cap.repair_ns` after
    /// its restart (for ever with `restart_after_ns: None`): a restarted node comes back
    /// empty, and its data is not back on `k` replicas until the ring has removed its old
    /// incarnation and refilled it. A crash drawn while `max_down` nodes are down, or of
    /// a node that is already down, is not scheduled (nor its restart); the draws are the
    /// same as without the cap, so every other fault of the schedule is unchanged.
    ///
    /// With `max_down = k - 1` the schedule stays within the declared fault model
    /// (`docs/protocol.md`): fewer than k simultaneous crashes.
    pub fn generate_capped(
        &self,
        nodes: u32,
        cap: Option<DownCap>,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Fault> {
        let mut faults = Vec::new();
        // (node, crash, restart or never) of the crashes scheduled so far.
        let mut down: Vec<(u32, u64, Option<u64>)> = Vec::new();
        let others = nodes;
        let times = |rate: f64, rng: &mut ChaCha8Rng| -> Vec<u64> {
            let mut out = Vec::new();
            if rate <= 0.0 {
                return out;
            }
            let mut t = 0.0;
            loop {
                let u: f64 = rng.gen();
                t += -(1.0 - u).ln() / rate * 1e9;
                if t >= self.horizon_ns as f64 || out.len() >= RANDOM_FAULTS_MAX {
                    return out;
                }
                out.push(t as u64);
            }
        };
        if others > 0 {
            for at_ns in times(self.crash_rate, rng) {
                let node = rng.gen_range(0..others);
                if let Some(cap) = cap {
                    // Crash times increase and every node stays down equally long, so the
                    // most nodes down during this one's outage is the count at its start.
                    let is_down = |&&(_, from, until): &&(u32, u64, Option<u64>)| {
                        from <= at_ns && until.is_none_or(|u| at_ns < u)
                    };
                    let now_down: Vec<u32> = down.iter().filter(is_down).map(|d| d.0).collect();
                    if now_down.len() >= cap.max_down || now_down.contains(&node) {
                        continue;
                    }
                    let until = self
                        .restart_after_ns
                        .map(|d| at_ns.saturating_add(d).saturating_add(cap.repair_ns));
                    down.push((node, at_ns, until));
                }
                faults.push(Fault {
                    at_ns,
                    kind: FaultKind::Crash { node },
                });
                if let Some(delay) = self.restart_after_ns {
                    faults.push(Fault {
                        at_ns: at_ns + delay,
                        kind: FaultKind::Restart { node },
                    });
                }
            }
            for at_ns in times(self.depart_rate, rng) {
                let node = rng.gen_range(0..others);
                faults.push(Fault {
                    at_ns,
                    kind: FaultKind::Depart { node },
                });
            }
        }
        for at_ns in times(self.join_rate, rng) {
            faults.push(Fault {
                at_ns,
                kind: FaultKind::Join,
            });
        }
        if nodes > 1 {
            for at_ns in times(self.partition_rate, rng) {
                let size = rng.gen_range(1..=(nodes / 2).max(1));
                let mut side: Vec<u32> = (0..size).map(|_| rng.gen_range(0..nodes)).collect();
                side.sort_unstable();
                side.dedup();
                // Drawn only when asked for, so schedules without one-way partitions are
                // what they were before they existed.
                let cut = match self.one_way_fraction > 0.0 {
                    true if rng.gen::<f64>() < self.one_way_fraction => match rng.gen::<bool>() {
                        true => Cut::Out,
                        false => Cut::In,
                    },
                    _ => Cut::Both,
                };
                faults.push(Fault {
                    at_ns,
                    kind: FaultKind::Partition {
                        nodes: side,
                        duration_ns: self.partition_ns,
                        cut,
                    },
                });
            }
        }
        // Drawn last, so schedules without pauses are what they were before pauses existed.
        if nodes > 0 {
            for at_ns in times(self.pause_rate, rng) {
                let node = rng.gen_range(0..nodes);
                faults.push(Fault {
                    at_ns,
                    kind: FaultKind::Pause {
                        node,
                        duration_ns: self.pause_ns,
                    },
                });
            }
        }
        // Drawn after the pauses, for the same reason.
        for at_ns in times(self.power_cut_rate, rng) {
            let down_ns = self.restart_after_ns.unwrap_or(200_000_000);
            faults.push(Fault {
                at_ns,
                kind: FaultKind::CrashAll,
            });
            faults.push(Fault {
                at_ns: at_ns + down_ns,
                kind: FaultKind::RestartAll,
            });
        }
        // Stable: faults drawn at the same time keep their drawing order.
        faults.sort_by_key(|f| f.at_ns);
        faults
    }
}

/// A cap on simultaneous crashes in a random schedule
/// ([`RandomFaults::generate_capped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownCap {
    /// Most nodes down at once.
    pub max_down: usize,
    /// How long after its restart a node still counts as down.
    pub repair_ns: u64,
}

/// Most faults of one kind a random schedule draws.
pub const RANDOM_FAULTS_MAX: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn faults_parse_and_print_back() {
        for spec in [
            "crash:3@500ms",
            "restart:3@1s",
            "join@200ms",
            "depart:4@1s",
            "partition:1,2,5@1s..3s",
            "partition-out:0@1s..3s",
            "partition-in:2,4@1s..3s",
            "pause:2@1s..5s",
        ] {
            let f: Fault = spec.parse().unwrap();
            assert_eq!(f.to_string(), spec);
        }
        let f: Fault = "partition:1,5-7@0ms..10ms".parse().unwrap();
        assert_eq!(
            f.kind,
            FaultKind::Partition {
                nodes: vec![1, 5, 6, 7],
                duration_ns: 10_000_000,
                cut: Cut::Both,
            }
        );
        for bad in [
            "crash@1s",
            "crash:x@1s",
            "boom:1@1s",
            "crash:1",
            "partition:1@2s..1s",
            "partition:@1s..2s",
            "partition-sideways:1@1s..2s",
            "partition-out:1@2s",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
        // An unknown kind is named as such, whatever follows the @.
        let err = "partition-sideways:1@1s..2s".parse::<Fault>().unwrap_err();
        assert!(err.to_string().contains("unknown"), "{err}");
        assert!(err.to_string().contains("partition-sideways"), "{err}");
    }

    #[test]
    fn capped_schedules_keep_fewer_nodes_down_and_change_nothing_else() {
        let faults = RandomFaults {
            crash_rate: 20.0,
            horizon_ns: 2_000_000_000,
            ..RandomFaults::default()
        };
        let draw = |cap| faults.generate_capped(10, cap, &mut ChaCha8Rng::seed_from_u64(5));
        let free = draw(None);
        assert_eq!(free, faults.generate(10, &mut ChaCha8Rng::seed_from_u64(5)));
        let cap = DownCap {
            max_down: 2,
            repair_ns: 300_000_000,
        };
        let capped = draw(Some(cap));
        assert!(capped.len() < free.len());
        let others = |v: &[Fault]| -> Vec<Fault> {
            v.iter()
                .filter(|f| !matches!(f.kind, FaultKind::Crash { .. } | FaultKind::Restart { .. }))
                .cloned()
                .collect()
        };
        assert_eq!(others(&capped), others(&free));
        // At every crash, fewer than max_down nodes are within their down window.
        let window = 200_000_000 + cap.repair_ns;
        let crashes: Vec<(u32, u64)> = capped
            .iter()
            .filter_map(|f| match f.kind {
                FaultKind::Crash { node } => Some((node, f.at_ns)),
                _ => None,
            })
            .collect();
        assert!(crashes.len() >= 2);
        for &(node, at) in &crashes {
            let down: Vec<u32> = crashes
                .iter()
                .filter(|&&(_, t)| t <= at && at < t + window)
                .map(|c| c.0)
                .collect();
            assert!(down.len() <= cap.max_down, "{capped:?}");
            assert_eq!(down.iter().filter(|&&n| n == node).count(), 1);
        }
        let none = draw(Some(DownCap { max_down: 0, ..cap }));
        assert!(none
            .iter()
            .all(|f| !matches!(f.kind, FaultKind::Crash { .. } | FaultKind::Restart { .. })));
    }

    #[test]
    fn one_way_partitions_are_drawn_only_when_asked_for() {
        let base = RandomFaults {
            partition_rate: 20.0,
            ..RandomFaults::default()
        };
        let cuts = |faults: &RandomFaults| -> Vec<Cut> {
            faults
                .generate(10, &mut ChaCha8Rng::seed_from_u64(9))
                .into_iter()
                .filter_map(|f| match f.kind {
                    FaultKind::Partition { cut, .. } => Some(cut),
                    _ => None,
                })
                .collect()
        };
        let both = cuts(&base);
        assert!(both.len() > 5);
        assert!(both.iter().all(|c| *c == Cut::Both));
        let half = cuts(&RandomFaults {
            one_way_fraction: 0.5,
            ..base
        });
        for cut in [Cut::Both, Cut::Out, Cut::In] {
            assert!(half.contains(&cut), "{cut:?} in {half:?}");
        }
        let all = cuts(&RandomFaults {
            one_way_fraction: 1.0,
            ..base
        });
        assert!(all.iter().all(|c| *c != Cut::Both));
    }

    #[test]
    fn random_schedules_reach_the_bootstrap_and_are_sorted() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let faults = RandomFaults {
            horizon_ns: 10_000_000_000,
            ..RandomFaults::default()
        }
        .generate(10, &mut rng);
        assert!(faults.len() > 20);
        assert!(faults.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
        let mut bootstrap_hit = false;
        for f in &faults {
            match f.kind {
                FaultKind::Crash { node } | FaultKind::Depart { node } => {
                    assert!((0..10).contains(&node));
                    bootstrap_hit |= node == 0;
                }
                _ => {}
            }
        }
        assert!(
            bootstrap_hit,
            "node 0 is crashed or departed like any other"
        );
    }
}
