//! The network model: per-message latency, drops, duplicates and partitions.
//!
//! Reordering is not a separate knob: two messages on the same link draw independent
//! latencies, so a later one can arrive first whenever the distribution is not constant.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::units::{parse_duration_ns, Dur, ParseError};

/// A distribution of one-way message latency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Always the same: `const:1ms`.
    Const {
        /// The latency.
        ns: u64,
    },
    /// Uniform between two bounds: `uniform:0.5ms..2ms`.
    Uniform {
        /// Smallest latency.
        lo_ns: u64,
        /// Largest latency.
        hi_ns: u64,
    },
    /// Exponential with the given mean: `exp:1ms`.
    Exp {
        /// Mean latency.
        mean_ns: u64,
    },
    /// Log-normal with a median and a shape (the heavier the tail, the larger `sigma`):
    /// `lognormal:1ms,0.5`.
    LogNormal {
        /// Median latency.
        median_ns: u64,
        /// Standard deviation of the latency's logarithm.
        sigma: f64,
    },
}

/// Largest latency a single draw may return (1 hour), so a heavy tail cannot overflow
/// virtual time.
const LATENCY_NS_MAX: f64 = 3.6e12;

impl Latency {
    /// One latency draw.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> u64 {
        let ns = match *self {
            Latency::Const { ns } => return ns,
            Latency::Uniform { lo_ns, hi_ns } => return rng.gen_range(lo_ns..=hi_ns),
            Latency::Exp { mean_ns } => {
                let u: f64 = rng.gen();
                -(1.0 - u).ln() * mean_ns as f64
            }
            Latency::LogNormal { median_ns, sigma } => {
                median_ns as f64 * (sigma * standard_normal(rng)).exp()
            }
        };
        ns.clamp(0.0, LATENCY_NS_MAX).round() as u64
    }

    /// Mean of the distribution in ns (for reports).
    pub fn mean_ns(&self) -> f64 {
        match *self {
            Latency::Const { ns } => ns as f64,
            Latency::Uniform { lo_ns, hi_ns } => (lo_ns as f64 + hi_ns as f64) / 2.0,
            Latency::Exp { mean_ns } => mean_ns as f64,
            Latency::LogNormal { median_ns, sigma } => {
                median_ns as f64 * (sigma * sigma / 2.0).exp()
            }
        }
    }
}

/// A standard normal draw (Box–Muller), from two uniform draws.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // in (0, 1]
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Exp { mean_ns: 1_000_000 }
    }
}

impl FromStr for Latency {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "use const:1ms, uniform:0.5ms..2ms, exp:1ms or lognormal:1ms,0.5";
        let (kind, arg) = text
            .split_once(':')
            .ok_or_else(|| ParseError(format!("latency '{text}': {usage}")))?;
        let latency = match kind.trim() {
            "const" | "constant" => Latency::Const {
                ns: parse_duration_ns(arg)?,
            },
            "uniform" => {
                let (lo, hi) = arg
                    .split_once("..")
                    .ok_or_else(|| ParseError(format!("latency '{text}': uniform needs LO..HI")))?;
                let (lo_ns, hi_ns) = (parse_duration_ns(lo)?, parse_duration_ns(hi)?);
                if lo_ns > hi_ns {
                    return Err(ParseError(format!("latency '{text}': LO is above HI")));
                }
                Latency::Uniform { lo_ns, hi_ns }
            }
            "exp" | "exponential" => Latency::Exp {
                mean_ns: parse_duration_ns(arg)?,
            },
            "lognormal" | "log-normal" => {
                let (median, sigma) = arg.split_once(',').ok_or_else(|| {
                    ParseError(format!("latency '{text}': lognormal needs MEDIAN,SIGMA"))
                })?;
                let sigma: f64 = sigma.trim().parse().map_err(|_| {
                    ParseError(format!("latency '{text}': sigma '{sigma}' is not a number"))
                })?;
                if !(0.0..=10.0).contains(&sigma) {
                    return Err(ParseError(format!(
                        "latency '{text}': sigma must be between 0 and 10"
                    )));
                }
                Latency::LogNormal {
                    median_ns: parse_duration_ns(median)?,
                    sigma,
                }
            }
            other => {
                return Err(ParseError(format!(
                    "latency kind '{other}' unknown: {usage}"
                )))
            }
        };
        Ok(latency)
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Latency::Const { ns } => write!(f, "const:{}", Dur(ns)),
            Latency::Uniform { lo_ns, hi_ns } => {
                write!(f, "uniform:{}..{}", Dur(lo_ns), Dur(hi_ns))
            }
            Latency::Exp { mean_ns } => write!(f, "exp:{}", Dur(mean_ns)),
            Latency::LogNormal { median_ns, sigma } => {
                write!(f, "lognormal:{},{sigma}", Dur(median_ns))
            }
        }
    }
}

