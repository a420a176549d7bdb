//! Per-test results in apply: a worker's `FinishTaskWithTests` is its `FinishTask`, and when
//! that result concerns the current attempt, one `test_results` row per test, in the same
//! entry. A stale report (late, duplicate, superseded) records no tests, so a shard run again
//! after its worker died counts only its final attempt's tests.

use super::*;
use crate::state::command::TestCase;

impl Machine {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_task_with_tests(
        &mut self,
        task: &str,
        attempt: u32,
        worker: WorkerId,
        outcome: Outcome,
        exit_code: Option<i32>,
        duration_ms: u64,
        output_tail: String,
        at: Timestamp,
        tests: Vec<TestCase>,
    ) -> Reply {
        let current = self
            .tasks
            .get(task)
            .is_some_and(|t| Self::staleness(t, attempt, &worker).is_none());
        let reporter = worker.clone();
        let reply = self.finish_task(
            task,
            attempt,
            worker,
            outcome,
            exit_code,
            duration_ms,
            output_tail,
            at,
        );
        let recorded = !matches!(reply, Reply::Rejected { .. } | Reply::Stale { .. });
        if current && recorded {
            for test in tests {
                let id = take_id(&mut self.counters.test_results);
                self.changes.history.push(HistoryRow::TestResult {
                    id,
                    task: task.to_string(),
                    attempt,
                    worker: reporter.clone(),
                    at,
                    test,
                });
            }
        }
        reply
    }
}
