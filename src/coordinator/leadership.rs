//! The soft state of one leadership term, shared by the leader's loops.
//!
//! A [`Leadership`] exists only while this node is the committed leader of a term. It is
//! created by openraft's `on_leader_change(start)` ([`super::leader::start`]) and cancelled on
//! `stop`; everything it holds is soft state rebuilt from the replicated view on election:
//!
//! * the live worker sessions (an mpsc sender per worker stream, its slots, what it runs),
//!   one per worker name and process ([`super::sessions::identity`]);
//! * the [`Scheduler`], fed by the state machine's [`Event`]s (a lagging feed rebuilds it);
//! * each loop's handle: the health monitor's detector, the recovery loop's state, the report
//!   batcher;
//! * the circuit breakers ([`FleetBreakers`]): a worker whose breaker is open gets no work, a
//!   half-open one only its trials; their transitions are proposed through the batcher.
//!
//! The loops (dispatch in [`super::leader`], [`super::monitor`], [`super::recovery_loop`],
//! worker sessions in [`super::sessions`]) reach one another only through this state, never
//! through each other's files.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Coordinator;
use super::sessions::identity::{self, Holder, NameTaken};
use crate::proto::{Assign, CoordinatorMessage, Removed, coordinator_message};
use crate::recovery::fleet::FleetBreakers;
use crate::recovery::pacing::RequeuePacer;
use crate::scheduler::{QueuedTask, Scheduler, WorkerProfile};
use crate::state::command::{
    Command, SYSTEM_SCOPE, TaskStatus, Timestamp, WORKER_SCOPE, WorkerId, WorkerStatus,
};
use crate::state::machine::{Event, Machine};

/// The sending half of a worker's session stream.
pub type SessionSender = mpsc::Sender<Result<CoordinatorMessage, tonic::Status>>;

/// One connected worker.
pub struct Session {
    /// Distinguishes a reconnected session from the one it replaced.
    pub generation: u64,
    /// The worker process's session id (its hello's), and the host it said it runs on.
    pub session_id: String,
    pub host: String,
    pub sender: SessionSender,
    pub slots: u32,
    pub last_seen: Instant,
    /// Attempts the worker reported running (or finished, not yet acknowledged).
    pub running: BTreeSet<(String, u32)>,
}

/// Soft state of one leadership term.
pub struct Leadership {
    pub term: u64,
    pub cancel: CancellationToken,
    /// Worker liveness (the health monitor's detector).
    pub monitor: super::monitor::Monitor,
    /// Auto-recovery (absent with `--disable-auto-recovery`).
    pub recovery: Option<Arc<super::recovery_loop::Recovery>>,
    /// Proposes the workers' reports (attempt started / finished), several per entry.
    pub reports: super::batcher::Batcher,
    /// Who follows which running attempt's output (`testfleet logs`).
    pub output: Arc<super::output::OutputHub>,
    sessions: Mutex<BTreeMap<WorkerId, Session>>,
    /// Hellos being registered, holding their name until their session opens: (session id,
    /// host, when). Locked before `sessions` when both are.
    claims: Mutex<BTreeMap<WorkerId, (String, String, Instant)>>,
    /// A session or claim not heard from for this long no longer holds its name.
    failure_timeout: Duration,
    pub(super) scheduler: Mutex<Scheduler>,
    /// The circuit breakers, locked after the scheduler and the state machine when held
    /// together.
    breakers: Mutex<FleetBreakers>,
    /// Paces per-attempt requeues while the system breaker is open.
    requeues: Mutex<RequeuePacer>,
    /// Wakes the dispatcher (a worker joined, a slot freed).
    pub(super) wake: Notify,
    next_generation: Mutex<u64>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker's profile from the replicated view and its session.
pub fn worker_profile(machine: &Machine, worker: &str, slots: u32) -> Option<WorkerProfile> {
    let w = machine.worker(worker)?;
    let capabilities = crate::capabilities::flatten(&w.capabilities_json);
    Some(WorkerProfile {
        id: w.id.clone(),
        labels: w.labels.clone(),
        capabilities,
        slots,
    })
}

impl Leadership {
    pub(super) fn new(
        node: Arc<Coordinator>,
        term: u64,
        monitor: super::monitor::Monitor,
        recovery: Option<Arc<super::recovery_loop::Recovery>>,
        breakers: FleetBreakers,
    ) -> Self {
        let cancel = CancellationToken::new();
        let failure_timeout = Duration::from_millis(node.config().worker_failure_timeout_ms);
        let requeue_rate = node.config().breakers.open_requeue_rate;
        Leadership {
            term,
            monitor,
            recovery,
            reports: super::batcher::Batcher::start(node, cancel.clone()),
            output: Arc::default(),
            cancel,
            sessions: Mutex::new(BTreeMap::new()),
            claims: Mutex::new(BTreeMap::new()),
            failure_timeout,
            scheduler: Mutex::new(Scheduler::new()),
            breakers: Mutex::new(breakers),
            requeues: Mutex::new(RequeuePacer::new(requeue_rate)),
            wake: Notify::new(),
            next_generation: Mutex::new(0),
        }
    }

