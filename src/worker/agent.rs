//! The worker's session with the leader: connect, follow redirects, heartbeat, run what is
//! assigned, report, reconnect.
//!
//! Attempts outlive sessions: an attempt runs in its own task and hands its result to the
//! agent, which keeps it until the leader acknowledges it (`FinishedAck`), re-sending it on
//! every new session. So a coordinator failover interrupts neither a running test nor the
//! delivery of its result. The hello of every session lists what the worker runs and what it
//! still has to report, so the new leader can reconcile.
//!
//! Identity: the worker picks a random session id when it starts and sends it in every hello,
//! so the leader lets this process replace its own stale session after a network blip while
//! it refuses another process under the same name (`coordinator::sessions::identity`).
//!
//! Fencing: the worker remembers the highest leader term it has seen and ignores
//! assignments and cancellations from lower terms (a deposed leader that wakes up).
//!
//! Capabilities: before its first hello the worker probes what it offers (`super::probe`), and
//! it keeps probing in the background; when a probe changes them, the next heartbeat carries
//! them (`Heartbeat.capabilities_json`, once), as every later hello does.
//!
//! Faults: the hellos say how the previous process under this name ended
//! ([`WorkerConfig::previous_exit`]) until a leader has welcomed this one, a result that is a
//! worker fault says which part of the worker failed (`AttemptFinished.fault`), and the faults
//! injected for tests ([`WorkerConfig::faults`]) act here, on the real session and executor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::executor::{self, AttemptSpec};
use super::faults::{Faults, Injector};
use super::marker::PreviousExit;
use super::probe::{Offer, ProbeSettings};
use crate::proto::fleet_client::FleetClient;
use crate::proto::{
    AttemptFinished, AttemptRef, AttemptStarted, Heartbeat, Hello, WorkerMessage,
    coordinator_message, worker_message,
};
use crate::state::command::Timestamp;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Coordinator addresses (any subset of the cluster).
    pub coordinators: Vec<String>,
    /// The worker's stable, fleet-unique name.
    pub name: String,
    /// Attempts run at once.
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    /// JSON object of the basic capabilities; the probes' findings and the declared ones are
    /// added to it (`super::probe::offered`).
    pub capabilities_json: String,
    /// Probing and declared capabilities; [`ProbeSettings::off`] unless set.
    pub probe: ProbeSettings,
    /// Bytes of output tail kept per attempt.
    pub output_limit: usize,
    /// First reconnect delay after a failed connection; grows ×1.6 up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Finish every attempt at once as passed, without running anything (benchmarks of the
    /// session layer, many workers per process).
    pub noop_executor: bool,
    /// What the worker presents to the coordinators (its worker token).
    pub credentials: crate::auth::Credentials,
    /// After the shutdown token is cancelled, how long running attempts may take to finish
    /// before they are stopped and handed back.
    pub grace: Duration,
    /// Cancelled to stop at once (a second SIGTERM): no waiting for running attempts.
    pub stop_now: CancellationToken,
    /// Told about every session the leader accepts: (worker, leader id, term).
    pub on_welcome: Option<mpsc::UnboundedSender<(String, u64, u64)>>,
    /// How the previous process under this name ended (`super::marker`), for the hello.
    pub previous_exit: PreviousExit,
    /// Faults to inject (`testfleet worker --inject-fault`, a testing aid).
    pub faults: Faults,
}

impl WorkerConfig {
    pub fn new(coordinators: Vec<String>, name: String) -> Self {
        WorkerConfig {
            coordinators,
            name,
            slots: 1,
            labels: BTreeMap::new(),
            credentials: crate::auth::Credentials::none(),
            grace: Duration::from_secs(30),
            stop_now: CancellationToken::new(),
            capabilities_json: super::basic_capabilities(),
            probe: ProbeSettings::off(),
            output_limit: executor::DEFAULT_OUTPUT_LIMIT,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(15),
            noop_executor: false,
            on_welcome: None,
            previous_exit: PreviousExit::Clean,
            faults: Faults::default(),
        }
    }
}

type Key = (String, u32);

