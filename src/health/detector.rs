//! The worker failure detector: heartbeats, session events and leader changes go in, liveness
//! [`Transition`]s come out.
//!
//! [`Detector`] is pure. It reads no clock (every method takes `now`), does no I/O and draws no
//! random numbers; the health monitor on the leader feeds it events, calls [`Detector::tick`]
//! at [`Detector::next_deadline`], and proposes a `SetWorkerStatus` command for each transition.
//!
//! # The rule
//!
//! For a worker last seen at `last_seen` (its last heartbeat, session open, registration or the
//! last leader change), let `silent = now − last_seen`, `suspect_after = suspect_after_missed ×
//! heartbeat_interval`, and `phi(silent)` the phi-accrual estimate described below.
//!
//! * **Alive → Suspect** when `silent ≥ suspect_after` **and** `phi(silent) ≥ phi_suspect`, or at
//!   once when its session closes. Because phi only grows with silence, the phi condition is a
//!   second silence threshold, `phi_silence` (where phi reaches `phi_suspect`); the worker is
//!   suspected at `last_seen + max(suspect_after, phi_silence)`. For a regular worker
//!   `phi_silence` is far below `suspect_after`, so suspicion comes exactly at the fixed point;
//!   a jittery worker's wider distribution pushes it later.
//! * **→ Failed** (from Alive or Suspect) at the earliest of
//!   - `last_seen + failure_timeout` — the hard bound, always, whatever phi says;
//!   - `closed_at + min(reconnect_window, failure_timeout)` if the session closed and has not
//!     reopened;
//!   - `last_seen + max(suspect_after, phi_fail_silence)` if `phi_fail` is finite (opt-in early
//!     failure; off by default, so failure comes exactly at `failure_timeout`);
//!
//!   but never before the leader-change grace ends (`leader_changed(t)` + `grace`).
//! * **Suspect/Failed → Alive** only on evidence: a heartbeat or a session (re)opening. Time
//!   alone never moves a worker back towards Alive, and a failed worker has no deadline.
//!
//! Each change is reported once: by the event method that caused it (`heartbeat`,
//! `session_opened`, `session_closed`) or by the `tick` that found a deadline passed. A worker
//! that stays failed is not reported again.
//!
//! # Phi accrual
//!
//! Hayashibara et al.: `phi = −log10(P(the next heartbeat arrives later than now))`. Each worker
//! keeps the last [`DetectorConfig::history`] heartbeat inter-arrival times; their mean `μ` and
//! standard deviation `σ` (at least [`DetectorConfig::min_std_dev`], so a perfectly regular
//! worker is not hair-trigger) describe a normal distribution. With `z = (silent − μ)/σ`, the
//! tail probability uses the logistic approximation of the normal CDF also used by Akka,
//! `P ≈ 1/(1 + e^y)` with `y = z(1.5976 + 0.070566 z²)`, so `phi = log10(1 + e^y)` — finite,
//! smooth, increasing in `silent`, and invertible, which is how `phi_silence` is computed. Before
//! the first interval is known, `μ` is the configured heartbeat interval.
//!
//! Gaps of `failure_timeout` or more are outages, not jitter, and are not sampled; nor is the
//! gap across a leader change.
//!
//! # Cost
//!
//! `tick` and `next_deadline` visit every worker once (`O(n)`, a few comparisons each: the
//! distribution is summarised when a heartbeat arrives, which costs `O(history)`).

use std::collections::{BTreeMap, VecDeque};
use std::f64::consts::LN_10;
use std::fmt;
use std::time::{Duration, Instant};

use crate::state::command::{WorkerId, WorkerStatus};

