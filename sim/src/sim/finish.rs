//! The end of a run: the final reads of every written key, then the invariants and the
//! summary.

use std::collections::VecDeque;

use super::{SimResult, Simulation, Stage};
use crate::check;
use crate::client::{Client, ClientState};
use crate::faults::Fault;
use crate::final_reads::{eventual_loss, final_reads_by_key, lost_acked_writes, EventualLoss};
use crate::observe::{observe, NodeView};
use crate::summary::{percentile, Summary};
use crate::workload::{ClientOps, Op, OpKind};

impl Simulation {
    /// Start the final phase: one reader per live member, key j (in key order) read
    /// through member j mod m, on a reliable network (no drops or duplicates; every
    /// partition has healed). Returns whether a read was scheduled.
    pub(super) fn start_final_reads(&mut self) -> bool {
        if self.stage == Stage::Final {
            return false;
        }
        self.stage = Stage::Final;
        self.net.set_faulty(false);
        self.tally.final_from_event = Some(self.tally.counters.history_events);
        let members: Vec<u32> = (0..self.hosts.nodes.len() as u32)
            .filter(|&n| {
                self.hosts.nodes[n as usize].up && self.hosts.nodes[n as usize].node.is_member()
            })
            .collect();
        self.tally.counters.final_reads = self.clients.written_keys.len() as u64;
        if members.is_empty() || self.clients.written_keys.is_empty() {
            self.tally.counters.final_reads_unanswered += self.clients.written_keys.len() as u64;
            if !self.clients.written_keys.is_empty() {
                self.note("no live member is left for the final reads".into());
            }
            return false;
        }
        let mut reads: Vec<VecDeque<Op>> = vec![VecDeque::new(); members.len()];
        let keys = std::mem::take(&mut self.clients.written_keys);
        for (j, key) in keys.into_iter().enumerate() {
            reads[j % members.len()].push_back(Op {
                f: OpKind::Read,
                key,
                value: None,
            });
        }
        // The readers run the last phase; the earlier ones are empty.
        self.clients.phases = self.clients.phases.max(1);
        let last = self.clients.phases - 1;
        for (m, ops) in members.into_iter().zip(reads) {
            if ops.is_empty() {
                continue;
            }
            let c = self.clients.all.len();
            let mut phases: Vec<ClientOps> = (0..last)
                .map(|_| ClientOps::List(VecDeque::new()))
                .collect();
            phases.push(ClientOps::List(ops));
            self.clients.all.push(Client {
                node: m,
                process: self.clients.next_process,
                phases,
                phase: last,
                state: ClientState::Scheduled,
                seq: 0,
                outstanding: None,
            });
            self.clients.next_process += 1;
            self.hosts.nodes[m as usize].clients.push(c as u32);
            self.schedule_wake(c, self.now);
        }
        true
    }

    // ----- the end -----

