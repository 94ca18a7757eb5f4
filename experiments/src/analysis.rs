//! Per-read analysis of a history: fresh, stale or impossible (the checker's staleness
//! definitions, `docs/history.md`, applied read by read), the time since the latest
//! completed write, and the reference implementation's own "stale" rule for comparison.

use std::collections::{BTreeMap, HashMap};

use ringkv_sim::check::{History, OpKind, OpStatus, Operation};

/// What a read returned, judged against the writes around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadClass {
    /// A latest completed-before value, or the value of a concurrent write.
    Fresh,
    /// An older completed-before value (or the initial absent value after a write).
    Stale,
    /// A value no write before or during the read wrote.
    Impossible,
}

impl ReadClass {
    /// `fresh`, `stale` or `impossible`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadClass::Fresh => "fresh",
            ReadClass::Stale => "stale",
            ReadClass::Impossible => "impossible",
        }
    }
}

/// One `ok` read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadInfo {
    /// Index into `History::ops`.
    pub op: usize,
    /// Fresh, stale or impossible.
    pub class: ReadClass,
    /// The read's invoke time minus the completion time of the latest write (or delete)
    /// of its key that completed before the read was invoked; `None` when none had.
    pub since_write_ns: Option<u64>,
}

fn is_mutation(op: &Operation) -> bool {
    matches!(op.f, OpKind::Write | OpKind::Delete)
}

/// The value a write or delete leaves behind.
fn written(op: &Operation) -> Option<&str> {
    match op.f {
        OpKind::Write => op.value.as_deref(),
        _ => None,
    }
}

/// Classify every read that completed `ok`, in history order.
pub fn classify_reads(history: &History) -> Vec<ReadInfo> {
    let mut out = Vec::new();
    for (_, ids) in history.ops_by_key() {
        let ops: Vec<&Operation> = ids.iter().map(|&i| &history.ops[i]).collect();
        let mutations: Vec<&Operation> = ops.iter().copied().filter(|o| is_mutation(o)).collect();
        for read in ops
            .iter()
            .filter(|o| o.f == OpKind::Read && o.status == OpStatus::Ok)
        {
            let Some(read_end) = read.complete else {
                continue;
            };
            let before: Vec<&Operation> = mutations
                .iter()
                .copied()
                .filter(|w| w.precedes(read))
                .collect();
            let latest = before
                .iter()
                .filter(|w| !before.iter().any(|w2| w.precedes(w2)));
            let mut fresh_values: Vec<Option<&str>> = latest.map(|w| written(w)).collect();
            if before.is_empty() {
                fresh_values.push(None);
            }
            let concurrent = mutations.iter().filter(|w| {
                w.status != OpStatus::Fail && w.invoke.index < read_end.index && !w.precedes(read)
            });
            fresh_values.extend(concurrent.map(|w| written(w)));
            let value = read.value.as_deref();
            let class = if fresh_values.contains(&value) {
                ReadClass::Fresh
            } else if value.is_none() || before.iter().any(|w| written(w) == value) {
                ReadClass::Stale
            } else {
                ReadClass::Impossible
            };
            let last_write_end = before
                .iter()
                .filter_map(|w| w.complete.map(|c| c.time))
                .max();
            out.push(ReadInfo {
                op: read.id,
                class,
                since_write_ns: last_write_end.map(|t| read.invoke.time.saturating_sub(t)),
            });
        }
    }
    out.sort_by_key(|r| r.op);
    out
}

/// Reads counted stale by the reference experiment's rule: a client that wrote a key and
/// later reads a value other than the last one it wrote itself. Wrong under concurrency
/// (another client's newer write is not stale), kept only for comparison.
pub fn reference_rule_stale(history: &History) -> usize {
    let mut last_written: HashMap<(u64, &str), Option<&str>> = HashMap::new();
    let mut stale = 0;
    for op in &history.ops {
        match (op.f, op.status) {
            (OpKind::Write, OpStatus::Ok) => {
                last_written.insert((op.process, op.key.as_str()), op.value.as_deref());
            }
            (OpKind::Read, OpStatus::Ok) => {
                if let Some(mine) = last_written.get(&(op.process, op.key.as_str())) {
                    if *mine != op.value.as_deref() {
                        stale += 1;
                    }
                }
            }
            _ => {}
        }
    }
    stale
}

/// Operation counts of a history by kind and outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Operations.
    pub ops: usize,
    /// Writes and deletes.
    pub writes: usize,
    /// Reads.
    pub reads: usize,
    /// Completed `ok`.
    pub ok: usize,
    /// Completed `info` or never completed.
    pub info: usize,
    /// Completed `fail`.
    pub fail: usize,
}

/// Count the operations of `history`.
pub fn counts(history: &History) -> Counts {
    let mut c = Counts::default();
    for op in &history.ops {
        c.ops += 1;
        if op.f == OpKind::Read {
            c.reads += 1;
        } else {
            c.writes += 1;
        }
        match op.status {
            OpStatus::Ok => c.ok += 1,
            OpStatus::Fail => c.fail += 1,
            OpStatus::Info | OpStatus::Pending => c.info += 1,
        }
    }
    c
}

