//! Snapshots through the state machine's openraft interface: a snapshot built on one node
//! and installed on a fresh one gives identical tables; an older snapshot never rolls a
//! node back; a restart finds the snapshot again.

use openraft::alias::EntryOf;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload};
use testfleet::raft::TypeConfig;
use testfleet::raft::state_machine::{SnapshotData, StateMachine};
use testfleet::state::command::{Command, TaskSpec, Timestamp};
use testfleet::state::store::{DbSettings, dump_with};

fn settings() -> DbSettings {
    DbSettings {
        threads: 1,
        memory_limit: "256MB".into(),
    }
}

fn job(n: usize) -> Command {
    Command::SubmitJob {
        job: format!("job-{n}"),
        name: "suite".into(),
        tasks: (0..5)
            .map(|t| TaskSpec {
                timeout_ms: 1000,
                priority: t,
                ..TaskSpec::new(
                    format!("job-{n}-task-{t}"),
                    format!("t{t}"),
                    vec!["true".into()],
                )
            })
            .collect(),
        at: Timestamp(1_700_000_000_000_000 + n as i64),
    }
}

async fn apply(sm: &mut StateMachine, entries: Vec<EntryOf<TypeConfig>>) {
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.expect("apply");
}

fn entries(from: u64, count: u64) -> Vec<EntryOf<TypeConfig>> {
    (from..from + count)
        .map(|i| Entry {
            log_id: log_id::<TypeConfig>(1, 1, i),
            payload: EntryPayload::Normal(job(i as usize)),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_then_install_gives_identical_tables() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = StateMachine::open(
        &dir.path().join("a.duckdb"),
        &dir.path().join("a"),
        &settings(),
    )
    .unwrap();
    apply(&mut leader, entries(1, 40)).await;
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(
        snapshot.meta.last_log_id,
        Some(log_id::<TypeConfig>(1, 1, 40))
    );

    let mut fresh = StateMachine::open(
        &dir.path().join("b.duckdb"),
        &dir.path().join("b"),
        &settings(),
    )
    .unwrap();
    fresh
        .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .unwrap();
    let (a, _) = dump_with(&{
        leader.flush().unwrap();
        leader.reader().unwrap()
    })
    .unwrap();
    let (b, meta_b) = dump_with(&{
        fresh.flush().unwrap();
        fresh.reader().unwrap()
    })
    .unwrap();
    assert_eq!(a, b, "tables differ after install");
    assert_eq!(meta_b.unwrap().last_applied_index, Some(40));
    assert_eq!(fresh.with_machine(|m| m.tasks().len()), 200);

    // Applying on after the install continues from the snapshot's state.
    apply(&mut fresh, entries(41, 1)).await;
    assert_eq!(fresh.with_machine(|m| m.tasks().len()), 205);

    // An older snapshot is ignored: no rollback.
    let (before, _) = dump_with(&{
        fresh.flush().unwrap();
        fresh.reader().unwrap()
    })
    .unwrap();
    fresh
        .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .unwrap();
    let (after, _) = dump_with(&{
        fresh.flush().unwrap();
        fresh.reader().unwrap()
    })
    .unwrap();
    assert_eq!(before, after, "an older snapshot rolled state back");

    // A restart finds the current snapshot and the state again.
    drop(fresh);
    let mut reopened = StateMachine::open(
        &dir.path().join("b.duckdb"),
        &dir.path().join("b"),
        &settings(),
    )
    .unwrap();
    let current = reopened
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot kept on disk");
    assert!(current.meta.last_log_id.is_some());
    let (applied, _) = reopened.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 1, 41)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_leaves_the_old_state_readable() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = StateMachine::open(
        &dir.path().join("a.duckdb"),
        &dir.path().join("a"),
        &settings(),
    )
    .unwrap();
    apply(&mut node, entries(1, 3)).await;
    let (before, meta_before) = dump_with(&{
        node.flush().unwrap();
        node.reader().unwrap()
    })
    .unwrap();
    let snapshot = node
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut meta = snapshot.meta.clone();
    meta.last_log_id = Some(log_id::<TypeConfig>(2, 1, 100));
    let mut truncated = snapshot.snapshot.clone();
    truncated.truncate(truncated.len() / 2);
    assert!(node.install_snapshot(&meta, truncated).await.is_err());
    let (after, meta_after) = dump_with(&{
        node.flush().unwrap();
        node.reader().unwrap()
    })
    .unwrap();
    assert_eq!(before, after);
    assert_eq!(meta_before, meta_after);
}

async fn build(sm: &mut StateMachine) -> openraft::alias::SnapshotOf<TypeConfig, SnapshotData> {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

fn bench_entries(from: u64, count: u64) -> Vec<EntryOf<TypeConfig>> {
    (from..from + count)
        .map(|i| Entry {
            log_id: log_id::<TypeConfig>(1, 1, i),
            payload: EntryPayload::Normal(Command::Bench {
                payload: vec![0; 8],
            }),
        })
        .collect()
}

fn bench_rows(sm: &StateMachine) -> Vec<i64> {
    sm.flush().unwrap();
    let reader = sm.reader().unwrap();
    let mut rows = reader
        .prepare("SELECT log_index FROM bench_log ORDER BY log_index")
        .unwrap();
    rows.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A node that is ahead of a snapshot it is sent keeps its own snapshot file, which its log
/// may be purged up to (openraft refuses to start a node whose log is purged past its
/// snapshot), and the entries openraft replays after that install are not applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_snapshot_neither_replaces_a_newer_file_nor_replays_entries() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        StateMachine::open(
            &dir.path().join(format!("{name}.duckdb")),
            &dir.path().join(name),
            &settings(),
        )
        .unwrap()
    };
    let mut old = open("old");
    apply(&mut old, bench_entries(1, 3)).await;
    let older = build(&mut old).await;

    let mut node = open("node");
    apply(&mut node, bench_entries(1, 6)).await;
    let own = build(&mut node).await;
    assert_eq!(own.meta.last_log_id, Some(log_id::<TypeConfig>(1, 1, 6)));

    node.install_snapshot(&older.meta, older.snapshot.clone())
        .await
        .unwrap();
    assert_eq!(node.snapshot_index(), Some(6), "the snapshot went back");
    // What openraft does next: it replays the log from the installed snapshot on.
    apply(&mut node, bench_entries(4, 5)).await;
    assert_eq!(bench_rows(&node), (1..=8).collect::<Vec<_>>());

    drop(node);
    let mut reopened = open("node");
    let current = reopened
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot kept on disk");
    assert_eq!(
        current.meta.last_log_id,
        Some(log_id::<TypeConfig>(1, 1, 6))
    );
    let (applied, _) = reopened.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 1, 8)));
}
