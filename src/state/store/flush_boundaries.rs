//! Property: what DuckDB holds does not depend on where the flushes fall, and no command —
//! however extreme its values — makes apply plus flush fail.
//!
//! Random command sequences (extreme numbers, timestamps past DuckDB's range, NUL bytes,
//! unknown ids, stale attempts, nested batches, replica-check markers) are applied to two
//! machines. One store is committed after every command; the other at random boundaries, as
//! the flusher does under load. Every commit must succeed, both stores must hold identical rows in every replicated
//! table, and the machine reloaded from the store must equal the one that applied the log
//! (what a restart or a snapshot install relies on).
//!
//! Cases: `PROPTEST_CASES` (default 32: each case costs about two seconds of debug-build
//! DuckDB; `PROPTEST_CASES=1000` for a longer run). Each is a sequence of up to 40 commands.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::state::command::{
    Assignment, BreakerState, Command, FaultCategory, Outcome, TaskSpec, TestCase, TestOutcome,
    Timestamp, WorkerStatus,
};
use crate::state::limits;

const WORKERS: &[&str] = &["w1", "w2", "w3", "bad name;", ""];
const TASKS: &[&str] = &["t1", "t2", "t3", "t4", "t5", "t6"];
const JOBS: &[&str] = &["j1", "j2", "j3"];

fn worker() -> impl Strategy<Value = String> {
    select(WORKERS).prop_map(str::to_string)
}

fn task_id() -> impl Strategy<Value = String> {
    select(TASKS).prop_map(str::to_string)
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        8 => (1_700_000_000_000_000i64..1_700_000_100_000_000).prop_map(Timestamp),
        1 => select(vec![
            0,
            -1,
            i64::MIN,
            i64::MAX,
            limits::MAX_TIMESTAMP_US,
            limits::MAX_TIMESTAMP_US + 1,
        ])
        .prop_map(Timestamp),
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..4,
        1 => select(vec![limits::MAX_RETRIES, limits::MAX_RETRIES + 1, i32::MAX as u32 + 1, u32::MAX]),
    ]
}

/// An exit code, a signal (`-N`, see `state::exit`), or a negative value that is neither.
fn exit_code() -> impl Strategy<Value = Option<i32>> {
    prop_oneof![
        3 => (0..=255i32).prop_map(Some),
        2 => (-crate::state::exit::MAX_SIGNAL..=-1).prop_map(Some),
        1 => Just(None),
        1 => any::<Option<i32>>(),
        1 => select(vec![-crate::state::exit::MAX_SIGNAL - 1, i32::MIN]).prop_map(Some),
    ]
}

fn attempt() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..5,
        1 => select(vec![limits::MAX_ATTEMPT, limits::MAX_ATTEMPT + 1, 1 << 31, u32::MAX]),
    ]
}

fn big() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..100_000,
        1 => select(vec![i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX]),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z ]{0,12}",
        1 => Just("nul\0inside".to_string()),
        1 => Just("ünïcödé ✓ \"quoted\" 'single' \\".to_string()),
        1 => Just("é".repeat(limits::MAX_REASON_BYTES)),
    ]
}

fn json() -> impl Strategy<Value = String> {
    select(vec![
        "{}".to_string(),
        r#"{"a": [1, 2.5, null, "x\u0000y"], "b": {"c": true}}"#.to_string(),
        "[1, 2]".to_string(),
        "{oops".to_string(),
        format!("{{\"big\": {}}}", u64::MAX),
    ])
}

fn spec() -> impl Strategy<Value = TaskSpec> {
    (
        task_id(),
        text(),
        prop_oneof![
            4 => Just(vec!["true".to_string()]),
            1 => Just(vec!["sh".to_string(), "-c".to_string(), "exit 1".to_string()]),
            1 => Just(vec![]),
            1 => Just(vec!["a\0b".to_string()]),
        ],
        prop_oneof![
            4 => Just(60_000u64),
            1 => select(vec![0, limits::MAX_TIMEOUT_MS, limits::MAX_TIMEOUT_MS + 1, u64::MAX]),
        ],
        any::<i32>(),
        (count(), count(), count()),
    )
        .prop_map(
            |(id, name, command, timeout_ms, priority, retries)| TaskSpec {
                id,
                name,
                command,
                env: BTreeMap::from([("K".to_string(), "V".to_string())]),
                cwd: None,
                timeout_ms,
                priority,
                labels: BTreeMap::new(),
                capabilities: vec!["webgpu".to_string()],
                max_retries: retries.0,
                timeout_retries: retries.1,
                flaky_retries: retries.2,
            },
        )
}

