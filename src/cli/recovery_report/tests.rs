//! The report against a real in-memory store, built by applying real commands.
//!
//! The story: on a day in November, at 10:00 UTC worker `w1` crashes holding three tasks;
//! two are requeued and finish elsewhere, the third has no retries left and is abandoned; a
//! reconnect fails and a restart brings `w1` back. At 14:00 `w2` loses its session holding
//! one task, which is requeued and still runs at the end; `w2` reconnects, and fails and
//! reconnects again later without holding a task. `w4` fails and its restart fails. A hung
//! attempt on `w3` is requeued as a timeout and then cancelled, and one recovery row names a
//! task the tables never saw. Coordinator 1 samples its health inside and outside the
//! recovery windows (one sample exactly on the edge), coordinator 2 only outside.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::state::command::{
    Assignment, Command, FaultCategory, Outcome, TaskSpec, Timestamp, WorkerStatus,
};
use crate::state::machine::{Machine, Reply};
use crate::state::store::{RaftMeta, Store};

/// Midnight UTC, 14 November 2023, in milliseconds.
const DAY: i64 = 1_699_920_000_000;
/// 10:00 UTC that day: `w1` fails.
const A: i64 = DAY + 10 * 3_600_000;
/// 14:00 UTC that day: `w2` fails.
const B: i64 = DAY + 14 * 3_600_000;

fn at(ms: i64) -> Timestamp {
    Timestamp(ms * 1000)
}

/// A store and the machine whose changes it materialises, one commit per command.
struct World {
    store: Store,
    machine: Machine,
    index: u64,
}

impl World {
    fn new() -> World {
        World {
            store: Store::open_in_memory().unwrap(),
            machine: Machine::new(),
            index: 0,
        }
    }

    fn apply(&mut self, command: Command) -> Reply {
        let what = format!("{command:?}");
        let reply = self.machine.apply(command);
        assert!(!reply.is_rejected(), "{what} was rejected: {reply:?}");
        self.index += 1;
        let changes = self.machine.take_changes();
        let meta = RaftMeta {
            last_applied_index: Some(self.index),
            last_applied_json: Some(format!("{{\"index\": {}}}", self.index)),
            membership_json: "{}".into(),
        };
        self.store.commit(&self.machine, &changes, &meta).unwrap();
        reply
    }

    fn report(&self) -> RecoveryReport {
        report_from(self.store.connection()).unwrap()
    }

    fn register(&mut self, worker: &str, ms: i64) {
        self.apply(Command::RegisterWorker {
            worker: worker.into(),
            host: format!("{worker}.local"),
            address: "127.0.0.1:7000".into(),
            capabilities_json: "{}".into(),
            labels: BTreeMap::new(),
            at: at(ms),
        });
    }

    fn status(&mut self, worker: &str, from: WorkerStatus, to: WorkerStatus, ms: i64) {
        self.apply(Command::SetWorkerStatus {
            worker: worker.into(),
            from,
            to,
            reason: format!("{from} -> {to}"),
            at: at(ms),
        });
    }

    fn assign(&mut self, task: &str, worker: &str, attempt: u32, ms: i64) {
        let reply = self.apply(Command::AssignTasks {
            term: 1,
            at: at(ms),
            assignments: vec![Assignment {
                task: task.into(),
                worker: worker.into(),
                attempt,
            }],
        });
        assert!(matches!(reply, Reply::Many(r) if !r[0].is_rejected()));
    }

    fn finish(&mut self, task: &str, attempt: u32, worker: &str, outcome: Outcome, ms: i64) {
        self.apply(Command::FinishTask {
            task: task.into(),
            attempt,
            worker: worker.into(),
            outcome,
            exit_code: Some(i32::from(outcome != Outcome::Passed)),
            duration_ms: 1,
            output_tail: String::new(),
            at: at(ms),
        });
    }

