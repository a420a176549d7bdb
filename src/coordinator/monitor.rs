//! The leader's health monitor: worker liveness → status commands → task recovery.
//!
//! Heartbeats and session events feed the pure [`Detector`] (leader memory only, never
//! replicated). Each liveness transition it reports becomes a `SetWorkerStatus` command with
//! the reason — except a failure, which is one `FailWorker` command: the status change and
//! the fate of every task the worker holds when it applies, in the same log entry, so a
//! leader change can never leave a failed worker's tasks stranded between the two. Each task
//! is requeued (ahead of never-run tasks of its priority, within its retry budget — an
//! exhausted budget ends it `abandoned`), or, with auto-recovery disabled, abandoned ("worker
//! lost; auto-recovery disabled") so the job still ends. Apply writes a
//! `task_recovery_history` row per task whose `details` say what happened, why, the leader
//! term and the timings.
//!
//! A task whose attempt outlives its own timeout by a wide margin (a worker that accepts
//! heartbeats but never reports) is requeued as `timeout` by the same loop.
//!
//! After a leader change every worker gets a fresh deadline (the detector's grace), so a
//! failover never fails the fleet.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;

use super::Coordinator;
use super::leadership::Leadership;
use crate::health::detector::{Detector, DetectorConfig, Liveness, Transition};
use crate::recovery::RecoveryEvent;
use crate::state::command::{Command, FaultCategory, TaskStatus, Timestamp, WorkerStatus};
use crate::state::machine::Reply;

/// How often the monitor wakes at the least.
const TICK: Duration = Duration::from_millis(50);

/// How long a breaker may hold a state the log does not before it takes the log's (its
/// transition was refused as stale or lost): commits take milliseconds.
const BREAKER_GRACE: Duration = Duration::from_secs(5);

/// An attempt is declared hung when it runs this much longer than its own timeout (the
/// worker kills it at the timeout and should have reported by then).
const TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Suspect-then-alive flaps within [`ERRATIC_WINDOW`] that mark a worker's heartbeats as
/// erratic (proactive recovery drains it before it fails).
const ERRATIC_FLAPS: usize = 3;
const ERRATIC_WINDOW: Duration = Duration::from_secs(600);

/// The detector of one leadership term, shared with the session service.
pub struct Monitor {
    /// Recent suspect→alive recoveries per worker.
    flaps: Mutex<BTreeMap<String, Vec<Instant>>>,
    detector: Mutex<Detector>,
    /// Transitions reported by events (a heartbeat from a suspect worker), for the loop.
    pending: Mutex<Vec<Transition>>,
}

impl Monitor {
    /// A detector tracking `known` workers as alive from `now`, with the leader-change grace.
    pub fn new(
        config: DetectorConfig,
        now: Instant,
        known: &[String],
    ) -> Result<Monitor, crate::health::detector::DetectorConfigError> {
        let mut detector = Detector::new(config)?;
        for worker in known {
            detector.track(worker, Liveness::Alive, now);
        }
        detector.leader_changed(now);
        Ok(Monitor {
            flaps: Mutex::new(BTreeMap::new()),
            detector: Mutex::new(detector),
            pending: Mutex::new(Vec::new()),
        })
    }

    fn note(&self, transition: Option<Transition>) {
        if let Some(t) = transition {
            lock(&self.pending).push(t);
        }
    }

    pub fn heartbeat(&self, worker: &str) {
        let t = lock(&self.detector).heartbeat(worker, Instant::now());
        self.note(t);
    }

    pub fn session_opened(&self, worker: &str) {
        let t = lock(&self.detector).session_opened(worker, Instant::now());
        self.note(t);
    }

    /// Stops watching a worker that left on purpose: its silence is not a failure.
    pub fn forget(&self, worker: &str) {
        lock(&self.detector).forget(worker);
        lock(&self.flaps).remove(worker);
    }

    pub fn session_closed(&self, worker: &str) {
        let t = lock(&self.detector).session_closed(worker, Instant::now());
        self.note(t);
    }