    /// Holds `worker` for a hello from process `session_id` on `host` while it is registered,
    /// unless another live process holds it ([`identity::may_take`]): a live session, or a
    /// hello of another process being registered. [`Leadership::add_session`] or
    /// [`Leadership::release_claim`] ends the claim; one left behind expires after the
    /// failure timeout.
    pub fn claim(&self, worker: &str, session_id: &str, host: &str) -> Result<(), NameTaken> {
        let now = Instant::now();
        let mut claims = lock(&self.claims);
        self.check_session(worker, session_id, now)?;
        let pending = claims.get(worker).map(|(id, host, since)| Holder {
            session_id: id,
            host,
            last_seen: *since,
        });
        identity::may_take(worker, pending, session_id, now, self.failure_timeout)?;
        claims.insert(
            worker.to_string(),
            (session_id.to_string(), host.to_string(), now),
        );
        Ok(())
    }

    /// Ends a claim of `session_id` (its registration failed).
    pub fn release_claim(&self, worker: &str, session_id: &str) {
        let mut claims = lock(&self.claims);
        if claims
            .get(worker)
            .is_some_and(|(id, _, _)| id == session_id)
        {
            claims.remove(worker);
        }
    }

    /// Refuses `session_id` if another process holds `worker`'s live session.
    fn check_session(&self, worker: &str, session_id: &str, now: Instant) -> Result<(), NameTaken> {
        let sessions = lock(&self.sessions);
        let holder = sessions.get(worker).map(|s| Holder {
            session_id: &s.session_id,
            host: &s.host,
            last_seen: s.last_seen,
        });
        identity::may_take(worker, holder, session_id, now, self.failure_timeout)
    }

    /// Registers a worker's session and returns its generation; it replaces an older session
    /// of the same process, or one no longer alive, and ends the hello's claim. Refused if
    /// another process holds a live session of the name.
    pub fn add_session(
        &self,
        worker: &str,
        session_id: &str,
        host: &str,
        sender: SessionSender,
        slots: u32,
        running: BTreeSet<(String, u32)>,
    ) -> Result<u64, NameTaken> {
        let mut claims = lock(&self.claims);
        let now = Instant::now();
        self.check_session(worker, session_id, now)?;
        let generation = {
            let mut next = lock(&self.next_generation);
            *next += 1;
            *next
        };
        lock(&self.sessions).insert(
            worker.to_string(),
            Session {
                generation,
                session_id: session_id.to_string(),
                host: host.to_string(),
                sender,
                slots,
                last_seen: now,
                running,
            },
        );
        if claims
            .get(worker)
            .is_some_and(|(id, _, _)| id == session_id)
        {
            claims.remove(worker);
        }
        Ok(generation)
    }

    /// Whether `generation` is the worker's current session.
    pub fn is_current(&self, worker: &str, generation: u64) -> bool {
        lock(&self.sessions)
            .get(worker)
            .is_some_and(|s| s.generation == generation)
    }

