//! Testfleet's coordinator inside another program: [`AutoRecoverySystem`].
//!
//! A program that wants highly available test coordination without running the
//! `testfleet coordinator` binary builds one `AutoRecoverySystem` per process, exactly as the
//! original design's flags describe a node — a coordinator id (a number or a name such as
//! `coordinator1`), the other coordinators' addresses (or all of them), a DuckDB path and an
//! optional directory for pictures — and starts it. The coordinators find each other, elect a
//! leader, and from then on the program is told when this node becomes leader and whenever
//! leadership moves, can ask whether it leads, and can read what the fleet's workers offer
//! (GPU adapters, browsers with WebGPU/WebNN). Everything else — workers, jobs, recovery —
//! works as with the binary: it is the same [`Coordinator`], serving the same gRPC and HTTP
//! port.
//!
//! ```no_run
//! use testfleet::embed::AutoRecoverySystem;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut system = AutoRecoverySystem::new(
//!     "coordinator1",
//!     "localhost:8081,localhost:8082",
//!     "./benchmark_db.duckdb",
//!     None,
//! )?
//! .with_port(8080);
//! system.on_become_leader(|| println!("this node leads now"));
//! system.on_leader_changed(|old, new| println!("leader {old:?} -> {new:?}"));
//! system.start().await?;
//! println!("leading: {}", system.is_leader());
//! println!("{:?}", system.web_capabilities());
//! system.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Callbacks run on a task of their own, in the order leadership changed; a callback must not
//! block for long (spawn work instead).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use openraft::async_runtime::WatchReceiver;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::capabilities::ClusterCapabilities;
use crate::config::{ConfigError, CoordinatorArgs, CoordinatorConfig};
use crate::coordinator::{Coordinator, CoordinatorError};

type BecomeLeader = Box<dyn Fn() + Send + Sync>;
type LeaderChanged = Box<dyn Fn(Option<u64>, Option<u64>) + Send + Sync>;

#[derive(Default)]
struct Callbacks {
    become_leader: Vec<BecomeLeader>,
    leader_changed: Vec<LeaderChanged>,
}

/// Why the system could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error("the system was started already")]
    Started,
    #[error("the coordinator's server task failed: {0}")]
    Join(String),
}

/// One coordinator of a highly available Testfleet cluster, run inside this program.
pub struct AutoRecoverySystem {
    args: CoordinatorArgs,
    callbacks: Arc<Mutex<Callbacks>>,
    running: Option<Running>,
}

struct Running {
    node: Arc<Coordinator>,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), CoordinatorError>>,
    watcher: JoinHandle<()>,
}

impl AutoRecoverySystem {
    /// A coordinator named `coordinator_id` (a number, a name like `coordinator1`, or its own
    /// `HOST:PORT` in the list), among `coordinator_addresses` (`HOST:PORT,...`: the other
    /// coordinators, or all of them), keeping its state in the DuckDB file `db_path` (its
    /// Raft log and snapshots beside it), and writing the cluster's pictures into
    /// `visualization_path` while it leads. Checked now; nothing runs before [`Self::start`].
    pub fn new(
        coordinator_id: &str,
        coordinator_addresses: &str,
        db_path: impl Into<PathBuf>,
        visualization_path: Option<PathBuf>,
    ) -> Result<Self, EmbedError> {
        let args = CoordinatorArgs {
            high_availability: true,
            coordinator_id: Some(coordinator_id.to_string()),
            coordinator_addresses: Some(coordinator_addresses.to_string()),
            db_path: Some(db_path.into()),
            visualization_path,
            ..CoordinatorArgs::default()
        };
        Self::from_args(args)
    }

    /// Any coordinator the binary could run, from its flags (`CoordinatorArgs`): a config
    /// file, tokens or TLS, timings.
    pub fn from_args(args: CoordinatorArgs) -> Result<Self, EmbedError> {
        CoordinatorConfig::resolve(&args)?;
        Ok(AutoRecoverySystem {
            args,
            callbacks: Arc::default(),
            running: None,
        })
    }

    /// Listens on `port` (0: any free one) instead of the one the address list or the
    /// default (8080) gives.
    pub fn with_port(mut self, port: u16) -> Self {
        self.args.port = Some(port);
        self
    }