/// What survives between sessions.
struct Agent {
    config: WorkerConfig,
    /// Running attempts and how to stop them.
    running: HashMap<Key, CancellationToken>,
    /// The output of each running attempt, for the leader's watches (`super::output`).
    outputs: HashMap<Key, executor::LiveOutput>,
    /// Results not yet acknowledged by a leader.
    unacked: BTreeMap<Key, AttemptFinished>,
    /// Ended attempts whose end the injected `withhold-results` keeps untold.
    withheld: BTreeSet<Key>,
    /// The highest leader term seen.
    seen_term: u64,
    /// Random, once per run: tells the leader that a reconnect comes from this same process
    /// (`Hello.session_id`), so it may replace a session of this name that still looks alive.
    session_id: String,
    /// How the previous process under this name ended, told in hellos until a leader has
    /// welcomed this process once; then [`PreviousExit::Clean`].
    previous_exit: PreviousExit,
    /// The injected faults at play.
    faults: Injector,
    /// The capabilities offered, as the latest probe found them.
    offer: Offer,
    /// A probe changed them since the last hello or heartbeat that carried them.
    capabilities_unsent: bool,
    /// When the agent started: injected heartbeat stalls are timed from it.
    started: tokio::time::Instant,
    /// Results of finished attempts, from their tasks.
    results_tx: mpsc::UnboundedSender<AttemptFinished>,
    results_rx: mpsc::UnboundedReceiver<AttemptFinished>,
    /// `AttemptStarted` notices, from attempt tasks.
    started_tx: mpsc::UnboundedSender<AttemptStarted>,
    started_rx: mpsc::UnboundedReceiver<AttemptStarted>,
}

/// A random factor in [0.5, 1.5) for jitter, without a dependency.
fn jitter() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Timestamp::now().micros() as u64);
    0.5 + (hasher.finish() % 1000) as f64 / 1000.0
}

fn refs(keys: impl Iterator<Item = Key>) -> Vec<AttemptRef> {
    keys.map(|(task_id, attempt)| AttemptRef { task_id, attempt })
        .collect()
}

/// The report of an attempt's end: the executor's result as the wire says it (an error the
/// command's own output does not show is appended to the tail, with the fault's category when
/// it is a worker fault, so the stored attempt shows it too).
pub fn finished_message(
    task_id: String,
    attempt: u32,
    result: executor::AttemptResult,
) -> AttemptFinished {
    let fault = result.fault_name();
    let mut tail = result.output_tail;
    if let Some(mut error) = result.error {
        if !fault.is_empty() {
            error = format!("worker fault ({fault}): {error}");
        }
        tail = if tail.is_empty() {
            error
        } else {
            format!("{tail}\n{error}")
        };
    }
    AttemptFinished {
        task_id,
        attempt,
        outcome: result.outcome.as_str().to_string(),
        exit_code: result.exit_code,
        duration_ms: result.duration.as_millis() as u64,
        output_tail: tail,
        at_us: Timestamp::now().micros(),
        signal: result.signal,
        fault: fault.to_string(),
        tests: Vec::new(),
    }
}

/// Why a session ended.
enum Ended {
    /// Go to this address next, at once.
    Redirect(String),
    /// No leader known yet: retry soon.
    NoLeader,
    /// Connection failed or broke: back off (unless the session had been welcomed, in which
    /// case a coordinator failover is the likely cause and reconnecting at once is right).
    Broken(String, bool),
    /// The coordinator refused this worker's credentials: retrying cannot help.
    Refused(String),
    /// The worker left on purpose and the leader recorded it.
    Left,
    /// An operator removed the worker from the fleet: it stops.
    Removed(String),
    /// Another live worker process holds this name: the leader refused the session.
    NameTaken(String),
    Shutdown,
}

/// How often a worker whose name is taken asks again before it gives up. The first refusal
/// may be a race — the previous process under the name was just killed and the leader has
/// not yet seen its connection close — so it asks twice more, [`NAME_TAKEN_PAUSE`] apart.
const NAME_TAKEN_TRIES: usize = 3;
const NAME_TAKEN_PAUSE: Duration = Duration::from_millis(500);

/// How long a worker that said it is done leaving waits for the leader to close its session.
const LEAVE_ACK_WAIT: Duration = Duration::from_secs(10);

/// The message that says the worker is leaving (`done`: it runs nothing any more).
fn leaving_message(done: bool) -> WorkerMessage {
    WorkerMessage {
        body: Some(worker_message::Body::Leaving(crate::proto::Leaving {
            done,
            reason: "stopped (SIGTERM)".to_string(),
        })),
    }
}

