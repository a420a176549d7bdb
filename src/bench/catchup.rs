//! `testfleet bench catchup`: how long a coordinator takes to catch up after a restart, at
//! several sizes of applied state, measured on real processes.
//!
//! For each size N (`--commands`, ascending) and each repetition a fresh local cluster of three
//! coordinator processes is started (see [`crate::demo::launch`]) and two catch-ups are
//! measured on it:
//!
//! * **rejoin after absence**: a follower is SIGKILLed while the cluster is still empty, N
//!   `Bench` commands are committed by many concurrent writers while it is down, and it is
//!   started again on its files. Measured from its process start until it serves (its `Status`
//!   answers) and until it has applied the leader's commit index at restart time. When the
//!   leader has purged the entries the follower lacks (N beyond the snapshot interval,
//!   `--snapshot-logs-since-last`, plus `--max-in-snapshot-log-to-keep`), this goes through a
//!   snapshot install and the log tail after it, otherwise through the log alone; the path is
//!   read from the follower's own log (openraft's "install full snapshot" line, logged because
//!   the restarted node runs with that target at `info`). When a purge is due, the follower is
//!   started only once the leader's status shows its log purged past the follower's last
//!   entry (`purge_wait_ms` after the last commit): openraft's leader purges only between two
//!   attempts to reach the absent node (it keeps entries a replication in flight may still
//!   send), so without the wait a restart right after the commits could meet a log not yet
//!   purged, and the path would depend on that timing.
//! * **restart**: then the other follower — caught up, never stopped — is SIGKILLed and
//!   started again on its files; measured the same way, against the leader's commit index at
//!   restart time. Between its kill and its restart, copies of its files are opened in this
//!   process to split the time: opening the Raft log, opening DuckDB and loading the in-memory
//!   machine from it, and how many entries openraft must apply again (the log after DuckDB's
//!   `last_applied`, which lags apply by at most one flush).
//!
//! The state's size (the leader's DuckDB file with its WAL, its Raft log and its snapshot) is
//! read after each repetition. Every figure is the median over the repetitions, with every
//! sample in the JSON document; the ratios compare the largest size with the smallest. Times
//! are found by polling every 5 ms, so each includes up to that much polling delay.
//!
//! A rejoin includes the wait for the leader's next attempt to reach the follower: openraft
//! backs off from an unreachable node (200, 400, 800 ms, then every second by default), so
//! that wait is anywhere from nothing to a second and dominates a single sample; compare
//! medians over several repetitions, and `snapshot_received_ms` against `applied_ms` for
//! the install and the log tail alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use serde::Serialize;

use super::median;
use crate::auth::{Credentials, Role};
use crate::cli::{CliError, Output, connect, table};
use crate::config::LOG_FILE_NAME;
use crate::demo::launch::LocalCluster;
use crate::proto::{BenchRequest, NodeStatus, StatusRequest};
use crate::raft::TypeConfig;
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::{StateMachine, saved_snapshot_index};
use crate::state::store::DbSettings;

/// The coordinators' default log filter (`main.rs`), plus openraft's follower handler at
/// `info`, whose "install full snapshot" line says that a restarted node received a snapshot.
const RESTART_LOG_FILTER: &str = "info,openraft=warn,openraft::core::heartbeat=error,\
     openraft::replication=error,openraft::engine::handler::replication_handler=error,\
     openraft::engine::handler::following_handler=info";

/// The line openraft logs (at `info`) when a follower installs a snapshot it received.
const INSTALL_LINE: &str = "install full snapshot";

/// How often a restarted node is asked for its status.
const POLL: Duration = Duration::from_millis(5);

