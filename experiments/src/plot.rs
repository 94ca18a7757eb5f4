//! PNG line charts for the reports: titled, labelled axes, a legend, error bars
//! (min–max around the median) and one fixed colour per consistency model in every plot.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (`experiments/assets/`, licence
//! beside it) and registered with plotters' `ab_glyph` backend, so the PNGs render the same
//! on a machine without any fonts installed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use ringkv_core::{Consistency, Routing};

use crate::{ExperimentError, Result};

/// Size of a single chart, pixels.
pub const SIZE: (u32, u32) = (1000, 620);
/// Size of a two-panel chart, pixels.
pub const WIDE: (u32, u32) = (1600, 620);

/// Chain replication's colour in every plot (blue).
pub const CHAIN: RGBColor = RGBColor(31, 119, 180);
/// Eventual consistency's colour in every plot (orange).
pub const EVENTUAL: RGBColor = RGBColor(230, 110, 0);
/// CRAQ's colour in every plot (dark red).
pub const CRAQ: RGBColor = RGBColor(180, 30, 60);
/// Finger routing (green).
pub const FINGER: RGBColor = RGBColor(44, 160, 44);
/// Successor-only routing (purple).
pub const SUCCESSOR: RGBColor = RGBColor(148, 103, 189);
/// Reference curves (grey).
pub const REFERENCE: RGBColor = RGBColor(110, 110, 110);
/// Key placement and load balance (red; darker shades for larger setups).
pub const PLACEMENT: RGBColor = RGBColor(214, 39, 40);

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// A model's colour.
pub fn model_color(model: Consistency) -> RGBColor {
    match model {
        Consistency::Chain => CHAIN,
        Consistency::Eventual => EVENTUAL,
        Consistency::Craq => CRAQ,
    }
}

/// A routing mode's colour.
pub fn routing_color(routing: Routing) -> RGBColor {
    match routing {
        Routing::Finger => FINGER,
        Routing::Successor => SUCCESSOR,
    }
}

/// A model's marker.
pub fn model_marker(model: Consistency) -> Marker {
    match model {
        Consistency::Chain => Marker::Circle,
        Consistency::Eventual => Marker::Triangle,
        Consistency::Craq => Marker::Square,
    }
}

/// A lighter or darker shade of `c` (`t` in -1..1: negative darker, positive lighter).
pub fn shade(c: RGBColor, t: f64) -> RGBColor {
    let f = |v: u8| -> u8 {
        let v = f64::from(v);
        let out = if t >= 0.0 {
            v + (255.0 - v) * t
        } else {
            v * (1.0 + t)
        };
        out.round().clamp(0.0, 255.0) as u8
    };
    RGBColor(f(c.0), f(c.1), f(c.2))
}

/// Register the embedded font as plotters' `sans-serif` (once per process).
pub fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if register_font(FAMILY, style, FONT).is_err() {
                tracing::error!("the embedded DejaVu Sans font did not load");
            }
        }
    });
}

/// Point marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// Filled circle.
    Circle,
    /// Filled triangle.
    Triangle,
    /// Filled square.
    Square,
    /// Filled diamond.
    Diamond,
    /// No marker.
    None,
}

/// One point; `lo`/`hi` draw an error bar when both are given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// x.
    pub x: f64,
    /// y (the median when there is a spread).
    pub y: f64,
    /// Bottom of the error bar.
    pub lo: Option<f64>,
    /// Top of the error bar.
    pub hi: Option<f64>,
    /// Interquartile box (first and third quartiles), drawn as a thick bar.
    pub box_: Option<(f64, f64)>,
}

impl Point {
    /// A point without error bar.
    pub fn at(x: f64, y: f64) -> Point {
        Point {
            x,
            y,
            lo: None,
            hi: None,
            box_: None,
        }
    }

    /// A point with an error bar from `lo` to `hi`.
    pub fn spread(x: f64, lo: f64, y: f64, hi: f64) -> Point {
        Point {
            x,
            y,
            lo: Some(lo),
            hi: Some(hi),
            box_: None,
        }
    }

    /// A box-and-whisker point from `[min, q1, median, q3, max]`.
    pub fn boxed(x: f64, five: [f64; 5]) -> Point {
        Point {
            x,
            y: five[2],
            lo: Some(five[0]),
            hi: Some(five[4]),
            box_: Some((five[1], five[3])),
        }
    }
}

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text (empty: no legend entry, e.g. for a second line of the same setup).
    pub label: String,
    /// Colour.
    pub color: RGBColor,
    /// Marker at each point.
    pub marker: Marker,
    /// Dashed line.
    pub dashed: bool,
    /// Markers only, no line between them (values quoted from elsewhere, e.g. a paper,
    /// where a line would claim values between the points).
    pub markers_only: bool,
    /// Points in x order.
    pub points: Vec<Point>,
}