    /// What the health monitor does for a task of a failed worker: requeue, then a row
    /// whose `details` carry the detection and requeue times.
    fn monitor_requeue(
        &mut self,
        task: &str,
        worker: &str,
        category: FaultCategory,
        detected: i64,
        requeued: i64,
        expect: TaskStatus,
    ) {
        let reply = self.apply(Command::RequeueTask {
            task: task.into(),
            attempt: 1,
            reason: format!("worker {worker} failed"),
            category,
            at: at(requeued),
        });
        assert_eq!(reply, Reply::Task { status: expect });
        let success = expect == TaskStatus::Queued;
        let details = json!({
            "action": "requeue",
            "result": expect.as_str(),
            "why": format!("worker {worker} failed"),
            "category": category.as_str(),
            "previous_status": "assigned",
            "attempt": 1,
            "auto_recovery": true,
            "leader_term": 1,
            "leader_node": 1,
            "silent_for_ms": 5000,
            "phi": null,
            "detected_at_us": detected * 1000,
            "requeued_at_us": requeued * 1000,
        });
        self.apply(Command::RecordTaskRecovery {
            task: task.into(),
            worker: Some(worker.into()),
            attempt_number: 1,
            success,
            recovery_type: "requeue".into(),
            error_message: None,
            details_json: details.to_string(),
            at: at(requeued),
        });
    }

    fn worker_recovery(&mut self, worker: &str, attempt: u32, success: bool, kind: &str, ms: i64) {
        self.worker_recovery_with(
            worker,
            attempt,
            success,
            kind,
            json!({"strategy": kind}),
            ms,
        );
    }

    fn worker_recovery_with(
        &mut self,
        worker: &str,
        attempt: u32,
        success: bool,
        kind: &str,
        details: serde_json::Value,
        ms: i64,
    ) {
        self.apply(Command::RecordWorkerRecovery {
            worker: worker.into(),
            attempt_number: attempt,
            success,
            recovery_type: kind.into(),
            error_message: (!success).then(|| format!("{kind} failed")),
            details_json: details.to_string(),
            at: at(ms),
        });
    }

    fn health(&mut self, node: u64, cpu: f64, mem_bytes: u64, ms: i64) {
        self.apply(Command::HealthSample {
            node,
            cpu,
            mem_bytes,
            disk_free_bytes: 1 << 30,
            net_errors: 0,
            error_rate: 0.0,
            at: at(ms),
        });
    }
}

fn spec(id: &str, max_retries: u32) -> TaskSpec {
    TaskSpec {
        timeout_ms: 60_000,
        max_retries,
        ..TaskSpec::new(id, id, vec!["true".into()])
    }
}

