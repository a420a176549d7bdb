//! `testfleet cluster check` on a real 3-node cluster with real workers: after jobs ran,
//! every replica holds the same rows (exit 0); a node whose DuckDB file was altered while it
//! was down, then restarted and caught up, is named with the altered table (exit 1).

use std::path::Path;
use std::time::Duration;

use crate::support::{local_cluster, operator};
use testfleet::cli::jobs;
use testfleet::demo::launch::LocalCluster;
use testfleet::proto::{CheckDigestRequest, CheckState, StartCheckRequest, StatusRequest};
use testfleet::state::command::TaskSpec;

use super::support::{WorkerProcess, client, cluster_check, cluster_check_json, eventually, query};

const TASKS: usize = 12;

fn task(job: &str, i: usize) -> TaskSpec {
    // Every third task fails: final rows of both kinds.
    let script = if i % 3 == 2 {
        format!("echo failing {i} >&2; exit 3")
    } else {
        format!("echo ok {i}")
    };
    TaskSpec {
        timeout_ms: 30_000,
        timeout_retries: 0,
        ..TaskSpec::new(
            format!("{job}-{i:02}"),
            format!("{job} task {i}"),
            vec!["sh".into(), "-c".into(), script],
        )
    }
}

/// Three coordinators and two workers, with one job of [`TASKS`] tasks run to the end.
struct Fleet {
    cluster: LocalCluster,
    addrs: Vec<String>,
    _workers: Vec<WorkerProcess>,
}

async fn fleet_after_a_job(dir: &Path, job: &str) -> Fleet {
    let cluster = local_cluster(3, dir, &[]);
    cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addrs: Vec<String> = cluster.addresses().into_values().collect();
    let joined = addrs.join(",");
    let workers = ["cw1", "cw2"]
        .iter()
        .map(|name| WorkerProcess::start(&joined, name, 2, dir))
        .collect();
    // Both registered before the job: the check counts them.
    super::support::count_reaches(
        &addrs[0],
        "SELECT count(*) FROM workers WHERE status = 'healthy'",
        2,
        Duration::from_secs(60),
    )
    .await;
    let tasks: Vec<TaskSpec> = (0..TASKS).map(|i| task(job, i)).collect();
    jobs::submit(&operator(&addrs), job, job, &tasks)
        .await
        .unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        jobs::follow(&operator(&addrs), job),
    )
    .await
    .expect("the job finishes")
    .unwrap();
    assert_eq!(report.counts.get("passed"), Some(&8), "{report:?}");
    assert_eq!(report.counts.get("failed"), Some(&4), "{report:?}");
    Fleet {
        cluster,
        addrs,
        _workers: workers,
    }
}

