//! Real processes, real signals. Waits poll for an observable condition with a deadline; the
//! only sleeping is done by the children.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::*;

/// Generous: a test that needs it is broken anyway, and each one ends well before.
const WAIT_LIMIT: Duration = Duration::from_secs(5);

fn sh(script: &str) -> AttemptSpec {
    AttemptSpec::new(["sh", "-c", script], Duration::from_secs(10))
}

async fn run_to_end(spec: AttemptSpec) -> AttemptResult {
    run(spec, CancellationToken::new()).await
}

/// Polls `check` every few milliseconds until it returns something or [`WAIT_LIMIT`] passes.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pid a child wrote with `echo $! > file`, once the line is complete.
async fn pid_from(file: &Path) -> i32 {
    eventually("the pid file", || {
        let text = std::fs::read_to_string(file).ok()?;
        text.strip_suffix('\n')?.parse().ok()
    })
    .await
}

/// Gone or a zombie: PID 1 in a container does not always reap orphans, and a zombie still
/// answers `kill(pid, 0)`.
fn is_dead(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z'))
}

async fn assert_dies(pid: i32) {
    eventually(&format!("process {pid} to die"), || {
        is_dead(pid).then_some(())
    })
    .await;
}

fn not_started(outcome: Outcome, error: &str) -> AttemptResult {
    AttemptResult::not_started(outcome, error.into())
}

// --- Exit status ---------------------------------------------------------------------------

#[tokio::test]
async fn exit_zero_passes() {
    let result = run_to_end(AttemptSpec::new(["true"], Duration::from_secs(10))).await;
    assert_eq!(result.outcome, Outcome::Passed);
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(result.signal, None);
    assert_eq!(result.error, None);
    assert!(!result.cancelled);
    assert!(result.duration < WAIT_LIMIT);
}

#[tokio::test]
async fn non_zero_exit_fails_with_its_code() {
    let result = run_to_end(sh("echo boom; exit 3")).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(result.signal, None);
    assert_eq!(result.error, None);
    assert!(!result.cancelled);
    assert_eq!(result.output_tail, "boom\n");
}

#[tokio::test]
async fn death_by_a_foreign_signal_fails_with_the_signal() {
    let result = run_to_end(sh("kill -9 $$")).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.exit_code, None);
    assert_eq!(result.signal, Some(libc::SIGKILL));
    assert_eq!(result.error, None);
    assert!(!result.cancelled);
}

// --- What the command sees and says --------------------------------------------------------

#[tokio::test]
async fn env_and_cwd_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh(r#"printf '%s|%s' "$TESTFLEET_GREETING" "$(pwd -P)""#);
    spec.env
        .insert("TESTFLEET_GREETING".into(), "hello there".into());
    spec.cwd = Some(dir.path().to_owned());

    let result = run_to_end(spec).await;
    assert_eq!(result.outcome, Outcome::Passed);
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(result.output_tail, format!("hello there|{}", cwd.display()));
}

#[tokio::test]
async fn stdin_is_empty() {
    let result = run_to_end(sh("wc -c")).await;
    assert_eq!(result.outcome, Outcome::Passed);
    assert_eq!(result.output_tail.trim(), "0");
}

#[tokio::test]
async fn stderr_is_captured_with_stdout() {
    let result = run_to_end(sh("echo to-stdout; echo to-stderr >&2")).await;
    assert_eq!(result.outcome, Outcome::Passed);
    assert!(result.output_tail.contains("to-stdout\n"), "{result:?}");
    assert!(result.output_tail.contains("to-stderr\n"), "{result:?}");
    assert_eq!(result.output_tail.len(), "to-stdout\nto-stderr\n".len());
}

#[tokio::test]
async fn fifty_megabytes_of_output_keep_only_the_tail() {
    let total = 50_000_000;
    let limit = DEFAULT_OUTPUT_LIMIT;
    let result = run_to_end(sh(&format!("head -c {total} /dev/zero | tr '\\0' a"))).await;

    assert_eq!(result.outcome, Outcome::Passed);
    assert_eq!(result.truncated_bytes, (total - limit) as u64);
    let marker = format!("[... {} bytes truncated ...]\n", total - limit);
    let kept = result
        .output_tail
        .strip_prefix(&marker)
        .expect("marker first");
    assert_eq!(kept.len(), limit);
    assert!(kept.bytes().all(|byte| byte == b'a'));
}

