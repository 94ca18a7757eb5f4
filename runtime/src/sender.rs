//! One destination's sender task: takes what its queue holds, frames it and writes it on
//! the destination's connection, opening a new connection when there is none.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ringkv_core::Envelope;
use tokio::io::AsyncWriteExt;
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

/// The task that owns one destination's connection.
pub(crate) struct Sender {
    to: Arc<str>,
    queue: Arc<Queue>,
    dialer: Dialer,
    metrics: Arc<Metrics>,
    limits: PeerLimits,
    /// The test-only partition filter: a batch to a blocked destination is dropped.
    filter: Arc<PeerFilter>,
    conn: Option<PeerConn>,
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

    /// Send batches until the queue is closed and empty, or idle for too long.
    pub(crate) async fn run(mut self) {
        while let Some(batch) = self.next_batch().await {
            self.send(batch).await;
        }
        if let Some(mut conn) = self.conn.take() {
            // A clean end of stream: the peer's reader stops between two frames.
            let _ = tokio::time::timeout(self.dialer.timeout, conn.wr.shutdown()).await;
        }
    }

    /// The next envelopes that are due, waiting for them; `None` when the task should end.
    async fn next_batch(&mut self) -> Option<Vec<Envelope>> {
        loop {
            let (batch, next_due) = self
                .queue
                .take_due(Instant::now(), self.limits.batch_envelopes_max);
            if !batch.is_empty() {
                return Some(batch);
            }
            if next_due.is_none() && self.queue.is_closed() {
                return None;
            }
            let conn = &mut self.conn;
            let has_conn = conn.is_some();
            tokio::select! {
                () = self.queue.notify.notified() => {}
                () = sleep_until(next_due), if next_due.is_some() => {}
                () = tokio::time::sleep(self.limits.idle), if next_due.is_none() => {
                    if self.queue.retire() {
                        return None;
                    }
                }
                () = wait_closed(conn), if has_conn => {
                    tracing::debug!(to = %self.to, "peer closed the connection");
                    self.conn = None;
                }
            }
        }
    }

    /// Frame and write `batch`, opening a connection first if needed.
    async fn send(&mut self, batch: Vec<Envelope>) {
        let peer = &self.metrics.peer;
        peer.queued.fetch_sub(batch.len() as u64, Ordering::Relaxed);
        if self.filter.blocks(&self.to) {
            // Cut off (test-only partition): the batch is lost, as on a broken link; the
            // connection stays open and carries messages again once healed.
            add(&peer.messages_dropped_partition_send, batch.len());
            return;
        }
        peer.count_kinds(batch.iter().map(|e| e.msg.kind()), true);
        self.buf.clear();
        let encoded = wire::encode(&batch, self.limits.batch_bytes_max, &mut self.buf);
        add(&peer.messages_dropped_send_error, encoded.skipped);
        if encoded.envelopes == 0 {
            return;
        }
        if self.conn.as_ref().is_some_and(PeerConn::peer_closed) {
            // The peer went away (restarted, or stopped) since the last write: nothing of
            // this batch was written there, so it goes on a new connection.
            tracing::debug!(to = %self.to, "peer closed the connection; reconnecting");
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = self.connect().await;
        }
        let Some(conn) = self.conn.as_mut() else {
            add(&peer.messages_dropped_send_error, encoded.envelopes);
            return;
        };
        let written = tokio::time::timeout(self.dialer.timeout, conn.wr.write_all(&self.buf)).await;
        match written {
            Ok(Ok(())) => {
                add(&peer.batches_sent, encoded.frames);
                add(&peer.writes, 1);
            }
            Ok(Err(err)) => self.write_failed(encoded.envelopes, &err.to_string()),
            Err(_) => self.write_failed(encoded.envelopes, "timed out"),
        }
        if self.buf.capacity() > BUFFER_BYTES_KEPT_MAX {
            self.buf = Vec::new();
        }
    }

    /// A write that failed may have delivered part of the batch: the batch is dropped, not
    /// sent again, and the connection is closed.
    fn write_failed(&mut self, envelopes: usize, why: &str) {
        tracing::warn!(to = %self.to, why, "peer write failed; dropping {envelopes} message(s)");
        add(&self.metrics.peer.messages_dropped_send_error, envelopes);
        self.conn = None;
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

async fn wait_closed(conn: &mut Option<PeerConn>) {
    match conn {
        Some(conn) => conn.closed().await,
        None => std::future::pending().await,
    }
}
