//! The load's clock as the scenarios' schedules use it: moments as fractions of the load,
//! sleeping until them with the progress bar moving, and watching a removal meanwhile.

use std::thread;
use std::time::{Duration, Instant};

use ringkv_client::Recorder;

use super::ring::RemovalWatch;
use super::Ctx;

/// What both scenarios' schedules share: the load's clock and the progress bar.
pub(super) struct Clock<'a> {
    cx: &'a Ctx<'a>,
    rec: &'a Recorder,
    duration: Duration,
}

impl<'a> Clock<'a> {
    /// The clock of the load recorded by `rec`, which lasts `duration` (unless a scenario
    /// keeps it going).
    pub(super) fn new(cx: &'a Ctx<'a>, rec: &'a Recorder, duration: Duration) -> Clock<'a> {
        Clock { cx, rec, duration }
    }

    /// The moment `fraction` of the load's duration after its start.
    pub(super) fn at(&self, fraction: f64) -> Instant {
        self.rec.start() + self.duration.mul_f64(fraction)
    }

    /// Seconds since the load began.
    pub(super) fn now_s(&self) -> f64 {
        self.rec.elapsed().as_secs_f64()
    }

    /// Move the progress bar to now and show `msg`.
    pub(super) fn tick(&self, msg: &str) {
        self.cx.bar.set_position(self.rec.elapsed().as_secs());
        self.cx.bar.set_message(msg.to_string());
    }

    /// Sleep until `t`, ticking with `msg` every 100 ms.
    pub(super) fn sleep_until(&self, t: Instant, msg: &str) {
        loop {
            let left = t.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.tick(msg);
            thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// Watch the overlay `via` reports until `until`, ticking with `msg`; returns when
    /// (seconds since the load began) it first no longer held any of `victims`.
    pub(super) fn watch_removal(
        &self,
        via: &str,
        victims: &[String],
        until: Instant,
        msg: &str,
    ) -> Option<f64> {
        let watch = RemovalWatch::start(self.cx.rt, via, victims, self.rec.start());
        self.sleep_until(until, msg);
        watch.seen(self.cx.rt, Duration::ZERO)
    }
}
