//! Worker registration and status changes. A worker held out of scheduling by recovery
//! (quarantined, draining) keeps its status when it registers again; recovery ends the hold.

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
        if id.is_empty() {
            return Reply::rejected("worker id is empty");
        }
        match serde_json::from_str::<serde_json::Value>(&capabilities_json) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => return Reply::rejected("worker capabilities must be a JSON object"),
        }
        let previous = self.workers.get(&id);
        let registered_at = previous.map_or(at, |w| w.registered_at);
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
}
