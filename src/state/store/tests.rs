//! The DuckDB store against a real (in-memory or on-disk) DuckDB.

use std::collections::BTreeMap;

use super::*;
use crate::state::command::{
    Assignment, BreakerState, Command, FaultCategory, Outcome, TaskSpec, Timestamp,
};
use crate::state::machine::Reply;

pub(super) fn at(t: i64) -> Timestamp {
    Timestamp(1_700_000_000_000_000 + t)
}

pub(super) fn spec(id: &str) -> TaskSpec {
    TaskSpec {
        env: BTreeMap::from([("K".into(), "V".into())]),
        cwd: Some("/tmp".into()),
        timeout_ms: 1_000,
        priority: 3,
        labels: BTreeMap::from([("os".into(), "linux".into())]),
        capabilities: vec!["webgpu".into()],
        ..TaskSpec::new(
            id,
            format!("test {id}"),
            vec!["sh".into(), "-c".into(), "echo 'quoted \"text\"'".into()],
        )
    }
}

/// A log touching every table.
pub(super) fn history() -> Vec<Command> {
    vec![
        Command::LeaderElected {
            node: 1,
            term: 1,
            at: at(0),
        },
        Command::RegisterWorker {
            worker: "w1".into(),
            host: "h1".into(),
            address: "127.0.0.1:7001".into(),
            capabilities_json: r#"{"cpus": 2, "gpu": null}"#.into(),
            labels: BTreeMap::from([("os".into(), "linux".into())]),
            at: at(1),
        },
        Command::SubmitJob {
            job: "j1".into(),
            name: "suite".into(),
            tasks: vec![spec("t1"), spec("t2"), spec("t3")],
            at: at(2),
        },
        Command::AssignTasks {
            term: 1,
            at: at(3),
            assignments: vec![
                Assignment {
                    task: "t1".into(),
                    worker: "w1".into(),
                    attempt: 1,
                },
                Assignment {
                    task: "t2".into(),
                    worker: "w1".into(),
                    attempt: 1,
                },
            ],
        },
        Command::TaskStarted {
            task: "t1".into(),
            attempt: 1,
            worker: "w1".into(),
            at: at(4),
        },
        Command::FinishTask {
            task: "t1".into(),
            attempt: 1,
            worker: "w1".into(),
            outcome: Outcome::Failed,
            exit_code: Some(1),
            duration_ms: 12,
            output_tail: "line 1\nline 2, with \"quotes\"".into(),
            at: at(5),
        },
        Command::RequeueTask {
            task: "t2".into(),
            attempt: 1,
            reason: "worker lost".into(),
            category: FaultCategory::Connection,
            at: at(6),
        },
        Command::FinishTask {
            task: "t2".into(),
            attempt: 1,
            worker: "w1".into(),
            outcome: Outcome::Passed,
            exit_code: Some(0),
            duration_ms: 3,
            output_tail: String::new(),
            at: at(7),
        },
        Command::RecordWorkerRecovery {
            worker: "w1".into(),
            attempt_number: 1,
            success: true,
            recovery_type: "reconnect".into(),
            error_message: None,
            details_json: r#"{"strategy": "reconnect"}"#.into(),
            at: at(8),
        },
        Command::RecordTaskRecovery {
            task: "t2".into(),
            worker: Some("w1".into()),
            attempt_number: 1,
            success: true,
            recovery_type: "requeue".into(),
            error_message: None,
            details_json: "{}".into(),
            at: at(8),
        },
        Command::RecordSystemRecovery {
            system_status: "critical".into(),
            success: true,
            affected_workers: 1,
            affected_tasks: 2,
            details_json: "{}".into(),
            at: at(9),
        },
        Command::BreakerTransition {
            scope: "system".into(),
            from: BreakerState::Closed,
            to: BreakerState::Open,
            reason: "rate".into(),
            at: at(9),
        },
        Command::HealthSample {
            node: 1,
            cpu: 0.25,
            mem_bytes: 1 << 20,
            disk_free_bytes: 1 << 30,
            net_errors: 0,
            error_rate: 0.0,
            at: at(10),
        },
    ]
}