/// What a partition does to the messages it cuts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PartitionMode {
    /// Messages across the cut are lost (as with UDP, or a connection reset that nobody
    /// retries).
    #[default]
    Drop,
    /// Messages across the cut are held and delivered after the partition heals (as a
    /// TCP connection retransmits once the link is back).
    Hold,
}

impl FromStr for PartitionMode {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "drop" => Ok(PartitionMode::Drop),
            "hold" => Ok(PartitionMode::Hold),
            other => Err(ParseError(format!(
                "partition mode '{other}' unknown: use drop or hold"
            ))),
        }
    }
}

impl fmt::Display for PartitionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PartitionMode::Drop => "drop",
            PartitionMode::Hold => "hold",
        })
    }
}

/// Most partitions in force at once: each takes one bit of a node's mask.
pub const PARTITIONS_MAX: usize = 64;

/// Which messages across a partition are lost: both ways, or one way only (a broken
/// link that still carries the other direction, as a firewall rule that blocks one
/// side's connections, or a NIC whose transmit path failed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Cut {
    /// Nothing crosses.
    #[default]
    Both,
    /// What the cut-off nodes send to the others is lost; they still hear the others.
    Out,
    /// What the others send to the cut-off nodes is lost; the others still hear them.
    In,
}

impl Cut {
    /// The name a fault spec gives it: `partition`, `partition-out`, `partition-in`.
    pub fn fault_name(self) -> &'static str {
        match self {
            Cut::Both => "partition",
            Cut::Out => "partition-out",
            Cut::In => "partition-in",
        }
    }
}

/// The partitions in force: each is a set of nodes cut off from all others (in one
/// direction or both, see [`Cut`]).
#[derive(Clone, Debug, Default)]
pub struct Partitions {
    /// Per node, the bits of the active partitions it is inside.
    masks: Vec<u64>,
    /// Bits in use.
    active: u64,
    /// Bits of the active partitions that lose only what their nodes send, and only
    /// what their nodes are sent.
    outgoing: u64,
    incoming: u64,
    /// Per bit: when that partition heals, and its nodes.
    slots: Vec<(u64, Vec<u32>)>,
}

impl Partitions {
    /// No partitions.
    pub fn new() -> Partitions {
        Partitions {
            masks: Vec::new(),
            active: 0,
            outgoing: 0,
            incoming: 0,
            slots: vec![(0, Vec::new()); PARTITIONS_MAX],
        }
    }

    /// Whether any partition is in force.
    pub fn any(&self) -> bool {
        self.active != 0
    }

    /// Cut `nodes` off from the rest until `until_ns`, in the directions `cut` names.
    /// Returns the partition's bit, or `None` if [`PARTITIONS_MAX`] are already in force.
    pub fn start(&mut self, nodes: &[u32], until_ns: u64, cut: Cut) -> Option<u8> {
        let bit = (!self.active).trailing_zeros();
        if bit as usize >= PARTITIONS_MAX {
            return None;
        }
        self.active |= 1 << bit;
        match cut {
            Cut::Both => {}
            Cut::Out => self.outgoing |= 1 << bit,
            Cut::In => self.incoming |= 1 << bit,
        }
        for &n in nodes {
            let n = n as usize;
            if self.masks.len() <= n {
                self.masks.resize(n + 1, 0);
            }
            self.masks[n] |= 1 << bit;
        }
        self.slots[bit as usize] = (until_ns, nodes.to_vec());
        Some(bit as u8)
    }

