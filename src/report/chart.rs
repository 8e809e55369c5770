//! Charts as inline SVG, drawn with `plotters`' SVG backend: grouped horizontal bars, histograms,
//! box plots, point estimates with interval error bars, and x-y line charts.
//!
//! Every chart is a [`Figure`]: the SVG text plus the plotted numbers as JSON, which the page
//! writes into the figure's `data-values` attribute so tests (and readers) can check that what is
//! drawn is what the run's JSON says. Nothing here reads files or knows about synth, eval or
//! bench: the section modules turn their reports into these specs.
//!
//! Invariants: every chart has both axes described (with units where the caller gave them); a
//! chart with nothing to draw is never made (callers show a sentence instead); text in the SVG is
//! escaped by the backend.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::{json, Value};

use crate::report::ReportError;

/// Colour-blind-safe palette (Okabe & Ito, "Color Universal Design").
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x00, 0x00),
];

/// The i-th colour of [`PALETTE`], cycling.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// `#rrggbb` of a colour, as the SVG backend writes fills.
pub fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

const WIDTH: u32 = 760;
const FONT: &str = "sans-serif";

/// One drawn chart: its SVG and the numbers it shows.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Stable id, unique in a page (`data-chart`).
    pub id: String,
    pub title: String,
    /// One or two sentences under the chart: what is drawn and how to read it.
    pub caption: String,
    pub svg: String,
    /// The plotted numbers (`data-values`).
    pub data: Value,
}

fn draw_err<E: std::fmt::Debug>(e: E) -> ReportError {
    ReportError::Draw(format!("{e:?}"))
}

/// Characters of the longest label, for the label area's width (the SVG backend has no font
/// metrics; ~7 px a character at 12 px).
fn label_width(labels: &[String]) -> u32 {
    let chars = labels.iter().map(|l| l.chars().count()).max().unwrap_or(4);
    (chars.min(48) as u32) * 7 + 16
}

/// Shortens `s` to `n` characters with an ellipsis.
pub fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// An upper axis bound a little above `max` (room for value labels); 1 for an all-zero chart.
fn headroom(max: f64) -> f64 {
    if max > 0.0 {
        max * 1.15
    } else {
        1.0
    }
}

/// Ticks at a "nice" step (1, 2 or 5 times a power of ten; at least 1 when `integer`) from 0 or
/// `lo` rounded down, covering [lo, hi] in at most about 8 steps.
pub fn nice_ticks(lo: f64, hi: f64, integer: bool) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 8.0;
    let pow = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    if integer {
        step = step.max(1.0).round();
    }
    let start = (lo / step).floor() * step;
    let mut ticks = Vec::new();
    let mut k = 0;
    while k < 64 {
        let t = start + k as f64 * step;
        if t > hi + step * 1e-9 {
            break;
        }
        if t >= lo - step * 1e-9 {
            // Round away binary noise (0.30000000000000004).
            ticks.push((t / step).round() * step);
        }
        k += 1;
    }
    ticks
}

