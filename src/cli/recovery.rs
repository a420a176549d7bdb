//! `testfleet recovery history`: every recovery decision, from the three history tables.

use super::CliError;
use super::args::Target;
use super::reads::{Limit, Listing, RECOVERY_LIMIT};

/// Builds the query over the worker, task and system recovery tables (unordered, unlimited: see
/// [`history`]).
pub fn history_sql(worker: Option<&str>, task: Option<&str>) -> Result<String, CliError> {
    for id in [worker, task].into_iter().flatten() {
        if id.contains('\'') || id.is_empty() {
            return Err(CliError::Usage(format!(
                "{id:?} is not a worker or task id"
            )));
        }
    }
    let mut parts = Vec::new();
    let mut task_filter = Vec::new();
    if let Some(w) = worker {
        task_filter.push(format!("worker_id = '{w}'"));
    }
    if let Some(t) = task {
        task_filter.push(format!("task_id = '{t}'"));
    }
    let where_task = if task_filter.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", task_filter.join(" AND "))
    };
    parts.push(format!(
        "SELECT 'task' AS scope, id, recovery_time, task_id, worker_id, attempt_number, success, \
         recovery_type, error_message, details FROM task_recovery_history {where_task}"
    ));
    if task.is_none() {
        let where_worker = worker.map_or(String::new(), |w| format!("WHERE worker_id = '{w}'"));
        parts.push(format!(
            "SELECT 'worker', id, recovery_time, NULL, worker_id, attempt_number, success, \
             recovery_type, error_message, details FROM worker_recovery_history {where_worker}"
        ));
        if worker.is_none() {
            parts.push(
                "SELECT 'system', id, recovery_time, NULL, NULL, NULL, success, system_status, \
                 NULL, details FROM system_recovery_history"
                    .to_string(),
            );
        }
    }
    Ok(format!("SELECT * FROM ({})", parts.join(" UNION ALL ")))
}

/// Runs `testfleet recovery history`: the newest records under the limit, oldest first.
pub async fn history(
    target: &Target,
    worker: Option<&str>,
    task: Option<&str>,
    limit: Limit,
) -> Result<(), CliError> {
    let remote = target.remote()?;
    let listing = Listing {
        noun: "recovery records",
        select: history_sql(worker, task)?,
        newest_first: "recovery_time DESC, scope DESC, id DESC",
        shown_order: "recovery_time, scope, id",
    };
    let rows = limit.rows(RECOVERY_LIMIT);
    let (result, cut) = super::reads::list(&remote, &listing, rows, target.stale).await?;
    super::reads::print(&result, cut, listing.noun, target.output);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_pick_the_tables() {
        let all = history_sql(None, None).unwrap();
        assert!(all.contains("system_recovery_history") && all.contains("worker_recovery_history"));
        let by_worker = history_sql(Some("w1"), None).unwrap();
        assert!(!by_worker.contains("system_recovery_history"));
        assert!(by_worker.contains("worker_id = 'w1'"));
        let by_task = history_sql(None, Some("t1")).unwrap();
        assert!(!by_task.contains("worker_recovery_history"));
        assert!(history_sql(Some("x' OR '1'='1"), None).is_err());
        assert!(crate::query::check_read_only(&all).is_ok());
    }
}

/// The recovery level an operator asks for (`recovery recover-worker --level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    /// 3 attempts, 30 s each
    Low,
    /// 5 attempts, 15 s each
    Medium,
    /// 10 attempts, 5 s each
    High,
}

/// `testfleet recovery recover-worker WORKER [--level L]`: a command in the log; the leader
/// then runs the recovery. Prints the worker's status after the request.
pub async fn recover_worker(target: &Target, worker: &str, level: Level) -> Result<(), CliError> {
    let level = match level {
        Level::Low => "low",
        Level::Medium => "medium",
        Level::High => "high",
    };
    let request = crate::proto::RecoverWorkerRequest {
        worker: worker.to_string(),
        level: level.to_string(),
    };
    let reply = super::jobs::with_retry_control(&target.remote()?, |mut client| {
        let request = request.clone();
        async move { client.recover_worker(request).await.map(|r| r.into_inner()) }
    })
    .await?;
    print!(
        "{}",
        changed(
            &reply,
            &format!("recovery at level {level} started"),
            target.output
        )
    );
    Ok(())
}

/// `testfleet recovery reset WORKER [--reason R]`: lifts a quarantine or a permanent failure.
pub async fn reset(target: &Target, worker: &str, reason: &str) -> Result<(), CliError> {
    let request = crate::proto::ResetWorkerRequest {
        worker: worker.to_string(),
        reason: reason.to_string(),
    };
    let reply = super::jobs::with_retry_control(&target.remote()?, |mut client| {
        let request = request.clone();
        async move { client.reset_worker(request).await.map(|r| r.into_inner()) }
    })
    .await?;
    print!("{}", changed(&reply, "reset", target.output));
    Ok(())
}

fn changed(reply: &crate::proto::WorkerChangeReply, what: &str, output: super::Output) -> String {
    match output {
        super::Output::Json => {
            serde_json::json!({
                "worker": reply.worker_id,
                "status": reply.status,
                "holding": reply.holding,
            })
            .to_string()
                + "\n"
        }
        super::Output::Table => {
            format!("worker {}: {what}; now {}\n", reply.worker_id, reply.status)
        }
    }
}

/// `testfleet recovery ...`.
#[derive(clap::Subcommand)]
pub enum RecoveryCommand {
    /// Every recovery decision (task, worker and system), oldest first
    History {
        #[command(flatten)]
        target: Target,
        /// Only decisions about this worker
        #[arg(long)]
        worker: Option<String>,
        /// Only decisions about this task
        #[arg(long)]
        task: Option<String>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Success rates, recovery times, task preservation, load and failure patterns
    Report(Target),
    /// Ask recovery to bring a failed, permanently failed or quarantined worker back, with
    /// the attempts and window of a level; each attempt is a worker_recovery_history row
    RecoverWorker {
        worker: String,
        #[arg(long, value_enum, default_value = "medium")]
        level: Level,
        #[command(flatten)]
        target: Target,
    },
    /// Lift a worker's quarantine or permanent failure: with a session it is healthy at once,
    /// without one its next connection makes it so
    Reset {
        worker: String,
        /// Why, recorded with the change
        #[arg(long, default_value = "no reason given")]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs one `recovery` subcommand.
pub async fn run(command: RecoveryCommand) -> Result<(), CliError> {
    match command {
        RecoveryCommand::History {
            target,
            worker,
            task,
            limit,
        } => history(&target, worker.as_deref(), task.as_deref(), limit).await,
        RecoveryCommand::RecoverWorker {
            worker,
            level,
            target,
        } => recover_worker(&target, &worker, level).await,
        RecoveryCommand::Reset {
            worker,
            reason,
            target,
        } => reset(&target, &worker, &reason).await,
        RecoveryCommand::Report(target) => {
            let remote = target.remote()?;
            let report = super::recovery_report::report(&remote).await?;
            print!("{}", super::recovery_report::render(&report, target.output));
            Ok(())
        }
    }
}
