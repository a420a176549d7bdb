//! Bad input gets a clear message and a non-zero exit, never a panic.

use super::support::run;

fn assert_clear_failure(args: &[&str], code: i32, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (status, _out, err) = run(args, dir.path());
    assert_eq!(status, code, "exit code of {args:?}; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr of {args:?} lacks {needle:?}:\n{err}"
        );
    }
}

#[test]
fn malformed_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "heartbeat_interval_ms = [oops\n").unwrap();
    let path = file.to_str().unwrap();
    assert_clear_failure(&["coordinator", "--config", path], 2, &["node.toml"]);
}

#[test]
fn unknown_config_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "hearbeat_interval_ms = 100\n").unwrap();
    let path = file.to_str().unwrap();
    assert_clear_failure(
        &["coordinator", "--config", path],
        2,
        &["hearbeat_interval_ms"],
    );
}

#[test]
fn bad_flag_values_are_usage_errors() {
    assert_clear_failure(&["coordinator", "--port", "eighty"], 2, &["--port"]);
    assert_clear_failure(&["status", "-o", "yaml"], 2, &["yaml"]);
    assert_clear_failure(&["bench", "commit", "--writers", "x"], 2, &["--writers"]);
}

#[test]
fn sql_refuses_writes_before_contacting_anyone() {
    for statement in [
        "DELETE FROM tasks",
        "INSERT INTO workers VALUES (1)",
        "SELECT 1; DROP TABLE tasks",
        "UPDATE tasks SET status = 'passed'",
        "COPY tasks TO '/tmp/x.csv'",
    ] {
        assert_clear_failure(
            &["sql", "--coordinator", "127.0.0.1:1", statement],
            2,
            &["error:"],
        );
    }
}

#[test]
fn database_in_a_missing_or_unwritable_place_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("state.duckdb");
    assert_clear_failure(
        &["coordinator", "--db-path", missing.to_str().unwrap()],
        2,
        &["no-such-dir"],
    );
    // A parent that is a regular file cannot hold a database, even for root.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let inside = file.join("state.duckdb");
    assert_clear_failure(
        &["coordinator", "--db-path", inside.to_str().unwrap()],
        2,
        &["plain-file"],
    );
    // /proc refuses new files whoever asks.
    assert_clear_failure(
        &["coordinator", "--db-path", "/proc/testfleet.duckdb"],
        2,
        &["/proc"],
    );
}

#[test]
fn unreachable_cluster_exits_5() {
    // 5, apart from `run`'s 3 (a task could not run).
    assert_clear_failure(
        &["status", "--coordinator", "127.0.0.1:1"],
        5,
        &["127.0.0.1:1"],
    );
}

#[test]
fn a_bad_worker_name_or_timeout_is_refused_at_once() {
    assert_clear_failure(
        &["worker", "--coordinator", "127.0.0.1:1", "--name", ""],
        2,
        &["worker name is empty"],
    );
    assert_clear_failure(
        &["worker", "--coordinator", "127.0.0.1:1", "--name", "a b"],
        2,
        &["bad worker name"],
    );
    for timeout in ["0s", "0"] {
        assert_clear_failure(
            &[
                "submit",
                "--coordinator",
                "127.0.0.1:1",
                "--timeout",
                timeout,
                "--",
                "true",
            ],
            2,
            &["must be more than zero"],
        );
    }
    // Bare seconds are taken, as plans take them: the command gets as far as the network.
    assert_clear_failure(
        &[
            "submit",
            "--coordinator",
            "127.0.0.1:1",
            "--timeout",
            "300",
            "--",
            "true",
        ],
        5,
        &["127.0.0.1:1"],
    );
}

#[test]
fn a_plan_past_a_limit_is_refused_before_anything_is_sent() {
    // The reproduction of a bug: this plan used to be accepted, and its job then stopped
    // every replica. The coordinator address is unreachable: nothing may be sent.
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "[[task]]\nname = \"flaky\"\ncommand = [\"sh\", \"-c\", \"exit 1\"]\nflaky_retries = 4294967295\n",
    )
    .unwrap();
    assert_clear_failure(
        &[
            "run",
            plan.to_str().unwrap(),
            "--coordinator",
            "127.0.0.1:1",
        ],
        2,
        &[
            "flaky_retries 4294967295 is too large (at most 100)",
            "plan.toml",
        ],
    );
}