/// Number format for labels: integers without decimals, others with up to 3 significant decimals.
pub fn num(v: f64) -> String {
    // Ticks computed as sums land a hair off zero ("-0").
    let v = if v.abs() < 1e-9 { 0.0 } else { v };
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        let t = format!("{v:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Grouped horizontal bars: one row per category, one bar per series.
#[derive(Debug, Clone)]
pub struct Bars {
    pub categories: Vec<String>,
    /// (series name, one value per category).
    pub series: Vec<(String, Vec<f64>)>,
    /// The value axis (horizontal), with its unit.
    pub value_axis: String,
    /// The category axis (vertical).
    pub category_axis: String,
}

impl Bars {
    pub fn draw(&self, id: &str, title: &str, caption: &str) -> Result<Figure, ReportError> {
        let n = self.categories.len();
        let k = self.series.len().max(1);
        let row_h = (14 * k as u32 + 10).max(24);
        let height = 90 + row_h * n.max(1) as u32 + 20 * k as u32;
        let max = self
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0, f64::max);
        let labels: Vec<String> = self.categories.iter().map(|c| shorten(c, 48)).collect();
        let whole = self
            .series
            .iter()
            .flat_map(|(_, v)| v.iter())
            .all(|v| v.fract() == 0.0);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(12)
                .margin_right(28)
                .x_label_area_size(44)
                .y_label_area_size(label_width(&labels) + 24)
                // Several series get a legend in the lower right: keep the bars clear of it.
                .build_cartesian_2d(
                    value_axis(if k > 1 { max * 1.3 } else { max }, whole),
                    rows_axis(n),
                )
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .light_line_style(TRANSPARENT)
                .y_label_formatter(&|v| row_label(&labels, *v))
                .x_label_formatter(&|v| num(*v))
                .x_desc(self.value_axis.as_str())
                .y_desc(self.category_axis.as_str())
                .axis_desc_style((FONT, 14))
                .label_style((FONT, 12))
                .draw()
                .map_err(draw_err)?;
            // Row i is centred on y = n-1-i (first category on top); its k bars share 0.8 of it.
            let slot = 0.8 / k as f64;
            for (s, (name, values)) in self.series.iter().enumerate() {
                let c = color(s);
                let top = move |i: usize| (n - 1 - i) as f64 + 0.4 - slot * s as f64;
                let rects = values.iter().enumerate().map(move |(i, &v)| {
                    Rectangle::new([(0.0, top(i)), (v, top(i) - slot * 0.9)], c.filled())
                });
                chart
                    .draw_series(rects)
                    .map_err(draw_err)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled())
                    });
                let texts = values.iter().enumerate().map(move |(i, &v)| {
                    Text::new(
                        format!(" {}", num(v)),
                        (v, top(i) - slot * 0.45),
                        (FONT, 11)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Left, VPos::Center)),
                    )
                });
                chart.draw_series(texts).map_err(draw_err)?;
            }
            if self.series.len() > 1 {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::LowerRight)
                    .background_style(WHITE.mix(0.9))
                    .border_style(BLACK.mix(0.4))
                    .label_font((FONT, 12))
                    .draw()
                    .map_err(draw_err)?;
            }
            root.present().map_err(draw_err)?;
        }
        let series: serde_json::Map<String, Value> = self
            .series
            .iter()
            .map(|(name, v)| (name.clone(), json!(v)))
            .collect();
        Ok(Figure {
            id: id.into(),
            title: title.into(),
            caption: caption.into(),
            svg,
            data: json!({"categories": self.categories, "series": series}),
        })
    }
}

/// A numeric axis with ticks exactly at given values, linear or log scale. (Plotters'
/// `WithKeyPoints` over `f64` cannot take a custom label formatter, hence this small axis.)
#[derive(Debug, Clone)]
pub struct KeyAxis {
    lo: f64,
    hi: f64,
    keys: Vec<f64>,
    log: bool,
}

impl KeyAxis {
    pub fn linear(lo: f64, hi: f64, keys: Vec<f64>) -> Self {
        KeyAxis {
            lo,
            hi,
            keys,
            log: false,
        }
    }

    /// Log scale; `lo` and `hi` must be positive.
    pub fn log(lo: f64, hi: f64, keys: Vec<f64>) -> Self {
        KeyAxis {
            lo,
            hi,
            keys,
            log: true,
        }
    }

    fn t(&self, v: f64) -> f64 {
        if self.log {
            v.max(f64::MIN_POSITIVE).ln()
        } else {
            v
        }
    }
}

impl Ranged for KeyAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (self.t(self.lo), self.t(self.hi));
        let f = if b > a {
            (self.t(*value) - a) / (b - a)
        } else {
            0.5
        };
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.keys.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// A value axis from 0 with room above `max` for value labels and legends, ticks at nice steps.
fn value_axis(max: f64, integer: bool) -> KeyAxis {
    let hi = headroom(max);
    KeyAxis::linear(0.0, hi, nice_ticks(0.0, hi, integer))
}

/// An axis of `n` rows centred on 0..n-1, with a tick at each row centre.
fn rows_axis(n: usize) -> KeyAxis {
    KeyAxis::linear(
        -0.5,
        n.max(1) as f64 - 0.5,
        (0..n).map(|i| i as f64).collect(),
    )
}

