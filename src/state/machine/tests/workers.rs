//! Workers: registration (a held worker stays held), status changes, and the index of the
//! tasks each worker holds, checked against its definition after every command.

use super::*;

#[test]
fn register_worker_upserts_and_keeps_first_registration_time() {
    let mut m = Machine::new();
    m.apply(register("w1"));
    m.apply(Command::SetWorkerStatus {
        worker: "w1".into(),
        from: WorkerStatus::Healthy,
        to: WorkerStatus::Failed,
        reason: "missed heartbeats".into(),
        at: at(5),
    });
    let again = Command::RegisterWorker {
        worker: "w1".into(),
        host: "h2".into(),
        address: "a2".into(),
        capabilities_json: r#"{"cpus": 4}"#.into(),
        labels: BTreeMap::from([("os".into(), "linux".into())]),
        at: at(9),
    };
    assert_eq!(m.apply(again), Reply::Applied);
    let w = m.worker("w1").unwrap();
    assert_eq!(w.status, WorkerStatus::Healthy);
    assert_eq!(w.registered_at, at(1));
    assert_eq!(w.status_changed_at, at(9));
    assert_eq!(w.host, "h2");
}

#[test]
fn a_quarantined_or_draining_worker_stays_held_when_it_registers_again() {
    for held in [WorkerStatus::Quarantined, WorkerStatus::Draining] {
        let mut m = Machine::new();
        m.apply(register("w1"));
        m.apply(Command::SetWorkerStatus {
            worker: "w1".into(),
            from: WorkerStatus::Healthy,
            to: held,
            reason: "recovery holds it".into(),
            at: at(5),
        });
        m.take_events();
        assert_eq!(m.apply(register("w1")), Reply::Applied);
        let w = m.worker("w1").unwrap();
        assert_eq!(w.status, held);
        assert_eq!(w.status_reason, "recovery holds it");
        assert_eq!(w.status_changed_at, at(5));
        assert_eq!(
            m.take_events(),
            vec![Event::Worker {
                worker: "w1".into(),
                status: held
            }]
        );
        // Recovery ends the hold; then it is healthy.
        let release = Command::SetWorkerStatus {
            worker: "w1".into(),
            from: held,
            to: WorkerStatus::Healthy,
            reason: "hold over".into(),
            at: at(9),
        };
        assert_eq!(m.apply(release), Reply::Applied);
        assert_eq!(m.worker("w1").unwrap().status, WorkerStatus::Healthy);
    }
}

#[test]
fn register_worker_rejects_bad_capabilities_and_empty_id() {
    let mut m = Machine::new();
    let bad = |id: &str, caps: &str| Command::RegisterWorker {
        worker: id.into(),
        host: "h".into(),
        address: "a".into(),
        capabilities_json: caps.into(),
        labels: BTreeMap::new(),
        at: at(1),
    };
    assert_rejected(m.apply(bad("w", "[1]")), "JSON object");
    assert_rejected(m.apply(bad("w", "{not json")), "not valid JSON");
    assert_rejected(m.apply(bad("", "{}")), "empty");
    assert!(m.workers().is_empty());
    assert!(m.take_changes().is_empty());
}

#[test]
fn set_worker_status_rejects_stale_from_and_unknown_worker() {
    let mut m = fleet();
    let set = |from, to| Command::SetWorkerStatus {
        worker: "w1".into(),
        from,
        to,
        reason: "r".into(),
        at: at(3),
    };
    assert_eq!(
        m.apply(set(WorkerStatus::Healthy, WorkerStatus::Suspect)),
        Reply::Applied
    );
    assert_rejected(
        m.apply(set(WorkerStatus::Healthy, WorkerStatus::Failed)),
        "stale",
    );
    assert_eq!(m.worker("w1").unwrap().status, WorkerStatus::Suspect);
    assert_rejected(
        m.apply(Command::SetWorkerStatus {
            worker: "ghost".into(),
            from: WorkerStatus::Healthy,
            to: WorkerStatus::Failed,
            reason: "r".into(),
            at: at(3),
        }),
        "unknown worker",
    );
}

