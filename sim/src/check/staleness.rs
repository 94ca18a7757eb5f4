//! Staleness of reads, for eventually consistent histories.
//!
//! For a read `r` (completed `ok`) of key `k`, the *completed-before* writes are the
//! `ok` writes and deletes of `k` whose completion line comes before `r`'s invoke line.
//! The *latest* of them are those not followed (in real time) by another completed-before
//! write; with no completed-before write, the latest value is the initial `null`.
//! `r` is **fresh** when it returns the value of a latest write, or of a write concurrent
//! with it (invoked before `r` completed and not completed before `r` was invoked,
//! `info`/pending writes included). Otherwise it is **stale** when it returns the value
//! of an older completed-before write (or the initial `null`), and **impossible** when it
//! returns a value no write before or during it could have produced.
//!
//! For a stale read returning the value of completed-before write `w` (the last such):
//! the writes that *supersede* `w` are the completed-before writes invoked after `w`
//! completed. Staleness in versions is their number; staleness in time is how long
//! before `r`'s invoke the first of them completed.

// Hash maps and sets here are lookups and memo tables: none is iterated where the order
// could reach a verdict, a report or a history (those are sorted or B-tree ordered).
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::history::{History, OpKind, OpStatus, Operation};

/// Staleness figures for a set of reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StaleStats {
    /// Reads that completed `ok`.
    pub reads: usize,
    /// Stale reads (see the module docs).
    pub stale_reads: usize,
    /// Reads of a value no earlier or concurrent write could have produced.
    pub impossible_reads: usize,
    /// `stale_reads / reads` (0 when there are no reads).
    pub stale_fraction: f64,
    /// Largest number of versions a stale read was behind.
    pub max_versions_behind: u64,
    /// Mean versions behind, over stale reads.
    pub mean_versions_behind: f64,
    /// Largest staleness in time (ns).
    pub max_staleness_ns: u64,
    /// Mean staleness in time (ns), over stale reads.
    pub mean_staleness_ns: f64,
}

/// The staleness report of a history.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StalenessReport {
    /// Over all reads.
    #[serde(flatten)]
    pub total: StaleStats,
    /// Per node that served reads (only reads whose history line names a `node`).
    pub per_node: BTreeMap<String, StaleStats>,
}

#[derive(Default)]
struct Acc {
    reads: usize,
    stale: usize,
    impossible: usize,
    max_versions: u64,
    sum_versions: u128,
    max_ns: u64,
    sum_ns: u128,
}

impl Acc {
    fn add(&mut self, class: Class) {
        self.reads += 1;
        match class {
            Class::Fresh => {}
            Class::Impossible => self.impossible += 1,
            Class::Stale { versions, ns } => {
                self.stale += 1;
                self.max_versions = self.max_versions.max(versions);
                self.sum_versions += u128::from(versions);
                self.max_ns = self.max_ns.max(ns);
                self.sum_ns += u128::from(ns);
            }
        }
    }

    fn finish(&self) -> StaleStats {
        let mean = |sum: u128, n: usize| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
        StaleStats {
            reads: self.reads,
            stale_reads: self.stale,
            impossible_reads: self.impossible,
            stale_fraction: mean(self.stale as u128, self.reads),
            max_versions_behind: self.max_versions,
            mean_versions_behind: mean(self.sum_versions, self.stale),
            max_staleness_ns: self.max_ns,
            mean_staleness_ns: mean(self.sum_ns, self.stale),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Fresh,
    Stale { versions: u64, ns: u64 },
    Impossible,
}

/// A completed `ok` write or delete.
struct Done<'a> {
    invoke: usize,
    complete: usize,
    time: u64,
    value: Option<&'a str>,
}

/// One key's writes, indexed for read classification.
struct KeyIndex<'a> {
    /// Completed writes in completion order.
    done: Vec<Done<'a>>,
    /// `max_invoke[k]` = largest invoke position among `done[..k]`.
    max_invoke: Vec<usize>,
    /// Positions in `done` of each value's writes.
    done_by_value: HashMap<Option<&'a str>, Vec<usize>>,
    /// (invoke, completion or MAX) of each non-failed write, by value.
    spans_by_value: HashMap<Option<&'a str>, Vec<(usize, usize)>>,
}