/// The label of the row centred on `y` (rows top to bottom: label 0 at y = n-1).
fn row_label(labels: &[String], y: f64) -> String {
    let i = y.round();
    if (y - i).abs() > 1e-6 || i < 0.0 || i as usize >= labels.len() {
        return String::new();
    }
    labels[labels.len() - 1 - i as usize].clone()
}

/// A histogram: counts of `values` in equal-width bins.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Bin edges, ascending (`counts.len() + 1` of them).
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
    pub x_axis: String,
    pub y_axis: String,
}

impl Histogram {
    /// Bins of `width` covering `values`: [lo + k·width, lo + (k+1)·width), the last closed.
    /// `lo` is `values`' minimum rounded down to a multiple of `width` (less `width / 2` when
    /// `centered`, so whole values sit in the middle of their bin).
    pub fn of(values: &[f64], width: f64, centered: bool, x_axis: &str, y_axis: &str) -> Self {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (min, max) = if values.is_empty() {
            (0.0, 1.0)
        } else {
            (min, max)
        };
        let shift = if centered { width / 2.0 } else { 0.0 };
        let lo = ((min + shift) / width).floor() * width - shift;
        let bins = (((max - lo) / width).floor() as usize + 1).max(1);
        let mut counts = vec![0usize; bins];
        for &v in values {
            let k = (((v - lo) / width).floor() as usize).min(bins - 1);
            counts[k] += 1;
        }
        Histogram {
            edges: (0..=bins).map(|k| lo + k as f64 * width).collect(),
            counts,
            x_axis: x_axis.into(),
            y_axis: y_axis.into(),
        }
    }

    pub fn draw(&self, id: &str, title: &str, caption: &str) -> Result<Figure, ReportError> {
        let (lo, hi) = (
            self.edges.first().copied().unwrap_or(0.0),
            self.edges.last().copied().unwrap_or(1.0),
        );
        let width = if self.edges.len() > 1 {
            self.edges[1] - self.edges[0]
        } else {
            1.0
        };
        // At least 7 bins' width on the axis, so one full bin does not fill the chart.
        let pad = (7.0 * width - (hi - lo)).max(0.0) / 2.0 + width / 2.0;
        let (xlo, xhi) = (lo - pad, hi + pad);
        // Whole bin centres are labelled (rubric sizes, weights); other bins at their edges.
        let centres: Vec<f64> = self.edges.windows(2).map(|e| (e[0] + e[1]) / 2.0).collect();
        let x_keys = if centres.iter().all(|c| c.fract() == 0.0) && centres.len() <= 16 {
            centres
        } else {
            nice_ticks(xlo, xhi, false)
        };
        let max = self.counts.iter().copied().max().unwrap_or(0) as f64;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH / 2 + 40, 320)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(12)
                .margin_right(24)
                .x_label_area_size(44)
                .y_label_area_size(56)
                .build_cartesian_2d(KeyAxis::linear(xlo, xhi, x_keys), value_axis(max, true))
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .light_line_style(TRANSPARENT)
                .x_desc(self.x_axis.as_str())
                .y_desc(self.y_axis.as_str())
                .x_label_formatter(&|v| num(*v))
                .y_label_formatter(&|v| num(*v))
                .axis_desc_style((FONT, 14))
                .label_style((FONT, 12))
                .draw()
                .map_err(draw_err)?;
            let c = color(0);
            chart
                .draw_series(self.counts.iter().enumerate().map(|(k, &n)| {
                    let mut r = Rectangle::new(
                        [(self.edges[k], 0.0), (self.edges[k + 1], n as f64)],
                        c.filled(),
                    );
                    r.set_margin(0, 0, 1, 1);
                    r
                }))
                .map_err(draw_err)?;
            chart
                .draw_series(self.counts.iter().enumerate().filter(|(_, &n)| n > 0).map(
                    |(k, &n)| {
                        Text::new(
                            n.to_string(),
                            ((self.edges[k] + self.edges[k + 1]) / 2.0, n as f64),
                            (FONT, 11)
                                .into_font()
                                .color(&BLACK)
                                .pos(Pos::new(HPos::Center, VPos::Bottom)),
                        )
                    },
                ))
                .map_err(draw_err)?;
            root.present().map_err(draw_err)?;
        }
        let bins: Vec<Value> = self
            .counts
            .iter()
            .enumerate()
            .map(|(k, n)| json!([self.edges[k], self.edges[k + 1], n]))
            .collect();
        Ok(Figure {
            id: id.into(),
            title: title.into(),
            caption: caption.into(),
            svg,
            data: json!({"bins": bins}),
        })
    }
}

