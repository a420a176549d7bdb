//! Replica-check markers in `apply`: each check digests DuckDB exactly as of its marker; and
//! (ignored until fixed) the divergence of `task_attempts` that the check found.

use std::time::{Duration, Instant};

use openraft::entry::RaftEntry;
use openraft::type_config::alias::EntryOf;

use super::*;
use crate::raft::replica_check::Digests;
use crate::state::command::Timestamp;

type Entry = EntryOf<TypeConfig>;

fn entry(index: u64, command: Command) -> Entry {
    Entry::new_normal(
        openraft::testing::log_id::<TypeConfig>(1, 1, index),
        command,
    )
}

fn bench() -> Command {
    Command::Bench {
        payload: vec![7; 3],
    }
}

fn check(id: &str) -> Command {
    Command::CheckReplicas {
        id: id.to_string(),
        at: Timestamp(1),
    }
}

/// Polls the node's answer until its digests are done (the hashing runs on its own thread).
fn digests(sm: &StateMachine, id: &str, index: u64) -> Digests {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sm.check_answer(id, index) {
            Answer::Done(digests) => return digests,
            Answer::Computing => {}
            other => panic!("check {id} at {index}: {other:?}"),
        }
        assert!(Instant::now() < deadline, "check {id} not done within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The digests of a database holding exactly these `bench_log` rows and nothing else.
fn expected_with_bench_rows(indexes: &[u64]) -> Vec<crate::state::digest::TableSum> {
    let store = Store::open_in_memory().unwrap();
    for index in indexes {
        store
            .connection()
            .execute(
                "INSERT INTO bench_log VALUES (?, 3)",
                duckdb::params![*index as i64],
            )
            .unwrap();
    }
    store.pin_read().unwrap().digest().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_check_digests_the_database_as_of_its_marker() {
    let mut sm = StateMachine::in_memory().unwrap();
    assert_eq!(
        sm.check_answer("first", 3),
        Answer::Pending { applied: None }
    );
    // One apply call holding two markers, with entries before, between and after them.
    let entries = vec![
        entry(1, bench()),
        entry(2, bench()),
        entry(3, check("first")),
        entry(4, bench()),
        entry(5, check("second")),
        entry(6, bench()),
    ];
    sm.apply(futures::stream::iter(
        entries.into_iter().map(|e| Ok((e, None))),
    ))
    .await
    .unwrap();

    let first = digests(&sm, "first", 3);
    assert_eq!(first.log_index, 3);
    assert_eq!(first.tables, expected_with_bench_rows(&[1, 2]));
    let second = digests(&sm, "second", 5);
    assert_eq!(second.log_index, 5);
    assert_eq!(second.tables, expected_with_bench_rows(&[1, 2, 4]));
    assert_ne!(first.tables, second.tables);

    // An index that holds another check, and one past which this process never saw a marker.
    assert!(matches!(sm.check_answer("second", 3), Answer::Failed(_)));
    assert!(matches!(sm.check_answer("none", 6), Answer::Missed(_)));
    assert_eq!(
        sm.check_answer("later", 9),
        Answer::Pending { applied: Some(6) }
    );
}

/// A task's attempt 1 is assigned, started and requeued, then attempt 2 is assigned.
fn requeue_story() -> Vec<Command> {
    use std::collections::BTreeMap;

    use crate::state::command::{Assignment, FaultCategory, TaskSpec};
    let spec = TaskSpec {
        timeout_ms: 1_000,
        timeout_retries: 0,
        ..TaskSpec::new("t1", "t1", vec!["true".into()])
    };
    let assign = |attempt: u32, at: i64| Command::AssignTasks {
        term: 1,
        at: Timestamp(at),
        assignments: vec![Assignment {
            task: "t1".into(),
            worker: "w1".into(),
            attempt,
        }],
    };
    vec![
        Command::LeaderElected {
            node: 1,
            term: 1,
            at: Timestamp(1),
        },
        Command::RegisterWorker {
            worker: "w1".into(),
            host: "h".into(),
            address: "127.0.0.1:1".into(),
            capabilities_json: "{}".into(),
            labels: BTreeMap::new(),
            at: Timestamp(2),
        },
        Command::SubmitJob {
            job: "j1".into(),
            name: "j1".into(),
            tasks: vec![spec],
            at: Timestamp(3),
        },
        assign(1, 4),
        Command::TaskStarted {
            task: "t1".into(),
            attempt: 1,
            worker: "w1".into(),
            at: Timestamp(5),
        },
        Command::RequeueTask {
            task: "t1".into(),
            attempt: 1,
            reason: "worker lost".into(),
            category: FaultCategory::Connection,
            at: Timestamp(6),
        },
        assign(2, 7),
    ]
}

/// Applies `commands` then a check marker, in one apply call or (with `flush_each`) with
/// a marker after every command, which forces a DuckDB flush there; returns the final digests.
async fn final_digests(commands: Vec<Command>, flush_each: bool) -> Digests {
    let mut sm = StateMachine::in_memory().unwrap();
    let mut entries = Vec::new();
    let mut index = 0;
    for command in commands {
        index += 1;
        entries.push(entry(index, command));
        if flush_each {
            index += 1;
            entries.push(entry(index, check(&format!("c{index}"))));
        }
    }
    index += 1;
    entries.push(entry(index, check("last")));
    sm.apply(futures::stream::iter(
        entries.into_iter().map(|e| Ok((e, None))),
    ))
    .await
    .unwrap();
    digests(&sm, "last", index)
}

/// Found by `testfleet ha --fault-injection` with the replica check (seed 3: all three nodes
/// differed in `task_attempts`). `RowBatch::collect` used to read attempt rows from the machine
/// at flush time, and the machine holds only each task's *current* attempt: an attempt that
/// was requeued and superseded by the next one before a flush was never written (or kept its
/// unfinished row), so which rows survived depended on when each node flushed. Attempt rows are
/// now copied into `Changes` when they change, keyed by task and attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_flushed_at_different_moments_hold_the_same_rows() {
    let at_once = final_digests(requeue_story(), false).await;
    let one_by_one = final_digests(requeue_story(), true).await;
    for (a, b) in at_once.tables.iter().zip(&one_by_one.tables) {
        assert_eq!(a, b, "{} depends on when DuckDB was flushed", a.table);
    }
}

/// Self-healing's DuckDB levers: the memory limit can be lowered and raised although the
/// configuration is locked (the `sql` sandbox's locks stay), and a checkpoint runs under the
/// store lock on a file database with applied rows.
#[tokio::test]
async fn the_memory_limit_moves_and_a_checkpoint_runs_on_a_locked_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DbSettings {
        threads: 1,
        memory_limit: "512MB".to_string(),
    };
    let mut sm = StateMachine::open(
        &dir.path().join("s.duckdb"),
        &dir.path().join("snap"),
        &settings,
    )
    .unwrap();
    let before = sm.memory_limit().unwrap();
    let lowered = sm.set_memory_limit(256 * 1000 * 1000).unwrap();
    assert_ne!(before, lowered);
    assert!(lowered.contains("MiB"), "{before} -> {lowered}");
    assert_eq!(sm.memory_limit().unwrap(), lowered);
    // The sandbox's locks hold for everything else.
    let reader = sm.reader().unwrap();
    let refused = reader.execute_batch("SET threads = 4;").unwrap_err();
    assert!(refused.to_string().contains("locked"), "{refused}");
    // Every connection of the instance sees the lowered limit.
    let seen: String = reader
        .query_row("SELECT current_setting('memory_limit')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, lowered);
    sm.apply(futures::stream::iter(
        (1..=3).map(|i| Ok((entry(i, bench()), None))),
    ))
    .await
    .unwrap();
    sm.checkpoint().unwrap();
    assert_eq!(sm.durable_index(), Some(3), "the checkpoint flushed first");
    sm.set_memory_limit(512 * 1000 * 1000).unwrap();
    assert_eq!(sm.memory_limit().unwrap(), before);
}

/// The size of DuckDB's WAL beside `db` (0 when there is none).
fn wal_bytes(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push(".wal");
    std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len())
}

/// A flusher with nothing to write for `REST_BEFORE_CHECKPOINT` checkpoints DuckDB (its WAL
/// folded into the file) once enough rows were written since the last checkpoint, and not
/// for fewer.
#[tokio::test]
async fn a_flusher_at_rest_checkpoints_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.duckdb");
    let mut sm = StateMachine::open(&db, &dir.path().join("snap"), &DbSettings::default()).unwrap();
    let few = (CHECKPOINT_AT_REST_ROWS / 2) as u64;
    sm.apply(futures::stream::iter(
        (1..=few).map(|i| Ok((entry(i, bench()), None))),
    ))
    .await
    .unwrap();
    sm.flush().unwrap();
    let small_wal = wal_bytes(&db);
    assert!(small_wal > 0, "the rows are in the WAL");
    // Twice the rest: too few rows for a checkpoint, so the WAL stays.
    std::thread::sleep(2 * REST_BEFORE_CHECKPOINT + Duration::from_millis(500));
    assert_eq!(wal_bytes(&db), small_wal, "no checkpoint for {few} rows");

    let total = few + CHECKPOINT_AT_REST_ROWS as u64;
    sm.apply(futures::stream::iter(
        (few + 1..=total).map(|i| Ok((entry(i, bench()), None))),
    ))
    .await
    .unwrap();
    sm.flush().unwrap();
    assert!(wal_bytes(&db) > small_wal);
    let deadline = Instant::now() + Duration::from_secs(30);
    while wal_bytes(&db) > 0 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint 30 s after the last write"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows: i64 = sm
        .reader()
        .unwrap()
        .query_row("SELECT count(*) FROM bench_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, total as i64);
}
