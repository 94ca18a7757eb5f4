//! One operation against one node: the request, the answer's [`Outcome`] and the history
//! events that record it.

use std::time::{Duration, Instant};

use ringkv_runtime::{
    encode_segment, outcome, ClientError, DataOp, HttpClient, HttpReply, Outcome,
};
use ringkv_sim::check::{EventType, HistoryEvent, OpKind};

use crate::history::Recorder;

/// An insert (`OpKind::Write`, with its value), query or delete of one key: the
/// simulator's workload operation, so workloads and histories share one type.
pub use ringkv_sim::workload::Op;

/// Send `op` to the node at `addr` (`host:port`) and classify its answer (the rule is
/// [`ringkv_runtime::outcome`](mod@ringkv_runtime::outcome)).
pub async fn send(http: &HttpClient, addr: &str, op: &Op) -> Outcome {
    outcome(data_op(op.f), request(http, addr, op).await)
}

/// Send `op` to the node at `addr` and return the raw answer. Keys and values go as
/// percent-encoded path segments.
pub async fn request(http: &HttpClient, addr: &str, op: &Op) -> Result<HttpReply, ClientError> {
    let key = encode_segment(&op.key);
    match op.f {
        OpKind::Write => {
            let value = encode_segment(op.value.as_deref().unwrap_or_default());
            http.post(&format!("http://{addr}/insert/{key}/{value}"), None)
                .await
        }
        OpKind::Read => http.get(&format!("http://{addr}/query/{key}")).await,
        OpKind::Delete => http.delete(&format!("http://{addr}/delete/{key}")).await,
    }
}

/// The operation the outcome rule reads, for a history operation kind.
pub fn data_op(f: OpKind) -> DataOp {
    match f {
        OpKind::Write => DataOp::Insert,
        OpKind::Read => DataOp::Query,
        OpKind::Delete => DataOp::Delete,
    }
}

/// The invoke event of `op` by `process` at `time` (ns).
pub fn invocation(process: u64, op: &Op, time: u64) -> HistoryEvent {
    HistoryEvent::invoke(process, op.f, &op.key, op.value.as_deref(), time)
}

/// The completion event of `op` by `process` at `time` (ns). An `ok` completion carries
/// the value written or read and the node and hops the answer named.
pub fn completion(process: u64, op: &Op, outcome: &Outcome, time: u64) -> HistoryEvent {
    let served = match outcome {
        Outcome::Ok(served) => served,
        Outcome::Fail(_) => {
            return HistoryEvent::new(process, EventType::Fail, op.f, &op.key, None, time)
        }
        Outcome::Info(_) => {
            return HistoryEvent::new(process, EventType::Info, op.f, &op.key, None, time)
        }
    };
    let value = match op.f {
        OpKind::Write => op.value.as_deref(),
        _ => served.value.as_deref(),
    };
    let mut event = HistoryEvent::new(process, EventType::Ok, op.f, &op.key, value, time);
    event.node = served.node.clone();
    event.hops = served.hops;
    event
}

/// An operation sent and recorded.
#[derive(Clone, Debug)]
pub struct Performed {
    /// Its index among the recorded operations (`History::ops[op_id]` of the history).
    pub op_id: usize,
    /// How it ended.
    pub outcome: Outcome,
    /// From just before the request to its whole answer.
    pub latency: Duration,
}

/// Send `op` to `addr` as history process `process`, recording its invoke and its
/// completion in `recorder`. After an `info` outcome the caller must go on under a fresh
/// process id ([`crate::ProcessIds::fresh`]).
pub async fn perform(
    http: &HttpClient,
    recorder: &Recorder,
    process: u64,
    addr: &str,
    op: &Op,
) -> Performed {
    let op_id = recorder.record(|time| invocation(process, op, time));
    let started = Instant::now();
    let answer = request(http, addr, op).await;
    let latency = started.elapsed();
    let outcome = outcome(data_op(op.f), answer);
    recorder.record(|time| completion(process, op, &outcome, time));
    Performed {
        op_id,
        outcome,
        latency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_runtime::{Cause, Served};

    fn write(value: &str) -> Op {
        Op {
            f: OpKind::Write,
            key: "k".into(),
            value: Some(value.into()),
        }
    }

    #[test]
    fn ok_completions_carry_the_value_and_where_it_was_served() {
        let served = Served {
            value: Some("read".into()),
            found: true,
            node: Some("n".into()),
            hops: Some(2),
        };
        let ok = Outcome::Ok(served);
        let w = completion(1, &write("v"), &ok, 5);
        assert_eq!(
            (w.kind, w.value.as_deref(), w.node.as_deref(), w.hops),
            (EventType::Ok, Some("v"), Some("n"), Some(2))
        );
        let read = Op {
            f: OpKind::Read,
            key: "k".into(),
            value: None,
        };
        assert_eq!(completion(1, &read, &ok, 5).value.as_deref(), Some("read"));
        let timeout = Cause::Transport(ClientError::Timeout {
            url: "u".into(),
            timeout_ms: 1,
        });
        let info = completion(1, &write("v"), &Outcome::Info(timeout), 5);
        assert_eq!(
            (info.kind, info.value, info.node),
            (EventType::Info, None, None)
        );
    }
}
