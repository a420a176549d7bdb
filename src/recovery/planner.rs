//! The recovery [`Planner`]: events and `now` in, [`Action`]s out. The rules are in the
//! [module docs](super); the thresholds are the fields of [`PlannerConfig`].
//!
//! # What the planner assumes about statuses
//!
//! Each [`Action::SetStatus`] carries the `from` the planner believes is committed. It follows
//! the commands other loops propose: [`RecoveryEvent::WorkerFailed`] comes after the health
//! monitor failed the worker (`failed`; a draining worker stays `draining`, which the monitor
//! does not fail), and [`RecoveryEvent::WorkerHealthy`] after the worker registered again
//! (`RegisterWorker` makes it `healthy`). So a reconnect or restart that succeeds needs no
//! status change, and a quarantined worker that comes back is put back into `quarantined`
//! until its window ends. If the belief is wrong, apply rejects the change as stale.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::strategy::{Plan, Strategy, StrategyStats};
use super::{
    Action, MAX_SETTING, PolicyError, RecoveryEvent, RecoveryPolicy, SystemAction,
    WorkerRecoveryRecord, human, millis,
};
use crate::state::command::{FaultCategory, WorkerId, WorkerStatus};

/// Requeues are counted over this window for [`PlannerConfig::max_requeues_per_minute`].
const REQUEUE_WINDOW: Duration = Duration::from_secs(60);

/// The planner's fixed thresholds: what counts as failing, critical, and how to come back.
/// The [`RecoveryPolicy`] is the part a circuit breaker swaps; these stay.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannerConfig {
    /// Seeds the attempt jitter; the same seed gives the same start times.
    pub seed: u64,
    /// Infrastructure faults within `infra_fault_window` that drain a worker (3).
    pub infra_fault_threshold: usize,
    /// The window of `infra_fault_threshold` (10 minutes).
    pub infra_fault_window: Duration,
    /// Worker failures are counted over this window for a mass failure (60 s).
    pub mass_failure_window: Duration,
    /// The fraction of the fleet whose failure within the window is critical (0.5).
    pub mass_failure_fraction: f64,
    /// ...but never fewer workers than this (2), so one failure in a fleet of two is not an
    /// emergency.
    pub mass_failure_min_workers: usize,
    /// Requeues within a minute that mean the infrastructure failure rate exploded (100).
    pub max_requeues_per_minute: usize,
    /// Dispatch is held at least this long once an episode starts (5 s).
    pub min_hold: Duration,
    /// ...and until nothing critical has happened for this long (10 s)...
    pub quiet_period: Duration,
    /// ...but never longer than this (2 minutes): a job must finish on the survivors.
    pub max_hold: Duration,
    /// The resume ramp: from each offset, assignments per second *per healthy worker* (at
    /// least 1 per second in all). The first offset must be zero.
    pub ramp: Vec<(Duration, f64)>,
    /// Dispatch is unlimited and the episode ends this long after resuming (15 s).
    pub ramp_length: Duration,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            seed: 0,
            infra_fault_threshold: 3,
            infra_fault_window: Duration::from_secs(600),
            mass_failure_window: Duration::from_secs(60),
            mass_failure_fraction: 0.5,
            mass_failure_min_workers: 2,
            max_requeues_per_minute: 100,
            min_hold: Duration::from_secs(5),
            quiet_period: Duration::from_secs(10),
            max_hold: Duration::from_secs(120),
            ramp: vec![
                (Duration::ZERO, 0.2),
                (Duration::from_secs(5), 1.0),
                (Duration::from_secs(10), 4.0),
            ],
            ramp_length: Duration::from_secs(15),
        }
    }
}

impl PlannerConfig {
    /// Refuses thresholds the planner cannot work with.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (setting, value) in [
            ("infra_fault_window", self.infra_fault_window),
            ("mass_failure_window", self.mass_failure_window),
            ("min_hold", self.min_hold),
            ("quiet_period", self.quiet_period),
            ("max_hold", self.max_hold),
            ("ramp_length", self.ramp_length),
        ] {
            if value.is_zero() || value > MAX_SETTING {
                return Err(PolicyError::Duration { setting, value });
            }
        }
        for (setting, value) in [
            ("infra_fault_threshold", self.infra_fault_threshold),
            ("mass_failure_min_workers", self.mass_failure_min_workers),
            ("max_requeues_per_minute", self.max_requeues_per_minute),
        ] {
            if value == 0 {
                return Err(PolicyError::Zero { setting });
            }
        }
        let fraction_ok = self.mass_failure_fraction > 0.0 && self.mass_failure_fraction <= 1.0;
        let ramp_ok = (self.ramp.first()).is_none_or(|&(offset, _)| offset.is_zero())
            && self.ramp.windows(2).all(|pair| pair[0].0 < pair[1].0)
            && (self.ramp.iter()).all(|&(_, rate)| rate.is_finite() && rate >= 0.0);
        if !fraction_ok || !ramp_ok {
            return Err(PolicyError::Zero {
                setting: if fraction_ok {
                    "ramp"
                } else {
                    "mass_failure_fraction"
                },
            });
        }
        Ok(())
    }
}

