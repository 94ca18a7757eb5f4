//! Lost acknowledged writes, told from the final reads (`SimConfig::final_reads`).
//!
//! Once a run has settled, the simulator reads every key the workload wrote or deleted,
//! once. Every workload operation was invoked before those reads, and every `ok` one
//! completed before them, so the value a final read may return is easy to state:
//!
//! - an `ok` write or delete `o` is **superseded** when another `ok` write or delete of the
//!   key was invoked after `o` completed (history order); an `info` or pending one is
//!   never superseded (it may take effect at any later point);
//! - the read may return the value of any write (`ok` or `info`) that is not superseded,
//!   `null` if a delete that is not superseded exists, or `null` if no write or delete of
//!   the key completed `ok` (the initial state).
//!
//! A key whose final read (completed `ok`) returns anything else, although some write or
//! delete of it was acknowledged, has **lost an acknowledged write** (or delete). Under
//! chain replication the same history is also a linearizability violation; under
//! eventual consistency this is the check that acknowledged writes survive and replicas
//! converge.

use std::collections::BTreeMap;

use crate::check::{History, OpKind, OpStatus, Operation};

/// Keys described in [`LostWrites::examples`].
pub const EXAMPLES_MAX: usize = 10;

/// What the final reads found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LostWrites {
    /// Final reads that completed `ok`.
    pub reads: u64,
    /// Keys whose final read contradicts an acknowledged write or delete.
    pub keys: u64,
    /// The first such keys, described.
    pub examples: Vec<String>,
}

fn show(value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "null".into(),
    }
}

/// One key's final reads, judged against the writes and deletes before them.
#[derive(Clone, Debug)]
pub struct KeyFinalReads<'h> {
    /// The key.
    pub key: &'h str,
    /// Writes and deletes of the key acknowledged (`ok`) before the final reads.
    pub acked: usize,
    /// The writes and deletes whose value a final read may return: every one not
    /// superseded (see the module docs). Empty when none was acknowledged.
    pub current: Vec<&'h Operation>,
    /// The final reads of the key that completed `ok`.
    pub reads: Vec<&'h Operation>,
    /// The first of them that contradicts an acknowledged write or delete, if any.
    pub contradicting: Option<&'h Operation>,
}

impl KeyFinalReads<'_> {
    /// Whether a final read contradicts an acknowledged write or delete: one is lost.
    pub fn lost(&self) -> bool {
        self.contradicting.is_some()
    }

    /// What was read and what the acknowledged history allows, for a key that lost a
    /// write (`None` for one that did not).
    pub fn describe(&self) -> Option<String> {
        let read = self.contradicting?;
        let expected: Vec<String> = self
            .current
            .iter()
            .map(|o| match o.f {
                OpKind::Write => format!("{} ({})", show(o.value.as_deref()), o.status.as_str()),
                _ => format!("null (delete, {})", o.status.as_str()),
            })
            .collect();
        Some(format!(
            "key {:?}: the final read through {} (process {}, line {}) returned {}; \
             acknowledged history allows {}",
            self.key,
            read.node.as_deref().unwrap_or("?"),
            read.process,
            read.invoke.line,
            show(read.value.as_deref()),
            expected.join(" or ")
        ))
    }
}

/// Every key of `history`, in key order, with its final reads — the `ok` reads invoked at
/// or after history event `from_event` — judged against the writes and deletes invoked
/// before it (see the module docs).
pub fn final_reads_by_key(history: &History, from_event: usize) -> Vec<KeyFinalReads<'_>> {
    let mut by_key: BTreeMap<&str, (Vec<&Operation>, Vec<&Operation>)> = BTreeMap::new();
    for op in &history.ops {
        let entry = by_key.entry(op.key.as_str()).or_default();
        if op.invoke.index >= from_event {
            if op.f == OpKind::Read && op.status == OpStatus::Ok {
                entry.1.push(op);
            }
        } else if op.f != OpKind::Read && op.status != OpStatus::Fail {
            entry.0.push(op);
        }
    }
    by_key
        .into_iter()
        .map(|(key, (writes, reads))| judge(key, &writes, reads))
        .collect()
}

