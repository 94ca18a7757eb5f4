//! One destination's sender task: takes what its queue holds, frames it and writes it on
//! the destination's connection, opening a new connection when there is none. While it
//! waits with nothing to do, it lends the connection to the actor, which then writes
//! directly (see [`crate::peer`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ringkv_core::Envelope;
use tokio::time::Instant;

use crate::dial::{Dialer, PeerConn};
use crate::fault::PeerFilter;
use crate::metrics::{add, Metrics};
use crate::peer::{PeerLimits, Queue};
use crate::wire;

/// First pause between attempts to open a connection; doubled after each.
const CONNECT_RETRY_FIRST: Duration = Duration::from_millis(20);

/// A write buffer grown above this by a large batch is given back once the batch is sent.
const BUFFER_BYTES_KEPT_MAX: usize = 1 << 20;

/// What the task has to do next.
enum Work {
    /// Frame and write these envelopes.
    Batch(Vec<Envelope>),
    /// Write these frames, which the actor began to write (they hold `envelopes`).
    Rest { bytes: Vec<u8>, envelopes: usize },
}

/// The task that owns one destination's connection.
pub(crate) struct Sender {
    to: Arc<str>,
    queue: Arc<Queue>,
    dialer: Dialer,
    metrics: Arc<Metrics>,
    limits: PeerLimits,
    /// The test-only partition filter: a batch to a blocked destination is dropped.
    filter: Arc<PeerFilter>,
    conn: Option<Arc<PeerConn>>,
    buf: Vec<u8>,
}

impl Sender {
    pub(crate) fn new(
        to: Arc<str>,
        queue: Arc<Queue>,
        dialer: Dialer,
        metrics: Arc<Metrics>,
        limits: PeerLimits,
        filter: Arc<PeerFilter>,
    ) -> Sender {
        Sender {
            to,
            queue,
            dialer,
            metrics,
            limits,
            filter,
            conn: None,
            buf: Vec::new(),
        }
    }

    /// Send until the queue is closed and empty, or idle for too long. Dropping the
    /// connection at the end shuts its sending side down: a clean end of stream, so the
    /// peer's reader stops between two frames.
    pub(crate) async fn run(mut self) {
        while let Some(work) = self.next_work().await {
            match work {
                Work::Batch(batch) => self.send(batch).await,
                Work::Rest { bytes, envelopes } => self.finish(bytes, envelopes).await,
            }
        }
    }

    /// The next thing to do, waiting for it; `None` when the task should end. While it
    /// waits, the connection is lent to the actor; it is taken back (under the queue's lock,
    /// so never during a direct write) before anything else.
    async fn next_work(&mut self) -> Option<Work> {
        let mut idle_for_long = false;
        loop {
            let (next_due, writes_seen) = {
                let mut pending = self.queue.lock();
                pending.idle = None;
                if std::mem::take(&mut pending.broken) {
                    self.conn = None;
                }
                if !pending.rest.is_empty() {
                    let bytes = std::mem::take(&mut pending.rest);
                    let envelopes = std::mem::take(&mut pending.rest_envelopes);
                    return Some(Work::Rest { bytes, envelopes });
                }
                let (batch, next_due) =
                    pending.take_due(Instant::now(), self.limits.batch_envelopes_max);
                if !batch.is_empty() {
                    return Some(Work::Batch(batch));
                }
                if next_due.is_none() && self.queue.is_closed() {
                    return None;
                }
                if idle_for_long && next_due.is_none() {
                    self.queue.retire(&mut pending);
                    return None;
                }
                // With a link latency every envelope waits for its due time here, so the
                // actor never writes directly.
                if self.limits.link_latency.is_none() {
                    pending.idle = self.conn.clone();
                }
                (next_due, pending.direct_writes)
            };
            let conn = self.conn.clone();
            tokio::select! {
                () = self.queue.notify.notified() => {}
                () = sleep_until(next_due), if next_due.is_some() => {}
                () = tokio::time::sleep(self.limits.idle), if next_due.is_none() => {
                    // Idle unless the actor wrote directly meanwhile.
                    idle_for_long = self.queue.lock().direct_writes == writes_seen;
                }
                () = wait_closed(conn.as_deref()), if conn.is_some() => {
                    tracing::debug!(to = %self.to, "peer closed the connection");
                    // Taken back from the actor at the top of the loop, before anything
                    // else is written.
                    self.conn = None;
                }
            }
        }
    }

