//! What a command may hold: the limits of every value the replicated state stores.
//!
//! # Why apply checks them
//!
//! Every node applies every committed entry, so a value the store cannot hold — a `u32` past
//! DuckDB's `INTEGER`, a timestamp DuckDB reads back as `infinity`, a string with a NUL in an
//! argv — would fail every replica at once, and again on every restart. The rule (toydb's
//! `is_deterministic`): a command is checked *in apply* against these limits, and a violation
//! is a deterministic [`Reply::Rejected`](super::view::Reply) that names the limit, counted
//! as applied and returned to the proposer. What remains for the store to fail on is then
//! only I/O, which stops the node instead of skipping the entry.
//!
//! The gRPC edge checks the same limits first ([`check_job`], [`check_worker_id`], ...), so a
//! client learns what was wrong (`InvalidArgument`, with the limit named) before anything is
//! proposed; apply re-checks because a log entry may come from anywhere (an older or newer
//! binary, a forwarded request, a bug).
//!
//! # Two kinds of field
//!
//! * **Identity and structure** (ids, names, argv, env, labels, JSON documents, numbers,
//!   timestamps) must be within limits, or the command is rejected.
//! * **Prose** (reasons, error messages, output tails) is clipped to its limit at a character
//!   boundary, in apply ([`normalize`]). A requeue must never be refused because the worker's
//!   name made its reason long; clipping is deterministic, so every replica stores the same text.
//!
//! # Sizes agree end to end
//!
//! A job is one log entry. Its tasks' text ([`task_bytes`]) is at most [`MAX_TASK_BYTES`] each
//! and [`MAX_JOB_BYTES`] together, with at most [`MAX_TASKS_PER_JOB`] tasks: far below the
//! Raft message limit ([`MAX_ENTRY_BYTES`] stays below it, checked in a test; replication
//! reads about a megabyte of entries per message, at least one). Larger suites are submitted
//! as several jobs.

use std::collections::BTreeMap;

use super::command::{Command, TaskSpec, Timestamp, WorkerStatus};

/// Bytes of a job or task id (a UUID is 36).
pub const MAX_ID_BYTES: usize = 128;
/// Bytes of a worker's name; only `A-Z a-z 0-9 . _ -` (a host name fits).
pub const MAX_WORKER_ID_BYTES: usize = 64;
/// Bytes of a job's or task's display name.
pub const MAX_NAME_BYTES: usize = 1024;
/// Bytes of a worker's host or address.
pub const MAX_HOST_BYTES: usize = 255;
/// Arguments of a task's command line.
pub const MAX_ARGS: usize = 4096;
/// Entries of a task's environment.
pub const MAX_ENV: usize = 4096;
/// Labels of a task or worker, and capability expressions of a task.
pub const MAX_LABELS: usize = 64;
/// Bytes of a label key or value, or of a capability expression.
pub const MAX_LABEL_BYTES: usize = 256;
/// Bytes of a JSON document (worker capabilities, recovery details).
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// Size of one task ([`task_bytes`]: its text and a little per string).
pub const MAX_TASK_BYTES: usize = 1024 * 1024;
/// Tasks in one job.
pub const MAX_TASKS_PER_JOB: usize = 100_000;
/// Size of a whole job's tasks ([`task_bytes`] summed).
pub const MAX_JOB_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of a benchmark command's payload.
pub const MAX_BENCH_PAYLOAD: usize = 1024 * 1024;
/// Commands in one `Batch` (which may not hold another `Batch`).
pub const MAX_BATCH: usize = 100_000;
/// The largest encoded log entry any command within these limits makes, with room to spare;
/// the Raft message limit is above it (checked in a test).
pub const MAX_ENTRY_BYTES: usize = 48 * 1024 * 1024;
/// Retries of each kind a task may have (`max_retries`, `timeout_retries`, `flaky_retries`).
pub const MAX_RETRIES: u32 = 100;
/// The highest attempt number a report may name: every attempt but the first is a retry.
pub const MAX_ATTEMPT: u32 = 3 * MAX_RETRIES + 1;
/// A task's timeout: 30 days.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;
/// The largest count stored in an `INTEGER` column (recovery attempt numbers, affected counts).
pub const MAX_COUNT: u32 = i32::MAX as u32;
/// The largest number stored in a `BIGINT` column (terms, node ids, byte counts).
pub const MAX_BIGINT: u64 = i64::MAX as u64;
/// The latest timestamp: 9999-12-31T23:59:59.999999Z. The earliest is the Unix epoch.
pub const MAX_TIMESTAMP_US: i64 = 253_402_300_799_999_999;
/// Bytes of a reason, error message or status text; longer text is clipped.
pub const MAX_REASON_BYTES: usize = 4 * 1024;
/// Bytes of an attempt's output tail; a longer one keeps its end.
pub const MAX_OUTPUT_TAIL_BYTES: usize = 64 * 1024;
/// Bytes of a short code (recovery type, system status, breaker scope).
pub const MAX_CODE_BYTES: usize = 128;
/// Tests one attempt may report (`FinishTaskWithTests`); a worker reports no more.
pub const MAX_TESTS_PER_ATTEMPT: usize = 20_000;
/// Bytes of a test's class or name.
pub const MAX_TEST_NAME_BYTES: usize = 1024;
/// Bytes of a test's failure message; a longer one keeps its start.
pub const MAX_TEST_MESSAGE_BYTES: usize = 1024;

