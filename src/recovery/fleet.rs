//! The leader's circuit breakers: one per worker and one for the system
//! (ARCHITECTURE.md § Circuit breakers).
//!
//! Pure, like [`super::breaker::Breaker`] it is made of: every method takes the proposer's
//! `now`, and what must be replicated comes back as commands (`BreakerTransition`) for the
//! leader to propose. The leader's drivers call it at these points:
//!
//! | event | call | worker breaker | system breaker |
//! |---|---|---|---|
//! | an assignment is about to be proposed | [`FleetBreakers::allow`] | a permit (rejected: the task stays queued) | — |
//! | a worker reports an attempt's end | [`FleetBreakers::finished`] | the attempt's permit back, with its [`CallOutcome`] | one observation |
//! | a worker's session breaks, or it falls silent | [`FleetBreakers::infra_failure`] | a failure | one observation |
//! | an attempt ends without a report (requeued, cancelled) | [`FleetBreakers::released`] | a trial without a result counts as failed | — |
//! | a recovery attempt ends | [`FleetBreakers::recovery_outcome`] | — | one observation |
//! | every monitor tick | [`FleetBreakers::tick`] | open → half-open on time | the same |
//!
//! Observations of the system breaker are calls it grants itself ([`Breaker::allow`]): while
//! it is open they are not counted, and once half-open the next few are its trials. Its state
//! picks the recovery level ([`FleetBreakers::level`]).
//!
//! A committed transition that differs from what a breaker holds (an operator's command, or
//! this leader's proposal refused as stale) is taken over with [`FleetBreakers::sync`]. A new
//! leader builds everything from the replicated states ([`FleetBreakers::new`]).
//!
//! Memory is bounded by the fleet: one breaker per worker ever seen by this leader (forgotten
//! when it leaves) and one permit per attempt in flight.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::breaker::{
    Breaker, BreakerConfig, BreakerSnapshot, CallOutcome, Permit, Transition, Window, level_for,
};
use super::{RecoveryLevel, RecoveryPolicy};
use crate::state::command::{
    BreakerState, Command, Outcome, SYSTEM_SCOPE, TaskId, Timestamp, WORKER_SCOPE, WorkerId,
    worker_scope,
};

/// The breaker settings of a coordinator. In a file, a table names only the keys it changes:
/// the others keep *that breaker's* defaults (the system breaker's differ from a worker's), so
/// `[breakers.system] open_wait_ms = 2000` leaves the system's time window alone.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerSettings {
    /// Breakers on (the default): open worker breakers stop dispatch to their worker and the
    /// system breaker picks the recovery level. Off: the base recovery policy stays in force.
    pub enabled: bool,
    /// Each worker's breaker. Default: the last 20 calls, at least 5, half failing.
    pub worker: BreakerConfig,
    /// The system breaker, over every worker's calls and every recovery attempt. Default: the
    /// last 60 s, at least 10 calls, half failing; 30 s open before 5 trial observations.
    pub system: BreakerConfig,
    /// The recovery policy of each level the system breaker picks.
    pub levels: RecoveryLevels,
    /// Per-attempt requeues per second while the system breaker is open (`super::pacing`).
    /// Default: 2.
    pub open_requeue_rate: f64,
}

/// What one recovery level allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelPolicy {
    /// Attempts to bring a failed worker back before it is permanently failed.
    pub max_recovery_attempts: u32,
    /// How long one attempt may take (also the reconnect wait), in milliseconds.
    pub recovery_interval_ms: u64,
}

/// The recovery level table: closed → low, half-open → medium, open → high.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryLevels {
    /// Default: 3 attempts of 30 s.
    pub low: LevelPolicy,
    /// Default: 5 attempts of 15 s.
    pub medium: LevelPolicy,
    /// Default: 10 attempts of 5 s — kept from storming by the recovery budget and jitter.
    pub high: LevelPolicy,
}

impl Default for RecoveryLevels {
    fn default() -> Self {
        let level = |max_recovery_attempts, seconds: u64| LevelPolicy {
            max_recovery_attempts,
            recovery_interval_ms: seconds * 1000,
        };
        RecoveryLevels {
            low: level(3, 30),
            medium: level(5, 15),
            high: level(10, 5),
        }
    }
}

