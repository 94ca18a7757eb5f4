//! The load-balance figures of the Chord paper, to compare the measurement against.
//!
//! I. Stoica, R. Morris, D. Karger, M. F. Kaashoek, H. Balakrishnan, "Chord: A Scalable
//! Peer-to-peer Lookup Service for Internet Applications", SIGCOMM 2001, §6.2 "Load
//! Balance". Only the values its text states are here; the other points of Figures 8 and
//! 9 are drawn in the paper but not given as numbers. Figure 8 is 10^4 nodes and
//! 5 × 10^5 keys, one position per node (20 repetitions); Figure 9 is 10^4 nodes and
//! **10^6** keys, with r = 1, 2, 5, 10, 20 virtual nodes per real node.

/// Which statistic of keys per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// The most loaded node.
    Max,
    /// 99th percentile.
    P99,
    /// 1st percentile.
    P1,
}

impl Stat {
    /// Its name in tables and messages: `max`, `p99`, `p1`.
    pub fn name(self) -> &'static str {
        match self {
            Stat::Max => "max",
            Stat::P99 => "p99",
            Stat::P1 => "p1",
        }
    }
}

/// One value the paper states, as a multiple of the mean keys per node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperValue {
    /// Where it is stated.
    pub figure: &'static str,
    /// Real nodes.
    pub nodes: usize,
    /// Keys stored.
    pub keys: usize,
    /// Virtual nodes per real node.
    pub vnodes: u32,
    /// The statistic.
    pub stat: Stat,
    /// Its value ÷ the mean.
    pub over_mean: f64,
}

const fn value(
    figure: &'static str,
    keys: usize,
    vnodes: u32,
    stat: Stat,
    over_mean: f64,
) -> PaperValue {
    PaperValue {
        figure,
        nodes: 10_000,
        keys,
        vnodes,
        stat,
        over_mean,
    }
}

/// Every value the paper's §6.2 text states.
pub const PAPER: [PaperValue; 6] = [
    // "The maximum number of [keys] stored by any node in this case is 457, or 9.1× the
    // mean value. For comparison, the 99th percentile is 4.6× the mean value."
    value("Fig. 8", 500_000, 1, Stat::Max, 9.1),
    value("Fig. 8", 500_000, 1, Stat::P99, 4.6),
    // "the 99th percentile decreases from 4.8× to 1.6× the mean value, while the 1st
    // percentile increases from 0 to 0.5× the mean value" (r from 1 to 20).
    value("Fig. 9", 1_000_000, 1, Stat::P99, 4.8),
    value("Fig. 9", 1_000_000, 20, Stat::P99, 1.6),
    value("Fig. 9", 1_000_000, 1, Stat::P1, 0.0),
    value("Fig. 9", 1_000_000, 20, Stat::P1, 0.5),
];

/// The paper's value of `stat` for this configuration, if it states one.
pub fn paper_value(
    nodes: usize,
    keys: usize,
    vnodes: u32,
    stat: Stat,
) -> Option<&'static PaperValue> {
    PAPER
        .iter()
        .find(|p| p.nodes == nodes && p.keys == keys && p.vnodes == vnodes && p.stat == stat)
}