/// Why a command is outside the limits.
pub type Violation = String;

fn check_len(what: &str, text: &str, max: usize) -> Result<(), Violation> {
    if text.len() > max {
        return Err(format!(
            "{what} is {} bytes, more than the limit of {max}",
            text.len()
        ));
    }
    Ok(())
}

fn check_id(what: &str, id: &str) -> Result<(), Violation> {
    if id.is_empty() {
        return Err(format!("{what} is empty"));
    }
    check_len(what, id, MAX_ID_BYTES)
}

fn check_no_nul(what: &str, text: &str) -> Result<(), Violation> {
    if text.contains('\0') {
        return Err(format!("{what} contains a NUL character"));
    }
    Ok(())
}

fn check_max<T: PartialOrd + std::fmt::Display>(
    what: &str,
    value: T,
    max: T,
) -> Result<(), Violation> {
    if value > max {
        return Err(format!("{what} is {value}, more than the limit of {max}"));
    }
    Ok(())
}

/// A timestamp DuckDB stores and reads back: from the Unix epoch to the end of year 9999.
pub fn check_timestamp(what: &str, at: Timestamp) -> Result<(), Violation> {
    if !(0..=MAX_TIMESTAMP_US).contains(&at.micros()) {
        return Err(format!(
            "{what} {} µs is outside the storable range (0 to {MAX_TIMESTAMP_US} µs since the \
             epoch)",
            at.micros()
        ));
    }
    Ok(())
}

/// A worker's name: 1 to [`MAX_WORKER_ID_BYTES`] bytes of `A-Z a-z 0-9 . _ -`.
pub fn check_worker_id(id: &str) -> Result<(), Violation> {
    if id.is_empty() {
        return Err("worker name is empty: give the worker a --name".to_string());
    }
    check_len("worker name", id, MAX_WORKER_ID_BYTES)?;
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "worker name {id:?} contains {bad:?}: use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn check_labels(what: &str, labels: &BTreeMap<String, String>) -> Result<(), Violation> {
    check_max(&format!("the number of {what}"), labels.len(), MAX_LABELS)?;
    for (key, value) in labels {
        if key.is_empty() {
            return Err(format!("a key of {what} is empty"));
        }
        check_len(&format!("{what} key {key:.32?}"), key, MAX_LABEL_BYTES)?;
        check_len(
            &format!("{what} value of {key:.32?}"),
            value,
            MAX_LABEL_BYTES,
        )?;
    }
    Ok(())
}