pub(super) fn meta(index: u64) -> RaftMeta {
    RaftMeta {
        last_applied_index: Some(index),
        last_applied_json: Some(format!("{{\"index\": {index}}}")),
        membership_json: "{\"m\": 1}".into(),
    }
}

/// Applies `commands` one commit per command, as openraft would with small batches.
pub(super) fn apply_all(store: &mut Store, machine: &mut Machine, commands: Vec<Command>) {
    for (i, command) in commands.into_iter().enumerate() {
        assert!(!machine.apply(command).is_rejected());
        let changes = machine.take_changes();
        store
            .commit(machine, &changes, &meta(i as u64 + 1))
            .unwrap();
    }
}

pub(super) fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn commit_materialises_every_table() {
    let mut store = Store::open_in_memory().unwrap();
    let mut machine = Machine::new();
    apply_all(&mut store, &mut machine, history());
    let c = store.connection();
    assert_eq!(count(c, "SELECT count(*) FROM workers"), 1);
    assert_eq!(
        count(c, "SELECT count(*) FROM tasks WHERE job_id = 'j1'"),
        3
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM tasks WHERE status = 'failed'"),
        1
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM tasks WHERE status = 'queued'"),
        2
    );
    assert_eq!(count(c, "SELECT count(*) FROM task_attempts"), 2);
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM task_attempts WHERE outcome = 'requeued: connection'"
        ),
        1
    );
    assert_eq!(count(c, "SELECT count(*) FROM stale_results"), 1);
    for table in [
        "leader_transitions",
        "breaker_transitions",
        "health_samples",
        "worker_recovery_history",
        "task_recovery_history",
        "system_recovery_history",
    ] {
        assert_eq!(
            count(c, &format!("SELECT count(*) FROM {table}")),
            1,
            "{table}"
        );
    }
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM worker_recovery_history WHERE details->>'strategy' = 'reconnect'"
        ),
        1
    );
    assert_eq!(store.read_meta().unwrap(), Some(meta(13)));
}

#[test]
fn a_file_from_before_the_drain_columns_opens_and_gains_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.duckdb");
    {
        // The `workers` table as builds before the operator drain made it, with a row.
        let conn = duckdb::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE workers (id VARCHAR PRIMARY KEY, host VARCHAR NOT NULL, \
             address VARCHAR NOT NULL, status VARCHAR NOT NULL, capabilities JSON NOT NULL, \
             labels JSON NOT NULL, registered_at TIMESTAMP NOT NULL, \
             status_changed_at TIMESTAMP NOT NULL, status_reason VARCHAR NOT NULL); \
             INSERT INTO workers VALUES ('w1', 'h', '', 'healthy', '{}', '{}', \
             TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-01 00:00:00', 'registered');",
        )
        .unwrap();
    }
    let mut store = Store::open(&path, &DbSettings::default()).unwrap();
    let mut machine = store.load_machine().unwrap();
    assert_eq!(machine.worker("w1").unwrap().drain, None);
    // Written back with a drain, through the staging twin, and read again.
    let drain = Command::DrainWorker {
        worker: "w1".into(),
        drain: true,
        reason: "maintenance".into(),
        at: at(5),
    };
    apply_all(&mut store, &mut machine, vec![drain]);
    let loaded = store.load_machine().unwrap();
    assert_eq!(loaded.workers(), machine.workers());
    let drained = loaded.worker("w1").unwrap().drain.clone().unwrap();
    assert_eq!(
        (drained.at, drained.reason.as_str()),
        (at(5), "maintenance")
    );
}

#[test]
fn reload_rebuilds_the_same_view() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.duckdb");
    let mut machine = Machine::new();
    {
        let mut store = Store::open(&path, &DbSettings::default()).unwrap();
        apply_all(&mut store, &mut machine, history());
    }
    let store = Store::open(&path, &DbSettings::default()).unwrap();
    let loaded = store.load_machine().unwrap();
    assert_eq!(loaded.workers(), machine.workers());
    assert_eq!(loaded.jobs(), machine.jobs());
    assert_eq!(loaded.tasks(), machine.tasks());
    assert_eq!(loaded.counters(), machine.counters());
    assert_eq!(loaded.breaker("system"), BreakerState::Open);
}

