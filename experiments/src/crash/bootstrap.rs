//! The bootstrap scenario's schedule: the bootstrap killed at [`KILL_AT`] and started
//! again with its command at [`RESTART_AT`] (it must rejoin its ring), then, once it is
//! back, killed for good at [`KILL_FOR_GOOD_AT`]; while it stays down a new node joins
//! through a member and another member departs.
//!
//! Nothing here goes through the bootstrap: the overlay is watched through a member, the
//! new node joins through that member, and the clients leave the bootstrap out while it is
//! down (they send to it while it is in the ring, so that the rejoined bootstrap is seen
//! to serve).

use std::time::{Duration, Instant};

use ringkv_client::Recorder;

use super::clock::Clock;
use super::fleet::Fleet;
use super::load::Running;
use super::ring::{wait_ring, RemovalWatch};
use super::timeline::{Failover, Timeline};
use super::{Ctx, KILL_AT, KILL_FOR_GOOD_AT, LOAD_AFTER_DEPART, RESTART_AT, START_TIMEOUT};
use crate::Result;

/// The member the new node joins through, whose overlay is watched: the first one started.
const ENTRY: usize = 1;
/// How long, once the depart is done, to wait for the watch to see the bootstrap's
/// removal (the new node's join, which needed it, is long done).
const REMOVAL_GRACE: Duration = Duration::from_secs(1);

/// While the load runs: kill the bootstrap, restart it and wait until it is back in the
/// ring, kill it for good, let a new node join through a member and the last member
/// depart; then let the load run on for at least [`LOAD_AFTER_DEPART`].
pub(super) fn crash_rejoin_fail_over(
    cx: &Ctx,
    fleet: &mut Fleet,
    running: &Running,
    rec: &Recorder,
    duration: Duration,
) -> Result<Timeline> {
    let clock = Clock::new(cx, rec, duration);
    let ring = fleet.addrs.clone();
    let boot = ring[0].clone();
    let entry = ring[ENTRY].clone();
    let mut tl = Timeline::default();
    // The join and the depart may end after the load's duration; the load goes on until
    // they are done.
    running.keep_going();

    clock.sleep_until(clock.at(KILL_AT), "load on every node");
    kill_bootstrap(fleet, running)?;
    tl.kill_s = clock.now_s();
    let killed = [boot.clone()];
    tl.removed_s = clock.watch_removal(&entry, &killed, clock.at(RESTART_AT), "bootstrap killed");
    tl.restart_s = clock.now_s();
    clock.tick("restarting the bootstrap");
    fleet.restart_bootstrap()?;
    // Back once its own overlay is the whole ring and every node says it is a member: a
    // bootstrap that founded a new ring instead would never be.
    wait_ring(cx.rt, &cx.http, &boot, &ring, START_TIMEOUT, || {
        clock.tick("waiting for the bootstrap to rejoin")
    })?;
    tl.rejoined_s.push(clock.now_s());
    running.set_up(&boot, true);

    clock.sleep_until(clock.at(KILL_FOR_GOOD_AT), "bootstrap back in the ring");
    kill_bootstrap(fleet, running)?;
    let kill_s = clock.now_s();
    let removal = RemovalWatch::start(cx.rt, &entry, &killed, rec.start());
    clock.tick("bootstrap killed for good; a new node joins through a member");
    let join_started_s = clock.now_s();
    let newcomer = fleet.join_through(ENTRY)?;
    let joined_s = clock.now_s();
    running.set_up(&newcomer, true);

    clock.tick("a member departs");
    let departer = ring.len() - 1;
    running.set_up(&ring[departer], false);
    let depart_started_s = clock.now_s();
    fleet.depart(departer)?;
    let departed_s = clock.now_s();
    tl.failover = Some(Failover {
        kill_s,
        removed_s: removal.seen(cx.rt, REMOVAL_GRACE),
        entry: ENTRY,
        newcomer: fleet.addrs.len() - 1,
        join_started_s,
        joined_s,
        departer,
        depart_started_s,
        departed_s,
    });
    running.end_at(clock.at(1.0).max(Instant::now() + LOAD_AFTER_DEPART));
    clock.sleep_until(running.end(), "load on the final ring");
    tl.load_end_s = running
        .end()
        .saturating_duration_since(rec.start())
        .as_secs_f64();
    Ok(tl)
}

/// Take the bootstrap out of the clients' list and `kill -9` it, after checking that no
/// node process ended on its own.
fn kill_bootstrap(fleet: &mut Fleet, running: &Running) -> Result<()> {
    fleet.check_alive()?;
    running.set_up(&fleet.addrs[0], false);
    fleet.kill9(0);
    Ok(())
}