#[test]
fn completion_scripts_name_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(&["completions", shell], dir.path());
        assert_eq!(code, 0, "{shell}: {err}");
        for command in ["coordinator", "worker", "cancel", "wait", "auth", "tls"] {
            assert!(out.contains(command), "{shell} script lacks {command}");
        }
    }
}

/// Runs `testfleet coordinator ARGS --port 0` (checking the tests' tokens) in `dir`, expecting
/// it to exit by itself within 60 s: (exit code, stderr). A coordinator still running then is
/// killed and fails the test.
fn coordinator_that_exits(args: &[&str], dir: &std::path::Path) -> (i32, String) {
    use std::io::Read;
    let auth = super::support::auth_dir().display().to_string();
    let mut child = std::process::Command::new(super::support::binary())
        .arg("coordinator")
        .args(args)
        .args(["--port", "0", "--auth-dir", &auth])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second coordinator on the same files kept running: {args:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), err)
}

#[test]
fn a_second_coordinator_on_the_same_files_says_which_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).display().to_string();
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let _first =
        super::support::start_coordinator(&["--db-path", &path("state.duckdb")], dir.path());

    // The same data directory: the Raft log is the first file it cannot have.
    let (code, err) = coordinator_that_exits(&["--db-path", &path("state.duckdb")], dir.path());
    assert_ne!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let expected = format!(
        "error: data directory {} is in use by another coordinator (raft-log is locked); \
         give each node its own --data-dir",
        dir.path().display()
    );
    assert!(err.contains(&expected), "{err}");

    // Its own data directory but the same DuckDB file: the database is.
    let (code, err) = coordinator_that_exits(
        &[
            "--db-path",
            &path("state.duckdb"),
            "--data-dir",
            &path("other"),
        ],
        dir.path(),
    );
    assert_ne!(code, 0, "{err}");
    let expected = format!(
        "error: database file {} is in use by another coordinator",
        path("state.duckdb")
    );
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("give each node its own --db-path"), "{err}");
}

/// A port where something other than a coordinator answers (here a web server's reply, as
/// an HTTP/1 server or an SSH daemon would send): every client command says so and exits 5,
/// instead of "h2 protocol error" or "transport error".
#[test]
fn a_port_that_is_not_a_coordinator_is_named_as_such() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            // As a web server does: read the request (HTTP/2's preface), answer 400; then the
            // connection stays until the client gives up on it.
            std::thread::spawn(move || {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                while matches!(stream.read(&mut request), Ok(n) if n > 0) {}
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    for command in [&["status"][..], &["jobs"], &["workers"]] {
        let mut args = command.to_vec();
        args.extend(["--coordinator", &addr]);
        // The client usually reads the reply and says what it is; on a loaded machine it can
        // see only the connection end first, reported as a failed connection (exit 5 too).
        let (code, _, err) = run(&args, dir.path());
        assert_eq!(code, 5, "{command:?}: {err}");
        assert!(
            err.contains("not a Testfleet coordinator") || err.contains("connection closed"),
            "{command:?}: {err}"
        );
    }
}

/// `TESTFLEET_COORDINATOR` in the environment does not stop a command that starts a fleet of
/// its own (`run --local`, `pytest --local`, `bench commit --nodes`): it goes on to its own
/// work (here, reading a plan file that is not there). Only `--coordinator` given on the
/// command line with it is refused, as a usage error.
#[test]
fn a_coordinator_in_the_environment_does_not_block_a_fleet_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let out = std::process::Command::new(super::support::binary())
        .args(["run", "--local", "1", missing])
        .env("TESTFLEET_COORDINATOR", "127.0.0.1:9")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot read plan file"), "{err}");
    assert!(!err.contains("cannot be used with"), "{err}");

    for args in [
        &[
            "run",
            "--local",
            "1",
            "--coordinator",
            "127.0.0.1:9",
            missing,
        ][..],
        &["pytest", "--local", "1", "--coordinator", "127.0.0.1:9"],
        &[
            "bench",
            "commit",
            "--nodes",
            "1",
            "--coordinator",
            "127.0.0.1:9",
        ],
    ] {
        assert_clear_failure(args, 2, &["cannot be used with '--coordinator'"]);
    }
}