fn check_json_object(what: &str, text: &str, object: bool) -> Result<(), Violation> {
    check_len(what, text, MAX_JSON_BYTES)?;
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) if !object => Ok(()),
        Ok(_) => Err(format!("{what} must be a JSON object")),
        Err(e) => Err(format!("{what} is not valid JSON: {e}")),
    }
}

/// What one string costs in [`task_bytes`] beyond its text: at least its encoded length
/// prefix, so that a task of many empty strings is not free.
const PER_STRING: usize = 8;
/// What a task's fixed fields cost in [`task_bytes`] (numbers, tags, collection lengths).
const PER_TASK: usize = 64;

/// The size of a task as [`MAX_TASK_BYTES`] and [`MAX_JOB_BYTES`] count it: its text (id,
/// name, argv, env, cwd, labels, capabilities) plus `PER_STRING` bytes per string and
/// `PER_TASK` for the rest — never less than its encoded size in a log entry (tested), so
/// the job limit bounds the entry.
pub fn task_bytes(spec: &TaskSpec) -> usize {
    let text = |s: &String| s.len() + PER_STRING;
    let pair = |(k, v): (&String, &String)| text(k) + text(v);
    PER_TASK
        + text(&spec.id)
        + text(&spec.name)
        + spec.command.iter().map(text).sum::<usize>()
        + spec.env.iter().map(pair).sum::<usize>()
        + spec.cwd.as_ref().map_or(0, text)
        + spec.labels.iter().map(pair).sum::<usize>()
        + spec.capabilities.iter().map(text).sum::<usize>()
}

/// One task of a job: every field within its limit.
pub fn check_task(spec: &TaskSpec) -> Result<(), Violation> {
    check_id("task id", &spec.id)?;
    let id = &spec.id;
    check_len(
        &format!("the name of task {id}"),
        &spec.name,
        MAX_NAME_BYTES,
    )?;
    if spec.command.first().is_none_or(|p| p.is_empty()) {
        return Err(format!("task {id} has an empty command"));
    }
    check_max(
        &format!("the argument count of task {id}"),
        spec.command.len(),
        MAX_ARGS,
    )?;
    for arg in &spec.command {
        check_no_nul(&format!("an argument of task {id}"), arg)?;
    }
    check_max(
        &format!("the environment size of task {id}"),
        spec.env.len(),
        MAX_ENV,
    )?;
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') {
            return Err(format!(
                "task {id} has an environment variable named {key:.32?}: a name is not empty \
                 and has no '='"
            ));
        }
        check_no_nul(
            &format!("environment variable {key:.32?} of task {id}"),
            key,
        )?;
        check_no_nul(
            &format!("environment variable {key:.32?} of task {id}"),
            value,
        )?;
    }
    if let Some(cwd) = &spec.cwd {
        check_no_nul(&format!("the cwd of task {id}"), cwd)?;
    }
    check_labels(&format!("labels of task {id}"), &spec.labels)?;
    check_max(
        &format!("the number of capabilities of task {id}"),
        spec.capabilities.len(),
        MAX_LABELS,
    )?;
    for capability in &spec.capabilities {
        check_len(
            &format!("a capability of task {id}"),
            capability,
            MAX_LABEL_BYTES,
        )?;
    }
    if spec.timeout_ms == 0 {
        return Err(format!(
            "the timeout of task {id} is 0: give it more than zero"
        ));
    }
    check_max(
        &format!("the timeout (ms) of task {id}"),
        spec.timeout_ms,
        MAX_TIMEOUT_MS,
    )?;
    check_max(
        &format!("max_retries of task {id}"),
        spec.max_retries,
        MAX_RETRIES,
    )?;
    check_max(
        &format!("timeout_retries of task {id}"),
        spec.timeout_retries,
        MAX_RETRIES,
    )?;
    check_max(
        &format!("flaky_retries of task {id}"),
        spec.flaky_retries,
        MAX_RETRIES,
    )?;
    check_max(
        &format!("the size of task {id}"),
        task_bytes(spec),
        MAX_TASK_BYTES,
    )
}