/// Arguments of `testfleet bench catchup`.
#[derive(Clone, Debug, clap::Args)]
pub struct CatchupArgs {
    /// Applied commands at which to measure, one fresh cluster per size and repetition,
    /// e.g. 10000,100000
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub commands: Vec<u64>,
    /// Repetitions per size (a fresh cluster each); medians and every sample are reported
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    /// Concurrent writers committing the commands
    #[arg(long, default_value_t = 128)]
    pub writers: usize,
    /// Payload bytes per command
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// The nodes' snapshot interval (`--snapshot-logs-since-last` of the coordinators)
    #[arg(long, default_value_t = 20_000)]
    pub snapshot_logs_since_last: u64,
    /// Log entries the nodes keep behind a snapshot (`--max-in-snapshot-log-to-keep`)
    #[arg(long, default_value_t = 1000)]
    pub max_in_snapshot_log_to_keep: u64,
    /// Longest wait for one catch-up, in seconds
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Directory for the nodes' files, kept afterwards (default: a temporary directory)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The median of a measure and every sample it is taken from, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Measure {
    pub median_ms: f64,
    pub samples_ms: Vec<f64>,
}

impl Measure {
    fn of(samples_ms: Vec<f64>) -> Measure {
        Measure {
            median_ms: median(&samples_ms),
            samples_ms,
        }
    }
}

/// The size of a node's state on disk.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StateSize {
    /// The node's applied index when it was read.
    pub applied_index: u64,
    /// The DuckDB file and its WAL.
    pub duckdb_bytes: u64,
    /// The Raft log (its segment files).
    pub log_bytes: u64,
    /// The current snapshot file (0 without one).
    pub snapshot_bytes: u64,
    /// The last log index the snapshot covers.
    pub snapshot_index: Option<u64>,
}

/// One restart of a caught-up follower.
#[derive(Clone, Debug, Serialize)]
pub struct RestartSample {
    pub node: u64,
    /// The leader's commit index when the node was started again: what it must apply.
    pub target_index: u64,
    /// Process start until its `Status` answers.
    pub serving_ms: f64,
    /// Process start until it has applied `target_index`.
    pub applied_ms: f64,
    /// DuckDB's `last_applied` in the killed node's files (where openraft resumes).
    pub duckdb_applied: Option<u64>,
    /// The last entry in the killed node's log.
    pub last_log_index: Option<u64>,
    /// Entries openraft applies again from the log (`target_index - duckdb_applied`).
    pub replayed_entries: u64,
    /// Opening a copy of its Raft log, in this process.
    pub open_log_ms: f64,
    /// Opening a copy of its DuckDB file and loading the in-memory machine, in this process.
    pub open_state_ms: f64,
}

/// One rejoin of a follower that was down while N commands were committed.
#[derive(Clone, Debug, Serialize)]
pub struct RejoinSample {
    pub node: u64,
    /// The leader's commit index when the node was started again.
    pub target_index: u64,
    /// The last entry in the node's log when it was killed.
    pub last_log_index_before: u64,
    pub serving_ms: f64,
    pub applied_ms: f64,
    /// Whether the node installed a snapshot sent by the leader (from its log).
    pub snapshot_installed: bool,
    /// The last log index of the installed snapshot.
    pub snapshot_index: Option<u64>,
    /// Process start until the snapshot was received in full and its install began (from the
    /// node's log timestamp).
    pub snapshot_received_ms: Option<f64>,
    /// Entries after the snapshot (or after its own log, without one) it received as log.
    pub log_entries: u64,
    /// The leader's snapshot file when the node was restarted.
    pub leader_snapshot_bytes: u64,
    /// From the last commit until the leader's log was purged past the node's last entry;
    /// `None` when N is too small for a purge, and the node was restarted at once.
    pub purge_wait_ms: Option<f64>,
}

