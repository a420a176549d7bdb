//! Live output of running attempts, relayed by the leader (`Jobs.FollowOutput`, `testfleet
//! logs`). Output is soft state: it never goes through the Raft log.
//!
//! A client asks any coordinator; a follower forwards the call to the leader, which holds the
//! worker sessions. The leader answers from its applied view first: a queued task has nothing
//! to show (`WAITING`), a finished attempt has its stored output tail (`ENDED`). For a running
//! attempt it subscribes the call to the [`OutputHub`], which asks the worker holding the
//! attempt to stream it (`WatchOutput` over the worker's session, from a byte offset) when the
//! first subscriber comes, fans each `Output` message out to every subscriber, and says
//! `UnwatchOutput` when the last one goes. The worker sends the tail it holds, a `caught_up`
//! marker (where a call without `follow` ends), then output as it is printed, then `eof`.
//!
//! **Offsets.** Every byte has its offset in the attempt's whole output. A subscriber keeps
//! the offset it has sent up to and drops what it already sent ([`clip`]): several
//! subscribers share one watch, each new one rewinds it to the start of the tail, and a client
//! that reconnects after a failover resumes where it was without duplicates. A jump in offsets
//! is output lost (scrolled out of the worker's tail, or dropped for a slow reader) and is
//! reported as `skipped`.
//!
//! **The end.** The applied view decides when an attempt is over (its result committed, or a
//! decision about it): the call then sends the outcome and ends. Because the worker sends its
//! last output before its result on the same session, everything was relayed by then. If the
//! worker's session goes away first, the call ends with `DISCONNECTED`; if the same worker
//! reconnects, the watch is sent again on the new session.
//!
//! **Bounds.** At most [`MAX_SUBSCRIBERS`] calls per attempt (more are refused with
//! `ResourceExhausted`); each subscriber queues at most [`SUBSCRIBER_BUFFER`] messages and
//! misses what does not fit (a gap, never a blocked session); an `Output` above
//! [`MAX_CHUNK`] bytes is dropped.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::Coordinator;
use super::leadership::{Leadership, SessionSender, lock};
use crate::proto::{
    CoordinatorMessage, FollowOutputRequest, Output, OutputAttempt, OutputChunk, OutputEnd,
    OutputEndReason, OutputEvent, UnwatchOutput, WatchOutput, coordinator_message, output_event,
};
use crate::state::command::TaskStatus;
use crate::state::machine::Machine;

/// Calls following one attempt at once.
pub const MAX_SUBSCRIBERS: usize = 64;

/// The largest piece of output relayed in one message.
pub const MAX_CHUNK: usize = crate::worker::output::MAX_OUTPUT_CHUNK;

/// Messages queued towards one subscriber; a slower one misses output (and is told so).
pub const SUBSCRIBER_BUFFER: usize = 16;

/// How often a call looks at the applied view and the worker's session.
const TICK: Duration = Duration::from_millis(100);

/// How long a call without `follow` waits for the worker to send what it holds.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// The stream a `FollowOutput` call answers with.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<OutputEvent, Status>> + Send>>;

type Key = (String, u32);

/// What the hub passes to a subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relay {
    Chunk {
        offset: u64,
        data: Arc<Vec<u8>>,
    },
    /// The worker sent what it held when the watch (re)started.
    CaughtUp,
    /// The worker sends nothing more for this attempt.
    Eof,
}

/// One watched attempt.
struct Entry {
    worker: String,
    /// The worker's session the watch was sent on.
    session: SessionSender,
    subscribers: BTreeMap<u64, mpsc::Sender<Relay>>,
}

/// Subscribers of attempts' output, one term's soft state ([`Leadership::output`]).
#[derive(Default)]
pub struct OutputHub {
    entries: Mutex<BTreeMap<Key, Entry>>,
    next_id: AtomicU64,
}

/// One call's place in the hub; leaving it (drop) may end the watch.
pub struct Subscription {
    hub: Arc<OutputHub>,
    key: Key,
    id: u64,
    pub relays: mpsc::Receiver<Relay>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.key, self.id);
    }
}

fn to_worker(body: coordinator_message::Body) -> Result<CoordinatorMessage, Status> {
    Ok(CoordinatorMessage { body: Some(body) })
}

