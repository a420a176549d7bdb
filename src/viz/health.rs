//! The health picture: each coordinator's self-health samples (`health_samples`, one every
//! 10 s per node) over time — cpu, memory, free disk, error rate — one line per coordinator,
//! drawn with plotters.

use std::fmt::Write as _;

use plotters::prelude::*;
use serde_json::Value as Json;

use super::rows::Row;
use super::svg::{self, MUTED};
use super::text::{WIDTH, fit, sparkline};
use super::{VizError, utc};

/// One sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthPoint {
    pub at_us: i64,
    /// CPU used by the coordinator process since the previous sample, in cores.
    pub cpu: f64,
    pub mem_bytes: i64,
    pub disk_free_bytes: i64,
    /// Network errors since the previous sample.
    pub net_errors: i64,
    /// Failed operations per second.
    pub error_rate: f64,
}

/// One coordinator's samples, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSeries {
    pub node_id: u64,
    pub points: Vec<HealthPoint>,
}

/// Every coordinator's recent samples.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthPicture {
    pub generated_at_us: i64,
    pub series: Vec<HealthSeries>,
}

/// Samples read per coordinator: the newest two hours at one sample every 10 s.
pub const SAMPLES_PER_NODE: u32 = 720;

/// The query [`HealthPicture::from_rows`] reads: the newest [`SAMPLES_PER_NODE`] per node.
pub fn sql() -> String {
    format!(
        "SELECT node_id, epoch_us(sampled_at) AS at_us, cpu, mem_bytes, disk_free_bytes, \
         net_errors, error_rate FROM health_samples \
         QUALIFY row_number() OVER (PARTITION BY node_id ORDER BY sampled_at DESC, id DESC) \
         <= {SAMPLES_PER_NODE} ORDER BY node_id, sampled_at, id"
    )
}

/// A metric drawn: its name with the unit, and how to read it from a sample.
struct Metric {
    title: &'static str,
    value: fn(&HealthPoint) -> f64,
    /// Drawn as a panel in the SVG (the text shows every metric).
    charted: bool,
}

const METRICS: [Metric; 5] = [
    Metric {
        title: "cpu (cores)",
        value: |p| p.cpu,
        charted: true,
    },
    Metric {
        title: "memory (MiB)",
        value: |p| p.mem_bytes as f64 / (1 << 20) as f64,
        charted: true,
    },
    Metric {
        title: "disk free (GiB)",
        value: |p| p.disk_free_bytes as f64 / (1 << 30) as f64,
        charted: true,
    },
    Metric {
        title: "errors per second",
        value: |p| p.error_rate,
        charted: true,
    },
    Metric {
        title: "network errors",
        value: |p| p.net_errors as f64,
        charted: false,
    },
];

const WIDTH_PX: u32 = 1000;
const HEIGHT_PX: u32 = 700;

impl HealthPicture {
    /// The picture from the rows of [`sql`] (ordered by node, then time).
    pub fn from_rows(rows: &[Vec<Json>], generated_at_us: i64) -> Result<HealthPicture, VizError> {
        let mut series: Vec<HealthSeries> = Vec::new();
        for cells in rows {
            let row = Row::new("health_samples", cells);
            let node_id = row.i64(0, "node_id")? as u64;
            let point = HealthPoint {
                at_us: row.i64(1, "sampled_at")?,
                cpu: row.f64(2, "cpu")?,
                mem_bytes: row.i64(3, "mem_bytes")?,
                disk_free_bytes: row.i64(4, "disk_free_bytes")?,
                net_errors: row.i64(5, "net_errors")?,
                error_rate: row.f64(6, "error_rate")?,
            };
            match series.last_mut() {
                Some(s) if s.node_id == node_id => s.points.push(point),
                _ => series.push(HealthSeries {
                    node_id,
                    points: vec![point],
                }),
            }
        }
        series.sort_by_key(|s| s.node_id);
        Ok(HealthPicture {
            generated_at_us,
            series,
        })
    }

