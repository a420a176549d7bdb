//! Worker faults, from real signals: a spawn the kernel refuses is reported with the part of the
//! worker that failed; a worker whose working directory is read-only reports storage faults,
//! its task passes on another worker and recovery restarts it first; a worker killed and
//! started again says its previous process crashed, one that left does not; a worker whose
//! session keeps breaking reconnects and finishes its work. The read-only directory is a real
//! tmpfs mount; the other faults are injected with the worker's hidden `--inject-fault`, which
//! drives the worker's real spawn and session paths.

use std::time::Duration;

use testfleet::worker::marker::marker_path;

use super::support::{
    Tmpfs, WorkerProcess, client, count_reaches, eventually, exit_code, local_cluster, log_lines,
    query_consistent, run, submit_plan, test_dir,
};

const LIMIT: Duration = Duration::from_secs(60);

/// The value of `key=value` in a tracing line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..].split_whitespace().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_refused_for_lack_of_descriptors_is_a_resource_exhaustion_worker_fault() {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _worker = WorkerProcess::start_with(
        &addr,
        "w1",
        dir.path(),
        &["--inject-fault", "spawn-error=EMFILE"],
    );
    let (code, task, err) = run(
        &[
            "submit",
            "--coordinator",
            &addr,
            "--max-retries",
            "0",
            "--",
            "true",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let task = task.trim();

    // The attempt is the worker's fault, and its stored tail names the category.
    count_reaches(
        &addr,
        &format!(
            "SELECT count(*) FROM task_attempts WHERE task_id = '{task}' \
             AND outcome = 'worker_fault' AND output_tail LIKE \
             'worker fault (resource_exhaustion): worker cannot start `true`: Too many open files%'"
        ),
        1,
        LIMIT,
    )
    .await;
    // Out of retries, the task is abandoned rather than failed: not the test's doing.
    count_reaches(
        &addr,
        &format!("SELECT count(*) FROM tasks WHERE id = '{task}' AND status = 'abandoned'"),
        1,
        LIMIT,
    )
    .await;
    // The leader logged the category the worker sent.
    let line = eventually(LIMIT, "the leader's worker fault line", || async {
        let log = cluster.log(leader);
        let line = *log_lines(&log, &["worker fault", "worker=w1", task]).first()?;
        Some(line.to_string())
    })
    .await;
    assert_eq!(field(&line, "fault"), Some("resource_exhaustion"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_work_directory_is_read_only_has_storage_faults_and_is_restarted_first() {
    let dir = test_dir();
    // The worker runs in a read-only tmpfs: a task without a `cwd` runs there (needs root).
    let Some(read_only) = Tmpfs::mount(&dir.path().join("ro"), "size=1m", true) else {
        return;
    };
    let work_dir = read_only.path().canonicalize().unwrap();
    // Breakers and proactive recovery as a fleet has them (neither is disabled): the storage
    // faults must take the path real ones take. The worker's breaker needs 5 calls before it
    // weighs them; the planner fails a worker at its third infrastructure fault.
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _bad = WorkerProcess::start_in(&addr, "ro", dir.path(), &work_dir, &[]);
    count_reaches(
        &addr,
        "SELECT count(*) FROM workers WHERE id = 'ro' AND status = 'healthy'",
        1,
        LIMIT,
    )
    .await;
    let (code, task, err) = run(
        &[
            "submit",
            "--coordinator",
            &addr,
            "--max-retries",
            "10",
            "--",
            "true",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let task = task.trim();

    // Alone, the bad worker gets the task back after each fault (a requeued task avoids the
    // worker of its last attempt only while another can run it), until its third storage
    // fault: recovery fails it with category storage and tries the storage order's first
    // strategy, a restart (no restart command is configured, so that attempt fails at once).
    let first = eventually(LIMIT, "a recovery attempt of ro", || async {
        let rows = query_consistent(
            &mut client(&addr).await,
            "SELECT recovery_type, details->>'category', details->>'failure_reason' \
             FROM worker_recovery_history WHERE worker_id = 'ro' ORDER BY attempt_number LIMIT 1",
        )
        .await;
        rows.into_iter().next()
    })
    .await;
    assert_eq!(first[0], "restart", "{first:?}");
    assert_eq!(first[1], "storage", "{first:?}");
    let reason = first[2].as_str().unwrap_or_default();
    assert!(reason.contains("infrastructure faults"), "{first:?}");

    // Every attempt it reported was a storage fault naming the directory and the errno; none
    // ran. The failure of the worker can overtake its report of the last one, which then
    // shows as requeued with the worker.
    let attempts = query_consistent(
        &mut client(&addr).await,
        &format!(
            "SELECT outcome, output_tail FROM task_attempts \
             WHERE task_id = '{task}' AND worker_id = 'ro' ORDER BY attempt"
        ),
    )
    .await;
    let expected = format!(
        "worker fault (storage): work directory {} is read-only (EROFS): {}",
        work_dir.display(),
        std::io::Error::from_raw_os_error(libc::EROFS)
    );
    let reported = attempts.iter().filter(|row| row[0] == "worker_fault");
    assert!(reported.clone().count() >= 1, "{attempts:?}");
    for row in reported {
        assert_eq!(row[1], expected.as_str(), "{attempts:?}");
    }
    assert!(
        (attempts.iter()).all(|row| row[0] == "worker_fault"
            || row[0].as_str().is_some_and(|o| o.starts_with("requeued"))),
        "{attempts:?}"
    );
    // The leader heard of at least three, each a storage fault.
    let log = cluster.log(leader);
    let lines = log_lines(&log, &["worker fault", "worker=ro", task]);
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        assert_eq!(field(line, "fault"), Some("storage"), "{line}");
    }

    // A healthy worker takes the requeued task, and it passes there.
    let healthy_dir = dir.path().join("rw");
    std::fs::create_dir(&healthy_dir).unwrap();
    let _good = WorkerProcess::start_in(&addr, "rw", dir.path(), &healthy_dir, &[]);
    count_reaches(
        &addr,
        &format!("SELECT count(*) FROM tasks WHERE id = '{task}' AND status = 'passed'"),
        1,
        LIMIT,
    )
    .await;
    count_reaches(
        &addr,
        &format!(
            "SELECT count(*) FROM task_attempts WHERE task_id = '{task}' \
             AND worker_id = 'rw' AND outcome = 'passed'"
        ),
        1,
        LIMIT,
    )
    .await;
    // The write check cleans up after itself.
    let left: Vec<_> = std::fs::read_dir(&healthy_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_and_started_again_says_it_crashed_and_one_that_left_does_not() {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let sessions = || log_lines(&cluster.log(leader), &["worker session open", "worker=w1"]).len();
    let restarts = || -> Vec<String> {
        let log = cluster.log(leader);
        let lines = log_lines(&log, &["worker restarted", "worker=w1"]);
        lines.into_iter().map(str::to_string).collect()
    };
    let marker = marker_path(dir.path(), "w1");

    // A first start: nothing to report.
    let mut worker = WorkerProcess::start_with(&addr, "w1", dir.path(), &[]);
    eventually(LIMIT, "w1's first session", || async {
        (sessions() == 1).then_some(())
    })
    .await;
    let text = std::fs::read_to_string(&marker).expect("a running worker keeps its marker");
    let started_at = text
        .lines()
        .find_map(|line| line.strip_prefix("started_at_us="))
        .expect("the marker says when the worker started")
        .to_string();

    // SIGKILL: the marker outlives the process, and the next start reports the crash.
    worker.kill();
    assert!(marker.exists(), "a killed worker cannot remove its marker");
    let mut worker = WorkerProcess::start_with(&addr, "w1", dir.path(), &[]);
    let line = eventually(LIMIT, "the leader to hear of the crash", || async {
        restarts().into_iter().next()
    })
    .await;
    assert_eq!(field(&line, "previous_exit"), Some("crashed"), "{line}");
    assert_eq!(
        field(&line, "previous_started_at_us"),
        Some(started_at.as_str()),
        "{line}"
    );
    eventually(LIMIT, "w1's second session", || async {
        (sessions() == 2).then_some(())
    })
    .await;

    // SIGTERM: the worker leaves, exits 0 and removes its marker; its next start is clean.
    worker.terminate();
    assert_eq!(exit_code(&mut worker.child, LIMIT), Some(0));
    assert!(!marker.exists(), "a worker that left removes its marker");
    let _worker = WorkerProcess::start_with(&addr, "w1", dir.path(), &[]);
    eventually(LIMIT, "w1's third session", || async {
        (sessions() == 3).then_some(())
    })
    .await;
    assert_eq!(
        restarts().len(),
        1,
        "only the start after the kill reports a crash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_drops_its_session_every_second_reconnects_and_its_tasks_pass() {
    let dir = test_dir();
    // A worker whose session keeps breaking is drained by proactive recovery and cut off by
    // its circuit breaker, by design (tests/it/breakers.rs); this test is about the session
    // path, so both are off.
    let cluster = local_cluster(
        1,
        dir.path(),
        &[
            "--enable-proactive-recovery=false".to_string(),
            "--disable-circuit-breaker".to_string(),
        ],
    );
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _worker = WorkerProcess::start_with(
        &addr,
        "w1",
        dir.path(),
        &["--inject-fault", "drop-session,every=1s"],
    );
    // Six tasks of 0.8 s on one slot: about five seconds of work across several sessions.
    let job = submit_plan(
        dir.path(),
        &addr,
        "plan.toml",
        "name = \"flapping\"\n[[matrix]]\nname = \"t{item}\"\ncommand = [\"sleep\", \"0.8\"]\n\
         items = [\"1\", \"2\", \"3\", \"4\", \"5\", \"6\"]\n",
    );
    count_reaches(
        &addr,
        &format!("SELECT count(*) FROM tasks WHERE job_id = '{job}' AND status = 'passed'"),
        6,
        LIMIT,
    )
    .await;

    let log = cluster.log(leader);
    let opened = log_lines(&log, &["worker session open", "worker=w1"]).len();
    let closed = log_lines(&log, &["worker session closed", "worker=w1"]).len();
    assert!(opened >= 3, "{opened} sessions opened:\n{log}");
    assert!(closed >= 2, "{closed} sessions closed:\n{log}");
    let worker_log = std::fs::read_to_string(dir.path().join("w1.log")).unwrap();
    let drops = log_lines(&worker_log, &["injected fault: dropping the session"]).len();
    assert!(drops >= 2, "{drops} sessions dropped:\n{worker_log}");
}

#[test]
fn a_bad_fault_spec_is_a_usage_error_that_lists_the_accepted_forms() {
    let dir = test_dir();
    let (code, _, err) = run(
        &[
            "worker",
            "--coordinator",
            "127.0.0.1:1",
            "--name",
            "w1",
            "--inject-fault",
            "spawn-error=ENOENT",
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"spawn-error=ENOENT\""), "{err}");
    assert!(err.contains("unknown errno"), "{err}");
    assert!(err.contains("drop-session,every=DUR"), "{err}");
    let (code, _, err) = run(
        &[
            "worker",
            "--coordinator",
            "127.0.0.1:1",
            "--name",
            "w1",
            "--inject-fault",
            "slow-heartbeats,factor=2",
            "--inject-fault",
            "slow-heartbeats,factor=3",
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("only spawn-error may be given more than once"),
        "{err}"
    );
    // Hidden: a testing aid, not an operator's option.
    let (_, help, _) = run(&["worker", "--help"], dir.path());
    assert!(!help.contains("inject-fault"), "{help}");
}
