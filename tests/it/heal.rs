//! A node whose DuckDB file was damaged while it was down: it sets the file aside, rebuilds
//! its state from its snapshot and log, and ends with the same tables as the others (in
//! process, then with real processes and a SIGKILL); and when its log is purged past what a
//! fresh state needs and it has no snapshot, it refuses to start with a clear message.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::binary;
use crate::support::{local_cluster, operator};
use testfleet::coordinator::{Coordinator, CoordinatorError};
use testfleet::raft::heal::HealError;
use testfleet::state::command::{Command, TaskSpec, Timestamp};

use super::cluster::TestCluster;
use super::support::{WorkerProcess, client, eventually, query, test_dir};

/// A job of `tasks` trivial tasks.
fn job(id: &str, tasks: usize) -> Vec<TaskSpec> {
    (0..tasks)
        .map(|t| TaskSpec {
            timeout_ms: 30_000,
            priority: (t % 3) as i32,
            ..TaskSpec::new(
                format!("{id}-task-{t}"),
                format!("t{t}"),
                vec!["true".into()],
            )
        })
        .collect()
}

/// Commits `count` jobs of 5 tasks through the leader's Raft; returns the last log index.
async fn submit_jobs(cluster: &TestCluster, prefix: &str, count: usize) -> u64 {
    let leader = cluster.leader().await;
    let raft = cluster.node(leader).raft().clone();
    let mut last = 0;
    for n in 0..count {
        let id = format!("{prefix}-{n}");
        let command = Command::SubmitJob {
            tasks: job(&id, 5),
            job: id,
            name: "suite".into(),
            at: Timestamp(1_700_000_000_000_000 + n as i64),
        };
        last = raft.client_write(command).await.unwrap().log_id.index;
    }
    last
}

/// Overwrites the first 4 KiB (DuckDB's main header, with its magic bytes) with garbage.
fn overwrite_header(db: &Path) {
    let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&[0xA5; 4096]).unwrap();
    file.sync_all().unwrap();
}

/// Cuts the file to its first 5 bytes.
fn truncate_to_a_few_bytes(db: &Path) {
    let file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    file.set_len(5).unwrap();
    file.sync_all().unwrap();
}

/// Leaves a file DuckDB opens fine but whose rows cannot be loaded: a task status this
/// binary does not know.
fn unloadable_rows(db: &Path) {
    let conn = duckdb::Connection::open(db).unwrap();
    let changed = conn
        .execute("UPDATE tasks SET status = 'no-such-status'", [])
        .unwrap();
    assert!(changed > 0, "the file should hold tasks");
}

/// The files a node set aside, `state.duckdb.corrupt-*`.
fn set_aside(node_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(node_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("state.duckdb.corrupt-") && !n.ends_with(".wal"))
        })
        .collect()
}

/// Every running node ends with the same rows in every replicated table.
async fn assert_same_tables(cluster: &TestCluster) {
    let ids = cluster.running();
    eventually(
        Duration::from_secs(30),
        "every node to hold the same rows",
        || {
            let images: Vec<_> = ids.iter().map(|id| cluster.tables(*id)).collect();
            async move { images.iter().all(|i| *i == images[0]).then_some(()) }
        },
    )
    .await;
}

/// Waits until a follower has purged its log behind a snapshot, stops it and returns its id.
async fn stop_a_follower_behind_a_snapshot(cluster: &mut TestCluster) -> u64 {
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let node = cluster.node(follower).clone();
    // Snapshots and purges run behind the writes; on a loaded two-core machine they lag (one
    // CI dry run, with a browser and three clusters beside it, took over 90 s; alone: ~3 s).
    eventually(
        Duration::from_secs(240),
        "the follower to purge its log behind a snapshot",
        || {
            let purged = node.metrics().purged;
            async move { purged.is_some_and(|p| p.index > 50).then_some(()) }
        },
    )
    .await;
    drop(node);
    cluster.stop(follower).await;
    follower
}

