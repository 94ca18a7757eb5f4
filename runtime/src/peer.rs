//! Node-to-node transport: one bounded queue and one sender task per destination.
//!
//! The actor pushes envelopes without waiting. Each destination's task takes everything
//! queued, sends it as one `POST /internal/message` (a JSON array of envelopes) and waits
//! for the answer before the next batch. So a lightly loaded node sends each message at
//! once, a busy one batches naturally, and messages between two nodes arrive in the order
//! they were sent (one exchange in flight per destination; the receiver hands a batch to
//! its actor before answering).
//!
//! Loss: beyond `queue_envelopes_max` an envelope is dropped and counted; a batch whose
//! exchange fails after the connection was made is dropped too (it may have arrived, and
//! sending it again could apply a write twice). Batches that certainly did not arrive
//! (connection refused) are retried a bounded number of times.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::Envelope;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::HttpClient;
use crate::metrics::{add, Metrics};

/// Path of the internal endpoint envelopes are posted to.
pub const INTERNAL_PATH: &str = "/internal/message";

/// Transport bounds.
#[derive(Clone, Copy, Debug)]
pub struct PeerLimits {
    /// Envelopes queued per destination before new ones are dropped.
    pub queue_envelopes_max: usize,
    /// Envelopes per HTTP exchange.
    pub batch_envelopes_max: usize,
    /// Bytes per HTTP exchange, before the envelope that crosses it is sent in the next one.
    pub batch_bytes_max: usize,
    /// Attempts for a batch whose connection could not be made.
    pub connect_attempts_max: u32,
    /// Destinations with a queue at once; envelopes to further ones are dropped.
    pub destinations_max: usize,
    /// A destination's sender task ends after this long with nothing to send.
    pub idle: Duration,
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
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    pending: Mutex<Vec<Envelope>>,
    notify: Notify,
    closed: AtomicBool,
    /// Set, under the `pending` lock, by a sender task that ended for idleness.
    retired: AtomicBool,
}

impl Queue {
    fn take(&self, max: usize) -> Vec<Envelope> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() <= max {
            std::mem::take(&mut *pending)
        } else {
            pending.drain(..max).collect()
        }
    }
}

