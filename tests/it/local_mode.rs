//! `testfleet run --local N PLAN` (`src/cli/local.rs`), run as a user runs it: the real binary
//! starts a coordinator inside itself and N worker processes, runs the plan, stops them all
//! and exits as `run` against a cluster would. What is checked: the exit code and summary,
//! what the kept DuckDB file holds (the job, attempts on both workers), that the temporary
//! directory goes away, and that no process is left behind — after a normal run and after a
//! Ctrl-C in the middle of a long task.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{binary, run, test_dir};

/// Five passing tasks and one failing, each long enough (0.2 s) that two one-slot workers both
/// get some: the first dispatch hands one to each.
const PLAN: &str = r#"
name = "local"

[defaults]
timeout = "60s"

[[matrix]]
name = "pass-{item}"
command = ["sh", "-c", "sleep 0.2"]
items = ["a", "b", "c", "d", "e"]

[[task]]
name = "fails"
command = ["sh", "-c", "sleep 0.2; echo broken on purpose >&2; exit 1"]
"#;

/// The pids of live processes whose command line mentions `needle` (this test's unique
/// directory), with their command lines.
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        // A process gone meanwhile (or a zombie, whose command line is empty) is not found.
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `testfleet run --local 2 ...` in `dir` with `TMPDIR` set to `tmp`: (exit code, stdout,
/// stderr).
fn run_local(dir: &Path, tmp: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(["run", "--local", "2"])
        .args(extra)
        .arg("plan.toml")
        .current_dir(dir)
        .env("TMPDIR", tmp)
        .env("NO_COLOR", "1")
        .env_remove("TESTFLEET_COORDINATOR")
        .stdin(Stdio::null())
        .output()
        .expect("run the testfleet binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_local_run_exits_as_run_does_and_keeps_its_data_when_asked() {
    let dir = test_dir();
    std::fs::write(dir.path().join("plan.toml"), PLAN).unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let started = Instant::now();
    let (code, stdout, stderr) = run(
        &["run", "--local", "2", "--data-dir", &data_arg, "plan.toml"],
        dir.path(),
    );
    let took = started.elapsed();
    eprintln!("run --local 2 took {took:?}");
    assert_eq!(code, 1, "a task failed: exit 1\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("Outcomes: failed 1, passed 5"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("--- fails [failed, exit 1]") && stdout.contains("broken on purpose"),
        "{stdout}"
    );
    assert!(stderr.contains("local fleet up in"), "{stderr}");
    // The coordinator's log went to its file, not among the job's progress.
    assert!(!stderr.contains("INFO"), "{stderr}");

    // Every process the command started is gone when it returns.
    let left = processes_mentioning(&data_arg);
    assert!(left.is_empty(), "left running: {left:?}");

    // The data stayed: tokens only the owner reads, logs, and the state in DuckDB.
    for file in [
        "coordinator.log",
        "local-1.log",
        "local-2.log",
        "state.duckdb",
    ] {
        assert!(data.join(file).is_file(), "{file} is missing");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("auth/operator.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the token is readable by others: {mode:o}");
    let coordinator_log = std::fs::read_to_string(data.join("coordinator.log")).unwrap();
    assert!(
        coordinator_log.contains("worker left worker=local-1")
            && coordinator_log.contains("worker left worker=local-2"),
        "the workers left the fleet on their way out:\n{coordinator_log}"
    );

    let conn = duckdb::Connection::open(data.join("state.duckdb")).unwrap();
    let (jobs, status): (i64, String) = conn
        .query_row(
            "SELECT count(*), any_value(status) FROM jobs WHERE name = 'local'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((jobs, status.as_str()), (1, "finished"));
    let mut stmt = conn
        .prepare("SELECT DISTINCT worker_id FROM task_attempts ORDER BY 1")
        .unwrap();
    let workers: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(workers, ["local-1", "local-2"], "both workers ran tasks");
}

#[test]
fn a_local_run_without_a_data_dir_leaves_no_directory_and_speaks_json() {
    let dir = test_dir();
    std::fs::write(dir.path().join("plan.toml"), PLAN).unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (code, stdout, stderr) = run_local(dir.path(), &tmp, &["-o", "json"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(summary["exit_code"], 1, "{summary}");
    assert_eq!(summary["counts"]["passed"], 5, "{summary}");
    assert_eq!(summary["counts"]["failed"], 1, "{summary}");
    let kept: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(kept.is_empty(), "the temporary directory stayed: {kept:?}");
    let left = processes_mentioning(&tmp.display().to_string());
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn local_conflicts_with_a_coordinator_and_a_detached_run() {
    let dir = test_dir();
    std::fs::write(dir.path().join("plan.toml"), PLAN).unwrap();
    for extra in [&["--coordinator", "127.0.0.1:1"][..], &["--detach"][..]] {
        let (code, _, stderr) = run_local(dir.path(), dir.path(), extra);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
    // Refused before anything started.
    assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());
}

#[test]
fn ctrl_c_cancels_the_job_stops_the_local_fleet_and_leaves_nothing_behind() {
    let dir = test_dir();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    // The task's command line carries the data directory ($0), so it can be found in /proc.
    let plan = format!(
        r#"
name = "long"

[[task]]
name = "long"
command = ["sh", "-c", "touch \"$0.started\"; while :; do sleep 1; done", "{data_arg}/long"]
"#
    );
    std::fs::write(dir.path().join("plan.toml"), plan).unwrap();
    let mut child = Command::new(binary())
        .args(["run", "--local", "2", "--data-dir", &data_arg, "plan.toml"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("TESTFLEET_COORDINATOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the testfleet binary");

    let started = data.join("long.started");
    let running = wait_until(Duration::from_secs(120), || started.exists());
    if !running {
        let _ = child.kill();
    }
    assert!(running, "the long task did not start");
    // Positive control for the check below: the workers and the task are seen while they run.
    let during = processes_mentioning(&data_arg);
    assert!(
        during.iter().any(|(_, c)| c.contains(" worker "))
            && during.iter().any(|(_, c)| c.contains("while :")),
        "{during:?}"
    );

    // SAFETY: kill takes no pointers; the pid is our unreaped child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let exited = wait_until(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        exited,
        "the command did not stop after Ctrl-C\n{stdout}\n{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a cancelled job: exit 1\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("cancelling job"), "{stderr}");
    assert!(stdout.contains("cancelled"), "{stdout}");
    let left = processes_mentioning(&data_arg);
    assert!(left.is_empty(), "left running after Ctrl-C: {left:?}");
}
