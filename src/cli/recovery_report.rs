//! `testfleet recovery report`: how well recovery works, computed from the replicated tables.
//!
//! Every figure comes from one of the SQL constants below, run read-only either on a local
//! DuckDB connection ([`report_from`]) or on a coordinator through the `Control.Query` RPC
//! ([`report`]); both feed the same pure `assemble`, so what the tests check is what the
//! command prints. Rates are `0..1` (`None`/`null` when nothing was attempted), durations are
//! milliseconds, timestamps are the UTC microseconds the proposer chose.
//!
//! # Figures
//!
//! * **Success rate** ([`SuccessRates`]): per history table, rows with `success` over all
//!   rows. Worker recoveries (`worker_recovery_history`, one row per attempt) and task
//!   recoveries (`task_recovery_history`, one row per decision) separately; system episodes
//!   too.
//! * **Worker recovery time** ([`RecoveryTimes::worker`]): over the successful
//!   `worker_recovery_history` rows, the first source that the row allows:
//!   1. `details.finished_at_us - details.started_at_us`;
//!   2. `details.timings.since_failure_ms + details.timings.duration_ms` (0 when absent) —
//!      what the recovery planner writes: failure → attempt start, attempt start → outcome;
//!   3. the row's `recovery_time` minus the worker's failure. The tables keep only a worker's
//!      *current* status, so the time it was set `failed` survives as the `detected_at_us`
//!      the health monitor writes into each task recovery row of that failure (the `at` of
//!      the same `SetWorkerStatus … → failed`): the latest one of that worker at or before
//!      the row and after the worker's previous successful recovery.
//!
//!   A success with none of them counts in `recoveries` but not in `timed`.
//! * **Task recovery times**, over the successful `task_recovery_history` rows:
//!   [`RecoveryTimes::task_requeue`] is `requeued_at_us - detected_at_us` from `details`;
//!   [`RecoveryTimes::task_finish`] is the task's `tasks.finished_at` minus `detected_at_us`,
//!   only for tasks whose final status is a real result (passed, failed, timed_out, error).
//!   Rows without those timestamps (e.g. the monitor's hung-attempt requeues) are untimed.
//! * **Mean and p99**: `avg` and `quantile_cont(…, 0.99)` (linear interpolation between the
//!   two nearest ranks) over the timed rows.
//! * **Task preservation** ([`Preservation`]): the distinct task ids named by
//!   `task_recovery_history` (whatever the row's `success`), split by the task's status now:
//!   `preserved` = passed/failed/timed_out/error, `lost` = abandoned/cancelled, `open` =
//!   queued/assigned/running, `unknown` = not in `tasks`. Rate = preserved / all of them.
//!   [`RecoveryReport::task_outcomes`] counts every task by status, and how many of them
//!   recovery dealt with.
//! * **Coordinator load** ([`CoordinatorLoad`]): a `health_samples` row is *during recovery*
//!   when its `sampled_at` is within ±[`RECOVERY_WINDOW_S`] seconds (inclusive) of the
//!   `recovery_time` of any task or worker recovery row, *outside* otherwise. Per node: the
//!   number of samples and the mean `cpu` (cores) and `mem_bytes` of each group.
//! * **Worker reconnection** ([`Reconnection`]): the workers named by any
//!   `worker_recovery_history` row or any `task_recovery_history` row (recovery dealt with
//!   them because they failed or hung), split by their `workers.status` now; rate = `healthy`
//!   / all of them (a worker missing from `workers` counts as not healthy).
//! * **Failure patterns** ([`FailurePatterns`]): the [`TOP_WORKERS`] workers with the most
//!   recovery rows of both tables; task rows by `details->>'category'`; worker rows by
//!   `recovery_type`; rows of both tables by `hour(recovery_time)` (UTC).

use serde::Serialize;
use serde_json::Value as Json;

use super::{CliError, Output, table};
use crate::state::command::TaskStatus;

/// Seconds either side of a recovery row during which a health sample counts as taken during
/// recovery. `LOAD_SQL` spells the same number.
pub const RECOVERY_WINDOW_S: i64 = 30;

/// How many workers the failure patterns list. `TOP_WORKERS_SQL` spells the same number.
pub const TOP_WORKERS: usize = 10;

