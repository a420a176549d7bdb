//! The rows of the in-memory view and what applying a command produces.
//!
//! [`super::machine::Machine`] holds workers, jobs and tasks (with their current
//! [`Attempt`]); applying a command returns a [`Reply`] to its proposer, notes the
//! [`Changes`] the store must write (including [`HistoryRow`]s whose ids come from the
//! replicated [`Counters`]), and emits [`Event`]s for the leader's soft state.
//!
//! A [`Task`] is kept for every task ever submitted, so it is compact: its spec's text in one
//! shared allocation ([`StoredSpec`]), its job id shared with the job's other tasks, its
//! attempt boxed (absent until the task first runs), its reason a boxed `str`, its retry
//! counters 16 bits and its spec's 8, its finish time one word (136 bytes in all).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::command::{
    BreakerState, JobId, JobStatus, NodeId, Outcome, TaskId, TaskStatus, Timestamp, WorkerId,
    WorkerStatus,
};

mod spec;

pub use spec::StoredSpec;

/// What applying one command did, returned to its proposer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The command took effect.
    Applied,
    /// The command was refused; nothing changed. Deterministic on every node.
    Rejected { reason: String },
    /// A result that arrived for an attempt that is no longer current; recorded, no effect.
    Stale { reason: String },
    /// A job was queued (or had been queued by an earlier submission of the same id).
    JobAccepted {
        job: JobId,
        tasks: u32,
        duplicate: bool,
    },
    /// The task command took effect and left the task in this status.
    Task { status: TaskStatus },
    /// A history row was written with this id.
    Recorded { id: i64 },
    /// One reply per item of a `Batch` or per assignment of `AssignTasks`.
    Many(Vec<Reply>),
}

impl Reply {
    pub(crate) fn rejected(reason: impl Into<String>) -> Reply {
        Reply::Rejected {
            reason: reason.into(),
        }
    }

    /// True unless the command (or, for `Many`, every item) was rejected.
    pub fn is_rejected(&self) -> bool {
        match self {
            Reply::Rejected { .. } => true,
            Reply::Many(items) => !items.is_empty() && items.iter().all(Reply::is_rejected),
            _ => false,
        }
    }
}

/// A worker as the state machine knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Worker {
    pub id: WorkerId,
    pub host: String,
    pub address: String,
    pub status: WorkerStatus,
    pub capabilities_json: String,
    pub labels: BTreeMap<String, String>,
    pub registered_at: Timestamp,
    pub status_changed_at: Timestamp,
    pub status_reason: String,
    /// Set while an operator holds the worker out of scheduling (`testfleet workers drain`):
    /// orthogonal to its health, so neither recovery nor a reconnect ends it — only
    /// `workers undrain` or `workers rm` does.
    pub drain: Option<OperatorDrain>,
}

/// An operator's hold on a worker: it gets no new work; what it runs finishes.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorDrain {
    pub at: Timestamp,
    pub reason: String,
}

impl Worker {
    /// True when the scheduler may give it work: healthy and not drained by an operator.
    pub fn accepts_work(&self) -> bool {
        self.status == WorkerStatus::Healthy && self.drain.is_none()
    }
}

/// A job: a named group of tasks submitted together.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub status: JobStatus,
    pub submitted_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Its tasks in submission order, as slots of the machine's task table
    /// ([`super::machine::Machine::task_at`]).
    pub tasks: Vec<u32>,
    /// Tasks not final yet; the job finishes when this reaches zero.
    pub open_tasks: u32,
}

/// One attempt of a task: a row of `task_attempts`.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub number: u32,
    pub worker: WorkerId,
    pub term: u64,
    pub assigned_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// `passed`, `failed`, …, or `requeued`, `abandoned`, `cancelled` when it was ended for it.
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    pub output_tail: Option<String>,
}

/// A task and where it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub spec: StoredSpec,
    /// The job's id, one allocation shared by all its tasks.
    pub job: Arc<str>,
    /// Submission order across the whole system (a replicated counter).
    pub seq: i64,
    pub status: TaskStatus,
    /// The current attempt number; 0 before the first assignment.
    pub attempt: u32,
    /// The current (or last) attempt; boxed, as most tasks in the state never ran or ended.
    pub current: Option<Box<Attempt>>,
    /// Retries used of each kind; 16 bits, as apply keeps every kind at most
    /// `limits::MAX_RETRIES`.
    pub infra_retries_used: u16,
    pub timeout_retries_used: u16,
    pub flaky_retries_used: u16,
    /// Queued again after an attempt ended without a final result; runs ahead of never-run
    /// tasks of its priority.
    pub requeued: bool,
    pub submitted_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: MaybeTime,
    /// Why the task is where it is (requeue reason, abandon reason, cancel reason).
    pub reason: Option<Box<str>>,
}

impl Task {
    /// A task just submitted: queued, never run.
    pub fn queued(spec: StoredSpec, job: Arc<str>, seq: i64, at: Timestamp) -> Task {
        Task {
            spec,
            job,
            seq,
            status: TaskStatus::Queued,
            attempt: 0,
            current: None,
            infra_retries_used: 0,
            timeout_retries_used: 0,
            flaky_retries_used: 0,
            requeued: false,
            submitted_at: at,
            updated_at: at,
            finished_at: MaybeTime::NONE,
            reason: None,
        }
    }

    /// The task's id.
    pub fn id(&self) -> &str {
        self.spec.id()
    }

    /// The worker holding the current attempt, if the task is assigned or running.
    pub fn holder(&self) -> Option<&WorkerId> {
        match self.status {
            TaskStatus::Assigned | TaskStatus::Running => self.current.as_ref().map(|a| &a.worker),
            _ => None,
        }
    }
}

