//! One coordinator node: its Raft instance, its stores, and the gRPC services on one port.
//!
//! [`Coordinator::start`] opens the Raft log (redb) and the state machine (DuckDB), starts
//! openraft, and — on a cluster that was never initialised — lets the lowest node id
//! initialise the membership (a single node initialises itself). [`Coordinator::serve`]
//! then serves every gRPC service of the node on one listener until the shutdown future
//! resolves:
//!
//! * `RaftService` — coordinator-to-coordinator Raft RPCs ([`crate::raft::service`]), with
//!   the watch of the leader that replaces a crashed one at once
//!   ([`crate::raft::leader_watch`]);
//! * `Control` — the client API ([`control`]): status, read-only SQL, benchmark writes.
//!
//! Restarting a node on the same files resumes it: DuckDB holds everything applied up to
//! `raft_meta.last_applied`, and openraft replays the rest of the log from redb. A DuckDB file
//! damaged by a crash is set aside and rebuilt from the snapshot and the log
//! ([`crate::raft::heal`]). When Raft stops on a storage failure, [`Coordinator::serve`]
//! returns an error instead of serving on with a dead Raft, so the process exits.

pub mod batcher;
pub mod control;
pub mod discovery;
pub mod jobs;
pub mod leader;
pub mod leadership;
pub mod membership;
pub mod monitor;
pub mod output;
mod preplace;
pub mod recovery_loop;
pub mod relief;
pub mod self_health;
pub mod sessions;
pub mod transfer;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::async_runtime::WatchReceiver;
use tokio::net::TcpListener;

use crate::config::CoordinatorConfig;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::{RaftNode, TypeConfig};
use crate::state::store::DbSettings;

/// Metadata key marking a client request a follower already forwarded to the leader once, so
/// a request never travels in a loop while leadership moves.
pub(crate) const FORWARDED: &str = "x-testfleet-forwarded";

/// `message` as a request marked forwarded.
pub(crate) fn forwarded<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request
}

/// Why a coordinator could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// `raft-log` is locked: another coordinator runs on the same data directory.
    #[error(
        "data directory {} is in use by another coordinator ({} is locked); give each node its \
         own --data-dir (data_dir in the config file)",
        dir.display(),
        crate::config::LOG_FILE_NAME
    )]
    DataDirInUse { dir: std::path::PathBuf },
    /// The DuckDB file is locked: another coordinator runs on the same database file.
    #[error(
        "database file {} is in use by another coordinator (DuckDB holds a lock on it{}); give \
         each node its own --db-path (db_path in the config file)",
        path.display(),
        holder.map_or(String::new(), |pid| format!(", held by process {pid}"))
    )]
    DbInUse {
        path: std::path::PathBuf,
        holder: Option<u32>,
    },
    #[error("cannot open the Raft log at {path}: {source}")]
    Log {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Heal(#[from] crate::raft::heal::HealError),
    #[error(transparent)]
    Trust(#[from] crate::auth::server::TrustError),
    #[error(
        "Raft stopped on a storage failure: {0}; exiting so that a supervisor can restart \
         this node"
    )]
    RaftStopped(String),
    #[error("invalid Raft settings: {0}")]
    RaftConfig(String),
    #[error("Raft failed: {0}")]
    Raft(String),
    #[error(
        "cannot listen on {addr} (`listen`, --bind / --port): {source}; is another process \
         listening there? choose another --port"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A started coordinator node.
pub struct Coordinator {
    node_id: u64,
    raft: RaftNode,
    /// The Raft network (shared peer channels), also used to watch the leader.
    network: Network,
    state: StateMachine,
    config: CoordinatorConfig,
    /// Every member's address by id, as configured (used to find peers before the
    /// membership is known).
    peers: BTreeMap<u64, String>,
    /// Soft state of the current leadership term, while this node leads.
    pub(crate) leadership: std::sync::Mutex<Option<Arc<leadership::Leadership>>>,
    /// Client requests that failed, for the self-health sample.
    pub errors: crate::health::sampler::ErrorRate,
    /// This node's latest health verdict, for `Control.Status`.
    pub(crate) health: std::sync::Mutex<Option<self_health::Latest>>,
    /// Keeps openraft's leader-change watch alive.
    watch: std::sync::Mutex<Option<openraft::WatchChangeHandle<TypeConfig>>>,
    /// One channel per peer address for the client requests this node forwards to the leader
    /// and its health reports, kept apart from the Raft channels so that a large forwarded job
    /// never queues in front of heartbeats.
    forwarding: crate::raft::network::PeerChannels,
    /// Who may call this node, and what it presents to its peers.
    trust: crate::auth::server::ServerTrust,
    /// Set once shutdown began: `/readyz` says not ready.
    draining: std::sync::atomic::AtomicBool,
    /// How long this node's proposals took to commit and apply (`/metrics`).
    pub commit_latency: crate::http::metrics::CommitLatency,
    /// The operator's membership change this node is carrying out, if any
    /// ([`membership`]): one at a time.
    membership_change: std::sync::Mutex<Option<String>>,
    /// Drawn at start: tells this process from another claiming the same id.
    instance: u64,
    /// Per-entry stage timestamps of the commit path (`--stage-clock`).
    pub(crate) stages: Arc<crate::raft::stages::StageClock>,
}

/// Marks an operator's membership change as running until dropped.
pub(crate) struct ChangeRunning<'a>(&'a Coordinator);

