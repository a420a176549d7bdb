//! A circuit breaker: stop sending work where the infrastructure keeps failing, try again
//! carefully after a wait, and tell the recovery planner how hard to push meanwhile
//! (ARCHITECTURE.md § Circuit breakers).
//!
//! # Pure, like the planner
//!
//! A [`Breaker`] reads no clock, does no I/O and draws no global random numbers. Every method
//! that depends on time takes the proposer's wall-clock `now` as a [`Timestamp`] — the unit of
//! the `at` the replicated commands carry, so that a state entered on one leader can be timed
//! on the next. The jitter of its open waits comes from a generator seeded at construction;
//! the same seed and the same calls give the same waits. A wall clock that steps back is read
//! as no time having passed.
//!
//! # Who owns breakers
//!
//! The leader's dispatch and recovery drivers own one breaker per worker (scope
//! `worker:<id>`: no tasks go to a worker whose breaker is open) and one system breaker (scope
//! `system`), whose state picks the [`RecoveryPolicy`](super::RecoveryPolicy) level through
//! [`level_for`]. A driver asks [`Breaker::allow`] before each call (a task assignment), keeps
//! the [`Permit`], and hands it back with the call's [`CallOutcome`] to [`Breaker::record`]. It
//! calls [`Breaker::poll`] at [`Breaker::next_deadline`] so that an open breaker turns half-open
//! on time even when nothing asks.
//!
//! Every state change is returned as a [`Transition`], and the driver proposes it as
//! `Command::BreakerTransition { scope, from, to, reason, at }` ([`Transition::command`]):
//! breaker states are replicated like every other decision. The breaker itself is soft state;
//! a new leader rebuilds each one with [`Breaker::restore`] from the replicated state and the
//! time of its last transition, so an open breaker stays open for its wait counted from when it
//! opened, not from the failover. The failure window, the back-off and trials in flight are not
//! replicated: a restored breaker starts them afresh.
//!
//! # States
//!
//! | from → to | when |
//! |---|---|
//! | closed → open | the window holds at least `minimum_calls` calls and their failure rate is at least `failure_rate_threshold` |
//! | open → half-open | the open wait has passed ([`Breaker::poll`], or the next [`Breaker::allow`]) |
//! | half-open → closed | all `half_open_trials` trial calls succeeded (the window is cleared, the back-off reset) |
//! | half-open → open | a trial call failed (the wait doubles: a re-open) |
//! | any → forced-open | [`Breaker::force_open`]: rejects everything until an operator resets it |
//! | any → disabled | [`Breaker::disable`]: allows everything and counts nothing |
//! | any → closed | [`Breaker::reset`]: window, trials and back-off cleared |
//!
//! Open rejects calls. Its wait is `open_wait × 2^reopens`, capped at `open_wait_max`, then
//! spread by ±`jitter` (so a capped wait may reach `open_wait_max × (1 + jitter)`), where
//! `reopens` counts the half-open → open transitions since the breaker last closed. Half-open
//! hands out `half_open_trials` trial permits and rejects every other call until their results
//! are in.
//!
//! # What counts as a failure
//!
//! Only the infrastructure's: a worker fault, a lost lease, a crashed or unreachable worker. A
//! test that fails, times out or cannot start because of its own command is a *success* for the
//! infrastructure — the call went through and the worker reported it ([`CallOutcome`]). A
//! suite of broken tests must never open a breaker.
//!
//! # Bounded memory
//!
//! A count window holds at most its `calls`; a time window drops calls older than its span on
//! every call and never holds more than [`MAX_WINDOW_CALLS`], the oldest going first, so a flood
//! cannot grow it.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{MAX_SETTING, RecoveryLevel, human, millis};
use crate::state::command::{BreakerState, Command, Outcome, Timestamp};

/// The most calls a window holds, of either kind.
pub const MAX_WINDOW_CALLS: usize = 10_000;

/// Which recent calls the failure rate is computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// The last `calls` calls, however old: suits a worker that gets few tasks.
    Count { calls: usize },
    /// The calls of the last `span_ms` milliseconds: suits the system breaker, which sees many,
    /// and forgets an old burst of failures by itself.
    Time { span_ms: u64 },
}