impl RecoveryLevels {
    /// The policy of `level`: its attempts and interval over the rest of `base`.
    pub fn policy(&self, level: RecoveryLevel, base: &RecoveryPolicy) -> RecoveryPolicy {
        let chosen = match level {
            RecoveryLevel::Low => self.low,
            RecoveryLevel::Medium => self.medium,
            RecoveryLevel::High => self.high,
        };
        let interval = std::time::Duration::from_millis(chosen.recovery_interval_ms);
        RecoveryPolicy {
            max_recovery_attempts: chosen.max_recovery_attempts,
            recovery_interval: interval,
            reconnect_wait: interval,
            ..base.clone()
        }
    }
}

impl BreakerSettings {
    /// Refuses settings the breakers or the planner cannot follow, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        self.worker
            .validate()
            .map_err(|e| format!("breakers.worker: {e}"))?;
        self.system
            .validate()
            .map_err(|e| format!("breakers.system: {e}"))?;
        if !(self.open_requeue_rate.is_finite()
            && self.open_requeue_rate > 0.0
            && self.open_requeue_rate <= MAX_REQUEUE_RATE)
        {
            return Err(format!(
                "breakers.open_requeue_rate is {}; it must be above 0 and at most \
                 {MAX_REQUEUE_RATE} requeues per second",
                self.open_requeue_rate
            ));
        }
        for (name, level) in [
            ("low", self.levels.low),
            ("medium", self.levels.medium),
            ("high", self.levels.high),
        ] {
            if level.recovery_interval_ms == 0
                || level.recovery_interval_ms > super::MAX_SETTING.as_millis() as u64
            {
                return Err(format!(
                    "breakers.levels.{name}.recovery_interval_ms is {}; it must be between 1 and \
                     {} (a week)",
                    level.recovery_interval_ms,
                    super::MAX_SETTING.as_millis()
                ));
            }
        }
        Ok(())
    }
}

/// The most `breakers.open_requeue_rate` may be: beyond it pacing paces nothing.
const MAX_REQUEUE_RATE: f64 = 100_000.0;

/// A breaker table as written: every key optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerOverrides {
    window: Option<Window>,
    minimum_calls: Option<usize>,
    failure_rate_threshold: Option<f64>,
    open_wait_ms: Option<u64>,
    open_wait_max_ms: Option<u64>,
    jitter: Option<f64>,
    half_open_trials: Option<u32>,
}

impl BreakerOverrides {
    fn over(self, base: BreakerConfig) -> BreakerConfig {
        BreakerConfig {
            window: self.window.unwrap_or(base.window),
            minimum_calls: self.minimum_calls.unwrap_or(base.minimum_calls),
            failure_rate_threshold: (self.failure_rate_threshold)
                .unwrap_or(base.failure_rate_threshold),
            open_wait_ms: self.open_wait_ms.unwrap_or(base.open_wait_ms),
            open_wait_max_ms: self.open_wait_max_ms.unwrap_or(base.open_wait_max_ms),
            jitter: self.jitter.unwrap_or(base.jitter),
            half_open_trials: self.half_open_trials.unwrap_or(base.half_open_trials),
        }
    }
}

/// `[breakers]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsAsWritten {
    enabled: Option<bool>,
    worker: Option<BreakerOverrides>,
    system: Option<BreakerOverrides>,
    levels: Option<RecoveryLevels>,
    open_requeue_rate: Option<f64>,
}

impl<'de> Deserialize<'de> for BreakerSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written = SettingsAsWritten::deserialize(d)?;
        let base = BreakerSettings::default();
        Ok(BreakerSettings {
            enabled: written.enabled.unwrap_or(base.enabled),
            worker: match written.worker {
                Some(o) => o.over(base.worker),
                None => base.worker,
            },
            system: match written.system {
                Some(o) => o.over(base.system),
                None => base.system,
            },
            levels: written.levels.unwrap_or(base.levels),
            open_requeue_rate: written.open_requeue_rate.unwrap_or(base.open_requeue_rate),
        })
    }
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            enabled: true,
            worker: BreakerConfig::default(),
            system: BreakerConfig {
                window: Window::Time { span_ms: 60_000 },
                minimum_calls: 10,
                half_open_trials: 5,
                ..BreakerConfig::default()
            },
            levels: RecoveryLevels::default(),
            open_requeue_rate: 2.0,
        }
    }
}

