//! The JSON Lines history format: one event per line, parsed into operations.
//!
//! See `docs/history.md` for the contract. [`History::parse`] validates a history and
//! pairs every invoke with its completion; [`write_event`] writes one event line in the
//! canonical field order (`process`, `type`, `f`, `key`, `value`, `time`, then the
//! optional `node` and `hops`).

// Hash maps and sets here are lookups and memo tables: none is iterated where the order
// could reach a verdict, a report or a history (those are sorted or B-tree ordered).
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Deserializer, Serialize};

/// The kind of one history line: an invocation or one of the three completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client issued the operation.
    Invoke,
    /// The operation took effect (a write) or returned (a read).
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// Unknown outcome (e.g. a timeout): it may or may not have taken effect.
    Info,
}

/// The operation a line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Insert or overwrite the key's value.
    Write,
    /// Query the key's value (`null` when not found).
    Read,
    /// Remove the key (its value becomes absent, `null`).
    Delete,
}

impl OpKind {
    /// The name used in histories: `write`, `read` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Write => "write",
            OpKind::Read => "read",
            OpKind::Delete => "delete",
        }
    }
}

/// One line of a history, exactly as written by the simulator and the load client.
///
/// Unknown fields are ignored when reading. `value` accepts JSON strings and numbers
/// (numbers are kept in their JSON text form); `node` is kept only when it is a string
/// or a number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Client process id; at most one operation outstanding per process.
    pub process: u64,
    /// Invoke or completion.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Which operation.
    pub f: OpKind,
    /// The key operated on.
    pub key: String,
    /// Written value (write invoke), value read (read `ok`; `None` = not found), else `None`.
    #[serde(default, deserialize_with = "de_value")]
    pub value: Option<String>,
    /// Time in nanoseconds; non-decreasing along the history.
    pub time: u64,
    /// The node that served the operation, when known (used by the staleness report).
    #[serde(
        default,
        deserialize_with = "de_lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub node: Option<String>,
    /// Routing hops the request took, when known (informational).
    #[serde(
        default,
        deserialize_with = "de_hops",
        skip_serializing_if = "Option::is_none"
    )]
    pub hops: Option<u64>,
}

impl HistoryEvent {
    /// An invoke line. `value` is the written value for a write and `None` otherwise.
    pub fn invoke(process: u64, f: OpKind, key: &str, value: Option<&str>, time: u64) -> Self {
        Self::new(process, EventType::Invoke, f, key, value, time)
    }

    /// A line with every field given and no `node`/`hops`.
    pub fn new(
        process: u64,
        kind: EventType,
        f: OpKind,
        key: &str,
        value: Option<&str>,
        time: u64,
    ) -> Self {
        HistoryEvent {
            process,
            kind,
            f,
            key: key.to_string(),
            value: value.map(str::to_string),
            time,
            node: None,
            hops: None,
        }
    }
}

/// Write one event as a JSON line (with trailing newline) in the canonical field order.
pub fn write_event<W: Write + ?Sized>(out: &mut W, event: &HistoryEvent) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, event)?;
    out.write_all(b"\n")
}

fn json_scalar_to_string(v: serde_json::Value) -> Result<Option<String>, &'static str> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err("must be a string, a number or null"),
    }
}

fn de_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    json_scalar_to_string(v).map_err(|m| serde::de::Error::custom(format!("`value` {m}")))
}

fn de_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(json_scalar_to_string(v).unwrap_or(None))
}

fn de_hops<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_u64())
}

/// A malformed history: the 1-based line number and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("line {line}: {message}")]
pub struct HistoryError {
    /// 1-based line number in the input (blank lines count).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl HistoryError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        HistoryError {
            line,
            message: message.into(),
        }
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpStatus {
    /// Completed with `ok`.
    Ok,
    /// Completed with `fail`: never took effect.
    Fail,
    /// Completed with `info`: may or may not have taken effect.
    Info,
    /// No completion before the end of the history (treated like `info`).
    Pending,
}

impl OpStatus {
    /// True for `info` and pending operations, whose effect is unknown.
    pub fn is_indeterminate(self) -> bool {
        matches!(self, OpStatus::Info | OpStatus::Pending)
    }

    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            OpStatus::Ok => "ok",
            OpStatus::Fail => "fail",
            OpStatus::Info => "info",
            OpStatus::Pending => "pending",
        }
    }
}