impl Series {
    /// A solid line with markers.
    pub fn new(
        label: impl Into<String>,
        color: RGBColor,
        marker: Marker,
        points: Vec<Point>,
    ) -> Series {
        Series {
            label: label.into(),
            color,
            marker,
            dashed: false,
            markers_only: false,
            points,
        }
    }

    /// The same series drawn dashed.
    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }

    /// The same series drawn as markers without a line.
    pub fn markers_only(mut self) -> Series {
        self.markers_only = true;
        self
    }
}

/// One axis.
#[derive(Clone, Debug)]
pub struct Axis {
    /// Description, with units.
    pub desc: String,
    /// Range.
    pub lo: f64,
    /// Range.
    pub hi: f64,
    /// Logarithmic scale.
    pub log: bool,
    /// Tick positions (computed from the range when `None`).
    pub ticks: Option<Vec<f64>>,
}

impl Axis {
    /// A linear axis.
    pub fn linear(desc: impl Into<String>, lo: f64, hi: f64) -> Axis {
        Axis {
            desc: desc.into(),
            lo,
            hi,
            log: false,
            ticks: None,
        }
    }

    /// A logarithmic axis (`lo` > 0).
    pub fn log(desc: impl Into<String>, lo: f64, hi: f64) -> Axis {
        Axis {
            desc: desc.into(),
            lo,
            hi,
            log: true,
            ticks: None,
        }
    }

    /// Ticks at exactly these values.
    pub fn with_ticks(mut self, ticks: Vec<f64>) -> Axis {
        self.ticks = Some(ticks);
        self
    }

    /// A linear axis from 0 (or below the data) to a little above the largest value.
    pub fn fit_from_zero(desc: impl Into<String>, values: impl IntoIterator<Item = f64>) -> Axis {
        let hi = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        let hi = if hi <= 0.0 { 1.0 } else { hi * 1.15 };
        Axis::linear(desc, 0.0, hi)
    }

    fn tick_values(&self) -> Vec<f64> {
        if let Some(t) = &self.ticks {
            return t.clone();
        }
        if self.log {
            log_ticks(self.lo, self.hi)
        } else {
            nice_ticks(self.lo, self.hi, 7)
        }
    }
}

/// Where the legend goes.
pub use plotters::chart::SeriesLabelPosition as LegendAt;

/// A chart: title, axes, legend position and the series.
#[derive(Clone, Debug)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// Legend position.
    pub legend: LegendAt,
    /// The lines.
    pub series: Vec<Series>,
    /// A note drawn in small type under the plot area (e.g. "bars: min–max of 5 runs").
    pub note: Option<String>,
}

/// "Nice" linear ticks: about `n` multiples of 1, 2, 2.5 or 5 × 10^e within [lo, hi].
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Decades (and 2×, 5× when the range is short) within [lo, hi].
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = (hi / lo).log10();
    let multipliers: &[f64] = if decades <= 2.5 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let mut out = Vec::new();
    let mut e = lo.log10().floor() as i32;
    while 10f64.powi(e) <= hi * 1.0001 {
        for m in multipliers {
            let v = m * 10f64.powi(e);
            if v >= lo * 0.9999 && v <= hi * 1.0001 {
                out.push(v);
            }
        }
        e += 1;
    }
    out
}

/// Format a tick value: `1,200`, `250,000`, `0.25`.
pub fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if (v - v.round()).abs() < 1e-9 {
        thousands(v.round() as i64)
    } else if a >= 1.0 {
        trim_zeros(format!("{v:.2}"))
    } else {
        trim_zeros(format!("{v:.3}"))
    }
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or_default())
        .collect();
    let out = groups.join(",");
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn plot_err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> ExperimentError + '_ {
    move |e| ExperimentError(format!("cannot draw {}: {e:?}", path.display()))
}

/// Draw `chart` into a PNG of `size` pixels.
pub fn draw(path: &Path, size: (u32, u32), chart: &Chart) -> Result<()> {
    draw_panels(path, size, None, std::slice::from_ref(chart))
}

