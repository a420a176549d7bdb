//! The `Fleet` gRPC service: one bidirectional session per worker, held with the leader.
//!
//! A session starts with the worker's `Hello`. A node that is not the leader answers with
//! `Redirect` (naming the leader when it knows it) and ends the stream. The leader refuses a
//! hello for a name another live process holds (`AlreadyExists`, see [`identity`]), commits
//! `RegisterWorker`, answers `Welcome` with its term, reconciles what the worker says it
//! runs against what the log says it holds, and then serves the session:
//!
//! * `Heartbeat` refreshes the worker's liveness (soft state, never replicated); one that
//!   carries changed capabilities (a re-probe) registers the worker again with them;
//! * `AttemptStarted` becomes a `TaskStarted` command, held for up to 200 ms so that a
//!   short attempt's start and result are proposed as one entry (the private `hold` module);
//! * `AttemptFinished` becomes a `FinishTask` command; once it is committed (applied or
//!   recorded as stale) the worker gets a `FinishedAck` and may forget the result. Until
//!   then it re-sends the result after every reconnect, so no result is lost in a failover.
//!
//! A session replaced by a newer one of its worker (the same process reconnecting), or closed
//! by recovery, is ended at its next message: only the current session reports for a name.
//!
//! Reconciliation on hello: an attempt the worker runs that the log does not give it is
//! cancelled on the worker; an attempt the log gives it that was never started is sent
//! again (the worker ignores duplicates); one that had started and the worker no longer
//! knows is requeued (`lease_lost`).

mod hold;
pub mod identity;

#[cfg(test)]
mod finish_tests;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Coordinator;
use super::leadership::{Leadership, send_assign};
use crate::proto::fleet_server::{Fleet, FleetServer};
use crate::proto::{
    AttemptFinished, AttemptRef, Cancel, CoordinatorMessage, FinishedAck, Hello, Redirect, Welcome,
    coordinator_message, worker_message,
};
use crate::recovery::RecoveryEvent;
use crate::state::command::{Command, FaultCategory, Outcome, TaskStatus, Timestamp, WorkerStatus};
use crate::state::limits;
use crate::state::machine::Reply;

/// Messages buffered towards one worker.
const SESSION_BUFFER: usize = 4096;

/// The most attempts one worker may run at once (as `testfleet worker --slots` allows).
pub const MAX_SLOTS: u32 = 1024;

/// The `Fleet` service of one node.
pub struct FleetService {
    node: Arc<Coordinator>,
    /// One permit per open session: a node holds at most [`MAX_SESSIONS`].
    sessions: Arc<tokio::sync::Semaphore>,
}

/// The most worker sessions one node holds open at once.
pub const MAX_SESSIONS: usize = 10_000;

/// The largest message a worker may send: a finished attempt carries at most a 64 KiB output
/// tail and its tests, which the worker keeps under [`crate::worker::junit::MAX_REPORT_BYTES`].
pub const MAX_SESSION_MESSAGE: usize = 16 * 1024 * 1024;

/// How long a new session may take to send its hello.
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The tonic server for [`FleetService`].
pub fn server(node: Arc<Coordinator>) -> FleetServer<FleetService> {
    FleetServer::new(FleetService {
        node,
        sessions: Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS)),
    })
    .max_decoding_message_size(MAX_SESSION_MESSAGE)
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

fn message(body: coordinator_message::Body) -> CoordinatorMessage {
    CoordinatorMessage { body: Some(body) }
}

fn refs(list: &[AttemptRef]) -> BTreeSet<(String, u32)> {
    list.iter()
        .map(|r| (r.task_id.clone(), r.attempt))
        .collect()
}

fn redirect(node: &Coordinator) -> CoordinatorMessage {
    let metrics = node.metrics();
    let leader_id = metrics.current_leader.filter(|id| *id != node.node_id());
    let leader_addr = leader_id
        .and_then(|id| {
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        })
        .unwrap_or_default();
    message(coordinator_message::Body::Redirect(Redirect {
        leader_id,
        leader_addr,
    }))
}