/// Where an event sits in the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EventPos {
    /// 1-based line number.
    pub line: usize,
    /// 0-based position among the non-blank lines; this order defines precedence.
    pub index: usize,
    /// The event's `time` (ns).
    pub time: u64,
}

/// One operation: an invoke paired with its completion (if any).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Operation {
    /// Index in [`History::ops`] (operations are numbered in invoke order).
    pub id: usize,
    /// Client process id.
    pub process: u64,
    /// Which operation.
    pub f: OpKind,
    /// The key.
    pub key: String,
    /// Write: the value written. Read: the value returned (`None` = not found, or unknown
    /// when the read did not complete with `ok`). Delete: `None`.
    pub value: Option<String>,
    /// How it ended.
    pub status: OpStatus,
    /// The invoke event.
    pub invoke: EventPos,
    /// The completion event, if any.
    pub complete: Option<EventPos>,
    /// The node named on the completion line (else on the invoke line), if any.
    pub node: Option<String>,
}

impl Operation {
    /// Real-time precedence: `self` completed `ok` on a line before `other`'s invoke line,
    /// so it must be linearized before `other`. An `info` operation precedes nothing (it
    /// may take effect at any later point).
    pub fn precedes(&self, other: &Operation) -> bool {
        self.status == OpStatus::Ok && self.complete.is_some_and(|c| c.index < other.invoke.index)
    }
}

/// A validated history: every operation with its invoke and completion.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    /// Operations in invoke order.
    pub ops: Vec<Operation>,
    /// Number of events (non-blank lines).
    pub events: usize,
}

enum ProcState {
    Outstanding(usize),
    Retired(usize),
}

#[derive(Default)]
struct Builder {
    ops: Vec<Operation>,
    procs: HashMap<u64, ProcState>,
    last_time: Option<(u64, usize)>,
    events: usize,
}

impl Builder {
    fn push(&mut self, line: usize, ev: HistoryEvent) -> Result<(), HistoryError> {
        if let Some((t, l)) = self.last_time {
            if ev.time < t {
                let msg = format!(
                    "time {} is earlier than the previous event's time {t} (line {l})",
                    ev.time
                );
                return Err(HistoryError::new(line, msg));
            }
        }
        self.last_time = Some((ev.time, line));
        let pos = EventPos {
            line,
            index: self.events,
            time: ev.time,
        };
        self.events += 1;
        match ev.kind {
            EventType::Invoke => self.invoke(pos, ev),
            _ => self.complete(pos, ev),
        }
    }

    fn invoke(&mut self, pos: EventPos, ev: HistoryEvent) -> Result<(), HistoryError> {
        let line = pos.line;
        match self.procs.get(&ev.process) {
            Some(ProcState::Outstanding(id)) => {
                let prev = &self.ops[*id];
                let msg = format!(
                    "process {} invokes a {} while its {} of line {} is still outstanding",
                    ev.process,
                    ev.f.as_str(),
                    prev.f.as_str(),
                    prev.invoke.line
                );
                return Err(HistoryError::new(line, msg));
            }
            Some(ProcState::Retired(l)) => {
                let msg = format!(
                    "process {} is used again after its `info` completion on line {l} \
                     (a client continues under a fresh process id)",
                    ev.process
                );
                return Err(HistoryError::new(line, msg));
            }
            None => {}
        }
        let value = match ev.f {
            OpKind::Write => match ev.value {
                Some(v) => Some(v),
                None => return Err(HistoryError::new(line, "write invoke without a value")),
            },
            OpKind::Read | OpKind::Delete => None,
        };
        let id = self.ops.len();
        self.procs.insert(ev.process, ProcState::Outstanding(id));
        self.ops.push(Operation {
            id,
            process: ev.process,
            f: ev.f,
            key: ev.key,
            value,
            status: OpStatus::Pending,
            invoke: pos,
            complete: None,
            node: ev.node,
        });
        Ok(())
    }