/// Everything measured at one size.
#[derive(Clone, Debug, Serialize)]
pub struct SizeRun {
    pub commands: u64,
    /// Commands per second committed by the writers (median over the repetitions).
    pub commit_rate: f64,
    /// The leader's state after each repetition.
    pub state: Vec<StateSize>,
    pub restart_serving: Measure,
    pub restart_applied: Measure,
    pub rejoin_serving: Measure,
    pub rejoin_applied: Measure,
    /// "log", "snapshot + log tail", or "mixed" when the repetitions differ.
    pub rejoin_path: String,
    pub restarts: Vec<RestartSample>,
    pub rejoins: Vec<RejoinSample>,
}

impl SizeRun {
    /// The median of a state figure over the repetitions.
    fn state_median(&self, f: impl Fn(&StateSize) -> u64) -> f64 {
        median(&self.state.iter().map(|s| f(s) as f64).collect::<Vec<_>>())
    }
}

/// The largest size's median against the smallest's (`None` where the smallest is 0).
#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    pub from_commands: u64,
    pub to_commands: u64,
    pub restart_serving: Option<f64>,
    pub restart_applied: Option<f64>,
    pub rejoin_serving: Option<f64>,
    pub rejoin_applied: Option<f64>,
    pub duckdb_bytes: Option<f64>,
    pub log_bytes: Option<f64>,
    /// `None` when the smallest size has no snapshot.
    pub snapshot_bytes: Option<f64>,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct CatchupReport {
    pub nodes: u64,
    pub repetitions: usize,
    pub writers: usize,
    pub payload_bytes: usize,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
    /// The coordinator executable the cluster ran.
    pub binary: String,
    pub sizes: Vec<SizeRun>,
    pub ratios: Option<Ratios>,
}

