//! Worker recovery and proactive drains: the part of the [`Planner`] that follows one worker
//! at a time (the rules are in the [recovery module docs](crate::recovery)).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Planner;
use crate::recovery::strategy::{Plan, Strategy};
use crate::recovery::{Action, RecoveryLevel, RecoveryPolicy, WorkerRecoveryRecord, human, millis};
use crate::state::command::{FaultCategory, WorkerId, WorkerStatus};

/// The recovery of one failed worker.
#[derive(Clone, Debug)]
pub(super) struct Case {
    category: FaultCategory,
    /// Why the worker failed, from [`crate::recovery::RecoveryEvent::WorkerFailed`].
    reason: String,
    failed_at: Instant,
    /// The status the planner believes is committed.
    status: WorkerStatus,
    plan: Plan,
    /// Attempts started so far.
    attempts: u32,
    pub(super) phase: Phase,
    /// The attempts and window an operator's request set for this case (`recovery
    /// recover-worker --level`); `None`: the policy in force.
    limits: Option<CaseLimits>,
}

/// A case's own attempt budget and window, from a [`RecoveryLevel`]'s policy.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CaseLimits {
    level: RecoveryLevel,
    max_attempts: u32,
    window: Duration,
}

#[derive(Clone, Debug)]
pub(super) enum Phase {
    /// The next attempt may start at `ready_at` (jitter), when the budget allows.
    Waiting {
        ready_at: Instant,
        since: Instant,
    },
    Running(Attempt),
}

#[derive(Clone, Debug)]
pub(super) struct Attempt {
    pub(super) number: u32,
    pub(super) strategy: Strategy,
    started_at: Instant,
    /// From the moment it could have started (jitter and budget included).
    waited: Duration,
    /// The attempt fails if the worker is not back (and, for a quarantine, still healthy) by
    /// then. Fixed when the attempt starts: a policy swap does not move it.
    deadline: Instant,
    /// When the worker came back during this attempt.
    pub(super) healthy_at: Option<Instant>,
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
pub(super) struct DrainHold {
    /// The last fault or erratic report; the worker returns a `recovery_interval` after it.
    last_signal: Instant,
    since: Instant,
}

impl Planner {
    /// The earliest attempt deadline, drain end, or start of an attempt the budget allows.
    pub(super) fn worker_deadline(&self) -> Option<Instant> {
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
        cases.chain(drains).min()
    }

    // --- Worker recovery -------------------------------------------------------------------

