//! The run summary: `--json` prints it as one object, otherwise as a table.
//!
//! Every field is a function of the seed and the configuration except the wall-clock
//! ones, [`WALL_CLOCK_FIELDS`]; tests compare summaries with those removed.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Fields that depend on the machine, not on the seed.
pub const WALL_CLOCK_FIELDS: &[&str] = &["wall_seconds", "events_per_second"];

/// What a run did and what it found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Seed.
    pub seed: u64,
    /// Initial ring size.
    pub nodes: usize,
    /// Replication factor.
    pub k: usize,
    /// `chain`, `eventual` or `craq`.
    pub consistency: String,
    /// `finger` or `successor`.
    pub routing: String,
    /// Closed-loop clients.
    pub clients: usize,
    /// Workload name.
    pub workload: String,
    /// Latency distribution.
    pub latency: String,
    /// Drop probability (client phase).
    pub drop: f64,
    /// Duplication probability (client phase).
    pub dup: f64,
    /// `drop` or `hold`.
    pub partition_mode: String,
    /// Client/request timeout (ns).
    pub timeout_ns: u64,
    /// The fault schedule that ran (explicit and random), in time order.
    pub faults: Vec<String>,

    /// Events handled (deliveries, timers, client steps, faults; stale timers excluded).
    pub events: u64,
    /// Wall-clock time of the run (not deterministic).
    pub wall_seconds: f64,
    /// `events / wall_seconds` (not deterministic).
    pub events_per_second: f64,
    /// The run drained: nothing in flight and no client waiting.
    pub quiescent: bool,
    /// The run hit `events_max` before draining.
    pub truncated: bool,

    /// Operations that completed `ok`.
    pub ops_ok: u64,
    /// Operations that ended `info` (unknown outcome).
    pub ops_info: u64,
    /// Operations that ended `fail` (certainly not applied).
    pub ops_fail: u64,
    /// Operations never issued (the client's node was down or had left for good).
    pub ops_not_issued: u64,
    /// Counts per operation kind and outcome: `write.ok`, `read.info`, …
    pub ops_by_kind: BTreeMap<String, u64>,
    /// Virtual duration of the client phase, from its start to the last completion.
    pub virtual_seconds: f64,
    /// Virtual time spent building the initial ring.
    pub setup_virtual_seconds: f64,
    /// `ops_ok / virtual_seconds`.
    pub throughput_ops_per_virtual_second: f64,
    /// Median latency of `ok` operations (ns).
    pub latency_p50_ns: u64,
    /// 99th percentile latency of `ok` operations (ns).
    pub latency_p99_ns: u64,
    /// Mean latency of `ok` operations (ns).
    pub latency_mean_ns: f64,
    /// Largest latency of an `ok` operation (ns).
    pub latency_max_ns: u64,
    /// Mean lookup hops of `ok` operations.
    pub lookup_hops_mean: f64,
    /// 99th percentile of lookup hops.
    pub lookup_hops_p99: u64,

    /// Messages nodes sent to other nodes (setup and client phase).
    pub messages_sent: u64,
    /// Messages sent during the client phase.
    pub messages_sent_client_phase: u64,
    /// Messages handed to a running node (duplicates included).
    pub messages_delivered: u64,
    /// Messages lost to `--drop`.
    pub messages_dropped: u64,
    /// Extra copies made by `--dup`.
    pub messages_duplicated: u64,
    /// Messages lost to a partition (drop mode).
    pub messages_partitioned: u64,
    /// Messages held back by a partition (hold mode).
    pub messages_held: u64,
    /// Messages that reached a crashed node.
    pub messages_vanished: u64,
    /// Messages a node refused (stale epoch, not a member, …).
    pub messages_rejected: u64,
    /// Entries carried by delivered hand-over snapshots: keys moved when the ring changed
    /// (a node back from its disk is sent only the buckets it differs in).
    pub snapshot_entries: u64,

    /// Crashes applied.
    pub crashes: u64,
    /// Restarts applied.
    pub restarts: u64,
    /// Restarted nodes whose rejoin the bootstrap refused (it still lists them: the core
    /// has no failure detection yet).
    pub rejoins_refused: u64,
    /// Joins completed during the client phase.
    pub joins: u64,
    /// Departures completed.
    pub departs: u64,
    /// Partitions applied.
    pub partitions: u64,
    /// Process pauses applied.
    #[serde(default)]
    pub pauses: u64,
    /// Scheduled faults that did not apply (node already down, unknown node, …).
    pub faults_skipped: u64,
    /// Join or depart requests that ended in an error or a timeout.
    pub membership_failures: u64,
    /// Joins that failed while building the initial ring.
    pub setup_failures: u64,

    /// Ring size at the end, according to the bootstrap.
    pub ring_size: usize,
    /// Distinct keys held at the end.
    pub keys_stored: usize,
    /// Invariant breaches found at quiescence.
    pub invariant_violations: u64,
    /// Breaches per kind.
    pub violations_by_kind: BTreeMap<String, u64>,
    /// The first breaches, described.
    pub violations: Vec<String>,
    /// Finger entries that differ from the ring's (not a breach).
    pub stale_finger_entries: u64,
    /// Lines in the history.
    pub history_events: u64,
    /// Notable things that happened (first few), e.g. why a membership change failed.
    pub notes: Vec<String>,

    /// Linearizability verdict (`--check` only): `linearizable`, `violation`, `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linearizable: Option<String>,
    /// Keys found not linearizable (`--check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linearizability_violations: Option<u64>,
    /// Keys whose check ran out of budget (`--check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linearizability_unknown_keys: Option<u64>,
    /// Reads that returned a superseded value (`--check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_reads: Option<u64>,
    /// `stale_reads / reads` (`--check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_fraction: Option<f64>,
    /// Reads of a value no write could have produced (`--check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impossible_reads: Option<u64>,
    /// The first counterexample, explained (`--check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<String>,

    /// Final reads issued, one per key the workload wrote (`--final-reads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_reads: Option<u64>,
    /// Final reads that completed `ok` (`--final-reads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_reads_ok: Option<u64>,
    /// Final reads that ended `info` or `fail`, or were never issued (`--final-reads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_reads_unanswered: Option<u64>,
    /// Keys whose final read contradicts an acknowledged write or delete
    /// (`--final-reads`; see `ringkv_sim::final_reads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_acked_writes: Option<u64>,
    /// The first lost writes, described.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lost_writes: Vec<String>,
    /// Eventual consistency: keys whose acknowledged write was lost by design, and not
    /// counted in `lost_acked_writes`: every node that held it crashed, memory only (the
    /// primary acknowledges before every replica has it; see
    /// `ringkv_sim::final_reads::EventualLoss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_in_crashes: Option<u64>,
    /// Eventual consistency: keys whose acknowledged write was overtaken by a write on
    /// another primary less than the clock skew before it (last writer wins by
    /// hybrid-clock versions), not counted in `lost_acked_writes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_within_skew: Option<u64>,

    /// The command that replays this run.
    pub replay: String,
}

