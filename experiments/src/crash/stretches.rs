//! The throughput between a run's events, and how the ring served after each fault: the
//! time in which no operation completed `ok` (in all, and the longest gap), and the
//! stretch in which they completed at less than half the rate before the first kill.

use ringkv_sim::check::OpStatus;

use super::settings::Fault;
use super::{Run, Victim};
use crate::runner::fixed;

/// Width of the bins in which [`idle_time`] and [`slow_stretch`] count completions,
/// seconds.
const BIN_S: f64 = 0.25;
/// A stretch between two events of the bootstrap scenario that lasts less than this
/// (seconds: the bootstrap's restart to its rejoin, the join to the depart's end) has no
/// throughput figure of its own: a rate over a few operations says nothing.
const STRETCH_MIN_S: f64 = 1.0;
/// The target on the longest window without an `ok` completion is the failure timeout
/// plus this, seconds (issue 15: a benchmark figure, not a test).
pub(super) const ZERO_WINDOW_MARGIN_S: f64 = 0.5;

/// A fault of the run and how the ring served after it, until the next fault.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct AfterFault {
    /// What happened, e.g. `kill -9 of the bootstrap`.
    pub(super) what: String,
    /// When, seconds since the load began.
    pub(super) at_s: f64,
    /// Until when the ring is looked at: the next fault, or the load's end.
    pub(super) until_s: f64,
    /// The time in `[at_s, until_s)` in which no operation completed `ok`, seconds in 250
    /// ms bins (see [`idle_time`]).
    pub(super) idle_s: f64,
    /// The longest stretch of `[at_s, until_s)` in which no operation completed `ok`.
    pub(super) stall: (f64, f64),
    /// The first stretch of it in which `ok` operations completed at less than half the
    /// rate before the first kill (see [`slow_stretch`]), if any.
    pub(super) slow: Option<(f64, f64)>,
}

impl Run {
    /// When the load's `ok` operations completed, seconds since the load began, in order.
    fn ok_times(&self) -> Vec<f64> {
        let mut ok_s: Vec<f64> = self
            .load()
            .iter()
            .filter(|o| o.status == OpStatus::Ok)
            .filter_map(|o| o.complete.map(|c| c.time as f64 / 1e9))
            .collect();
        ok_s.sort_by(f64::total_cmp);
        ok_s
    }

    /// When the load's operations completed, whatever their outcome, seconds since the
    /// load began, in order.
    fn completion_times(&self) -> Vec<f64> {
        let mut done_s: Vec<f64> = self
            .load()
            .iter()
            .filter_map(|o| o.complete.map(|c| c.time as f64 / 1e9))
            .collect();
        done_s.sort_by(f64::total_cmp);
        done_s
    }

    /// The longest windows of the whole load with zero completed operations: (without an
    /// `ok` completion, without any completion — `ok`, `fail` or `info`).
    pub(super) fn zero_windows(&self) -> ((f64, f64), (f64, f64)) {
        let end = self.tl.load_end_s;
        (
            longest_stall(&self.ok_times(), 0.0, end),
            longest_stall(&self.completion_times(), 0.0, end),
        )
    }

    /// The benchmark target on the longest window without an `ok` completion: at most
    /// the failure timeout plus [`ZERO_WINDOW_MARGIN_S`].
    pub(super) fn zero_window_target_s(&self) -> f64 {
        self.settings.failure_timeout.as_secs_f64() + ZERO_WINDOW_MARGIN_S
    }

    /// Whether the longest window without an `ok` completion meets the target.
    pub(super) fn zero_window_met(&self) -> bool {
        let (a, b) = self.zero_windows().0;
        b - a <= self.zero_window_target_s()
    }

    /// `ok` operations per second completed in `[from, to)` (`NaN` for an empty span).
    fn rate(&self, from: f64, to: f64) -> f64 {
        if to <= from {
            return f64::NAN;
        }
        let ok_s = self.ok_times();
        let ok = ok_s.partition_point(|t| *t < to) - ok_s.partition_point(|t| *t < from);
        ok as f64 / (to - from)
    }