impl Drop for ChangeRunning<'_> {
    fn drop(&mut self) {
        *self
            .0
            .membership_change
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Coordinator {
    /// Opens the stores, starts Raft, and initialises a fresh cluster if this node is the
    /// one that should. `advertised` is this node's own address as peers reach it.
    pub async fn start(
        config: CoordinatorConfig,
        advertised: String,
    ) -> Result<Arc<Self>, CoordinatorError> {
        let trust = crate::auth::server::ServerTrust::load(&config)?;
        let log_path = config.log_path();
        let mut log = LogStore::<TypeConfig>::open(&log_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::ResourceBusy {
                CoordinatorError::DataDirInUse {
                    dir: config.data_dir(),
                }
            } else {
                CoordinatorError::Log {
                    path: log_path.clone(),
                    source,
                }
            }
        })?;
        let settings = DbSettings {
            threads: config.duckdb_threads,
            memory_limit: config.duckdb_memory_limit.clone(),
        };
        // A damaged DuckDB file is set aside and rebuilt from the snapshot and the log.
        let state = crate::raft::heal::open_state_machine(
            &config.db_path,
            &config.snapshot_dir(),
            &settings,
            &mut log,
        )
        .await
        .map_err(db_in_use)?;

        let stages = Arc::new(crate::raft::stages::StageClock::new(config.stage_clock));
        log.set_stage_clock(stages.clone());
        state.set_stage_clock(stages.clone());
        let raft_config = raft_config(&config)?;
        let network =
            Network::new(config.node_id, trust.peer.clone()).with_stage_clock(stages.clone());
        let raft = openraft::Raft::new(
            config.node_id,
            raft_config,
            network.clone(),
            log,
            state.clone(),
        )
        .await
        .map_err(|e| CoordinatorError::Raft(e.to_string()))?;

        let mut peers = config.peers.clone();
        peers.entry(config.node_id).or_insert(advertised.clone());
        let coordinator = Arc::new(Coordinator {
            node_id: config.node_id,
            raft,
            network,
            state,
            config,
            peers,
            leadership: std::sync::Mutex::new(None),
            errors: crate::health::sampler::ErrorRate::new(),
            health: std::sync::Mutex::new(None),
            watch: std::sync::Mutex::new(None),
            forwarding: crate::raft::network::PeerChannels::new(trust.peer.clone()),
            trust,
            draining: std::sync::atomic::AtomicBool::new(false),
            commit_latency: crate::http::metrics::CommitLatency::default(),
            membership_change: std::sync::Mutex::new(None),
            instance: uuid::Uuid::new_v4().as_u64_pair().0,
            stages,
        });
        coordinator.watch_leadership();
        if !coordinator.config.discover.is_empty() {
            tokio::spawn(discovery::discover(coordinator.clone(), advertised));
        } else if coordinator.config.join.is_some() {
            tokio::spawn(discovery::wait_to_be_added(coordinator.clone(), advertised));
        } else {
            coordinator.initialize_if_first().await?;
        }
        Ok(coordinator)
    }

    /// On a cluster never initialised, the lowest configured id initialises the membership
    /// with every configured member. Every other node waits to be contacted.
    async fn initialize_if_first(&self) -> Result<(), CoordinatorError> {
        if self.peers.keys().next().copied() != Some(self.node_id) {
            return Ok(());
        }
        self.initialize_with(self.peers.clone()).await
    }

    /// Initialises a cluster of `members` if this node has the lowest id among them and the
    /// cluster was never initialised; otherwise does nothing.
    pub(crate) async fn initialize_with(
        &self,
        members: BTreeMap<u64, String>,
    ) -> Result<(), CoordinatorError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| CoordinatorError::Raft(e.to_string()))?;
        if initialized || members.keys().next().copied() != Some(self.node_id) {
            return Ok(());
        }
        tracing::info!(
            node_id = self.node_id,
            ?members,
            "initialising a new cluster"
        );
        let members: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another path got there first (e.g. a restart raced with a vote): fine.
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => Ok(()),
            Err(e) => Err(CoordinatorError::Raft(e.to_string())),
        }
    }

    /// Starts the leader loops when this node becomes the committed leader of a term, and
    /// stops them when it stops leading.
    fn watch_leadership(self: &Arc<Self>) {
        let weak_start = Arc::downgrade(self);
        let weak_stop = Arc::downgrade(self);
        let handle = self.raft.on_leader_change(
            move |leader_id| {
                let node = weak_start.upgrade();
                async move {
                    if let Some(node) = node {
                        leader::start(node, leader_id.term).await;
                    }
                }
            },
            move |_| {
                let node = weak_stop.upgrade();
                async move {
                    if let Some(node) = node {
                        leader::stop(&node).await;
                    }
                }
            },
        );
        *self.watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }

    /// The current leadership's soft state, while this node leads.
    pub fn leadership(&self) -> Option<Arc<leadership::Leadership>> {
        self.leadership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn raft(&self) -> &RaftNode {
        &self.raft
    }

    pub fn state(&self) -> &StateMachine {
        &self.state
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The channel to the peer at `addr` for forwarded client requests: connected on first
    /// use, then shared (it reconnects by itself after a failure).
    pub(crate) fn forwarding_channel(
        &self,
        addr: &str,
    ) -> Result<crate::auth::AuthChannel, tonic::Status> {
        self.forwarding
            .get(addr)
            .map_err(|e| tonic::Status::unavailable(format!("bad peer address {addr:?}: {e}")))
    }

    /// The random number this process drew at start (`NodeStatus.instance`).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The operator's membership change under way on this node, if any.
    pub fn membership_change_running(&self) -> Option<String> {
        self.membership_change
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Claims the one membership-change slot for `what`, or says which change holds it.
    pub(crate) fn begin_membership_change(
        &self,
        what: String,
    ) -> Result<ChangeRunning<'_>, tonic::Status> {
        let mut slot = self
            .membership_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(running) = slot.as_ref() {
            return Err(tonic::Status::failed_precondition(format!(
                "another membership change is under way ({running}); wait for it to finish and \
                 retry"
            )));
        }
        *slot = Some(what);
        Ok(ChangeRunning(self))
    }

    /// Asks the coordinator at `addr` for its status over the peer channel, within `limit`;
    /// the error says why it did not answer.
    pub(crate) async fn peer_status(
        &self,
        addr: &str,
        limit: Duration,
    ) -> Result<crate::proto::NodeStatus, String> {
        let channel = self
            .forwarding_channel(addr)
            .map_err(|e| e.message().to_string())?;
        let mut client = crate::proto::control_client::ControlClient::new(channel);
        match tokio::time::timeout(limit, client.status(crate::proto::StatusRequest::default()))
            .await
        {
            Ok(Ok(status)) => Ok(status.into_inner()),
            Ok(Err(e)) => Err(e.message().to_string()),
            Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
        }
    }

    /// The configured address of a member.
    pub fn peer_addr(&self, id: u64) -> Option<&str> {
        self.peers.get(&id).map(String::as_str)
    }

    /// Serves every gRPC service of this node on `listener` until `shutdown` resolves,
    /// then stops Raft.
    ///
    /// If Raft's core stops by itself — openraft stops it on a storage error, e.g. a failed
    /// DuckDB flush or a failed log write — the node cannot do anything useful any more: the
    /// server stops (given [`FATAL_GRACE`] to close its connections) and this returns
    /// [`CoordinatorError::RaftStopped`] with the cause, so that the process exits and a
    /// supervisor restarts it on its files.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), CoordinatorError> {
        let sampling = tokio::spawn(self_health::run(self.clone()));
        let stop = tokio_util::sync::CancellationToken::new();
        let watching = tokio::spawn(crate::raft::leader_watch::run(
            self.raft.clone(),
            self.network.clone(),
            stop.clone(),
        ));
        let stopping = stop.clone();
        let failure: Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let failed = failure.clone();
        let raft = self.raft.clone();
        let node = self.clone();
        let shutdown = async move {
            tokio::select! {
                _ = shutdown => {
                    node.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                reason = raft_failure(raft) => {
                    tracing::error!(
                        "Raft stopped on a storage failure: {reason}; this node stops serving \
                         and exits"
                    );
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                }
            }
            stopping.cancel();
        };
        // The builder's `tcp_nodelay` only applies to listeners tonic opens itself; on ours,
        // Nagle's algorithm against delayed ACKs held ~1 % of replies for 40 ms.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |stream| {
                stream.inspect(|s| {
                    if let Err(e) = s.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY: {e}");
                    }
                })
            },
        );
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.trust.tls {
            builder = builder.tls_config(tls.clone())?;
        }
        // HTTP/1.1 beside gRPC on the same port (`crate::http`): the health service and the
        // HTTP routes join the gRPC services in one router.
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let http = crate::http::router(crate::http::Http {
            node: self.clone(),
            gate: self.trust.gate.clone(),
            metrics_auth: self.config.metrics_auth,
        });
        let http_only = match self.config.http_port {
            Some(port) => {
                let addr = SocketAddr::new(self.config.listen.ip(), port);
                let listener = bind(addr).await?;
                tracing::info!(addr = %listener.local_addr().map_or(addr, |a| a), "HTTP also on its own port");
                let done = stop.clone();
                let router = http.clone();
                Some(tokio::spawn(async move {
                    let served = axum::serve(listener, router)
                        .with_graceful_shutdown(async move { done.cancelled().await });
                    if let Err(e) = served.await {
                        tracing::warn!("the HTTP port stopped: {e}");
                    }
                }))
            }
            None => None,
        };
        let routes = tonic::service::Routes::new(crate::raft::service::server(
            self.raft.clone(),
            stop.clone(),
            self.stages.clone(),
        ))
        .add_service(control::server(self.clone()))
        .add_service(sessions::server(self.clone()))
        .add_service(jobs::server(self.clone()))
        .add_service(health)
        .into_axum_router()
        .merge(http);
        let server = builder
            .accept_http1(true)
            .layer(self.trust.gate.clone())
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            // A peer that stops answering keepalive pings is dropped after 20 s.
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            // Streams one connection may hold open at once (a follower forwards many
            // clients' requests over one connection, so this is generous).
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .add_routes(routes.into())
            .serve_with_incoming_shutdown(incoming, shutdown);
        // Open streams (worker sessions, followed output) must not keep a stopping node up:
        // after a fatal failure they get FATAL_GRACE, after a shutdown SHUTDOWN_GRACE (the
        // workers reconnect to another member).
        let fatal_deadline = async {
            stop.cancelled().await;
            let fatal = failure.lock().unwrap_or_else(|e| e.into_inner()).is_some();
            let grace = if fatal { FATAL_GRACE } else { SHUTDOWN_GRACE };
            tokio::time::sleep(grace).await;
        };
        let result = tokio::select! {
            result = server => result,
            _ = fatal_deadline => Ok(()),
        };
        sampling.abort();
        stop.cancel();
        if let Some(http_only) = http_only {
            let _ = http_only.await;
        }
        let _ = watching.await;
        if let Some(leadership) = self.leadership() {
            leadership.cancel.cancel();
        }
        let failure = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(reason) = failure {
            return Err(CoordinatorError::RaftStopped(reason));
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("Raft did not shut down cleanly: {e}");
        }
        result.map_err(CoordinatorError::from)
    }

    /// Proposes `command` through Raft and waits until it is committed and applied, timing it
    /// for `/metrics` (`testfleet_commit_latency_seconds`). Every proposal of the coordinator
    /// goes through here.
    pub async fn write(
        &self,
        command: crate::state::command::Command,
    ) -> Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        openraft::error::RaftError<TypeConfig, openraft::error::ClientWriteError<TypeConfig>>,
    > {
        let started = std::time::Instant::now();
        let result = self.raft.client_write(command).await;
        if result.is_ok() {
            self.commit_latency.observe(started.elapsed());
        }
        result
    }

    /// Asks Raft for a snapshot now and waits, up to `wait`, until one covers everything
    /// applied when asked: the log id it covers (`cluster snapshot`, disk relief).
    pub async fn snapshot_now(
        &self,
        wait: Duration,
    ) -> Result<openraft::alias::LogIdOf<TypeConfig>, String> {
        let applied = self.metrics().last_applied.map(|l| l.index);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| format!("cannot take a snapshot: {e}"))?;
        let mut watch = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let taken = watch.borrow_watched().snapshot;
            if let Some(taken) = taken.filter(|s| Some(s.index) >= applied) {
                return Ok(taken);
            }
            if !matches!(
                tokio::time::timeout_at(deadline, watch.changed()).await,
                Ok(Ok(()))
            ) {
                return Err(format!(
                    "no snapshot covering index {applied:?} within {} s",
                    wait.as_secs()
                ));
            }
        }
    }

    /// True once this node began shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A copy of this node's Raft metrics (never hold the watch borrow: it can block Raft).
    pub fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The voters of the current membership.
    pub fn voters(&self) -> BTreeSet<u64> {
        self.metrics().membership_config.voter_ids().collect()
    }
}

