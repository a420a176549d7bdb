//! `testfleet bench recovery`: worker death → tasks requeued → tasks finished elsewhere.
//!
//! A local cluster of coordinator processes and worker processes runs rounds of a job that
//! keeps every slot busy with `sleep` tasks. Each round SIGKILLs one worker while it runs
//! tasks, and measures for each of its tasks, from the kill (one machine, one clock):
//! * `requeued`: until the leader committed the requeue (`task_recovery_history`);
//! * `finished`: until the task's final result, from another worker.
//!
//! The killed worker is restarted before the next round. Every task must pass: a task that
//! does not is counted as lost.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::Remote;
use crate::cli::{CliError, Output, table, unavailable};
use crate::demo::Latency;
use crate::demo::launch::{LocalCluster, LocalWorkers};
use crate::state::command::{TaskSpec, Timestamp};

/// A consistent read through the leader.
async fn query(remote: &Remote, sql: &str) -> Result<Vec<Vec<serde_json::Value>>, CliError> {
    crate::cli::query_rows(remote, sql, true).await
}

/// Settings of the recovery benchmark.
#[derive(Clone, Debug)]
pub struct RecoverySettings {
    pub nodes: u64,
    pub workers: usize,
    pub slots: u32,
    pub kills: usize,
    pub heartbeat_ms: u64,
    pub failure_timeout_ms: u64,
    pub task_seconds: f64,
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `testfleet bench recovery`.
#[derive(Clone, Debug, clap::Args)]
pub struct RecoveryArgs {
    /// Coordinator processes to start
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Worker processes to start
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Slots per worker
    #[arg(long, default_value_t = 2)]
    pub slots: u32,
    /// Worker kills to measure
    #[arg(long, default_value_t = 50)]
    pub kills: usize,
    /// Detection profile: default (heartbeat 1 s, failure 5 s) or tuned (100 ms, 500 ms)
    #[arg(long, default_value = "default", value_parser = ["default", "tuned"])]
    pub profile: String,
    /// Seconds each task sleeps
    #[arg(long, default_value_t = 1.0)]
    pub task_seconds: f64,
    /// Directory for the processes' files (default: a temporary directory)
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl RecoveryArgs {
    pub fn settings(&self) -> RecoverySettings {
        let (heartbeat_ms, failure_timeout_ms) = if self.profile == "tuned" {
            (100, 500)
        } else {
            (1000, 5000)
        };
        RecoverySettings {
            nodes: self.nodes,
            workers: self.workers,
            slots: self.slots,
            kills: self.kills,
            heartbeat_ms,
            failure_timeout_ms,
            task_seconds: self.task_seconds,
            data_dir: self.data_dir.clone(),
        }
    }
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryReport {
    pub nodes: u64,
    pub workers: usize,
    pub kills: usize,
    pub heartbeat_ms: u64,
    pub failure_timeout_ms: u64,
    pub task_seconds: f64,
    pub tasks_submitted: usize,
    pub tasks_passed: usize,
    pub tasks_lost: usize,
    pub preserved_ratio: f64,
    pub requeued: Latency,
    pub finished_elsewhere: Latency,
}

async fn poll<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> Result<T, CliError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, CliError>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(unavailable(format!("timed out waiting for {what}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the benchmark.
pub async fn run(s: &RecoverySettings) -> Result<RecoveryReport, CliError> {
    let binary = crate::demo::this_binary()?;
    let (_temp, dir) = crate::demo::work_dir("testfleet-bench-recovery-", s.data_dir.as_deref())?;
    let args = vec![
        "--worker-heartbeat-interval-ms".to_string(),
        s.heartbeat_ms.to_string(),
        "--worker-failure-timeout-ms".to_string(),
        s.failure_timeout_ms.to_string(),
    ];
    let cluster = LocalCluster::start(&binary, s.nodes, &dir, &args).map_err(unavailable)?;
    cluster
        .leader(Duration::from_secs(30), None)
        .await
        .map_err(unavailable)?;
    let remote = cluster.remote();
    let mut workers = LocalWorkers::start(&binary, &dir, &cluster, "rw", s.workers, s.slots)
        .map_err(unavailable)?;
    // One worker's worth of slots stays free, so requeued tasks find a slot at once and
    // `finished` measures recovery, not queueing behind other tasks.
    let per_round = (s.workers.saturating_sub(1)).max(1) * s.slots as usize;
    let mut requeued = Vec::new();
    let mut finished = Vec::new();
    let mut submitted = 0usize;
    for round in 0..s.kills {
        poll(Duration::from_secs(60), "every worker healthy", || {
            let remote = remote.clone();
            let n = s.workers;
            async move {
                let rows = query(
                    &remote,
                    "SELECT count(*) FROM workers WHERE status = 'healthy'",
                )
                .await?;
                Ok((rows[0][0].as_u64().unwrap_or(0) as usize >= n).then_some(()))
            }
        })
        .await?;
        let job = format!("round-{round}");
        let tasks: Vec<TaskSpec> = (0..per_round)
            .map(|i| TaskSpec {
                timeout_ms: 120_000,
                max_retries: 5,
                timeout_retries: 0,
                ..TaskSpec::new(
                    format!("{job}-{i}"),
                    format!("{job}-{i}"),
                    vec!["sleep".into(), s.task_seconds.to_string()],
                )
            })
            .collect();
        submitted += tasks.len();
        crate::cli::jobs::submit(&remote, &job, &job, &tasks).await?;
        let report = poll(Duration::from_secs(60), "every task running", || {
            let remote = remote.clone();
            let job = job.clone();
            async move {
                let r = crate::cli::jobs::get_job(&remote, &job, true).await?;
                Ok(
                    (r.counts.get("running").copied().unwrap_or(0) as usize == per_round)
                        .then_some(r),
                )
            }
        })
        .await?;
        // The worker holding the most tasks (ties: by name), so every round measures something.
        let mut load: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for t in &report.tasks {
            *load.entry(t.worker_id.as_str()).or_default() += 1;
        }
        let victim = load
            .iter()
            .max_by_key(|(name, n)| (**n, std::cmp::Reverse(**name)))
            .map(|(name, _)| name.to_string())
            .unwrap_or_else(|| "rw1".to_string());
        let held: BTreeSet<String> = report
            .tasks
            .iter()
            .filter(|t| t.worker_id == victim)
            .map(|t| t.id.clone())
            .collect();
        let killed_at = Timestamp::now();
        workers.kill(&victim);
        let done = poll(
            Duration::from_secs(120),
            "the round's job to finish",
            || {
                let remote = remote.clone();
                let job = job.clone();
                async move {
                    let r = crate::cli::jobs::get_job(&remote, &job, true).await?;
                    Ok((r.status != "running").then_some(r))
                }
            },
        )
        .await?;
        let ids: Vec<String> = held.iter().map(|t| format!("'{t}'")).collect();
        if !ids.is_empty() {
            let rows = query(
                &remote,
                &format!(
                    "SELECT t.id, CAST(r.details->>'requeued_at_us' AS BIGINT), epoch_us(t.finished_at) \
                     FROM tasks t LEFT JOIN task_recovery_history r ON r.task_id = t.id \
                     WHERE t.id IN ({}) AND t.status = 'passed'",
                    ids.join(",")
                ),
            )
            .await?;
            for row in rows {
                if let Some(at) = row[1].as_i64() {
                    requeued.push(Duration::from_micros(
                        (at - killed_at.micros()).max(0) as u64
                    ));
                }
                if let Some(at) = row[2].as_i64() {
                    finished.push(Duration::from_micros(
                        (at - killed_at.micros()).max(0) as u64
                    ));
                }
            }
        }
        tracing::info!(round, victim = %victim, held = held.len(), status = %done.status, "recovery round");
        workers.spawn(&victim).map_err(unavailable)?;
    }
    let passed = query(
        &remote,
        "SELECT count(*) FROM tasks WHERE status = 'passed' AND job_id LIKE 'round-%'",
    )
    .await?;
    let passed = passed[0][0].as_u64().unwrap_or(0) as usize;
    drop(workers);
    drop(cluster);
    Ok(RecoveryReport {
        nodes: s.nodes,
        workers: s.workers,
        kills: s.kills,
        heartbeat_ms: s.heartbeat_ms,
        failure_timeout_ms: s.failure_timeout_ms,
        task_seconds: s.task_seconds,
        tasks_submitted: submitted,
        tasks_passed: passed,
        tasks_lost: submitted - passed.min(submitted),
        preserved_ratio: passed as f64 / submitted.max(1) as f64,
        requeued: Latency::of(requeued),
        finished_elsewhere: Latency::of(finished),
    })
}

/// Renders the report.
pub fn render(r: &RecoveryReport, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(r).unwrap_or_default() + "\n";
    }
    let mut out = format!(
        "{} worker SIGKILLs, {} coordinators, {} workers; heartbeat {} ms, failure timeout {} ms; tasks sleep {} s\n",
        r.kills, r.nodes, r.workers, r.heartbeat_ms, r.failure_timeout_ms, r.task_seconds
    );
    out.push_str(&format!(
        "tasks: {} submitted, {} passed, {} lost ({:.2} % preserved)\n\n",
        r.tasks_submitted,
        r.tasks_passed,
        r.tasks_lost,
        r.preserved_ratio * 100.0
    ));
    let row = |name: &str, l: &Latency| {
        vec![
            name.to_string(),
            l.samples.to_string(),
            format!("{:.0}", l.p50_ms),
            format!("{:.0}", l.p99_ms),
            format!("{:.0}", l.max_ms),
        ]
    };
    out.push_str(&table(
        &["FROM WORKER KILL TO", "TASKS", "P50 MS", "P99 MS", "MAX MS"],
        &[
            row("task requeued", &r.requeued),
            row("task finished elsewhere", &r.finished_elsewhere),
        ],
    ));
    out
}
