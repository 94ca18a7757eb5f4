//! Node-to-node transport, sending side: one bounded queue and one sender task per
//! destination, each with one long-lived connection (see [`crate::wire`] for the frames and
//! [`crate::inbound`] for the receiving side).
//!
//! The actor pushes envelopes without waiting. At the end of its turn it writes what a turn
//! queued for a destination itself, as frames in one non-blocking write, when that
//! destination's connection is open and idle (its sender task waits with nothing in hand)
//! and the socket takes the bytes at once: the common case, which so costs no task wake-up.
//! Otherwise (no connection yet, a write in progress, a full socket buffer, a link latency)
//! the destination's task takes everything queued, writes it as frames in one write, then
//! takes what queued meanwhile, so a busy node batches naturally; bytes the actor could not
//! write go to the task, which writes them before anything queued after them. Messages to
//! one node arrive in the order they were sent: one connection per destination, one writer
//! at a time (the hand-over happens under the queue's lock), and the receiver hands frames to
//! its actor in order.
//!
//! Loss: beyond `queue_envelopes_max` an envelope is dropped and counted. A batch whose
//! write fails, or does not finish within the timeout, is dropped too (part of it may have
//! arrived, and sending it again could apply a write twice); the connection is then closed
//! and the next batch opens a new one. A connection the peer closed (it restarted) is noticed
//! before the next write when possible, so that batch goes on a new connection instead.
//! Opening a connection is retried a bounded number of times, since nothing was sent yet.
//!
//! With a link latency ([`PeerLimits::link_latency`]) every envelope waits in its queue
//! until a time drawn from the distribution has passed; an envelope never overtakes one
//! queued before it for the same destination.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringkv_core::Envelope;
use ringkv_sim::Latency;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::dial::{Dialer, PeerConn};
use crate::fault::PeerFilter;
use crate::metrics::{add, Metrics};
use crate::sender::Sender;
use crate::wire;

/// A direct-write buffer grown above this by a large batch is given back afterwards.
const BUFFER_BYTES_KEPT_MAX: usize = 1 << 20;

/// Transport bounds.
#[derive(Clone, Copy, Debug)]
pub struct PeerLimits {
    /// Envelopes queued per destination before new ones are dropped.
    pub queue_envelopes_max: usize,
    /// Envelopes taken from a queue for one write.
    pub batch_envelopes_max: usize,
    /// Payload bytes per frame, before the envelope that crosses it goes in the next one.
    pub batch_bytes_max: usize,
    /// Attempts to open a connection for a batch (nothing of it was sent before one is
    /// open, so retrying is safe).
    pub connect_attempts_max: u32,
    /// Destinations with a queue at once; envelopes to further ones are dropped.
    pub destinations_max: usize,
    /// A destination's sender task (and its connection) ends after this long with nothing
    /// to send.
    pub idle: Duration,
    /// Delay every envelope by a draw from this distribution before it is sent (as if
    /// the link were slow), keeping each destination's order. `None`: no added delay.
    pub link_latency: Option<Latency>,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            queue_envelopes_max: 1 << 18,
            batch_envelopes_max: 4096,
            batch_bytes_max: 8 << 20,
            connect_attempts_max: 5,
            destinations_max: 4096,
            idle: Duration::from_secs(60),
            link_latency: None,
        }
    }
}

/// An envelope waiting to be sent.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) envelope: Envelope,
    /// Not to be sent before this time (with a link latency).
    pub(crate) due: Option<Instant>,
}

/// What one destination's queue holds, and who may write on its connection next.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) items: VecDeque<Queued>,
    /// Due time of the last envelope queued, which the next may not precede.
    last_due: Option<Instant>,
    /// The destination's open connection while its sender task waits with nothing in hand
    /// (set and taken back by the task): the actor may then write on it directly. `None`
    /// while the task dials or writes, so the two never write at once.
    pub(crate) idle: Option<Arc<PeerConn>>,
    /// Frames the actor began to write directly but the socket did not take whole: the
    /// sender task writes them before anything queued after them.
    pub(crate) rest: Vec<u8>,
    /// Envelopes in `rest` (dropped and counted if its write fails).
    pub(crate) rest_envelopes: usize,
    /// A direct write failed: the sender task closes the connection.
    pub(crate) broken: bool,
    /// Direct writes so far; a sender task that sees it move is not idle.
    pub(crate) direct_writes: u64,
}

