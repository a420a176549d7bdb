//! `/api/...`: JSON mirrors of the CLI's reads, answered from this node's own state.
//!
//! | path | what |
//! |---|---|
//! | `/api/status` | this node: id, role, term, leader, log positions, members (as `testfleet status`) |
//! | `/api/workers` | every worker: status, breaker, labels, capabilities (parsed), last change |
//! | `/api/jobs[?limit=N]` | the newest jobs with their task counts by status |
//! | `/api/tasks[?job=ID][&limit=N]` | the newest tasks (of one job), with their last attempt's worker |
//! | `/api/recovery[?limit=N]` | the newest worker, task and system recovery records |
//!
//! Lists are newest first and cut at `limit` (default 100, at most 10,000); each reply is an
//! object with the rows under `rows`, the answering `node` and its `applied` log index, so a
//! reader can tell a follower's copy from the leader's. The SQL is fixed here; the only input
//! that reaches it, a job id, is checked to be an id first.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Http;
use crate::coordinator::Coordinator;

/// The most rows one list returns.
const MAX_LIMIT: u32 = 10_000;
const DEFAULT_LIMIT: u32 = 100;

/// `?limit=N&job=ID`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
    job: Option<String>,
}

impl ListQuery {
    fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// This node's status, as `testfleet status` shows it (`control::node_status`), with which
/// member leads and whether the node is shutting down.
pub fn status_json(node: &Coordinator) -> Value {
    let status = crate::coordinator::control::node_status(node);
    let members: Vec<Value> = (status.members.iter())
        .map(|m| {
            json!({
                "id": m.id,
                "addr": m.addr,
                "voter": m.voter,
                "leader": status.leader_id == Some(m.id),
            })
        })
        .collect();
    json!({
        "node_id": status.node_id,
        "role": status.role,
        "term": status.term,
        "leader_id": status.leader_id,
        "last_applied": status.last_applied,
        "committed": status.committed,
        "last_log_index": status.last_log_index,
        "purged_index": status.purged_index,
        "members": members,
        "draining": node.is_draining(),
        "version": status.version,
    })
}

pub async fn status(State(http): State<Http>) -> Json<Value> {
    Json(status_json(&http.node))
}

/// Runs `sql` on this node's DuckDB (after writing out what it applied) and wraps the rows.
async fn rows(node: &std::sync::Arc<Coordinator>, sql: String) -> Response {
    let node = node.clone();
    let result = tokio::task::spawn_blocking(move || {
        node.state().flush().map_err(|e| e.to_string())?;
        let applied = node.state().last_applied_index().unwrap_or(0);
        let reader = node.state().reader().map_err(|e| e.to_string())?;
        let result = crate::query::run_query(&reader, &sql).map_err(|e| e.to_string())?;
        let rows: Vec<Value> = result
            .rows
            .into_iter()
            .map(|row| {
                Value::Object(
                    result
                        .columns
                        .iter()
                        .cloned()
                        .zip(row)
                        .collect::<serde_json::Map<_, _>>(),
                )
            })
            .collect();
        Ok::<_, String>(json!({ "node": node.node_id(), "applied": applied, "rows": rows }))
    })
    .await;
    match result {
        Ok(Ok(body)) => Json(body).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

pub async fn workers(State(http): State<Http>) -> Response {
    let sql = crate::cli::reads::workers_sql(true);
    rows(&http.node, sql).await
}

pub async fn jobs(State(http): State<Http>, Query(q): Query<ListQuery>) -> Response {
    let sql = format!(
        "SELECT j.id, j.name, j.status, j.submitted_at, j.finished_at, count(t.id) AS tasks, \
         count(t.id) FILTER (WHERE t.status = 'passed') AS passed, \
         count(t.id) FILTER (WHERE t.status IN ('failed', 'timed_out', 'error', 'abandoned')) AS failed, \
         count(t.id) FILTER (WHERE t.status IN ('queued', 'assigned', 'running')) AS open \
         FROM jobs j LEFT JOIN tasks t ON t.job_id = j.id GROUP BY ALL \
         ORDER BY j.submitted_at DESC LIMIT {}",
        q.limit()
    );
    rows(&http.node, sql).await
}

pub async fn tasks(State(http): State<Http>, Query(q): Query<ListQuery>) -> Response {
    let filter = match &q.job {
        Some(job) => {
            if crate::cli::reads::check_id(job).is_err() {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({ "error": format!("{job:?} is not a job id: ids are letters, digits, '-' and '_'") })),
                )
                    .into_response();
            }
            format!("WHERE t.job_id = '{job}' ")
        }
        None => String::new(),
    };
    let sql = format!(
        "SELECT t.id, t.job_id, t.name, t.status, t.attempt, a.worker_id, a.exit_code, \
         t.submitted_at, t.finished_at FROM tasks t LEFT JOIN task_attempts a \
         ON a.task_id = t.id AND a.attempt = t.attempt {filter}\
         ORDER BY t.submitted_at DESC LIMIT {}",
        q.limit()
    );
    rows(&http.node, sql).await
}

pub async fn recovery(State(http): State<Http>, Query(q): Query<ListQuery>) -> Response {
    let sql = format!(
        "SELECT * FROM (\
         SELECT 'worker' AS scope, worker_id AS subject, recovery_time AS recorded_at, recovery_type AS kind, \
         success, attempt_number AS attempt, error_message AS error FROM worker_recovery_history \
         UNION ALL SELECT 'task', task_id, recovery_time, recovery_type, success, attempt_number, \
         error_message FROM task_recovery_history \
         UNION ALL SELECT 'system', NULL, recovery_time, system_status, success, NULL, NULL \
         FROM system_recovery_history) ORDER BY recorded_at DESC LIMIT {}",
        q.limit()
    );
    rows(&http.node, sql).await
}