// --- Timeout, cancellation, and nothing left behind ----------------------------------------

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("sleep 30 & echo $! > pidfile; wait");
    spec.cwd = Some(dir.path().to_owned());
    spec.timeout = Duration::from_millis(500);

    let result = run_to_end(spec).await;
    assert_eq!(result.outcome, Outcome::TimedOut);
    assert_eq!(result.signal, Some(libc::SIGKILL));
    assert_eq!(result.exit_code, None);
    assert!(!result.cancelled);
    assert_eq!(result.error.as_deref(), Some("timed out after 500ms"));
    assert!(result.duration >= Duration::from_millis(500));
    assert!(result.duration < WAIT_LIMIT, "{:?}", result.duration);

    assert_dies(pid_from(&dir.path().join("pidfile")).await).await;
}

#[tokio::test]
async fn a_background_process_holding_the_pipes_cannot_hold_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("sleep 30 & echo $! > pidfile; echo done");
    spec.cwd = Some(dir.path().to_owned());

    let started = Instant::now();
    let result = run_to_end(spec).await;
    assert!(started.elapsed() < WAIT_LIMIT, "{:?}", started.elapsed());
    assert_eq!(result.outcome, Outcome::Passed);
    assert_eq!(result.output_tail, "done\n");

    assert_dies(pid_from(&dir.path().join("pidfile")).await).await;
}

#[tokio::test]
async fn a_quiet_background_process_does_not_outlive_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("sleep 30 >/dev/null 2>&1 & echo $! > pidfile");
    spec.cwd = Some(dir.path().to_owned());

    let result = run_to_end(spec).await;
    assert_eq!(result.outcome, Outcome::Passed);

    assert_dies(pid_from(&dir.path().join("pidfile")).await).await;
}

#[tokio::test]
async fn cancellation_kills_the_group_and_marks_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("sleep 30 & echo $! > pidfile; wait");
    spec.cwd = Some(dir.path().to_owned());
    let cancel = CancellationToken::new();
    let attempt = tokio::spawn(run(spec, cancel.clone()));

    let grandchild = pid_from(&dir.path().join("pidfile")).await;
    cancel.cancel();
    let result = attempt.await.unwrap();

    assert_eq!(result.outcome, Outcome::Failed);
    assert!(result.cancelled);
    assert_eq!(result.signal, Some(libc::SIGKILL));
    assert_eq!(result.error.as_deref(), Some("cancelled"));
    assert!(result.duration < WAIT_LIMIT);
    assert_dies(grandchild).await;
}

#[tokio::test]
async fn a_token_cancelled_before_start_spawns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("touch ran");
    spec.cwd = Some(dir.path().to_owned());
    let cancel = CancellationToken::new();
    cancel.cancel();

    let result = run(spec, cancel).await;
    assert_eq!(
        result,
        AttemptResult {
            cancelled: true,
            ..not_started(Outcome::Failed, "cancelled before start")
        }
    );
    assert!(!dir.path().join("ran").exists());
}

#[tokio::test]
async fn running_handle_cancels_from_outside() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("echo $$ > pidfile; exec sleep 30");
    spec.cwd = Some(dir.path().to_owned());

    let running = Running::spawn(spec);
    let pid = pid_from(&dir.path().join("pidfile")).await;
    running.cancel();
    let result = running.wait().await;

    assert_eq!(result.outcome, Outcome::Failed);
    assert!(result.cancelled);
    assert_dies(pid).await;
}

#[tokio::test]
async fn dropping_the_running_handle_kills_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("echo $$ > pidfile; exec sleep 30");
    spec.cwd = Some(dir.path().to_owned());

    let running = Running::spawn(spec);
    let pid = pid_from(&dir.path().join("pidfile")).await;
    drop(running);
    assert_dies(pid).await;
}