/// `held_by` and `in_flight` against the definition: the tasks whose holder is the worker.
fn assert_index_matches_tasks(m: &Machine, step: &str) {
    for worker in ["w1", "w2", "w3"] {
        let mut indexed: Vec<&str> = m.held_by(worker).map(|t| t.id()).collect();
        indexed.sort();
        let mut scanned: Vec<&str> = m
            .tasks()
            .values()
            .filter(|t| t.holder().map(String::as_str) == Some(worker))
            .map(|t| t.id())
            .collect();
        scanned.sort();
        assert_eq!(indexed, scanned, "held by {worker} after {step}");
    }
    let mut in_flight: Vec<&str> = m.in_flight().map(|t| t.id()).collect();
    in_flight.sort();
    let mut scanned: Vec<&str> = m
        .tasks()
        .values()
        .filter(|t| t.holder().is_some())
        .map(|t| t.id())
        .collect();
    scanned.sort();
    assert_eq!(in_flight, scanned, "in flight after {step}");
}

#[test]
fn the_index_of_held_tasks_follows_every_way_in_and_out_of_a_worker() {
    let mut m = fleet();
    m.apply(register("w3"));
    m.apply(submit("k", &["k1", "k2", "k3", "k4", "k5", "k6"]));
    let log = vec![
        assign("t1", "w1", 1),
        assign("t2", "w2", 1),
        assign("k1", "w1", 1),
        assign("k1", "w2", 1), // rejected: not queued
        started("t1", "w1", 1),
        finish("t1", "w1", 1, Outcome::Passed),
        finish("t1", "w1", 1, Outcome::Passed), // stale
        requeue("t2", 1, FaultCategory::Crash),
        assign("t2", "w3", 2),
        started("t2", "w3", 2),
        finish("t2", "w2", 1, Outcome::Failed), // stale: the old holder
        assign("k2", "w2", 1),
        assign("k3", "w2", 1),
        Command::AbandonTask {
            task: "k2".into(),
            reason: "worker lost".into(),
            at: at(7),
        },
        Command::CancelTask {
            task: "k3".into(),
            reason: "user".into(),
            at: at(8),
        },
        assign("k4", "w1", 1),
        Command::Batch(vec![
            assign("k5", "w3", 1),
            requeue("k4", 1, FaultCategory::Crash),
            assign("k4", "w2", 2),
        ]),
        Command::CancelJob {
            job: "k".into(),
            reason: "user".into(),
            at: at(9),
        },
        assign("k6", "w1", 1), // rejected: cancelled
    ];
    assert_index_matches_tasks(&m, "the start");
    for (i, command) in log.into_iter().enumerate() {
        m.apply(command);
        assert_index_matches_tasks(&m, &format!("command {i}"));
    }
    assert_eq!(m.held_by("w3").map(|t| t.id()).collect::<Vec<_>>(), ["t2"]);

    // Rebuilt from stored rows (a restart, a snapshot), the index is the same.
    let parts = MachineParts {
        workers: m.workers().values().cloned().collect(),
        jobs: m
            .jobs()
            .values()
            .map(|j| {
                (
                    j.id.clone(),
                    j.name.clone(),
                    j.status,
                    j.submitted_at,
                    j.finished_at,
                )
            })
            .collect(),
        tasks: m.tasks().values().cloned().collect(),
        ..Default::default()
    };
    let rebuilt = Machine::from_parts(parts);
    assert_index_matches_tasks(&rebuilt, "from_parts");
    assert_eq!(rebuilt.held_by("w3").count(), 1);
}

#[test]
fn the_held_by_benchmark_state_is_what_it_claims() {
    let m = crate::state::machine::bench::bench_state(10_000);
    assert_eq!(m.tasks().len(), 10_000);
    assert_eq!(m.in_flight().count(), 4_000);
    assert_eq!(m.held_by("w0000").count(), 4);
    assert_eq!(m.held_by("w0999").count(), 4);
}

fn fail(worker: &str, from: WorkerStatus, requeue: bool) -> Command {
    Command::FailWorker {
        worker: worker.into(),
        from,
        reason: "session closed".into(),
        category: FaultCategory::Connection,
        requeue,
        details_json: r#"{"leader_term": 7}"#.into(),
        at: at(20),
    }
}

