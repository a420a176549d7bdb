//! Apply of every command, each rejection of ARCHITECTURE.md § Commands, and batch semantics.

use std::collections::BTreeMap;

use super::*;
use crate::state::command::TestOutcome;

mod workers;

fn at(t: i64) -> Timestamp {
    Timestamp(t)
}

/// A plain task (`true`, one minute, two infrastructure retries); other tests share it.
pub(crate) fn spec(id: &str) -> TaskSpec {
    TaskSpec {
        timeout_ms: 60_000,
        max_retries: 2,
        ..TaskSpec::new(
            id.to_string(),
            format!("test {id}"),
            vec!["true".to_string()],
        )
    }
}

fn register(worker: &str) -> Command {
    Command::RegisterWorker {
        worker: worker.to_string(),
        host: "host".to_string(),
        address: "127.0.0.1:1".to_string(),
        capabilities_json: "{}".to_string(),
        labels: BTreeMap::new(),
        at: at(1),
    }
}

fn submit(job: &str, tasks: &[&str]) -> Command {
    Command::SubmitJob {
        job: job.to_string(),
        name: job.to_string(),
        tasks: tasks.iter().map(|t| spec(t)).collect(),
        at: at(2),
    }
}

fn assign(task: &str, worker: &str, attempt: u32) -> Command {
    Command::AssignTasks {
        term: 1,
        at: at(3),
        assignments: vec![Assignment {
            task: task.to_string(),
            worker: worker.to_string(),
            attempt,
        }],
    }
}

fn finish(task: &str, worker: &str, attempt: u32, outcome: Outcome) -> Command {
    Command::FinishTask {
        task: task.to_string(),
        attempt,
        worker: worker.to_string(),
        outcome,
        exit_code: Some(0),
        duration_ms: 5,
        output_tail: "out".to_string(),
        at: at(5),
    }
}

fn requeue(task: &str, attempt: u32, category: FaultCategory) -> Command {
    Command::RequeueTask {
        task: task.to_string(),
        attempt,
        reason: "worker lost".to_string(),
        category,
        at: at(6),
    }
}

fn started(task: &str, worker: &str, attempt: u32) -> Command {
    Command::TaskStarted {
        task: task.to_string(),
        attempt,
        worker: worker.to_string(),
        at: at(4),
    }
}

/// A machine with workers `w1`, `w2` and job `j` of tasks `t1`, `t2`.
fn fleet() -> Machine {
    let mut m = Machine::new();
    for c in [register("w1"), register("w2"), submit("j", &["t1", "t2"])] {
        assert!(!m.apply(c).is_rejected());
    }
    m.take_changes();
    m
}

fn status(m: &Machine, task: &str) -> TaskStatus {
    m.task(task).unwrap().status
}