/// Draw charts side by side into one PNG, under an optional overall title.
pub fn draw_panels(
    path: &Path,
    size: (u32, u32),
    title: Option<&str>,
    charts: &[Chart],
) -> Result<()> {
    register_fonts();
    let err = plot_err(path);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let body = match title {
        Some(t) => {
            let (top, rest) = root.split_vertically(56);
            top.draw(&Text::new(
                t.to_string(),
                (size.0 as i32 / 2, 14),
                (FAMILY, 30)
                    .into_font()
                    .style(FontStyle::Bold)
                    .color(&BLACK)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Top,
                    )),
            ))
            .map_err(&err)?;
            rest
        }
        None => root.clone(),
    };
    let areas = body.split_evenly((1, charts.len().max(1)));
    for (area, chart) in areas.iter().zip(charts) {
        draw_one(area, chart).map_err(&err)?;
    }
    root.present().map_err(&err)?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<
    (),
    DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>,
>;

fn draw_one(area: &Area<'_>, chart: &Chart) -> DrawResult {
    let (plot_area, note_area) = if chart.note.is_some() {
        let h = area.dim_in_pixel().1;
        let (a, b) = area.split_vertically(h.saturating_sub(30));
        (a, Some(b))
    } else {
        (area.clone(), None)
    };
    let mut builder = ChartBuilder::on(&plot_area);
    builder
        .caption(
            &chart.title,
            (FAMILY, 26).into_font().style(FontStyle::Bold),
        )
        .margin(16)
        .margin_right(30)
        .x_label_area_size(62)
        .y_label_area_size(106);
    let x_ticks = chart.x.tick_values();
    let y_ticks = chart.y.tick_values();
    let xr = chart.x.lo..chart.x.hi;
    let yr = chart.y.lo..chart.y.hi;
    match (chart.x.log, chart.y.log) {
        (false, false) => finish(
            builder.build_cartesian_2d(ticked(lin(xr), x_ticks), ticked(lin(yr), y_ticks))?,
            chart,
        )?,
        (true, false) => finish(
            builder.build_cartesian_2d(ticked(logc(xr), x_ticks), ticked(lin(yr), y_ticks))?,
            chart,
        )?,
        (false, true) => finish(
            builder.build_cartesian_2d(ticked(lin(xr), x_ticks), ticked(logc(yr), y_ticks))?,
            chart,
        )?,
        (true, true) => finish(
            builder.build_cartesian_2d(ticked(logc(xr), x_ticks), ticked(logc(yr), y_ticks))?,
            chart,
        )?,
    }
    if let (Some(note), Some(na)) = (&chart.note, note_area) {
        na.draw(&Text::new(
            note.clone(),
            (110, 4),
            (FAMILY, 16).into_font().color(&REFERENCE),
        ))?;
    }
    Ok(())
}

fn lin(r: std::ops::Range<f64>) -> RangedCoordf64 {
    r.into()
}

fn logc(r: std::ops::Range<f64>) -> plotters::coord::combinators::LogCoord<f64> {
    use plotters::coord::combinators::IntoLogRange;
    r.log_scale().into()
}

/// An axis whose ticks are exactly the given values (labels are formatted by
/// [`format_tick`], so the default formatting is never used).
struct Ticked<R> {
    inner: R,
    ticks: Vec<f64>,
}

fn ticked<R: Ranged<ValueType = f64>>(inner: R, ticks: Vec<f64>) -> Ticked<R> {
    Ticked { inner, ticks }
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticked<R> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
    fn axis_pixel_range(&self, limit: (i32, i32)) -> std::ops::Range<i32> {
        self.inner.axis_pixel_range(limit)
    }
}