/// A follower is stopped, `damage` is done to its DuckDB file, and it is started again: it
/// sets the file aside, rebuilds from its snapshot and log, and ends equal to the others.
async fn a_follower_heals_from(damage: fn(&Path)) {
    // Snapshots every 100 entries: the rebuild needs the snapshot (the log is purged).
    let mut cluster = TestCluster::start_with(3, 100).await;
    submit_jobs(&cluster, "before", 150).await;
    let follower = stop_a_follower_behind_a_snapshot(&mut cluster).await;
    let db = cluster.config(follower).db_path;
    damage(&db);

    cluster.restart(follower).await;
    let last = submit_jobs(&cluster, "after", 10).await;
    cluster.applied(last).await;
    assert_same_tables(&cluster).await;
    let tasks = cluster.tables(follower);
    let tasks = tasks.tables.iter().find(|t| t.name == "tasks").unwrap();
    assert_eq!(tasks.rows.len(), 160 * 5, "the rebuilt node lost tasks");
    let node_dir = db.parent().unwrap();
    assert_eq!(
        set_aside(node_dir).len(),
        1,
        "the damaged file should be kept, renamed, next to the new one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_with_an_overwritten_duckdb_header_rebuilds_its_state() {
    a_follower_heals_from(overwrite_header).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_with_a_truncated_duckdb_file_rebuilds_its_state() {
    a_follower_heals_from(truncate_to_a_few_bytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_whose_duckdb_rows_do_not_load_rebuilds_its_state() {
    a_follower_heals_from(unloadable_rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_snapshot_and_with_a_purged_log_the_node_refuses_to_start() {
    let mut cluster = TestCluster::start_with(3, 100).await;
    submit_jobs(&cluster, "job", 150).await;
    let follower = stop_a_follower_behind_a_snapshot(&mut cluster).await;
    let config = cluster.config(follower);
    std::fs::remove_file(config.snapshot_dir().join("current.snapshot")).unwrap();
    overwrite_header(&config.db_path);
    let damaged = std::fs::read(&config.db_path).unwrap();

    let err = match Coordinator::start(config.clone(), cluster.peers[&follower].clone()).await {
        Ok(_) => panic!("a node that cannot rebuild its state started"),
        Err(err) => err,
    };
    assert!(
        matches!(err, CoordinatorError::Heal(HealError::CannotRebuild(_))),
        "{err:?}"
    );
    let message = err.to_string();
    for needed in [
        "cannot rebuild its state",
        "is damaged",
        "is purged up to index",
        "no usable snapshot",
        "Nothing was changed on disk",
        "receives a snapshot from the leader",
        &config.db_path.display().to_string(),
    ] {
        assert!(
            message.contains(needed),
            "{needed:?} missing from: {message}"
        );
    }
    // Nothing was touched: the damaged file is where it was, as it was.
    assert_eq!(std::fs::read(&config.db_path).unwrap(), damaged);
    assert!(set_aside(config.db_path.parent().unwrap()).is_empty());
}

/// The rows of `table` on the node at `addr`, from its own DuckDB copy.
async fn rows(addr: &str, sql: &str) -> Vec<Vec<serde_json::Value>> {
    let mut control = client(addr).await;
    query(&mut control, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_node_with_a_damaged_duckdb_file_rejoins_with_the_leaders_tables() {
    let dir = test_dir();
    // Snapshots every 200 entries, so the restarted node has one to rebuild from.
    let extra = ["--snapshot-logs-since-last", "200"].map(String::from);
    let mut cluster = local_cluster(3, dir.path(), &extra);
    let addrs: Vec<String> = cluster.addresses().into_values().collect();
    let joined = addrs.join(",");
    let _workers: Vec<WorkerProcess> = (1..=2)
        .map(|i| WorkerProcess::start(&joined, &format!("w{i}"), 4, dir.path()))
        .collect();
    let leader = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    for n in 0..3 {
        let id = format!("job-{n}");
        testfleet::cli::jobs::submit(&operator(&addrs), &id, "suite", &job(&id, 40))
            .await
            .unwrap();
    }
    let finished = "SELECT count(*) FROM tasks WHERE status = 'passed'";
    eventually(Duration::from_secs(120), "every task to pass", || async {
        let rows = rows(cluster.addr(leader), finished).await;
        (rows[0][0].as_u64() == Some(120)).then_some(())
    })
    .await;

    let victim = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(victim);
    let db = dir
        .path()
        .join(format!("node-{victim}"))
        .join("state.duckdb");
    overwrite_header(&db);
    cluster.restart(victim).unwrap();
    let leader = cluster.settled(Duration::from_secs(60), 0).await.unwrap();

    // The node's own copy (a plain read on it) ends equal to the leader's, table by table.
    for sql in [
        "SELECT * FROM jobs ORDER BY id",
        "SELECT * FROM tasks ORDER BY id",
        "SELECT * FROM task_attempts ORDER BY task_id, attempt",
        "SELECT * FROM workers ORDER BY id",
    ] {
        let (leader_addr, victim_addr) = (cluster.addr(leader), cluster.addr(victim));
        eventually(
            Duration::from_secs(30),
            &format!("node {victim} to answer {sql:?} like the leader"),
            || async move {
                let expected = rows(leader_addr, sql).await;
                let got = rows(victim_addr, sql).await;
                (!expected.is_empty() && got == expected).then_some(())
            },
        )
        .await;
    }
    let node_dir = db.parent().unwrap();
    assert_eq!(set_aside(node_dir).len(), 1, "the damaged file is kept");
    let log = std::fs::read_to_string(node_dir.join("coordinator.log")).unwrap();
    assert!(
        log.contains("THE STATE DATABASE IS DAMAGED"),
        "the node should say loudly what happened; its log:\n{log}"
    );
}

/// The same refusal from the binary: one clear message and a non-zero exit, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_to_start_a_node_it_cannot_rebuild_with_one_message() {
    use openraft::storage::RaftLogStorage;
    use testfleet::raft::TypeConfig;
    use testfleet::raft::log_store::LogStore;

    let dir = test_dir();
    let db = dir.path().join("state.duckdb");
    let args = [
        "--db-path",
        db.to_str().unwrap(),
        "--snapshot-logs-since-last",
        "50",
        "--max-in-snapshot-log-to-keep",
        "0",
    ];
    // Write until the node has purged its log behind a snapshot (seen once it is stopped).
    let log_path = dir.path().join("raft-log");
    let mut purged = None;
    for _ in 0..5 {
        let mut node = super::support::start_coordinator(&args, dir.path());
        let control = client(&node.addr).await;
        eventually(Duration::from_secs(30), "the node to lead", || {
            let mut control = control.clone();
            async move {
                let request = testfleet::proto::StatusRequest {};
                let status = control.status(request).await.ok()?.into_inner();
                (status.role == "leader").then_some(())
            }
        })
        .await;
        super::support::commit_bench(&node.addr, 150, 4).await;
        // Snapshots are built in the background; the log is purged behind one once it is built.
        let snapshot = dir.path().join("snapshots").join("current.snapshot");
        eventually(Duration::from_secs(30), "a snapshot", || {
            let built = snapshot.exists();
            async move { built.then_some(()) }
        })
        .await;
        super::support::commit_bench(&node.addr, 10, 1).await;
        node.kill();
        let mut log = LogStore::<TypeConfig>::open(&log_path).unwrap();
        purged = log.get_log_state().await.unwrap().last_purged_log_id;
        if purged.is_some() {
            break;
        }
    }
    assert!(purged.is_some(), "the node never purged its log");
    std::fs::remove_file(dir.path().join("snapshots").join("current.snapshot")).unwrap();
    overwrite_header(&db);

    let mut child = std::process::Command::new(binary())
        .arg("coordinator")
        .args(args)
        .args(["--port", "0"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node started (or hangs) instead of refusing to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one message; stderr:\n{stderr}");
    assert!(
        errors[0].contains("this node cannot rebuild its state")
            && errors[0].contains("receives a snapshot from the leader"),
        "{stderr}"
    );
}