#[test]
fn snapshot_install_gives_identical_tables() {
    let mut source = Store::open_in_memory().unwrap();
    let mut machine = Machine::new();
    apply_all(&mut source, &mut machine, history());
    let (image, source_meta) = source.dump().unwrap();
    let image = bincode::serde::decode_from_slice::<SnapshotImage, _>(
        &bincode::serde::encode_to_vec(&image, bincode::config::standard()).unwrap(),
        bincode::config::standard(),
    )
    .unwrap()
    .0;

    let mut target = Store::open_in_memory().unwrap();
    target
        .install(&image, &source_meta.clone().unwrap())
        .unwrap();
    let (copied, target_meta) = target.dump().unwrap();
    assert_eq!(copied, image);
    assert_eq!(target_meta, source_meta);
    let rebuilt = target.load_machine().unwrap();
    assert_eq!(rebuilt.tasks(), machine.tasks());
    assert_eq!(rebuilt.counters(), machine.counters());
}

#[test]
fn an_install_that_fails_midway_leaves_the_old_state() {
    let mut old = Store::open_in_memory().unwrap();
    let mut machine = Machine::new();
    apply_all(&mut old, &mut machine, history()[..4].to_vec());
    let (before, before_meta) = old.dump().unwrap();

    let mut source = Store::open_in_memory().unwrap();
    apply_all(&mut source, &mut Machine::new(), history());
    let (mut image, _) = source.dump().unwrap();
    // Duplicate a key in a late table so the install fails after the earlier tables were
    // already replaced inside the transaction.
    let last = image
        .tables
        .iter_mut()
        .find(|t| t.name == "system_recovery_history")
        .unwrap();
    let row = last.rows[0].clone();
    last.rows.push(row);
    let err = old.install(&image, &meta(99)).unwrap_err();
    assert!(err.to_string().contains("snapshot"), "{err}");

    let (after, after_meta) = old.dump().unwrap();
    assert_eq!(after, before);
    assert_eq!(after_meta, before_meta);
}

#[test]
fn install_refuses_a_foreign_layout_before_touching_anything() {
    let mut store = Store::open_in_memory().unwrap();
    apply_all(&mut store, &mut Machine::new(), history());
    let (before, _) = store.dump().unwrap();
    let mut image = before.clone();
    image.format = 42;
    assert!(store.install(&image, &meta(1)).is_err());
    let mut image = before.clone();
    image.tables[0].columns.push("extra".into());
    assert!(store.install(&image, &meta(1)).is_err());
    image = before.clone();
    image.tables.pop();
    assert!(store.install(&image, &meta(1)).is_err());
    assert_eq!(store.dump().unwrap().0, before);
}

#[test]
fn an_older_nodes_image_without_the_newest_columns_installs_with_nulls() {
    let mut store = Store::open_in_memory().unwrap();
    let mut machine = Machine::new();
    apply_all(&mut store, &mut machine, history());
    let (mut image, _) = store.dump().unwrap();
    let workers = &mut image.tables[0];
    assert_eq!(workers.name, "workers");
    // As a build before the drain columns dumped it.
    let kept = workers.columns.len() - 2;
    assert_eq!(&workers.columns[kept..], ["drained_at", "drain_reason"]);
    workers.columns.truncate(kept);
    for row in &mut workers.rows {
        row.truncate(kept);
    }
    let mut fresh = Store::open_in_memory().unwrap();
    fresh.install(&image, &meta(1)).unwrap();
    assert_eq!(fresh.load_machine().unwrap().workers(), machine.workers());
}

#[test]
fn opening_in_a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("db.duckdb");
    let err = Store::open(&path, &DbSettings::default()).err().unwrap();
    let text = err.to_string();
    assert!(text.contains("missing"), "{text}");
}

/// Applies and commits each command; every commit must succeed.
fn apply_and_commit(
    store: &mut Store,
    machine: &mut Machine,
    commands: Vec<Command>,
) -> Vec<Reply> {
    let mut replies = Vec::new();
    for (i, command) in commands.into_iter().enumerate() {
        replies.push(machine.apply(command));
        let changes = machine.take_changes();
        store
            .commit(machine, &changes, &meta(i as u64 + 1))
            .unwrap_or_else(|e| panic!("commit {i} failed: {e}"));
    }
    replies
}