fn assert_rejected(reply: Reply, needle: &str) {
    match reply {
        Reply::Rejected { reason } => assert!(
            reason.contains(needle),
            "rejection {reason:?} does not mention {needle:?}"
        ),
        other => panic!("expected a rejection mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn noop_changes_nothing_and_bench_leaves_a_trace() {
    let mut m = fleet();
    assert_eq!(m.apply(Command::Noop), Reply::Applied);
    assert!(m.take_changes().is_empty());
    assert_eq!(
        m.apply_entry(
            42,
            Command::Bench {
                payload: vec![1, 2, 3]
            }
        ),
        Reply::Applied
    );
    let changes = m.take_changes();
    assert_eq!(
        changes.history,
        vec![HistoryRow::Bench {
            log_index: 42,
            payload_bytes: 3
        }]
    );
    assert!(changes.tasks.is_empty() && changes.workers.is_empty());
}

#[test]
fn leader_elected_gets_sequential_ids() {
    let mut m = Machine::new();
    let elect = |term| Command::LeaderElected {
        node: 1,
        term,
        at: at(1),
    };
    assert_eq!(m.apply(elect(1)), Reply::Recorded { id: 1 });
    assert_eq!(m.apply(elect(2)), Reply::Recorded { id: 2 });
    assert_eq!(m.take_changes().history.len(), 2);
}

#[test]
fn submit_job_is_idempotent() {
    let mut m = Machine::new();
    assert_eq!(
        m.apply(submit("j", &["a", "b"])),
        Reply::JobAccepted {
            job: "j".into(),
            tasks: 2,
            duplicate: false
        }
    );
    let changes = m.take_changes();
    assert_eq!(changes.tasks.len(), 2);
    assert_eq!(changes.jobs.len(), 1);
    assert_eq!(
        m.apply(submit("j", &["a", "b"])),
        Reply::JobAccepted {
            job: "j".into(),
            tasks: 2,
            duplicate: true
        }
    );
    assert!(
        m.take_changes().is_empty(),
        "a duplicate submission changes nothing"
    );
    assert_eq!(m.task("a").unwrap().seq, 1);
    assert_eq!(m.task("b").unwrap().seq, 2);
}

#[test]
fn submit_job_rejections_leave_no_trace() {
    let mut m = fleet();
    let mut empty_command = spec("x");
    empty_command.command.clear();
    let cases: Vec<(Command, &str)> = vec![
        (submit("k", &[]), "no tasks"),
        (submit("k", &["a", "a"]), "appears twice"),
        (submit("k", &["t1"]), "already exists"),
        (submit("", &["z"]), "job id is empty"),
        (submit("k", &[""]), "task id is empty"),
        (
            Command::SubmitJob {
                job: "k".into(),
                name: "k".into(),
                tasks: vec![spec("ok"), empty_command],
                at: at(1),
            },
            "empty command",
        ),
    ];
    for (command, needle) in cases {
        assert_rejected(m.apply(command), needle);
    }
    assert!(m.job("k").is_none());
    assert!(m.task("ok").is_none());
    assert!(m.take_changes().is_empty());
}

#[test]
fn assign_tasks_checks_each_item_alone() {
    let mut m = fleet();
    m.apply(Command::SetWorkerStatus {
        worker: "w2".into(),
        from: WorkerStatus::Healthy,
        to: WorkerStatus::Suspect,
        reason: "r".into(),
        at: at(3),
    });
    let reply = m.apply(Command::AssignTasks {
        term: 7,
        at: at(3),
        assignments: vec![
            Assignment {
                task: "t1".into(),
                worker: "w1".into(),
                attempt: 1,
            },
            Assignment {
                task: "t1".into(),
                worker: "w1".into(),
                attempt: 2,
            },
            Assignment {
                task: "t2".into(),
                worker: "w1".into(),
                attempt: 2,
            },
            Assignment {
                task: "t2".into(),
                worker: "w2".into(),
                attempt: 1,
            },
            Assignment {
                task: "t2".into(),
                worker: "nobody".into(),
                attempt: 1,
            },
            Assignment {
                task: "nothing".into(),
                worker: "w1".into(),
                attempt: 1,
            },
        ],
    });
    let Reply::Many(items) = reply else {
        panic!("expected per-item replies")
    };
    assert_eq!(
        items[0],
        Reply::Task {
            status: TaskStatus::Assigned
        }
    );
    let needles = [
        "not queued",
        "next is 1",
        "not healthy",
        "unknown worker",
        "unknown task",
    ];
    for (item, needle) in items[1..].iter().cloned().zip(needles) {
        assert_rejected(item, needle);
    }
    let t1 = m.task("t1").unwrap();
    assert_eq!(t1.attempt, 1);
    assert_eq!(t1.holder().map(String::as_str), Some("w1"));
    assert_eq!(t1.current.as_ref().unwrap().term, 7);
    assert_eq!(status(&m, "t2"), TaskStatus::Queued);
}

#[test]
fn task_started_rejects_stale_attempt_wrong_worker_and_repeats() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    assert_rejected(m.apply(started("t1", "w1", 2)), "not the current attempt");
    assert_rejected(m.apply(started("t1", "w2", 1)), "belongs to worker w1");
    assert_rejected(m.apply(started("t2", "w1", 1)), "queued");
    assert_rejected(m.apply(started("zz", "w1", 1)), "unknown task");
    assert_eq!(
        m.apply(started("t1", "w1", 1)),
        Reply::Task {
            status: TaskStatus::Running
        }
    );
    assert_rejected(m.apply(started("t1", "w1", 1)), "already running");
}

#[test]
fn finish_task_sets_outcome_and_finishes_the_job() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    m.apply(assign("t2", "w2", 1));
    m.apply(started("t1", "w1", 1));
    assert_eq!(
        m.apply(finish("t1", "w1", 1, Outcome::Passed)),
        Reply::Task {
            status: TaskStatus::Passed
        }
    );
    assert_eq!(m.job("j").unwrap().status, JobStatus::Running);
    // A result may arrive without TaskStarted having been committed first.
    assert_eq!(
        m.apply(finish("t2", "w2", 1, Outcome::Failed)),
        Reply::Task {
            status: TaskStatus::Failed
        }
    );
    let job = m.job("j").unwrap();
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(job.finished_at, Some(at(5)));
    let attempt = m.task("t2").unwrap().current.clone().unwrap();
    assert_eq!(attempt.outcome.as_deref(), Some("failed"));
    assert_eq!(attempt.started_at, Some(at(5)));
    assert_eq!(attempt.duration_ms, Some(5));
}

