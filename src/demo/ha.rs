//! `testfleet ha`: the local high-availability demo and soak behind
//! `run_high_availability_cluster.sh`.
//!
//! Starts N coordinator processes and W worker processes on loopback, runs a continuous
//! workload (small jobs submitted every 200 ms, each acknowledged submission recorded), and
//! with fault injection, seeded random faults: SIGKILL of the leader, of a follower, of a
//! worker; SIGSTOP/SIGCONT of the leader (it must be deposed, and resumed, must not act as
//! leader) or of a worker; killed processes are restarted. Leader changes, faults and
//! recovery records are printed as they happen. At the end every process is resumed, the
//! acknowledged jobs are given time to finish, and the report checks that every
//! acknowledged task finished exactly once and, with `cluster check`
//! ([`crate::cli::cluster_check`]), that every node's DuckDB holds the same rows. The report is
//! printed and written as Markdown and JSON. Every process started is killed on exit, Ctrl-C included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::launch::{LocalCluster, LocalWorkers};
use super::{Latency, Rng};
use crate::cli::Remote;
use crate::cli::{CliError, unavailable};
use crate::state::command::TaskSpec;

/// Settings of the demo.
#[derive(Clone, Debug)]
pub struct HaSettings {
    pub nodes: u64,
    pub workers: usize,
    pub base_port: Option<u16>,
    pub runtime: Duration,
    pub fault_injection: bool,
    pub seed: u64,
    pub report_dir: PathBuf,
    /// Only SIGKILL the leader (for tests and failover measurements).
    pub leader_kills_only: bool,
    /// Seconds between faults, lower and upper bound.
    pub fault_every: (f64, f64),
}

/// Arguments of `testfleet ha`.
#[derive(Clone, Debug, clap::Args)]
pub struct HaArgs {
    /// Coordinator processes
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Worker processes
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// First port (node i uses base + i - 1); default: free ports
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Seconds to run
    #[arg(long, default_value_t = 120)]
    pub runtime: u64,
    /// Inject seeded random faults (SIGKILL, SIGSTOP/SIGCONT, restarts)
    #[arg(long)]
    pub fault_injection: bool,
    /// Seed of the fault schedule
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only SIGKILL the leader
    #[arg(long)]
    pub leader_kills_only: bool,
    /// Seconds between faults (each gap is random in [x, 2x))
    #[arg(long, default_value_t = 4.0)]
    pub fault_interval: f64,
    /// Where the report (Markdown + JSON) and the processes' files go
    #[arg(long, default_value = "ha-report")]
    pub report_dir: std::path::PathBuf,
}

impl HaArgs {
    /// The demo's settings; refuses no nodes or no workers.
    pub fn settings(&self) -> Result<HaSettings, CliError> {
        if self.nodes == 0 || self.workers == 0 {
            return Err(CliError::Usage(
                "--nodes and --workers must be at least 1".into(),
            ));
        }
        Ok(HaSettings {
            nodes: self.nodes,
            workers: self.workers,
            base_port: self.base_port,
            runtime: Duration::from_secs(self.runtime),
            fault_injection: self.fault_injection,
            seed: self.seed,
            report_dir: self.report_dir.clone(),
            leader_kills_only: self.leader_kills_only,
            fault_every: (
                self.fault_interval.max(0.5),
                2.0 * self.fault_interval.max(0.5),
            ),
        })
    }
}

