//! The pure state machine: `apply(command) -> Reply` over an in-memory view.
//!
//! [`Machine`] holds what apply needs to decide (workers, jobs, tasks with their current
//! attempt, breaker states, the replicated row-id counters) and nothing else. It does no I/O
//! and never reads the clock, so every node that applies the same log reaches the same view
//! and the same replies. Each change it makes is also noted in a [`Changes`] set that
//! [`super::store::Store`] drains and writes to DuckDB in the same transaction as
//! `last_applied`.
//!
//! A command that cannot apply is *rejected*: the rejection is a [`Reply`], deterministic,
//! counted as applied, and goes back to the proposer. Validation happens before any mutation,
//! so a rejected command leaves no trace (the one exception is by design: a stale
//! `FinishTask` is recorded in `stale_results`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

pub use self::table::Tasks;
pub use super::view::{
    Attempt, Changes, Counters, Event, HistoryRow, Job, OperatorDrain, Reply, StoredSpec, Task,
    Worker,
};

use super::command::{
    Assignment, BreakerState, Command, FaultCategory, JobId, JobStatus, NodeId, Outcome, TaskId,
    TaskSpec, TaskStatus, Timestamp, WorkerId, WorkerStatus, worker_scope,
};
use super::limits;

/// Health samples kept per coordinator; older ones are deleted as new ones arrive.
pub const HEALTH_SAMPLES_PER_NODE: usize = 10_000;

fn take_id(counter: &mut i64) -> i64 {
    *counter += 1;
    *counter
}

/// The in-memory view of replicated state and the apply function over it.
#[derive(Debug, Default)]
pub struct Machine {
    workers: BTreeMap<WorkerId, Worker>,
    jobs: BTreeMap<JobId, Job>,
    tasks: Tasks,
    /// The tasks each worker holds (assigned or running), kept by `assign` and `release`, so
    /// that the leader's per-worker questions (a hello, a failure) and its in-flight scans do
    /// not walk every task ever submitted.
    held: HashMap<WorkerId, BTreeSet<TaskId>>,
    /// Each breaker's state and when it entered it (no entry: closed since ever).
    breakers: BTreeMap<String, (BreakerState, Timestamp)>,
    counters: Counters,
    /// Ids of the kept health samples per node, oldest first, for the retention limit.
    health_ids: BTreeMap<NodeId, VecDeque<i64>>,
    changes: Changes,
    events: Vec<Event>,
    /// Log index of the entry being applied (set by [`Machine::apply_entry`]).
    log_index: u64,
}

/// Everything needed to rebuild a [`Machine`] from storage.
#[derive(Debug, Default)]
pub struct MachineParts {
    pub workers: Vec<Worker>,
    pub jobs: Vec<(JobId, String, JobStatus, Timestamp, Option<Timestamp>)>,
    pub tasks: Vec<Task>,
    pub breakers: BTreeMap<String, (BreakerState, Timestamp)>,
    pub counters: Counters,
    pub health_ids: Vec<(NodeId, i64)>,
}