    /// Forgets a session if it is still the current one of its worker; returns whether it was.
    pub fn remove_session(&self, worker: &str, generation: u64) -> bool {
        let mut sessions = lock(&self.sessions);
        if sessions
            .get(worker)
            .is_some_and(|s| s.generation == generation)
        {
            sessions.remove(worker);
            drop(sessions);
            lock(&self.scheduler).worker_down(worker);
            true
        } else {
            false
        }
    }

    /// Records a heartbeat.
    pub fn heartbeat(&self, worker: &str, generation: u64, running: BTreeSet<(String, u32)>) {
        if let Some(s) = lock(&self.sessions).get_mut(worker)
            && s.generation == generation
        {
            s.last_seen = Instant::now();
            s.running = running;
        }
    }

    /// Ends a worker's session (it reconnects); recovery's first strategy.
    pub fn close_session(&self, worker: &str) {
        let removed = lock(&self.sessions).remove(worker);
        if removed.is_some() {
            lock(&self.scheduler).worker_down(worker);
        }
    }

    /// Tells recovery about an event, when auto-recovery is on.
    pub fn recovery_event(&self, event: crate::recovery::RecoveryEvent) {
        if let Some(r) = &self.recovery {
            r.event(event);
        }
    }

    /// How long ago each connected worker's session was last heard from.
    pub fn heartbeat_ages(&self) -> Vec<(WorkerId, Duration)> {
        let now = Instant::now();
        lock(&self.sessions)
            .iter()
            .map(|(id, s)| (id.clone(), now.saturating_duration_since(s.last_seen)))
            .collect()
    }

    /// May one per-attempt requeue (a stalled attempt, one a reconnecting worker lost) be
    /// proposed now? Always, unless the system breaker is open: then at
    /// `breakers.open_requeue_rate` per second (`recovery::pacing`). A refused one waits for
    /// the next scan.
    pub fn may_requeue(&self) -> bool {
        let open = lock(&self.breakers).system_open();
        lock(&self.requeues).allow(Instant::now(), open)
    }

    /// Per-attempt requeues refused by [`Leadership::may_requeue`] this term.
    pub fn requeues_deferred(&self) -> u64 {
        lock(&self.requeues).deferred()
    }

    /// Runs `f` on the circuit breakers and proposes the transitions it decided.
    /// Splits picks into those their workers' breakers allow now and those they refuse (a
    /// half-open breaker lets its trials through and refuses the rest).
    pub fn allowed_by_breakers(
        &self,
        picks: Vec<crate::state::command::Assignment>,
        at: Timestamp,
    ) -> (
        Vec<crate::state::command::Assignment>,
        Vec<crate::state::command::Assignment>,
    ) {
        self.with_breakers(|b, out| {
            picks
                .into_iter()
                .partition(|a| b.allow(&a.worker, &a.task, a.attempt, at, out))
        })
    }

    pub fn with_breakers<T>(
        &self,
        f: impl FnOnce(&mut FleetBreakers, &mut Vec<Command>) -> T,
    ) -> T {
        let mut out = Vec::new();
        let result = f(&mut lock(&self.breakers), &mut out);
        for command in out {
            if let Command::BreakerTransition {
                scope,
                from,
                to,
                reason,
                ..
            } = &command
            {
                tracing::info!(%scope, %from, %to, %reason, "circuit breaker");
                if scope == SYSTEM_SCOPE && *to == crate::state::command::BreakerState::Open {
                    self.recovery_event(crate::recovery::RecoveryEvent::SystemBreakerOpened {
                        reason: reason.clone(),
                    });
                }
            }
            self.reports.submit(command);
        }
        result
    }

    /// The profile the scheduler gets for `worker` with `slots`, if it may have work now: it
    /// accepts work (healthy, not drained, breaker not open), and a half-open breaker limits
    /// it to its trials.
    pub fn schedulable_profile(
        &self,
        machine: &Machine,
        worker: &str,
        slots: u32,
    ) -> Option<WorkerProfile> {
        if !machine.accepts_work(worker) {
            return None;
        }
        let slots = match lock(&self.breakers).trial_slots(worker) {
            Some(trials) => slots.min(trials.max(1)),
            None => slots,
        };
        worker_profile(machine, worker, slots)
    }