#[test]
fn late_and_duplicate_results_are_recorded_as_stale() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    m.apply(requeue("t1", 1, FaultCategory::Connection));
    m.take_changes();
    // The first attempt's worker wakes up and reports: stale, nothing changes.
    let reply = m.apply(finish("t1", "w1", 1, Outcome::Passed));
    assert!(matches!(reply, Reply::Stale { .. }), "{reply:?}");
    assert_eq!(status(&m, "t1"), TaskStatus::Queued);
    let changes = m.take_changes();
    assert!(changes.tasks.is_empty() && changes.attempts.is_empty());
    assert!(matches!(
        changes.history[..],
        [HistoryRow::StaleResult { id: 1, .. }]
    ));

    m.apply(assign("t1", "w2", 2));
    assert!(matches!(
        m.apply(finish("t1", "w1", 2, Outcome::Failed)),
        Reply::Stale { .. }
    ));
    assert_eq!(
        m.apply(finish("t1", "w2", 2, Outcome::Passed)),
        Reply::Task {
            status: TaskStatus::Passed
        }
    );
    // A duplicate of the final report: stale, the outcome stays.
    assert!(matches!(
        m.apply(finish("t1", "w2", 2, Outcome::Failed)),
        Reply::Stale { .. }
    ));
    assert_eq!(status(&m, "t1"), TaskStatus::Passed);
    assert_rejected(
        m.apply(finish("nope", "w2", 1, Outcome::Passed)),
        "unknown task",
    );
}

#[test]
fn flaky_and_timeout_retries_requeue_until_spent() {
    let mut m = Machine::new();
    m.apply(register("w1"));
    let mut flaky = spec("f");
    flaky.flaky_retries = 1;
    let mut slow = spec("s");
    slow.timeout_retries = 1;
    m.apply(Command::SubmitJob {
        job: "j".into(),
        name: "j".into(),
        tasks: vec![flaky, slow],
        at: at(1),
    });
    m.apply(assign("f", "w1", 1));
    assert_eq!(
        m.apply(finish("f", "w1", 1, Outcome::Failed)),
        Reply::Task {
            status: TaskStatus::Queued
        }
    );
    assert!(m.task("f").unwrap().requeued);
    m.apply(assign("f", "w1", 2));
    assert_eq!(
        m.apply(finish("f", "w1", 2, Outcome::Failed)),
        Reply::Task {
            status: TaskStatus::Failed
        }
    );

    m.apply(assign("s", "w1", 1));
    assert_eq!(
        m.apply(finish("s", "w1", 1, Outcome::TimedOut)),
        Reply::Task {
            status: TaskStatus::Queued
        }
    );
    m.apply(assign("s", "w1", 2));
    assert_eq!(
        m.apply(finish("s", "w1", 2, Outcome::TimedOut)),
        Reply::Task {
            status: TaskStatus::TimedOut
        }
    );
    assert_eq!(m.job("j").unwrap().status, JobStatus::Finished);
}

#[test]
fn error_outcome_is_final_and_worker_fault_consumes_infra_budget() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    assert_eq!(
        m.apply(finish("t1", "w1", 1, Outcome::Error)),
        Reply::Task {
            status: TaskStatus::Error
        }
    );
    // t2 has max_retries = 2: two worker faults requeue, the third abandons.
    for attempt in 1..=2 {
        m.apply(assign("t2", "w2", attempt));
        assert_eq!(
            m.apply(finish("t2", "w2", attempt, Outcome::WorkerFault)),
            Reply::Task {
                status: TaskStatus::Queued
            }
        );
    }
    m.apply(assign("t2", "w2", 3));
    assert_eq!(
        m.apply(finish("t2", "w2", 3, Outcome::WorkerFault)),
        Reply::Task {
            status: TaskStatus::Abandoned
        }
    );
    let t2 = m.task("t2").unwrap();
    assert!(t2.reason.as_deref().unwrap().contains("exhausted"));
    assert_eq!(t2.infra_retries_used, 2);
}