fn unavailable(e: impl std::fmt::Display) -> CliError {
    CliError::Unavailable(e.to_string())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The node's status, if it answers within `wait`.
async fn status(addr: &str, credentials: &Credentials, wait: Duration) -> Option<NodeStatus> {
    let ask = async {
        let mut client = connect(addr, credentials).await.ok()?;
        Some(client.status(StatusRequest {}).await.ok()?.into_inner())
    };
    tokio::time::timeout(wait, ask).await.ok().flatten()
}

/// Commits `count` `Bench` commands through `addr` with `writers` concurrent writers;
/// answers the seconds it took.
async fn commit(
    addr: &str,
    credentials: &Credentials,
    count: u64,
    writers: usize,
    payload_bytes: usize,
) -> Result<f64, CliError> {
    let client = connect(addr, credentials).await?;
    let claimed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for _ in 0..writers.max(1) {
        let mut client = client.clone();
        let claimed = Arc::clone(&claimed);
        let errors = Arc::clone(&errors);
        let payload = vec![0xab_u8; payload_bytes];
        tasks.push(tokio::spawn(async move {
            while claimed.fetch_add(1, Ordering::Relaxed) < count {
                let result = client
                    .propose_bench(BenchRequest {
                        payload: payload.clone(),
                    })
                    .await;
                if let Err(e) = result {
                    // Not committed: hand the slot back and try again.
                    claimed.fetch_sub(1, Ordering::Relaxed);
                    if errors.fetch_add(1, Ordering::Relaxed) > 1000 {
                        return Err(format!("more than 1000 failed writes, the last: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| CliError::Other(format!("a writer failed: {e}")))?
            .map_err(CliError::Unavailable)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Restarts `id` and measures from its process start until it serves and until it has
/// applied `target`: (serving, applied).
async fn restart_and_wait(
    cluster: &mut LocalCluster,
    id: u64,
    target: u64,
    limit: Duration,
) -> Result<(Duration, Duration), CliError> {
    let addr = cluster.addr(id).to_string();
    let credentials = cluster.credentials(Role::Operator);
    let started = Instant::now();
    cluster.restart(id).map_err(unavailable)?;
    let deadline = started + limit;
    let mut serving = None;
    loop {
        // A node binds its port before it opens its files: a connection may be accepted long
        // before it is answered, so one ask may wait up to the whole limit.
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = status(&addr, &credentials, left.min(Duration::from_secs(5))).await;
        let now = Instant::now();
        if let Some(s) = answer {
            let serving = *serving.get_or_insert(now - started);
            if s.last_applied.unwrap_or(0) >= target {
                return Ok((serving, now - started));
            }
        }
        if now > deadline {
            let why = cluster.exited().into_iter().find(|(n, _, _)| *n == id);
            return Err(unavailable(format!(
                "node {id} did not apply index {target} within {limit:?} of its restart{}",
                why.map_or(String::new(), |(_, code, why)| format!(
                    " (it exited, code {code:?}: {why})"
                ))
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `leader` has purged its log past `index`: answers how long that took.
async fn purged_past(
    addr: &str,
    credentials: &Credentials,
    index: u64,
    limit: Duration,
) -> Result<Duration, CliError> {
    let started = Instant::now();
    loop {
        let purged = status(addr, credentials, Duration::from_secs(5))
            .await
            .and_then(|s| s.purged_index);
        if purged.is_some_and(|p| p > index) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(unavailable(format!(
                "the leader at {addr} had not purged its log past index {index} within                  {limit:?} of the last commit (purged to {}): the absent node would rejoin                  without a snapshot; check the leader's log for failed snapshots",
                purged.map_or("nothing".to_string(), |p| p.to_string())
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The Raft log's bytes on disk: its directory of segments, or the redb file a build before
/// the segments kept (`--binary` runs an older build).
fn log_len(dir: &Path) -> u64 {
    let segments = std::fs::read_dir(dir.join(LOG_FILE_NAME))
        .into_iter()
        .flatten();
    let in_dir: u64 = segments.flatten().map(|e| file_len(&e.path())).sum();
    in_dir + file_len(&dir.join(OLD_LOG_FILE_NAME))
}

/// The Raft log file of builds before the segment log.
const OLD_LOG_FILE_NAME: &str = "raft-log.redb";

/// Copies the file or the directory of files (one level) `from` to `to`.
fn copy_path(from: &Path, to: &Path) -> std::io::Result<()> {
    if !from.is_dir() {
        return std::fs::copy(from, to).map(drop);
    }
    std::fs::create_dir_all(to)?;
    for item in std::fs::read_dir(from)? {
        let item = item?;
        std::fs::copy(item.path(), to.join(item.file_name()))?;
    }
    Ok(())
}

fn node_dir(root: &Path, id: u64) -> PathBuf {
    root.join(format!("node-{id}"))
}

/// The DuckDB file with its WAL.
fn duckdb_bytes(dir: &Path) -> u64 {
    file_len(&dir.join("state.duckdb")) + file_len(&dir.join("state.duckdb.wal"))
}

fn state_size(dir: &Path, applied_index: u64) -> StateSize {
    let snapshots = dir.join(crate::config::SNAPSHOT_DIR_NAME);
    StateSize {
        applied_index,
        duckdb_bytes: duckdb_bytes(dir),
        log_bytes: log_len(dir),
        snapshot_bytes: file_len(&snapshots.join("current.snapshot")),
        snapshot_index: saved_snapshot_index(&snapshots).ok().flatten(),
    }
}

/// What opening a stopped node's files costs: copies of them are opened here, as the node
/// opens them when it starts (`coordinator::Coordinator::start`, without the heal checks).
struct OpenCost {
    log_ms: f64,
    state_ms: f64,
    last_log_index: Option<u64>,
    duckdb_applied: Option<u64>,
}

async fn open_cost(dir: &Path, scratch: &Path) -> Result<OpenCost, CliError> {
    let copy_err =
        |e: std::io::Error| CliError::Other(format!("cannot copy the node's files: {e}"));
    let _ = std::fs::remove_dir_all(scratch);
    let snapshots = scratch.join(crate::config::SNAPSHOT_DIR_NAME);
    std::fs::create_dir_all(&snapshots).map_err(copy_err)?;
    for name in [
        LOG_FILE_NAME,
        OLD_LOG_FILE_NAME,
        "state.duckdb",
        "state.duckdb.wal",
    ] {
        let from = dir.join(name);
        if from.exists() {
            copy_path(&from, &scratch.join(name)).map_err(copy_err)?;
        }
    }
    let current = dir
        .join(crate::config::SNAPSHOT_DIR_NAME)
        .join("current.snapshot");
    if current.exists() {
        std::fs::copy(&current, snapshots.join("current.snapshot")).map_err(copy_err)?;
    }
    let scratch = scratch.to_path_buf();
    let cost = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let log = LogStore::<TypeConfig>::open(&scratch.join(LOG_FILE_NAME))
            .map_err(|e| format!("cannot open the copied log: {e}"))?;
        let log_ms = ms(started.elapsed());
        let started = Instant::now();
        let settings = DbSettings {
            threads: 1,
            memory_limit: "256MB".to_string(),
        };
        let sm = StateMachine::open(&scratch.join("state.duckdb"), &snapshots, &settings)
            .map_err(|e| format!("cannot open the copied state: {e}"))?;
        let state_ms = ms(started.elapsed());
        let duckdb_applied = sm.durable_index();
        Ok::<_, String>((log, log_ms, sm, state_ms, duckdb_applied))
    })
    .await
    .map_err(|e| CliError::Other(e.to_string()))?
    .map_err(CliError::Other)?;
    let (mut log, log_ms, mut sm, state_ms, duckdb_applied) = cost;
    let last_log_index = log
        .get_log_state()
        .await
        .map_err(|e| CliError::Other(format!("cannot read the copied log: {e}")))?
        .last_log_id
        .map(|l| l.index);
    // The state machine's view of itself, as openraft asks for it when the node starts.
    let _ = sm.applied_state().await;
    drop(log);
    tokio::task::spawn_blocking(move || drop(sm))
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    Ok(OpenCost {
        log_ms,
        state_ms,
        last_log_index,
        duckdb_applied,
    })
}

/// The snapshot install a restarted node logged after `offset` in its log, if any: (the
/// snapshot's last log index, when its install began).
fn installed_snapshot(log: &str, offset: usize) -> Option<(Option<u64>, Option<SystemTime>)> {
    let tail = log.get(offset..).unwrap_or("");
    let line = tail.lines().find(|l| l.contains(INSTALL_LINE))?;
    let index = line
        .find("last_log_id")
        .and_then(|at| line[at..].find("index: ").map(|i| at + i + "index: ".len()))
        .and_then(|at| {
            let digits: String = line[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        });
    let at = line.split_whitespace().next().and_then(|stamp| {
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()
    });
    Some((index, at.map(SystemTime::from)))
}

/// One repetition at one size on a fresh cluster: (rejoin, restart, the leader's state, the
/// commit rate).
async fn repetition(
    args: &CatchupArgs,
    binary: &Path,
    dir: &Path,
    commands: u64,
) -> Result<(RejoinSample, RestartSample, StateSize, f64), CliError> {
    let limit = Duration::from_secs(args.timeout);
    let extra = vec![
        "--snapshot-logs-since-last".to_string(),
        args.snapshot_logs_since_last.to_string(),
        "--max-in-snapshot-log-to-keep".to_string(),
        args.max_in_snapshot_log_to_keep.to_string(),
    ];
    let mut cluster = LocalCluster::start(binary, 3, dir, &extra).map_err(unavailable)?;
    cluster.set_env("RUST_LOG", RESTART_LOG_FILTER);
    let operator = cluster.credentials(Role::Operator);
    let leader = cluster
        .settled(Duration::from_secs(60), 0)
        .await
        .map_err(unavailable)?;
    let leader_addr = cluster.addr(leader).to_string();
    let followers: Vec<u64> = cluster
        .addresses()
        .into_keys()
        .filter(|id| *id != leader)
        .collect();
    let (absent, restarted) = (followers[0], followers[1]);

    // (b) Rejoin after absence.
    let before = status(cluster.addr(absent), &operator, Duration::from_secs(5))
        .await
        .ok_or_else(|| unavailable(format!("node {absent} does not answer")))?;
    cluster.kill(absent);
    let seconds = commit(
        &leader_addr,
        &operator,
        commands,
        args.writers,
        args.payload_bytes,
    )
    .await?;
    let commit_rate = commands as f64 / seconds;
    let head = status(&leader_addr, &operator, Duration::from_secs(5))
        .await
        .ok_or_else(|| unavailable("the leader does not answer"))?;
    let target = head.committed.unwrap_or(0);
    let last_before = before.last_log_index.unwrap_or(0);
    let purge_due = commands > args.snapshot_logs_since_last + args.max_in_snapshot_log_to_keep;
    let purge_wait = if purge_due {
        Some(purged_past(&leader_addr, &operator, last_before, limit).await?)
    } else {
        None
    };
    let leader_snapshot_bytes = state_size(&node_dir(dir, leader), 0).snapshot_bytes;
    let log_offset = cluster.log(absent).len();
    let wall = SystemTime::now();
    let (serving, applied) = restart_and_wait(&mut cluster, absent, target, limit).await?;
    let install = installed_snapshot(&cluster.log(absent), log_offset);
    let snapshot_index = install.as_ref().and_then(|(index, _)| *index);
    let from = snapshot_index.unwrap_or(last_before);
    let rejoin = RejoinSample {
        node: absent,
        target_index: target,
        last_log_index_before: last_before,
        serving_ms: ms(serving),
        applied_ms: ms(applied),
        snapshot_installed: install.is_some(),
        snapshot_index,
        snapshot_received_ms: install
            .and_then(|(_, at)| at)
            .and_then(|at| at.duration_since(wall).ok())
            .map(ms),
        log_entries: target.saturating_sub(from),
        leader_snapshot_bytes,
        purge_wait_ms: purge_wait.map(ms),
    };

    // (a) Restart of a caught-up follower.
    cluster
        .settled(Duration::from_secs(60), 0)
        .await
        .map_err(unavailable)?;
    // Caught up as a running node is: DuckDB lags apply by at most one flush (250 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(restarted);
    let cost = open_cost(&node_dir(dir, restarted), &dir.join("open-copy")).await?;
    let _ = std::fs::remove_dir_all(dir.join("open-copy"));
    let head = status(&leader_addr, &operator, Duration::from_secs(5))
        .await
        .ok_or_else(|| unavailable("the leader does not answer"))?;
    let target = head.committed.unwrap_or(0);
    let (serving, applied) = restart_and_wait(&mut cluster, restarted, target, limit).await?;
    let restart = RestartSample {
        node: restarted,
        target_index: target,
        serving_ms: ms(serving),
        applied_ms: ms(applied),
        duckdb_applied: cost.duckdb_applied,
        last_log_index: cost.last_log_index,
        replayed_entries: target.saturating_sub(cost.duckdb_applied.unwrap_or(0)),
        open_log_ms: cost.log_ms,
        open_state_ms: cost.state_ms,
    };

    let head = status(&leader_addr, &operator, Duration::from_secs(5))
        .await
        .ok_or_else(|| unavailable("the leader does not answer"))?;
    let state = state_size(&node_dir(dir, leader), head.last_applied.unwrap_or(0));
    tracing::info!(
        commands,
        rejoin_ms = rejoin.applied_ms as u64,
        snapshot = rejoin.snapshot_installed,
        restart_ms = restart.applied_ms as u64,
        "catch-up measured"
    );
    drop(cluster);
    Ok((rejoin, restart, state, commit_rate))
}

/// Runs the benchmark.
pub async fn run(args: &CatchupArgs) -> Result<CatchupReport, CliError> {
    if args.commands.is_empty() || args.commands.contains(&0) {
        return Err(CliError::Usage(
            "--commands needs one or more positive sizes, e.g. --commands 10000,100000".into(),
        ));
    }
    if args.repetitions == 0 {
        return Err(CliError::Usage("--repetitions must be at least 1".into()));
    }
    if args.snapshot_logs_since_last == 0 {
        return Err(CliError::Usage(
            "--snapshot-logs-since-last must be at least 1".into(),
        ));
    }
    let mut sizes = args.commands.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let binary = crate::demo::this_binary()?;
    let (_temp, root) = crate::demo::work_dir("testfleet-catchup-", args.data_dir.as_deref())?;
    let mut runs = Vec::new();
    for &commands in &sizes {
        let mut rejoins = Vec::new();
        let mut restarts = Vec::new();
        let mut state = Vec::new();
        let mut rates = Vec::new();
        for rep in 1..=args.repetitions {
            let dir = root.join(format!("n{commands}-r{rep}"));
            let (rejoin, restart, size, rate) = repetition(args, &binary, &dir, commands).await?;
            rejoins.push(rejoin);
            restarts.push(restart);
            state.push(size);
            rates.push(rate);
            if args.data_dir.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        let installs = rejoins.iter().filter(|r| r.snapshot_installed).count();
        let rejoin_path = match installs {
            0 => "log",
            n if n == rejoins.len() => "snapshot + log tail",
            _ => "mixed",
        };
        runs.push(SizeRun {
            commands,
            commit_rate: median(&rates),
            state,
            restart_serving: Measure::of(restarts.iter().map(|r| r.serving_ms).collect()),
            restart_applied: Measure::of(restarts.iter().map(|r| r.applied_ms).collect()),
            rejoin_serving: Measure::of(rejoins.iter().map(|r| r.serving_ms).collect()),
            rejoin_applied: Measure::of(rejoins.iter().map(|r| r.applied_ms).collect()),
            rejoin_path: rejoin_path.to_string(),
            restarts,
            rejoins,
        });
    }
    let ratios = match (runs.first(), runs.last()) {
        (Some(a), Some(b)) if runs.len() > 1 => {
            let r = |x: f64, y: f64| (x > 0.0).then(|| y / x);
            Some(Ratios {
                from_commands: a.commands,
                to_commands: b.commands,
                restart_serving: r(a.restart_serving.median_ms, b.restart_serving.median_ms),
                restart_applied: r(a.restart_applied.median_ms, b.restart_applied.median_ms),
                rejoin_serving: r(a.rejoin_serving.median_ms, b.rejoin_serving.median_ms),
                rejoin_applied: r(a.rejoin_applied.median_ms, b.rejoin_applied.median_ms),
                duckdb_bytes: r(
                    a.state_median(|s| s.duckdb_bytes),
                    b.state_median(|s| s.duckdb_bytes),
                ),
                log_bytes: r(
                    a.state_median(|s| s.log_bytes),
                    b.state_median(|s| s.log_bytes),
                ),
                snapshot_bytes: r(
                    a.state_median(|s| s.snapshot_bytes),
                    b.state_median(|s| s.snapshot_bytes),
                ),
            })
        }
        _ => None,
    };
    Ok(CatchupReport {
        nodes: 3,
        repetitions: args.repetitions,
        writers: args.writers,
        payload_bytes: args.payload_bytes,
        snapshot_logs_since_last: args.snapshot_logs_since_last,
        max_in_snapshot_log_to_keep: args.max_in_snapshot_log_to_keep,
        binary: binary.display().to_string(),
        sizes: runs,
        ratios,
    })
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / (1024.0 * 1024.0))
}

fn samples(m: &Measure) -> String {
    let all: Vec<String> = m.samples_ms.iter().map(|s| format!("{s:.0}")).collect();
    format!("{:.0} ({})", m.median_ms, all.join(", "))
}

/// Renders the report.
pub fn render(report: &CatchupReport, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Output::Table => {
            let mut out = format!(
                "Catch-up of a coordinator on a local {}-node cluster, {} repetitions per size \
                 (a fresh cluster each); snapshot every {} entries, {} kept behind it; {}\n\
                 Medians in ms, every sample in brackets; times from the process start.\n\n",
                report.nodes,
                report.repetitions,
                report.snapshot_logs_since_last,
                report.max_in_snapshot_log_to_keep,
                report.binary,
            );
            let rows: Vec<Vec<String>> = report
                .sizes
                .iter()
                .map(|s| {
                    vec![
                        s.commands.to_string(),
                        samples(&s.restart_serving),
                        samples(&s.restart_applied),
                        samples(&s.rejoin_serving),
                        samples(&s.rejoin_applied),
                        s.rejoin_path.clone(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "COMMANDS",
                    "RESTART: SERVING",
                    "RESTART: APPLIED",
                    "REJOIN: SERVING",
                    "REJOIN: APPLIED",
                    "REJOIN PATH",
                ],
                &rows,
            ));
            out.push('\n');
            let rows: Vec<Vec<String>> = report
                .sizes
                .iter()
                .map(|s| {
                    let replayed: Vec<f64> = s
                        .restarts
                        .iter()
                        .map(|r| r.replayed_entries as f64)
                        .collect();
                    let open_state: Vec<f64> = s.restarts.iter().map(|r| r.open_state_ms).collect();
                    let open_log: Vec<f64> = s.restarts.iter().map(|r| r.open_log_ms).collect();
                    let received: Vec<f64> = s
                        .rejoins
                        .iter()
                        .filter_map(|r| r.snapshot_received_ms)
                        .collect();
                    let tail: Vec<f64> = s.rejoins.iter().map(|r| r.log_entries as f64).collect();
                    vec![
                        s.commands.to_string(),
                        format!("{:.0}", median(&open_log)),
                        format!("{:.0}", median(&open_state)),
                        format!("{:.0}", median(&replayed)),
                        if received.is_empty() {
                            "-".to_string()
                        } else {
                            format!("{:.0}", median(&received))
                        },
                        format!("{:.0}", median(&tail)),
                        format!("{:.0}", s.commit_rate),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "COMMANDS",
                    "RESTART: OPEN LOG MS",
                    "OPEN DUCKDB MS",
                    "REPLAYED",
                    "REJOIN: SNAPSHOT RECEIVED MS",
                    "LOG ENTRIES SENT",
                    "COMMITS/S",
                ],
                &rows,
            ));
            out.push('\n');
            let rows: Vec<Vec<String>> = report
                .sizes
                .iter()
                .map(|s| {
                    vec![
                        s.commands.to_string(),
                        format!("{:.0}", s.state_median(|x| x.applied_index)),
                        mib(s.state_median(|x| x.duckdb_bytes)),
                        mib(s.state_median(|x| x.log_bytes)),
                        mib(s.state_median(|x| x.snapshot_bytes)),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "COMMANDS",
                    "LEADER APPLIED",
                    "DUCKDB MIB",
                    "LOG MIB",
                    "SNAPSHOT MIB",
                ],
                &rows,
            ));
            if let Some(r) = &report.ratios {
                let f = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
                out.push_str(&format!(
                    "\nRatios {} / {} commands: restart serving {}, restart applied {}, \
                     rejoin serving {}, rejoin applied {}; DuckDB {}, log {}, snapshot {}\n",
                    r.to_commands,
                    r.from_commands,
                    f(r.restart_serving),
                    f(r.restart_applied),
                    f(r.rejoin_serving),
                    f(r.rejoin_applied),
                    f(r.duckdb_bytes),
                    f(r.log_bytes),
                    f(r.snapshot_bytes)
                ));
            }
            out
        }
    }
}
