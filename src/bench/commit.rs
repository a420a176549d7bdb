//! `testfleet bench commit`: commit throughput and latency, measured end to end.
//!
//! Each writer is a loop of `ProposeBench` calls over gRPC: a command is counted when its
//! proposer got the answer, i.e. after it was committed (durable on a majority) and applied.
//! Runs for each writer count are made one after the other in the same process, so their
//! ratios are comparable on a noisy machine. Without `--coordinator` the benchmark starts its
//! own single-node coordinator in a temporary directory (or `--data-dir`), and samples the
//! latency of a 4 KiB append + fsync in the same directory, because the disk sets the
//! ceiling of every durable commit.
//!
//! With `--nodes N` the benchmark knows its coordinators' pids and also reports what the
//! servers spent ([`crate::bench::cpu`]): their CPU per command over each writer count's
//! measured window, per consensus round with one writer (each command is then a round of its
//! own), and what the cluster spends idle over a short window before the first run. The
//! writers are [`crate::bench::load`]'s closed loop, which `bench peers etcd` also drives
//! etcd with.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cpu::{CpuMeter, CpuSpent};
use super::load::{Operation, Shape, closed_loop};
use crate::auth::{AuthChannel, Credentials, Role};
use crate::cli::{CliError, Output, Remote, connect_any, table};
use crate::config::CoordinatorConfig;
use crate::coordinator::Coordinator;
use crate::demo::Latency;
use crate::demo::launch::{LocalCluster, Security};
use crate::proto::BenchRequest;
use crate::proto::control_client::ControlClient;

/// How long a started cluster is left alone before its idle CPU is read, and over how long.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
const IDLE_WINDOW: Duration = Duration::from_secs(2);

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
    /// The started coordinators' CPU (all of them together) per committed command, in µs;
    /// `None` when the benchmark did not start them (or a process could not be read).
    pub server_cpu_us_per_command: Option<f64>,
    /// The same over the window, as cores kept busy.
    pub server_cpu_cores: Option<f64>,
    pub latency: Latency,
}

/// What a cluster spends when nothing is asked of it.
#[derive(Clone, Debug, Serialize)]
pub struct IdleCpu {
    pub seconds: f64,
    pub processes: usize,
    /// All the processes together, in cores.
    pub cores: f64,
    /// Per process, in percent of one core.
    pub percent_of_a_core_each: f64,
}

impl IdleCpu {
    pub fn of(spent: &CpuSpent) -> IdleCpu {
        IdleCpu {
            seconds: spent.wall.as_secs_f64(),
            processes: spent.processes,
            cores: spent.cores(),
            percent_of_a_core_each: spent.cores() * 100.0 / spent.processes.max(1) as f64,
        }
    }
}

/// The servers' CPU per consensus round, from the one-writer run (one command per round).
#[derive(Clone, Debug, Serialize)]
pub struct RoundCpu {
    /// Everything the servers spent over the window, per round.
    pub us: f64,
    /// The same less what the idle cluster would have spent meanwhile.
    pub above_idle_us: Option<f64>,
}

/// CPU per operation less the idle cluster's share of it: `idle_cores` spread over
/// `ops_per_sec` operations a second.
pub fn above_idle(us_per_op: f64, ops_per_sec: f64, idle_cores: f64) -> Option<f64> {
    let idle_share = super::cpu::ratio(idle_cores * 1e6, ops_per_sec)?;
    Some(us_per_op - idle_share)
}

/// The whole benchmark report.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub target: String,
    pub payload_bytes: usize,
    pub fsync_4k: Option<Latency>,
    /// The started cluster, idle, before the first run.
    pub idle_cpu: Option<IdleCpu>,
    /// From the one-writer run, when there was one and the CPU was read.
    pub cpu_per_round: Option<RoundCpu>,
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

/// One `ProposeBench` call: the operation of `bench commit`'s writers.
#[derive(Clone)]
pub(crate) struct ProposeBench {
    pub(crate) client: ControlClient<AuthChannel>,
    pub(crate) payload: Vec<u8>,
}

impl Operation for ProposeBench {
    async fn call(&mut self) -> Result<(), String> {
        let request = BenchRequest {
            payload: self.payload.clone(),
        };
        match self.client.propose_bench(request).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.message().to_string()),
        }
    }
}