/// What an operator asks of a breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OperatorAction {
    /// Closed again, counters cleared.
    Reset,
    /// Open until reset: no tasks for a worker; the highest recovery level for the system.
    ForceOpen,
    /// Lets everything through and counts nothing; the system's base policy applies.
    Disable,
}

/// Every breaker of the fleet, as the leader holds them.
pub struct FleetBreakers {
    settings: BreakerSettings,
    seed: u64,
    system: Breaker,
    workers: BTreeMap<WorkerId, Breaker>,
    /// The permit each attempt in flight was dispatched with, and its worker.
    permits: HashMap<(TaskId, u32), (WorkerId, Permit)>,
    /// When each worker last gave the system breaker an observation: at most one per
    /// [`SYSTEM_SAMPLE`], so that the system breaker weighs workers, not calls.
    sampled: HashMap<WorkerId, Timestamp>,
}

/// Each worker counts for at most one system observation per this period. A worker that
/// fails every call at once (a black hole) would otherwise make most of the fleet's calls
/// failures on its own and open the system breaker — the fleet is not sick, one worker is,
/// and its own breaker deals with it.
pub const SYSTEM_SAMPLE: std::time::Duration = std::time::Duration::from_secs(1);

/// A seed per scope, so that breakers opened together do not draw the same jitter.
fn seed_of(seed: u64, scope: &str) -> u64 {
    scope.bytes().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl FleetBreakers {
    /// Every breaker restored from the replicated states (scope → (state, since)); scopes
    /// never seen are closed since `now`.
    pub fn new(
        settings: BreakerSettings,
        replicated: &BTreeMap<String, (BreakerState, Timestamp)>,
        now: Timestamp,
        seed: u64,
    ) -> Result<FleetBreakers, String> {
        let (state, since) =
            (replicated.get(SYSTEM_SCOPE)).map_or((BreakerState::Closed, now), |s| *s);
        let system = Breaker::restore(
            settings.system.clone(),
            state,
            since,
            seed_of(seed, SYSTEM_SCOPE),
        )?;
        let mut workers = BTreeMap::new();
        for (scope, (state, since)) in replicated {
            if let Some(worker) = scope.strip_prefix(WORKER_SCOPE) {
                let breaker = Breaker::restore(
                    settings.worker.clone(),
                    *state,
                    *since,
                    seed_of(seed, scope),
                )?;
                workers.insert(worker.to_string(), breaker);
            }
        }
        Ok(FleetBreakers {
            settings,
            seed,
            system,
            workers,
            permits: HashMap::new(),
            sampled: HashMap::new(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Whether breakers are on and the system breaker is open or forced open: per-attempt
    /// requeues are paced (`super::pacing`).
    pub fn system_open(&self) -> bool {
        self.level() == Some(RecoveryLevel::High)
    }

    /// The recovery level the system breaker calls for; `None` when breakers are off or the
    /// system breaker is disabled: the base policy applies.
    pub fn level(&self) -> Option<RecoveryLevel> {
        self.enabled()
            .then(|| level_for(self.system.state()))
            .flatten()
    }

    fn worker(&mut self, worker: &str, now: Timestamp) -> &mut Breaker {
        let (config, seed) = (
            &self.settings.worker,
            seed_of(self.seed, &worker_scope(worker)),
        );
        self.workers.entry(worker.to_string()).or_insert_with(|| {
            Breaker::new(config.clone(), now, seed)
                .unwrap_or_else(|e| unreachable!("validated with the configuration: {e}"))
        })
    }

    /// May `worker` be given this attempt? With breakers off, always. A permit given is kept
    /// until [`Self::finished`] or [`Self::released`].
    pub fn allow(
        &mut self,
        worker: &str,
        task: &str,
        attempt: u32,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> bool {
        if !self.enabled() {
            return true;
        }
        let (permit, moved) = self.worker(worker, now).allow(now);
        push(out, &worker_scope(worker), moved, now);
        if permit.is_allowed() {
            self.permits
                .insert((task.to_string(), attempt), (worker.to_string(), permit));
        }
        permit.is_allowed()
    }

    /// Half-open workers get only as many tasks at once as their breaker has trials.
    pub fn trial_slots(&self, worker: &str) -> Option<u32> {
        (self.enabled())
            .then(|| self.workers.get(worker))
            .flatten()
            .filter(|b| b.state() == BreakerState::HalfOpen)
            .map(|b| b.config().half_open_trials)
    }

    /// A worker reported the end of an attempt.
    pub fn finished(
        &mut self,
        worker: &str,
        task: &str,
        attempt: u32,
        outcome: Outcome,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        if !self.enabled() {
            return;
        }
        let call = CallOutcome::from_attempt(outcome);
        let permit = match self.permits.remove(&(task.to_string(), attempt)) {
            Some((holder, permit)) if holder == worker => permit,
            // Dispatched by an earlier leader: an ordinary call.
            _ => Permit::Allowed,
        };
        let moved = self.worker(worker, now).record(now, permit, call);
        push(out, &worker_scope(worker), moved, now);
        self.observe_worker(worker, call, now, out);
    }

    /// The infrastructure failed `worker` outside any report: its session broke, or it fell
    /// silent.
    pub fn infra_failure(&mut self, worker: &str, now: Timestamp, out: &mut Vec<Command>) {
        if !self.enabled() {
            return;
        }
        let breaker = self.worker(worker, now);
        // A half-open worker's failure is a failed trial if a trial slot is free; otherwise
        // (closed, or every trial out) it counts like any call, and an open breaker ignores it.
        let (permit, moved) = match breaker.state() {
            BreakerState::HalfOpen => breaker.allow(now),
            _ => (Permit::Allowed, None),
        };
        let permit = match permit {
            Permit::Rejected => Permit::Allowed,
            given => given,
        };
        let recorded = breaker.record(now, permit, CallOutcome::InfraFailure);
        push(out, &worker_scope(worker), moved, now);
        push(out, &worker_scope(worker), recorded, now);
        self.observe_worker(worker, CallOutcome::InfraFailure, now, out);
    }

    /// An attempt ended without a report from its worker (requeued after a failure, or
    /// cancelled). A trial that ends so proved nothing good: it counts as failed.
    pub fn released(&mut self, task: &str, attempt: u32, now: Timestamp, out: &mut Vec<Command>) {
        let Some((worker, permit)) = self.permits.remove(&(task.to_string(), attempt)) else {
            return;
        };
        if matches!(permit, Permit::Trial { .. }) && self.enabled() {
            let moved = self
                .worker(&worker, now)
                .record(now, permit, CallOutcome::InfraFailure);
            push(out, &worker_scope(&worker), moved, now);
        }
    }

    /// A worker recovery attempt ended.
    pub fn recovery_outcome(&mut self, success: bool, now: Timestamp, out: &mut Vec<Command>) {
        if !self.enabled() {
            return;
        }
        let call = match success {
            true => CallOutcome::Success,
            false => CallOutcome::InfraFailure,
        };
        self.observe(call, now, out);
    }

    /// A worker's call, observed by the system breaker if the worker's sample is due.
    fn observe_worker(
        &mut self,
        worker: &str,
        call: CallOutcome,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let due = Timestamp(now.0.saturating_sub(SYSTEM_SAMPLE.as_micros() as i64));
        match self.sampled.get(worker) {
            Some(last) if *last > due => {}
            _ => {
                self.sampled.insert(worker.to_string(), now);
                self.observe(call, now, out);
            }
        }
    }

    fn observe(&mut self, call: CallOutcome, now: Timestamp, out: &mut Vec<Command>) {
        let (permit, moved) = self.system.allow(now);
        push(out, SYSTEM_SCOPE, moved, now);
        let recorded = self.system.record(now, permit, call);
        push(out, SYSTEM_SCOPE, recorded, now);
    }

    /// Open breakers whose wait is over turn half-open.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Command>) {
        if !self.enabled() {
            return;
        }
        let moved = self.system.poll(now);
        push(out, SYSTEM_SCOPE, moved, now);
        for (worker, breaker) in &mut self.workers {
            let moved = breaker.poll(now);
            push(out, &worker_scope(worker), moved, now);
        }
    }

    /// Takes over a committed state that differs from the one held (an operator's command, or
    /// a proposal of this leader refused as stale). True when something changed.
    pub fn sync(&mut self, scope: &str, state: BreakerState, since: Timestamp) -> bool {
        let seed = seed_of(self.seed, scope);
        let (slot, config) = if scope == SYSTEM_SCOPE {
            (Some(&mut self.system), self.settings.system.clone())
        } else if let Some(worker) = scope.strip_prefix(WORKER_SCOPE) {
            let config = self.settings.worker.clone();
            let slot = self.workers.entry(worker.to_string());
            let breaker = slot.or_insert_with(|| {
                Breaker::new(config.clone(), since, seed)
                    .unwrap_or_else(|e| unreachable!("validated with the configuration: {e}"))
            });
            (Some(breaker), config)
        } else {
            (None, self.settings.worker.clone())
        };
        let Some(breaker) = slot else {
            return false;
        };
        if breaker.state() == state {
            return false;
        }
        match Breaker::restore(config, state, since, seed) {
            Ok(restored) => {
                *breaker = restored;
                true
            }
            Err(_) => false,
        }
    }

    /// Takes over the committed state of every breaker whose own state has differed from it
    /// for longer than `grace` (its transition was refused as stale, or lost with a failed
    /// proposal); a transition younger than that may still be committing. Returns the scopes
    /// that changed.
    pub fn reconcile(
        &mut self,
        committed: &BTreeMap<String, (BreakerState, Timestamp)>,
        grace: std::time::Duration,
        now: Timestamp,
    ) -> Vec<String> {
        let settled = Timestamp(now.0.saturating_sub(grace.as_micros() as i64));
        let mut differ = Vec::new();
        let held = std::iter::once((SYSTEM_SCOPE.to_string(), &self.system))
            .chain((self.workers.iter()).map(|(w, b)| (worker_scope(w), b)));
        for (scope, breaker) in held {
            let (state, since) = (committed.get(&scope))
                .copied()
                .unwrap_or((BreakerState::Closed, Timestamp(0)));
            if breaker.state() != state && breaker.since() <= settled {
                differ.push((scope, state, since));
            }
        }
        (differ.into_iter())
            .filter(|(scope, state, since)| self.sync(scope, *state, *since))
            .map(|(scope, _, _)| scope)
            .collect()
    }

    /// An operator's change to the breaker of `scope`: the command to propose, or why not.
    pub fn operator(
        &mut self,
        scope: &str,
        action: OperatorAction,
        reason: &str,
        now: Timestamp,
    ) -> Result<Command, String> {
        let breaker = if scope == SYSTEM_SCOPE {
            &mut self.system
        } else if let Some(worker) = scope.strip_prefix(WORKER_SCOPE) {
            self.worker(worker, now)
        } else {
            return Err(format!(
                "{scope:?} is not a breaker: name a worker or `system`"
            ));
        };
        let before = breaker.state();
        let moved = match action {
            OperatorAction::Reset => breaker.reset(now, reason),
            OperatorAction::ForceOpen => breaker.force_open(now, reason),
            OperatorAction::Disable => breaker.disable(now, reason),
        };
        moved
            .map(|t| t.command(scope, now))
            .ok_or_else(|| format!("the breaker of {scope} is already {before}"))
    }

    /// Closes every worker breaker that tripped by itself (open or half-open); an operator's
    /// forced-open or disabled ones stay. Returns how many were reset.
    pub fn reset_tripped(&mut self, reason: &str, now: Timestamp, out: &mut Vec<Command>) -> usize {
        let mut reset = 0;
        for (worker, breaker) in &mut self.workers {
            if matches!(breaker.state(), BreakerState::Open | BreakerState::HalfOpen) {
                let moved = breaker.reset(now, reason);
                reset += usize::from(moved.is_some());
                push(out, &worker_scope(worker), moved, now);
            }
        }
        reset
    }

    /// Every breaker's numbers, the system's first.
    pub fn snapshots(&self, now: Timestamp) -> Vec<(String, BreakerSnapshot)> {
        let mut all = vec![(SYSTEM_SCOPE.to_string(), self.system.snapshot(now))];
        all.extend((self.workers.iter()).map(|(w, b)| (worker_scope(w), b.snapshot(now))));
        all
    }

    /// The worker left the fleet: its breaker and permits go.
    pub fn forget(&mut self, worker: &str) {
        self.workers.remove(worker);
        self.sampled.remove(worker);
        self.permits.retain(|_, (holder, _)| holder != worker);
    }
}

fn push(out: &mut Vec<Command>, scope: &str, moved: Option<Transition>, now: Timestamp) {
    if let Some(t) = moved {
        out.push(t.command(scope, now));
    }
}

#[cfg(test)]
mod tests;
