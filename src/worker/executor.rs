//! Runs one attempt of a task as a subprocess on a worker.
//!
//! The worker agent calls [`run`] (or [`Running::spawn`], when something else must be able to
//! stop the attempt) once per attempt whose assignment has been committed
//! (ARCHITECTURE.md § Task path). It reports `TaskStarted{task, attempt}`, awaits the
//! [`AttemptResult`] and reports it as `FinishTask{task, attempt, ...}`. This module knows
//! nothing of tasks, attempts or coordinators: it turns an [`AttemptSpec`] into an
//! [`AttemptResult`], and promises three things.
//!
//! **Nothing outlives the attempt.** The command leads its own process group (`setpgid(0, 0)`
//! at spawn). On timeout or cancellation the whole group gets SIGKILL, so a shell's background
//! jobs die with it. After a normal exit the readers get [`EXIT_GRACE`] to see end of file,
//! then whatever is left of the group (background processes the test forgot) is killed too:
//! a stray grandchild holding the output pipes open can delay the result by the grace, never
//! hang it.
//!
//! **Memory is bounded.** stdout and stderr are read concurrently into one tail buffer of
//! [`AttemptSpec::output_limit`] bytes. Older bytes are dropped and counted, so a child printing
//! gigabytes never blocks on a full pipe and never grows the worker.
//!
//! **Output can be watched while it is printed.** [`run_observed`] shares that tail buffer as
//! a [`LiveOutput`]: byte offsets into the attempt's whole output, a way to read from an
//! offset, and a `watch` channel that says how far the output got. A watcher that falls
//! behind never holds anything up: it reads on from where it is and learns how many bytes
//! scrolled out of the tail meanwhile (a gap), so no buffer grows for it.
//!
//! **The outcome says whose fault it was** (ARCHITECTURE.md § Outcomes). Exit 0 is
//! [`Outcome::Passed`]; a non-zero exit or death by a signal we did not send is
//! [`Outcome::Failed`] (a test result). Past the timeout it is [`Outcome::TimedOut`]. A command
//! that cannot start because of the task (program or cwd missing, not executable, argument list
//! too long) is [`Outcome::Error`]; one that cannot start because of the worker (out of
//! processes, memory or file descriptors, a full or failing disk) is [`Outcome::WorkerFault`],
//! with the part of the worker that failed in [`AttemptResult::fault`], read from the errno
//! ([`fault_category`]). An attempt the worker cancels is reported as `Failed` with
//! [`AttemptResult::cancelled`] set, which the caller must check first: it is not a test
//! result.
//!
//! **A disk that cannot take a write is the worker's fault, not the test's.** Before the
//! spawn the executor writes (and from time to time syncs) a small probe file in the
//! directory the command will run in — the task's `cwd`, or the worker's own — and removes it
//! ([`workdir`]). A refusal the kernel explains as a disk problem (`ENOSPC`, `EROFS`, `EDQUOT`,
//! `EIO`, the same [`fault_category`] as a spawn's) is a `storage` [`Outcome::WorkerFault`]
//! naming the directory and the errno, and the command does not run; any other error leaves
//! the attempt as it was. Apart from that probe the executor writes nothing on disk for an
//! attempt: output is read from pipes into memory, and the working directory is the task's
//! own (checked, never created). So a `storage` fault comes from the probe, from the spawn
//! itself (`ENOSPC`, `EROFS`, `EDQUOT`, `EIO` while creating the process), or from the kernel
//! reading the task's working directory.
//!
//! Limits: a process that leaves the group (`setsid`, a daemonising server) escapes the kill.
//! If it also keeps the output pipes open we stop reading [`KILL_GRACE`] after the kill and
//! return what we have.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::command::{FaultCategory, Outcome};

/// Bytes of output kept by default: the end of a failing test's log is what explains it.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// How long, after the command exits, its output pipes may stay open before the rest of its
/// process group is killed.
pub const EXIT_GRACE: Duration = Duration::from_millis(100);

/// How long, after the group is killed, we keep reading before giving up on pipes held open by
/// a process that left the group.
pub const KILL_GRACE: Duration = Duration::from_secs(1);

