//! What a coordinator does about its own health: the pure decisions behind self-healing
//! (ARCHITECTURE.md § Self-health).
//!
//! The self-health loop (`crate::coordinator::self_health`) samples the node, judges the
//! sample with [`super::sampler::assess`], and hands the facts of each sample to a
//! [`Healer`] as an [`Observation`]. [`Healer::observe`] returns the [`Action`]s to take now;
//! the loop does the I/O. Nothing here reads a clock or touches a file: `now` travels in the
//! observation, so every rule below is tested with logical time.
//!
//! | condition on a sample | action | limited by |
//! |---|---|---|
//! | the level changed, or it stays degraded/critical | [`Action::Warn`] | repeated at most every `warn_every` while unchanged |
//! | free disk at or under a degraded or critical threshold ([`disk_pressure`]) | [`Action::RelieveDisk`]: snapshot + log purge, DuckDB `CHECKPOINT`, stale temporary files | once per `cooldown` |
//! | RSS at or over the memory-pressure threshold ([`memory_pressure`]) | [`Action::RelieveMemory`]: DuckDB's `memory_limit` lowered, `malloc_trim` | once per `cooldown` |
//! | no memory pressure for `restore_after` samples in a row after a relief | [`Action::RestoreMemory`] | hysteresis: the count restarts at every pressured sample |
//! | this node leads and was critical on `critical_samples` samples in a row | [`Action::HandOver`] to [`choose_successor`]'s pick | the count restarts after each handover |
//!
//! With actions off (`[self_healing] actions = false`) only warnings are returned.
//!
//! # Who takes over
//!
//! [`choose_successor`] picks among the follower voters: each must be caught up (its matched
//! index within `max_lag` of the leader's last log index) and have a recorded health sample
//! that is neither stale nor critical; among those the healthiest wins (lowest level, fewest
//! reasons, then lowest CPU, then lowest memory), then the most caught up, then the lowest id.
//! Its health is judged from its latest `health_samples` row ([`assess_recorded`]). A row
//! holds no totals (disk size, machine memory, descriptor limit), so only the absolute checks
//! apply there: free disk bytes, the error rate and CPU.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::sampler::{HealthLevel, HealthLimits, Sample};
use crate::config::SelfHealing;
use crate::state::command::Timestamp;

/// Something the self-health loop must do after a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Log the node's health at `level` (warn when degraded or critical, info when it is
    /// healthy again). `changed`: the level differs from the previous sample's.
    Warn { level: HealthLevel, changed: bool },
    /// Free space in the data directory: snapshot and purge the log, checkpoint DuckDB,
    /// remove stale temporary files.
    RelieveDisk,
    /// Lower DuckDB's memory limit and give freed heap back to the system.
    RelieveMemory,
    /// Give DuckDB its configured memory limit back.
    RestoreMemory,
    /// Hand leadership to the healthiest caught-up follower.
    HandOver,
}

/// What one sample says, as the [`Healer`] needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// When the sample was taken (the loop's clock; logical in tests).
    pub now: Instant,
    /// The sample's overall level.
    pub level: HealthLevel,
    /// Free disk at or under a degraded or critical threshold ([`disk_pressure`]).
    pub disk_pressure: bool,
    /// RSS at or over the memory-pressure threshold ([`memory_pressure`]).
    pub memory_pressure: bool,
    /// This node leads.
    pub leader: bool,
}

/// The rules of a [`Healer`], from `[self_healing]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rules {
    /// Actions on; off: warnings only.
    pub actions: bool,
    /// Critical samples in a row before a leader hands over.
    pub critical_samples: u32,
    /// Calm samples in a row before DuckDB's memory limit comes back.
    pub restore_after: u32,
    /// The shortest time between two actions of one kind.
    pub cooldown: Duration,
    /// The shortest time between two warnings at an unchanged level.
    pub warn_every: Duration,
}

impl Rules {
    /// The rules `[self_healing]` sets.
    pub fn from_config(config: &SelfHealing) -> Rules {
        Rules {
            actions: config.actions,
            critical_samples: config.critical_samples,
            restore_after: config.restore_after_samples,
            cooldown: Duration::from_millis(config.action_cooldown_ms),
            warn_every: Duration::from_millis(config.warn_every_ms),
        }
    }
}

/// Actions whose repetition is limited by the cooldown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Disk,
    Memory,
    /// A record that a handover found nobody to take over.
    NoSuccessor,
}

/// The soft state of self-healing on one node: counts of samples in a row, when each kind of
/// action last ran, whether DuckDB's memory limit is lowered. Lost on restart, which only
/// means the counts start again.
#[derive(Clone, Debug)]
pub struct Healer {
    rules: Rules,
    critical_in_a_row: u32,
    calm_in_a_row: u32,
    memory_lowered: bool,
    last_done: BTreeMap<Kind, Instant>,
    last_level: HealthLevel,
    last_warned: Option<Instant>,
}