/// A breaker's settings. In a TOML file the keys are the field names; missing keys take the
/// defaults and unknown keys are refused, as in the coordinator's own file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// The calls the failure rate is computed over. Default: the last 20 calls.
    pub window: Window,
    /// Calls the window must hold before the breaker can trip, so that one failure of the first
    /// call does not read as 100 %. Default 5.
    pub minimum_calls: usize,
    /// The failure rate (a fraction in (0, 1]) at or above which the breaker trips. Default 0.5.
    pub failure_rate_threshold: f64,
    /// How long the breaker stays open the first time, before trial calls. Default 30 s.
    pub open_wait_ms: u64,
    /// The longest the doubling back-off makes an open wait, before jitter. Default 5 minutes.
    pub open_wait_max_ms: u64,
    /// Each open wait is spread by up to ± this fraction (in [0, 1)), so that breakers that
    /// opened together do not all try again together. Default 0.2.
    pub jitter: f64,
    /// Trial calls let through when half-open; all must succeed to close. Default 3.
    pub half_open_trials: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Window::Count { calls: 20 },
            minimum_calls: 5,
            failure_rate_threshold: 0.5,
            open_wait_ms: 30_000,
            open_wait_max_ms: 300_000,
            jitter: 0.2,
            half_open_trials: 3,
        }
    }
}

impl BreakerConfig {
    /// Refuses settings the breaker cannot follow, naming the key and what it accepts.
    pub fn validate(&self) -> Result<(), String> {
        let week_ms = MAX_SETTING.as_millis();
        match self.window {
            Window::Count { calls } => {
                if !(1..=MAX_WINDOW_CALLS).contains(&calls) {
                    return Err(format!(
                        "breaker window.calls is {calls}; it must be between 1 and \
                         {MAX_WINDOW_CALLS}"
                    ));
                }
                if self.minimum_calls > calls {
                    return Err(format!(
                        "breaker minimum_calls is {}, more than the {calls} calls the count \
                         window holds; it must be at most window.calls, or the breaker could \
                         never trip",
                        self.minimum_calls
                    ));
                }
            }
            Window::Time { span_ms } => {
                if span_ms == 0 || u128::from(span_ms) > week_ms {
                    return Err(format!(
                        "breaker window.span_ms is {span_ms}; it must be above 0 and at most a \
                         week ({week_ms})"
                    ));
                }
            }
        }
        if self.minimum_calls == 0 {
            return Err("breaker minimum_calls is 0; it must be at least 1".to_string());
        }
        let threshold = self.failure_rate_threshold;
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(format!(
                "breaker failure_rate_threshold is {threshold}; it must be a fraction above 0 \
                 and at most 1 (0.5 trips at 50 % failures)"
            ));
        }
        for (key, value) in [
            ("open_wait_ms", self.open_wait_ms),
            ("open_wait_max_ms", self.open_wait_max_ms),
        ] {
            if value == 0 || u128::from(value) > week_ms {
                return Err(format!(
                    "breaker {key} is {value}; it must be above 0 and at most a week ({week_ms})"
                ));
            }
        }
        if self.open_wait_max_ms < self.open_wait_ms {
            return Err(format!(
                "breaker open_wait_max_ms is {}, below open_wait_ms ({}); it must be at least \
                 open_wait_ms",
                self.open_wait_max_ms, self.open_wait_ms
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(format!(
                "breaker jitter is {}; it must be a fraction at least 0 and below 1 (0.2 spreads \
                 waits by ±20 %)",
                self.jitter
            ));
        }
        if self.half_open_trials == 0 {
            return Err("breaker half_open_trials is 0; it must be at least 1".to_string());
        }
        Ok(())
    }

    fn open_wait(&self) -> Duration {
        Duration::from_millis(self.open_wait_ms)
    }

    fn open_wait_max(&self) -> Duration {
        Duration::from_millis(self.open_wait_max_ms)
    }
}

/// How a call went, *for the infrastructure*.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CallOutcome {
    /// The call went through and the worker reported its result — whatever the result: a
    /// failing, timed-out or unstartable test is a success here.
    Success,
    /// The infrastructure failed the call: a worker fault, a lost lease, a crashed or
    /// unreachable worker.
    InfraFailure,
}