impl Agent {
    fn hello(&mut self) -> Hello {
        let mut attempts: Vec<Key> = self.running.keys().cloned().collect();
        attempts.extend(self.unacked.keys().cloned());
        attempts.sort();
        attempts.dedup();
        self.capabilities_unsent = false;
        Hello {
            worker_id: self.config.name.clone(),
            host: super::host_name(),
            capabilities_json: self.offer.current(),
            labels: self.config.labels.clone().into_iter().collect(),
            slots: self.config.slots,
            running: refs(attempts.into_iter()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            seen_term: self.seen_term,
            session_id: self.session_id.clone(),
            previous_exit: self.previous_exit.as_str().to_string(),
            previous_started_at_us: self.previous_exit.started_at_us(),
        }
    }

    fn heartbeat(&mut self) -> WorkerMessage {
        let mut attempts: Vec<Key> = self.running.keys().cloned().collect();
        attempts.extend(self.unacked.keys().cloned());
        let capabilities_json = if std::mem::take(&mut self.capabilities_unsent) {
            self.offer.current()
        } else {
            String::new()
        };
        WorkerMessage {
            body: Some(worker_message::Body::Heartbeat(Heartbeat {
                running: refs(attempts.into_iter()),
                capabilities_json,
            })),
        }
    }

    fn start_attempt(&mut self, assign: crate::proto::Assign) {
        let key = (assign.task_id.clone(), assign.attempt);
        if self.running.contains_key(&key) || self.unacked.contains_key(&key) {
            return; // a re-sent assignment we already have
        }
        let cancel = CancellationToken::new();
        self.running.insert(key.clone(), cancel.clone());
        let output = executor::LiveOutput::new(self.config.output_limit);
        self.outputs.insert(key, output.clone());
        let spec = AttemptSpec {
            command: assign.command,
            env: assign.env.into_iter().collect(),
            cwd: assign.cwd.map(PathBuf::from),
            timeout: Duration::from_millis(assign.timeout_ms.max(1)),
            output_limit: self.config.output_limit,
            injected_spawn_error: self.faults.spawn_error(),
        };
        if let Some(errno) = spec.injected_spawn_error {
            let err = std::io::Error::from_raw_os_error(errno);
            tracing::info!(task = %assign.task_id, "injected fault: the spawn fails with {err}");
        }
        // A report left by an earlier attempt in the same place must not pass for this one's.
        let junit = super::junit::requested(&spec.env, spec.cwd.as_deref());
        if let Some(path) = &junit {
            let _ = std::fs::remove_file(path);
        }
        let results = self.results_tx.clone();
        let started = self.started_tx.clone();
        let noop = self.config.noop_executor;
        tracing::debug!(task = %assign.task_id, attempt = assign.attempt, "attempt started");
        tokio::spawn(async move {
            let _ = started.send(AttemptStarted {
                task_id: assign.task_id.clone(),
                attempt: assign.attempt,
                at_us: Timestamp::now().micros(),
            });
            let result = if noop {
                output.close();
                executor::AttemptResult {
                    outcome: crate::state::command::Outcome::Passed,
                    exit_code: Some(0),
                    signal: None,
                    duration: Duration::ZERO,
                    output_tail: String::new(),
                    truncated_bytes: 0,
                    cancelled: false,
                    error: None,
                    fault: None,
                }
            } else {
                // On a task of its own, so that a panic in it is reported as a crash of the
                // executor rather than losing the attempt.
                tokio::spawn(executor::run_observed(spec, cancel, output))
                    .await
                    .unwrap_or_else(executor::AttemptResult::crashed)
            };
            let mut finished = finished_message(assign.task_id, assign.attempt, result);
            if let Some(path) = junit.filter(|_| !noop) {
                let read = tokio::task::spawn_blocking(move || super::junit::read(&path)).await;
                let note = match read {
                    Ok(Ok(tests)) => {
                        let (wire, note) = super::junit::to_wire(tests);
                        finished.tests = wire;
                        note
                    }
                    Ok(Err(e)) => Some(format!("no per-test results: {e}")),
                    Err(e) => Some(format!("no per-test results: {e}")),
                };
                if let Some(note) = note {
                    finished
                        .output_tail
                        .push_str(&format!("\n[testfleet] {note}"));
                }
            }
            let _ = results.send(finished);
        });
    }

    /// One session with `addr`, until it ends.
    async fn session(&mut self, addr: &str, shutdown: &CancellationToken) -> Ended {
        let endpoint = match self.config.credentials.endpoint(addr) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(2))
                .keep_alive_timeout(Duration::from_secs(2)),
            Err(e) => return Ended::Broken(format!("bad address {addr}: {e}"), false),
        };
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            c = endpoint.connect() => match c {
                Ok(c) => c,
                Err(e) => return Ended::Broken(format!("cannot connect to {addr}: {e}"), false),
            },
        };
        let mut client = FleetClient::new(self.config.credentials.wrap(channel));
        let (out_tx, out_rx) = mpsc::channel::<WorkerMessage>(1024);
        let (output_tx, output_rx) = mpsc::channel(super::output::OUTPUT_BUFFER);
        let mut watches = super::output::Watches::new(output_tx);
        let hello = WorkerMessage {
            body: Some(worker_message::Body::Hello(self.hello())),
        };
        if out_tx.send(hello).await.is_err() {
            return Ended::Broken("session closed".into(), false);
        }
        let outbound = ReceiverStream::new(out_rx).merge(ReceiverStream::new(output_rx));
        let mut inbound = match client.session(outbound).await {
            Ok(r) => r.into_inner(),
            Err(e)
                if matches!(
                    e.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                return Ended::Refused(format!("{addr} refused this worker: {}", e.message()));
            }
            Err(e) if e.code() == tonic::Code::AlreadyExists => {
                return Ended::NameTaken(e.message().to_string());
            }
            Err(e) => return Ended::Broken(format!("session refused by {addr}: {e}"), false),
        };
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        let mut welcomed = false;
        // An injected `drop-session`: when this session is dropped.
        let mut drop_at: Option<tokio::time::Instant> = None;
        // An injected `stall-heartbeats` is under way.
        let mut stalled = false;
        // When the worker was told to stop: it leaves on purpose (see `leave_step`).
        let mut leaving: Option<tokio::time::Instant> = None;
        let mut done_sent: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = self.config.stop_now.cancelled() => return Ended::Shutdown,
                _ = shutdown.cancelled(), if leaving.is_none() => {
                    if !welcomed {
                        return Ended::Shutdown;
                    }
                    leaving = Some(tokio::time::Instant::now());
                    tracing::info!(
                        running = self.running.len(),
                        grace = ?self.config.grace,
                        "leaving: no new work; finishing what runs (SIGTERM again to stop at once)"
                    );
                    if out_tx.send(leaving_message(false)).await.is_err() {
                        return Ended::Shutdown;
                    }
                }
                message = inbound.next() => {
                    let message = match message {
                        Some(Ok(m)) => m,
                        // The leader closes the session once it has recorded the departure.
                        _ if done_sent.is_some() => return Ended::Left,
                        Some(Err(e)) if e.code() == tonic::Code::AlreadyExists => {
                            return Ended::NameTaken(e.message().to_string());
                        }
                        Some(Err(e)) => return Ended::Broken(format!("session with {addr} failed: {e}"), welcomed),
                        None => return Ended::Broken(format!("{addr} closed the session"), welcomed),
                    };
                    match message.body {
                        Some(coordinator_message::Body::Welcome(w)) => {
                            welcomed = true;
                            self.previous_exit = PreviousExit::Clean;
                            self.seen_term = self.seen_term.max(w.term);
                            let asked = Duration::from_millis(u64::from(w.heartbeat_interval_ms.max(50)));
                            heartbeat = tokio::time::interval(self.faults.heartbeat_interval(asked));
                            drop_at = self.faults.session_lifetime().map(|every| tokio::time::Instant::now() + every);
                            tracing::info!(leader = w.leader_id, term = w.term, "session open with the leader at {addr}");
                            if let Some(tx) = &self.config.on_welcome {
                                let _ = tx.send((self.config.name.clone(), w.leader_id, w.term));
                            }
                            for result in self.unacked.values() {
                                let m = WorkerMessage { body: Some(worker_message::Body::Finished(result.clone())) };
                                if out_tx.send(m).await.is_err() {
                                    return Ended::Broken("session closed".into(), welcomed);
                                }
                            }
                        }
                        Some(coordinator_message::Body::Redirect(r)) => {
                            return if r.leader_addr.is_empty() || r.leader_addr == addr {
                                Ended::NoLeader
                            } else {
                                Ended::Redirect(r.leader_addr)
                            };
                        }
                        Some(coordinator_message::Body::Assign(a)) => {
                            if leaving.is_some() {
                                // Sent before the leader saw the departure: it is handed back.
                                tracing::info!(task = %a.task_id, "not starting an attempt while leaving");
                            } else if a.term < self.seen_term {
                                tracing::warn!(term = a.term, seen = self.seen_term, "ignoring an assignment from a stale leader");
                            } else {
                                self.seen_term = a.term;
                                self.start_attempt(a);
                            }
                        }
                        Some(coordinator_message::Body::Cancel(c)) => {
                            let key = (c.task_id.clone(), c.attempt);
                            if c.term >= self.seen_term && self.withheld.remove(&key) {
                                // A withheld attempt has ended already: now it is forgotten.
                                self.running.remove(&key);
                                self.outputs.remove(&key);
                            } else if c.term >= self.seen_term
                                && let Some(token) = self.running.get(&key)
                            {
                                tracing::info!(task = %c.task_id, attempt = c.attempt, reason = %c.reason, "attempt cancelled");
                                token.cancel();
                            }
                        }
                        Some(coordinator_message::Body::Ack(a)) => {
                            self.unacked.remove(&(a.task_id, a.attempt));
                        }
                        Some(coordinator_message::Body::Removed(r)) => {
                            return if done_sent.is_some() { Ended::Left } else { Ended::Removed(r.reason) };
                        }
                        Some(coordinator_message::Body::WatchOutput(w)) => {
                            let key = (w.task_id, w.attempt);
                            let output = self.outputs.get(&key);
                            watches.watch(key, w.from_offset, output);
                        }
                        Some(coordinator_message::Body::UnwatchOutput(u)) => {
                            watches.unwatch(&(u.task_id, u.attempt));
                        }
                        None => {}
                    }
                }
                Ok(()) = self.offer.changed() => {
                    tracing::info!("capabilities changed: the next heartbeat carries them");
                    self.capabilities_unsent = true;
                }
                Some(started) = self.started_rx.recv() => {
                    if welcomed {
                        let m = WorkerMessage { body: Some(worker_message::Body::Started(started)) };
                        let _ = out_tx.send(m).await;
                    }
                }
                Some(result) = self.results_rx.recv() => {
                    let key = (result.task_id.clone(), result.attempt);
                    if self.faults.withholds_results() {
                        // Injected: the end is never told, the attempt stays listed as
                        // running until the leader cancels it.
                        tracing::warn!(task = %result.task_id, attempt = result.attempt, "injected fault: result withheld");
                        self.withheld.insert(key);
                        continue;
                    }
                    self.running.remove(&key);
                    self.outputs.remove(&key);
                    tracing::debug!(task = %result.task_id, attempt = result.attempt, outcome = %result.outcome, "attempt finished");
                    self.unacked.insert(key, result.clone());
                    if welcomed {
                        let m = WorkerMessage { body: Some(worker_message::Body::Finished(result)) };
                        if out_tx.send(m).await.is_err() {
                            return Ended::Broken("session closed".into(), welcomed);
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if self.faults.heartbeats_stalled(self.started.elapsed()) != stalled {
                        stalled = !stalled;
                        tracing::info!(stalled, "injected fault: heartbeats {}", if stalled { "stop" } else { "resume" });
                    }
                    if welcomed && !stalled && out_tx.send(self.heartbeat()).await.is_err() {
                        return Ended::Broken("session closed".into(), welcomed);
                    }
                }
                _ = tokio::time::sleep_until(drop_at.unwrap_or_else(tokio::time::Instant::now)),
                    if drop_at.is_some() && leaving.is_none() =>
                {
                    tracing::info!("injected fault: dropping the session with {addr}");
                    return Ended::Broken(format!("injected fault: dropped the session with {addr}"), welcomed);
                }
            }
            if let Some(since) = leaving {
                if let Some(sent) = done_sent {
                    if sent.elapsed() > LEAVE_ACK_WAIT {
                        tracing::warn!("the leader did not close the session after the departure");
                        return Ended::Left;
                    }
                    continue;
                }
                let idle = self.running.is_empty() && self.unacked.is_empty();
                let over = since.elapsed() >= self.config.grace;
                if idle || over {
                    if over && !idle {
                        tracing::warn!(
                            running = self.running.len(),
                            "grace period over: stopping the attempts still running; the \
                             leader queues them again"
                        );
                        for token in self.running.values() {
                            token.cancel();
                        }
                    }
                    if out_tx.send(leaving_message(true)).await.is_err() {
                        return Ended::Shutdown;
                    }
                    done_sent = Some(tokio::time::Instant::now());
                }
            }
        }
    }
}

