//! Rows of the replicated tables: what one flush writes, and each row as DuckDB values.
//!
//! [`RowBatch::collect`] runs under the state machine's lock and copies the rows named by a
//! set of [`Changes`] out of the [`Machine`]: compact copies of the records (a changed task's
//! copy shares its text with the machine, [`super::machine::StoredSpec`]), not DuckDB values.
//! [`super::store::Store::write`] then builds each row's values only while appending it,
//! without that lock, so a flush of many changed tasks never holds all their values at once
//! (about 3 KiB per task row: building them up front made every large flush a burst of
//! allocations that the allocator kept as resident memory afterwards).

use std::collections::BTreeMap;

use duckdb::types::{TimeUnit, Value};
use serde::{Deserialize, Serialize};

use super::command::{JobId, JobStatus, TaskId, Timestamp};
use super::machine::{Attempt, Changes, HistoryRow, Machine, Task, Worker};

/// A `jobs` row.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    pub id: JobId,
    pub name: String,
    pub status: JobStatus,
    pub submitted_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub tasks: usize,
    pub open_tasks: u32,
}

/// The rows one flush writes.
#[derive(Debug, Default)]
pub struct RowBatch {
    /// Upserted by key, per table.
    pub workers: Vec<Worker>,
    pub jobs: Vec<JobRow>,
    pub tasks: Vec<Task>,
    /// Attempts DuckDB already has a row of (upserted), and attempts created since the last
    /// flush (appended: no row of theirs can exist yet).
    pub attempts: Vec<(TaskId, Attempt)>,
    pub new_attempts: Vec<(TaskId, Attempt)>,
    /// Appended to the history tables, in the order they happened.
    pub history: Vec<HistoryRow>,
    /// Ids of health samples past the retention limit.
    pub deleted_health_samples: Vec<i64>,
}

impl RowBatch {
    /// The rows named by `changes`, as they are now in `machine`.
    pub fn collect(machine: &Machine, changes: &Changes) -> RowBatch {
        RowBatch {
            workers: (changes.workers.iter())
                .filter_map(|id| machine.worker(id))
                .cloned()
                .collect(),
            jobs: (changes.jobs.iter())
                .filter_map(|id| machine.job(id))
                .map(|j| JobRow {
                    id: j.id.clone(),
                    name: j.name.clone(),
                    status: j.status,
                    submitted_at: j.submitted_at,
                    finished_at: j.finished_at,
                    tasks: j.tasks.len(),
                    open_tasks: j.open_tasks,
                })
                .collect(),
            tasks: (changes.tasks.iter())
                .filter_map(|slot| machine.task_at(*slot))
                .cloned()
                .collect(),
            attempts: (changes.attempts.iter())
                .filter(|(key, _)| !changes.new_attempts.contains(*key))
                .map(|((task, _), attempt)| (task.clone(), attempt.clone()))
                .collect(),
            new_attempts: (changes.attempts.iter())
                .filter(|(key, _)| changes.new_attempts.contains(*key))
                .map(|((task, _), attempt)| (task.clone(), attempt.clone()))
                .collect(),
            history: changes.history.clone(),
            deleted_health_samples: changes.deleted_health_samples.clone(),
        }
    }

    /// How many rows the batch writes or deletes.
    pub fn rows(&self) -> usize {
        self.workers.len()
            + self.jobs.len()
            + self.tasks.len()
            + self.attempts.len()
            + self.new_attempts.len()
            + self.history.len()
            + self.deleted_health_samples.len()
    }

    /// The history rows grouped by table (tables in name order, rows in order).
    pub fn history_by_table(&self) -> BTreeMap<&'static str, Vec<&HistoryRow>> {
        let mut tables: BTreeMap<&'static str, Vec<&HistoryRow>> = BTreeMap::new();
        for row in &self.history {
            tables.entry(history_table(row)).or_default().push(row);
        }
        tables
    }
}

/// The values of a `jobs` row.
pub fn job_row(j: &JobRow) -> Vec<Value> {
    vec![
        text(&j.id),
        text(&j.name),
        text(j.status.as_str()),
        ts(j.submitted_at),
        opt_ts(j.finished_at),
        int(j.tasks as i64),
        int(j.open_tasks),
    ]
}

fn ts(t: Timestamp) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, t.micros())
}