impl CallOutcome {
    /// What a worker's report of an attempt says about the infrastructure: only
    /// [`Outcome::WorkerFault`] is a failure. (Lost leases and lost workers are not reports; the
    /// driver records them as [`CallOutcome::InfraFailure`] itself.)
    pub fn from_attempt(outcome: Outcome) -> CallOutcome {
        match outcome {
            Outcome::WorkerFault => CallOutcome::InfraFailure,
            Outcome::Passed | Outcome::Failed | Outcome::TimedOut | Outcome::Error => {
                CallOutcome::Success
            }
        }
    }
}

/// The answer of [`Breaker::allow`]. The caller keeps it and hands it back to
/// [`Breaker::record`] with the call's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Permit {
    /// Go ahead (closed or disabled).
    Allowed,
    /// Go ahead as a half-open trial call: its outcome decides whether the breaker closes.
    /// `round` numbers the half-open period that gave the slot out, so that the late result of
    /// an earlier period's trial is not taken for one of this period's.
    Trial { round: u32 },
    /// Do not make the call (open, forced open, or half-open with every trial slot taken).
    Rejected,
}

impl Permit {
    /// True for [`Permit::Allowed`] and [`Permit::Trial`].
    pub fn is_allowed(self) -> bool {
        !matches!(self, Permit::Rejected)
    }
}

/// A change of state, for the driver to propose as a `BreakerTransition` command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    /// Why, for people, with the numbers behind it.
    pub reason: String,
}

impl Transition {
    /// The command that replicates this transition of the breaker of `scope`, made at `at`.
    pub fn command(self, scope: impl Into<String>, at: Timestamp) -> Command {
        Command::BreakerTransition {
            scope: scope.into(),
            from: self.from,
            to: self.to,
            reason: self.reason,
            at,
        }
    }
}

/// What a breaker looks like at an instant, for status pages and metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// When the breaker entered `state`.
    pub since: Timestamp,
    /// How long it has been in `state`.
    pub time_in_state_ms: u64,
    /// Failures over calls in the window (0 when it is empty).
    pub failure_rate: f64,
    pub calls_in_window: usize,
    pub failures_in_window: usize,
    /// Calls rejected since the breaker was built (a reset does not clear it).
    pub rejected_calls: u64,
    /// Trial calls given out in this half-open period whose outcome is not in yet.
    pub trials_in_flight: u32,
    /// Half-open → open transitions since the breaker last closed: the back-off exponent.
    pub reopens: u32,
    /// When an open breaker turns half-open; `None` in every other state.
    pub next_trial_at: Option<Timestamp>,
}

/// The recovery level the system breaker's state calls for: the harder the infrastructure
/// fails, the more (and the quicker) recovery attempts. A disabled breaker picks nothing, and
/// the base policy stays in force.
pub fn level_for(state: BreakerState) -> Option<RecoveryLevel> {
    match state {
        BreakerState::Closed => Some(RecoveryLevel::Low),
        BreakerState::HalfOpen => Some(RecoveryLevel::Medium),
        BreakerState::Open | BreakerState::ForcedOpen => Some(RecoveryLevel::High),
        BreakerState::Disabled => None,
    }
}

/// One circuit breaker; see the [module docs](self) for the rules.
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    /// When `state` was entered.
    since: Timestamp,
    /// The closed state's recent calls.
    window: RecentCalls,
    /// When an open breaker turns half-open; `Some` only while open.
    next_trial_at: Option<Timestamp>,
    /// Numbers the half-open periods (see [`Permit::Trial`]).
    round: u32,
    /// Trial slots of this half-open period given out, and of those, still out.
    trials_given: u32,
    trials_in_flight: u32,
    /// Trial calls of this half-open period that succeeded.
    trial_successes: u32,
    /// Half-open → open transitions since the last close.
    reopens: u32,
    /// Rejected calls since the breaker was built.
    rejected: u64,
    /// The state of the jitter's generator (splitmix64).
    rng: u64,
}

