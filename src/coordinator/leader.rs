//! Leader-only soft state and loops: worker sessions, the scheduler, and dispatch.
//!
//! A [`Leadership`] exists only while this node is the committed leader of a term. It is
//! created by openraft's `on_leader_change(start)` and cancelled on `stop`; everything it
//! holds is soft state rebuilt from the replicated view on election:
//!
//! * the live worker sessions (an mpsc sender per worker stream, its slots, what it runs),
//!   one per worker name and process ([`super::sessions::identity`]);
//! * the [`Scheduler`], fed by the state machine's [`Event`]s (a lagging feed rebuilds it);
//! * the dispatch loop: pick → propose `AssignTasks` → on commit send each `Assign` to its
//!   worker. A worker runs an attempt only after its assignment is committed.
//!
//! Everything sent to workers carries the leader's term, so a deposed leader's messages are
//! refused by workers that have seen a newer term.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::Coordinator;
use super::sessions::identity::{self, Holder, NameTaken};
use crate::proto::{Assign, CoordinatorMessage, coordinator_message};
use crate::scheduler::{QueuedTask, Scheduler, WorkerProfile};
use crate::state::command::{Command, TaskStatus, Timestamp, WorkerId, WorkerStatus};
use crate::state::machine::{Event, Machine, Reply};

/// Assignments proposed in one `AssignTasks` command at most.
const MAX_BATCH: usize = 512;

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
    sessions: Mutex<BTreeMap<WorkerId, Session>>,
    /// Hellos being registered, holding their name until their session opens: (session id,
    /// host, when). Locked before `sessions` when both are.
    claims: Mutex<BTreeMap<WorkerId, (String, String, Instant)>>,
    /// A session or claim not heard from for this long no longer holds its name.
    failure_timeout: Duration,
    scheduler: Mutex<Scheduler>,
    /// Wakes the dispatcher (a worker joined, a slot freed).
    wake: Notify,
    next_generation: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker's profile from the replicated view and its session.
