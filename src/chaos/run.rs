//! `testfleet chaos`: one seeded, bounded run against a real local cluster.
//!
//! Coordinators and workers are processes of this binary ([`LocalCluster`], [`LocalWorkers`]);
//! with `--partitions` each coordinator runs in its own network namespace ([`Fabric`]). Clients
//! ([`super::workload`]) submit jobs of known outcome for the whole run. Faults are drawn from
//! the seed and injected one at a time, each undone (restart, SIGCONT, heal) and the cluster
//! allowed to settle before the next, as the HA script does. Then the clients stop, the open
//! tasks are given time to finish, the replicas are compared (`cluster check`), every node's
//! rows are read, and [`super::checker::check`] judges the whole. The report (JSON and a text
//! summary) goes to `--report-dir`. Every process, namespace and link the run made is removed
//! when it ends, Ctrl-C included.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::checker::{self, AttemptRow, Crash, History, LeaderRow, NodeTables, TaskRow};
use super::netns::Fabric;
use super::report::{
    ChaosReport, FaultRecord, FaultResources, Outcomes, RESOURCE_WINDOW, continuity, summary,
    union_ms,
};
use crate::cli::{CliError, Output, Remote};
use crate::demo::launch::{LocalCluster, LocalWorkers, NodePlace};
use crate::demo::{Latency, Rng};

/// Arguments of `testfleet chaos`.
#[derive(Clone, Debug, clap::Args)]
pub struct ChaosArgs {
    /// Coordinator processes
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Worker processes
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Faults to inject, one at a time
    #[arg(long, default_value_t = 10)]
    pub faults: usize,
    /// Seed of the workload and the fault schedule
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also cut the network: each coordinator in its own network namespace (needs root)
    #[arg(long)]
    pub partitions: bool,
    /// Stop injecting faults after this many seconds, even if fewer were injected
    #[arg(long, default_value_t = 600)]
    pub duration: u64,
    /// Concurrent clients submitting jobs
    #[arg(long, default_value_t = 3)]
    pub clients: usize,
    /// Where the report (JSON and text) and the processes' files go
    #[arg(long, default_value = "chaos-report")]
    pub report_dir: PathBuf,
    /// Output format of the summary on stdout
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Draw faults only of these kinds (comma-separated); default: every kind the cluster
    /// allows
    #[arg(long, value_enum, value_delimiter = ',')]
    pub fault_kinds: Vec<Kind>,
    /// Seconds from one fault's end to the next (default: 0.5–1.5 s, drawn from the seed)
    #[arg(long)]
    pub fault_gap: Option<f64>,
    /// How long a SIGKILLed leader stays down before it is started again, as a supervisor's
    /// restart delay would keep it (ms)
    #[arg(long, default_value_t = 0)]
    pub restart_delay_ms: u64,
    /// Run every coordinator with a bug put back; the checker must then fail the run
    #[cfg(feature = "negative-controls")]
    #[arg(long, value_enum)]
    pub negative_control: Option<crate::negative::Control>,
}

/// Why a run could not be made (exit 2), as opposed to a run that found an anomaly (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CouldNotRun(pub String);

impl From<CliError> for CouldNotRun {
    fn from(e: CliError) -> Self {
        CouldNotRun(e.to_string())
    }
}

/// The faults a run draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(name = "sigkill-leader")]
    KillLeader,
    #[value(name = "sigstop-leader")]
    PauseLeader,
    #[value(name = "sigkill-follower")]
    KillFollower,
    #[value(name = "sigkill-worker")]
    KillWorker,
    #[value(name = "sigstop-worker")]
    PauseWorker,
    #[value(name = "sigkill-majority")]
    KillMajority,
    #[value(name = "sigkill-all")]
    KillAll,
    #[value(name = "isolate-leader")]
    IsolateLeader,
    #[value(name = "isolate-minority")]
    IsolateMinority,
    #[value(name = "one-way-cut-leader")]
    OneWayLeader,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::KillLeader => "sigkill-leader",
            Kind::PauseLeader => "sigstop-leader",
            Kind::KillFollower => "sigkill-follower",
            Kind::KillWorker => "sigkill-worker",
            Kind::PauseWorker => "sigstop-worker",
            Kind::KillMajority => "sigkill-majority",
            Kind::KillAll => "sigkill-all",
            Kind::IsolateLeader => "isolate-leader",
            Kind::IsolateMinority => "isolate-minority",
            Kind::OneWayLeader => "one-way-cut-leader",
        }
    }

    fn is_partition(self) -> bool {
        matches!(
            self,
            Kind::IsolateLeader | Kind::IsolateMinority | Kind::OneWayLeader
        )
    }
}

