//! The reads of the replicated tables behind `jobs`, `tasks`, `workers`, `recovery history`
//! and `task show`: SQL through `Query`, read through the leader (a follower asks it) so that
//! what a client just wrote shows at once, or with `--stale` from the answering node's own copy,
//! which may trail by a flush (ARCHITECTURE.md § Reads).
//!
//! Every timestamp is printed as RFC 3339 in UTC ([`super::time`]). A list shows the newest
//! rows up to a limit (`--limit N`, `--all` for every row); when the limit cuts it, stderr says
//! how many rows there are, so stdout (a table, or the same JSON array as without a cut) never
//! passes for the whole list. `tasks` names the reason the leader's scheduler gives for each
//! queued task no live worker can run (`parked: ...`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::args::Target;
use super::{CliError, Output, Remote, render};
use crate::query::QueryResult;

/// How many rows a list shows, and whether all of them.
#[derive(clap::Args, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    /// Show the newest N rows [default: jobs 200, tasks 10000, recovery history 1000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Show every row (an answer over 100,000 rows or 3 MiB is refused: filter it instead)
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
}

impl Limit {
    /// The row limit to apply, `None` for every row.
    pub fn rows(self, default: u32) -> Option<u32> {
        if self.all {
            None
        } else {
            Some(self.limit.unwrap_or(default))
        }
    }
}

/// The default limits of the lists.
pub const JOBS_LIMIT: u32 = 200;
pub const TASKS_LIMIT: u32 = 10_000;
pub const RECOVERY_LIMIT: u32 = 1000;

/// A list over the replicated tables.
pub struct Listing<'a> {
    /// What its rows are, plural: `jobs`, `tasks`, ...
    pub noun: &'a str,
    /// A `SELECT` of the list's columns (no `ORDER BY`, no `LIMIT`); columns named `__...` are
    /// for ordering only and are not shown.
    pub select: String,
    /// The `ORDER BY` (over the select's column names) that puts the newest rows first: a
    /// limit keeps those.
    pub newest_first: &'a str,
    /// The `ORDER BY` the kept rows are shown in.
    pub shown_order: &'a str,
}

/// The rows a limit left out: `shown` of `total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    pub shown: u64,
    pub total: u64,
}

