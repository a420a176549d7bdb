//! Everyday job commands through the real binary: `cancel`, Ctrl-C during `run`, and `wait`
//! for a job submitted with `--detach`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use testfleet::auth::Role;

use super::support::{
    binary, client, count_reaches, eventually, one_node_one_worker, query_consistent, run,
    submit_plan, token_file,
};

/// A plan of one task that sleeps for a minute (unless cancelled).
fn sleepy_plan(dir: &Path) -> String {
    let plan = dir.join("sleepy.toml");
    std::fs::write(
        &plan,
        "name = \"sleepy\"\n[[task]]\nname = \"sleep\"\ncommand = [\"sleep\", \"60\"]\n",
    )
    .unwrap();
    plan.display().to_string()
}

/// The status of `job` and of its one task, read consistently.
async fn statuses(addr: &str, job: &str) -> (String, String) {
    let rows = query_consistent(
        &mut client(addr).await,
        &format!(
            "SELECT j.status, t.status FROM jobs j JOIN tasks t ON t.job_id = j.id \
             WHERE j.id = '{job}'"
        ),
    )
    .await;
    let status = |i: usize| rows[0][i].as_str().unwrap().to_string();
    (status(0), status(1))
}

/// Waits until the task of `job` runs on a worker.
async fn until_running(addr: &str, job: &str) {
    eventually(Duration::from_secs(30), "the task to run", || async move {
        (statuses(addr, job).await.1 == "running").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_job_and_frees_its_worker() {
    let (dir, _cluster, addr, _worker) = one_node_one_worker().await;
    let plan = sleepy_plan(dir.path());
    let (code, job, err) = run(
        &["run", &plan, "--detach", "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let job = job.trim().to_string();
    until_running(&addr, &job).await;

    let (code, out, err) = run(&["cancel", &job, "--coordinator", &addr], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        statuses(&addr, &job).await,
        ("cancelled".into(), "cancelled".into())
    );
    // The worker's only slot is free again: a new task runs on it at once, not in a minute.
    let (code, _, err) = run(
        &[
            "submit",
            "--coordinator",
            &addr,
            "--timeout",
            "30s",
            "--",
            "true",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let passed = "SELECT count(*) FROM tasks WHERE status = 'passed'";
    count_reaches(&addr, passed, 1, Duration::from_secs(20)).await;

    // A second cancel says what is wrong and exits 2.
    let (code, _, err) = run(&["cancel", &job, "--coordinator", &addr], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already cancelled"), "{err}");
    let (code, _, err) = run(
        &["cancel", "no-such-job", "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no job has the id or name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_run_cancels_the_job_and_wait_follows_a_detached_one() {
    let (dir, _cluster, addr, _worker) = one_node_one_worker().await;
    let plan = sleepy_plan(dir.path());

    let child = Command::new(binary())
        .args(["run", &plan, "--coordinator", &addr, "-o", "json"])
        .env("TESTFLEET_TOKEN_FILE", token_file(Role::Operator))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let job = eventually(Duration::from_secs(30), "the job to run", || {
        let addr = addr.clone();
        async move {
            let rows = query_consistent(
                &mut client(&addr).await,
                "SELECT j.id FROM jobs j JOIN tasks t ON t.job_id = j.id \
                 WHERE t.status = 'running'",
            )
            .await;
            rows.first().map(|r| r[0].as_str().unwrap().to_string())
        }
    })
    .await;
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cancelling job"), "{err}");
    assert_eq!(out.status.code(), Some(1), "a cancelled job exits 1: {err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "cancelled", "{summary}");
    assert_eq!(
        statuses(&addr, &job).await,
        ("cancelled".into(), "cancelled".into())
    );

    // `wait` follows a job submitted with --detach and exits as `run` would.
    let job = submit_plan(
        dir.path(),
        &addr,
        "quick.toml",
        "name = \"quick\"\n[[task]]\nname = \"t\"\ncommand = [\"true\"]\n",
    );
    let (code, out, err) = run(
        &["wait", &job, "--coordinator", &addr, "-o", "json"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["status"], "finished", "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_tasks_are_found_by_prefix_or_name_and_a_task_shows_its_attempts() {
    let (dir, _cluster, addr, _worker) = one_node_one_worker().await;
    let named = "name = \"named\"\n[[task]]\nname = \"fails\"\n\
                 command = [\"sh\", \"-c\", \"echo to-stdout; exit 3\"]\nmax_retries = 0\n";
    let job = submit_plan(dir.path(), &addr, "named.toml", named);
    // By name: `wait` follows it, and exits 1 (a task failed).
    let (code, _, err) = run(&["wait", "named", "--coordinator", &addr], dir.path());
    assert_eq!(code, 1, "{err}");
    // By a unique prefix of the id.
    let (code, out, err) = run(
        &[
            "tasks",
            "--job",
            &job[..8],
            "--coordinator",
            &addr,
            "-o",
            "json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let tasks: serde_json::Value = serde_json::from_str(&out).unwrap();
    let task = tasks[0]["id"].as_str().unwrap().to_string();
    // A task by a prefix of its id: its spec and its attempt with the output.
    let (code, out, err) = run(
        &["task", "show", &task[..8], "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("attempt 1 on w1: failed, exit 3"), "{out}");
    assert!(out.contains("| to-stdout"), "{out}");
    // Its times are RFC 3339 in UTC, in JSON and in the text alike.
    let (code, json, err) = run(
        &["task", "show", &task, "--coordinator", &addr, "-o", "json"],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&json).unwrap();
    let started = shown["attempts"][0]["started_at"].as_str().unwrap();
    let parsed =
        time::OffsetDateTime::parse(started, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{started:?} is not RFC 3339: {e}"));
    assert!(
        parsed.offset().is_utc() && started.ends_with('Z'),
        "{started}"
    );
    assert!(out.contains(&format!("started {started}")), "{out}");
    // Nothing matches: an error, not an empty list.
    let (code, _, err) = run(
        &["tasks", "--job", "nope", "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no job has the id or name \"nope\""), "{err}");
    // Two jobs of one name: ambiguous, and both are named.
    submit_plan(dir.path(), &addr, "named.toml", named);
    let (code, _, err) = run(&["cancel", "named", "--coordinator", &addr], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("matches 2 jobs") && err.contains(&job),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_says_once_why_a_task_waits_for_a_worker() {
    let (dir, _cluster, addr, _worker) = one_node_one_worker().await;
    let plan = dir.path().join("plan9.toml");
    std::fs::write(
        &plan,
        "name = \"plan9\"\n[[task]]\nname = \"needs-plan9\"\ncommand = [\"true\"]\n\
         requires = { labels = { os = \"plan9\" } }\n",
    )
    .unwrap();
    let mut child = Command::new(binary())
        .args(["run", plan.to_str().unwrap(), "--coordinator", &addr])
        .env("TESTFLEET_TOKEN_FILE", token_file(Role::Operator))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let said = |l: &String| l.contains("needs-plan9 waits for a suitable worker");
    // Until it is said; then for 2 s more (eight progress polls) to see it is not said again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut quiet_until = None;
    loop {
        let now = std::time::Instant::now();
        let until = quiet_until.unwrap_or(deadline);
        if now >= until {
            break;
        }
        if let Ok(line) = rx.recv_timeout(until - now) {
            if said(&line) && quiet_until.is_none() {
                quiet_until = Some(std::time::Instant::now() + Duration::from_secs(2));
            }
            lines.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let told: Vec<&String> = lines.iter().filter(|l| said(l)).collect();
    assert_eq!(
        told.len(),
        1,
        "said once, with the reason:\n{}",
        lines.join("\n")
    );
    assert!(told[0].contains("plan9"), "{}", told[0]);
}
