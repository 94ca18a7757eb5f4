//! Per-key linearizability of a register history (P-compositionality: keys are
//! independent, so each key is checked on its own, in parallel).

// Hash maps and sets here are lookups and memo tables: none is iterated where the order
// could reach a verdict, a report or a history (those are sorted or B-tree ordered).
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use super::counterexample::{self, Counterexample};
use super::history::{History, OpKind, OpStatus, Operation};
use super::search::{self, Action, Budget, Outcome, SearchOp, State, ABSENT};

/// Limits and switches of [`check_linearizability`].
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Search steps allowed per key before its verdict is `unknown` (default 10 million).
    pub max_steps: u64,
    /// Wall-clock time allowed per key search (default: none). Timing makes verdicts
    /// depend on the machine; prefer `max_steps` for reproducible results.
    pub timeout: Option<Duration>,
    /// Memory the per-key memoization cache may use, in bytes (default 1 GiB).
    pub max_cache_bytes: usize,
    /// Shrink each violation to a minimal counterexample (default true).
    pub minimize: bool,
    /// Total search steps the shrinking of one key may use (default 20 million).
    pub minimize_steps: u64,
    /// Check keys on several threads (default true).
    pub parallel: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps: 10_000_000,
            timeout: None,
            max_cache_bytes: 1 << 30,
            minimize: true,
            minimize_steps: 20_000_000,
            parallel: true,
        }
    }
}

impl CheckOptions {
    pub(crate) fn budget(&self, max_steps: u64) -> Budget {
        Budget {
            max_steps,
            // The caller's wall-clock budget: past it the verdict is "unknown", never a
            // different answer.
            #[allow(clippy::disallowed_methods)]
            deadline: self.timeout.map(|t| Instant::now() + t),
            max_cache_bytes: self.max_cache_bytes,
        }
    }
}

/// Overall verdict of a history (or of one key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every key is linearizable.
    Linearizable,
    /// Some key's budget ran out before a verdict, and no key is violated.
    Unknown,
    /// Some key is not linearizable.
    Violation,
}

impl Verdict {
    /// The name used in reports: `linearizable`, `unknown` or `violation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Linearizable => "linearizable",
            Verdict::Unknown => "unknown",
            Verdict::Violation => "violation",
        }
    }

    /// The `dht check` exit code: 0 linearizable, 1 violation, 3 unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Linearizable => 0,
            Verdict::Violation => 1,
            Verdict::Unknown => 3,
        }
    }
}

/// The verdict for one key.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum KeyVerdict {
    /// The key's operations are linearizable.
    Ok,
    /// They are not; here is a minimal set of operations that cannot be linearized.
    Violation {
        /// The explanation.
        counterexample: Counterexample,
    },
    /// The search budget ran out.
    Unknown {
        /// Which budget.
        reason: String,
    },
}

/// The result for one key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyResult {
    /// Operations on the key (all statuses).
    pub ops: usize,
    /// Search steps spent (not counting shrinking).
    pub steps: u64,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: KeyVerdict,
}

impl KeyResult {
    /// This key's verdict as a [`Verdict`].
    pub fn verdict_kind(&self) -> Verdict {
        match self.verdict {
            KeyVerdict::Ok => Verdict::Linearizable,
            KeyVerdict::Violation { .. } => Verdict::Violation,
            KeyVerdict::Unknown { .. } => Verdict::Unknown,
        }
    }
}

/// The linearizability report of a whole history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinReport {
    /// Violation if any key is violated, else unknown if any key is unknown.
    pub verdict: Verdict,
    /// Operations in the history.
    pub ops: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Keys found linearizable.
    pub ok_keys: usize,
    /// Keys found not linearizable.
    pub violation_keys: usize,
    /// Keys whose budget ran out.
    pub unknown_keys: usize,
    /// Search steps over all keys.
    pub steps: u64,
    /// Per-key results, sorted by key.
    pub results: BTreeMap<String, KeyResult>,
}

impl LinReport {
    /// The violations' counterexamples, in key order.
    pub fn counterexamples(&self) -> impl Iterator<Item = &Counterexample> {
        self.results.values().filter_map(|r| match &r.verdict {
            KeyVerdict::Violation { counterexample } => Some(counterexample),
            _ => None,
        })
    }
}

/// One key's operations prepared for the search: history op ids and search ops.
pub(crate) struct KeyOps {
    pub ids: Vec<usize>,
    pub ops: Vec<SearchOp>,
}

fn intern<'a>(values: &mut HashMap<&'a str, State>, v: &'a Option<String>) -> State {
    match v {
        None => ABSENT,
        Some(s) => {
            let next = values.len() as State;
            *values.entry(s.as_str()).or_insert(next)
        }
    }
}

/// Turn a key's operations into search operations: `fail` operations are dropped (they
/// never took effect), and so are reads without an `ok` (they observed nothing).
pub(crate) fn key_ops(history: &History, ids: &[usize]) -> KeyOps {
    let mut values: HashMap<&str, State> = HashMap::new();
    let mut out = KeyOps {
        ids: Vec::new(),
        ops: Vec::new(),
    };
    for &id in ids {
        let op: &Operation = &history.ops[id];
        if op.status == OpStatus::Fail || (op.f == OpKind::Read && op.status != OpStatus::Ok) {
            continue;
        }
        let action = match op.f {
            OpKind::Read => Action::Read(intern(&mut values, &op.value)),
            OpKind::Write => Action::Write(intern(&mut values, &op.value)),
            OpKind::Delete => Action::Write(ABSENT),
        };
        let ret = if op.status == OpStatus::Ok {
            op.complete.map(|c| c.index)
        } else {
            None
        };
        out.ids.push(id);
        out.ops.push(SearchOp {
            call: op.invoke.index,
            ret,
            action,
        });
    }
    out
}

/// Check one key, given its operation ids (in invoke order).
pub fn check_key(history: &History, key: &str, ids: &[usize], opts: &CheckOptions) -> KeyResult {
    let prepared = key_ops(history, ids);
    let (outcome, steps) = search::search(&prepared.ops, &opts.budget(opts.max_steps));
    let verdict = match outcome {
        Outcome::Linearizable => KeyVerdict::Ok,
        Outcome::Unknown(reason) => KeyVerdict::Unknown { reason },
        Outcome::Violation => {
            let counterexample = counterexample::explain(history, key, &prepared, steps, opts);
            KeyVerdict::Violation { counterexample }
        }
    };
    KeyResult {
        ops: ids.len(),
        steps,
        verdict,
    }
}

/// Check every key of `history` for linearizability of a register.
pub fn check_linearizability(history: &History, opts: &CheckOptions) -> LinReport {
    let groups = history.ops_by_key();
    let run =
        |(key, ids): &(&str, Vec<usize>)| (key.to_string(), check_key(history, key, ids, opts));
    let results: Vec<(String, KeyResult)> = if opts.parallel {
        groups.par_iter().map(run).collect()
    } else {
        groups.iter().map(run).collect()
    };
    let mut report = LinReport {
        verdict: Verdict::Linearizable,
        ops: history.ops.len(),
        keys: results.len(),
        ok_keys: 0,
        violation_keys: 0,
        unknown_keys: 0,
        steps: 0,
        results: BTreeMap::new(),
    };
    for (key, result) in results {
        let v = result.verdict_kind();
        match v {
            Verdict::Linearizable => report.ok_keys += 1,
            Verdict::Violation => report.violation_keys += 1,
            Verdict::Unknown => report.unknown_keys += 1,
        }
        report.verdict = report.verdict.max(v);
        report.steps += result.steps;
        report.results.insert(key, result);
    }
    report
}