    fn complete(&mut self, pos: EventPos, ev: HistoryEvent) -> Result<(), HistoryError> {
        let line = pos.line;
        let id = match self.procs.get(&ev.process) {
            Some(ProcState::Outstanding(id)) => *id,
            _ => {
                let msg = format!(
                    "`{}` completion of a {} by process {} without an outstanding invoke",
                    status_name(ev.kind),
                    ev.f.as_str(),
                    ev.process
                );
                return Err(HistoryError::new(line, msg));
            }
        };
        let op = &mut self.ops[id];
        if op.f != ev.f || op.key != ev.key {
            let msg = format!(
                "completion ({} of {:?}) does not match process {}'s outstanding invoke \
                 ({} of {:?} on line {})",
                ev.f.as_str(),
                ev.key,
                ev.process,
                op.f.as_str(),
                op.key,
                op.invoke.line
            );
            return Err(HistoryError::new(line, msg));
        }
        op.status = match ev.kind {
            EventType::Ok => OpStatus::Ok,
            EventType::Fail => OpStatus::Fail,
            _ => OpStatus::Info,
        };
        op.complete = Some(pos);
        if op.f == OpKind::Read && op.status == OpStatus::Ok {
            op.value = ev.value;
        }
        if ev.node.is_some() {
            op.node = ev.node;
        }
        if op.status == OpStatus::Info {
            self.procs.insert(ev.process, ProcState::Retired(line));
        } else {
            self.procs.remove(&ev.process);
        }
        Ok(())
    }

    fn finish(self) -> History {
        History {
            ops: self.ops,
            events: self.events,
        }
    }
}

fn status_name(kind: EventType) -> &'static str {
    match kind {
        EventType::Invoke => "invoke",
        EventType::Ok => "ok",
        EventType::Fail => "fail",
        EventType::Info => "info",
    }
}

fn parse_line(text: &str, line: usize) -> Result<HistoryEvent, HistoryError> {
    if !text.trim_start().starts_with('{') {
        return Err(HistoryError::new(line, "not a JSON object"));
    }
    serde_json::from_str(text).map_err(|e| HistoryError::new(line, json_error(&e)))
}

/// A serde_json error without its "at line 1" suffix (each line is parsed alone).
fn json_error(e: &serde_json::Error) -> String {
    let mut msg = e.to_string();
    if let Some(pos) = msg.rfind(" at line ") {
        msg.truncate(pos);
    }
    match e.classify() {
        serde_json::error::Category::Data => format!("{msg} (column {})", e.column()),
        _ => format!("invalid JSON: {msg} (column {})", e.column()),
    }
}

impl History {
    /// Parse and validate a JSON Lines history. Blank lines are skipped.
    ///
    /// Fails with the line number on bad JSON, an unknown `type` or `f`, a completion
    /// without an outstanding invoke (or of a different `f`/`key`), a second invoke while
    /// one is outstanding, reuse of a process after `info`, a write without a value, or
    /// time going backwards.
    pub fn parse<R: BufRead>(mut reader: R) -> Result<History, HistoryError> {
        let mut b = Builder::default();
        let mut buf = String::new();
        let mut line = 0usize;
        loop {
            buf.clear();
            line += 1;
            match reader.read_line(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(HistoryError::new(line, format!("cannot read: {e}"))),
            }
            let text = buf.trim_start_matches('\u{feff}').trim();
            if text.is_empty() {
                continue;
            }
            let ev = parse_line(text, line)?;
            b.push(line, ev)?;
        }
        Ok(b.finish())
    }

    /// Parse a history held in a string.
    pub fn parse_str(text: &str) -> Result<History, HistoryError> {
        Self::parse(text.as_bytes())
    }

    /// Validate in-memory events (the `n`-th event counts as line `n + 1`).
    pub fn from_events<I: IntoIterator<Item = HistoryEvent>>(
        events: I,
    ) -> Result<History, HistoryError> {
        let mut b = Builder::default();
        for (i, ev) in events.into_iter().enumerate() {
            b.push(i + 1, ev)?;
        }
        Ok(b.finish())
    }

