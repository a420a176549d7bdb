//! The recovery [`Planner`]: events and `now` in, [`Action`]s out. The rules are in the
//! [module docs](super); the thresholds are the fields of [`PlannerConfig`].
//!
//! # What the planner assumes about statuses
//!
//! Each [`Action::SetStatus`] carries the `from` the planner believes is committed. It follows
//! the commands other loops propose: [`RecoveryEvent::WorkerFailed`] comes after the health
//! monitor failed the worker (`failed`; a draining worker stays `draining`, which the monitor
//! does not fail), and [`RecoveryEvent::WorkerHealthy`] after the worker registered again
//! (`RegisterWorker` makes a failed or recovering worker `healthy`, and leaves a quarantined or
//! draining one as it is). So a reconnect or restart that succeeds needs no status change, and a
//! quarantined worker that comes back stays `quarantined` until its window ends (the planner
//! still asks for `healthy → quarantined`, which apply rejects as stale, harmlessly). If the
//! belief is wrong, apply rejects the change as stale.
//!
//! # Layout
//!
//! This file holds the settings, the state and the public interface; the decisions live in
//! `worker.rs` (one worker at a time: attempts, budget, jitter, drains) and `episode.rs` (the
//! whole fleet: system recovery episodes), both `impl Planner` blocks over the same state.

mod episode;
mod worker;

pub(crate) use self::worker::level_name;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use self::episode::Episode;
use self::worker::{Case, DrainHold, Phase};
use super::strategy::{Strategy, StrategyStats};
use super::{Action, MAX_SETTING, PolicyError, RecoveryEvent, RecoveryPolicy};
use crate::state::command::{FaultCategory, WorkerId};

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
    infra_faults: BTreeMap<WorkerId, VecDeque<(Instant, FaultCategory)>>,
    /// Worker failures within `mass_failure_window` not yet consumed by an episode.
    recent_failures: VecDeque<(Instant, WorkerId)>,
    /// Requeues within the last minute not yet consumed by an episode.
    recent_requeues: VecDeque<Instant>,
    /// The last [`RecoveryEvent::FleetSize`]: (healthy, total).
    fleet: Option<(usize, usize)>,
    episode: Option<Episode>,
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

    /// Adds past outcomes `(category, strategy, success)` to what has been learned.
    pub fn learn(&mut self, outcomes: impl IntoIterator<Item = (FaultCategory, Strategy, bool)>) {
        for (category, strategy, success) in outcomes {
            self.stats.observe(category, strategy, success);
        }
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
                let result = (exit_code, output_tail);
                self.restart_finished(now, &worker, attempt, result, &mut out);
            }
            RecoveryEvent::InfraFault {
                worker,
                task,
                category,
            } => self.infra_fault(now, worker, &task, category, &mut out),
            RecoveryEvent::WorkerCrashed { worker } => self.worker_crashed(&worker),
            RecoveryEvent::WorkerErratic { worker, reason } => self.drain(
                now,
                worker,
                format!("erratic heartbeats: {reason}"),
                &mut out,
            ),
            RecoveryEvent::StorageError { reason } => self.storage_error(now, &reason, &mut out),
            RecoveryEvent::TaskRequeued { worker: _ } => self.task_requeued(now, &mut out),
            RecoveryEvent::FleetSize { healthy, total } => {
                self.fleet = Some((healthy, total));
                self.check_mass_failure(now, &mut out);
            }
            RecoveryEvent::WorkerLeft { worker } => self.worker_left(now, &worker, &mut out),
            RecoveryEvent::OperatorRecover { worker, level } => {
                self.operator_recover(now, worker, level, &mut out)
            }
            RecoveryEvent::OperatorReset { worker } => self.operator_reset(&worker),
            RecoveryEvent::SystemBreakerOpened { reason } => {
                self.trigger(
                    now,
                    format!("system circuit breaker open: {reason}"),
                    &mut out,
                );
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
        [self.worker_deadline(), self.episode_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether a system recovery episode is under way.
    pub fn in_episode(&self) -> bool {
        self.episode.is_some()
    }

    /// How fast the scheduler may commit assignments at `now`: `None` = no limit, `Some(0.0)`
    /// while dispatch is held, the ramp's rate while it resumes.
    pub fn dispatch_allowance(&self, now: Instant) -> Option<f64> {
        let episode = self.episode.as_ref()?;
        episode.allowance(now, self.config.ramp_length)
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
}

#[cfg(test)]
mod tests;