/// Settings of the [`Detector`]. Build one with [`DetectorConfig::from_timing`], `default()` or
/// [`DetectorConfig::tuned`], adjust, and check it with [`DetectorConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// How often workers heartbeat; the unit of "missed heartbeats".
    pub heartbeat_interval: Duration,
    /// How many intervals of silence before a worker can be suspected (if phi agrees).
    pub suspect_after_missed: u32,
    /// A worker silent this long is failed, always: the hard bound
    /// (ARCHITECTURE.md § Failure detection).
    pub failure_timeout: Duration,
    /// Phi a silent worker must also reach before it is suspected. 8 means "a heartbeat this
    /// late happens once in 10⁸"; higher suspects jittery workers later.
    pub phi_suspect: f64,
    /// Phi at which a suspect worker fails before `failure_timeout`. `f64::INFINITY` (the
    /// default) switches early failure off, so failure comes exactly at `failure_timeout`.
    pub phi_fail: f64,
    /// After a leader change no worker is failed before `leader_changed(now)` + `grace`: the
    /// fleet is reconnecting to the new leader, and a failover must not mass-fail it.
    pub grace: Duration,
    /// A worker whose session closed is failed if it has not reopened one within this window
    /// (capped by `failure_timeout`). A dropped stream is a stronger signal than silence.
    pub reconnect_window: Duration,
    /// Floor of the inter-arrival standard deviation, so that a perfectly regular worker does
    /// not make phi explode on the first late heartbeat.
    pub min_std_dev: Duration,
    /// How many inter-arrival samples each worker keeps for the phi estimate.
    pub history: usize,
}

impl DetectorConfig {
    /// Settings derived from the two timings operators configure (`worker_heartbeat_interval_ms`,
    /// `worker_failure_timeout_ms`): suspect after 3 missed heartbeats, phi threshold 8, no
    /// phi-based early failure, grace = `failure_timeout`, reconnect window = 2 heartbeats
    /// (capped by `failure_timeout`), σ floor = a tenth of the heartbeat interval, 100 samples.
    pub fn from_timing(heartbeat_interval: Duration, failure_timeout: Duration) -> Self {
        DetectorConfig {
            heartbeat_interval,
            suspect_after_missed: 3,
            failure_timeout,
            phi_suspect: 8.0,
            phi_fail: f64::INFINITY,
            grace: failure_timeout,
            reconnect_window: heartbeat_interval.saturating_mul(2).min(failure_timeout),
            min_std_dev: heartbeat_interval / 10,
            history: 100,
        }
    }

    /// Fast detection for small, well-connected fleets: heartbeat 100 ms, suspect at 300 ms,
    /// failed at 500 ms, reconnect window 200 ms.
    pub fn tuned() -> Self {
        Self::from_timing(Duration::from_millis(100), Duration::from_millis(500))
    }

    /// The fixed suspicion point, `suspect_after_missed × heartbeat_interval`.
    pub fn suspect_after(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.suspect_after_missed)
    }

    /// The reconnect window as applied: never longer than `failure_timeout`.
    pub fn effective_reconnect_window(&self) -> Duration {
        self.reconnect_window.min(self.failure_timeout)
    }

    /// Refuses settings that cannot detect anything sensibly.
    pub fn validate(&self) -> Result<(), DetectorConfigError> {
        let durations = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("failure_timeout", self.failure_timeout),
            ("grace", self.grace),
            ("reconnect_window", self.reconnect_window),
            ("min_std_dev", self.min_std_dev),
        ];
        for (setting, value) in durations {
            if value.is_zero() {
                return Err(DetectorConfigError::Zero { setting });
            }
        }
        if self.suspect_after_missed == 0 {
            return Err(DetectorConfigError::Zero {
                setting: "suspect_after_missed",
            });
        }
        if self.history == 0 {
            return Err(DetectorConfigError::Zero { setting: "history" });
        }
        if self.heartbeat_interval >= self.failure_timeout {
            return Err(DetectorConfigError::HeartbeatNotBeforeFailure {
                heartbeat_interval: self.heartbeat_interval,
                failure_timeout: self.failure_timeout,
            });
        }
        if self.suspect_after() >= self.failure_timeout {
            return Err(DetectorConfigError::SuspectNotBeforeFailure {
                missed: self.suspect_after_missed,
                heartbeat_interval: self.heartbeat_interval,
                failure_timeout: self.failure_timeout,
            });
        }
        if !(self.phi_suspect.is_finite() && self.phi_suspect > 0.0) {
            return Err(DetectorConfigError::PhiSuspect {
                value: self.phi_suspect,
            });
        }
        if self.phi_fail.is_nan() || self.phi_fail <= self.phi_suspect {
            return Err(DetectorConfigError::PhiFail {
                phi_fail: self.phi_fail,
                phi_suspect: self.phi_suspect,
            });
        }
        Ok(())
    }
}

