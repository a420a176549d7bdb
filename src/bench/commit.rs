//! `testfleet bench commit`: commit throughput and latency, measured end to end.
//!
//! Each writer is a loop of `ProposeBench` calls over gRPC: a command is counted when its
//! proposer got the answer, i.e. after it was committed (durable on a majority) and applied.
//! Runs for each writer count are made one after the other in the same process, so their
//! ratios are comparable on a noisy machine. Without `--coordinator` the benchmark starts its
//! own single-node coordinator in a temporary directory (or `--data-dir`), and samples the
//! latency of a 4 KiB append + fsync in the same directory, because the disk sets the
//! ceiling of every durable commit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::auth::{Credentials, Role};
use crate::cli::{CliError, Output, Remote, connect_any, table};
use crate::config::CoordinatorConfig;
use crate::coordinator::Coordinator;
use crate::demo::Latency;
use crate::demo::launch::{LocalCluster, Security};
use crate::proto::BenchRequest;

/// Settings of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchSettings {
    /// Coordinators to load, and what to present to them; `None` starts an in-process
    /// single node.
    pub coordinators: Option<Remote>,
    /// Writer counts to measure, in order.
    pub writers: Vec<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    pub payload_bytes: usize,
    /// Where the started node(s) keep their files and where fsync is sampled.
    pub data_dir: Option<PathBuf>,
    /// Start a local cluster of this many coordinator processes instead of an in-process
    /// node (ignored with `coordinators`).
    pub nodes: Option<u64>,
    /// How the started local cluster is protected (tokens, tokens and TLS, or open).
    pub security: Security,
}

/// The result for one writer count.
#[derive(Clone, Debug, Serialize)]
pub struct WriterRun {
    pub writers: usize,
    pub commands: usize,
    pub errors: usize,
    pub seconds: f64,
    pub commands_per_sec: f64,
    pub latency: Latency,
}

/// The whole benchmark report.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub target: String,
    pub payload_bytes: usize,
    pub fsync_4k: Option<Latency>,
    pub runs: Vec<WriterRun>,
}

