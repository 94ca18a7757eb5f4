//! The actor: one tokio task owns a node's state machine and is its only driver.
//!
//! Its loop is "receive a command or sleep until the next timer deadline". Client requests
//! get a fresh [`ReqId`] and a oneshot channel for the reply; peer messages are fed in as
//! they come; outputs are carried out at once (sends go to the peer queues, replies to the
//! waiting handlers). The core keeps its own timers: the actor sleeps until
//! `Node::poll_timeout` and then calls `Node::handle_timeout`. The core also enforces
//! every request's deadline, so a waiting handler needs no timeout of its own. No lock
//! guards protocol state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_core::{
    Envelope, Input, Node, Output, Persist, Reply, ReqId, Request, RequestError, Response, Time,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::dial::Dialer;
use crate::fault::PeerFilter;
use crate::metrics::{add, Metrics};
use crate::peer::{PeerLimits, Peers};
use crate::storage::Storage;

/// Why a request did not reach the node or got no answer from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The node's command queue is full.
    #[error("the node's request queue is full; retry later")]
    Busy,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Stopped,
    /// No answer within the runtime's wait (the core's request timeout plus a margin).
    #[error("no answer within {0} ms; the operation may or may not have taken effect")]
    TimedOut(u64),
}

type Inspector = Box<dyn FnOnce(&Node) + Send>;

enum Command {
    Request {
        request: Request,
        reply: oneshot::Sender<Reply>,
    },
    Messages(Vec<Envelope>),
    Inspect(Inspector),
}

/// A clonable handle to a running node: the only way to reach its state machine.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    addr: Arc<str>,
    wait: Duration,
}

impl NodeHandle {
    /// The node's advertised `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How long [`NodeHandle::request`] waits for an answer.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Ask the node; refused at once with `Busy` when its queue is full. The node
    /// answers every request it takes by the core's request timeout.
    pub async fn request(&self, request: Request) -> Result<Reply, Unavailable> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Command::Request { request, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Unavailable::Busy,
                mpsc::error::TrySendError::Closed(_) => Unavailable::Stopped,
            })?;
        rx.await.map_err(|_| Unavailable::Stopped)
    }

    /// Hand peer messages to the node, waiting for room in its queue (back-pressure on the
    /// sending peer) at most the request wait.
    pub async fn deliver(&self, envelopes: Vec<Envelope>) -> Result<(), Unavailable> {
        // The common case, room in the queue, sets no timer.
        let command = match self.tx.try_send(Command::Messages(envelopes)) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Unavailable::Stopped),
            Err(mpsc::error::TrySendError::Full(command)) => command,
        };
        match tokio::time::timeout(self.wait, self.tx.send(command)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Unavailable::Stopped),
            Err(_) => Err(Unavailable::Busy),
        }
    }

    /// Run `f` on the node's state between two inputs and return its result.
    pub async fn inspect<T, F>(&self, f: F) -> Result<T, Unavailable>
    where
        T: Send + 'static,
        F: FnOnce(&Node) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let inspector: Inspector = Box::new(move |node| {
            let _ = tx.send(f(node));
        });
        let queued = tokio::time::timeout(self.wait, self.tx.send(Command::Inspect(inspector)));
        match queued.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Unavailable::Stopped),
            Err(_) => return Err(Unavailable::Busy),
        }
        match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(Unavailable::Stopped),
            Err(_) => Err(Unavailable::TimedOut(self.wait.as_millis() as u64)),
        }
    }
}

/// Runtime settings of one actor.
#[derive(Clone, Copy, Debug)]
pub struct ActorOptions {
    /// Commands (requests, message batches) queued before clients get `503`.
    pub queue_commands_max: usize,
    /// Margin added to the core's request timeout before a waiting handler gives up.
    pub wait_margin: Duration,
    /// Peer transport bounds.
    pub peers: PeerLimits,
    /// How long a stopping node keeps sending what its peer queues hold.
    pub drain_grace: Duration,
    /// An emulated processor (`dht cluster --service`): the node handles at most one
    /// client request or peer message per this much time on average, as a machine of
    /// that speed would; inputs beyond wait in the command queue (timers cost nothing).
    /// It gives each node of a ring on one host a capacity of its own, as `link_latency`
    /// gives it a distance. `None`: as fast as the host allows.
    pub service: Option<Duration>,
}

