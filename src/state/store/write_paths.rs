//! How a flush writes rows: upserts across commits, new rows appended and stored tasks
//! updated in chunks, a stored task missing from the table written again, every attempt's
//! final row whatever the flush boundaries, and the update's columns against the full row's.

use super::tests::{apply_all, at, count, history, meta, spec};
use super::*;
use crate::state::command::{Assignment, Command, Outcome};

#[test]
fn upserts_replace_rows_across_many_commits() {
    let mut store = Store::open_in_memory().unwrap();
    let mut machine = Machine::new();
    apply_all(&mut store, &mut machine, history());
    // Many updates of the same rows in one commit and across commits.
    for round in 0..3 {
        for attempt in [2, 3] {
            let task = if round == 0 { "t2" } else { "t3" };
            let _ = machine.apply(Command::AssignTasks {
                term: 2,
                at: at(20),
                assignments: vec![Assignment {
                    task: task.into(),
                    worker: "w1".into(),
                    attempt: if round == 0 { attempt } else { attempt - 1 },
                }],
            });
        }
        let changes = machine.take_changes();
        store
            .commit(&machine, &changes, &meta(100 + round))
            .unwrap();
    }
    let c = store.connection();
    assert_eq!(count(c, "SELECT count(*) FROM tasks"), 3);
    assert_eq!(
        count(c, "SELECT count(*) FROM tasks WHERE status = 'assigned'"),
        2
    );
    let loaded = store.load_machine().unwrap();
    assert_eq!(loaded.tasks(), machine.tasks());
}

#[test]
fn a_flush_larger_than_one_merge_is_written_in_chunks_with_the_same_rows() {
    let mut store = Store::open_in_memory().unwrap();
    let mut machine = Machine::new();
    apply_all(&mut store, &mut machine, history());
    let n = 2 * MERGE_ROWS + 3;
    let tasks = (0..n).map(|i| spec(&format!("big-{i}"))).collect();
    let submit = Command::SubmitJob {
        job: "big".into(),
        name: "big".into(),
        tasks,
        at: at(30),
    };
    assert!(!machine.apply(submit).is_rejected());
    // One of them changes again in the same flush: still one row, appended as it is now.
    let _ = machine.apply(Command::AssignTasks {
        term: 2,
        at: at(31),
        assignments: vec![Assignment {
            task: format!("big-{}", MERGE_ROWS + 1),
            worker: "w1".into(),
            attempt: 1,
        }],
    });
    let changes = machine.take_changes();
    assert!(changes.tasks.len() > 2 * MERGE_ROWS);
    store.commit(&machine, &changes, &meta(200)).unwrap();
    assert_eq!(
        count(store.connection(), "SELECT count(*) FROM tasks") as usize,
        n + 3
    );
    assert_eq!(store.load_machine().unwrap().tasks(), machine.tasks());

    // The next flush changes every one of them: stored tasks, updated in chunks.
    assert!(
        !machine
            .apply(Command::CancelJob {
                job: "big".into(),
                reason: "enough".into(),
                at: at(32),
            })
            .is_rejected()
    );
    let changes = machine.take_changes();
    assert!(changes.tasks.len() > 2 * MERGE_ROWS);
    store.commit(&machine, &changes, &meta(201)).unwrap();
    let c = store.connection();
    assert_eq!(count(c, "SELECT count(*) FROM tasks") as usize, n + 3);
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM tasks WHERE job_id = 'big' AND status = 'cancelled'"
        ) as usize,
        n
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM temp.main.tasks_update"),
        0,
        "every chunk's staged rows are applied and cleared"
    );
    assert_eq!(store.load_machine().unwrap().tasks(), machine.tasks());
}

#[test]
fn a_stored_task_missing_from_the_table_is_written_again_whole() {
    let mut store = Store::open_in_memory().unwrap();
    let mut machine = Machine::new();
    apply_all(&mut store, &mut machine, history());
    // Someone removed a row behind the store's back.
    store
        .connection()
        .execute_batch("DELETE FROM tasks WHERE id = 't2'")
        .unwrap();
    assert!(
        !machine
            .apply(Command::CancelTask {
                task: "t2".into(),
                reason: "enough".into(),
                at: at(40),
            })
            .is_rejected()
    );
    let changes = machine.take_changes();
    store.commit(&machine, &changes, &meta(300)).unwrap();
    assert_eq!(
        count(
            store.connection(),
            "SELECT count(*) FROM tasks WHERE id = 't2' AND status = 'cancelled'"
        ),
        1
    );
    assert_eq!(store.load_machine().unwrap().tasks(), machine.tasks());
}

#[test]
fn every_attempts_final_row_is_written_whatever_the_flush_boundaries() {
    // A failing test with flaky retries runs attempt after attempt. With one flush at the end
    // (several attempts within one flush window), the ended attempts' rows used to be lost:
    // rows were read from the task's *current* attempt at flush time.
    let mut job = spec("t1");
    job.flaky_retries = 2;
    let assign = |attempt: u32| Command::AssignTasks {
        term: 1,
        at: at(10 + i64::from(attempt)),
        assignments: vec![Assignment {
            task: "t1".into(),
            worker: "w1".into(),
            attempt,
        }],
    };
    let failed = |attempt: u32| Command::FinishTask {
        task: "t1".into(),
        attempt,
        worker: "w1".into(),
        outcome: Outcome::Failed,
        exit_code: Some(1),
        duration_ms: 5,
        output_tail: format!("attempt {attempt} failed"),
        at: at(20 + i64::from(attempt)),
    };
    let mut commands = vec![
        history()[1].clone(), // register w1
        Command::SubmitJob {
            job: "j".into(),
            name: "flaky".into(),
            tasks: vec![job],
            at: at(2),
        },
    ];
    for attempt in 1..=3 {
        commands.push(assign(attempt));
        commands.push(failed(attempt));
    }
    let mut store = Store::open_in_memory().unwrap();
    let mut machine = Machine::new();
    for command in commands {
        assert!(!machine.apply(command).is_rejected());
    }
    let changes = machine.take_changes();
    store.commit(&machine, &changes, &meta(8)).unwrap();
    let conn = store.connection();
    let mut stmt = conn
        .prepare(
            "SELECT attempt, outcome, exit_code, output_tail FROM task_attempts ORDER BY attempt",
        )
        .unwrap();
    let rows: Vec<(i64, String, i32, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expected: Vec<(i64, String, i32, String)> = (1..=3)
        .map(|a| (a, "failed".to_string(), 1, format!("attempt {a} failed")))
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn a_tasks_progress_values_are_those_of_its_full_row_under_the_same_column_names() {
    let mut store = Store::open_in_memory().unwrap();
    let mut machine = Machine::new();
    apply_all(&mut store, &mut machine, history());
    let columns = column_names(store.connection(), "tasks").unwrap();
    let staged = column_names(store.connection(), "tasks_update").unwrap();
    let position = |name: &str| columns.iter().position(|c| c == name).unwrap();
    // t2 has had an attempt, so its worker, lease and reason are set.
    let task = machine.task("t2").unwrap();
    assert!(task.current.is_some());
    let full = rows::task_row(task);
    let update = rows::task_update_row(task);
    assert_eq!(full.len(), columns.len());
    assert_eq!(update.len(), staged.len());
    assert_eq!(staged[0], "seq");
    assert_eq!(update[0], full[position("seq")]);
    for (i, (name, _)) in schema::TASK_PROGRESS_COLUMNS.iter().enumerate() {
        assert_eq!(staged[i + 1], *name);
        assert_eq!(update[i + 1], full[position(name)], "{name}");
    }
}