#[test]
fn values_the_store_cannot_hold_are_rejected_in_apply_and_never_stop_it() {
    // Before the limits, each of these was applied, and the commit failed on every replica:
    // a u32 past INTEGER, a stale attempt past INTEGER, a timestamp stored as `infinity`
    // (which then made the store unloadable).
    let mut huge = spec("t9");
    huge.flaky_retries = u32::MAX;
    let mut store = Store::open_in_memory().unwrap();
    let mut machine = Machine::new();
    let mut commands = history();
    let cut = commands.len();
    commands.extend([
        Command::SubmitJob {
            job: "j9".into(),
            name: "huge".into(),
            tasks: vec![huge],
            at: at(50),
        },
        Command::FinishTask {
            task: "t1".into(),
            attempt: 1 << 31,
            worker: "w1".into(),
            outcome: Outcome::Passed,
            exit_code: Some(0),
            duration_ms: 1,
            output_tail: String::new(),
            at: at(51),
        },
        Command::RegisterWorker {
            worker: "w9".into(),
            host: "h".into(),
            address: String::new(),
            capabilities_json: "{}".into(),
            labels: BTreeMap::new(),
            at: Timestamp(i64::MAX),
        },
    ]);
    let replies = apply_and_commit(&mut store, &mut machine, commands);
    for reply in &replies[cut..] {
        assert!(
            matches!(reply, Reply::Rejected { reason } if reason.contains("limit") || reason.contains("range")),
            "{reply:?}"
        );
    }
    let reloaded = store.load_machine().expect("the store still loads");
    assert!(reloaded.job("j9").is_none() && reloaded.worker("w9").is_none());
    assert_eq!(reloaded.tasks(), machine.tasks());
}

fn settings() -> DbSettings {
    DbSettings {
        threads: 1,
        memory_limit: "256MB".into(),
    }
}

#[test]
fn a_file_that_is_not_duckdb_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.duckdb");
    drop(Store::open(&path, &settings()).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..4096].fill(0xA5);
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(&path, &settings())
        .err()
        .expect("a damaged header");
    assert!(err.is_damage(), "{err}");
}

#[test]
fn a_missing_directory_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("state.duckdb");
    let err = Store::open(&path, &settings()).err().expect("no directory");
    assert!(!err.is_damage(), "{err}");
}

#[test]
fn a_resource_failure_during_wal_replay_is_not_damage() {
    let failure = |message: &str| StoreError::Open {
        path: "state.duckdb".into(),
        source: duckdb::Error::DuckDBFailure(duckdb::ffi::Error::new(1), Some(message.to_string())),
    };
    let corrupt = failure(
        "Failure while replaying WAL file \"state.duckdb.wal\": Corrupt WAL file: entry at \
         byte position 96 computed checksum 1 does not match stored checksum 2",
    );
    assert!(corrupt.is_damage());
    let out_of_memory = failure(
        "Failure while replaying WAL file \"state.duckdb.wal\": Out of Memory Error: failed to \
         allocate data of size 256.0 KiB",
    );
    assert!(!out_of_memory.is_damage());
    assert!(StoreError::Corrupt("unknown task status \"x\"".into()).is_damage());
}

