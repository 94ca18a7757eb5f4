//! The workload's clients: one operation at a time each, phase by phase behind a
//! barrier, parked while their node is out of the ring; every invocation and
//! completion is recorded in the history.

use std::collections::{BTreeMap, BTreeSet};

use ringkv_core::{Input, Reply, Request};

use super::{Event, Simulation, Stage, NOTES_MAX};
use crate::check::{write_event, EventType, HistoryEvent};
use crate::client::{classify, Client, ClientState, Outcome, Outstanding};
use crate::workload::{ClientOps, Op, OpKind};

/// The clients, and what the final phase needs of them.
#[derive(Debug)]
pub(super) struct Clients {
    pub(super) all: Vec<Client>,
    /// Workload phases (the final reads run in the last).
    pub(super) phases: usize,
    /// Clients at a barrier or done.
    pub(super) at_rest: usize,
    /// Next history process id (a client whose operation ended `info` takes a new one).
    pub(super) next_process: u64,
    /// Clients from this index on are the final phase's readers.
    pub(super) first_final: usize,
    /// Keys the workload wrote or deleted (kept only with `final_reads`).
    pub(super) written_keys: BTreeSet<String>,
    /// Failed final reads sent again so far, by reader (at most
    /// [`FINAL_READ_RETRIES`] for all of a reader's keys together).
    pub(super) final_retries: BTreeMap<usize, u32>,
}

/// Times a final reader sends a read that failed (nothing was done: a replica whose
/// lease lapsed for a moment, say) again, a heartbeat interval later, as a client would
/// on a 503 that says "retry", before a failed read counts as unanswered.
const FINAL_READ_RETRIES: u32 = 3;
const FINAL_READ_RETRY_NS: u64 = 200_000_000;

impl Simulation {
    // ----- clients -----

    pub(super) fn start_clients(&mut self) {
        self.stage = Stage::Clients;
        self.tally.clients_start_ns = self.now;
        self.tally.last_completion_ns = self.now;
        self.tally.counters.sent_before_clients = self.net.stats.sent;
        self.net.set_faulty(true);
        for index in 0..self.faults.len() {
            self.queued_other += 1;
            let at = self.now + self.faults[index].at_ns;
            self.queue.push(
                at,
                Event::Fault {
                    index: index as u32,
                },
            );
        }
        for c in 0..self.clients.all.len() {
            self.schedule_wake(c, self.now);
        }
    }

    pub(super) fn schedule_wake(&mut self, c: usize, at: u64) {
        self.set_state(c, ClientState::Scheduled);
        self.queued_other += 1;
        self.queue.push(at, Event::ClientWake { client: c as u32 });
    }

    pub(super) fn set_state(&mut self, c: usize, state: ClientState) {
        let at_rest = |s: ClientState| matches!(s, ClientState::Barrier | ClientState::Done);
        let old = std::mem::replace(&mut self.clients.all[c].state, state);
        match (at_rest(old), at_rest(state)) {
            (false, true) => self.clients.at_rest += 1,
            (true, false) => self.clients.at_rest -= 1,
            _ => {}
        }
    }

    pub(super) fn client_wake(&mut self, c: usize) {
        let client = &mut self.clients.all[c];
        if client.phase >= self.clients.phases {
            self.set_state(c, ClientState::Done);
            return self.maybe_release_barrier();
        }
        let n = client.node as usize;
        if !self.hosts.nodes[n].up || !self.hosts.nodes[n].node.is_member() {
            return self.set_state(c, ClientState::Parked);
        }
        let phase = client.phase;
        match client.phases[phase].next_op() {
            Some(op) => self.invoke(c, op),
            None => {
                self.set_state(c, ClientState::Barrier);
                self.maybe_release_barrier();
            }
        }
    }

    pub(super) fn invoke(&mut self, c: usize, op: Op) {
        let client = &mut self.clients.all[c];
        client.seq = client.seq.wrapping_add(1);
        let seq = client.seq;
        let (node, process) = (client.node, client.process);
        let id = ((c as u64) << 32) | u64::from(seq);
        let request = match op.f {
            OpKind::Write => Request::Insert {
                key: op.key.clone(),
                value: op.value.clone().unwrap_or_default(),
            },
            OpKind::Read => Request::Query {
                key: op.key.clone(),
            },
            OpKind::Delete => Request::Delete {
                key: op.key.clone(),
            },
        };
        let value = if op.f == OpKind::Write {
            op.value.as_deref()
        } else {
            None
        };
        if self.config.final_reads && op.f != OpKind::Read && c < self.clients.first_final {
            self.clients.written_keys.insert(op.key.clone());
        }
        let event = HistoryEvent::invoke(process, op.f, &op.key, value, self.now);
        self.record(&event);
        self.clients.all[c].outstanding = Some(Outstanding {
            seq,
            op,
            invoked_ns: self.now,
        });
        self.set_state(c, ClientState::Waiting);
        // Not counted as pending work: while the operation is outstanding its request
        // waits at the node, whose deadline timer keeps the run busy.
        let timeout = Event::ClientTimeout {
            client: c as u32,
            seq,
        };
        self.queue.push(self.now + self.config.timeout_ns, timeout);
        self.handle(node, Input::Request { id, request });
    }

    pub(super) fn on_client_reply(&mut self, id: u64, reply: Reply) {
        let c = (id >> 32) as usize;
        let Some(client) = self.clients.all.get_mut(c) else {
            return;
        };
        if client.outstanding.as_ref().map(|o| o.seq) != Some(id as u32) {
            return; // the client already gave up on it
        }
        let pending = client.outstanding.take().expect("checked above");
        let outcome = classify(&pending.op, &reply);
        self.complete(c, pending, outcome);
    }