/// Size of one read from a pipe (the Linux pipe buffer is 64 KiB by default).
const READ_CHUNK: usize = 64 * 1024;

/// How a worker fault whose errno names no [`FaultCategory`] is reported
/// (`AttemptFinished.fault`). It is not a `FaultCategory`: the state machine has none for it.
pub const UNKNOWN_FAULT: &str = "unknown";

/// What to run for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptSpec {
    /// argv. The program is looked up in `PATH` (the task's, if `env` sets one) unless it
    /// contains a `/`.
    pub command: Vec<String>,
    /// Variables set on top of the worker's own environment; the task's value wins.
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` keeps the worker's.
    pub cwd: Option<PathBuf>,
    /// Wall-clock limit counted from spawn.
    pub timeout: Duration,
    /// How many bytes of combined stdout and stderr to keep: the last ones.
    pub output_limit: usize,
    /// An errno the spawn fails with instead of starting the command: an injected fault
    /// (`super::faults`), classified like a real failed spawn.
    pub injected_spawn_error: Option<i32>,
}

impl AttemptSpec {
    /// A spec with no extra environment, the worker's cwd and [`DEFAULT_OUTPUT_LIMIT`].
    pub fn new<S: Into<String>>(command: impl IntoIterator<Item = S>, timeout: Duration) -> Self {
        AttemptSpec {
            command: command.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            timeout,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            injected_spawn_error: None,
        }
    }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptResult {
    /// See the module documentation for the mapping; check `cancelled` before trusting a
    /// `Failed`.
    pub outcome: Outcome,
    /// The exit code, when the command exited rather than being killed by a signal.
    pub exit_code: Option<i32>,
    /// The signal that ended the command: ours (SIGKILL on timeout or cancellation) or not.
    pub signal: Option<i32>,
    /// From spawn to exit; zero when the command never started.
    pub duration: Duration,
    /// The last `output_limit` bytes of stdout and stderr, interleaved in the order we read
    /// them (only roughly the order they were written: the pipes are separate), decoded as lossy UTF-8 and prefixed with `[... N bytes truncated ...]\n` when earlier
    /// output was dropped. Invalid UTF-8 and the marker can make it longer than the limit.
    pub output_tail: String,
    /// Bytes of output not in `output_tail`.
    pub truncated_bytes: u64,
    /// The worker stopped the attempt (cancellation token or [`Running::cancel`]). The outcome
    /// is then `Failed`, but this is not a test result: the caller reports it differently.
    pub cancelled: bool,
    /// Why, in words, when the command's own exit did not decide the outcome: it could not
    /// start, timed out, was cancelled, or could not be waited for.
    pub error: Option<String>,
    /// Which part of the worker failed, for a [`Outcome::WorkerFault`] whose cause says so
    /// (the errno of a failed spawn or wait, or the executor's own crash); `None` otherwise.
    /// [`AttemptResult::fault_name`] is what the wire carries.
    pub fault: Option<FaultCategory>,
}

impl AttemptResult {
    /// An attempt that ended before a process existed.
    fn not_started(outcome: Outcome, error: String) -> Self {
        AttemptResult {
            outcome,
            exit_code: None,
            signal: None,
            duration: Duration::ZERO,
            output_tail: String::new(),
            truncated_bytes: 0,
            cancelled: false,
            error: Some(error),
            fault: None,
        }
    }

    /// An attempt the worker cancelled before its command started.
    fn cancelled_before_start() -> Self {
        AttemptResult {
            cancelled: true,
            ..AttemptResult::not_started(Outcome::Failed, "cancelled before start".into())
        }
    }

    /// An attempt that could not start because of `err`: the task's error or a worker fault,
    /// as [`spawn_fault`] decides, with the fault's category.
    fn failed_start(err: &io::Error, message: String) -> Self {
        let outcome = spawn_fault(err);
        AttemptResult {
            fault: fault_category(err).filter(|_| outcome == Outcome::WorkerFault),
            ..AttemptResult::not_started(outcome, message)
        }
    }

    /// The executor running the attempt crashed (panicked): a worker fault, not a lost attempt.
    pub fn crashed(why: impl std::fmt::Display) -> Self {
        AttemptResult {
            fault: Some(FaultCategory::Crash),
            ..AttemptResult::not_started(Outcome::WorkerFault, format!("executor crashed: {why}"))
        }
    }

    /// `AttemptFinished.fault`: empty unless the outcome is a worker fault; then its category,
    /// or [`UNKNOWN_FAULT`].
    pub fn fault_name(&self) -> &'static str {
        match (self.outcome, self.fault) {
            (Outcome::WorkerFault, Some(category)) => category.as_str(),
            (Outcome::WorkerFault, None) => UNKNOWN_FAULT,
            _ => "",
        }
    }
}

/// Runs one attempt to its end and reports how it ended; never panics on a failure of the
/// command or of the spawn. Cancelling `cancel` kills the process group and returns a result
/// with `cancelled` set; a token cancelled before the call spawns nothing.
pub async fn run(spec: AttemptSpec, cancel: CancellationToken) -> AttemptResult {
    let output = LiveOutput::new(spec.output_limit);
    run_observed(spec, cancel, output).await
}

/// [`run`], with the output read into `output` (made with the spec's `output_limit`), where
/// watchers see it as it comes. `output` is closed when this returns or is dropped.
pub async fn run_observed(
    spec: AttemptSpec,
    cancel: CancellationToken,
    output: LiveOutput,
) -> AttemptResult {
    struct CloseOnDrop(LiveOutput);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let output = CloseOnDrop(output);
    execute(spec, cancel, &output.0).await
}

async fn execute(
    spec: AttemptSpec,
    cancel: CancellationToken,
    output: &LiveOutput,
) -> AttemptResult {
    if cancel.is_cancelled() {
        return AttemptResult::cancelled_before_start();
    }
    let Some(program) = spec.command.first() else {
        return AttemptResult::not_started(Outcome::Error, "empty command".into());
    };
    if has_nul_byte(&spec) {
        // std would refuse to spawn with an InvalidInput error that carries no errno.
        return AttemptResult::not_started(
            Outcome::Error,
            "command, env or cwd contains a NUL byte".into(),
        );
    }
    if let Some(cwd) = &spec.cwd
        && let Err(result) = check_cwd(cwd).await
    {
        return result;
    }
    let dir = workdir::attempt_dir(spec.cwd.as_deref());
    tokio::select! {
        fault = workdir::storage_fault(&dir, workdir::PROBE_LIMIT) => {
            if let Some(message) = fault {
                workdir::attempt_not_passed(&dir);
                return AttemptResult {
                    fault: Some(FaultCategory::Storage),
                    ..AttemptResult::not_started(Outcome::WorkerFault, message)
                };
            }
        }
        () = cancel.cancelled() => return AttemptResult::cancelled_before_start(),
    }
    let result = spawn_and_wait(&spec, program, cancel, output).await;
    if result.outcome != Outcome::Passed {
        workdir::attempt_not_passed(&dir);
    }
    result
}

/// Starts the command of a checked `spec` and waits for its end (module docs).
async fn spawn_and_wait(
    spec: &AttemptSpec,
    program: &str,
    cancel: CancellationToken,
    output: &LiveOutput,
) -> AttemptResult {
    let mut command = Command::new(program);
    command
        .args(&spec.command[1..])
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }

    let started = Instant::now();
    let spawned = match spec.injected_spawn_error {
        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        None => command.spawn(),
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => return AttemptResult::failed_start(&err, spawn_message(program, &err)),
    };
    let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return AttemptResult::not_started(
            Outcome::WorkerFault,
            "spawned process has no pid".into(),
        );
    };
    // From here on, however this future ends (even dropped mid-way), the group is killed.
    let group = ProcessGroup(pid);

    let (ending, status, duration) = {
        let drain = drain(child.stdout.take(), child.stderr.take(), output);
        tokio::pin!(drain);
        let deadline = tokio::time::sleep(spec.timeout);
        tokio::pin!(deadline);
        let mut drained = false;

        let (ending, status) = loop {
            tokio::select! {
                // An exit that is already there wins over a timeout or cancellation.
                biased;
                status = child.wait() => break (Ending::Exited, status),
                () = cancel.cancelled() => {
                    group.kill();
                    // In case the command moved itself to another group.
                    let _ = child.start_kill();
                    break (Ending::Cancelled, child.wait().await);
                }
                () = &mut deadline => {
                    group.kill();
                    let _ = child.start_kill();
                    break (Ending::TimedOut, child.wait().await);
                }
                () = &mut drain, if !drained => drained = true,
            }
        };
        let duration = started.elapsed();

        if !drained && tokio::time::timeout(EXIT_GRACE, &mut drain).await.is_err() {
            group.kill();
            if tokio::time::timeout(KILL_GRACE, &mut drain).await.is_err() {
                tracing::warn!(
                    pgid = pid,
                    "output pipes still open after killing the process group; \
                     a process left the group, its further output is lost"
                );
            }
        }
        (ending, status, duration)
    };
    // Background processes that closed their output and were still running.
    drop(group);

    let (output_tail, truncated_bytes) = output.text();
    let mut result = AttemptResult {
        outcome: Outcome::Failed,
        exit_code: None,
        signal: None,
        duration,
        output_tail,
        truncated_bytes,
        cancelled: false,
        error: None,
        fault: None,
    };
    let status: ExitStatus = match status {
        Ok(status) => status,
        Err(err) => {
            result.outcome = Outcome::WorkerFault;
            result.fault = fault_category(&err);
            result.error = Some(format!("waiting for `{program}` failed: {err}"));
            return result;
        }
    };
    result.exit_code = status.code();
    result.signal = status.signal();
    match ending {
        Ending::Exited if status.success() => result.outcome = Outcome::Passed,
        Ending::Exited => result.outcome = Outcome::Failed,
        Ending::TimedOut => {
            result.outcome = Outcome::TimedOut;
            result.error = Some(format!("timed out after {:?}", spec.timeout));
        }
        Ending::Cancelled => {
            result.outcome = Outcome::Failed;
            result.cancelled = true;
            result.error = Some("cancelled".into());
        }
    }
    result
}

/// An attempt running on its own tokio task, for a caller that must stop it from elsewhere
/// (the agent cancels attempts the leader no longer assigns to it). Dropping it cancels the
/// attempt.
#[derive(Debug)]
pub struct Running {
    cancel: CancellationToken,
    task: JoinHandle<AttemptResult>,
}

impl Running {
    /// Starts [`run`] on a new tokio task; must be called inside a runtime.
    pub fn spawn(spec: AttemptSpec) -> Self {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(spec, cancel.clone()));
        Running { cancel, task }
    }

    /// Kills the attempt's process group; [`Running::wait`] then returns a cancelled result.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the attempt to end. A panic in the executor becomes a `WorkerFault` ("executor
    /// crashed", ARCHITECTURE.md § Outcomes), not a lost attempt.
    pub async fn wait(mut self) -> AttemptResult {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(err) => AttemptResult::crashed(err),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Sends SIGKILL to every process in process group `pgid`. A group that no longer exists is not
/// an error. Does nothing for `pgid <= 1` (`kill(0)` and `kill(-1)` would hit the worker's own
/// group or every process it may signal) or for the worker's own group.
pub fn kill_group(pgid: i32) {
    // SAFETY: getpgrp and kill take no pointers and cannot violate memory safety.
    if pgid <= 1 || pgid == unsafe { libc::getpgrp() } {
        return;
    }
    // SAFETY: as above.
    if unsafe { libc::kill(-pgid, libc::SIGKILL) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, %err, "cannot kill process group");
        }
    }
}

/// How the wait for the command ended.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Exited,
    TimedOut,
    Cancelled,
}

/// The command's process group, killed on drop so no path out of [`run`] leaves it running.
struct ProcessGroup(i32);

impl ProcessGroup {
    fn kill(&self) {
        kill_group(self.0);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whose fault a failed start is: the task's ([`Outcome::Error`]: its program, arguments or
/// paths are wrong, and trying elsewhere would fail the same way) or the worker's
/// ([`Outcome::WorkerFault`]: out of processes, memory, descriptors, or anything unexpected).
fn spawn_fault(err: &io::Error) -> Outcome {
    match err.raw_os_error() {
        Some(
            libc::ENOENT
            | libc::EACCES
            | libc::ENOTDIR
            | libc::ENOEXEC
            | libc::E2BIG
            | libc::EISDIR
            | libc::ELOOP
            | libc::ENAMETOOLONG,
        ) => Outcome::Error,
        _ => Outcome::WorkerFault,
    }
}

/// Which part of the worker an errno of a failed spawn (or of the worker's own I/O) points
/// at: `resource_exhaustion` when it ran out of processes, memory or descriptors, `storage`
/// when a disk is full, read-only or failing. `None` for an errno that names neither (reported
/// as [`UNKNOWN_FAULT`]). Only meaningful for errors that are the worker's fault, not the task's.
pub fn fault_category(err: &io::Error) -> Option<FaultCategory> {
    match err.raw_os_error()? {
        libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE => {
            Some(FaultCategory::ResourceExhaustion)
        }
        libc::ENOSPC | libc::EROFS | libc::EDQUOT | libc::EIO => Some(FaultCategory::Storage),
        _ => None,
    }
}

/// Says what went wrong starting `program`, in the task author's terms.
fn spawn_message(program: &str, err: &io::Error) -> String {
    match err.raw_os_error() {
        // The kernel reports a missing `#!` interpreter as the script itself missing.
        Some(libc::ENOENT) if program.contains('/') && Path::new(program).exists() => {
            format!("interpreter of `{program}` not found (check its #! line)")
        }
        Some(libc::ENOENT) => format!("program `{program}` not found"),
        Some(libc::EACCES) => format!("program `{program}` is not executable (permission denied)"),
        Some(libc::ENOTDIR) => format!("program `{program}`: a path component is not a directory"),
        Some(libc::ENOEXEC) => format!("program `{program}` is not in an executable format"),
        Some(libc::E2BIG) => format!("argument list and environment of `{program}` too long"),
        Some(libc::EISDIR) => format!("program `{program}` is a directory"),
        _ if spawn_fault(err) == Outcome::Error => format!("cannot start `{program}`: {err}"),
        _ => format!("worker cannot start `{program}`: {err}"),
    }
}

