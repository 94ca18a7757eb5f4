//! The actor: a node's state machine, its lock, and the task that keeps its timers.
//!
//! Every input runs as a *turn* under the node's lock: due timers first, then commands
//! queued earlier, then the input; then its outputs are carried out (sends go to the peer
//! queues, which write at the end of the turn; replies to the waiting handlers). A turn
//! runs on the task that brought the input (an HTTP handler, a peer connection's reader)
//! when the lock is free: handing each input to another task cost a wake-up and a poll of
//! that task per message (2-6 % of a node's instructions per operation, and 2 µs of a
//! one-client request's 39; results/runtime_bench.md). An input that finds the lock taken
//! is queued, and whoever takes the lock next handles it first, so one sender's messages
//! keep their order. The actor task sleeps until `Node::poll_timeout`, a queued command or
//! a written batch, and handles those; an inline turn that arms an earlier timer wakes it.
//! Nothing waits for the lock: whoever finds it taken queues its input (or, the actor task,
//! asks the holder to wake it), so a long turn stalls no second runtime thread.
//! Client requests get a fresh [`ReqId`] and a oneshot channel for the reply. The core
//! enforces every request's deadline, so a waiting handler needs no timeout of its own.
//! The lock is never held across an `.await`. A turn that panics (a bug) stops the node
//! as `stop` would: the requests waiting at it are answered `stopped`, not left waiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use ringkv_core::{
    Envelope, Input, Node, Output, Persist, Reply, ReqId, Request, RequestError, Response, Time,
};
use tokio::sync::{mpsc, oneshot, Notify};
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

/// How a node's actor task is woken: a command was queued, a batch was written, a timer
/// is due earlier than the one it sleeps for, or it found the lock taken.
#[derive(Debug, Default)]
struct Wake {
    notify: Notify,
    /// The task is about to try the lock, or found it taken: whoever holds it wakes the
    /// task after letting it go. The task never waits for the lock, which an inline turn
    /// may hold for long (a large snapshot): that would stall a second runtime thread.
    missed: AtomicBool,
}

impl Wake {
    /// After letting the lock go.
    fn released(&self) {
        // With the fence in `task_turn`: either the task's try_lock sees the lock free,
        // or this load sees its `missed` (a release unlock followed by an acquire load
        // alone would allow both to miss, and the task to sleep with nobody to wake it).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.missed.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }
}

/// Wakes the actor task if an inline turn panics: the lock is then poisoned, and the
/// task, which may be asleep for long, stops the node and answers whoever waits.
struct WakeOnPanic<'a>(&'a Wake);

impl Drop for WakeOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("a turn of the node panicked; the node stops");
            self.0.notify.notify_one();
        }
    }
}

/// Stops the node if the actor task ends without doing so (a panic in one of its turns,
/// or the task dropped by a runtime that shuts down): the requests waiting for an answer
/// would otherwise wait for good, as the node's state outlives the task while handles to
/// it remain.
struct StopOnExit<'a>(&'a Driver);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        let mut actor = self.0.lock_even_poisoned();
        if !actor.stopped {
            if std::thread::panicking() {
                tracing::error!(node = %actor.node.me().addr, "a turn of the node panicked; the node stops");
            }
            actor.refuse_inputs();
        }
    }
}

/// What a node's handles and its actor task share.
struct Driver {
    actor: Mutex<Actor>,
    wake: Arc<Wake>,
    /// Callers handle their inputs themselves when the lock is free. Not with an emulated
    /// processor: its inputs wait in the queue, which the actor task paces.
    inline: bool,
}

impl Driver {
    /// The node's state, waiting for the lock; also after a turn panicked, for stopping
    /// the node (what is left to do then needs no consistent state machine).
    fn lock_even_poisoned(&self) -> std::sync::MutexGuard<'_, Actor> {
        self.actor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("inline", &self.inline)
            .finish_non_exhaustive()
    }
}