/// Attempts and successes of each history table.
const SUCCESS_SQL: &str = "\
SELECT
  (SELECT count(*) FROM worker_recovery_history) AS worker_attempts,
  (SELECT count(*) FILTER (WHERE success) FROM worker_recovery_history) AS worker_successes,
  (SELECT count(*) FROM task_recovery_history) AS task_attempts,
  (SELECT count(*) FILTER (WHERE success) FROM task_recovery_history) AS task_successes,
  (SELECT count(*) FROM system_recovery_history) AS system_attempts,
  (SELECT count(*) FILTER (WHERE success) FROM system_recovery_history) AS system_successes";

/// Failure → successful recovery of workers (see the module docs for the two sources).
const WORKER_TIME_SQL: &str = "\
WITH successes AS (
  SELECT id, worker_id, recovery_time, epoch_us(recovery_time) AS at_us,
         TRY_CAST(details->>'started_at_us' AS BIGINT) AS started_us,
         TRY_CAST(details->>'finished_at_us' AS BIGINT) AS finished_us,
         TRY_CAST(details->'timings'->>'since_failure_ms' AS DOUBLE) AS since_failure_ms,
         TRY_CAST(details->'timings'->>'duration_ms' AS DOUBLE) AS duration_ms
  FROM worker_recovery_history WHERE success
),
bounded AS (
  SELECT s.*,
         (SELECT max(epoch_us(p.recovery_time)) FROM worker_recovery_history p
          WHERE p.success AND p.worker_id = s.worker_id
            AND (p.recovery_time < s.recovery_time
                 OR (p.recovery_time = s.recovery_time AND p.id < s.id))) AS previous_us
  FROM successes s
),
detections AS (
  SELECT worker_id, TRY_CAST(details->>'detected_at_us' AS BIGINT) AS detected_us
  FROM task_recovery_history
),
spans AS (
  SELECT CASE
    WHEN b.started_us IS NOT NULL AND b.finished_us IS NOT NULL THEN b.finished_us - b.started_us
    WHEN b.since_failure_ms IS NOT NULL THEN (b.since_failure_ms + coalesce(b.duration_ms, 0)) * 1000
    ELSE b.at_us - (SELECT max(d.detected_us) FROM detections d
                    WHERE d.worker_id = b.worker_id AND d.detected_us <= b.at_us
                      AND (b.previous_us IS NULL OR d.detected_us > b.previous_us))
  END AS us
  FROM bounded b
)
SELECT count(*) AS recoveries, count(us) AS timed,
       avg(us::DOUBLE) / 1000 AS mean_ms, quantile_cont(us::DOUBLE, 0.99) / 1000 AS p99_ms
FROM spans";

/// Detection → requeue and detection → result of successfully recovered tasks.
const TASK_TIME_SQL: &str = "\
WITH recovered AS (
  SELECT TRY_CAST(r.details->>'detected_at_us' AS BIGINT) AS detected_us,
         TRY_CAST(r.details->>'requeued_at_us' AS BIGINT) AS requeued_us,
         CASE WHEN t.status IN ('passed', 'failed', 'timed_out', 'error')
              THEN epoch_us(t.finished_at) END AS result_us
  FROM task_recovery_history r LEFT JOIN tasks t ON t.id = r.task_id
  WHERE r.success
),
spans AS (
  SELECT requeued_us - detected_us AS requeue_us, result_us - detected_us AS finish_us FROM recovered
)
SELECT count(*) AS recoveries, count(requeue_us) AS requeue_timed,
       avg(requeue_us::DOUBLE) / 1000 AS requeue_mean_ms,
       quantile_cont(requeue_us::DOUBLE, 0.99) / 1000 AS requeue_p99_ms,
       count(finish_us) AS finish_timed,
       avg(finish_us::DOUBLE) / 1000 AS finish_mean_ms,
       quantile_cont(finish_us::DOUBLE, 0.99) / 1000 AS finish_p99_ms
FROM spans";

/// Tasks by status, and how many of each recovery dealt with; a NULL status counts the task
/// ids of recovery rows that `tasks` does not hold.
const OUTCOME_SQL: &str = "\
WITH recovered AS (SELECT DISTINCT task_id FROM task_recovery_history WHERE task_id IS NOT NULL)
SELECT t.status, count(t.id) AS tasks, count(r.task_id) AS recovered
FROM tasks t FULL OUTER JOIN recovered r ON r.task_id = t.id
GROUP BY t.status ORDER BY t.status NULLS LAST";