impl Healer {
    pub fn new(rules: Rules) -> Healer {
        Healer {
            rules,
            critical_in_a_row: 0,
            calm_in_a_row: 0,
            memory_lowered: false,
            last_done: BTreeMap::new(),
            last_level: HealthLevel::Ok,
            last_warned: None,
        }
    }

    /// Whether DuckDB's memory limit is lowered now.
    pub fn memory_lowered(&self) -> bool {
        self.memory_lowered
    }

    /// The actions this sample calls for, in the order to take them: a warning, the relief
    /// actions, then a handover (relief works the same on a follower, and the handover waits
    /// for the new leader).
    pub fn observe(&mut self, seen: Observation) -> Vec<Action> {
        let mut actions = Vec::new();
        let changed = seen.level != self.last_level;
        let repeat = self
            .last_warned
            .is_none_or(|at| seen.now.saturating_duration_since(at) >= self.rules.warn_every);
        if changed || (seen.level != HealthLevel::Ok && repeat) {
            actions.push(Action::Warn {
                level: seen.level,
                changed,
            });
            self.last_warned = Some(seen.now);
        }
        self.last_level = seen.level;
        if seen.level == HealthLevel::Critical {
            self.critical_in_a_row = self.critical_in_a_row.saturating_add(1);
        } else {
            self.critical_in_a_row = 0;
        }
        if !self.rules.actions {
            return actions;
        }
        if seen.disk_pressure && self.allow(Kind::Disk, seen.now) {
            actions.push(Action::RelieveDisk);
        }
        if seen.memory_pressure {
            self.calm_in_a_row = 0;
            if self.allow(Kind::Memory, seen.now) {
                self.memory_lowered = true;
                actions.push(Action::RelieveMemory);
            }
        } else if self.memory_lowered {
            self.calm_in_a_row += 1;
            if self.calm_in_a_row >= self.rules.restore_after {
                self.memory_lowered = false;
                self.calm_in_a_row = 0;
                // A new episode of pressure may relieve at once.
                self.last_done.remove(&Kind::Memory);
                actions.push(Action::RestoreMemory);
            }
        }
        if seen.leader && self.critical_in_a_row >= self.rules.critical_samples {
            self.critical_in_a_row = 0;
            actions.push(Action::HandOver);
        }
        actions
    }

    /// Whether an action of `kind` may run at `now` (the cooldown since the last one passed);
    /// if so, it counts as done now.
    pub fn allow(&mut self, kind: Kind, now: Instant) -> bool {
        let ready = self
            .last_done
            .get(&kind)
            .is_none_or(|at| now.saturating_duration_since(*at) >= self.rules.cooldown);
        if ready {
            self.last_done.insert(kind, now);
        }
        ready
    }
}

/// Whether free space in the data directory is at or under a degraded or critical threshold
/// of `limits` (the fraction is judged only when the file system reports its size).
pub fn disk_pressure(sample: &Sample, limits: &HealthLimits) -> bool {
    let free = sample.disk_free_bytes;
    let fraction_low = sample.disk_total_bytes > 0
        && (free as f64 / sample.disk_total_bytes as f64) < limits.disk_free_degraded;
    fraction_low || free < limits.disk_free_critical_bytes || free < limits.disk_free_degraded_bytes
}

/// The RSS at or over which a node is under memory pressure: `memory_pressure_rss_bytes`, else
/// `rss_degraded` of the machine's memory (`None` when neither is known).
pub fn memory_threshold(sample: &Sample, config: &SelfHealing) -> Option<u64> {
    config.memory_pressure_rss_bytes.or_else(|| {
        (sample.mem_total_bytes > 0)
            .then_some((sample.mem_total_bytes as f64 * config.limits.rss_degraded) as u64)
    })
}

/// Whether the sample's RSS is at or over [`memory_threshold`].
pub fn memory_pressure(sample: &Sample, config: &SelfHealing) -> bool {
    memory_threshold(sample, config).is_some_and(|limit| sample.rss_bytes >= limit)
}

/// A node's latest `health_samples` row.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Recorded {
    /// `sampled_at`, microseconds since the epoch.
    pub at_us: i64,
    pub cpu: f64,
    pub mem_bytes: u64,
    pub disk_free_bytes: u64,
    pub error_rate: f64,
}