impl Default for ActorOptions {
    fn default() -> Self {
        ActorOptions {
            queue_commands_max: 4096,
            wait_margin: Duration::from_secs(1),
            peers: PeerLimits::default(),
            drain_grace: Duration::from_secs(2),
            service: None,
        }
    }
}

/// Commands taken from the queue in one turn before timers are looked at again.
const COMMANDS_PER_TURN_MAX: usize = 256;

/// Credit an emulated processor may bank while idle: tokio's timers tick every
/// millisecond, so an actor paced below that wakes up to one tick late and then handles
/// the inputs it owes back to back; without the credit every late wake-up would cost
/// capacity.
const PACE_CREDIT: Duration = Duration::from_millis(1);

/// An emulated processor's clock: when it can take the next input.
#[derive(Debug)]
struct Pace {
    service: Duration,
    free_at: Instant,
}

impl Pace {
    fn new(service: Duration) -> Pace {
        Pace {
            service,
            free_at: Instant::now(),
        }
    }

    fn ready(&self, now: Instant) -> bool {
        self.free_at <= now
    }

    /// Account for `inputs` handled at `now`.
    fn charge(&mut self, now: Instant, inputs: usize) {
        let floor = now.checked_sub(PACE_CREDIT).unwrap_or(now);
        let work = self
            .service
            .saturating_mul(u32::try_from(inputs).unwrap_or(u32::MAX));
        self.free_at = self.free_at.max(floor) + work;
    }
}

/// A running actor: its handle, its task and the switch that stops it.
pub(crate) struct Running {
    pub(crate) handle: NodeHandle,
    pub(crate) task: JoinHandle<()>,
    pub(crate) stop: oneshot::Sender<()>,
}

/// Start the actor that owns `node`, built with a request timeout of `timeout_ns`.
pub(crate) fn spawn(
    node: Node,
    timeout_ns: u64,
    options: ActorOptions,
    dialer: Dialer,
    metrics: Arc<Metrics>,
    filter: Arc<PeerFilter>,
    storage: Option<Storage>,
) -> Running {
    let (tx, rx) = mpsc::channel(options.queue_commands_max.max(1));
    let (stop, stop_rx) = oneshot::channel();
    let handle = NodeHandle {
        tx,
        addr: node.me().addr.clone(),
        wait: Duration::from_nanos(timeout_ns) + options.wait_margin,
    };
    let actor = Actor {
        node,
        start: Instant::now(),
        next_req: 1,
        waiting: HashMap::new(),
        out: Vec::new(),
        peers: Peers::new(dialer, metrics.clone(), options.peers, filter),
        metrics,
        storage: storage.map(Arc::new),
        held: Vec::new(),
        unpersisted: Vec::new(),
        committing: false,
        failing: false,
        committed: mpsc::unbounded_channel(),
        pace: options.service.filter(|d| !d.is_zero()).map(Pace::new),
    };
    let task = tokio::spawn(actor.run(rx, stop_rx, options.drain_grace));
    Running { handle, task, stop }
}

struct Actor {
    node: Node,
    start: Instant,
    next_req: ReqId,
    waiting: HashMap<ReqId, oneshot::Sender<Reply>>,
    out: Vec<Output>,
    peers: Peers,
    metrics: Arc<Metrics>,
    /// The data directory, for a durable node.
    storage: Option<Arc<Storage>>,
    /// A durable node's outputs not yet handed to the committer: carried out once what
    /// they depend on is on disk.
    held: Vec<Output>,
    /// Persists not yet on disk (a write failed; retried first in the next batch).
    unpersisted: Vec<Persist>,
    /// A batch is being written on a blocking thread. Meanwhile the actor goes on
    /// handling inputs and holds their outputs, so the next transaction (one `fsync`)
    /// covers everything that arrived during this one: group commit that grows with load.
    committing: bool,
    /// The last write failed (logged once per episode, not per retry).
    failing: bool,
    /// Where the committer reports a written batch (sender, receiver).
    committed: (
        mpsc::UnboundedSender<Committed>,
        mpsc::UnboundedReceiver<Committed>,
    ),
    /// The emulated processor, if any (`ActorOptions::service`).
    pace: Option<Pace>,
}