/// A worker's timestamp, or the coordinator's clock when the worker's is not storable (a
/// worker with a broken clock must not get its reports refused).
fn micros(at_us: i64) -> Timestamp {
    let at = Timestamp(at_us);
    if at_us > 0 && limits::check_timestamp("", at).is_ok() {
        at
    } else {
        Timestamp::now()
    }
}

#[tonic::async_trait]
impl Fleet for FleetService {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<crate::proto::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let permit = self.sessions.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this coordinator holds its limit of {MAX_SESSIONS} worker sessions; retry \
                 later or spread the workers over more coordinators"
            ))
        })?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded(format!("no hello within {HELLO_TIMEOUT:?}")))?
            .ok_or_else(|| Status::invalid_argument("the session closed before its hello"))??;
        let Some(worker_message::Body::Hello(hello)) = first.body else {
            return Err(Status::invalid_argument(
                "the first message of a session must be a hello",
            ));
        };
        if hello.worker_id.is_empty() {
            return Err(Status::invalid_argument(
                "hello has an empty worker_id: give the worker a --name",
            ));
        }
        let capabilities = if hello.capabilities_json.is_empty() {
            "{}"
        } else {
            hello.capabilities_json.as_str()
        };
        let labels = hello.labels.clone().into_iter().collect();
        limits::check_registration(&hello.worker_id, &hello.host, "", capabilities, &labels)
            .map_err(|e| Status::invalid_argument(format!("hello refused: {e}")))?;
        if hello.slots > MAX_SLOTS {
            return Err(Status::invalid_argument(format!(
                "hello refused: slots is {}, more than the limit of {MAX_SLOTS}",
                hello.slots
            )));
        }
        let (tx, rx) = mpsc::channel(SESSION_BUFFER);
        let stream: SessionStream = Box::pin(ReceiverStream::new(rx));
        let Some(leadership) = self.node.leadership() else {
            let _ = tx.send(Ok(redirect(&self.node))).await;
            return Ok(Response::new(stream));
        };
        if hello.seen_term > leadership.term {
            // The worker has seen a newer leader: this node is stale.
            let _ = tx.send(Ok(redirect(&self.node))).await;
            return Ok(Response::new(stream));
        }
        // Another live process holds the name: refused before it can register anything.
        if let Err(taken) = leadership.claim(&hello.worker_id, &hello.session_id, &hello.host) {
            tracing::warn!(worker = %hello.worker_id, host = %hello.host, "hello refused: {taken}");
            return Err(Status::already_exists(taken.to_string()));
        }
        let node = self.node.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(node, leadership, hello, inbound, tx).await {
                tracing::debug!("session ended: {e}");
            }
            drop(permit);
        });
        Ok(Response::new(stream))
    }
}

