//! Jobs end to end on a 3-node cluster of processes with real worker processes: every task
//! ends with exactly one final result that matches what its command did, also when the
//! leader is SIGKILLed in the middle of the job.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{local_cluster, operator};
use testfleet::cli::jobs;
use testfleet::demo::launch::LocalCluster;
use testfleet::state::command::TaskSpec;

use super::support::{WorkerProcess, client, cluster_check_json, eventually, query};

/// What a task's command does, and so what its result must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pass,
    Fail,
    Timeout,
    Unstartable,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Pass => "passed",
            Kind::Fail => "failed",
            Kind::Timeout => "timed_out",
            Kind::Unstartable => "error",
        }
    }
}

/// 200 tasks: 120 pass, 50 fail with exit 3, 10 time out, 20 cannot start. `pause` makes
/// every command take that long first (so a job spans a leader kill).
fn mixed_tasks(pause: &str) -> (Vec<TaskSpec>, BTreeMap<String, Kind>) {
    let mut tasks = Vec::new();
    let mut kinds = BTreeMap::new();
    for i in 0..200 {
        let kind = match i % 20 {
            0..=11 => Kind::Pass,
            12..=16 => Kind::Fail,
            17 => Kind::Timeout,
            _ => Kind::Unstartable,
        };
        let (command, timeout_ms) = match kind {
            Kind::Pass => (
                vec![
                    "sh".into(),
                    "-c".into(),
                    format!("sleep {pause}; echo ok {i}"),
                ],
                30_000,
            ),
            Kind::Fail => (
                vec![
                    "sh".into(),
                    "-c".into(),
                    format!("sleep {pause}; echo bad {i} >&2; exit 3"),
                ],
                30_000,
            ),
            Kind::Timeout => (vec!["sleep".into(), "30".into()], 300),
            Kind::Unstartable => (vec![format!("/nonexistent/test-{i}")], 30_000),
        };
        let id = format!("task-{i:03}");
        kinds.insert(id.clone(), kind);
        tasks.push(TaskSpec {
            timeout_ms,
            timeout_retries: 0,
            ..TaskSpec::new(id, format!("{kind:?}-{i}"), command)
        });
    }
    (tasks, kinds)
}

struct Fleet {
    cluster: LocalCluster,
    addrs: Vec<String>,
    _workers: Vec<WorkerProcess>,
    _dir: super::support::TestDir,
}

fn fleet() -> Fleet {
    let dir = super::support::test_dir();
    let cluster = local_cluster(3, dir.path(), &[]);
    let addrs: Vec<String> = cluster.addresses().into_values().collect();
    let joined = addrs.join(",");
    let workers = (1..=3)
        .map(|i| WorkerProcess::start(&joined, &format!("w{i}"), 4, dir.path()))
        .collect();
    Fleet {
        cluster,
        addrs,
        _workers: workers,
        _dir: dir,
    }
}

async fn check_results(fleet: &Fleet, job_id: &str, kinds: &BTreeMap<String, Kind>) {
    let report = jobs::get_job(&operator(&fleet.addrs), job_id, true)
        .await
        .unwrap();
    assert_eq!(report.status, "finished");
    assert_eq!(report.tasks.len(), 200);
    for task in &report.tasks {
        let kind = kinds[&task.id];
        assert_eq!(
            task.status,
            kind.expected(),
            "task {} ({kind:?}): {task:?}",
            task.id
        );
        match kind {
            Kind::Pass => assert!(task.output_tail.contains("ok"), "{task:?}"),
            Kind::Fail => {
                assert_eq!(task.exit_code, Some(3), "{task:?}");
                assert!(task.output_tail.contains("bad"), "{task:?}");
            }
            Kind::Timeout | Kind::Unstartable => {}
        }
    }
    // Exactly one final result per task, on every node.
    for addr in &fleet.addrs {
        let mut control = client(addr).await;
        let rows = eventually(Duration::from_secs(30), "the node to hold every result", || {
            let mut control = control.clone();
            async move {
                let rows = query(
                    &mut control,
                    "SELECT count(*) FILTER (WHERE status IN ('passed','failed','timed_out','error')), \
                     (SELECT count(*) FROM (SELECT task_id FROM task_attempts \
                       WHERE outcome IN ('passed','failed','timed_out','error') \
                       GROUP BY task_id HAVING count(*) > 1)) FROM tasks",
                )
                .await;
                (rows[0][0].as_u64() == Some(200)).then_some(rows)
            }
        })
        .await;
        assert_eq!(
            rows[0][1].as_u64(),
            Some(0),
            "a task with two final results on {addr}"
        );
        let _ = query(&mut control, "SELECT 1").await;
        drop(control);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mixed_tasks_each_get_one_true_result() {
    let fleet = fleet();
    fleet
        .cluster
        .leader(Duration::from_secs(60), None)
        .await
        .unwrap();
    let (tasks, kinds) = mixed_tasks("0");
    jobs::submit(&operator(&fleet.addrs), "job-mixed", "mixed", &tasks)
        .await
        .unwrap();
    // Submitting again (a client retry) creates nothing twice.
    assert_eq!(
        jobs::submit(&operator(&fleet.addrs), "job-mixed", "mixed", &tasks)
            .await
            .unwrap(),
        200
    );
    let report = tokio::time::timeout(
        Duration::from_secs(180),
        jobs::follow(&operator(&fleet.addrs), "job-mixed"),
    )
    .await
    .expect("the job finishes")
    .unwrap();
    assert_eq!(
        jobs::exit_code(&report),
        3,
        "error tasks make it an infrastructure exit"
    );
    check_results(&fleet, "job-mixed", &kinds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_a_leader_sigkill() {
    let mut fleet = fleet();
    let leader = fleet
        .cluster
        .leader(Duration::from_secs(60), None)
        .await
        .unwrap();
    let (tasks, kinds) = mixed_tasks("0.2");
    jobs::submit(&operator(&fleet.addrs), "job-failover", "failover", &tasks)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "a quarter of the job to finish",
        || {
            let addrs = fleet.addrs.clone();
            async move {
                let report = jobs::get_job(&operator(&addrs), "job-failover", false)
                    .await
                    .ok()?;
                let done: u32 = ["passed", "failed", "timed_out", "error"]
                    .iter()
                    .map(|s| report.counts.get(*s).copied().unwrap_or(0))
                    .sum();
                (done >= 50).then_some(())
            }
        },
    )
    .await;
    fleet.cluster.kill(leader);
    let report = tokio::time::timeout(
        Duration::from_secs(180),
        jobs::follow(&operator(&fleet.addrs), "job-failover"),
    )
    .await
    .expect("the job finishes after the failover")
    .unwrap();
    assert_eq!(report.status, "finished");
    fleet.cluster.restart(leader).unwrap();
    check_results(&fleet, "job-failover", &kinds).await;
    // The restarted former leader caught up: every replica holds the same rows.
    let (code, report, stderr) = cluster_check_json(&fleet.addrs).await;
    assert_eq!(code, 0, "cluster check: {report}\nstderr: {stderr}");
    assert_eq!(report["verdict"], "agree", "{report}");
}
