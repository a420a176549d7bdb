//! How tasks enter the queue and leave it for a worker: a job's submission (idempotent by job
//! id) and the scheduler's assignments, each checked alone against the worker (known, healthy,
//! not drained) and the task (queued, the next attempt).

use super::*;

impl Machine {
    pub(super) fn submit_job(
        &mut self,
        id: JobId,
        name: String,
        specs: Vec<TaskSpec>,
        at: Timestamp,
    ) -> Reply {
        if let Some(job) = self.jobs.get(&id) {
            return Reply::JobAccepted {
                job: id,
                tasks: job.tasks.len() as u32,
                duplicate: true,
            };
        }
        let mut seen = HashSet::new();
        for spec in &specs {
            if !seen.insert(spec.id.as_str()) {
                return Reply::rejected(format!("task id {} appears twice in job {id}", spec.id));
            }
            if self.tasks.contains_key(&spec.id) {
                return Reply::rejected(format!("task id {} already exists", spec.id));
            }
        }
        let count = specs.len() as u32;
        let mut slots = Vec::with_capacity(specs.len());
        let shared: Arc<str> = Arc::from(id.as_str());
        // The job's first task is the base the others share their common strings with.
        let mut base: Option<StoredSpec> = None;
        for spec in specs {
            let seq = take_id(&mut self.counters.task_seq);
            let stored = StoredSpec::based_on(&spec, base.as_ref());
            base.get_or_insert_with(|| stored.clone());
            let slot = self
                .tasks
                .insert(Task::queued(stored, shared.clone(), seq, at));
            slots.push(slot);
            self.changes.tasks.insert(slot);
            self.events.push(Event::Queued { task: spec.id });
        }
        self.jobs.insert(
            id.clone(),
            Job {
                id: id.clone(),
                name,
                status: JobStatus::Running,
                submitted_at: at,
                finished_at: None,
                tasks: slots,
                open_tasks: count,
            },
        );
        self.changes.jobs.insert(id.clone());
        Reply::JobAccepted {
            job: id,
            tasks: count,
            duplicate: false,
        }
    }

    pub(super) fn assign(&mut self, a: Assignment, term: u64, at: Timestamp) -> Reply {
        match self.workers.get(&a.worker) {
            None => return Reply::rejected(format!("unknown worker {}", a.worker)),
            Some(w) if w.status != WorkerStatus::Healthy => {
                return Reply::rejected(format!(
                    "worker {} is {}, not healthy",
                    a.worker, w.status
                ));
            }
            Some(w) if w.drain.is_some() => {
                return Reply::rejected(format!("worker {} is drained", a.worker));
            }
            Some(_) if !self.accepts_work(&a.worker) => {
                return Reply::rejected(format!(
                    "worker {}'s circuit breaker is {}",
                    a.worker,
                    self.breaker(&crate::state::command::worker_scope(&a.worker))
                ));
            }
            Some(_) => {}
        }
        let Some(task) = self.tasks.get_mut(&a.task) else {
            return Reply::rejected(format!("unknown task {}", a.task));
        };
        if task.status != TaskStatus::Queued {
            return Reply::rejected(format!("task {} is {}, not queued", a.task, task.status));
        }
        if a.attempt != task.attempt + 1 {
            return Reply::rejected(format!(
                "task {} is at attempt {}, so the next is {}, not {}",
                a.task,
                task.attempt,
                task.attempt + 1,
                a.attempt
            ));
        }
        task.status = TaskStatus::Assigned;
        task.attempt = a.attempt;
        task.updated_at = at;
        task.current = Some(Box::new(Attempt {
            number: a.attempt,
            worker: a.worker,
            term,
            assigned_at: at,
            started_at: None,
            finished_at: None,
            outcome: None,
            exit_code: None,
            duration_ms: None,
            output_tail: None,
        }));
        let worker = task
            .current
            .as_ref()
            .map(|c| c.worker.clone())
            .unwrap_or_default();
        self.held
            .entry(worker.clone())
            .or_default()
            .insert(a.task.clone());
        self.events.push(Event::Assigned {
            task: a.task.clone(),
            worker,
            attempt: a.attempt,
        });
        self.note_task(&a.task);
        self.note_new_attempt(&a.task);
        Reply::Task {
            status: TaskStatus::Assigned,
        }
    }
}