async fn serve(
    node: Arc<Coordinator>,
    leadership: Arc<Leadership>,
    hello: Hello,
    mut inbound: Streaming<crate::proto::WorkerMessage>,
    tx: mpsc::Sender<Result<CoordinatorMessage, Status>>,
) -> Result<(), String> {
    let worker = hello.worker_id.clone();
    let register = Command::RegisterWorker {
        worker: worker.clone(),
        host: hello.host.clone(),
        address: String::new(),
        capabilities_json: if hello.capabilities_json.is_empty() {
            "{}".to_string()
        } else {
            hello.capabilities_json.clone()
        },
        labels: hello.labels.clone().into_iter().collect(),
        at: Timestamp::now(),
    };
    let before = node
        .state()
        .with_machine(|m| m.worker(&worker).map(|w| w.status));
    let registered = node.write(register).await;
    if !matches!(&registered, Ok(r) if !r.data.is_rejected()) {
        leadership.release_claim(&worker, &hello.session_id);
    }
    match registered {
        Ok(r) if r.data.is_rejected() => {
            let _ = tx
                .send(Err(Status::invalid_argument(format!(
                    "registration refused: {:?}",
                    r.data
                ))))
                .await;
            return Err("registration refused".into());
        }
        Ok(_) => {}
        Err(e) => {
            let _ = tx.send(Ok(redirect(&node))).await;
            return Err(format!("cannot register {worker}: {e}"));
        }
    }
    if hello.previous_exit == "crashed" {
        // Before it counts as back: a recovery under way is a crash's.
        leadership.recovery_event(RecoveryEvent::WorkerCrashed {
            worker: worker.clone(),
        });
    }
    if before.is_some_and(|s| {
        matches!(
            s,
            WorkerStatus::Failed
                | WorkerStatus::Recovering
                | WorkerStatus::Quarantined
                | WorkerStatus::PermanentlyFailed
        )
    }) {
        leadership.recovery_event(RecoveryEvent::WorkerHealthy {
            worker: worker.clone(),
        });
    }
    let running = refs(&hello.running);
    let slots = hello.slots.max(1);
    let generation = match leadership.add_session(
        &worker,
        &hello.session_id,
        &hello.host,
        tx.clone(),
        slots,
        running.clone(),
    ) {
        Ok(generation) => generation,
        Err(taken) => {
            let _ = tx
                .send(Err(Status::already_exists(taken.to_string())))
                .await;
            return Err(taken.to_string());
        }
    };
    leadership.monitor.session_opened(&worker);
    if !hello.previous_exit.is_empty() {
        tracing::info!(
            worker = %worker,
            previous_exit = %hello.previous_exit,
            previous_started_at_us = hello.previous_started_at_us,
            "worker restarted"
        );
    }
    tracing::info!(worker = %worker, slots, term = leadership.term, "worker session open");
    let welcome = Welcome {
        term: leadership.term,
        leader_id: node.node_id(),
        heartbeat_interval_ms: node.config().worker_heartbeat_ms(),
    };
    let _ = tx
        .send(Ok(message(coordinator_message::Body::Welcome(welcome))))
        .await;
    reconcile(&node, &leadership, &worker, &running).await;
    // Only a healthy worker is scheduled; a quarantined or draining one joins when recovery
    // makes it healthy, a drained one when an operator ends the drain (the status event
    // brings it in then).
    if let Some(profile) = node
        .state()
        .with_machine(|m| leadership.schedulable_profile(m, &worker, slots))
    {
        leadership.worker_ready(profile);
    }

    // A session silent for twice the failure timeout is closed: its worker was failed long
    // ago, and a stream that never speaks must not hold the node's resources.
    let idle =
        std::time::Duration::from_millis(node.config().worker_failure_timeout_ms.saturating_mul(2));
    // Set once the worker's departure is committed: its session then ends without a failure.
    let mut left = false;
    // Changed capabilities from a heartbeat, until registered (`reregister`).
    let mut capabilities: Option<String> = None;
    // Start notices waiting for their attempts' results (`hold`).
    let mut starts = hold::StartHold::default();
    let result = loop {
        let due = starts.next_due();
        let next = tokio::select! {
            _ = leadership.cancel.cancelled() => break Ok(()),
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                for start in starts.due(tokio::time::Instant::now()) {
                    propose_start(&leadership, start);
                }
                continue;
            }
            next = tokio::time::timeout(idle, inbound.next()) => match next {
                Ok(next) => next,
                Err(_) => break Err(format!("{worker} sent nothing for {idle:?}")),
            },
        };
        let Some(item) = next else { break Ok(()) };
        let body = match item {
            Ok(m) => m.body,
            Err(e) => break Err(format!("stream error: {e}")),
        };
        // Only the name's current session speaks for it: one replaced by a reconnect, or
        // closed by recovery, ends here (its worker reconnects and re-sends what is unacked).
        if !leadership.is_current(&worker, generation) {
            break Err(format!("{worker}'s session was replaced or closed"));
        }
        // Any message shows the worker is alive.
        leadership.monitor.heartbeat(&worker);
        match body {
            Some(worker_message::Body::Heartbeat(h)) => {
                leadership.heartbeat(&worker, generation, refs(&h.running));
                if !h.capabilities_json.is_empty() {
                    capabilities = Some(h.capabilities_json);
                }
                if let Some(json) = capabilities.take() {
                    capabilities = reregister(&node, &hello, json).await;
                }
            }
            Some(worker_message::Body::Started(s)) => {
                let key = (s.task_id.clone(), s.attempt);
                let command = Command::TaskStarted {
                    task: s.task_id,
                    attempt: s.attempt,
                    worker: worker.clone(),
                    at: micros(s.at_us),
                };
                starts.hold(key, command, tokio::time::Instant::now());
            }
            Some(worker_message::Body::Finished(f)) => {
                if let Some(outcome) = Outcome::parse(&f.outcome) {
                    leadership.with_breakers(|b, out| {
                        b.finished(
                            &worker,
                            &f.task_id,
                            f.attempt,
                            outcome,
                            Timestamp::now(),
                            out,
                        );
                    });
                }
                if f.outcome == Outcome::WorkerFault.as_str() {
                    tracing::info!(worker = %worker, task = %f.task_id, fault = %f.fault, "worker fault");
                    leadership.recovery_event(RecoveryEvent::InfraFault {
                        worker: worker.clone(),
                        task: f.task_id.clone(),
                        // `unknown` (or an older worker's empty field): something in the
                        // worker broke.
                        category: FaultCategory::parse(&f.fault).unwrap_or(FaultCategory::Crash),
                    });
                }
                let start = starts.take(&(f.task_id.clone(), f.attempt));
                let leadership = leadership.clone();
                let worker = worker.clone();
                let tx = tx.clone();
                tokio::spawn(async move { finish(&leadership, &worker, start, f, &tx).await });
            }
            Some(worker_message::Body::Leaving(leaving)) => {
                match depart(&node, &leadership, &worker, leaving).await {
                    Ok(true) => {
                        left = true;
                        break Ok(());
                    }
                    Ok(false) => {}
                    Err(e) => break Err(e),
                }
            }
            Some(worker_message::Body::Output(output)) => {
                leadership.output.deliver(&worker, output);
            }
            Some(worker_message::Body::Hello(_)) | None => {
                break Err("unexpected message in an open session".into());
            }
        }
    };
    // What the worker said has started is not dropped with the session (a start after its
    // attempt's end, should the result come first through a new session, is refused as stale).
    for start in starts.drain() {
        propose_start(&leadership, start);
    }
    // A departure's session was already taken out when the departure applied
    // (`Leadership::departed`).
    let current = leadership.remove_session(&worker, generation);
    if left {
        leadership.monitor.forget(&worker);
        tracing::info!(worker = %worker, "worker left");
    } else if current {
        leadership.monitor.session_closed(&worker);
        tracing::info!(worker = %worker, "worker session closed");
    }
    result
}

