//! The state's apply-time limits against the Raft wire: a task never encodes larger than its
//! counted size, and the largest job allowed fits one log entry and one AppendEntries message
//! (moved here from `state/limits/tests.rs`, so that `state` needs nothing of `raft`).

use super::{APPEND_BUDGET, encoded_len};
use crate::raft::log_store::LIMITED_READ_MAX_BYTES;
use crate::state::command::{Command, TaskSpec, Timestamp};
use crate::state::limits::*;
use crate::state::machine::tests::spec;

fn at() -> Timestamp {
    Timestamp(1_700_000_000_000_000)
}

fn job(tasks: Vec<TaskSpec>) -> Command {
    Command::SubmitJob {
        job: "j".to_string(),
        name: "j".to_string(),
        tasks,
        at: at(),
    }
}

#[test]
fn a_task_never_encodes_larger_than_its_counted_size() {
    let mut shapes = vec![spec("plain")];
    let mut empties = spec("empties");
    empties
        .command
        .extend(std::iter::repeat_n(String::new(), MAX_ARGS - 1));
    shapes.push(empties);
    let mut env = spec("env");
    env.env = (0..MAX_ENV)
        .map(|i| (format!("K{i}"), String::new()))
        .collect();
    env.cwd = Some(String::new());
    shapes.push(env);
    let mut extreme = spec("extreme");
    extreme.timeout_ms = u64::MAX;
    extreme.priority = i32::MIN;
    extreme.max_retries = u32::MAX;
    extreme.timeout_retries = u32::MAX;
    extreme.flaky_retries = u32::MAX;
    extreme.labels = (0..MAX_LABELS)
        .map(|i| (format!("l{i}"), String::new()))
        .collect();
    extreme.capabilities = vec![String::new(); MAX_LABELS];
    shapes.push(extreme);
    for s in shapes {
        let encoded = encoded_len("task", &s).unwrap();
        assert!(
            encoded <= task_bytes(&s),
            "{}: {encoded} > {}",
            s.id,
            task_bytes(&s)
        );
    }
}

#[test]
fn the_largest_job_fits_one_entry_and_one_raft_message() {
    let mut s = spec("x");
    s.env.insert(
        "BLOB".into(),
        "x".repeat(MAX_TASK_BYTES - task_bytes(&s) - 40),
    );
    let per = task_bytes(&s);
    let tasks: Vec<TaskSpec> = (0..MAX_JOB_BYTES / per)
        .map(|i| TaskSpec {
            id: format!("t{i}"),
            ..s.clone()
        })
        .collect();
    let command = job(tasks);
    assert_eq!(check(&command), Ok(()));
    let entry = encoded_len("command", &command).unwrap();
    assert!(entry <= MAX_JOB_BYTES + 1024, "{entry}");
    assert!(entry < MAX_ENTRY_BYTES);
    // A replication read returns under LIMITED_READ_MAX_BYTES of entries plus one more.
    const { assert!(MAX_ENTRY_BYTES + LIMITED_READ_MAX_BYTES < APPEND_BUDGET) };
}
