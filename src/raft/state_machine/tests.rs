//! Replica-check markers in `apply`: each check digests DuckDB exactly as of its marker.

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