    // Longer than most: one line per figure of the summary.
    pub(super) fn finish(mut self, truncated: bool, wall_seconds: f64) -> SimResult {
        // Operations of clients that never got to run them.
        for (c, client) in self.clients.all.iter_mut().enumerate() {
            for ops in client.phases.iter_mut().skip(client.phase) {
                let n = ops.abandon();
                if c < self.clients.first_final {
                    self.tally.counters.ops_not_issued += n;
                } else {
                    self.tally.counters.final_reads_unanswered += n;
                }
            }
        }
        let views: Vec<NodeView<'_>> = self
            .hosts
            .nodes
            .iter()
            .map(|n| NodeView {
                node: &n.node,
                up: n.up,
            })
            .collect();
        // After crashes, placement holds again only once failure handling has repaired
        // the ring; the final phase runs after that repair has had time to finish.
        let placement =
            !self.tally.crashed || (self.config.final_reads && self.config.failure_handling);
        let mut obs = observe(&views, self.config.k, placement);
        for panic in &self.tally.panics {
            obs.breach("node_panic", || panic.clone());
        }
        self.tally.latencies.sort_unstable();
        self.tally.hops.sort_unstable();
        let c = &self.tally.counters;
        let net = &self.net.stats;
        let config = &self.config;
        let virtual_ns = self
            .tally
            .last_completion_ns
            .saturating_sub(self.tally.clients_start_ns);
        let virtual_seconds = virtual_ns as f64 / 1e9;
        let mean = |v: &[u64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<u64>() as f64 / v.len() as f64
            }
        };
        let mut summary = Summary {
            seed: config.seed,
            nodes: config.nodes,
            k: config.k,
            consistency: config.consistency.to_string(),
            routing: config.routing.to_string(),
            clients: self.clients.all.len(),
            workload: config.workload.name().to_string(),
            latency: config.net.latency.to_string(),
            drop: config.net.drop_probability,
            dup: config.net.dup_probability,
            partition_mode: config.net.partition_mode.to_string(),
            timeout_ns: config.timeout_ns,
            faults: self.faults.iter().map(Fault::to_string).collect(),
            events: c.events,
            wall_seconds,
            events_per_second: if wall_seconds > 0.0 {
                c.events as f64 / wall_seconds
            } else {
                0.0
            },
            quiescent: !truncated,
            truncated,
            ops_ok: c.ops_ok,
            ops_info: c.ops_info,
            ops_fail: c.ops_fail,
            ops_not_issued: c.ops_not_issued,
            ops_by_kind: self.tally.ops_by_kind.clone(),
            virtual_seconds,
            setup_virtual_seconds: self.tally.clients_start_ns as f64 / 1e9,
            throughput_ops_per_virtual_second: if virtual_ns > 0 {
                c.ops_ok as f64 / virtual_seconds
            } else {
                0.0
            },
            latency_p50_ns: percentile(&self.tally.latencies, 50.0),
            latency_p99_ns: percentile(&self.tally.latencies, 99.0),
            latency_mean_ns: mean(&self.tally.latencies),
            latency_max_ns: self.tally.latencies.last().copied().unwrap_or(0),
            lookup_hops_mean: mean(&self.tally.hops),
            lookup_hops_p99: percentile(&self.tally.hops, 99.0),
            messages_sent: net.sent,
            messages_sent_client_phase: net.sent - c.sent_before_clients,
            messages_delivered: net.delivered,
            messages_dropped: net.dropped,
            messages_duplicated: net.duplicated,
            messages_partitioned: net.partitioned,
            messages_held: net.held,
            messages_vanished: net.vanished,
            messages_rejected: c.rejected,
            snapshot_entries: net.snapshot_entries,
            crashes: c.crashes,
            restarts: c.restarts,
            rejoins_refused: c.rejoins_refused,
            joins: c.joins,
            departs: c.departs,
            partitions: c.partitions,
            pauses: c.pauses,
            faults_skipped: c.faults_skipped,
            membership_failures: c.membership_failures,
            setup_failures: c.setup_failures,
            ring_size: obs.ring_size,
            keys_stored: obs.keys,
            invariant_violations: obs.violations(),
            violations_by_kind: obs.by_kind.clone(),
            violations: obs.examples.clone(),
            stale_finger_entries: obs.stale_finger_entries,
            history_events: c.history_events,
            notes: self.tally.notes.clone(),
            replay: config.replay_command(),
            ..Summary::default()
        };
        if let Some(from) = self.tally.final_from_event {
            summary.final_reads = Some(c.final_reads);
            summary.final_reads_ok = Some(c.final_reads_ok);
            summary.final_reads_unanswered = Some(c.final_reads_unanswered);
            match check::History::parse(self.tally.history.as_slice()) {
                Ok(history) => {
                    let lost = lost_acked_writes(&history, from as usize);
                    summary.lost_acked_writes = Some(lost.keys);
                    summary.lost_writes = lost.examples;
                    if lost.keys > 0 {
                        self.classify_eventual_losses(&history, from as usize, &mut summary);
                    }
                }
                Err(e) => summary.notes.push(format!(
                    "the history does not parse ({e}): lost writes unknown"
                )),
            }
        } else if config.final_reads {
            // The run ended (truncated) before its final phase.
            summary.final_reads = Some(0);
            summary.final_reads_ok = Some(0);
            summary.final_reads_unanswered = Some(c.final_reads_unanswered);
        }
        if !config.record_history {
            self.tally.history.clear();
        }
        SimResult {
            summary,
            history: std::mem::take(&mut self.tally.history),
        }
    }
}

impl Simulation {
    /// Under eventual consistency, set apart the lost writes the model allows (see
    /// [`EventualLoss`]): those whose every copy was on nodes that crashed, and those
    /// overtaken by a write less than the clock skew earlier. What is
    /// left stays in `lost_acked_writes`, a failure.
    fn classify_eventual_losses(&self, history: &check::History, from: usize, s: &mut Summary) {
        let Some(reach) = &self.tally.reach else {
            return;
        };
        // Clock rates are drawn within ± the drift bound: two nodes drift apart at up to
        // twice it.
        let drift = 2 * self.config.clock_drift_per_mille;
        let skew_ns = |t: u64| (u128::from(t) * u128::from(drift) / 1_000) as u64;
        let lost_in_crash = |key: &str, value: &str, acker: Option<&str>, at: u64| {
            let acker = acker.and_then(|a| self.hosts.index.get(a).copied());
            acker.is_some_and(|n| reach.lost_in_crash(key, value, n, at))
        };
        let (mut in_crashes, mut within_skew) = (0, 0);
        let mut kept = Vec::new();
        for key in final_reads_by_key(history, from) {
            if !key.lost() {
                continue;
            }
            let name = key.key;
            let by_design =
                |v: &str, acker: Option<&str>, at: u64| lost_in_crash(name, v, acker, at);
            match eventual_loss(&key, history, by_design, skew_ns) {
                EventualLoss::AllCopiesCrashed => in_crashes += 1,
                EventualLoss::WithinSkew => within_skew += 1,
                EventualLoss::Lost => kept.extend(key.describe()),
            }
        }
        s.lost_acked_writes = Some(kept.len() as u64);
        kept.truncate(crate::final_reads::EXAMPLES_MAX);
        s.lost_writes = kept;
        s.lost_in_crashes = Some(in_crashes);
        s.lost_within_skew = Some(within_skew);
    }
}