#[test]
fn requeue_task_rules() {
    let mut m = fleet();
    assert_rejected(
        m.apply(requeue("t1", 0, FaultCategory::Crash)),
        "not in flight",
    );
    m.apply(assign("t1", "w1", 1));
    assert_rejected(
        m.apply(requeue("t1", 2, FaultCategory::Crash)),
        "stale decision",
    );
    assert_rejected(
        m.apply(requeue("zz", 1, FaultCategory::Crash)),
        "unknown task",
    );
    assert_eq!(
        m.apply(requeue("t1", 1, FaultCategory::Crash)),
        Reply::Task {
            status: TaskStatus::Queued
        }
    );
    let t1 = m.task("t1").unwrap();
    assert!(t1.requeued);
    assert_eq!(t1.infra_retries_used, 1);
    let attempt = t1.current.as_ref().unwrap();
    assert_eq!(attempt.outcome.as_deref(), Some("requeued: crash"));
    assert_eq!(attempt.finished_at, Some(at(6)));

    m.apply(assign("t1", "w2", 2));
    m.apply(requeue("t1", 2, FaultCategory::Connection));
    m.apply(assign("t1", "w2", 3));
    // Budget of 2 spent: the third requeue abandons with the reason.
    assert_eq!(
        m.apply(requeue("t1", 3, FaultCategory::Connection)),
        Reply::Task {
            status: TaskStatus::Abandoned
        }
    );
    assert_rejected(
        m.apply(requeue("t1", 3, FaultCategory::Connection)),
        "already final",
    );
}

#[test]
fn requeue_for_timeout_uses_the_timeout_budget() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    assert_eq!(
        m.apply(requeue("t1", 1, FaultCategory::Timeout)),
        Reply::Task {
            status: TaskStatus::Queued
        }
    );
    assert_eq!(m.task("t1").unwrap().infra_retries_used, 0);
    m.apply(assign("t1", "w2", 2));
    assert_eq!(
        m.apply(requeue("t1", 2, FaultCategory::Timeout)),
        Reply::Task {
            status: TaskStatus::TimedOut
        }
    );
}

#[test]
fn abandon_and_cancel() {
    let mut m = fleet();
    let abandon = |task: &str| Command::AbandonTask {
        task: task.into(),
        reason: "worker lost; auto-recovery disabled".into(),
        at: at(7),
    };
    m.apply(assign("t1", "w1", 1));
    assert_eq!(
        m.apply(abandon("t1")),
        Reply::Task {
            status: TaskStatus::Abandoned
        }
    );
    assert_eq!(
        m.task("t1")
            .unwrap()
            .current
            .as_ref()
            .unwrap()
            .outcome
            .as_deref(),
        Some("abandoned")
    );
    assert_rejected(m.apply(abandon("t1")), "already final");
    assert_rejected(m.apply(abandon("zz")), "unknown task");

    let cancel = |task: &str| Command::CancelTask {
        task: task.into(),
        reason: "user".into(),
        at: at(8),
    };
    assert_eq!(
        m.apply(cancel("t2")),
        Reply::Task {
            status: TaskStatus::Cancelled
        }
    );
    assert_rejected(m.apply(cancel("t2")), "already final");
    assert_rejected(m.apply(cancel("zz")), "unknown task");
    assert_eq!(m.job("j").unwrap().status, JobStatus::Finished);
}

