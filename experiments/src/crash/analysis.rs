//! What a run's history says: throughput and latency per second, when the ring first
//! served again after the kill, the acknowledged writes the final reads contradict, and
//! the linearizability verdict.

use std::time::Instant;

use ringkv_sim::check::{
    check_linearizability, CheckOptions, History, LinReport, OpKind, OpStatus, Operation,
};
use ringkv_sim::final_reads::{final_reads_by_key, KeyFinalReads};
use serde::Serialize;

use super::{Run, WINDOW};
use crate::analysis::percentile;

/// A row of `crash_real.csv` (or `crash_bootstrap.csv`): one window of the load, by
/// completion time.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Window start, seconds since the load began.
    pub t_from_s: f64,
    /// Window end.
    pub t_to_s: f64,
    /// At the window's middle: `healthy`, `crashed` (the victims killed), `repaired`
    /// (killed nodes removed from the ring), `restarting` (restarted, not all rejoined)
    /// or `recovered`; with the bootstrap as victim, then `crashed again` (killed for
    /// good), `repaired again` (removed), `joined` (the new node is in, a member departs)
    /// and `departed`. With a pause, `paused` and `resumed` (SIGCONT sent, the ring not
    /// yet whole) in place of `crashed` and `restarting`; with a partition, `partitioned`
    /// and `healed`.
    pub phase: String,
    /// Nodes running and in the ring (as far as the clients know) at the window's middle;
    /// with a partition, every node (the clients send to both sides).
    pub nodes_up: usize,
    /// Operations that completed `ok` in the window.
    pub ops_ok: u64,
    /// Of them, inserts.
    pub writes_ok: u64,
    /// Of them, queries.
    pub reads_ok: u64,
    /// Operations that completed `info` (unknown outcome) in the window.
    pub ops_info: u64,
    /// Operations that completed `fail` in the window.
    pub ops_fail: u64,
    /// `ops_ok` per second.
    pub throughput_ok_per_s: f64,
    /// Median latency of the window's `ok` operations, ms (empty without any).
    pub latency_p50_ms: Option<f64>,
    /// Largest latency of the window's `ok` operations, ms (empty without any).
    pub latency_max_ms: Option<f64>,
    /// What happened in the window (kill, removal from the ring, restart, rejoin, join,
    /// depart).
    pub events: String,
}

/// The rows of the CSV: the load in windows of one second, by completion time
/// (the clients' last requests, answered after the load's end, are in the totals only).
pub(super) fn windows(run: &Run) -> Vec<Row> {
    let tl = &run.tl;
    let w = WINDOW.as_secs_f64();
    let victims = run.victim_addrs();
    let count = (tl.load_end_s / w).ceil().max(1.0) as usize;
    (0..count)
        .map(|i| {
            let (from, to) = (i as f64 * w, ((i + 1) as f64 * w).min(tl.load_end_s));
            let mid = (from + to) / 2.0;
            let mut row = window(run.load(), from, to);
            row.phase = tl.phase(mid).into();
            row.nodes_up = tl.nodes_up(mid, run.settings.nodes, victims.len());
            row.events = tl.events_within(from, to, &victims, &run.addrs);
            row
        })
        .collect()
}

/// The counts and latencies of the operations of `ops` that completed in `[from, to)`.
fn window(ops: &[Operation], from: f64, to: f64) -> Row {
    let mut row = Row {
        t_from_s: from,
        t_to_s: to,
        phase: String::new(),
        nodes_up: 0,
        ops_ok: 0,
        writes_ok: 0,
        reads_ok: 0,
        ops_info: 0,
        ops_fail: 0,
        throughput_ok_per_s: 0.0,
        latency_p50_ms: None,
        latency_max_ms: None,
        events: String::new(),
    };
    let mut latencies = Vec::new();
    for o in ops {
        let Some(c) = o.complete else { continue };
        let t = c.time as f64 / 1e9;
        if t < from || t >= to {
            continue;
        }
        match o.status {
            OpStatus::Ok => {
                row.ops_ok += 1;
                if o.f == OpKind::Write {
                    row.writes_ok += 1;
                } else {
                    row.reads_ok += 1;
                }
                latencies.push(c.time - o.invoke.time);
            }
            OpStatus::Fail => row.ops_fail += 1,
            OpStatus::Info | OpStatus::Pending => row.ops_info += 1,
        }
    }
    latencies.sort_unstable();
    row.throughput_ok_per_s = row.ops_ok as f64 / (to - from);
    if let Some(max) = latencies.last() {
        row.latency_p50_ms = Some(percentile(&latencies, 50.0) as f64 / 1e6);
        row.latency_max_ms = Some(*max as f64 / 1e6);
    }
    row
}