/// Tukey's box of a sample: quartiles (R type 7), whiskers at the furthest points within 1.5 IQR.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxStats {
    pub n: usize,
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub whisker_low: f64,
    pub whisker_high: f64,
    pub mean: f64,
}

impl BoxStats {
    /// `None` for an empty sample.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p| crate::eval::stats::quantile(&v, p);
        let (q1, median, q3) = (q(0.25)?, q(0.5)?, q(0.75)?);
        let iqr = q3 - q1;
        let whisker_low = v
            .iter()
            .copied()
            .find(|&x| x >= q1 - 1.5 * iqr)
            .unwrap_or(q1);
        let whisker_high = v
            .iter()
            .rev()
            .copied()
            .find(|&x| x <= q3 + 1.5 * iqr)
            .unwrap_or(q3);
        Some(BoxStats {
            n: v.len(),
            q1,
            median,
            q3,
            whisker_low,
            whisker_high,
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }

    fn to_json(self) -> Value {
        json!({"n": self.n, "q1": self.q1, "median": self.median, "q3": self.q3,
               "whisker_low": self.whisker_low, "whisker_high": self.whisker_high,
               "mean": self.mean})
    }
}

/// Box plots of a value per group (vertical boxes), with every point drawn jittered behind.
#[derive(Debug, Clone)]
pub struct BoxPlot {
    /// (group label, its values).
    pub groups: Vec<(String, Vec<f64>)>,
    pub x_axis: String,
    pub y_axis: String,
    /// The value axis' range.
    pub y_range: (f64, f64),
}

impl BoxPlot {
    pub fn draw(&self, id: &str, title: &str, caption: &str) -> Result<Figure, ReportError> {
        let n = self.groups.len();
        let stats: Vec<Option<BoxStats>> =
            self.groups.iter().map(|(_, v)| BoxStats::of(v)).collect();
        let labels: Vec<String> = self
            .groups
            .iter()
            .zip(&stats)
            .map(|((g, _), s)| format!("{g} (n={})", s.map_or(0, |s| s.n)))
            .collect();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH / 2 + 40, 320)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(52)
                .build_cartesian_2d(rows_axis(n), self.y_range.0..self.y_range.1)
                .map_err(draw_err)?;
            // Groups left to right in order: the row axis counts the other way.
            let reversed: Vec<String> = labels.iter().rev().cloned().collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .light_line_style(TRANSPARENT)
                .x_label_formatter(&|v| row_label(&reversed, *v))
                .y_label_formatter(&|v| format!("{v:.1}"))
                .x_desc(self.x_axis.as_str())
                .y_desc(self.y_axis.as_str())
                .axis_desc_style((FONT, 14))
                .label_style((FONT, 11))
                .draw()
                .map_err(draw_err)?;
            let c = color(0);
            for (i, ((_, values), s)) in self.groups.iter().zip(&stats).enumerate() {
                let x = i as f64;
                // Points, jittered deterministically so the page is the same on every render.
                chart
                    .draw_series(values.iter().enumerate().map(|(j, &v)| {
                        let jitter = ((j as f64 * 0.618_033_988_7).fract() - 0.5) * 0.5;
                        Circle::new((x + jitter, v), 2, BLACK.mix(0.25).filled())
                    }))
                    .map_err(draw_err)?;
                let Some(s) = s else { continue };
                let w = 0.22;
                chart
                    .draw_series([
                        Rectangle::new([(x - w, s.q1), (x + w, s.q3)], c.mix(0.35).filled()),
                        Rectangle::new([(x - w, s.q1), (x + w, s.q3)], c.stroke_width(2)),
                    ])
                    .map_err(draw_err)?;
                chart
                    .draw_series([
                        PathElement::new(
                            vec![(x - w, s.median), (x + w, s.median)],
                            c.stroke_width(3),
                        ),
                        PathElement::new(vec![(x, s.q3), (x, s.whisker_high)], c.stroke_width(2)),
                        PathElement::new(vec![(x, s.q1), (x, s.whisker_low)], c.stroke_width(2)),
                        PathElement::new(
                            vec![(x - w / 2.0, s.whisker_high), (x + w / 2.0, s.whisker_high)],
                            c.stroke_width(2),
                        ),
                        PathElement::new(
                            vec![(x - w / 2.0, s.whisker_low), (x + w / 2.0, s.whisker_low)],
                            c.stroke_width(2),
                        ),
                    ])
                    .map_err(draw_err)?;
                chart
                    .draw_series([Cross::new((x, s.mean), 4, RED.stroke_width(2))])
                    .map_err(draw_err)?;
            }
            root.present().map_err(draw_err)?;
        }
        let groups: Vec<Value> = self
            .groups
            .iter()
            .zip(&stats)
            .map(|((g, _), s)| json!({"group": g, "box": s.map(BoxStats::to_json)}))
            .collect();
        Ok(Figure {
            id: id.into(),
            title: title.into(),
            caption: caption.into(),
            svg,
            data: json!({"groups": groups}),
        })
    }
}