impl Cut {
    /// What stderr says about the cut, e.g. `showing the newest 100 of 2,345 tasks; use
    /// --limit N or --all`.
    pub fn notice(self, noun: &str) -> String {
        format!(
            "showing the newest {} of {} {noun}; use --limit N or --all",
            thousands(self.shown),
            thousands(self.total)
        )
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The query of `listing` under `limit`: the newest rows, with the number of rows there are
/// without the limit in a last column, `__total`.
pub fn limited_sql(listing: &Listing<'_>, limit: Option<u32>) -> String {
    let limit = limit.map_or(String::new(), |n| format!(" LIMIT {n}"));
    format!(
        "SELECT * FROM (SELECT *, count(*) OVER () AS __total FROM ({})          ORDER BY {}{limit}) ORDER BY {}",
        listing.select, listing.newest_first, listing.shown_order
    )
}

/// Removes the `__...` columns from `result`; returns the `__total` of its first row.
fn take_hidden(result: &mut QueryResult) -> Option<u64> {
    let total = result
        .columns
        .iter()
        .position(|c| c == "__total")
        .and_then(|i| result.rows.first().and_then(|r| r.get(i)))
        .and_then(Json::as_u64);
    let keep: Vec<bool> = result
        .columns
        .iter()
        .map(|c| !c.starts_with("__"))
        .collect();
    fn retain<T>(items: &mut Vec<T>, keep: &[bool]) {
        let mut flags = keep.iter();
        items.retain(|_| flags.next().copied().unwrap_or(true));
    }
    for row in &mut result.rows {
        retain(row, &keep);
    }
    retain(&mut result.columns, &keep);
    retain(&mut result.column_types, &keep);
    total
}

/// Runs `listing` under `limit` (through the leader unless `stale`): its rows with the
/// timestamps in UTC, and the cut if the limit left rows out.
pub async fn list(
    remote: &Remote,
    listing: &Listing<'_>,
    limit: Option<u32>,
    stale: bool,
) -> Result<(QueryResult, Option<Cut>), CliError> {
    let mut result = super::query_result(remote, &limited_sql(listing, limit), !stale).await?;
    let total = take_hidden(&mut result);
    super::time::zone_timestamps(&result.column_types, &mut result.rows);
    let shown = result.rows.len() as u64;
    let cut = total
        .filter(|&total| total > shown)
        .map(|total| Cut { shown, total });
    Ok((result, cut))
}

/// Prints a list to stdout and, if its limit cut it, says so on stderr.
pub fn print(result: &QueryResult, cut: Option<Cut>, noun: &str, output: Output) {
    print!("{}", render(result, output));
    if let Some(cut) = cut {
        eprintln!("{}", cut.notice(noun));
    }
}

/// `testfleet jobs`: the newest jobs first.
pub async fn jobs(target: &Target, limit: Limit) -> Result<(), CliError> {
    let remote = target.remote()?;
    let listing = Listing {
        noun: "jobs",
        select: "SELECT id, name, status, task_count AS tasks, open_tasks AS open, \
                 submitted_at, finished_at FROM jobs"
            .to_string(),
        newest_first: "submitted_at DESC, id DESC",
        shown_order: "submitted_at DESC, id DESC",
    };
    let (result, cut) = list(&remote, &listing, limit.rows(JOBS_LIMIT), target.stale).await?;
    print(&result, cut, listing.noun, target.output);
    Ok(())
}

/// `testfleet tasks [--job JOB]`: tasks in submission order (the newest, under the limit),
/// each with its current attempt's exit code and duration; a queued task no live worker can
/// run says why in its reason.
pub async fn tasks(target: &Target, job: Option<&str>, limit: Limit) -> Result<(), CliError> {
    let remote = target.remote()?;
    let filter = match job {
        Some(job) => {
            let id = super::lookup::job(&remote, job).await?;
            format!(" WHERE t.job_id = '{id}'")
        }
        None => String::new(),
    };
    // The exit column names the signal (`SIGKILL`) of an attempt a signal killed; `-o json`
    // has an `exit_code` and a `signal` instead.
    let exit = match target.output {
        Output::Table => format!(
            "COALESCE(CAST(a.exit_code AS VARCHAR), {}) AS exit",
            super::signals::sql_name("a.signal")
        ),
        Output::Json => "a.exit_code, a.signal".to_string(),
    };
    let listing = Listing {
        noun: "tasks",
        select: format!(
            "SELECT t.id, t.job_id, t.name, t.status, t.attempt, t.worker_id, {exit}, \
             a.duration_ms, t.reason, t.seq AS __seq FROM tasks t LEFT JOIN task_attempts a \
             ON a.task_id = t.id AND a.attempt = t.attempt{filter}"
        ),
        newest_first: "__seq DESC",
        shown_order: "__seq",
    };
    let (mut result, cut) = list(&remote, &listing, limit.rows(TASKS_LIMIT), target.stale).await?;
    // The leader alone knows why a queued task waits (its scheduler's soft state); a --stale
    // read asks no leader.
    if !target.stale {
        add_parked_reasons(&remote, &mut result).await;
    }
    print(&result, cut, listing.noun, target.output);
    Ok(())
}

/// At most this many jobs are asked why their queued tasks wait, per `tasks` call.
const MAX_PARKED_JOBS: usize = 20;

/// Puts `parked: <why>` in the reason of every queued task of `result` that the leader's
/// scheduler cannot place (before the reason the task already had, if any). Asking is best
/// effort: when the leader does not answer, the list is printed without, and stderr says so.
async fn add_parked_reasons(remote: &Remote, result: &mut QueryResult) {
    let column = |name: &str| result.columns.iter().position(|c| c == name);
    let (Some(id), Some(job), Some(status), Some(reason)) = (
        column("id"),
        column("job_id"),
        column("status"),
        column("reason"),
    ) else {
        return;
    };
    let queued = |row: &Vec<Json>| row[status].as_str() == Some("queued");
    let jobs: BTreeSet<String> = result
        .rows
        .iter()
        .filter(|r| queued(r))
        .filter_map(|r| r[job].as_str().map(str::to_string))
        .collect();
    if jobs.is_empty() {
        return;
    }
    if jobs.len() > MAX_PARKED_JOBS {
        eprintln!(
            "queued tasks of {} jobs are listed; why they wait is shown for {MAX_PARKED_JOBS} of              them (list one job's tasks with --job)",
            jobs.len()
        );
    }
    let asked: Vec<String> = jobs.into_iter().take(MAX_PARKED_JOBS).collect();
    let parked: BTreeMap<String, String> =
        match super::jobs::parked(remote, &asked, super::jobs::PARKED_WAIT).await {
            Ok(parked) => parked,
            Err(e) => {
                eprintln!("cannot ask the leader why queued tasks wait: {e}");
                return;
            }
        };
    for row in result.rows.iter_mut().filter(|r| queued(r)) {
        let Some(why) = row[id].as_str().and_then(|t| parked.get(t)) else {
            continue;
        };
        let text = match row[reason].as_str() {
            Some(before) if !before.is_empty() => format!("parked: {why}; {before}"),
            _ => format!("parked: {why}"),
        };
        row[reason] = Json::String(text);
    }
}

/// The workers' list as `testfleet workers` and `/api/workers` show it: every worker by name
/// (those that left only with `all`), with its breaker — the last transition of its scope
/// (none: closed).
pub fn workers_sql(all: bool) -> String {
    let filter = if all { "" } else { "WHERE status <> 'left' " };
    format!(
        "SELECT id, host, status, drained_at IS NOT NULL AS drained, \
         coalesce(b.state, 'closed') AS breaker, labels, capabilities, status_changed_at, \
         coalesce(drain_reason, status_reason) AS reason FROM workers \
         LEFT JOIN (SELECT scope, arg_max(to_state, id) AS state FROM breaker_transitions \
         GROUP BY scope) b ON b.scope = 'worker:' || workers.id \
         {filter}ORDER BY id"
    )
}

/// `testfleet workers [--all]`: every worker by name (those that left only with `all`).
pub async fn workers(target: &Target, all: bool) -> Result<(), CliError> {
    let remote = target.remote()?;
    let sql = workers_sql(all);
    let mut result = super::query_result(&remote, &sql, !target.stale).await?;
    super::time::zone_timestamps(&result.column_types, &mut result.rows);
    if target.output == Output::Table {
        // People get a summary (`webgpu(cpu, 128 MiB) chromium 2 cpus 23 GB`); the whole
        // object is in `-o json` and `testfleet capabilities`.
        for row in &mut result.rows {
            let (Some(id), Some(cell)) = (row.first().cloned(), row.get_mut(6)) else {
                continue;
            };
            let json = match &*cell {
                Json::String(text) => text.clone(),
                other => other.to_string(),
            };
            let worker = id.as_str().unwrap_or_default();
            let summary = crate::capabilities::WorkerCapabilities::parse(worker, "", &json);
            *cell = Json::String(summary.summary());
        }
    }
    print!("{}", render(&result, target.output));
    Ok(())
}

/// The rows of a read through the leader, timestamps in UTC.
async fn zoned_rows(remote: &Remote, sql: &str) -> Result<Vec<Vec<Json>>, CliError> {
    let mut result = super::query_result(remote, sql, true).await?;
    super::time::zone_timestamps(&result.column_types, &mut result.rows);
    Ok(result.rows)
}

/// Refuses ids that could not be a job id (they are put into SQL text).
pub fn check_id(id: &str) -> Result<(), CliError> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{id:?} is not a job id: ids are letters, digits, '-' and '_'"
        )))
    }
}