    /// Each fault of the run with how the ring served until the next one.
    pub(super) fn after_faults(&self) -> Vec<AfterFault> {
        let killed = match (self.settings.fault, self.settings.victim) {
            (Fault::Partition, _) => format!(
                "the {} successors from the other {}",
                self.victims.len(),
                self.settings.nodes - self.victims.len()
            ),
            (Fault::Pause, _) => "the successor".to_string(),
            (Fault::Kill, Victim::Successors) => format!("the {} successors", self.victims.len()),
            (Fault::Kill, Victim::Bootstrap) => "the bootstrap".to_string(),
        };
        let faults = self.tl.faults(&killed);
        let ok_s = self.ok_times();
        let healthy = self.rate(0.0, self.tl.kill_s);
        let untils = faults.iter().skip(1).map(|(_, t)| *t);
        let untils = untils.chain([self.tl.load_end_s]);
        faults
            .iter()
            .zip(untils)
            .map(|((what, at_s), until_s)| AfterFault {
                what: what.clone(),
                at_s: *at_s,
                until_s,
                idle_s: idle_time(&ok_s, *at_s, until_s),
                stall: longest_stall(&ok_s, *at_s, until_s),
                slow: slow_stretch(&ok_s, healthy / 2.0, *at_s, until_s),
            })
            .collect()
    }

    /// Throughput in each stretch between the run's events: (what, span, ok ops/s).
    pub(super) fn figures(&self) -> Vec<(String, String, f64)> {
        let tl = &self.tl;
        let (before, killed, are, their, down, restart, rejoin) = match self.settings.fault {
            Fault::Kill => match self.settings.victim {
                Victim::Successors => (
                    "before the kill",
                    "the killed nodes",
                    "are",
                    "their",
                    "down",
                    "the restart",
                    "after the restart and rejoin",
                ),
                Victim::Bootstrap => (
                    "before the kill",
                    "the killed bootstrap",
                    "is",
                    "its",
                    "down",
                    "the restart",
                    "after the restart and rejoin",
                ),
            },
            Fault::Pause => (
                "before the pause",
                "the paused node",
                "is",
                "its",
                "paused",
                "SIGCONT",
                "after the ring was whole again",
            ),
            Fault::Partition => (
                "before the partition",
                "the cut-off nodes",
                "are",
                "their",
                "cut off",
                "the heal",
                "after the ring was whole again",
            ),
        };
        let mut out = vec![self.stretch(before, 0.0, tl.kill_s)];
        let serving = self.settings.nodes - self.victims.len();
        match tl.removed_s.filter(|r| *r < tl.restart_s) {
            Some(r) => {
                let what = format!("while {killed} {are} still in the ring");
                out.push(self.stretch(&what, tl.kill_s, r));
                let what = format!("after {their} removal ({serving} nodes serve)");
                out.push(self.stretch(&what, r, tl.restart_s));
            }
            None => {
                let what = format!("while {killed} {are} {down} (not removed before {restart})");
                out.push(self.stretch(&what, tl.kill_s, tl.restart_s));
            }
        }
        let back = tl.all_rejoined_s();
        let Some(f) = &tl.failover else {
            if self.settings.fault != Fault::Kill && back - tl.restart_s >= STRETCH_MIN_S {
                let what = format!("after {restart}, until the ring was whole again");
                out.push(self.stretch(&what, tl.restart_s, back));
            }
            out.push(self.stretch(rejoin, back, tl.load_end_s));
            return out;
        };
        let fewer = self.settings.nodes - 1;
        if back - tl.restart_s >= STRETCH_MIN_S {
            let what = "restarted, not yet back in the ring";
            out.push(self.stretch(what, tl.restart_s, back));
        }
        out.push(self.stretch("back in the ring", back, f.kill_s));
        match f.removed_s.filter(|r| *r < f.joined_s) {
            Some(r) => {
                let what = "killed for good, still in the ring";
                out.push(self.stretch(what, f.kill_s, r));
                let what =
                    format!("after its removal, until the new node joined ({fewer} nodes serve)");
                out.push(self.stretch(&what, r, f.joined_s));
            }
            None => {
                let what = "killed for good, until the new node joined";
                out.push(self.stretch(what, f.kill_s, f.joined_s));
            }
        }
        if f.departed_s - f.joined_s >= STRETCH_MIN_S {
            let what = "new node joined, until the depart was done";
            out.push(self.stretch(what, f.joined_s, f.departed_s));
        }
        let what = format!("after the join and the depart ({fewer} nodes serve)");
        out.push(self.stretch(&what, f.departed_s, tl.load_end_s));
        out
    }

    /// A stretch of the run: what, its span, its ok operations per second.
    fn stretch(&self, what: &str, from: f64, to: f64) -> (String, String, f64) {
        let span = format!("{}–{} s", fixed(from, 1), fixed(to, 1));
        (what.to_string(), span, self.rate(from, to))
    }
}

/// The completions of `ok_s` (sorted) in `[a, b)`.
fn count(ok_s: &[f64], a: f64, b: f64) -> usize {
    ok_s.partition_point(|t| *t < b) - ok_s.partition_point(|t| *t < a)
}