/// Appends 4 KiB and fsyncs it, `count` times, in `dir`.
pub fn sample_fsync(dir: &Path, count: usize) -> std::io::Result<Latency> {
    let path = dir.join(format!(".fsync-probe-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let block = vec![0x5a_u8; 4096];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(start.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Latency::of(samples))
}

async fn run_writers(
    remote: &Remote,
    writers: usize,
    duration: Duration,
    warmup: Duration,
    payload: Vec<u8>,
) -> Result<WriterRun, CliError> {
    let client = connect_any(remote).await?;
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(writers);
    for _ in 0..writers {
        let mut client = client.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut last_error = None;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = client
                    .propose_bench(BenchRequest {
                        payload: payload.clone(),
                    })
                    .await;
                let done = Instant::now();
                match result {
                    Ok(_) if sent >= measure_from && done <= end => latencies.push(done - sent),
                    Ok(_) => {}
                    Err(e) => {
                        errors += 1;
                        last_error = Some(e.message().to_string());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (latencies, errors, last_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut last_error = None;
    for task in tasks {
        let (latencies, e, last) = task
            .await
            .map_err(|e| CliError::Other(format!("a benchmark writer failed: {e}")))?;
        all.extend(latencies);
        errors += e;
        if last.is_some() {
            last_error = last;
        }
    }
    if all.is_empty() {
        return Err(CliError::Unavailable(format!(
            "no command was committed with {writers} writers{}",
            last_error.map_or(String::new(), |e| format!(": {e}"))
        )));
    }
    let seconds = duration.as_secs_f64();
    Ok(WriterRun {
        writers,
        commands: all.len(),
        errors,
        seconds,
        commands_per_sec: all.len() as f64 / seconds,
        latency: Latency::of(all),
    })
}

/// A coordinator started inside this process for the benchmark.
struct LocalNode {
    addr: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _temp: Option<tempfile::TempDir>,
}

async fn start_local(data_dir: Option<&Path>) -> Result<(LocalNode, PathBuf), CliError> {
    let (temp, dir) = crate::demo::work_dir("testfleet-bench-", data_dir)?;
    let listener = crate::coordinator::bind("127.0.0.1:0".parse().expect("literal address"))
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Other(e.to_string()))?;
    let config = CoordinatorConfig {
        listen: addr,
        db_path: dir.join("bench.duckdb"),
        ..CoordinatorConfig::default()
    };
    let node = Coordinator::start(config, addr.to_string())
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    wait_for_leader(&node).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        if let Err(e) = Arc::clone(&node)
            .serve(listener, async {
                let _ = rx.await;
            })
            .await
        {
            tracing::error!("benchmark coordinator failed: {e}");
        }
    });
    Ok((
        LocalNode {
            addr: addr.to_string(),
            shutdown: Some(tx),
            server,
            _temp: temp,
        },
        dir,
    ))
}

async fn wait_for_leader(node: &Coordinator) -> Result<(), CliError> {
    node.raft()
        .wait(Some(Duration::from_secs(15)))
        .current_leader(node.node_id(), "the benchmark node to become leader")
        .await
        .map(|_| ())
        .map_err(|e| {
            CliError::Unavailable(format!("the benchmark node did not become leader: {e}"))
        })
}

/// Starts `n` coordinator processes of this executable.
async fn start_processes(
    n: u64,
    data_dir: Option<&Path>,
    security: Security,
) -> Result<(LocalCluster, PathBuf, Option<tempfile::TempDir>), CliError> {
    let binary = crate::demo::this_binary()?;
    let (temp, dir) = crate::demo::work_dir("testfleet-bench-", data_dir)?;
    let cluster = LocalCluster::start_secured(&binary, n, None, &dir, &[], security)
        .map_err(|e| CliError::Other(e.to_string()))?;
    Ok((cluster, dir, temp))
}

/// `remote` with the leader's address first, when a node names it.
async fn leader_first(remote: &Remote) -> Remote {
    let addrs = &remote.addrs;
    for addr in addrs {
        if let Ok(mut client) = crate::cli::connect(addr, &remote.credentials).await
            && let Ok(status) = client.status(crate::proto::StatusRequest {}).await
        {
            let leader = status.into_inner().leader_addr;
            if !leader.is_empty() {
                let mut ordered = vec![leader.clone()];
                ordered.extend(addrs.iter().filter(|a| **a != leader).cloned());
                return Remote::new(ordered, remote.credentials.clone());
            }
        }
    }
    remote.clone()
}

/// How a security mode is named in reports.
pub fn security_name(security: Security) -> &'static str {
    match security {
        Security::Open => "open",
        Security::Tokens => "tokens",
        Security::TokensAndTls => "tokens + mutual TLS",
    }
}

/// Runs the benchmark.
pub async fn run(settings: &BenchSettings) -> Result<BenchReport, CliError> {
    if settings.writers.is_empty() || settings.writers.contains(&0) {
        return Err(CliError::Usage(
            "--writers needs one or more positive counts, e.g. --writers 1,64".into(),
        ));
    }
    let payload = vec![0xab_u8; settings.payload_bytes];
    let mut _cluster = None;
    let mut _cluster_dir = None;
    let (local, remote, target, fsync_dir) = match (&settings.coordinators, settings.nodes) {
        (Some(remote), _) => (
            None,
            leader_first(remote).await,
            remote.addrs.join(","),
            settings.data_dir.clone(),
        ),
        (None, Some(n)) => {
            let (cluster, dir, temp) =
                start_processes(n, settings.data_dir.as_deref(), settings.security).await?;
            let leader = cluster
                .leader(Duration::from_secs(30), None)
                .await
                .map_err(|e| CliError::Unavailable(e.to_string()))?;
            let leader_addr = cluster.addr(leader).to_string();
            let mut addrs = vec![leader_addr.clone()];
            addrs.extend(
                cluster
                    .addresses()
                    .into_values()
                    .filter(|a| *a != leader_addr),
            );
            let target = format!(
                "local {n}-node cluster (processes, security: {}), data in {}",
                security_name(settings.security),
                dir.display()
            );
            let remote = Remote::new(addrs, cluster.credentials(Role::Operator));
            _cluster = Some(cluster);
            _cluster_dir = temp;
            (None, remote, target, Some(dir))
        }
        (None, None) => {
            let (node, dir) = start_local(settings.data_dir.as_deref()).await?;
            // Loopback only and without tokens, as a laptop runs it.
            let remote = Remote::new(vec![node.addr.clone()], Credentials::none());
            let target = format!(
                "in-process single-node coordinator, data in {}",
                dir.display()
            );
            (Some(node), remote, target, Some(dir))
        }
    };
    let mut runs = Vec::new();
    let mut failure = None;
    for &writers in &settings.writers {
        match run_writers(
            &remote,
            writers,
            settings.duration,
            settings.warmup,
            payload.clone(),
        )
        .await
        {
            Ok(run) => runs.push(run),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let fsync_4k = match &fsync_dir {
        Some(dir) => Some(sample_fsync(dir, 200).map_err(|e| {
            CliError::Other(format!("fsync sample in {} failed: {e}", dir.display()))
        })?),
        None => None,
    };
    if let Some(mut node) = local {
        if let Some(tx) = node.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut node.server).await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(BenchReport {
        target,
        payload_bytes: settings.payload_bytes,
        fsync_4k,
        runs,
    })
}

/// Renders the report.
pub fn render(report: &BenchReport, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Output::Table => {
            let mut out = format!(
                "Target: {}\nPayload: {} bytes per command\n",
                report.target, report.payload_bytes
            );
            if let Some(f) = &report.fsync_4k {
                out.push_str(&format!(
                    "fsync of a 4 KiB append: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)\n",
                    f.p50_ms, f.p99_ms, f.max_ms, f.samples
                ));
            }
            out.push('\n');
            let rows: Vec<Vec<String>> = report
                .runs
                .iter()
                .map(|r| {
                    vec![
                        r.writers.to_string(),
                        r.commands.to_string(),
                        format!("{:.0}", r.commands_per_sec),
                        format!("{:.2}", r.latency.p50_ms),
                        format!("{:.2}", r.latency.p99_ms),
                        format!("{:.2}", r.latency.max_ms),
                        r.errors.to_string(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "WRITERS", "COMMANDS", "CMDS/S", "P50 MS", "P99 MS", "MAX MS", "ERRORS",
                ],
                &rows,
            ));
            out
        }
    }
}
