//! The breaker benchmark's report: medians of the repetitions per failure type, intensity and
//! side, the change the breakers make, and charts.
//!
//! Written into the report directory as `report.json` (every run and every median),
//! `report.md` (a table per metric, the settings, and where the breakers helped and where they
//! did not, by the numbers) and one SVG per metric (`<metric>.svg`: grouped bars, with and
//! without, per failure type). The SVGs are plain markup with generic font families, so they
//! render anywhere without fonts or network.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{FailureType, Intensity, RunResult, Timings};
use crate::cli::CliError;

/// One metric, how to read it and which way is better.
struct Metric {
    key: &'static str,
    title: &'static str,
    unit: &'static str,
    lower_is_better: bool,
    value: fn(&RunResult) -> f64,
}

const METRICS: [Metric; 6] = [
    Metric {
        key: "makespan",
        title: "Job makespan",
        unit: "s",
        lower_is_better: true,
        value: |r| r.makespan_ms / 1000.0,
    },
    Metric {
        key: "tasks_preserved",
        title: "Tasks preserved (passed of all)",
        unit: "%",
        lower_is_better: false,
        value: |r| 100.0 * r.passed as f64 / r.tasks.max(1) as f64,
    },
    Metric {
        key: "wasted_attempts",
        title: "Attempts wasted on the sick worker",
        unit: "attempts",
        lower_is_better: true,
        value: |r| r.wasted_attempts as f64,
    },
    Metric {
        key: "task_recovery",
        title: "Hit task: first requeue to result",
        unit: "s",
        lower_is_better: true,
        value: |r| r.task_recovery_ms / 1000.0,
    },
    Metric {
        key: "recovery_success",
        title: "Hit tasks that passed",
        unit: "%",
        lower_is_better: false,
        value: |r| match r.tasks_hit {
            0 => 100.0,
            hit => 100.0 * r.tasks_hit_passed as f64 / hit as f64,
        },
    },
    Metric {
        key: "coordinator_cpu",
        title: "Coordinator CPU",
        unit: "cores",
        lower_is_better: true,
        value: |r| r.coordinator_cores,
    },
];

impl Metric {
    /// `Title (unit, lower is better)`.
    fn heading(&self) -> String {
        let better = if self.lower_is_better {
            "lower"
        } else {
            "higher"
        };
        format!("{} ({}, {better} is better)", self.title, self.unit)
    }
}

/// The medians of one failure type at one intensity, both sides.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub failure: FailureType,
    pub intensity: Intensity,
    /// metric key → (with breakers, without), medians over the repetitions.
    pub medians: Vec<(String, f64, f64)>,
    /// Runs whose job did not finish within the limit, with and without.
    pub unfinished: (usize, usize),
}

/// Everything the benchmark found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub timings: Timings,
    pub healthy_workers: usize,
    pub proactive_recovery: bool,
    pub rows: Vec<Row>,
    pub runs: Vec<RunResult>,
}

impl Report {
    /// Groups `runs` by failure type and intensity and takes the medians.
    pub fn new(
        timings: Timings,
        healthy_workers: usize,
        proactive_recovery: bool,
        runs: Vec<RunResult>,
    ) -> Report {
        let mut keys: Vec<(FailureType, Intensity)> =
            runs.iter().map(|r| (r.failure, r.intensity)).collect();
        keys.sort();
        keys.dedup();
        let rows = (keys.into_iter())
            .map(|(failure, intensity)| {
                let side = |breakers: bool| -> Vec<&RunResult> {
                    (runs.iter())
                        .filter(|r| r.failure == failure && r.intensity == intensity)
                        .filter(|r| r.breakers == breakers)
                        .collect()
                };
                let (with, without) = (side(true), side(false));
                let medians = (METRICS.iter())
                    .map(|m| {
                        let of = |runs: &[&RunResult]| {
                            crate::bench::median(
                                &runs.iter().map(|r| (m.value)(r)).collect::<Vec<_>>(),
                            )
                        };
                        (m.key.to_string(), of(&with), of(&without))
                    })
                    .collect();
                let unfinished = |runs: &[&RunResult]| runs.iter().filter(|r| !r.finished).count();
                Row {
                    failure,
                    intensity,
                    medians,
                    unfinished: (unfinished(&with), unfinished(&without)),
                }
            })
            .collect();
        Report {
            timings,
            healthy_workers,
            proactive_recovery,
            rows,
            runs,
        }
    }

