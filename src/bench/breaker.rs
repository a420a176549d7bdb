//! `testfleet bench breaker` (and `./run_circuit_breaker_benchmark.sh`): does the circuit
//! breaker help recovery, and where does it not?
//!
//! Each run is a real local cluster — coordinator and worker processes of this binary — with
//! `--healthy-workers` healthy workers and one sick worker, `s1`, that suffers one failure type
//! for the whole run, while one job of short tasks is run to the end. The same run is made
//! twice, alternating, with the breakers (the default) and without (`--disable-circuit-breaker`:
//! recovery still on, base policy), with the same seed, the same faults at the same moments and
//! the same timings. The failure types are real mechanisms ([`FailureType`]): the worker's own
//! fault injection (a session it drops, heartbeats it slows, spawns the kernel refuses), or
//! signals from the harness (SIGKILL and restart, SIGSTOP and SIGCONT).
//!
//! What a run measures, all read back from the replicated tables at the end:
//! * **makespan** — the job's submission to its last result (the coordinator's timestamps);
//! * **tasks preserved** — tasks that passed, of all (the others ran out of retries: abandoned);
//! * **wasted attempts** — attempts given to the sick worker that ended without a result
//!   (a worker fault, or requeued when it failed);
//! * **task recovery** — for each task a fault hit (requeued at least once), the time from its
//!   first requeue to its result, and the share of them that passed (recovery success);
//! * **worker recoveries** — `worker_recovery_history` rows, by success;
//! * **coordinator CPU and memory** — sampled from `/proc` every 250 ms ([`crate::chaos::resources`]).
//!
//! [`report`] aggregates the repetitions (medians), writes `report.json`, `report.md` and one
//! SVG chart per metric into `--report-dir` (default `benchmark_reports/<timestamp>/`).

pub mod report;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::chaos::resources::{self, Usage};
use crate::cli::{CliError, Output, Remote};
use crate::demo::launch::{LocalCluster, LocalWorkers};
use crate::state::command::TaskSpec;

/// How the sick worker is sick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FailureType {
    /// Its session to the leader drops every few seconds (the process stays up).
    #[value(name = "connection_failure")]
    ConnectionFailure,
    /// SIGKILLed every few seconds and started again a second later.
    #[value(name = "crash")]
    Crash,
    /// SIGSTOPped past its failure timeout, then resumed, again and again.
    #[value(name = "hang")]
    Hang,
    /// Heartbeats several times slower than asked (a slow, overloaded machine).
    #[value(name = "slow")]
    Slow,
    /// Up for a moment, down for a moment (SIGKILL and restart), quickly.
    #[value(name = "flapping")]
    Flapping,
    /// Most of its spawns fail with ENOMEM: out of memory.
    #[value(name = "resource_exhaustion")]
    ResourceExhaustion,
}

impl FailureType {
    pub const ALL: [FailureType; 6] = [
        FailureType::ConnectionFailure,
        FailureType::Crash,
        FailureType::Hang,
        FailureType::Slow,
        FailureType::Flapping,
        FailureType::ResourceExhaustion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FailureType::ConnectionFailure => "connection_failure",
            FailureType::Crash => "crash",
            FailureType::Hang => "hang",
            FailureType::Slow => "slow",
            FailureType::Flapping => "flapping",
            FailureType::ResourceExhaustion => "resource_exhaustion",
        }
    }
}

/// How hard a failure type hits (`--comprehensive` runs both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intensity {
    Moderate,
    Severe,
}

