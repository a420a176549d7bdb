//! An in-process cluster of coordinators on loopback: real gRPC between nodes, real DuckDB
//! and redb files in a temporary directory. Stopping a node shuts its server and Raft down
//! and releases its files; starting it again reopens them on the same address.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use testfleet::config::CoordinatorConfig;
use testfleet::coordinator::{self, Coordinator};
use testfleet::raft::TypeConfig;
use testfleet::raft::log_store::LogStore;
use testfleet::state::store::{SnapshotImage, dump_with};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::support::eventually;

struct Running {
    node: Arc<Coordinator>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

pub struct TestCluster {
    pub dir: super::support::TestDir,
    pub peers: BTreeMap<u64, String>,
    running: BTreeMap<u64, Running>,
    /// Snapshot policy for every node (entries since the last snapshot).
    pub snapshot_every: u64,
}

impl TestCluster {
    /// Starts `n` nodes (ids 1..=n); node 1 initialises the membership.
    pub async fn start(n: u64) -> TestCluster {
        Self::start_with(n, 5000).await
    }

    pub async fn start_with(n: u64, snapshot_every: u64) -> TestCluster {
        let dir = super::support::test_dir();
        let mut listeners = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for id in 1..=n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            peers.insert(id, listener.local_addr().unwrap().to_string());
            listeners.insert(id, listener);
        }
        let mut cluster = TestCluster {
            dir,
            peers,
            running: BTreeMap::new(),
            snapshot_every,
        };
        for (id, listener) in listeners {
            cluster.start_on(id, listener).await;
        }
        cluster
    }

    /// The configuration node `id` runs with.
    pub fn config(&self, id: u64) -> CoordinatorConfig {
        let node_dir = self.dir.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        CoordinatorConfig {
            node_id: id,
            listen: self.peers[&id].parse().unwrap(),
            db_path: node_dir.join("state.duckdb"),
            peers: self.peers.clone(),
            snapshot_logs_since_last: self.snapshot_every,
            max_in_snapshot_log_to_keep: self.snapshot_every.min(1000) / 2,
            duckdb_threads: 1,
            duckdb_memory_limit: "256MB".into(),
            // Tokens on, as everywhere: the nodes present the peer token to each other.
            auth_dir: Some(super::support::auth_dir().to_path_buf()),
            ..CoordinatorConfig::default()
        }
    }

    async fn start_on(&mut self, id: u64, listener: tokio::net::TcpListener) {
        let config = self.config(id);
        let node = Coordinator::start(config, self.peers[&id].clone())
            .await
            .unwrap_or_else(|e| panic!("node {id} did not start: {e}"));
        let (tx, rx) = oneshot::channel::<()>();
        let serving = node.clone();
        let server = tokio::spawn(async move {
            let _ = serving
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await;
        });
        self.running.insert(
            id,
            Running {
                node,
                shutdown: tx,
                server,
            },
        );
    }

    /// Starts a stopped node again on its address and files.
    pub async fn restart(&mut self, id: u64) {
        let addr = coordinator_addr(&self.peers[&id]);
        let listener = eventually(
            Duration::from_secs(10),
            "the node's port to be free",
            || async { tokio::net::TcpListener::bind(addr).await.ok() },
        )
        .await;
        self.start_on(id, listener).await;
    }

    /// Stops a node: its server, its Raft, and its open files.
    pub async fn stop(&mut self, id: u64) {
        let running = self.running.remove(&id).expect("node is running");
        let _ = running.shutdown.send(());
        running.server.await.unwrap();
        let _ = running.node.raft().shutdown().await;
        drop(running.node);
        // openraft's tasks end a moment after `shutdown` returns, and the last of them closes
        // the Raft log and the state machine: wait for the log's lock to be released, so that
        // the files can be reopened (or damaged on purpose) as a stopped process's would be.
        let log_path = self.config(id).log_path();
        eventually(
            Duration::from_secs(10),
            "the stopped node to release its files",
            || {
                let opened = LogStore::<TypeConfig>::open(&log_path);
                async move {
                    match opened {
                        Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => None,
                        _ => Some(()),
                    }
                }
            },
        )
        .await;
    }

    pub fn node(&self, id: u64) -> &Arc<Coordinator> {
        &self.running[&id].node
    }

    pub fn running(&self) -> Vec<u64> {
        self.running.keys().copied().collect()
    }

    /// The leader agreed on by every running node.
    pub async fn leader(&self) -> u64 {
        eventually(Duration::from_secs(20), "an agreed leader", || async {
            let mut leaders = self.running.values().map(|r| {
                let m = r.node.metrics().clone();
                (m.current_leader, m.state)
            });
            let (first, _) = leaders.next()?;
            let leader = first?;
            let all_agree = self
                .running
                .values()
                .all(|r| r.node.metrics().current_leader == Some(leader));
            let leader_running = self
                .running
                .get(&leader)
                .is_some_and(|r| r.node.metrics().state == ServerState::Leader);
            (all_agree && leader_running).then_some(leader)
        })
        .await
    }

    /// Waits until every running node has applied `index`.
    pub async fn applied(&self, index: u64) {
        for (id, r) in &self.running {
            r.node
                .raft()
                .wait(Some(Duration::from_secs(60)))
                .applied_index_at_least(Some(index), format!("node {id} to apply {index}"))
                .await
                .unwrap();
        }
    }

    /// Every replicated table of a node, read from its DuckDB.
    pub fn tables(&self, id: u64) -> SnapshotImage {
        let state = self.running[&id].node.state();
        state.flush().unwrap();
        let reader = state.reader().unwrap();
        dump_with(&reader).unwrap().0
    }
}

fn coordinator_addr(addr: &str) -> std::net::SocketAddr {
    addr.parse().unwrap()
}

#[allow(dead_code)]
pub async fn bind(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    coordinator::bind(addr).await.unwrap()
}
