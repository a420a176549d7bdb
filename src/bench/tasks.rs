//! `testfleet bench tasks`: trivial tasks end to end on a local cluster of processes.
//!
//! Starts `--nodes` coordinator processes and `--workers` worker processes (`--slots`
//! each), then measures, all from the replicated tables (the coordinators' own timestamps):
//! * throughput: a job of `--tasks` `true` commands, first submission to last result, and
//!   the servers' CPU per task over that job by process role and thread (read from `/proc`,
//!   [`crate::bench::cpu::thread_ticks`]);
//! * dispatch latency (submit → `TaskStarted`) at full load and at half that rate, where
//!   one-task jobs are submitted at an even pace;
//! * a worker's resident memory while 4 of its slots run;
//! * the scheduler's pick time at 10k and 100k queued tasks (in this process).
//!
//! With `--queued SIZES` it measures instead a coordinator's memory per queued task
//! ([`queued`]), side by side with another build given with `--binary`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::cpu::{
    ThreadTicks, thread_cpu_spent, thread_ticks, ticks_per_second, ticks_to_duration,
};
use crate::cli::Remote;
use crate::cli::{CliError, Output, table, unavailable};
use crate::demo::Latency;
use crate::demo::launch::{LocalCluster, LocalWorkers};
use crate::state::command::TaskSpec;

pub mod queued;

/// A consistent read through the leader.
async fn query(remote: &Remote, sql: &str) -> Result<Vec<Vec<serde_json::Value>>, CliError> {
    crate::cli::query_rows(remote, sql, true).await
}

