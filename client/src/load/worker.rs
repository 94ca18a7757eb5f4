//! The clients of a load run: each chooses its operations from the mix and sends them one
//! at a time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_runtime::{Cause, HttpClient, Outcome};
use ringkv_sim::check::OpKind;

use super::{LoadOptions, Mix};
use crate::history::{ProcessIds, Recorder};
use crate::op::{perform, Op};
use crate::router::TokenRouter;

/// What every client of a run shares.
pub(super) struct Shared {
    pub(super) client: HttpClient,
    /// The ring's members, `host:port`.
    pub(super) nodes: Vec<String>,
    /// With token routing: where each request goes.
    pub(super) router: Option<TokenRouter>,
    pub(super) recorder: Recorder,
    pub(super) processes: ProcessIds,
    pub(super) options: LoadOptions,
}

/// The untimed preload of the `query` mix, or the timed operations.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Preload,
    Timed,
}

/// What a phase's clients counted.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) ops: u64,
    pub(super) ok: u64,
    pub(super) not_found: u64,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) latencies_us: Vec<u64>,
    pub(super) hops: u64,
    pub(super) hops_counted: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.ok += other.ok;
        self.not_found += other.not_found;
        for (cause, n) in other.errors {
            *self.errors.entry(cause).or_default() += n;
        }
        self.latencies_us.extend(other.latencies_us);
        self.hops += other.hops;
        self.hops_counted += other.hops_counted;
    }
}

/// `ops` operations shared out among the clients through a common counter.
pub(super) async fn run_phase(shared: &Arc<Shared>, ops: u64, phase: Phase) -> Tally {
    let next_op = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(shared.options.clients);
    for client in 0..shared.options.clients {
        let shared = shared.clone();
        let next_op = next_op.clone();
        tasks.push(tokio::spawn(async move {
            let mut worker = Worker::new(&shared, client, phase);
            worker.run(&shared, &next_op, ops).await;
            worker.tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(err) => tracing::error!(%err, "a client task failed"),
        }
    }
    total
}

/// One client: one request at a time to its node.
struct Worker {
    process: u64,
    /// Its node, an index into [`Shared::nodes`].
    node: usize,
    rng: ChaCha8Rng,
    phase: Phase,
    writes: u64,
    tally: Tally,
}

impl Worker {
    fn new(shared: &Shared, client: usize, phase: Phase) -> Worker {
        let stream = if phase == Phase::Preload { 1 << 32 } else { 0 };
        Worker {
            process: client as u64,
            node: client % shared.nodes.len(),
            rng: ChaCha8Rng::seed_from_u64(
                shared.options.seed ^ (client as u64 + stream).wrapping_mul(0x9E37_79B9),
            ),
            phase,
            writes: 0,
            tally: Tally::default(),
        }
    }

    async fn run(&mut self, shared: &Shared, next_op: &AtomicU64, ops: u64) {
        loop {
            let n = next_op.fetch_add(1, Ordering::Relaxed);
            if n >= ops {
                return;
            }
            let op = self.choose(shared, n);
            self.execute(shared, op).await;
        }
    }

    fn choose(&mut self, shared: &Shared, n: u64) -> Op {
        let o = &shared.options;
        let prefix = &o.key_prefix;
        let write = |key: String, value: String| Op {
            f: OpKind::Write,
            key,
            value: Some(value),
        };
        match (self.phase, o.mix) {
            (Phase::Preload, _) => write(format!("{prefix}song-{n}"), format!("value-{n}")),
            (Phase::Timed, Mix::Insert) => write(format!("{prefix}key-{n}"), format!("value-{n}")),
            (Phase::Timed, Mix::Query) => Op {
                f: OpKind::Read,
                key: format!("{prefix}song-{}", self.rng.gen_range(0..o.key_count())),
                value: None,
            },
            (Phase::Timed, Mix::Requests) => {
                let key = format!("{prefix}title-{}", self.rng.gen_range(0..o.key_count()));
                let roll: f64 = self.rng.gen();
                if roll < o.write_ratio {
                    self.writes += 1;
                    write(key, format!("p{}-{}", self.process, self.writes))
                } else if roll < o.write_ratio + o.delete_ratio {
                    Op {
                        f: OpKind::Delete,
                        key,
                        value: None,
                    }
                } else {
                    Op {
                        f: OpKind::Read,
                        key,
                        value: None,
                    }
                }
            }
        }
    }

    async fn execute(&mut self, shared: &Shared, op: Op) {
        let route = shared.router.as_ref().map(|r| r.route(&op));
        let node = match &route {
            Some(route) => &route.target,
            None => &shared.nodes[self.node],
        };
        let done = perform(&shared.client, &shared.recorder, self.process, node, &op).await;
        self.count(&done.outcome, done.latency.as_micros() as u64);
        if let (Some(router), Some(route)) = (&shared.router, &route) {
            router.observe(route, &done.outcome);
        }
        if matches!(done.outcome, Outcome::Info(_)) {
            self.process = shared.processes.fresh();
        }
    }

    fn count(&mut self, outcome: &Outcome, latency_us: u64) {
        self.tally.ops += 1;
        self.tally.latencies_us.push(latency_us);
        match outcome {
            Outcome::Ok(served) => {
                self.tally.ok += 1;
                if !served.found {
                    self.tally.not_found += 1;
                }
                if let Some(hops) = served.hops {
                    self.tally.hops += hops;
                    self.tally.hops_counted += 1;
                }
            }
            Outcome::Fail(cause) | Outcome::Info(cause) => {
                *self.tally.errors.entry(label(cause)).or_default() += 1;
            }
        }
    }
}

/// A failure's key in [`LoadReport::errors`]: every transport error counts as one cause.
fn label(cause: &Cause) -> String {
    match cause {
        Cause::Transport(_) => "transport".into(),
        status => status.to_string(),
    }
}
