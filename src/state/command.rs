//! The [`Command`] catalogue: every change to replicated state, with its data.
//!
//! A command is proposed by the leader (or forwarded to it by a follower), appended to the
//! Raft log, and applied by [`super::machine::Machine`] on every node. Everything that apply
//! needs travels inside the command: timestamps are chosen by the proposer, never read from
//! the clock in apply. Commands are encoded with bincode 2 and outlive the binary that wrote
//! them, so **new variants go at the end and an existing variant's fields never change
//! meaning**; a change of meaning is a new variant.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Raft node id of a coordinator.
pub type NodeId = u64;

/// A worker's stable name (chosen by the worker, unique in the fleet).
pub type WorkerId = String;

/// Client-generated job id (a UUID in text form); makes submission idempotent.
pub type JobId = String;

/// Client-generated task id (a UUID in text form).
pub type TaskId = String;

/// Wall-clock time as microseconds since the Unix epoch, chosen by the proposer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time. Only proposers call this; apply never does.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }

    /// Microseconds since the epoch.
    pub fn micros(self) -> i64 {
        self.0
    }
}

/// Every state change of the system. ARCHITECTURE.md § Commands says who proposes each one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Changes nothing but `last_applied`; proposed by a new leader and by tests.
    Noop,
    /// A benchmark command: one row in `bench_log` (its log index and payload size), so a
    /// benchmark measures a real row write per command and a crash test can check that every
    /// acknowledged command is present exactly once. The payload sizes entries.
    Bench { payload: Vec<u8> },
    /// A node became leader for `term`; one row in `leader_transitions`.
    LeaderElected {
        node: NodeId,
        term: u64,
        at: Timestamp,
    },
    /// A worker opened a session: upsert it with status `healthy`.
    RegisterWorker {
        worker: WorkerId,
        host: String,
        address: String,
        /// A JSON object describing what the worker can do (validated in apply).
        capabilities_json: String,
        labels: BTreeMap<String, String>,
        at: Timestamp,
    },
    /// A leader loop decided a worker's status changed. Rejected when `from` is stale.
    SetWorkerStatus {
        worker: WorkerId,
        from: WorkerStatus,
        to: WorkerStatus,
        reason: String,
        at: Timestamp,
    },
    /// A job and its tasks, queued. A second submission of the same job id changes nothing
    /// and returns the first one's result.
    SubmitJob {
        job: JobId,
        name: String,
        tasks: Vec<TaskSpec>,
        at: Timestamp,
    },
    /// The scheduler's assignments of one tick; each item is accepted or rejected alone.
    AssignTasks {
        term: u64,
        at: Timestamp,
        assignments: Vec<Assignment>,
    },
    /// The worker started the attempt.
    TaskStarted {
        task: TaskId,
        attempt: u32,
        worker: WorkerId,
        at: Timestamp,
    },
    /// The worker's result for an attempt. A late or duplicate report is recorded as stale.
    /// `exit_code` is the exit code, or `-N` when signal N killed the command (`1..=64`; other
    /// negative values are rejected): see [`super::exit`].
    FinishTask {
        task: TaskId,
        attempt: u32,
        worker: WorkerId,
        outcome: Outcome,
        exit_code: Option<i32>,
        duration_ms: u64,
        output_tail: String,
        at: Timestamp,
    },
    /// Recovery ends the current attempt and queues the task again.
    RequeueTask {
        task: TaskId,
        attempt: u32,
        reason: String,
        category: FaultCategory,
        at: Timestamp,
    },
    /// Recovery gives up on a task: final `abandoned`.
    AbandonTask {
        task: TaskId,
        reason: String,
        at: Timestamp,
    },
    /// A client cancels every task of a job that is not final yet.
    CancelJob {
        job: JobId,
        reason: String,
        at: Timestamp,
    },
    /// A client cancels one task.
    CancelTask {
        task: TaskId,
        reason: String,
        at: Timestamp,
    },
    /// One attempt to bring a worker back; a row in `worker_recovery_history`.
    RecordWorkerRecovery {
        worker: WorkerId,
        attempt_number: u32,
        success: bool,
        recovery_type: String,
        error_message: Option<String>,
        details_json: String,
        at: Timestamp,
    },
    /// One recovery decision about a task; a row in `task_recovery_history`.
    RecordTaskRecovery {
        task: TaskId,
        worker: Option<WorkerId>,
        attempt_number: u32,
        success: bool,
        recovery_type: String,
        error_message: Option<String>,
        details_json: String,
        at: Timestamp,
    },
    /// One system-wide recovery episode; a row in `system_recovery_history`.
    RecordSystemRecovery {
        system_status: String,
        success: bool,
        affected_workers: u32,
        affected_tasks: u32,
        details_json: String,
        at: Timestamp,
    },
    /// A circuit breaker changed state. Rejected when `from` is stale.
    BreakerTransition {
        scope: String,
        from: BreakerState,
        to: BreakerState,
        reason: String,
        at: Timestamp,
    },
    /// A coordinator's own health, sent through the leader.
    HealthSample {
        node: NodeId,
        cpu: f64,
        mem_bytes: u64,
        disk_free_bytes: u64,
        net_errors: u64,
        error_rate: f64,
        at: Timestamp,
    },
    /// Several commands applied in one transaction, each with its own reply.
    Batch(Vec<Command>),
    /// A leader loop decided a worker has failed: its status becomes `failed` and every task
    /// it holds *when this entry applies* is dealt with in the same entry — requeued within
    /// its retry budget (`requeue`), or abandoned (auto-recovery disabled) — each with a
    /// `task_recovery_history` row. One entry, so no leader change can strand the tasks
    /// between the status change and the requeue, and no assignment can slip in between.
    /// Rejected when `from` is stale.
    FailWorker {
        worker: WorkerId,
        from: WorkerStatus,
        reason: String,
        /// Why the tasks lost their attempts (`connection`, `crash`, ...).
        category: FaultCategory,
        /// Requeue the held tasks; `false` abandons them.
        requeue: bool,
        /// A JSON object of the leader's facts (term, timings) copied into each history row's
        /// `details`, next to what apply decided for that task.
        details_json: String,
        at: Timestamp,
    },
    /// A replica-check marker (`testfleet cluster check`): changes no replicated row. Each
    /// node that applies it as a log entry of its own (not inside a `Batch`) digests its
    /// DuckDB tables as of this entry, for the client to compare across nodes.
    CheckReplicas {
        /// Chosen by the client (a UUID), to name the check.
        id: String,
        at: Timestamp,
    },
    /// A worker left on purpose (stopped with SIGTERM, or removed by an operator): its status
    /// becomes `left` and every task it still holds is queued again *without* using a retry —
    /// a departure is not a failure, and starts no recovery. (Appended last: bincode numbers
    /// the variants, so older log entries keep their meaning.)
    LeaveWorker {
        worker: WorkerId,
        reason: String,
        at: Timestamp,
    },
    /// An operator holds a worker out of scheduling (`drain`), or ends the hold. What it runs
    /// finishes; it is assigned nothing new. The hold is independent of the worker's health:
    /// recovery and re-registration keep it. Draining a drained worker changes nothing.
    DrainWorker {
        worker: WorkerId,
        drain: bool,
        reason: String,
        at: Timestamp,
    },
    /// An operator removes a worker from the fleet: its status becomes `left` (and its drain
    /// ends). Rejected while it holds tasks unless `force`, which queues them again without
    /// using a retry, as a departure does. The leader tells a connected worker to stop.
    RemoveWorker {
        worker: WorkerId,
        force: bool,
        reason: String,
        at: Timestamp,
    },
    /// An operator asks recovery to bring a worker back (`testfleet recovery recover-worker`): a
    /// `failed`, `permanently_failed` or `quarantined` worker becomes `failed`, and the leader
    /// starts a recovery at `level` (`low`, `medium` or `high`: that level's attempts and
    /// window). Rejected for a worker in any other status, with the reason.
    RecoverWorker {
        worker: WorkerId,
        level: String,
        reason: String,
        at: Timestamp,
    },
    /// An operator lifts a worker's quarantine or permanent failure (`testfleet recovery
    /// reset`): it becomes `to` — `healthy` when the leader holds a session with it, else
    /// `failed`, which its next hello turns `healthy`. Rejected for a worker in any other
    /// status.
    ResetWorker {
        worker: WorkerId,
        to: WorkerStatus,
        reason: String,
        at: Timestamp,
    },
    /// A worker's result for an attempt together with the tests it ran, read from the
    /// attempt's JUnit XML (`junit = "path"` in a plan): exactly `FinishTask`, and when the
    /// report is current one `test_results` row per test, in the same entry — so a result is
    /// never recorded without its tests, and a late or duplicate report (stale) records none.
    FinishTaskWithTests {
        task: TaskId,
        attempt: u32,
        worker: WorkerId,
        outcome: Outcome,
        exit_code: Option<i32>,
        duration_ms: u64,
        output_tail: String,
        at: Timestamp,
        tests: Vec<TestCase>,
    },
}

