//! `/metrics`: the node's state in Prometheus' text format, built with `prometheus-client` (the
//! Prometheus project's own Rust client) at each scrape.
//!
//! Almost everything is read at scrape time from what this node already holds — Raft's
//! metrics, the applied state machine (workers, tasks, jobs, breakers), and a few aggregates
//! of its DuckDB (recovery history, leader transitions, the latest health sample per
//! coordinator) — so a scrape costs one pass over the state and four small queries, and
//! nothing is counted twice across leader changes: every node reports the same replicated
//! counts. Two things are this node's own: the commit latency of the commands it proposed
//! ([`CommitLatency`], observed where the leader proposes) and, on the leader, the age of
//! each worker's last heartbeat.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `testfleet_raft_term` | | the current term |
//! | `testfleet_raft_is_leader` | | 1 on the leader |
//! | `testfleet_raft_last_applied_index`, `testfleet_raft_committed_index`, `testfleet_raft_last_log_index`, `testfleet_raft_purged_index` | | log positions (purged: the last entry dropped behind a snapshot) |
//! | `testfleet_raft_members` | `voter` | cluster members |
//! | `testfleet_leader_changes_total` | | rows of `leader_transitions` |
//! | `testfleet_workers` | `status` | workers by status |
//! | `testfleet_tasks` | `status` | tasks by status |
//! | `testfleet_queue_depth` | | tasks queued |
//! | `testfleet_jobs` | `status` | jobs by status |
//! | `testfleet_breaker_state` | `scope`, `state` | 1 for each breaker's state |
//! | `testfleet_recovery_attempts_total` | `scope` (`worker`, `task`, `system`), `kind`, `outcome` | recovery history |
//! | `testfleet_health_cpu_cores`, `testfleet_health_memory_bytes` | `node` | each coordinator's latest health sample |
//! | `testfleet_worker_heartbeat_age_seconds` | `worker` | on the leader: since each session was last heard from |
//! | `testfleet_commit_latency_seconds` | | histogram: propose → committed and applied, on this node |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Http;
use crate::coordinator::Coordinator;
use crate::state::command::{JobStatus, TaskStatus, WorkerStatus};

/// Commit latency of this node's proposals, in seconds: 0.5 ms to ~16 s in doubling buckets.
#[derive(Clone, Debug)]
pub struct CommitLatency(Histogram);

impl Default for CommitLatency {
    fn default() -> Self {
        CommitLatency(Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
        ))
    }
}

impl CommitLatency {
    /// Records one proposal that took `elapsed` to commit and apply.
    pub fn observe(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }
}

