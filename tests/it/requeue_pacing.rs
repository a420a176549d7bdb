//! Requeue pacing while the system breaker is open, end to end: a worker whose executor is
//! wedged (injected `withhold-results`: its attempts end but the end is never told, and it
//! goes on heartbeating) holds eight attempts past their timeout. With the system breaker
//! closed the leader requeues all eight in the scan that finds them; with it forced open the
//! same eight are requeued one per second (`breakers.open_requeue_rate = 1`), the rest waiting
//! for later scans, and none is lost. Two single-node clusters run side by side, the same
//! job on each, so the comparison holds on a busy machine.

use std::path::Path;
use std::time::Duration;

use testfleet::demo::launch::LocalCluster;

use super::support::{
    WorkerProcess, client, count_reaches, local_cluster, query_consistent, run, submit_plan,
    test_dir,
};

const LIMIT: Duration = Duration::from_secs(90);
const TASKS: u64 = 8;

async fn start(dir: &Path, name: &str) -> (LocalCluster, String, WorkerProcess) {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pacing.toml");
    std::fs::write(&config, "[breakers]\nopen_requeue_rate = 1.0\n").unwrap();
    // Without auto-recovery nothing fails the wedged worker (which would requeue everything it
    // holds at once): what moves its attempts is the monitor's scan alone.
    let extra = [
        "--config".to_string(),
        config.display().to_string(),
        "--disable-auto-recovery".to_string(),
    ];
    let cluster = local_cluster(1, &dir, &extra);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let worker = WorkerProcess::start_with(
        &addr,
        "wedged",
        &dir,
        &[
            "--no-probe",
            "--slots",
            "8",
            "--inject-fault",
            "withhold-results",
        ],
    );
    (cluster, addr, worker)
}

/// Submits the job and waits until each of its tasks was requeued once as stalled; the
/// seconds between the first and the last of those first requeues.
async fn requeue_spread(dir: &Path, addr: &str) -> f64 {
    let items: Vec<String> = (1..=TASKS).map(|i| format!("\"{i}\"")).collect();
    let plan = format!(
        "[[matrix]]\nname = \"t{{item}}\"\ncommand = [\"true\"]\ntimeout = \"1s\"\n\
         max_retries = 20\nitems = [{}]\n",
        items.join(", ")
    );
    let job = submit_plan(dir, addr, "job.toml", &plan);
    let requeued = format!(
        "SELECT count(DISTINCT r.task_id) FROM task_recovery_history r JOIN tasks t \
         ON t.id = r.task_id WHERE t.job_id = '{job}' AND r.recovery_type = 'timeout' \
         AND r.success"
    );
    count_reaches(addr, &requeued, TASKS, LIMIT).await;
    let spread = format!(
        "SELECT epoch_us(max(first)) - epoch_us(min(first)) FROM (SELECT min(r.recovery_time) \
         AS first FROM task_recovery_history r JOIN tasks t ON t.id = r.task_id \
         WHERE t.job_id = '{job}' AND r.recovery_type = 'timeout' AND r.success \
         GROUP BY r.task_id)"
    );
    let rows = query_consistent(&mut client(addr).await, &spread).await;
    let (code, _, err) = run(&["cancel", &job, "--coordinator", addr], dir);
    assert_eq!(code, 0, "{err}");
    rows[0][0].as_i64().expect("a spread in µs") as f64 / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_attempts_are_requeued_at_once_when_closed_and_paced_when_the_system_breaker_is_open()
 {
    let dir = test_dir();
    let ((_closed, closed_addr, _w1), (open_cluster, open_addr, _w2)) =
        tokio::join!(start(dir.path(), "closed"), start(dir.path(), "open"));
    let (code, _, err) = run(
        &[
            "breaker",
            "force-open",
            "system",
            "--reason",
            "test",
            "--coordinator",
            &open_addr,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");

    let (closed_dir, open_dir) = (dir.path().join("closed"), dir.path().join("open"));
    let (closed, open) = tokio::join!(
        requeue_spread(&closed_dir, &closed_addr),
        requeue_spread(&open_dir, &open_addr)
    );
    eprintln!(
        "first requeues of {TASKS} stalled attempts spread over: closed {closed:.2} s, open {open:.2} s"
    );
    // Closed: found by one scan (two if the assignments straddled one); open: a burst of one,
    // then one per second.
    assert!(closed < 2.5, "closed: {closed} s");
    assert!(open >= (TASKS - 2) as f64, "open: {open} s");
    let log = open_cluster.log(1);
    assert!(
        log.contains("system breaker open: stalled attempts wait"),
        "the leader says why attempts wait"
    );
}
