//! `testfleet bench failover`: how long a cluster is without a leader after the leader is
//! SIGKILLed (or paused), measured on real processes.
//!
//! A local cluster of `--nodes` coordinator processes is started (see [`crate::demo::launch`]).
//! Each round finds the leader, takes it out and measures, from that moment:
//! * `elected`: until a majority of the survivors name a new leader;
//! * `committed`: until a write proposed to the new leader is committed and acknowledged —
//!   the client-visible write outage.
//!
//! [`Fault::Kill`] (SIGKILL) is a crash: the followers see the leader's connections close and
//! its port refuse connections, and replace it at once ([`crate::raft::leader_watch`]).
//! [`Fault::Pause`] (SIGSTOP) is a leader that hangs, or a machine that vanished from the
//! network: nothing tells the followers, so they wait out the leader's lease and an election
//! timeout. Both are measured so that each path has its own figure.
//!
//! A killed node is restarted, a paused one resumed, and allowed to rejoin before the next
//! round, so every round starts from a full cluster. Times are found by polling every 20 ms,
//! so each includes up to that much of polling delay.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::auth::{Credentials, Role};
use crate::cli::{CliError, Output, connect, table};
use crate::demo::Latency;
use crate::demo::launch::LocalCluster;
use crate::proto::{BenchRequest, StatusRequest};

/// How the leader is taken out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL: the process dies and the operating system closes its sockets.
    Kill,
    /// SIGSTOP: the process hangs with its sockets open (resumed with SIGCONT afterwards).
    Pause,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::Kill => "leader SIGKILLs",
            Fault::Pause => "leader SIGSTOPs",
        }
    }
}

