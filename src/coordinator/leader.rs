//! Becoming and ceasing to be leader, and the dispatch loop.
//!
//! [`start`] runs from openraft's `on_leader_change` once this node leads its term in fact: it
//! builds the term's [`Leadership`] (soft state, [`super::leadership`]) and starts the leader
//! loops — the health monitor ([`super::monitor`]), the recovery loop
//! ([`super::recovery_loop`]) and dispatch, here; [`stop`] cancels them.
//!
//! The dispatch loop: pick → propose `AssignTasks` → on commit send each `Assign` to its
//! worker ([`super::leadership::send_assign`]). A worker runs an attempt only after its
//! assignment is committed. Everything sent to workers carries the leader's term, so a
//! deposed leader's messages are refused by workers that have seen a newer term.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::Coordinator;
use super::leadership::{Leadership, lock, send_assign};
use crate::recovery::fleet::FleetBreakers;
use crate::state::command::{Command, TaskStatus, Timestamp, WorkerStatus};
use crate::state::machine::{Event, Reply};

/// Assignments proposed in one `AssignTasks` command at most.
pub(super) const MAX_BATCH: usize = 512;

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
    let breakers = node.state().with_machine(|m| {
        FleetBreakers::new(
            node.config().breakers.clone(),
            m.breakers(),
            Timestamp::now(),
            term,
        )
    });
    let breakers = match breakers {
        Ok(breakers) => breakers,
        Err(e) => {
            // Validated at start as well; leading without breakers would ignore the settings.
            tracing::error!("cannot build the circuit breakers: {e}; leader loops not started");
            return;
        }
    };
    let leadership = Arc::new(Leadership::new(
        node.clone(),
        term,
        monitor,
        recovery,
        breakers,
    ));
    leadership.follow_system_breaker(&node);
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
        if let Err(e) = record.write(command).await {
            tracing::warn!(term, "could not record the election: {e}");
        }
    });
    if let Some(recovery) = leadership.recovery.clone() {
        // Past terms' recovery outcomes, read from DuckDB off the leader's path.
        let node = node.clone();
        tokio::task::spawn_blocking(move || recovery.learn_history(&node, recovery_rows));
    }
    if let Some(dir) = node.config().visualization_path.clone() {
        // Pictures of the cluster every interval while this node leads (`viz`).
        tokio::spawn(crate::viz::load::run_periodically(
            crate::viz::load::Source::Local(node.clone()),
            dir,
            Duration::from_millis(node.config().visualization_interval_ms),
            crate::viz::load::KEEP_DEFAULT,
            leadership.cancel.child_token(),
        ));
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
        // Each assignment asks its worker's breaker; a half-open one lets its trials through
        // and refuses the rest, which stay queued while the worker waits for their results.
        let (picks, refused) = leadership.allowed_by_breakers(picks, at);
        if !refused.is_empty() {
            let mut scheduler = lock(&leadership.scheduler);
            for a in &refused {
                scheduler.rejected(&a.task);
                scheduler.worker_down(&a.worker);
            }
        }
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
    let replies = match node.write(command).await {
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
    settle_assignments(&node, &leadership, picks, replies);
}

/// Acts on the replies of a committed `AssignTasks`, item by item: an accepted assignment is
/// sent to its worker; a refused one goes back to the scheduler, or leaves it when its task is
/// no longer queued.
pub(super) fn settle_assignments(
    node: &Coordinator,
    leadership: &Arc<Leadership>,
    picks: Vec<crate::state::command::Assignment>,
    replies: Vec<Reply>,
) {
    for (assignment, reply) in picks.into_iter().zip(replies) {
        match reply {
            Reply::Task {
                status: TaskStatus::Assigned,
            } => {
                lock(&leadership.scheduler).committed(&assignment.task);
                send_assign(
                    node,
                    leadership,
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