/// The story of the module docs.
fn story() -> World {
    use TaskStatus as T;
    use WorkerStatus as W;
    let mut world = World::new();
    for w in ["w1", "w2", "w3", "w4"] {
        world.register(w, DAY);
    }
    world.apply(Command::SubmitJob {
        job: "j1".into(),
        name: "suite".into(),
        tasks: vec![
            spec("t1", 3),
            spec("t2", 3),
            spec("t3", 3),
            spec("t4", 3),
            spec("t5", 3),
            spec("t6", 0),
        ],
        at: at(DAY),
    });
    for (task, worker) in [
        ("t1", "w1"),
        ("t2", "w1"),
        ("t6", "w1"),
        ("t3", "w2"),
        ("t4", "w3"),
        ("t5", "w4"),
    ] {
        world.assign(task, worker, 1, A - 5_000);
    }
    world.finish("t5", 1, "w4", Outcome::Passed, A - 1_000);
    world.health(1, 0.25, 100, A - 120_000);
    world.health(2, 0.5, 1_000, A - 60_000);

    // 10:00: w1 crashes holding t1, t2 and t6 (which has no retries left).
    world.status("w1", W::Healthy, W::Failed, A);
    world.monitor_requeue("t1", "w1", FaultCategory::Crash, A, A + 500, T::Queued);
    world.monitor_requeue("t2", "w1", FaultCategory::Crash, A, A + 500, T::Queued);
    world.monitor_requeue("t6", "w1", FaultCategory::Crash, A, A + 500, T::Abandoned);
    world.assign("t1", "w2", 2, A + 2_000);
    world.assign("t2", "w3", 2, A + 2_000);
    world.health(1, 0.5, 200, A + 10_000);
    world.finish("t1", 2, "w2", Outcome::Passed, A + 10_000);
    world.finish("t2", 2, "w3", Outcome::Failed, A + 12_000);
    world.worker_recovery("w1", 1, false, "reconnect", A + 20_000);
    world.status("w1", W::Failed, W::Recovering, A + 25_000);
    world.health(1, 0.75, 300, A + 30_000);
    world.status("w1", W::Recovering, W::Healthy, A + 40_000);
    world.worker_recovery_with(
        "w1",
        2,
        true,
        "restart",
        json!({"strategy": "restart", "started_at_us": (A + 25_000) * 1000,
               "finished_at_us": (A + 40_000) * 1000, "exit_status": 0}),
        A + 40_000,
    );
    world.health(1, 0.125, 60, A + 600_000);

    // 14:00: w2 loses its session holding t3, reconnects; t3 runs again on w3.
    world.status("w2", W::Healthy, W::Failed, B);
    world.monitor_requeue(
        "t3",
        "w2",
        FaultCategory::Connection,
        B,
        B + 2_000,
        T::Queued,
    );
    world.status("w2", W::Failed, W::Healthy, B + 8_000);
    world.worker_recovery("w2", 1, true, "reconnect", B + 8_000);
    world.assign("t3", "w3", 2, B + 9_000);
    world.apply(Command::TaskStarted {
        task: "t3".into(),
        attempt: 2,
        worker: "w3".into(),
        at: at(B + 9_500),
    });
    // w4 fails holding nothing; its restart fails.
    world.status("w4", W::Healthy, W::Failed, B + 90_000);
    world.worker_recovery("w4", 1, false, "restart", B + 100_000);
    // t4 hangs on w3: requeued as a timeout (no detection time), then cancelled.
    let reply = world.apply(Command::RequeueTask {
        task: "t4".into(),
        attempt: 1,
        reason: "hung".into(),
        category: FaultCategory::Timeout,
        at: at(B + 200_000),
    });
    assert_eq!(reply, Reply::Task { status: T::Queued });
    world.apply(Command::RecordTaskRecovery {
        task: "t4".into(),
        worker: Some("w3".into()),
        attempt_number: 1,
        success: true,
        recovery_type: "timeout".into(),
        error_message: None,
        details_json: json!({"action": "requeue", "category": "timeout"}).to_string(),
        at: at(B + 200_000),
    });
    world.apply(Command::CancelTask {
        task: "t4".into(),
        reason: "user".into(),
        at: at(B + 210_000),
    });
    // A row about a task the tables never held, without a category.
    world.apply(Command::RecordTaskRecovery {
        task: "ghost".into(),
        worker: None,
        attempt_number: 1,
        success: false,
        recovery_type: "requeue".into(),
        error_message: Some("unknown task ghost".into()),
        details_json: "{}".into(),
        at: at(B + 250_000),
    });
    // w2 fails again holding nothing and reconnects: a success without a measurable span.
    world.status("w2", W::Healthy, W::Failed, B + 290_000);
    world.status("w2", W::Failed, W::Healthy, B + 300_000);
    world.worker_recovery("w2", 2, true, "reconnect", B + 300_000);
    // Exactly 30 s after the last recovery row (inside), then 31 s (outside).
    world.health(1, 0.25, 400, B + 330_000);
    world.health(1, 0.375, 140, B + 331_000);
    world.apply(Command::RecordSystemRecovery {
        system_status: "recovered".into(),
        success: true,
        affected_workers: 1,
        affected_tasks: 0,
        details_json: "{}".into(),
        at: at(B + 400_000),
    });
    world
}

fn outcome(status: &str, tasks: u64, recovered: u64) -> TaskOutcome {
    TaskOutcome {
        status: status.into(),
        tasks,
        recovered,
    }
}

