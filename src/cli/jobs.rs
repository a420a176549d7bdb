//! `testfleet submit`, `run`, `jobs`, `tasks`, `workers`: the client side of jobs.
//!
//! `run` expands a plan file on the client, submits it as one job (a retried submission
//! after a failover creates nothing twice: the job and task ids are chosen here), follows
//! it until every task is final, prints a summary and exits with the code of
//! ARCHITECTURE.md § Client commands:
//! 0 every test passed, 1 a test failed or timed out (or was cancelled), 2 bad usage or
//! input, 3 infrastructure (abandoned or error tasks, cluster unreachable).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::transport::Channel;

use super::{CliError, Output, Remote, from_status, table};
use crate::auth::{AuthChannel, Credentials};
use crate::coordinator::jobs::{MAX_JOBS_MESSAGE, task_spec_message};
use crate::proto::control_client::ControlClient;
use crate::proto::jobs_client::JobsClient;
use crate::proto::{CancelJobRequest, GetJobRequest, JobReport, SubmitJobRequest};
use crate::state::command::TaskSpec;
use crate::state::limits;

/// How long `run` keeps trying to reach the cluster (a failover takes about a second).
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Connections this process opened to coordinators, by address: every call of a `run` that
/// follows its job, and every submission of a benchmark, reuses one connection per coordinator
/// instead of paying (and making the coordinator pay) a new one per call.
fn connections() -> &'static std::sync::Mutex<BTreeMap<String, Channel>> {
    static CONNECTIONS: std::sync::OnceLock<std::sync::Mutex<BTreeMap<String, Channel>>> =
        std::sync::OnceLock::new();
    CONNECTIONS.get_or_init(Default::default)
}

/// Forgets the connection to `addr` (it failed); the next call connects again.
fn forget_connection(addr: &str) {
    connections()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(addr);
}

async fn jobs_client(
    addr: &str,
    credentials: &Credentials,
) -> Result<JobsClient<AuthChannel>, CliError> {
    Ok(jobs_wrap(cached_channel(addr, credentials).await?))
}