/// A clonable handle to a running node: the only way to reach its state machine.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    driver: Arc<Driver>,
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
        let command = match self.run(Command::Request { request, reply })? {
            None => return rx.await.map_err(|_| Unavailable::Stopped),
            Some(command) => command,
        };
        self.tx.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Unavailable::Busy,
            mpsc::error::TrySendError::Closed(_) => Unavailable::Stopped,
        })?;
        self.driver.wake.notify.notify_one();
        rx.await.map_err(|_| Unavailable::Stopped)
    }

    /// Hand peer messages to the node, waiting for room in its queue (back-pressure on the
    /// sending peer) at most the request wait.
    pub async fn deliver(&self, envelopes: Vec<Envelope>) -> Result<(), Unavailable> {
        let Some(command) = self.run(Command::Messages(envelopes))? else {
            return Ok(());
        };
        self.queue(command).await
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
        if let Some(command) = self.run(Command::Inspect(inspector))? {
            self.queue(command).await?;
        }
        match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(Unavailable::Stopped),
            Err(_) => Err(Unavailable::TimedOut(self.wait.as_millis() as u64)),
        }
    }

    /// Handle `command` on the caller's task if the node's lock is free: no hand-over to
    /// another task, and no wake-up of it. Otherwise give it back, to be queued for
    /// whoever holds the lock next.
    fn run(&self, command: Command) -> Result<Option<Command>, Unavailable> {
        if !self.driver.inline {
            return Ok(Some(command));
        }
        // Declared before the lock is taken, so dropped after it is let go.
        let _woken = WakeOnPanic(&self.driver.wake);
        match self.driver.actor.try_lock() {
            Ok(mut actor) => {
                let turn = actor.turn(Some(command), Some(&self.driver.wake.notify));
                drop(actor);
                self.driver.wake.released();
                turn.map(|()| None)
            }
            Err(TryLockError::WouldBlock) => Ok(Some(command)),
            Err(TryLockError::Poisoned(_)) => Err(Unavailable::Stopped),
        }
    }

    /// Queue `command`, waiting for room at most the request wait.
    async fn queue(&self, command: Command) -> Result<(), Unavailable> {
        // The common case, room in the queue, sets no timer.
        let command = match self.tx.try_send(command) {
            Ok(()) => {
                self.driver.wake.notify.notify_one();
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Unavailable::Stopped),
            Err(mpsc::error::TrySendError::Full(command)) => command,
        };
        match tokio::time::timeout(self.wait, self.tx.send(command)).await {
            Ok(Ok(())) => {
                self.driver.wake.notify.notify_one();
                Ok(())
            }
            Ok(Err(_)) => Err(Unavailable::Stopped),
            Err(_) => Err(Unavailable::Busy),
        }
    }
}

/// Runtime settings of one actor.
#[derive(Clone, Copy, Debug)]
pub struct ActorOptions {
    /// Commands (requests, message batches) that found the node busy with another input
    /// (or wait for its emulated processor) queued before clients get `503`.
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
    let wake = Arc::new(Wake::default());
    let addr = node.me().addr.clone();
    let pace = options.service.filter(|d| !d.is_zero()).map(Pace::new);
    let mut actor = Actor {
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
        wake: wake.clone(),
        pace,
        queue: rx,
        armed: None,
        stopped: false,
    };
    // Arm the node's timers now, not at its first input: a bootstrap's search for the ring
    // it belonged to (and its founding of a new one) runs from the start, instead of from
    // the first request, which would be refused meanwhile. Before any handle exists, so
    // no input comes first; the first turn sends what it queued.
    let mut out = std::mem::take(&mut actor.out);
    actor.node.start(actor.now(), &mut out);
    actor.carry_out(out);
    let driver = Arc::new(Driver {
        inline: actor.pace.is_none(),
        actor: Mutex::new(actor),
        wake,
    });
    let handle = NodeHandle {
        tx,
        driver: driver.clone(),
        addr,
        wait: Duration::from_nanos(timeout_ns) + options.wait_margin,
    };
    let task = tokio::spawn(run(driver, stop_rx, options.drain_grace));
    Running { handle, task, stop }
}

/// The actor task: it sleeps until the node's next timer, a queued command or a written
/// batch, and then takes a turn under the node's lock. Inputs that find the lock free are
/// handled by their callers ([`NodeHandle::run`]) and never wake it.
async fn run(driver: Arc<Driver>, mut stop: oneshot::Receiver<()>, grace: Duration) {
    let _stop_on_exit = StopOnExit(&driver);
    let start = match driver.actor.lock() {
        Ok(actor) => actor.start,
        Err(_) => return,
    };
    let sleep = tokio::time::sleep_until(start.into());
    tokio::pin!(sleep);
    let pace_sleep = tokio::time::sleep_until(start.into());
    tokio::pin!(pace_sleep);
    let mut armed: Option<Time> = None;
    loop {
        let turn = match task_turn(&driver) {
            Ok(turn) => turn,
            Err(Unavailable::Stopped) => break,
            Err(_) => None,
        };
        let Some((next, paced_until)) = turn else {
            // The lock was taken: its holder wakes the task when it lets go (timers that
            // fell due meanwhile are then taken), so only a wake-up is waited for.
            tokio::select! {
                biased;
                _ = &mut stop => break,
                () = driver.wake.notify.notified() => {}
            }
            continue;
        };
        if next != armed {
            if let Some(at) = next {
                sleep
                    .as_mut()
                    .reset((start + Duration::from_nanos(at)).into());
            }
            armed = next;
        }
        if let Some(at) = paced_until {
            pace_sleep.as_mut().reset(at.into());
        }
        tokio::select! {
            biased;
            _ = &mut stop => break,
            () = driver.wake.notify.notified() => {}
            () = &mut pace_sleep, if paced_until.is_some() => {}
            () = &mut sleep, if armed.is_some() => {}
        }
    }
    stopped(&driver, grace).await;
}

/// What the actor task waits for after its turn: the node's next timer, and when the
/// emulated processor (if any, and busy) can take the next input.
type Waits = (Option<Time>, Option<Instant>);

