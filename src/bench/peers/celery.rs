//! `testfleet bench peers celery`: Celery 5 + Redis and `bench tasks`, the same two
//! measurements in one run.
//!
//! Each round runs both, in an order that alternates from round to round:
//!
//! * **Testfleet**: [`crate::bench::tasks::run`] as it is — three coordinator processes,
//!   `--workers` worker processes of `--slots` slots, 200 warm-up tasks, a job of `--tasks`
//!   `true` commands (throughput: first submission to last result), then one-task jobs at an
//!   even pace of half that rate for `--half-load-seconds` (dispatch: submit → started).
//! * **Celery**: a `redis-server` started here on a free loopback port with persistence off
//!   (`--save "" --appendonly no`), and `benches/peers/celery_tasks.py` run by `--python`
//!   (written into the work directory from this binary), which starts `--workers` Celery
//!   workers of `--slots` prefork processes — the same 4 × 4 shape as Testfleet's by default —
//!   whose task runs `true` in a subprocess, and measures the same two things with the
//!   tasks' own stamps. Its batch is submitted while every worker is held (Celery's
//!   `cancel_consumer`) and runs from their release (`add_consumer`) to the last task's end:
//!   its client submits one `apply_async` at a time, about 800 a second on two cores, and a
//!   batch timed from the first submission measured that client, not Celery.
//!
//! The servers' CPU per task comes from a [`Sampler`] timeline of their `/proc` CPU, read
//! afterwards over each phase's window: for Testfleet the coordinators and the workers (the
//! windows from the tasks' stamps in a coordinator's DuckDB file, left in the round's
//! directory), for Celery the Redis server and the workers with their pool processes (the
//! windows from the script's report). Neither side counts its load generator (this process,
//! the script's client) nor the `true` processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::timeline::{Sampler, Timeline};
use super::{
    Compared, Daemon, check_common, first_line_of, log_tail, peer_first, require_program,
    version_in,
};
use crate::bench::commit::{optional, security_name};
use crate::bench::cpu::{cmdline, ratio};
use crate::bench::tasks::{TasksReport, TasksSettings};
use crate::cli::{CliError, Output, table};
use crate::demo::Latency;
use crate::demo::launch::{Security, free_port};

/// The script that drives Celery, built into this binary so that the command runs anywhere.
const SCRIPT: &str = include_str!("../../../benches/peers/celery_tasks.py");
/// How to install what the script needs.
const CELERY_INSTALL: &str = "python3 -m venv /opt/celery && /opt/celery/bin/pip install \
     'celery[redis]>=5,<6'`, then pass `--python /opt/celery/bin/python";
/// Coordinator processes of Testfleet's side, as in `bench tasks`' default.
const NODES: u64 = 3;
/// The timeline's groups: the control plane (coordinators; Redis), the workers, and (Celery
/// only) the client that submits, which is not a server and not in the servers' total.
const CONTROL: usize = 0;
const WORKERS: usize = 1;
const CLIENT: usize = 2;

/// Arguments of `testfleet bench peers celery`.
#[derive(Clone, Debug, clap::Args)]
pub struct CeleryArgs {
    /// Worker processes on each side (Testfleet workers; Celery workers)
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Slots of each Testfleet worker, and prefork processes of each Celery worker
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Tasks in the throughput batch
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    /// Seconds of paced submissions at half the measured rate
    #[arg(long, default_value_t = 5.0)]
    pub half_load_seconds: f64,
    /// Rounds; each runs both systems, the order alternating
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The Python that has Celery 5 and redis-py (e.g. a venv's bin/python)
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The Redis server binary (Debian: `apt-get install redis-server`)
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
    /// How Testfleet's cluster is protected (Redis runs without TLS or auth)
    #[arg(long, value_enum, default_value_t = Security::Open)]
    pub security: Security,
    /// Directory for both systems' files (default: a temporary directory)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl CeleryArgs {
    pub fn check(&self) -> Result<(), CliError> {
        check_common(
            self.rounds,
            &[("--half-load-seconds", self.half_load_seconds)],
        )?;
        for (flag, value, max) in [
            ("--workers", self.workers, 64),
            ("--slots", self.slots as usize, 64),
            ("--tasks", self.tasks, 1_000_000),
        ] {
            if value == 0 || value > max {
                return Err(CliError::Usage(format!(
                    "{flag} must be from 1 to {max}, got {value}"
                )));
            }
        }
        Ok(())
    }
}

/// A phase's window in wall-clock µs and how many tasks ran in it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub from_us: i64,
    pub to_us: i64,
    pub tasks: usize,
}