/// The time in `[from, until)` without any of the completions `ok_s` (sorted, seconds):
/// the bins of 250 ms from `from` (the last one shorter if need be) with none, added up.
fn idle_time(ok_s: &[f64], from: f64, until: f64) -> f64 {
    if until <= from {
        return 0.0;
    }
    let bins = ((until - from) / BIN_S).ceil() as usize;
    (0..bins)
        .map(|i| {
            let a = from + i as f64 * BIN_S;
            (a, (a + BIN_S).min(until))
        })
        .filter(|&(a, b)| count(ok_s, a, b) == 0)
        // A fold from +0.0: an empty f64 sum is -0.0, which would print as "-0.00".
        .fold(0.0, |idle, (a, b)| idle + (b - a))
}

/// The longest stretch of `[from, until)` without any of the completions `ok_s` (sorted,
/// seconds): from `from`, or a completion, to the next completion, or `until`.
fn longest_stall(ok_s: &[f64], from: f64, until: f64) -> (f64, f64) {
    let within = &ok_s[ok_s.partition_point(|t| *t < from)..ok_s.partition_point(|t| *t < until)];
    let edges: Vec<f64> = [from]
        .into_iter()
        .chain(within.iter().copied())
        .chain([until.max(from)])
        .collect();
    edges
        .windows(2)
        .map(|w| (w[0], w[1]))
        .fold((from, from), |best, gap| {
            if gap.1 - gap.0 > best.1 - best.0 {
                gap
            } else {
                best
            }
        })
}

/// The first stretch in `[from, until)` in which the completions `ok_s` (sorted,
/// seconds) came at less than `rate_min` per second, in bins of 250 ms: from the first
/// such bin to the first bin back at `rate_min` or more (`until` if none is). `None` if
/// no bin fell below it.
fn slow_stretch(ok_s: &[f64], rate_min: f64, from: f64, until: f64) -> Option<(f64, f64)> {
    if !rate_min.is_finite() || until <= from {
        return None;
    }
    // Whole bins only: a sliver at the end would make a rate out of a few operations.
    let bins = ((until - from) / BIN_S).floor() as usize;
    let start = |i: usize| from + i as f64 * BIN_S;
    let low = |i: usize| (count(ok_s, start(i), start(i + 1)) as f64 / BIN_S) < rate_min;
    let first = (0..bins).find(|&i| low(i))?;
    let back = (first..bins).find(|&i| !low(i)).map_or(until, start);
    Some((start(first), back))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40 per second (10 a bin) until 1.0 s, none until 2.0 s, then 40 per second.
    fn ok_s() -> Vec<f64> {
        (0..40)
            .map(|i| f64::from(i) * 0.025)
            .chain((0..40).map(|i| 2.0 + f64::from(i) * 0.025))
            .collect()
    }

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9
    }

    #[test]
    fn a_slow_stretch_runs_from_the_first_slow_bin_to_the_first_fast_one() {
        let ok_s = ok_s();
        assert_eq!(slow_stretch(&ok_s, 20.0, 0.0, 3.0), Some((1.0, 2.0)));
        // Still slow at the end of the span; never slow; an empty span.
        assert_eq!(slow_stretch(&ok_s, 20.0, 0.5, 1.5), Some((1.0, 1.5)));
        assert_eq!(slow_stretch(&ok_s, 20.0, 0.0, 1.0), None);
        assert_eq!(slow_stretch(&ok_s, 20.0, 1.0, 1.0), None);
    }

    #[test]
    fn idle_time_adds_up_the_bins_without_an_ok_completion() {
        let ok_s = ok_s();
        // The four bins from 1.0 to 2.0 s.
        assert!((idle_time(&ok_s, 0.0, 3.0) - 1.0).abs() < 1e-9);
        // A last bin cut short by the span's end: 1.0–1.25, 1.25–1.4.
        assert!((idle_time(&ok_s, 1.0, 1.4) - 0.4).abs() < 1e-9);
        assert_eq!(fixed(idle_time(&ok_s, 0.0, 1.0), 2), "0.00");
        assert_eq!(idle_time(&ok_s, 1.0, 1.0), 0.0);
    }

    #[test]
    fn a_stall_is_the_longest_time_without_an_ok_completion() {
        let ok_s = ok_s();
        // Between the last completion before 1 s and the first at 2 s.
        assert!(close(longest_stall(&ok_s, 0.0, 3.0), (0.975, 2.0)));
        // From the start of the span, and up to its end.
        assert!(close(longest_stall(&ok_s, 1.2, 2.01), (1.2, 2.0)));
        assert!(close(longest_stall(&ok_s, 0.9, 1.5), (0.975, 1.5)));
        // An empty span.
        assert!(close(longest_stall(&ok_s, 1.0, 1.0), (1.0, 1.0)));
    }
}