fn opt_ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, ts)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}

fn int(i: impl Into<i64>) -> Value {
    Value::BigInt(i.into())
}

fn uint(i: u64) -> Value {
    Value::BigInt(i64::try_from(i).unwrap_or(i64::MAX))
}

fn json<T: Serialize>(value: &T) -> Value {
    Value::Text(serde_json::to_string(value).unwrap_or_else(|_| "null".to_string()))
}

/// The values of a `workers` row.
pub fn worker_row(w: &Worker) -> Vec<Value> {
    vec![
        text(&w.id),
        text(&w.host),
        text(&w.address),
        text(w.status.as_str()),
        text(&w.capabilities_json),
        json(&w.labels),
        ts(w.registered_at),
        ts(w.status_changed_at),
        text(&w.status_reason),
        opt_ts(w.drain.as_ref().map(|d| d.at)),
        opt_text(w.drain.as_ref().map(|d| d.reason.as_str())),
    ]
}

/// Requirements as stored in `tasks.requirements`.
#[derive(Serialize, Deserialize)]
pub(super) struct Requirements {
    pub(super) labels: BTreeMap<String, String>,
    pub(super) capabilities: Vec<String>,
}

/// [`Requirements`] borrowed from a task, written the same way.
#[derive(Serialize)]
struct RequirementsOf<'a> {
    labels: BTreeMap<&'a str, &'a str>,
    capabilities: Vec<&'a str>,
}

/// The values of a `tasks` row.
pub fn task_row(t: &Task) -> Vec<Value> {
    let spec = &t.spec;
    let requirements = RequirementsOf {
        labels: spec.labels().into_iter().collect(),
        capabilities: spec.capabilities(),
    };
    let mut row = vec![
        text(spec.id()),
        text(&t.job),
        int(t.seq),
        text(spec.name()),
        json(&spec.args()),
        json(&spec.env().into_iter().collect::<BTreeMap<&str, &str>>()),
        opt_text(spec.cwd()),
        uint(spec.timeout_ms),
        int(spec.priority),
        json(&requirements),
        int(spec.max_retries),
        int(spec.timeout_retries),
        int(spec.flaky_retries),
    ];
    let mut progress = task_progress(t).into_iter();
    row.extend(progress.by_ref().take(8));
    row.push(ts(t.submitted_at));
    row.extend(progress);
    row
}

/// The values of a `tasks_update` row: the task's `seq`, then the columns of its row that
/// change after submission ([`schema::TASK_PROGRESS_COLUMNS`](super::schema::TASK_PROGRESS_COLUMNS),
/// in that order). Everything else in a task's row (its spec, job, `seq`, `submitted_at`) is
/// fixed when it is submitted.
pub fn task_update_row(t: &Task) -> Vec<Value> {
    let mut row = vec![int(t.seq)];
    row.extend(task_progress(t));
    row
}

/// The columns of a task's row that change after submission, in the table's order.
fn task_progress(t: &Task) -> [Value; 11] {
    let holder = t.current.as_deref();
    [
        text(t.status.as_str()),
        int(t.attempt),
        opt_text(holder.map(|a| a.worker.as_str())),
        holder.map_or(Value::Null, |a| uint(a.term)),
        int(t.infra_retries_used),
        int(t.timeout_retries_used),
        int(t.flaky_retries_used),
        Value::Boolean(t.requeued),
        ts(t.updated_at),
        opt_ts(t.finished_at.get()),
        opt_text(t.reason.as_deref()),
    ]
}

/// The values of a `task_attempts` row.
pub fn attempt_row(task: &str, a: &Attempt) -> Vec<Value> {
    let (exit_code, signal) = super::exit::split(a.exit_code);
    vec![
        text(task),
        int(a.number),
        text(&a.worker),
        uint(a.term),
        ts(a.assigned_at),
        opt_ts(a.started_at),
        opt_ts(a.finished_at),
        opt_text(a.outcome.as_deref()),
        exit_code.map_or(Value::Null, int),
        a.duration_ms.map_or(Value::Null, uint),
        opt_text(a.output_tail.as_deref()),
        signal.map_or(Value::Null, int),
    ]
}