fn finish<'a, X, Y>(
    mut c: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    chart: &Chart,
) -> DrawResult
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let fmt = |v: &f64| format_tick(*v);
    c.configure_mesh()
        .x_desc(chart.x.desc.as_str())
        .y_desc(chart.y.desc.as_str())
        .x_label_formatter(&fmt)
        .y_label_formatter(&fmt)
        .label_style((FAMILY, 19))
        .axis_desc_style((FAMILY, 21))
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .draw()?;
    for s in &chart.series {
        let color = s.color;
        let line = color.stroke_width(3);
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.y.is_finite())
            .map(|p| (p.x, p.y))
            .collect();
        // error bars first, so markers sit on top
        let bar = color.mix(0.85).stroke_width(2);
        c.draw_series(s.points.iter().filter_map(|p| match (p.lo, p.hi) {
            (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() => {
                Some(PathElement::new(vec![(p.x, lo), (p.x, hi)], bar))
            }
            _ => None,
        }))?;
        let thick = color.mix(0.45).stroke_width(10);
        c.draw_series(s.points.iter().filter_map(|p| {
            p.box_
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .map(|(a, b)| PathElement::new(vec![(p.x, a), (p.x, b)], thick))
        }))?;
        for end in [0, 1] {
            c.draw_series(s.points.iter().filter_map(|p| {
                let v = if end == 0 { p.lo } else { p.hi };
                v.filter(|v| v.is_finite()).map(|v| {
                    EmptyElement::at((p.x, v)) + PathElement::new(vec![(-7, 0), (7, 0)], bar)
                })
            }))?;
        }
        let anno = if s.markers_only {
            // Nothing drawn: the series only needs its legend entry.
            c.draw_series(LineSeries::new(Vec::new(), line))?
        } else if s.dashed {
            c.draw_series(DashedLineSeries::new(pts.clone(), 10, 6, line))?
        } else {
            c.draw_series(LineSeries::new(pts.clone(), line))?
        };
        let gap = if s.dashed { 6 } else { 0 };
        // A markers-only legend entry is the marker alone.
        let stroke = color.mix(if s.markers_only { 0.0 } else { 1.0 });
        let shape = marker_shape(s.marker);
        if !s.label.is_empty() {
            anno.label(s.label.as_str()).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (13 - gap, 0)], stroke.stroke_width(3))
                    + PathElement::new(vec![(13 + gap, 0), (26, 0)], stroke.stroke_width(3))
                    + Polygon::new(
                        shape
                            .iter()
                            .map(|(dx, dy)| (dx + 13, *dy))
                            .collect::<Vec<_>>(),
                        color.filled(),
                    )
            });
        }
        draw_markers(&mut c, s.marker, &pts, color)?;
    }
    c.configure_series_labels()
        .position(chart.legend.clone())
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FAMILY, 19))
        .margin(12)
        .legend_area_size(34)
        .draw()?;
    Ok(())
}

/// A marker as a polygon around (0, 0), in pixels.
fn marker_shape(marker: Marker) -> Vec<(i32, i32)> {
    match marker {
        Marker::Circle => (0..16)
            .map(|i| {
                let a = f64::from(i) * std::f64::consts::TAU / 16.0;
                (
                    (6.5 * a.cos()).round() as i32,
                    (6.5 * a.sin()).round() as i32,
                )
            })
            .collect(),
        Marker::Triangle => vec![(0, -8), (8, 6), (-8, 6)],
        Marker::Square => vec![(-6, -6), (6, -6), (6, 6), (-6, 6)],
        Marker::Diamond => vec![(0, -8), (8, 0), (0, 8), (-8, 0)],
        Marker::None => vec![(0, 0)],
    }
}

fn draw_markers<'a, X, Y>(
    c: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    marker: Marker,
    pts: &[(f64, f64)],
    color: RGBColor,
) -> DrawResult
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    if marker == Marker::None {
        return Ok(());
    }
    let shape = marker_shape(marker);
    c.draw_series(
        pts.iter()
            .map(|p| EmptyElement::at(*p) + Polygon::new(shape.clone(), color.filled())),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            nice_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(log_ticks(5.0, 5000.0), vec![10.0, 100.0, 1000.0]);
        assert_eq!(log_ticks(1.0, 20.0), vec![1.0, 2.0, 5.0, 10.0, 20.0]);
        assert_eq!(format_tick(1200.0), "1,200");
        assert_eq!(format_tick(0.25), "0.25");
        assert_eq!(format_tick(250_000.0), "250,000");
    }

    #[test]
    fn a_chart_renders_with_the_embedded_font() {
        let dir = std::env::temp_dir().join(format!("ringkv-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.png");
        let chart = Chart {
            title: "Test".into(),
            x: Axis::log("N (nodes)", 5.0, 2000.0),
            y: Axis::fit_from_zero("ops/s", [10.0]),
            legend: LegendAt::UpperLeft,
            series: vec![
                Series::new(
                    "chain",
                    CHAIN,
                    Marker::Circle,
                    vec![Point::spread(10.0, 1.0, 2.0, 3.0), Point::at(100.0, 5.0)],
                ),
                Series::new(
                    "eventual",
                    EVENTUAL,
                    Marker::Triangle,
                    vec![Point::at(10.0, 4.0), Point::at(1000.0, 8.0)],
                )
                .dashed(),
            ],
            note: Some("a note".into()),
        };
        draw(&path, SIZE, &chart).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 5000);
        if std::env::var_os("RINGKV_KEEP_PLOT").is_none() {
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}