/// A test of a JUnit report: names up to past their limits, NUL bytes, extreme durations.
fn test_case() -> impl Strategy<Value = TestCase> {
    let name = prop_oneof![
        4 => text(),
        1 => Just("n".repeat(limits::MAX_TEST_NAME_BYTES + 1)),
    ];
    (
        name.clone(),
        name,
        select(TestOutcome::ALL.to_vec()),
        big(),
        text(),
        any::<bool>(),
    )
        .prop_map(
            |(classname, name, outcome, duration_ms, message, flaky)| TestCase {
                id: format!("{classname}::{name}"),
                classname,
                name,
                outcome,
                duration_ms,
                message,
                flaky,
            },
        )
}

fn status() -> impl Strategy<Value = WorkerStatus> {
    select(WorkerStatus::ALL.to_vec())
}

fn outcome() -> impl Strategy<Value = Outcome> {
    select(Outcome::ALL.to_vec())
}

fn category() -> impl Strategy<Value = FaultCategory> {
    select(FaultCategory::ALL.to_vec())
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0f64..1.0,
        1 => select(vec![f64::NAN, f64::INFINITY, -0.0, 1e308, f64::MIN_POSITIVE]),
    ]
}

fn single() -> impl Strategy<Value = Command> {
    prop_oneof![
        3 => (worker(), text(), json(), timestamp()).prop_map(|(worker, host, caps, at)| {
            Command::RegisterWorker {
                worker,
                host,
                address: String::new(),
                capabilities_json: caps,
                labels: BTreeMap::from([("os".to_string(), "linux".to_string())]),
                at,
            }
        }),
        2 => (worker(), status(), status(), text(), timestamp()).prop_map(
            |(worker, from, to, reason, at)| Command::SetWorkerStatus { worker, from, to, reason, at }
        ),
        3 => (select(JOBS), text(), prop::collection::vec(spec(), 0..4), timestamp()).prop_map(
            |(job, name, tasks, at)| Command::SubmitJob { job: job.to_string(), name, tasks, at }
        ),
        4 => (big(), timestamp(), prop::collection::vec((task_id(), worker(), attempt()), 1..4))
            .prop_map(|(term, at, items)| Command::AssignTasks {
                term,
                at,
                assignments: items
                    .into_iter()
                    .map(|(task, worker, attempt)| Assignment { task, worker, attempt })
                    .collect(),
            }),
        2 => (task_id(), attempt(), worker(), timestamp()).prop_map(|(task, attempt, worker, at)| {
            Command::TaskStarted { task, attempt, worker, at }
        }),
        4 => (task_id(), attempt(), worker(), outcome(), exit_code(), big(), text(), timestamp())
            .prop_map(|(task, attempt, worker, outcome, exit_code, duration_ms, output_tail, at)| {
                Command::FinishTask { task, attempt, worker, outcome, exit_code, duration_ms, output_tail, at }
            }),
        2 => (task_id(), attempt(), text(), category(), timestamp()).prop_map(
            |(task, attempt, reason, category, at)| Command::RequeueTask { task, attempt, reason, category, at }
        ),
        1 => (task_id(), text(), timestamp()).prop_map(|(task, reason, at)| Command::AbandonTask { task, reason, at }),
        1 => (task_id(), text(), timestamp()).prop_map(|(task, reason, at)| Command::CancelTask { task, reason, at }),
        1 => (select(JOBS), text(), timestamp()).prop_map(|(job, reason, at)| Command::CancelJob {
            job: job.to_string(),
            reason,
            at,
        }),
        1 => (worker(), count(), any::<bool>(), text(), json(), timestamp()).prop_map(
            |(worker, attempt_number, success, error, details_json, at)| Command::RecordWorkerRecovery {
                worker,
                attempt_number,
                success,
                recovery_type: "restart".to_string(),
                error_message: Some(error),
                details_json,
                at,
            }
        ),
        1 => (task_id(), worker(), count(), json(), timestamp()).prop_map(
            |(task, worker, attempt_number, details_json, at)| Command::RecordTaskRecovery {
                task,
                worker: Some(worker),
                attempt_number,
                success: true,
                recovery_type: "requeue".to_string(),
                error_message: None,
                details_json,
                at,
            }
        ),
        1 => (count(), count(), json(), timestamp()).prop_map(
            |(affected_workers, affected_tasks, details_json, at)| Command::RecordSystemRecovery {
                system_status: "critical".to_string(),
                success: false,
                affected_workers,
                affected_tasks,
                details_json,
                at,
            }
        ),
        1 => (select(BreakerState::ALL.to_vec()), select(BreakerState::ALL.to_vec()), text(), timestamp())
            .prop_map(|(from, to, reason, at)| Command::BreakerTransition {
                scope: "worker:w1".to_string(),
                from,
                to,
                reason,
                at,
            }),
        1 => (big(), float(), big(), big(), float(), timestamp()).prop_map(
            |(node, cpu, mem_bytes, net_errors, error_rate, at)| Command::HealthSample {
                node,
                cpu,
                mem_bytes,
                disk_free_bytes: mem_bytes,
                net_errors,
                error_rate,
                at,
            }
        ),
        1 => (big(), big(), timestamp()).prop_map(|(node, term, at)| Command::LeaderElected { node, term, at }),
        2 => (worker(), status(), text(), category(), any::<bool>(), json(), timestamp()).prop_map(
            |(worker, from, reason, category, requeue, details_json, at)| Command::FailWorker {
                worker,
                from,
                reason,
                category,
                requeue,
                details_json,
                at,
            }
        ),
        1 => (prop_oneof![Just("c1".to_string()), Just(String::new()), Just("x".repeat(200))], timestamp())
            .prop_map(|(id, at)| Command::CheckReplicas { id, at }),
        // A worker leaving hands back what it holds in the same entry, like FailWorker.
        2 => (worker(), text(), timestamp())
            .prop_map(|(worker, reason, at)| Command::LeaveWorker { worker, reason, at }),
        // An operator's drain survives a flush and a reload; a removal hands back like a leave.
        2 => (worker(), any::<bool>(), text(), timestamp())
            .prop_map(|(worker, drain, reason, at)| Command::DrainWorker { worker, drain, reason, at }),
        2 => (worker(), any::<bool>(), text(), timestamp())
            .prop_map(|(worker, force, reason, at)| Command::RemoveWorker { worker, force, reason, at }),
        // A result with its tests: rows only for a current attempt, in the result's entry.
        3 => (task_id(), attempt(), worker(), outcome(), exit_code(), big(), timestamp(),
              prop::collection::vec(test_case(), 0..4))
            .prop_map(|(task, attempt, worker, outcome, exit_code, duration_ms, at, tests)| {
                Command::FinishTaskWithTests {
                    task, attempt, worker, outcome, exit_code, duration_ms,
                    output_tail: String::new(), at, tests,
                }
            }),
        // An operator's recovery request and reset, any level or target status.
        1 => (worker(), prop_oneof![Just("high".to_string()), text()], text(), timestamp())
            .prop_map(|(worker, level, reason, at)| Command::RecoverWorker { worker, level, reason, at }),
        1 => (worker(), status(), text(), timestamp())
            .prop_map(|(worker, to, reason, at)| Command::ResetWorker { worker, to, reason, at }),
        1 => Just(Command::Bench { payload: vec![1; 3] }),
        1 => Just(Command::Noop),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        8 => single(),
        1 => prop::collection::vec(single(), 0..4).prop_map(Command::Batch),
        1 => single().prop_map(|c| Command::Batch(vec![Command::Batch(vec![c])])),
    ]
}