// --- Commands that cannot start ------------------------------------------------------------

#[tokio::test]
async fn an_empty_command_is_the_tasks_error() {
    let result = run_to_end(AttemptSpec::new(Vec::<String>::new(), WAIT_LIMIT)).await;
    assert_eq!(result, not_started(Outcome::Error, "empty command"));
}

#[tokio::test]
async fn a_missing_program_is_the_tasks_error() {
    let spec = AttemptSpec::new(["testfleet-no-such-program", "--flag"], WAIT_LIMIT);
    let result = run_to_end(spec).await;
    assert_eq!(
        result,
        not_started(
            Outcome::Error,
            "program `testfleet-no-such-program` not found"
        )
    );
}

#[tokio::test]
async fn a_missing_cwd_is_the_tasks_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone");
    let mut spec = AttemptSpec::new(["true"], WAIT_LIMIT);
    spec.cwd = Some(missing.clone());

    let result = run_to_end(spec).await;
    let message = format!("cwd {} does not exist", missing.display());
    assert_eq!(result, not_started(Outcome::Error, &message));
}

#[tokio::test]
async fn a_cwd_that_is_a_file_is_the_tasks_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut spec = AttemptSpec::new(["true"], WAIT_LIMIT);
    spec.cwd = Some(file.path().to_owned());

    let result = run_to_end(spec).await;
    let message = format!("cwd {} is not a directory", file.path().display());
    assert_eq!(result, not_started(Outcome::Error, &message));
}

#[tokio::test]
async fn a_file_without_execute_permission_is_the_tasks_error() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("test.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let program = script.to_str().unwrap();

    let result = run_to_end(AttemptSpec::new([program], WAIT_LIMIT)).await;
    let message = format!("program `{program}` is not executable (permission denied)");
    assert_eq!(result, not_started(Outcome::Error, &message));
}

#[tokio::test]
async fn a_missing_interpreter_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("test.sh");
    std::fs::write(&script, "#!/testfleet/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let program = script.to_str().unwrap();

    let result = run_to_end(AttemptSpec::new([program], WAIT_LIMIT)).await;
    let message = format!("interpreter of `{program}` not found (check its #! line)");
    assert_eq!(result, not_started(Outcome::Error, &message));
}

#[tokio::test]
async fn a_nul_byte_is_the_tasks_error() {
    let result = run_to_end(AttemptSpec::new(["echo", "a\0b"], WAIT_LIMIT)).await;
    assert_eq!(
        result,
        not_started(Outcome::Error, "command, env or cwd contains a NUL byte")
    );
}

#[test]
fn spawn_errors_split_between_task_and_worker() {
    let cases = [
        (libc::ENOENT, Outcome::Error),
        (libc::EACCES, Outcome::Error),
        (libc::ENOTDIR, Outcome::Error),
        (libc::ENOEXEC, Outcome::Error),
        (libc::E2BIG, Outcome::Error),
        (libc::EISDIR, Outcome::Error),
        (libc::ELOOP, Outcome::Error),
        (libc::ENAMETOOLONG, Outcome::Error),
        (libc::EAGAIN, Outcome::WorkerFault),
        (libc::ENOMEM, Outcome::WorkerFault),
        (libc::EMFILE, Outcome::WorkerFault),
        (libc::ENFILE, Outcome::WorkerFault),
        (libc::EIO, Outcome::WorkerFault),
    ];
    for (errno, outcome) in cases {
        let err = io::Error::from_raw_os_error(errno);
        assert_eq!(spawn_fault(&err), outcome, "{err}");
    }
    let no_errno = io::Error::other("something odd");
    assert_eq!(spawn_fault(&no_errno), Outcome::WorkerFault);
    assert_eq!(
        spawn_message("x", &io::Error::from_raw_os_error(libc::EAGAIN)),
        format!(
            "worker cannot start `x`: {}",
            io::Error::from_raw_os_error(libc::EAGAIN)
        )
    );
}