/// Per node: health samples within ±30 s of a task or worker recovery row versus the rest.
const LOAD_SQL: &str = "\
WITH marks AS (
  SELECT recovery_time AS at FROM task_recovery_history
  UNION ALL
  SELECT recovery_time FROM worker_recovery_history
),
samples AS (
  SELECT h.node_id, h.cpu, h.mem_bytes,
         EXISTS (SELECT 1 FROM marks m
                 WHERE h.sampled_at BETWEEN m.at - INTERVAL 30 SECOND
                                        AND m.at + INTERVAL 30 SECOND) AS during
  FROM health_samples h
)
SELECT node_id,
       count(*) FILTER (WHERE during) AS samples_during,
       avg(cpu) FILTER (WHERE during) AS cpu_during,
       avg(mem_bytes::DOUBLE) FILTER (WHERE during) AS mem_bytes_during,
       count(*) FILTER (WHERE NOT during) AS samples_outside,
       avg(cpu) FILTER (WHERE NOT during) AS cpu_outside,
       avg(mem_bytes::DOUBLE) FILTER (WHERE NOT during) AS mem_bytes_outside
FROM samples GROUP BY node_id ORDER BY node_id";

/// Workers recovery dealt with, by their status now (NULL: not in `workers`).
const RECONNECTION_SQL: &str = "\
WITH failed AS (
  SELECT worker_id FROM worker_recovery_history WHERE worker_id IS NOT NULL
  UNION
  SELECT worker_id FROM task_recovery_history WHERE worker_id IS NOT NULL
)
SELECT w.status, count(*) AS workers
FROM failed f LEFT JOIN workers w ON w.id = f.worker_id
GROUP BY w.status ORDER BY w.status NULLS LAST";

/// The workers with the most recovery rows.
const TOP_WORKERS_SQL: &str = "\
WITH named AS (
  SELECT worker_id, 'worker' AS source, success FROM worker_recovery_history
  UNION ALL
  SELECT worker_id, 'task', success FROM task_recovery_history
)
SELECT n.worker_id,
       count(*) FILTER (WHERE source = 'worker') AS worker_recoveries,
       count(*) FILTER (WHERE source = 'worker' AND success) AS worker_successes,
       count(*) FILTER (WHERE source = 'task') AS task_recoveries,
       count(*) AS total, w.status
FROM named n LEFT JOIN workers w ON w.id = n.worker_id
WHERE n.worker_id IS NOT NULL
GROUP BY n.worker_id, w.status
ORDER BY total DESC, n.worker_id
LIMIT 10";

/// Task rows by fault category and worker rows by recovery type.
const CATEGORY_SQL: &str = "\
SELECT 'task' AS source, details->>'category' AS category, count(*) AS rows,
       count(*) FILTER (WHERE success) AS successes
FROM task_recovery_history GROUP BY 2
UNION ALL
SELECT 'worker', recovery_type, count(*), count(*) FILTER (WHERE success)
FROM worker_recovery_history GROUP BY 2
ORDER BY source, rows DESC, category NULLS LAST";

/// Recovery rows by hour of day (UTC).
const HOUR_SQL: &str = "\
WITH marks AS (
  SELECT hour(recovery_time) AS hour, 'worker' AS source FROM worker_recovery_history
  UNION ALL
  SELECT hour(recovery_time), 'task' FROM task_recovery_history
)
SELECT hour, count(*) FILTER (WHERE source = 'worker') AS worker_rows,
       count(*) FILTER (WHERE source = 'task') AS task_rows
FROM marks WHERE hour IS NOT NULL GROUP BY hour ORDER BY hour";

/// The report's queries, in the order `assemble` reads their answers.
pub const QUERIES: [&str; 9] = [
    SUCCESS_SQL,
    WORKER_TIME_SQL,
    TASK_TIME_SQL,
    OUTCOME_SQL,
    LOAD_SQL,
    RECONNECTION_SQL,
    TOP_WORKERS_SQL,
    CATEGORY_SQL,
    HOUR_SQL,
];

/// The whole report; `-o json` prints it as is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryReport {
    pub success: SuccessRates,
    pub recovery_time: RecoveryTimes,
    pub preservation: Preservation,
    /// Every task by status (statuses with no task are left out).
    pub task_outcomes: Vec<TaskOutcome>,
    pub coordinator_load: CoordinatorLoad,
    pub reconnection: Reconnection,
    pub patterns: FailurePatterns,
}