/// One injected fault.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    pub at_s: f64,
    pub kind: String,
    pub target: String,
    /// For leader faults: kill/pause → a new leader elected (ms).
    pub failover_ms: Option<f64>,
    /// For a paused leader: after SIGCONT it stepped down and did not act as leader.
    pub deposed_leader_stepped_down: Option<bool>,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct HaReport {
    pub nodes: u64,
    pub workers: usize,
    pub runtime_s: f64,
    pub seed: u64,
    pub fault_injection: bool,
    pub coordinator_faults: usize,
    pub worker_faults: usize,
    pub leader_changes: usize,
    /// Every leader fault: leader lost → new leader.
    pub failover: Latency,
    /// Leader SIGKILLs only: the followers see the process gone and elect at once.
    pub failover_after_kill: Latency,
    /// Leader SIGSTOPs only: the followers wait out the lease and an election timeout.
    pub failover_after_pause: Latency,
    pub write_outage: Latency,
    pub jobs_acknowledged: usize,
    pub tasks_submitted: usize,
    pub tasks_finished: usize,
    pub tasks_lost: usize,
    pub tasks_duplicated: usize,
    pub recovery_records: u64,
    /// `cluster check` once every node is back: do all replicas hold the same rows?
    pub replica_check: ReplicaCheck,
    pub faults: Vec<Fault>,
    pub passed: bool,
}

/// The verdict of the replica check at the end of the run.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaCheck {
    /// `agree`, `differ`, `incomplete` (a node could not be checked), `error` (the check could
    /// not run) or `skipped` (the run was interrupted).
    pub verdict: String,
    /// The log index every node digested.
    pub log_index: Option<u64>,
    /// The check's one-line summary, or why it did not run.
    pub detail: String,
}

