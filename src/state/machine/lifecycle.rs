//! How a task leaves its attempt: ended, queued again, or made final (and its job with it).
//! These are the only places that change a task's status after assignment, so the events for
//! the leader (`Released`, `Queued`, `Final`) are emitted here and nowhere else.

use super::*;

impl Machine {
    /// Notes the task's current attempt row, as it is now, for the store.
    pub(super) fn note_attempt(&mut self, id: &str) {
        if let Some(task) = self.tasks.get(id)
            && let Some(current) = &task.current
        {
            self.changes
                .attempts
                .insert((id.to_string(), current.number), Attempt::clone(current));
        }
    }

    /// Notes the task's current attempt, just created, for the store: its row is new.
    pub(super) fn note_new_attempt(&mut self, id: &str) {
        self.note_attempt(id);
        if let Some(current) = self.tasks.get(id).and_then(|t| t.current.as_ref()) {
            self.changes
                .new_attempts
                .insert((id.to_string(), current.number));
        }
    }

    /// Marks the current attempt as ended (without a result of its own) if it is open.
    pub(super) fn end_attempt(&mut self, id: &str, outcome: &str, at: Timestamp) {
        if let Some(task) = self.tasks.get_mut(id)
            && matches!(task.status, TaskStatus::Assigned | TaskStatus::Running)
            && let Some(current) = task.current.as_mut()
            && current.finished_at.is_none()
        {
            current.finished_at = Some(at);
            current.outcome = Some(outcome.to_string());
            self.note_attempt(id);
        }
    }

    pub(super) fn queue_again(&mut self, id: &str, reason: String, at: Timestamp) -> TaskStatus {
        self.release(id);
        self.events.push(Event::Queued {
            task: id.to_string(),
        });
        if let Some(task) = self.tasks.get_mut(id) {
            task.status = TaskStatus::Queued;
            task.requeued = true;
            task.updated_at = at;
            task.reason = Some(reason.into_boxed_str());
            self.note_task(id);
        }
        TaskStatus::Queued
    }

    /// A final status from the attempt's own result (the attempt row is already filled in).
    pub(super) fn finalize_result(
        &mut self,
        id: &str,
        status: TaskStatus,
        at: Timestamp,
    ) -> TaskStatus {
        if let Some(task) = self.tasks.get_mut(id) {
            task.reason = None;
        }
        self.set_final(id, status, at);
        status
    }

    /// A final status decided for the task; an open attempt is ended with `attempt_outcome`.
    pub(super) fn finalize(
        &mut self,
        id: &str,
        status: TaskStatus,
        attempt_outcome: &str,
        reason: String,
        at: Timestamp,
    ) -> TaskStatus {
        self.end_attempt(id, attempt_outcome, at);
        if let Some(task) = self.tasks.get_mut(id) {
            task.reason = Some(reason.into_boxed_str());
        }
        self.set_final(id, status, at);
        status
    }

    pub(super) fn set_final(&mut self, id: &str, status: TaskStatus, at: Timestamp) {
        if self.tasks.get(id).is_none_or(|t| t.status.is_final()) {
            return;
        }
        self.release(id);
        self.events.push(Event::Final {
            task: id.to_string(),
            status,
        });
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        task.status = status;
        task.updated_at = at;
        task.finished_at = Some(at).into();
        let job_id = task.job.clone();
        self.note_task(id);
        if let Some(job) = self.jobs.get_mut(&*job_id) {
            job.open_tasks = job.open_tasks.saturating_sub(1);
            if job.open_tasks == 0 && job.status == JobStatus::Running {
                job.status = JobStatus::Finished;
                job.finished_at = Some(at);
            }
            self.changes.jobs.insert(job_id.to_string());
        }
    }
}