#[test]
fn failing_a_worker_requeues_what_it_holds_in_the_same_entry() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    m.apply(assign("t2", "w2", 1));
    m.take_changes();
    let reply = m.apply(fail("w1", WorkerStatus::Healthy, true));
    assert_eq!(
        reply,
        Reply::Many(vec![Reply::Task {
            status: TaskStatus::Queued
        }])
    );
    assert_eq!(m.worker("w1").unwrap().status, WorkerStatus::Failed);
    assert_eq!(status(&m, "t1"), TaskStatus::Queued);
    assert_eq!(m.task("t1").unwrap().infra_retries_used, 1);
    assert_eq!(
        status(&m, "t2"),
        TaskStatus::Assigned,
        "another worker's task"
    );
    assert_eq!(m.held_by("w1").count(), 0);
    let changes = m.take_changes();
    let rows: Vec<_> = changes
        .history
        .iter()
        .filter_map(|row| match row {
            HistoryRow::TaskRecovery {
                task,
                worker,
                success,
                recovery_type,
                details_json,
                ..
            } => Some((task, worker, success, recovery_type, details_json)),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 1);
    let (task, worker, success, kind, details) = rows[0];
    assert_eq!(
        (task.as_str(), worker.as_deref(), *success),
        ("t1", Some("w1"), true)
    );
    assert_eq!(kind, "requeue");
    let details: serde_json::Value = serde_json::from_str(details).unwrap();
    assert_eq!(details["leader_term"], 7, "the leader's facts are kept");
    assert_eq!(details["result"], "queued");
    assert_eq!(details["previous_status"], "assigned");
    assert_eq!(details["requeued_at_us"], 20);
    // The attempt was ended in the same entry.
    let ended = &changes.attempts[&("t1".to_string(), 1)];
    assert_eq!(ended.outcome.as_deref(), Some("requeued: connection"));
    // Nothing can be assigned to it any more.
    let Reply::Many(items) = m.apply(assign("t1", "w1", 2)) else {
        panic!("one reply per assignment")
    };
    assert_rejected(items[0].clone(), "not healthy");
}

#[test]
fn with_auto_recovery_disabled_a_failed_workers_tasks_are_abandoned() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    m.take_changes();
    let reply = m.apply(fail("w1", WorkerStatus::Healthy, false));
    assert_eq!(
        reply,
        Reply::Many(vec![Reply::Task {
            status: TaskStatus::Abandoned
        }])
    );
    assert_eq!(status(&m, "t1"), TaskStatus::Abandoned);
    let history = m.take_changes().history;
    assert!(history.iter().any(|row| matches!(
        row,
        HistoryRow::TaskRecovery { success: false, recovery_type, error_message: Some(e), .. }
            if recovery_type == "abandon" && e.contains("auto-recovery disabled")
    )));
}

#[test]
fn a_stale_failure_changes_nothing() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    m.take_changes();
    assert_rejected(m.apply(fail("w1", WorkerStatus::Suspect, true)), "stale");
    assert_eq!(status(&m, "t1"), TaskStatus::Assigned);
    assert_eq!(m.worker("w1").unwrap().status, WorkerStatus::Healthy);
    assert!(m.take_changes().is_empty());
}

#[test]
fn a_worker_that_leaves_hands_its_tasks_back_without_using_a_retry() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    m.apply(started("t1", "w1", 1));
    m.apply(assign("t2", "w1", 1));
    m.take_changes();
    let leave = Command::LeaveWorker {
        worker: "w1".into(),
        reason: "stopped (SIGTERM)".into(),
        at: at(20),
    };
    let reply = m.apply(leave.clone());
    assert_eq!(
        reply,
        Reply::Many(vec![
            Reply::Task {
                status: TaskStatus::Queued
            },
            Reply::Task {
                status: TaskStatus::Queued
            },
        ])
    );
    let w = m.worker("w1").unwrap();
    assert_eq!(w.status, WorkerStatus::Left);
    assert_eq!(w.status_reason, "stopped (SIGTERM)");
    for task in ["t1", "t2"] {
        let t = m.task(task).unwrap();
        assert_eq!(t.status, TaskStatus::Queued);
        assert_eq!(
            t.infra_retries_used, 0,
            "a departure used a retry of {task}"
        );
        assert!(t.holder().is_none(), "{task} still names a worker");
    }
    let changes = m.take_changes();
    assert!(
        changes.history.is_empty(),
        "a departure is not a recovery: {:?}",
        changes.history
    );
    // The attempt that ran ended as handed back, not as a fault.
    let attempt = changes.attempts.get(&("t1".to_string(), 1)).unwrap();
    assert_eq!(attempt.outcome.as_deref(), Some("requeued: worker left"));
    // Leaving twice, or an unknown worker, is refused.
    assert_rejected(m.apply(leave), "already left");
    assert_rejected(
        m.apply(Command::LeaveWorker {
            worker: "nobody".into(),
            reason: String::new(),
            at: at(21),
        }),
        "unknown worker",
    );
    // Coming back later registers it as healthy.
    m.apply(register("w1"));
    assert_eq!(m.worker("w1").unwrap().status, WorkerStatus::Healthy);
}

