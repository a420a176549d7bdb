//! `/livez` and `/readyz`: what a load balancer or an orchestrator asks before sending work.
//!
//! `/livez` answers whenever the process serves requests. `/readyz` runs three checks —
//! `raft` (this node knows a leader, or is it), `duckdb` (a read connection opens and answers
//! `SELECT 1`), `serving` (the node is not shutting down) — and answers 200 when all pass,
//! 503 otherwise; `?verbose` lists each check as Kubernetes' API server does (`[+]raft ok`,
//! `[-]duckdb failed: …`).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::Http;

pub async fn livez() -> &'static str {
    "ok\n"
}

/// `?verbose` (any value).
#[derive(serde::Deserialize)]
pub struct Verbose {
    verbose: Option<String>,
}

/// One check's name and failure, if it failed.
pub type Check = (&'static str, Option<String>);

/// Runs the readiness checks of `http`'s node.
pub async fn checks(http: &Http) -> Vec<Check> {
    let metrics = http.node.metrics();
    let raft = match metrics.current_leader {
        Some(_) => None,
        None => Some(format!(
            "no leader known in term {} (an election may be under way)",
            metrics.current_term
        )),
    };
    let state = http.node.state().clone();
    let duckdb = tokio::task::spawn_blocking(move || {
        let reader = state.reader().map_err(|e| e.to_string())?;
        reader
            .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .err();
    let serving = http
        .node
        .is_draining()
        .then(|| "the node is shutting down".to_string());
    vec![("raft", raft), ("duckdb", duckdb), ("serving", serving)]
}

pub async fn readyz(State(http): State<Http>, Query(q): Query<Verbose>) -> impl IntoResponse {
    let checks = checks(&http).await;
    let ready = checks.iter().all(|(_, failure)| failure.is_none());
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = if q.verbose.is_some() {
        let mut text: String = checks
            .iter()
            .map(|(name, failure)| match failure {
                None => format!("[+]{name} ok\n"),
                Some(why) => format!("[-]{name} failed: {why}\n"),
            })
            .collect();
        text.push_str(if ready {
            "readyz check passed\n"
        } else {
            "readyz check failed\n"
        });
        text
    } else if ready {
        "ok\n".to_string()
    } else {
        let failed: Vec<String> = checks
            .iter()
            .filter_map(|(name, f)| f.as_ref().map(|why| format!("{name}: {why}")))
            .collect();
        format!("not ready: {}\n", failed.join("; "))
    };
    (code, body)
}