/// Runs `sql` on `conn` and returns DuckDB's error message; panics if it succeeds.
fn failure(conn: &Connection, sql: &str) -> String {
    match conn.execute_batch(sql) {
        Ok(()) => panic!("{sql} should fail on a sandboxed store"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_sandboxed_file_store_keeps_its_wal_checkpoints_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.duckdb");
    let wal = dir.path().join("state.duckdb.wal");
    let outside = dir.path().join("outside.csv");
    std::fs::write(&outside, "a\n1\n").unwrap();
    let mut machine = Machine::new();
    let commands = history();
    let (first, second) = commands.split_at(commands.len() / 2);
    {
        let mut store = Store::open(&path, &DbSettings::default()).unwrap();
        apply_all(&mut store, &mut machine, first.to_vec());
        assert!(wal.exists(), "committed rows go to the WAL first");
        store.connection().execute_batch("CHECKPOINT").unwrap();
        apply_all(&mut store, &mut machine, second.to_vec());
        // The reader shares the instance, and with it the sandbox.
        let reader = store.reader().unwrap();
        let message = failure(
            &reader,
            &format!("SELECT * FROM read_csv('{}')", outside.display()),
        );
        assert!(message.contains("disabled"), "{message}");
    }
    let store = Store::open(&path, &DbSettings::default()).unwrap();
    let loaded = store.load_machine().unwrap();
    assert_eq!(loaded.tasks(), machine.tasks());
    assert_eq!(loaded.workers(), machine.workers());
    assert_eq!(loaded.counters(), machine.counters());
}

#[test]
fn no_statement_can_lift_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = Store::open(&dir.path().join("s.duckdb"), &DbSettings::default()).unwrap();
    let in_memory = Store::open_in_memory().unwrap();
    for store in [&on_disk, &in_memory] {
        let conn = store.reader().unwrap();
        for sql in [
            "SET enable_external_access = true",
            "SET GLOBAL enable_external_access = true",
            "SET autoinstall_known_extensions = true",
            "SET autoload_known_extensions = true",
            "SET lock_configuration = false",
            "RESET enable_external_access",
        ] {
            let message = failure(&conn, sql);
            assert!(message.to_lowercase().contains("lock"), "{sql}: {message}");
        }
        let setting: String = conn
            .query_row(
                "SELECT current_setting('enable_external_access')::VARCHAR",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(setting, "false");
        let message = failure(&conn, "SELECT * FROM read_text('/etc/hostname')");
        assert!(message.contains("disabled"), "{message}");
    }
}

#[test]
fn a_sandboxed_store_still_spills_to_its_temporary_directory() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DbSettings {
        threads: 1,
        memory_limit: "20MB".to_string(),
    };
    let store = Store::open(&dir.path().join("s.duckdb"), &settings).unwrap();
    let reader = store.reader().unwrap();
    // A sort of ~80 MB of rows cannot fit in 20 MB: DuckDB must write temporary files.
    let rows: i64 = reader
        .query_row(
            "SELECT count(*) FROM (SELECT i, repeat('x', 32) || i AS s FROM range(1500000) t(i) \
             ORDER BY s DESC OFFSET 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 1_499_999);
    // DuckDB creates its temporary directory when it first spills.
    assert!(
        dir.path().join("s.duckdb.tmp").is_dir(),
        "the query did not spill"
    );
}

/// `history()` and then a task killed by SIGSEGV.
fn history_with_a_signal() -> Vec<Command> {
    let mut commands = history();
    commands.push(Command::AssignTasks {
        term: 1,
        at: at(11),
        assignments: vec![Assignment {
            task: "t3".into(),
            worker: "w1".into(),
            attempt: 1,
        }],
    });
    commands.push(Command::FinishTask {
        task: "t3".into(),
        attempt: 1,
        worker: "w1".into(),
        outcome: Outcome::Failed,
        exit_code: Some(-11),
        duration_ms: 5,
        output_tail: String::new(),
        at: at(12),
    });
    commands
}

#[test]
fn a_file_made_before_the_signal_column_opens_and_stores_signals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.duckdb");
    {
        // The schema as the first release wrote it, with one finished attempt.
        let old_schema: String = schema::CREATE
            .lines()
            .filter(|line| !line.contains("signal"))
            .collect::<Vec<_>>()
            .join("\n");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&old_schema).unwrap();
        conn.execute_batch(
            "INSERT INTO task_attempts VALUES ('old', 1, 'w0', 1, TIMESTAMP '2024-01-01', NULL, \
             NULL, 'passed', 0, 5, 'ok')",
        )
        .unwrap();
    }
    let mut store = Store::open(&path, &settings()).unwrap();
    let fresh = Store::open_in_memory().unwrap();
    assert_eq!(
        column_names(store.connection(), "task_attempts").unwrap(),
        column_names(fresh.connection(), "task_attempts").unwrap(),
        "an old file gets the new column where a new file has it"
    );
    let mut machine = Machine::new();
    apply_all(&mut store, &mut machine, history_with_a_signal());
    let conn = store.connection();
    let row: (Option<i32>, Option<i32>) = conn
        .query_row(
            "SELECT exit_code, signal FROM task_attempts WHERE task_id = 't3'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(row, (None, Some(11)));
    assert_eq!(
        count(
            conn,
            "SELECT count(*) FROM task_attempts WHERE task_id = 'old' AND signal IS NULL"
        ),
        1
    );
    assert_eq!(store.load_machine().unwrap().tasks(), machine.tasks());
}

#[test]
fn a_snapshot_image_from_before_the_signal_column_installs() {
    let mut source = Store::open_in_memory().unwrap();
    apply_all(&mut source, &mut Machine::new(), history());
    let (current, meta_of_source) = source.dump().unwrap();
    let mut old = current.clone();
    let attempts = old
        .tables
        .iter_mut()
        .find(|t| t.name == "task_attempts")
        .unwrap();
    assert_eq!(attempts.columns.pop().as_deref(), Some("signal"));
    for row in &mut attempts.rows {
        row.pop();
    }
    let mut target = Store::open_in_memory().unwrap();
    target.install(&old, &meta_of_source.unwrap()).unwrap();
    assert_eq!(target.dump().unwrap().0, current);
}

#[test]
fn only_the_writer_connection_runs_without_the_optimizer() {
    let store = Store::open_in_memory().unwrap();
    let optimizer = |conn: &Connection| -> bool {
        conn.query_row("SELECT current_setting('enable_optimizer')", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert!(!optimizer(store.connection()));
    assert!(optimizer(&store.reader().unwrap()));
}

/// The column the `tasks` table's primary key is on.
fn tasks_key(conn: &Connection) -> Vec<String> {
    conn.query_row(
        "SELECT constraint_column_names FROM duckdb_constraints() \
         WHERE table_name = 'tasks' AND constraint_type = 'PRIMARY KEY'",
        [],
        |r| r.get::<_, Value>(0),
    )
    .map(|value| match value {
        Value::List(names) => names
            .into_iter()
            .map(|n| match n {
                Value::Text(s) => s,
                other => panic!("a column name {other:?}"),
            })
            .collect(),
        other => panic!("constraint columns {other:?}"),
    })
    .unwrap()
}

#[test]
fn a_file_whose_tasks_are_keyed_by_id_is_rekeyed_by_seq_with_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.duckdb");
    let mut machine = Machine::new();
    {
        let mut store = Store::open(&path, &settings()).unwrap();
        assert_eq!(tasks_key(store.connection()), ["seq"]);
        apply_all(&mut store, &mut machine, history());
    }
    {
        // Back to the key builds before this one made, rows and all.
        let conn = Connection::open(&path).unwrap();
        let old = schema::REKEY_TASKS
            .replace("tasks_by_seq", "tasks_by_id")
            .replace(
                "\n    id VARCHAR NOT NULL,",
                "\n    id VARCHAR PRIMARY KEY,",
            )
            .replace("seq BIGINT PRIMARY KEY,", "seq BIGINT NOT NULL,");
        conn.execute_batch(&format!("BEGIN; {old} COMMIT;"))
            .unwrap();
        assert_eq!(tasks_key(&conn), ["id"]);
    }
    let before = count(
        &Connection::open(&path).unwrap(),
        "SELECT count(*) FROM tasks",
    );
    assert!(before >= 3, "the history queues tasks");
    let mut store = Store::open(&path, &settings()).unwrap();
    assert_eq!(tasks_key(store.connection()), ["seq"]);
    assert_eq!(
        count(store.connection(), "SELECT count(*) FROM tasks"),
        before
    );
    assert_eq!(store.load_machine().unwrap().tasks(), machine.tasks());
    // Upserts go on replacing rows by the new key.
    let cancel = Command::CancelJob {
        job: "j1".into(),
        reason: "after the re-key".into(),
        at: at(9_000),
    };
    assert!(!machine.apply(cancel).is_rejected());
    let changes = machine.take_changes();
    store.commit(&machine, &changes, &meta(100)).unwrap();
    assert_eq!(
        count(store.connection(), "SELECT count(*) FROM tasks"),
        before
    );
    assert_eq!(store.load_machine().unwrap().tasks(), machine.tasks());
}
