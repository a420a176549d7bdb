//! Worker registration and status changes. A worker held out of scheduling by recovery
//! (quarantined, draining) keeps its status when it registers again; recovery ends the hold.
//! A failed worker's tasks are requeued in the entry that fails it ([`Machine::fail_worker`]);
//! a worker that leaves hands its tasks back in the entry that records it
//! ([`Machine::leave_worker`]). An operator's drain is a hold of its own, beside the status
//! ([`Machine::drain_worker`]); removing a worker ([`Machine::remove_worker`]) is a departure
//! decided by an operator.

use super::*;

impl Machine {
    pub(super) fn register_worker(
        &mut self,
        id: WorkerId,
        host: String,
        address: String,
        capabilities_json: String,
        labels: BTreeMap<String, String>,
        at: Timestamp,
    ) -> Reply {
        let previous = self.workers.get(&id);
        let registered_at = previous.map_or(at, |w| w.registered_at);
        // An operator's drain outlives reconnects and restarts, as a cordon does.
        let drain = previous.and_then(|w| w.drain.clone());
        // A worker held out of scheduling by recovery (quarantined, draining) stays held when
        // it reconnects: registering is not a verdict, and recovery ends the hold. Any other
        // registration (new, back from a failure, or after being given up) makes it healthy.
        let (status, status_changed_at, status_reason) = match previous {
            Some(w) if matches!(w.status, WorkerStatus::Quarantined | WorkerStatus::Draining) => {
                (w.status, w.status_changed_at, w.status_reason.clone())
            }
            _ => (WorkerStatus::Healthy, at, "registered".to_string()),
        };
        self.workers.insert(
            id.clone(),
            Worker {
                id: id.clone(),
                host,
                address,
                status,
                capabilities_json,
                labels,
                registered_at,
                status_changed_at,
                status_reason,
                drain,
            },
        );
        self.events.push(Event::Worker {
            worker: id.clone(),
            status,
        });
        self.changes.workers.insert(id);
        Reply::Applied
    }

    pub(super) fn set_worker_status(
        &mut self,
        id: &str,
        from: WorkerStatus,
        to: WorkerStatus,
        reason: String,
        at: Timestamp,
    ) -> Reply {
        let Some(worker) = self.workers.get_mut(id) else {
            return Reply::rejected(format!("unknown worker {id}"));
        };
        if worker.status != from {
            return Reply::rejected(format!(
                "worker {id} is {}, not {from}: stale decision",
                worker.status
            ));
        }
        worker.status = to;
        worker.status_changed_at = at;
        worker.status_reason = reason;
        self.events.push(Event::Worker {
            worker: id.to_string(),
            status: to,
        });
        self.changes.workers.insert(id.to_string());
        Reply::Applied
    }

    /// An operator's drain, or its end (see [`Command::DrainWorker`]). Idempotent: draining a
    /// drained worker keeps the first drain's time and reason.
    pub(super) fn drain_worker(
        &mut self,
        id: &str,
        drain: bool,
        reason: String,
        at: Timestamp,
    ) -> Reply {
        let Some(worker) = self.workers.get_mut(id) else {
            return Reply::rejected(format!("unknown worker {id}"));
        };
        if drain && worker.status == WorkerStatus::Left {
            return Reply::rejected(format!("worker {id} has left the fleet"));
        }
        match (drain, worker.drain.is_some()) {
            (true, false) => worker.drain = Some(OperatorDrain { at, reason }),
            (false, true) => worker.drain = None,
            _ => return Reply::Applied,
        }
        let status = worker.status;
        self.events.push(Event::Worker {
            worker: id.to_string(),
            status,
        });
        self.changes.workers.insert(id.to_string());
        Reply::Applied
    }

    /// An operator removes a worker (see [`Command::RemoveWorker`]): `left`, its drain ended,
    /// and — only with `force` — every task it holds queued again without a retry used.
    /// Replies one item per task, in task id order.
    pub(super) fn remove_worker(
        &mut self,
        id: &str,
        force: bool,
        reason: String,
        at: Timestamp,
    ) -> Reply {
        let Some(worker) = self.workers.get(id) else {
            return Reply::rejected(format!("unknown worker {id}"));
        };
        if worker.status == WorkerStatus::Left {
            return Reply::rejected(format!("worker {id} has already left the fleet"));
        }
        let held = self.held_by(id).count();
        if held > 0 && !force {
            return Reply::rejected(format!(
                "worker {id} holds {held} task(s); drain it and wait until they finish, or \
                 force the removal (its tasks are queued again)"
            ));
        }
        if let Some(worker) = self.workers.get_mut(id) {
            worker.drain = None;
        }
        self.leave_worker(id, format!("removed by an operator: {reason}"), at)
    }