fn node(report: &serde_json::Value, id: u64) -> &serde_json::Value {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("node {id} is not in the report: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_check_finds_every_replica_equal_after_jobs_ran() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet_after_a_job(dir.path(), "agree").await;

    let (code, report, stderr) = cluster_check_json(&fleet.addrs).await;
    assert_eq!(code, 0, "{report}\nstderr: {stderr}");
    assert_eq!(report["verdict"], "agree", "{report}");
    let index = report["log_index"].as_u64().unwrap();
    for id in 1..=3 {
        let n = node(&report, id);
        assert_eq!(n["checked"], true, "{report}");
        assert_eq!(n["log_index"].as_u64(), Some(index), "{report}");
        assert_eq!(n["differing_tables"].as_array().unwrap().len(), 0);
    }
    let tables = report["tables"].as_array().unwrap();
    assert_eq!(
        tables.len(),
        testfleet::state::schema::REPLICATED_TABLES.len()
    );
    let rows = |name: &str| {
        tables.iter().find(|t| t["table"] == name).unwrap()["majority"]["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("tasks"), TASKS as u64, "{report}");
    assert_eq!(rows("jobs"), 1, "{report}");
    assert_eq!(rows("workers"), 2, "{report}");

    // A follower forwards StartCheck to the leader; every node then answers with the same
    // digests for that marker.
    let leader = fleet
        .cluster
        .leader(Duration::from_secs(30), None)
        .await
        .unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut to_follower = client(fleet.cluster.addr(follower)).await;
    let started = to_follower
        .start_check(StartCheckRequest {
            check_id: "through-a-follower".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(started.log_index > index, "{started:?}");
    let mut answers = Vec::new();
    for id in 1..=3 {
        let control = client(fleet.cluster.addr(id)).await;
        let reply = eventually(
            Duration::from_secs(30),
            &format!("node {id}'s digests"),
            || {
                let mut control = control.clone();
                async move {
                    let reply = control
                        .get_check_digest(CheckDigestRequest {
                            check_id: "through-a-follower".into(),
                            log_index: started.log_index,
                        })
                        .await
                        .ok()?
                        .into_inner();
                    (reply.state() == CheckState::Done).then_some(reply)
                }
            },
        )
        .await;
        assert_eq!(reply.node_id, id);
        assert_eq!(reply.log_index, started.log_index);
        answers.push(reply.tables);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
    assert!(
        answers[0]
            .iter()
            .any(|t| t.table == "tasks" && t.rows == TASKS as u64)
    );

    // The table output says the same, and a second check is a new one at a later index.
    let (code, out, stderr) = cluster_check(&fleet.addrs, false).await;
    assert_eq!(code, 0, "{out}\nstderr: {stderr}");
    assert!(out.contains("AGREE: all 3 nodes"), "{out}");
    let first = report["check_id"].as_str().unwrap();
    assert!(!out.contains(first), "a second check reused the id {first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_check_names_a_node_whose_duckdb_file_was_altered_behind_its_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = fleet_after_a_job(dir.path(), "tamper").await;
    let leader = fleet
        .cluster
        .leader(Duration::from_secs(30), None)
        .await
        .unwrap();
    let victim = (1..=3).find(|id| *id != leader).unwrap();

    // The victim's own DuckDB (a plain read: what it has flushed) holds every final row.
    let mut control = client(fleet.cluster.addr(victim)).await;
    eventually(
        Duration::from_secs(30),
        "the victim's database to hold every final task",
        || {
            let mut control = control.clone();
            async move {
                let rows = query(
                    &mut control,
                    "SELECT count(*) FROM tasks WHERE status IN ('passed', 'failed')",
                )
                .await;
                (rows[0][0].as_u64() == Some(TASKS as u64)).then_some(())
            }
        },
    )
    .await;

    fleet.cluster.kill(victim);
    let db = dir.path().join(format!("node-{victim}/state.duckdb"));
    {
        let conn = duckdb::Connection::open(&db).unwrap();
        let changed = conn
            .execute(
                "UPDATE tasks SET name = 'altered behind its back' WHERE id = 'tamper-00'",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1, "the row to alter is in {}", db.display());
    }
    fleet.cluster.restart(victim).unwrap();

    // Caught up: following the leader, with everything the leader had applied.
    let mut to_leader = client(fleet.cluster.addr(leader)).await;
    let target = to_leader
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .last_applied
        .unwrap();
    control = client(fleet.cluster.addr(victim)).await;
    eventually(Duration::from_secs(60), "the victim to catch up", || {
        let mut control = control.clone();
        async move {
            let s = control.status(StatusRequest {}).await.ok()?.into_inner();
            (s.leader_id == Some(leader) && s.last_applied >= Some(target)).then_some(())
        }
    })
    .await;

    let (code, report, stderr) = cluster_check_json(&fleet.addrs).await;
    assert_eq!(code, 1, "{report}\nstderr: {stderr}");
    assert_eq!(report["verdict"], "differ", "{report}");
    for id in 1..=3u64 {
        let n = node(&report, id);
        assert_eq!(n["checked"], true, "{report}");
        let expected: Vec<&str> = if id == victim { vec!["tasks"] } else { vec![] };
        let got: Vec<&str> = n["differing_tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(got, expected, "node {id}: {report}");
    }
    let tasks = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "tasks")
        .unwrap();
    assert_eq!(
        tasks["differing_nodes"],
        serde_json::json!([victim]),
        "{report}"
    );
    assert_eq!(tasks["majority"]["rows"], TASKS as u64, "{report}");

    let (code, out, stderr) = cluster_check(&fleet.addrs, false).await;
    assert_eq!(code, 1, "{out}\nstderr: {stderr}");
    let named = format!(
        "node {victim} ({}) differs in tasks",
        fleet.cluster.addr(victim)
    );
    assert!(out.contains(&named), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_check_says_which_node_could_not_be_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = local_cluster(3, dir.path(), &[]);
    let leader = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let down = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(down);
    let addrs: Vec<String> = cluster.addresses().into_values().collect();
    let coordinators = addrs.join(",");
    let started = std::time::Instant::now();
    let (code, out, stderr) = tokio::task::spawn_blocking(move || {
        super::support::run(
            &[
                "cluster",
                "check",
                "--coordinator",
                coordinators.as_str(),
                // Long enough for the live nodes to hash their tables on a loaded machine (a
                // debug build, the hashing at a lower priority); the dead node is given up
                // after five seconds without an answer.
                "--wait",
                "60s",
            ],
            &std::env::temp_dir(),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{out}\nstderr: {stderr}");
    let named = format!("node {down} ({}) could not be checked", cluster.addr(down));
    assert!(out.contains(&named), "{out}");
    assert!(
        out.contains("INCOMPLETE: the 2 nodes checked agree"),
        "{out}"
    );
    assert!(out.contains("it could not be asked for 5s"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "a dead node held the check up for {:?}",
        started.elapsed()
    );
}