/// A whole job: its id and name, the number and total size of its tasks, each task.
pub fn check_job(id: &str, name: &str, tasks: &[TaskSpec]) -> Result<(), Violation> {
    check_id("job id", id)?;
    check_len(&format!("the name of job {id}"), name, MAX_NAME_BYTES)?;
    if tasks.is_empty() {
        return Err(format!("job {id} has no tasks"));
    }
    check_max(
        &format!("the number of tasks of job {id}"),
        tasks.len(),
        MAX_TASKS_PER_JOB,
    )
    .map_err(|e| format!("{e}; split the suite into several jobs"))?;
    let mut total = 0usize;
    for spec in tasks {
        check_task(spec)?;
        total += task_bytes(spec);
    }
    check_max(&format!("the size of job {id}"), total, MAX_JOB_BYTES)
        .map_err(|e| format!("{e}; split the suite into several jobs"))
}

/// A worker's registration: name, host, address, capabilities, labels.
pub fn check_registration(
    worker: &str,
    host: &str,
    address: &str,
    capabilities_json: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Violation> {
    check_worker_id(worker)?;
    check_len("worker host", host, MAX_HOST_BYTES)?;
    check_len("worker address", address, MAX_HOST_BYTES)?;
    check_json_object("worker capabilities", capabilities_json, true)?;
    check_labels("worker labels", labels)
}

/// What a worker's and a task's recovery records have in common.
fn check_recovery_record(
    attempt_number: u32,
    recovery_type: &str,
    details_json: &str,
    at: Timestamp,
) -> Result<(), Violation> {
    check_max("the recovery attempt number", attempt_number, MAX_COUNT)?;
    check_len("the recovery type", recovery_type, MAX_CODE_BYTES)?;
    check_json_object("recovery details", details_json, false)?;
    check_timestamp("the recovery time", at)
}

/// Clips `text` to at most `max` bytes at a character boundary, keeping its start.
pub fn clip(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Clips `text` to at most `max` bytes at a character boundary, keeping its end.
fn clip_start(text: &mut String, max: usize) {
    if text.len() > max {
        let mut start = text.len() - max;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text.drain(..start);
    }
}

/// Clips the prose of `command` to its limits (see the module doc). Deterministic: apply
/// calls it on every replica before [`check`].
pub fn normalize(command: &mut Command) {
    match command {
        Command::SetWorkerStatus { reason, .. }
        | Command::RequeueTask { reason, .. }
        | Command::AbandonTask { reason, .. }
        | Command::CancelJob { reason, .. }
        | Command::CancelTask { reason, .. }
        | Command::BreakerTransition { reason, .. }
        | Command::FailWorker { reason, .. }
        | Command::LeaveWorker { reason, .. }
        | Command::DrainWorker { reason, .. }
        | Command::RemoveWorker { reason, .. }
        | Command::RecoverWorker { reason, .. }
        | Command::ResetWorker { reason, .. } => clip(reason, MAX_REASON_BYTES),
        Command::FinishTask { output_tail, .. } => clip_start(output_tail, MAX_OUTPUT_TAIL_BYTES),
        Command::FinishTaskWithTests {
            output_tail, tests, ..
        } => {
            clip_start(output_tail, MAX_OUTPUT_TAIL_BYTES);
            // Clipped, not refused: an overlong test name must not cost the attempt its result.
            for test in tests {
                clip(&mut test.classname, MAX_TEST_NAME_BYTES);
                clip(&mut test.name, MAX_TEST_NAME_BYTES);
                clip(&mut test.id, 2 * MAX_TEST_NAME_BYTES + 2);
                clip(&mut test.message, MAX_TEST_MESSAGE_BYTES);
            }
        }
        Command::RecordWorkerRecovery { error_message, .. }
        | Command::RecordTaskRecovery { error_message, .. } => {
            if let Some(message) = error_message {
                clip(message, MAX_REASON_BYTES);
            }
        }
        // A batch's items are normalised one by one as apply reaches them.
        _ => {}
    }
}

/// Checks `command` (after [`normalize`]) against every limit; a `Batch`'s items are checked
/// one by one by apply, so here only its shape is.
pub fn check(command: &Command) -> Result<(), Violation> {
    match command {
        Command::Noop => Ok(()),
        Command::Bench { payload } => check_max(
            "the bench payload (bytes)",
            payload.len(),
            MAX_BENCH_PAYLOAD,
        ),
        Command::LeaderElected { node, term, at } => {
            check_max("the node id", *node, MAX_BIGINT)?;
            check_max("the term", *term, MAX_BIGINT)?;
            check_timestamp("the election time", *at)
        }
        Command::RegisterWorker {
            worker,
            host,
            address,
            capabilities_json,
            labels,
            at,
        } => {
            check_registration(worker, host, address, capabilities_json, labels)?;
            check_timestamp("the registration time", *at)
        }
        Command::SetWorkerStatus { worker, at, .. } => {
            check_worker_id(worker)?;
            check_timestamp("the status change time", *at)
        }
        Command::SubmitJob {
            job,
            name,
            tasks,
            at,
        } => {
            check_job(job, name, tasks)?;
            check_timestamp("the submission time", *at)
        }
        Command::AssignTasks {
            term,
            at,
            assignments,
        } => {
            check_max("the term", *term, MAX_BIGINT)?;
            check_timestamp("the assignment time", *at)?;
            check_max("the number of assignments", assignments.len(), MAX_BATCH)?;
            for a in assignments {
                check_id("task id", &a.task)?;
                check_worker_id(&a.worker)?;
                check_max("the attempt number", a.attempt, MAX_ATTEMPT)?;
            }
            Ok(())
        }
        Command::TaskStarted {
            task,
            attempt,
            worker,
            at,
        } => {
            check_id("task id", task)?;
            check_worker_id(worker)?;
            check_max("the attempt number", *attempt, MAX_ATTEMPT)?;
            check_timestamp("the start time", *at)
        }
        Command::FinishTask {
            task,
            attempt,
            worker,
            exit_code,
            duration_ms,
            at,
            ..
        } => {
            check_id("task id", task)?;
            check_worker_id(worker)?;
            check_max("the attempt number", *attempt, MAX_ATTEMPT)?;
            super::exit::check(*exit_code)?;
            check_max("the duration (ms)", *duration_ms, MAX_BIGINT)?;
            check_timestamp("the finish time", *at)
        }
        Command::FinishTaskWithTests {
            task,
            attempt,
            worker,
            exit_code,
            duration_ms,
            at,
            tests,
            ..
        } => {
            check_id("task id", task)?;
            check_worker_id(worker)?;
            check_max("the attempt number", *attempt, MAX_ATTEMPT)?;
            super::exit::check(*exit_code)?;
            check_max("the duration (ms)", *duration_ms, MAX_BIGINT)?;
            check_timestamp("the finish time", *at)?;
            check_max("the number of tests", tests.len(), MAX_TESTS_PER_ATTEMPT)?;
            for test in tests {
                check_max("a test's duration (ms)", test.duration_ms, MAX_BIGINT)?;
            }
            Ok(())
        }
        Command::RequeueTask {
            task, attempt, at, ..
        } => {
            check_id("task id", task)?;
            check_max("the attempt number", *attempt, MAX_ATTEMPT)?;
            check_timestamp("the requeue time", *at)
        }
        Command::AbandonTask { task, at, .. } | Command::CancelTask { task, at, .. } => {
            check_id("task id", task)?;
            check_timestamp("the time", *at)
        }
        Command::CancelJob { job, at, .. } => {
            check_id("job id", job)?;
            check_timestamp("the cancel time", *at)
        }
        Command::RecordWorkerRecovery {
            worker,
            attempt_number,
            recovery_type,
            details_json,
            at,
            ..
        } => {
            check_worker_id(worker)?;
            check_recovery_record(*attempt_number, recovery_type, details_json, *at)
        }
        Command::RecordTaskRecovery {
            task,
            worker,
            attempt_number,
            recovery_type,
            details_json,
            at,
            ..
        } => {
            check_id("task id", task)?;
            if let Some(worker) = worker {
                check_worker_id(worker)?;
            }
            check_recovery_record(*attempt_number, recovery_type, details_json, *at)
        }
        Command::RecordSystemRecovery {
            system_status,
            affected_workers,
            affected_tasks,
            details_json,
            at,
            ..
        } => {
            check_len("the system status", system_status, MAX_CODE_BYTES)?;
            check_max("the affected worker count", *affected_workers, MAX_COUNT)?;
            check_max("the affected task count", *affected_tasks, MAX_COUNT)?;
            check_json_object("recovery details", details_json, false)?;
            check_timestamp("the recovery time", *at)
        }
        Command::BreakerTransition { scope, at, .. } => {
            let worker = scope.strip_prefix(super::command::WORKER_SCOPE);
            if scope != super::command::SYSTEM_SCOPE && worker.is_none_or(str::is_empty) {
                return Err(format!(
                    "breaker scope {scope:?} is neither `system` nor `worker:<worker id>`"
                ));
            }
            check_len("the breaker scope", scope, MAX_CODE_BYTES)?;
            check_timestamp("the transition time", *at)
        }
        Command::HealthSample {
            node,
            cpu,
            mem_bytes,
            disk_free_bytes,
            net_errors,
            error_rate,
            at,
        } => {
            if !cpu.is_finite() || !error_rate.is_finite() {
                return Err("health sample has a non-finite cpu or error rate".to_string());
            }
            check_max("the node id", *node, MAX_BIGINT)?;
            check_max("mem_bytes", *mem_bytes, MAX_BIGINT)?;
            check_max("disk_free_bytes", *disk_free_bytes, MAX_BIGINT)?;
            check_max("net_errors", *net_errors, MAX_BIGINT)?;
            check_timestamp("the sample time", *at)
        }
        Command::FailWorker {
            worker,
            details_json,
            at,
            ..
        } => {
            check_worker_id(worker)?;
            check_json_object("failure details", details_json, true)?;
            check_timestamp("the failure time", *at)
        }
        Command::CheckReplicas { id, at } => {
            check_id("replica check id", id)?;
            check_timestamp("the check time", *at)
        }
        Command::LeaveWorker { worker, at, .. } => {
            check_worker_id(worker)?;
            check_timestamp("the departure time", *at)
        }
        Command::DrainWorker { worker, at, .. } => {
            check_worker_id(worker)?;
            check_timestamp("the drain time", *at)
        }
        Command::RemoveWorker { worker, at, .. } => {
            check_worker_id(worker)?;
            check_timestamp("the removal time", *at)
        }
        Command::RecoverWorker {
            worker, level, at, ..
        } => {
            check_worker_id(worker)?;
            if !matches!(level.as_str(), "low" | "medium" | "high") {
                let shown: String = level.chars().take(32).collect();
                return Err(format!(
                    "recovery level {shown:?} is not low, medium or high"
                ));
            }
            check_timestamp("the recovery request time", *at)
        }
        Command::ResetWorker { worker, to, at, .. } => {
            check_worker_id(worker)?;
            if !matches!(to, WorkerStatus::Healthy | WorkerStatus::Failed) {
                return Err(format!(
                    "a reset makes a worker healthy or failed, not {to}"
                ));
            }
            check_timestamp("the reset time", *at)
        }
        Command::Batch(items) => {
            check_max("the number of commands in a batch", items.len(), MAX_BATCH)?;
            if items.iter().any(|c| matches!(c, Command::Batch(_))) {
                return Err("a batch may not contain another batch".to_string());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
