//! The successors scenario's schedule: k − 1 consecutive members killed at [`KILL_AT`],
//! their removal watched through the bootstrap, their restart at [`RESTART_AT`].

use std::time::Duration;

use ringkv_client::Recorder;

use super::clock::Clock;
use super::fleet::Fleet;
use super::load::Running;
use super::timeline::Timeline;
use super::{Ctx, KILL_AT, RESTART_AT};
use crate::Result;

/// While the load runs: kill the victims at [`KILL_AT`], note when the bootstrap has
/// removed them, restart them at [`RESTART_AT`], and wait for the load's end.
pub(super) fn crash_and_restart(
    cx: &Ctx,
    fleet: &mut Fleet,
    running: &Running,
    rec: &Recorder,
    victims: &[usize],
    duration: Duration,
) -> Result<Timeline> {
    let clock = Clock::new(cx, rec, duration);
    let mut tl = Timeline::default();
    clock.sleep_until(clock.at(KILL_AT), "load on every node");
    fleet.check_alive()?;
    for &v in victims {
        running.set_up(&fleet.addrs[v], false);
        fleet.kill9(v);
    }
    tl.kill_s = clock.now_s();
    let victim_addrs: Vec<String> = victims.iter().map(|&i| fleet.addrs[i].clone()).collect();
    let killed = format!("{} nodes killed", victims.len());
    let boot = &fleet.addrs[0];
    tl.removed_s = clock.watch_removal(boot, &victim_addrs, clock.at(RESTART_AT), &killed);
    tl.restart_s = clock.now_s();
    clock.tick("restarting the killed nodes");
    for &v in victims {
        fleet.restart(v)?;
        tl.rejoined_s.push(clock.now_s());
        running.set_up(&fleet.addrs[v], true);
    }
    clock.sleep_until(running.end(), "load on every node");
    tl.load_end_s = duration.as_secs_f64();
    Ok(tl)
}