    /// Makes a registered worker available to the scheduler.
    pub fn worker_ready(&self, profile: WorkerProfile) {
        lock(&self.scheduler).worker_up(profile);
        self.wake.notify_one();
    }

    /// The sender of a worker's current session.
    pub fn sender(&self, worker: &str) -> Option<SessionSender> {
        lock(&self.sessions).get(worker).map(|s| s.sender.clone())
    }

    /// What a worker's last heartbeat said it runs.
    pub fn reported(&self, worker: &str) -> BTreeSet<(String, u32)> {
        lock(&self.sessions)
            .get(worker)
            .map(|s| s.running.clone())
            .unwrap_or_default()
    }

    /// Workers with a session right now.
    pub fn connected(&self) -> Vec<WorkerId> {
        lock(&self.sessions).keys().cloned().collect()
    }

    /// Why a queued task waits, if no live worker can run it.
    pub fn parked(&self) -> Vec<(String, String)> {
        lock(&self.scheduler)
            .parked()
            .into_iter()
            .map(|p| (p.task, p.reason))
            .collect()
    }

    /// Tells a worker to stop an attempt it no longer holds (requeued, cancelled), if its
    /// last heartbeat said it runs it.
    fn cancel_if_running(&self, task: &str, worker: &str, attempt: u32) {
        let sessions = lock(&self.sessions);
        let Some(session) = sessions.get(worker) else {
            return;
        };
        if !session.running.contains(&(task.to_string(), attempt)) {
            return;
        }
        let cancel = crate::proto::Cancel {
            term: self.term,
            task_id: task.to_string(),
            attempt,
            reason: "the attempt no longer belongs to this worker".to_string(),
        };
        let _ = session.sender.try_send(Ok(CoordinatorMessage {
            body: Some(coordinator_message::Body::Cancel(cancel)),
        }));
    }

    /// Rebuilds the scheduler from the replicated view and the live sessions.
    pub(super) fn rebuild(&self, machine: &Machine) {
        let profiles: Vec<WorkerProfile> = lock(&self.sessions)
            .iter()
            .filter_map(|(id, s)| self.schedulable_profile(machine, id, s.slots))
            .collect();
        *lock(&self.scheduler) = Scheduler::rebuild(machine, &profiles);
    }

    pub(super) fn apply_event(&self, node: &Coordinator, event: Event) {
        let mut scheduler = lock(&self.scheduler);
        match event {
            Event::Queued { task } => {
                let queued = node.state().with_machine(|m| {
                    m.task(&task)
                        .filter(|t| t.status == TaskStatus::Queued)
                        .map(QueuedTask::from_task)
                });
                if let Some(q) = queued {
                    scheduler.enqueue(q);
                }
            }
            Event::Assigned { task, worker, .. } => match scheduler.reservation(&task) {
                // This leader's own assignment applied: the reservation becomes a busy slot
                // now, in the order of the log, not when the proposal's reply reaches the
                // dispatcher. Events applied after it (the attempt released, the task queued
                // again: its worker failed at once) must find it committed, or the requeue
                // would be refused as still in flight and then lost with the reservation.
                Some(reserved) if *reserved == worker => {
                    scheduler.committed(&task);
                }
                Some(_) => {}
                // An assignment this scheduler did not reserve (proposed by a previous leader
                // and applied after the rebuild): the task leaves the queue and its slot is
                // busy.
                None => {
                    if scheduler.remove(&task) {
                        scheduler.attempt_started(&worker);
                    }
                }
            },
            Event::Released {
                task,
                worker,
                attempt,
            } => {
                scheduler.attempt_ended(&worker);
                drop(scheduler);
                self.with_breakers(|b, out| b.released(&task, attempt, Timestamp::now(), out));
                self.cancel_if_running(&task, &worker, attempt);
            }
            Event::Final { task, .. } => {
                scheduler.remove(&task);
            }
            Event::Worker {
                worker,
                status: WorkerStatus::Left,
            } => {
                scheduler.worker_down(&worker);
                drop(scheduler);
                self.departed(node, &worker);
            }
            Event::Worker { worker, .. } => self.reschedule(node, &mut scheduler, &worker),
            Event::Breaker {
                scope,
                state,
                since,
            } => {
                lock(&self.breakers).sync(&scope, state, since);
                drop(scheduler);
                self.breaker_changed(node, &scope);
            }
        }
    }