impl Pending {
    /// Up to `max` envelopes that are due at `now`, oldest first, and when the next one
    /// becomes due if it is not yet.
    pub(crate) fn take_due(
        &mut self,
        now: Instant,
        max: usize,
    ) -> (Vec<Envelope>, Option<Instant>) {
        let mut batch = Vec::new();
        while batch.len() < max {
            match self.items.front() {
                Some(q) if q.due.is_some_and(|due| due > now) => return (batch, q.due),
                Some(_) => {}
                None => break,
            }
            if let Some(q) = self.items.pop_front() {
                batch.push(q.envelope);
            }
        }
        (batch, None)
    }
}

/// One destination's queue, shared by the actor (which pushes) and its sender task.
#[derive(Debug)]
pub(crate) struct Queue {
    /// The destination's `host:port`.
    to: Arc<str>,
    pending: Mutex<Pending>,
    pub(crate) notify: Notify,
    closed: AtomicBool,
    /// Set, under the `pending` lock, by a sender task that ended for idleness.
    retired: AtomicBool,
}

impl Queue {
    fn new(to: Arc<str>) -> Queue {
        Queue {
            to,
            pending: Mutex::default(),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        }
    }

    /// Up to `max` envelopes that are due at `now`, oldest first, and when the next one
    /// becomes due if it is not yet.
    #[cfg(test)]
    pub(crate) fn take_due(&self, now: Instant, max: usize) -> (Vec<Envelope>, Option<Instant>) {
        self.lock().take_due(now, max)
    }