/// Arguments of `testfleet bench breaker`.
#[derive(Clone, Debug, clap::Args)]
pub struct BreakerBenchArgs {
    /// Short timings (heartbeats, failure timeout, recovery intervals and breaker waits a tenth
    /// of the defaults) and a small job: about 5 minutes for every failure type
    #[arg(long, conflicts_with = "comprehensive")]
    pub quick: bool,
    /// Every failure type at two intensities, three repetitions each
    #[arg(long)]
    pub comprehensive: bool,
    /// The failure types to run (default: all)
    #[arg(long, value_enum, value_delimiter = ',')]
    pub failure_types: Vec<FailureType>,
    /// Repetitions per failure type and side (default: 2 with --quick, else 3)
    #[arg(long)]
    pub repetitions: Option<usize>,
    /// Proactive recovery on both sides (its climbing-fault rule fails a sick worker on its
    /// own, breakers or not); `false` isolates what the breakers do
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub proactive_recovery: bool,
    /// Healthy workers beside the sick one (2 slots each, as the sick one)
    #[arg(long, default_value_t = 3)]
    pub healthy_workers: usize,
    /// Where the report goes (default: `benchmark_reports/<UTC timestamp>`)
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Output format of the summary on stdout
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The timings of a benchmark: the defaults, or a tenth of them with `--quick`.
#[derive(Clone, Debug, Serialize)]
pub struct Timings {
    pub quick: bool,
    pub heartbeat_ms: u64,
    pub failure_timeout_ms: u64,
    /// The base policy's interval (the "without" side): 5 attempts of this.
    pub base_interval_ms: u64,
    /// The breakers' level intervals (low, medium, high).
    pub level_intervals_ms: [u64; 3],
    pub open_wait_ms: u64,
    pub tasks: usize,
    pub task_ms: u64,
    /// A run that has not finished its job by then is stopped and reported as such.
    pub run_limit_s: u64,
}

impl Timings {
    fn new(quick: bool) -> Timings {
        let scale = if quick { 10 } else { 1 };
        Timings {
            quick,
            heartbeat_ms: 1_000 / scale,
            failure_timeout_ms: 5_000 / scale,
            base_interval_ms: 60_000 / scale,
            level_intervals_ms: [30_000 / scale, 15_000 / scale, 5_000 / scale],
            open_wait_ms: 30_000 / scale,
            tasks: if quick { 400 } else { 1200 },
            task_ms: if quick { 200 } else { 500 },
            run_limit_s: if quick { 90 } else { 900 },
        }
    }

    /// The `[breakers]` part of the coordinator's configuration file.
    fn config(&self) -> String {
        let [low, medium, high] = self.level_intervals_ms;
        format!(
            "[breakers.worker]\nopen_wait_ms = {}\nopen_wait_max_ms = {}\n\n\
             [breakers.system]\nopen_wait_ms = {}\nopen_wait_max_ms = {}\n\n\
             [breakers.levels.low]\nmax_recovery_attempts = 3\nrecovery_interval_ms = {low}\n\n\
             [breakers.levels.medium]\nmax_recovery_attempts = 5\nrecovery_interval_ms = {medium}\n\n\
             [breakers.levels.high]\nmax_recovery_attempts = 10\nrecovery_interval_ms = {high}\n",
            self.open_wait_ms,
            self.open_wait_ms * 10,
            self.open_wait_ms,
            self.open_wait_ms * 10,
        )
    }

    /// The fault's period (how often it strikes) at an intensity.
    fn period(&self, intensity: Intensity) -> Duration {
        let base = Duration::from_millis(self.failure_timeout_ms * 4);
        match intensity {
            Intensity::Moderate => base,
            Intensity::Severe => base / 2,
        }
    }
}

/// One run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub failure: FailureType,
    pub intensity: Intensity,
    pub repetition: usize,
    pub breakers: bool,
    /// The job finished within the run limit.
    pub finished: bool,
    pub makespan_ms: f64,
    pub tasks: u64,
    pub passed: u64,
    pub abandoned: u64,
    pub wasted_attempts: u64,
    pub sick_attempts: u64,
    pub tasks_hit: u64,
    pub tasks_hit_passed: u64,
    /// Mean time from a hit task's first requeue to its result (ms); 0 when none was hit.
    pub task_recovery_ms: f64,
    pub worker_recoveries: u64,
    pub worker_recoveries_succeeded: u64,
    pub breaker_transitions: u64,
    pub coordinator_cores: f64,
    pub coordinator_peak_rss_bytes: u64,
}

fn unavailable(e: impl std::fmt::Display) -> CliError {
    CliError::Unavailable(e.to_string())
}