    pub(super) fn worker_failed(
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
        // A worker that fails again soon after being brought back continues where it was.
        let mut case = match self.recovered.remove(&worker) {
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
                limits: None,
            },
        };
        case.status = status;
        let max_attempts = self.max_attempts(&case);
        if case.attempts >= max_attempts {
            out.push(Action::SetStatus {
                worker,
                from: status,
                to: WorkerStatus::PermanentlyFailed,
                reason: format!(
                    "failed again after {} recovery attempts (max {max_attempts})",
                    case.attempts
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

    pub(super) fn worker_healthy(&mut self, now: Instant, worker: &str, out: &mut Vec<Action>) {
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
        out.push(self.closing_record(now, worker, &case, "self_recovered", None));
        self.recovered.insert(worker.to_string(), (now, case));
    }

    /// The worker left the fleet: nothing more is done about it. A case still open is closed
    /// with a row saying so; a proactive drain hold is dropped (its status is `left` now).
    pub(super) fn worker_left(&mut self, now: Instant, worker: &str, out: &mut Vec<Action>) {
        self.drains.remove(worker);
        self.infra_faults.remove(worker);
        self.recovered.remove(worker);
        if let Some(case) = self.cases.remove(worker) {
            let why = "the worker left the fleet (removed or stopped); recovery stopped";
            out.push(self.closing_record(now, worker, &case, "stopped", Some(why)));
        }
    }

    /// The attempts `case` may have: its own limits, else the policy's.
    fn max_attempts(&self, case: &Case) -> u32 {
        case.limits
            .map_or(self.policy.max_recovery_attempts, |l| l.max_attempts)
    }

    /// An operator asked to recover `worker` at `level` (`testfleet recovery recover-worker`;
    /// its status is `failed` now, from `failed`, `permanently_failed` or `quarantined`): a
    /// case still open is closed, and a new one starts at once with that level's attempts and
    /// window, its strategies in the order of the worker's last fault category.
    pub(super) fn operator_recover(
        &mut self,
        now: Instant,
        worker: WorkerId,
        level: RecoveryLevel,
        out: &mut Vec<Action>,
    ) {
        self.drains.remove(&worker);
        let previous = self
            .cases
            .remove(&worker)
            .or_else(|| self.recovered.remove(&worker).map(|(_, case)| case));
        if let Some(case) = previous
            .as_ref()
            .filter(|c| matches!(c.phase, Phase::Running(_)))
        {
            let why = "an operator asked for a new recovery";
            out.push(self.closing_record(now, &worker, case, "stopped", Some(why)));
        }
        let category = previous.map_or(FaultCategory::Connection, |c| c.category);
        let policy = RecoveryPolicy::for_level(level);
        let limits = CaseLimits {
            level,
            max_attempts: policy.max_recovery_attempts,
            window: policy.recovery_interval,
        };
        out.push(Action::Record(WorkerRecoveryRecord {
            worker: worker.clone(),
            attempt_number: 0,
            success: true,
            recovery_type: "operator_request".to_string(),
            error_message: None,
            details: json!({
                "level": level_name(level),
                "max_attempts": limits.max_attempts,
                "window_ms": millis(limits.window),
                "category": category.as_str(),
                "plan": self.stats.plan(category).details(),
            }),
        }));
        let case = Case {
            category,
            reason: format!(
                "an operator asked for recovery at level {}",
                level_name(level)
            ),
            failed_at: now,
            status: WorkerStatus::Failed,
            plan: self.stats.plan(category),
            attempts: 0,
            phase: Phase::Waiting {
                ready_at: now,
                since: now,
            },
            limits: Some(limits),
        };
        self.cases.insert(worker, case);
    }

    /// An operator lifted the worker's quarantine or permanent failure (`testfleet recovery
    /// reset`): recovery forgets it, without a row (the reset is the log's own record).
    pub(super) fn operator_reset(&mut self, worker: &str) {
        self.cases.remove(worker);
        self.recovered.remove(worker);
        self.drains.remove(worker);
        self.infra_faults.remove(worker);
    }

    /// The row that closes a case between attempts: `self_recovered` (a success) or `stopped`.
    fn closing_record(
        &self,
        now: Instant,
        worker: &str,
        case: &Case,
        how: &str,
        error: Option<&str>,
    ) -> Action {
        let outcome = if error.is_none() { how } else { "left" };
        Action::Record(WorkerRecoveryRecord {
            worker: worker.to_string(),
            attempt_number: case.attempts,
            success: error.is_none(),
            recovery_type: how.to_string(),
            error_message: error.map(str::to_string),
            details: json!({
                "category": case.category.as_str(),
                "outcome": outcome,
                "failure_reason": case.reason,
                "attempts_made": case.attempts,
                "timings": { "since_failure_ms": millis(now - case.failed_at) },
                "policy": self.policy.details(),
            }),
        })
    }

    pub(super) fn restart_finished(
        &mut self,
        now: Instant,
        worker: &str,
        number: u32,
        (exit_code, output_tail): (Option<i32>, String),
        out: &mut Vec<Action>,
    ) {
        let result = RestartResult {
            exit_code,
            output_tail,
            finished_at: now,
        };
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

    pub(super) fn expire_attempts(&mut self, now: Instant, out: &mut Vec<Action>) {
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

    pub(super) fn start_ready(&mut self, now: Instant, out: &mut Vec<Action>) {
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
        let window = match (case.limits, strategy) {
            (Some(limits), _) => limits.window,
            (None, Strategy::Reconnect) => policy.reconnect_wait,
            (None, Strategy::Restart | Strategy::Quarantine) => policy.recovery_interval,
        };
        let max_attempts = case
            .limits
            .map_or(policy.max_recovery_attempts, |l| l.max_attempts);
        let number = case.attempts;
        if case.status != strategy.status() {
            out.push(Action::SetStatus {
                worker: worker.to_string(),
                from: case.status,
                to: strategy.status(),
                reason: format!(
                    "recovery attempt {number} of {max_attempts}: {strategy} within {} ({}: {})",
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
        let last = !success && attempt.number >= self.max_attempts(&case);
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
            "max_attempts": self.max_attempts(case),
            "operator_level": case.limits.map(|l| level_name(l.level)),
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

    /// Infrastructure faults climbing past the threshold: a worker whose faults say it lacks
    /// resources or storage is failed with that category, so recovery follows its strategies
    /// (quarantine first for resources, a restart first for storage); any other is drained
    /// before it fails.
    pub(super) fn infra_fault(
        &mut self,
        now: Instant,
        worker: WorkerId,
        task: &str,
        category: FaultCategory,
        out: &mut Vec<Action>,
    ) {
        let window = self.config.infra_fault_window;
        let faults = self.infra_faults.entry(worker.clone()).or_default();
        faults.push_back((now, category));
        while faults.front().is_some_and(|&(t, _)| now - t >= window) {
            faults.pop_front();
        }
        if faults.len() < self.config.infra_fault_threshold {
            return;
        }
        let reason = format!(
            "{} infrastructure faults within {} (the last on task {task}: {category})",
            faults.len(),
            human(window)
        );
        let dominant = dominant_category(faults);
        let fail = matches!(
            dominant,
            FaultCategory::ResourceExhaustion | FaultCategory::Storage
        );
        if fail && self.policy.enable_proactive_recovery && !self.cases.contains_key(&worker) {
            self.infra_faults.remove(&worker);
            out.push(Action::Fail {
                worker,
                category: dominant,
                reason,
            });
        } else {
            self.drain(now, worker, reason, out);
        }
    }

    /// The worker's new process reported that the previous one crashed: a recovery under way
    /// goes on as a crash's (its records and what it teaches say crash).
    pub(super) fn worker_crashed(&mut self, worker: &str) {
        if let Some(case) = self.cases.get_mut(worker)
            && case.category != FaultCategory::Crash
        {
            case.reason = format!("{} — the worker's process had crashed", case.reason);
            case.category = FaultCategory::Crash;
            case.plan = self.stats.plan(FaultCategory::Crash);
        }
    }

    pub(super) fn drain(
        &mut self,
        now: Instant,
        worker: WorkerId,
        reason: String,
        out: &mut Vec<Action>,
    ) {
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

    pub(super) fn end_drains(&mut self, now: Instant, out: &mut Vec<Action>) {
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

/// The category most of `faults` have (the latest among equals).
fn dominant_category(faults: &VecDeque<(Instant, FaultCategory)>) -> FaultCategory {
    let mut counts: Vec<(FaultCategory, usize, usize)> = Vec::new();
    for (i, (_, category)) in faults.iter().enumerate() {
        match counts.iter_mut().find(|(c, _, _)| c == category) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 = i;
            }
            None => counts.push((*category, 1, i)),
        }
    }
    (counts.into_iter())
        .max_by_key(|&(_, count, last)| (count, last))
        .map_or(FaultCategory::Connection, |(c, _, _)| c)
}

/// A level's name as operators write it.
pub(crate) fn level_name(level: RecoveryLevel) -> &'static str {
    match level {
        RecoveryLevel::Low => "low",
        RecoveryLevel::Medium => "medium",
        RecoveryLevel::High => "high",
    }
}