impl Default for DetectorConfig {
    /// The coordinator's defaults: heartbeat 1 s, suspect after 3 missed (3 s), failed after 5 s
    /// (ARCHITECTURE.md § Failure detection).
    fn default() -> Self {
        Self::from_timing(Duration::from_secs(1), Duration::from_secs(5))
    }
}

/// Why a [`DetectorConfig`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectorConfigError {
    /// A setting that must be positive is zero.
    #[error("failure detector setting `{setting}` is zero; it must be greater than zero")]
    Zero {
        /// The setting's name.
        setting: &'static str,
    },
    /// Workers would be failed before they could even miss one heartbeat.
    #[error(
        "heartbeat_interval ({}) must be shorter than failure_timeout ({}); a worker would be \
         failed before it had a chance to heartbeat",
        human(*heartbeat_interval),
        human(*failure_timeout)
    )]
    HeartbeatNotBeforeFailure {
        /// The configured heartbeat interval.
        heartbeat_interval: Duration,
        /// The configured failure timeout.
        failure_timeout: Duration,
    },
    /// The suspicion point is not before the failure point, so workers would never be suspect.
    #[error(
        "the suspect point (suspect_after_missed {missed} × heartbeat_interval {}) must come \
         before failure_timeout ({}); lower suspect_after_missed or raise failure_timeout",
        human(*heartbeat_interval),
        human(*failure_timeout)
    )]
    SuspectNotBeforeFailure {
        /// The configured number of missed heartbeats.
        missed: u32,
        /// The configured heartbeat interval.
        heartbeat_interval: Duration,
        /// The configured failure timeout.
        failure_timeout: Duration,
    },
    /// `phi_suspect` is not a positive finite number.
    #[error("phi_suspect must be a finite number above 0 (8 is usual), got {value}")]
    PhiSuspect {
        /// The configured value.
        value: f64,
    },
    /// `phi_fail` is not above `phi_suspect`.
    #[error(
        "phi_fail ({phi_fail}) must be above phi_suspect ({phi_suspect}); use infinity to \
         switch phi-based early failure off"
    )]
    PhiFail {
        /// The configured `phi_fail`.
        phi_fail: f64,
        /// The configured `phi_suspect`.
        phi_suspect: f64,
    },
}

/// What the detector believes about a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Heartbeating within bounds.
    Alive,
    /// Silent past the suspicion point, or its session closed: no new work, but its tasks stay.
    Suspect,
    /// Silent past the failure point: its tasks are requeued and recovery begins.
    Failed,
}

impl Liveness {
    /// The replicated worker status this liveness is proposed as.
    pub fn status(self) -> WorkerStatus {
        match self {
            Liveness::Alive => WorkerStatus::Healthy,
            Liveness::Suspect => WorkerStatus::Suspect,
            Liveness::Failed => WorkerStatus::Failed,
        }
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Failed => "failed",
        })
    }
}

/// One change of a worker's liveness, to be proposed as a `SetWorkerStatus` command.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The worker that changed.
    pub worker: WorkerId,
    /// Its liveness before.
    pub from: Liveness,
    /// Its liveness now.
    pub to: Liveness,
    /// Why, for humans: "no heartbeat for 3.2 s (3 missed, phi 4.1)".
    pub reason: String,
    /// How long the worker had been silent when this was decided.
    pub silent_for: Duration,
    /// The phi estimate at that moment.
    pub phi: f64,
}

