//! Rows of the replicated tables as DuckDB values, built from the in-memory view.
//!
//! [`RowBatch::collect`] turns a set of [`Changes`] into the rows to upsert, append and
//! delete, reading the current rows from the [`Machine`]. It runs under the state machine's
//! lock and only copies memory; [`super::store::Store::write`] then writes the batch to DuckDB
//! without holding that lock.

use std::collections::BTreeMap;

use duckdb::types::{TimeUnit, Value};
use serde::{Deserialize, Serialize};

use super::command::Timestamp;
use super::machine::{Attempt, Changes, HistoryRow, Machine, Task, Worker};

/// The rows one flush writes, grouped by table.
#[derive(Debug, Default)]
pub struct RowBatch {
    /// Rows to insert or replace by key, per upserted table.
    pub upserts: Vec<(&'static str, Vec<Vec<Value>>)>,
    /// Rows to append, per history table.
    pub appends: BTreeMap<&'static str, Vec<Vec<Value>>>,
    /// Ids of health samples past the retention limit.
    pub deleted_health_samples: Vec<i64>,
}

impl RowBatch {
    /// The rows named by `changes`, as they are now in `machine`.
    pub fn collect(machine: &Machine, changes: &Changes) -> RowBatch {
        let workers = changes
            .workers
            .iter()
            .filter_map(|id| machine.worker(id))
            .map(worker_row)
            .collect();
        let jobs = changes
            .jobs
            .iter()
            .filter_map(|id| machine.job(id))
            .map(|j| {
                vec![
                    text(&j.id),
                    text(&j.name),
                    text(j.status.as_str()),
                    ts(j.submitted_at),
                    opt_ts(j.finished_at),
                    int(j.tasks.len() as i64),
                    int(j.open_tasks),
                ]
            })
            .collect();
        let tasks = changes
            .tasks
            .iter()
            .filter_map(|id| machine.task(id))
            .map(task_row)
            .collect();
        let attempts = changes
            .attempts
            .iter()
            .map(|((task, _), attempt)| attempt_row(task, attempt))
            .collect();
        let mut appends: BTreeMap<&'static str, Vec<Vec<Value>>> = BTreeMap::new();
        for row in &changes.history {
            let (table, values) = history_row(row);
            appends.entry(table).or_default().push(values);
        }
        RowBatch {
            upserts: vec![
                ("workers", workers),
                ("jobs", jobs),
                ("tasks", tasks),
                ("task_attempts", attempts),
            ],
            appends,
            deleted_health_samples: changes.deleted_health_samples.clone(),
        }
    }
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

fn worker_row(w: &Worker) -> Vec<Value> {
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

fn task_row(t: &Task) -> Vec<Value> {
    let requirements = Requirements {
        labels: t.spec.labels.clone(),
        capabilities: t.spec.capabilities.clone(),
    };
    let holder = t.current.as_ref();
    vec![
        text(&t.spec.id),
        text(&t.job),
        int(t.seq),
        text(&t.spec.name),
        json(&t.spec.command),
        json(&t.spec.env),
        opt_text(t.spec.cwd.as_deref()),
        uint(t.spec.timeout_ms),
        int(t.spec.priority),
        json(&requirements),
        int(t.spec.max_retries),
        int(t.spec.timeout_retries),
        int(t.spec.flaky_retries),
        text(t.status.as_str()),
        int(t.attempt),
        opt_text(holder.map(|a| a.worker.as_str())),
        holder.map_or(Value::Null, |a| uint(a.term)),
        int(t.infra_retries_used),
        int(t.timeout_retries_used),
        int(t.flaky_retries_used),
        Value::Boolean(t.requeued),
        ts(t.submitted_at),
        ts(t.updated_at),
        opt_ts(t.finished_at),
        opt_text(t.reason.as_deref()),
    ]
}

fn attempt_row(task: &str, a: &Attempt) -> Vec<Value> {
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