/// One test of an attempt, as its JUnit XML reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCase {
    /// `classname::name` (or `name` alone without a class): what `testfleet tests` names it by.
    pub id: String,
    pub classname: String,
    pub name: String,
    pub outcome: TestOutcome,
    pub duration_ms: u64,
    /// The failure's or skip's message, clipped; empty when it passed.
    pub message: String,
    /// It failed, then passed when run again within the attempt (a rerun plugin's report).
    pub flaky: bool,
}

impl Command {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Noop => "noop",
            Command::Bench { .. } => "bench",
            Command::LeaderElected { .. } => "leader_elected",
            Command::RegisterWorker { .. } => "register_worker",
            Command::SetWorkerStatus { .. } => "set_worker_status",
            Command::SubmitJob { .. } => "submit_job",
            Command::AssignTasks { .. } => "assign_tasks",
            Command::TaskStarted { .. } => "task_started",
            Command::FinishTask { .. } => "finish_task",
            Command::RequeueTask { .. } => "requeue_task",
            Command::AbandonTask { .. } => "abandon_task",
            Command::CancelJob { .. } => "cancel_job",
            Command::CancelTask { .. } => "cancel_task",
            Command::RecordWorkerRecovery { .. } => "record_worker_recovery",
            Command::RecordTaskRecovery { .. } => "record_task_recovery",
            Command::RecordSystemRecovery { .. } => "record_system_recovery",
            Command::BreakerTransition { .. } => "breaker_transition",
            Command::HealthSample { .. } => "health_sample",
            Command::Batch(_) => "batch",
            Command::FailWorker { .. } => "fail_worker",
            Command::CheckReplicas { .. } => "check_replicas",
            Command::LeaveWorker { .. } => "leave_worker",
            Command::DrainWorker { .. } => "drain_worker",
            Command::RemoveWorker { .. } => "remove_worker",
            Command::RecoverWorker { .. } => "recover_worker",
            Command::ResetWorker { .. } => "reset_worker",
            Command::FinishTaskWithTests { .. } => "finish_task_with_tests",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// A task as submitted: a test command and how it may be run and retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: TaskId,
    pub name: String,
    /// argv; `command[0]` is the program.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Working directory on the worker; the worker's own when `None`.
    pub cwd: Option<String>,
    pub timeout_ms: u64,
    /// Higher runs first.
    pub priority: i32,
    /// Labels a worker must carry (`os = linux`).
    pub labels: BTreeMap<String, String>,
    /// Capability expressions a worker must satisfy (`webgpu`, `gpu=discrete`).
    pub capabilities: Vec<String>,
    /// Infrastructure retries (worker lost, lease lost, spawn fault); exhausted → abandoned.
    pub max_retries: u32,
    /// Extra runs of a test that timed out, on another worker.
    pub timeout_retries: u32,
    /// Extra runs of a test that failed (for known-flaky tests); 0 means a failure is final.
    pub flaky_retries: u32,
}