/// Success rates of the three kinds of recovery.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuccessRates {
    pub worker: Rate,
    pub task: Rate,
    pub system: Rate,
}

/// Successes out of attempts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rate {
    pub attempts: u64,
    pub successes: u64,
    /// `successes / attempts`; `None` without attempts.
    pub rate: Option<f64>,
}

/// How long recovery takes; see the module docs for each span.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryTimes {
    /// Worker failure → successful recovery.
    pub worker: Durations,
    /// Task: failure detected → requeue committed.
    pub task_requeue: Durations,
    /// Task: failure detected → its final result.
    pub task_finish: Durations,
}

/// Mean and p99 of one span over the successful recoveries that have one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Durations {
    /// Successful recoveries in scope.
    pub recoveries: u64,
    /// Those whose span could be measured; the figures below are over these.
    pub timed: u64,
    pub mean_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// What became of the tasks that recovery dealt with.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Preservation {
    /// Distinct task ids named by `task_recovery_history`.
    pub tasks: u64,
    /// Final with a real result: passed, failed, timed_out or error.
    pub preserved: u64,
    /// Final without a result: abandoned or cancelled.
    pub lost: u64,
    /// Queued, assigned or running.
    pub open: u64,
    /// Not in `tasks` (or with a status this binary does not know).
    pub unknown: u64,
    /// `preserved / tasks`; `None` when recovery dealt with no task.
    pub rate: Option<f64>,
}

/// The tasks of one status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskOutcome {
    pub status: String,
    pub tasks: u64,
    /// How many of them recovery dealt with.
    pub recovered: u64,
}

/// Coordinator resources during recovery versus outside it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CoordinatorLoad {
    /// Seconds either side of a recovery row ([`RECOVERY_WINDOW_S`]).
    pub window_s: i64,
    pub nodes: Vec<NodeLoad>,
}

/// One coordinator's samples, split by the recovery windows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeLoad {
    pub node_id: u64,
    pub during: LoadStats,
    pub outside: LoadStats,
}

/// Means of a group of health samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadStats {
    pub samples: u64,
    /// Mean CPU, as a fraction of one core; `None` without samples.
    pub cpu: Option<f64>,
    /// Mean resident memory in bytes; `None` without samples.
    pub mem_bytes: Option<f64>,
}

/// Whether the workers that failed came back.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reconnection {
    /// Workers named by any recovery row.
    pub workers: u64,
    /// Those whose status is `healthy` now.
    pub healthy: u64,
    /// `healthy / workers`; `None` when no worker failed.
    pub rate: Option<f64>,
    /// Those workers by their status now.
    pub by_status: Vec<StatusCount>,
}

/// Workers of one status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusCount {
    /// `None`: the worker is not in `workers`.
    pub status: Option<String>,
    pub workers: u64,
}

/// Which workers, categories and hours recovery concerns most.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailurePatterns {
    /// Most recovery rows first, then by id; at most [`TOP_WORKERS`].
    pub top_workers: Vec<WorkerPattern>,
    /// Task rows by `details->>'category'`, most rows first.
    pub task_categories: Vec<CategoryCount>,
    /// Worker rows by `recovery_type`, most rows first.
    pub worker_recovery_types: Vec<CategoryCount>,
    /// Rows by hour of day (UTC), hours without rows left out.
    pub hours: Vec<HourCount>,
}

/// One worker's recovery rows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerPattern {
    pub worker_id: String,
    pub worker_recoveries: u64,
    pub worker_successes: u64,
    pub task_recoveries: u64,
    /// `worker_recoveries + task_recoveries`.
    pub total: u64,
    /// Its status now; `None` when it is not in `workers`.
    pub status: Option<String>,
}

/// Rows of one category or recovery type.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CategoryCount {
    /// `None` when the row does not say.
    pub category: Option<String>,
    pub rows: u64,
    pub successes: u64,
}

/// Rows of one hour of day.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HourCount {
    pub hour: u8,
    pub worker_rows: u64,
    pub task_rows: u64,
}

/// The rows of one query's answer, as JSON values in column order.
type Rows = Vec<Vec<Json>>;