/// A worker whose capabilities changed (`Heartbeat.capabilities_json`) is registered again
/// with them: `workers.capabilities` follows, and the worker's event gives the scheduler its
/// new profile, granting or withdrawing a capability without touching the attempts it runs.
/// Only a worker that registering leaves as it is — healthy, or held (quarantined, draining) —
/// is registered so; a suspect or failed one is the health monitor's and recovery's to bring
/// back, so its capabilities wait for a later heartbeat (`Some`), as after a failed proposal.
async fn reregister(
    node: &Coordinator,
    hello: &Hello,
    capabilities_json: String,
) -> Option<String> {
    let worker = &hello.worker_id;
    let labels = hello.labels.clone().into_iter().collect();
    if let Err(e) = limits::check_registration(worker, &hello.host, "", &capabilities_json, &labels)
    {
        tracing::warn!(worker = %worker, "changed capabilities refused: {e}");
        return None;
    }
    let known = node.state().with_machine(|m| {
        m.worker(worker)
            .map(|w| (w.status, w.capabilities_json == capabilities_json))
    });
    match known {
        None | Some((_, true)) => return None,
        Some((WorkerStatus::Healthy | WorkerStatus::Quarantined | WorkerStatus::Draining, _)) => {}
        Some(_) => return Some(capabilities_json),
    }
    let command = Command::RegisterWorker {
        worker: worker.clone(),
        host: hello.host.clone(),
        address: String::new(),
        capabilities_json: capabilities_json.clone(),
        labels,
        at: Timestamp::now(),
    };
    match node.write(command).await {
        Ok(r) if r.data.is_rejected() => {
            tracing::warn!(worker = %worker, "changed capabilities refused: {:?}", r.data);
            None
        }
        Ok(_) => {
            tracing::info!(worker = %worker, "worker registered again: its capabilities changed");
            None
        }
        Err(e) => {
            tracing::warn!(worker = %worker, "changed capabilities not committed (retried): {e}");
            Some(capabilities_json)
        }
    }
}