/// Runs `cluster check` once every coordinator follows the leader again.
async fn check_replicas(cluster: &LocalCluster) -> ReplicaCheck {
    if let Err(e) = cluster.settled(Duration::from_secs(60), 1_000).await {
        // Checked anyway: the check names the nodes that are not back.
        println!("not every coordinator is back before the replica check: {e}");
    }
    match crate::cli::cluster_check::run(&cluster.remote(), Duration::from_secs(60)).await {
        Ok(report) => {
            let verdict = serde_json::to_value(report.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            ReplicaCheck {
                verdict,
                log_index: Some(report.log_index),
                detail: report.summary(),
            }
        }
        Err(e) => ReplicaCheck {
            verdict: "error".into(),
            log_index: None,
            detail: e.to_string(),
        },
    }
}

/// What the workload saw.
#[derive(Default)]
struct Workload {
    acknowledged: Vec<(String, Vec<String>)>,
    outages: Vec<Duration>,
}

async fn run_workload(
    remote: Remote,
    state: Arc<Mutex<Workload>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut n = 0u64;
    let mut target = 0usize;
    // Start of the first failed attempt of the current outage.
    let mut failing_since: Option<Instant> = None;
    while !stop.is_cancelled() {
        n += 1;
        let job = format!("ha-job-{n:06}");
        let tasks: Vec<TaskSpec> = (0..3)
            .map(|i| TaskSpec {
                timeout_ms: 60_000,
                max_retries: 10,
                ..TaskSpec::new(
                    format!("{job}-t{i}"),
                    format!("{job}-t{i}"),
                    vec!["sh".into(), "-c".into(), "sleep 0.2".into()],
                )
            })
            .collect();
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        // One attempt at a time, moving to the next coordinator after a failure; a job id is
        // retried until acknowledged (submission is idempotent).
        loop {
            if stop.is_cancelled() {
                return;
            }
            let attempt_start = Instant::now();
            let addr = &remote.addrs[target % remote.addrs.len()];
            let submitted = crate::cli::jobs::submit_once(
                addr,
                &remote.credentials,
                &job,
                "ha",
                &tasks,
                Duration::from_secs(2),
            );
            match submitted.await {
                Ok(_) => {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    s.acknowledged.push((job.clone(), ids.clone()));
                    if let Some(since) = failing_since.take() {
                        let outage = since.elapsed();
                        s.outages.push(outage);
                        println!(
                            "  write outage ended after {:.0} ms",
                            outage.as_secs_f64() * 1000.0
                        );
                    }
                    break;
                }
                Err(_) => {
                    failing_since.get_or_insert(attempt_start);
                    target += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A consistent query, retried for up to 60 s while the cluster has no leader (e.g. a node
/// just restarted answers first and does not know the leader yet).
async fn leader_query(
    cluster: &LocalCluster,
    sql: &str,
) -> Result<Vec<Vec<serde_json::Value>>, CliError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match leader_query_once(cluster, sql).await {
            Err(e @ CliError::Unavailable(_)) if Instant::now() < deadline => {
                tracing::debug!("query not answered yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

async fn leader_query_once(
    cluster: &LocalCluster,
    sql: &str,
) -> Result<Vec<Vec<serde_json::Value>>, CliError> {
    let mut client = crate::cli::connect_any(&cluster.remote()).await?;
    let reply = client
        .query(crate::proto::QueryRequest {
            sql: sql.to_string(),
            consistent: true,
            timeout_ms: 0,
        })
        .await
        .map_err(crate::cli::from_status)?
        .into_inner();
    reply
        .rows_json
        .iter()
        .map(|r| serde_json::from_str(r).map_err(|e| CliError::Other(e.to_string())))
        .collect()
}

/// Notes a leader the run did not cause (a fault's new leader is counted where it is made).
fn follow(leader: &mut u64, now_leader: u64, changes: &mut usize, started: Instant) {
    if now_leader != *leader {
        *changes += 1;
        println!(
            "[{:6.1}s] leader changed: node {leader} -> node {now_leader}",
            started.elapsed().as_secs_f64()
        );
        *leader = now_leader;
    }
}

/// Runs the demo; returns the report (and writes it into `report_dir`).
pub async fn run(s: &HaSettings) -> Result<HaReport, CliError> {
    let binary = super::this_binary()?;
    std::fs::create_dir_all(&s.report_dir).map_err(|e| {
        CliError::Usage(format!(
            "cannot create report directory {}: {e}",
            s.report_dir.display()
        ))
    })?;
    let data = s.report_dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let mut cluster =
        LocalCluster::start_on(&binary, s.nodes, s.base_port, &data, &[]).map_err(unavailable)?;
    let addrs: Vec<String> = cluster.addresses().into_values().collect();
    println!("coordinators: {}", addrs.join(", "));
    let mut leader = cluster
        .leader(Duration::from_secs(30), None)
        .await
        .map_err(unavailable)?;
    println!("leader: node {leader}");
    let mut workers =
        LocalWorkers::start(&binary, &data, &cluster, "ha-w", s.workers, 2).map_err(unavailable)?;
    println!("workers: {}", workers.names().join(", "));

    let workload = Arc::new(Mutex::new(Workload::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn(run_workload(
        cluster.remote(),
        workload.clone(),
        stop.clone(),
    ));
    let started = Instant::now();
    let mut rng = Rng(s.seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut faults: Vec<Fault> = Vec::new();
    let mut dead_nodes: BTreeSet<u64> = BTreeSet::new();
    let mut dead_workers: BTreeSet<String> = BTreeSet::new();
    let mut after_kill = Vec::new();
    let mut after_pause = Vec::new();
    let mut leader_changes = 0usize;
    let mut next_fault =
        started + Duration::from_secs_f64(rng.range(s.fault_every.0, s.fault_every.1));
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    while started.elapsed() < s.runtime {
        tokio::select! {
            _ = &mut ctrl_c => { interrupted = true; println!("interrupted: cleaning up"); break; }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        // Follow leadership.
        if let Ok(now_leader) = cluster.leader(Duration::from_millis(300), None).await {
            follow(&mut leader, now_leader, &mut leader_changes, started);
        }
        if !s.fault_injection || Instant::now() < next_fault {
            continue;
        }
        next_fault =
            Instant::now() + Duration::from_secs_f64(rng.range(s.fault_every.0, s.fault_every.1));
        // Bring back what an earlier fault took down.
        for id in std::mem::take(&mut dead_nodes) {
            cluster.restart(id).map_err(unavailable)?;
            println!(
                "[{:6.1}s] restarted coordinator {id}",
                started.elapsed().as_secs_f64()
            );
        }
        for name in std::mem::take(&mut dead_workers) {
            workers.spawn(&name).map_err(unavailable)?;
            println!(
                "[{:6.1}s] restarted worker {name}",
                started.elapsed().as_secs_f64()
            );
        }
        // One fault at a time: a coordinator fault is injected only once every coordinator
        // follows the leader again (a restarted one has rejoined), so a failover is measured
        // with a quorum left, not while a node of the last fault is still starting.
        match cluster.settled(Duration::from_secs(30), 1_000).await {
            Ok(now_leader) => follow(&mut leader, now_leader, &mut leader_changes, started),
            Err(e) => {
                println!(
                    "[{:6.1}s] fault skipped: {e}",
                    started.elapsed().as_secs_f64()
                );
                continue;
            }
        }
        let roll = if s.leader_kills_only { 0.0 } else { rng.unit() };
        let at_s = started.elapsed().as_secs_f64();
        let followers: Vec<u64> = cluster
            .running()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        let names = workers.names();
        let fault = if roll < 0.35 {
            // SIGKILL the leader.
            let t0 = Instant::now();
            cluster.kill(leader);
            dead_nodes.insert(leader);
            let new = cluster
                .leader(Duration::from_secs(30), Some(leader))
                .await
                .map_err(unavailable)?;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            after_kill.push(t0.elapsed());
            println!(
                "[{at_s:6.1}s] FAULT SIGKILL leader {leader}: node {new} leads after {ms:.0} ms"
            );
            let f = Fault {
                at_s,
                kind: "sigkill-leader".into(),
                target: format!("coordinator {leader}"),
                failover_ms: Some(ms),
                deposed_leader_stepped_down: None,
            };
            leader_changes += 1;
            leader = new;
            f
        } else if roll < 0.55 {
            // SIGSTOP the leader, wait for a new one, SIGCONT: it must step down.
            let old = leader;
            let t0 = Instant::now();
            cluster.signal(old, libc::SIGSTOP);
            let new = cluster
                .leader(Duration::from_secs(30), Some(old))
                .await
                .map_err(unavailable)?;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            after_pause.push(t0.elapsed());
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.signal(old, libc::SIGCONT);
            let mut stepped_down = false;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some((role, _)) = cluster.role(old).await
                    && role != "leader"
                {
                    stepped_down = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!(
                "[{at_s:6.1}s] FAULT SIGSTOP leader {old}: node {new} leads after {ms:.0} ms; after SIGCONT node {old} {}",
                if stepped_down {
                    "stepped down"
                } else {
                    "STILL CLAIMS LEADERSHIP"
                }
            );
            leader_changes += 1;
            leader = new;
            Fault {
                at_s,
                kind: "pause-leader".into(),
                target: format!("coordinator {old}"),
                failover_ms: Some(ms),
                deposed_leader_stepped_down: Some(stepped_down),
            }
        } else if roll < 0.70 && !followers.is_empty() {
            let victim = followers[(rng.next() % followers.len() as u64) as usize];
            cluster.kill(victim);
            dead_nodes.insert(victim);
            println!("[{at_s:6.1}s] FAULT SIGKILL follower {victim}");
            Fault {
                at_s,
                kind: "sigkill-follower".into(),
                target: format!("coordinator {victim}"),
                failover_ms: None,
                deposed_leader_stepped_down: None,
            }
        } else if roll < 0.90 && !names.is_empty() {
            let victim = names[(rng.next() % names.len() as u64) as usize].clone();
            workers.kill(&victim);
            dead_workers.insert(victim.clone());
            println!("[{at_s:6.1}s] FAULT SIGKILL worker {victim}");
            Fault {
                at_s,
                kind: "sigkill-worker".into(),
                target: victim,
                failover_ms: None,
                deposed_leader_stepped_down: None,
            }
        } else if !names.is_empty() {
            let victim = names[(rng.next() % names.len() as u64) as usize].clone();
            if let Some(pid) = workers.pid(&victim) {
                // SAFETY: signals to a child this process spawned and has not reaped.
                unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                tokio::time::sleep(Duration::from_secs(2)).await;
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            }
            println!("[{at_s:6.1}s] FAULT SIGSTOP worker {victim} for 2 s");
            Fault {
                at_s,
                kind: "pause-worker".into(),
                target: victim,
                failover_ms: None,
                deposed_leader_stepped_down: None,
            }
        } else {
            continue;
        };
        faults.push(fault);
    }

    // Wind down: stop the load, bring everything back, let acknowledged jobs finish.
    stop.cancel();
    let _ = load.await;
    for id in std::mem::take(&mut dead_nodes) {
        cluster.restart(id).map_err(unavailable)?;
    }
    for name in std::mem::take(&mut dead_workers) {
        workers.spawn(&name).map_err(unavailable)?;
    }
    let (acknowledged, outages) = {
        let w = workload.lock().unwrap_or_else(|e| e.into_inner());
        (w.acknowledged.clone(), w.outages.clone())
    };
    let expected: BTreeSet<String> = acknowledged
        .iter()
        .flat_map(|(_, t)| t.iter().cloned())
        .collect();
    println!(
        "waiting for {} acknowledged tasks to finish ...",
        expected.len()
    );
    let deadline = Instant::now() + Duration::from_secs(if interrupted { 20 } else { 180 });
    let mut finished: BTreeMap<String, String> = BTreeMap::new();
    loop {
        if let Ok(rows) = leader_query(
            &cluster,
            "SELECT id, status FROM tasks WHERE job_id LIKE 'ha-job-%'",
        )
        .await
        {
            finished = rows
                .iter()
                .filter_map(|r| Some((r[0].as_str()?.to_string(), r[1].as_str()?.to_string())))
                .collect();
        }
        let done = expected
            .iter()
            .filter(|t| {
                finished
                    .get(*t)
                    .is_some_and(|s| !matches!(s.as_str(), "queued" | "assigned" | "running"))
            })
            .count();
        if done == expected.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let duplicated = leader_query(
        &cluster,
        "SELECT count(*) FROM (SELECT task_id FROM task_attempts WHERE task_id LIKE 'ha-job-%' \
         AND outcome IN ('passed','failed','timed_out','error') GROUP BY task_id HAVING count(*) > 1)",
    )
    .await?
    .first()
    .and_then(|r| r[0].as_u64())
    .unwrap_or(0) as usize;
    let recovery_records = leader_query(
        &cluster,
        "SELECT (SELECT count(*) FROM task_recovery_history) + (SELECT count(*) FROM worker_recovery_history) \
         + (SELECT count(*) FROM system_recovery_history)",
    )
    .await?
    .first()
    .and_then(|r| r[0].as_u64())
    .unwrap_or(0);
    let replica_check = if interrupted {
        ReplicaCheck {
            verdict: "skipped".into(),
            log_index: None,
            detail: "the run was interrupted".into(),
        }
    } else {
        println!("checking that every replica holds the same rows ...");
        check_replicas(&cluster).await
    };
    let passed_tasks = expected
        .iter()
        .filter(|t| finished.get(*t).is_some_and(|s| s == "passed"))
        .count();
    let lost = expected
        .iter()
        .filter(|t| {
            finished.get(*t).is_none_or(|s| {
                matches!(s.as_str(), "queued" | "assigned" | "running" | "abandoned")
            })
        })
        .count();
    let coordinator_faults = faults
        .iter()
        .filter(|f| f.target.starts_with("coordinator"))
        .count();
    let stepped_down_ok = faults
        .iter()
        .all(|f| f.deposed_leader_stepped_down != Some(false));
    let report = HaReport {
        nodes: s.nodes,
        workers: s.workers,
        runtime_s: started.elapsed().as_secs_f64(),
        seed: s.seed,
        fault_injection: s.fault_injection,
        coordinator_faults,
        worker_faults: faults.len() - coordinator_faults,
        leader_changes,
        failover: Latency::of(after_kill.iter().chain(&after_pause).copied().collect()),
        failover_after_kill: Latency::of(after_kill),
        failover_after_pause: Latency::of(after_pause),
        write_outage: Latency::of(outages),
        jobs_acknowledged: acknowledged.len(),
        tasks_submitted: expected.len(),
        tasks_finished: passed_tasks,
        tasks_lost: lost,
        tasks_duplicated: duplicated,
        recovery_records,
        passed: lost == 0
            && duplicated == 0
            && stepped_down_ok
            && !interrupted
            && replica_check.verdict == "agree",
        replica_check,
        faults,
    };
    let markdown = markdown(&report);
    std::fs::write(s.report_dir.join("ha-report.md"), &markdown)
        .map_err(|e| CliError::Other(e.to_string()))?;
    std::fs::write(
        s.report_dir.join("ha-report.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| CliError::Other(e.to_string()))?;
    println!("\n{markdown}");
    println!(
        "report written to {}",
        s.report_dir.join("ha-report.md").display()
    );
    drop(workers);
    drop(cluster);
    Ok(report)
}

/// `p50 / p99 / max ms (n what)`, or a dash without samples.
fn latency(l: &Latency, what: &str) -> String {
    if l.samples == 0 {
        return "—".to_string();
    }
    format!(
        "{:.0} / {:.0} / {:.0} ms ({} {what})",
        l.p50_ms, l.p99_ms, l.max_ms, l.samples
    )
}

/// The report as Markdown.
pub fn markdown(r: &HaReport) -> String {
    let mut out = format!(
        "# High-availability run\n\n{} coordinators, {} workers, {:.0} s, fault injection {}, seed {}\n\n",
        r.nodes,
        r.workers,
        r.runtime_s,
        if r.fault_injection { "on" } else { "off" },
        r.seed
    );
    out.push_str("| measure | value |\n|---|---|\n");
    let rows = [
        (
            "coordinator faults injected",
            r.coordinator_faults.to_string(),
        ),
        ("worker faults injected", r.worker_faults.to_string()),
        ("leader changes", r.leader_changes.to_string()),
        (
            "failover (leader lost → new leader), p50 / p99 / max",
            latency(&r.failover, "samples"),
        ),
        (
            "… after leader SIGKILL",
            latency(&r.failover_after_kill, "samples"),
        ),
        (
            "… after leader SIGSTOP",
            latency(&r.failover_after_pause, "samples"),
        ),
        (
            "client-visible write outage, p50 / p99 / max",
            latency(&r.write_outage, "outages"),
        ),
        ("jobs acknowledged", r.jobs_acknowledged.to_string()),
        (
            "tasks submitted (acknowledged)",
            r.tasks_submitted.to_string(),
        ),
        ("tasks passed", r.tasks_finished.to_string()),
        ("tasks lost", r.tasks_lost.to_string()),
        ("tasks finished twice", r.tasks_duplicated.to_string()),
        ("recovery records", r.recovery_records.to_string()),
        (
            "replicas (cluster check)",
            match r.replica_check.log_index {
                Some(_) => r.replica_check.detail.clone(),
                None => format!("{}: {}", r.replica_check.verdict, r.replica_check.detail),
            },
        ),
        (
            "verdict",
            if r.passed {
                "PASS".to_string()
            } else {
                "FAIL".to_string()
            },
        ),
    ];
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    if !r.faults.is_empty() {
        out.push_str("\n## Faults\n\n| at | fault | target | failover |\n|---|---|---|---|\n");
        for f in &r.faults {
            let fo = f
                .failover_ms
                .map_or(String::new(), |ms| format!("{ms:.0} ms"));
            let note = match f.deposed_leader_stepped_down {
                Some(true) => ", stepped down after SIGCONT",
                Some(false) => ", DID NOT step down",
                None => "",
            };
            out.push_str(&format!(
                "| {:.1} s | {} | {} | {fo}{note} |\n",
                f.at_s, f.kind, f.target
            ));
        }
    }
    out
}