/// Runs the benchmark and writes its report; returns the report.
pub async fn run(args: &BreakerBenchArgs) -> Result<report::Report, CliError> {
    let timings = Timings::new(args.quick);
    let failures = match args.failure_types.is_empty() {
        true => FailureType::ALL.to_vec(),
        false => args.failure_types.clone(),
    };
    let intensities = match args.comprehensive {
        true => vec![Intensity::Moderate, Intensity::Severe],
        false => vec![Intensity::Moderate],
    };
    let repetitions = args.repetitions.unwrap_or(if args.quick { 2 } else { 3 });
    if repetitions == 0 || args.healthy_workers == 0 {
        return Err(CliError::Usage(
            "--repetitions and --healthy-workers must be at least 1".into(),
        ));
    }
    let dir = match &args.report_dir {
        Some(dir) => dir.clone(),
        None => {
            let stamp = crate::cli::time::rfc3339_utc(crate::state::command::Timestamp::now().0)
                .unwrap_or_default()
                .replace(':', "-");
            PathBuf::from("benchmark_reports").join(stamp)
        }
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let binary = crate::demo::this_binary()?;
    let mut results = Vec::new();
    for &failure in &failures {
        for &intensity in &intensities {
            for repetition in 1..=repetitions {
                // Alternate which side goes first, so neither always runs on a warmer machine.
                let order = match repetition % 2 {
                    1 => [true, false],
                    _ => [false, true],
                };
                for breakers in order {
                    let case = Case {
                        failure,
                        intensity,
                        repetition,
                        breakers,
                    };
                    eprintln!(
                        "{} {:?} #{repetition} {}",
                        failure.name(),
                        intensity,
                        if breakers { "with breakers" } else { "without" }
                    );
                    let result = one(&binary, &dir, &timings, args, case).await?;
                    eprintln!(
                        "  makespan {:.1} s, {} of {} passed, {} wasted attempts, {} breaker \
                         transitions",
                        result.makespan_ms / 1000.0,
                        result.passed,
                        result.tasks,
                        result.wasted_attempts,
                        result.breaker_transitions
                    );
                    results.push(result);
                }
            }
        }
    }
    let report = report::Report::new(
        timings,
        args.healthy_workers,
        args.proactive_recovery,
        results,
    );
    report.write(&dir)?;
    eprintln!("report: {}", dir.display());
    Ok(report)
}

/// What one run is.
#[derive(Clone, Copy, Debug)]
struct Case {
    failure: FailureType,
    intensity: Intensity,
    repetition: usize,
    breakers: bool,
}

/// The sick worker's name.
const SICK: &str = "s1";

/// One run: a cluster, the workers, the fault, the job; the figures.
async fn one(
    binary: &Path,
    report_dir: &Path,
    timings: &Timings,
    args: &BreakerBenchArgs,
    case: Case,
) -> Result<RunResult, CliError> {
    let healthy = args.healthy_workers;
    let side = if case.breakers { "with" } else { "without" };
    let dir = report_dir.join("runs").join(format!(
        "{}-{:?}-{}-{side}",
        case.failure.name(),
        case.intensity,
        case.repetition
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(unavailable)?;
    let config = dir.join("coordinator.toml");
    std::fs::write(&config, timings.config()).map_err(unavailable)?;
    let mut node_args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--worker-heartbeat-interval-ms".into(),
        timings.heartbeat_ms.to_string(),
        "--worker-failure-timeout-ms".into(),
        timings.failure_timeout_ms.to_string(),
        "--recovery-interval-ms".into(),
        timings.base_interval_ms.to_string(),
        "--max-recovery-attempts".into(),
        "5".into(),
    ];
    if !case.breakers {
        node_args.push("--disable-circuit-breaker".into());
    }
    if !args.proactive_recovery {
        node_args.push("--enable-proactive-recovery=false".into());
    }
    let cluster = LocalCluster::start(binary, 1, &dir, &node_args).map_err(unavailable)?;
    let leader = cluster
        .leader(Duration::from_secs(60), None)
        .await
        .map_err(unavailable)?;
    let mut workers =
        LocalWorkers::start(binary, &dir, &cluster, "h", healthy, 2).map_err(unavailable)?;
    let period = timings.period(case.intensity);
    workers
        .spawn_with(SICK, &injected(case.failure, period, timings))
        .map_err(unavailable)?;
    let remote = cluster.remote();
    wait_for_workers(&remote, healthy + 1).await?;

    let started = Instant::now();
    let usage = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(resources::run(started, usage.clone(), stop.clone()));
    let job = format!("breaker-{}-{}", case.failure.name(), case.repetition);
    let tasks: Vec<TaskSpec> = (0..timings.tasks)
        .map(|i| {
            let id = format!("{job}-t{i:03}");
            TaskSpec {
                timeout_ms: 60_000,
                ..TaskSpec::new(
                    id.clone(),
                    id,
                    vec![
                        "sleep".into(),
                        format!("{:.3}", timings.task_ms as f64 / 1000.0),
                    ],
                )
            }
        })
        .collect();
    crate::cli::jobs::submit_once(
        cluster.addr(leader),
        &remote.credentials,
        &job,
        "breaker-bench",
        &tasks,
        Duration::from_secs(10),
    )
    .await?;

    // Drive the fault until the job is done (or the limit).
    let limit = Duration::from_secs(timings.run_limit_s);
    let mut next_fault = started + period / 2;
    let mut finished = false;
    while started.elapsed() < limit {
        if Instant::now() >= next_fault {
            strike(case.failure, &mut workers, timings).await?;
            next_fault = Instant::now() + period;
        }
        if job_done(&remote, &job).await {
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(pid) = workers.pid(SICK) {
        // SAFETY: a child this process spawned and has not reaped; resumes a paused worker.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    }
    stop.cancel();
    let _ = sampler.await;
    let usage = usage.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut result = measure(&remote, &job, case, &usage, started).await?;
    result.finished = finished;
    Ok(result)
}

/// The sick worker's own fault injection for `failure` (the harness drives the others).
fn injected(failure: FailureType, period: Duration, timings: &Timings) -> Vec<String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let spec = match failure {
        FailureType::ConnectionFailure => format!("drop-session,every={}", ms(period / 2)),
        FailureType::Slow => {
            // Heartbeats spaced past the suspicion point but under the failure timeout.
            let factor =
                (timings.failure_timeout_ms as f64 * 0.8 / timings.heartbeat_ms as f64).max(2.0);
            format!("slow-heartbeats,factor={factor:.1}")
        }
        FailureType::ResourceExhaustion => "spawn-error=ENOMEM,rate=0.8".to_string(),
        FailureType::Crash | FailureType::Hang | FailureType::Flapping => return Vec::new(),
    };
    vec!["--inject-fault".into(), spec]
}

/// One strike of a harness-driven fault on the sick worker.
async fn strike(
    failure: FailureType,
    workers: &mut LocalWorkers,
    timings: &Timings,
) -> Result<(), CliError> {
    let failure_timeout = Duration::from_millis(timings.failure_timeout_ms);
    match failure {
        FailureType::Crash => {
            workers.kill(SICK);
            tokio::time::sleep(failure_timeout / 5).await;
            workers.spawn(SICK).map_err(unavailable)?;
        }
        FailureType::Flapping => {
            // Down briefly, up briefly, three times.
            for _ in 0..3 {
                workers.kill(SICK);
                tokio::time::sleep(failure_timeout / 10).await;
                workers.spawn(SICK).map_err(unavailable)?;
                tokio::time::sleep(failure_timeout / 2).await;
            }
        }
        FailureType::Hang => {
            if let Some(pid) = workers.pid(SICK) {
                // SAFETY: signals to a child this process spawned and has not reaped.
                unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                tokio::time::sleep(failure_timeout * 3 / 2).await;
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            }
        }
        // Injected by the worker itself, all along.
        FailureType::ConnectionFailure | FailureType::Slow | FailureType::ResourceExhaustion => {}
    }
    Ok(())
}

/// The first value of the first row of `sql`, as a number (0 when absent).
async fn number(remote: &Remote, sql: &str) -> f64 {
    (crate::cli::query_rows(remote, sql, true).await)
        .ok()
        .and_then(|rows| rows.first()?.first()?.as_f64())
        .unwrap_or(0.0)
}

/// Waits until `count` workers are healthy.
async fn wait_for_workers(remote: &Remote, count: usize) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let healthy = number(
            remote,
            "SELECT count(*) FROM workers WHERE status = 'healthy'",
        )
        .await;
        if healthy as usize >= count {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(unavailable(format!(
        "{count} workers did not register within a minute"
    )))
}

async fn job_done(remote: &Remote, job: &str) -> bool {
    let sql = format!("SELECT count(*) FROM jobs WHERE id = '{job}' AND status = 'finished'");
    number(remote, &sql).await >= 1.0
}

/// Reads the run's figures back from the leader's tables.
async fn measure(
    remote: &Remote,
    job: &str,
    case: Case,
    usage: &[Usage],
    started: Instant,
) -> Result<RunResult, CliError> {
    let n = |sql: String| async move { number(remote, &sql).await };
    let makespan_ms = n(format!(
        "SELECT (epoch_us(coalesce(finished_at, now()::TIMESTAMP)) - epoch_us(submitted_at)) \
         / 1000.0 FROM jobs WHERE id = '{job}'"
    ))
    .await;
    let of_job = format!("task_id LIKE '{job}-%'");
    let tasks = n(format!("SELECT count(*) FROM tasks WHERE job_id = '{job}'")).await as u64;
    let passed = n(format!(
        "SELECT count(*) FROM tasks WHERE job_id = '{job}' AND status = 'passed'"
    ))
    .await as u64;
    let abandoned = n(format!(
        "SELECT count(*) FROM tasks WHERE job_id = '{job}' AND status = 'abandoned'"
    ))
    .await as u64;
    let sick_attempts = n(format!(
        "SELECT count(*) FROM task_attempts WHERE worker_id = '{SICK}' AND {of_job}"
    ))
    .await as u64;
    let wasted_attempts = n(format!(
        "SELECT count(*) FROM task_attempts WHERE worker_id = '{SICK}' AND {of_job} \
         AND (outcome = 'worker_fault' OR outcome LIKE 'requeued%')"
    ))
    .await as u64;
    let hit = format!(
        "SELECT r.task_id, min(epoch_us(r.recovery_time)) AS first FROM task_recovery_history r \
         WHERE r.{of_job} GROUP BY r.task_id"
    );
    let tasks_hit = n(format!("SELECT count(*) FROM ({hit})")).await as u64;
    let tasks_hit_passed = n(format!(
        "SELECT count(*) FROM ({hit}) h JOIN tasks t ON t.id = h.task_id \
         WHERE t.status = 'passed'"
    ))
    .await as u64;
    let task_recovery_ms = n(format!(
        "SELECT avg((epoch_us(t.finished_at) - h.first) / 1000.0) FROM ({hit}) h \
         JOIN tasks t ON t.id = h.task_id WHERE t.finished_at IS NOT NULL"
    ))
    .await;
    let worker_recoveries = n(format!(
        "SELECT count(*) FROM worker_recovery_history WHERE worker_id = '{SICK}' \
         AND recovery_type <> 'proactive_drain'"
    ))
    .await as u64;
    let worker_recoveries_succeeded = n(format!(
        "SELECT count(*) FROM worker_recovery_history WHERE worker_id = '{SICK}' \
         AND recovery_type <> 'proactive_drain' AND success"
    ))
    .await as u64;
    let breaker_transitions =
        n("SELECT count(*) FROM breaker_transitions".to_string()).await as u64;
    let runtime_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(RunResult {
        failure: case.failure,
        intensity: case.intensity,
        repetition: case.repetition,
        breakers: case.breakers,
        finished: false,
        makespan_ms,
        tasks,
        passed,
        abandoned,
        wasted_attempts,
        sick_attempts,
        tasks_hit,
        tasks_hit_passed,
        task_recovery_ms,
        worker_recoveries,
        worker_recoveries_succeeded,
        breaker_transitions,
        coordinator_cores: resources::cores_between(usage, 0.0, runtime_ms).unwrap_or(0.0),
        coordinator_peak_rss_bytes: usage.iter().map(|u| u.rss_bytes).max().unwrap_or(0),
    })
}