    /// Heal the partition with bit `bit`.
    pub fn heal(&mut self, bit: u8) {
        let (_, nodes) = std::mem::take(&mut self.slots[bit as usize]);
        for n in nodes {
            if let Some(m) = self.masks.get_mut(n as usize) {
                *m &= !(1u64 << bit);
            }
        }
        self.active &= !(1u64 << bit);
        self.outgoing &= !(1u64 << bit);
        self.incoming &= !(1u64 << bit);
    }

    /// If a partition loses what `a` sends to `b`, the time the last such partition
    /// heals.
    pub fn separated_until(&self, a: u32, b: u32) -> Option<u64> {
        if self.active == 0 {
            return None;
        }
        let mask = |n: u32| self.masks.get(n as usize).copied().unwrap_or(0);
        let (from, to) = (mask(a), mask(b));
        // A one-way partition cuts only the messages leaving (or entering) its side.
        let one_way = (self.outgoing & !from) | (self.incoming & !to);
        let cut = (from ^ to) & self.active & !one_way;
        if cut == 0 {
            return None;
        }
        (0..PARTITIONS_MAX)
            .filter(|bit| cut & (1 << bit) != 0)
            .map(|bit| self.slots[bit].0)
            .max()
    }
}

/// What the network decided for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Lost.
    Dropped,
    /// Delivered after the given delay; `duplicate` carries a second copy's delay.
    Deliver {
        /// Delay of the copy.
        delay_ns: u64,
        /// Delay of a duplicate, if the message was duplicated.
        duplicate_ns: Option<u64>,
    },
}

/// Network settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetConfig {
    /// One-way latency.
    pub latency: Latency,
    /// Probability a message is lost.
    pub drop_probability: f64,
    /// Probability a message is delivered twice.
    pub dup_probability: f64,
    /// What partitions do to messages.
    pub partition_mode: PartitionMode,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: Latency::default(),
            drop_probability: 0.0,
            dup_probability: 0.0,
            partition_mode: PartitionMode::Drop,
        }
    }
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages nodes sent to other nodes.
    pub sent: u64,
    /// Messages handed to their receiver (duplicates included).
    pub delivered: u64,
    /// Messages lost to the drop probability.
    pub dropped: u64,
    /// Extra copies created.
    pub duplicated: u64,
    /// Messages lost to a partition (drop mode).
    pub partitioned: u64,
    /// Messages held back by a partition (hold mode).
    pub held: u64,
    /// Messages that reached a crashed node and vanished.
    pub vanished: u64,
    /// Messages to an address no simulated node has.
    pub unroutable: u64,
    /// Entries carried by delivered hand-over snapshots (keys moved when the ring changed).
    pub snapshot_entries: u64,
}

/// The network: settings, partitions and the random stream behind every draw.
#[derive(Debug)]
pub struct Network {
    config: NetConfig,
    /// Drops, duplicates and partitions apply only while this is set (the client phase).
    faulty: bool,
    rng: ChaCha8Rng,
    /// Partitions in force.
    pub partitions: Partitions,
    /// Counters.
    pub stats: NetStats,
}

impl Network {
    /// A network drawing from `rng`; faults start disabled.
    pub fn new(config: NetConfig, rng: ChaCha8Rng) -> Network {
        Network {
            config,
            faulty: false,
            rng,
            partitions: Partitions::new(),
            stats: NetStats::default(),
        }
    }

    /// Turn drops and duplicates on or off.
    pub fn set_faulty(&mut self, faulty: bool) {
        self.faulty = faulty;
    }

    /// Settings.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// One latency draw.
    pub fn latency(&mut self) -> u64 {
        self.config.latency.sample(&mut self.rng)
    }