/// A worker leaving on purpose. The first message holds it out of scheduling (`draining`) while
/// it finishes what it runs; the last records the departure ([`Command::LeaveWorker`]), which
/// hands back what it still holds without a retry used and starts no recovery. `Ok(true)`
/// once the departure is committed: the session ends.
async fn depart(
    node: &Coordinator,
    leadership: &Leadership,
    worker: &str,
    leaving: crate::proto::Leaving,
) -> Result<bool, String> {
    let reason = if leaving.reason.is_empty() {
        "left".to_string()
    } else {
        leaving.reason
    };
    if leaving.done {
        let command = Command::LeaveWorker {
            worker: worker.to_string(),
            reason,
            at: Timestamp::now(),
        };
        return match leadership.reports.propose(command).await {
            Ok(Reply::Rejected { reason }) => Err(format!("departure refused: {reason}")),
            Ok(_) => Ok(true),
            Err(e) => Err(format!("departure not committed: {e}")),
        };
    }
    let status = node
        .state()
        .with_machine(|m| m.worker(worker).map(|w| w.status));
    if status == Some(WorkerStatus::Healthy) {
        let command = Command::SetWorkerStatus {
            worker: worker.to_string(),
            from: WorkerStatus::Healthy,
            to: WorkerStatus::Draining,
            reason: format!("leaving ({reason}): finishing its attempts"),
            at: Timestamp::now(),
        };
        if let Err(e) = leadership.reports.propose(command).await {
            tracing::warn!(worker, "drain before leaving not committed: {e}");
        }
    }
    Ok(false)
}

/// Proposes a start notice alone (its hold is over, or its session ended).
fn propose_start(leadership: &Arc<Leadership>, start: Command) {
    let leadership = leadership.clone();
    tokio::spawn(async move {
        if let Err(e) = leadership.reports.propose(start).await {
            tracing::debug!("TaskStarted not committed: {e}");
        }
    });
}

/// Proposes a result, after its attempt's held start notice (`start`) in the same entry when
/// there is one, and acknowledges it to the worker once committed.
async fn finish(
    leadership: &Leadership,
    worker: &str,
    start: Option<Command>,
    f: AttemptFinished,
    tx: &mpsc::Sender<Result<CoordinatorMessage, Status>>,
) {
    let (task_id, attempt) = (f.task_id.clone(), f.attempt);
    let command = finish_command(worker, f);
    let committed = match start {
        Some(start) => leadership.reports.propose_after(start, command).await,
        None => leadership.reports.propose(command).await,
    };
    match committed {
        Ok(reply) => {
            if let Reply::Stale { reason } = &reply {
                tracing::info!(task = %task_id, attempt, worker, "stale result recorded: {reason}");
            }
            let ack = FinishedAck { task_id, attempt };
            let _ = tx
                .send(Ok(message(coordinator_message::Body::Ack(ack))))
                .await;
        }
        Err(e) => {
            tracing::warn!(task = %task_id, "result not committed (the worker will resend it): {e}")
        }
    }
}