impl Summary {
    /// The summary as JSON without the wall-clock fields: equal for equal seeds and
    /// configurations.
    pub fn deterministic_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("a summary serializes");
        if let Some(map) = value.as_object_mut() {
            for field in WALL_CLOCK_FIELDS {
                map.remove(*field);
            }
        }
        value
    }

    /// Whether the run breached an invariant, (with `--check`) linearizability under
    /// chain replication or CRAQ, the models that promise it, or (with `--final-reads`) lost an
    /// acknowledged write.
    pub fn failed(&self) -> bool {
        let linearizable_model = self.consistency == "chain" || self.consistency == "craq";
        let lin_broken = linearizable_model && self.linearizable.as_deref() == Some("violation");
        self.invariant_violations > 0 || lin_broken || self.lost_acked_writes.unwrap_or(0) > 0
    }
}

/// The `p`-th percentile (0–100) of sorted `values`, nearest rank; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: f64) -> String {
    format!("{:.3} ms", ns / 1e6)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<30} {value}")
        };
        writeln!(
            f,
            "ringkv simulation: {} nodes, k={}, {} replication, {} routing, seed {}",
            self.nodes, self.k, self.consistency, self.routing, self.seed
        )?;
        row(
            f,
            "workload",
            format!("{} ({} clients)", self.workload, self.clients),
        )?;
        row(
            f,
            "network",
            format!(
                "latency {}, drop {}, dup {}, partitions {}",
                self.latency, self.drop, self.dup, self.partition_mode
            ),
        )?;
        row(
            f,
            "faults",
            if self.faults.is_empty() {
                "none".into()
            } else {
                self.faults.join(" ")
            },
        )?;
        writeln!(f, "engine")?;
        row(f, "events", self.events.to_string())?;
        row(f, "wall time", format!("{:.3} s", self.wall_seconds))?;
        row(
            f,
            "events per second",
            format!("{:.0}", self.events_per_second),
        )?;
        row(
            f,
            "quiescent / truncated",
            format!("{} / {}", self.quiescent, self.truncated),
        )?;
        writeln!(f, "operations (client phase)")?;
        row(
            f,
            "ok / info / fail / not issued",
            format!(
                "{} / {} / {} / {}",
                self.ops_ok, self.ops_info, self.ops_fail, self.ops_not_issued
            ),
        )?;
        row(
            f,
            "virtual time",
            format!(
                "{:.6} s (setup {:.6} s)",
                self.virtual_seconds, self.setup_virtual_seconds
            ),
        )?;
        row(
            f,
            "throughput",
            format!(
                "{:.1} ops per virtual second",
                self.throughput_ops_per_virtual_second
            ),
        )?;
        row(
            f,
            "latency p50 / p99 / max",
            format!(
                "{} / {} / {}",
                ms(self.latency_p50_ns as f64),
                ms(self.latency_p99_ns as f64),
                ms(self.latency_max_ns as f64)
            ),
        )?;
        row(
            f,
            "lookup hops mean / p99",
            format!("{:.2} / {}", self.lookup_hops_mean, self.lookup_hops_p99),
        )?;
        writeln!(f, "network")?;
        row(
            f,
            "sent / delivered",
            format!(
                "{} / {} ({} in client phase)",
                self.messages_sent, self.messages_delivered, self.messages_sent_client_phase
            ),
        )?;
        row(
            f,
            "dropped / dup / cut / held",
            format!(
                "{} / {} / {} / {}",
                self.messages_dropped,
                self.messages_duplicated,
                self.messages_partitioned,
                self.messages_held
            ),
        )?;
        row(
            f,
            "vanished / rejected",
            format!("{} / {}", self.messages_vanished, self.messages_rejected),
        )?;
        row(f, "snapshot entries", self.snapshot_entries.to_string())?;
        writeln!(f, "faults")?;
        row(
            f,
            "crash / restart / join / depart",
            format!(
                "{} / {} / {} / {}",
                self.crashes, self.restarts, self.joins, self.departs
            ),
        )?;
        row(
            f,
            "partitions / skipped",
            format!("{} / {}", self.partitions, self.faults_skipped),
        )?;
        if self.pauses > 0 {
            row(f, "pauses", self.pauses.to_string())?;
        }
        row(
            f,
            "rejoin refused / membership fail",
            format!("{} / {}", self.rejoins_refused, self.membership_failures),
        )?;
        writeln!(f, "at quiescence")?;
        row(
            f,
            "ring size / keys",
            format!("{} / {}", self.ring_size, self.keys_stored),
        )?;
        row(
            f,
            "stale finger entries",
            self.stale_finger_entries.to_string(),
        )?;
        row(
            f,
            "invariant violations",
            self.invariant_violations.to_string(),
        )?;
        for (kind, n) in &self.violations_by_kind {
            row(f, &format!("  {kind}"), n.to_string())?;
        }
        for v in &self.violations {
            writeln!(f, "    - {v}")?;
        }
        if let Some(verdict) = &self.linearizable {
            writeln!(f, "check")?;
            row(f, "linearizability", verdict.clone())?;
            row(
                f,
                "violating keys",
                self.linearizability_violations.unwrap_or(0).to_string(),
            )?;
            row(
                f,
                "stale reads",
                format!(
                    "{} ({:.2}%)",
                    self.stale_reads.unwrap_or(0),
                    self.stale_fraction.unwrap_or(0.0) * 100.0
                ),
            )?;
            if let Some(counterexample) = &self.counterexample {
                writeln!(f, "{counterexample}")?;
            }
        }
        if let Some(reads) = self.final_reads {
            writeln!(f, "final reads")?;
            row(
                f,
                "issued / ok / unanswered",
                format!(
                    "{reads} / {} / {}",
                    self.final_reads_ok.unwrap_or(0),
                    self.final_reads_unanswered.unwrap_or(0)
                ),
            )?;
            row(
                f,
                "lost acknowledged writes",
                self.lost_acked_writes
                    .map_or("unknown".into(), |n| n.to_string()),
            )?;
            for lost in &self.lost_writes {
                writeln!(f, "    - {lost}")?;
            }
            if let (Some(crash), Some(skew)) = (self.lost_in_crashes, self.lost_within_skew) {
                row(
                    f,
                    "lost by design (not counted)",
                    format!(
                        "{crash} with every copy on nodes that crashed, {skew} overtaken \
                         within the clock skew"
                    ),
                )?;
            }
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        write!(f, "replay: {}", self.replay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn deterministic_json_drops_wall_clock_fields() {
        let s = Summary {
            wall_seconds: 1.5,
            ..Summary::default()
        };
        let v = s.deterministic_json();
        for field in WALL_CLOCK_FIELDS {
            assert!(v.get(field).is_none());
        }
        assert!(v.get("events").is_some());
    }
}
