//! A whole fleet on this machine for one command: `testfleet run --local N PLAN`.
//!
//! [`LocalFleet::start`] starts a single-node coordinator inside this process (the embedding
//! API, [`AutoRecoverySystem`], on 127.0.0.1 and a free port) and N `testfleet worker`
//! processes of this same binary (`local-1` … `local-N`), and returns once the coordinator
//! leads and every worker is registered healthy. The caller then talks to it as to any
//! cluster, through [`LocalFleet::remote`]; [`LocalFleet::stop`] stops the workers (SIGTERM:
//! they leave the fleet) and the coordinator.
//!
//! **Where things go.** Everything lives in one data directory, the one given or a temporary
//! one that is removed at the end (kept, and named, when the fleet fails to start):
//! `auth/` (fresh role tokens, made as `testfleet auth init` makes them), `state.duckdb` with
//! the Raft log and snapshots beside it, `coordinator.log` (this process's log while the fleet
//! runs: the coordinator's lines would drown the job's progress on stderr), `local-N.log` (each
//! worker's stderr) and `workers/` (the workers' state directory). A kept directory can be read
//! later by a coordinator started on it: `testfleet coordinator --db-path DIR/state.duckdb
//! --auth-dir DIR/auth`.
//!
//! **Trust.** The coordinator checks the tokens of `auth/` (mode 0600 in a 0700 directory),
//! so another user of the machine cannot submit commands to it although it listens on
//! loopback; the workers present the worker token, [`LocalFleet::remote`] the operator's.
//!
//! **No process is left behind.** Workers run in process groups of their own, so a Ctrl-C in
//! the terminal reaches only the command, which decides (see [`run`]): cancel the job, then stop
//! the fleet. On Linux each worker also gets SIGTERM when this process dies however it dies
//! (`PR_SET_PDEATHSIG`), and leaves. Dropping a fleet that was not stopped terminates its
//! workers too (SIGTERM, then SIGKILL after a bound).

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::{CliError, Remote, jobs};
use crate::auth::token::token_path;
use crate::auth::{Credentials, Role, Token};
use crate::config::CoordinatorArgs;
use crate::embed::AutoRecoverySystem;
use crate::proto::JobReport;
use crate::state::command::TaskSpec;

/// How long the coordinator may take to lead.
const LEAD_WITHIN: Duration = Duration::from_secs(30);
/// How long the workers may take to start and register.
const REGISTER_WITHIN: Duration = Duration::from_secs(60);
/// The `--grace` of local workers: how long a leaving worker lets running attempts finish.
const WORKER_GRACE: &str = "5s";
/// How long stopping workers may take to leave (their grace and some) before SIGKILL.
const LEAVE_WITHIN: Duration = Duration::from_secs(10);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);

/// What the local fleet is made of.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Worker processes (one slot each).
    pub workers: usize,
    /// Where the data goes and stays; a temporary directory, removed at the end, without it.
    pub data_dir: Option<PathBuf>,
    /// Let the workers probe GPUs and browsers (seconds per worker) instead of `--no-probe`.
    pub probe: bool,
}

/// One `testfleet worker` process of the fleet.
struct LocalWorker {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A coordinator in this process and N worker processes, for the life of one command.
pub struct LocalFleet {
    dir: PathBuf,
    /// The temporary directory, when none was given: removed when the fleet is dropped.
    temp: Option<tempfile::TempDir>,
    system: Option<AutoRecoverySystem>,
    workers: Vec<LocalWorker>,
    remote: Remote,
    addr: Option<SocketAddr>,
}

impl LocalFleet {
    /// Starts a coordinator and `workers` workers (not probing) with their data in `data_dir`,
    /// or in a temporary directory. See [`LocalFleet::start_with`].
    pub async fn start(workers: usize, data_dir: Option<&Path>) -> Result<LocalFleet, CliError> {
        Self::start_with(&LocalOptions {
            workers,
            data_dir: data_dir.map(Path::to_path_buf),
            probe: false,
        })
        .await
    }

