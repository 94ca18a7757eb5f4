//! Counters and latency histograms of one node, rendered in the Prometheus text format.
//!
//! Everything is a fixed array of atomics: recording a request costs a few relaxed
//! increments and never takes a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Client operations counted by `ringkv_requests_total`, in label order.
pub const OPS: [&str; 7] = [
    "insert",
    "query",
    "delete",
    "query_all",
    "overlay",
    "join",
    "depart",
];

/// HTTP statuses tracked one by one; anything else is counted as `other`.
const STATUSES: [u16; 10] = [200, 400, 404, 405, 409, 413, 415, 422, 503, 504];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const BUCKET_SLOTS: usize = BUCKETS_US.len() + 1;

/// Data-directory counters (durable nodes).
#[derive(Debug, Default)]
pub struct StorageCounters {
    /// Transactions committed (one per batch: everything persisted while the previous
    /// transaction was being written).
    pub commits: AtomicU64,
    /// Persist outputs (a turn's store changes and identity) those transactions carried;
    /// persists / commits is the mean group-commit size.
    pub persists: AtomicU64,
    /// Transactions that failed (disk full, IO error).
    pub failures: AtomicU64,
    /// Sends held back because what they depended on could not be persisted.
    pub sends_held_back: AtomicU64,
}

/// Peer-transport counters, one field per event.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Envelopes the node handed to the transport.
    pub messages_sent: AtomicU64,
    /// Envelopes that reached this node's actor from peers.
    pub messages_received: AtomicU64,
    /// Envelopes dropped because a destination queue was full.
    pub messages_dropped_queue_full: AtomicU64,
    /// Envelopes dropped because no connection could be opened or their write failed.
    pub messages_dropped_send_error: AtomicU64,
    /// Envelopes that arrived but were dropped because the node's queue stayed full.
    pub messages_dropped_receive: AtomicU64,
    /// Received envelopes (JSON endpoint) or frames (peer connections) that did not parse,
    /// and JSON posts without the cluster secret.
    pub messages_malformed: AtomicU64,
    /// Received envelopes the core refused (wrong epoch, not a member, ...).
    pub messages_rejected: AtomicU64,
    /// Frames (batches of envelopes) sent to peers.
    pub batches_sent: AtomicU64,
    /// Writes on peer connections; each carries one or more frames.
    pub writes: AtomicU64,
    /// Peer connections this node opened.
    pub connections_opened: AtomicU64,
    /// Peer connections this node accepted.
    pub connections_accepted: AtomicU64,
    /// Peer connections refused at setup for a missing or wrong cluster secret.
    pub connections_refused: AtomicU64,
    /// Received frames that did not decode; each closed its connection.
    pub frames_malformed: AtomicU64,
    /// Envelopes to a peer the test-only partition filter blocks, dropped before sending.
    pub messages_dropped_partition_send: AtomicU64,
    /// Envelopes from a peer the test-only partition filter blocks, dropped on arrival.
    pub messages_dropped_partition_receive: AtomicU64,
    /// Envelopes waiting in the peer queues now (a gauge).
    pub queued: AtomicU64,
    /// (sent, received) envelopes by message kind, in the order kinds were first seen;
    /// updated once per batch.
    kinds: Mutex<Vec<(&'static str, (u64, u64))>>,
}

impl PeerCounters {
    /// Count a batch of envelopes of the given kinds as sent (or received).
    pub fn count_kinds(&self, kinds: impl Iterator<Item = &'static str>, sent: bool) {
        // A batch holds a few kinds at most: tallied in a small array (no allocation per
        // batch), then added under the lock once. Every kind is a literal of
        // `Message::kind`, so comparing addresses first spares comparing the strings.
        const LOCAL_KINDS: usize = 8;
        let mut local: [(&'static str, u64); LOCAL_KINDS] = [("", 0); LOCAL_KINDS];
        let mut used = 0;
        let mut overflow: Vec<&'static str> = Vec::new();
        for kind in kinds {
            match local[..used].iter_mut().find(|(k, _)| same_kind(k, kind)) {
                Some(slot) => slot.1 += 1,
                None if used < LOCAL_KINDS => {
                    local[used] = (kind, 1);
                    used += 1;
                }
                None => overflow.push(kind),
            }
        }
        let mut all = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let tallied = local[..used].iter().copied();
        for (kind, n) in tallied.chain(overflow.into_iter().map(|k| (k, 1))) {
            let at = match all.iter().position(|(k, _)| same_kind(k, kind)) {
                Some(at) => at,
                None => {
                    all.push((kind, (0, 0)));
                    all.len() - 1
                }
            };
            let slot = &mut all[at].1;
            if sent {
                slot.0 += n;
            } else {
                slot.1 += n;
            }
        }
    }

    /// (sent, received) envelopes of `kind` so far.
    pub fn kind_counts(&self, kind: &str) -> (u64, u64) {
        let all = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, counts)| *counts)
            .unwrap_or_default()
    }
}