fn meta(index: u64) -> RaftMeta {
    RaftMeta {
        last_applied_index: Some(index),
        last_applied_json: Some(format!("{{\"index\": {index}}}")),
        membership_json: "{}".into(),
    }
}

/// Applies `commands`, committing after command `i` when `flush_after(i)` (and at the end).
fn materialise(commands: &[Command], flush_after: impl Fn(usize) -> bool) -> (Store, Machine) {
    let mut store = Store::open_in_memory().expect("an in-memory store");
    let mut machine = Machine::new();
    let mut pending = Changes::default();
    for (i, command) in commands.iter().enumerate() {
        machine.apply_entry(i as u64 + 1, command.clone());
        pending.absorb(machine.take_changes());
        if flush_after(i) || i + 1 == commands.len() {
            let changes = std::mem::take(&mut pending);
            if let Err(e) = store.commit(&machine, &changes, &meta(i as u64 + 1)) {
                panic!(
                    "commit after command {i} ({}) failed: {e}",
                    commands[i].kind()
                );
            }
        }
    }
    (store, machine)
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tables_do_not_depend_on_flush_boundaries(
        commands in prop::collection::vec(command(), 1..40),
        boundaries in prop::collection::vec(any::<bool>(), 40),
    ) {
        let (every, machine) = materialise(&commands, |_| true);
        let (random, _) = materialise(&commands, |i| boundaries[i]);
        let (every_rows, _) = every.dump().expect("dump");
        let (random_rows, _) = random.dump().expect("dump");
        for (a, b) in every_rows.tables.iter().zip(&random_rows.tables) {
            prop_assert_eq!(a, b, "table {} differs", a.name);
        }
        let reloaded = every.load_machine().expect("the store reloads");
        prop_assert_eq!(reloaded.workers(), machine.workers());
        prop_assert_eq!(reloaded.jobs(), machine.jobs());
        prop_assert_eq!(reloaded.tasks(), machine.tasks());
        prop_assert_eq!(reloaded.counters(), machine.counters());
    }
}