/// Streams one connection may hold open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// How long a node whose Raft stopped on a failure waits for its connections to close before
/// it returns anyway.
pub const FATAL_GRACE: Duration = Duration::from_secs(3);

/// How long a node asked to stop waits for its open streams to close before it stops anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Resolves, with the cause, when `raft`'s core stops by itself (openraft stops it on a storage
/// error). Never resolves while it runs, nor when it stops because it was asked to.
///
/// It watches the *server* metrics, which change only with the node's role, vote or
/// membership, and end when the core's task ends: the full metrics are sent after every turn of
/// the core's loop, several times per commit, and a watcher of those would be woken (and would
/// wake a worker thread) each time. The core sets its running state before its task ends, so
/// the cause is read once the watch has closed.
async fn raft_failure(raft: RaftNode) -> String {
    let mut server = raft.server_metrics();
    while server.changed().await.is_ok() {}
    let state = raft.metrics().borrow_watched().running_state.clone();
    match state {
        Err(openraft::error::Fatal::Stopped) => std::future::pending().await,
        Err(fatal) => fatal.to_string(),
        // The core's task ended without saying why (it sets the state on every exit).
        Ok(()) => "Raft's core task ended".to_string(),
    }
}

/// openraft settings from the coordinator's configuration.
fn raft_config(config: &CoordinatorConfig) -> Result<Arc<openraft::Config>, CoordinatorError> {
    let raft = openraft::Config {
        cluster_name: "testfleet".to_string(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: config.max_in_snapshot_log_to_keep,
        enable_pre_vote: Some(true),
        // A restarted leader campaigns like anyone else instead of resuming its old term: the
        // state machine answers before DuckDB has the entries, and by the time a crashed
        // leader is back the others have usually elected a new one anyway. Restoring would
        // briefly run leader loops on a node that cannot commit.
        enable_leader_restore: Some(false),
        install_snapshot_timeout: 10_000,
        snapshot_max_chunk_size: 1 << 20,
        max_payload_entries: 512,
        ..Default::default()
    };
    raft.validate()
        .map(Arc::new)
        .map_err(|e| CoordinatorError::RaftConfig(e.to_string()))
}

/// Binds `addr`, with a clear error when the port is taken.
/// A state database another process holds locked says so, naming the file and the fix; any
/// other failure to open it is passed on.
fn db_in_use(error: crate::raft::heal::HealError) -> CoordinatorError {
    match &error {
        crate::raft::heal::HealError::Open { path, source } => {
            // DuckDB: `IO Error: Could not set lock on file "...": Conflicting lock is held in
            // /path/to/testfleet (PID 4989)`.
            let text = source.to_string();
            if !text.contains("Could not set lock on file") {
                return error.into();
            }
            let holder = text
                .split_once("(PID ")
                .and_then(|(_, rest)| rest.split(')').next())
                .and_then(|pid| pid.trim().parse().ok());
            CoordinatorError::DbInUse {
                path: path.clone(),
                holder,
            }
        }
        _ => error.into(),
    }
}

/// How the other coordinators reach this one listening on `bound`: as `--peers` lists it,
/// else the bound address (the host's name when bound to every interface).
pub fn advertised_address(config: &CoordinatorConfig, bound: SocketAddr) -> String {
    match config.peers.get(&config.node_id) {
        Some(addr) => addr.clone(),
        None if bound.ip().is_unspecified() => {
            format!("{}:{}", crate::worker::host_name(), bound.port())
        }
        None => bound.to_string(),
    }
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, CoordinatorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| CoordinatorError::Listen { addr, source })
}