fn drain(worker: &str, on: bool, t: i64) -> Command {
    Command::DrainWorker {
        worker: worker.into(),
        drain: on,
        reason: "kernel upgrade".into(),
        at: at(t),
    }
}

fn remove(worker: &str, force: bool) -> Command {
    Command::RemoveWorker {
        worker: worker.into(),
        force,
        reason: "decommissioned".into(),
        at: at(20),
    }
}

#[test]
fn an_operators_drain_stops_assignments_and_outlives_registration_and_recovery() {
    let mut m = fleet();
    assert_eq!(m.apply(drain("w1", true, 5)), Reply::Applied);
    let w = m.worker("w1").unwrap();
    assert_eq!(
        w.drain.as_ref().map(|d| (d.at, d.reason.as_str())),
        Some((at(5), "kernel upgrade"))
    );
    assert!(!w.accepts_work() && w.status == WorkerStatus::Healthy);
    // Draining again keeps the first drain.
    assert_eq!(m.apply(drain("w1", true, 7)), Reply::Applied);
    assert_eq!(m.worker("w1").unwrap().drain.as_ref().unwrap().at, at(5));
    assert_eq!(
        m.apply(assign("t1", "w1", 1)),
        Reply::Many(vec![Reply::rejected("worker w1 is drained")])
    );
    // A reconnect, a failure and a recovery keep it.
    m.apply(register("w1"));
    m.apply(Command::SetWorkerStatus {
        worker: "w1".into(),
        from: WorkerStatus::Healthy,
        to: WorkerStatus::Failed,
        reason: "silent".into(),
        at: at(8),
    });
    m.apply(register("w1"));
    assert!(m.worker("w1").unwrap().drain.is_some());
    assert_eq!(
        m.apply(assign("t1", "w1", 1)),
        Reply::Many(vec![Reply::rejected("worker w1 is drained")])
    );
    assert_eq!(m.apply(drain("w1", false, 9)), Reply::Applied);
    assert!(m.worker("w1").unwrap().accepts_work());
    assert!(!m.apply(assign("t1", "w1", 1)).is_rejected());
    assert_rejected(m.apply(drain("nobody", true, 9)), "unknown worker nobody");
}

#[test]
fn removing_a_worker_that_holds_work_needs_force_and_uses_no_retry() {
    let mut m = fleet();
    m.apply(assign("t1", "w1", 1));
    m.apply(drain("w1", true, 5));
    assert_rejected(m.apply(remove("w1", false)), "holds 1 task(s)");
    assert_eq!(m.worker("w1").unwrap().status, WorkerStatus::Healthy);
    m.take_events();
    let reply = m.apply(remove("w1", true));
    assert_eq!(
        reply,
        Reply::Many(vec![Reply::Task {
            status: TaskStatus::Queued
        }])
    );
    let w = m.worker("w1").unwrap();
    assert_eq!(w.status, WorkerStatus::Left);
    assert_eq!(w.status_reason, "removed by an operator: decommissioned");
    assert!(w.drain.is_none(), "a removal ends the drain");
    let t = m.task("t1").unwrap();
    assert_eq!((t.status, t.infra_retries_used), (TaskStatus::Queued, 0));
    assert!(m.take_events().contains(&Event::Worker {
        worker: "w1".into(),
        status: WorkerStatus::Left
    }));
    assert_rejected(m.apply(remove("w1", true)), "already left");
    assert_rejected(m.apply(drain("w1", true, 21)), "has left");
    // An idle worker is removed without force.
    assert_eq!(m.apply(remove("w2", false)), Reply::Many(vec![]));
}