type Labels = Vec<(&'static str, String)>;

/// A gauge family filled from `(labels, value)` pairs.
fn gauges(
    values: impl IntoIterator<Item = (Labels, f64)>,
) -> Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> {
    let family = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
    family
}

fn gauge(value: f64) -> Gauge<f64, std::sync::atomic::AtomicU64> {
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(value);
    g
}

/// What the node's DuckDB adds: recovery attempts by (scope, kind, outcome), leader changes,
/// and each coordinator's latest (cpu, memory).
#[derive(Debug, Default)]
pub struct Aggregates {
    recovery: Vec<(String, String, String, u64)>,
    leader_changes: u64,
    health: Vec<(u64, f64, f64)>,
}

fn aggregates(node: &Coordinator) -> Result<Aggregates, String> {
    let reader = node.state().reader().map_err(|e| e.to_string())?;
    let mut out = Aggregates::default();
    let sql = "SELECT 'worker', recovery_type, success, count(*) FROM worker_recovery_history GROUP BY ALL \
         UNION ALL SELECT 'task', recovery_type, success, count(*) FROM task_recovery_history GROUP BY ALL \
         UNION ALL SELECT 'system', system_status, success, count(*) FROM system_recovery_history GROUP BY ALL";
    let mut stmt = reader.prepare(sql).map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                r.get::<_, Option<bool>>(2)?.unwrap_or(false),
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(|e| e.to_string())?;
    for row in rows {
        let (scope, kind, success, n) = row.map_err(|e| e.to_string())?;
        let outcome = if success { "success" } else { "failure" };
        out.recovery
            .push((scope, kind, outcome.to_string(), n.max(0) as u64));
    }
    out.leader_changes = reader
        .query_row("SELECT count(*) FROM leader_transitions", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| e.to_string())?
        .max(0) as u64;
    let mut stmt = reader
        .prepare(
            "SELECT node_id, arg_max(cpu, id), arg_max(mem_bytes, id) FROM health_samples \
             GROUP BY node_id ORDER BY node_id",
        )
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(|e| e.to_string())?;
    for row in rows {
        let (id, cpu, mem) = row.map_err(|e| e.to_string())?;
        out.health.push((id.max(0) as u64, cpu, mem as f64));
    }
    Ok(out)
}

/// The whole exposition of `node`, in Prometheus' (OpenMetrics) text format.
pub fn render(node: &Coordinator, aggregates: Option<&Aggregates>) -> Result<String, String> {
    let mut registry = Registry::with_prefix("testfleet");
    let metrics = node.metrics();
    registry.register(
        "raft_term",
        "The current Raft term",
        gauge(metrics.current_term as f64),
    );
    let leader = metrics.current_leader == Some(metrics.id);
    registry.register(
        "raft_is_leader",
        "1 when this node is the leader",
        gauge(if leader { 1.0 } else { 0.0 }),
    );
    let index = |l: Option<u64>| l.map_or(0.0, |i| i as f64);
    registry.register(
        "raft_last_applied_index",
        "Index of the last entry applied to the state machine",
        gauge(index(metrics.last_applied.as_ref().map(|l| l.index))),
    );
    registry.register(
        "raft_committed_index",
        "Index of the last entry known committed",
        gauge(index(metrics.local_committed.as_ref().map(|l| l.index))),
    );
    registry.register(
        "raft_last_log_index",
        "Index of the last entry in the log",
        gauge(index(metrics.last_log_index)),
    );
    registry.register(
        "raft_purged_index",
        "Index of the last entry purged from the log behind a snapshot (0 before the first purge)",
        gauge(index(metrics.purged.as_ref().map(|l| l.index))),
    );
    let membership = metrics.membership_config.membership();
    let voters = membership.voter_ids().count();
    let members = membership.nodes().count();
    registry.register(
        "raft_members",
        "Cluster members, voters and learners",
        gauges([
            (vec![("voter", "true".to_string())], voters as f64),
            (
                vec![("voter", "false".to_string())],
                members.saturating_sub(voters) as f64,
            ),
        ]),
    );

    let (workers, tasks, jobs, breakers) = node.state().with_machine(|m| {
        let mut workers: BTreeMap<&'static str, u64> =
            WorkerStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for w in m.workers().values() {
            *workers.entry(w.status.as_str()).or_default() += 1;
        }
        let mut tasks: BTreeMap<&'static str, u64> =
            TaskStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for t in m.tasks().values() {
            *tasks.entry(t.status.as_str()).or_default() += 1;
        }
        let mut jobs: BTreeMap<&'static str, u64> =
            JobStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for j in m.jobs().values() {
            *jobs.entry(j.status.as_str()).or_default() += 1;
        }
        let breakers: Vec<(String, &'static str)> = (m.breakers().iter())
            .map(|(scope, (state, _))| (scope.clone(), state.as_str()))
            .collect();
        (workers, tasks, jobs, breakers)
    });
    let queued = tasks.get(TaskStatus::Queued.as_str()).copied().unwrap_or(0);
    let by_status = |counts: BTreeMap<&'static str, u64>| {
        gauges(
            counts
                .into_iter()
                .map(|(s, n)| (vec![("status", s.to_string())], n as f64)),
        )
    };
    registry.register("workers", "Workers by status", by_status(workers));
    registry.register("tasks", "Tasks by status", by_status(tasks));
    registry.register("jobs", "Jobs by status", by_status(jobs));
    registry.register(
        "queue_depth",
        "Tasks waiting to be assigned",
        gauge(queued as f64),
    );
    registry.register(
        "breaker_state",
        "1 for each circuit breaker's current state",
        gauges(
            breakers
                .into_iter()
                .map(|(scope, state)| (vec![("scope", scope), ("state", state.to_string())], 1.0)),
        ),
    );

    if let Some(agg) = aggregates {
        let attempts = Family::<Labels, Counter>::default();
        for (scope, kind, outcome, n) in &agg.recovery {
            let labels = vec![
                ("scope", scope.clone()),
                ("kind", kind.clone()),
                ("outcome", outcome.clone()),
            ];
            attempts.get_or_create(&labels).inc_by(*n);
        }
        registry.register(
            "recovery_attempts",
            "Recovery attempts recorded, by scope, kind and outcome",
            attempts,
        );
        let changes = Counter::<u64>::default();
        changes.inc_by(agg.leader_changes);
        registry.register("leader_changes", "Leader elections recorded", changes);
        let node_label = |id: u64| vec![("node", id.to_string())];
        registry.register(
            "health_cpu_cores",
            "Each coordinator's CPU use in its latest health sample, in cores",
            gauges(
                agg.health
                    .iter()
                    .map(|(id, cpu, _)| (node_label(*id), *cpu)),
            ),
        );
        registry.register(
            "health_memory_bytes",
            "Each coordinator's resident memory in its latest health sample",
            gauges(
                agg.health
                    .iter()
                    .map(|(id, _, mem)| (node_label(*id), *mem)),
            ),
        );
    }
    if let Some(leadership) = node.leadership() {
        registry.register(
            "worker_heartbeat_age_seconds",
            "Seconds since each connected worker was last heard from (on the leader)",
            gauges(
                leadership
                    .heartbeat_ages()
                    .into_iter()
                    .map(|(worker, age)| (vec![("worker", worker)], age.as_secs_f64())),
            ),
        );
    }
    registry.register(
        "commit_latency_seconds",
        "Time from proposing a command on this node to its commit and apply",
        node.commit_latency.0.clone(),
    );
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| e.to_string())?;
    Ok(text)
}

pub async fn scrape(State(http): State<Http>) -> Response {
    let node: Arc<Coordinator> = http.node.clone();
    let result = tokio::task::spawn_blocking(move || {
        let aggregates = aggregates(&node);
        if let Err(e) = &aggregates {
            tracing::warn!("metrics: cannot read DuckDB aggregates: {e}");
        }
        render(&node, aggregates.as_ref().ok())
    })
    .await;
    match result {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