impl Window {
    pub fn seconds(&self) -> f64 {
        (self.to_us - self.from_us) as f64 / 1e6
    }
}

/// The servers' CPU per task over a window, whole and per group.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TaskCpu {
    pub us_per_task: Option<f64>,
    /// Coordinators (Testfleet) or the Redis server (Celery).
    pub control_us_per_task: Option<f64>,
    /// Worker processes (Celery: with their pool processes).
    pub workers_us_per_task: Option<f64>,
    /// The submitting client, where it is a process of its own (Celery's script); not in
    /// `us_per_task`.
    pub client_us_per_task: Option<f64>,
}

impl TaskCpu {
    /// The CPU of each group over `window`, divided by its tasks.
    pub fn of(timeline: &Timeline, window: &Window) -> TaskCpu {
        let Some(groups) = timeline.between(window.from_us, window.to_us) else {
            return TaskCpu::default();
        };
        let per = |d: Duration| ratio(d.as_secs_f64() * 1e6, window.tasks as f64);
        let group = |i: usize| groups.get(i).copied().and_then(per);
        TaskCpu {
            us_per_task: per(groups.iter().take(CLIENT).sum()),
            control_us_per_task: group(CONTROL),
            workers_us_per_task: group(WORKERS),
            client_us_per_task: group(CLIENT),
        }
    }
}

/// One system's figures in one round.
#[derive(Clone, Debug, Serialize)]
pub struct TaskSide {
    pub tasks: usize,
    pub tasks_per_sec: f64,
    pub batch: Window,
    /// How long the client took to submit the batch, when it is more than one call (Celery:
    /// one `apply_async` per task, with its workers held, so not in the batch's window;
    /// Testfleet submits the batch as one job).
    pub batch_submit_seconds: Option<f64>,
    pub batch_dispatch: Latency,
    pub half_load_rate: f64,
    pub half: Window,
    pub half_load_dispatch: Latency,
    /// Over the throughput batch.
    pub cpu: TaskCpu,
    /// Over the half-load phase.
    pub half_cpu: TaskCpu,
}

/// Both systems in one round.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub round: usize,
    pub celery_first: bool,
    pub celery: TaskSide,
    pub testfleet: TaskSide,
}

/// Medians over the rounds, and the medians of the rounds' ratios (Testfleet / Celery).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub tasks_per_sec: Compared,
    pub half_load_rate: Compared,
    pub half_load_p50_ms: Compared,
    pub half_load_p99_ms: Compared,
    pub cpu_us_per_task: Compared,
    pub control_cpu_us_per_task: Compared,
    pub workers_cpu_us_per_task: Compared,
    pub half_load_cpu_us_per_task: Compared,
}

/// What `bench peers celery` measured.
#[derive(Clone, Debug, Serialize)]
pub struct CeleryReport {
    pub versions: Versions,
    pub testfleet_security: Security,
    pub workers: usize,
    pub slots: u32,
    pub tasks: usize,
    pub half_load_seconds: f64,
    pub summary: Summary,
    pub rounds: Vec<Round>,
}

/// The peer's software, as it reports itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Versions {
    pub celery: String,
    pub redis_py: String,
    pub python: String,
    #[serde(default)]
    pub redis_server: String,
}

/// The script's report (`celery_tasks.py`, one JSON document).
#[derive(Debug, Deserialize)]
pub struct ScriptReport {
    #[serde(flatten)]
    pub versions: Versions,
    pub worker_pids: Vec<u32>,
    pub batch: ScriptPhase,
    pub half: ScriptPhase,
}