    /// Notes a suspect→alive flap; true when the worker's heartbeats are erratic.
    fn flapped(&self, worker: &str, now: Instant) -> bool {
        let mut flaps = lock(&self.flaps);
        let list = flaps.entry(worker.to_string()).or_default();
        list.retain(|t| now.duration_since(*t) < ERRATIC_WINDOW);
        list.push(now);
        if list.len() >= ERRATIC_FLAPS {
            list.clear();
            true
        } else {
            false
        }
    }

    /// Everything that changed since the last call.
    fn transitions(&self, now: Instant) -> Vec<Transition> {
        let mut all = std::mem::take(&mut *lock(&self.pending));
        all.extend(lock(&self.detector).tick(now));
        all
    }
}

/// The detector settings of a coordinator.
pub fn detector_config(node: &Coordinator) -> DetectorConfig {
    let c = node.config();
    let heartbeat = Duration::from_millis(c.worker_heartbeat_interval_ms);
    let failure = Duration::from_millis(c.worker_failure_timeout_ms);
    DetectorConfig::from_timing(heartbeat, failure)
}

/// The monitor loop of one leadership term.
pub async fn run(node: Arc<Coordinator>, leadership: Arc<Leadership>) {
    let cancel = leadership.cancel.clone();
    let mut last_timeout_scan = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        let transitions = leadership.monitor.transitions(Instant::now());
        for transition in transitions {
            on_transition(&node, &leadership, transition).await;
        }
        // Open breakers turn half-open on time; a transition the log refused is undone.
        let now = Timestamp::now();
        let undone = node.state().with_machine(|m| {
            leadership.with_breakers(|b, out| {
                b.tick(now, out);
                b.reconcile(m.breakers(), BREAKER_GRACE, now)
            })
        });
        for scope in undone {
            leadership.breaker_changed(&node, &scope);
        }
        leadership.follow_system_breaker(&node);
        if last_timeout_scan.elapsed() >= Duration::from_secs(1) {
            last_timeout_scan = Instant::now();
            requeue_hung_attempts(&node, &leadership).await;
        }
    }
}

async fn propose(node: &Coordinator, command: Command) -> Option<Reply> {
    match node.write(command).await {
        Ok(response) => Some(response.data),
        Err(e) => {
            tracing::warn!("health monitor proposal not committed: {e}");
            None
        }
    }
}

async fn on_transition(node: &Coordinator, leadership: &Leadership, t: Transition) {
    let current = node
        .state()
        .with_machine(|m| m.worker(&t.worker).map(|w| w.status));
    let Some(current) = current else { return };
    let target = match t.to {
        Liveness::Alive => WorkerStatus::Healthy,
        Liveness::Suspect => WorkerStatus::Suspect,
        Liveness::Failed => WorkerStatus::Failed,
    };
    // Quarantined, draining, permanently failed or left workers are not revived by
    // heartbeats (recovery decides about them), but a draining or quarantined one can fail.
    let allowed = matches!(
        (current, target),
        (WorkerStatus::Healthy, WorkerStatus::Suspect)
            | (
                WorkerStatus::Healthy
                    | WorkerStatus::Suspect
                    | WorkerStatus::Draining
                    | WorkerStatus::Quarantined,
                WorkerStatus::Failed
            )
            | (
                WorkerStatus::Suspect | WorkerStatus::Failed | WorkerStatus::Recovering,
                WorkerStatus::Healthy
            )
    );
    if !allowed {
        return;
    }
    tracing::info!(worker = %t.worker, from = %current, to = %target, reason = %t.reason, "worker status");
    // The first sign of a sick worker (its session broke, or it fell silent) is a failed call
    // for its breaker and the system's.
    if target == WorkerStatus::Suspect
        || (target == WorkerStatus::Failed && current == WorkerStatus::Healthy)
    {
        leadership.with_breakers(|b, out| b.infra_failure(&t.worker, Timestamp::now(), out));
    }
    if target == WorkerStatus::Failed {
        fail_worker(node, leadership, &t, current).await;
        return;
    }
    let reply = propose(
        node,
        Command::SetWorkerStatus {
            worker: t.worker.clone(),
            from: current,
            to: target,
            reason: t.reason.clone(),
            at: Timestamp::now(),
        },
    )
    .await;
    let applied = reply.is_some_and(|r| !r.is_rejected());
    if target == WorkerStatus::Healthy && applied && current != WorkerStatus::Suspect {
        leadership.recovery_event(RecoveryEvent::WorkerHealthy {
            worker: t.worker.clone(),
        });
    } else if target == WorkerStatus::Healthy
        && applied
        && leadership.monitor.flapped(&t.worker, Instant::now())
    {
        leadership.recovery_event(RecoveryEvent::WorkerErratic {
            worker: t.worker.clone(),
            reason: format!(
                "suspect {ERRATIC_FLAPS} times within {} min",
                ERRATIC_WINDOW.as_secs() / 60
            ),
        });
    }
}