/// The recovery planner of one leadership term (see the [module docs](super)).
#[derive(Clone, Debug)]
pub struct Planner {
    policy: RecoveryPolicy,
    config: PlannerConfig,
    stats: StrategyStats,
    /// Failed workers being recovered. Ordered, so that runs reproduce.
    cases: BTreeMap<WorkerId, Case>,
    /// Workers brought back, with when: a failure within `recovery_interval` continues the case.
    recovered: BTreeMap<WorkerId, (Instant, Case)>,
    /// Workers drained proactively.
    drains: BTreeMap<WorkerId, DrainHold>,
    /// Recent infrastructure faults per worker, oldest first.
    infra_faults: BTreeMap<WorkerId, VecDeque<Instant>>,
    /// Worker failures within `mass_failure_window` not yet consumed by an episode.
    recent_failures: VecDeque<(Instant, WorkerId)>,
    /// Requeues within the last minute not yet consumed by an episode.
    recent_requeues: VecDeque<Instant>,
    /// The last [`RecoveryEvent::FleetSize`]: (healthy, total).
    fleet: Option<(usize, usize)>,
    episode: Option<Episode>,
}

/// The recovery of one failed worker.
#[derive(Clone, Debug)]
struct Case {
    category: FaultCategory,
    /// Why the worker failed, from [`RecoveryEvent::WorkerFailed`].
    reason: String,
    failed_at: Instant,
    /// The status the planner believes is committed.
    status: WorkerStatus,
    plan: Plan,
    /// Attempts started so far.
    attempts: u32,
    phase: Phase,
}

#[derive(Clone, Debug)]
enum Phase {
    /// The next attempt may start at `ready_at` (jitter), when the budget allows.
    Waiting {
        ready_at: Instant,
        since: Instant,
    },
    Running(Attempt),
}

#[derive(Clone, Debug)]
struct Attempt {
    number: u32,
    strategy: Strategy,
    started_at: Instant,
    /// From the moment it could have started (jitter and budget included).
    waited: Duration,
    /// The attempt fails if the worker is not back (and, for a quarantine, still healthy) by
    /// then. Fixed when the attempt starts: a policy swap does not move it.
    deadline: Instant,
    /// When the worker came back during this attempt.
    healthy_at: Option<Instant>,
    restart: Option<RestartResult>,
}