/// One estimate with its interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub label: String,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Point estimates with interval error bars, one row per estimate (horizontal), grouped into
/// panels that share the value axis (one panel per statistic).
#[derive(Debug, Clone)]
pub struct Intervals {
    /// (panel name, its rows).
    pub panels: Vec<(String, Vec<Interval>)>,
    pub value_axis: String,
    pub range: (f64, f64),
    /// A vertical reference line (no agreement, or chance).
    pub reference: Option<(f64, String)>,
}

impl Intervals {
    pub fn draw(&self, id: &str, title: &str, caption: &str) -> Result<Figure, ReportError> {
        // One row per (panel, estimate), panels one after the other, top to bottom.
        let mut rows: Vec<(usize, &Interval)> = Vec::new();
        for (p, (_, list)) in self.panels.iter().enumerate() {
            for e in list {
                rows.push((p, e));
            }
        }
        let n = rows.len();
        let labels: Vec<String> = rows
            .iter()
            .map(|(p, e)| format!("{}: {}", self.panels[*p].0, e.label))
            .collect();
        let height = 100 + 36 * n.max(1) as u32;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(12)
                .margin_right(28)
                .x_label_area_size(44)
                .y_label_area_size(label_width(&labels) + 24)
                .build_cartesian_2d(self.range.0..self.range.1, rows_axis(n))
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .light_line_style(TRANSPARENT)
                .y_label_formatter(&|v| row_label(&labels, *v))
                .x_label_formatter(&|v| num(*v))
                .x_desc(self.value_axis.as_str())
                .axis_desc_style((FONT, 14))
                .label_style((FONT, 12))
                .draw()
                .map_err(draw_err)?;
            if let Some((x, name)) = &self.reference {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(*x, -0.5), (*x, n.max(1) as f64 - 0.5)],
                        4,
                        4,
                        BLACK.mix(0.6).stroke_width(1),
                    ))
                    .map_err(draw_err)?;
                chart
                    .draw_series([Text::new(
                        format!(" {name}"),
                        (*x, -0.45),
                        (FONT, 11)
                            .into_font()
                            .color(&BLACK.mix(0.7))
                            .pos(Pos::new(HPos::Left, VPos::Bottom)),
                    )])
                    .map_err(draw_err)?;
            }
            for (r, (p, e)) in rows.iter().enumerate() {
                let c = color(*p);
                let y = (n - 1 - r) as f64;
                chart
                    .draw_series([
                        PathElement::new(
                            vec![(e.low, y - 0.15), (e.low, y + 0.15)],
                            c.stroke_width(2),
                        ),
                        PathElement::new(vec![(e.low, y), (e.high, y)], c.stroke_width(2)),
                        PathElement::new(
                            vec![(e.high, y - 0.15), (e.high, y + 0.15)],
                            c.stroke_width(2),
                        ),
                    ])
                    .map_err(draw_err)?;
                chart
                    .draw_series([Circle::new((e.value, y), 5, c.filled())])
                    .map_err(draw_err)?;
                chart
                    .draw_series([Text::new(
                        format!("{:.3} [{:.3}, {:.3}]", e.value, e.low, e.high),
                        (e.value, y + 0.18),
                        (FONT, 11)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )])
                    .map_err(draw_err)?;
            }
            root.present().map_err(draw_err)?;
        }
        let panels: serde_json::Map<String, Value> = self
            .panels
            .iter()
            .map(|(name, list)| {
                let rows: Vec<Value> = list
                    .iter()
                    .map(|e| json!({"label": e.label, "value": e.value, "low": e.low, "high": e.high}))
                    .collect();
                (name.clone(), json!(rows))
            })
            .collect();
        Ok(Figure {
            id: id.into(),
            title: title.into(),
            caption: caption.into(),
            svg,
            data: json!({"panels": panels}),
        })
    }
}

