//! Dispatch in the submission's own commit (`coordinator::preplace`), on a real coordinator
//! process with a real worker: with nothing else waiting, a job's tasks are assigned in the
//! same log entry that queues them — their first attempt's `assigned_at` is the job's own
//! submission time, which only that path produces (the dispatch loop stamps its own later
//! proposal). Tasks beyond the free slots, and a job submitted while another's task waits for
//! the slot, go through the dispatch loop instead; a parked task nobody can run does not stop
//! the fast path. Every task still runs once and passes.

use std::time::Duration;

use testfleet::demo::launch::LocalCluster;

use super::support::{
    WorkerProcess, client, count_reaches, local_cluster, query_consistent, submit_plan, test_dir,
};

const LIMIT: Duration = Duration::from_secs(60);

/// One coordinator and one healthy worker of one slot (no capability probe): (the cluster,
/// the coordinator's address, the worker).
async fn idle_fleet(dir: &std::path::Path) -> (LocalCluster, String, WorkerProcess) {
    let cluster = local_cluster(1, dir, &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let worker = WorkerProcess::start_with(&addr, "w1", dir, &["--no-probe"]);
    count_reaches(
        &addr,
        "SELECT count(*) FROM workers WHERE status = 'healthy'",
        1,
        LIMIT,
    )
    .await;
    (cluster, addr, worker)
}

/// (task name, submitted_at == assigned_at of attempt 1, status) of the job's tasks.
async fn dispatch_of(addr: &str, job: &str) -> Vec<(String, bool, String)> {
    let rows = query_consistent(
        &mut client(addr).await,
        &format!(
            "SELECT t.name, epoch_us(a.assigned_at) = epoch_us(t.submitted_at), t.status \
             FROM tasks t JOIN task_attempts a ON a.task_id = t.id AND a.attempt = 1 \
             WHERE t.job_id = '{job}' ORDER BY t.name"
        ),
    )
    .await;
    rows.iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or_default().to_string(),
                r[1].as_bool().unwrap_or(false),
                r[2].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn passed(addr: &str, job: &str, n: u64) {
    count_reaches(
        addr,
        &format!("SELECT count(*) FROM tasks WHERE job_id = '{job}' AND status = 'passed'"),
        n,
        LIMIT,
    )
    .await;
}

/// A plan of tasks that each sleep `seconds`, with extra TOML per task.
fn plan(name: &str, seconds: &str, tasks: &[(&str, &str)]) -> String {
    let mut plan = format!("name = \"{name}\"\n");
    for (task, extra) in tasks {
        plan.push_str(&format!(
            "[[task]]\nname = \"{task}\"\ncommand = [\"sleep\", \"{seconds}\"]\n{extra}"
        ));
    }
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_fleet_assigns_a_new_job_in_the_entry_that_submits_it() {
    let dir = test_dir();
    let (_cluster, addr, _worker) = idle_fleet(dir.path()).await;

    // A task nobody can run parks; it must not keep new jobs off the fast path.
    let parked = submit_plan(
        dir.path(),
        &addr,
        "parked.toml",
        &plan(
            "parked",
            "0",
            &[("never", "requires = { gpu_type = \"discrete\" }\n")],
        ),
    );

    // One slot, three tasks: the first is assigned with the submission, the other two by the
    // dispatch loop as the slot frees.
    let three = submit_plan(
        dir.path(),
        &addr,
        "three.toml",
        &plan("three", "0.2", &[("a", ""), ("b", ""), ("c", "")]),
    );
    passed(&addr, &three, 3).await;
    let dispatch = dispatch_of(&addr, &three).await;
    let fast: Vec<bool> = dispatch.iter().map(|(_, fast, _)| *fast).collect();
    assert_eq!(
        fast.iter().filter(|f| **f).count(),
        1,
        "exactly one task of three fits the one slot at submission: {dispatch:?}"
    );

    // The fleet is idle again: a one-task job goes the one-commit way.
    let one = submit_plan(
        dir.path(),
        &addr,
        "one.toml",
        &plan("one", "0", &[("x", "")]),
    );
    passed(&addr, &one, 1).await;
    assert_eq!(
        dispatch_of(&addr, &one).await,
        vec![("x".to_string(), true, "passed".to_string())]
    );

    // While the slot is busy (and another job's task waits for it), a new job is not placed
    // at submission: its task is queued and placed by the loop once the slot frees, after
    // the running one ended.
    let busy = submit_plan(
        dir.path(),
        &addr,
        "busy.toml",
        &plan("busy", "3", &[("first", ""), ("second", "")]),
    );
    let late = submit_plan(
        dir.path(),
        &addr,
        "late.toml",
        &plan("late", "0", &[("y", "")]),
    );
    passed(&addr, &busy, 2).await;
    passed(&addr, &late, 1).await;
    assert_eq!(
        dispatch_of(&addr, &late).await,
        vec![("y".to_string(), false, "passed".to_string())]
    );
    let waited = query_consistent(
        &mut client(&addr).await,
        &format!(
            "SELECT count(*) FROM task_attempts y JOIN tasks ty ON ty.id = y.task_id \
             JOIN task_attempts f JOIN tasks tf ON tf.id = f.task_id ON true \
             WHERE ty.job_id = '{late}' AND tf.job_id = '{busy}' AND tf.name = 'first' \
             AND y.assigned_at >= f.finished_at"
        ),
    )
    .await;
    assert_eq!(waited[0][0].as_u64(), Some(1), "{waited:?}");

    // The parked task is still queued, never assigned.
    let rows = query_consistent(
        &mut client(&addr).await,
        &format!("SELECT status, attempt FROM tasks WHERE job_id = '{parked}'"),
    )
    .await;
    assert_eq!(rows[0][0].as_str(), Some("queued"), "{rows:?}");
    assert_eq!(rows[0][1].as_u64(), Some(0), "{rows:?}");
}

/// A client retrying its submission (same job and task ids) while a task of that job waits,
/// parked, for a worker that can run it: the retry is proposed alone, and the waiting task
/// keeps its place in the scheduler — it runs once such a worker arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_submission_leaves_its_waiting_task_in_the_queue() {
    use testfleet::cli::jobs;
    use testfleet::state::command::TaskSpec;

    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _plain = WorkerProcess::start_with(&addr, "plain", dir.path(), &["--no-probe"]);
    count_reaches(
        &addr,
        "SELECT count(*) FROM workers WHERE status = 'healthy'",
        1,
        LIMIT,
    )
    .await;

    let tasks = vec![TaskSpec {
        capabilities: vec!["webgpu".to_string()],
        ..TaskSpec::new("retry-gpu", "gpu", vec!["true".into()])
    }];
    let remote = super::support::operator(std::slice::from_ref(&addr));
    for _ in 0..2 {
        jobs::submit(&remote, "retry-job", "retry", &tasks)
            .await
            .unwrap();
    }
    let _gpu = WorkerProcess::start_with(
        &addr,
        "gpu",
        dir.path(),
        &["--no-probe", "--capability", "webgpu"],
    );
    passed(&addr, "retry-job", 1).await;
    let rows = query_consistent(
        &mut client(&addr).await,
        "SELECT worker_id FROM task_attempts WHERE task_id = 'retry-gpu'",
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0].as_str(), Some("gpu"), "{rows:?}");
}

/// A short attempt's start and result are proposed together (`coordinator::sessions`'s start
/// hold): on an idle fleet a one-task job of `true` costs two log entries — its submission,
/// which assigns it, and its start with its result — not three. Counted from DuckDB's
/// `last_applied_index` around ten such jobs run one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_attempts_start_and_result_are_one_log_entry() {
    use testfleet::cli::jobs;
    use testfleet::state::command::TaskSpec;

    let dir = test_dir();
    let (_cluster, addr, _worker) = idle_fleet(dir.path()).await;
    let remote = super::support::operator(std::slice::from_ref(&addr));
    let run_one = |n: usize| {
        let remote = remote.clone();
        let addr = addr.clone();
        async move {
            let job = format!("short-{n}");
            let tasks = vec![TaskSpec::new(
                format!("short-task-{n}"),
                "short",
                vec!["true".into()],
            )];
            jobs::submit(&remote, &job, "short", &tasks).await.unwrap();
            passed(&addr, &job, 1).await;
        }
    };
    let applied = || async {
        let rows = query_consistent(
            &mut client(&addr).await,
            "SELECT last_applied_index FROM raft_meta",
        )
        .await;
        rows[0][0].as_u64().expect("an applied index")
    };
    run_one(0).await;
    let before = applied().await;
    const JOBS: u64 = 10;
    for n in 1..=JOBS as usize {
        run_one(n).await;
    }
    let entries = applied().await - before;
    // Room for the node's own entries meanwhile (a health sample every 10 s).
    assert!(
        entries <= 2 * JOBS + 3,
        "{entries} log entries for {JOBS} one-task jobs (3 each when start and result are \
         proposed apart)"
    );
}