impl TaskSpec {
    /// A task that runs `command`, with a plan's defaults for the rest: a 10-minute timeout,
    /// priority 0, 3 infrastructure retries, 1 timeout retry, no flaky retries, no environment,
    /// working directory or requirements. Set other fields with `..TaskSpec::new(...)`.
    pub fn new(id: impl Into<TaskId>, name: impl Into<String>, command: Vec<String>) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            name: name.into(),
            command,
            env: BTreeMap::new(),
            cwd: None,
            timeout_ms: 600_000,
            priority: 0,
            labels: BTreeMap::new(),
            capabilities: Vec::new(),
            max_retries: 3,
            timeout_retries: 1,
            flaky_retries: 0,
        }
    }
}

/// One scheduler decision: `task` runs as `attempt` on `worker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: TaskId,
    pub worker: WorkerId,
    pub attempt: u32,
}

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The snake_case name stored in DuckDB and shown to users.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// A worker's lifecycle (ARCHITECTURE.md § States).
    WorkerStatus {
        Healthy = "healthy",
        Suspect = "suspect",
        Failed = "failed",
        Recovering = "recovering",
        Quarantined = "quarantined",
        PermanentlyFailed = "permanently_failed",
        Draining = "draining",
        Left = "left",
    }
}

text_enum! {
    /// A task's lifecycle. `Queued`, `Assigned` and `Running` are in flight; the rest final.
    TaskStatus {
        Queued = "queued",
        Assigned = "assigned",
        Running = "running",
        Passed = "passed",
        Failed = "failed",
        TimedOut = "timed_out",
        Error = "error",
        Cancelled = "cancelled",
        Abandoned = "abandoned",
    }
}