    /// After the breaker of `scope` changed: its worker is rescheduled, or recovery follows
    /// the system breaker's level.
    pub fn breaker_changed(&self, node: &Coordinator, scope: &str) {
        if let Some(worker) = scope.strip_prefix(WORKER_SCOPE) {
            self.reschedule(node, &mut lock(&self.scheduler), worker);
            self.wake.notify_one();
        } else if scope == SYSTEM_SCOPE {
            self.follow_system_breaker(node);
        }
    }

    /// Puts `worker` in or out of the scheduler as its status, drain and breaker now allow.
    fn reschedule(&self, node: &Coordinator, scheduler: &mut Scheduler, worker: &str) {
        let slots = lock(&self.sessions).get(worker).map(|s| s.slots);
        let profile = slots.and_then(|slots| {
            node.state()
                .with_machine(|m| self.schedulable_profile(m, worker, slots))
        });
        match profile {
            Some(profile) => scheduler.worker_up(profile),
            None => scheduler.worker_down(worker),
        }
    }

    /// Recovery takes the level the system breaker calls for.
    pub fn follow_system_breaker(&self, node: &Coordinator) {
        if let Some(recovery) = &self.recovery {
            let level = lock(&self.breakers).level();
            recovery.set_level(level, &node.config().breakers.levels);
        }
    }
}

impl Leadership {
    /// A worker left the fleet (its own departure, or an operator removed it): its session,
    /// if it still has one, is told so and closed — a removed worker stops instead of
    /// reconnecting — and neither the health monitor nor recovery watches it any more.
    fn departed(&self, node: &Coordinator, worker: &str) {
        let session = lock(&self.sessions).remove(worker);
        if let Some(session) = session {
            let reason = node
                .state()
                .with_machine(|m| m.worker(worker).map(|w| w.status_reason.clone()))
                .unwrap_or_default();
            let removed = CoordinatorMessage {
                body: Some(coordinator_message::Body::Removed(Removed { reason })),
            };
            let _ = session.sender.try_send(Ok(removed));
        }
        self.monitor.forget(worker);
        lock(&self.breakers).forget(worker);
        self.recovery_event(crate::recovery::RecoveryEvent::WorkerLeft {
            worker: worker.to_string(),
        });
    }
}

/// Sends a committed assignment to its worker (if it has a session; reconciliation on the
/// worker's next hello re-sends it otherwise).
pub fn send_assign(
    node: &Coordinator,
    leadership: &Leadership,
    task: &str,
    worker: &str,
    attempt: u32,
) {
    let Some(sender) = leadership.sender(worker) else {
        return;
    };
    // Only the attempt the log still gives this worker: one requeued meanwhile (its worker
    // failed between the assignment and now) is not sent to run after all.
    let message = node.state().with_machine(|m| {
        m.task(task)
            .filter(|t| {
                t.attempt == attempt
                    && t.status == TaskStatus::Assigned
                    && t.holder().map(String::as_str) == Some(worker)
            })
            .map(|t| Assign {
                term: leadership.term,
                task_id: task.to_string(),
                attempt,
                command: t.spec.command(),
                env: (t.spec.env().into_iter())
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                cwd: t.spec.cwd().map(str::to_string),
                timeout_ms: t.spec.timeout_ms,
            })
    });
    if let Some(assign) = message {
        let message = CoordinatorMessage {
            body: Some(coordinator_message::Body::Assign(assign)),
        };
        if sender.try_send(Ok(message)).is_err() {
            tracing::warn!(
                worker,
                task,
                "session buffer full or closed; the assignment will be re-sent on reconnect"
            );
        }
    }
}
