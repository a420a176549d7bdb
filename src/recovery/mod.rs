//! Auto-recovery: bring failed workers back, drain failing ones before they fail, and carry the
//! whole system through emergencies (ARCHITECTURE.md § Recovery path).
//!
//! # Planner decides, executor acts
//!
//! Recovery is split the way the Raft node and its server are. [`planner::Planner`] is pure: it
//! reads no clock, does no I/O, draws no random numbers and has no tokio in it. The leader's
//! recovery loop feeds it [`RecoveryEvent`]s with the instant they happened
//! ([`planner::Planner::on_event`]) and calls [`planner::Planner::tick`] at
//! [`planner::Planner::next_deadline`]; both return the [`Action`]s that are now due, in order.
//! The executor, the leader's recovery loop (`coordinator::recovery_loop`), performs
//! them: it proposes the commands (`SetWorkerStatus`, `RecordWorkerRecovery`,
//! `RecordSystemRecovery`; ARCHITECTURE.md § The one rule: every decision is a command in the
//! Raft log), closes sessions, runs restart commands with a timeout, holds and throttles dispatch, and reports what happened back as events
//! ([`RecoveryEvent::RestartFinished`], [`RecoveryEvent::WorkerHealthy`]). The planner's tests
//! run in logical time and assert the exact actions.
//!
//! # Leader only
//!
//! Only the leader runs recovery. The planner is soft state: a new leader builds one from the
//! applied state — [`strategy::StrategyStats`] from the `worker_recovery_history` rows
//! ([`strategy::parse_outcome`]), and a [`RecoveryEvent::WorkerFailed`] for each worker that is
//! `failed` — so a failover restarts in-flight recoveries at their next attempt rather than
//! losing them. A status change the planner asks for carries the `from` it believes current;
//! apply rejects a stale one (another loop got there first), which is harmless.
//!
//! # Worker recovery
//!
//! A failed worker gets up to `max_recovery_attempts` attempts. Each uses the next strategy of
//! its category's order ([`strategy`]): **reconnect** (close its session, wait
//! `reconnect_wait`), **restart** (the executor runs the worker's restart command and reports
//! its exit status), **quarantine** (no tasks; watched for `recovery_interval`). An attempt
//! succeeds when the worker registers again and heartbeats ([`RecoveryEvent::WorkerHealthy`])
//! before the attempt's window ends — for a quarantine, when it is back *and still healthy*
//! as the window ends. Otherwise the attempt failed (a restart command that exits non-zero fails
//! it at once) and the next one begins; after the last, the worker is `permanently_failed`.
//! Statuses: `failed → recovering` (reconnect, restart) or `→ quarantined`, and `→ healthy` or
//! `→ permanently_failed` at the end.
//!
//! Two rules keep a mass outage from becoming a storm: at most `max_concurrent_recoveries`
//! reconnects and restarts are in progress at once (quarantines only watch and take no place;
//! waiting workers start first-come first-served), and each attempt starts after a jittered
//! delay of `u × jitter × recovery_interval`, `u ∈ [0, 1)` a hash of (seed, worker, attempt) —
//! deterministic, spread, and the same on every run with the same seed. A worker that fails
//! again within `recovery_interval` of being brought back continues its previous recovery at the
//! next attempt instead of starting over, so a flapping worker escalates and ends.
//!
//! # Proactive recovery
//!
//! With `enable_proactive_recovery`, a healthy worker is drained — no new tasks, its running
//! ones finish — when it has [`planner::PlannerConfig::infra_fault_threshold`] infrastructure
//! faults within [`planner::PlannerConfig::infra_fault_window`] (3 in 10 minutes by default), or
//! when the health monitor reports its heartbeats erratic. It returns to `healthy` after a
//! `recovery_interval` with no new fault or erratic report; if it fails meanwhile, ordinary
//! recovery takes over.
//!
//! # System recovery
//!
//! A critical state starts an **episode**: at least half the fleet (and at least
//! [`planner::PlannerConfig::mass_failure_min_workers`]) failed within
//! [`planner::PlannerConfig::mass_failure_window`]; a coordinator storage error; or requeues
//! reaching [`planner::PlannerConfig::max_requeues_per_minute`]. The planner emits
//! [`SystemAction::HoldDispatch`], [`SystemAction::ReconcileLeases`],
//! [`SystemAction::RequeueOrphans`], [`SystemAction::ResetBreakers`] and
//! [`SystemAction::Snapshot`]; dispatch stays held until the system has been quiet for
//! `quiet_period` (and at least `min_hold`, at most `max_hold`), then
//! [`SystemAction::ResumeGradually`] gives a ramp of assignment rates and
//! [`SystemAction::EndEpisode`] closes the episode when the ramp is over; the executor writes
//! the `system_recovery_history` row and a Markdown report from its `details`. A new trigger
//! during the ramp holds dispatch again (a relapse, counted). The scheduler asks
//! [`planner::Planner::dispatch_allowance`] before each batch. Worker recovery goes on during
//! an episode under the same budget.
//!
//! # Learning
//!
//! [`strategy::StrategyStats`] turns history into per-(category, strategy) success rates that
//! reorder the defaults (Laplace smoothing, a minimum sample count; the formula is in
//! [`strategy`]). The planner updates them as attempts end, so a leader learns during its term
//! and the next leader reloads them from the table.
//!
//! # Everything is recorded
//!
//! Every attempt is an [`Action::Record`] (a `worker_recovery_history` row) whose `details` hold
//! the category, strategy, the order used with the rates and reason behind it, the failure
//! reason, timings in milliseconds (from the failure, waiting, the attempt's duration and
//! window), the restart command's exit status and output tail, the outcome and the policy in
//! force. The executor adds the leader term, the restart command line and wall-clock times.
//! Proactive drains are rows too (`proactive_drain`), as are workers that came back before an
//! attempt started (`self_recovered`); neither counts towards learning. Episodes end with
//! [`SystemAction::EndEpisode`].
//!
//! # Policy
//!
//! [`RecoveryPolicy`] is a plain value the planner is given and that can be swapped
//! ([`planner::Planner::set_policy`]); a running attempt keeps the window it started with, and
//! the next attempt uses the new policy. [`RecoveryPolicy::for_level`] gives the low / medium /
//! high levels that the system circuit breaker will choose between
//! (ARCHITECTURE.md § Circuit breakers).