    /// The distinct keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.ops.iter().map(|o| o.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Operation ids grouped by key (sorted by key; ids in invoke order).
    pub fn ops_by_key(&self) -> Vec<(&str, Vec<usize>)> {
        let mut map: HashMap<&str, Vec<usize>> = HashMap::new();
        for op in &self.ops {
            map.entry(op.key.as_str()).or_default().push(op.id);
        }
        let mut v: Vec<(&str, Vec<usize>)> = map.into_iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> HistoryError {
        match History::parse_str(text) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn check_parse_pairs_invokes_and_completions() {
        let text = r#"{"process": 1, "type": "invoke", "f": "write", "key": "k", "value": "v1", "time": 1}

{"process": 2, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 2}
{"process": 1, "type": "ok", "f": "write", "key": "k", "value": "v1", "time": 3, "node": "n1"}
{"process": 2, "type": "ok", "f": "read", "key": "k", "value": 7, "time": 4, "node": "n2", "hops": 3}
{"process": 3, "type": "invoke", "f": "delete", "key": "k", "value": null, "time": 4}
"#;
        let h = History::parse_str(text).unwrap();
        assert_eq!(h.events, 5);
        assert_eq!(h.ops.len(), 3);
        assert_eq!(h.ops[0].value.as_deref(), Some("v1"));
        assert_eq!(h.ops[1].value.as_deref(), Some("7"));
        assert_eq!(h.ops[1].node.as_deref(), Some("n2"));
        assert_eq!(h.ops[1].invoke.line, 3);
        assert_eq!(h.ops[2].status, OpStatus::Pending);
        assert!(!h.ops[0].precedes(&h.ops[1]));
        assert!(h.ops[0].precedes(&h.ops[2]));
    }

    #[test]
    fn check_parse_reports_line_numbers() {
        let inv = r#"{"process": 1, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 5}"#;
        assert_eq!(err(&format!("{inv}\n{{bad")).line, 2);
        let e = err(&inv.replace("invoke", "begin"));
        assert!(e.message.contains("unknown variant"), "{e}");
        let e = err(&inv.replace("read", "cas"));
        assert!(e.message.contains("unknown variant"), "{e}");
        let e = err(&inv.replace("invoke", "ok"));
        assert!(e.message.contains("without an outstanding invoke"), "{e}");
        let e = err(&format!("{inv}\n{inv}"));
        assert_eq!(e.line, 2);
        assert!(e.message.contains("still outstanding"), "{e}");
        let later = inv
            .replace("\"time\": 5", "\"time\": 4")
            .replace("\"process\": 1", "\"process\": 2");
        let e = err(&format!("{inv}\n\n{later}"));
        assert_eq!(e.line, 3);
        assert!(e.message.contains("earlier"), "{e}");
        let e = err(
            r#"{"process": 1, "type": "invoke", "f": "write", "key": "k", "value": null, "time": 5}"#,
        );
        assert!(e.message.contains("without a value"), "{e}");
        let e = err(
            r#"{"process": 1, "type": "invoke", "f": "write", "key": "k", "value": [1], "time": 5}"#,
        );
        assert!(e.message.contains("value"), "{e}");
        assert_eq!(err("[1,2]").message, "not a JSON object");
    }

    #[test]
    fn check_parse_rejects_reuse_after_info_and_mismatch() {
        let text = r#"{"process": 1, "type": "invoke", "f": "write", "key": "k", "value": "a", "time": 1}
{"process": 1, "type": "info", "f": "write", "key": "k", "value": "a", "time": 2}
{"process": 1, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 3}"#;
        assert!(err(text).message.contains("used again"));
        let text = r#"{"process": 1, "type": "invoke", "f": "write", "key": "k", "value": "a", "time": 1}
{"process": 1, "type": "ok", "f": "read", "key": "k", "value": "a", "time": 2}"#;
        assert!(err(text).message.contains("does not match"));
    }

    #[test]
    fn check_write_event_field_order() {
        let mut ev = HistoryEvent::invoke(3, OpKind::Write, "k", Some("v1"), 1000);
        let mut out = Vec::new();
        write_event(&mut out, &ev).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"process\":3,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"k\",\"value\":\"v1\",\"time\":1000}\n"
        );
        ev.kind = EventType::Ok;
        ev.node = Some("n1".into());
        ev.hops = Some(2);
        let mut out = Vec::new();
        write_event(&mut out, &ev).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.ends_with("\"time\":1000,\"node\":\"n1\",\"hops\":2}\n"),
            "{s}"
        );
        let back: HistoryEvent = serde_json::from_str(&s).unwrap();
        assert_eq!(back, ev);
    }
}