/// The actor task's turn, if the lock is free (`None` if it is taken). The lock is let go
/// before returning (it must not be held across an `.await`).
fn task_turn(driver: &Driver) -> Result<Option<Waits>, Unavailable> {
    driver.wake.missed.store(true, Ordering::Release);
    std::sync::atomic::fence(Ordering::SeqCst);
    let mut actor = match driver.actor.try_lock() {
        Ok(actor) => actor,
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Poisoned(_)) => return Err(Unavailable::Stopped),
    };
    driver.wake.missed.store(false, Ordering::Release);
    actor.turn(None, None)?;
    // Inline turns compare their timers with this one: an earlier one wakes the task.
    actor.armed = actor.node.poll_timeout();
    let ready = actor.ready();
    if ready && !actor.queue.is_empty() {
        // A turn takes a bounded number of commands; the rest in the next.
        driver.wake.notify.notify_one();
    }
    let paced_until = actor.pace.as_ref().map(|p| p.free_at).filter(|_| !ready);
    Ok(Some((actor.armed, paced_until)))
}

/// Refuse inputs from now on and close the transport; the future waits for its queues to
/// drain (at most `grace`).
fn stopped(driver: &Driver, grace: Duration) -> impl std::future::Future<Output = ()> {
    // A poisoned lock (a panic in the core) still holds the transport to close.
    let mut actor = driver.lock_even_poisoned();
    actor.refuse_inputs();
    actor.peers.close(grace)
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
    /// A batch is being written on a blocking thread. Meanwhile the node goes on
    /// handling inputs and holds their outputs, so the next transaction (one `fsync`)
    /// covers everything that arrived during this one: group commit that grows with load.
    committing: bool,
    /// The last write failed (logged once per episode, not per retry).
    failing: bool,
    /// Where the committer reports a written batch (sender, receiver); every turn takes
    /// what arrived.
    committed: (
        mpsc::UnboundedSender<Committed>,
        mpsc::UnboundedReceiver<Committed>,
    ),
    /// The actor task's wake-up, for the committer.
    wake: Arc<Wake>,
    /// The emulated processor, if any (`ActorOptions::service`).
    pace: Option<Pace>,
    /// Commands that found the lock taken (or wait for the emulated processor).
    queue: mpsc::Receiver<Command>,
    /// The timer the actor task sleeps for.
    armed: Option<Time>,
    /// The node stopped: inputs are refused.
    stopped: bool,
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
    /// Refuse inputs from now on. Queued commands and requests waiting for an answer are
    /// dropped: their callers learn that the node stopped. (The state outlives the task
    /// while handles to it remain, and with no timer running any more, a waiting request
    /// would wait for good.) The data directory is closed as when the task owned the state
    /// (a batch being written holds it until done).
    fn refuse_inputs(&mut self) {
        self.stopped = true;
        self.queue.close();
        while self.queue.try_recv().is_ok() {}
        self.waiting.clear();
        self.storage = None;
    }

    /// One turn under the node's lock: due timers, the commands queued before
    /// `command` (so a sender's messages stay in order when one of them found the lock
    /// taken), `command`, then what the turn's outputs need: the disk, the peer queues'
    /// writes, and the actor task's wake-up if a timer is now due before the one it
    /// sleeps for.
    /// `wake` is the actor task's, given by inline turns (the task's own sets its timer
    /// and takes what is left queued itself).
    fn turn(&mut self, command: Option<Command>, wake: Option<&Notify>) -> Result<(), Unavailable> {
        if self.stopped {
            return Err(Unavailable::Stopped);
        }
        self.fire_due_timers();
        while let Ok(done) = self.committed.1.try_recv() {
            self.on_committed(done);
        }
        let mut taken = 0;
        while taken < COMMANDS_PER_TURN_MAX && self.ready() {
            match self.queue.try_recv() {
                Ok(queued) => self.on_command(queued),
                Err(_) => break,
            }
            taken += 1;
        }
        if let Some(wake) = wake.filter(|_| taken == COMMANDS_PER_TURN_MAX) {
            // More may be queued: the actor task takes them in a turn of its own.
            wake.notify_one();
        }
        if let Some(command) = command {
            self.on_command(command);
        }
        self.commit();
        self.peers.flush();
        if let Some(wake) = wake {
            let next = self.node.poll_timeout();
            if next.is_some_and(|at| self.armed.is_none_or(|armed| at < armed)) {
                // Set now: the turns before the task's own would otherwise wake it again.
                self.armed = next;
                wake.notify_one();
            }
        }
        Ok(())
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
        let wake = self.wake.clone();
        self.committing = true;
        tokio::task::spawn_blocking(move || {
            let result = storage.write(&batch);
            // The actor may have stopped meanwhile; then nothing waits for the outputs.
            let _ = report.send(Committed {
                result,
                batch,
                rest,
            });
            wake.notify.notify_one();
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