pub mod breaker;
pub mod fleet;
pub mod pacing;
pub mod planner;
pub mod restart;
pub mod strategy;

use std::time::Duration;

use serde_json::{Value, json};

use crate::state::command::{FaultCategory, TaskId, WorkerId, WorkerStatus};

/// The longest duration a policy or planner setting may have (a week); keeps instant arithmetic
/// from overflowing.
pub const MAX_SETTING: Duration = Duration::from_secs(7 * 24 * 3600);

/// How hard recovery tries. Defaults, the coordinator's too (`config.rs`): 5 attempts, 60 s each,
/// proactive on.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveryPolicy {
    /// Attempts per failed worker before it is `permanently_failed`.
    pub max_recovery_attempts: u32,
    /// How long one restart or quarantine attempt may take to bring the worker back.
    pub recovery_interval: Duration,
    /// Drain workers whose faults climb or whose heartbeats turn erratic, before they fail.
    pub enable_proactive_recovery: bool,
    /// How long a reconnect attempt waits for the worker to register again.
    pub reconnect_wait: Duration,
    /// Reconnects and restarts in progress at once, across the fleet: a budget, so that a mass
    /// outage never becomes a storm of restarts.
    pub max_concurrent_recoveries: usize,
    /// Each attempt starts up to `jitter × recovery_interval` after it could (0 ≤ jitter ≤ 1),
    /// spread deterministically by the planner's seed.
    pub jitter: f64,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            max_recovery_attempts: 5,
            recovery_interval: Duration::from_secs(60),
            enable_proactive_recovery: true,
            reconnect_wait: Duration::from_secs(60),
            max_concurrent_recoveries: 4,
            jitter: 0.1,
        }
    }
}