/// The failure detector for every worker the leader knows (see the module docs for the rule).
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    /// Ordered, so `tick` reports transitions in worker order and runs reproduce.
    workers: BTreeMap<WorkerId, Watch>,
    /// No worker is failed before this instant (set by [`Detector::leader_changed`]).
    grace_until: Option<Instant>,
    /// The `z` at which phi reaches `phi_suspect`; computed once, as it depends only on config.
    z_suspect: f64,
    /// The `z` at which phi reaches `phi_fail`, if early failure is on.
    z_fail: Option<f64>,
}

/// The detector's soft state about one worker.
#[derive(Debug, Clone)]
struct Watch {
    liveness: Liveness,
    /// Last sign of life: heartbeat, session open, registration or leader change.
    last_seen: Instant,
    /// The previous heartbeat of the current arrival chain; the next heartbeat's interval is
    /// measured from it. `None` after registration and leader changes.
    last_heartbeat: Option<Instant>,
    /// When its session closed, if it has not reopened since.
    closed_at: Option<Instant>,
    /// Recent inter-arrival times in seconds, oldest first.
    intervals: VecDeque<f64>,
    /// Their summary, refreshed when `intervals` changes.
    arrivals: Arrivals,
}

/// Mean and (floored) standard deviation of a worker's inter-arrival times, in seconds.
#[derive(Debug, Clone, Copy)]
struct Arrivals {
    mean: f64,
    std_dev: f64,
}

/// What the next deadline of a worker does, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cause {
    Silence,
    PhiFail,
    SessionClosed,
}

