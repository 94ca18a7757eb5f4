//! The operations of a run, all in one history: the closed-loop load of inserts and
//! queries during the crash, then the final reads of every written key through every node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_client::{perform, Op, ProcessIds, Recorder};
use ringkv_runtime::{HttpClient, Outcome};
use ringkv_sim::check::OpKind;
use tokio::task::JoinHandle;

use super::{Settings, READ_ATTEMPTS};
use crate::real::CLIENT_TIMEOUT;
use crate::{ExperimentError, Result};

/// Pause between attempts of a final read that got no `ok` answer.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// A client's pause when no node is up (it then looks again).
const NONE_UP_PAUSE: Duration = Duration::from_millis(50);

/// A node the clients may send to.
struct Target {
    addr: String,
    /// Whether it is up, as far as the clients should know: they send only there.
    up: bool,
}

/// What every client task shares.
pub(super) struct Load {
    http: HttpClient,
    rec: Arc<Recorder>,
    /// Every node the clients know of; a node that joins during the load is added.
    nodes: Mutex<Vec<Target>>,
    processes: Arc<ProcessIds>,
    /// When the load ends, nanoseconds after the recorder's start (a scenario may keep it
    /// going and end it later).
    end_ns: AtomicU64,
    keys: usize,
    write_ratio: f64,
    seed: u64,
}

/// The load's clients, running.
pub(super) struct Running {
    load: Arc<Load>,
    tasks: Vec<JoinHandle<()>>,
}

/// Start `settings.clients` closed-loop clients on `rt` against `addrs`, recording into
/// `rec`, until `duration` after the recorder's start.
pub(super) fn start(
    rt: &tokio::runtime::Runtime,
    http: &HttpClient,
    rec: &Arc<Recorder>,
    addrs: &[String],
    settings: &Settings,
    seed: u64,
    duration: Duration,
) -> Running {
    let load = Arc::new(Load {
        http: http.clone(),
        rec: rec.clone(),
        nodes: Mutex::new(
            addrs
                .iter()
                .map(|a| Target {
                    addr: a.clone(),
                    up: true,
                })
                .collect(),
        ),
        processes: Arc::new(ProcessIds::new(settings.clients)),
        end_ns: AtomicU64::new(nanos(duration)),
        keys: settings.keys,
        write_ratio: settings.write_ratio,
        seed,
    });
    let tasks = (0..settings.clients)
        .map(|c| rt.spawn(client(load.clone(), c)))
        .collect();
    Running { load, tasks }
}

impl Running {
    /// When the load ends.
    pub(super) fn end(&self) -> Instant {
        self.load.end()
    }

    /// Keep the load going past its duration, until [`Running::end_at`] is called.
    pub(super) fn keep_going(&self) {
        self.load.end_ns.store(u64::MAX, Ordering::Relaxed);
    }

    /// Make the load end at `t`.
    pub(super) fn end_at(&self, t: Instant) {
        let ns = nanos(t.saturating_duration_since(self.load.rec.start()));
        self.load.end_ns.store(ns, Ordering::Relaxed);
    }

    /// Tell the clients whether the node at `addr` is up (a node they do not know yet is
    /// added).
    pub(super) fn set_up(&self, addr: &str, up: bool) {
        let mut nodes = self.load.lock_nodes();
        match nodes.iter_mut().find(|n| n.addr == addr) {
            Some(n) => n.up = up,
            None => nodes.push(Target {
                addr: addr.to_string(),
                up,
            }),
        }
    }

    /// Wait for every client's last request (each ends within the client timeout), and
    /// return the process ids from which the final reads take theirs.
    pub(super) fn finish(self, rt: &tokio::runtime::Runtime) -> Result<Arc<ProcessIds>> {
        let tasks = self.tasks;
        let joined = rt.block_on(async {
            tokio::time::timeout(CLIENT_TIMEOUT + Duration::from_secs(5), async {
                for t in tasks {
                    let _ = t.await;
                }
            })
            .await
        });
        if joined.is_err() {
            return Err(ExperimentError(
                "the clients did not finish within the client timeout".into(),
            ));
        }
        Ok(self.load.processes.clone())
    }
}

impl Load {
    fn end(&self) -> Instant {
        let ns = self.end_ns.load(Ordering::Relaxed);
        // Kept going: a year from now stands for "not yet".
        let after = Duration::from_nanos(ns).min(Duration::from_secs(365 * 86_400));
        self.rec.start() + after
    }

    /// The node list (held only to read an entry or flip a flag, so a poisoned lock still
    /// guards a whole list).
    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, Vec<Target>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A random node that is up (`None`: none is).
    fn pick(&self, rng: &mut ChaCha8Rng) -> Option<String> {
        let nodes = self.lock_nodes();
        let up: Vec<&Target> = nodes.iter().filter(|n| n.up).collect();
        if up.is_empty() {
            return None;
        }
        Some(up[rng.gen_range(0..up.len())].addr.clone())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The name of key `i`.
fn key_name(i: usize) -> String {
    format!("key-{i:02}")
}

/// A closed-loop client: one request at a time, to a random node believed up, until the
/// load ends.
async fn client(load: Arc<Load>, id: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(load.seed.wrapping_mul(1000).wrapping_add(id as u64));
    let mut process = id as u64;
    let mut n = 0u64;
    while Instant::now() < load.end() {
        // Some node is always up (the scenarios never take all of them down); should none
        // be, the client waits rather than fail.
        let Some(node) = load.pick(&mut rng) else {
            tokio::time::sleep(NONE_UP_PAUSE).await;
            continue;
        };
        let key = key_name(rng.gen_range(0..load.keys));
        let op = if rng.gen_bool(load.write_ratio) {
            n += 1;
            Op {
                f: OpKind::Write,
                key,
                value: Some(format!("c{id}-{n}")),
            }
        } else {
            read(key)
        };
        let done = perform(&load.http, &load.rec, process, &node, &op).await;
        if matches!(done.outcome, Outcome::Info(_)) {
            process = load.processes.fresh();
        }
    }
}

fn read(key: String) -> Op {
    Op {
        f: OpKind::Read,
        key,
        value: None,
    }
}

/// A final read that got no `ok` answer in [`READ_ATTEMPTS`] attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Unanswered {
    /// The key.
    pub(super) key: String,
    /// The node it was asked through.
    pub(super) node: String,
}

/// Read every key in `keys` through every node in `addrs`, each key as a fresh process;
/// a read without an `ok` answer is retried, and every attempt goes into the history.
/// Returns the reads that never got an `ok` answer.
pub(super) fn read_back(
    rt: &tokio::runtime::Runtime,
    http: &HttpClient,
    rec: &Recorder,
    processes: &ProcessIds,
    keys: &[String],
    addrs: &[String],
) -> Vec<Unanswered> {
    let mut unanswered = Vec::new();
    for key in keys {
        let process = processes.fresh();
        let op = read(key.clone());
        for addr in addrs {
            let answered = (0..READ_ATTEMPTS).any(|attempt| {
                if attempt > 0 {
                    thread::sleep(READ_RETRY_PAUSE);
                }
                let done = rt.block_on(perform(http, rec, process, addr, &op));
                matches!(done.outcome, Outcome::Ok(_))
            });
            if !answered {
                unanswered.push(Unanswered {
                    key: key.clone(),
                    node: addr.clone(),
                });
            }
        }
    }
    unanswered
}
