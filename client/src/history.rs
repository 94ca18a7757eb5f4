//! Recording what concurrent clients saw as one history (`docs/history.md`).
//!
//! Times are nanoseconds since the recorder was made, read under the lock that appends
//! the event, so they never go backwards along the history even with many clients.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringkv_sim::check::{write_event, EventType, HistoryEvent};

/// Buffer of a history file: large, since a busy load writes many short lines.
const FILE_BUFFER_BYTES: usize = 1 << 20;

/// Where a [`Recorder`] puts events.
enum Sink {
    Memory(Vec<HistoryEvent>),
    File(BufWriter<File>),
}

struct Recording {
    sink: Sink,
    events: u64,
    invokes: u64,
}

/// The history of a run, in the order events happened.
pub struct Recorder {
    start: Instant,
    /// `None`: nothing is kept, and recording costs nothing (no lock, no event built).
    recording: Option<Mutex<Recording>>,
}

impl Recorder {
    /// A recorder that keeps nothing.
    pub fn discard() -> Recorder {
        Recorder {
            start: Instant::now(),
            recording: None,
        }
    }

    /// A recorder that keeps the events in memory ([`Recorder::events`]).
    pub fn in_memory() -> Recorder {
        Recorder::with(Sink::Memory(Vec::new()))
    }

    /// A recorder that writes the events to a JSON Lines file at `path`, created anew.
    pub fn to_file(path: &Path) -> std::io::Result<Recorder> {
        let file = File::create(path)?;
        Ok(Recorder::with(Sink::File(BufWriter::with_capacity(
            FILE_BUFFER_BYTES,
            file,
        ))))
    }

    fn with(sink: Sink) -> Recorder {
        Recorder {
            start: Instant::now(),
            recording: Some(Mutex::new(Recording {
                sink,
                events: 0,
                invokes: 0,
            })),
        }
    }

    /// When the recorder was made: time 0 of the history.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Time since [`Recorder::start`].
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Append the event `event(time)`, `time` in ns since the start. Returns the number of
    /// invokes recorded before it: for an invoke, the index of its operation in the
    /// history (`History::ops` numbers operations in invoke order).
    pub fn record(&self, event: impl FnOnce(u64) -> HistoryEvent) -> usize {
        let Some(recording) = &self.recording else {
            return 0;
        };
        let mut r = recording.lock().unwrap_or_else(|e| e.into_inner());
        let time = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let event = event(time);
        let op_id = r.invokes;
        if event.kind == EventType::Invoke {
            r.invokes += 1;
        }
        r.events += 1;
        match &mut r.sink {
            Sink::Memory(events) => events.push(event),
            Sink::File(out) => {
                // One unwritable line must not stop the load; the run reports it in the log.
                if let Err(err) = write_event(out, &event) {
                    tracing::error!(%err, "history write failed");
                }
            }
        }
        usize::try_from(op_id).unwrap_or(usize::MAX)
    }

    /// A copy of the events kept in memory so far (none for the other recorders).
    pub fn events(&self) -> Vec<HistoryEvent> {
        self.with_memory(|events| events.clone())
    }

    /// The events kept in memory so far, leaving none behind.
    pub fn take_events(&self) -> Vec<HistoryEvent> {
        self.with_memory(std::mem::take)
    }

    fn with_memory(
        &self,
        f: impl FnOnce(&mut Vec<HistoryEvent>) -> Vec<HistoryEvent>,
    ) -> Vec<HistoryEvent> {
        let Some(recording) = &self.recording else {
            return Vec::new();
        };
        let mut r = recording.lock().unwrap_or_else(|e| e.into_inner());
        match &mut r.sink {
            Sink::Memory(events) => f(events),
            Sink::File(_) => Vec::new(),
        }
    }

    /// Flush a file and return the number of events recorded.
    pub fn finish(&self) -> std::io::Result<u64> {
        let Some(recording) = &self.recording else {
            return Ok(0);
        };
        let mut r = recording.lock().unwrap_or_else(|e| e.into_inner());
        if let Sink::File(out) = &mut r.sink {
            out.flush()?;
        }
        Ok(r.events)
    }
}

/// Process ids of a history's clients: client `c` starts as process `c`; after an
/// operation ends `info` it goes on under a fresh id, never used before (the checker
/// requires it, as Jepsen does).
#[derive(Debug)]
pub struct ProcessIds {
    next: AtomicU64,
}

impl ProcessIds {
    /// Ids for `clients` clients: `0..clients` are theirs, fresh ones follow.
    pub fn new(clients: usize) -> ProcessIds {
        ProcessIds {
            next: AtomicU64::new(clients as u64),
        }
    }

    /// An id never handed out before.
    pub fn fresh(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_sim::check::OpKind;

    fn invoke(p: u64, t: u64) -> HistoryEvent {
        HistoryEvent::invoke(p, OpKind::Read, "k", None, t)
    }

    fn ok(p: u64, t: u64) -> HistoryEvent {
        HistoryEvent::new(p, EventType::Ok, OpKind::Read, "k", None, t)
    }

    #[test]
    fn invokes_are_numbered_as_the_history_numbers_operations() {
        let r = Recorder::in_memory();
        assert_eq!(r.record(|t| invoke(0, t)), 0);
        assert_eq!(r.record(|t| invoke(1, t)), 1);
        r.record(|t| ok(0, t));
        assert_eq!(r.record(|t| invoke(0, t)), 2);
        let events = r.events();
        assert_eq!(events.len(), 4);
        assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
        assert_eq!(r.take_events().len(), 4);
        assert!(r.events().is_empty());
        assert_eq!(r.finish().ok(), Some(4));
    }

    #[test]
    fn a_discarding_recorder_builds_no_event() {
        let r = Recorder::discard();
        r.record(|_| unreachable!("not built"));
        assert_eq!(r.finish().ok(), Some(0));
    }

    #[test]
    fn fresh_ids_follow_the_clients() {
        let ids = ProcessIds::new(3);
        assert_eq!((ids.fresh(), ids.fresh()), (3, 4));
    }
}