/// The sending side of one node's transport. Owned by the node's actor.
#[derive(Debug)]
pub(crate) struct Peers {
    client: HttpClient,
    metrics: Arc<Metrics>,
    limits: PeerLimits,
    queues: HashMap<Arc<str>, Arc<Queue>>,
    /// Queues that became non-empty during the actor's current turn.
    woken: Vec<Arc<Queue>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Peers {
    pub(crate) fn new(client: HttpClient, metrics: Arc<Metrics>, limits: PeerLimits) -> Peers {
        Peers {
            client,
            metrics,
            limits,
            queues: HashMap::new(),
            woken: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// Queue `envelope` for the node at `to`; never waits. Its sender task is woken by
    /// the next [`Peers::flush`], so that everything one actor turn sends to a node travels
    /// in one exchange.
    pub(crate) fn send(&mut self, to: Arc<str>, envelope: Envelope) {
        let mut queue = match self.queues.get(&to) {
            Some(q) if !q.retired.load(Ordering::Acquire) => q.clone(),
            _ => match self.open(to.clone()) {
                Some(q) => q,
                None => return add(&self.metrics.peer.messages_dropped_queue_full, 1),
            },
        };
        let mut pending = queue.pending.lock().unwrap_or_else(|e| e.into_inner());
        if queue.retired.load(Ordering::Acquire) {
            // Its task ended between the check above and the lock; a fresh one takes over.
            drop(pending);
            queue = match self.open(to) {
                Some(q) => q,
                None => return add(&self.metrics.peer.messages_dropped_queue_full, 1),
            };
            pending = queue.pending.lock().unwrap_or_else(|e| e.into_inner());
        }
        if pending.len() >= self.limits.queue_envelopes_max {
            add(&self.metrics.peer.messages_dropped_queue_full, 1);
            return;
        }
        pending.push(envelope);
        let was_empty = pending.len() == 1;
        drop(pending);
        add(&self.metrics.peer.messages_sent, 1);
        add(&self.metrics.peer.queued, 1);
        if was_empty {
            self.woken.push(queue);
        }
    }

    /// Wake the sender tasks of the queues that received envelopes since the last flush.
    pub(crate) fn flush(&mut self) {
        for queue in self.woken.drain(..) {
            queue.notify.notify_one();
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
        let queue = Arc::new(Queue::default());
        self.queues.insert(to.clone(), queue.clone());
        let sender = Sender {
            url: format!("http://{to}{INTERNAL_PATH}"),
            queue: queue.clone(),
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits,
        };
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(tokio::spawn(sender.run()));
        Some(queue)
    }

    /// Stop accepting envelopes and let every sender task send what is queued, waiting at
    /// most `grace` for them.
    pub(crate) async fn close(mut self, grace: Duration) {
        self.flush();
        for queue in self.queues.values() {
            queue.closed.store(true, Ordering::Release);
            queue.notify.notify_one();
        }
        let tasks = std::mem::take(&mut self.tasks);
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("peer queues not drained within {grace:?}; dropping the rest");
        }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for queue in self.queues.values() {
            queue.closed.store(true, Ordering::Release);
            queue.notify.notify_one();
        }
    }
}

struct Sender {
    url: String,
    queue: Arc<Queue>,
    client: HttpClient,
    metrics: Arc<Metrics>,
    limits: PeerLimits,
}

impl Sender {
    async fn run(self) {
        loop {
            let batch = self.queue.take(self.limits.batch_envelopes_max);
            if batch.is_empty() {
                if self.queue.closed.load(Ordering::Acquire) {
                    return;
                }
                let idle = tokio::time::timeout(self.limits.idle, self.queue.notify.notified());
                if idle.await.is_err() && self.retire() {
                    return;
                }
                continue;
            }
            self.metrics
                .peer
                .queued
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            self.metrics
                .peer
                .count_kinds(batch.iter().map(|e| e.msg.kind()), true);
            for (body, count) in encode_batches(&batch, self.limits.batch_bytes_max) {
                self.post(body, count).await;
            }
        }
    }

    /// End this task if nothing is queued; the next envelope for this destination then
    /// starts a new one.
    fn retire(&self) -> bool {
        let pending = self.queue.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_empty() {
            self.queue.retired.store(true, Ordering::Release);
        }
        pending.is_empty()
    }

    async fn post(&self, body: Bytes, count: usize) {
        let mut delay = Duration::from_millis(20);
        for attempt in 1..=self.limits.connect_attempts_max {
            match self.client.post(&self.url, Some(body.clone())).await {
                Ok(reply) if reply.status < 300 => {
                    add(&self.metrics.peer.batches_sent, 1);
                    return;
                }
                Ok(reply) => {
                    tracing::warn!(url = %self.url, status = reply.status, body = %reply.text(), "peer refused {count} message(s)");
                    break;
                }
                Err(err) if err.not_delivered() && attempt < self.limits.connect_attempts_max => {
                    tracing::debug!(url = %self.url, %err, attempt, "retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(err) => {
                    tracing::warn!(url = %self.url, %err, "dropping {count} message(s)");
                    break;
                }
            }
        }
        add(&self.metrics.peer.messages_dropped_send_error, count);
    }
}

/// JSON arrays of the envelopes, each at most `bytes_max` unless one envelope alone is
/// larger, with the number of envelopes in each.
fn encode_batches(batch: &[Envelope], bytes_max: usize) -> Vec<(Bytes, usize)> {
    let mut bodies = Vec::new();
    let mut body = Vec::with_capacity(256 * batch.len().min(1024));
    let mut count = 0;
    for envelope in batch {
        let start = body.len();
        body.push(if count == 0 { b'[' } else { b',' });
        if serde_json::to_writer(&mut body, envelope).is_err() {
            // Envelopes are plain data; this cannot happen, but never send a broken array.
            body.truncate(start);
            continue;
        }
        count += 1;
        if body.len() >= bytes_max {
            body.push(b']');
            bodies.push((Bytes::from(std::mem::take(&mut body)), count));
            count = 0;
        }
    }
    if count > 0 {
        body.push(b']');
        bodies.push((Bytes::from(body), count));
    }
    bodies
}

/// Parse a batch posted by a peer: the envelopes that parse, and how many did not.
pub(crate) fn decode_batch(body: &[u8]) -> Result<(Vec<Envelope>, usize), serde_json::Error> {
    // The common case in one pass; envelope by envelope only when something is wrong.
    if let Ok(envelopes) = serde_json::from_slice::<Vec<Envelope>>(body) {
        return Ok((envelopes, 0));
    }
    let raw: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)?;
    let mut envelopes = Vec::with_capacity(raw.len());
    let mut malformed = 0;
    for item in raw {
        match serde_json::from_str::<Envelope>(item.get()) {
            Ok(envelope) => envelopes.push(envelope),
            Err(err) => {
                malformed += 1;
                tracing::warn!(%err, "dropping a malformed envelope");
            }
        }
    }
    Ok((envelopes, malformed))
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

    #[test]
    fn batches_round_trip_and_split_by_size() {
        let batch: Vec<Envelope> = (0..10).map(envelope).collect();
        let one = encode_batches(&batch, 1 << 20);
        assert_eq!(one.len(), 1);
        let (decoded, bad) = decode_batch(&one[0].0).unwrap();
        assert_eq!((decoded, bad), (batch.clone(), 0));
        let split = encode_batches(&batch, 1);
        assert_eq!(split.len(), 10);
        assert!(split.iter().all(|(_, n)| *n == 1));
    }

    #[tokio::test]
    async fn idle_destinations_retire_and_reopen() {
        // A port nothing listens on: connections are refused at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let to: Arc<str> = Arc::from(closed.to_string());
        let metrics = Arc::new(Metrics::default());
        let limits = PeerLimits {
            idle: Duration::from_millis(50),
            connect_attempts_max: 1,
            ..PeerLimits::default()
        };
        let client = HttpClient::new(Duration::from_millis(500));
        let mut peers = Peers::new(client, metrics.clone(), limits);
        peers.send(to.clone(), envelope(1));
        peers.flush();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(peers.queues[&to].retired.load(Ordering::Acquire));
        let dropped = &metrics.peer.messages_dropped_send_error;
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        peers.send(to.clone(), envelope(2));
        assert!(!peers.queues[&to].retired.load(Ordering::Acquire));
        assert_eq!(peers.queues[&to].pending.lock().unwrap().len(), 1);
        peers.close(Duration::from_secs(2)).await;
        assert_eq!(dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_forged_envelope_is_dropped_alone() {
        let good = serde_json::to_string(&envelope(1)).unwrap();
        let forged = good.replace("127.0.0.1:1", "127.0.0.1:2");
        let body = format!("[{good},{forged},{good}]");
        let (decoded, bad) = decode_batch(body.as_bytes()).unwrap();
        assert_eq!((decoded.len(), bad), (2, 1));
        assert!(decode_batch(b"{\"not\":\"an array\"}").is_err());
    }
}