/// The history table a row goes to.
pub fn history_table(row: &HistoryRow) -> &'static str {
    match row {
        HistoryRow::LeaderTransition { .. } => "leader_transitions",
        HistoryRow::BreakerTransition { .. } => "breaker_transitions",
        HistoryRow::HealthSample { .. } => "health_samples",
        HistoryRow::WorkerRecovery { .. } => "worker_recovery_history",
        HistoryRow::TestResult { .. } => "test_results",
        HistoryRow::TaskRecovery { .. } => "task_recovery_history",
        HistoryRow::SystemRecovery { .. } => "system_recovery_history",
        HistoryRow::Bench { .. } => "bench_log",
        HistoryRow::StaleResult { .. } => "stale_results",
    }
}

/// The values of a history row.
pub fn history_values(row: &HistoryRow) -> Vec<Value> {
    let (table, values) = history_row(row);
    debug_assert_eq!(table, history_table(row));
    values
}

fn history_row(row: &HistoryRow) -> (&'static str, Vec<Value>) {
    match row {
        HistoryRow::LeaderTransition {
            id,
            term,
            leader,
            at,
        } => (
            "leader_transitions",
            vec![int(*id), uint(*term), uint(*leader), ts(*at)],
        ),
        HistoryRow::BreakerTransition {
            id,
            scope,
            from,
            to,
            reason,
            at,
        } => (
            "breaker_transitions",
            vec![
                int(*id),
                text(scope),
                text(from.as_str()),
                text(to.as_str()),
                text(reason),
                ts(*at),
            ],
        ),
        HistoryRow::HealthSample {
            id,
            node,
            cpu,
            mem_bytes,
            disk_free_bytes,
            net_errors,
            error_rate,
            at,
        } => (
            "health_samples",
            vec![
                int(*id),
                uint(*node),
                Value::Double(*cpu),
                uint(*mem_bytes),
                uint(*disk_free_bytes),
                uint(*net_errors),
                Value::Double(*error_rate),
                ts(*at),
            ],
        ),
        HistoryRow::WorkerRecovery {
            id,
            worker,
            at,
            attempt_number,
            success,
            recovery_type,
            error_message,
            details_json,
        } => (
            "worker_recovery_history",
            vec![
                int(*id),
                text(worker),
                ts(*at),
                int(*attempt_number),
                Value::Boolean(*success),
                text(recovery_type),
                opt_text(error_message.as_deref()),
                text(details_json),
            ],
        ),
        HistoryRow::TestResult {
            id,
            task,
            attempt,
            worker,
            at,
            test,
        } => (
            "test_results",
            vec![
                int(*id),
                text(task),
                int(*attempt),
                text(worker),
                text(&test.id),
                text(&test.classname),
                text(&test.name),
                text(test.outcome.as_str()),
                uint(test.duration_ms),
                text(&test.message),
                Value::Boolean(test.flaky),
                ts(*at),
            ],
        ),
        HistoryRow::TaskRecovery {
            id,
            task,
            worker,
            at,
            attempt_number,
            success,
            recovery_type,
            error_message,
            details_json,
        } => (
            "task_recovery_history",
            vec![
                int(*id),
                text(task),
                opt_text(worker.as_deref()),
                ts(*at),
                int(*attempt_number),
                Value::Boolean(*success),
                text(recovery_type),
                opt_text(error_message.as_deref()),
                text(details_json),
            ],
        ),
        HistoryRow::SystemRecovery {
            id,
            at,
            system_status,
            success,
            affected_workers,
            affected_tasks,
            details_json,
        } => (
            "system_recovery_history",
            vec![
                int(*id),
                ts(*at),
                text(system_status),
                Value::Boolean(*success),
                int(*affected_workers),
                int(*affected_tasks),
                text(details_json),
            ],
        ),
        HistoryRow::Bench {
            log_index,
            payload_bytes,
        } => ("bench_log", vec![uint(*log_index), uint(*payload_bytes)]),
        HistoryRow::StaleResult {
            id,
            task,
            attempt,
            worker,
            outcome,
            exit_code,
            reason,
            at,
        } => (
            "stale_results",
            vec![
                int(*id),
                text(task),
                int(*attempt),
                text(worker),
                text(outcome.as_str()),
                exit_code.map_or(Value::Null, int),
                text(reason),
                ts(*at),
            ],
        ),
    }
}
