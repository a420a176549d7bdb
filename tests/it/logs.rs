//! What a task printed and how it ended, through the real binary: `testfleet logs TASK -f`
//! follows a running attempt's output live (relayed by the leader from the worker, never
//! through the log), `logs TASK` prints a finished attempt's stored tail, and a test killed by
//! a signal shows that signal in `task show` and `tasks`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use testfleet::auth::Role;

use super::support::{self, TestDir, eventually, one_node_one_worker, run};

/// Submits `command` as a one-task job; returns the task id.
fn submit(dir: &TestDir, addr: &str, command: &[&str]) -> String {
    let mut args = vec!["submit", "--coordinator", addr, "--timeout", "60s", "--"];
    args.extend_from_slice(command);
    let (code, out, err) = run(&args, dir.path());
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

/// `task show TASK -o json`, once its current attempt has an outcome.
async fn finished_task(dir: &TestDir, addr: &str, task: &str) -> serde_json::Value {
    eventually(
        Duration::from_secs(30),
        "the task to finish",
        || async move {
            let (code, out, err) = run(
                &["task", "show", task, "--coordinator", addr, "-o", "json"],
                dir.path(),
            );
            assert_eq!(code, 0, "{err}");
            let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
            let done = doc["attempts"]
                .as_array()
                .and_then(|a| a.last())
                .is_some_and(|a| !a["outcome"].is_null());
            done.then_some(doc)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_killed_by_a_signal_shows_the_signal() {
    let (dir, _cluster, addr, _worker) = one_node_one_worker().await;
    let task = submit(&dir, &addr, &["sh", "-c", "kill -SEGV $$"]);

    let doc = finished_task(&dir, &addr, &task).await;
    assert_eq!(doc["task"]["status"], "failed", "{doc}");
    let attempt = &doc["attempts"][0];
    assert_eq!(attempt["outcome"], "failed", "{doc}");
    assert_eq!(attempt["signal"], 11, "{doc}");
    assert!(attempt["exit_code"].is_null(), "{doc}");

    let (code, out, err) = run(&["task", "show", &task, "--coordinator", &addr], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("killed by SIGSEGV (signal 11)"), "{out}");
    let (code, out, err) = run(&["tasks", "--coordinator", &addr], dir.path());
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.contains(&task)).unwrap_or_default();
    assert!(line.contains("SIGSEGV"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follows_a_running_task_live_and_prints_a_finished_ones_tail() {
    let (dir, _cluster, addr, _worker) = one_node_one_worker().await;
    let script = "for i in 1 2 3 4 5; do echo line-$i; sleep 0.5; done";
    let task = submit(&dir, &addr, &["sh", "-c", script]);

    // Follow while it runs: the first line shows before the task ends.
    let mut child = std::process::Command::new(support::binary())
        .args(["logs", &task, "-f", "--coordinator", &addr])
        .env("TESTFLEET_TOKEN_FILE", support::token_file(Role::Operator))
        .env_remove("TESTFLEET_COORDINATOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let first = lines_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a first line while the task runs");
    assert_eq!(first, "line-1");
    let (code, status) = task_status(&dir, &addr, &task);
    assert_eq!(code, 0);
    assert_eq!(
        status, "running",
        "the first line came before the task ended"
    );

    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let mut lines = vec![first];
    lines.extend(lines_rx.try_iter());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        lines,
        ["line-1", "line-2", "line-3", "line-4", "line-5"],
        "every line once, in order; stderr: {err}"
    );
    assert!(err.contains("attempt 1 passed (exit 0)"), "{err}");

    // Without -f on the finished task: the stored tail, and exit 0.
    let (code, out, err) = run(&["logs", &task, "--coordinator", &addr], dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "line-1\nline-2\nline-3\nline-4\nline-5\n");
    assert!(err.contains("attempt 1 passed"), "{err}");

    // An unknown task is an error that says so.
    let (code, _, err) = run(
        &["logs", "no-such-task", "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no task has the id"), "{err}");
}

/// `task show`'s status of `task`: (exit code, status).
fn task_status(dir: &TestDir, addr: &str, task: &str) -> (i32, String) {
    let (code, out, err) = run(
        &["task", "show", task, "--coordinator", addr, "-o", "json"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    (code, doc["task"]["status"].as_str().unwrap().to_string())
}
