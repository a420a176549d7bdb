//! System recovery episodes: the part of the [`Planner`] that watches the whole fleet (the
//! rules are in the [recovery module docs](crate::recovery)).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Planner;
use crate::recovery::{Action, SystemAction, human, millis};
use crate::state::command::WorkerId;

/// Requeues are counted over this window for
/// [`PlannerConfig::max_requeues_per_minute`](super::PlannerConfig::max_requeues_per_minute).
const REQUEUE_WINDOW: Duration = Duration::from_secs(60);

/// A system recovery episode.
#[derive(Clone, Debug)]
pub(super) struct Episode {
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

impl Episode {
    /// The assignment rate at `now`: 0 while held, the ramp's step while resuming, `None` once
    /// the ramp is over.
    pub(super) fn allowance(&self, now: Instant, ramp_length: Duration) -> Option<f64> {
        let Some((resumed_at, ramp)) = &self.ramp else {
            return Some(0.0);
        };
        let offset = now.saturating_duration_since(*resumed_at);
        if offset >= ramp_length {
            return None;
        }
        let step = ramp.iter().rev().find(|(from, _)| *from <= offset);
        Some(step.map_or(0.0, |&(_, rate)| rate))
    }
}

impl Planner {
    /// When the episode next moves: dispatch resumes, or the ramp ends.
    pub(super) fn episode_deadline(&self) -> Option<Instant> {
        let episode = self.episode.as_ref()?;
        Some(match &episode.ramp {
            None => self.resume_at(episode).0,
            Some((resumed_at, _)) => *resumed_at + self.config.ramp_length,
        })
    }

    pub(super) fn storage_error(&mut self, now: Instant, reason: &str, out: &mut Vec<Action>) {
        self.trigger(now, format!("storage error: {reason}"), out);
        if let Some(episode) = &mut self.episode {
            episode.storage_errors += 1;
        }
    }

    pub(super) fn note_failure(&mut self, now: Instant, worker: &str, out: &mut Vec<Action>) {
        self.recent_failures.push_back((now, worker.to_string()));
        if let Some(episode) = &mut self.episode {
            episode.affected_workers.insert(worker.to_string());
            if episode.ramp.is_none() {
                episode.last_signal = now; // the fleet is still falling
            }
        }
        self.check_mass_failure(now, out);
    }

    pub(super) fn check_mass_failure(&mut self, now: Instant, out: &mut Vec<Action>) {
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

    pub(super) fn task_requeued(&mut self, now: Instant, out: &mut Vec<Action>) {
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
    pub(super) fn trigger(&mut self, now: Instant, reason: String, out: &mut Vec<Action>) {
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
    pub(super) fn resume_at(&self, episode: &Episode) -> (Instant, bool) {
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

    pub(super) fn step_episode(&mut self, now: Instant, out: &mut Vec<Action>) {
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