fn judge<'h>(
    key: &'h str,
    writes: &[&'h Operation],
    reads: Vec<&'h Operation>,
) -> KeyFinalReads<'h> {
    let acked: Vec<&Operation> = writes
        .iter()
        .copied()
        .filter(|o| o.status == OpStatus::Ok)
        .collect();
    if acked.is_empty() {
        return KeyFinalReads {
            key,
            acked: 0,
            current: Vec::new(),
            reads,
            contradicting: None,
        };
    }
    let last_acked_invoke = acked.iter().map(|o| o.invoke.index).max().unwrap_or(0);
    let current: Vec<&Operation> = writes
        .iter()
        .copied()
        .filter(|o| {
            o.status != OpStatus::Ok || o.complete.is_none_or(|c| c.index > last_acked_invoke)
        })
        .collect();
    let allowed = |value: Option<&str>| {
        current.iter().any(|o| match o.f {
            OpKind::Write => o.value.as_deref() == value && value.is_some(),
            _ => value.is_none(),
        })
    };
    let contradicting = reads.iter().copied().find(|r| !allowed(r.value.as_deref()));
    KeyFinalReads {
        key,
        acked: acked.len(),
        current,
        reads,
        contradicting,
    }
}

/// Why an eventual-consistency key lost an acknowledged write (see [`eventual_loss`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventualLoss {
    /// Every acknowledged write the final read should have shown was held only by nodes
    /// that then crashed (memory only): the primary acknowledges once it has a write, and
    /// a primary that crashes before it replicates, or a write that reached only the
    /// replicas on its side of a partition before they all crashed, is gone. By design
    /// without data directories, not a failure.
    AllCopiesCrashed,
    /// The value read was written on another primary less than the clock skew before
    /// the acknowledged writes it overtook: last-writer-wins orders writes by
    /// hybrid-clock versions, which follow real time only up to the nodes' clock skew.
    /// By design, not a failure.
    WithinSkew,
    /// Neither: a replicated write was lost. A failure.
    Lost,
}

/// Classify a key that lost an acknowledged write under eventual consistency.
/// `lost_in_crash(value, acker, acked_at)` says whether every node that held `value`,
/// acknowledged by node `acker` at `acked_at`, crashed after it had it; `skew_ns(t)`
/// bounds the clock skew between two nodes at virtual time `t`.
pub fn eventual_loss(
    key: &KeyFinalReads<'_>,
    history: &History,
    lost_in_crash: impl Fn(&str, Option<&str>, u64) -> bool,
    skew_ns: impl Fn(u64) -> u64,
) -> EventualLoss {
    let Some(read) = key.contradicting else {
        return EventualLoss::Lost;
    };
    let acked: Vec<&Operation> = key
        .current
        .iter()
        .copied()
        .filter(|o| o.status == OpStatus::Ok)
        .collect();
    let all_copies_crashed = !acked.is_empty()
        && acked
            .iter()
            .all(|o| match (o.f, o.value.as_deref(), o.complete) {
                (OpKind::Write, Some(v), Some(c)) => lost_in_crash(v, o.node.as_deref(), c.time),
                _ => false,
            });
    if all_copies_crashed {
        return EventualLoss::AllCopiesCrashed;
    }
    let Some(value) = read.value.as_deref() else {
        return EventualLoss::Lost;
    };
    let written = history
        .ops
        .iter()
        .filter(|o| o.key == key.key && o.f == OpKind::Write)
        .find(|o| o.value.as_deref() == Some(value));
    let within = written.is_some_and(|x| {
        !acked.is_empty()
            && acked.iter().all(|w| {
                w.complete.is_some_and(|c| {
                    x.node != w.node && c.time < x.invoke.time.saturating_add(skew_ns(c.time))
                })
            })
    });
    match within {
        true => EventualLoss::WithinSkew,
        false => EventualLoss::Lost,
    }
}