fn watch(key: &Key, from: u64) -> Result<CoordinatorMessage, Status> {
    to_worker(coordinator_message::Body::WatchOutput(WatchOutput {
        task_id: key.0.clone(),
        attempt: key.1,
        from_offset: from,
    }))
}

impl OutputHub {
    /// Subscribes to `key`'s output as `worker` sends it on `session`, from offset `from`.
    pub fn subscribe(
        self: &Arc<Self>,
        key: Key,
        worker: &str,
        session: SessionSender,
        from: u64,
    ) -> Result<Subscription, Status> {
        let mut entries = lock(&self.entries);
        let entry = entries.entry(key.clone()).or_insert_with(|| Entry {
            worker: worker.to_string(),
            session: session.clone(),
            subscribers: BTreeMap::new(),
        });
        if entry.subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(Status::resource_exhausted(format!(
                "{MAX_SUBSCRIBERS} clients already follow attempt {} of task {}; try again later",
                key.1, key.0
            )));
        }
        entry.worker = worker.to_string();
        entry.session = session;
        if entry.session.try_send(watch(&key, from)).is_err() {
            return Err(Status::unavailable(format!(
                "cannot reach worker {worker} right now (its session is busy or closed); retry"
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, relays) = mpsc::channel(SUBSCRIBER_BUFFER);
        entry.subscribers.insert(id, tx);
        drop(entries);
        Ok(Subscription {
            hub: self.clone(),
            key,
            id,
            relays,
        })
    }

    /// The worker reconnected: watch `key` again on its new `session`, from `from`.
    pub fn resume(&self, key: &Key, session: &SessionSender, from: u64) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(key)
            && !entry.session.same_channel(session)
        {
            entry.session = session.clone();
            let _ = entry.session.try_send(watch(key, from));
        }
    }

    /// Relays output `worker` sent. Output of an attempt nobody follows, or that another
    /// worker holds, is dropped.
    pub fn deliver(&self, worker: &str, output: Output) {
        let key = (output.task_id, output.attempt);
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(&key) else {
            return;
        };
        if entry.worker != worker {
            return;
        }
        let mut relays = Vec::with_capacity(2);
        if output.data.len() > MAX_CHUNK {
            tracing::warn!(
                worker,
                task = %key.0,
                bytes = output.data.len(),
                "dropped an output message above the {MAX_CHUNK}-byte limit"
            );
        } else if !output.data.is_empty() {
            relays.push(Relay::Chunk {
                offset: output.offset,
                data: Arc::new(output.data),
            });
        }
        if output.caught_up {
            relays.push(Relay::CaughtUp);
        }
        if output.eof {
            relays.push(Relay::Eof);
        }
        entry.subscribers.retain(|_, tx| {
            relays.iter().all(|relay| {
                !matches!(
                    tx.try_send(relay.clone()),
                    Err(mpsc::error::TrySendError::Closed(_))
                )
            })
        });
        if output.eof {
            // The worker's watch is over; subscribers learn the end from the applied view.
            entries.remove(&key);
        }
    }

    fn unsubscribe(&self, key: &Key, id: u64) {
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(key) else {
            return;
        };
        entry.subscribers.remove(&id);
        if entry.subscribers.is_empty()
            && let Some(entry) = entries.remove(key)
        {
            let unwatch = UnwatchOutput {
                task_id: key.0.clone(),
                attempt: key.1,
            };
            let _ = entry
                .session
                .try_send(to_worker(coordinator_message::Body::UnwatchOutput(unwatch)));
        }
    }

    /// Attempts being watched (tests, diagnostics).
    pub fn watched(&self) -> usize {
        lock(&self.entries).len()
    }
}

/// What of a chunk at `offset` a subscriber that has sent everything before `next` still
/// sends: the bytes it lacks and how many were lost before them; `None` for nothing new.
pub fn clip(next: u64, offset: u64, data: &[u8]) -> Option<(u64, &[u8])> {
    let end = offset + data.len() as u64;
    if end <= next {
        return None;
    }
    if offset <= next {
        Some((0, &data[(next - offset) as usize..]))
    } else {
        Some((offset - next, data))
    }
}

/// A task's current attempt as the applied view has it.
struct View {
    status: TaskStatus,
    attempt: u32,
    worker: String,
    /// The attempt runs (started, not ended).
    running: bool,
    /// The attempt is over: how it ended, and its stored tail.
    ended: Option<(OutputEnd, String)>,
}

fn view(machine: &Machine, task: &str) -> Option<View> {
    let t = machine.task(task)?;
    let current = t.current.as_ref();
    let over = t.status.is_final() || t.status == TaskStatus::Queued;
    let ended = current.filter(|_| over).map(|a| {
        let (exit_code, signal) = crate::state::exit::split(a.exit_code);
        let end = OutputEnd {
            reason: OutputEndReason::OutputEndEnded as i32,
            outcome: a.outcome.clone().unwrap_or_default(),
            exit_code,
            signal,
            duration_ms: a.duration_ms,
            task_status: t.status.as_str().to_string(),
            detail: t.reason.as_deref().unwrap_or_default().to_string(),
        };
        (end, a.output_tail.clone().unwrap_or_default())
    });
    Some(View {
        status: t.status,
        attempt: t.attempt,
        worker: current.map(|a| a.worker.clone()).unwrap_or_default(),
        running: t.status == TaskStatus::Running,
        ended,
    })
}

fn event(body: output_event::Body) -> Result<OutputEvent, Status> {
    Ok(OutputEvent { body: Some(body) })
}

fn end(reason: OutputEndReason, status: TaskStatus, detail: String) -> Result<OutputEvent, Status> {
    event(output_event::Body::End(OutputEnd {
        reason: reason as i32,
        task_status: status.as_str().to_string(),
        detail,
        ..OutputEnd::default()
    }))
}

/// Answers `FollowOutput` on the leader.
pub fn follow(
    node: Arc<Coordinator>,
    leadership: Arc<Leadership>,
    request: FollowOutputRequest,
) -> Result<OutputStream, Status> {
    let task = request.task_id.clone();
    let Some(first) = node.state().with_machine(|m| view(m, &task)) else {
        return Err(Status::not_found(format!("no task {task}")));
    };
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let call = Call {
            node,
            leadership,
            request,
            tx,
        };
        if let Err(e) = call.run(first).await {
            tracing::debug!("an output stream ended early: {e}");
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// One `FollowOutput` call on the leader.
struct Call {
    node: Arc<Coordinator>,
    leadership: Arc<Leadership>,
    request: FollowOutputRequest,
    tx: mpsc::Sender<Result<OutputEvent, Status>>,
}

/// How far a call got in the attempt's output.
struct Position {
    /// Everything before this offset was sent.
    next: u64,
    /// Bytes relayed live.
    relayed: u64,
}

/// The client went away.
#[derive(Debug, thiserror::Error)]
#[error("the client closed the stream")]
struct Gone;

impl Call {
    async fn send(&self, item: Result<OutputEvent, Status>) -> Result<(), Gone> {
        self.tx.send(item).await.map_err(|_| Gone)
    }

    async fn run(&self, v: View) -> Result<(), Gone> {
        let info = OutputAttempt {
            task_id: self.request.task_id.clone(),
            attempt: v.attempt,
            worker_id: v.worker.clone(),
            status: v.status.as_str().to_string(),
        };
        self.send(event(output_event::Body::Attempt(info))).await?;
        let from = if self.request.attempt == v.attempt {
            self.request.from_offset
        } else {
            0
        };
        // A requeued task's last attempt is over, and its next one has not begun.
        if v.status == TaskStatus::Queued {
            let detail = "waiting to be scheduled".to_string();
            return self
                .send(end(OutputEndReason::OutputEndWaiting, v.status, detail))
                .await;
        }
        if let Some((end, tail)) = v.ended {
            if from == 0 && !tail.is_empty() {
                self.stored_tail(tail).await?;
            }
            return self.send(event(output_event::Body::End(end))).await;
        }
        if !v.running {
            let detail = format!("assigned to {}, not started yet", v.worker);
            return self
                .send(end(OutputEndReason::OutputEndWaiting, v.status, detail))
                .await;
        }
        self.live(v.attempt, v.worker, from).await
    }

    async fn stored_tail(&self, tail: String) -> Result<(), Gone> {
        for piece in tail.as_bytes().chunks(MAX_CHUNK) {
            let chunk = OutputChunk {
                offset: 0,
                data: piece.to_vec(),
                skipped: 0,
            };
            self.send(event(output_event::Body::Chunk(chunk))).await?;
        }
        Ok(())
    }

    async fn disconnected(&self, worker: &str) -> Result<(), Gone> {
        let detail = format!("worker {worker} disconnected");
        self.send(end(
            OutputEndReason::OutputEndDisconnected,
            TaskStatus::Running,
            detail,
        ))
        .await
    }

    async fn live(&self, attempt: u32, worker: String, from: u64) -> Result<(), Gone> {
        let key = (self.request.task_id.clone(), attempt);
        let Some(mut session) = self.leadership.sender(&worker) else {
            return self.disconnected(&worker).await;
        };
        let mut sub =
            match self
                .leadership
                .output
                .subscribe(key.clone(), &worker, session.clone(), from)
            {
                Ok(sub) => sub,
                Err(status) => return self.send(Err(status)).await,
            };
        let follow = self.request.follow;
        let started = tokio::time::Instant::now();
        let mut at = Position {
            next: from,
            relayed: 0,
        };
        let mut eof = false;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = self.tx.closed() => return Err(Gone),
                () = self.leadership.cancel.cancelled() => {
                    let status = Status::unavailable("the leader stepped down; follow again");
                    return self.send(Err(status)).await;
                }
                relay = sub.relays.recv(), if !eof => match relay {
                    Some(Relay::Chunk { offset, data }) => self.relay(&mut at, offset, &data).await?,
                    Some(Relay::CaughtUp) if !follow => {
                        let detail = format!("attempt {attempt} is running on {worker}");
                        return self.send(end(OutputEndReason::OutputEndRunning, TaskStatus::Running, detail)).await;
                    }
                    Some(Relay::CaughtUp) => {}
                    Some(Relay::Eof) | None => eof = true,
                },
                _ = tick.tick() => {
                    let now = self.node.state().with_machine(|m| view(m, &key.0));
                    let over = now.as_ref().is_none_or(|v| v.attempt != attempt || !v.running);
                    if over {
                        while let Ok(relay) = sub.relays.try_recv() {
                            if let Relay::Chunk { offset, data } = relay {
                                self.relay(&mut at, offset, &data).await?;
                            }
                        }
                        return self.ended(now, attempt, from, at.relayed).await;
                    }
                    if !follow && started.elapsed() > SNAPSHOT_WAIT {
                        let detail = format!("attempt {attempt} is running on {worker}; it sent nothing in time");
                        return self.send(end(OutputEndReason::OutputEndRunning, TaskStatus::Running, detail)).await;
                    }
                    match self.leadership.sender(&worker) {
                        None => return self.disconnected(&worker).await,
                        Some(now) if !now.same_channel(&session) => {
                            self.leadership.output.resume(&key, &now, at.next);
                            session = now;
                            eof = false;
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// Sends what of a relayed chunk the client lacks.
    async fn relay(&self, at: &mut Position, offset: u64, data: &[u8]) -> Result<(), Gone> {
        let Some((skipped, bytes)) = clip(at.next, offset, data) else {
            return Ok(());
        };
        let chunk = OutputChunk {
            offset: offset.max(at.next),
            data: bytes.to_vec(),
            skipped,
        };
        at.next = chunk.offset + bytes.len() as u64;
        at.relayed += bytes.len() as u64;
        self.send(event(output_event::Body::Chunk(chunk))).await
    }

    /// The attempt followed live is over: its outcome (and its stored tail, if nothing of it
    /// was relayed live).
    async fn ended(
        &self,
        now: Option<View>,
        attempt: u32,
        from: u64,
        relayed: u64,
    ) -> Result<(), Gone> {
        match now {
            Some(View {
                attempt: current,
                ended: Some((end, tail)),
                ..
            }) if current == attempt => {
                if relayed == 0 && from == 0 && !tail.is_empty() {
                    self.stored_tail(tail).await?;
                }
                self.send(event(output_event::Body::End(end))).await
            }
            now => {
                let status = now.map_or(TaskStatus::Queued, |v| v.status);
                let detail = format!("attempt {attempt} ended");
                self.send(end(OutputEndReason::OutputEndEnded, status, detail))
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests;