    /// Checks callers' tokens from `dir` (`testfleet auth init`), as `--auth-dir` does.
    pub fn with_auth_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.args.auth_dir = Some(dir.into());
        self
    }

    /// Calls `callback` each time this node becomes the leader.
    pub fn on_become_leader(&mut self, callback: impl Fn() + Send + Sync + 'static) {
        lock(&self.callbacks).become_leader.push(Box::new(callback));
    }

    /// Calls `callback(old, new)` each time a new leader is known: `old` is the leader before
    /// it (`None` for the first), `new` the one now. An election in between is not reported
    /// on its own: the callback fires once the new leader is known.
    pub fn on_leader_changed(
        &mut self,
        callback: impl Fn(Option<u64>, Option<u64>) + Send + Sync + 'static,
    ) {
        lock(&self.callbacks)
            .leader_changed
            .push(Box::new(callback));
    }

    /// Opens the stores, starts Raft and serves the node's port; returns once it listens (the
    /// cluster forms in the background as the other coordinators answer).
    pub async fn start(&mut self) -> Result<(), EmbedError> {
        if self.running.is_some() {
            return Err(EmbedError::Started);
        }
        let config = CoordinatorConfig::resolve(&self.args)?;
        let listener = crate::coordinator::bind(config.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| CoordinatorError::Listen {
                addr: config.listen,
                source,
            })?;
        let advertised = crate::coordinator::advertised_address(&config, addr);
        let node = Coordinator::start(config, advertised).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(node.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        let watcher = tokio::spawn(watch(node.clone(), self.callbacks.clone()));
        self.running = Some(Running {
            node,
            addr,
            stop,
            server,
            watcher,
        });
        Ok(())
    }

    /// Whether this node is the cluster's leader now.
    pub fn is_leader(&self) -> bool {
        self.running.as_ref().is_some_and(|r| {
            let metrics = r.node.metrics();
            metrics.current_leader == Some(metrics.id)
                && metrics.state == openraft::ServerState::Leader
        })
    }

    /// The leader's id as this node knows it.
    pub fn leader(&self) -> Option<u64> {
        self.running
            .as_ref()
            .and_then(|r| r.node.metrics().current_leader)
    }

    /// This node's Raft id (from its coordinator id).
    pub fn node_id(&self) -> Option<u64> {
        self.running.as_ref().map(|r| r.node.node_id())
    }

    /// The address the node listens on, once started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.addr)
    }

    /// What the fleet's workers offer — GPU adapters, browsers with WebGPU and WebNN, declared
    /// capabilities, and who offers each — from this node's copy of the state.
    pub fn web_capabilities(&self) -> ClusterCapabilities {
        match &self.running {
            Some(r) => r
                .node
                .state()
                .with_machine(ClusterCapabilities::from_machine),
            None => ClusterCapabilities::default(),
        }
    }

    /// The coordinator itself, for anything this API does not cover.
    pub fn coordinator(&self) -> Option<&Arc<Coordinator>> {
        self.running.as_ref().map(|r| &r.node)
    }

    /// Stops serving and stops Raft; the files stay, and a new system on them resumes.
    pub async fn shutdown(&mut self) -> Result<(), EmbedError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let _ = running.stop.send(());
        let served = running
            .server
            .await
            .map_err(|e| EmbedError::Join(e.to_string()))?;
        running.watcher.abort();
        served?;
        Ok(())
    }
}

/// Calls the callbacks as this node's view of the leader changes.
async fn watch(node: Arc<Coordinator>, callbacks: Arc<Mutex<Callbacks>>) {
    let mut metrics = node.raft().metrics();
    let me = node.node_id();
    let mut known: Option<u64> = None;
    loop {
        let leader = metrics.borrow_watched().current_leader;
        if leader.is_some() && leader != known {
            let callbacks = lock(&callbacks);
            for callback in &callbacks.leader_changed {
                callback(known, leader);
            }
            if leader == Some(me) {
                for callback in &callbacks.become_leader {
                    callback();
                }
            }
            known = leader;
        }
        if metrics.changed().await.is_err() {
            return; // Raft stopped
        }
    }
}

fn lock(callbacks: &Mutex<Callbacks>) -> std::sync::MutexGuard<'_, Callbacks> {
    callbacks.lock().unwrap_or_else(|e| e.into_inner())
}
