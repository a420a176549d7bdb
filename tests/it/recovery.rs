//! Health monitoring and task recovery with real worker processes: a SIGKILLed worker's
//! tasks finish elsewhere; a SIGSTOPped worker is failed, its tasks requeued, and after
//! SIGCONT it is healthy again with its late results recorded as stale; a new leader
//! recovers a worker that died with the old one and fails no live worker; with auto-recovery
//! disabled the tasks end abandoned and the job ends. After a worker's tasks were recovered,
//! `cluster check` finds every replica holding the same rows.

use std::time::Duration;

use crate::support::{local_cluster, operator};
use testfleet::cli::jobs;
use testfleet::demo::launch::LocalCluster;
use testfleet::state::command::TaskSpec;

use super::support::{WorkerProcess, client, cluster_check_json, eventually};

/// The tuned detection profile: heartbeat 100 ms, failure after 500 ms.
fn tuned(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--worker-heartbeat-interval-ms",
        "100",
        "--worker-failure-timeout-ms",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn sleeper(id: &str, seconds: f64) -> TaskSpec {
    TaskSpec {
        timeout_ms: 60_000,
        timeout_retries: 0,
        ..TaskSpec::new(
            id.to_string(),
            id.to_string(),
            vec!["sleep".into(), seconds.to_string()],
        )
    }
}

struct Setup {
    cluster: LocalCluster,
    addrs: Vec<String>,
    workers: Vec<WorkerProcess>,
    _dir: super::support::TestDir,
}

async fn setup(extra: &[&str]) -> Setup {
    let dir = super::support::test_dir();
    let cluster = local_cluster(3, dir.path(), &tuned(extra));
    cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addrs: Vec<String> = cluster.addresses().into_values().collect();
    let joined = addrs.join(",");
    let workers = ["w1", "w2"]
        .iter()
        .map(|name| WorkerProcess::start(&joined, name, 2, dir.path()))
        .collect();
    Setup {
        cluster,
        addrs,
        workers,
        _dir: dir,
    }
}

/// Submits four sleepers and waits until they all run; returns the tasks on `w1`.
async fn four_running(s: &Setup, job: &str, seconds: f64) -> Vec<String> {
    let tasks: Vec<TaskSpec> = (0..4)
        .map(|i| sleeper(&format!("{job}-{i}"), seconds))
        .collect();
    jobs::submit(&operator(&s.addrs), job, job, &tasks)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "four running tasks on two workers",
        || {
            let addrs = s.addrs.clone();
            async move {
                let report = jobs::get_job(&operator(&addrs), job, true).await.ok()?;
                let running: Vec<_> = report
                    .tasks
                    .iter()
                    .filter(|t| t.status == "running")
                    .collect();
                (running.len() == 4).then(|| {
                    running
                        .iter()
                        .filter(|t| t.worker_id == "w1")
                        .map(|t| t.id.clone())
                        .collect::<Vec<_>>()
                })
            }
        },
    )
    .await
}