#[test]
fn cancel_job_cancels_open_tasks_only() {
    let mut m = fleet();
    m.apply(submit("k", &["k1", "k2", "k3"]));
    m.apply(assign("k1", "w1", 1));
    m.apply(finish("k1", "w1", 1, Outcome::Passed));
    m.apply(assign("k2", "w1", 1));
    let cancel = Command::CancelJob {
        job: "k".into(),
        reason: "user".into(),
        at: at(9),
    };
    assert_eq!(m.apply(cancel.clone()), Reply::Applied);
    assert_eq!(status(&m, "k1"), TaskStatus::Passed);
    assert_eq!(status(&m, "k2"), TaskStatus::Cancelled);
    assert_eq!(status(&m, "k3"), TaskStatus::Cancelled);
    assert_eq!(m.job("k").unwrap().status, JobStatus::Cancelled);
    assert_rejected(m.apply(cancel), "already cancelled");
    assert_rejected(
        m.apply(Command::CancelJob {
            job: "zz".into(),
            reason: "r".into(),
            at: at(9),
        }),
        "unknown job",
    );
}

#[test]
fn recovery_records_get_ids_and_need_json_details() {
    let mut m = Machine::new();
    let worker = |details: &str| Command::RecordWorkerRecovery {
        worker: "w1".into(),
        attempt_number: 1,
        success: false,
        recovery_type: "reconnect".into(),
        error_message: Some("timeout".into()),
        details_json: details.into(),
        at: at(1),
    };
    let task = |details: &str| Command::RecordTaskRecovery {
        task: "t1".into(),
        worker: Some("w1".into()),
        attempt_number: 1,
        success: true,
        recovery_type: "requeue".into(),
        error_message: None,
        details_json: details.into(),
        at: at(1),
    };
    let system = |details: &str| Command::RecordSystemRecovery {
        system_status: "critical".into(),
        success: true,
        affected_workers: 3,
        affected_tasks: 9,
        details_json: details.into(),
        at: at(1),
    };
    for make in [&worker as &dyn Fn(&str) -> Command, &task, &system] {
        assert_eq!(m.apply(make("{}")), Reply::Recorded { id: 1 });
        assert_eq!(m.apply(make(r#"{"k": [1]}"#)), Reply::Recorded { id: 2 });
        assert_rejected(m.apply(make("{oops")), "not valid JSON");
    }
    assert_eq!(m.take_changes().history.len(), 6);
}

#[test]
fn breaker_transitions_reject_stale_from() {
    let mut m = Machine::new();
    let t = |from, to| Command::BreakerTransition {
        scope: "system".into(),
        from,
        to,
        reason: "failure rate 60%".into(),
        at: at(1),
    };
    assert_eq!(
        m.apply(t(BreakerState::Closed, BreakerState::Open)),
        Reply::Recorded { id: 1 }
    );
    assert_rejected(
        m.apply(t(BreakerState::Closed, BreakerState::Open)),
        "stale",
    );
    assert_eq!(
        m.apply(t(BreakerState::Open, BreakerState::HalfOpen)),
        Reply::Recorded { id: 2 }
    );
    assert_eq!(m.breaker("system"), BreakerState::HalfOpen);
    assert_eq!(m.breaker("worker:w1"), BreakerState::Closed);
}

#[test]
fn health_samples_are_kept_up_to_the_retention_limit() {
    let mut m = Machine::new();
    let sample = |node, cpu| Command::HealthSample {
        node,
        cpu,
        mem_bytes: 1,
        disk_free_bytes: 2,
        net_errors: 0,
        error_rate: 0.0,
        at: at(1),
    };
    for _ in 0..HEALTH_SAMPLES_PER_NODE + 2 {
        assert!(!m.apply(sample(1, 0.5)).is_rejected());
    }
    m.apply(sample(2, 0.1));
    let changes = m.take_changes();
    assert_eq!(changes.deleted_health_samples, vec![1, 2]);
    assert_rejected(m.apply(sample(1, f64::NAN)), "non-finite");
}

#[test]
fn a_batch_applies_each_item_with_its_own_reply() {
    let mut m = fleet();
    let reply = m.apply(Command::Batch(vec![
        assign("t1", "w1", 1),
        requeue("t2", 1, FaultCategory::Crash),
        Command::Noop,
        Command::CancelTask {
            task: "t2".into(),
            reason: "r".into(),
            at: at(1),
        },
    ]));
    let Reply::Many(items) = reply else {
        panic!("batch reply")
    };
    assert_eq!(items.len(), 4);
    assert!(!items[0].is_rejected());
    assert!(items[1].is_rejected(), "one bad item…");
    assert_eq!(items[2], Reply::Applied);
    assert_eq!(
        items[3],
        Reply::Task {
            status: TaskStatus::Cancelled
        },
        "…does not sink the batch"
    );
    assert_eq!(status(&m, "t1"), TaskStatus::Assigned);
}

#[test]
fn the_same_log_gives_the_same_state() {
    let log = vec![
        register("w1"),
        register("w2"),
        submit("j", &["a", "b", "c"]),
        assign("a", "w1", 1),
        assign("b", "w2", 1),
        finish("a", "w1", 1, Outcome::Passed),
        requeue("b", 1, FaultCategory::Crash),
        assign("b", "w1", 2),
        finish("b", "w2", 1, Outcome::Failed),
        finish("b", "w1", 2, Outcome::Failed),
        Command::CancelTask {
            task: "c".into(),
            reason: "r".into(),
            at: at(1),
        },
    ];
    let run = || {
        let mut m = Machine::new();
        let replies: Vec<Reply> = log.iter().cloned().map(|c| m.apply(c)).collect();
        (m, replies)
    };
    let (a, ra) = run();
    let (b, rb) = run();
    assert_eq!(ra, rb);
    assert_eq!(a.workers(), b.workers());
    assert_eq!(a.jobs(), b.jobs());
    assert_eq!(a.tasks(), b.tasks());
    assert_eq!(a.counters(), b.counters());
}

#[test]
fn text_enums_round_trip() {
    for s in WorkerStatus::ALL {
        assert_eq!(WorkerStatus::parse(s.as_str()), Some(*s));
    }
    for s in TaskStatus::ALL {
        assert_eq!(TaskStatus::parse(s.as_str()), Some(*s));
    }
    for s in Outcome::ALL {
        assert_eq!(Outcome::parse(s.as_str()), Some(*s));
    }
    assert_eq!(TaskStatus::parse("bogus"), None);
}

fn finish_with_tests(
    task: &str,
    worker: &str,
    attempt: u32,
    tests: &[(&str, TestOutcome)],
) -> Command {
    let Command::FinishTask {
        task,
        attempt,
        worker,
        outcome,
        exit_code,
        duration_ms,
        output_tail,
        at,
    } = finish(task, worker, attempt, Outcome::Failed)
    else {
        unreachable!()
    };
    Command::FinishTaskWithTests {
        task,
        attempt,
        worker,
        outcome,
        exit_code,
        duration_ms,
        output_tail,
        at,
        tests: tests
            .iter()
            .map(|(id, outcome)| crate::state::command::TestCase {
                id: id.to_string(),
                classname: String::new(),
                name: id.to_string(),
                outcome: *outcome,
                duration_ms: 3,
                message: String::new(),
                flaky: false,
            })
            .collect(),
    }
}

fn test_rows(changes: &Changes) -> Vec<(String, u32, String)> {
    changes
        .history
        .iter()
        .filter_map(|row| match row {
            HistoryRow::TestResult {
                task,
                attempt,
                test,
                ..
            } => Some((task.clone(), *attempt, test.id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_current_result_records_its_tests_and_a_stale_one_none() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    // Attempt 1 is lost with its worker; its late report, tests included, is stale.
    m.apply(requeue("t1", 1, FaultCategory::Connection));
    m.take_changes();
    let late = finish_with_tests("t1", "w1", 1, &[("a", TestOutcome::Passed)]);
    assert!(matches!(m.apply(late), Reply::Stale { .. }));
    assert!(test_rows(&m.take_changes()).is_empty());

    m.apply(assign("t1", "w2", 2));
    let tests = [("a", TestOutcome::Passed), ("b", TestOutcome::Failed)];
    let reply = m.apply(finish_with_tests("t1", "w2", 2, &tests));
    assert_eq!(
        reply,
        Reply::Task {
            status: TaskStatus::Failed
        }
    );
    let changes = m.take_changes();
    assert_eq!(
        test_rows(&changes),
        [
            ("t1".to_string(), 2, "a".to_string()),
            ("t1".to_string(), 2, "b".to_string())
        ]
    );
    // The same report again (a resend after a lost ack): stale, no second set of rows.
    assert!(matches!(
        m.apply(finish_with_tests("t1", "w2", 2, &tests)),
        Reply::Stale { .. }
    ));
    assert!(test_rows(&m.take_changes()).is_empty());
}