/// The faults a run may draw from, with their weights. A single coordinator can only be
/// killed (and started again): pausing or cutting it off leaves nobody to take over.
fn menu(nodes: u64, partitions: bool) -> Vec<(Kind, u64)> {
    let mut menu = vec![
        (Kind::KillWorker, 2),
        (Kind::PauseWorker, 2),
        (Kind::KillLeader, 3),
    ];
    if nodes > 1 {
        menu.extend([
            (Kind::PauseLeader, 2),
            (Kind::KillFollower, 2),
            (Kind::KillMajority, 1),
            (Kind::KillAll, 1),
        ]);
        if partitions {
            menu.extend([
                (Kind::IsolateLeader, 3),
                (Kind::IsolateMinority, 2),
                (Kind::OneWayLeader, 2),
            ]);
        }
    }
    menu
}

fn pick(rng: &mut Rng, menu: &[(Kind, u64)]) -> Kind {
    let total: u64 = menu.iter().map(|(_, w)| w).sum();
    let mut roll = rng.next() % total;
    for (kind, weight) in menu {
        if roll < *weight {
            return *kind;
        }
        roll -= weight;
    }
    menu[0].0
}

/// How long the cluster may take to settle (every node following one leader) or to elect.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Records the coordinators that stopped on their own and starts them again, as a supervisor
/// would.
fn restart_crashed(
    cluster: &mut LocalCluster,
    crashes: &mut Vec<Crash>,
    started: Instant,
) -> Result<(), CouldNotRun> {
    for (node, exit_code, why) in cluster.exited() {
        let at_ms = started.elapsed().as_millis() as u64;
        say(&format!(
            "[{:6.1}s] coordinator {node} stopped on its own (exit code {exit_code:?}): {why}; \
             restarting it",
            at_ms as f64 / 1000.0
        ));
        crashes.push(Crash {
            node,
            at_ms,
            exit_code,
            why,
        });
        cluster
            .restart(node)
            .map_err(|e| CouldNotRun(e.to_string()))?;
    }
    Ok(())
}

/// How long a worker is paused: past the failure timeout (5 s), so its attempts are taken
/// away and given to others while it sleeps — and it reports them when it wakes.
const WORKER_PAUSE: Duration = Duration::from_secs(7);

/// How long a partition is held once the majority has a leader.
const PARTITION_HOLD: Duration = Duration::from_secs(3);