impl Detector {
    /// A detector with no workers, or the reason `config` is refused.
    pub fn new(config: DetectorConfig) -> Result<Self, DetectorConfigError> {
        config.validate()?;
        let z_fail = config
            .phi_fail
            .is_finite()
            .then(|| z_for_phi(config.phi_fail));
        Ok(Detector {
            z_suspect: z_for_phi(config.phi_suspect),
            z_fail,
            config,
            workers: BTreeMap::new(),
            grace_until: None,
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Starts watching `worker` with the `liveness` the replicated state gives it, as a new
    /// leader does for every worker it inherits; its deadline starts at `now`. A worker already
    /// watched keeps its history but takes the new liveness and a fresh deadline.
    pub fn track(&mut self, worker: &str, liveness: Liveness, now: Instant) {
        let config = &self.config;
        let watch =
            (self.workers.entry(worker.to_owned())).or_insert_with(|| Watch::new(now, config));
        watch.liveness = liveness;
        watch.last_seen = now;
        watch.last_heartbeat = None;
        watch.closed_at = None;
    }

    /// A heartbeat from `worker`. An unknown worker starts being watched (alive); a suspect or
    /// failed one comes back alive, and that transition is returned.
    #[must_use = "a returned transition must be proposed"]
    pub fn heartbeat(&mut self, worker: &str, now: Instant) -> Option<Transition> {
        let config = &self.config;
        let watch =
            (self.workers.entry(worker.to_owned())).or_insert_with(|| Watch::new(now, config));
        watch.sample(now, config);
        let before = watch.show_life(now);
        self.revive(worker, before, now, "heartbeat")
    }

    /// `worker` opened a session with this leader: a sign of life, like a heartbeat (but its
    /// interval is not sampled). A suspect or failed worker comes back alive.
    #[must_use = "a returned transition must be proposed"]
    pub fn session_opened(&mut self, worker: &str, now: Instant) -> Option<Transition> {
        let config = &self.config;
        let watch =
            (self.workers.entry(worker.to_owned())).or_insert_with(|| Watch::new(now, config));
        let before = watch.show_life(now);
        self.revive(worker, before, now, "session reopened")
    }

    /// `worker`'s session stream ended. An alive worker becomes suspect at once (returned); it
    /// fails unless it reopens a session within the reconnect window.
    #[must_use = "a returned transition must be proposed"]
    pub fn session_closed(&mut self, worker: &str, now: Instant) -> Option<Transition> {
        let watch = self.workers.get_mut(worker)?;
        if watch.liveness == Liveness::Failed {
            return None;
        }
        watch.closed_at = Some(now);
        if watch.liveness == Liveness::Suspect {
            return None;
        }
        watch.liveness = Liveness::Suspect;
        let silent = now.saturating_duration_since(watch.last_seen);
        Some(self.transition(
            worker,
            Liveness::Alive,
            Liveness::Suspect,
            format!("session closed; last seen {} ago", human(silent)),
            now,
        ))
    }

    /// Stops watching `worker` (it left, or was removed). Returns whether it was watched.
    pub fn forget(&mut self, worker: &str) -> bool {
        self.workers.remove(worker).is_some()
    }

    /// This node became leader at `now`: every watched worker's deadline starts afresh, and no
    /// worker (including ones tracked later) fails before `now + grace`. Liveness is kept: a
    /// suspect worker stays suspect until it shows life.
    pub fn leader_changed(&mut self, now: Instant) {
        self.grace_until = now.checked_add(self.config.grace);
        for watch in self.workers.values_mut() {
            watch.last_seen = now;
            watch.last_heartbeat = None;
            watch.closed_at = None;
        }
    }

    /// Moves every worker whose deadline has passed (Alive → Suspect, Alive/Suspect → Failed)
    /// and returns those changes, in worker order. Call it at [`Detector::next_deadline`].
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let mut due = Vec::new();
        for (worker, watch) in &self.workers {
            match self.fail_deadline(watch) {
                Some((at, cause, held)) if now >= at => {
                    due.push((worker.clone(), Liveness::Failed, cause, held));
                }
                _ if watch.liveness == Liveness::Alive
                    && self.suspect_deadline(watch).is_some_and(|at| now >= at) =>
                {
                    due.push((worker.clone(), Liveness::Suspect, Cause::Silence, false));
                }
                _ => {}
            }
        }
        let mut transitions = Vec::with_capacity(due.len());
        for (worker, to, cause, held) in due {
            let Some(watch) = self.workers.get_mut(&worker) else {
                continue;
            };
            let from = std::mem::replace(&mut watch.liveness, to);
            let reason = self.reason(&worker, to, cause, held, now);
            transitions.push(self.transition(&worker, from, to, reason, now));
        }
        transitions
    }

    /// The earliest instant at which [`Detector::tick`] would report something, if no events
    /// arrive before it; `None` when no deadline is pending (no workers, or all failed).
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.workers.values())
            .filter_map(|watch| {
                let fail_at = self.fail_deadline(watch).map(|(at, ..)| at);
                let suspect_at = (watch.liveness == Liveness::Alive)
                    .then(|| self.suspect_deadline(watch))
                    .flatten();
                [fail_at, suspect_at].into_iter().flatten().min()
            })
            .min()
    }

    /// What the detector believes about `worker`, if it is watched.
    pub fn liveness(&self, worker: &str) -> Option<Liveness> {
        self.workers.get(worker).map(|watch| watch.liveness)
    }

    /// The phi estimate for `worker` at `now`, if it is watched.
    pub fn phi(&self, worker: &str, now: Instant) -> Option<f64> {
        let watch = self.workers.get(worker)?;
        let silent = now.saturating_duration_since(watch.last_seen);
        Some(watch.arrivals.phi(silent))
    }

