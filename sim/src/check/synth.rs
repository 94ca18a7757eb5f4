//! Synthetic linearizable histories, for tests and benchmarks.
//!
//! Clients run operations one after another with random durations; each operation that
//! takes effect does so at a random instant strictly inside its interval (an `info`
//! write may take effect even after its timeout, or never), and reads return the
//! register's value at that instant. The result is linearizable by construction.

// Hash maps and sets here are lookups and memo tables: none is iterated where the order
// could reach a verdict, a report or a history (those are sorted or B-tree ordered).
#![allow(clippy::disallowed_types)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::history::{EventType, HistoryEvent, OpKind};

/// Shape of a synthetic history.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    /// RNG seed: the same options give the same history.
    pub seed: u64,
    /// Number of operations.
    pub ops: usize,
    /// Number of distinct keys (`k0`, `k1`, ...).
    pub keys: usize,
    /// Number of concurrent clients.
    pub processes: usize,
    /// Probability that an operation is a read.
    pub read_rate: f64,
    /// Probability that an operation is a delete.
    pub delete_rate: f64,
    /// Probability that an operation completes with `info` (the client then continues
    /// under a fresh process id).
    pub info_rate: f64,
    /// Probability that an operation completes with `fail` (and has no effect).
    pub fail_rate: f64,
    /// Written values are drawn from this many distinct values per key; `None` makes
    /// every written value unique.
    pub value_domain: Option<usize>,
    /// Completion lines name one of this many nodes (`n0`, ...); 0 for no `node` field.
    pub nodes: usize,
    /// Operation durations are drawn from `1..=max_duration` x 2 ns.
    pub max_duration: u64,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            seed: 1,
            ops: 1000,
            keys: 10,
            processes: 8,
            read_rate: 0.5,
            delete_rate: 0.05,
            info_rate: 0.0,
            fail_rate: 0.0,
            value_domain: None,
            nodes: 0,
            max_duration: 1000,
        }
    }
}

struct Planned {
    process: u64,
    f: OpKind,
    key: usize,
    value: Option<String>,
    status: EventType,
    invoke: u64,
    complete: u64,
    /// When it takes effect, if it does.
    effect: Option<u64>,
}

fn plan(opts: &SynthOptions, rng: &mut ChaCha8Rng) -> Vec<Planned> {
    let clients = opts.processes.max(1);
    let mut clock: BinaryHeap<Reverse<(u64, usize)>> =
        (0..clients).map(|c| Reverse((0, c))).collect();
    let mut pid: Vec<u64> = (0..clients as u64).collect();
    let mut next_pid = clients as u64;
    let mut out = Vec::with_capacity(opts.ops);
    while out.len() < opts.ops {
        let Some(Reverse((now, c))) = clock.pop() else {
            break;
        };
        let invoke = now + rng.gen_range(0..50);
        let complete = invoke + 2 * rng.gen_range(1..=opts.max_duration.max(1));
        let op = random_op(opts, rng, out.len(), pid[c], invoke, complete);
        if op.status == EventType::Info {
            pid[c] = next_pid;
            next_pid += 1;
        }
        out.push(op);
        clock.push(Reverse((complete, c)));
    }
    out
}

fn random_op(
    opts: &SynthOptions,
    rng: &mut ChaCha8Rng,
    n: usize,
    process: u64,
    invoke: u64,
    complete: u64,
) -> Planned {
    let r: f64 = rng.gen();
    let f = if r < opts.read_rate {
        OpKind::Read
    } else if r < opts.read_rate + opts.delete_rate {
        OpKind::Delete
    } else {
        OpKind::Write
    };
    let key = rng.gen_range(0..opts.keys.max(1));
    let value = (f == OpKind::Write).then(|| match opts.value_domain {
        Some(d) => format!("v{}", rng.gen_range(0..d.max(1))),
        None => format!("v{n}"),
    });
    let s: f64 = rng.gen();
    let status = if s < opts.info_rate {
        EventType::Info
    } else if s < opts.info_rate + opts.fail_rate {
        EventType::Fail
    } else {
        EventType::Ok
    };
    let effect = match status {
        EventType::Ok => Some(rng.gen_range(invoke + 1..complete)),
        EventType::Info if rng.gen_bool(0.5) => {
            Some(rng.gen_range(invoke + 1..complete + opts.max_duration))
        }
        _ => None,
    };
    Planned {
        process,
        f,
        key,
        value,
        status,
        invoke,
        complete,
        effect,
    }
}

/// Fill in read results by applying the operations in order of their effect.
fn apply(ops: &mut [Planned]) {
    let mut order: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].effect.is_some())
        .collect();
    order.sort_by_key(|&i| (ops[i].effect, i));
    let mut reg: HashMap<usize, Option<String>> = HashMap::new();
    for i in order {
        let op = &mut ops[i];
        match op.f {
            OpKind::Write => {
                reg.insert(op.key, op.value.clone());
            }
            OpKind::Delete => {
                reg.insert(op.key, None);
            }
            OpKind::Read if op.status == EventType::Ok => {
                op.value = reg.get(&op.key).cloned().flatten();
            }
            OpKind::Read => {}
        }
    }
}

/// Generate a linearizable history as events in history order.
pub fn synthetic_history(opts: &SynthOptions) -> Vec<HistoryEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut ops = plan(opts, &mut rng);
    apply(&mut ops);
    // (time, completion before invoke on ties, sequence)
    let mut events: Vec<(u64, u8, usize, HistoryEvent)> = Vec::with_capacity(2 * ops.len());
    for (n, o) in ops.iter().enumerate() {
        let key = format!("k{}", o.key);
        let inv_value = if o.f == OpKind::Write {
            o.value.as_deref()
        } else {
            None
        };
        let inv = HistoryEvent::invoke(o.process, o.f, &key, inv_value, o.invoke);
        events.push((o.invoke, 1, n, inv));
        let done_value = match (o.f, o.status) {
            (OpKind::Read, EventType::Ok) | (OpKind::Write, _) => o.value.as_deref(),
            _ => None,
        };
        let mut done = HistoryEvent::new(o.process, o.status, o.f, &key, done_value, o.complete);
        if opts.nodes > 0 {
            done.node = Some(format!("n{}", rng.gen_range(0..opts.nodes)));
        }
        events.push((o.complete, 0, n, done));
    }
    events.sort_by_key(|e| (e.0, e.1, e.2));
    events.into_iter().map(|e| e.3).collect()
}