/// Whether two kind names are the same: by address (the common case, one literal), else by
/// content.
fn same_kind(a: &str, b: &str) -> bool {
    (std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()) || a == b
}

/// All metrics of one node.
#[derive(Debug)]
pub struct Metrics {
    requests: [[AtomicU64; STATUS_SLOTS]; OPS.len()],
    latency_buckets: [[AtomicU64; BUCKET_SLOTS]; OPS.len()],
    latency_sum_us: [AtomicU64; OPS.len()],
    /// Node-to-node transport counters.
    pub peer: PeerCounters,
    /// HTTP connections refused with 503 because the node served its limit.
    pub connections_rejected: AtomicU64,
    /// Data-directory counters.
    pub storage: StorageCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency_buckets: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency_sum_us: std::array::from_fn(|_| AtomicU64::new(0)),
            peer: PeerCounters::default(),
            connections_rejected: AtomicU64::new(0),
            storage: StorageCounters::default(),
        }
    }
}

/// Gauges read from the node when the metrics are rendered.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// Live keys in the node's store (primary and replica).
    pub keys_stored: usize,
    /// Client requests waiting for an answer in the core.
    pub pending_requests: usize,
    /// Whether the node is a ring member.
    pub member: bool,
}

impl Metrics {
    /// Count one client request of operation `op` that ended with `status` after `elapsed`.
    pub fn record_request(&self, op: &str, status: u16, elapsed: Duration) {
        let Some(o) = OPS.iter().position(|x| *x == op) else {
            return;
        };
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len());
        self.requests[o][s].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let b = BUCKETS_US
            .iter()
            .position(|x| us <= *x)
            .unwrap_or(BUCKETS_US.len());
        self.latency_buckets[o][b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us[o].fetch_add(us, Ordering::Relaxed);
    }

    /// Number of requests of `op` that ended with `status` so far.
    pub fn requests(&self, op: &str, status: u16) -> u64 {
        let Some(o) = OPS.iter().position(|x| *x == op) else {
            return 0;
        };
        match STATUSES.iter().position(|x| *x == status) {
            Some(s) => self.requests[o][s].load(Ordering::Relaxed),
            None => self.requests[o][STATUSES.len()].load(Ordering::Relaxed),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, addr: &str, gauges: Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_requests(&mut out);
        self.render_latency(&mut out);
        self.render_peer(&mut out);
        gauge(
            &mut out,
            "ringkv_keys_stored",
            "Live keys stored (primary and replica).",
            gauges.keys_stored,
        );
        gauge(
            &mut out,
            "ringkv_pending_requests",
            "Client requests waiting for an answer.",
            gauges.pending_requests,
        );
        gauge(
            &mut out,
            "ringkv_member",
            "1 when the node is a ring member.",
            usize::from(gauges.member),
        );
        let name = "ringkv_connections_rejected_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP connections refused with 503 because the node served its limit."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let rejected = self.connections_rejected.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name} {rejected}");
        for (name, help, counter) in [
            (
                "ringkv_storage_commits_total",
                "Data-directory transactions committed.",
                &self.storage.commits,
            ),
            (
                "ringkv_storage_persists_total",
                "Persist outputs written by those transactions (persists / commits: the mean batch).",
                &self.storage.persists,
            ),
            (
                "ringkv_storage_failures_total",
                "Data-directory transactions that failed (disk full, IO error).",
                &self.storage.failures,
            ),
            (
                "ringkv_storage_sends_held_back_total",
                "Messages not sent because what they depended on could not be persisted.",
                &self.storage.sends_held_back,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        let queued = self.peer.queued.load(Ordering::Relaxed) as usize;
        gauge(
            &mut out,
            "ringkv_peer_queued_messages",
            "Envelopes waiting to be sent.",
            queued,
        );
        let _ = writeln!(
            out,
            "# HELP ringkv_node_info The node's advertised address."
        );
        let _ = writeln!(out, "# TYPE ringkv_node_info gauge");
        let _ = writeln!(out, "ringkv_node_info{{addr=\"{addr}\"}} 1");
        out
    }

    fn render_requests(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ringkv_requests_total Client requests by operation and HTTP status."
        );
        let _ = writeln!(out, "# TYPE ringkv_requests_total counter");
        for (o, op) in OPS.iter().enumerate() {
            for (s, count) in self.requests[o].iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(s)
                    .map_or("other".to_string(), |x| x.to_string());
                let _ = writeln!(
                    out,
                    "ringkv_requests_total{{op=\"{op}\",status=\"{status}\"}} {count}"
                );
            }
        }
    }