    /// How many workers are watched.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether no worker is watched.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The transition back to Alive after a sign of life, if the worker was not alive.
    fn revive(
        &self,
        worker: &str,
        (before, silent): (Liveness, Duration),
        now: Instant,
        what: &str,
    ) -> Option<Transition> {
        if before == Liveness::Alive {
            return None;
        }
        let reason = format!("{what} after {} of silence (was {before})", human(silent));
        let mut transition = self.transition(worker, before, Liveness::Alive, reason, now);
        // The numbers describe the silence that just ended, not the zero silence of now.
        transition.silent_for = silent;
        transition.phi = self.workers.get(worker)?.arrivals.phi(silent);
        Some(transition)
    }

    fn transition(
        &self,
        worker: &str,
        from: Liveness,
        to: Liveness,
        reason: String,
        now: Instant,
    ) -> Transition {
        let silent_for = (self.workers.get(worker))
            .map(|watch| now.saturating_duration_since(watch.last_seen))
            .unwrap_or_default();
        let phi = self.phi(worker, now).unwrap_or(0.0);
        Transition {
            worker: worker.to_owned(),
            from,
            to,
            reason,
            silent_for,
            phi,
        }
    }

    /// When an alive worker becomes suspect through silence: `last_seen + max(suspect_after,
    /// phi_silence)`. `None` if that is beyond what an `Instant` can hold.
    fn suspect_deadline(&self, watch: &Watch) -> Option<Instant> {
        let phi_silence = watch.arrivals.silence_at(self.z_suspect);
        (watch.last_seen).checked_add(self.config.suspect_after().max(phi_silence))
    }

    /// When a worker that is not failed fails, which rule decides it, and whether the
    /// leader-change grace holds it past that rule's own deadline (see the module docs).
    fn fail_deadline(&self, watch: &Watch) -> Option<(Instant, Cause, bool)> {
        if watch.liveness == Liveness::Failed {
            return None;
        }
        let config = &self.config;
        let silence =
            (watch.last_seen.checked_add(config.failure_timeout)).map(|at| (at, Cause::Silence));
        let session = (watch.closed_at)
            .and_then(|closed| closed.checked_add(config.effective_reconnect_window()))
            .map(|at| (at, Cause::SessionClosed));
        let phi = self.z_fail.and_then(|z_fail| {
            let silence = config
                .suspect_after()
                .max(watch.arrivals.silence_at(z_fail));
            Some((watch.last_seen.checked_add(silence)?, Cause::PhiFail))
        });
        let (at, cause) = [silence, session, phi]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)?;
        match self.grace_until {
            Some(grace) if grace > at => Some((grace, cause, true)),
            _ => Some((at, cause, false)),
        }
    }

    fn reason(&self, worker: &str, to: Liveness, cause: Cause, held: bool, now: Instant) -> String {
        let Some(watch) = self.workers.get(worker) else {
            return String::new();
        };
        let silent = now.saturating_duration_since(watch.last_seen);
        let phi = watch.arrivals.phi(silent);
        let missed = silent.as_nanos() / self.config.heartbeat_interval.as_nanos();
        let silence = format!(
            "no heartbeat for {} ({missed} missed, phi {phi:.1})",
            human(silent)
        );
        let mut reason = match (to, cause) {
            (Liveness::Failed, Cause::SessionClosed) => format!(
                "session closed and not reopened within {}",
                human(self.config.effective_reconnect_window())
            ),
            (Liveness::Failed, Cause::PhiFail) => {
                format!("{silence}, phi_fail {}", self.config.phi_fail)
            }
            (Liveness::Failed, Cause::Silence) => format!(
                "{silence}, failure timeout {}",
                human(self.config.failure_timeout)
            ),
            _ => silence,
        };
        if held {
            reason.push_str(" (held until the leader-change grace ended)");
        }
        reason
    }
}

impl Watch {
    /// A worker first seen at `now`, alive, with no intervals yet.
    fn new(now: Instant, config: &DetectorConfig) -> Self {
        let intervals = VecDeque::new();
        Watch {
            liveness: Liveness::Alive,
            last_seen: now,
            last_heartbeat: None,
            closed_at: None,
            arrivals: Arrivals::of(&intervals, config),
            intervals,
        }
    }