/// The command for a worker's result. A signal travels as a negative exit code
/// ([`crate::state::exit`]); an unknown outcome is the worker's fault.
pub(crate) fn finish_command(worker: &str, f: AttemptFinished) -> Command {
    if !f.tests.is_empty() {
        return Command::FinishTaskWithTests {
            task: f.task_id,
            attempt: f.attempt,
            worker: worker.to_string(),
            outcome: Outcome::parse(&f.outcome).unwrap_or(Outcome::WorkerFault),
            exit_code: crate::state::exit::encode(f.exit_code, f.signal),
            duration_ms: f.duration_ms,
            output_tail: f.output_tail,
            at: micros(f.at_us),
            tests: f
                .tests
                .into_iter()
                .map(crate::worker::junit::from_wire)
                .collect(),
        };
    }
    Command::FinishTask {
        task: f.task_id,
        attempt: f.attempt,
        worker: worker.to_string(),
        outcome: Outcome::parse(&f.outcome).unwrap_or(Outcome::WorkerFault),
        exit_code: crate::state::exit::encode(f.exit_code, f.signal),
        duration_ms: f.duration_ms,
        output_tail: f.output_tail,
        at: micros(f.at_us),
    }
}

/// Reconciles a connected worker against the log (system recovery's lease reconciliation).
pub async fn reconcile_worker(node: &Coordinator, leadership: &Leadership, worker: &str) {
    let reported = leadership.reported(worker);
    reconcile(node, leadership, worker, &reported).await;
}

/// Brings the worker and the log into agreement after a hello.
async fn reconcile(
    node: &Coordinator,
    leadership: &Leadership,
    worker: &str,
    reported: &BTreeSet<(String, u32)>,
) {
    let held: Vec<(String, u32, TaskStatus)> = node.state().with_machine(|m| {
        m.held_by(worker)
            .map(|t| (t.id().to_string(), t.attempt, t.status))
            .collect()
    });
    let held_keys: BTreeSet<(String, u32)> = held.iter().map(|(t, a, _)| (t.clone(), *a)).collect();
    // Running on the worker, not given to it by the log: stop it.
    for (task, attempt) in reported.difference(&held_keys) {
        let cancel = Cancel {
            term: leadership.term,
            task_id: task.clone(),
            attempt: *attempt,
            reason: "this attempt is not assigned to this worker".into(),
        };
        if let Some(sender) = leadership.sender(worker) {
            let _ = sender.try_send(Ok(message(coordinator_message::Body::Cancel(cancel))));
        }
    }
    for (task, attempt, status) in held {
        if reported.contains(&(task.clone(), attempt)) {
            continue;
        }
        match status {
            // Committed but maybe never delivered: send it (again).
            TaskStatus::Assigned => send_assign(node, leadership, &task, worker, attempt),
            // It had started and the worker no longer knows it: the attempt is lost. While
            // the system breaker is open such requeues are paced; one refused now is found
            // again at the next heartbeat.
            _ if !leadership.may_requeue() => {
                tracing::info!(
                    task,
                    attempt,
                    worker,
                    "system breaker open: requeue deferred"
                );
            }
            _ => {
                let command = Command::RequeueTask {
                    task: task.clone(),
                    attempt,
                    reason: format!("worker {worker} reconnected without attempt {attempt}"),
                    category: FaultCategory::LeaseLost,
                    at: Timestamp::now(),
                };
                if let Err(e) = node.write(command).await {
                    tracing::warn!(task, "requeue after reconnect not committed: {e}");
                }
            }
        }
    }
}