    /// Writes `report.json`, `report.md` and the charts into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), CliError> {
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text)
                .map_err(|e| CliError::Unavailable(format!("cannot write {name}: {e}")))
        };
        write(
            "report.json",
            serde_json::to_string_pretty(self).unwrap_or_default(),
        )?;
        write("report.md", self.markdown())?;
        for (i, metric) in METRICS.iter().enumerate() {
            write(&format!("{}.svg", metric.key), self.chart(i))?;
        }
        Ok(())
    }

    /// The change the breakers make to metric `i` of `row`, in per cent of "without", signed
    /// so that positive is better.
    fn gain(&self, row: &Row, i: usize) -> Option<f64> {
        let (_, with, without) = &row.medians[i];
        if *without == 0.0 {
            return None;
        }
        let change = 100.0 * (with - without) / without;
        Some(if METRICS[i].lower_is_better {
            -change
        } else {
            change
        })
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let t = &self.timings;
        let mut out = String::from("# Circuit breaker benchmark\n\n");
        let _ = writeln!(
            out,
            "One coordinator, {} healthy workers and one sick worker (`s1`, 2 slots each); one \
             job of {} tasks of {} ms. Each failure type is run with the breakers (the default) \
             and without (`--disable-circuit-breaker`: recovery on, base policy of 5 attempts of \
             {} s), alternating, with the same faults at the same moments. Worker heartbeat {} \
             ms, failure timeout {} ms; breaker levels {} / {} / {} s; worker breaker open for \
             {} s first. Proactive recovery {} on both sides.{}\n",
            self.healthy_workers,
            t.tasks,
            t.task_ms,
            t.base_interval_ms / 1000,
            t.heartbeat_ms,
            t.failure_timeout_ms,
            t.level_intervals_ms[0] as f64 / 1000.0,
            t.level_intervals_ms[1] as f64 / 1000.0,
            t.level_intervals_ms[2] as f64 / 1000.0,
            t.open_wait_ms as f64 / 1000.0,
            if self.proactive_recovery { "on" } else { "off" },
            if t.quick {
                " **Quick mode: every timing is a tenth of the default**, so detection, \
                 recovery and breaker waits are ten times shorter than in production."
            } else {
                ""
            }
        );
        for (i, metric) in METRICS.iter().enumerate() {
            let _ = writeln!(
                out,
                "## {}\n\n| failure | intensity | with breakers | without | change |\n\
                 |---|---|---|---|---|",
                metric.heading()
            );
            for row in &self.rows {
                let (_, with, without) = &row.medians[i];
                let change = self
                    .gain(row, i)
                    .map_or("—".to_string(), |g| format!("{g:+.0} %"));
                let _ = writeln!(
                    out,
                    "| {} | {:?} | {with:.2} | {without:.2} | {change} |",
                    row.failure.name(),
                    row.intensity,
                );
            }
            let _ = writeln!(out, "\n![{}]({}.svg)\n", metric.title, metric.key);
        }
        out += "## Where the breakers helped, and where they did not\n\n";
        for row in &self.rows {
            let mut better = Vec::new();
            let mut worse = Vec::new();
            for (i, metric) in METRICS.iter().enumerate() {
                match self.gain(row, i) {
                    Some(g) if g >= 5.0 => better.push(format!("{} {g:+.0} %", metric.key)),
                    Some(g) if g <= -5.0 => worse.push(format!("{} {g:+.0} %", metric.key)),
                    _ => {}
                }
            }
            let _ = writeln!(
                out,
                "* **{}** ({:?}): better: {}; worse: {}{}",
                row.failure.name(),
                row.intensity,
                if better.is_empty() {
                    "nothing beyond 5 %".to_string()
                } else {
                    better.join(", ")
                },
                if worse.is_empty() {
                    "nothing beyond 5 %".to_string()
                } else {
                    worse.join(", ")
                },
                match row.unfinished {
                    (0, 0) => String::new(),
                    (a, b) => format!(
                        " — runs not finished within {} s: {a} with, {b} without",
                        t.run_limit_s
                    ),
                }
            );
        }
        out
    }

    /// An SVG of metric `i`: per failure type (and intensity), a bar with and a bar without.
    fn chart(&self, i: usize) -> String {
        let metric = &METRICS[i];
        let (width, height, left, bottom, top) = (760.0, 360.0, 60.0, 70.0, 40.0);
        let plot_h = height - bottom - top;
        let max = (self.rows.iter())
            .map(|r| r.medians[i].1.max(r.medians[i].2))
            .fold(0.0_f64, f64::max)
            .max(f64::EPSILON);
        let group = (width - left - 20.0) / self.rows.len().max(1) as f64;
        let bar = (group * 0.35).min(40.0);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" \
             height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"15\">{}</text>\n",
            metric.heading()
        );
        let base_y = height - bottom;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{base_y}\" x2=\"{}\" y2=\"{base_y}\" stroke=\"black\"/>",
            width - 20.0
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            top + 4.0,
            short(max)
        );
        for (n, row) in self.rows.iter().enumerate() {
            let x0 = left + n as f64 * group + group * 0.15;
            for (k, (value, colour)) in
                [(row.medians[i].1, "#2b7bba"), (row.medians[i].2, "#d95f02")]
                    .into_iter()
                    .enumerate()
            {
                let h = plot_h * value / max;
                let x = x0 + k as f64 * bar;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" \
                     fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
                     font-size=\"9\">{}</text>",
                    base_y - h,
                    bar - 2.0,
                    x + bar / 2.0,
                    base_y - h - 3.0,
                    short(value)
                );
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{:?}</text>",
                x0 + bar,
                base_y + 16.0,
                row.failure.name(),
                x0 + bar,
                base_y + 30.0,
                row.intensity
            );
        }
        let legend_y = height - 18.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{left}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"#2b7bba\"/><text \
             x=\"{}\" y=\"{legend_y}\">with breakers</text><rect x=\"{}\" y=\"{}\" width=\"12\" \
             height=\"12\" fill=\"#d95f02\"/><text x=\"{}\" y=\"{legend_y}\">without \
             (--disable-circuit-breaker)</text>\n</svg>",
            legend_y - 10.0,
            left + 16.0,
            left + 130.0,
            legend_y - 10.0,
            left + 146.0
        );
        svg
    }
}