pub fn worker_profile(machine: &Machine, worker: &str, slots: u32) -> Option<WorkerProfile> {
    let w = machine.worker(worker)?;
    let capabilities: BTreeMap<String, String> =
        match serde_json::from_str::<serde_json::Value>(&w.capabilities_json) {
            Ok(serde_json::Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect(),
            _ => BTreeMap::new(),
        };
    Some(WorkerProfile {
        id: w.id.clone(),
        labels: w.labels.clone(),
        capabilities,
        slots,
    })
}

impl Leadership {
    fn new(
        node: Arc<Coordinator>,
        term: u64,
        monitor: super::monitor::Monitor,
        recovery: Option<Arc<super::recovery_loop::Recovery>>,
    ) -> Self {
        let cancel = CancellationToken::new();
        let failure_timeout = Duration::from_millis(node.config().worker_failure_timeout_ms);
        Leadership {
            term,
            monitor,
            recovery,
            reports: super::batcher::Batcher::start(node, cancel.clone()),
            cancel,
            sessions: Mutex::new(BTreeMap::new()),
            claims: Mutex::new(BTreeMap::new()),
            failure_timeout,
            scheduler: Mutex::new(Scheduler::new()),
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
    fn rebuild(&self, machine: &Machine) {
        let profiles: Vec<WorkerProfile> = lock(&self.sessions)
            .iter()
            .filter(|(id, _)| {
                machine
                    .worker(id)
                    .is_some_and(|w| w.status == WorkerStatus::Healthy)
            })
            .filter_map(|(id, s)| worker_profile(machine, id, s.slots))
            .collect();
        *lock(&self.scheduler) = Scheduler::rebuild(machine, &profiles);
    }

    fn apply_event(&self, node: &Coordinator, event: Event) {
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
            // An assignment this scheduler did not reserve (proposed by a previous leader and
            // applied after the rebuild): the task leaves the queue and its slot is busy.
            Event::Assigned { task, worker, .. } => {
                if scheduler.reservation(&task).is_none() && scheduler.remove(&task) {
                    scheduler.attempt_started(&worker);
                }
            }
            Event::Released {
                task,
                worker,
                attempt,
            } => {
                scheduler.attempt_ended(&worker);
                drop(scheduler);
                self.cancel_if_running(&task, &worker, attempt);
            }
            Event::Final { task, .. } => {
                scheduler.remove(&task);
            }
            Event::Worker { worker, status } => {
                if status != WorkerStatus::Healthy {
                    scheduler.worker_down(&worker);
                } else if let Some(slots) = lock(&self.sessions).get(&worker).map(|s| s.slots)
                    && let Some(profile) = node
                        .state()
                        .with_machine(|m| worker_profile(m, &worker, slots))
                {
                    scheduler.worker_up(profile);
                }
            }
        }
    }
}

/// Whether this node leads `term` in fact and its state is that term's: waits (while it keeps
/// leading) until the server state is Leader and the state machine has applied an entry of
/// `term` itself (the blank entry openraft appends on election).
///
/// Both matter. openraft's `on_leader_change` looks at the vote alone, and a restarted former
/// leader comes back with a committed vote for itself while it is a follower (it must win a
/// new election to lead). And a new leader may hold entries of the previous term that it has
/// not applied yet (the old leader died before telling it they were committed): soft state
/// rebuilt from that view would miss assignments, and reconciling a worker against it would
/// cancel attempts the log gave that worker. Once an entry of `term` is applied, every entry
/// before it is too.
async fn ready_to_lead(node: &Coordinator, term: u64) -> bool {
    use openraft::async_runtime::WatchReceiver;
    let mut metrics = node.raft().metrics();
    // No time limit: it normally takes one commit round, and however long it takes, the node
    // either gets there or stops leading this term (a change of vote or state ends the wait).
    loop {
        {
            let m = metrics.borrow_watched();
            if m.vote.leader_id.term != term || m.vote.leader_id.node_id != node.node_id() {
                return false;
            }
            let applied_term = m.last_applied.as_ref().map(|l| l.leader_id.term);
            if m.state == openraft::ServerState::Leader && applied_term >= Some(term) {
                return true;
            }
        }
        if metrics.changed().await.is_err() {
            return false;
        }
    }
}

/// Starts the leader's soft state and loops for `term`.
pub async fn start(node: Arc<Coordinator>, term: u64) {
    if !ready_to_lead(&node, term).await {
        tracing::info!(
            node_id = node.node_id(),
            term,
            "the vote names this node leader, but it is not leading (a restarted former leader, \
             or leadership lost before the term's first entry applied); leader loops not started"
        );
        return;
    }
    let recovery = if node.config().disable_auto_recovery {
        None
    } else {
        match super::recovery_loop::Recovery::new(&node, term) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::error!("auto-recovery off for this term: {e}");
                None
            }
        }
    };
    // Every worker the log says is alive gets a fresh deadline: a failover fails nobody. The
    // deadlines start now, right before sessions are accepted, so that nothing done before
    // (however slow on a loaded machine) eats into the grace the workers have to reconnect.
    let (known, recovery_rows) = node.state().with_machine(|m| {
        let known: Vec<String> = m
            .workers()
            .values()
            .filter(|w| matches!(w.status, WorkerStatus::Healthy | WorkerStatus::Suspect))
            .map(|w| w.id.clone())
            .collect();
        (known, m.counters().worker_recovery)
    });
    let monitor = match super::monitor::Monitor::new(
        super::monitor::detector_config(&node),
        Instant::now(),
        &known,
    ) {
        Ok(monitor) => monitor,
        Err(e) => {
            // The configuration is validated at start, so this does not happen; if it did,
            // leading without failure detection would be wrong, so do not lead loops at all.
            tracing::error!("cannot start the health monitor: {e}; leader loops not started");
            return;
        }
    };
    let leadership = Arc::new(Leadership::new(node.clone(), term, monitor, recovery));
    // Subscribe before reading the view, so nothing applied in between is missed.
    let events = node.state().subscribe();
    node.state().with_machine(|m| leadership.rebuild(m));
    *lock(&node.leadership) = Some(leadership.clone());
    tracing::info!(node_id = node.node_id(), term, "leading: dispatch started");

    let record = node.clone();
    tokio::spawn(async move {
        let command = Command::LeaderElected {
            node: record.node_id(),
            term,
            at: Timestamp::now(),
        };
        if let Err(e) = record.raft().client_write(command).await {
            tracing::warn!(term, "could not record the election: {e}");
        }
    });
    if let Some(recovery) = leadership.recovery.clone() {
        // Past terms' recovery outcomes, read from DuckDB off the leader's path.
        let node = node.clone();
        tokio::task::spawn_blocking(move || recovery.learn_history(&node, recovery_rows));
    }
    tokio::spawn(super::monitor::run(node.clone(), leadership.clone()));
    tokio::spawn(super::recovery_loop::run(node.clone(), leadership.clone()));
    tokio::spawn(dispatch(node, leadership, events));
}