impl TaskStatus {
    /// True when nothing can change the task any more.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            TaskStatus::Queued | TaskStatus::Assigned | TaskStatus::Running
        )
    }
}

text_enum! {
    /// A job is running until every task is final.
    JobStatus {
        Running = "running",
        Finished = "finished",
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// What a worker reports for an attempt.
    Outcome {
        /// The command exited 0.
        Passed = "passed",
        /// The command exited non-zero: a test result, not a fault.
        Failed = "failed",
        /// The command ran past its timeout and was killed.
        TimedOut = "timed_out",
        /// The command could not start because of the task (ENOENT, EACCES, bad cwd).
        Error = "error",
        /// The attempt failed because of the worker (EAGAIN, ENOMEM, executor crash).
        WorkerFault = "worker_fault",
    }
}

text_enum! {
    /// Why recovery took a task away from its attempt.
    FaultCategory {
        Connection = "connection",
        Crash = "crash",
        Hang = "hang",
        Timeout = "timeout",
        ResourceExhaustion = "resource_exhaustion",
        Storage = "storage",
        LeaseLost = "lease_lost",
    }
}

text_enum! {
    /// How one test ended (a JUnit `testcase`).
    TestOutcome {
        Passed = "passed",
        Failed = "failed",
        Error = "error",
        Skipped = "skipped",
    }
}

text_enum! {
    /// Circuit-breaker states (ARCHITECTURE.md § Circuit breakers).
    BreakerState {
        Closed = "closed",
        HalfOpen = "half_open",
        Open = "open",
        ForcedOpen = "forced_open",
        Disabled = "disabled",
    }
}

impl BreakerState {
    /// True when the breaker lets no call through: open, by itself or by an operator.
    pub fn blocks(self) -> bool {
        matches!(self, BreakerState::Open | BreakerState::ForcedOpen)
    }
}

/// The scope of the fleet-wide breaker that picks the recovery level.
pub const SYSTEM_SCOPE: &str = "system";

/// Worker breakers' scopes are this prefix and the worker's id.
pub const WORKER_SCOPE: &str = "worker:";

/// The scope of `worker`'s breaker.
pub fn worker_scope(worker: &str) -> String {
    format!("{WORKER_SCOPE}{worker}")
}