fn written(o: &Operation) -> Option<&str> {
    match o.f {
        OpKind::Write => o.value.as_deref(),
        _ => None,
    }
}

impl<'a> KeyIndex<'a> {
    fn new(ops: &[&'a Operation]) -> Self {
        let writes = ops
            .iter()
            .filter(|o| o.f != OpKind::Read && o.status != OpStatus::Fail);
        let mut idx = KeyIndex {
            done: Vec::new(),
            max_invoke: vec![0],
            done_by_value: HashMap::new(),
            spans_by_value: HashMap::new(),
        };
        for o in writes {
            let end = o.complete.filter(|_| o.status == OpStatus::Ok);
            let span = (o.invoke.index, end.map_or(usize::MAX, |c| c.index));
            idx.spans_by_value.entry(written(o)).or_default().push(span);
            if let Some(c) = end {
                let d = Done {
                    invoke: o.invoke.index,
                    complete: c.index,
                    time: c.time,
                    value: written(o),
                };
                idx.done.push(d);
            }
        }
        idx.done.sort_by_key(|d| d.complete);
        for (p, d) in idx.done.iter().enumerate() {
            let m = idx.max_invoke[p].max(d.invoke);
            idx.max_invoke.push(m);
            idx.done_by_value.entry(d.value).or_default().push(p);
        }
        idx
    }

    fn classify(&self, r: &Operation) -> Class {
        let (i, c) = match r.complete {
            Some(c) => (r.invoke.index, c.index),
            None => return Class::Fresh,
        };
        let v = r.value.as_deref();
        let k = self.done.partition_point(|d| d.complete < i);
        let latest = if k == 0 {
            v.is_none()
        } else {
            let m = self.max_invoke[k];
            let j = self.done[..k].partition_point(|d| d.complete <= m);
            self.done[j..k].iter().any(|d| d.value == v)
        };
        let concurrent = self
            .spans_by_value
            .get(&v)
            .is_some_and(|s| s.iter().any(|&(wi, wc)| wi < c && wc > i));
        if latest || concurrent {
            return Class::Fresh;
        }
        self.stale(r, v, k)
    }

    fn stale(&self, r: &Operation, v: Option<&str>, k: usize) -> Class {
        let last = self.done_by_value.get(&v).and_then(|ps| {
            let n = ps.partition_point(|&p| p < k);
            n.checked_sub(1).map(|q| ps[q])
        });
        let (from, after) = match (last, v) {
            (Some(p), _) => (p + 1, self.done[p].complete),
            (None, None) => (0, 0),
            (None, Some(_)) => return Class::Impossible,
        };
        let mut versions = 0u64;
        let mut first_time = u64::MAX;
        for d in &self.done[from..k] {
            if last.is_none() || d.invoke > after {
                versions += 1;
                first_time = first_time.min(d.time);
            }
        }
        if versions == 0 {
            // Cannot happen for a read that is not fresh; classify conservatively.
            return Class::Fresh;
        }
        Class::Stale {
            versions,
            ns: r.invoke.time.saturating_sub(first_time),
        }
    }
}

/// Classify every `ok` read of the history and aggregate, overall and per node.
pub fn staleness(history: &History) -> StalenessReport {
    let mut total = Acc::default();
    let mut nodes: BTreeMap<String, Acc> = BTreeMap::new();
    for (_, ids) in history.ops_by_key() {
        let ops: Vec<&Operation> = ids.iter().map(|&i| &history.ops[i]).collect();
        let index = KeyIndex::new(&ops);
        for r in ops
            .iter()
            .filter(|o| o.f == OpKind::Read && o.status == OpStatus::Ok)
        {
            let class = index.classify(r);
            total.add(class);
            if let Some(n) = &r.node {
                nodes.entry(n.clone()).or_default().add(class);
            }
        }
    }
    StalenessReport {
        total: total.finish(),
        per_node: nodes.into_iter().map(|(n, a)| (n, a.finish())).collect(),
    }
}
