//! What a chaos run reports: each fault as injected ([`FaultRecord`]), the run's verdict and
//! figures ([`ChaosReport`]) and its text form ([`summary`]), with the pure arithmetic that
//! turns the recorded history into figures (the time without writes, the tasks that ran once).
//! The runner ([`super::run`]) fills them in.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::checker::{self, Anomaly, Crash, History, NodeTables, TaskRow};
use crate::demo::Latency;

/// One fault as injected.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub at_s: f64,
    pub kind: &'static str,
    pub target: String,
    /// For faults that cost the cluster its leader: until a new one led (ms).
    pub failover_ms: Option<f64>,
    pub partition: bool,
    /// What went wrong with the fault itself (e.g. no new leader within 30 s): not a
    /// safety anomaly, but the run says so.
    pub note: Option<String>,
    /// From the fault until a write invoked after it was acknowledged (ms); see
    /// [`super::probe`].
    pub write_outage_ms: Option<f64>,
    /// For worker faults: from the worker's restart (or resume) until the leader counted it
    /// healthy again (ms); `None` if it did not come back within 30 s (then `note` says so).
    pub worker_back_ms: Option<f64>,
    /// The coordinators' cores and resident memory in the [`RESOURCE_WINDOW`] before the
    /// fault and after it.
    pub resources: Option<FaultResources>,
}

/// What the coordinators used around one fault (see [`super::resources`]).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FaultResources {
    pub cores_before: f64,
    pub cores_after: f64,
    pub rss_mean_before: f64,
    pub rss_peak_after: u64,
}

/// The window before and after a fault over which its resource use is measured.
pub const RESOURCE_WINDOW: Duration = Duration::from_secs(5);

impl FaultRecord {
    /// Notes how long the new leader took, or that none came.
    pub(super) fn failover(&mut self, waited: Result<f64, String>) {
        match waited {
            Ok(ms) => self.failover_ms = Some(ms),
            Err(e) => self.note = Some(e),
        }
    }
}

/// Recovery attempts that succeeded and failed.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Outcomes {
    pub succeeded: u64,
    pub failed: u64,
}

/// The run's report.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub nodes: u64,
    pub workers: usize,
    pub partitions: bool,
    pub runtime_s: f64,
    pub faults_injected: usize,
    pub partitions_injected: usize,
    /// Faults after which no new leader came within 30 s.
    pub faults_without_failover: usize,
    pub failover: Latency,
    /// Write outages of the faults that took the leader (see [`super::probe`]).
    pub write_outage: Latency,
    /// Time during which no write could be acknowledged, summed over the faults (s).
    pub unavailable_s: f64,
    /// `1 - unavailable / runtime`, at this run's rate of faults.
    pub availability: f64,
    /// Worker faults, and how many of those workers were healthy again within 30 s.
    pub worker_faults: usize,
    pub workers_back: usize,
    pub worker_back: Latency,
    /// Worker recoveries, as the leader holds them at the end: succeeded is every
    /// `worker_recovery_history` row that brought a worker back (each ends a recovery), failed
    /// every worker still `failed`, `recovering`, `quarantined` or `permanently_failed`.
    pub worker_recoveries: Outcomes,
    /// The rows of `worker_recovery_history` (each attempt, e.g. a restart that could not
    /// run before the worker came back by itself) and `task_recovery_history`, by success.
    pub worker_recovery_attempts: Outcomes,
    pub task_recoveries: Outcomes,
    /// Finished tasks of acknowledged jobs, and how many of them ran only once (no
    /// interruption made them run again).
    pub tasks_finished: usize,
    pub tasks_first_attempt: usize,
    /// The coordinators' CPU (mean cores over the run) and their peak summed resident memory.
    pub coordinator_cores: f64,
    pub coordinator_peak_rss_bytes: u64,
    pub jobs_submitted: usize,
    pub acknowledged: usize,
    pub unknown: usize,
    pub refused: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub wrong_outcome: usize,
    pub replicas_identical: bool,
    pub replica_check: String,
    /// Coordinators that stopped on their own during the run (each an anomaly too).
    pub crashes: Vec<Crash>,
    pub verdict: &'static str,
    pub anomalies: Vec<Anomaly>,
    pub faults: Vec<FaultRecord>,
    /// Set when the run was interrupted (Ctrl-C): the verdict covers what ran.
    pub interrupted: bool,
}