/// Runs the chaos test; the report is also written into `args.report_dir`.
pub async fn run(args: &ChaosArgs) -> Result<ChaosReport, CouldNotRun> {
    if args.nodes == 0 || args.workers == 0 || args.clients == 0 {
        return Err(CouldNotRun(
            "--nodes, --workers and --clients must be at least 1".into(),
        ));
    }
    let menu: Vec<(Kind, u64)> = (menu(args.nodes, args.partitions).into_iter())
        .filter(|(kind, _)| args.fault_kinds.is_empty() || args.fault_kinds.contains(kind))
        .collect();
    if menu.is_empty() {
        return Err(CouldNotRun(format!(
            "none of the --fault-kinds can be injected into {} coordinator(s){}: a single \
             coordinator can only be killed, and partitions need --partitions",
            args.nodes,
            if args.partitions {
                ""
            } else {
                " without --partitions"
            }
        )));
    }
    if args
        .fault_gap
        .is_some_and(|gap| !(0.0..=3600.0).contains(&gap))
    {
        return Err(CouldNotRun(
            "--fault-gap must be between 0 and 3600 seconds".into(),
        ));
    }
    let binary = crate::demo::this_binary()?;
    std::fs::create_dir_all(&args.report_dir)
        .map_err(|e| CouldNotRun(format!("cannot create {}: {e}", args.report_dir.display())))?;
    let data = args.report_dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    // Declared before the cluster, so that the processes are gone before the network is.
    let mut fabric = match args.partitions {
        true => Some(Fabric::create(args.nodes).map_err(CouldNotRun)?),
        false => None,
    };
    let places: Vec<NodePlace> = fabric
        .iter()
        .flat_map(|f| {
            (1..=args.nodes).map(|n| NodePlace {
                netns: f.netns(n),
                ip: f.addr(n).into(),
            })
        })
        .collect();
    #[allow(unused_mut)]
    let mut node_args: Vec<String> = Vec::new();
    #[cfg(feature = "negative-controls")]
    if let Some(control) = args.negative_control {
        use clap::ValueEnum;
        if let Some(name) = control.to_possible_value() {
            node_args.extend([
                "--negative-control".to_string(),
                name.get_name().to_string(),
            ]);
        }
    }
    let mut cluster =
        LocalCluster::start_placed(&binary, args.nodes, None, &places, &data, &node_args)
            .map_err(|e| CouldNotRun(e.to_string()))?;
    let mut leader = cluster
        .leader(Duration::from_secs(60), None)
        .await
        .map_err(|e| CouldNotRun(format!("no leader at the start: {e}")))?;
    let mut workers = LocalWorkers::start(&binary, &data, &cluster, "chaos-w", args.workers, 2)
        .map_err(|e| CouldNotRun(e.to_string()))?;
    say(&format!(
        "{} coordinators ({}), {} workers; leader: node {leader}",
        args.nodes,
        cluster
            .addresses()
            .into_values()
            .collect::<Vec<_>>()
            .join(", "),
        args.workers
    ));

    let started = Instant::now();
    let history = Arc::new(Mutex::new(History::default()));
    let stop = CancellationToken::new();
    let clients: Vec<_> = (0..args.clients)
        .map(|id| {
            tokio::spawn(super::workload::client(
                id,
                cluster.remote(),
                args.seed,
                Duration::from_millis(300),
                started,
                history.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let probes = Arc::new(Mutex::new(Vec::new()));
    let usage = Arc::new(Mutex::new(Vec::new()));
    let watchers = [
        tokio::spawn(super::probe::run(
            cluster.addresses().into_values().collect(),
            cluster.credentials(crate::auth::Role::Operator),
            started,
            probes.clone(),
            stop.clone(),
        )),
        tokio::spawn(super::resources::run(started, usage.clone(), stop.clone())),
    ];

    let mut rng = Rng(args.seed ^ 0xc4a0_5eed_0000_0001);
    let restart_delay = Duration::from_millis(args.restart_delay_ms);
    let mut faults: Vec<FaultRecord> = Vec::new();
    let mut crashes: Vec<Crash> = Vec::new();
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CouldNotRun(format!("cannot handle SIGTERM: {e}")))?;
    let limit = Duration::from_secs(args.duration);
    let mut unsettled = 0;
    while faults.len() < args.faults && started.elapsed() < limit {
        let gap = Duration::from_secs_f64(args.fault_gap.unwrap_or_else(|| rng.range(0.5, 1.5)));
        tokio::select! {
            _ = &mut ctrl_c => { interrupted = true; break; }
            _ = terminate.recv() => { interrupted = true; break; }
            _ = tokio::time::sleep(gap) => {}
        }
        restart_crashed(&mut cluster, &mut crashes, started)?;
        match cluster.settled(SETTLE_LIMIT, 1_000).await {
            Ok(now) => {
                leader = now;
                unsettled = 0;
            }
            Err(e) => {
                say(&format!("the cluster did not settle before a fault: {e}"));
                unsettled += 1;
                if unsettled == 2 {
                    say("the cluster does not recover: no more faults; checking what is left");
                    break;
                }
                continue;
            }
        }
        let kind = pick(&mut rng, &menu);
        let at_s = started.elapsed().as_secs_f64();
        let fault = tokio::select! {
            _ = &mut ctrl_c => { interrupted = true; break; }
            _ = terminate.recv() => { interrupted = true; break; }
            f = inject(kind, &mut cluster, &mut workers, fabric.as_mut(), leader, &mut rng, restart_delay) => f,
        };
        let mut record = fault.map_err(CouldNotRun)?;
        record.at_s = at_s;
        say(&format!(
            "[{at_s:6.1}s] {} {}{}{}",
            record.kind,
            record.target,
            record
                .failover_ms
                .map(|ms| format!(": a new leader after {ms:.0} ms"))
                .unwrap_or_default(),
            record
                .note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ));
        faults.push(record);
    }
    if let Some(f) = fabric.as_mut() {
        f.heal().map_err(CouldNotRun)?;
    }
    stop.cancel();
    for client in clients {
        let _ = client.await;
    }
    for watcher in watchers {
        let _ = watcher.await;
    }
    say("faults done; waiting for the open tasks to finish");
    restart_crashed(&mut cluster, &mut crashes, started)?;
    let _ = cluster.settled(SETTLE_LIMIT, 1_000).await;
    drain(&cluster, Duration::from_secs(120)).await;
    let (digests, replica_check) =
        match crate::cli::cluster_check::run(&cluster.remote(), SETTLE_LIMIT).await {
            Ok(report) => {
                let agree = report.exit_code() == 0;
                let differ = report.exit_code() == 1;
                let digests = (agree || differ).then_some(agree);
                (digests, report.summary())
            }
            Err(e) => (None, format!("the replica check could not run: {e}")),
        };
    restart_crashed(&mut cluster, &mut crashes, started)?;
    let mut tables = Vec::new();
    for (node, addr) in cluster.addresses() {
        match read_tables(&cluster, node, &addr).await {
            Ok(rows) => tables.push(rows),
            Err(CouldNotRun(why)) => crashes.push(Crash {
                node,
                at_ms: started.elapsed().as_millis() as u64,
                exit_code: None,
                why,
            }),
        }
    }
    let [worker_recoveries, worker_recovery_attempts, task_recoveries] =
        recovery_outcomes(&cluster).await;
    let history = history.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let probes = probes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let usage = usage.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let window_ms = RESOURCE_WINDOW.as_secs_f64() * 1000.0;
    let mut outages = Vec::new();
    for fault in &mut faults {
        let at_ms = fault.at_s * 1000.0;
        fault.write_outage_ms = super::probe::outage_after(&probes, at_ms);
        if let Some(ms) = fault.write_outage_ms {
            outages.push((at_ms, at_ms + ms));
        }
        fault.resources = match (
            super::resources::cores_between(&usage, at_ms - window_ms, at_ms),
            super::resources::cores_between(&usage, at_ms, at_ms + window_ms),
            super::resources::rss_between(&usage, at_ms - window_ms, at_ms),
            super::resources::rss_between(&usage, at_ms, at_ms + window_ms),
        ) {
            (Some(cores_before), Some(cores_after), Some((before, _)), Some((_, after))) => {
                Some(FaultResources {
                    cores_before,
                    cores_after,
                    rss_mean_before: before,
                    rss_peak_after: after,
                })
            }
            _ => None,
        };
    }
    let runtime_s = started.elapsed().as_secs_f64();
    let unavailable_s = union_ms(outages) / 1000.0;
    let worker_faults: Vec<&FaultRecord> = faults
        .iter()
        .filter(|f| f.kind.contains("worker"))
        .collect();
    let (tasks_finished, tasks_first_attempt) = continuity(&history, tables.first());
    for table in &mut tables {
        table.logged_terms = checker::logged_terms(&cluster.log(table.node));
    }
    let verdict = checker::check(&history, &tables, digests, &crashes);
    let failovers: Vec<Duration> = (faults.iter())
        .filter_map(|f| f.failover_ms)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    let count = |pred: fn(&checker::Ack) -> bool| {
        (history.submissions.iter())
            .filter(|s| pred(&s.ack))
            .count()
    };
    let ms = |ms: f64| Duration::from_secs_f64(ms / 1000.0);
    let report = ChaosReport {
        seed: args.seed,
        nodes: args.nodes,
        workers: args.workers,
        partitions: args.partitions,
        runtime_s,
        faults_injected: faults.len(),
        partitions_injected: faults.iter().filter(|f| f.partition).count(),
        faults_without_failover: (faults.iter())
            .filter(|f| f.note.is_some() && !f.kind.contains("worker"))
            .count(),
        failover: Latency::of(failovers),
        write_outage: Latency::of(
            (faults.iter())
                .filter(|f| f.failover_ms.is_some())
                .filter_map(|f| f.write_outage_ms.map(ms))
                .collect(),
        ),
        unavailable_s,
        availability: 1.0 - unavailable_s / runtime_s.max(f64::EPSILON),
        worker_faults: worker_faults.len(),
        workers_back: worker_faults
            .iter()
            .filter(|f| f.worker_back_ms.is_some())
            .count(),
        worker_back: Latency::of(
            (worker_faults.iter())
                .filter_map(|f| f.worker_back_ms.map(ms))
                .collect(),
        ),
        worker_recoveries,
        worker_recovery_attempts,
        task_recoveries,
        tasks_finished,
        tasks_first_attempt,
        coordinator_cores: super::resources::cores_between(&usage, 0.0, runtime_s * 1000.0)
            .unwrap_or_default(),
        coordinator_peak_rss_bytes: usage.iter().map(|u| u.rss_bytes).max().unwrap_or(0),
        jobs_submitted: history.submissions.len(),
        acknowledged: verdict.acknowledged,
        unknown: count(|a| matches!(a, checker::Ack::Unknown(_))),
        refused: count(|a| matches!(a, checker::Ack::Failed(_))),
        lost: verdict.lost,
        duplicated: verdict.duplicated,
        wrong_outcome: verdict.wrong_outcome,
        replicas_identical: verdict.replicas_identical,
        replica_check,
        crashes,
        verdict: verdict.verdict,
        anomalies: verdict.anomalies,
        faults,
        interrupted,
    };
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    let _ = std::fs::write(args.report_dir.join("chaos-report.json"), &json);
    let _ = std::fs::write(args.report_dir.join("chaos-report.txt"), summary(&report));
    let _ = std::fs::write(
        args.report_dir.join("history.json"),
        serde_json::to_string_pretty(&history).unwrap_or_default(),
    );
    Ok(report)
}

fn say(line: &str) {
    eprintln!("{line}");
}

/// Injects one fault and undoes it; `at_s` is filled by the caller.
async fn inject(
    kind: Kind,
    cluster: &mut LocalCluster,
    workers: &mut LocalWorkers,
    fabric: Option<&mut Fabric>,
    leader: u64,
    rng: &mut Rng,
    restart_delay: Duration,
) -> Result<FaultRecord, String> {
    let followers: Vec<u64> = (cluster.running().into_iter())
        .filter(|id| *id != leader)
        .collect();
    let names = workers.names();
    let mut record = FaultRecord {
        at_s: 0.0,
        kind: kind.name(),
        target: String::new(),
        failover_ms: None,
        partition: kind.is_partition(),
        note: None,
        write_outage_ms: None,
        worker_back_ms: None,
        resources: None,
    };
    let fault_at = crate::state::command::Timestamp::now();
    match kind {
        Kind::KillLeader if followers.is_empty() => {
            // The only coordinator: down until the supervisor starts it again.
            record.target = format!("coordinator {leader} (the only one)");
            let t0 = Instant::now();
            cluster.kill(leader);
            tokio::time::sleep(restart_delay).await;
            cluster.restart(leader).map_err(|e| e.to_string())?;
            let back = cluster.leader(SETTLE_LIMIT, None).await;
            record.failover(
                (back.map(|_| t0.elapsed().as_secs_f64() * 1000.0)).map_err(|e| e.to_string()),
            );
        }
        Kind::KillLeader => {
            record.target = format!("coordinator {leader}");
            let t0 = Instant::now();
            cluster.kill(leader);
            record.failover(new_leader(cluster, leader, t0).await);
            tokio::time::sleep(restart_delay.saturating_sub(t0.elapsed())).await;
            cluster.restart(leader).map_err(|e| e.to_string())?;
        }
        Kind::PauseLeader => {
            record.target = format!("coordinator {leader}");
            let t0 = Instant::now();
            cluster.signal(leader, libc::SIGSTOP);
            let waited = new_leader(cluster, leader, t0).await;
            cluster.signal(leader, libc::SIGCONT);
            record.failover(waited);
        }
        Kind::KillFollower => {
            let victim = followers[(rng.next() % followers.len() as u64) as usize];
            record.target = format!("coordinator {victim}");
            cluster.kill(victim);
            tokio::time::sleep(Duration::from_secs(1)).await;
            cluster.restart(victim).map_err(|e| e.to_string())?;
        }
        Kind::KillWorker => {
            let victim = names[(rng.next() % names.len() as u64) as usize].clone();
            record.target = format!("worker {victim}");
            workers.kill(&victim);
            tokio::time::sleep(Duration::from_secs(1)).await;
            workers.spawn(&victim).map_err(|e| e.to_string())?;
            worker_back(cluster, &victim, fault_at, &mut record).await;
        }
        Kind::PauseWorker => {
            let victim = names[(rng.next() % names.len() as u64) as usize].clone();
            record.target = format!("worker {victim} for {}s", WORKER_PAUSE.as_secs());
            if let Some(pid) = workers.pid(&victim) {
                // SAFETY: signals to a child this process spawned and has not reaped.
                unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                tokio::time::sleep(WORKER_PAUSE).await;
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            }
            worker_back(cluster, &victim, fault_at, &mut record).await;
        }
        Kind::KillMajority | Kind::KillAll => {
            // Power loss: the leader and enough followers to take the quorum (or every node),
            // at once.
            let mut victims = vec![leader];
            let more = match kind {
                Kind::KillAll => followers.len(),
                _ => cluster.running().len() / 2,
            };
            victims.extend(followers.iter().take(more));
            record.target = format!("coordinators {victims:?}");
            for id in &victims {
                cluster.kill(*id);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let t0 = Instant::now();
            for id in &victims {
                cluster.restart(*id).map_err(|e| e.to_string())?;
            }
            let elected = cluster.leader(SETTLE_LIMIT, None).await;
            record.failover(
                (elected.map(|_| t0.elapsed().as_secs_f64() * 1000.0)).map_err(|e| e.to_string()),
            );
        }
        Kind::IsolateLeader | Kind::IsolateMinority | Kind::OneWayLeader => {
            let fabric = fabric.ok_or("a partition without a network fabric")?;
            let t0 = Instant::now();
            let cut: BTreeSet<u64> = match kind {
                Kind::IsolateLeader => {
                    fabric.isolate(leader)?;
                    [leader].into()
                }
                Kind::IsolateMinority => {
                    let minority = (cluster.running().len() - 1) / 2;
                    let picked: BTreeSet<u64> = followers.iter().copied().take(minority).collect();
                    for id in &picked {
                        fabric.isolate(*id)?;
                    }
                    picked
                }
                _ => {
                    for f in &followers {
                        fabric.drop_to(leader, fabric.addr(*f))?;
                    }
                    [leader].into()
                }
            };
            record.target = fabric.cuts().join(", ");
            if cut.contains(&leader) {
                record.failover(new_leader(cluster, leader, t0).await);
            }
            tokio::time::sleep(PARTITION_HOLD).await;
            fabric.heal()?;
        }
    }
    Ok(record)
}

/// Waits until the leader counts `worker` healthy again after a fault at `fault_at` (a status
/// change after the fault: a SIGKILLed worker is suspected at once, a paused one failed at its
/// failure timeout), and notes in `record` how long after now (the restart or resume) the
/// leader recorded it: the row's own time, not when the poll saw it (a consistent read waits
/// for the DuckDB flush, which lags on a loaded machine).
async fn worker_back(
    cluster: &LocalCluster,
    worker: &str,
    fault_at: crate::state::command::Timestamp,
    record: &mut FaultRecord,
) {
    let t0 = Instant::now();
    let undone = crate::state::command::Timestamp::now();
    let sql = format!(
        "SELECT epoch_us(status_changed_at) FROM workers WHERE id = '{}' \
         AND status = 'healthy' AND epoch_us(status_changed_at) >= {}",
        worker.replace('\'', "''"),
        fault_at.0
    );
    while t0.elapsed() < SETTLE_LIMIT {
        if let Ok(rows) = crate::cli::query_rows(&cluster.remote(), &sql, true).await
            && let Some(at) = rows
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.as_i64())
        {
            record.worker_back_ms = Some((at - undone.0).max(0) as f64 / 1000.0);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    record.note = Some(format!(
        "worker {worker} was not healthy again within {}s",
        SETTLE_LIMIT.as_secs()
    ));
}

/// Waits for a leader other than `old`; the time since `t0` in ms.
async fn new_leader(cluster: &LocalCluster, old: u64, t0: Instant) -> Result<f64, String> {
    (cluster.leader(SETTLE_LIMIT, Some(old)).await).map_err(|e| e.to_string())?;
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

/// Recoveries and recovery attempts (see [`ChaosReport::worker_recoveries`]): workers'
/// recoveries, workers' attempts, tasks' attempts. Unreadable counts stay 0.
/// Each count waits at most [`SETTLE_LIMIT`]: a cluster left without a quorum (a negative
/// control's crashed followers) must not hold the run's report for ever.
async fn recovery_outcomes(cluster: &LocalCluster) -> [Outcomes; 3] {
    let count = |sql: &'static str| async move {
        let remote = cluster.remote();
        let read = crate::cli::query_rows(&remote, sql, true);
        (tokio::time::timeout(SETTLE_LIMIT, read).await)
            .ok()
            .and_then(Result::ok)
            .and_then(|rows| rows.first()?.first()?.as_u64())
            .unwrap_or(0)
    };
    let workers_back = count("SELECT count(*) FROM worker_recovery_history WHERE success").await;
    [
        Outcomes {
            succeeded: workers_back,
            failed: count(
                "SELECT count(*) FROM workers WHERE status IN \
                 ('failed', 'recovering', 'quarantined', 'permanently_failed')",
            )
            .await,
        },
        Outcomes {
            succeeded: workers_back,
            failed: count("SELECT count(*) FROM worker_recovery_history WHERE NOT success").await,
        },
        Outcomes {
            succeeded: count("SELECT count(*) FROM task_recovery_history WHERE success").await,
            failed: count("SELECT count(*) FROM task_recovery_history WHERE NOT success").await,
        },
    ]
}

/// Waits until no task is open (queued, assigned, running), or `limit`; gives up sooner when
/// no leader answers for [`SETTLE_LIMIT`] (a cluster that cannot recover).
async fn drain(cluster: &LocalCluster, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut answered = Instant::now();
    let sql = "SELECT count(*) FROM tasks WHERE status IN ('queued', 'assigned', 'running')";
    while Instant::now() < deadline && answered.elapsed() < SETTLE_LIMIT {
        if let Ok(rows) = crate::cli::query_rows(&cluster.remote(), sql, true).await {
            answered = Instant::now();
            if rows
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.as_u64())
                == Some(0)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    say("tasks are still open: the checker reports them");
}

/// One node's rows, read from its own copy.
async fn read_tables(
    cluster: &LocalCluster,
    node: u64,
    addr: &str,
) -> Result<NodeTables, CouldNotRun> {
    let remote = Remote::new(
        vec![addr.to_string()],
        cluster.credentials(crate::auth::Role::Operator),
    );
    let rows = |sql: &'static str| {
        let remote = remote.clone();
        async move {
            crate::cli::query_rows(&remote, sql, false)
                .await
                .map_err(|e| CouldNotRun(format!("cannot read node {node}'s tables: {e}")))
        }
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let number = |v: &serde_json::Value| v.as_u64().unwrap_or_default();
    let tasks = rows("SELECT id, job_id, status, attempt FROM tasks")
        .await?
        .iter()
        .map(|r| TaskRow {
            id: text(&r[0]),
            job: text(&r[1]),
            status: text(&r[2]),
            attempt: number(&r[3]) as u32,
        })
        .collect();
    let attempts =
        rows("SELECT task_id, attempt, worker_id, term, outcome, exit_code FROM task_attempts")
            .await?
            .iter()
            .map(|r| AttemptRow {
                task: text(&r[0]),
                attempt: number(&r[1]) as u32,
                worker: text(&r[2]),
                term: number(&r[3]),
                outcome: r[4].as_str().map(str::to_string),
                exit_code: r[5].as_i64().map(|c| c as i32),
            })
            .collect();
    let leaders = rows("SELECT term, leader_id FROM leader_transitions")
        .await?
        .iter()
        .map(|r| LeaderRow {
            term: number(&r[0]),
            node: number(&r[1]),
        })
        .collect();
    let last_applied = match crate::cli::connect(addr, &remote.credentials).await {
        Ok(mut client) => (client.status(crate::proto::StatusRequest {}).await)
            .ok()
            .and_then(|s| s.into_inner().last_applied)
            .unwrap_or(0),
        Err(_) => 0,
    };
    Ok(NodeTables {
        node,
        last_applied,
        tasks,
        attempts,
        leaders,
        logged_terms: Vec::new(),
    })
}