/// One line of a [`Lines`] chart.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Palette index.
    pub color: usize,
    /// Text beside each point (calibration: the bin's n), or empty.
    pub labels: Vec<String>,
}

/// X-y lines with markers.
#[derive(Debug, Clone)]
pub struct Lines {
    pub lines: Vec<Line>,
    pub x_axis: String,
    pub y_axis: String,
    /// Log2 x axis, ticks at the x values present (batch sizes).
    pub log2_x: bool,
    /// Fixed ranges (calibration: the unit square); fitted to the data when `None`.
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// Draw y = x (perfect calibration).
    pub diagonal: bool,
}

impl Lines {
    pub fn draw(&self, id: &str, title: &str, caption: &str) -> Result<Figure, ReportError> {
        let xs: Vec<f64> = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .collect();
        let ys: Vec<f64> = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .collect();
        let fold = |v: &[f64]| {
            (
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            )
        };
        let (xmin, xmax) = self.x_range.unwrap_or_else(|| {
            let (a, b) = fold(&xs);
            if self.log2_x {
                (a.max(1.0) / 1.5, b.max(1.0) * 1.5)
            } else if a < b {
                (a, b)
            } else {
                (a - 1.0, a + 1.0)
            }
        });
        let (ymin, ymax) = self
            .y_range
            // Room above the highest point for the legend (upper left).
            .unwrap_or_else(|| (0.0, headroom(fold(&ys).1.max(0.0)) * 1.2));
        let mut ticks: Vec<f64> = xs.clone();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, 380)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            let mut builder = ChartBuilder::on(&root);
            builder
                .margin(12)
                .margin_right(24)
                .x_label_area_size(44)
                .y_label_area_size(64);
            if self.log2_x {
                let x = KeyAxis::log(xmin, xmax, ticks.clone());
                let mut chart = builder
                    .build_cartesian_2d(x, ymin..ymax)
                    .map_err(draw_err)?;
                self.paint(&mut chart)?;
            } else {
                let mut chart = builder
                    .build_cartesian_2d(xmin..xmax, ymin..ymax)
                    .map_err(draw_err)?;
                self.paint(&mut chart)?;
            }
            root.present().map_err(draw_err)?;
        }
        let lines: serde_json::Map<String, Value> = self
            .lines
            .iter()
            .map(|l| (l.name.clone(), json!(l.points)))
            .collect();
        Ok(Figure {
            id: id.into(),
            title: title.into(),
            caption: caption.into(),
            svg,
            data: json!({"lines": lines}),
        })
    }

    fn paint<'a, X>(
        &self,
        chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    ) -> Result<(), ReportError>
    where
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(self.x_axis.as_str())
            .y_desc(self.y_axis.as_str())
            .x_label_formatter(&|v| num(*v))
            .y_label_formatter(&|v| num(*v))
            .axis_desc_style((FONT, 14))
            .label_style((FONT, 12))
            .draw()
            .map_err(draw_err)?;
        if self.diagonal {
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, 0.0), (1.0, 1.0)],
                    4,
                    4,
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(draw_err)?
                .label("perfect calibration")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BLACK.mix(0.5)));
        }
        for l in &self.lines {
            let c = color(l.color);
            let style = c.stroke_width(2);
            let anno = if l.dashed {
                chart
                    .draw_series(DashedLineSeries::new(l.points.clone(), 8, 5, style))
                    .map_err(draw_err)?
            } else {
                chart
                    .draw_series(LineSeries::new(l.points.clone(), style))
                    .map_err(draw_err)?
            };
            let dashed = l.dashed;
            anno.label(l.name.as_str()).legend(move |(x, y)| {
                if dashed {
                    PathElement::new(vec![(x, y), (x + 6, y)], c.stroke_width(2))
                } else {
                    PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(2))
                }
            });
            if dashed {
                chart
                    .draw_series(
                        l.points
                            .iter()
                            .map(|&p| TriangleMarker::new(p, 5, c.filled())),
                    )
                    .map_err(draw_err)?;
            } else {
                chart
                    .draw_series(l.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                    .map_err(draw_err)?;
            }
            chart
                .draw_series(l.points.iter().zip(&l.labels).map(|(&p, t)| {
                    Text::new(
                        format!("    {t}"),
                        p,
                        (FONT, 11)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Left, VPos::Top)),
                    )
                }))
                .map_err(draw_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 12))
            .draw()
            .map_err(draw_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(attribute, value)` pairs of every `<rect>` filled with `fill`.
    fn rects(svg: &str, fill: &str) -> Vec<BTreeMap<String, f64>> {
        svg.split("<rect")
            .skip(1)
            .map(|r| &r[..r.find("/>").unwrap_or(r.len())])
            .filter(|r| r.contains(&format!("fill=\"{fill}\"")))
            .map(|r| {
                r.split_whitespace()
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_string(), v.trim_matches('"').parse().ok()?))
                    })
                    .collect()
            })
            .collect()
    }

    use std::collections::BTreeMap;

    #[test]
    fn bar_lengths_are_proportional_to_the_values() -> Result<(), ReportError> {
        let values = vec![3.0, 12.0, 0.0, 7.0];
        let fig = Bars {
            categories: ["a", "b", "c", "d"].map(String::from).to_vec(),
            series: vec![("n".into(), values.clone())],
            value_axis: "items".into(),
            category_axis: "stage".into(),
        }
        .draw("t", "t", "t")?;
        let bars = rects(&fig.svg, &hex(color(0)));
        assert_eq!(bars.len(), values.len(), "{}", fig.svg);
        // Pixels per unit from the longest bar; every bar within a pixel of value * scale.
        let scale = bars[1]["width"] / 12.0;
        for (b, v) in bars.iter().zip(&values) {
            assert!((b["width"] - v * scale).abs() <= 1.0, "{b:?} vs {v}");
        }
        // First category on top.
        assert!(bars[0]["y"] < bars[1]["y"] && bars[1]["y"] < bars[3]["y"]);
        assert_eq!(fig.data["series"]["n"], serde_json::json!(values));
        Ok(())
    }

    #[test]
    fn histogram_bins_hold_every_value() {
        let h = Histogram::of(&[3.0, 4.0, 4.0, 12.0], 1.0, true, "x", "y");
        assert_eq!(h.counts.iter().sum::<usize>(), 4);
        assert_eq!(h.edges[0], 2.5);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 2);
        assert_eq!(*h.counts.last().unwrap_or(&0), 1);
        let w = Histogram::of(&[-7.0, 9.0], 1.0, true, "x", "y");
        assert_eq!((w.edges[0], w.counts.len()), (-7.5, 17));
    }

    #[test]
    fn box_stats_are_tukey_boxes() {
        let b = BoxStats::of(&[1.0, 2.0, 3.0, 4.0, 100.0]).expect("non-empty");
        assert_eq!((b.q1, b.median, b.q3), (2.0, 3.0, 4.0));
        // 100 lies beyond q3 + 1.5 IQR = 7: the whisker stops at 4.
        assert_eq!((b.whisker_low, b.whisker_high), (1.0, 4.0));
        assert!(BoxStats::of(&[]).is_none());
    }

    #[test]
    fn ticks_are_nice_and_whole_for_counts() {
        assert_eq!(nice_ticks(0.0, 2.3, true), vec![0.0, 1.0, 2.0]);
        let t = nice_ticks(0.0, 1.0, false);
        assert_eq!(t.len(), 6, "{t:?}");
        assert!(
            (t[5] - 1.0).abs() < 1e-12 && (t[1] - 0.2).abs() < 1e-12,
            "{t:?}"
        );
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(3.0), "3");
    }
}
