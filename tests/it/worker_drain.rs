//! An operator's hold on workers: `workers drain` keeps a worker out of scheduling while what
//! it runs finishes, across a kill and restart under its name, until `workers undrain`;
//! `workers rm` is refused while the worker holds work, and `--force` hands its work back
//! (no retry used) and makes the connected worker stop.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::support::{
    WorkerProcess, client, eventually, exit_code, local_cluster, query_consistent, run,
    submit_plan, test_dir,
};

const LIMIT: Duration = Duration::from_secs(60);

async fn rows(addr: &str, sql: &str) -> Vec<Vec<Value>> {
    query_consistent(&mut client(addr).await, sql).await
}

/// The worker's row in `workers --all -o json`.
fn listed(dir: &Path, addr: &str, worker: &str) -> Option<Value> {
    let (code, out, err) = run(
        &["workers", "--all", "-o", "json", "--coordinator", addr],
        dir,
    );
    assert_eq!(code, 0, "workers: {err}");
    let list: Value = serde_json::from_str(&out).expect("workers -o json is JSON");
    list.as_array()
        .expect("a list")
        .iter()
        .find(|w| w["id"] == worker)
        .cloned()
}

/// Waits until `task` (by name) runs; the worker running it.
async fn running(addr: &str, task: &str) -> String {
    let sql = format!("SELECT worker_id FROM tasks WHERE name = '{task}' AND status = 'running'");
    eventually(LIMIT, &format!("{task} to run"), || async {
        rows(addr, &sql)
            .await
            .first()
            .and_then(|r| r[0].as_str().map(str::to_string))
    })
    .await
}