/// An optional time in one word, for records kept for every task: `None` is `i64::MIN`,
/// which no applied time is (apply accepts times from the Unix epoch on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaybeTime(i64);

impl MaybeTime {
    pub const NONE: MaybeTime = MaybeTime(i64::MIN);

    pub fn get(self) -> Option<Timestamp> {
        (self != MaybeTime::NONE).then_some(Timestamp(self.0))
    }
}

impl From<Option<Timestamp>> for MaybeTime {
    fn from(at: Option<Timestamp>) -> MaybeTime {
        at.map_or(MaybeTime::NONE, |t| MaybeTime(t.0))
    }
}

/// Rows appended to history tables; ids come from [`Counters`].
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryRow {
    /// One test of an attempt (`test_results`).
    TestResult {
        id: i64,
        task: TaskId,
        attempt: u32,
        worker: WorkerId,
        at: Timestamp,
        test: crate::state::command::TestCase,
    },
    LeaderTransition {
        id: i64,
        term: u64,
        leader: NodeId,
        at: Timestamp,
    },
    BreakerTransition {
        id: i64,
        scope: String,
        from: BreakerState,
        to: BreakerState,
        reason: String,
        at: Timestamp,
    },
    HealthSample {
        id: i64,
        node: NodeId,
        cpu: f64,
        mem_bytes: u64,
        disk_free_bytes: u64,
        net_errors: u64,
        error_rate: f64,
        at: Timestamp,
    },
    WorkerRecovery {
        id: i64,
        worker: WorkerId,
        at: Timestamp,
        attempt_number: u32,
        success: bool,
        recovery_type: String,
        error_message: Option<String>,
        details_json: String,
    },
    TaskRecovery {
        id: i64,
        task: TaskId,
        worker: Option<WorkerId>,
        at: Timestamp,
        attempt_number: u32,
        success: bool,
        recovery_type: String,
        error_message: Option<String>,
        details_json: String,
    },
    SystemRecovery {
        id: i64,
        at: Timestamp,
        system_status: String,
        success: bool,
        affected_workers: u32,
        affected_tasks: u32,
        details_json: String,
    },
    /// A `Bench` command was applied at this log index (so a crash test can tell that every
    /// acknowledged command is present exactly once).
    Bench { log_index: u64, payload_bytes: u64 },
    StaleResult {
        id: i64,
        task: TaskId,
        attempt: u32,
        worker: WorkerId,
        outcome: Outcome,
        exit_code: Option<i32>,
        reason: String,
        at: Timestamp,
    },
}

/// The replicated row-id counters: the next id of each history table. Assigned in apply,
/// so every replica gives a row the same id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub leader_transitions: i64,
    pub breaker_transitions: i64,
    pub health_samples: i64,
    pub worker_recovery: i64,
    pub task_recovery: i64,
    pub system_recovery: i64,
    pub stale_results: i64,
    pub test_results: i64,
    /// Submission order of tasks.
    pub task_seq: i64,
}

/// What changed since the last [`super::machine::Machine::take_changes`]: keys of rows to upsert, rows to
/// append, rows to delete.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub workers: BTreeSet<WorkerId>,
    pub jobs: BTreeSet<JobId>,
    /// Slots of the machine's task table ([`super::machine::Machine::task_at`]): a slot
    /// never changes task while the machine lives, and a machine rebuilt from storage starts
    /// with no changes.
    pub tasks: BTreeSet<u32>,
    /// Attempt rows as they were after their last change, by (task, attempt number). The
    /// row is copied when it changes, not read back at flush time: by then the task may be
    /// on its next attempt, and the ended one's final row must still be written whatever
    /// the flush boundaries.
    pub attempts: BTreeMap<(TaskId, u32), Attempt>,
    /// The keys of `attempts` whose attempt was created since these changes began: DuckDB
    /// has no row of theirs yet (an attempt's number is never used twice for a task), so the
    /// store appends them rather than merging them.
    pub new_attempts: BTreeSet<(TaskId, u32)>,
    pub history: Vec<HistoryRow>,
    pub deleted_health_samples: Vec<i64>,
}

impl Changes {
    /// Adds `other`'s changes to these (later changes of the same rows collapse into one).
    pub fn absorb(&mut self, other: Changes) {
        self.workers.extend(other.workers);
        self.jobs.extend(other.jobs);
        self.tasks.extend(other.tasks);
        self.attempts.extend(other.attempts);
        self.new_attempts.extend(other.new_attempts);
        self.history.extend(other.history);
        self.deleted_health_samples
            .extend(other.deleted_health_samples);
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
            && self.jobs.is_empty()
            && self.tasks.is_empty()
            && self.attempts.is_empty()
            && self.history.is_empty()
            && self.deleted_health_samples.is_empty()
    }
}

/// What apply did that the leader's soft state (scheduler, sessions) must follow. Events
/// change nothing replicated; followers drop them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The task is (again) waiting for a worker.
    Queued { task: TaskId },
    /// The task's attempt was committed to a worker.
    Assigned {
        task: TaskId,
        worker: WorkerId,
        attempt: u32,
    },
    /// The worker no longer holds the task's attempt (requeued or final).
    Released {
        task: TaskId,
        worker: WorkerId,
        attempt: u32,
    },
    /// The task is final.
    Final { task: TaskId, status: TaskStatus },
    /// A worker registered or changed status.
    Worker {
        worker: WorkerId,
        status: WorkerStatus,
    },
    /// A circuit breaker changed state (`scope` is `system` or `worker:<id>`).
    Breaker {
        scope: String,
        state: BreakerState,
        since: Timestamp,
    },
}