/// The recovery levels the system circuit breaker picks (ARCHITECTURE.md § Circuit breakers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryLevel {
    /// Breaker closed: 3 attempts, 30 s.
    Low,
    /// Breaker half-open: 5 attempts, 15 s.
    Medium,
    /// Breaker open: 10 attempts, 5 s — kept from storming by the budget and the jitter.
    High,
}

impl RecoveryPolicy {
    /// The policy of a level: its attempts and interval (also the reconnect wait), the rest
    /// default.
    pub fn for_level(level: RecoveryLevel) -> Self {
        let (attempts, seconds) = match level {
            RecoveryLevel::Low => (3, 30),
            RecoveryLevel::Medium => (5, 15),
            RecoveryLevel::High => (10, 5),
        };
        RecoveryPolicy {
            max_recovery_attempts: attempts,
            recovery_interval: Duration::from_secs(seconds),
            reconnect_wait: Duration::from_secs(seconds),
            ..RecoveryPolicy::default()
        }
    }

    /// Refuses a policy the planner cannot follow.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (setting, value) in [
            ("recovery_interval", self.recovery_interval),
            ("reconnect_wait", self.reconnect_wait),
        ] {
            if value.is_zero() || value > MAX_SETTING {
                return Err(PolicyError::Duration { setting, value });
            }
        }
        if self.max_concurrent_recoveries == 0 {
            return Err(PolicyError::NoBudget);
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(PolicyError::Jitter { value: self.jitter });
        }
        Ok(())
    }

    /// The policy as it goes into `details`.
    pub fn details(&self) -> Value {
        json!({
            "max_recovery_attempts": self.max_recovery_attempts,
            "recovery_interval_ms": millis(self.recovery_interval),
            "reconnect_wait_ms": millis(self.reconnect_wait),
            "enable_proactive_recovery": self.enable_proactive_recovery,
            "max_concurrent_recoveries": self.max_concurrent_recoveries,
            "jitter": self.jitter,
        })
    }
}

/// Why a [`RecoveryPolicy`] or planner setting was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// A duration is zero or longer than [`MAX_SETTING`].
    #[error("recovery setting `{setting}` is {value:?}; it must be above zero and at most a week")]
    Duration {
        setting: &'static str,
        value: Duration,
    },
    /// No recovery could ever run.
    #[error("max_concurrent_recoveries is 0; at least one recovery must be allowed at a time")]
    NoBudget,
    /// The jitter fraction is outside `0..=1`.
    #[error("recovery jitter must be a fraction between 0 and 1, got {value}")]
    Jitter { value: f64 },
    /// A planner threshold that must be positive is zero.
    #[error("recovery setting `{setting}` is 0; it must be at least 1")]
    Zero { setting: &'static str },
}

/// What the leader tells the planner. Each happened at the `now` passed along with it.
#[derive(Clone, Debug, PartialEq)]
pub enum RecoveryEvent {
    /// The worker's `failed` status was committed (by the health monitor).
    WorkerFailed {
        worker: WorkerId,
        category: FaultCategory,
        reason: String,
    },
    /// The worker registered again and heartbeats.
    WorkerHealthy { worker: WorkerId },
    /// The restart command of `attempt` ended; `exit_code` is `None` when it was killed (its
    /// timeout) or could not be run.
    RestartFinished {
        worker: WorkerId,
        attempt: u32,
        exit_code: Option<i32>,
        output_tail: String,
    },
    /// An attempt of `task` on `worker` ended with an infrastructure fault (worker fault, lost
    /// lease, spawn error), of the category the worker observed (`resource_exhaustion` for a
    /// spawn refused for lack of memory, processes or descriptors; `storage` for a full or
    /// read-only disk; `crash` for its executor dying).
    InfraFault {
        worker: WorkerId,
        task: TaskId,
        category: FaultCategory,
    },
    /// The worker's new process says the previous one died without leaving (it found its own
    /// run marker): its fault was a crash, whatever the session's end looked like.
    WorkerCrashed { worker: WorkerId },
    /// The health monitor finds the worker's heartbeats erratic (phi or inter-arrival spread).
    WorkerErratic { worker: WorkerId, reason: String },
    /// The coordinator's own storage failed (a DuckDB write, a log append).
    StorageError { reason: String },
    /// A task held by `worker` was requeued: the infrastructure failure rate.
    TaskRequeued { worker: WorkerId },
    /// The fleet now: workers `healthy` out of `total` registered (not `left`).
    FleetSize { healthy: usize, total: usize },
    /// An operator asked to recover the worker at a level (`testfleet recovery
    /// recover-worker`); its `failed` status is committed.
    OperatorRecover {
        worker: WorkerId,
        level: RecoveryLevel,
    },
    /// An operator lifted the worker's quarantine or permanent failure (`testfleet recovery
    /// reset`): recovery forgets it.
    OperatorReset { worker: WorkerId },
    /// The worker left the fleet (an operator removed it, or it left on SIGTERM): recovery of
    /// it stops, and a recovery in progress is recorded as ended by the removal.
    WorkerLeft { worker: WorkerId },
    /// The system circuit breaker opened: the fleet's infrastructure fails too often for
    /// worker-by-worker recovery, so system recovery takes over (dispatch held, leases
    /// reconciled, a gradual resume) instead of tasks thrashing between the survivors.
    SystemBreakerOpened { reason: String },
}