impl Machine {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the view from rows read back from storage.
    pub fn from_parts(parts: MachineParts) -> Self {
        let mut machine = Machine {
            workers: parts
                .workers
                .into_iter()
                .map(|w| (w.id.clone(), w))
                .collect(),
            breakers: parts.breakers,
            counters: parts.counters,
            ..Default::default()
        };
        for (id, name, status, submitted_at, finished_at) in parts.jobs {
            let job = Job {
                id: id.clone(),
                name,
                status,
                submitted_at,
                finished_at,
                tasks: Vec::new(),
                open_tasks: 0,
            };
            machine.jobs.insert(id, job);
        }
        let mut tasks = parts.tasks;
        tasks.sort_by_key(|t| t.seq);
        // One shared job id per job, and its first task the base of the others' specs, as
        // when the job was submitted.
        let mut job_ids: HashMap<Arc<str>, (Arc<str>, StoredSpec)> = HashMap::new();
        for mut task in tasks {
            match job_ids.get(&task.job) {
                Some((shared, base)) => {
                    task.job = shared.clone();
                    task.spec = StoredSpec::based_on(&task.spec.to_spec(), Some(base));
                }
                None => {
                    let first = (task.job.clone(), task.spec.clone());
                    job_ids.insert(task.job.clone(), first);
                }
            }
            if let Some(worker) = task.holder() {
                machine
                    .held
                    .entry(worker.clone())
                    .or_default()
                    .insert(task.id().to_string());
            }
            let open = !task.status.is_final();
            let job = task.job.clone();
            let slot = machine.tasks.insert(task);
            if let Some(job) = machine.jobs.get_mut(&*job) {
                job.tasks.push(slot);
                if open {
                    job.open_tasks += 1;
                }
            }
        }
        let mut health = parts.health_ids;
        health.sort_by_key(|(_, id)| *id);
        for (node, id) in health {
            machine.health_ids.entry(node).or_default().push_back(id);
        }
        machine
    }

    pub fn workers(&self) -> &BTreeMap<WorkerId, Worker> {
        &self.workers
    }

    pub fn worker(&self, id: &str) -> Option<&Worker> {
        self.workers.get(id)
    }

    pub fn jobs(&self) -> &BTreeMap<JobId, Job> {
        &self.jobs
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// The task in `slot` of the task table (as [`Job::tasks`] and [`Changes::tasks`] name
    /// them).
    pub fn task_at(&self, slot: u32) -> Option<&Task> {
        self.tasks.at(slot)
    }

    /// A job's tasks, in submission order.
    pub fn tasks_of<'a>(&'a self, job: &'a Job) -> impl Iterator<Item = &'a Task> + 'a {
        job.tasks.iter().filter_map(|slot| self.tasks.at(*slot))
    }

    /// Notes that the task's row changed, for the store.
    fn note_task(&mut self, id: &str) {
        if let Some(slot) = self.tasks.slot(id) {
            self.changes.tasks.insert(slot);
        }
    }

    /// The tasks `worker` holds (assigned or running), by id.
    pub fn held_by<'a>(&'a self, worker: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.held
            .get(worker)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// Every task some worker holds (assigned or running).
    pub fn in_flight(&self) -> impl Iterator<Item = &Task> + '_ {
        self.held
            .values()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    pub fn breaker(&self, scope: &str) -> BreakerState {
        self.breakers
            .get(scope)
            .map_or(BreakerState::Closed, |(state, _)| *state)
    }

    /// Every breaker that ever changed: scope → (state, since).
    pub fn breakers(&self) -> &BTreeMap<String, (BreakerState, Timestamp)> {
        &self.breakers
    }

