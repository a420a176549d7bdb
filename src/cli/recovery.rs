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