impl Breaker {
    /// A closed breaker, built at `now`, its jitter seeded by `seed`.
    pub fn new(config: BreakerConfig, now: Timestamp, seed: u64) -> Result<Breaker, String> {
        Breaker::restore(config, BreakerState::Closed, now, seed)
    }

    /// Rebuilds a breaker from the replicated `state` and the time of the transition that
    /// entered it (`since`), as a new leader does. Open stays open for a first open wait
    /// counted from `since` (the back-off is not replicated, so it is the base wait, jittered);
    /// half-open starts a new trial period with nothing in flight; the window starts empty.
    pub fn restore(
        config: BreakerConfig,
        state: BreakerState,
        since: Timestamp,
        seed: u64,
    ) -> Result<Breaker, String> {
        config.validate()?;
        let mut breaker = Breaker {
            window: RecentCalls::new(config.window),
            config,
            state,
            since,
            next_trial_at: None,
            round: 0,
            trials_given: 0,
            trials_in_flight: 0,
            trial_successes: 0,
            reopens: 0,
            rejected: 0,
            rng: seed,
        };
        if state == BreakerState::Open {
            let wait = breaker.open_wait();
            breaker.next_trial_at = Some(later(since, wait));
        }
        Ok(breaker)
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When the current state was entered.
    pub fn since(&self) -> Timestamp {
        self.since
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// When [`Breaker::poll`] next has something to do: the end of an open wait. `None` in
    /// every other state, where only calls and operators change anything.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.next_trial_at
    }

    /// May a call be made at `now`? An open breaker whose wait has passed turns half-open
    /// first, and returns that transition with the first trial permit.
    #[must_use]
    pub fn allow(&mut self, now: Timestamp) -> (Permit, Option<Transition>) {
        self.window.prune(now);
        let transition = self.poll(now);
        let permit = match self.state {
            BreakerState::Closed | BreakerState::Disabled => Permit::Allowed,
            BreakerState::HalfOpen if self.trials_given < self.config.half_open_trials => {
                self.trials_given += 1;
                self.trials_in_flight += 1;
                Permit::Trial { round: self.round }
            }
            BreakerState::HalfOpen | BreakerState::Open | BreakerState::ForcedOpen => {
                self.rejected += 1;
                Permit::Rejected
            }
        };
        (permit, transition)
    }

    /// The outcome of a call made with `permit`, known at `now`. Only a closed breaker counts
    /// allowed calls (a result that comes back after the breaker opened belongs to a window
    /// already judged), and only a half-open one counts trials of its own period; a disabled
    /// breaker counts nothing.
    #[must_use]
    pub fn record(
        &mut self,
        now: Timestamp,
        permit: Permit,
        outcome: CallOutcome,
    ) -> Option<Transition> {
        self.window.prune(now);
        match (self.state, permit) {
            (BreakerState::Closed, Permit::Allowed) => {
                self.window.push(now, outcome == CallOutcome::InfraFailure);
                self.check_trip(now)
            }
            (BreakerState::HalfOpen, Permit::Trial { round })
                if round == self.round && self.trials_in_flight > 0 =>
            {
                self.trials_in_flight -= 1;
                match outcome {
                    CallOutcome::Success => {
                        self.trial_successes += 1;
                        (self.trial_successes >= self.config.half_open_trials).then(|| {
                            let reason = format!(
                                "{} succeeded: closed",
                                count(self.trial_successes, "trial call")
                            );
                            self.close(now, reason)
                        })
                    }
                    CallOutcome::InfraFailure => {
                        self.reopens = self.reopens.saturating_add(1);
                        let wait = self.open_wait();
                        let reason = format!(
                            "trial call failed: open again for {} (re-open {})",
                            human(wait),
                            self.reopens
                        );
                        Some(self.open(now, wait, reason))
                    }
                }
            }
            _ => None,
        }
    }

    /// Turns an open breaker half-open once its wait has passed.
    #[must_use]
    pub fn poll(&mut self, now: Timestamp) -> Option<Transition> {
        if self.next_trial_at.is_none_or(|at| now < at) {
            return None;
        }
        let reason = format!(
            "open for {}: trying {}",
            human(elapsed(self.since, now)),
            count(self.config.half_open_trials, "trial call")
        );
        self.next_trial_at = None;
        self.round = self.round.wrapping_add(1);
        self.trials_given = 0;
        self.trials_in_flight = 0;
        self.trial_successes = 0;
        Some(self.enter(BreakerState::HalfOpen, now, reason))
    }

    /// An operator opens the breaker until a [`Breaker::reset`]: every call is rejected and
    /// no wait ends it.
    #[must_use]
    pub fn force_open(&mut self, now: Timestamp, reason: &str) -> Option<Transition> {
        if self.state == BreakerState::ForcedOpen {
            return None;
        }
        self.end_trials();
        Some(self.enter(
            BreakerState::ForcedOpen,
            now,
            format!("forced open by an operator: {reason}"),
        ))
    }

    /// An operator takes the breaker out of the way until a [`Breaker::reset`]: every call is
    /// allowed and no outcome is counted.
    #[must_use]
    pub fn disable(&mut self, now: Timestamp, reason: &str) -> Option<Transition> {
        if self.state == BreakerState::Disabled {
            return None;
        }
        self.end_trials();
        Some(self.enter(
            BreakerState::Disabled,
            now,
            format!("disabled by an operator: {reason}"),
        ))
    }

    /// Closes the breaker and forgets its window, trials and back-off (not its count of
    /// rejected calls). A closed breaker is cleared too, without a transition.
    #[must_use]
    pub fn reset(&mut self, now: Timestamp, reason: &str) -> Option<Transition> {
        let was = self.state;
        let transition = self.close(now, format!("reset by an operator: {reason}"));
        (was != BreakerState::Closed).then_some(transition)
    }

    /// The breaker's numbers at `now`. A time window's numbers count only calls younger than
    /// its span at `now`.
    pub fn snapshot(&self, now: Timestamp) -> BreakerSnapshot {
        let (calls, failures) = self.window.counts(now);
        BreakerSnapshot {
            state: self.state,
            since: self.since,
            time_in_state_ms: millis(elapsed(self.since, now)),
            failure_rate: rate(failures, calls),
            calls_in_window: calls,
            failures_in_window: failures,
            rejected_calls: self.rejected,
            trials_in_flight: self.trials_in_flight,
            reopens: self.reopens,
            next_trial_at: self.next_trial_at,
        }
    }

    /// Closed → open when the window (pruned at `now`) holds enough calls and fails enough of
    /// them.
    fn check_trip(&mut self, now: Timestamp) -> Option<Transition> {
        let (calls, failures) = (self.window.calls.len(), self.window.failures);
        let failure_rate = rate(failures, calls);
        if calls < self.config.minimum_calls || failure_rate < self.config.failure_rate_threshold {
            return None;
        }
        let of = match self.config.window {
            Window::Count { .. } => format!("{failures} of the last {calls} calls"),
            Window::Time { span_ms } => format!(
                "{failures} of {calls} calls in the last {}",
                human(Duration::from_millis(span_ms))
            ),
        };
        let wait = self.open_wait();
        let reason = format!(
            "failure rate {} ({of}) ≥ {} threshold: open for {}",
            percent(failure_rate),
            percent(self.config.failure_rate_threshold),
            human(wait)
        );
        Some(self.open(now, wait, reason))
    }

    fn open(&mut self, now: Timestamp, wait: Duration, reason: String) -> Transition {
        self.end_trials();
        self.next_trial_at = Some(later(now, wait));
        self.enter(BreakerState::Open, now, reason)
    }

    /// Enters closed with a clean slate: no window, no trials, no back-off.
    fn close(&mut self, now: Timestamp, reason: String) -> Transition {
        self.end_trials();
        self.window.clear();
        self.reopens = 0;
        self.enter(BreakerState::Closed, now, reason)
    }

    /// Forgets the trials of the current half-open period and any open wait.
    fn end_trials(&mut self) {
        self.next_trial_at = None;
        self.trials_given = 0;
        self.trials_in_flight = 0;
        self.trial_successes = 0;
    }

    fn enter(&mut self, to: BreakerState, now: Timestamp, reason: String) -> Transition {
        let from = self.state;
        self.state = to;
        self.since = now;
        Transition { from, to, reason }
    }

    /// The wait of the next open: `open_wait × 2^reopens`, at most `open_wait_max`, spread by
    /// `× (1 + jitter × u)` with `u ∈ [-1, 1)` from the seeded generator.
    fn open_wait(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.reopens).unwrap_or(u32::MAX);
        let backoff = self
            .config
            .open_wait()
            .saturating_mul(factor)
            .min(self.config.open_wait_max());
        let spread = self.config.jitter * (2.0 * self.unit() - 1.0);
        backoff.mul_f64(1.0 + spread)
    }

