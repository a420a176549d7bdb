//! A result's way from the executor to the log: what the worker reports for an attempt
//! ([`crate::worker::agent::finished_message`]) and the command the leader proposes for it
//! ([`super::finish_command`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::finish_command;
use crate::state::command::{Command, Outcome};
use crate::state::exit::{self, Ending};
use crate::worker::agent::finished_message;
use crate::worker::executor::{self, AttemptSpec};

/// Runs `script` under `sh -c` and returns the command the leader would propose for it.
async fn command_for(script: &str) -> Command {
    let spec = AttemptSpec::new(["sh", "-c", script], Duration::from_secs(30));
    let result = executor::run(spec, CancellationToken::new()).await;
    let message = finished_message("t1".into(), 2, result);
    finish_command("w1", message)
}

#[tokio::test]
async fn a_test_killed_by_a_signal_reaches_the_log_as_that_signal() {
    let message = finished_message(
        "t1".into(),
        2,
        executor::run(
            AttemptSpec::new(["sh", "-c", "kill -SEGV $$"], Duration::from_secs(30)),
            CancellationToken::new(),
        )
        .await,
    );
    assert_eq!((message.exit_code, message.signal), (None, Some(11)));
    assert_eq!(message.outcome, "failed");

    let Command::FinishTask {
        task,
        attempt,
        worker,
        outcome,
        exit_code,
        ..
    } = finish_command("w1", message)
    else {
        panic!("not a FinishTask");
    };
    assert_eq!((task.as_str(), attempt, worker.as_str()), ("t1", 2, "w1"));
    assert_eq!(outcome, Outcome::Failed);
    assert_eq!(exit_code, Some(-11));
    assert_eq!(exit::decode(exit_code), Some(Ending::Signalled(11)));
}

#[tokio::test]
async fn an_exit_code_reaches_the_log_unchanged() {
    let Command::FinishTask {
        outcome, exit_code, ..
    } = command_for("exit 3").await
    else {
        panic!("not a FinishTask");
    };
    assert_eq!((outcome, exit_code), (Outcome::Failed, Some(3)));
    assert_eq!(exit::decode(exit_code), Some(Ending::Exited(3)));
    let Command::FinishTask { exit_code, .. } = command_for("true").await else {
        panic!("not a FinishTask");
    };
    assert_eq!(exit_code, Some(0));
}

#[tokio::test]
async fn a_worker_fault_reaches_the_leader_with_its_category_and_a_result_without_one() {
    let mut spec = AttemptSpec::new(["true"], Duration::from_secs(30));
    spec.injected_spawn_error = Some(libc::ENOSPC);
    let result = executor::run(spec, CancellationToken::new()).await;
    let message = finished_message("t1".into(), 2, result);
    assert_eq!(
        (message.outcome.as_str(), message.fault.as_str()),
        ("worker_fault", "storage")
    );
    assert!(
        message
            .output_tail
            .starts_with("worker fault (storage): worker cannot start `true`: "),
        "{}",
        message.output_tail
    );
    let Command::FinishTask {
        outcome,
        output_tail,
        ..
    } = finish_command("w1", message.clone())
    else {
        panic!("not a FinishTask");
    };
    assert_eq!(outcome, Outcome::WorkerFault);
    assert_eq!(output_tail, message.output_tail);

    let passed = finished_message(
        "t1".into(),
        3,
        executor::run(
            AttemptSpec::new(["true"], Duration::from_secs(30)),
            CancellationToken::new(),
        )
        .await,
    );
    assert_eq!(
        (passed.outcome.as_str(), passed.fault.as_str()),
        ("passed", "")
    );
}