    /// Frame and write `batch`, opening a connection first if needed.
    async fn send(&mut self, batch: Vec<Envelope>) {
        let peer = &self.metrics.peer;
        peer.queued.fetch_sub(batch.len() as u64, Ordering::Relaxed);
        if self.filter.blocks_send(&self.to) {
            // Cut off (test-only partition): the batch is lost, as on a broken link; the
            // connection stays open and carries messages again once healed.
            add(&peer.messages_dropped_partition_send, batch.len());
            return;
        }
        peer.count_kinds(batch.iter().map(|e| e.msg.kind()), true);
        self.buf.clear();
        let encoded = wire::encode(&batch, self.limits.batch_bytes_max, &mut self.buf);
        drop(batch);
        add(&peer.messages_dropped_send_error, encoded.skipped);
        if encoded.envelopes == 0 {
            return;
        }
        if self.conn.as_deref().is_some_and(PeerConn::peer_closed) {
            // The peer went away (restarted, or stopped) since the last write: nothing of
            // this batch was written there, so it goes on a new connection.
            tracing::debug!(to = %self.to, "peer closed the connection; reconnecting");
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = self.connect().await.map(Arc::new);
        }
        let buf = std::mem::take(&mut self.buf);
        if self.write(&buf, encoded.envelopes).await {
            add(&self.metrics.peer.batches_sent, encoded.frames);
        }
        if buf.capacity() <= BUFFER_BYTES_KEPT_MAX {
            self.buf = buf;
        }
    }

    /// Write the frames the actor could not finish (their frames are already counted).
    async fn finish(&mut self, bytes: Vec<u8>, envelopes: usize) {
        self.write(&bytes, envelopes).await;
    }

    /// Write `bytes` (frames holding `envelopes`) on the connection, within the timeout;
    /// whether it was written.
    async fn write(&mut self, bytes: &[u8], envelopes: usize) -> bool {
        let Some(conn) = self.conn.as_deref() else {
            add(&self.metrics.peer.messages_dropped_send_error, envelopes);
            return false;
        };
        match tokio::time::timeout(self.dialer.timeout, conn.write_all(bytes)).await {
            Ok(Ok(())) => {
                add(&self.metrics.peer.writes, 1);
                true
            }
            Ok(Err(err)) => self.write_failed(envelopes, &err.to_string()),
            Err(_) => self.write_failed(envelopes, "timed out"),
        }
    }

    /// A write that failed may have delivered part of the batch: the batch is dropped, not
    /// sent again, and the connection is closed.
    fn write_failed(&mut self, envelopes: usize, why: &str) -> bool {
        tracing::warn!(to = %self.to, why, "peer write failed; dropping {envelopes} message(s)");
        add(&self.metrics.peer.messages_dropped_send_error, envelopes);
        self.conn = None;
        false
    }

    /// Open a connection, retrying a bounded number of times with growing pauses.
    async fn connect(&self) -> Option<PeerConn> {
        let mut pause = CONNECT_RETRY_FIRST;
        let attempts = self.limits.connect_attempts_max.max(1);
        for attempt in 1..=attempts {
            match self.dialer.dial(&self.to).await {
                Ok(conn) => {
                    add(&self.metrics.peer.connections_opened, 1);
                    return Some(conn);
                }
                Err(err) if err.retryable() && attempt < attempts => {
                    tracing::debug!(to = %self.to, %err, attempt, "cannot open a peer connection; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(err) => {
                    tracing::warn!(to = %self.to, %err, attempt, "cannot open a peer connection");
                    return None;
                }
            }
        }
        None
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

async fn wait_closed(conn: Option<&PeerConn>) {
    match conn {
        Some(conn) => conn.closed().await,
        None => std::future::pending().await,
    }
}