    /// The next number in [0, 1) of the splitmix64 sequence seeded at construction.
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.rng;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The calls the failure rate is computed over, oldest first, with their failures counted.
#[derive(Clone, Debug)]
struct RecentCalls {
    kind: Window,
    /// When each call's outcome was recorded, and whether it was an infrastructure failure.
    calls: VecDeque<(Timestamp, bool)>,
    failures: usize,
}

impl RecentCalls {
    fn new(kind: Window) -> Self {
        RecentCalls {
            kind,
            calls: VecDeque::new(),
            failures: 0,
        }
    }

    fn capacity(&self) -> usize {
        match self.kind {
            Window::Count { calls } => calls.min(MAX_WINDOW_CALLS),
            Window::Time { .. } => MAX_WINDOW_CALLS,
        }
    }

    fn push(&mut self, at: Timestamp, failed: bool) {
        while self.calls.len() >= self.capacity() {
            self.pop_oldest();
        }
        self.calls.push_back((at, failed));
        self.failures += usize::from(failed);
    }

    /// Drops the calls a time window no longer covers at `now`.
    fn prune(&mut self, now: Timestamp) {
        while self
            .calls
            .front()
            .is_some_and(|&(at, _)| !self.covers(at, now))
        {
            self.pop_oldest();
        }
    }