#[derive(Clone, Debug)]
struct RestartResult {
    exit_code: Option<i32>,
    output_tail: String,
    finished_at: Instant,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ended {
    Recovered,
    NotBack,
    RestartFailed,
}

#[derive(Clone, Debug)]
struct DrainHold {
    /// The last fault or erratic report; the worker returns a `recovery_interval` after it.
    last_signal: Instant,
    since: Instant,
}

/// A system recovery episode.
#[derive(Clone, Debug)]
struct Episode {
    entered_at: Instant,
    /// Start of the current hold (the episode's start, or its last relapse).
    held_since: Instant,
    /// The last critical signal; dispatch resumes `quiet_period` after it.
    last_signal: Instant,
    triggers: Vec<(Instant, String)>,
    /// When dispatch resumed and the ramp given, once it has.
    ramp: Option<(Instant, Vec<(Duration, f64)>)>,
    relapses: u32,
    /// Some hold ended at `max_hold` rather than by going quiet.
    forced: bool,
    held_for: Duration,
    affected_workers: BTreeSet<WorkerId>,
    affected_tasks: u32,
    storage_errors: u32,
}

impl Planner {
    /// A planner with no failed workers, or the reason a setting is refused. `stats` is what
    /// history taught (empty for a fresh system).
    pub fn new(
        policy: RecoveryPolicy,
        config: PlannerConfig,
        stats: StrategyStats,
    ) -> Result<Planner, PolicyError> {
        policy.validate()?;
        config.validate()?;
        Ok(Planner {
            policy,
            config,
            stats,
            cases: BTreeMap::new(),
            recovered: BTreeMap::new(),
            drains: BTreeMap::new(),
            infra_faults: BTreeMap::new(),
            recent_failures: VecDeque::new(),
            recent_requeues: VecDeque::new(),
            fleet: None,
            episode: None,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &RecoveryPolicy {
        &self.policy
    }

    /// Swaps the policy. Running attempts keep their windows; the next attempt, its jitter
    /// and the attempt limit checked when an attempt ends use the new one.
    pub fn set_policy(&mut self, policy: RecoveryPolicy) -> Result<(), PolicyError> {
        policy.validate()?;
        self.policy = policy;
        Ok(())
    }

    /// The thresholds.
    pub fn config(&self) -> &PlannerConfig {
        &self.config
    }

    /// What has been learned so far, including this term's attempts.
    pub fn stats(&self) -> &StrategyStats {
        &self.stats
    }

    /// Handles `event`, which happened at `now`, and returns what is due: its consequences,
    /// plus anything [`Planner::tick`] would have done at `now`.
    pub fn on_event(&mut self, now: Instant, event: RecoveryEvent) -> Vec<Action> {
        let mut out = Vec::new();
        // Deadlines that have passed count before the event: a worker back after its window
        // is too late for that attempt.
        self.advance(now, &mut out);
        match event {
            RecoveryEvent::WorkerFailed {
                worker,
                category,
                reason,
            } => self.worker_failed(now, worker, category, reason, &mut out),
            RecoveryEvent::WorkerHealthy { worker } => self.worker_healthy(now, &worker, &mut out),
            RecoveryEvent::RestartFinished {
                worker,
                attempt,
                exit_code,
                output_tail,
            } => {
                let result = RestartResult {
                    exit_code,
                    output_tail,
                    finished_at: now,
                };
                self.restart_finished(now, &worker, attempt, result, &mut out);
            }
            RecoveryEvent::InfraFault { worker, task } => {
                self.infra_fault(now, worker, &task, &mut out)
            }
            RecoveryEvent::WorkerErratic { worker, reason } => self.drain(
                now,
                worker,
                format!("erratic heartbeats: {reason}"),
                &mut out,
            ),
            RecoveryEvent::StorageError { reason } => {
                self.trigger(now, format!("storage error: {reason}"), &mut out);
                if let Some(episode) = &mut self.episode {
                    episode.storage_errors += 1;
                }
            }
            RecoveryEvent::TaskRequeued { worker: _ } => self.task_requeued(now, &mut out),
            RecoveryEvent::FleetSize { healthy, total } => {
                self.fleet = Some((healthy, total));
                self.check_mass_failure(now, &mut out);
            }
        }
        self.advance(now, &mut out);
        out
    }

    /// Does what is due at `now`: attempts whose window ended, attempts that may start, drains
    /// that end, and the steps of a system recovery episode.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.advance(now, &mut out);
        out
    }

    /// When [`Planner::tick`] next has something to do if no event comes first.
    pub fn next_deadline(&self) -> Option<Instant> {
        let startable = self.active_recoveries() < self.policy.max_concurrent_recoveries;
        let cases = self.cases.values().filter_map(|case| match &case.phase {
            Phase::Running(attempt) => Some(attempt.deadline),
            Phase::Waiting { ready_at, .. } => {
                let strategy = case.plan.strategy_for(case.attempts + 1);
                (startable || !strategy.is_active()).then_some(*ready_at)
            }
        });
        let interval = self.policy.recovery_interval;
        let drains = self.drains.values().map(|hold| hold.last_signal + interval);
        let episode = self.episode.as_ref().map(|episode| match &episode.ramp {
            None => self.resume_at(episode).0,
            Some((resumed_at, _)) => *resumed_at + self.config.ramp_length,
        });
        cases.chain(drains).chain(episode).min()
    }

    /// Whether a system recovery episode is under way.
    pub fn in_episode(&self) -> bool {
        self.episode.is_some()
    }

    /// How fast the scheduler may commit assignments at `now`: `None` = no limit, `Some(0.0)`
    /// while dispatch is held, the ramp's rate while it resumes.
    pub fn dispatch_allowance(&self, now: Instant) -> Option<f64> {
        let episode = self.episode.as_ref()?;
        let Some((resumed_at, ramp)) = &episode.ramp else {
            return Some(0.0);
        };
        let offset = now.saturating_duration_since(*resumed_at);
        if offset >= self.config.ramp_length {
            return None;
        }
        let step = ramp.iter().rev().find(|(from, _)| *from <= offset);
        Some(step.map_or(0.0, |&(_, rate)| rate))
    }

    /// Reconnects and restarts in progress (what `max_concurrent_recoveries` limits).
    pub fn active_recoveries(&self) -> usize {
        (self.cases.values())
            .filter(|case| match &case.phase {
                Phase::Running(a) => a.strategy.is_active() && a.healthy_at.is_none(),
                Phase::Waiting { .. } => false,
            })
            .count()
    }

    /// The number and strategy of the attempt running for `worker`, if one is.
    pub fn attempt(&self, worker: &str) -> Option<(u32, Strategy)> {
        match &self.cases.get(worker)?.phase {
            Phase::Running(a) => Some((a.number, a.strategy)),
            Phase::Waiting { .. } => None,
        }
    }

    /// Whether `worker` is being recovered (an attempt running or waiting).
    pub fn is_recovering(&self, worker: &str) -> bool {
        self.cases.contains_key(worker)
    }

    /// Whether `worker` is drained proactively.
    pub fn is_draining(&self, worker: &str) -> bool {
        self.drains.contains_key(worker)
    }

    fn advance(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.expire_attempts(now, out);
        self.start_ready(now, out);
        self.end_drains(now, out);
        self.step_episode(now, out);
        let interval = self.policy.recovery_interval;
        self.recovered.retain(|_, (at, _)| *at + interval > now);
    }

    // --- Worker recovery -------------------------------------------------------------------

    fn worker_failed(
        &mut self,
        now: Instant,
        worker: WorkerId,
        category: FaultCategory,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        self.note_failure(now, &worker, out);
        let status = match self.drains.remove(&worker) {
            Some(_) => WorkerStatus::Draining,
            None => WorkerStatus::Failed,
        };
        if let Some(case) = self.cases.get_mut(&worker) {
            let Phase::Running(attempt) = &mut case.phase else {
                return; // already failed, waiting for its next attempt
            };
            match (attempt.strategy, attempt.healthy_at) {
                (Strategy::Restart, Some(_)) => {
                    // Back, then down again before the restart reported: the attempt did
                    // bring it back; record that, then continue below.
                    self.conclude(now, &worker, Ended::Recovered, out);
                }
                (Strategy::Quarantine, Some(_)) => {
                    attempt.healthy_at = None; // failed its probation; the window goes on
                    return;
                }
                _ => return,
            }
        }
        let case = match self.recovered.remove(&worker) {
            Some((at, mut case)) if now < at + self.policy.recovery_interval => {
                case.reason = format!("{reason} (again, {} after recovering)", human(now - at));
                case
            }
            _ => Case {
                category,
                reason,
                failed_at: now,
                status,
                plan: self.stats.plan(category),
                attempts: 0,
                phase: Phase::Waiting {
                    ready_at: now,
                    since: now,
                },
            },
        };
        let mut case = Case { status, ..case };
        if case.attempts >= self.policy.max_recovery_attempts {
            out.push(Action::SetStatus {
                worker,
                from: status,
                to: WorkerStatus::PermanentlyFailed,
                reason: format!(
                    "failed again after {} recovery attempts (max {})",
                    case.attempts, self.policy.max_recovery_attempts
                ),
            });
            return;
        }
        case.phase = Phase::Waiting {
            ready_at: now + self.jitter(&worker, case.attempts + 1),
            since: now,
        };
        self.cases.insert(worker, case);
    }

    fn worker_healthy(&mut self, now: Instant, worker: &str, out: &mut Vec<Action>) {
        let Some(case) = self.cases.get_mut(worker) else {
            return;
        };
        case.status = WorkerStatus::Healthy; // it registered again
        let Phase::Running(attempt) = &mut case.phase else {
            return self.self_recovered(now, worker, out);
        };
        attempt.healthy_at.get_or_insert(now);
        match attempt.strategy {
            Strategy::Reconnect => self.conclude(now, worker, Ended::Recovered, out),
            Strategy::Restart if attempt.restart.is_some() => {
                self.conclude(now, worker, Ended::Recovered, out)
            }
            Strategy::Restart => {} // the row waits for the command's exit status
            Strategy::Quarantine => {
                let until = attempt.deadline - now;
                case.status = WorkerStatus::Quarantined;
                out.push(Action::SetStatus {
                    worker: worker.to_string(),
                    from: WorkerStatus::Healthy,
                    to: WorkerStatus::Quarantined,
                    reason: format!(
                        "back during quarantine attempt {}; no tasks for another {} to see \
                         that it stays healthy",
                        attempt.number,
                        human(until)
                    ),
                });
            }
        }
    }

    /// The worker came back while waiting for an attempt: no strategy gets the credit.
    fn self_recovered(&mut self, now: Instant, worker: &str, out: &mut Vec<Action>) {
        let Some(case) = self.cases.remove(worker) else {
            return;
        };
        let details = json!({
            "category": case.category.as_str(),
            "outcome": "self_recovered",
            "failure_reason": case.reason,
            "attempts_made": case.attempts,
            "timings": { "since_failure_ms": millis(now - case.failed_at) },
            "policy": self.policy.details(),
        });
        out.push(Action::Record(WorkerRecoveryRecord {
            worker: worker.to_string(),
            attempt_number: case.attempts,
            success: true,
            recovery_type: "self_recovered".to_string(),
            error_message: None,
            details,
        }));
        self.recovered.insert(worker.to_string(), (now, case));
    }

    fn restart_finished(
        &mut self,
        now: Instant,
        worker: &str,
        number: u32,
        result: RestartResult,
        out: &mut Vec<Action>,
    ) {
        let Some(Phase::Running(attempt)) = self.cases.get_mut(worker).map(|c| &mut c.phase) else {
            return;
        };
        if attempt.number != number
            || attempt.strategy != Strategy::Restart
            || attempt.restart.is_some()
        {
            return; // a stale report
        }
        let failed = result.exit_code != Some(0);
        attempt.restart = Some(result);
        if attempt.healthy_at.is_some() {
            self.conclude(now, worker, Ended::Recovered, out);
        } else if failed {
            self.conclude(now, worker, Ended::RestartFailed, out);
        }
    }

    fn expire_attempts(&mut self, now: Instant, out: &mut Vec<Action>) {
        let due: Vec<(WorkerId, Instant, bool)> = (self.cases.iter())
            .filter_map(|(worker, case)| match &case.phase {
                Phase::Running(a) if a.deadline <= now => {
                    Some((worker.clone(), a.deadline, a.healthy_at.is_some()))
                }
                _ => None,
            })
            .collect();
        for (worker, deadline, healthy) in due {
            let ended = if healthy {
                Ended::Recovered
            } else {
                Ended::NotBack
            };
            self.conclude(deadline, &worker, ended, out);
        }
    }

    fn start_ready(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut ready: Vec<(Instant, Instant, WorkerId)> = (self.cases.iter())
            .filter_map(|(worker, case)| match case.phase {
                Phase::Waiting { ready_at, .. } if ready_at <= now => {
                    Some((ready_at, case.failed_at, worker.clone()))
                }
                _ => None,
            })
            .collect();
        ready.sort();
        let mut active = self.active_recoveries();
        for (_, _, worker) in ready {
            let strategy = {
                let case = &self.cases[&worker];
                case.plan.strategy_for(case.attempts + 1)
            };
            if strategy.is_active() {
                if active >= self.policy.max_concurrent_recoveries {
                    continue;
                }
                active += 1;
            }
            self.start_attempt(now, &worker, strategy, out);
        }
    }

    fn start_attempt(
        &mut self,
        now: Instant,
        worker: &str,
        strategy: Strategy,
        out: &mut Vec<Action>,
    ) {
        let policy = &self.policy;
        let Some(case) = self.cases.get_mut(worker) else {
            return;
        };
        let Phase::Waiting { since, .. } = case.phase else {
            return;
        };
        case.attempts += 1;
        let window = match strategy {
            Strategy::Reconnect => policy.reconnect_wait,
            Strategy::Restart | Strategy::Quarantine => policy.recovery_interval,
        };
        let number = case.attempts;
        if case.status != strategy.status() {
            out.push(Action::SetStatus {
                worker: worker.to_string(),
                from: case.status,
                to: strategy.status(),
                reason: format!(
                    "recovery attempt {number} of {}: {strategy} within {} ({}: {})",
                    policy.max_recovery_attempts,
                    human(window),
                    case.category,
                    case.reason
                ),
            });
            case.status = strategy.status();
        }
        let worker = worker.to_string();
        match strategy {
            Strategy::Reconnect => out.push(Action::CloseSession { worker }),
            Strategy::Restart => out.push(Action::RunRestart {
                worker,
                attempt: number,
            }),
            Strategy::Quarantine => {}
        }
        case.phase = Phase::Running(Attempt {
            number,
            strategy,
            started_at: now,
            waited: now.saturating_duration_since(since),
            deadline: now + window,
            healthy_at: None,
            restart: None,
        });
    }

    /// Ends the running attempt of `worker` at `at`: records it, learns from it, and moves
    /// the worker on (back in service, next attempt, or permanently failed).
    fn conclude(&mut self, at: Instant, worker: &str, ended: Ended, out: &mut Vec<Action>) {
        let Some(mut case) = self.cases.remove(worker) else {
            return;
        };
        let Phase::Running(attempt) = case.phase.clone() else {
            self.cases.insert(worker.to_string(), case);
            return;
        };
        let success = ended == Ended::Recovered;
        let last = !success && attempt.number >= self.policy.max_recovery_attempts;
        let error = self.error_message(&attempt, ended);
        let outcome = match (success, last) {
            (true, _) => "recovered",
            (false, true) => "permanently_failed",
            (false, false) => "failed",
        };
        out.push(Action::Record(WorkerRecoveryRecord {
            worker: worker.to_string(),
            attempt_number: attempt.number,
            success,
            recovery_type: attempt.strategy.as_str().to_string(),
            error_message: error.clone(),
            details: self.attempt_details(&case, &attempt, at, outcome),
        }));
        self.stats.observe(case.category, attempt.strategy, success);
        if success {
            if case.status != WorkerStatus::Healthy {
                out.push(Action::SetStatus {
                    worker: worker.to_string(),
                    from: case.status,
                    to: WorkerStatus::Healthy,
                    reason: format!(
                        "recovered by {} on attempt {}",
                        attempt.strategy, attempt.number
                    ),
                });
                case.status = WorkerStatus::Healthy;
            }
            self.recovered.insert(worker.to_string(), (at, case));
        } else if last {
            out.push(Action::SetStatus {
                worker: worker.to_string(),
                from: case.status,
                to: WorkerStatus::PermanentlyFailed,
                reason: format!(
                    "{} recovery attempts failed; the last: {}",
                    attempt.number,
                    error.unwrap_or_default()
                ),
            });
        } else {
            case.phase = Phase::Waiting {
                ready_at: at + self.jitter(worker, attempt.number + 1),
                since: at,
            };
            self.cases.insert(worker.to_string(), case);
        }
    }

    fn error_message(&self, attempt: &Attempt, ended: Ended) -> Option<String> {
        let window = attempt.deadline - attempt.started_at;
        match ended {
            Ended::Recovered => None,
            Ended::NotBack => Some(match attempt.strategy {
                Strategy::Quarantine if attempt.healthy_at.is_none() => {
                    format!(
                        "not back and healthy within the {} quarantine",
                        human(window)
                    )
                }
                strategy => format!("not back within {} of the {strategy}", human(window)),
            }),
            Ended::RestartFailed => Some(match &attempt.restart {
                Some(RestartResult {
                    exit_code: Some(code),
                    ..
                }) => format!("restart command exited with status {code}"),
                _ => "restart command did not finish (timed out or could not run)".to_string(),
            }),
        }
    }

    /// The plan's explanation plus what this attempt did (module docs, "Everything is
    /// recorded").
    fn attempt_details(&self, case: &Case, a: &Attempt, at: Instant, outcome: &str) -> Value {
        let since = |t: Instant| millis(t.saturating_duration_since(a.started_at));
        let mut details = case.plan.details();
        let extra = json!({
            "strategy": a.strategy.as_str(),
            "attempt": a.number,
            "max_attempts": self.policy.max_recovery_attempts,
            "outcome": outcome,
            "failure_reason": case.reason,
            "timings": {
                "since_failure_ms": millis(a.started_at.saturating_duration_since(case.failed_at)),
                "waited_ms": millis(a.waited),
                "duration_ms": since(at),
                "window_ms": since(a.deadline),
                "healthy_after_ms": a.healthy_at.map(since),
            },
            "policy": self.policy.details(),
        });
        if let (Value::Object(details), Value::Object(extra)) = (&mut details, extra) {
            details.extend(extra);
            if a.strategy == Strategy::Restart {
                let restart = match &a.restart {
                    Some(r) => json!({
                        "finished": true,
                        "exit_code": r.exit_code,
                        "output_tail": r.output_tail,
                        "finished_after_ms": since(r.finished_at),
                    }),
                    None => json!({ "finished": false, "exit_code": null }),
                };
                details.insert("restart".to_string(), restart);
            }
        }
        details
    }

    /// The delay before attempt `attempt` of `worker` may start: `u × jitter ×
    /// recovery_interval`, with `u ∈ [0, 1)` a hash of (seed, worker, attempt).
    fn jitter(&self, worker: &str, attempt: u32) -> Duration {
        let fraction = self.policy.jitter * unit_hash(self.config.seed, worker, attempt);
        self.policy.recovery_interval.mul_f64(fraction)
    }

    // --- Proactive recovery ----------------------------------------------------------------

    fn infra_fault(&mut self, now: Instant, worker: WorkerId, task: &str, out: &mut Vec<Action>) {
        let window = self.config.infra_fault_window;
        let faults = self.infra_faults.entry(worker.clone()).or_default();
        faults.push_back(now);
        while faults.front().is_some_and(|&t| now - t >= window) {
            faults.pop_front();
        }
        if faults.len() >= self.config.infra_fault_threshold {
            let reason = format!(
                "{} infrastructure faults within {} (the last on task {task})",
                faults.len(),
                human(window)
            );
            self.drain(now, worker, reason, out);
        }
    }

    fn drain(&mut self, now: Instant, worker: WorkerId, reason: String, out: &mut Vec<Action>) {
        if !self.policy.enable_proactive_recovery || self.cases.contains_key(&worker) {
            return;
        }
        if let Some(hold) = self.drains.get_mut(&worker) {
            hold.last_signal = now; // still unwell: the hold goes on
            return;
        }
        self.infra_faults.remove(&worker);
        let hold = self.policy.recovery_interval;
        out.push(Action::Drain {
            worker: worker.clone(),
            reason: reason.clone(),
        });
        out.push(Action::SetStatus {
            worker: worker.clone(),
            from: WorkerStatus::Healthy,
            to: WorkerStatus::Draining,
            reason: format!("proactive drain: {reason}"),
        });
        out.push(Action::Record(WorkerRecoveryRecord {
            worker: worker.clone(),
            attempt_number: 0,
            success: true,
            recovery_type: "proactive_drain".to_string(),
            error_message: None,
            details: json!({
                "outcome": "drained",
                "reason": reason,
                "hold_ms": millis(hold),
                "policy": self.policy.details(),
            }),
        }));
        let hold = DrainHold {
            last_signal: now,
            since: now,
        };
        self.drains.insert(worker, hold);
    }

    fn end_drains(&mut self, now: Instant, out: &mut Vec<Action>) {
        let interval = self.policy.recovery_interval;
        let done: Vec<WorkerId> = (self.drains.iter())
            .filter(|(_, hold)| hold.last_signal + interval <= now)
            .map(|(worker, _)| worker.clone())
            .collect();
        for worker in done {
            let Some(hold) = self.drains.remove(&worker) else {
                continue;
            };
            out.push(Action::SetStatus {
                worker,
                from: WorkerStatus::Draining,
                to: WorkerStatus::Healthy,
                reason: format!(
                    "drained for {}; no fault or erratic heartbeat in the last {}",
                    human(now - hold.since),
                    human(interval)
                ),
            });
        }
    }

    // --- System recovery -------------------------------------------------------------------

    fn note_failure(&mut self, now: Instant, worker: &str, out: &mut Vec<Action>) {
        self.recent_failures.push_back((now, worker.to_string()));
        if let Some(episode) = &mut self.episode {
            episode.affected_workers.insert(worker.to_string());
            if episode.ramp.is_none() {
                episode.last_signal = now; // the fleet is still falling
            }
        }
        self.check_mass_failure(now, out);
    }

    fn check_mass_failure(&mut self, now: Instant, out: &mut Vec<Action>) {
        let window = self.config.mass_failure_window;
        while (self.recent_failures.front()).is_some_and(|(t, _)| now - *t >= window) {
            self.recent_failures.pop_front();
        }
        let Some((_, total)) = self.fleet.filter(|&(_, total)| total > 0) else {
            return;
        };
        let failed: BTreeSet<&WorkerId> = self.recent_failures.iter().map(|(_, w)| w).collect();
        let half = (total as f64 * self.config.mass_failure_fraction).ceil() as usize;
        if failed.len() >= half.max(self.config.mass_failure_min_workers) {
            let reason = format!(
                "{} of {total} workers failed within {}",
                failed.len(),
                human(window)
            );
            self.trigger(now, reason, out);
        }
    }

    fn task_requeued(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.recent_requeues.push_back(now);
        while (self.recent_requeues.front()).is_some_and(|&t| now - t >= REQUEUE_WINDOW) {
            self.recent_requeues.pop_front();
        }
        if let Some(episode) = &mut self.episode {
            episode.affected_tasks = episode.affected_tasks.saturating_add(1);
        }
        if self.recent_requeues.len() >= self.config.max_requeues_per_minute {
            let reason = format!(
                "{} tasks requeued within a minute (limit {})",
                self.recent_requeues.len(),
                self.config.max_requeues_per_minute
            );
            self.trigger(now, reason, out);
        }
    }

    /// A critical state at `now`: start an episode, extend its hold, or hold again during
    /// the ramp. The evidence (recent failures and requeues) is consumed.
    fn trigger(&mut self, now: Instant, reason: String, out: &mut Vec<Action>) {
        let hold = |reason: String| Action::System(SystemAction::HoldDispatch { reason });
        match &mut self.episode {
            None => {
                let affected_workers = (self.recent_failures.iter())
                    .map(|(_, w)| w.clone())
                    .collect();
                let affected_tasks = u32::try_from(self.recent_requeues.len()).unwrap_or(u32::MAX);
                self.episode = Some(Episode {
                    entered_at: now,
                    held_since: now,
                    last_signal: now,
                    triggers: vec![(now, reason.clone())],
                    ramp: None,
                    relapses: 0,
                    forced: false,
                    held_for: Duration::ZERO,
                    affected_workers,
                    affected_tasks,
                    storage_errors: 0,
                });
                out.push(hold(reason));
                out.extend(
                    [
                        SystemAction::ReconcileLeases,
                        SystemAction::RequeueOrphans,
                        SystemAction::ResetBreakers,
                        SystemAction::Snapshot,
                    ]
                    .map(Action::System),
                );
            }
            Some(episode) => {
                episode.triggers.push((now, reason.clone()));
                episode.last_signal = now;
                if episode.ramp.take().is_some() {
                    episode.relapses += 1;
                    episode.held_since = now;
                    out.push(hold(format!("relapse during the resume ramp: {reason}")));
                    out.push(Action::System(SystemAction::ReconcileLeases));
                    out.push(Action::System(SystemAction::RequeueOrphans));
                }
            }
        }
        self.recent_failures.clear();
        self.recent_requeues.clear();
    }

    /// When a held episode resumes, and whether that is forced by `max_hold`.
    fn resume_at(&self, episode: &Episode) -> (Instant, bool) {
        let config = &self.config;
        let wanted =
            (episode.last_signal + config.quiet_period).max(episode.held_since + config.min_hold);
        let cap = episode.held_since + config.max_hold;
        if wanted > cap {
            (cap, true)
        } else {
            (wanted, false)
        }
    }

    fn step_episode(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(episode) = &self.episode else {
            return;
        };
        match &episode.ramp {
            None => {
                let (resume_at, forced) = self.resume_at(episode);
                if now < resume_at {
                    return;
                }
                let healthy = self.fleet.map_or(0, |(healthy, _)| healthy) as f64;
                let ramp: Vec<(Duration, f64)> = (self.config.ramp.iter())
                    .map(|&(offset, per_worker)| (offset, (per_worker * healthy).max(1.0)))
                    .collect();
                let Some(episode) = &mut self.episode else {
                    return;
                };
                episode.forced |= forced;
                episode.held_for += now - episode.held_since;
                episode.ramp = Some((now, ramp.clone()));
                out.push(Action::System(SystemAction::ResumeGradually { ramp }));
            }
            Some((resumed_at, _)) => {
                if now < *resumed_at + self.config.ramp_length {
                    return;
                }
                if let Some(episode) = self.episode.take() {
                    out.push(Action::System(self.end_episode(now, episode)));
                }
            }
        }
    }

    fn end_episode(&self, now: Instant, episode: Episode) -> SystemAction {
        let success = !episode.forced;
        let offset = |t: Instant| millis(t - episode.entered_at);
        let triggers: Vec<Value> = (episode.triggers.iter())
            .map(|(t, reason)| json!({ "after_ms": offset(*t), "reason": reason }))
            .collect();
        let ramp: Vec<Value> = (episode.ramp.iter())
            .flat_map(|(_, ramp)| ramp.iter())
            .map(|&(o, rate)| json!({ "after_ms": millis(o), "assignments_per_second": rate }))
            .collect();
        let (healthy, total) = self.fleet.unwrap_or_default();
        let details = json!({
            "system_status": if success { "recovered" } else { "degraded" },
            "triggers": triggers,
            "steps": [
                "hold_dispatch", "reconcile_leases", "requeue_orphans", "reset_breakers",
                "snapshot", "resume_gradually",
            ],
            "held_ms": millis(episode.held_for),
            "duration_ms": offset(now),
            "relapses": episode.relapses,
            "forced_resume": episode.forced,
            "storage_errors": episode.storage_errors,
            "ramp": ramp,
            "fleet": { "healthy": healthy, "total": total },
            "workers": episode.affected_workers,
        });
        SystemAction::EndEpisode {
            success,
            affected_workers: u32::try_from(episode.affected_workers.len()).unwrap_or(u32::MAX),
            affected_tasks: episode.affected_tasks,
            details,
        }
    }
}

/// A uniform value in `[0, 1)` from (seed, worker, attempt): FNV-1a over the worker name,
/// mixed with the seed and attempt by SplitMix64's finaliser. Deterministic on every platform.
fn unit_hash(seed: u64, worker: &str, attempt: u32) -> f64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for byte in worker.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut x =
        hash ^ seed.rotate_left(32) ^ u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests;
