//! `testfleet tests slowest|flaky|history TEST`: what the per-test results tell over time.
//!
//! The rows are `test_results` (one per test of an attempt whose task wrote a JUnit XML file,
//! `junit = "path"` in a plan); only each task's final attempt counts — an attempt lost with
//! its worker and run again is not counted twice. Read through the leader (consistent) unless
//! `--stale`.

use super::args::Target;
use super::{CliError, render};

/// The final attempt's rows of every task.
const FINAL: &str = "WITH final AS (SELECT r.* FROM test_results r JOIN tasks t \
                     ON t.id = r.task_id AND t.attempt = r.attempt)";

#[derive(clap::Subcommand)]
pub enum TestsCommand {
    /// The tests that take longest: median and slowest duration over their runs
    Slowest {
        /// How many tests
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Tests that failed and passed over their runs (or passed on a rerun within one),
    /// most flaky first
    Flaky {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Every recorded run of one test (its id, `classname::name`), newest first
    History {
        /// The test's id, or a unique part of it
        test: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        target: Target,
    },
}

/// The query a subcommand runs.
pub fn sql(command: &TestsCommand) -> Result<String, CliError> {
    Ok(match command {
        TestsCommand::Slowest { limit, .. } => format!(
            "{FINAL} SELECT test_id, count(*) AS runs, \
             CAST(median(duration_ms) AS BIGINT) AS median_ms, max(duration_ms) AS max_ms, \
             count(*) FILTER (WHERE outcome <> 'passed' AND outcome <> 'skipped') AS not_passed \
             FROM final GROUP BY test_id ORDER BY median_ms DESC, test_id LIMIT {limit}"
        ),
        TestsCommand::Flaky { limit, .. } => format!(
            "{FINAL} SELECT test_id, count(*) AS runs, \
             count(*) FILTER (WHERE outcome = 'passed') AS passed, \
             count(*) FILTER (WHERE outcome IN ('failed', 'error')) AS failed, \
             count(*) FILTER (WHERE flaky) AS passed_on_rerun, \
             max(recorded_at) FILTER (WHERE outcome IN ('failed', 'error') OR flaky) AS last_flake \
             FROM final GROUP BY test_id \
             HAVING (passed > 0 AND failed > 0) OR passed_on_rerun > 0 \
             ORDER BY failed + passed_on_rerun DESC, test_id LIMIT {limit}"
        ),
        TestsCommand::History { test, limit, .. } => {
            if test.is_empty() || test.contains('\'') {
                return Err(CliError::Usage(format!("{test:?} is not a test id")));
            }
            let escaped = test.replace('%', "\\%").replace('_', "\\_");
            format!(
                "{FINAL} SELECT recorded_at, test_id, outcome, duration_ms, flaky, worker_id, \
                 task_id, attempt, message FROM final \
                 WHERE test_id = '{test}' OR test_id LIKE '%{escaped}%' ESCAPE '\\' \
                 ORDER BY recorded_at DESC, id DESC LIMIT {limit}"
            )
        }
    })
}

/// Runs a `tests` subcommand and prints its rows.
pub async fn run(command: TestsCommand) -> Result<(), CliError> {
    let target = match &command {
        TestsCommand::Slowest { target, .. }
        | TestsCommand::Flaky { target, .. }
        | TestsCommand::History { target, .. } => target,
    };
    let remote = target.remote()?;
    let mut result = super::query_result(&remote, &sql(&command)?, !target.stale).await?;
    super::time::zone_timestamps(&result.column_types, &mut result.rows);
    if let TestsCommand::History { test, .. } = &command
        && result.rows.is_empty()
    {
        return Err(CliError::Usage(format!(
            "no recorded run of a test matching {test:?}: see `testfleet tests slowest`"
        )));
    }
    print!("{}", render(&result, target.output));
    Ok(())
}