    /// True when the scheduler may give `worker` work: it accepts work
    /// ([`Worker::accepts_work`]) and its circuit breaker lets calls through (not open).
    pub fn accepts_work(&self, worker: &str) -> bool {
        self.workers.get(worker).is_some_and(Worker::accepts_work)
            && !self.breaker(&worker_scope(worker)).blocks()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Drains the changes made since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Drains the events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Notes that the task's holder (if any) lets go of its attempt.
    fn release(&mut self, id: &str) {
        if let Some(task) = self.tasks.get(id)
            && let Some(worker) = task.holder()
        {
            self.events.push(Event::Released {
                task: id.to_string(),
                worker: worker.clone(),
                attempt: task.attempt,
            });
            if let Some(held) = self.held.get_mut(worker) {
                held.remove(id);
                if held.is_empty() {
                    self.held.remove(worker);
                }
            }
        }
    }

    /// Applies the command of the log entry at `log_index`.
    pub fn apply_entry(&mut self, log_index: u64, command: Command) -> Reply {
        self.log_index = log_index;
        self.apply(command)
    }

    /// Applies one command. Never panics, never reads the clock. A command outside the
    /// limits of what the store holds ([`limits`]) is rejected before it changes anything.
    pub fn apply(&mut self, mut command: Command) -> Reply {
        limits::normalize(&mut command);
        if let Err(violation) = limits::check(&command) {
            return Reply::rejected(violation);
        }
        self.apply_valid(command)
    }

    fn apply_valid(&mut self, command: Command) -> Reply {
        match command {
            Command::Noop => Reply::Applied,
            Command::Bench { payload } => {
                self.changes.history.push(HistoryRow::Bench {
                    log_index: self.log_index,
                    payload_bytes: payload.len() as u64,
                });
                Reply::Applied
            }
            Command::LeaderElected { node, term, at } => {
                let id = take_id(&mut self.counters.leader_transitions);
                self.changes.history.push(HistoryRow::LeaderTransition {
                    id,
                    term,
                    leader: node,
                    at,
                });
                Reply::Recorded { id }
            }
            Command::RegisterWorker {
                worker,
                host,
                address,
                capabilities_json,
                labels,
                at,
            } => self.register_worker(worker, host, address, capabilities_json, labels, at),
            Command::SetWorkerStatus {
                worker,
                from,
                to,
                reason,
                at,
            } => self.set_worker_status(&worker, from, to, reason, at),
            Command::SubmitJob {
                job,
                name,
                tasks,
                at,
            } => self.submit_job(job, name, tasks, at),
            Command::AssignTasks {
                term,
                at,
                assignments,
            } => Reply::Many(
                assignments
                    .into_iter()
                    .map(|a| self.assign(a, term, at))
                    .collect(),
            ),
            Command::TaskStarted {
                task,
                attempt,
                worker,
                at,
            } => self.task_started(&task, attempt, &worker, at),
            Command::FinishTask {
                task,
                attempt,
                worker,
                outcome,
                exit_code,
                duration_ms,
                output_tail,
                at,
            } => self.finish_task(
                &task,
                attempt,
                worker,
                outcome,
                exit_code,
                duration_ms,
                output_tail,
                at,
            ),
            Command::FinishTaskWithTests {
                task,
                attempt,
                worker,
                outcome,
                exit_code,
                duration_ms,
                output_tail,
                at,
                tests,
            } => self.finish_task_with_tests(
                &task,
                attempt,
                worker,
                outcome,
                exit_code,
                duration_ms,
                output_tail,
                at,
                tests,
            ),
            Command::RequeueTask {
                task,
                attempt,
                reason,
                category,
                at,
            } => self.requeue_task(&task, attempt, reason, category, at),
            Command::AbandonTask { task, reason, at } => {
                match self.tasks.get(&task).map(|t| t.status) {
                    None => Reply::rejected(format!("unknown task {task}")),
                    Some(s) if s.is_final() => {
                        Reply::rejected(format!("task {task} is already final ({s})"))
                    }
                    Some(_) => {
                        self.finalize(&task, TaskStatus::Abandoned, "abandoned", reason, at);
                        Reply::Task {
                            status: TaskStatus::Abandoned,
                        }
                    }
                }
            }
            Command::CancelJob { job, reason, at } => self.cancel_job(&job, reason, at),
            Command::CancelTask { task, reason, at } => {
                match self.tasks.get(&task).map(|t| t.status) {
                    None => Reply::rejected(format!("unknown task {task}")),
                    Some(s) if s.is_final() => {
                        Reply::rejected(format!("task {task} is already final ({s})"))
                    }
                    Some(_) => {
                        self.finalize(&task, TaskStatus::Cancelled, "cancelled", reason, at);
                        Reply::Task {
                            status: TaskStatus::Cancelled,
                        }
                    }
                }
            }
            Command::RecordWorkerRecovery {
                worker,
                attempt_number,
                success,
                recovery_type,
                error_message,
                details_json,
                at,
            } => {
                let id = take_id(&mut self.counters.worker_recovery);
                self.changes.history.push(HistoryRow::WorkerRecovery {
                    id,
                    worker,
                    at,
                    attempt_number,
                    success,
                    recovery_type,
                    error_message,
                    details_json,
                });
                Reply::Recorded { id }
            }
            Command::RecordTaskRecovery {
                task,
                worker,
                attempt_number,
                success,
                recovery_type,
                error_message,
                details_json,
                at,
            } => {
                let id = take_id(&mut self.counters.task_recovery);
                self.changes.history.push(HistoryRow::TaskRecovery {
                    id,
                    task,
                    worker,
                    at,
                    attempt_number,
                    success,
                    recovery_type,
                    error_message,
                    details_json,
                });
                Reply::Recorded { id }
            }
            Command::RecordSystemRecovery {
                system_status,
                success,
                affected_workers,
                affected_tasks,
                details_json,
                at,
            } => {
                let id = take_id(&mut self.counters.system_recovery);
                self.changes.history.push(HistoryRow::SystemRecovery {
                    id,
                    at,
                    system_status,
                    success,
                    affected_workers,
                    affected_tasks,
                    details_json,
                });
                Reply::Recorded { id }
            }
            Command::BreakerTransition {
                scope,
                from,
                to,
                reason,
                at,
            } => {
                let current = self.breaker(&scope);
                if current != from {
                    return Reply::rejected(format!(
                        "breaker {scope} is {current}, not {from}: stale transition"
                    ));
                }
                self.breakers.insert(scope.clone(), (to, at));
                // The leader's breakers follow, and its dispatcher looks again at the worker.
                self.events.push(Event::Breaker {
                    scope: scope.clone(),
                    state: to,
                    since: at,
                });
                let id = take_id(&mut self.counters.breaker_transitions);
                self.changes.history.push(HistoryRow::BreakerTransition {
                    id,
                    scope,
                    from,
                    to,
                    reason,
                    at,
                });
                Reply::Recorded { id }
            }
            Command::HealthSample {
                node,
                cpu,
                mem_bytes,
                disk_free_bytes,
                net_errors,
                error_rate,
                at,
            } => {
                let id = take_id(&mut self.counters.health_samples);
                self.changes.history.push(HistoryRow::HealthSample {
                    id,
                    node,
                    cpu,
                    mem_bytes,
                    disk_free_bytes,
                    net_errors,
                    error_rate,
                    at,
                });
                let kept = self.health_ids.entry(node).or_default();
                kept.push_back(id);
                while kept.len() > HEALTH_SAMPLES_PER_NODE {
                    if let Some(old) = kept.pop_front() {
                        self.changes.deleted_health_samples.push(old);
                    }
                }
                Reply::Recorded { id }
            }
            Command::Batch(items) => {
                Reply::Many(items.into_iter().map(|c| self.apply(c)).collect())
            }
            Command::FailWorker {
                worker,
                from,
                reason,
                category,
                requeue,
                details_json,
                at,
            } => self.fail_worker(&worker, from, reason, category, requeue, &details_json, at),
            // A marker for the replica check (raft::state_machine digests the tables).
            Command::CheckReplicas { .. } => Reply::Applied,
            Command::LeaveWorker { worker, reason, at } => self.leave_worker(&worker, reason, at),
            Command::DrainWorker {
                worker,
                drain,
                reason,
                at,
            } => self.drain_worker(&worker, drain, reason, at),
            Command::RemoveWorker {
                worker,
                force,
                reason,
                at,
            } => self.remove_worker(&worker, force, reason, at),
            Command::RecoverWorker {
                worker,
                level,
                reason,
                at,
            } => self.recover_worker(&worker, &level, reason, at),
            Command::ResetWorker {
                worker,
                to,
                reason,
                at,
            } => self.reset_worker(&worker, to, reason, at),
        }
    }

    /// Why a report about `(task, attempt)` from `worker` does not concern the current
    /// attempt, or `None` when it does.
    fn staleness(task: &Task, attempt: u32, worker: &str) -> Option<String> {
        if task.status.is_final() {
            return Some(format!("task is already final ({})", task.status));
        }
        if task.status == TaskStatus::Queued {
            return Some(format!(
                "attempt {attempt} was ended; the task is queued again"
            ));
        }
        if attempt != task.attempt {
            return Some(format!(
                "attempt {attempt} is not the current attempt {}",
                task.attempt
            ));
        }
        match task.holder() {
            Some(holder) if holder == worker => None,
            Some(holder) => Some(format!(
                "attempt {attempt} belongs to worker {holder}, not {worker}"
            )),
            None => Some("the task has no current holder".to_string()),
        }
    }

    fn task_started(&mut self, id: &str, attempt: u32, worker: &str, at: Timestamp) -> Reply {
        let Some(task) = self.tasks.get_mut(id) else {
            return Reply::rejected(format!("unknown task {id}"));
        };
        if let Some(reason) = Self::staleness(task, attempt, worker) {
            return Reply::rejected(reason);
        }
        if task.status == TaskStatus::Running {
            return Reply::rejected(format!("task {id} attempt {attempt} is already running"));
        }
        task.status = TaskStatus::Running;
        task.updated_at = at;
        if let Some(current) = task.current.as_mut() {
            current.started_at = Some(at);
        }
        self.note_task(id);
        self.note_attempt(id);
        Reply::Task {
            status: TaskStatus::Running,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_task(
        &mut self,
        id: &str,
        attempt: u32,
        worker: WorkerId,
        outcome: Outcome,
        exit_code: Option<i32>,
        duration_ms: u64,
        output_tail: String,
        at: Timestamp,
    ) -> Reply {
        let Some(task) = self.tasks.get_mut(id) else {
            return Reply::rejected(format!("unknown task {id}"));
        };
        if let Some(reason) = Self::staleness(task, attempt, &worker) {
            // The negative control puts back the bug of accepting a superseded attempt's
            // result: its row gets the result.
            #[cfg(feature = "negative-controls")]
            if crate::negative::active(crate::negative::Control::NoFencing)
                && attempt >= 1
                && attempt < task.attempt
            {
                let row = Attempt {
                    number: attempt,
                    worker,
                    term: task.current.as_ref().map_or(0, |a| a.term),
                    assigned_at: at,
                    started_at: Some(at),
                    finished_at: Some(at),
                    outcome: Some(outcome.as_str().to_string()),
                    exit_code,
                    duration_ms: Some(duration_ms),
                    output_tail: Some(output_tail),
                };
                self.changes.attempts.insert((id.to_string(), attempt), row);
                return Reply::Applied;
            }
            let row = HistoryRow::StaleResult {
                id: take_id(&mut self.counters.stale_results),
                task: id.to_string(),
                attempt,
                worker,
                outcome,
                exit_code,
                reason: reason.clone(),
                at,
            };
            self.changes.history.push(row);
            return Reply::Stale { reason };
        }
        if let Some(current) = task.current.as_mut() {
            current.started_at.get_or_insert(at);
            current.finished_at = Some(at);
            current.outcome = Some(outcome.as_str().to_string());
            current.exit_code = exit_code;
            current.duration_ms = Some(duration_ms);
            current.output_tail = Some(output_tail);
        }
        let next = match outcome {
            Outcome::Passed => Next::Result(TaskStatus::Passed),
            Outcome::Error => Next::Result(TaskStatus::Error),
            Outcome::Failed if task.flaky_retries_used < u16::from(task.spec.flaky_retries) => {
                task.flaky_retries_used += 1;
                Next::Again("test failed; flaky retry".to_string())
            }
            Outcome::Failed => Next::Result(TaskStatus::Failed),
            Outcome::TimedOut
                if task.timeout_retries_used < u16::from(task.spec.timeout_retries) =>
            {
                task.timeout_retries_used += 1;
                Next::Again("timed out; retrying on another worker".to_string())
            }
            Outcome::TimedOut => Next::Result(TaskStatus::TimedOut),
            Outcome::WorkerFault if task.infra_retries_used < u16::from(task.spec.max_retries) => {
                task.infra_retries_used += 1;
                Next::Again("worker fault".to_string())
            }
            Outcome::WorkerFault => Next::Abandon(format!(
                "worker fault; infrastructure retries exhausted ({})",
                task.spec.max_retries
            )),
        };
        self.note_attempt(id);
        let status = match next {
            Next::Result(status) => self.finalize_result(id, status, at),
            Next::Again(reason) => self.queue_again(id, reason, at),
            Next::Abandon(reason) => {
                self.finalize(id, TaskStatus::Abandoned, "worker_fault", reason, at)
            }
        };
        Reply::Task { status }
    }

    fn requeue_task(
        &mut self,
        id: &str,
        attempt: u32,
        reason: String,
        category: FaultCategory,
        at: Timestamp,
    ) -> Reply {
        let Some(task) = self.tasks.get_mut(id) else {
            return Reply::rejected(format!("unknown task {id}"));
        };
        if task.status.is_final() {
            return Reply::rejected(format!("task {id} is already final ({})", task.status));
        }
        if task.status == TaskStatus::Queued {
            return Reply::rejected(format!("task {id} is queued, not in flight"));
        }
        if attempt != task.attempt {
            return Reply::rejected(format!(
                "task {id} is at attempt {}, not {attempt}: stale decision",
                task.attempt
            ));
        }
        let next = if category == FaultCategory::Timeout {
            if task.timeout_retries_used < u16::from(task.spec.timeout_retries) {
                task.timeout_retries_used += 1;
                Next::Again(reason)
            } else {
                Next::Result(TaskStatus::TimedOut)
            }
        } else if task.infra_retries_used < u16::from(task.spec.max_retries) {
            task.infra_retries_used += 1;
            Next::Again(reason)
        } else {
            Next::Abandon(format!(
                "{reason}; infrastructure retries exhausted ({})",
                task.spec.max_retries
            ))
        };
        let status = match next {
            Next::Again(reason) => {
                self.end_attempt(id, &format!("requeued: {category}"), at);
                self.queue_again(id, reason, at)
            }
            Next::Result(status) => {
                let reason = "timed out; timeout retries exhausted".to_string();
                self.finalize(id, status, "timed_out", reason, at)
            }
            Next::Abandon(reason) => {
                self.finalize(id, TaskStatus::Abandoned, "abandoned", reason, at)
            }
        };
        Reply::Task { status }
    }

    fn cancel_job(&mut self, id: &str, reason: String, at: Timestamp) -> Reply {
        let Some(job) = self.jobs.get(id) else {
            return Reply::rejected(format!("unknown job {id}"));
        };
        if job.status != JobStatus::Running {
            return Reply::rejected(format!("job {id} is already {}", job.status));
        }
        let open: Vec<TaskId> = self
            .tasks_of(job)
            .filter(|t| !t.status.is_final())
            .map(|t| t.id().to_string())
            .collect();
        // The job is cancelled first, so the last task ending does not finish it instead.
        if let Some(job) = self.jobs.get_mut(id) {
            job.status = JobStatus::Cancelled;
            job.finished_at = Some(at);
            self.changes.jobs.insert(id.to_string());
        }
        for task in &open {
            self.finalize(task, TaskStatus::Cancelled, "cancelled", reason.clone(), at);
        }
        Reply::Applied
    }
}

/// Where a task goes after its attempt ended.
enum Next {
    /// Final with this status.
    Result(TaskStatus),
    /// Queued again for this reason.
    Again(String),
    /// Final `abandoned` for this reason.
    Abandon(String),
}

mod bench;
mod lifecycle;
mod queue;
mod results;
mod table;
mod workers;

pub use self::bench::bench_held_by;

#[cfg(test)]
pub(crate) mod tests;