/// Checks the working directory before spawning: a failed `chdir` in the child reports the
/// same errno as a missing program, and the message must say which it was.
async fn check_cwd(cwd: &Path) -> Result<(), AttemptResult> {
    let message = match tokio::fs::metadata(cwd).await {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => format!("cwd {} is not a directory", cwd.display()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            format!("cwd {} does not exist", cwd.display())
        }
        Err(err) => {
            let message = format!("cwd {}: {err}", cwd.display());
            return Err(AttemptResult::failed_start(&err, message));
        }
    };
    Err(AttemptResult::not_started(Outcome::Error, message))
}

fn has_nul_byte(spec: &AttemptSpec) -> bool {
    let nul = |s: &str| s.contains('\0');
    spec.command.iter().any(|arg| nul(arg))
        || spec.env.iter().any(|(key, value)| nul(key) || nul(value))
        || spec
            .cwd
            .as_ref()
            .is_some_and(|cwd| cwd.as_os_str().as_bytes().contains(&0))
}

/// Reads stdout and stderr concurrently into `tail` until both reach end of file. A read error
/// ends that pipe like end of file. Dropping the future closes the pipes; no data is lost
/// between reads, so it is safe to stop awaiting it at any point.
async fn drain(
    mut stdout: Option<ChildStdout>,
    mut stderr: Option<ChildStderr>,
    tail: &LiveOutput,
) {
    let mut out_buf = vec![0; READ_CHUNK];
    let mut err_buf = vec![0; READ_CHUNK];
    loop {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf), if stdout.is_some() => match read {
                Ok(n) if n > 0 => tail.push(&out_buf[..n]),
                _ => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buf), if stderr.is_some() => match read {
                Ok(n) if n > 0 => tail.push(&err_buf[..n]),
                _ => stderr = None,
            },
            else => return,
        }
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => Ok(0),
    }
}

