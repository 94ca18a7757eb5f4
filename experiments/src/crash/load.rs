//! The operations of a run, all in one history: the closed-loop load of inserts and
//! queries during the crash, then the final reads of every written key through every node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// What every client task shares.
pub(super) struct Load {
    http: HttpClient,
    rec: Arc<Recorder>,
    addrs: Vec<String>,
    /// Whether each node is up, as far as the clients should know: they send only there.
    live: Vec<AtomicBool>,
    processes: Arc<ProcessIds>,
    end: Instant,
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
        addrs: addrs.to_vec(),
        live: addrs.iter().map(|_| AtomicBool::new(true)).collect(),
        processes: Arc::new(ProcessIds::new(settings.clients)),
        end: rec.start() + duration,
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
        self.load.end
    }

    /// Tell the clients whether node `i` is up.
    pub(super) fn set_live(&self, i: usize, up: bool) {
        self.load.live[i].store(up, Ordering::Relaxed);
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
    while Instant::now() < load.end {
        let up: Vec<usize> = (0..load.addrs.len())
            .filter(|&i| load.live[i].load(Ordering::Relaxed))
            .collect();
        // The bootstrap is never killed, so some node is always up.
        let node = up[rng.gen_range(0..up.len())];
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
        let done = perform(&load.http, &load.rec, process, &load.addrs[node], &op).await;
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