    /// Whether the transport is closing: send what is queued, then end.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Mark the queue retired (its sender task ends for idleness; the next envelope for
    /// this destination starts a new one). Called with the lock held and nothing queued.
    pub(crate) fn retire(&self, pending: &mut Pending) {
        debug_assert!(pending.items.is_empty() && pending.rest.is_empty());
        pending.idle = None;
        self.retired.store(true, Ordering::Release);
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// Draws of the link latency.
#[derive(Debug)]
struct LinkDelay {
    latency: Latency,
    rng: ChaCha8Rng,
}

/// The sending side of one node's transport. Owned by the node's actor.
#[derive(Debug)]
pub(crate) struct Peers {
    dialer: Dialer,
    metrics: Arc<Metrics>,
    limits: PeerLimits,
    delay: Option<LinkDelay>,
    /// The test-only partition filter every sender task checks.
    filter: Arc<PeerFilter>,
    queues: HashMap<Arc<str>, Arc<Queue>>,
    /// Queues that became non-empty during the actor's current turn.
    woken: Vec<Arc<Queue>>,
    tasks: Vec<JoinHandle<()>>,
    /// Frames of a direct write (kept between turns).
    buf: Vec<u8>,
}

impl Peers {
    pub(crate) fn new(
        dialer: Dialer,
        metrics: Arc<Metrics>,
        limits: PeerLimits,
        filter: Arc<PeerFilter>,
    ) -> Peers {
        // Real nodes are not replayable anyway (wall clocks, the OS scheduler), so the
        // latency draws need no seed.
        let delay = limits.link_latency.map(|latency| LinkDelay {
            latency,
            rng: ChaCha8Rng::from_entropy(),
        });
        Peers {
            dialer,
            metrics,
            limits,
            delay,
            filter,
            queues: HashMap::new(),
            woken: Vec::new(),
            tasks: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Queue `envelope` for the node at `to`; never waits. Its sender task is woken by
    /// the next [`Peers::flush`], so that everything one actor turn sends to a node travels
    /// in one write.
    pub(crate) fn send(&mut self, to: Arc<str>, envelope: Envelope) {
        let mut queue = match self.queues.get(&to) {
            Some(q) if !q.retired.load(Ordering::Acquire) => q.clone(),
            _ => match self.open(to.clone()) {
                Some(q) => q,
                None => return add(&self.metrics.peer.messages_dropped_queue_full, 1),
            },
        };
        let mut pending = queue.lock();
        if queue.retired.load(Ordering::Acquire) {
            // Its task ended between the check above and the lock; a fresh one takes over.
            drop(pending);
            queue = match self.open(to) {
                Some(q) => q,
                None => return add(&self.metrics.peer.messages_dropped_queue_full, 1),
            };
            pending = queue.lock();
        }
        if pending.items.len() >= self.limits.queue_envelopes_max {
            add(&self.metrics.peer.messages_dropped_queue_full, 1);
            return;
        }
        let due = self.delay.as_mut().map(|delay| {
            let drawn = Duration::from_nanos(delay.latency.sample(&mut delay.rng));
            // FIFO per destination: never before the envelope queued ahead of it.
            let due = (Instant::now() + drawn).max(pending.last_due.unwrap_or(Instant::now()));
            pending.last_due = Some(due);
            due
        });
        pending.items.push_back(Queued { envelope, due });
        let was_empty = pending.items.len() == 1;
        drop(pending);
        add(&self.metrics.peer.messages_sent, 1);
        add(&self.metrics.peer.queued, 1);
        if was_empty {
            self.woken.push(queue);
        }
    }

    /// Send what the queues received since the last flush: written directly where the
    /// destination's connection is idle and takes it at once, else by the sender task,
    /// which is woken.
    pub(crate) fn flush(&mut self) {
        let mut woken = std::mem::take(&mut self.woken);
        for queue in woken.drain(..) {
            if !self.write_direct(&queue) {
                queue.notify.notify_one();
            }
        }
        self.woken = woken;
        if self.buf.capacity() > BUFFER_BYTES_KEPT_MAX {
            self.buf = Vec::new();
        }
    }

    /// Write everything `queue` holds on its idle connection without waiting; whether that
    /// is done (else the sender task must be woken). Bytes the socket did not take go to
    /// the task, which writes them first.
    fn write_direct(&mut self, queue: &Queue) -> bool {
        let mut pending = queue.lock();
        let Some(conn) = pending.idle.clone() else {
            return false;
        };
        if pending.items.is_empty() {
            return true;
        }
        if self.filter.blocks_send(&queue.to) || conn.peer_closed() {
            // The task drops the batch (partition), or opens a new connection for it: a
            // peer that went away took nothing of it.
            pending.idle = None;
            return false;
        }
        let peer = &self.metrics.peer;
        let count = pending.items.len();
        peer.queued.fetch_sub(count as u64, Ordering::Relaxed);
        peer.count_kinds(pending.items.iter().map(|q| q.envelope.msg.kind()), true);
        self.buf.clear();
        let envelopes = pending.items.drain(..).map(|q| q.envelope);
        let encoded = wire::encode(envelopes, self.limits.batch_bytes_max, &mut self.buf);
        add(&peer.messages_dropped_send_error, encoded.skipped);
        if encoded.envelopes == 0 {
            return true;
        }
        pending.direct_writes += 1;
        add(&peer.batches_sent, encoded.frames);
        match conn.try_write_now(&self.buf) {
            Ok(n) if n == self.buf.len() => {
                add(&peer.writes, 1);
                true
            }
            Ok(n) => {
                // The socket's buffer is full: the task waits for room and writes the rest.
                if n > 0 {
                    add(&peer.writes, 1);
                }
                pending.idle = None;
                pending.rest.extend_from_slice(&self.buf[n..]);
                pending.rest_envelopes += encoded.envelopes;
                false
            }
            Err(err) => {
                // As for a write of the task's: part of the batch may have arrived, so it
                // is dropped, not sent again; the task closes the connection.
                tracing::warn!(to = %queue.to, %err, "peer write failed; dropping {} message(s)", encoded.envelopes);
                add(&peer.messages_dropped_send_error, encoded.envelopes);
                pending.idle = None;
                pending.broken = true;
                false
            }
        }
    }

    /// A new queue and sender task for `to`, unless there are too many destinations.
    fn open(&mut self, to: Arc<str>) -> Option<Arc<Queue>> {
        if self.queues.len() >= self.limits.destinations_max {
            self.queues
                .retain(|_, q| !q.retired.load(Ordering::Acquire));
            self.tasks.retain(|t| !t.is_finished());
            if self.queues.len() >= self.limits.destinations_max {
                tracing::warn!(%to, "too many peer destinations; dropping a message");
                return None;
            }
        }
        let queue = Arc::new(Queue::new(to.clone()));
        self.queues.insert(to.clone(), queue.clone());
        let sender = Sender::new(
            to,
            queue.clone(),
            self.dialer.clone(),
            self.metrics.clone(),
            self.limits,
            self.filter.clone(),
        );
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(tokio::spawn(sender.run()));
        Some(queue)
    }

    /// Stop accepting envelopes and let every sender task send what is queued and close
    /// its connection. The future returned (which does not borrow the transport, so a
    /// lock around it need not be held) waits at most `grace` for them, then stops the
    /// rest.
    pub(crate) fn close(&mut self, grace: Duration) -> impl std::future::Future<Output = ()> {
        self.flush();
        for queue in self.queues.values() {
            queue.close();
        }
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        async move {
            if tokio::time::timeout(grace, all).await.is_err() {
                tracing::warn!("peer queues not drained within {grace:?}; dropping the rest");
                for abort in aborts {
                    abort.abort();
                }
            }
        }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for queue in self.queues.values() {
            queue.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::{Message, NodeRef};

    fn envelope(epoch: u64) -> Envelope {
        Envelope {
            from: NodeRef::new("127.0.0.1:1"),
            msg: Message::Ready { epoch },
        }
    }

    fn dialer() -> Dialer {
        Dialer {
            secret: None,
            timeout: Duration::from_millis(500),
        }
    }

    /// A port nothing listens on: connections are refused at once.
    fn closed_port() -> Arc<str> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        Arc::from(addr.to_string())
    }

    #[tokio::test]
    async fn idle_destinations_retire_and_reopen() {
        let to = closed_port();
        let metrics = Arc::new(Metrics::default());
        let limits = PeerLimits {
            idle: Duration::from_millis(50),
            connect_attempts_max: 1,
            ..PeerLimits::default()
        };
        let mut peers = Peers::new(dialer(), metrics.clone(), limits, Arc::default());
        peers.send(to.clone(), envelope(1));
        peers.flush();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(peers.queues[&to].retired.load(Ordering::Acquire));
        let dropped = &metrics.peer.messages_dropped_send_error;
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        peers.send(to.clone(), envelope(2));
        assert!(!peers.queues[&to].retired.load(Ordering::Acquire));
        assert_eq!(peers.queues[&to].lock().items.len(), 1);
        peers.close(Duration::from_secs(2)).await;
        assert_eq!(dropped.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn full_queues_drop_and_count() {
        let metrics = Arc::new(Metrics::default());
        let limits = PeerLimits {
            queue_envelopes_max: 3,
            ..PeerLimits::default()
        };
        let mut peers = Peers::new(dialer(), metrics.clone(), limits, Arc::default());
        let to = closed_port();
        // Not flushed: the sender task is not woken, so the queue only grows.
        for epoch in 0..5 {
            peers.send(to.clone(), envelope(epoch));
        }
        let full = &metrics.peer.messages_dropped_queue_full;
        assert_eq!(full.load(Ordering::Relaxed), 2);
        assert_eq!(peers.queues[&to].lock().items.len(), 3);
    }

    #[tokio::test]
    async fn link_latency_delays_without_reordering() {
        let metrics = Arc::new(Metrics::default());
        let limits = PeerLimits {
            link_latency: Some(Latency::Exp { mean_ns: 5_000_000 }),
            ..PeerLimits::default()
        };
        let mut peers = Peers::new(dialer(), metrics, limits, Arc::default());
        let to = closed_port();
        let start = Instant::now();
        for epoch in 0..200 {
            peers.send(to.clone(), envelope(epoch));
        }
        let queue = peers.queues[&to].clone();
        let dues: Vec<Instant> = queue.lock().items.iter().filter_map(|q| q.due).collect();
        assert_eq!(dues.len(), 200);
        assert!(
            dues.windows(2).all(|w| w[0] <= w[1]),
            "due times never go back"
        );
        assert!(dues[199] > start, "the draws delay");
        let (now_due, next) = queue.take_due(start, usize::MAX);
        assert!(now_due.is_empty() && next == Some(dues[0]));
        let (all, next) = queue.take_due(dues[199], usize::MAX);
        let epochs: Vec<u64> = all
            .iter()
            .map(|e| match e.msg {
                Message::Ready { epoch } => epoch,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(epochs, (0..200).collect::<Vec<_>>());
        assert_eq!(next, None);
    }
}