/// Runs the worker until `shutdown` is cancelled. Running attempts are cancelled then.
///
/// Returns an error, at once, when a coordinator refuses the worker's credentials.
///
/// Cancelling `shutdown` makes the worker *leave*: it takes no new work, lets what runs finish
/// (for up to [`WorkerConfig::grace`]), then tells the leader, which records the departure and
/// queues again whatever it still held, without counting it as a failure.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), String> {
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let (started_tx, started_rx) = mpsc::unbounded_channel();
    let addresses = Arc::new(config.coordinators.clone());
    if !config.faults.is_empty() {
        let faults: Vec<String> = config.faults.iter().map(ToString::to_string).collect();
        tracing::warn!(faults = %faults.join(" "), "injecting faults (a testing aid)");
    }
    let faults = Injector::new(config.faults.clone(), &config.name);
    let previous_exit = config.previous_exit;
    // Bounded (`super::probe::gpu::GpuSettings`): registration carries what it found.
    let offer = tokio::select! {
        offer = Offer::start(
            super::with_slots(&config.capabilities_json, config.slots),
            config.probe.clone(),
        ) => offer,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let mut agent = Agent {
        config,
        running: HashMap::new(),
        outputs: HashMap::new(),
        unacked: BTreeMap::new(),
        withheld: BTreeSet::new(),
        seen_term: 0,
        session_id: uuid::Uuid::new_v4().to_string(),
        previous_exit,
        faults,
        offer,
        capabilities_unsent: false,
        started: tokio::time::Instant::now(),
        results_tx,
        results_rx,
        started_tx,
        started_rx,
    };
    let mut next = 0usize;
    let mut target: Option<String> = None;
    let mut backoff = agent.config.initial_backoff;
    let mut failures_in_a_row = 0usize;
    let mut refused = None;
    let mut name_taken = 0usize;
    loop {
        let addr = target
            .take()
            .unwrap_or_else(|| addresses[next % addresses.len()].clone());
        match agent.session(&addr, &shutdown).await {
            Ended::Shutdown => break,
            Ended::Left => {
                tracing::info!("left the fleet");
                break;
            }
            Ended::Refused(why) => {
                refused = Some(why);
                break;
            }
            Ended::Removed(reason) => {
                tracing::info!(
                    running = agent.running.len(),
                    "the leader says this worker left the fleet ({reason}); stopping"
                );
                break;
            }
            Ended::NameTaken(why) => {
                name_taken += 1;
                if name_taken >= NAME_TAKEN_TRIES {
                    refused = Some(format!(
                        "{why}; give this worker another --name (or stop the other one)"
                    ));
                    break;
                }
                tracing::warn!("{why}; asking again in {NAME_TAKEN_PAUSE:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(NAME_TAKEN_PAUSE) => {}
                }
                continue;
            }
            Ended::Redirect(leader) => {
                tracing::info!("{addr} is not the leader; going to {leader}");
                target = Some(leader);
                failures_in_a_row = 0;
                continue;
            }
            Ended::NoLeader => {
                next += 1;
                failures_in_a_row = 0;
                // An election is in progress: ask again soon.
                let pause = Duration::from_millis((100.0 * jitter()) as u64 + 50);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            Ended::Broken(why, welcomed) => {
                next += 1;
                tracing::warn!("{why}");
                if welcomed {
                    backoff = agent.config.initial_backoff;
                    failures_in_a_row = 0;
                    continue;
                }
                failures_in_a_row += 1;
                // Try every coordinator once at once before waiting.
                if failures_in_a_row < addresses.len() {
                    continue;
                }
                let pause = backoff.mul_f64(jitter());
                tracing::info!(
                    pause_ms = pause.as_millis() as u64,
                    "reconnecting after a pause"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                backoff = (backoff.mul_f64(1.6)).min(agent.config.max_backoff);
                failures_in_a_row = 0;
                continue;
            }
        }
        backoff = agent.config.initial_backoff;
    }
    for token in agent.running.values() {
        token.cancel();
    }
    match refused {
        Some(why) => Err(why),
        None => Ok(()),
    }
}