/// The total length of the union of `[start, end]` intervals (ms).
pub(super) fn union_ms(mut spans: Vec<(f64, f64)>) -> f64 {
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (start, end) in spans {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(0.0, |(s, e)| e - s)
}

/// Of the acknowledged jobs' tasks that finished (on `node`), how many, and how many of them
/// finished in their first attempt — their run was never interrupted.
pub(super) fn continuity(history: &History, node: Option<&NodeTables>) -> (usize, usize) {
    let Some(node) = node else {
        return (0, 0);
    };
    let acknowledged: BTreeSet<&str> = (history.submissions.iter())
        .filter(|s| s.ack == checker::Ack::Acknowledged)
        .flat_map(|s| s.tasks.iter().map(|(id, _)| id.as_str()))
        .collect();
    let finished: Vec<&TaskRow> = (node.tasks.iter())
        .filter(|t| acknowledged.contains(t.id.as_str()))
        .filter(|t| matches!(t.status.as_str(), "passed" | "failed" | "timed_out"))
        .collect();
    let first = finished.iter().filter(|t| t.attempt == 1).count();
    (finished.len(), first)
}

/// `p50 X ms, p99 Y ms`, or `none` without samples.
fn percentiles(l: &Latency) -> String {
    match l.samples {
        0 => "none".into(),
        _ => format!("p50 {:.0} ms, p99 {:.0} ms", l.p50_ms, l.p99_ms),
    }
}

/// The report as text.
pub fn summary(r: &ChaosReport) -> String {
    let mut out = format!(
        "chaos run, seed {}: {} coordinators, {} workers{}\n\
         faults injected: {} ({} partitions, {} without a new leader within 30 s); \
         failover {}\n\
         write outage {}; unavailable {:.1} s of {:.0} s (availability {:.3} %)\n\
         worker faults: {} ({} healthy again within 30 s; after their restart {})\n\
         worker recoveries: {} succeeded, {} not (attempts: {} / {}); task recoveries: {} \
         succeeded, {} failed; tasks finished in their first attempt: {} of {}\n\
         coordinators: {:.2} cores on average, {:.0} MiB resident at most\n\
         jobs submitted: {} ({} tasks acknowledged, {} jobs unknown, {} refused)\n\
         lost: {}, duplicated: {}, wrong outcome: {}, replicas identical: {}\n\
         replica check: {}\n\
         verdict: {}\n",
        r.seed,
        r.nodes,
        r.workers,
        if r.partitions { ", partitions" } else { "" },
        r.faults_injected,
        r.partitions_injected,
        r.faults_without_failover,
        percentiles(&r.failover),
        percentiles(&r.write_outage),
        r.unavailable_s,
        r.runtime_s,
        r.availability * 100.0,
        r.worker_faults,
        r.workers_back,
        percentiles(&r.worker_back),
        r.worker_recoveries.succeeded,
        r.worker_recoveries.failed,
        r.worker_recovery_attempts.succeeded,
        r.worker_recovery_attempts.failed,
        r.task_recoveries.succeeded,
        r.task_recoveries.failed,
        r.tasks_first_attempt,
        r.tasks_finished,
        r.coordinator_cores,
        r.coordinator_peak_rss_bytes as f64 / (1 << 20) as f64,
        r.jobs_submitted,
        r.acknowledged,
        r.unknown,
        r.refused,
        r.lost,
        r.duplicated,
        r.wrong_outcome,
        r.replicas_identical,
        r.replica_check,
        r.verdict.to_uppercase(),
    );
    for anomaly in &r.anomalies {
        out += &format!("  {anomaly}\n");
    }
    out
}