/// Fails the worker and, in the same log entry, requeues (or, with auto-recovery disabled,
/// abandons) every task it holds ([`Command::FailWorker`]); then starts its recovery.
async fn fail_worker(
    node: &Coordinator,
    leadership: &Leadership,
    t: &Transition,
    current: WorkerStatus,
) {
    let session_lost = t.reason.contains("session");
    let task_category = if session_lost {
        FaultCategory::Connection
    } else {
        FaultCategory::Crash
    };
    let detected_at = Timestamp::now();
    let facts = json!({
        "leader_term": leadership.term,
        "leader_node": node.node_id(),
        "silent_for_ms": t.silent_for.as_millis() as u64,
        "phi": if t.phi.is_finite() { json!(t.phi) } else { json!(null) },
        "detected_at_us": detected_at.micros(),
    });
    let failure = Failure {
        worker: &t.worker,
        from: current,
        reason: &t.reason,
        task_category,
        category: if session_lost {
            FaultCategory::Connection
        } else {
            FaultCategory::Hang
        },
        facts,
        at: detected_at,
    };
    commit_failure(node, leadership, failure).await;
}

/// A worker failure to commit: its status `from` → failed, its tasks requeued as
/// `task_category`, and recovery told the worker failed as `category`.
pub(super) struct Failure<'a> {
    pub worker: &'a str,
    pub from: WorkerStatus,
    pub reason: &'a str,
    pub task_category: FaultCategory,
    pub category: FaultCategory,
    pub facts: serde_json::Value,
    pub at: Timestamp,
}

/// Commits `f` as one `FailWorker` entry (the worker failed and every task it holds requeued,
/// or abandoned with auto-recovery off), then tells recovery. Nothing when the entry was
/// refused as stale (another loop got there first) or not committed.
pub(super) async fn commit_failure(node: &Coordinator, leadership: &Leadership, f: Failure<'_>) {
    let disabled = node.config().disable_auto_recovery;
    let reply = propose(
        node,
        Command::FailWorker {
            worker: f.worker.to_string(),
            from: f.from,
            reason: f.reason.to_string(),
            category: f.task_category,
            requeue: !disabled,
            details_json: f.facts.to_string(),
            at: f.at,
        },
    )
    .await;
    let Some(Reply::Many(tasks)) = reply else {
        return;
    };
    for _ in &tasks {
        leadership.recovery_event(RecoveryEvent::TaskRequeued {
            worker: f.worker.to_string(),
        });
    }
    if !tasks.is_empty() {
        tracing::info!(worker = %f.worker, tasks = tasks.len(), disabled, "tasks of a failed worker recovered");
    }
    leadership.recovery_event(RecoveryEvent::WorkerFailed {
        worker: f.worker.to_string(),
        category: f.category,
        reason: f.reason.to_string(),
    });
}

/// Whether an attempt assigned at `assigned_at` with a timeout of `timeout_ms` has outlived
/// it by [`TIMEOUT_MARGIN`] at `now`. Saturating: no timeout is long enough to wrap around.
fn is_hung(timeout_ms: u64, assigned_at: Timestamp, now: Timestamp) -> bool {
    let limit_us = i64::try_from(timeout_ms)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
        .saturating_add(TIMEOUT_MARGIN.as_micros() as i64);
    now.micros().saturating_sub(assigned_at.micros()) > limit_us
}