    /// Starts the fleet and returns once the coordinator leads and every worker is registered
    /// healthy. On failure everything started is stopped, and the error names the directory
    /// holding the logs (a temporary one is kept for that).
    ///
    /// Call it from a thread that outlives the fleet (an async task or `block_on`, not
    /// `spawn_blocking`): on Linux a worker is sent SIGTERM when the thread that started it
    /// ends.
    pub async fn start_with(options: &LocalOptions) -> Result<LocalFleet, CliError> {
        if options.workers == 0 {
            return Err(CliError::Usage("--local needs at least one worker".into()));
        }
        let (dir, temp) = match &options.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    CliError::Usage(format!("cannot make data directory {}: {e}", dir.display()))
                })?;
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("testfleet-local-")
                    .tempdir()
                    .map_err(|e| {
                        CliError::Other(format!("cannot make a temporary directory: {e}"))
                    })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let mut fleet = LocalFleet {
            dir,
            temp,
            system: None,
            workers: Vec::new(),
            remote: Remote::new(Vec::new(), Credentials::none()),
            addr: None,
        };
        match fleet.launch(options).await {
            Ok(()) => Ok(fleet),
            Err(e) => {
                fleet.kill_workers();
                if let Some(mut system) = fleet.system.take() {
                    let _ = system.shutdown().await;
                }
                logs::restore();
                if let CliError::Usage(why) = e {
                    return Err(CliError::Usage(why));
                }
                let kept = match fleet.temp.take() {
                    Some(temp) => temp.keep(),
                    None => fleet.dir.clone(),
                };
                Err(CliError::Other(format!(
                    "the local fleet did not start: {e} (its logs are in {})",
                    kept.display()
                )))
            }
        }
    }

    async fn launch(&mut self, options: &LocalOptions) -> Result<(), CliError> {
        let auth = self.dir.join("auth");
        crate::auth::token::init(&auth, true).map_err(|e| {
            CliError::Usage(format!("cannot make tokens in {}: {e}", auth.display()))
        })?;
        let log = self.dir.join("coordinator.log");
        logs::redirect(&log)
            .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", log.display())))?;

        let args = CoordinatorArgs {
            db_path: Some(self.dir.join("state.duckdb")),
            bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            auth_dir: Some(auth.clone()),
            ..CoordinatorArgs::default()
        };
        let mut system = AutoRecoverySystem::from_args(args)
            .map_err(|e| CliError::Usage(e.to_string()))?
            .with_port(0);
        let started = system.start().await;
        let addr = system.local_addr();
        self.system = Some(system);
        started.map_err(|e| match e {
            crate::embed::EmbedError::Coordinator(
                e @ (crate::coordinator::CoordinatorError::DataDirInUse { .. }
                | crate::coordinator::CoordinatorError::DbInUse { .. }),
            ) => CliError::Usage(e.to_string()),
            e => CliError::Other(format!("the coordinator failed: {e}")),
        })?;
        let addr = addr.ok_or_else(|| CliError::Other("the coordinator has no address".into()))?;
        self.addr = Some(addr);
        let operator = Token::read(&token_path(&auth, Role::Operator))
            .map_err(|e| CliError::Other(e.to_string()))?;
        self.remote = Remote::new(
            vec![addr.to_string()],
            Credentials::none().with_token(operator),
        );

        let deadline = Instant::now() + LEAD_WITHIN;
        while !self.system.as_ref().is_some_and(|s| s.is_leader()) {
            if Instant::now() > deadline {
                return Err(CliError::Other(format!(
                    "the coordinator did not lead within {LEAD_WITHIN:?}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }

        // Registrations from now on: a reused data directory may hold these names already.
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let exe = std::env::current_exe()
            .map_err(|e| CliError::Other(format!("cannot find this program's file: {e}")))?;
        let state_dir = self.dir.join("workers");
        let token = token_path(&auth, Role::Worker);
        for i in 1..=options.workers {
            let name = format!("local-{i}");
            let log = self.dir.join(format!("{name}.log"));
            let child = spawn_worker(&exe, &addr, &name, &state_dir, &token, &log, options)
                .map_err(|e| CliError::Other(format!("cannot start worker {name}: {e}")))?;
            self.workers.push(LocalWorker { name, child, log });
        }
        self.wait_registered(since).await
    }

    /// Waits until every worker is registered healthy (a registration after `since`, Unix
    /// milliseconds), reading the leader's state as `testfleet workers` does.
    async fn wait_registered(&mut self, since: u128) -> Result<(), CliError> {
        let names: Vec<String> = self
            .workers
            .iter()
            .map(|w| format!("'{}'", w.name))
            .collect();
        let sql = format!(
            "SELECT id FROM workers WHERE status = 'healthy' AND \
             epoch_ms(status_changed_at) >= {since} AND id IN ({})",
            names.join(", ")
        );
        let deadline = Instant::now() + REGISTER_WITHIN;
        loop {
            for worker in &mut self.workers {
                if let Ok(Some(status)) = worker.child.try_wait() {
                    return Err(CliError::Other(format!(
                        "worker {} stopped ({status}) before it registered; the end of {}:\n{}",
                        worker.name,
                        worker.log.display(),
                        tail(&worker.log, 10)
                    )));
                }
            }
            let registered = match super::query_rows(&self.remote, &sql, true).await {
                Ok(rows) => rows.len(),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => 0,
            };
            if registered == self.workers.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CliError::Other(format!(
                    "{registered} of {} workers registered within {REGISTER_WITHIN:?}",
                    self.workers.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The coordinator, as an operator reaches it: any client command works with it.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The coordinator's address (127.0.0.1 and the port it got).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The data directory (temporary unless one was given).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the data directory goes away with the fleet.
    pub fn is_temporary(&self) -> bool {
        self.temp.is_some()
    }

    /// The workers' names, `local-1` … `local-N`.
    pub fn worker_names(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.name.clone()).collect()
    }

    /// Stops the workers — SIGTERM (each leaves the fleet, letting a running attempt finish
    /// for a few seconds), SIGKILL for any still running after `LEAVE_WITHIN` (10 s) — and
    /// then the coordinator. The data directory stays if it was given.
    pub async fn stop(&mut self) -> Result<(), CliError> {
        for worker in &self.workers {
            signal(&worker.child, libc::SIGTERM);
        }
        let deadline = Instant::now() + LEAVE_WITHIN;
        while self.any_running() && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        let stubborn: Vec<String> = self
            .workers
            .iter_mut()
            .filter_map(|w| matches!(w.child.try_wait(), Ok(None)).then(|| w.name.clone()))
            .collect();
        self.kill_workers();
        let stopped = match self.system.take() {
            Some(mut system) => system
                .shutdown()
                .await
                .map_err(|e| CliError::Other(format!("the local coordinator failed: {e}"))),
            None => Ok(()),
        };
        logs::restore();
        if !stubborn.is_empty() {
            return Err(CliError::Other(format!(
                "worker(s) {} did not leave within {LEAVE_WITHIN:?} and were killed",
                stubborn.join(", ")
            )));
        }
        stopped
    }

    fn any_running(&mut self) -> bool {
        self.workers
            .iter_mut()
            .any(|w| matches!(w.child.try_wait(), Ok(None)))
    }

    /// SIGKILLs every worker still running and reaps them all.
    fn kill_workers(&mut self) {
        for worker in &mut self.workers {
            if matches!(worker.child.try_wait(), Ok(None)) {
                let _ = worker.child.kill();
            }
            let _ = worker.child.wait();
        }
        self.workers.clear();
    }
}

impl Drop for LocalFleet {
    /// A fleet not stopped (an error, a panic, an interrupted start): SIGTERM the workers,
    /// give them `LEAVE_WITHIN` (10 s) to leave, then SIGKILL. The coordinator stops with the
    /// process's runtime.
    fn drop(&mut self) {
        if self.workers.is_empty() {
            logs::restore();
            return;
        }
        for worker in &self.workers {
            signal(&worker.child, libc::SIGTERM);
        }
        let deadline = Instant::now() + LEAVE_WITHIN;
        while self.any_running() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        self.kill_workers();
        logs::restore();
    }
}

/// Sends `signal` to a child that has not been reaped (its pid cannot have been reused).
fn signal(child: &Child, signal: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill takes no pointers; the pid is our unreaped child's.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Starts `testfleet worker` for the fleet, in a process group of its own, its stdout and
/// stderr into `log`.
fn spawn_worker(
    exe: &Path,
    addr: &SocketAddr,
    name: &str,
    state_dir: &Path,
    token: &Path,
    log: &Path,
    options: &LocalOptions,
) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let out = File::create(log)?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("worker")
        .arg("--coordinator")
        .arg(addr.to_string())
        .args(["--name", name, "--grace", WORKER_GRACE])
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--token-file")
        .arg(token);
    if !options.probe {
        command.arg("--no-probe");
    }
    // What the user's environment says about another cluster or another worker does not
    // apply to these (the flags above win over most, but not over TLS or a raw token).
    for var in [
        "TESTFLEET_COORDINATOR",
        "TESTFLEET_TOKEN",
        "TESTFLEET_TOKEN_FILE",
        "TESTFLEET_TLS_CERT",
        "TESTFLEET_TLS_KEY",
        "TESTFLEET_TLS_CA",
        "TESTFLEET_WORKER_NAME",
        "TESTFLEET_WORKER_STATE_DIR",
        "TESTFLEET_WORKER_GRACE",
    ] {
        command.env_remove(var);
    }
    command
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        // Ctrl-C in the terminal reaches the command, which stops the workers itself.
        .process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the request took effect.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the parent process is gone"));
                }
                Ok(())
            });
        }
    }
    command.spawn()
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `testfleet run --local`: starts a fleet as `options` says, runs the plan's tasks as one job
/// named `name`, follows it to its end, stops the fleet and returns the job's report (the
/// caller prints the summary and exits with its code, as `run` does).
///
/// Ctrl-C (or SIGTERM) while the fleet starts stops it and exits 130. While the job runs, the
/// first one cancels the job and waits for its tasks to stop (the job then ends `cancelled`,
/// exit 1); a second one stops the fleet at once (exit 130): unlike `run` against a cluster,
/// nothing can go on running after the command.
pub async fn run(
    options: &LocalOptions,
    name: &str,
    specs: &[TaskSpec],
) -> Result<JobReport, CliError> {
    let mut signals = signals();
    let began = Instant::now();
    let mut fleet = tokio::select! {
        fleet = LocalFleet::start_with(options) => fleet?,
        _ = signals.recv() => {
            eprintln!("interrupted while the local fleet started; stopped it");
            return Err(CliError::Exit(130));
        }
    };
    let place = if fleet.is_temporary() {
        "data in a temporary directory; --data-dir DIR keeps it".to_string()
    } else {
        format!("data and logs in {}", fleet.data_dir().display())
    };
    eprintln!(
        "local fleet up in {:.1} s: a coordinator on {} and {} workers ({place})",
        began.elapsed().as_secs_f64(),
        fleet.addr().map_or_else(String::new, |a| a.to_string()),
        options.workers,
    );
    let result = follow(&fleet, &mut signals, name, specs).await;
    if let Err(e) = fleet.stop().await {
        eprintln!("warning: stopping the local fleet: {e}");
    }
    result
}

/// Submits the job and follows it; interrupts as [`run`] says.
async fn follow(
    fleet: &LocalFleet,
    signals: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    name: &str,
    specs: &[TaskSpec],
) -> Result<JobReport, CliError> {
    let remote = fleet.remote();
    let job_id = uuid::Uuid::new_v4().to_string();
    let count = jobs::submit(remote, &job_id, name, specs).await?;
    eprintln!("submitted job {name} ({job_id}) with {count} tasks");
    let following = jobs::follow(remote, &job_id);
    tokio::pin!(following);
    let mut cancelling = false;
    loop {
        tokio::select! {
            report = &mut following => return report,
            Some(()) = signals.recv() => {
                if cancelling {
                    eprintln!("stopping the local fleet now; job {job_id} did not finish");
                    return Err(CliError::Exit(130));
                }
                cancelling = true;
                eprintln!(
                    "cancelling job {job_id} and waiting for its tasks to stop (Ctrl-C again to \
                     stop the local fleet at once)"
                );
                let reason = "interrupted (Ctrl-C) by the client that ran it";
                match jobs::cancel(remote, &job_id, reason).await {
                    // Cancelled, or finished meanwhile: the report says which.
                    Ok(()) | Err(CliError::Usage(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Every SIGINT and SIGTERM from now on, as a message: the handlers are in place when this
/// returns, and neither signal ends the process any more.
fn signals() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        match signal(kind) {
            Ok(mut stream) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if tx.send(()).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot catch {kind:?} ({e}): it will stop only this process"),
        }
    }
    rx
}

/// Where the `testfleet` binary's log lines go: stderr, except while a local fleet runs, when
/// they go to its `coordinator.log` (the coordinator logs in this process).
pub mod logs {
    use super::*;

    static FILE: Mutex<Option<Arc<File>>> = Mutex::new(None);

    fn slot() -> std::sync::MutexGuard<'static, Option<Arc<File>>> {
        FILE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the log to `path` (appended) from now on.
    pub fn redirect(path: &Path) -> std::io::Result<()> {
        let file = File::options().create(true).append(true).open(path)?;
        *slot() = Some(Arc::new(file));
        Ok(())
    }

    /// Sends the log to stderr again.
    pub fn restore() {
        *slot() = None;
    }

    /// The binary's `tracing` writer (`with_writer(logs::Writer)`).
    pub struct Writer;

    /// One log line's destination.
    pub enum Sink {
        Stderr(std::io::Stderr),
        File(Arc<File>),
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match self {
                Sink::Stderr(out) => out.write(buf),
                Sink::File(file) => (&**file).write(buf),
            }
        }

        fn flush(&mut self) -> std::io::Result<()> {
            match self {
                Sink::Stderr(out) => out.flush(),
                Sink::File(file) => (&**file).flush(),
            }
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writer {
        type Writer = Sink;

        fn make_writer(&'a self) -> Sink {
            match slot().clone() {
                Some(file) => Sink::File(file),
                None => Sink::Stderr(std::io::stderr()),
            }
        }
    }
}