/// `testfleet task show`: the task's spec and state, then every attempt with its worker,
/// outcome, exit code, duration and output tail, read through the leader.
pub async fn show_task(remote: &Remote, id: &str, output: Output) -> Result<String, CliError> {
    check_id(id)?;
    let columns = [
        "id",
        "job_id",
        "name",
        "status",
        "attempt",
        "worker_id",
        "reason",
        "command",
        "env",
        "cwd",
        "timeout_ms",
        "priority",
        "requirements",
        "max_retries",
        "infra_retries_used",
        "timeout_retries",
        "timeout_retries_used",
        "flaky_retries",
        "flaky_retries_used",
        "submitted_at",
        "finished_at",
    ];
    let attempt_columns = [
        "attempt",
        "worker_id",
        "outcome",
        "exit_code",
        "signal",
        "duration_ms",
        "assigned_at",
        "started_at",
        "finished_at",
        "output_tail",
    ];
    let sql = format!(
        "SELECT {} FROM task_attempts WHERE task_id = '{id}' ORDER BY attempt",
        attempt_columns.join(", ")
    );
    let attempts: Vec<serde_json::Map<String, serde_json::Value>> = zoned_rows(remote, &sql)
        .await?
        .into_iter()
        .map(|r| {
            attempt_columns
                .iter()
                .map(|c| c.to_string())
                .zip(r)
                .collect()
        })
        .collect();
    // The task's row is read after its attempts: the two are separate reads, a group commit
    // may land between them, and a task row newer than its attempts is still whole (an
    // attempt's end and the task's status are written together), where an older one could say
    // `queued` beside a finished attempt.
    let sql = format!("SELECT {} FROM tasks WHERE id = '{id}'", columns.join(", "));
    let rows = zoned_rows(remote, &sql).await?;
    let Some(row) = rows.first() else {
        return Err(CliError::Usage(format!("no task has the id {id:?}")));
    };
    let task: serde_json::Map<String, serde_json::Value> = columns
        .iter()
        .map(|c| c.to_string())
        .zip(row.iter().cloned())
        .collect();
    if output == Output::Json {
        let doc = serde_json::json!({ "task": task, "attempts": attempts });
        return Ok(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n");
    }
    let text = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => "-".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let mut out = String::new();
    for key in [
        "id",
        "job_id",
        "name",
        "status",
        "reason",
        "command",
        "env",
        "cwd",
        "timeout_ms",
        "priority",
        "requirements",
        "submitted_at",
        "finished_at",
    ] {
        out.push_str(&format!("{key:<13} {}\n", text(task.get(key))));
    }
    out.push_str(&format!(
        "retries used  infrastructure {}/{}, timeout {}/{}, flaky {}/{}\n",
        text(task.get("infra_retries_used")),
        text(task.get("max_retries")),
        text(task.get("timeout_retries_used")),
        text(task.get("timeout_retries")),
        text(task.get("flaky_retries_used")),
        text(task.get("flaky_retries")),
    ));
    if attempts.is_empty() {
        out.push_str("\nno attempt yet\n");
    }
    for a in &attempts {
        let ending = match a.get("signal").and_then(serde_json::Value::as_i64) {
            Some(signal) => super::signals::killed_by(signal as i32),
            None => format!("exit {}", text(a.get("exit_code"))),
        };
        out.push_str(&format!(
            "\nattempt {} on {}: {}, {ending}, {} ms (assigned {}, started {}, ended {})\n",
            text(a.get("attempt")),
            text(a.get("worker_id")),
            text(a.get("outcome")),
            text(a.get("duration_ms")),
            text(a.get("assigned_at")),
            text(a.get("started_at")),
            text(a.get("finished_at")),
        ));
        if let Some(serde_json::Value::String(tail)) = a.get("output_tail")
            && !tail.is_empty()
        {
            for line in tail.lines() {
                out.push_str(&format!("  | {line}\n"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_says_how_many_rows_there_are() {
        let cut = Cut {
            shown: 100,
            total: 2345,
        };
        assert_eq!(
            cut.notice("tasks"),
            "showing the newest 100 of 2,345 tasks; use --limit N or --all"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn limits_keep_the_newest_rows_and_count_them_all() {
        let listing = Listing {
            noun: "tasks",
            select: "SELECT id, seq AS __seq FROM tasks".to_string(),
            newest_first: "__seq DESC",
            shown_order: "__seq",
        };
        let sql = limited_sql(&listing, Some(5));
        assert!(sql.contains("count(*) OVER () AS __total"), "{sql}");
        assert!(
            sql.contains("ORDER BY __seq DESC LIMIT 5) ORDER BY __seq"),
            "{sql}"
        );
        assert!(!limited_sql(&listing, None).contains("LIMIT"));
        assert!(crate::query::check_read_only(&sql).is_ok());
        assert_eq!(
            Limit {
                limit: None,
                all: false
            }
            .rows(7),
            Some(7)
        );
        assert_eq!(
            Limit {
                limit: Some(3),
                all: false
            }
            .rows(7),
            Some(3)
        );
        assert_eq!(
            Limit {
                limit: None,
                all: true
            }
            .rows(7),
            None
        );
    }

    #[test]
    fn hidden_columns_are_dropped_after_giving_the_total() {
        let mut result = QueryResult {
            columns: vec!["id".into(), "__seq".into(), "__total".into()],
            column_types: vec!["VARCHAR".into(), "BIGINT".into(), "BIGINT".into()],
            rows: vec![
                vec![Json::from("a"), Json::from(1), Json::from(9)],
                vec![Json::from("b"), Json::from(2), Json::from(9)],
            ],
        };
        assert_eq!(take_hidden(&mut result), Some(9));
        assert_eq!(result.columns, vec!["id".to_string()]);
        assert_eq!(result.column_types, vec!["VARCHAR".to_string()]);
        assert_eq!(
            result.rows,
            vec![vec![Json::from("a")], vec![Json::from("b")]]
        );
    }
}
