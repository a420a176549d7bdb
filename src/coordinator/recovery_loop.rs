//! The recovery loop (the recovery executor): performs the planner's actions on the leader and
//! feeds back what happened. The decisions are [`crate::recovery`]'s, pure; this file is their
//! I/O.
//!
//! [`Recovery`] owns the pure [`Planner`] for one leadership term. Events arrive from the
//! health monitor (a worker failed, a worker is healthy again), from worker sessions (a
//! worker registered again) and from the executor itself (a restart command finished); the
//! driver loop ticks the planner at its deadlines. Every action becomes I/O here:
//!
//! * status changes and recovery records are commands (`SetWorkerStatus`,
//!   `RecordWorkerRecovery`, `RecordSystemRecovery`) — the leader term is added to every
//!   record's `details`;
//! * `CloseSession` ends the worker's stream so it reconnects;
//! * `RunRestart` runs the configured restart command template (`{worker}`, `{host}`,
//!   `{address}`, each substituted shell-quoted: [`crate::recovery::restart`]) with a timeout ([`restart`]), in its
//!   own process group, and reports exit status and output tail back to the planner; the run
//!   is killed when the leadership ends;
//! * system actions: dispatch is held and then ramped (the dispatcher asks
//!   [`Recovery::dispatch_allowance`]), leases are reconciled, orphaned tasks requeued, a
//!   snapshot taken, and at the end of an episode a `system_recovery_history` row and a
//!   Markdown report (in the data directory's `reports/`) are written.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Coordinator;
use super::leadership::Leadership;
use crate::recovery::fleet::RecoveryLevels;
use crate::recovery::planner::{Planner, PlannerConfig};
use crate::recovery::strategy::StrategyStats;
use crate::recovery::{
    Action, RecoveryEvent, RecoveryLevel, RecoveryPolicy, SystemAction, WorkerRecoveryRecord,
};
use crate::state::command::{Command, FaultCategory, Timestamp, WorkerStatus};

pub mod restart;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A restart command's run: (command, exit code, output tail).
type RestartRun = (String, Option<i32>, String);

/// The recovery state of one leadership term.
pub struct Recovery {
    planner: Mutex<Planner>,
    /// The last restart run per worker: (command, exit code, output tail), for the records.
    restarts: Mutex<std::collections::BTreeMap<String, RestartRun>>,
    /// When dispatch was held and when it resumed in the current episode (µs since epoch).
    episode_times: Mutex<(Option<i64>, Option<i64>)>,
    /// Actions produced by events, waiting for the driver, with the time just before the
    /// planner decided them.
    pending: Mutex<Vec<(Timestamp, Action)>>,
    wake: Notify,
    /// The configured policy, and the level the system breaker picked (`None`: the base
    /// policy is in force).
    base: RecoveryPolicy,
    level: Mutex<Option<RecoveryLevel>>,
}

/// The policy of a coordinator's configuration.
pub fn policy(node: &Coordinator) -> RecoveryPolicy {
    let c = node.config();
    let interval = Duration::from_millis(c.recovery_interval_ms);
    RecoveryPolicy {
        max_recovery_attempts: c.max_recovery_attempts,
        recovery_interval: interval,
        enable_proactive_recovery: c.enable_proactive_recovery,
        reconnect_wait: interval,
        ..RecoveryPolicy::default()
    }
}

impl Recovery {
    /// The recovery of one leadership term, knowing nothing of past terms yet: reading their
    /// history from DuckDB waits for the flusher, which must not hold up a new leader (see
    /// [`Recovery::learn_history`]).
    pub fn new(node: &Coordinator, term: u64) -> Result<Recovery, String> {
        let stats = StrategyStats::new(StrategyStats::DEFAULT_MIN_SAMPLES);
        let config = PlannerConfig {
            seed: term,
            ..PlannerConfig::default()
        };
        let base = policy(node);
        let planner = Planner::new(base.clone(), config, stats).map_err(|e| e.to_string())?;
        Ok(Recovery {
            planner: Mutex::new(planner),
            restarts: Mutex::new(std::collections::BTreeMap::new()),
            episode_times: Mutex::new((None, None)),
            pending: Mutex::new(Vec::new()),
            wake: Notify::new(),
            base,
            level: Mutex::new(None),
        })
    }