    /// Put final reader `c`'s failed `op` back first in its list, unless the reader has
    /// used its retries.
    fn requeue_final_read(&mut self, c: usize, op: &Op) -> bool {
        let tries = self.clients.final_retries.entry(c).or_insert(0);
        if *tries >= FINAL_READ_RETRIES {
            return false;
        }
        let client = &mut self.clients.all[c];
        let Some(ClientOps::List(ops)) = client.phases.get_mut(client.phase) else {
            return false;
        };
        *tries += 1;
        ops.push_front(op.clone());
        true
    }

    pub(super) fn complete(&mut self, c: usize, pending: Outstanding, outcome: Outcome) {
        let process = self.clients.all[c].process;
        let op = &pending.op;
        let written = if op.f == OpKind::Write {
            op.value.as_deref()
        } else {
            None
        };
        let (kind, value, node, hops) = match &outcome {
            Outcome::Ok { value, node, hops } => (
                EventType::Ok,
                value.as_deref(),
                Some(node.clone()),
                Some(*hops),
            ),
            Outcome::Fail(_) => (EventType::Fail, written, None, None),
            Outcome::Info(_) => (EventType::Info, written, None, None),
        };
        let mut event = HistoryEvent::new(process, kind, op.f, &op.key, value, self.now);
        event.node = node;
        event.hops = hops.map(u64::from);
        self.record(&event);
        if c >= self.clients.first_final {
            // A final read: not part of the client phase's figures.
            if matches!(outcome, Outcome::Fail(_)) && self.requeue_final_read(c, &pending.op) {
                let at = self.now + FINAL_READ_RETRY_NS;
                return self.schedule_wake(c, at);
            }
            match &outcome {
                Outcome::Ok { .. } => self.tally.counters.final_reads_ok += 1,
                Outcome::Fail(why) | Outcome::Info(why) => {
                    self.tally.counters.final_reads_unanswered += 1;
                    let node = self.clients.all[c].node;
                    self.note(format!(
                        "the final read of {:?} through node {node} ended {}: {why}",
                        op.key,
                        if kind == EventType::Fail {
                            "fail"
                        } else {
                            "info"
                        }
                    ));
                }
            }
            if matches!(outcome, Outcome::Info(_)) {
                self.clients.all[c].process = self.clients.next_process;
                self.clients.next_process += 1;
            }
            let at = self.now + self.config.think_ns;
            return self.schedule_wake(c, at);
        }
        let label = match kind {
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            _ => "info",
        };
        *self
            .tally
            .ops_by_kind
            .entry(format!("{}.{label}", op.f.as_str()))
            .or_default() += 1;
        self.tally.last_completion_ns = self.now;
        match outcome {
            Outcome::Ok { hops, .. } => {
                self.tally.counters.ops_ok += 1;
                self.tally.latencies.push(self.now - pending.invoked_ns);
                self.tally.hops.push(u64::from(hops));
            }
            Outcome::Fail(_) => self.tally.counters.ops_fail += 1,
            Outcome::Info(_) => {
                self.tally.counters.ops_info += 1;
                self.clients.all[c].process = self.clients.next_process;
                self.clients.next_process += 1;
            }
        }
        let at = self.now + self.config.think_ns;
        self.schedule_wake(c, at);
    }

    pub(super) fn maybe_release_barrier(&mut self) {
        if self.clients.at_rest < self.clients.all.len() {
            return;
        }
        for c in 0..self.clients.all.len() {
            if self.clients.all[c].state == ClientState::Barrier {
                self.clients.all[c].phase += 1;
                self.schedule_wake(c, self.now);
            }
        }
    }

    pub(super) fn unpark_clients(&mut self, n: u32) {
        for i in 0..self.hosts.nodes[n as usize].clients.len() {
            let c = self.hosts.nodes[n as usize].clients[i] as usize;
            if self.clients.all[c].state == ClientState::Parked {
                self.schedule_wake(c, self.now);
            }
        }
    }

    /// At quiescence: parked clients give up their current phase (their node will not
    /// come back), so the others can go on. Returns whether anything was scheduled.
    pub(super) fn release_stuck_clients(&mut self) -> bool {
        for c in 0..self.clients.all.len() {
            match self.clients.all[c].state {
                ClientState::Parked => {
                    let phase = self.clients.all[c].phase;
                    self.tally.counters.ops_not_issued +=
                        self.clients.all[c].phases[phase].abandon();
                    self.set_state(c, ClientState::Barrier);
                }
                ClientState::Waiting => {
                    // Unreachable while nodes keep request timers; never hang on it.
                    if let Some(pending) = self.clients.all[c].outstanding.take() {
                        self.complete(c, pending, Outcome::Info("no answer at quiescence".into()));
                    }
                }
                _ => {}
            }
        }
        self.maybe_release_barrier();
        self.queued_other > 0
    }

    pub(super) fn record(&mut self, event: &HistoryEvent) {
        self.tally.counters.history_events += 1;
        // The final phase needs the history to tell lost writes.
        if self.config.record_history || self.config.final_reads {
            write_event(&mut self.tally.history, event).expect("writing to memory cannot fail");
        }
    }

    pub(super) fn note(&mut self, note: String) {
        if self.tally.notes.len() < NOTES_MAX {
            self.tally.notes.push(note);
        }
    }
}