    /// Adds the interval since the previous heartbeat to the history, unless it is an outage
    /// (`failure_timeout` or more) or there is no previous heartbeat in this chain.
    fn sample(&mut self, now: Instant, config: &DetectorConfig) {
        let Some(previous) = self.last_heartbeat else {
            self.last_heartbeat = Some(now);
            return;
        };
        if now <= previous {
            return; // out of order: nothing to learn
        }
        self.last_heartbeat = Some(now);
        let gap = now - previous;
        if gap >= config.failure_timeout {
            return;
        }
        if self.intervals.len() >= config.history {
            self.intervals.pop_front();
        }
        self.intervals.push_back(gap.as_secs_f64());
        self.arrivals = Arrivals::of(&self.intervals, config);
    }

    /// Records a sign of life at `now`: alive, session no longer pending. Returns the liveness
    /// and silence it ends.
    fn show_life(&mut self, now: Instant) -> (Liveness, Duration) {
        let silent = now.saturating_duration_since(self.last_seen);
        let before = std::mem::replace(&mut self.liveness, Liveness::Alive);
        self.last_seen = self.last_seen.max(now);
        self.closed_at = None;
        (before, silent)
    }
}

impl Arrivals {
    /// The summary of `intervals` (the configured heartbeat interval when there are none).
    fn of(intervals: &VecDeque<f64>, config: &DetectorConfig) -> Self {
        let floor = config.min_std_dev.as_secs_f64();
        if intervals.is_empty() {
            return Arrivals {
                mean: config.heartbeat_interval.as_secs_f64(),
                std_dev: floor,
            };
        }
        let n = intervals.len() as f64;
        let mean = intervals.iter().sum::<f64>() / n;
        let variance = intervals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Arrivals {
            mean,
            std_dev: variance.sqrt().max(floor),
        }
    }

    /// Phi after `silent`: `−log10(P(next heartbeat later than silent))`.
    fn phi(&self, silent: Duration) -> f64 {
        let z = (silent.as_secs_f64() - self.mean) / self.std_dev;
        let y = z * (LOGISTIC_A + LOGISTIC_B * z * z);
        // log10(1 + e^y), without overflowing e^y for large y.
        if y > 0.0 {
            (y + (-y).exp().ln_1p()) / LN_10
        } else {
            y.exp().ln_1p() / LN_10
        }
    }

    /// The silence at which `z` is reached (zero if `z` falls before it).
    fn silence_at(&self, z: f64) -> Duration {
        let seconds = self.mean + z * self.std_dev;
        if seconds <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }
}

/// Coefficients of the logistic approximation of the standard normal CDF.
const LOGISTIC_A: f64 = 1.5976;
const LOGISTIC_B: f64 = 0.070566;

/// The `z` at which phi equals `phi` (> 0): the real root of `B z³ + A z = ln(10^phi − 1)`.
fn z_for_phi(phi: f64) -> f64 {
    let y = phi * LN_10 + (-(10f64.powf(-phi))).ln_1p();
    // Cardano for z³ + p z − q = 0 (one real root: p > 0), then Newton to polish.
    let (p, q) = (LOGISTIC_A / LOGISTIC_B, y / LOGISTIC_B);
    let root = ((q / 2.0).powi(2) + (p / 3.0).powi(3)).sqrt();
    let mut z = (q / 2.0 + root).cbrt() + (q / 2.0 - root).cbrt();
    for _ in 0..3 {
        let f = LOGISTIC_B * z.powi(3) + LOGISTIC_A * z - y;
        z -= f / (3.0 * LOGISTIC_B * z * z + LOGISTIC_A);
    }
    z
}

/// A duration for people: "3.2 s" from a second up, "250 ms" below.
fn human(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        format!("{:.1} s", duration.as_secs_f64())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests;