    /// Follows the level the system breaker calls for (`None`: the base policy): the next
    /// attempt of every recovery uses its policy; attempts under way keep their window.
    pub fn set_level(&self, level: Option<RecoveryLevel>, levels: &RecoveryLevels) {
        let mut current = lock(&self.level);
        if *current == level {
            return;
        }
        let policy = match level {
            Some(level) => levels.policy(level, &self.base),
            None => self.base.clone(),
        };
        match lock(&self.planner).set_policy(policy.clone()) {
            Ok(()) => {
                tracing::info!(
                    level = ?level,
                    attempts = policy.max_recovery_attempts,
                    interval_ms = policy.recovery_interval.as_millis() as u64,
                    "recovery level changed"
                );
                *current = level;
            }
            Err(e) => tracing::warn!("recovery level {level:?} not taken: {e}"),
        }
    }

    /// The level in force (`None`: the base policy).
    pub fn level(&self) -> Option<RecoveryLevel> {
        *lock(&self.level)
    }

    /// The policy the planner follows now.
    pub fn current_policy(&self) -> RecoveryPolicy {
        lock(&self.planner).policy().clone()
    }

    /// Teaches the planner what earlier terms' recovery attempts achieved: the
    /// `worker_recovery_history` rows with an id up to `upto` (the rows that existed when this
    /// term began; later ones are this term's, which the planner has seen already). Blocking.
    pub fn learn_history(&self, node: &Coordinator, upto: i64) {
        let outcomes = history(node, upto);
        let learned = outcomes.len();
        lock(&self.planner).learn(outcomes);
        tracing::debug!(learned, "recovery history of earlier terms loaded");
    }

    /// Hands an event to the planner; the driver performs the resulting actions.
    pub fn event(&self, event: RecoveryEvent) {
        let decided = Timestamp::now();
        let actions = lock(&self.planner).on_event(Instant::now(), event);
        if !actions.is_empty() {
            lock(&self.pending).extend(actions.into_iter().map(|a| (decided, a)));
            self.wake.notify_one();
        }
    }

    /// Assignments per second the dispatcher may commit now: `None` unlimited, `Some(0.0)`
    /// held (a system recovery episode), `Some(r)` while dispatch ramps back up.
    pub fn dispatch_allowance(&self) -> Option<f64> {
        lock(&self.planner).dispatch_allowance(Instant::now())
    }

    pub fn in_episode(&self) -> bool {
        lock(&self.planner).in_episode()
    }

    /// Whether recovery works on `worker` (an attempt running or waiting), and the running
    /// attempt's number and strategy if there is one.
    pub fn working_on(
        &self,
        worker: &str,
    ) -> Option<Option<(u32, crate::recovery::strategy::Strategy)>> {
        let planner = lock(&self.planner);
        planner
            .is_recovering(worker)
            .then(|| planner.attempt(worker))
    }
}

