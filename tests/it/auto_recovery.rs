//! Auto-recovery with real processes: the `test-auto-recovery` demonstration passes; a
//! worker whose restart command keeps failing ends permanently failed after the configured
//! attempts; losing half the fleet at once runs a system recovery episode during which no
//! assignment is committed, and the job still finishes; a quarantined worker that comes back
//! gets no work until its quarantine ends.

use std::process::Command;
use std::time::Duration;

use crate::support::binary;
use crate::support::{local_cluster, operator};
use testfleet::cli::jobs;
use testfleet::demo::launch::{LocalCluster, LocalWorkers};
use testfleet::state::command::TaskSpec;

use super::support::{client, eventually};

fn task(id: String, seconds: f64) -> TaskSpec {
    TaskSpec {
        timeout_ms: 60_000,
        max_retries: 5,
        timeout_retries: 0,
        ..TaskSpec::new(id.clone(), id, vec!["sleep".into(), seconds.to_string()])
    }
}

pub(crate) async fn sql(cluster: &LocalCluster, query: &str) -> Vec<Vec<serde_json::Value>> {
    let leader = cluster.leader(Duration::from_secs(30), None).await.unwrap();
    let mut control = client(cluster.addr(leader)).await;
    let reply = control
        .query(testfleet::proto::QueryRequest {
            sql: query.to_string(),
            consistent: true,
            timeout_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    reply
        .rows_json
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

pub(crate) fn args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--worker-heartbeat-interval-ms",
        "100",
        "--worker-failure-timeout-ms",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// One coordinator with `extra` settings and `count` workers `{prefix}1`, `{prefix}2`, … of
/// `slots` slots each, once every worker is healthy; with the coordinators' addresses.
pub(crate) async fn one_node_fleet(
    dir: &std::path::Path,
    extra: &[String],
    prefix: &str,
    count: usize,
    slots: u32,
) -> (LocalCluster, Vec<String>, LocalWorkers) {
    let cluster = local_cluster(1, dir, extra);
    cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addrs: Vec<String> = cluster.addresses().into_values().collect();
    let workers =
        LocalWorkers::start(binary().as_ref(), dir, &cluster, prefix, count, slots).unwrap();
    eventually(Duration::from_secs(30), "every worker healthy", || {
        let cluster = &cluster;
        async move {
            let rows = sql(
                cluster,
                "SELECT count(*) FROM workers WHERE status = 'healthy'",
            )
            .await;
            (rows[0][0] == count).then_some(())
        }
    })
    .await;
    (cluster, addrs, workers)
}

/// Waits (up to a minute) until `worker` has `status`.
pub(crate) async fn worker_reaches(cluster: &LocalCluster, worker: &str, status: &str) {
    let query = format!("SELECT status FROM workers WHERE id = '{worker}'");
    eventually(
        Duration::from_secs(60),
        &format!("{worker} {status}"),
        || {
            let query = &query;
            async move {
                let rows = sql(cluster, query).await;
                (rows[0][0] == status).then_some(())
            }
        },
    )
    .await;
}

#[test]
fn the_auto_recovery_demonstration_passes() {
    let out = Command::new(binary())
        .args([
            "test-auto-recovery",
            "--num-workers",
            "3",
            "--run-time",
            "60",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PASS the restart command brought the worker back under a new PID"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_restart_keeps_failing_ends_permanently_failed() {
    let dir = super::support::test_dir();
    let extra = args(&[
        // The base policy these numbers set, not the breakers' levels.
        "--disable-circuit-breaker",
        "--recovery-interval-ms",
        "800",
        "--max-recovery-attempts",
        "3",
        "--restart-command",
        "echo cannot restart {worker}; exit 7",
    ]);
    let (cluster, _, mut workers) = one_node_fleet(dir.path(), &extra, "pf", 2, 1).await;
    workers.kill("pf1");
    worker_reaches(&cluster, "pf1", "permanently_failed").await;
    let rows = sql(
        &cluster,
        "SELECT attempt_number, success, recovery_type, details->>'exit_code' FROM worker_recovery_history \
         WHERE worker_id = 'pf1' ORDER BY attempt_number",
    )
    .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0].as_u64(), Some(i as u64 + 1), "{rows:?}");
        assert_eq!(row[1], false, "{rows:?}");
    }
    assert!(
        rows.iter().any(|r| r[2] == "restart" && r[3] == "7"),
        "the restart attempt records its exit status: {rows:?}"
    );
    let other = sql(&cluster, "SELECT status FROM workers WHERE id = 'pf2'").await;
    assert_eq!(other[0][0], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_half_the_fleet_runs_system_recovery_and_the_job_finishes() {
    let dir = super::support::test_dir();
    let (cluster, addrs, mut workers) = one_node_fleet(dir.path(), &args(&[]), "sys", 4, 2).await;
    let tasks: Vec<TaskSpec> = (0..40).map(|i| task(format!("sys-{i:02}"), 0.5)).collect();
    jobs::submit(&operator(&addrs), "sys-job", "system", &tasks)
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "tasks running", || {
        let addrs = addrs.clone();
        async move {
            let r = jobs::get_job(&operator(&addrs), "sys-job", false)
                .await
                .ok()?;
            (r.counts.get("running").copied().unwrap_or(0) >= 4).then_some(())
        }
    })
    .await;
    workers.kill("sys1");
    workers.kill("sys2");
    let report = tokio::time::timeout(
        Duration::from_secs(180),
        jobs::follow(&operator(&addrs), "sys-job"),
    )
    .await
    .expect("the job finishes")
    .unwrap();
    assert_eq!(report.counts.get("passed"), Some(&40), "{report:?}");
    let episode = eventually(Duration::from_secs(90), "a system recovery episode recorded", || {
        let cluster = &cluster;
        async move {
            let rows = sql(
                cluster,
                "SELECT CAST(details->>'held_at_us' AS BIGINT), CAST(details->>'resumed_at_us' AS BIGINT), \
                 affected_workers FROM system_recovery_history \
                 WHERE system_status <> 'self_healing' ORDER BY id LIMIT 1",
            )
            .await;
            rows.into_iter().next()
        }
    })
    .await;
    let held = episode[0].as_i64().expect("hold time recorded");
    let resumed = episode[1].as_i64().expect("resume time recorded");
    assert!(resumed > held);
    assert!(episode[2].as_u64() >= Some(2), "{episode:?}");
    let during = sql(
        &cluster,
        &format!(
            "SELECT count(*) FROM task_attempts WHERE epoch_us(assigned_at) > {held} \
             AND epoch_us(assigned_at) < {resumed}"
        ),
    )
    .await;
    let detail = sql(
        &cluster,
        &format!(
            "SELECT task_id, attempt, epoch_us(assigned_at) - {held}, {resumed} - {held} FROM task_attempts \
             WHERE epoch_us(assigned_at) > {held} AND epoch_us(assigned_at) < {resumed}"
        ),
    )
    .await;
    assert_eq!(
        during[0][0], 0,
        "assignments were committed while dispatch was held: {detail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_worker_that_reconnects_gets_no_work_until_its_hold_ends() {
    let dir = super::support::test_dir();
    // A crashed worker: reconnect (4 s), then a restart that fails at once, then quarantine
    // (watched for 4 s: time enough to start the worker again and see it held).
    let extra = args(&[
        // The base policy these numbers set, not the breakers' levels.
        "--disable-circuit-breaker",
        "--recovery-interval-ms",
        "4000",
        "--max-recovery-attempts",
        "3",
        "--restart-command",
        "exit 7",
    ]);
    let (cluster, addrs, mut workers) = one_node_fleet(dir.path(), &extra, "q", 2, 1).await;
    workers.kill("q1");
    worker_reaches(&cluster, "q1", "quarantined").await;
    // Back during its quarantine, with work waiting: it must not get any while held.
    workers.spawn("q1").unwrap();
    let tasks: Vec<TaskSpec> = (0..12).map(|i| task(format!("q-{i:02}"), 0.3)).collect();
    jobs::submit(&operator(&addrs), "q-job", "quarantine", &tasks)
        .await
        .unwrap();
    let held_polls = std::sync::atomic::AtomicUsize::new(0);
    eventually(Duration::from_secs(60), "q1 healthy after its hold", || {
        let cluster = &cluster;
        let held_polls = &held_polls;
        async move {
            let rows = sql(
                cluster,
                "SELECT (SELECT status FROM workers WHERE id = 'q1'), \
                 (SELECT count(*) FROM task_attempts WHERE worker_id = 'q1')",
            )
            .await;
            if rows[0][0] == "quarantined" {
                held_polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert_eq!(rows[0][1], 0, "a quarantined worker was given work");
            }
            (rows[0][0] == "healthy").then_some(())
        }
    })
    .await;
    assert!(held_polls.into_inner() > 0, "the hold was never observed");
    let rows = sql(
        &cluster,
        "SELECT recovery_type, success FROM worker_recovery_history \
         WHERE worker_id = 'q1' ORDER BY attempt_number",
    )
    .await;
    assert_eq!(
        rows.last().map(|r| (r[0].clone(), r[1].clone())),
        Some((serde_json::json!("quarantine"), serde_json::json!(true))),
        "the quarantine ended because the worker was back: {rows:?}"
    );
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        jobs::follow(&operator(&addrs), "q-job"),
    )
    .await
    .expect("the job finishes")
    .unwrap();
    assert_eq!(report.counts.get("passed"), Some(&12), "{report:?}");
}