/// Waits until every task of `job` is final; their (name, status, worker, attempt) by name.
async fn finished(addr: &str, job: &str) -> Vec<Vec<Value>> {
    let sql = format!(
        "SELECT t.name, t.status, a.worker_id, t.attempt, t.infra_retries_used FROM tasks t \
         LEFT JOIN task_attempts a ON a.task_id = t.id AND a.attempt = t.attempt \
         WHERE t.job_id = '{job}' ORDER BY t.name"
    );
    eventually(LIMIT, &format!("job {job} to finish"), || async {
        let rows = rows(addr, &sql).await;
        let done = rows
            .iter()
            .all(|r| !matches!(r[1].as_str(), Some("queued" | "assigned" | "running")));
        (done && !rows.is_empty()).then_some(rows)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_finishes_its_work_gets_none_and_rm_needs_force_while_it_holds_some() {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let mut workers = [
        WorkerProcess::start(&addr, "w1", 1, dir.path()),
        WorkerProcess::start(&addr, "w2", 1, dir.path()),
    ];
    let long = submit_plan(
        dir.path(),
        &addr,
        "long.toml",
        "name = \"long\"\n[[task]]\nname = \"long\"\ncommand = [\"sleep\", \"60\"]\n",
    );
    let busy = running(&addr, "long").await;
    let other = if busy == "w1" { "w2" } else { "w1" };

    let (code, out, err) = run(
        &[
            "workers",
            "drain",
            &busy,
            "--reason",
            "kernel upgrade",
            "--coordinator",
            &addr,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "drain: {err}");
    assert!(
        out.contains(&format!("{busy}: drained; 1 task(s) still running there")),
        "{out}"
    );
    let row = listed(dir.path(), &addr, &busy).expect("the drained worker is listed");
    assert_eq!(row["drained"], true, "{row}");
    assert_eq!(row["status"], "healthy", "{row}");
    assert_eq!(row["reason"], "kernel upgrade", "{row}");
    // Draining again changes nothing and says so.
    let (code, out, _) = run(
        &["workers", "drain", &busy, "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!((code, out.contains("already drained")), (0, true), "{out}");

    // New work goes only to the other worker while the drained one keeps running its task.
    let short = submit_plan(
        dir.path(),
        &addr,
        "short.toml",
        "name = \"short\"\n[[matrix]]\nname = \"s{item}\"\ncommand = [\"true\"]\n\
         items = [\"1\", \"2\", \"3\"]\n",
    );
    for task in finished(&addr, &short).await {
        assert_eq!(task[1], "passed", "{task:?}");
        assert_eq!(task[2], other, "a drained worker was given {task:?}");
    }
    assert_eq!(running(&addr, "long").await, busy);

    // Removing a worker that holds work is refused, and says what to do.
    let (code, _, err) = run(
        &["workers", "rm", &busy, "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("holds 1 task(s)") && err.contains("force"),
        "{err}"
    );
    // An unknown worker is bad input.
    let (code, _, err) = run(
        &["workers", "rm", "nobody", "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no worker is named \"nobody\""), "{err}");

    // Forced: the task is queued again without using a retry and finishes on the other worker;
    // the removed worker process is told to stop, and does.
    let (code, out, err) = run(
        &[
            "workers",
            "rm",
            &busy,
            "--force",
            "--reason",
            "decommissioned",
            "--coordinator",
            &addr,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "rm --force: {err}");
    assert!(out.contains("removed; 1 task(s) queued again"), "{out}");
    let index = if busy == "w1" { 0 } else { 1 };
    assert_eq!(
        exit_code(&mut workers[index].child, LIMIT),
        Some(0),
        "the removed worker stops"
    );
    assert_eq!(running(&addr, "long").await, other);
    let attempts = rows(
        &addr,
        "SELECT a.attempt, a.worker_id, a.outcome, t.infra_retries_used FROM task_attempts a \
         JOIN tasks t ON t.id = a.task_id WHERE t.name = 'long' ORDER BY a.attempt",
    )
    .await;
    assert_eq!(attempts[0][1], busy.as_str(), "{attempts:?}");
    assert_eq!(attempts[0][2], "requeued: worker left", "{attempts:?}");
    assert_eq!(attempts[1][1], other, "{attempts:?}");
    assert_eq!(
        attempts[1][3], 0,
        "a removal must not use a retry: {attempts:?}"
    );

    // Gone from `workers`; `--all` shows why. Nothing was a failure.
    let (_, out, _) = run(&["workers", "--coordinator", &addr], dir.path());
    assert!(!out.contains(&busy), "{out}");
    let row = listed(dir.path(), &addr, &busy).expect("--all lists it");
    assert_eq!(row["status"], "left", "{row}");
    assert_eq!(row["drained"], false, "{row}");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("removed by an operator: decommissioned"),
        "{row}"
    );
    let recoveries = rows(&addr, "SELECT count(*) FROM worker_recovery_history").await;
    assert_eq!(recoveries, vec![vec![Value::from(0)]]);
    drop(long);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_outlives_a_kill_and_restart_and_ends_with_undrain() {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let mut worker = WorkerProcess::start(&addr, "w1", 1, dir.path());
    eventually(LIMIT, "w1 to register", || async {
        listed(dir.path(), &addr, "w1").map(|_| ())
    })
    .await;
    let (code, _, err) = run(
        &["workers", "drain", "w1", "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 0, "drain: {err}");
    let job = submit_plan(
        dir.path(),
        &addr,
        "one.toml",
        "name = \"one\"\n[[task]]\nname = \"one\"\ncommand = [\"true\"]\n",
    );

    // Killed and started again under its name: it registers, and is still drained.
    worker.kill();
    let log = dir.path().join("w1.log");
    // The log is appended across restarts: the new process's session is the second one.
    let sessions = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.matches("session open with the leader").count()
    };
    let before = sessions();
    let _worker = WorkerProcess::start(&addr, "w1", 1, dir.path());
    eventually(LIMIT, "w1 to reconnect", || async {
        (sessions() > before).then_some(())
    })
    .await;
    // Its registration commits right after the session opens.
    let row = eventually(LIMIT, "w1 registered again", || async {
        listed(dir.path(), &addr, "w1").filter(|row| row["status"] == "healthy")
    })
    .await;
    assert_eq!(
        (row["status"].as_str(), &row["drained"]),
        (Some("healthy"), &Value::Bool(true))
    );
    // With the only worker drained, the task was never given an attempt.
    let attempts = rows(&addr, "SELECT count(*) FROM task_attempts").await;
    assert_eq!(attempts, vec![vec![Value::from(0)]]);

    let (code, out, err) = run(
        &["workers", "undrain", "w1", "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 0, "undrain: {err}");
    assert!(out.contains("w1: undrained"), "{out}");
    let tasks = finished(&addr, &job).await;
    assert_eq!(tasks[0][1], "passed", "{tasks:?}");
    assert_eq!(tasks[0][2], "w1", "{tasks:?}");
}
