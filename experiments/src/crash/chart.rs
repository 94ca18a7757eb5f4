//! `crash_real.png` (or `crash_bootstrap.png`): ok operations per second over the load,
//! with its events marked by dashed vertical lines.

use std::path::Path;

use plotters::style::RGBColor;

use super::analysis::Row;
use super::settings::Fault;
use super::{Run, Victim};
use crate::plot::{self, shade, Axis, Chart, LegendAt, Marker, Point, Series};
use crate::runner::fixed;
use crate::Result;

/// Colour of the kill markers (red).
const KILL: RGBColor = RGBColor(214, 39, 40);
/// Colour of the depart marker (brown).
const DEPART: RGBColor = RGBColor(140, 86, 75);
/// Headroom above the highest point, for the legend: the bootstrap scenario marks eight
/// events.
const HEADROOM_BOOTSTRAP: f64 = 1.7;

/// The plot: ok operations per second, with the kill, the removal from the ring, the
/// restart and, with the bootstrap as victim, the rejoin, the second kill, the join and
/// the depart marked.
pub(super) fn draw(path: &Path, run: &Run, rows: &[Row]) -> Result<()> {
    let tl = &run.tl;
    let s = &run.settings;
    let mid = |r: &Row| (r.t_from_s + r.t_to_s) / 2.0;
    let ok: Vec<Point> = rows
        .iter()
        .map(|r| Point::at(mid(r), r.throughput_ok_per_s))
        .collect();
    let headroom = match s.victim {
        Victim::Successors => 1.0,
        Victim::Bootstrap => HEADROOM_BOOTSTRAP,
    };
    let top = rows
        .iter()
        .map(|r| r.throughput_ok_per_s)
        .fold(0.0, f64::max);
    let y = Axis::fit_from_zero(
        "operations per second",
        rows.iter()
            .map(|r| r.throughput_ok_per_s)
            .chain([top * headroom]),
    );
    let x_hi = rows.last().map_or(tl.load_end_s, |r| r.t_to_s);
    let mut series = vec![Series::new("ok ops/s", plot::CHAIN, Marker::Circle, ok)];
    series.extend(markers(run, y.hi));
    let chart = Chart {
        title: match (s.fault, s.victim) {
            (Fault::Pause | Fault::Partition, _) => format!("{} (chain, k = {})", run.what(), s.k),
            (Fault::Kill, Victim::Successors) => format!(
                "kill -9 of {} of {} dht processes (chain, k = {})",
                run.victims.len(),
                s.nodes,
                s.k
            ),
            (Fault::Kill, Victim::Bootstrap) => format!(
                "kill -9 of the bootstrap of {} dht processes, restart, kill for good (chain, k = {})",
                s.nodes, s.k
            ),
        },
        x: Axis::linear("time since the load began (s)", 0.0, x_hi),
        y,
        legend: LegendAt::UpperRight,
        series,
        note: Some(format!(
            "{} clients, {} keys; ok operations per 1 s window, by completion time; node request timeout {} ms",
            s.clients,
            s.keys,
            s.request_timeout.as_millis()
        )),
    };
    plot::draw(path, plot::SIZE, &chart)
}

/// Dashed vertical lines up to `y_hi` at the kill, the removal and the restart, then at
/// the failover's events.
fn markers(run: &Run, y_hi: f64) -> Vec<Series> {
    let tl = &run.tl;
    let vline = |label: String, x: f64, color: RGBColor| {
        Series::new(
            label,
            color,
            Marker::None,
            vec![Point::at(x, 0.0), Point::at(x, y_hi)],
        )
        .dashed()
    };
    let killed = match run.settings.victim {
        Victim::Successors => run.victims.len().to_string(),
        Victim::Bootstrap => "the bootstrap".into(),
    };
    let (fault, undone) = match run.settings.fault {
        Fault::Kill => (format!("kill -9 of {killed}"), "restart"),
        Fault::Pause => (format!("SIGSTOP of {killed}"), "SIGCONT"),
        Fault::Partition => (format!("partition ({killed} cut off)"), "heal"),
    };
    let mut series = vec![vline(
        format!("{fault} at {} s", fixed(tl.kill_s, 1)),
        tl.kill_s,
        KILL,
    )];
    if let Some(r) = tl.removed_s {
        series.push(vline(
            format!("removed from the ring by {} s", fixed(r, 1)),
            r,
            plot::SUCCESSOR,
        ));
    }
    series.push(vline(
        format!("{undone} at {} s", fixed(tl.restart_s, 1)),
        tl.restart_s,
        plot::FINGER,
    ));
    let Some(f) = &tl.failover else {
        if run.settings.fault != Fault::Kill {
            let back = tl.all_rejoined_s();
            series.push(vline(
                format!("ring whole again at {} s", fixed(back, 1)),
                back,
                plot::REFERENCE,
            ));
        }
        return series;
    };
    let back = tl.all_rejoined_s();
    series.push(vline(
        format!("back in the ring at {} s", fixed(back, 1)),
        back,
        plot::REFERENCE,
    ));
    series.push(vline(
        format!("killed for good at {} s", fixed(f.kill_s, 1)),
        f.kill_s,
        shade(KILL, -0.4),
    ));
    if let Some(r) = f.removed_s {
        series.push(vline(
            format!("removed again by {} s", fixed(r, 1)),
            r,
            shade(plot::SUCCESSOR, 0.4),
        ));
    }
    series.push(vline(
        format!("new node joined at {} s", fixed(f.joined_s, 1)),
        f.joined_s,
        plot::EVENTUAL,
    ));
    series.push(vline(
        format!("member departed at {} s", fixed(f.departed_s, 1)),
        f.departed_s,
        DEPART,
    ));
    series
}
