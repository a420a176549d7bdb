//! `testfleet bench reconnect`: how long until every worker holds a session with the new
//! leader after the leader is SIGKILLed, with many workers.
//!
//! The coordinators are real processes; the workers are the real worker session code
//! ([`crate::worker::agent`]) with a no-op executor, many in this one process (each with its
//! own gRPC connection). A worker counts as reconnected when a leader other than the killed
//! one welcomes it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{CliError, Output, table};
use crate::demo::Latency;
use crate::demo::launch::LocalCluster;
use crate::worker::agent::{self, WorkerConfig};

/// Settings of the benchmark.
#[derive(Clone, Debug)]
pub struct ReconnectSettings {
    pub nodes: u64,
    pub fleets: Vec<usize>,
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `testfleet bench reconnect`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReconnectArgs {
    /// Coordinator processes to start
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Fleet sizes to measure (workers run in this process, no-op executor)
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub workers: Vec<usize>,
    /// Directory for the processes' files (default: a temporary directory)
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl ReconnectArgs {
    pub fn settings(&self) -> ReconnectSettings {
        ReconnectSettings {
            nodes: self.nodes,
            fleets: self.workers.clone(),
            data_dir: self.data_dir.clone(),
        }
    }
}

/// One fleet size.
#[derive(Clone, Debug, Serialize)]
pub struct ReconnectRun {
    pub workers: usize,
    /// Kill → the last worker welcomed by the new leader.
    pub all_reconnected_ms: f64,
    /// Kill → each worker welcomed by the new leader.
    pub per_worker: Latency,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReconnectReport {
    pub nodes: u64,
    pub runs: Vec<ReconnectRun>,
}

fn unavailable(e: impl std::fmt::Display) -> CliError {
    CliError::Unavailable(e.to_string())
}

/// Raises the open-file limit to its hard maximum (each worker holds a connection).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

async fn one_fleet(
    cluster: &mut LocalCluster,
    addrs: &[String],
    n: usize,
) -> Result<ReconnectRun, CliError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let mut handles = Vec::with_capacity(n);
    let credentials = cluster.credentials(crate::auth::Role::Worker);
    for i in 0..n {
        let mut config = WorkerConfig::new(addrs.to_vec(), format!("rc{n}-{i:04}"));
        config.noop_executor = true;
        config.credentials = credentials.clone();
        config.on_welcome = Some(tx.clone());
        config.capabilities_json = "{}".to_string();
        handles.push(tokio::spawn(agent::run(config, stop.clone())));
    }
    // Everyone with the current leader first.
    let leader = cluster
        .leader(Duration::from_secs(30), None)
        .await
        .map_err(unavailable)?;
    let mut with: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while with.values().filter(|l| **l == leader).count() < n {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some((worker, l, _))) => {
                with.insert(worker, l);
            }
            _ => {
                return Err(unavailable(format!(
                    "only {} of {n} workers joined",
                    with.len()
                )));
            }
        }
    }
    let killed_at = Instant::now();
    cluster.kill(leader);
    let mut reconnected: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while reconnected.len() < n {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some((worker, l, _))) if l != leader => {
                reconnected
                    .entry(worker)
                    .or_insert_with(|| killed_at.elapsed());
            }
            Ok(Some(_)) => {}
            _ => {
                return Err(unavailable(format!(
                    "only {} of {n} workers reconnected within 120 s",
                    reconnected.len()
                )));
            }
        }
    }
    let all = reconnected.values().max().copied().unwrap_or_default();
    stop.cancel();
    for h in handles {
        let _ = h.await;
    }
    cluster.restart(leader).map_err(unavailable)?;
    Ok(ReconnectRun {
        workers: n,
        all_reconnected_ms: all.as_secs_f64() * 1000.0,
        per_worker: Latency::of(reconnected.into_values().collect()),
    })
}

/// Runs the benchmark.
pub async fn run(s: &ReconnectSettings) -> Result<ReconnectReport, CliError> {
    raise_fd_limit();
    let binary = crate::demo::this_binary()?;
    let (_temp, dir) = crate::demo::work_dir("testfleet-bench-reconnect-", s.data_dir.as_deref())?;
    let mut cluster = LocalCluster::start(&binary, s.nodes, &dir, &[]).map_err(unavailable)?;
    let addrs: Vec<String> = cluster.addresses().into_values().collect();
    let mut runs = Vec::new();
    for &n in &s.fleets {
        runs.push(one_fleet(&mut cluster, &addrs, n).await?);
    }
    Ok(ReconnectReport {
        nodes: s.nodes,
        runs,
    })
}

/// Renders the report.
pub fn render(r: &ReconnectReport, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(r).unwrap_or_default() + "\n";
    }
    let mut out = format!(
        "leader SIGKILL → every worker's session with the new leader ({} coordinators)\n\n",
        r.nodes
    );
    let rows: Vec<Vec<String>> = r
        .runs
        .iter()
        .map(|run| {
            vec![
                run.workers.to_string(),
                format!("{:.0}", run.all_reconnected_ms),
                format!("{:.0}", run.per_worker.p50_ms),
                format!("{:.0}", run.per_worker.p99_ms),
            ]
        })
        .collect();
    out.push_str(&table(&["WORKERS", "ALL MS", "P50 MS", "P99 MS"], &rows));
    out
}