    /// Decide what happens to a message from `from` to `to` sent at `now_ns`.
    pub fn transmit(&mut self, now_ns: u64, from: u32, to: u32) -> Fate {
        self.stats.sent += 1;
        if self.faulty {
            let p = self.config.drop_probability;
            if p > 0.0 && self.rng.gen::<f64>() < p {
                self.stats.dropped += 1;
                return Fate::Dropped;
            }
        }
        let mut held_ns = 0;
        if let Some(until) = self.partitions.separated_until(from, to) {
            match self.config.partition_mode {
                PartitionMode::Drop => {
                    self.stats.partitioned += 1;
                    return Fate::Dropped;
                }
                PartitionMode::Hold => {
                    self.stats.held += 1;
                    held_ns = until.saturating_sub(now_ns);
                }
            }
        }
        let delay_ns = held_ns + self.latency();
        let mut duplicate_ns = None;
        let q = self.config.dup_probability;
        if self.faulty && q > 0.0 && self.rng.gen::<f64>() < q {
            self.stats.duplicated += 1;
            duplicate_ns = Some(held_ns + self.latency());
        }
        Fate::Deliver {
            delay_ns,
            duplicate_ns,
        }
    }

    /// At delivery time: whether a partition now cuts `from` off from `to`. In drop mode
    /// the message is lost (`None` returned, counted); in hold mode it is re-sent after
    /// the heal (`Some(delay)`). `Ok` means deliver now.
    pub fn on_arrival(&mut self, now_ns: u64, from: u32, to: u32) -> Result<(), Option<u64>> {
        let Some(until) = self.partitions.separated_until(from, to) else {
            return Ok(());
        };
        match self.config.partition_mode {
            PartitionMode::Drop => {
                self.stats.partitioned += 1;
                Err(None)
            }
            PartitionMode::Hold => {
                self.stats.held += 1;
                Err(Some(until.saturating_sub(now_ns) + self.latency()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn latency_specs_parse_and_print_back() {
        for spec in [
            "const:1ms",
            "uniform:500us..2ms",
            "exp:1ms",
            "lognormal:1ms,0.5",
        ] {
            let l: Latency = spec.parse().unwrap();
            assert_eq!(l.to_string(), spec);
        }
        assert_eq!(
            "exp:0.5ms".parse::<Latency>().unwrap(),
            Latency::Exp { mean_ns: 500_000 }
        );
        for bad in [
            "",
            "exp",
            "gamma:1ms",
            "uniform:2ms..1ms",
            "lognormal:1ms",
            "lognormal:1ms,x",
        ] {
            assert!(bad.parse::<Latency>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sample_means_are_close() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for spec in ["uniform:0ms..2ms", "exp:1ms", "lognormal:1ms,0.5"] {
            let l: Latency = spec.parse().unwrap();
            let n = 20_000;
            let mean = (0..n).map(|_| l.sample(&mut rng) as f64).sum::<f64>() / n as f64;
            let want = l.mean_ns();
            assert!(
                (mean - want).abs() / want < 0.05,
                "{spec}: {mean} vs {want}"
            );
        }
    }

    #[test]
    fn partitions_cut_across_only() {
        let mut p = Partitions::new();
        let bit = p.start(&[1, 2], 100, Cut::Both).unwrap();
        assert_eq!(p.separated_until(1, 2), None);
        assert_eq!(p.separated_until(1, 3), Some(100));
        assert_eq!(p.separated_until(4, 3), None);
        p.heal(bit);
        assert_eq!(p.separated_until(1, 3), None);
        assert!(!p.any());
    }

    #[test]
    fn one_way_partitions_cut_one_direction() {
        let mut p = Partitions::new();
        let out = p.start(&[1], 100, Cut::Out).unwrap();
        assert_eq!(p.separated_until(1, 3), Some(100));
        assert_eq!(p.separated_until(3, 1), None);
        let inward = p.start(&[2], 200, Cut::In).unwrap();
        assert_eq!(p.separated_until(3, 2), Some(200));
        assert_eq!(p.separated_until(2, 3), None);
        // 1 cannot send, 2 cannot receive: 1 -> 2 is cut by both, 2 -> 1 by neither.
        assert_eq!(p.separated_until(1, 2), Some(200));
        assert_eq!(p.separated_until(2, 1), None);
        p.heal(out);
        assert_eq!(p.separated_until(1, 3), None);
        assert_eq!(p.separated_until(1, 2), Some(200));
        p.heal(inward);
        assert_eq!(p.separated_until(1, 2), None);
        // A bit freed by a one-way partition cuts both ways when reused.
        p.start(&[1], 300, Cut::Both).unwrap();
        assert_eq!(p.separated_until(3, 1), Some(300));
        assert_eq!(p.separated_until(1, 3), Some(300));
    }
}