#[test]
fn a_worker_faults_errno_names_the_part_of_the_worker_that_failed() {
    use FaultCategory::{ResourceExhaustion, Storage};
    let cases = [
        (libc::EAGAIN, Some(ResourceExhaustion)),
        (libc::ENOMEM, Some(ResourceExhaustion)),
        (libc::EMFILE, Some(ResourceExhaustion)),
        (libc::ENFILE, Some(ResourceExhaustion)),
        (libc::ENOSPC, Some(Storage)),
        (libc::EROFS, Some(Storage)),
        (libc::EDQUOT, Some(Storage)),
        (libc::EIO, Some(Storage)),
        (libc::EPERM, None),
        (libc::ETXTBSY, None),
    ];
    for (errno, category) in cases {
        let err = io::Error::from_raw_os_error(errno);
        assert_eq!(spawn_fault(&err), Outcome::WorkerFault, "{err}");
        assert_eq!(fault_category(&err), category, "{err}");
        let result = AttemptResult::failed_start(&err, "x".into());
        let name = category.map_or(UNKNOWN_FAULT, FaultCategory::as_str);
        assert_eq!(result.fault_name(), name, "{err}");
    }
    // The task's own mistakes are no worker fault and carry no category.
    let missing =
        AttemptResult::failed_start(&io::Error::from_raw_os_error(libc::ENOENT), "x".into());
    assert_eq!(
        (missing.outcome, missing.fault, missing.fault_name()),
        (Outcome::Error, None, "")
    );
    let crashed = AttemptResult::crashed("boom");
    assert_eq!(
        (crashed.outcome, crashed.fault_name()),
        (Outcome::WorkerFault, "crash")
    );
    assert_eq!(crashed.error.as_deref(), Some("executor crashed: boom"));
}

#[tokio::test]
async fn an_injected_spawn_error_is_classified_like_a_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh(&format!("touch {}/ran", dir.path().display()));
    spec.injected_spawn_error = Some(libc::EMFILE);
    let result = run_to_end(spec.clone()).await;
    let emfile = io::Error::from_raw_os_error(libc::EMFILE);
    assert_eq!(
        result,
        AttemptResult {
            fault: Some(FaultCategory::ResourceExhaustion),
            ..not_started(
                Outcome::WorkerFault,
                &format!("worker cannot start `sh`: {emfile}")
            )
        }
    );
    spec.injected_spawn_error = Some(libc::ENOSPC);
    assert_eq!(run_to_end(spec).await.fault_name(), "storage");
    assert!(!dir.path().join("ran").exists(), "the command must not run");
}

// --- The tail buffer -----------------------------------------------------------------------

#[test]
fn tail_keeps_everything_under_the_limit() {
    let mut tail = Tail::new(8);
    tail.push(b"abc");
    tail.push(b"defgh");
    assert_eq!(tail.into_text(), ("abcdefgh".into(), 0));
}

#[test]
fn tail_drops_the_oldest_bytes_and_counts_them() {
    let mut tail = Tail::new(4);
    tail.push(b"abc");
    tail.push(b"de");
    assert_eq!(tail.bytes, b"bcde");
    tail.push(b"0123456789");
    assert_eq!(
        tail.into_text(),
        ("[... 11 bytes truncated ...]\n6789".into(), 11)
    );
}

#[test]
fn tail_with_limit_zero_keeps_nothing() {
    let mut tail = Tail::new(0);
    tail.push(b"abc");
    assert_eq!(
        tail.into_text(),
        ("[... 3 bytes truncated ...]\n".into(), 3)
    );
}

#[test]
fn tail_cut_inside_a_character_drops_its_remains() {
    let mut tail = Tail::new(4);
    tail.push("x€yz".as_bytes()); // '€' is three bytes: e2 82 ac; the cut leaves 82 ac
    assert_eq!(tail.bytes, b"\x82\xacyz");
    assert_eq!(
        tail.into_text(),
        ("[... 4 bytes truncated ...]\nyz".into(), 4)
    );
}

#[test]
fn tail_decodes_invalid_utf8_lossily() {
    let mut tail = Tail::new(16);
    tail.push(b"ok \xff\xfe done");
    assert_eq!(tail.into_text(), ("ok \u{fffd}\u{fffd} done".into(), 0));
}
