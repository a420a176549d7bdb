//! `testfleet workers drain|undrain|rm`: an operator's changes to one worker.
//!
//! A drain holds the worker out of scheduling — what it runs finishes, it gets nothing new —
//! until `undrain`; the hold is its own field beside the worker's health, so recovery and
//! reconnects never end it (ARCHITECTURE.md § States). `rm` removes a worker from the fleet:
//! refused while it holds tasks unless `--force`, which queues them again without using a
//! retry; a connected worker is told to stop. Each is one command in the log
//! (`DrainWorker`, `RemoveWorker`), sent through `Control` to the leader.

use std::time::Duration;

use serde::Serialize;

use super::args::Target;
use super::jobs::with_retry_control;
use super::lookup::literal;
use super::{CliError, Output, Remote};
use crate::proto::{DrainWorkerRequest, RemoveWorkerRequest, WorkerChangeReply};

/// What an operator can do to one worker.
#[derive(clap::Subcommand)]
pub enum WorkersCommand {
    /// Give the worker no new work; what it runs finishes. Lasts until `undrain`, across
    /// reconnects, restarts and recovery
    Drain {
        /// The worker's name
        name: String,
        /// Why, shown by `testfleet workers`
        #[arg(long, default_value = "drained by an operator")]
        reason: String,
        /// Wait until the worker runs nothing any more
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        target: Target,
    },
    /// End a drain: the worker is given work again
    Undrain {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a worker from the fleet (a connected one is told to stop). Refused while it
    /// holds tasks unless --force
    Rm {
        name: String,
        /// Remove it even while it holds tasks; they are queued again without using a retry
        #[arg(long)]
        force: bool,
        #[arg(long, default_value = "no reason given")]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
}

/// The worker after a change, as `-o json` prints it.
#[derive(Debug, Serialize)]
struct Changed<'a> {
    worker: &'a str,
    status: &'a str,
    drained: bool,
    holding: u32,
    requeued: u32,
    unchanged: bool,
}

/// Runs one of the commands; prints what changed.
pub async fn run(command: WorkersCommand) -> Result<(), CliError> {
    match command {
        WorkersCommand::Drain {
            name,
            reason,
            wait,
            target,
        } => {
            let remote = target.remote()?;
            let reply = drain(&remote, &name, true, &reason).await?;
            print!("{}", render(&reply, "drained", target.output));
            if wait && reply.holding > 0 {
                eprintln!(
                    "waiting for {name}'s {} task(s) to finish...",
                    reply.holding
                );
                wait_idle(&remote, &name).await?;
                eprintln!("{name} runs nothing any more");
            }
            Ok(())
        }
        WorkersCommand::Undrain { name, target } => {
            let remote = target.remote()?;
            let reply = drain(&remote, &name, false, "").await?;
            print!("{}", render(&reply, "undrained", target.output));
            Ok(())
        }
        WorkersCommand::Rm {
            name,
            force,
            reason,
            target,
        } => {
            let remote = target.remote()?;
            let reply = remove(&remote, &name, force, &reason).await?;
            print!("{}", render(&reply, "removed", target.output));
            Ok(())
        }
    }
}

/// Drains a worker (`drain`) or ends its drain.
pub async fn drain(
    remote: &Remote,
    worker: &str,
    drain: bool,
    reason: &str,
) -> Result<WorkerChangeReply, CliError> {
    with_retry_control(remote, |mut client| async move {
        client
            .drain_worker(DrainWorkerRequest {
                worker_id: worker.to_string(),
                drain,
                reason: reason.to_string(),
            })
            .await
            .map(|r| r.into_inner())
    })
    .await
}

/// Removes a worker from the fleet.
pub async fn remove(
    remote: &Remote,
    worker: &str,
    force: bool,
    reason: &str,
) -> Result<WorkerChangeReply, CliError> {
    with_retry_control(remote, |mut client| async move {
        client
            .remove_worker(RemoveWorkerRequest {
                worker_id: worker.to_string(),
                force,
                reason: reason.to_string(),
            })
            .await
            .map(|r| r.into_inner())
    })
    .await
}

fn render(reply: &WorkerChangeReply, done: &str, output: Output) -> String {
    if output == Output::Json {
        let changed = Changed {
            worker: &reply.worker_id,
            status: &reply.status,
            drained: reply.drained,
            holding: reply.holding,
            requeued: reply.requeued,
            unchanged: reply.unchanged,
        };
        return serde_json::to_string_pretty(&changed).unwrap_or_default() + "\n";
    }
    let name = &reply.worker_id;
    let mut line = if reply.unchanged {
        format!("{name}: already {done}")
    } else {
        format!("{name}: {done}")
    };
    if reply.requeued > 0 {
        line += &format!("; {} task(s) queued again", reply.requeued);
    } else if reply.holding > 0 {
        line += &format!("; {} task(s) still running there", reply.holding);
    }
    line + "\n"
}

/// Polls the leader's view until `worker` holds no task.
async fn wait_idle(remote: &Remote, worker: &str) -> Result<(), CliError> {
    let sql = format!(
        "SELECT count(*) FROM tasks WHERE worker_id = {} AND status IN ('assigned', 'running')",
        literal(worker)
    );
    loop {
        let rows = super::query_rows(remote, &sql, true).await?;
        if rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_u64())
            == Some(0)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
