//! Rebuilding the in-memory [`Machine`] from the DuckDB tables at start and after a
//! snapshot install.

use std::collections::BTreeMap;

use duckdb::Connection;

use super::command::{BreakerState, JobStatus, TaskSpec, TaskStatus, Timestamp, WorkerStatus};
use super::error::{Result, StoreError, db};
use super::machine::{
    Attempt, Counters, Machine, MachineParts, OperatorDrain, StoredSpec, Task, Worker,
};
use super::rows::Requirements;

fn parse<T>(what: &str, text: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
    parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown {what} {text:?}")))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Reads workers, jobs, tasks with their current attempt, breaker states, health sample ids
/// and the row-id counters.
pub fn load_machine(conn: &Connection) -> Result<Machine> {
    let mut parts = MachineParts::default();
    let ctx = "loading the state";

    let mut stmt = conn
        .prepare(
            "SELECT id, host, address, status, CAST(capabilities AS VARCHAR), \
             CAST(labels AS VARCHAR), epoch_us(registered_at), epoch_us(status_changed_at), \
             status_reason, epoch_us(drained_at), drain_reason FROM workers",
        )
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let status: String = r.get(3).map_err(db(ctx))?;
        let labels: String = r.get(5).map_err(db(ctx))?;
        parts.workers.push(Worker {
            id: r.get(0).map_err(db(ctx))?,
            host: r.get(1).map_err(db(ctx))?,
            address: r.get(2).map_err(db(ctx))?,
            status: parse("worker status", &status, WorkerStatus::parse)?,
            capabilities_json: r.get(4).map_err(db(ctx))?,
            labels: from_json("worker labels", &labels)?,
            registered_at: Timestamp(r.get(6).map_err(db(ctx))?),
            status_changed_at: Timestamp(r.get(7).map_err(db(ctx))?),
            status_reason: r.get(8).map_err(db(ctx))?,
            drain: match (
                r.get::<_, Option<i64>>(9).map_err(db(ctx))?,
                r.get::<_, Option<String>>(10).map_err(db(ctx))?,
            ) {
                (Some(at), Some(reason)) => Some(OperatorDrain {
                    at: Timestamp(at),
                    reason,
                }),
                _ => None,
            },
        });
    }

    let mut stmt = conn
        .prepare("SELECT id, name, status, epoch_us(submitted_at), epoch_us(finished_at) FROM jobs")
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let status: String = r.get(2).map_err(db(ctx))?;
        let finished: Option<i64> = r.get(4).map_err(db(ctx))?;
        parts.jobs.push((
            r.get(0).map_err(db(ctx))?,
            r.get(1).map_err(db(ctx))?,
            parse("job status", &status, JobStatus::parse)?,
            Timestamp(r.get(3).map_err(db(ctx))?),
            finished.map(Timestamp),
        ));
    }

    let mut attempts: BTreeMap<(String, u32), Attempt> = BTreeMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT a.task_id, a.attempt, a.worker_id, a.term, epoch_us(a.assigned_at), \
             epoch_us(a.started_at), epoch_us(a.finished_at), a.outcome, a.exit_code, \
             a.duration_ms, a.output_tail, a.signal FROM task_attempts a JOIN tasks t \
             ON a.task_id = t.id AND a.attempt = t.attempt",
        )
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let task: String = r.get(0).map_err(db(ctx))?;
        let number: i64 = r.get(1).map_err(db(ctx))?;
        let term: i64 = r.get(3).map_err(db(ctx))?;
        let duration: Option<i64> = r.get(9).map_err(db(ctx))?;
        let started: Option<i64> = r.get(5).map_err(db(ctx))?;
        let finished: Option<i64> = r.get(6).map_err(db(ctx))?;
        attempts.insert(
            (task, number as u32),
            Attempt {
                number: number as u32,
                worker: r.get(2).map_err(db(ctx))?,
                term: term as u64,
                assigned_at: Timestamp(r.get(4).map_err(db(ctx))?),
                started_at: started.map(Timestamp),
                finished_at: finished.map(Timestamp),
                outcome: r.get(7).map_err(db(ctx))?,
                exit_code: crate::state::exit::join(
                    r.get(8).map_err(db(ctx))?,
                    r.get(11).map_err(db(ctx))?,
                ),
                duration_ms: duration.map(|d| d as u64),
                output_tail: r.get(10).map_err(db(ctx))?,
            },
        );
    }

    let mut stmt = conn
        .prepare(
            "SELECT id, job_id, seq, name, CAST(command AS VARCHAR), CAST(env AS VARCHAR), cwd, \
             timeout_ms, priority, CAST(requirements AS VARCHAR), max_retries, timeout_retries, \
             flaky_retries, status, attempt, infra_retries_used, timeout_retries_used, \
             flaky_retries_used, requeued, epoch_us(submitted_at), epoch_us(updated_at), \
             epoch_us(finished_at), reason FROM tasks",
        )
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let id: String = r.get(0).map_err(db(ctx))?;
        let command: String = r.get(4).map_err(db(ctx))?;
        let env: String = r.get(5).map_err(db(ctx))?;
        let requirements: String = r.get(9).map_err(db(ctx))?;
        let requirements: Requirements = from_json("task requirements", &requirements)?;
        let status: String = r.get(13).map_err(db(ctx))?;
        let attempt: i64 = r.get(14).map_err(db(ctx))?;
        let timeout: i64 = r.get(7).map_err(db(ctx))?;
        let get_u32 = |i: usize| -> Result<u32> {
            let v: i64 = r.get(i).map_err(db(ctx))?;
            Ok(v as u32)
        };
        let get_u16 = |i: usize| -> Result<u16> {
            let v: i64 = r.get(i).map_err(db(ctx))?;
            Ok(u16::try_from(v).unwrap_or(u16::MAX))
        };
        let finished: Option<i64> = r.get(21).map_err(db(ctx))?;
        let current = attempts.remove(&(id.clone(), attempt as u32)).map(Box::new);
        let job: String = r.get(1).map_err(db(ctx))?;
        parts.tasks.push(Task {
            spec: StoredSpec::new(&TaskSpec {
                id: id.clone(),
                name: r.get(3).map_err(db(ctx))?,
                command: from_json("task command", &command)?,
                env: from_json("task env", &env)?,
                cwd: r.get(6).map_err(db(ctx))?,
                timeout_ms: timeout as u64,
                priority: r.get(8).map_err(db(ctx))?,
                labels: requirements.labels,
                capabilities: requirements.capabilities,
                max_retries: get_u32(10)?,
                timeout_retries: get_u32(11)?,
                flaky_retries: get_u32(12)?,
            }),
            job: job.into(),
            seq: r.get(2).map_err(db(ctx))?,
            status: parse("task status", &status, TaskStatus::parse)?,
            attempt: attempt as u32,
            current,
            infra_retries_used: get_u16(15)?,
            timeout_retries_used: get_u16(16)?,
            flaky_retries_used: get_u16(17)?,
            requeued: r.get(18).map_err(db(ctx))?,
            submitted_at: Timestamp(r.get(19).map_err(db(ctx))?),
            updated_at: Timestamp(r.get(20).map_err(db(ctx))?),
            finished_at: finished.map(Timestamp).into(),
            reason: (r.get::<_, Option<String>>(22).map_err(db(ctx))?).map(String::into_boxed_str),
        });
    }

    let mut stmt = conn
        .prepare(
            "SELECT scope, arg_max(to_state, id), epoch_us(arg_max(changed_at, id)) \
             FROM breaker_transitions GROUP BY scope",
        )
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let scope: String = r.get(0).map_err(db(ctx))?;
        let state: String = r.get(1).map_err(db(ctx))?;
        let since: i64 = r.get(2).map_err(db(ctx))?;
        parts.breakers.insert(
            scope,
            (
                parse("breaker state", &state, BreakerState::parse)?,
                Timestamp(since),
            ),
        );
    }

    let mut stmt = conn
        .prepare("SELECT node_id, id FROM health_samples ORDER BY id")
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let node: i64 = r.get(0).map_err(db(ctx))?;
        parts
            .health_ids
            .push((node as u64, r.get(1).map_err(db(ctx))?));
    }

    parts.counters = load_counters(conn)?;
    Ok(Machine::from_parts(parts))
}

fn load_counters(conn: &Connection) -> Result<Counters> {
    let ctx = "loading row-id counters";
    let max = |sql: &str| -> Result<i64> {
        conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .map(|v| v.unwrap_or(0))
            .map_err(db(ctx))
    };
    Ok(Counters {
        leader_transitions: max("SELECT max(id) FROM leader_transitions")?,
        breaker_transitions: max("SELECT max(id) FROM breaker_transitions")?,
        health_samples: max("SELECT max(id) FROM health_samples")?,
        worker_recovery: max("SELECT max(id) FROM worker_recovery_history")?,
        task_recovery: max("SELECT max(id) FROM task_recovery_history")?,
        system_recovery: max("SELECT max(id) FROM system_recovery_history")?,
        stale_results: max("SELECT max(id) FROM stale_results")?,
        test_results: max("SELECT max(id) FROM test_results")?,
        task_seq: max("SELECT max(seq) FROM tasks")?,
    })
}