/// One phase of the script's report.
#[derive(Debug, Deserialize)]
pub struct ScriptPhase {
    pub tasks: usize,
    #[serde(default)]
    pub rate: Option<f64>,
    pub first_submit_us: i64,
    /// When the client had submitted the whole batch (the batch phase only).
    #[serde(default)]
    pub last_submit_us: Option<i64>,
    /// When the workers, held while the batch was submitted, were let consume it (the batch
    /// phase only): where its throughput window starts.
    #[serde(default)]
    pub released_us: Option<i64>,
    pub last_finish_us: i64,
    pub dispatch_us: Vec<i64>,
}

impl ScriptPhase {
    fn window(&self) -> Window {
        Window {
            from_us: self.released_us.unwrap_or(self.first_submit_us),
            to_us: self.last_finish_us,
            tasks: self.tasks,
        }
    }

    fn dispatch(&self) -> Latency {
        Latency::of(
            (self.dispatch_us.iter())
                .map(|us| Duration::from_micros((*us).max(0) as u64))
                .collect(),
        )
    }
}

/// Parses and checks the script's report: every task accounted for, windows in order.
pub fn parse_script_report(text: &str) -> Result<ScriptReport, String> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or("the Celery script printed no JSON report")?;
    let report: ScriptReport =
        serde_json::from_str(line).map_err(|e| format!("the Celery script's report: {e}"))?;
    for (name, phase) in [("batch", &report.batch), ("half", &report.half)] {
        if phase.tasks == 0 || phase.dispatch_us.len() != phase.tasks {
            return Err(format!(
                "the Celery script's {name} phase has {} dispatch times for {} tasks",
                phase.dispatch_us.len(),
                phase.tasks
            ));
        }
        if phase.last_finish_us <= phase.window().from_us {
            return Err(format!(
                "the Celery script's {name} phase ends before it starts"
            ));
        }
    }
    Ok(report)
}

/// Runs the comparison.
pub async fn run(args: &CeleryArgs) -> Result<CeleryReport, CliError> {
    args.check()?;
    let redis = require_program(
        &args.redis_server,
        "--redis-server",
        "apt-get install redis-server",
    )?;
    let python = require_program(&args.python, "--python", "apt-get install python3")?;
    let (_temp, dir) = crate::demo::work_dir("testfleet-peers-celery-", args.data_dir.as_deref())?;
    let script = dir.join("celery_tasks.py");
    std::fs::write(&script, SCRIPT)
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", script.display())))?;
    let mut versions = celery_versions(&python, &script)?;
    versions.redis_server = version_in(&first_line_of(&redis, &["--version"]));
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let round_dir = dir.join(format!("round-{}", round + 1));
        let celery_first = peer_first(round, 0);
        let (celery, testfleet) = if celery_first {
            let celery = celery_side(args, &redis, &python, &script, &round_dir).await?;
            (celery, testfleet_side(args, &round_dir).await?)
        } else {
            let testfleet = testfleet_side(args, &round_dir).await?;
            (
                celery_side(args, &redis, &python, &script, &round_dir).await?,
                testfleet,
            )
        };
        rounds.push(Round {
            round,
            celery_first,
            celery,
            testfleet,
        });
    }
    Ok(CeleryReport {
        versions,
        testfleet_security: args.security,
        workers: args.workers,
        slots: args.slots,
        tasks: args.tasks,
        half_load_seconds: args.half_load_seconds,
        summary: summarise(&rounds),
        rounds,
    })
}

