//! The pause and partition scenarios' schedule: the fault at [`KILL_AT`], its removal of
//! the victims watched through the bootstrap, the heal at [`RESTART_AT`], and the wait
//! until every node is a member of the whole ring again.
//!
//! - **pause**: SIGSTOP of the bootstrap's successor. The clients stop sending new
//!   requests to it, as they do to a killed node (a request already sent there waits);
//!   at SIGCONT it is put back in their list at once, while it may still believe what it
//!   believed before the pause, so that whatever it answers is checked.
//! - **partition**: the victims (the bootstrap's next ⌊(N − 1)/2⌋ successors) and the
//!   rest each drop every node-to-node message from and to the other side, through each
//!   node's test-only filter (`POST /admin/partition` with the run's cluster secret); an
//!   empty list heals. The clients are on neither side: they go on sending to every
//!   node, so the minority side's answers are checked too.

use std::time::Duration;

use ringkv_client::Recorder;
use ringkv_runtime::HttpClient;

use super::clock::Clock;
use super::fleet::Fleet;
use super::load::Running;
use super::ring::wait_ring;
use super::settings::Fault;
use super::timeline::Timeline;
use super::{Ctx, KILL_AT, RESTART_AT, START_TIMEOUT};
use crate::{ExperimentError, Result};

/// The test-only endpoint that sets a node's partition filter.
const PARTITION_PATH: &str = "/admin/partition";

/// While the load runs: the fault at [`KILL_AT`], the heal at [`RESTART_AT`], then the
/// wait until the ring is whole again, and the load's end. `secret` is the cluster secret
/// the partition requests carry.
#[allow(clippy::too_many_arguments)]
pub(super) fn fault_and_heal(
    cx: &Ctx,
    fleet: &mut Fleet,
    running: &Running,
    rec: &Recorder,
    victims: &[usize],
    duration: Duration,
    fault: Fault,
    secret: Option<&str>,
) -> Result<Timeline> {
    let clock = Clock::new(cx, rec, duration);
    let mut tl = Timeline {
        fault,
        ..Timeline::default()
    };
    let addrs = fleet.addrs.clone();
    let victim_addrs: Vec<String> = victims.iter().map(|&i| addrs[i].clone()).collect();
    let others: Vec<String> = addrs
        .iter()
        .filter(|a| !victim_addrs.contains(a))
        .cloned()
        .collect();
    let admin = HttpClient::new(crate::real::CLIENT_TIMEOUT).with_bearer(secret);

    clock.sleep_until(clock.at(KILL_AT), "load on every node");
    fleet.check_alive()?;
    let what = match fault {
        Fault::Pause => {
            for &v in victims {
                running.set_up(&addrs[v], false);
                fleet.pause(v)?;
            }
            format!("{} paused", victims.len())
        }
        Fault::Partition => {
            for (side, other) in [(&victim_addrs, &others), (&others, &victim_addrs)] {
                for a in side {
                    set_partition(cx, &admin, a, other)?;
                }
            }
            format!("{} | {} partitioned", victim_addrs.len(), others.len())
        }
        Fault::Kill => {
            return Err(ExperimentError(
                "the kill scenarios have their own schedules".into(),
            ))
        }
    };
    tl.kill_s = clock.now_s();
    tl.removed_s = clock.watch_removal(&addrs[0], &victim_addrs, clock.at(RESTART_AT), &what);
    match fault {
        Fault::Pause => {
            clock.tick("resuming the paused node");
            for &v in victims {
                fleet.resume(v)?;
                running.set_up(&addrs[v], true);
            }
        }
        _ => {
            clock.tick("healing the partition");
            for a in &addrs {
                set_partition(cx, &admin, a, &[])?;
            }
        }
    }
    tl.restart_s = clock.now_s();
    wait_ring(cx.rt, &cx.http, &addrs[0], &addrs, START_TIMEOUT, || {
        clock.tick("waiting for the ring to be whole again")
    })?;
    tl.rejoined_s.push(clock.now_s());
    clock.sleep_until(running.end(), "load on every node");
    tl.load_end_s = duration.as_secs_f64();
    Ok(tl)
}

/// Make the node at `addr` drop every message to and from `block` (empty: heal).
fn set_partition(cx: &Ctx, admin: &HttpClient, addr: &str, block: &[String]) -> Result<()> {
    let body = serde_json::json!({ "block": block }).to_string();
    let url = format!("http://{addr}{PARTITION_PATH}");
    let reply = cx
        .rt
        .block_on(admin.post(&url, Some(body.into())))
        .map_err(|e| ExperimentError(format!("POST {url}: {e}")))?;
    if reply.status != 200 {
        return Err(ExperimentError(format!(
            "POST {url} answered {}: {}",
            reply.status,
            reply.text()
        )));
    }
    Ok(())
}