fn category(name: Option<&str>, rows: u64, successes: u64) -> CategoryCount {
    CategoryCount {
        category: name.map(str::to_string),
        rows,
        successes,
    }
}

fn top(worker: &str, rows: u64, successes: u64, tasks: u64) -> WorkerPattern {
    WorkerPattern {
        worker_id: worker.into(),
        worker_recoveries: rows,
        worker_successes: successes,
        task_recoveries: tasks,
        total: rows + tasks,
        status: Some("healthy".into()),
    }
}

#[test]
fn every_figure_of_the_story() {
    let report = story().report();
    let expected = RecoveryReport {
        success: SuccessRates {
            // w1 ×2 (one success), w2 ×2 (both), w4 ×1 (failed).
            worker: Rate {
                attempts: 5,
                successes: 3,
                rate: Some(0.6),
            },
            // t1, t2, t3, t4 succeeded; t6 (abandoned) and ghost did not.
            task: Rate {
                attempts: 6,
                successes: 4,
                rate: Some(4.0 / 6.0),
            },
            system: Rate {
                attempts: 1,
                successes: 1,
                rate: Some(1.0),
            },
        },
        recovery_time: RecoveryTimes {
            // w1: 15 s from its details; w2: 8 s from the 14:00 detection to its row; w2's
            // second success has no detection after its first success.
            worker: Durations {
                recoveries: 3,
                timed: 2,
                mean_ms: Some(11_500.0),
                p99_ms: Some(8_000.0 + 0.99 * 7_000.0),
            },
            // t1, t2: 0.5 s, t3: 2 s; t4 has no detection time.
            task_requeue: Durations {
                recoveries: 4,
                timed: 3,
                mean_ms: Some(1_000.0),
                p99_ms: Some(500.0 + 0.98 * 1_500.0),
            },
            // t1 passed 10 s and t2 failed 12 s after detection; t3 runs, t4 was cancelled.
            task_finish: Durations {
                recoveries: 4,
                timed: 2,
                mean_ms: Some(11_000.0),
                p99_ms: Some(10_000.0 + 0.99 * 2_000.0),
            },
        },
        preservation: Preservation {
            tasks: 6,
            preserved: 2,
            lost: 2,
            open: 1,
            unknown: 1,
            rate: Some(2.0 / 6.0),
        },
        task_outcomes: vec![
            outcome("abandoned", 1, 1),
            outcome("cancelled", 1, 1),
            outcome("failed", 1, 1),
            outcome("passed", 2, 1),
            outcome("running", 1, 1),
        ],
        coordinator_load: CoordinatorLoad {
            window_s: 30,
            nodes: vec![
                NodeLoad {
                    node_id: 1,
                    during: LoadStats {
                        samples: 3,
                        cpu: Some(0.5),
                        mem_bytes: Some(300.0),
                    },
                    outside: LoadStats {
                        samples: 3,
                        cpu: Some(0.25),
                        mem_bytes: Some(100.0),
                    },
                },
                NodeLoad {
                    node_id: 2,
                    during: LoadStats {
                        samples: 0,
                        cpu: None,
                        mem_bytes: None,
                    },
                    outside: LoadStats {
                        samples: 1,
                        cpu: Some(0.5),
                        mem_bytes: Some(1_000.0),
                    },
                },
            ],
        },
        // w1, w2 and w3 (named by t4's row) are healthy; w4 is still failed.
        reconnection: Reconnection {
            workers: 4,
            healthy: 3,
            rate: Some(0.75),
            by_status: vec![
                StatusCount {
                    status: Some("failed".into()),
                    workers: 1,
                },
                StatusCount {
                    status: Some("healthy".into()),
                    workers: 3,
                },
            ],
        },
        patterns: FailurePatterns {
            top_workers: vec![
                top("w1", 2, 1, 3),
                top("w2", 2, 2, 1),
                top("w3", 0, 0, 1),
                WorkerPattern {
                    status: Some("failed".into()),
                    ..top("w4", 1, 0, 0)
                },
            ],
            task_categories: vec![
                category(Some("crash"), 3, 2),
                category(Some("connection"), 1, 1),
                category(Some("timeout"), 1, 1),
                category(None, 1, 0),
            ],
            worker_recovery_types: vec![
                category(Some("reconnect"), 3, 2),
                category(Some("restart"), 2, 1),
            ],
            hours: vec![
                HourCount {
                    hour: 10,
                    worker_rows: 2,
                    task_rows: 3,
                },
                HourCount {
                    hour: 14,
                    worker_rows: 3,
                    task_rows: 3,
                },
            ],
        },
    };
    assert_eq!(report, expected);
}