/// The versions the script reports with `--check`, or how to install what is missing.
fn celery_versions(python: &Path, script: &Path) -> Result<Versions, CliError> {
    let out = Command::new(python)
        .arg(script)
        .arg("--check")
        .output()
        .map_err(|e| CliError::Usage(format!("cannot run {}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(CliError::Usage(format!(
            "{} cannot run the Celery benchmark ({}): install Celery 5 with its Redis client \
             with `{CELERY_INSTALL}`",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| CliError::Other(format!("the Celery script's --check answer: {e}")))
}

/// One round of `bench tasks`, with the coordinators' and workers' CPU over its phases.
async fn testfleet_side(args: &CeleryArgs, round_dir: &Path) -> Result<TaskSide, CliError> {
    let dir = round_dir.join("testfleet");
    let binary = crate::demo::this_binary()?.display().to_string();
    let me = std::process::id();
    let sampler = Sampler::start(
        2,
        Box::new(move |all| {
            (all.iter().filter(|p| p.ppid == me))
                .filter_map(|p| {
                    let argv = cmdline(p.pid);
                    if argv.first() != Some(&binary) {
                        return None;
                    }
                    match argv.get(1).map(String::as_str) {
                        Some("coordinator") => Some((CONTROL, p.pid)),
                        Some("worker") => Some((WORKERS, p.pid)),
                        _ => None,
                    }
                })
                .collect()
        }),
    )
    .map_err(CliError::Other)?;
    let settings = TasksSettings {
        security: args.security,
        nodes: NODES,
        workers: args.workers,
        slots: args.slots,
        tasks: args.tasks,
        half_load_seconds: args.half_load_seconds,
        data_dir: Some(dir.clone()),
    };
    let report = crate::bench::tasks::run(&settings).await;
    let timeline = sampler.finish().map_err(CliError::Other)?;
    let report: TasksReport = report?;
    let (batch, half) = testfleet_windows(&dir, args.tasks)?;
    Ok(TaskSide {
        tasks: report.tasks,
        tasks_per_sec: report.tasks_per_sec,
        batch,
        batch_submit_seconds: None,
        batch_dispatch: report.full_load_dispatch,
        half_load_rate: report.half_load_rate,
        half,
        half_load_dispatch: report.half_load_dispatch,
        cpu: TaskCpu::of(&timeline, &batch),
        half_cpu: TaskCpu::of(&timeline, &half),
    })
}

/// The windows of `bench tasks`' throughput job (`full`) and half-load jobs (`half`), from the
/// tasks' stamps in the first coordinator's DuckDB file that holds all of them.
fn testfleet_windows(dir: &Path, tasks: usize) -> Result<(Window, Window), CliError> {
    let mut errors = Vec::new();
    for node in 1..=NODES {
        let path = dir.join(format!("node-{node}")).join("state.duckdb");
        match windows_in(&path) {
            Ok((full, half)) if full.tasks == tasks && half.tasks > 0 => return Ok((full, half)),
            Ok((full, _)) => errors.push(format!(
                "{}: {} of {tasks} tasks of the throughput job",
                path.display(),
                full.tasks
            )),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    Err(CliError::Other(format!(
        "cannot read the task windows of `bench tasks`: {}",
        errors.join("; ")
    )))
}

fn windows_in(path: &Path) -> Result<(Window, Window), duckdb::Error> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)?
        .threads(1)?;
    let conn = duckdb::Connection::open_with_flags(path, config)?;
    let window = |name: &str| -> Result<Window, duckdb::Error> {
        conn.query_row(
            "SELECT coalesce(min(epoch_us(t.submitted_at)), 0), \
             coalesce(max(epoch_us(t.finished_at)), 0), count(*) FROM tasks t \
             JOIN jobs j ON j.id = t.job_id WHERE j.name = ?",
            [name],
            |row| {
                Ok(Window {
                    from_us: row.get(0)?,
                    to_us: row.get(1)?,
                    tasks: row.get::<_, i64>(2)?.max(0) as usize,
                })
            },
        )
    };
    Ok((window("full")?, window("half")?))
}

/// One round of Celery: a fresh Redis, the script, and the servers' CPU over its phases.
async fn celery_side(
    args: &CeleryArgs,
    redis_bin: &Path,
    python: &Path,
    script: &Path,
    round_dir: &Path,
) -> Result<TaskSide, CliError> {
    let dir = round_dir.join("celery");
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
    let port = free_port().map_err(|e| CliError::Other(e.to_string()))?;
    let mut command = Command::new(redis_bin);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&dir);
    let mut redis = Daemon::spawn("redis-server", command, &dir.join("redis.log"))?;
    let addr = format!("127.0.0.1:{port}");
    super::wait_until(
        Duration::from_secs(20),
        "redis-server did not answer PING",
        || {
            let running = redis.check_running().map_err(|e| e.to_string());
            let addr = addr.clone();
            async move {
                running?;
                ping(&addr).await
            }
        },
    )
    .await?;
    let redis_pid = redis.pid().unwrap_or(0);

    let mut command = Command::new(python);
    command
        .arg(script)
        .args(["--workers", &args.workers.to_string()])
        .args(["--concurrency", &args.slots.to_string()])
        .args(["--tasks", &args.tasks.to_string()])
        .args(["--half-load-seconds", &args.half_load_seconds.to_string()])
        .arg("--log-dir")
        .arg(&dir)
        .env("PEERS_CELERY_REDIS", format!("redis://{addr}"));
    // The script runs as a daemon (its own process group, killed with its workers if this
    // command stops early); its report goes to a file.
    let out_path = dir.join("report.json");
    let out = std::fs::File::create(&out_path)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", out_path.display())))?;
    command.stdout(out);
    let script_log = dir.join("script.log");
    let mut driver = Daemon::spawn_keeping_stdout("the Celery script", command, &script_log)?;
    let script_pid = driver.pid().unwrap_or(0);
    // The servers: Redis, the Celery workers (the script's children) and their pool processes
    // (the workers' children); not `true`. The script itself, the client, apart.
    let sampler = Sampler::start(
        3,
        Box::new(move |all| {
            let workers: Vec<u32> = (all.iter().filter(|p| p.ppid == script_pid))
                .map(|p| p.pid)
                .collect();
            let pool = (all.iter().filter(|p| workers.contains(&p.ppid))).map(|p| p.pid);
            [(CONTROL, redis_pid), (CLIENT, script_pid)]
                .into_iter()
                .chain(workers.iter().map(|pid| (WORKERS, *pid)))
                .chain(pool.map(|pid| (WORKERS, pid)))
                .collect()
        }),
    )
    .map_err(CliError::Other)?;
    let status = loop {
        match driver.try_status() {
            Ok(Some(status)) => break status,
            Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                let _ = sampler.finish();
                return Err(e);
            }
        }
    };
    let timeline = sampler.finish().map_err(CliError::Other)?;
    drop(redis);
    if !status.success() {
        return Err(CliError::Unavailable(format!(
            "the Celery script failed ({status}): {}\n(its files are in {})",
            log_tail(&script_log, 10),
            dir.display()
        )));
    }
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let report = parse_script_report(&text).map_err(CliError::Other)?;
    let batch = report.batch.window();
    let half = report.half.window();
    Ok(TaskSide {
        tasks: report.batch.tasks,
        tasks_per_sec: ratio(batch.tasks as f64, batch.seconds()).unwrap_or(0.0),
        batch,
        batch_submit_seconds: (report.batch.last_submit_us)
            .map(|last| (last - report.batch.first_submit_us) as f64 / 1e6),
        batch_dispatch: report.batch.dispatch(),
        half_load_rate: report.half.rate.unwrap_or(0.0),
        half,
        half_load_dispatch: report.half.dispatch(),
        cpu: TaskCpu::of(&timeline, &batch),
        half_cpu: TaskCpu::of(&timeline, &half),
    })
}