    /// (calls, failures) in the window at `now`, without pruning it: what a snapshot shows.
    fn counts(&self, now: Timestamp) -> (usize, usize) {
        match self.kind {
            Window::Count { .. } => (self.calls.len(), self.failures),
            Window::Time { .. } => self
                .calls
                .iter()
                .filter(|&&(at, _)| self.covers(at, now))
                .fold((0, 0), |(calls, failures), &(_, failed)| {
                    (calls + 1, failures + usize::from(failed))
                }),
        }
    }

    /// Whether a call recorded at `at` is still in the window at `now`: always for a count
    /// window, while younger than the span for a time window.
    fn covers(&self, at: Timestamp, now: Timestamp) -> bool {
        match self.kind {
            Window::Count { .. } => true,
            Window::Time { span_ms } => elapsed(at, now) < Duration::from_millis(span_ms),
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, failed)) = self.calls.pop_front() {
            self.failures -= usize::from(failed);
        }
    }

    fn clear(&mut self) {
        self.calls.clear();
        self.failures = 0;
    }
}

/// `at + duration`, saturating.
fn later(at: Timestamp, duration: Duration) -> Timestamp {
    let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
    Timestamp(at.micros().saturating_add(micros))
}

/// The time from `since` to `now`; zero if the clock stepped back.
fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    let micros = now.micros().saturating_sub(since.micros());
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

fn rate(failures: usize, calls: usize) -> f64 {
    if calls == 0 {
        0.0
    } else {
        failures as f64 / calls as f64
    }
}

/// A fraction as a percentage for people: "60%", "66.7%".
fn percent(fraction: f64) -> String {
    let text = format!("{:.1}", fraction * 100.0);
    format!("{}%", text.strip_suffix(".0").unwrap_or(&text))
}

/// "1 trial call", "3 trial calls".
fn count(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests;