/// What the executor must do, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Propose `SetWorkerStatus { worker, from, to, reason }`.
    SetStatus {
        worker: WorkerId,
        from: WorkerStatus,
        to: WorkerStatus,
        reason: String,
    },
    /// Close the worker's session (if it has one), so that it reconnects.
    CloseSession { worker: WorkerId },
    /// Fail the worker (its tasks requeued), as the health monitor would, with the category
    /// its own reports showed; recovery then follows that category's strategies.
    Fail {
        worker: WorkerId,
        category: FaultCategory,
        reason: String,
    },
    /// Run the worker's restart command with its timeout, then report
    /// [`RecoveryEvent::RestartFinished`] with the same `attempt`.
    RunRestart { worker: WorkerId, attempt: u32 },
    /// Propose `RecordWorkerRecovery`: one `worker_recovery_history` row.
    Record(WorkerRecoveryRecord),
    /// Stop giving the worker tasks and let its running ones finish (the status change comes as
    /// its own [`Action::SetStatus`]).
    Drain { worker: WorkerId, reason: String },
    /// A step of system recovery.
    System(SystemAction),
}

/// One `worker_recovery_history` row as the planner sees it; the executor adds the leader term
/// (and the restart command line) to `details` and the wall-clock `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRecoveryRecord {
    pub worker: WorkerId,
    /// 1-based attempt number; 0 for a proactive drain or a return before any attempt.
    pub attempt_number: u32,
    pub success: bool,
    /// The strategy name, or `proactive_drain` / `self_recovered`.
    pub recovery_type: String,
    pub error_message: Option<String>,
    pub details: Value,
}

/// A step of a system recovery episode.
#[derive(Clone, Debug, PartialEq)]
pub enum SystemAction {
    /// Commit no assignment until [`SystemAction::ResumeGradually`].
    HoldDispatch { reason: String },
    /// Compare every lease (assigned or running attempt) with what the workers report; end the
    /// ones no live worker holds.
    ReconcileLeases,
    /// Requeue tasks whose worker is gone.
    RequeueOrphans,
    /// Reset the circuit breakers to closed (nothing to do until breakers exist).
    ResetBreakers,
    /// Snapshot the state machine and purge the log behind it.
    Snapshot,
    /// Allow dispatch again at `assignments_per_second` from each `offset` after now; unlimited
    /// after the episode ends.
    ResumeGradually { ramp: Vec<(Duration, f64)> },
    /// The episode is over: write the `system_recovery_history` row and the report.
    EndEpisode {
        success: bool,
        affected_workers: u32,
        affected_tasks: u32,
        details: Value,
    },
}

/// Whole milliseconds, for `details`.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A duration for people: "3.2 s" from a second up, "250 ms" below.
fn human(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        format!("{:.1} s", duration.as_secs_f64())
    } else {
        format!("{} ms", duration.as_millis())
    }
}