/// A value for a chart label: few digits.
fn short(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(failure: FailureType, breakers: bool, makespan_s: f64, wasted: u64) -> RunResult {
        RunResult {
            failure,
            intensity: Intensity::Moderate,
            repetition: 1,
            breakers,
            finished: true,
            makespan_ms: makespan_s * 1000.0,
            tasks: 10,
            passed: 10,
            abandoned: 0,
            wasted_attempts: wasted,
            sick_attempts: wasted,
            tasks_hit: 0,
            tasks_hit_passed: 0,
            task_recovery_ms: 0.0,
            worker_recoveries: 0,
            worker_recoveries_succeeded: 0,
            breaker_transitions: 0,
            coordinator_cores: 0.5,
            coordinator_peak_rss_bytes: 1 << 20,
        }
    }

    #[test]
    fn medians_per_side_and_the_gain_signed_so_that_positive_is_better() {
        let runs = vec![
            run(FailureType::Crash, true, 10.0, 2),
            run(FailureType::Crash, true, 12.0, 4),
            run(FailureType::Crash, true, 30.0, 3),
            run(FailureType::Crash, false, 20.0, 10),
        ];
        let report = Report::new(Timings::new(true), 3, true, runs);
        assert_eq!(report.rows.len(), 1);
        let row = &report.rows[0];
        assert_eq!(row.medians[0], ("makespan".to_string(), 12.0, 20.0));
        assert_eq!(
            report.gain(row, 0),
            Some(40.0),
            "12 s instead of 20 s is 40 % better"
        );
        assert_eq!(report.gain(row, 2), Some(70.0), "3 wasted instead of 10");
        assert_eq!(report.gain(row, 1), Some(0.0), "both preserved everything");
        let md = report.markdown();
        assert!(
            md.contains("| crash | Moderate | 12.00 | 20.00 | +40 % |"),
            "{md}"
        );
        assert!(md.contains("Quick mode"), "{md}");
        let svg = report.chart(0);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<rect").count(),
            1 + 2 + 2,
            "background, two bars, legend"
        );
    }
}