/// The keys the final reads cover: every key the load tried to write.
pub(super) fn written_keys(history: &History) -> Vec<String> {
    history
        .ops_by_key()
        .into_iter()
        .filter(|(_, ids)| ids.iter().any(|&i| history.ops[i].f == OpKind::Write))
        .map(|(key, _)| key.to_string())
        .collect()
}

/// The linearizability verdict on `history` and how long the check took, seconds.
pub(super) fn check(history: &History) -> (LinReport, f64) {
    let started = Instant::now();
    let lin = check_linearizability(history, &CheckOptions::default());
    (lin, started.elapsed().as_secs_f64())
}

impl Run {
    /// The killed nodes' addresses.
    pub(super) fn victim_addrs(&self) -> Vec<String> {
        self.victims
            .iter()
            .map(|&i| self.addrs[i].clone())
            .collect()
    }

    /// The load's operations (the final reads follow them in the history).
    pub(super) fn load(&self) -> &[Operation] {
        &self.history.ops[..self.load_ops]
    }

    /// The load's operations that ended with one of `statuses`.
    pub(super) fn count(&self, statuses: &[OpStatus]) -> usize {
        self.load()
            .iter()
            .filter(|o| statuses.contains(&o.status))
            .count()
    }

    /// When the first operation invoked after the kill completed `ok`.
    pub(super) fn serving_again_s(&self) -> Option<f64> {
        let kill_ns = (self.tl.kill_s * 1e9) as u64;
        self.load()
            .iter()
            .filter(|o| o.status == OpStatus::Ok && o.invoke.time > kill_ns)
            .filter_map(|o| o.complete.map(|c| c.time as f64 / 1e9))
            .reduce(f64::min)
    }

    /// The final reads of the keys read back, judged by the simulator's lost-write
    /// check (`ringkv_sim::final_reads`), in key order.
    pub(super) fn final_reads(&self) -> Vec<KeyFinalReads<'_>> {
        let mut keys = final_reads_by_key(&self.history, self.load_events);
        keys.retain(|k| self.read_back.iter().any(|r| r == k.key));
        keys
    }

    /// The keys whose final reads contradict an acknowledged insert.
    pub(super) fn lost(&self) -> Vec<KeyFinalReads<'_>> {
        let mut keys = self.final_reads();
        keys.retain(KeyFinalReads::lost);
        keys
    }
}

#[cfg(test)]
mod tests {
    use ringkv_sim::check::{EventType, HistoryEvent};

    use super::*;

    fn ev(p: u64, kind: EventType, f: OpKind, v: Option<&str>, t: u64) -> HistoryEvent {
        HistoryEvent::new(p, kind, f, "k", v, t)
    }

    /// The load's events, then a final read returning `value` (`None`: not found).
    fn lost_after_reading(value: Option<&str>) -> bool {
        use EventType::*;
        use OpKind::*;
        let mut events = vec![
            ev(0, Invoke, Write, Some("a"), 1),
            ev(0, Ok, Write, Some("a"), 2),
            ev(1, Invoke, Write, Some("b"), 3),
            ev(2, Invoke, Write, Some("c"), 4),
            ev(1, Info, Write, None, 5),
            ev(2, Ok, Write, Some("c"), 6),
            ev(3, Invoke, Write, Some("d"), 7),
            ev(3, Fail, Write, None, 8),
        ];
        let load_events = events.len();
        events.push(ev(9, Invoke, Read, None, 10));
        events.push(ev(9, Ok, Read, value, 11));
        let history = History::from_events(events).unwrap();
        assert_eq!(written_keys(&history), ["k"]);
        let keys = final_reads_by_key(&history, load_events);
        assert_eq!((keys.len(), keys[0].acked), (1, 2));
        keys[0].lost()
    }

    #[test]
    fn the_last_acknowledged_write_or_a_later_one_must_be_read() {
        // `c` is acknowledged last; `b` (unknown outcome) may have taken effect after it.
        assert!(!lost_after_reading(Some("c")));
        assert!(!lost_after_reading(Some("b")));
        // `a` was overwritten by `c`, `d` failed, and the key cannot be absent.
        assert!(lost_after_reading(Some("a")));
        assert!(lost_after_reading(Some("d")));
        assert!(lost_after_reading(None));
    }
}