/// This process's connection to `addr`, opened on first use.
async fn cached_channel(addr: &str, credentials: &Credentials) -> Result<AuthChannel, CliError> {
    let cached = connections()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(addr)
        .cloned();
    let channel = match cached {
        Some(channel) => channel,
        None => {
            let channel = credentials
                .endpoint(addr)
                .map_err(|e| CliError::Usage(format!("bad coordinator address {addr:?}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| super::unreachable(addr, &e))?;
            connections()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(addr.to_string(), channel.clone());
            channel
        }
    };
    Ok(credentials.wrap(channel))
}

/// What a failed call means for the caller. A reused connection can break under a call (the
/// coordinator died): that comes back as a status with a transport error inside, whatever its
/// code, and means "try another coordinator", like a refused connection.
fn call_error(status: tonic::Status) -> CliError {
    let transport = std::error::Error::source(&status).is_some()
        && matches!(
            status.code(),
            tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Internal
        );
    if transport {
        return CliError::Unavailable(format!("the connection broke: {}", status.message()));
    }
    from_status(status)
}

/// Calls `f` on the coordinators in turn until one answers, for up to [`RETRY_FOR`]:
/// unreachable nodes and "no leader yet" are retried, other errors are final.
async fn with_retry<T, F, Fut>(remote: &Remote, f: F) -> Result<T, CliError>
where
    F: FnMut(JobsClient<AuthChannel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    retry_calls(remote, jobs_wrap, f).await
}

fn jobs_wrap(channel: AuthChannel) -> JobsClient<AuthChannel> {
    JobsClient::new(channel)
        .max_decoding_message_size(MAX_JOBS_MESSAGE)
        .max_encoding_message_size(MAX_JOBS_MESSAGE)
}

/// [`with_retry`] for `Control` calls (writes a follower forwards to the leader).
pub(crate) async fn with_retry_control<T, F, Fut>(remote: &Remote, f: F) -> Result<T, CliError>
where
    F: FnMut(ControlClient<AuthChannel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    retry_calls(remote, ControlClient::new, f).await
}

async fn retry_calls<C, T, F, Fut>(
    remote: &Remote,
    wrap: fn(AuthChannel) -> C,
    mut f: F,
) -> Result<T, CliError>
where
    F: FnMut(C) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    let mut i = 0usize;
    // Refusals in a row from the start: when every address refuses the connection, nothing
    // listens there (a wrong address, or the cluster is down): say so at once rather than
    // retrying for RETRY_FOR. A failover never makes every member refuse.
    let mut refusals = 0usize;
    loop {
        let addr = &remote.addrs[i % remote.addrs.len()];
        i += 1;
        let error = match cached_channel(addr, &remote.credentials).await {
            Ok(channel) => match f(wrap(channel)).await {
                Ok(value) => return Ok(value),
                Err(status) => call_error(status),
            },
            Err(e) => e,
        };
        if matches!(error, CliError::Unavailable(_)) {
            forget_connection(addr);
        }
        if super::refused(&error) && refusals + 1 == i {
            refusals += 1;
            if refusals == remote.addrs.len() {
                return Err(CliError::Unavailable(format!(
                    "no coordinator accepts connections at {}: {error} (is the cluster \
                     running? check --coordinator or TESTFLEET_COORDINATOR)",
                    remote.addrs.join(", ")
                )));
            }
        }
        match error {
            CliError::Unavailable(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Err(other),
        }
    }
}

/// Submits a job; retrying with the same ids is safe.
pub async fn submit(
    remote: &Remote,
    job_id: &str,
    name: &str,
    tasks: &[TaskSpec],
) -> Result<u32, CliError> {
    // The coordinator checks the same limits; checking here says what is wrong without
    // sending a job it would refuse.
    limits::check_job(job_id, name, tasks).map_err(CliError::Usage)?;
    let request = SubmitJobRequest {
        job_id: job_id.to_string(),
        name: name.to_string(),
        tasks: tasks.iter().map(task_spec_message).collect(),
    };
    let reply = with_retry(remote, |mut client| {
        let request = request.clone();
        async move { client.submit_job(request).await.map(|r| r.into_inner()) }
    })
    .await?;
    Ok(reply.tasks)
}

/// One submission attempt to one coordinator (no retry), bounded by `limit`.
pub async fn submit_once(
    addr: &str,
    credentials: &Credentials,
    job_id: &str,
    name: &str,
    tasks: &[TaskSpec],
    limit: Duration,
) -> Result<u32, CliError> {
    let request = SubmitJobRequest {
        job_id: job_id.to_string(),
        name: name.to_string(),
        tasks: tasks.iter().map(task_spec_message).collect(),
    };
    let attempt = async {
        let mut client = jobs_client(addr, credentials).await?;
        client
            .submit_job(request)
            .await
            .map(|r| r.into_inner().tasks)
            .map_err(call_error)
    };
    let result = tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| CliError::Unavailable(format!("{addr} did not answer within {limit:?}")))
        .and_then(|r| r);
    if matches!(result, Err(CliError::Unavailable(_))) {
        forget_connection(addr);
    }
    result
}

/// The job as the leader sees it.
pub async fn get_job(
    remote: &Remote,
    job_id: &str,
    include_tasks: bool,
) -> Result<JobReport, CliError> {
    with_retry(remote, |mut client| async move {
        client
            .get_job(GetJobRequest {
                job_id: job_id.to_string(),
                include_tasks,
            })
            .await
            .map(|r| r.into_inner())
    })
    .await
}

fn count(report: &JobReport, status: &str) -> u32 {
    report.counts.get(status).copied().unwrap_or(0)
}

/// The exit code for a finished job (ARCHITECTURE.md § Client commands).
pub fn exit_code(report: &JobReport) -> u8 {
    if count(report, "abandoned") + count(report, "error") > 0 {
        3
    } else if count(report, "failed") + count(report, "timed_out") + count(report, "cancelled") > 0
    {
        1
    } else {
        0
    }
}

const FINAL: &[&str] = &[
    "passed",
    "failed",
    "timed_out",
    "error",
    "cancelled",
    "abandoned",
];

fn progress_line(report: &JobReport) -> String {
    let done: u32 = FINAL.iter().map(|s| count(report, s)).sum();
    let mut parts = vec![format!("{done}/{} done", report.total)];
    for status in [
        "running",
        "assigned",
        "queued",
        "passed",
        "failed",
        "timed_out",
        "error",
        "abandoned",
        "cancelled",
    ] {
        let n = count(report, status);
        if n > 0 {
            parts.push(format!("{status} {n}"));
        }
    }
    if !report.parked.is_empty() {
        parts.push(format!("parked {}", report.parked.len()));
    }
    parts.join(", ")
}

/// How many waiting (parked) tasks `run` names one by one while it follows a job.
const MAX_PARKED_TOLD: usize = 10;

/// Follows a job until it ends, showing progress on stderr.
pub async fn follow(remote: &Remote, job_id: &str) -> Result<JobReport, CliError> {
    follow_interruptible(remote, job_id, None).await
}

/// Like [`follow`], with the user's interrupts (Ctrl-C) coming through `interrupts`: the first
/// cancels the job and goes on following it until its tasks have stopped; the second leaves
/// the job as it is and returns exit code 130 (the shell's code for SIGINT).
pub async fn follow_interruptible(
    remote: &Remote,
    job_id: &str,
    mut interrupts: Option<&mut tokio::sync::mpsc::UnboundedReceiver<()>>,
) -> Result<JobReport, CliError> {
    let terminal = std::io::stderr().is_terminal();
    let mut cancelling = false;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut last_line = String::new();
    let mut last_print = Instant::now() - Duration::from_secs(60);
    // Tasks already said to be waiting for a suitable worker: each is said once.
    let mut told_parked = std::collections::BTreeSet::new();
    loop {
        let report = get_job(remote, job_id, false).await?;
        let done: u32 = FINAL.iter().map(|s| count(&report, s)).sum();
        let line = progress_line(&report);
        for parked in &report.parked {
            if !told_parked.insert(parked.task_id.clone()) {
                continue;
            }
            let message = if told_parked.len() <= MAX_PARKED_TOLD {
                format!(
                    "{} waits for a suitable worker: {}",
                    parked.name, parked.reason
                )
            } else if told_parked.len() == MAX_PARKED_TOLD + 1 {
                "more tasks wait for a suitable worker; `testfleet wait` prints them all at the end"
                    .to_string()
            } else {
                continue;
            };
            match &bar {
                Some(bar) => bar.suspend(|| eprintln!("{message}")),
                None => eprintln!("{message}"),
            }
        }
        if terminal {
            let bar = bar.get_or_insert_with(|| {
                let bar = indicatif::ProgressBar::new(u64::from(report.total));
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar
            });
            bar.set_position(u64::from(done));
            bar.set_message(line.clone());
        } else if line != last_line && last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!("{line}");
            last_line = line;
            last_print = Instant::now();
        }
        if report.status != "running" {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return get_job(remote, job_id, true).await;
        }
        let interrupted = async {
            match interrupts.as_deref_mut() {
                Some(rx) => rx.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            true = interrupted => {
                // Above the progress bar, if there is one.
                let say = |message: String| match &bar {
                    Some(bar) => bar.suspend(|| eprintln!("{message}")),
                    None => eprintln!("{message}"),
                };
                if cancelling {
                    say(format!(
                        "left job {job_id} as it is; follow it with `testfleet wait {job_id}`"
                    ));
                    return Err(CliError::Exit(130));
                }
                cancelling = true;
                say(format!(
                    "cancelling job {job_id} and waiting for its tasks to stop \
                     (Ctrl-C again to leave it running)"
                ));
                match cancel(remote, job_id, "interrupted (Ctrl-C) by the client that ran it").await {
                    Ok(()) => {}
                    // It finished meanwhile: the next report says so.
                    Err(CliError::Usage(why)) => say(why),
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Cancels a job: its open tasks end `cancelled`, and workers stop the attempts they run. An
/// unknown or finished job is a usage error that says which.
pub async fn cancel(remote: &Remote, job_id: &str, reason: &str) -> Result<(), CliError> {
    let reply = with_retry(remote, |mut client| async move {
        client
            .cancel_job(CancelJobRequest {
                job_id: job_id.to_string(),
                reason: reason.to_string(),
            })
            .await
            .map(|r| r.into_inner())
    })
    .await?;
    if reply.cancelled {
        Ok(())
    } else {
        Err(CliError::Usage(format!("cannot cancel: {}", reply.detail)))
    }
}

/// The summary of a finished job (`-o json` prints it as is).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub job_id: String,
    pub name: String,
    pub status: String,
    pub total: u32,
    pub counts: BTreeMap<String, u32>,
    pub exit_code: u8,
    pub tasks: Vec<TaskSummary>,
    pub parked: Vec<ParkedSummary>,
}

#[derive(Debug, Serialize)]
pub struct TaskSummary {
    pub id: String,
    pub name: String,
    pub status: String,
    pub attempt: u32,
    pub worker_id: String,
    pub exit_code: Option<i32>,
    /// The signal that killed the command (then there is no exit code).
    pub signal: Option<i32>,
    pub duration_ms: Option<u64>,
    pub reason: String,
    pub output_tail: String,
}

#[derive(Debug, Serialize)]
pub struct ParkedSummary {
    pub task_id: String,
    pub name: String,
    pub reason: String,
}

pub fn summary(report: JobReport) -> Summary {
    let exit_code = exit_code(&report);
    Summary {
        exit_code,
        job_id: report.job_id,
        name: report.name,
        status: report.status,
        total: report.total,
        counts: report.counts.into_iter().collect(),
        tasks: report
            .tasks
            .into_iter()
            .map(|t| TaskSummary {
                id: t.id,
                name: t.name,
                status: t.status,
                attempt: t.attempt,
                worker_id: t.worker_id,
                exit_code: t.exit_code,
                signal: t.signal,
                duration_ms: t.duration_ms,
                reason: t.reason,
                output_tail: t.output_tail,
            })
            .collect(),
        parked: report
            .parked
            .into_iter()
            .map(|p| ParkedSummary {
                task_id: p.task_id,
                name: p.name,
                reason: p.reason,
            })
            .collect(),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Renders a summary for people or scripts.
pub fn render(summary: &Summary, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(summary).unwrap_or_default() + "\n";
    }
    let mut out = format!(
        "Job {} ({}): {} — {} tasks\n",
        summary.name, summary.job_id, summary.status, summary.total
    );
    let counts: Vec<String> = summary
        .counts
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    out.push_str(&format!("Outcomes: {}\n", counts.join(", ")));
    let mut slowest: Vec<&TaskSummary> = summary
        .tasks
        .iter()
        .filter(|t| t.duration_ms.is_some())
        .collect();
    slowest.sort_by_key(|t| std::cmp::Reverse(t.duration_ms));
    if !slowest.is_empty() {
        out.push_str("\nSlowest tasks:\n");
        let rows: Vec<Vec<String>> = slowest
            .iter()
            .take(5)
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.status.clone(),
                    format!("{:.2} s", t.duration_ms.unwrap_or(0) as f64 / 1000.0),
                    t.worker_id.clone(),
                ]
            })
            .collect();
        out.push_str(&table(&["TASK", "STATUS", "DURATION", "WORKER"], &rows));
    }
    let failures: Vec<&TaskSummary> = summary
        .tasks
        .iter()
        .filter(|t| {
            !matches!(
                t.status.as_str(),
                "passed" | "queued" | "assigned" | "running"
            )
        })
        .collect();
    if !failures.is_empty() {
        out.push_str(&format!("\nNot passed ({}):\n", failures.len()));
        for t in failures.iter().take(20) {
            let code = match (t.exit_code, t.signal) {
                (_, Some(signal)) => format!(", {}", super::signals::killed_by(signal)),
                (Some(c), None) => format!(", exit {c}"),
                (None, None) => String::new(),
            };
            out.push_str(&format!(
                "--- {} [{}{}] on {} (attempt {})\n",
                t.name, t.status, code, t.worker_id, t.attempt
            ));
            if !t.reason.is_empty() {
                out.push_str(&format!("    reason: {}\n", t.reason));
            }
            let tail = last_lines(&t.output_tail, 10);
            for line in tail.lines() {
                out.push_str(&format!("    | {line}\n"));
            }
        }
        if failures.len() > 20 {
            out.push_str(&format!("... and {} more\n", failures.len() - 20));
        }
    }
    if !summary.parked.is_empty() {
        out.push_str(&format!(
            "\nWaiting for a suitable worker ({}):\n",
            summary.parked.len()
        ));
        for p in summary.parked.iter().take(20) {
            out.push_str(&format!("  {}: {}\n", p.name, p.reason));
        }
    }
    out
}

/// Loads and expands a plan; every task gets a fresh UUID.
pub fn load_plan(path: &Path) -> Result<(String, Vec<TaskSpec>), CliError> {
    let plan = crate::plan::load(path).map_err(|e| CliError::Usage(e.to_string()))?;
    let name = plan.name.clone();
    let specs = plan.into_specs(|| uuid::Uuid::new_v4().to_string());
    Ok((name, specs))
}

/// How long `tasks` waits for the leader to say why queued tasks wait, before it lists them
/// without the reasons.
pub const PARKED_WAIT: Duration = Duration::from_secs(3);

/// Why each waiting (parked) task of `jobs` cannot be placed, by task id, as the leader's
/// scheduler sees it: one `GetJob` (without its task lines) per job, all at once, for at most
/// `limit`.
pub async fn parked(
    remote: &Remote,
    jobs: &[String],
    limit: Duration,
) -> Result<BTreeMap<String, String>, CliError> {
    let calls = jobs.iter().map(|job| get_job(remote, job, false));
    let reports = tokio::time::timeout(limit, futures::future::try_join_all(calls))
        .await
        .map_err(|_| {
            CliError::Unavailable(format!("the leader did not answer within {limit:?}"))
        })??;
    Ok(reports
        .into_iter()
        .flat_map(|r| r.parked)
        .map(|p| (p.task_id, p.reason))
        .collect())
}