/// Each successful worker recovery is timed from the first source it allows: its own start
/// and finish, the planner's timings, then the monitor's detection of the failure.
#[test]
fn worker_recovery_time_takes_the_first_source_a_row_allows() {
    let mut world = World::new();
    for w in ["w1", "w2", "w3", "w4", "w5"] {
        world.register(w, DAY);
    }
    let tasks = vec![spec("t1", 3), spec("t2", 3), spec("t3", 3)];
    world.apply(Command::SubmitJob {
        job: "j1".into(),
        name: "suite".into(),
        tasks,
        at: at(DAY),
    });
    for (task, worker) in [("t1", "w1"), ("t2", "w2"), ("t3", "w3")] {
        world.assign(task, worker, 1, A - 5_000);
        world.status(worker, WorkerStatus::Healthy, WorkerStatus::Failed, A);
        let category = FaultCategory::Crash;
        world.monitor_requeue(task, worker, category, A, A + 500, TaskStatus::Queued);
    }
    // Start and finish win over the timings and the detection (60 s): 20 s.
    let both = json!({"started_at_us": (A + 10_000) * 1000, "finished_at_us": (A + 30_000) * 1000,
                      "timings": {"since_failure_ms": 1, "duration_ms": 1}});
    world.worker_recovery_with("w1", 1, true, "restart", both, A + 60_000);
    // The planner's timings win over the detection: 4 s + 1 s.
    let timings = json!({"timings": {"since_failure_ms": 4_000, "duration_ms": 1_000}});
    world.worker_recovery_with("w2", 1, true, "reconnect", timings, A + 60_000);
    // Only the detection: 45 s; a later success has no detection after the first one.
    world.worker_recovery_with("w3", 1, true, "reconnect", json!({}), A + 45_000);
    world.worker_recovery_with("w3", 2, true, "reconnect", json!({}), A + 90_000);
    // A worker that came back by itself: the planner's time since the failure, 7 s.
    let own = json!({"outcome": "self_recovered", "timings": {"since_failure_ms": 7_000}});
    world.worker_recovery_with("w4", 1, true, "self_recovered", own, A + 70_000);
    // No source at all, and a failed attempt (not a success, so not in scope).
    world.worker_recovery_with("w5", 1, true, "reconnect", json!({}), A + 80_000);
    world.worker_recovery("w5", 2, false, "restart", A + 85_000);

    let times = world.report().recovery_time.worker;
    // Timed: 5 s, 7 s, 20 s, 45 s; p99 interpolates between the two largest.
    assert_eq!((times.recoveries, times.timed), (6, 4));
    assert_eq!(times.mean_ms, Some(19_250.0));
    let p99 = times.p99_ms.unwrap();
    assert!((p99 - (20_000.0 + 0.97 * 25_000.0)).abs() < 1e-6, "{p99}");
}