/// A batch the committer has written (or failed to write).
struct Committed {
    result: Result<(), crate::storage::StorageError>,
    /// What was written, kept to retry it if the write failed.
    batch: Vec<Persist>,
    /// The outputs that waited on it, in order.
    rest: Vec<Output>,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut stop: oneshot::Receiver<()>,
        grace: Duration,
    ) {
        let sleep = tokio::time::sleep_until(self.start.into());
        tokio::pin!(sleep);
        let pace_sleep = tokio::time::sleep_until(self.start.into());
        tokio::pin!(pace_sleep);
        let mut armed: Option<Time> = None;
        // Arm the node's timers now, not at its first input: a bootstrap's search for
        // the ring it belonged to (and its founding of a new one) runs from the start,
        // instead of from the first request, which would be refused meanwhile.
        let mut out = std::mem::take(&mut self.out);
        self.node.start(self.now(), &mut out);
        self.carry_out(out);
        loop {
            self.fire_due_timers();
            self.commit();
            self.peers.flush();
            let next = self.node.poll_timeout();
            if next != armed {
                if let Some(at) = next {
                    sleep
                        .as_mut()
                        .reset((self.start + Duration::from_nanos(at)).into());
                }
                armed = next;
            }
            let ready = self.ready();
            if !ready {
                if let Some(pace) = &self.pace {
                    pace_sleep.as_mut().reset(pace.free_at.into());
                }
            }
            tokio::select! {
                biased;
                _ = &mut stop => break,
                command = rx.recv(), if ready => {
                    let Some(command) = command else { break };
                    self.on_command(command);
                    for _ in 1..COMMANDS_PER_TURN_MAX {
                        if !self.ready() {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(command) => self.on_command(command),
                            Err(_) => break,
                        }
                    }
                }
                () = &mut pace_sleep, if !ready => {}
                () = &mut sleep, if armed.is_some() => {}
                Some(done) = self.committed.1.recv(), if self.committing => {
                    self.on_committed(done);
                }
            }
        }
        rx.close();
        self.peers.close(grace).await;
    }

    /// Whether the emulated processor, if any, can take an input now.
    fn ready(&self) -> bool {
        self.pace
            .as_ref()
            .is_none_or(|pace| pace.ready(Instant::now()))
    }

    /// Charge the emulated processor, if any, for `inputs` inputs.
    fn charge(&mut self, inputs: usize) {
        if let Some(pace) = &mut self.pace {
            pace.charge(Instant::now(), inputs);
        }
    }

    fn now(&self) -> Time {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request { request, reply } => {
                self.charge(1);
                let id = self.next_req;
                self.next_req += 1;
                self.waiting.insert(id, reply);
                self.input(Input::Request { id, request });
            }
            Command::Messages(envelopes) => {
                self.charge(envelopes.len());
                add(&self.metrics.peer.messages_received, envelopes.len());
                for envelope in envelopes {
                    self.input(Input::Message(envelope));
                }
            }
            Command::Inspect(f) => f(&self.node),
        }
    }

    fn fire_due_timers(&mut self) {
        let now = self.now();
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            let mut out = std::mem::take(&mut self.out);
            self.node.handle_timeout(now, &mut out);
            self.carry_out(out);
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        let mut out = std::mem::take(&mut self.out);
        if let Err(rejected) = self.node.handle(now, input, &mut out) {
            add(&self.metrics.peer.messages_rejected, 1);
            tracing::debug!(node = %self.node.me().addr, %rejected, "message dropped");
        }
        self.carry_out(out);
    }

    fn carry_out(&mut self, mut out: Vec<Output>) {
        if self.storage.is_some() {
            self.held.append(&mut out);
            self.out = out;
            return;
        }
        for output in out.drain(..) {
            self.carry_out_one(output);
        }
        self.out = out;
    }

    /// Hand what the held outputs persisted to the committer, unless a batch is already
    /// being written (then they wait for the next one). Outputs of turns that persisted
    /// nothing go out at once when nothing is in flight; otherwise they too wait, so no
    /// reply or send overtakes a write it may have observed.
    fn commit(&mut self) {
        let Some(storage) = &self.storage else { return };
        if self.committing || (self.held.is_empty() && self.unpersisted.is_empty()) {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let mut rest = Vec::with_capacity(held.len());
        for output in held {
            match output {
                Output::Persist(p) => self.unpersisted.push(p),
                other => rest.push(other),
            }
        }
        if self.unpersisted.is_empty() {
            for output in rest {
                self.carry_out_one(output);
            }
            return;
        }
        let batch = std::mem::take(&mut self.unpersisted);
        let storage = Arc::clone(storage);
        let report = self.committed.0.clone();
        self.committing = true;
        tokio::task::spawn_blocking(move || {
            let result = storage.write(&batch);
            // The actor may have stopped meanwhile; then nothing waits for the outputs.
            let _ = report.send(Committed {
                result,
                batch,
                rest,
            });
        });
    }

    /// A batch is on disk: carry out the outputs that waited on it. If the write failed
    /// (disk full), nothing that depends on it goes out: sends are dropped (the protocol
    /// retries them), and writes are answered `storage_failed` instead of acknowledged;
    /// reads are still answered. The batch is retried first in the next transaction.
    fn on_committed(&mut self, done: Committed) {
        self.committing = false;
        match done.result {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(node = %self.node.me().addr, "the data directory takes writes again");
                }
                add(&self.metrics.storage.commits, 1);
                add(&self.metrics.storage.persists, done.batch.len());
                for output in done.rest {
                    self.carry_out_one(output);
                }
            }
            Err(err) => {
                add(&self.metrics.storage.failures, 1);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(node = %self.node.me().addr, %err, "cannot persist; answering writes storage_failed until the data directory takes writes again");
                }
                let mut retry = done.batch;
                retry.append(&mut self.unpersisted);
                self.unpersisted = retry;
                let reason = err.to_string();
                for output in done.rest {
                    match output {
                        Output::Reply { id, reply } => {
                            let reply = match reply {
                                Ok(Response::Inserted { .. } | Response::Deleted { .. }) => {
                                    Err(RequestError::StorageFailed {
                                        node: self.node.me().addr.to_string(),
                                        reason: reason.clone(),
                                    })
                                }
                                other => other,
                            };
                            self.carry_out_one(Output::Reply { id, reply });
                        }
                        Output::Send { .. } => add(&self.metrics.storage.sends_held_back, 1),
                        Output::Persist(_) => {}
                    }
                }
            }
        }
    }

    fn carry_out_one(&mut self, output: Output) {
        match output {
            Output::Persist(_) => {}
            Output::Send { to, envelope } => self.peers.send(to, envelope),
            Output::Reply { id, reply } => {
                if let Some(waiter) = self.waiting.remove(&id) {
                    // The client may have gone; its answer is then simply dropped.
                    let _ = waiter.send(reply);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_processor_takes_one_input_per_service_time() {
        let service = Duration::from_micros(100);
        let t0 = Instant::now();
        let mut pace = Pace {
            service,
            free_at: t0,
        };
        assert!(pace.ready(t0));
        // Three inputs at t0: busy for 300 µs.
        pace.charge(t0, 3);
        assert!(!pace.ready(t0 + Duration::from_micros(299)));
        assert!(pace.ready(t0 + Duration::from_micros(300)));
        // Woken 400 µs late (a timer tick): the idle time is banked, up to the credit,
        // so the inputs owed since are handled back to back.
        let late = t0 + Duration::from_micros(700);
        pace.charge(late, 1);
        assert_eq!(pace.free_at, t0 + Duration::from_micros(400));
        assert!(pace.ready(late));
        // Idle for long: the credit is capped, so a burst after it is still bounded.
        let much_later = t0 + Duration::from_secs(1);
        pace.charge(much_later, 20);
        assert_eq!(
            pace.free_at,
            much_later - PACE_CREDIT + Duration::from_micros(2_000)
        );
        assert!(!pace.ready(much_later + Duration::from_micros(999)));
    }
}
