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