#[test]
fn an_empty_database_reports_zeros_and_nulls() {
    let report = World::new().report();
    let none = Rate {
        attempts: 0,
        successes: 0,
        rate: None,
    };
    let untimed = Durations {
        recoveries: 0,
        timed: 0,
        mean_ms: None,
        p99_ms: None,
    };
    assert_eq!(
        report,
        RecoveryReport {
            success: SuccessRates {
                worker: none.clone(),
                task: none.clone(),
                system: none,
            },
            recovery_time: RecoveryTimes {
                worker: untimed.clone(),
                task_requeue: untimed.clone(),
                task_finish: untimed,
            },
            preservation: Preservation {
                tasks: 0,
                preserved: 0,
                lost: 0,
                open: 0,
                unknown: 0,
                rate: None,
            },
            task_outcomes: vec![],
            coordinator_load: CoordinatorLoad {
                window_s: RECOVERY_WINDOW_S,
                nodes: vec![],
            },
            reconnection: Reconnection {
                workers: 0,
                healthy: 0,
                rate: None,
                by_status: vec![],
            },
            patterns: FailurePatterns {
                top_workers: vec![],
                task_categories: vec![],
                worker_recovery_types: vec![],
                hours: vec![],
            },
        }
    );
    let json: serde_json::Value = serde_json::from_str(&render(&report, Output::Json)).unwrap();
    assert_eq!(json["success"]["worker"]["rate"], serde_json::Value::Null);
    assert_eq!(
        json["recovery_time"]["worker"]["p99_ms"],
        serde_json::Value::Null
    );
    let text = render(&report, Output::Table);
    assert!(
        text.contains("  task preservation        - (0 of 0)"),
        "{text}"
    );
    assert!(text.contains("  worker failed -> recovered  0           0      -     -"));
}

#[test]
fn json_has_snake_case_keys_and_the_same_figures() {
    let report = story().report();
    let json: serde_json::Value = serde_json::from_str(&render(&report, Output::Json)).unwrap();
    assert_eq!(json["success"]["worker"]["rate"], json!(0.6));
    assert_eq!(json["recovery_time"]["worker"]["mean_ms"], json!(11_500.0));
    assert_eq!(json["preservation"]["unknown"], json!(1));
    assert_eq!(json["coordinator_load"]["window_s"], json!(30));
    assert_eq!(
        json["coordinator_load"]["nodes"][1]["during"]["cpu"],
        serde_json::Value::Null
    );
    assert_eq!(
        json["reconnection"]["by_status"][0]["status"],
        json!("failed")
    );
    assert_eq!(
        json["patterns"]["task_categories"][3]["category"],
        serde_json::Value::Null
    );
    assert_eq!(json["patterns"]["hours"][0]["hour"], json!(10));
}

#[test]
fn the_text_report_has_every_section() {
    let text = render(&story().report(), Output::Table);
    for line in [
        "  worker recovery success  60.0% (3 of 5)",
        "  task recovery success    66.7% (4 of 6)",
        "  system recovery success  100.0% (1 of 1)",
        "  task preservation        33.3% (2 of 6)",
        "  worker reconnection      75.0% (3 of 4)",
        "  worker failed -> recovered  3           2      11500.0  14930.0",
        "  task detected -> requeued   4           3      1000.0   1970.0",
        "Tasks by status (recovered: dealt with by recovery; 2 lost, 1 open, 1 unknown)",
        "  passed     2      1",
        "  1     3       0.500  0.0 MiB  3        0.250  0.0 MiB",
        "  2     0       -      -        1        0.500  0.0 MiB",
        "  failed   1",
        "  w4      1            0          0          1      failed",
        "  crash       3     2",
        "  reconnect  3     2",
        "  14:00  3            3",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn constants_in_the_sql_match_the_rust_ones() {
    let window = format!("INTERVAL {RECOVERY_WINDOW_S} SECOND");
    assert_eq!(LOAD_SQL.matches(&window).count(), 2);
    assert!(TOP_WORKERS_SQL.ends_with(&format!("LIMIT {TOP_WORKERS}")));
    for sql in QUERIES {
        crate::query::check_read_only(sql).unwrap();
    }
}

#[test]
fn a_short_or_odd_answer_is_an_error_not_a_panic() {
    assert!(assemble(vec![]).is_err());
    let mut answers: Vec<Rows> = vec![vec![]; QUERIES.len()];
    assert!(assemble(answers.clone()).is_err());
    answers[0] = vec![vec![json!("x"); 6]];
    assert!(assemble(answers).is_err());
}