async fn leader_query(s: &Setup, sql: &str) -> Vec<Vec<serde_json::Value>> {
    let leader = s
        .cluster
        .leader(Duration::from_secs(30), None)
        .await
        .unwrap();
    let mut control = client(s.cluster.addr(leader)).await;
    let request = testfleet::proto::QueryRequest {
        sql: sql.to_string(),
        consistent: true,
        timeout_ms: 0,
    };
    let reply = control.query(request).await.unwrap().into_inner();
    reply
        .rows_json
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

fn signal(worker: &WorkerProcess, sig: i32) {
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    unsafe {
        libc::kill(worker.child.id() as i32, sig);
    }
}

async fn finished(s: &Setup, job: &str) -> testfleet::proto::JobReport {
    tokio::time::timeout(
        Duration::from_secs(120),
        jobs::follow(&operator(&s.addrs), job),
    )
    .await
    .expect("the job finishes")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_s_tasks_finish_on_another() {
    let mut s = setup(&[]).await;
    let on_w1 = four_running(&s, "kill", 3.0).await;
    assert_eq!(
        on_w1.len(),
        2,
        "the scheduler spreads four tasks over two 2-slot workers"
    );
    s.workers[0].kill();
    let report = finished(&s, "kill").await;
    assert_eq!(report.counts.get("passed"), Some(&4), "{report:?}");
    for t in report.tasks.iter().filter(|t| on_w1.contains(&t.id)) {
        assert_eq!(t.worker_id, "w2", "{t:?}");
        assert_eq!(t.attempt, 2, "{t:?}");
    }
    let rows = leader_query(
        &s,
        "SELECT task_id, success, recovery_type, details->>'leader_term' IS NOT NULL, \
         details->>'detected_at_us' IS NOT NULL FROM task_recovery_history ORDER BY task_id",
    )
    .await;
    let recovered: Vec<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = on_w1.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(recovered, expected);
    for row in &rows {
        assert_eq!(row[1], serde_json::json!(true));
        assert_eq!(row[2], "requeue");
        assert_eq!(row[3], serde_json::json!(true));
        assert_eq!(row[4], serde_json::json!(true));
    }
    // Recovery rewrote rows on every node: the replicas still hold the same rows.
    let (code, report, stderr) = cluster_check_json(&s.addrs).await;
    assert_eq!(code, 0, "cluster check: {report}\nstderr: {stderr}");
    assert_eq!(report["verdict"], "agree", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_is_failed_and_comes_back_with_stale_results() {
    let s = setup(&[]).await;
    let on_w1 = four_running(&s, "pause", 1.5).await;
    signal(&s.workers[0], libc::SIGSTOP);
    let report = finished(&s, "pause").await;
    assert_eq!(report.counts.get("passed"), Some(&4));
    // Failed, and (auto-recovery on) already being recovered.
    let status = leader_query(&s, "SELECT status FROM workers WHERE id = 'w1'").await;
    assert!(
        status[0][0] == "failed" || status[0][0] == "recovering",
        "{status:?}"
    );
    signal(&s.workers[0], libc::SIGCONT);
    // Back to healthy, and its late results for the requeued attempts are stale.
    let addrs = s.addrs.clone();
    eventually(
        Duration::from_secs(30),
        "w1 healthy with its stale results recorded",
        || {
            let s = &s;
            let on_w1 = on_w1.clone();
            let _ = &addrs;
            async move {
                let rows = leader_query(
                    s,
                    "SELECT (SELECT status FROM workers WHERE id = 'w1'), \
                 (SELECT count(*) FROM stale_results WHERE worker_id = 'w1')",
                )
                .await;
                (rows[0][0] == "healthy" && rows[0][1].as_u64() >= Some(on_w1.len() as u64))
                    .then_some(())
            }
        },
    )
    .await;
    let after = jobs::get_job(&operator(&s.addrs), "pause", true)
        .await
        .unwrap();
    for t in after.tasks.iter().filter(|t| on_w1.contains(&t.id)) {
        assert_eq!(
            (t.status.as_str(), t.worker_id.as_str()),
            ("passed", "w2"),
            "{t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_recovers_a_worker_that_died_with_the_old_one() {
    let mut s = setup(&[]).await;
    let on_w1 = four_running(&s, "both", 3.0).await;
    let leader = s
        .cluster
        .leader(Duration::from_secs(30), None)
        .await
        .unwrap();
    s.workers[0].kill();
    s.cluster.kill(leader);
    let report = finished(&s, "both").await;
    assert_eq!(report.counts.get("passed"), Some(&4), "{report:?}");
    for t in &report.tasks {
        if on_w1.contains(&t.id) {
            assert_eq!(t.worker_id, "w2");
        } else {
            assert_eq!(
                t.attempt, 1,
                "a task of the live worker was requeued: {t:?}"
            );
        }
    }
    let w2 = leader_query(&s, "SELECT status FROM workers WHERE id = 'w2'").await;
    assert_eq!(w2[0][0], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_recovery_the_tasks_are_abandoned_and_the_job_ends() {
    let mut s = setup(&["--disable-auto-recovery"]).await;
    let on_w1 = four_running(&s, "off", 3.0).await;
    s.workers[0].kill();
    let report = finished(&s, "off").await;
    assert_eq!(
        report.counts.get("abandoned").copied(),
        Some(on_w1.len() as u32)
    );
    assert_eq!(jobs::exit_code(&report), 3);
    let full = jobs::get_job(&operator(&s.addrs), "off", true)
        .await
        .unwrap();
    for t in full.tasks.iter().filter(|t| on_w1.contains(&t.id)) {
        assert_eq!(t.status, "abandoned");
        assert!(t.reason.contains("auto-recovery disabled"), "{t:?}");
    }
    let rows = leader_query(
        &s,
        "SELECT count(*) FROM task_recovery_history WHERE NOT success",
    )
    .await;
    assert_eq!(rows[0][0].as_u64(), Some(on_w1.len() as u64));
}