    fn time_range(&self) -> (i64, i64) {
        let times = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.at_us));
        let (lo, hi) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        if lo > hi {
            (self.generated_at_us - 60_000_000, self.generated_at_us)
        } else {
            // At least a minute, so one sample is not a zero-width chart.
            (lo.min(hi - 60_000_000), hi)
        }
    }

    /// The SVG: one panel per charted metric, one line per coordinator, a legend per panel.
    pub fn svg(&self) -> String {
        let mut out = String::new();
        match self.draw(&mut out) {
            Ok(()) => out,
            Err(why) => svg::document(
                WIDTH_PX,
                120,
                "Health metrics",
                &format!("cannot draw the charts: {why}"),
                "",
            ),
        }
    }

    fn draw(&self, out: &mut String) -> Result<(), String> {
        super::raster::register_plotters_font();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let root = SVGBackend::with_string(out, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let (top, rest) = root.split_vertically(64);
        let ink = rgb(svg::INK);
        top.draw_text(
            "Health metrics",
            &("sans-serif", 25).into_font().color(&ink),
            (20, 12),
        )
        .map_err(e)?;
        let sub = format!(
            "{} coordinator{}, the newest {} samples of each · {}",
            self.series.len(),
            if self.series.len() == 1 { "" } else { "s" },
            SAMPLES_PER_NODE,
            utc(self.generated_at_us)
        );
        top.draw_text(
            &sub,
            &("sans-serif", 15).into_font().color(&rgb(MUTED)),
            (20, 40),
        )
        .map_err(e)?;
        let (start, end) = self.time_range();
        let panels = rest.split_evenly((2, 2));
        for (panel, metric) in panels.iter().zip(METRICS.iter().filter(|m| m.charted)) {
            let max = self
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(metric.value))
                .fold(0.0_f64, f64::max);
            let top = if max > 0.0 { max * 1.15 } else { 1.0 };
            let mut chart = ChartBuilder::on(panel)
                .caption(metric.title, ("sans-serif", 17).into_font().color(&ink))
                .margin(12)
                .x_label_area_size(28)
                .y_label_area_size(56)
                .build_cartesian_2d(start..end, 0.0..top)
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(5)
                .x_label_formatter(&|us| {
                    let t = utc(*us);
                    t.get(11..19).map(str::to_string).unwrap_or(t)
                })
                .light_line_style(rgb(svg::GRID).mix(0.6))
                .label_style(("sans-serif", 12).into_font().color(&ink))
                .draw()
                .map_err(e)?;
            if self.series.iter().all(|s| s.points.is_empty()) {
                chart
                    .draw_series(std::iter::once(Text::new(
                        "no samples",
                        (start + (end - start) / 3, top / 2.0),
                        ("sans-serif", 15).into_font().color(&rgb(MUTED)),
                    )))
                    .map_err(e)?;
                continue;
            }
            for (i, s) in self.series.iter().enumerate() {
                let colour = rgb(svg::series_colour(i));
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().map(|p| (p.at_us, (metric.value)(p))),
                        colour.stroke_width(2),
                    ))
                    .map_err(e)?
                    .label(format!("node {}", s.node_id))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(rgb(svg::GRID))
                .label_font(("sans-serif", 12).into_font().color(&ink))
                .draw()
                .map_err(e)?;
        }
        root.present().map_err(e)?;
        Ok(())
    }

    /// The terminal rendering: per coordinator, a sparkline and the last, lowest and highest
    /// value of each metric.
    pub fn text(&self) -> String {
        let mut out = format!(
            "Health metrics at {}: {} coordinator{}, the newest {} samples of each\n",
            utc(self.generated_at_us),
            self.series.len(),
            if self.series.len() == 1 { "" } else { "s" },
            SAMPLES_PER_NODE
        );
        if self.series.is_empty() {
            out.push_str("no samples\n");
        }
        const SPARK: usize = 36;
        for s in &self.series {
            let (first, last) = match (s.points.first(), s.points.last()) {
                (Some(f), Some(l)) => (f.at_us, l.at_us),
                _ => continue,
            };
            let _ = writeln!(
                out,
                "\nnode {}: {} samples, {} to {}",
                s.node_id,
                s.points.len(),
                utc(first),
                utc(last)
            );
            for metric in &METRICS {
                let values: Vec<f64> = s.points.iter().map(metric.value).collect();
                let now = values.last().copied().unwrap_or(0.0);
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let line = format!(
                    "  {:<18}{:<SPARK$}  now {:>7}  min {:>7}  max {:>7}",
                    metric.title,
                    sparkline(&values, SPARK),
                    number(now),
                    number(min),
                    number(max)
                );
                let _ = writeln!(out, "{}", fit(line.trim_end(), WIDTH));
            }
        }
        out
    }
}

/// A value in at most 7 characters.
fn number(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{v:.1e}")
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// `#rrggbb` as a plotters colour.
fn rgb(hex: &str) -> RGBColor {
    let channel = |i: usize| {
        hex.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    RGBColor(channel(1), channel(3), channel(5))
}
