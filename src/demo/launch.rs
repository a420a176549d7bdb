//! Starts coordinator processes on this machine: a real cluster on loopback, for
//! benchmarks, the HA demo and process-level tests.
//!
//! [`LocalCluster`] picks free loopback ports, runs `testfleet coordinator --peers ...` once
//! per node (each with its own data directory), and can SIGKILL, pause (SIGSTOP), resume and
//! restart any node on its files. Every process it started is killed when it is dropped.
//! Leadership is read through the nodes' own `Status` RPC, as any client would.
//!
//! A local cluster runs with tokens on, as a real one should: it makes its own auth directory
//! (`<dir>/auth`, by `testfleet auth init`) unless `--auth-dir` is among the extra arguments,
//! and hands out each role's [`Credentials`] and flags to its clients and workers. With
//! [`Security::TokensAndTls`] it also makes a CA and role certificates (`<dir>/tls`) and every
//! connection runs mutual TLS; [`Security::Open`] runs without either (loopback only), to
//! measure what security costs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::auth::token::{Keyring, token_path};
use crate::auth::{Credentials, Role, Token};
use crate::cli::{Remote, connect};
use crate::proto::{NodeStatus, StatusRequest};

/// Why the local cluster could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start coordinator {id}: {source}")]
    Spawn {
        id: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
    #[error("{0}")]
    Timeout(String),
    #[error("cannot prepare the cluster's tokens: {0}")]
    Auth(#[from] crate::auth::token::TokenError),
    #[error("cannot prepare the cluster's certificates: {0}")]
    Tls(String),
}

/// How a local cluster is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// No credentials: the nodes listen on loopback only.
    Open,
    /// Bearer tokens on every call.
    #[default]
    Tokens,
    /// Bearer tokens and mutual TLS on every connection.
    TokensAndTls,
}

/// One coordinator process and where it lives.
struct NodeProcess {
    addr: String,
    dir: PathBuf,
    child: Option<Child>,
    /// The network namespace it runs in (started with `ip netns exec`), if not the host's.
    netns: Option<String>,
}

/// Where a node runs when it does not share the host's loopback: a network namespace and the
/// address it listens on there (`chaos::netns::Fabric` makes them).
#[derive(Clone, Debug)]
pub struct NodePlace {
    pub netns: String,
    pub ip: std::net::IpAddr,
}

/// The port every node placed in its own namespace listens on (each namespace has all ports).
pub const PLACED_PORT: u16 = 7000;

/// N coordinator processes on loopback.
pub struct LocalCluster {
    binary: PathBuf,
    nodes: BTreeMap<u64, NodeProcess>,
    peers: String,
    extra_args: Vec<String>,
    /// The token files every node checks; `None` for an open cluster.
    auth_dir: Option<PathBuf>,
    /// The CA and role certificates, with mutual TLS.
    tls_dir: Option<PathBuf>,
    /// Each role's credentials, read once when the cluster starts (status polls use them
    /// every 20 ms).
    credentials: BTreeMap<Role, Credentials>,
    /// Environment variables set on every process started from now on ([`Self::set_env`]).
    env: Vec<(String, String)>,
}