/// Settings of the tasks benchmark.
#[derive(Clone, Debug)]
pub struct TasksSettings {
    /// How the started cluster is protected.
    pub security: crate::demo::launch::Security,
    pub nodes: u64,
    pub workers: usize,
    pub slots: u32,
    pub tasks: usize,
    pub half_load_seconds: f64,
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `testfleet bench tasks`.
#[derive(Clone, Debug, clap::Args)]
pub struct TasksArgs {
    /// Coordinator processes to start
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Worker processes to start
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Slots per worker
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Tasks in the throughput job
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    /// How the started cluster is protected
    #[arg(long, value_enum, default_value_t = crate::demo::launch::Security::Tokens)]
    pub security: crate::demo::launch::Security,
    /// Seconds of paced submissions at half the measured rate
    #[arg(long, default_value_t = 5.0)]
    pub half_load_seconds: f64,
    /// Directory for the processes' files (default: a temporary directory)
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Measure a coordinator's memory per queued task instead, at these total queue sizes
    /// (ascending, e.g. 10000,100000,1000000): one coordinator, no workers
    #[arg(long, value_delimiter = ',', value_name = "SIZES")]
    pub queued: Vec<usize>,
    /// With --queued: another testfleet binary (e.g. an older build) to measure side by side
    /// in the same run, alternating with this one round by round
    #[arg(long, value_name = "PATH", requires = "queued")]
    pub binary: Option<PathBuf>,
    /// With --queued: rounds per build (the report gives medians)
    #[arg(long, default_value_t = 1, requires = "queued")]
    pub rounds: usize,
    /// With --queued: tasks per submitted job
    #[arg(long, default_value_t = 10_000, requires = "queued")]
    pub job_size: usize,
    /// With --queued: seconds to wait after the last job of each size before reading memory
    /// (0 reads it at once). A queue is mostly at rest, and a coordinator at rest
    /// checkpoints DuckDB after 1 s
    #[arg(long, default_value_t = 3.0, requires = "queued")]
    pub settle: f64,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl TasksArgs {
    pub fn settings(&self) -> TasksSettings {
        TasksSettings {
            security: self.security,
            nodes: self.nodes,
            workers: self.workers,
            slots: self.slots,
            tasks: self.tasks,
            half_load_seconds: self.half_load_seconds,
            data_dir: self.data_dir.clone(),
        }
    }

    /// The settings of `--queued`, when it was given.
    pub fn queued_settings(&self) -> Option<queued::QueuedSettings> {
        (!self.queued.is_empty()).then(|| queued::QueuedSettings {
            sizes: self.queued.clone(),
            other: self.binary.clone(),
            rounds: self.rounds,
            job_size: self.job_size,
            settle: self.settle,
            security: self.security,
            data_dir: self.data_dir.clone(),
        })
    }
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct TasksReport {
    pub security: crate::demo::launch::Security,
    pub nodes: u64,
    pub workers: usize,
    pub slots: u32,
    pub tasks: usize,
    pub seconds: f64,
    pub tasks_per_sec: f64,
    pub full_load_dispatch: Latency,
    pub half_load_rate: f64,
    pub half_load_tasks: usize,
    pub half_load_dispatch: Latency,
    /// At half load: submitted → assignment proposed.
    pub half_load_to_assign: Latency,
    /// At half load: assignment proposed → started on the worker.
    pub half_load_to_start: Latency,
    pub worker_rss_bytes_4_busy: u64,
    pub pick_10k_us: f64,
    pub pick_100k_us: f64,
    /// One worker's held tasks with 100k tasks in the state: through the index, and by the
    /// full scan it replaced.
    pub held_by_100k_us: f64,
    pub held_by_scan_100k_us: f64,
    /// The servers' CPU per task over the full-load job (submission until every task
    /// passed), by process role and thread name: `coordinators: tokio-rt-worker`,
    /// `coordinators: duckdb-flusher`, `workers: …` (see [`crate::bench::cpu::thread_ticks`]).
    /// Not the `true` processes the workers start.
    pub full_load_cpu_us_per_task: BTreeMap<String, f64>,
}

/// Every started coordinator and worker process with its role, for [`ThreadReading`].
fn server_pids(cluster: &LocalCluster, workers: &LocalWorkers) -> Vec<(&'static str, u32)> {
    let coordinators = cluster
        .running()
        .into_iter()
        .filter_map(|id| cluster.pid(id));
    let workers = workers.names().into_iter().filter_map(|n| workers.pid(&n));
    coordinators
        .map(|pid| ("coordinators", pid))
        .chain(workers.map(|pid| ("workers", pid)))
        .collect()
}

/// One reading of every server process's threads.
struct ThreadReading(Vec<(&'static str, ThreadTicks)>);

impl ThreadReading {
    fn now(pids: &[(&'static str, u32)]) -> Result<ThreadReading, CliError> {
        pids.iter()
            .map(|(role, pid)| Ok((*role, thread_ticks(*pid)?)))
            .collect::<Result<_, crate::bench::cpu::CpuError>>()
            .map(ThreadReading)
            .map_err(|e| CliError::Other(e.to_string()))
    }

    /// µs of CPU per task from `self` to `end`, by `role: thread name`, with a total per
    /// role (`role: all`).
    fn per_task(
        &self,
        end: &ThreadReading,
        tasks: usize,
    ) -> Result<BTreeMap<String, f64>, CliError> {
        let hz = ticks_per_second().map_err(|e| CliError::Other(e.to_string()))?;
        let mut ticks: BTreeMap<String, u64> = BTreeMap::new();
        for ((role, start), (_, end)) in self.0.iter().zip(&end.0) {
            for (name, spent) in thread_cpu_spent(start, end) {
                *ticks.entry(format!("{role}: {name}")).or_default() += spent;
                *ticks.entry(format!("{role}: all")).or_default() += spent;
            }
        }
        let us = |t: u64| ticks_to_duration(t, hz).as_secs_f64() * 1e6 / tasks.max(1) as f64;
        Ok(ticks.into_iter().map(|(k, t)| (k, us(t))).collect())
    }
}

fn trivial(id: String, name: &str) -> TaskSpec {
    TaskSpec {
        timeout_ms: 60_000,
        ..TaskSpec::new(id, name.to_string(), vec!["true".into()])
    }
}

/// Dispatch latency of the tasks of jobs named `name`, whole and in its two halves.
struct Dispatch {
    /// Submitted (stamped by the leader) → started (stamped by the worker).
    total: Vec<Duration>,
    /// Submitted → the leader picked the task and proposed its assignment.
    to_assign: Vec<Duration>,
    /// Assignment proposed → started: the assignment's commit, the message to the worker, and
    /// the worker starting the process.
    to_start: Vec<Duration>,
}

/// Dispatch latencies of the first attempts of the tasks of jobs named `name`.
async fn dispatch_latencies(remote: &Remote, name: &str) -> Result<Dispatch, CliError> {
    let rows = query(
        remote,
        &format!(
            "SELECT epoch_us(a.started_at) - epoch_us(t.submitted_at), \
             epoch_us(a.assigned_at) - epoch_us(t.submitted_at), \
             epoch_us(a.started_at) - epoch_us(a.assigned_at) FROM tasks t \
             JOIN jobs j ON j.id = t.job_id JOIN task_attempts a ON a.task_id = t.id \
             AND a.attempt = 1 WHERE j.name = '{name}' AND a.started_at IS NOT NULL"
        ),
    )
    .await?;
    let column = |i: usize| {
        rows.iter()
            .filter_map(|r| r[i].as_i64())
            .map(|us| Duration::from_micros(us.max(0) as u64))
            .collect()
    };
    Ok(Dispatch {
        total: column(0),
        to_assign: column(1),
        to_start: column(2),
    })
}

/// Waits until the job `job_id` has `expected` passed tasks, asking the leader as
/// `testfleet run` does (`GetJob`, answered from the applied state in memory). A SQL poll
/// here would put a DuckDB scan and a consistent read on the leader ten times a second,
/// load that no real client adds, during the very run being measured.
async fn wait_passed(remote: &Remote, job_id: &str, expected: usize) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let report = crate::cli::jobs::get_job(remote, job_id, false).await?;
        let passed = report.counts.get("passed").copied().unwrap_or(0) as usize;
        if passed >= expected {
            return Ok(());
        }
        if report.status != "running" || Instant::now() > deadline {
            return Err(unavailable(format!(
                "job {job_id}: only {passed} of {expected} tasks passed (job {})",
                report.status
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `expected` tasks of the jobs named `name` have passed (many one-task jobs,
/// asked with one SQL count: used once the load that is measured is over).
async fn wait_done(remote: &Remote, name: &str, expected: usize) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let rows = query(
            remote,
            &format!(
                "SELECT count(*) FILTER (WHERE t.status = 'passed'), count(*) FROM tasks t \
                 JOIN jobs j ON j.id = t.job_id WHERE j.name = '{name}'"
            ),
        )
        .await?;
        let passed = rows[0][0].as_u64().unwrap_or(0) as usize;
        if passed >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(unavailable(format!(
                "{name}: only {passed} of {expected} tasks passed"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the benchmark.
pub async fn run(settings: &TasksSettings) -> Result<TasksReport, CliError> {
    let binary = crate::demo::this_binary()?;
    let (_temp, dir) =
        crate::demo::work_dir("testfleet-bench-tasks-", settings.data_dir.as_deref())?;
    let cluster =
        LocalCluster::start_secured(&binary, settings.nodes, None, &dir, &[], settings.security)
            .map_err(unavailable)?;
    cluster
        .leader(Duration::from_secs(30), None)
        .await
        .map_err(unavailable)?;
    let remote = cluster.remote();
    let workers = LocalWorkers::start(
        &binary,
        &dir,
        &cluster,
        "bench-w",
        settings.workers,
        settings.slots,
    )
    .map_err(unavailable)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = query(
            &remote,
            "SELECT count(*) FROM workers WHERE status = 'healthy'",
        )
        .await?;
        if rows[0][0].as_u64().unwrap_or(0) as usize >= settings.workers {
            break;
        }
        if Instant::now() > deadline {
            return Err(unavailable("the workers did not all register within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Warm up every path once.
    let warm: Vec<TaskSpec> = (0..200)
        .map(|i| trivial(format!("warm-{i}"), "warm"))
        .collect();
    crate::cli::jobs::submit(&remote, "warm", "warm", &warm).await?;
    wait_passed(&remote, "warm", warm.len()).await?;

    // Full load: one big job.
    let job: Vec<TaskSpec> = (0..settings.tasks)
        .map(|_| trivial(uuid::Uuid::new_v4().to_string(), "full"))
        .collect();
    let full_id = uuid::Uuid::new_v4().to_string();
    let servers = server_pids(&cluster, &workers);
    let before = ThreadReading::now(&servers)?;
    crate::cli::jobs::submit(&remote, &full_id, "full", &job).await?;
    wait_passed(&remote, &full_id, settings.tasks).await?;
    let full_load_cpu_us_per_task =
        before.per_task(&ThreadReading::now(&servers)?, settings.tasks)?;
    let span = query(
        &remote,
        "SELECT max(epoch_us(t.finished_at)) - min(epoch_us(t.submitted_at)) FROM tasks t \
         JOIN jobs j ON j.id = t.job_id WHERE j.name = 'full'",
    )
    .await?;
    let seconds = span[0][0].as_i64().unwrap_or(0) as f64 / 1e6;
    let tasks_per_sec = settings.tasks as f64 / seconds.max(1e-6);
    let full_load_dispatch = Latency::of(dispatch_latencies(&remote, "full").await?.total);

    // Half load: one-task jobs at half the measured rate, evenly paced.
    let rate = tasks_per_sec / 2.0;
    let count = ((rate * settings.half_load_seconds) as usize).max(10);
    let pace = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now();
    let mut submissions = Vec::with_capacity(count);
    for i in 0..count {
        let at = start + pace.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        let remote = remote.clone();
        submissions.push(tokio::spawn(async move {
            let id = uuid::Uuid::new_v4().to_string();
            crate::cli::jobs::submit(&remote, &id, "half", &[trivial(format!("{id}-t"), "half")])
                .await
        }));
    }
    for s in submissions {
        s.await.map_err(|e| CliError::Other(e.to_string()))??;
    }
    wait_done(&remote, "half", count).await?;
    let half = dispatch_latencies(&remote, "half").await?;

    // A worker's memory with four slots busy.
    let busy: Vec<TaskSpec> = (0..settings.workers * settings.slots as usize)
        .map(|i| TaskSpec {
            command: vec!["sleep".into(), "3".into()],
            ..trivial(format!("busy-{i}"), "busy")
        })
        .collect();
    crate::cli::jobs::submit(&remote, "busy", "busy", &busy).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let worker_rss = workers
        .names()
        .iter()
        .filter_map(|n| workers.pid(n).and_then(rss_of))
        .max()
        .unwrap_or(0);
    wait_passed(&remote, "busy", busy.len()).await?;

    let pick_10k = crate::scheduler::bench_pick(10_000);
    let pick_100k = crate::scheduler::bench_pick(100_000);
    let (held_index, held_scan) = crate::state::machine::bench_held_by(100_000);
    drop(workers);
    drop(cluster);
    Ok(TasksReport {
        security: settings.security,
        nodes: settings.nodes,
        workers: settings.workers,
        slots: settings.slots,
        tasks: settings.tasks,
        seconds,
        tasks_per_sec,
        full_load_dispatch,
        half_load_rate: rate,
        half_load_tasks: count,
        half_load_dispatch: Latency::of(half.total),
        half_load_to_assign: Latency::of(half.to_assign),
        half_load_to_start: Latency::of(half.to_start),
        worker_rss_bytes_4_busy: worker_rss,
        pick_10k_us: pick_10k.as_secs_f64() * 1e6,
        pick_100k_us: pick_100k.as_secs_f64() * 1e6,
        held_by_100k_us: held_index.as_secs_f64() * 1e6,
        held_by_scan_100k_us: held_scan.as_secs_f64() * 1e6,
        full_load_cpu_us_per_task,
    })
}

/// Renders the report.
pub fn render(r: &TasksReport, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(r).unwrap_or_default() + "\n";
    }
    let mut out = format!(
        "{} trivial tasks (`true`) on {} coordinators and {} workers x {} slots (security: {})\n",
        r.tasks,
        r.nodes,
        r.workers,
        r.slots,
        super::commit::security_name(r.security)
    );
    out.push_str(&format!(
        "throughput: {:.0} tasks/s ({:.2} s, submission to last result)\n\n",
        r.tasks_per_sec, r.seconds
    ));
    let row = |name: String, l: &Latency| {
        vec![
            name,
            l.samples.to_string(),
            format!("{:.1}", l.p50_ms),
            format!("{:.1}", l.p99_ms),
            format!("{:.1}", l.max_ms),
        ]
    };
    out.push_str(&table(
        &[
            "DISPATCH (SUBMIT -> STARTED)",
            "TASKS",
            "P50 MS",
            "P99 MS",
            "MAX MS",
        ],
        &[
            row("full load".into(), &r.full_load_dispatch),
            row(
                format!("half load ({:.0} tasks/s)", r.half_load_rate),
                &r.half_load_dispatch,
            ),
            row(
                "  submit -> assignment proposed".into(),
                &r.half_load_to_assign,
            ),
            row("  proposed -> started".into(), &r.half_load_to_start),
        ],
    ));
    if !r.full_load_cpu_us_per_task.is_empty() {
        let rows: Vec<Vec<String>> = (r.full_load_cpu_us_per_task.iter())
            .map(|(group, us)| vec![group.clone(), format!("{us:.0}")])
            .collect();
        out.push('\n');
        out.push_str(&table(&["SERVER CPU PER TASK, FULL LOAD", "µS"], &rows));
    }
    out.push_str(&format!(
        "\nworker RSS with its slots busy: {:.1} MiB\nscheduler pick: {:.2} µs at 10k queued, {:.2} µs at 100k queued\n\
         one worker's held tasks, 100k tasks in the state: {:.2} µs (index), {:.0} µs (full scan)\n",
        r.worker_rss_bytes_4_busy as f64 / (1 << 20) as f64,
        r.pick_10k_us,
        r.pick_100k_us,
        r.held_by_100k_us,
        r.held_by_scan_100k_us
    ));
    out
}