/// Sends Redis `PING` and expects `+PONG`.
async fn ping(addr: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .write_all(b"PING\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = [0u8; 7];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        if &answer == b"+PONG\r\n" {
            Ok(())
        } else {
            Err(format!(
                "{addr} answered {:?}",
                String::from_utf8_lossy(&answer)
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .map_err(|_| format!("{addr} did not answer PING within 1 s"))?
}

/// Medians and ratios over the rounds.
pub fn summarise(rounds: &[Round]) -> Summary {
    let both = |f: fn(&TaskSide) -> Option<f64>| {
        Compared::of(rounds, move |r| f(&r.testfleet), move |r| f(&r.celery))
    };
    Summary {
        tasks_per_sec: both(|s| Some(s.tasks_per_sec)),
        half_load_rate: both(|s| Some(s.half_load_rate)),
        half_load_p50_ms: both(|s| Some(s.half_load_dispatch.p50_ms)),
        half_load_p99_ms: both(|s| Some(s.half_load_dispatch.p99_ms)),
        cpu_us_per_task: both(|s| s.cpu.us_per_task),
        control_cpu_us_per_task: both(|s| s.cpu.control_us_per_task),
        workers_cpu_us_per_task: both(|s| s.cpu.workers_us_per_task),
        half_load_cpu_us_per_task: both(|s| s.half_cpu.us_per_task),
    }
}

/// Renders the report.
pub fn render(r: &CeleryReport, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(r).unwrap_or_default() + "\n";
    }
    let v = &r.versions;
    let mut out = format!(
        "Celery {} (redis-py {}, Python {}) on Redis {} (no persistence), and Testfleet (3 \
         coordinators, security: {}); {} workers x {} slots / prefork processes each, tasks \
         run `true`; {} tasks per batch, {} s at half load, {} round(s), alternating\n\
         medians over the rounds; ratio = Testfleet / Celery, the median of the rounds' ratios\n\n",
        v.celery,
        v.redis_py,
        v.python,
        v.redis_server,
        security_name(r.testfleet_security),
        r.workers,
        r.slots,
        r.tasks,
        r.half_load_seconds,
        r.rounds.len()
    );
    let s = &r.summary;
    let rows: Vec<Vec<String>> = [
        ("tasks/s (batch)", s.tasks_per_sec, 0),
        ("half load, tasks/s", s.half_load_rate, 0),
        ("dispatch p50 ms at half load", s.half_load_p50_ms, 2),
        ("dispatch p99 ms at half load", s.half_load_p99_ms, 2),
        ("server CPU us/task (batch)", s.cpu_us_per_task, 0),
        ("  coordinators / redis", s.control_cpu_us_per_task, 0),
        ("  workers", s.workers_cpu_us_per_task, 0),
        (
            "server CPU us/task (half load)",
            s.half_load_cpu_us_per_task,
            0,
        ),
    ]
    .into_iter()
    .map(|(name, c, decimals)| {
        let [t, p, ratio] = c.cells(decimals);
        vec![name.to_string(), t, p, ratio]
    })
    .collect();
    out.push_str(&table(&["MEASURE", "TESTFLEET", "CELERY", "RATIO"], &rows));
    let submit = super::median_known(r.rounds.iter().map(|r| r.celery.batch_submit_seconds));
    let batch = super::median_known(r.rounds.iter().map(|r| Some(r.celery.batch.seconds())));
    let client = super::median_known(r.rounds.iter().map(|r| r.celery.cpu.client_us_per_task));
    if let (Some(submit), Some(batch)) = (submit, batch) {
        out.push_str(&format!(
            "Celery's batch was submitted with its workers held: its client took {submit:.2} s \
             (one apply_async per task), then the batch ran {batch:.2} s from their release; \
             the client's {} us of CPU per task are not counted above (medians). \
             Testfleet's batch is one job\n",
            optional(client, 0)
        ));
    }
    out.push_str("\nevery round:\n");
    let rows: Vec<Vec<String>> = (r.rounds.iter())
        .map(|round| {
            let (t, c) = (&round.testfleet, &round.celery);
            vec![
                (round.round + 1).to_string(),
                if round.celery_first {
                    "Celery"
                } else {
                    "Testfleet"
                }
                .to_string(),
                format!("{:.0} / {:.0}", t.tasks_per_sec, c.tasks_per_sec),
                format!(
                    "{:.2} / {:.2}",
                    t.half_load_dispatch.p50_ms, c.half_load_dispatch.p50_ms
                ),
                format!(
                    "{:.2} / {:.2}",
                    t.half_load_dispatch.p99_ms, c.half_load_dispatch.p99_ms
                ),
                format!(
                    "{} / {}",
                    optional(t.cpu.us_per_task, 0),
                    optional(c.cpu.us_per_task, 0)
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ROUND",
            "FIRST",
            "TASKS/S TF / CELERY",
            "HALF P50 MS",
            "HALF P99 MS",
            "CPU US/TASK",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests;