/// A free TCP port on 127.0.0.1, for a process started next to listen on.
///
/// It is bound and released here, so another process could take it before ours binds it. Port
/// 0 would pick from the kernel's ephemeral range, which every outgoing connection on the
/// machine also draws its source port from: on a machine busy with many clusters, one of those
/// connections took a port between release and bind. So the port is picked at random *below*
/// that range (`ip_local_port_range`), where the kernel never hands out ports by itself, and
/// only if none binds there is port 0 the fallback.
pub fn free_port() -> Result<u16, LaunchError> {
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if below > LOWEST {
        let span = u64::from(below - LOWEST);
        for _ in 0..64 {
            let random = uuid::Uuid::new_v4().as_u64_pair().0;
            let port = LOWEST + (random % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(LaunchError::Port)?;
    Ok(listener.local_addr().map_err(LaunchError::Port)?.port())
}

impl LocalCluster {
    /// Starts `n` coordinators of `binary` with data under `dir`; `extra_args` go to every
    /// node (e.g. timing flags).
    pub fn start(
        binary: &Path,
        n: u64,
        dir: &Path,
        extra_args: &[String],
    ) -> Result<LocalCluster, LaunchError> {
        Self::start_on(binary, n, None, dir, extra_args)
    }

    /// Like [`LocalCluster::start_on`], protected as `security` says.
    pub fn start_secured(
        binary: &Path,
        n: u64,
        base_port: Option<u16>,
        dir: &Path,
        extra_args: &[String],
        security: Security,
    ) -> Result<LocalCluster, LaunchError> {
        let mut args = extra_args.to_vec();
        if security == Security::Open {
            args.push("--no-auth".to_string());
        }
        if security == Security::TokensAndTls {
            let tls = dir.join("tls");
            if crate::auth::tls::TlsFiles::role(&tls, Role::Peer)
                .load()
                .is_err()
            {
                crate::auth::tls::init(&tls, &[], 365, true)
                    .map_err(|e| LaunchError::Tls(e.to_string()))?;
            }
            args.push("--tls-dir".to_string());
            args.push(tls.display().to_string());
        }
        Self::start_on(binary, n, base_port, dir, &args)
    }

    /// Like [`LocalCluster::start`]; with `base_port`, node `i` listens on `base_port + i - 1`.
    pub fn start_on(
        binary: &Path,
        n: u64,
        base_port: Option<u16>,
        dir: &Path,
        extra_args: &[String],
    ) -> Result<LocalCluster, LaunchError> {
        Self::start_placed(binary, n, base_port, &[], dir, extra_args)
    }

    /// Like [`LocalCluster::start_on`]; node `i` runs in `places[i - 1]` when given (its
    /// namespace, listening on its address at [`PLACED_PORT`]).
    pub fn start_placed(
        binary: &Path,
        n: u64,
        base_port: Option<u16>,
        places: &[NodePlace],
        dir: &Path,
        extra_args: &[String],
    ) -> Result<LocalCluster, LaunchError> {
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let node_dir = dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir).map_err(|source| LaunchError::Dir {
                path: node_dir.clone(),
                source,
            })?;
            let place = places.get((id - 1) as usize);
            let addr = match (place, base_port) {
                (Some(place), _) => std::net::SocketAddr::new(place.ip, PLACED_PORT).to_string(),
                (None, Some(base)) => format!("127.0.0.1:{}", base.saturating_add((id - 1) as u16)),
                (None, None) => format!("127.0.0.1:{}", free_port()?),
            };
            nodes.insert(
                id,
                NodeProcess {
                    addr,
                    dir: node_dir,
                    child: None,
                    netns: place.map(|p| p.netns.clone()),
                },
            );
        }
        let peers = nodes
            .iter()
            .map(|(id, n)| format!("{id}={}", n.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut extra_args = extra_args.to_vec();
        // `--no-auth` and `--tls-dir DIR` are this launcher's own: taken out here.
        let open = take_flag(&mut extra_args, "--no-auth", false).is_some();
        let tls_dir = take_flag(&mut extra_args, "--tls-dir", true).map(PathBuf::from);
        if let Some(tls) = &tls_dir {
            let peer = crate::auth::tls::TlsFiles::role(tls, Role::Peer);
            for (flag, path) in [
                ("--tls-cert", &peer.cert),
                ("--tls-key", &peer.key),
                ("--tls-ca", &peer.ca),
            ] {
                extra_args.push(flag.to_string());
                extra_args.push(path.display().to_string());
            }
        }
        let auth_dir = match extra_args.iter().position(|a| a == "--auth-dir") {
            Some(i) => Some(PathBuf::from(
                extra_args.get(i + 1).cloned().unwrap_or_default(),
            )),
            None if open => None,
            None => {
                let auth_dir = dir.join("auth");
                ensure_tokens(&auth_dir)?;
                extra_args.push("--auth-dir".to_string());
                extra_args.push(auth_dir.display().to_string());
                Some(auth_dir)
            }
        };
        let mut cluster = LocalCluster {
            binary: binary.to_path_buf(),
            nodes,
            peers,
            extra_args,
            credentials: read_credentials(auth_dir.as_deref(), tls_dir.as_deref()),
            auth_dir,
            tls_dir,
            env: Vec::new(),
        };
        for id in 1..=n {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, id: u64) -> Result<(), LaunchError> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let port = node.addr.rsplit(':').next().unwrap_or("0").to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("coordinator.log"))
            .map_err(|source| LaunchError::Dir {
                path: node.dir.clone(),
                source,
            })?;
        let (bind, _) = node.addr.rsplit_once(':').unwrap_or(("127.0.0.1", ""));
        let mut command = match &node.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let child = command
            .arg("coordinator")
            .args(["--node-id", &id.to_string()])
            .args(["--port", &port])
            .args(["--bind", bind])
            .args(["--peers", &self.peers])
            .arg("--db-path")
            .arg(node.dir.join("state.duckdb"))
            .args(["--duckdb-threads", "1", "--duckdb-memory-limit", "256MB"])
            .args(&self.extra_args)
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|source| LaunchError::Spawn { id, source })?;
        node.child = Some(child);
        Ok(())
    }

    /// Sets `key` to `value` in the environment of every node process started from now on
    /// (a [`Self::restart`]), e.g. `RUST_LOG` to have a restarted node log what it does.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The directory of the token files the nodes check, if they check tokens.
    pub fn auth_dir(&self) -> Option<&Path> {
        self.auth_dir.as_deref()
    }

    /// The file holding `role`'s token, if the nodes check tokens.
    pub fn token_file(&self, role: Role) -> Option<PathBuf> {
        self.auth_dir.as_ref().map(|dir| token_path(dir, role))
    }

    /// The command-line flags that give a `testfleet` client or worker `role`'s credentials.
    pub fn client_args(&self, role: Role) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(file) = self.token_file(role) {
            args.extend(["--token-file".to_string(), file.display().to_string()]);
        }
        if let Some(tls) = &self.tls_dir {
            let files = crate::auth::tls::TlsFiles::role(tls, role);
            for (flag, path) in [
                ("--tls-cert", files.cert),
                ("--tls-key", files.key),
                ("--tls-ca", files.ca),
            ] {
                args.extend([flag.to_string(), path.display().to_string()]);
            }
        }
        args
    }

    /// What a client of `role` presents to this cluster.
    pub fn credentials(&self, role: Role) -> Credentials {
        self.credentials.get(&role).cloned().unwrap_or_default()
    }

    /// Every member, as an operator reaches them.
    pub fn remote(&self) -> Remote {
        Remote::new(
            self.addresses().into_values().collect(),
            self.credentials(Role::Operator),
        )
    }

    /// Every member's address, by id.
    pub fn addresses(&self) -> BTreeMap<u64, String> {
        self.nodes
            .iter()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    pub fn addr(&self, id: u64) -> &str {
        &self.nodes[&id].addr
    }

    /// Everything the node's processes wrote to its log (`coordinator.log`, appended across
    /// restarts); empty if there is none.
    pub fn log(&self, id: u64) -> String {
        (self.nodes.get(&id))
            .and_then(|n| std::fs::read_to_string(n.dir.join("coordinator.log")).ok())
            .unwrap_or_default()
    }

    /// The process id of a running node.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes[&id].child.as_ref().map(Child::id)
    }

    /// Ids of the nodes whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Nodes that exited on their own since the last call (not killed through [`Self::kill`]),
    /// each with its exit code (`None`: a signal) and the end of its log; they count as
    /// stopped, and [`Self::restart`] starts them again.
    pub fn exited(&mut self) -> Vec<(u64, Option<i32>, String)> {
        let mut gone = Vec::new();
        for (id, node) in &mut self.nodes {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                let log =
                    std::fs::read_to_string(node.dir.join("coordinator.log")).unwrap_or_default();
                // The panic or error that ended it, if the log says, else its last line.
                let why = (log.lines())
                    .find(|l| l.contains("panicked at") || l.starts_with("error:"))
                    .map(|l| {
                        let next = log.lines().skip_while(|x| *x != l).nth(1).unwrap_or("");
                        format!("{} {}", l.trim(), next.trim())
                    })
                    .or_else(|| log.lines().last().map(str::to_string))
                    .unwrap_or_default();
                gone.push((*id, status.code(), why));
            }
        }
        gone
    }

    /// SIGKILLs a node and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The node's role and term as it reports them, if it answers within 300 ms.
    pub async fn role(&self, id: u64) -> Option<(String, u64)> {
        let status = self.status(id, Duration::from_millis(300)).await?;
        Some((status.role, status.term))
    }

    /// The node's status, if it answers (connection included) within `wait`.
    async fn status(&self, id: u64, wait: Duration) -> Option<NodeStatus> {
        let addr = self.nodes.get(&id)?.addr.clone();
        let credentials = self.credentials(Role::Operator);
        let ask = async {
            let mut client = connect(&addr, &credentials).await.ok()?;
            Some(client.status(StatusRequest {}).await.ok()?.into_inner())
        };
        tokio::time::timeout(wait, ask).await.ok().flatten()
    }

    /// Sends a signal to a running node (e.g. SIGSTOP / SIGCONT).
    pub fn signal(&self, id: u64, signal: i32) {
        if let Some(pid) = self.pid(id) {
            // SAFETY: kill(2) on a pid this process spawned and has not reaped.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// Starts a killed node again on its address and files.
    pub fn restart(&mut self, id: u64) -> Result<(), LaunchError> {
        self.kill(id);
        self.spawn(id)
    }

    /// The leader as the running nodes report it, once a majority agrees, polling until
    /// `limit`. `exclude` is never accepted as leader (e.g. a node just killed or paused).
    pub async fn leader(&self, limit: Duration, exclude: Option<u64>) -> Result<u64, LaunchError> {
        poll(limit, "no leader agreed on", || self.agreed_leader(exclude)).await
    }

    /// Waits until every running node follows one leader (each names it, and it says it
    /// leads) with its log within `lag` entries of the leader's commit index: the cluster has
    /// its full redundancy again, e.g. after a restart. Returns that leader.
    pub async fn settled(&self, limit: Duration, lag: u64) -> Result<u64, LaunchError> {
        poll(
            limit,
            "the running nodes did not all follow one leader",
            || self.all_following(lag),
        )
        .await
    }

    async fn all_following(&self, lag: u64) -> Option<u64> {
        let asks = self.running().into_iter().map(|id| async move {
            self.status(id, Duration::from_millis(300))
                .await
                .map(|status| (id, status))
        });
        let answers: Option<Vec<_>> = futures::future::join_all(asks).await.into_iter().collect();
        let answers = answers?;
        let leader = answers.first()?.1.leader_id?;
        let (_, head) = answers.iter().find(|(id, _)| *id == leader)?;
        if head.role != "leader" {
            return None;
        }
        let committed = head.committed.unwrap_or(0);
        answers
            .iter()
            .all(|(_, s)| {
                s.leader_id == Some(leader) && s.last_log_index.unwrap_or(0) + lag >= committed
            })
            .then_some(leader)
    }

    async fn agreed_leader(&self, exclude: Option<u64>) -> Option<u64> {
        let running: Vec<u64> = self
            .running()
            .into_iter()
            .filter(|id| Some(*id) != exclude)
            .collect();
        // A node that is still starting accepts connections before it answers: the answers are
        // taken as they come, and the first time a majority agrees on a leader that says it
        // leads, that is the answer, without waiting for the slow node; a node that has not
        // answered within 100 ms counts as no answer, so one poll never takes longer.
        let mut asks: futures::stream::FuturesUnordered<_> = running
            .iter()
            .map(|id| async move {
                let answer = self.status(*id, Duration::from_millis(100)).await;
                (*id, answer.map(|s| (s.leader_id, s.role)))
            })
            .collect();
        let needed = (self.nodes.len() / 2 + 1).min(running.len());
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        let mut leading: BTreeSet<u64> = BTreeSet::new();
        while let Some((id, answer)) = futures::StreamExt::next(&mut asks).await {
            let Some((leader, role)) = answer else {
                continue;
            };
            if role == "leader" {
                leading.insert(id);
            }
            if let Some(l) = leader.filter(|l| Some(*l) != exclude) {
                *votes.entry(l).or_default() += 1;
            }
            if let Some((leader, _)) = votes
                .iter()
                .find(|(l, count)| **count >= needed && leading.contains(l))
            {
                return Some(*leader);
            }
        }
        None
    }
}

/// Each role's credentials from the cluster's token and certificate directories. A file that
/// cannot be read leaves that role without it: its clients then get the coordinators' own
/// refusal, which says what is missing.
fn read_credentials(
    auth_dir: Option<&Path>,
    tls_dir: Option<&Path>,
) -> BTreeMap<Role, Credentials> {
    Role::ALL
        .into_iter()
        .map(|role| {
            let mut credentials = Credentials::none();
            if let Some(dir) = auth_dir {
                match Token::read(&token_path(dir, role)) {
                    Ok(token) => credentials = credentials.with_token(token),
                    Err(e) => tracing::warn!("cannot read the {role} token: {e}"),
                }
            }
            if let Some(dir) = tls_dir {
                match crate::auth::tls::TlsFiles::role(dir, role).load() {
                    Ok(material) => credentials = credentials.with_tls(material.client_config()),
                    Err(e) => tracing::warn!("cannot load the {role} certificate: {e}"),
                }
            }
            (role, credentials)
        })
        .collect()
}

/// Removes `flag` (and its value, with `value`) from `args`: the value, or "" for a flag
/// without one; `None` when absent.
fn take_flag(args: &mut Vec<String>, flag: &str, value: bool) -> Option<String> {
    let i = args.iter().position(|a| a == flag)?;
    args.remove(i);
    if value && i < args.len() {
        Some(args.remove(i))
    } else {
        Some(String::new())
    }
}

/// Makes the token files in `dir` unless a complete set is already there (a harness run again
/// in the same data directory keeps its tokens).
fn ensure_tokens(dir: &Path) -> Result<(), LaunchError> {
    if Keyring::load(dir).is_err() {
        crate::auth::token::init(dir, true)?;
    }
    Ok(())
}

/// Calls `check` every 20 ms until it gives a value, or fails with "`what` within `limit`".
async fn poll<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<T, LaunchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(LaunchError::Timeout(format!("{what} within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            // A paused process must be resumed to die promptly from SIGKILL on some kernels.
            self.signal(id, libc::SIGCONT);
            self.kill(id);
        }
    }
}

/// Worker processes on this machine, each named `{prefix}{n}`.
pub struct LocalWorkers {
    binary: PathBuf,
    dir: PathBuf,
    coordinators: String,
    /// The flags that give every worker the worker role's credentials.
    credentials: Vec<String>,
    slots: u32,
    children: BTreeMap<String, Child>,
    /// Flags some workers get on every start (e.g. `--inject-fault SPEC`).
    extra: BTreeMap<String, Vec<String>>,
}

impl LocalWorkers {
    /// Starts `count` workers of `cluster` with `slots` slots each, logging into `dir`.
    pub fn start(
        binary: &Path,
        dir: &Path,
        cluster: &LocalCluster,
        prefix: &str,
        count: usize,
        slots: u32,
    ) -> Result<LocalWorkers, LaunchError> {
        let coordinators: Vec<String> = cluster.addresses().into_values().collect();
        let mut workers = LocalWorkers {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            coordinators: coordinators.join(","),
            credentials: cluster.client_args(Role::Worker),
            slots,
            children: BTreeMap::new(),
            extra: BTreeMap::new(),
        };
        for n in 1..=count {
            workers.spawn(&format!("{prefix}{n}"))?;
        }
        Ok(workers)
    }

    /// Starts (or restarts) the worker `name` with `args` added to its command line, now and
    /// on every later [`Self::spawn`] of it.
    pub fn spawn_with(&mut self, name: &str, args: &[String]) -> Result<(), LaunchError> {
        self.extra.insert(name.to_string(), args.to_vec());
        self.spawn(name)
    }

    /// Starts (or restarts) the worker `name`.
    pub fn spawn(&mut self, name: &str) -> Result<(), LaunchError> {
        self.kill(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .map_err(|source| LaunchError::Dir {
                path: self.dir.clone(),
                source,
            })?;
        let child = Command::new(&self.binary)
            .args([
                "worker",
                "--coordinator",
                &self.coordinators,
                "--name",
                name,
            ])
            .args(["--slots", &self.slots.to_string()])
            .args(&self.credentials)
            // The harnesses' workers run shell commands only: no GPU probe (it loads the
            // graphics drivers, ~80 MB and 0.2 s per worker, which the benchmarks would count).
            .arg("--no-probe")
            .args(self.extra.get(name).into_iter().flatten())
            // Its run marker (crash evidence for its next start) lives with its log.
            .env("TESTFLEET_WORKER_STATE_DIR", &self.dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|source| LaunchError::Spawn { id: 0, source })?;
        self.children.insert(name.to_string(), child);
        Ok(())
    }

    /// SIGKILLs a worker and reaps it.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.children.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.children.keys().cloned().collect()
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.get(name).map(Child::id)
    }
}

impl Drop for LocalWorkers {
    fn drop(&mut self) {
        for name in self.names() {
            self.kill(&name);
        }
    }
}
