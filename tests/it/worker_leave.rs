//! Workers stopped on purpose leave instead of failing: SIGTERM during a job makes a worker
//! finish what it runs, hand back nothing it could finish, and deregister. No failure, no
//! recovery attempt, no system episode; the others finish the job. Past its grace period, a
//! worker stops its attempts and they are queued again without using a retry.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testfleet::auth::Role;

use super::support::{
    WorkerProcess, binary, client, eventually, exit_code, local_cluster, query_consistent, run,
    submit_plan, test_dir, token_file,
};

async fn rows(addr: &str, sql: &str) -> Vec<Vec<serde_json::Value>> {
    query_consistent(&mut client(addr).await, sql).await
}

async fn number(addr: &str, sql: &str) -> u64 {
    rows(addr, sql).await[0][0].as_u64().unwrap()
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stopped_during_a_job_leave_and_the_others_finish_it() {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let mut leaving: Vec<WorkerProcess> = ["w1", "w2"]
        .into_iter()
        .map(|name| WorkerProcess::start(&addr, name, 1, dir.path()))
        .collect();
    let job = submit_plan(
        dir.path(),
        &addr,
        "plan.toml",
        "name = \"leave\"\n[[matrix]]\nname = \"t{item}\"\ncommand = [\"sleep\", \"2\"]\n\
         items = [\"1\", \"2\", \"3\", \"4\", \"5\", \"6\"]\n",
    );
    // Both leaving workers are busy before they are stopped.
    eventually(
        Duration::from_secs(30),
        "w1 and w2 to run a task each",
        || {
            let addr = addr.clone();
            async move {
                let busy = number(
                    &addr,
                    "SELECT count(DISTINCT worker_id) FROM tasks WHERE status = 'running'",
                )
                .await;
                (busy == 2).then_some(())
            }
        },
    )
    .await;
    let _stays = WorkerProcess::start(&addr, "w3", 1, dir.path());
    for worker in &leaving {
        sigterm(&worker.child);
    }
    for worker in &mut leaving {
        let code =
            tokio::task::block_in_place(|| exit_code(&mut worker.child, Duration::from_secs(30)));
        assert_eq!(code, Some(0), "a worker that left exits 0");
    }

    let (code, out, err) = run(
        &["wait", &job, "--coordinator", &addr, "-o", "json"],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let statuses = rows(&addr, "SELECT id, status FROM workers ORDER BY id").await;
    assert_eq!(
        statuses,
        vec![
            vec![serde_json::json!("w1"), serde_json::json!("left")],
            vec![serde_json::json!("w2"), serde_json::json!("left")],
            vec![serde_json::json!("w3"), serde_json::json!("healthy")],
        ]
    );
    for table in [
        "worker_recovery_history",
        "task_recovery_history",
        "system_recovery_history",
    ] {
        assert_eq!(
            // A coordinator's own self-healing (a full disk on this machine) is not about
            // workers.
            number(
                &addr,
                &format!(
                    "SELECT count(*) FROM {table}{}",
                    if table == "system_recovery_history" {
                        " WHERE system_status <> 'self_healing'"
                    } else {
                        ""
                    }
                )
            )
            .await,
            0,
            "a departure is not a failure: {table}"
        );
    }
    // The attempts that were running when the workers were stopped finished there.
    assert_eq!(
        number(
            &addr,
            "SELECT count(*) FROM task_attempts WHERE worker_id IN ('w1', 'w2') \
             AND outcome = 'passed'"
        )
        .await,
        2
    );
    // `workers` lists only the fleet; --all shows who left.
    let (_, out, _) = run(&["workers", "--coordinator", &addr], dir.path());
    assert!(!out.contains("w1") && out.contains("w3"), "{out}");
    let (_, out, _) = run(&["workers", "--all", "--coordinator", &addr], dir.path());
    assert!(out.contains("w1") && out.contains("left"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_grace_period_a_leaving_worker_hands_its_attempt_back_without_a_retry() {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let mut worker: Child = Command::new(binary())
        .args([
            "worker",
            "--coordinator",
            &addr,
            "--name",
            "w1",
            "--grace",
            "1s",
        ])
        .env("TESTFLEET_TOKEN_FILE", token_file(Role::Worker))
        .env("TESTFLEET_WORKER_STATE_DIR", dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (code, _, err) = run(
        &[
            "submit",
            "--coordinator",
            &addr,
            "--max-retries",
            "0",
            "--",
            "sleep",
            "60",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    eventually(Duration::from_secs(30), "the task to run", || {
        let addr = addr.clone();
        async move {
            (number(&addr, "SELECT count(*) FROM tasks WHERE status = 'running'").await == 1)
                .then_some(())
        }
    })
    .await;
    sigterm(&worker);
    let code = tokio::task::block_in_place(|| exit_code(&mut worker, Duration::from_secs(20)));
    assert_eq!(code, Some(0));

    // Queued again, with no retry used: it had none to use (--max-retries 0), so a failure
    // would have abandoned it.
    let task = rows(&addr, "SELECT status, attempt, reason FROM tasks").await;
    assert_eq!(task[0][0], "queued", "{task:?}");
    assert!(
        task[0][2].as_str().unwrap().contains("worker w1 left"),
        "{task:?}"
    );
    let attempt = rows(&addr, "SELECT outcome FROM task_attempts").await;
    assert_eq!(
        attempt,
        vec![vec![serde_json::json!("requeued: worker left")]]
    );
    assert_eq!(
        number(&addr, "SELECT count(*) FROM worker_recovery_history").await,
        0
    );
}