    /// An operator's recovery request (see [`Command::RecoverWorker`]): a worker recovery gave
    /// up on or holds apart becomes `failed`, for the leader to start again.
    pub(super) fn recover_worker(
        &mut self,
        id: &str,
        level: &str,
        reason: String,
        at: Timestamp,
    ) -> Reply {
        let Some(worker) = self.workers.get(id) else {
            return Reply::rejected(format!("unknown worker {id}"));
        };
        let from = worker.status;
        let refusal = match from {
            WorkerStatus::Failed | WorkerStatus::PermanentlyFailed | WorkerStatus::Quarantined => {
                None
            }
            WorkerStatus::Healthy => Some("it is healthy: there is nothing to recover".into()),
            WorkerStatus::Suspect => Some(
                "it is suspect: failure detection is under way; wait until it is failed or \
                 healthy again"
                    .into(),
            ),
            WorkerStatus::Recovering => Some("it is being recovered already".to_string()),
            WorkerStatus::Draining => Some(
                "it is draining (its running tasks finish first); wait for it, or undrain it"
                    .into(),
            ),
            WorkerStatus::Left => {
                Some("it left the fleet: start it again and it registers healthy".into())
            }
        };
        if let Some(why) = refusal {
            return Reply::rejected(format!("worker {id} cannot be recovered: {why}"));
        }
        let why = format!("an operator asked for recovery at level {level}: {reason}");
        match from {
            WorkerStatus::Failed => {
                self.changes.workers.insert(id.to_string());
                Reply::Applied
            }
            _ => self.set_worker_status(id, from, WorkerStatus::Failed, why, at),
        }
    }

    /// An operator lifts a quarantine or a permanent failure (see [`Command::ResetWorker`]).
    pub(super) fn reset_worker(
        &mut self,
        id: &str,
        to: WorkerStatus,
        reason: String,
        at: Timestamp,
    ) -> Reply {
        let Some(worker) = self.workers.get(id) else {
            return Reply::rejected(format!("unknown worker {id}"));
        };
        let from = worker.status;
        if !matches!(
            from,
            WorkerStatus::Quarantined | WorkerStatus::PermanentlyFailed
        ) {
            return Reply::rejected(format!(
                "worker {id} is {from}: there is no quarantine or permanent failure to lift"
            ));
        }
        let why = format!("reset by an operator: {reason}");
        self.set_worker_status(id, from, to, why, at)
    }

    /// A worker left on purpose (see [`Command::LeaveWorker`]): `left`, and every task it
    /// holds queued again with no retry used and no recovery record. Replies one item per
    /// task, in task id order.
    pub(super) fn leave_worker(&mut self, id: &str, reason: String, at: Timestamp) -> Reply {
        let Some(worker) = self.workers.get(id) else {
            return Reply::rejected(format!("unknown worker {id}"));
        };
        if worker.status == WorkerStatus::Left {
            return Reply::rejected(format!("worker {id} has already left"));
        }
        let from = worker.status;
        let status = self.set_worker_status(id, from, WorkerStatus::Left, reason.clone(), at);
        if status.is_rejected() {
            return status;
        }
        let mut held: Vec<TaskId> = self.held_by(id).map(|t| t.id().to_string()).collect();
        held.sort();
        let why = format!("worker {id} left: {reason}");
        let replies = held
            .into_iter()
            .map(|task| {
                self.end_attempt(&task, "requeued: worker left", at);
                Reply::Task {
                    status: self.queue_again(&task, why.clone(), at),
                }
            })
            .collect();
        Reply::Many(replies)
    }

    /// Fails a worker and deals with every task it holds, in one apply (see
    /// [`Command::FailWorker`]). Replies one item per task, in task id order.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fail_worker(
        &mut self,
        id: &str,
        from: WorkerStatus,
        reason: String,
        category: FaultCategory,
        requeue: bool,
        details_json: &str,
        at: Timestamp,
    ) -> Reply {
        let status = self.set_worker_status(id, from, WorkerStatus::Failed, reason.clone(), at);
        if status.is_rejected() {
            return status;
        }
        let mut held: Vec<(TaskId, u32, TaskStatus)> = self
            .held_by(id)
            .map(|t| (t.id().to_string(), t.attempt, t.status))
            .collect();
        held.sort();
        let leader_facts = match serde_json::from_str(details_json) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let why = format!("worker {id} failed: {reason}");
        let abandoned = "worker lost; auto-recovery disabled";
        let mut replies = Vec::with_capacity(held.len());
        for (task, attempt, previous) in held {
            let reply = if requeue {
                self.requeue_task(&task, attempt, why.clone(), category, at)
            } else {
                let status = self.finalize(
                    &task,
                    TaskStatus::Abandoned,
                    "abandoned",
                    abandoned.into(),
                    at,
                );
                Reply::Task { status }
            };
            let (success, result, error) = match &reply {
                Reply::Task { status } => (
                    requeue && *status == TaskStatus::Queued,
                    status.as_str().to_string(),
                    (!requeue).then(|| abandoned.to_string()),
                ),
                Reply::Rejected { reason } => {
                    (false, "unchanged".to_string(), Some(reason.clone()))
                }
                other => (false, format!("{other:?}"), None),
            };
            let action = if requeue { "requeue" } else { "abandon" };
            let mut details = leader_facts.clone();
            for (key, value) in [
                ("action", serde_json::json!(action)),
                ("result", serde_json::json!(result)),
                ("why", serde_json::json!(why)),
                ("category", serde_json::json!(category.as_str())),
                ("previous_status", serde_json::json!(previous.as_str())),
                ("attempt", serde_json::json!(attempt)),
                ("auto_recovery", serde_json::json!(requeue)),
                ("requeued_at_us", serde_json::json!(at.micros())),
            ] {
                details.insert(key.to_string(), value);
            }
            let row = HistoryRow::TaskRecovery {
                id: take_id(&mut self.counters.task_recovery),
                task,
                worker: Some(id.to_string()),
                at,
                attempt_number: attempt,
                success,
                recovery_type: action.to_string(),
                error_message: error,
                details_json: serde_json::Value::Object(details).to_string(),
            };
            self.changes.history.push(row);
            replies.push(reply);
        }
        Reply::Many(replies)
    }
}