/// Requeues attempts that outlived their timeout by [`TIMEOUT_MARGIN`] without a report.
async fn requeue_hung_attempts(node: &Coordinator, leadership: &Leadership) {
    let now = Timestamp::now();
    let hung: Vec<(String, u32, String, u64)> = node.state().with_machine(|m| {
        m.in_flight()
            .filter_map(|t| {
                let a = t.current.as_ref()?;
                is_hung(t.spec.timeout_ms, a.assigned_at, now).then(|| {
                    (
                        t.id().to_string(),
                        t.attempt,
                        a.worker.clone(),
                        t.spec.timeout_ms,
                    )
                })
            })
            .collect()
    });
    let mut by_task: BTreeMap<String, (u32, String, u64)> = BTreeMap::new();
    for (task, attempt, worker, timeout) in hung {
        by_task.insert(task, (attempt, worker, timeout));
    }
    let mut waiting = 0usize;
    for (task, (attempt, worker, timeout_ms)) in by_task {
        if !leadership.may_requeue() {
            waiting += 1;
            continue;
        }
        let reason = format!(
            "attempt {attempt} on {worker} ran {}s past its {timeout_ms} ms timeout without a report",
            TIMEOUT_MARGIN.as_secs()
        );
        let reply = propose(
            node,
            Command::RequeueTask {
                task: task.clone(),
                attempt,
                reason: reason.clone(),
                category: FaultCategory::Timeout,
                at: Timestamp::now(),
            },
        )
        .await;
        // A worker that still heartbeats while its attempt stalled past the timeout is hung
        // where it runs work, not where it talks: a hang fault of the worker, counted by
        // proactive recovery and its breaker.
        let heartbeating = (node.state())
            .with_machine(|m| m.worker(&worker).map(|w| w.status) == Some(WorkerStatus::Healthy));
        if heartbeating {
            leadership.recovery_event(RecoveryEvent::InfraFault {
                worker: worker.clone(),
                task: task.clone(),
                category: FaultCategory::Hang,
            });
            leadership.with_breakers(|b, out| b.infra_failure(&worker, Timestamp::now(), out));
        }
        let details = json!({
            "action": "requeue",
            "why": reason,
            "category": "timeout",
            "leader_term": leadership.term,
            "result": format!("{reply:?}"),
        });
        propose(
            node,
            Command::RecordTaskRecovery {
                task,
                worker: Some(worker),
                attempt_number: attempt,
                success: matches!(
                    reply,
                    Some(Reply::Task {
                        status: TaskStatus::Queued
                    })
                ),
                recovery_type: "timeout".to_string(),
                error_message: None,
                details_json: details.to_string(),
                at: Timestamp::now(),
            },
        )
        .await;
    }
    if waiting > 0 {
        tracing::info!(
            waiting,
            deferred_this_term = leadership.requeues_deferred(),
            "system breaker open: stalled attempts wait for a requeue token (breakers.open_requeue_rate)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_US: i64 = 3_600_000_000;

    #[test]
    fn an_attempt_is_hung_only_past_its_timeout_and_the_margin() {
        let assigned = Timestamp(1_000 * HOUR_US);
        let at = |us: i64| Timestamp(assigned.micros() + us);
        assert!(!is_hung(60_000, assigned, at(60_000_000 + 9_000_000)));
        assert!(is_hung(60_000, assigned, at(60_000_000 + 11_000_000)));
    }

    #[test]
    fn a_huge_timeout_never_wraps_into_a_short_one() {
        // `timeout_ms as i64 * 1000` made u64::MAX a limit of 10 s (and overflowed for large
        // values): the task was declared hung long before its timeout.
        let assigned = Timestamp(1_000 * HOUR_US);
        let an_hour_later = Timestamp(assigned.micros() + HOUR_US);
        for timeout_ms in [u64::MAX, i64::MAX as u64, (i64::MAX / 1000) as u64 + 1] {
            assert!(
                !is_hung(timeout_ms, assigned, an_hour_later),
                "{timeout_ms}"
            );
        }
        assert!(!is_hung(u64::MAX, Timestamp(0), Timestamp(i64::MAX)));
    }
}