    fn render_latency(&self, out: &mut String) {
        let name = "ringkv_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Client request latency at this node by operation."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (o, op) in OPS.iter().enumerate() {
            let counts: Vec<u64> = self.latency_buckets[o]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (b, count) in counts.iter().enumerate() {
                cumulative += count;
                let le = match BUCKETS_US.get(b) {
                    Some(us) => format!("{}", *us as f64 / 1e6),
                    None => "+Inf".to_string(),
                };
                let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"{le}\"}} {cumulative}");
            }
            let sum_s = self.latency_sum_us[o].load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{op=\"{op}\"}} {sum_s}");
            let _ = writeln!(out, "{name}_count{{op=\"{op}\"}} {total}");
        }
    }

    fn render_peer(&self, out: &mut String) {
        let p = &self.peer;
        let counters: [(&str, &str, &AtomicU64); 13] = [
            (
                "ringkv_messages_sent_total",
                "Node-to-node envelopes sent.",
                &p.messages_sent,
            ),
            (
                "ringkv_messages_received_total",
                "Node-to-node envelopes received.",
                &p.messages_received,
            ),
            (
                "ringkv_messages_dropped_queue_full_total",
                "Envelopes dropped because a peer queue was full.",
                &p.messages_dropped_queue_full,
            ),
            (
                "ringkv_messages_dropped_send_error_total",
                "Envelopes dropped because no connection could be opened or the write failed.",
                &p.messages_dropped_send_error,
            ),
            (
                "ringkv_messages_dropped_receive_total",
                "Envelopes received but dropped because the node's queue stayed full.",
                &p.messages_dropped_receive,
            ),
            (
                "ringkv_messages_malformed_total",
                "Received envelopes or frames that did not parse.",
                &p.messages_malformed,
            ),
            (
                "ringkv_messages_rejected_total",
                "Received envelopes the node refused.",
                &p.messages_rejected,
            ),
            (
                "ringkv_peer_batches_sent_total",
                "Frames (batches of envelopes) sent to peers.",
                &p.batches_sent,
            ),
            (
                "ringkv_peer_writes_total",
                "Writes on peer connections, each of one or more frames.",
                &p.writes,
            ),
            (
                "ringkv_peer_connections_opened_total",
                "Peer connections this node opened.",
                &p.connections_opened,
            ),
            (
                "ringkv_peer_connections_accepted_total",
                "Peer connections this node accepted.",
                &p.connections_accepted,
            ),
            (
                "ringkv_peer_connections_refused_total",
                "Peer connections refused at setup for a missing or wrong cluster secret.",
                &p.connections_refused,
            ),
            (
                "ringkv_peer_frames_malformed_total",
                "Received frames that did not decode; each closed its connection.",
                &p.frames_malformed,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let name = "ringkv_messages_dropped_partition_total";
        let _ = writeln!(
            out,
            "# HELP {name} Envelopes dropped by the test-only partition filter (POST /admin/partition)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (direction, value) in [
            ("send", &p.messages_dropped_partition_send),
            ("receive", &p.messages_dropped_partition_receive),
        ] {
            let n = value.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{direction=\"{direction}\"}} {n}");
        }
        let mut kinds = p.kinds.lock().unwrap_or_else(|e| e.into_inner()).clone();
        kinds.sort_unstable();
        for (i, name) in [
            "ringkv_messages_sent_by_kind_total",
            "ringkv_messages_received_by_kind_total",
        ]
        .iter()
        .enumerate()
        {
            let _ = writeln!(out, "# HELP {name} Node-to-node envelopes by message kind.");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (kind, (sent, received)) in &kinds {
                let n = if i == 0 { sent } else { received };
                let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {n}");
            }
        }
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: usize) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// Add `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record_request("insert", 200, Duration::from_micros(90));
        m.record_request("insert", 200, Duration::from_millis(3));
        m.record_request("query", 404, Duration::from_micros(300));
        m.record_request("query", 418, Duration::from_micros(300));
        assert_eq!(m.requests("insert", 200), 2);
        assert_eq!(m.requests("query", 418), 1);
        let text = m.render("127.0.0.1:1", Gauges::default());
        assert!(text.contains("ringkv_requests_total{op=\"insert\",status=\"200\"} 2"));
        assert!(text.contains("ringkv_requests_total{op=\"query\",status=\"other\"} 1"));
        assert!(
            text.contains("ringkv_request_duration_seconds_bucket{op=\"insert\",le=\"0.0001\"} 1")
        );
        assert!(
            text.contains("ringkv_request_duration_seconds_bucket{op=\"insert\",le=\"+Inf\"} 2")
        );
        assert!(text.contains("ringkv_request_duration_seconds_count{op=\"query\"} 2"));
    }
}