async fn run_writers(
    remote: &Remote,
    shape: Shape,
    payload: Vec<u8>,
    meter: Option<CpuMeter>,
) -> Result<WriterRun, CliError> {
    let client = connect_any(remote).await?;
    let run = closed_loop(ProposeBench { client, payload }, shape, meter).await;
    if run.ops() == 0 {
        return Err(CliError::Unavailable(format!(
            "no command was committed with {} writers{}",
            shape.writers,
            run.last_error.map_or(String::new(), |e| format!(": {e}"))
        )));
    }
    if let Some(e) = &run.cpu_error {
        tracing::warn!(
            "server CPU not measured with {} writers: {e}",
            shape.writers
        );
    }
    Ok(WriterRun {
        writers: shape.writers,
        commands: run.ops(),
        errors: run.errors,
        seconds: run.seconds,
        commands_per_sec: run.ops_per_sec(),
        server_cpu_us_per_command: run.cpu_us_per_op(),
        server_cpu_cores: run.cpu.map(|c| c.cores()),
        latency: Latency::of(run.latencies),
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

/// A local cluster of coordinator processes started for a benchmark, with a client's view of
/// it and a CPU meter over its processes.
pub(crate) struct StartedCluster {
    /// Held for its processes, which it kills when dropped.
    _cluster: LocalCluster,
    /// Every node, the leader first, with operator credentials.
    pub(crate) remote: Remote,
    pub(crate) dir: PathBuf,
    pub(crate) meter: Option<CpuMeter>,
    _temp: Option<tempfile::TempDir>,
}

impl StartedCluster {
    /// Starts `n` coordinator processes of this executable under `data_dir` (or a temporary
    /// directory) and waits for a leader.
    pub(crate) async fn start(
        n: u64,
        data_dir: Option<&Path>,
        security: Security,
    ) -> Result<StartedCluster, CliError> {
        let binary = crate::demo::this_binary()?;
        let (temp, dir) = crate::demo::work_dir("testfleet-bench-", data_dir)?;
        let cluster = LocalCluster::start_secured(&binary, n, None, &dir, &[], security)
            .map_err(|e| CliError::Other(e.to_string()))?;
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
        let remote = Remote::new(addrs, cluster.credentials(Role::Operator));
        let pids: Vec<u32> = (cluster.running().into_iter())
            .filter_map(|id| cluster.pid(id))
            .collect();
        let meter = match CpuMeter::new(pids) {
            Ok(meter) => Some(meter),
            Err(e) => {
                tracing::warn!("server CPU will not be measured: {e}");
                None
            }
        };
        Ok(StartedCluster {
            _cluster: cluster,
            remote,
            dir,
            meter,
            _temp: temp,
        })
    }

    /// What the cluster spends idle: [`IDLE_SETTLE`] left alone, then read over
    /// [`IDLE_WINDOW`].
    pub(crate) async fn idle_cpu(&self) -> Option<IdleCpu> {
        let meter = self.meter.as_ref()?;
        tokio::time::sleep(IDLE_SETTLE).await;
        match meter.idle(IDLE_WINDOW).await {
            Ok(spent) => Some(IdleCpu::of(&spent)),
            Err(e) => {
                tracing::warn!("idle CPU not measured: {e}");
                None
            }
        }
    }
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
    let mut started = None;
    let (local, remote, target, fsync_dir) = match (&settings.coordinators, settings.nodes) {
        (Some(remote), _) => (
            None,
            leader_first(remote).await,
            remote.addrs.join(","),
            settings.data_dir.clone(),
        ),
        (None, Some(n)) => {
            let cluster =
                StartedCluster::start(n, settings.data_dir.as_deref(), settings.security).await?;
            let target = format!(
                "local {n}-node cluster (processes, security: {}), data in {}",
                security_name(settings.security),
                cluster.dir.display()
            );
            let remote = cluster.remote.clone();
            let dir = cluster.dir.clone();
            started = Some(cluster);
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
    let idle_cpu = match &started {
        Some(cluster) => cluster.idle_cpu().await,
        None => None,
    };
    let meter = started.as_ref().and_then(|c| c.meter.clone());
    let mut runs = Vec::new();
    let mut failure = None;
    for &writers in &settings.writers {
        let shape = Shape {
            writers,
            duration: settings.duration,
            warmup: settings.warmup,
        };
        match run_writers(&remote, shape, payload.clone(), meter.clone()).await {
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
    drop(started);
    if let Some(e) = failure {
        return Err(e);
    }
    let cpu_per_round = round_cpu(&runs, idle_cpu.as_ref());
    Ok(BenchReport {
        target,
        payload_bytes: settings.payload_bytes,
        fsync_4k,
        idle_cpu,
        cpu_per_round,
        runs,
    })
}

/// The servers' CPU per consensus round: that of the one-writer run, where every command is a
/// round of its own, with and without the idle cluster's share.
pub fn round_cpu(runs: &[WriterRun], idle: Option<&IdleCpu>) -> Option<RoundCpu> {
    let one = runs.iter().find(|r| r.writers == 1)?;
    let us = one.server_cpu_us_per_command?;
    Some(RoundCpu {
        us,
        above_idle_us: idle.and_then(|i| above_idle(us, one.commands_per_sec, i.cores)),
    })
}

/// Renders the report.
pub fn render(report: &BenchReport, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(report).unwrap_or_default() + "\n";
    }
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
    if let Some(idle) = &report.idle_cpu {
        out.push_str(&format!(
            "idle cluster: {:.1} % of a core per process ({} processes, {:.1} s)\n",
            idle.percent_of_a_core_each, idle.processes, idle.seconds
        ));
    }
    if let Some(round) = &report.cpu_per_round {
        out.push_str(&format!(
            "server CPU per consensus round (1 writer, all nodes): {:.0} µs{}\n",
            round.us,
            round
                .above_idle_us
                .map_or(String::new(), |us| format!(", {us:.0} µs above idle"))
        ));
    }
    out.push('\n');
    let cpu = report
        .runs
        .iter()
        .any(|r| r.server_cpu_us_per_command.is_some());
    let rows: Vec<Vec<String>> = report
        .runs
        .iter()
        .map(|r| {
            let mut row = vec![
                r.writers.to_string(),
                r.commands.to_string(),
                format!("{:.0}", r.commands_per_sec),
                format!("{:.2}", r.latency.p50_ms),
                format!("{:.2}", r.latency.p99_ms),
                format!("{:.2}", r.latency.max_ms),
            ];
            if cpu {
                row.push(optional(r.server_cpu_us_per_command, 0));
                row.push(optional(r.server_cpu_cores, 2));
            }
            row.push(r.errors.to_string());
            row
        })
        .collect();
    let mut header = vec![
        "WRITERS", "COMMANDS", "CMDS/S", "P50 MS", "P99 MS", "MAX MS",
    ];
    if cpu {
        header.extend(["SERVER CPU US/CMD", "SERVER CORES"]);
    }
    header.push("ERRORS");
    out.push_str(&table(&header, &rows));
    out
}

/// `value` with `decimals` decimals, or `-` when it is unknown.
pub fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(writers: usize, per_sec: f64, cpu_us: Option<f64>) -> WriterRun {
        WriterRun {
            writers,
            commands: (per_sec * 5.0) as usize,
            errors: 0,
            seconds: 5.0,
            commands_per_sec: per_sec,
            server_cpu_us_per_command: cpu_us,
            server_cpu_cores: cpu_us.map(|us| us * per_sec / 1e6),
            latency: Latency::of(vec![Duration::from_millis(2)]),
        }
    }

    #[test]
    fn a_round_costs_the_one_writer_runs_cpu_per_command_less_the_idle_share() {
        let idle = IdleCpu {
            seconds: 2.0,
            processes: 3,
            cores: 0.03,
            percent_of_a_core_each: 1.0,
        };
        let runs = [run(64, 10_000.0, Some(120.0)), run(1, 600.0, Some(2_200.0))];
        let round = round_cpu(&runs, Some(&idle)).unwrap();
        assert_eq!(round.us, 2_200.0);
        // 0.03 cores over 600 rounds a second is 50 µs of each round.
        assert!((round.above_idle_us.unwrap() - 2_150.0).abs() < 1e-9);
        assert!(
            round_cpu(&runs[..1], Some(&idle)).is_none(),
            "no 1-writer run"
        );
        assert!(round_cpu(&[run(1, 600.0, None)], Some(&idle)).is_none());
        assert!(round_cpu(&runs, None).unwrap().above_idle_us.is_none());
        assert_eq!(above_idle(100.0, 0.0, 0.03), None);
    }

    #[test]
    fn the_table_shows_server_cpu_only_when_it_was_measured() {
        let mut report = BenchReport {
            target: "t".into(),
            payload_bytes: 64,
            fsync_4k: None,
            idle_cpu: None,
            cpu_per_round: None,
            runs: vec![run(1, 600.0, None)],
        };
        assert!(!render(&report, Output::Table).contains("SERVER CPU"));
        report.runs.push(run(64, 10_000.0, Some(123.4)));
        let table = render(&report, Output::Table);
        assert!(table.contains("SERVER CPU US/CMD"), "{table}");
        assert!(table.contains("123"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&render(&report, Output::Json)).unwrap();
        assert_eq!(json["runs"][1]["server_cpu_us_per_command"], 123.4);
        assert!(json["runs"][0]["server_cpu_us_per_command"].is_null());
    }
}