/// What a recorded sample shows, judged with the absolute checks of `limits` only (a row has
/// no totals): free disk bytes, error rate, CPU.
pub fn assess_recorded(row: &Recorded, limits: &HealthLimits) -> (HealthLevel, Vec<String>) {
    let mut level = HealthLevel::Ok;
    let mut reasons = Vec::new();
    let mut report = |at: HealthLevel, reason: String| {
        level = level.max(at);
        reasons.push(reason);
    };
    if row.cpu >= limits.cpu_degraded {
        report(
            HealthLevel::Degraded,
            format!("cpu {:.2} >= {:.2}", row.cpu, limits.cpu_degraded),
        );
    }
    if row.disk_free_bytes < limits.disk_free_critical_bytes {
        report(
            HealthLevel::Critical,
            format!(
                "disk free {} B < {} B",
                row.disk_free_bytes, limits.disk_free_critical_bytes
            ),
        );
    } else if row.disk_free_bytes < limits.disk_free_degraded_bytes {
        report(
            HealthLevel::Degraded,
            format!(
                "disk free {} B < {} B",
                row.disk_free_bytes, limits.disk_free_degraded_bytes
            ),
        );
    }
    if row.error_rate >= limits.error_rate_critical {
        report(
            HealthLevel::Critical,
            format!(
                "error rate {:.2} >= {:.2}",
                row.error_rate, limits.error_rate_critical
            ),
        );
    } else if row.error_rate >= limits.error_rate_degraded {
        report(
            HealthLevel::Degraded,
            format!(
                "error rate {:.2} >= {:.2}",
                row.error_rate, limits.error_rate_degraded
            ),
        );
    }
    (level, reasons)
}

/// A follower voter that might take over.
#[derive(Clone, Debug, PartialEq)]
pub struct Follower {
    pub id: u64,
    /// Its matched log index as the leader tracks it (`None`: unknown).
    pub matched: Option<u64>,
    /// Its latest recorded health sample.
    pub latest: Option<Recorded>,
}

/// What [`choose_successor`] thought of one follower.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub id: u64,
    pub matched: Option<u64>,
    /// Its level from its latest sample (`None`: no sample).
    pub level: Option<HealthLevel>,
    pub reasons: Vec<String>,
    /// Why it may not take over; `None`: it may.
    pub skipped: Option<String>,
}

/// The limits a successor must meet.
#[derive(Clone, Debug, PartialEq)]
pub struct SuccessorRules {
    /// The most log entries it may be behind the leader's last index.
    pub max_lag: u64,
    /// Its latest sample must be younger than this.
    pub stale_after: Duration,
    pub limits: HealthLimits,
}

/// The follower to hand leadership to, and the verdict on each. `None` when no follower is
/// caught up with a fresh, non-critical sample. Pure: `now` is the caller's wall clock.
pub fn choose_successor(
    leader_last_index: u64,
    followers: &[Follower],
    now: Timestamp,
    rules: &SuccessorRules,
) -> (Option<u64>, Vec<Verdict>) {
    let stale_us = i64::try_from(rules.stale_after.as_micros()).unwrap_or(i64::MAX);
    let mut verdicts = Vec::new();
    let mut best: Option<(Rank, u64)> = None;
    for follower in followers {
        let judged = follower
            .latest
            .as_ref()
            .map(|row| assess_recorded(row, &rules.limits));
        let lag = follower
            .matched
            .map(|m| leader_last_index.saturating_sub(m));
        let skipped = match (&follower.latest, &judged, lag) {
            (_, _, None) => Some("its log position is unknown".to_string()),
            (_, _, Some(lag)) if lag > rules.max_lag => Some(format!(
                "{lag} entries behind (at most {} allowed)",
                rules.max_lag
            )),
            (None, _, _) => Some("no health sample recorded".to_string()),
            (Some(row), _, _) if now.micros().saturating_sub(row.at_us) > stale_us => {
                Some(format!(
                    "its latest health sample is {} ms old",
                    now.micros().saturating_sub(row.at_us) / 1000
                ))
            }
            (_, Some((HealthLevel::Critical, _)), _) => Some("its health is critical".to_string()),
            _ => None,
        };
        if skipped.is_none()
            && let (Some(row), Some((level, reasons))) = (&follower.latest, &judged)
        {
            let rank = Rank {
                level: *level,
                reasons: reasons.len(),
                cpu: row.cpu,
                mem_bytes: row.mem_bytes,
                behind: lag.unwrap_or(u64::MAX),
                id: follower.id,
            };
            if best.as_ref().is_none_or(|(b, _)| rank.better_than(b)) {
                best = Some((rank, follower.id));
            }
        }
        verdicts.push(Verdict {
            id: follower.id,
            matched: follower.matched,
            level: judged.as_ref().map(|(l, _)| *l),
            reasons: judged.map(|(_, r)| r).unwrap_or_default(),
            skipped,
        });
    }
    (best.map(|(_, id)| id), verdicts)
}

/// How a candidate compares: healthiest first, then most caught up, then lowest id.
#[derive(Clone, Copy, Debug)]
struct Rank {
    level: HealthLevel,
    reasons: usize,
    cpu: f64,
    mem_bytes: u64,
    behind: u64,
    id: u64,
}

impl Rank {
    fn better_than(&self, other: &Rank) -> bool {
        let ordering = (self.level, self.reasons)
            .cmp(&(other.level, other.reasons))
            .then(self.cpu.total_cmp(&other.cpu))
            .then(self.mem_bytes.cmp(&other.mem_bytes))
            .then(self.behind.cmp(&other.behind))
            .then(self.id.cmp(&other.id));
        ordering.is_lt()
    }
}

#[cfg(test)]
mod tests;