/// Throughput figures of the operations of one kind in a history: ops completed `ok`,
/// the span from the first invoke to the last completion (ns), latency percentiles (ns).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Span {
    /// Operations of the kind.
    pub ops: usize,
    /// Of them, completed `ok`.
    pub ok: usize,
    /// First invoke to last completion, ns.
    pub span_ns: u64,
    /// Median latency of `ok` operations, ns.
    pub p50_ns: u64,
    /// 99th percentile latency of `ok` operations, ns.
    pub p99_ns: u64,
}

impl Span {
    /// `ops / span` in operations per second.
    pub fn throughput(&self) -> f64 {
        if self.span_ns == 0 {
            0.0
        } else {
            self.ops as f64 / (self.span_ns as f64 / 1e9)
        }
    }
}

/// The span of the operations of kind `f` in `history`.
pub fn span(history: &History, f: OpKind) -> Span {
    let ops: Vec<&Operation> = history.ops.iter().filter(|o| o.f == f).collect();
    let first = ops.iter().map(|o| o.invoke.time).min().unwrap_or(0);
    let last = ops
        .iter()
        .filter_map(|o| o.complete.map(|c| c.time))
        .max()
        .unwrap_or(first);
    let mut latencies: Vec<u64> = ops
        .iter()
        .filter(|o| o.status == OpStatus::Ok)
        .filter_map(|o| o.complete.map(|c| c.time - o.invoke.time))
        .collect();
    latencies.sort_unstable();
    Span {
        ops: ops.len(),
        ok: latencies.len(),
        span_ns: last - first,
        p50_ns: percentile(&latencies, 50.0),
        p99_ns: percentile(&latencies, 99.0),
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    ringkv_sim::summary::percentile(sorted, p)
}

/// Minimum, median and maximum of some samples (`NaN`s when empty).
pub fn min_median_max(samples: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (v[0], median, v[n - 1])
}

/// Five-number summary: minimum, first quartile, median, third quartile, maximum
/// (quartiles by linear interpolation; `NaN`s when empty).
pub fn five_numbers(samples: &[f64]) -> [f64; 5] {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return [f64::NAN; 5];
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (v.len() - 1) as f64;
        let (i, frac) = (pos.floor() as usize, pos.fract());
        if i + 1 < v.len() {
            v[i] + frac * (v[i + 1] - v[i])
        } else {
            v[i]
        }
    };
    [v[0], q(0.25), q(0.5), q(0.75), v[v.len() - 1]]
}

/// Group values by a key, keeping key order.
pub fn group<K: Ord, V>(items: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, Vec<V>> {
    let mut map: BTreeMap<K, Vec<V>> = BTreeMap::new();
    for (k, v) in items {
        map.entry(k).or_default().push(v);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(text: &str) -> History {
        History::parse_str(text).unwrap()
    }

    #[test]
    fn reads_are_classified_like_the_checker() {
        let h = history(
            r#"
{"process":1,"type":"invoke","f":"write","key":"k","value":"a","time":10}
{"process":1,"type":"ok","f":"write","key":"k","value":"a","time":20}
{"process":1,"type":"invoke","f":"write","key":"k","value":"b","time":30}
{"process":1,"type":"ok","f":"write","key":"k","value":"b","time":40}
{"process":2,"type":"invoke","f":"read","key":"k","value":null,"time":50}
{"process":2,"type":"ok","f":"read","key":"k","value":"a","time":60}
{"process":2,"type":"invoke","f":"read","key":"k","value":null,"time":70}
{"process":1,"type":"invoke","f":"write","key":"k","value":"c","time":75}
{"process":2,"type":"ok","f":"read","key":"k","value":"c","time":80}
{"process":2,"type":"invoke","f":"read","key":"k","value":null,"time":90}
{"process":2,"type":"ok","f":"read","key":"k","value":"zzz","time":95}
"#,
        );
        let reads = classify_reads(&h);
        let classes: Vec<ReadClass> = reads.iter().map(|r| r.class).collect();
        assert_eq!(
            classes,
            [ReadClass::Stale, ReadClass::Fresh, ReadClass::Impossible]
        );
        assert_eq!(reads[0].since_write_ns, Some(10));
        let stale = ringkv_sim::check::staleness(&h);
        assert_eq!(stale.total.stale_reads, 1);
        assert_eq!(stale.total.impossible_reads, 1);
        // Process 2 never wrote k, so the reference's rule sees nothing stale.
        assert_eq!(reference_rule_stale(&h), 0);
    }

    #[test]
    fn spread_of_samples() {
        assert_eq!(min_median_max(&[3.0, 1.0, 2.0, 10.0]), (1.0, 2.5, 10.0));
        assert!(min_median_max(&[]).0.is_nan());
        assert_eq!(
            five_numbers(&[1.0, 2.0, 3.0, 4.0, 5.0]),
            [1.0, 2.0, 3.0, 4.0, 5.0]
        );
        assert_eq!(five_numbers(&[4.0, 1.0]), [1.0, 1.75, 2.5, 3.25, 4.0]);
    }
}