/// Settings of a failover benchmark.
#[derive(Clone, Debug)]
pub struct FailoverSettings {
    pub nodes: u64,
    pub fault: Fault,
    pub kills: usize,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `testfleet bench failover`.
#[derive(Clone, Debug, clap::Args)]
pub struct FailoverArgs {
    /// Coordinator processes to start
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// How the leader is taken out: `kill` (SIGKILL, a crash) or `pause` (SIGSTOP, a hang)
    #[arg(long, value_enum, default_value_t = Fault::Kill)]
    pub fault: Fault,
    /// Leader kills to measure
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Raft heartbeat interval of the started nodes
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval_ms: u64,
    /// Minimum election timeout of the started nodes
    #[arg(long, default_value_t = 250)]
    pub election_timeout_min_ms: u64,
    /// Maximum election timeout of the started nodes
    #[arg(long, default_value_t = 500)]
    pub election_timeout_max_ms: u64,
    /// Directory for the nodes' files (default: a temporary directory)
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl FailoverArgs {
    pub fn settings(&self) -> FailoverSettings {
        FailoverSettings {
            nodes: self.nodes,
            fault: self.fault,
            kills: self.kills,
            heartbeat_ms: self.heartbeat_interval_ms,
            election_min_ms: self.election_timeout_min_ms,
            election_max_ms: self.election_timeout_max_ms,
            data_dir: self.data_dir.clone(),
        }
    }
}

/// One kill.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverSample {
    pub killed: u64,
    pub new_leader: u64,
    pub elected_ms: f64,
    pub committed_ms: f64,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverReport {
    pub nodes: u64,
    pub fault: Fault,
    pub kills: usize,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub elected: Latency,
    pub committed: Latency,
    pub samples: Vec<FailoverSample>,
}

fn unavailable(e: impl std::fmt::Display) -> CliError {
    CliError::Unavailable(e.to_string())
}

/// Proposes one write to `addr`, answering whether it was acknowledged.
async fn write_once(addr: &str, credentials: &Credentials) -> bool {
    let Ok(mut client) = connect(addr, credentials).await else {
        return false;
    };
    let write = client.propose_bench(BenchRequest {
        payload: vec![1; 16],
    });
    matches!(
        tokio::time::timeout(Duration::from_millis(500), write).await,
        Ok(Ok(_))
    )
}

/// Waits until `id` answers and follows `leader` (it rejoined after a restart or a pause).
async fn rejoined(
    cluster: &LocalCluster,
    id: u64,
    leader: u64,
    limit: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut client) =
            connect(cluster.addr(id), &cluster.credentials(Role::Operator)).await
            && let Ok(status) = client.status(StatusRequest {}).await
            && status.into_inner().leader_id == Some(leader)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(unavailable(format!(
                "node {id} did not rejoin within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the benchmark.
pub async fn run(settings: &FailoverSettings) -> Result<FailoverReport, CliError> {
    if settings.nodes < 3 {
        return Err(CliError::Usage(
            "--nodes must be at least 3: a failover needs a majority to survive one loss".into(),
        ));
    }
    let binary = crate::demo::this_binary()?;
    let (_temp, dir) = crate::demo::work_dir("testfleet-failover-", settings.data_dir.as_deref())?;
    let args = vec![
        "--heartbeat-interval-ms".to_string(),
        settings.heartbeat_ms.to_string(),
        "--election-timeout-min-ms".to_string(),
        settings.election_min_ms.to_string(),
        "--election-timeout-max-ms".to_string(),
        settings.election_max_ms.to_string(),
    ];
    let mut cluster =
        LocalCluster::start(&binary, settings.nodes, &dir, &args).map_err(unavailable)?;
    let operator = cluster.credentials(Role::Operator);
    let mut samples = Vec::with_capacity(settings.kills);
    for round in 0..settings.kills {
        let leader = cluster
            .leader(Duration::from_secs(30), None)
            .await
            .map_err(unavailable)?;
        let leader_addr = cluster.addr(leader).to_string();
        // The cluster takes writes before the kill.
        let ready = Instant::now() + Duration::from_secs(10);
        while !write_once(&leader_addr, &operator).await {
            if Instant::now() > ready {
                return Err(unavailable("the cluster does not take writes"));
            }
        }
        let killed_at = Instant::now();
        match settings.fault {
            Fault::Kill => cluster.kill(leader),
            Fault::Pause => cluster.signal(leader, libc::SIGSTOP),
        }
        let new_leader = cluster
            .leader(Duration::from_secs(30), Some(leader))
            .await
            .map_err(unavailable)?;
        let elected = killed_at.elapsed();
        let new_addr = cluster.addr(new_leader).to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !write_once(&new_addr, &operator).await {
            if Instant::now() > deadline {
                return Err(unavailable(format!(
                    "round {round}: the new leader {new_leader} took no write within 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let committed = killed_at.elapsed();
        tracing::info!(
            round,
            killed = leader,
            new_leader,
            elected_ms = elected.as_millis() as u64,
            committed_ms = committed.as_millis() as u64,
            "failover"
        );
        samples.push(FailoverSample {
            killed: leader,
            new_leader,
            elected_ms: elected.as_secs_f64() * 1000.0,
            committed_ms: committed.as_secs_f64() * 1000.0,
        });
        match settings.fault {
            Fault::Kill => cluster.restart(leader).map_err(unavailable)?,
            Fault::Pause => cluster.signal(leader, libc::SIGCONT),
        }
        rejoined(&cluster, leader, new_leader, Duration::from_secs(60)).await?;
    }
    let elected = Latency::of(
        samples
            .iter()
            .map(|s| Duration::from_secs_f64(s.elected_ms / 1000.0))
            .collect(),
    );
    let committed = Latency::of(
        samples
            .iter()
            .map(|s| Duration::from_secs_f64(s.committed_ms / 1000.0))
            .collect(),
    );
    drop(cluster);
    Ok(FailoverReport {
        nodes: settings.nodes,
        fault: settings.fault,
        kills: samples.len(),
        heartbeat_ms: settings.heartbeat_ms,
        election_timeout_min_ms: settings.election_min_ms,
        election_timeout_max_ms: settings.election_max_ms,
        elected,
        committed,
        samples,
    })
}

/// Renders the report.
pub fn render(report: &FailoverReport, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Output::Table => {
            let mut out = format!(
                "{} {} on a {}-node cluster (heartbeat {} ms, election timeout {}-{} ms)\n\n",
                report.kills,
                report.fault.describe(),
                report.nodes,
                report.heartbeat_ms,
                report.election_timeout_min_ms,
                report.election_timeout_max_ms
            );
            let row = |name: &str, l: &Latency| {
                vec![
                    name.to_string(),
                    format!("{:.0}", l.p50_ms),
                    format!("{:.0}", l.p99_ms),
                    format!("{:.0}", l.max_ms),
                ]
            };
            out.push_str(&table(
                &["FROM FAULT TO", "P50 MS", "P99 MS", "MAX MS"],
                &[
                    row("new leader elected", &report.elected),
                    row("new leader commits", &report.committed),
                ],
            ));
            out
        }
    }
}