/// Count the keys whose final read — a read invoked at or after history event
/// `from_event` — contradicts an acknowledged write (see the module docs).
pub fn lost_acked_writes(history: &History, from_event: usize) -> LostWrites {
    let mut lost = LostWrites::default();
    for key in final_reads_by_key(history, from_event) {
        lost.reads += key.reads.len() as u64;
        let Some(example) = key.describe() else {
            continue;
        };
        lost.keys += 1;
        if lost.examples.len() < EXAMPLES_MAX {
            lost.examples.push(example);
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(text: &str, from: usize) -> LostWrites {
        lost_acked_writes(&History::parse_str(text).unwrap(), from)
    }

    const W: &str = r#"
{"process":1,"type":"invoke","f":"write","key":"a","value":"1","time":1}
{"process":1,"type":"ok","f":"write","key":"a","value":"1","time":2}
{"process":2,"type":"invoke","f":"write","key":"a","value":"2","time":3}
{"process":2,"type":"ok","f":"write","key":"a","value":"2","time":4}
"#;

    fn with_read(prefix: &str, value: &str) -> String {
        format!(
            "{prefix}{{\"process\":9,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"a\",\"value\":null,\"time\":10}}\n\
             {{\"process\":9,\"type\":\"ok\",\"f\":\"read\",\"key\":\"a\",\"value\":{value},\"time\":11}}\n"
        )
    }

    #[test]
    fn the_latest_acknowledged_value_is_kept() {
        let r = lost(&with_read(W, "\"2\""), 4);
        assert_eq!((r.reads, r.keys), (1, 0));
    }

    #[test]
    fn null_or_a_superseded_value_is_a_lost_write() {
        for value in ["null", "\"1\"", "\"9\""] {
            let r = lost(&with_read(W, value), 4);
            assert_eq!(r.keys, 1, "{value}");
            assert!(r.examples[0].contains("\"2\" (ok)"), "{:?}", r.examples);
        }
    }

    #[test]
    fn unknown_outcomes_and_deletes_are_allowed() {
        let info = r#"
{"process":1,"type":"invoke","f":"write","key":"a","value":"1","time":1}
{"process":1,"type":"ok","f":"write","key":"a","value":"1","time":2}
{"process":2,"type":"invoke","f":"write","key":"a","value":"2","time":3}
{"process":2,"type":"info","f":"write","key":"a","value":"2","time":4}
{"process":3,"type":"invoke","f":"delete","key":"a","value":null,"time":5}
{"process":3,"type":"info","f":"delete","key":"a","value":null,"time":6}
"#;
        for value in ["null", "\"1\"", "\"2\""] {
            assert_eq!(lost(&with_read(info, value), 6).keys, 0, "{value}");
        }
        let deleted = r#"
{"process":1,"type":"invoke","f":"write","key":"a","value":"1","time":1}
{"process":1,"type":"ok","f":"write","key":"a","value":"1","time":2}
{"process":3,"type":"invoke","f":"delete","key":"a","value":null,"time":5}
{"process":3,"type":"ok","f":"delete","key":"a","value":null,"time":6}
"#;
        assert_eq!(lost(&with_read(deleted, "null"), 4).keys, 0);
        assert_eq!(lost(&with_read(deleted, "\"1\""), 4).keys, 1);
    }

    /// `1` is acknowledged, then `2` is invoked and acknowledged; `3`, invoked before both,
    /// is acknowledged last. `1` is overwritten by `2` whatever the order, so only `2` or
    /// `3` may be read: the write that completed last does not make older ones current.
    #[test]
    fn an_acknowledged_write_followed_by_another_is_superseded() {
        let h = r#"
{"process":3,"type":"invoke","f":"write","key":"a","value":"3","time":1}
{"process":1,"type":"invoke","f":"write","key":"a","value":"1","time":2}
{"process":1,"type":"ok","f":"write","key":"a","value":"1","time":3}
{"process":2,"type":"invoke","f":"write","key":"a","value":"2","time":4}
{"process":2,"type":"ok","f":"write","key":"a","value":"2","time":5}
{"process":3,"type":"ok","f":"write","key":"a","value":"3","time":6}
"#;
        assert_eq!(lost(&with_read(h, "\"1\""), 6).keys, 1);
        for value in ["\"2\"", "\"3\""] {
            assert_eq!(lost(&with_read(h, value), 6).keys, 0, "{value}");
        }
        let history = History::parse_str(&with_read(h, "\"1\"")).unwrap();
        let keys = final_reads_by_key(&history, 6);
        assert_eq!(keys.len(), 1);
        let a = &keys[0];
        assert_eq!((a.key, a.acked, a.reads.len()), ("a", 3, 1));
        let current: Vec<_> = a.current.iter().map(|o| o.value.as_deref()).collect();
        assert_eq!(current, [Some("3"), Some("2")]);
        assert!(a.lost());
        assert!(a.describe().is_some_and(|d| d.contains("returned \"1\"")));
    }

    #[test]
    fn keys_without_an_acknowledged_write_are_not_counted() {
        let failed = r#"
{"process":1,"type":"invoke","f":"write","key":"a","value":"1","time":1}
{"process":1,"type":"fail","f":"write","key":"a","value":"1","time":2}
"#;
        assert_eq!(lost(&with_read(failed, "null"), 2).keys, 0);
    }

    /// Node A writes `1` at 1,000 ns; node B writes `2` at 1,010 ns and acknowledges it
    /// at 1,020 ns; the final read returns `1`.
    const OVERTAKEN: &str = r#"
{"process":1,"type":"invoke","f":"write","key":"a","value":"1","time":1000}
{"process":1,"type":"ok","f":"write","key":"a","value":"1","time":1001,"node":"A"}
{"process":2,"type":"invoke","f":"write","key":"a","value":"2","time":1010}
{"process":2,"type":"ok","f":"write","key":"a","value":"2","time":1020,"node":"B"}
"#;

    /// `OVERTAKEN` with a final read of `value` after it.
    fn overtaken_then_read(value: &str) -> String {
        format!(
            "{OVERTAKEN}{{\"process\":9,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"a\",\"value\":null,\"time\":2000}}\n\
             {{\"process\":9,\"type\":\"ok\",\"f\":\"read\",\"key\":\"a\",\"value\":{value},\"time\":2001}}\n"
        )
    }

    fn classify(text: &str, crashed: bool, skew: u64) -> EventualLoss {
        let history = History::parse_str(text).unwrap();
        let keys = final_reads_by_key(&history, 4);
        assert!(keys[0].lost());
        eventual_loss(&keys[0], &history, |_, _, _| crashed, |_| skew)
    }

    #[test]
    fn an_eventual_loss_is_by_design_only_when_every_copy_crashed_or_within_the_skew() {
        let read_1 = overtaken_then_read("\"1\"");
        assert_eq!(classify(&read_1, true, 0), EventualLoss::AllCopiesCrashed);
        // `2` was acknowledged 20 ns after `1` began: within a 30 ns skew, not a 10 ns one.
        assert_eq!(classify(&read_1, false, 30), EventualLoss::WithinSkew);
        assert_eq!(classify(&read_1, false, 10), EventualLoss::Lost);
        // One primary orders its own writes: no skew between them.
        let same_node = read_1.replace(r#""node":"B""#, r#""node":"A""#);
        assert_eq!(classify(&same_node, false, 30), EventualLoss::Lost);
        // A final read of nothing is no write's value.
        assert_eq!(
            classify(&overtaken_then_read("null"), false, 30),
            EventualLoss::Lost
        );
    }
}