/// Stops the leader's loops; sessions end, and workers reconnect to the next leader.
pub async fn stop(node: &Coordinator) {
    if let Some(leadership) = lock(&node.leadership).take() {
        tracing::info!(
            node_id = node.node_id(),
            term = leadership.term,
            "no longer leading"
        );
        leadership.cancel.cancel();
    }
}

/// The dispatch loop of one leadership term.
async fn dispatch(
    node: Arc<Coordinator>,
    leadership: Arc<Leadership>,
    mut events: broadcast::Receiver<Event>,
) {
    let cancel = leadership.cancel.clone();
    let mut tokens = MAX_BATCH as f64;
    let mut refilled = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            received = events.recv() => match received {
                Ok(event) => leadership.apply_event(&node, event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "event feed lagged; rebuilding the scheduler");
                    node.state().with_machine(|m| leadership.rebuild(m));
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = leadership.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        // Take every event already there before picking, so picks see the newest state.
        loop {
            match events.try_recv() {
                Ok(event) => leadership.apply_event(&node, event),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    node.state().with_machine(|m| leadership.rebuild(m));
                }
                Err(_) => break,
            }
        }
        // The proposal's time is taken before dispatch is checked, so an assignment stamped
        // after a hold began was never allowed by it.
        let at = Timestamp::now();
        let budget = match leadership
            .recovery
            .as_ref()
            .and_then(|r| r.dispatch_allowance())
        {
            None => {
                tokens = MAX_BATCH as f64;
                MAX_BATCH
            }
            Some(rate) if rate <= 0.0 => {
                // Held: nothing is assigned, and no credit is kept for later.
                tokens = 0.0;
                0
            }
            Some(rate) => {
                // Ramping: a token bucket refilled at `rate` per second, holding at most one
                // second's worth (and at least one assignment).
                let now = Instant::now();
                tokens = (tokens + rate * (now - refilled).as_secs_f64()).min(rate.max(1.0));
                tokens.floor() as usize
            }
        };
        refilled = Instant::now();
        if budget == 0 {
            continue;
        }
        let picks = lock(&leadership.scheduler).pick(budget);
        tokens -= picks.len() as f64;
        if picks.is_empty() {
            continue;
        }
        // Proposals are pipelined: the loop goes on picking while this one commits, so a task
        // queued meanwhile waits for its own commit only, not for the previous one too. The
        // picks are reserved in the scheduler, so no two proposals hold the same slot or task.
        tokio::spawn(propose_assignments(
            node.clone(),
            leadership.clone(),
            at,
            picks,
        ));
    }
}

/// Proposes one `AssignTasks` batch and, once committed, sends each accepted assignment to its
/// worker; a refused or failed one goes back to the scheduler.
async fn propose_assignments(
    node: Arc<Coordinator>,
    leadership: Arc<Leadership>,
    at: Timestamp,
    picks: Vec<crate::state::command::Assignment>,
) {
    let command = Command::AssignTasks {
        term: leadership.term,
        at,
        assignments: picks.clone(),
    };
    let replies = match node.raft().client_write(command).await {
        Ok(response) => match response.data {
            Reply::Many(items) => items,
            other => vec![other; picks.len()],
        },
        Err(e) => {
            tracing::warn!("proposing assignments failed: {e}");
            let mut scheduler = lock(&leadership.scheduler);
            for a in &picks {
                scheduler.rejected(&a.task);
            }
            return;
        }
    };
    for (assignment, reply) in picks.into_iter().zip(replies) {
        match reply {
            Reply::Task {
                status: TaskStatus::Assigned,
            } => {
                lock(&leadership.scheduler).committed(&assignment.task);
                send_assign(
                    &node,
                    &leadership,
                    &assignment.task,
                    &assignment.worker,
                    assignment.attempt,
                );
            }
            other => {
                tracing::debug!(task = %assignment.task, "assignment refused: {other:?}");
                let mut scheduler = lock(&leadership.scheduler);
                scheduler.rejected(&assignment.task);
                let still_queued = node.state().with_machine(|m| {
                    m.task(&assignment.task)
                        .is_some_and(|t| t.status == TaskStatus::Queued)
                });
                if !still_queued {
                    scheduler.remove(&assignment.task);
                }
            }
        }
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
    let message = node.state().with_machine(|m| {
        m.task(task).map(|t| Assign {
            term: leadership.term,
            task_id: task.to_string(),
            attempt,
            command: t.spec.command.clone(),
            env: t.spec.env.clone().into_iter().collect(),
            cwd: t.spec.cwd.clone(),
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