/// Computes the report on a local DuckDB connection (one not inside a transaction).
pub fn report_from(conn: &duckdb::Connection) -> Result<RecoveryReport, CliError> {
    let answers = QUERIES
        .iter()
        .map(|sql| {
            crate::query::run_query(conn, sql)
                .map(|result| result.rows)
                .map_err(|e| CliError::Other(format!("recovery report: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    assemble(answers)
}

/// Computes the report on the first coordinator of `addrs` that answers, through the
/// `Control.Query` RPC. All queries go to that one node and read its copy of the state.
pub async fn report(remote: &super::Remote) -> Result<RecoveryReport, CliError> {
    let mut client = super::connect_any(remote).await?;
    let mut answers = Vec::with_capacity(QUERIES.len());
    for sql in QUERIES {
        let reply = client
            .query(crate::proto::QueryRequest {
                sql: sql.to_string(),
                consistent: false,
                timeout_ms: 0,
            })
            .await
            .map_err(super::from_status)?
            .into_inner();
        let rows = reply
            .rows_json
            .iter()
            .map(|r| serde_json::from_str::<Vec<Json>>(r))
            .collect::<Result<Rows, _>>()
            .map_err(|e| CliError::Other(format!("the coordinator sent a malformed row: {e}")))?;
        answers.push(rows);
    }
    assemble(answers)
}

/// Builds the report from the answers to [`QUERIES`], in order.
fn assemble(answers: Vec<Rows>) -> Result<RecoveryReport, CliError> {
    let answers: [Rows; 9] = answers
        .try_into()
        .map_err(|_| malformed("the number of answers"))?;
    let [
        success,
        worker_time,
        task_time,
        outcomes,
        load,
        workers,
        top,
        categories,
        hours,
    ] = answers;

    let s = single(&success, "success counts")?;
    let success = SuccessRates {
        worker: rate(count(s, 0)?, count(s, 1)?),
        task: rate(count(s, 2)?, count(s, 3)?),
        system: rate(count(s, 4)?, count(s, 5)?),
    };
    let w = single(&worker_time, "worker recovery times")?;
    let t = single(&task_time, "task recovery times")?;
    let recovery_time = RecoveryTimes {
        worker: durations(w, 0, 1)?,
        task_requeue: durations(t, 0, 1)?,
        task_finish: durations(t, 0, 4)?,
    };
    let (preservation, task_outcomes) = preservation(&outcomes)?;
    let nodes = each(&load, |row| {
        Ok(NodeLoad {
            node_id: count(row, 0)?,
            during: load_stats(row, 1)?,
            outside: load_stats(row, 4)?,
        })
    })?;
    let by_status = each(&workers, |row| {
        Ok(StatusCount {
            status: text(row, 0)?,
            workers: count(row, 1)?,
        })
    })?;
    let workers = by_status.iter().map(|s| s.workers).sum();
    let healthy = by_status
        .iter()
        .filter(|s| s.status.as_deref() == Some("healthy"))
        .map(|s| s.workers)
        .sum();
    let top_workers = each(&top, |row| {
        Ok(WorkerPattern {
            worker_id: text(row, 0)?.ok_or_else(|| malformed("a worker id"))?,
            worker_recoveries: count(row, 1)?,
            worker_successes: count(row, 2)?,
            task_recoveries: count(row, 3)?,
            total: count(row, 4)?,
            status: text(row, 5)?,
        })
    })?;
    let (mut task_categories, mut worker_recovery_types) = (Vec::new(), Vec::new());
    for row in &categories {
        let list = match text(row, 0)?.as_deref() {
            Some("task") => &mut task_categories,
            Some("worker") => &mut worker_recovery_types,
            _ => return Err(malformed("a category source")),
        };
        list.push(CategoryCount {
            category: text(row, 1)?,
            rows: count(row, 2)?,
            successes: count(row, 3)?,
        });
    }
    let hours = each(&hours, |row| {
        Ok(HourCount {
            hour: u8::try_from(count(row, 0)?).map_err(|_| malformed("an hour"))?,
            worker_rows: count(row, 1)?,
            task_rows: count(row, 2)?,
        })
    })?;

    Ok(RecoveryReport {
        success,
        recovery_time,
        preservation,
        task_outcomes,
        coordinator_load: CoordinatorLoad {
            window_s: RECOVERY_WINDOW_S,
            nodes,
        },
        reconnection: Reconnection {
            workers,
            healthy,
            rate: ratio(healthy, workers),
            by_status,
        },
        patterns: FailurePatterns {
            top_workers,
            task_categories,
            worker_recovery_types,
            hours,
        },
    })
}

/// The count in column `recoveries`, then count, mean and p99 from column `first` on.
fn durations(row: &[Json], recoveries: usize, first: usize) -> Result<Durations, CliError> {
    Ok(Durations {
        recoveries: count(row, recoveries)?,
        timed: count(row, first)?,
        mean_ms: float(row, first + 1)?,
        p99_ms: float(row, first + 2)?,
    })
}

/// Sample count, mean CPU and mean memory from column `first` on.
fn load_stats(row: &[Json], first: usize) -> Result<LoadStats, CliError> {
    Ok(LoadStats {
        samples: count(row, first)?,
        cpu: float(row, first + 1)?,
        mem_bytes: float(row, first + 2)?,
    })
}

fn each<T>(rows: &Rows, read: impl Fn(&[Json]) -> Result<T, CliError>) -> Result<Vec<T>, CliError> {
    rows.iter().map(|row| read(row)).collect()
}

/// Splits the rows of `OUTCOME_SQL` into the preservation figures and the task outcomes.
fn preservation(rows: &Rows) -> Result<(Preservation, Vec<TaskOutcome>), CliError> {
    let mut p = Preservation::default();
    let mut outcomes = Vec::new();
    for row in rows {
        let status = text(row, 0)?;
        let tasks = count(row, 1)?;
        let recovered = count(row, 2)?;
        p.tasks += recovered;
        let bucket = match status.as_deref().and_then(TaskStatus::parse) {
            Some(TaskStatus::Passed | TaskStatus::Failed | TaskStatus::TimedOut)
            | Some(TaskStatus::Error) => &mut p.preserved,
            Some(TaskStatus::Abandoned | TaskStatus::Cancelled) => &mut p.lost,
            Some(TaskStatus::Queued | TaskStatus::Assigned | TaskStatus::Running) => &mut p.open,
            None => &mut p.unknown,
        };
        *bucket += recovered;
        if let Some(status) = status {
            outcomes.push(TaskOutcome {
                status,
                tasks,
                recovered,
            });
        }
    }
    p.rate = ratio(p.preserved, p.tasks);
    Ok((p, outcomes))
}

fn rate(attempts: u64, successes: u64) -> Rate {
    Rate {
        attempts,
        successes,
        rate: ratio(successes, attempts),
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn malformed(what: &str) -> CliError {
    CliError::Other(format!(
        "recovery report: unexpected answer for {what} (is the coordinator's schema older?)"
    ))
}

fn single<'a>(rows: &'a Rows, what: &str) -> Result<&'a [Json], CliError> {
    match rows.as_slice() {
        [row] => Ok(row),
        _ => Err(malformed(what)),
    }
}

/// A count (or id) column: a non-negative integer.
fn count(row: &[Json], i: usize) -> Result<u64, CliError> {
    row.get(i)
        .and_then(Json::as_u64)
        .ok_or_else(|| malformed(&format!("column {i} (a count)")))
}

/// A mean or quantile: a number, or NULL when there was nothing to average.
fn float(row: &[Json], i: usize) -> Result<Option<f64>, CliError> {
    match row.get(i) {
        Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => Ok(n.as_f64()),
        _ => Err(malformed(&format!("column {i} (a number)"))),
    }
}

/// A text column, NULL allowed.
fn text(row: &[Json], i: usize) -> Result<Option<String>, CliError> {
    match row.get(i) {
        Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        _ => Err(malformed(&format!("column {i} (a text)"))),
    }
}

/// One row of a text table, from anything printable.
macro_rules! cells {
    ($($cell:expr),* $(,)?) => { vec![$($cell.to_string()),*] };
}

/// The report as text sections with aligned tables, or as one JSON document.
pub fn render(report: &RecoveryReport, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(report).unwrap_or_default() + "\n";
    }
    let (s, p, r) = (&report.success, &report.preservation, &report.reconnection);
    let of =
        |part: u64, whole: u64, rate: Option<f64>| format!("{} ({part} of {whole})", percent(rate));
    let success = |r: &Rate| of(r.successes, r.attempts, r.rate);
    let summary = [
        cells!["worker recovery success", success(&s.worker)],
        cells!["task recovery success", success(&s.task)],
        cells!["system recovery success", success(&s.system)],
        cells!["task preservation", of(p.preserved, p.tasks, p.rate)],
        cells!["worker reconnection", of(r.healthy, r.workers, r.rate)],
    ];
    let mut out = String::new();
    let header = ["FIGURE", "RATE"];
    section(&mut out, "Recovery", &header, summary.into_iter());

    let t = &report.recovery_time;
    let spans = [
        ("worker failed -> recovered", &t.worker),
        ("task detected -> requeued", &t.task_requeue),
        ("task detected -> result", &t.task_finish),
    ];
    section(
        &mut out,
        "Recovery time (ms)",
        &["SPAN", "RECOVERIES", "TIMED", "MEAN", "P99"],
        spans.iter().map(|(span, d)| {
            let (mean, p99) = (millis(d.mean_ms), millis(d.p99_ms));
            cells![span, d.recoveries, d.timed, mean, p99]
        }),
    );
    let title = format!(
        "Tasks by status (recovered: dealt with by recovery; {} lost, {} open, {} unknown)",
        p.lost, p.open, p.unknown
    );
    let rows = report.task_outcomes.iter().map(|o| {
        let (status, tasks, recovered) = (&o.status, o.tasks, o.recovered);
        cells![status, tasks, recovered]
    });
    section(&mut out, &title, &["STATUS", "TASKS", "RECOVERED"], rows);

    let load = &report.coordinator_load;
    let title = format!(
        "Coordinator load: samples, mean CPU (cores) and memory during recovery (within {} s \
         of a recovery row) and outside",
        load.window_s
    );
    let header = ["NODE", "DURING", "CPU", "MEM", "OUTSIDE", "CPU", "MEM"];
    let rows = load.nodes.iter().map(|n| {
        let (d, o) = (&n.during, &n.outside);
        let (d_cpu, d_mem) = (cores(d.cpu), mebibytes(d.mem_bytes));
        let (o_cpu, o_mem) = (cores(o.cpu), mebibytes(o.mem_bytes));
        cells![n.node_id, d.samples, d_cpu, d_mem, o.samples, o_cpu, o_mem]
    });
    section(&mut out, &title, &header, rows);
    let rows = r.by_status.iter().map(|s| {
        let status = registered(&s.status);
        cells![status, s.workers]
    });
    let title = "Workers that failed, by status now";
    section(&mut out, title, &["STATUS", "WORKERS"], rows);

    let patterns = &report.patterns;
    let header = [
        "WORKER",
        "WORKER ROWS",
        "SUCCEEDED",
        "TASK ROWS",
        "TOTAL",
        "NOW",
    ];
    let rows = patterns.top_workers.iter().map(|w| {
        let (rows, ok, tasks) = (w.worker_recoveries, w.worker_successes, w.task_recoveries);
        cells![w.worker_id, rows, ok, tasks, w.total, registered(&w.status)]
    });
    let title = "Workers with the most recovery rows";
    section(&mut out, title, &header, rows);
    let title = "Task recoveries by category";
    counts(&mut out, title, "CATEGORY", &patterns.task_categories);
    let title = "Worker recoveries by type";
    counts(&mut out, title, "TYPE", &patterns.worker_recovery_types);
    let rows = patterns
        .hours
        .iter()
        .map(|h| cells![format!("{:02}:00", h.hour), h.worker_rows, h.task_rows]);
    let title = "Recovery rows by hour of day (UTC)";
    section(&mut out, title, &["HOUR", "WORKER ROWS", "TASK ROWS"], rows);
    out
}

/// Appends a section of category counts.
fn counts(out: &mut String, title: &str, kind: &str, list: &[CategoryCount]) {
    let rows = list.iter().map(|c| {
        let category = c.category.as_deref().unwrap_or("-");
        cells![category, c.rows, c.successes]
    });
    section(out, title, &[kind, "ROWS", "SUCCEEDED"], rows);
}

/// Appends a titled, indented table, with a blank line before every section but the first.
fn section(
    out: &mut String,
    title: &str,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(title);
    out.push('\n');
    for line in table(header, &rows.collect::<Vec<_>>()).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

fn millis(ms: Option<f64>) -> String {
    ms.map_or("-".to_string(), |ms| format!("{ms:.1}"))
}

fn cores(cpu: Option<f64>) -> String {
    cpu.map_or("-".to_string(), |c| format!("{c:.3}"))
}

fn mebibytes(bytes: Option<f64>) -> String {
    bytes.map_or("-".to_string(), |b| format!("{:.1} MiB", b / 1_048_576.0))
}

fn registered(status: &Option<String>) -> &str {
    status.as_deref().unwrap_or("(not registered)")
}

#[cfg(test)]
mod tests;