/// How far an attempt's output got: what a [`LiveOutput`]'s watchers are told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of output so far (the offset the next byte will have).
    pub end: u64,
    /// The output is complete: the attempt ended.
    pub closed: bool,
}

/// What [`LiveOutput::read`] found at an offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRead {
    /// Offset of `data`: the offset asked for, or the start of the tail when the bytes asked
    /// for have scrolled out of it (then `offset - asked` bytes are lost to this reader).
    pub offset: u64,
    pub data: Vec<u8>,
    pub progress: Progress,
}

/// An attempt's output as it is read: the tail buffer, shared with whoever watches it. Cheap
/// to clone; every clone sees the same buffer. A `std::sync::Mutex`, not a tokio one: nothing
/// awaits while holding it, and the reader holds it only to copy at most one chunk.
#[derive(Clone, Debug)]
pub struct LiveOutput {
    tail: Arc<Mutex<Tail>>,
    progress: watch::Sender<Progress>,
}

impl LiveOutput {
    /// An empty output that keeps its last `limit` bytes.
    pub fn new(limit: usize) -> Self {
        LiveOutput {
            tail: Arc::new(Mutex::new(Tail::new(limit))),
            progress: watch::Sender::new(Progress::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, chunk: &[u8]) {
        let end = {
            let mut tail = self.lock();
            tail.push(chunk);
            tail.end()
        };
        self.progress.send_modify(|p| p.end = end);
    }

    /// Appends bytes as if the command printed them (tests of watchers).
    #[cfg(test)]
    pub fn push_for_test(&self, chunk: &[u8]) {
        self.push(chunk);
    }

    /// Marks the output complete (idempotent).
    pub fn close(&self) {
        self.progress.send_modify(|p| p.closed = true);
    }

    /// How far the output got, changing as it grows and when it closes.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Up to `max` bytes from offset `from` (or from the start of the tail, if `from` scrolled
    /// out of it); empty when there is nothing at `from` yet.
    pub fn read(&self, from: u64, max: usize) -> OutputRead {
        let tail = self.lock();
        let start = tail.dropped;
        let offset = from.max(start);
        let skip = (offset - start) as usize;
        let data: Vec<u8> = tail.bytes.iter().skip(skip).take(max).copied().collect();
        let progress = *self.progress.borrow();
        OutputRead {
            offset,
            data,
            progress,
        }
    }

    /// The tail as text, with the truncation marker, and the number of bytes dropped (as
    /// [`AttemptResult::output_tail`] has them).
    pub fn text(&self) -> (String, u64) {
        self.lock().clone().into_text()
    }
}

/// The last `limit` bytes of a stream, and how many came before them.
#[derive(Clone, Debug)]
struct Tail {
    bytes: VecDeque<u8>,
    limit: usize,
    dropped: u64,
}

impl Tail {
    fn new(limit: usize) -> Self {
        Tail {
            bytes: VecDeque::new(),
            limit,
            dropped: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= self.limit {
            let kept = &chunk[chunk.len() - self.limit..];
            self.dropped += (self.bytes.len() + chunk.len() - kept.len()) as u64;
            self.bytes.clear();
            self.bytes.extend(kept);
            return;
        }
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.dropped += overflow as u64;
        self.bytes.extend(chunk);
    }

    /// The offset the next byte will have.
    fn end(&self) -> u64 {
        self.dropped + self.bytes.len() as u64
    }

    /// The kept bytes as text, with the truncation marker, and the number of bytes dropped.
    /// After a truncation, the UTF-8 continuation bytes the cut left at the front are dropped
    /// too, rather than shown as replacement characters.
    fn into_text(mut self) -> (String, u64) {
        if self.dropped == 0 {
            let text = String::from_utf8_lossy(self.bytes.make_contiguous()).into_owned();
            return (text, 0);
        }
        let orphans = self
            .bytes
            .iter()
            .take(3)
            .take_while(|&&byte| byte & 0b1100_0000 == 0b1000_0000)
            .count();
        self.bytes.drain(..orphans);
        let dropped = self.dropped + orphans as u64;
        let text = String::from_utf8_lossy(self.bytes.make_contiguous());
        (
            format!("[... {dropped} bytes truncated ...]\n{text}"),
            dropped,
        )
    }
}

pub mod workdir;

#[cfg(test)]
mod tests;