/// What past recovery attempts taught: `(category, strategy, success)` of every recorded
/// worker recovery (read from this node's DuckDB; unreadable history teaches nothing).
fn history(
    node: &Coordinator,
    upto: i64,
) -> Vec<(FaultCategory, crate::recovery::strategy::Strategy, bool)> {
    let read = || -> Result<Vec<(String, bool, String)>, String> {
        node.state().flush().map_err(|e| e.to_string())?;
        let conn = node.state().reader().map_err(|e| e.to_string())?;
        let mut stmt = conn
            .prepare(
                "SELECT recovery_type, success, CAST(details AS VARCHAR) \
                 FROM worker_recovery_history WHERE id <= ?",
            )
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([upto], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .collect();
        Ok(rows)
    };
    match read() {
        Ok(rows) => rows
            .iter()
            .filter_map(|(kind, success, details)| {
                crate::recovery::strategy::parse_outcome(kind, *success, details)
            })
            .collect(),
        Err(e) => {
            tracing::warn!("recovery history unreadable, starting without it: {e}");
            Vec::new()
        }
    }
}

/// The driver loop of one leadership term.
pub async fn run(node: Arc<Coordinator>, leadership: Arc<Leadership>) {
    let Some(recovery) = leadership.recovery.clone() else {
        return;
    };
    let cancel = leadership.cancel.clone();
    let mut last_fleet = (usize::MAX, usize::MAX);
    loop {
        let deadline = lock(&recovery.planner).next_deadline();
        let sleep = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = recovery.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
        let fleet = node.state().with_machine(|m| {
            let total = m
                .workers()
                .values()
                .filter(|w| {
                    !matches!(
                        w.status,
                        WorkerStatus::Left | WorkerStatus::PermanentlyFailed
                    )
                })
                .count();
            let healthy = m
                .workers()
                .values()
                .filter(|w| w.status == WorkerStatus::Healthy)
                .count();
            (healthy, total)
        });
        if fleet != last_fleet {
            last_fleet = fleet;
            recovery.event(RecoveryEvent::FleetSize {
                healthy: fleet.0,
                total: fleet.1,
            });
        }
        let mut actions = std::mem::take(&mut *lock(&recovery.pending));
        let decided = Timestamp::now();
        actions.extend(
            lock(&recovery.planner)
                .tick(Instant::now())
                .into_iter()
                .map(|a| (decided, a)),
        );
        for (decided, action) in actions {
            perform(&node, &leadership, &recovery, decided, action).await;
        }
    }
}

async fn propose(node: &Coordinator, command: Command) -> bool {
    match node.write(command).await {
        Ok(response) => !response.data.is_rejected(),
        Err(e) => {
            tracing::warn!("recovery proposal not committed: {e}");
            false
        }
    }
}

async fn perform(
    node: &Arc<Coordinator>,
    leadership: &Arc<Leadership>,
    recovery: &Arc<Recovery>,
    decided: Timestamp,
    action: Action,
) {
    match action {
        Action::SetStatus {
            worker,
            from,
            to,
            reason,
        } => {
            tracing::info!(worker = %worker, %from, %to, reason = %reason, "recovery: worker status");
            propose(
                node,
                Command::SetWorkerStatus {
                    worker,
                    from,
                    to,
                    reason,
                    at: Timestamp::now(),
                },
            )
            .await;
        }
        Action::CloseSession { worker } => {
            tracing::info!(worker = %worker, "recovery: closing the worker's session");
            leadership.close_session(&worker);
        }
        Action::Fail {
            worker,
            category,
            reason,
        } => {
            let current = (node.state()).with_machine(|m| m.worker(&worker).map(|w| w.status));
            let Some(from @ (WorkerStatus::Healthy | WorkerStatus::Suspect)) = current else {
                return; // already failed, held or gone: nothing to do
            };
            tracing::info!(worker = %worker, %category, reason = %reason, "recovery: failing a worker its own faults describe");
            let at = Timestamp::now();
            let failure = super::monitor::Failure {
                worker: &worker,
                from,
                reason: &reason,
                task_category: category,
                category,
                facts: json!({
                    "leader_term": leadership.term,
                    "leader_node": node.node_id(),
                    "detected_at_us": at.micros(),
                    "source": "the worker's own fault reports",
                }),
                at,
            };
            super::monitor::commit_failure(node, leadership, failure).await;
        }
        Action::RunRestart { worker, attempt } => {
            let node = node.clone();
            let recovery = recovery.clone();
            // The run ends with the leadership: a deposed leader kills its restart command.
            let cancel = leadership.cancel.clone();
            tokio::spawn(async move {
                let Some((command, exit_code, output_tail)) =
                    restart(&node, &worker, &cancel).await
                else {
                    return;
                };
                lock(&recovery.restarts)
                    .insert(worker.clone(), (command, exit_code, output_tail.clone()));
                recovery.event(RecoveryEvent::RestartFinished {
                    worker,
                    attempt,
                    exit_code,
                    output_tail,
                });
            });
        }
        Action::Record(record) => {
            let restart = (record.recovery_type == "restart")
                .then(|| lock(&recovery.restarts).get(&record.worker).cloned())
                .flatten();
            record_worker(node, leadership, record, restart).await
        }
        Action::Drain { worker, reason } => {
            tracing::info!(worker = %worker, reason = %reason, "recovery: draining a worker before it fails");
            propose(
                node,
                Command::SetWorkerStatus {
                    worker,
                    from: WorkerStatus::Healthy,
                    to: WorkerStatus::Draining,
                    reason,
                    at: Timestamp::now(),
                },
            )
            .await;
        }
        Action::System(action) => system(node, leadership, recovery, decided, action).await,
    }
}

async fn record_worker(
    node: &Coordinator,
    leadership: &Leadership,
    record: WorkerRecoveryRecord,
    restart: Option<(String, Option<i32>, String)>,
) {
    let mut details = record.details;
    if let Some(map) = details.as_object_mut() {
        map.insert("leader_term".into(), json!(leadership.term));
        map.insert("leader_node".into(), json!(node.node_id()));
        if let Some((command, exit_code, tail)) = restart {
            map.entry("command").or_insert(json!(command));
            map.entry("exit_code").or_insert(json!(exit_code));
            map.entry("output_tail").or_insert(json!(tail));
        }
    }
    tracing::info!(worker = %record.worker, attempt = record.attempt_number, success = record.success, strategy = %record.recovery_type, "recovery attempt recorded");
    if record.recovery_type != "proactive_drain" {
        // Recovery outcomes feed the system breaker, which picks the next level.
        leadership.with_breakers(|b, out| {
            b.recovery_outcome(record.success, Timestamp::now(), out);
        });
    }
    propose(
        node,
        Command::RecordWorkerRecovery {
            worker: record.worker,
            attempt_number: record.attempt_number,
            success: record.success,
            recovery_type: record.recovery_type,
            error_message: record.error_message,
            details_json: details.to_string(),
            at: Timestamp::now(),
        },
    )
    .await;
}

/// Runs the restart command for `worker`: (command, exit code, output tail), or `None` when
/// `cancel` (the leadership's) fired first and the command was killed.
async fn restart(
    node: &Coordinator,
    worker: &str,
    cancel: &CancellationToken,
) -> Option<(String, Option<i32>, String)> {
    let Some(template) = node.config().restart_command.clone() else {
        return Some((
            String::new(),
            None,
            "no restart_command is configured".to_string(),
        ));
    };
    let (host, address) = node
        .state()
        .with_machine(|m| {
            m.worker(worker)
                .map(|w| (w.host.clone(), w.address.clone()))
        })
        .unwrap_or_default();
    let rendered = crate::recovery::restart::render(&template, |name| match name {
        "worker" => worker.to_string(),
        "host" => host.clone(),
        _ => address.clone(),
    });
    let command = match rendered {
        Ok(command) => command,
        Err(e) => {
            tracing::warn!(worker, "recovery: restart command not run: {e}");
            return Some((template, None, format!("not run: {e}")));
        }
    };
    tracing::info!(worker, command = %command, "recovery: running the restart command");
    match restart::run(&command, restart::RESTART_TIMEOUT, cancel).await {
        restart::Ran::Finished {
            exit_code,
            output_tail,
        } => Some((command, exit_code, output_tail)),
        restart::Ran::Cancelled => {
            tracing::info!(
                worker,
                "recovery: leadership ended; the restart command was killed"
            );
            None
        }
    }
}

async fn system(
    node: &Coordinator,
    leadership: &Leadership,
    recovery: &Recovery,
    decided: Timestamp,
    action: SystemAction,
) {
    match action {
        SystemAction::HoldDispatch { reason } => {
            *lock(&recovery.episode_times) = (Some(decided.micros()), None);
            tracing::warn!(reason = %reason, "SYSTEM RECOVERY: dispatch held");
        }
        SystemAction::ReconcileLeases => {
            for worker in leadership.connected() {
                super::sessions::reconcile_worker(node, leadership, &worker).await;
            }
        }
        SystemAction::RequeueOrphans => requeue_orphans(node).await,
        SystemAction::ResetBreakers => {
            // The episode reconciled every lease: the workers' breakers start afresh (an
            // operator's forced-open or disabled ones stay as they were set).
            let reset = leadership.with_breakers(|b, out| {
                b.reset_tripped(
                    "system recovery: every lease reconciled",
                    Timestamp::now(),
                    out,
                )
            });
            tracing::info!(reset, "system recovery: worker breakers reset");
        }
        SystemAction::Snapshot => {
            if let Err(e) = node.raft().trigger().snapshot().await {
                tracing::warn!("system recovery snapshot failed: {e}");
            }
        }
        SystemAction::ResumeGradually { ramp } => {
            lock(&recovery.episode_times).1 = Some(decided.micros());
            tracing::info!(?ramp, "system recovery: resuming dispatch gradually");
        }
        SystemAction::EndEpisode {
            success,
            affected_workers,
            affected_tasks,
            details,
        } => {
            let mut details = details;
            let (held_at, resumed_at) = std::mem::take(&mut *lock(&recovery.episode_times));
            if let Some(map) = details.as_object_mut() {
                map.insert("leader_term".into(), json!(leadership.term));
                map.insert("held_at_us".into(), json!(held_at));
                map.insert("resumed_at_us".into(), json!(resumed_at));
            }
            write_report(node, success, affected_workers, affected_tasks, &details);
            propose(
                node,
                Command::RecordSystemRecovery {
                    system_status: if success { "recovered" } else { "critical" }.to_string(),
                    success,
                    affected_workers,
                    affected_tasks,
                    details_json: details.to_string(),
                    at: Timestamp::now(),
                },
            )
            .await;
            tracing::warn!(
                success,
                affected_workers,
                affected_tasks,
                "SYSTEM RECOVERY: episode ended"
            );
        }
    }
}

/// Requeues tasks held by workers that are not healthy (their holder is gone).
async fn requeue_orphans(node: &Coordinator) {
    let orphans: Vec<(String, u32, String)> = node.state().with_machine(|m| {
        m.in_flight()
            .filter_map(|t| {
                let holder = t.holder()?;
                let healthy = m
                    .worker(holder)
                    .is_some_and(|w| w.status == WorkerStatus::Healthy);
                (!healthy).then(|| (t.id().to_string(), t.attempt, holder.clone()))
            })
            .collect()
    });
    for (task, attempt, worker) in orphans {
        propose(
            node,
            Command::RequeueTask {
                task,
                attempt,
                reason: format!("system recovery: holder {worker} is not healthy"),
                category: FaultCategory::LeaseLost,
                at: Timestamp::now(),
            },
        )
        .await;
    }
}

/// Writes a human-readable report of a system recovery episode next to the data.
fn write_report(
    node: &Coordinator,
    success: bool,
    workers: u32,
    tasks: u32,
    details: &serde_json::Value,
) {
    let dir = node.config().data_dir().join("reports");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let at = Timestamp::now().micros();
    let text = format!(
        "# System recovery episode\n\n- ended: {at} µs since the epoch\n- outcome: {}\n\
         - workers affected: {workers}\n- tasks affected: {tasks}\n\n## Details\n\n```json\n{}\n```\n",
        if success {
            "recovered"
        } else {
            "not recovered"
        },
        serde_json::to_string_pretty(details).unwrap_or_default()
    );
    let path = dir.join(format!("system-recovery-{at}.md"));
    if let Err(e) = std::fs::write(&path, text) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}
