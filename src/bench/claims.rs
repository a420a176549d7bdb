//! `testfleet bench claims`: the figures the system Testfleet replaces published without
//! measuring them, measured here in one command.
//!
//! Three seeded [`crate::chaos`] runs, each with its workload of known outcome, its write
//! probe, its resource sampler and its checker:
//!
//! 1. **recovery** — three coordinators; only worker faults (SIGKILL and restart, SIGSTOP past
//!    the failure timeout): recovery success, worker reconnection, recovery time, tasks
//!    preserved, and the coordinators' CPU and memory in the 5 s after each fault against the
//!    5 s before it.
//! 2. **without HA** — one coordinator, SIGKILLed and started again by a supervisor after
//!    `--restart-delay-ms`, the way a single-node service under systemd is kept up.
//! 3. **with HA** — three coordinators, the leader SIGKILLed at the same moments (the same
//!    seed, gap and restart delay) and replaced by the survivors.
//!
//! The same workload runs in all three: clients submitting jobs of known outcome all along.
//! The report puts each claim beside what was measured, and says whether it is beaten.

use std::path::PathBuf;

use serde::Serialize;

use crate::chaos::report::{ChaosReport, summary};
use crate::chaos::run::{ChaosArgs, Kind};
use crate::cli::{CliError, Output};

/// Arguments of `testfleet bench claims`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClaimsArgs {
    /// Faults injected in each of the three runs
    #[arg(long, default_value_t = 20)]
    pub faults: usize,
    /// Seconds from one fault's end to the next
    #[arg(long, default_value_t = 8.0)]
    pub fault_gap: f64,
    /// How long the supervisor leaves a killed coordinator down (ms)
    #[arg(long, default_value_t = 100)]
    pub restart_delay_ms: u64,
    /// Worker processes
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Seed of the workload and the fault schedule
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the three runs' reports go (one directory each) and `claims.md`
    #[arg(long, default_value = "claims-report")]
    pub report_dir: PathBuf,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The three runs and the claims table made from them.
#[derive(Clone, Debug, Serialize)]
pub struct ClaimsReport {
    pub recovery: ChaosReport,
    pub without_ha: ChaosReport,
    pub with_ha: ChaosReport,
    pub rows: Vec<Row>,
    /// All three runs passed their checkers.
    pub passed: bool,
}

/// One claim: what was claimed, what was measured, and whether it is beaten.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub claim: String,
    pub claimed: String,
    pub measured: String,
    pub beaten: Option<bool>,
}

fn args(base: &ClaimsArgs, phase: &str, nodes: u64, kinds: &[Kind]) -> ChaosArgs {
    ChaosArgs {
        nodes,
        workers: base.workers,
        faults: base.faults,
        seed: base.seed,
        partitions: false,
        duration: 3600,
        clients: 3,
        report_dir: base.report_dir.join(phase),
        output: Output::Json,
        fault_kinds: kinds.to_vec(),
        fault_gap: Some(base.fault_gap),
        restart_delay_ms: base.restart_delay_ms,
        #[cfg(feature = "negative-controls")]
        negative_control: None,
    }
}

/// Runs the three phases and builds the table.
pub async fn run(base: &ClaimsArgs) -> Result<ClaimsReport, CliError> {
    let mut reports = Vec::new();
    for (phase, nodes, kinds) in [
        ("recovery", 3, &[Kind::KillWorker, Kind::PauseWorker][..]),
        ("without-ha", 1, &[Kind::KillLeader][..]),
        ("with-ha", 3, &[Kind::KillLeader][..]),
    ] {
        eprintln!("== {phase}: {nodes} coordinator(s) ==");
        let report = crate::chaos::run::run(&args(base, phase, nodes, kinds))
            .await
            .map_err(|e| {
                CliError::Unavailable(format!("the {phase} run could not be made: {e}"))
            })?;
        eprint!("{}", summary(&report));
        reports.push(report);
    }
    let with_ha = reports.pop().unwrap_or_else(|| unreachable!("three runs"));
    let without_ha = reports.pop().unwrap_or_else(|| unreachable!("three runs"));
    let recovery = reports.pop().unwrap_or_else(|| unreachable!("three runs"));
    let rows = rows(&recovery, &without_ha, &with_ha, base);
    let passed = [&recovery, &without_ha, &with_ha]
        .iter()
        .all(|r| r.verdict == "pass");
    let report = ClaimsReport {
        recovery,
        without_ha,
        with_ha,
        rows,
        passed,
    };
    let _ = std::fs::write(base.report_dir.join("claims.md"), markdown(&report));
    let _ = std::fs::write(
        base.report_dir.join("claims.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    );
    Ok(report)
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

/// Acknowledged tasks that ended as built, in per cent.
fn preserved(r: &ChaosReport) -> f64 {
    let bad = r.lost + r.duplicated + r.wrong_outcome;
    percent(
        r.acknowledged.saturating_sub(bad) as f64,
        r.acknowledged as f64,
    )
}

/// The median of `values`, or `None` when empty.
fn median(values: Vec<f64>) -> Option<f64> {
    (!values.is_empty()).then(|| super::median(&values))
}

/// The median change (per cent) of the coordinators' cores and peak memory in the window
/// after each fault against the window before it.
fn resource_impact(r: &ChaosReport) -> (Option<f64>, Option<f64>) {
    let resources: Vec<_> = r.faults.iter().filter_map(|f| f.resources).collect();
    let cpu = median(
        (resources.iter())
            .filter(|x| x.cores_before > 0.0)
            .map(|x| 100.0 * (x.cores_after / x.cores_before - 1.0))
            .collect(),
    );
    let memory = median(
        (resources.iter())
            .filter(|x| x.rss_mean_before > 0.0)
            .map(|x| 100.0 * (x.rss_peak_after as f64 / x.rss_mean_before - 1.0))
            .collect(),
    );
    (cpu, memory)
}

fn rows(
    recovery: &ChaosReport,
    without: &ChaosReport,
    with: &ChaosReport,
    base: &ClaimsArgs,
) -> Vec<Row> {
    let row = |claim: &str, claimed: &str, measured: String, beaten: Option<bool>| Row {
        claim: claim.into(),
        claimed: claimed.into(),
        measured,
        beaten,
    };
    let recoveries = &recovery.worker_recoveries;
    let attempts = recoveries.succeeded + recoveries.failed;
    let success = percent(recoveries.succeeded as f64, attempts as f64);
    let back_mean = {
        let back: Vec<f64> = (recovery.faults.iter())
            .filter_map(|f| f.worker_back_ms)
            .collect();
        back.iter().sum::<f64>() / back.len().max(1) as f64
    };
    let reconnected = percent(recovery.workers_back as f64, recovery.worker_faults as f64);
    let (cpu, memory) = resource_impact(recovery);
    let impact_beaten = match (cpu, memory) {
        (Some(c), Some(m)) => Some(c < 30.0 && m < 30.0),
        _ => None,
    };
    let show = |x: Option<f64>| x.map_or("—".into(), |v| format!("{v:+.0} %"));
    let continuity =
        |r: &ChaosReport| percent(r.tasks_first_attempt as f64, r.tasks_finished as f64);
    let rate = format!(
        "one coordinator SIGKILL every ~{:.0} s",
        with.runtime_s / with.faults_injected.max(1) as f64
    );
    vec![
        row(
            "recovery success rate",
            "> 95 %",
            format!(
                "{success:.1} % ({} of {attempts} failed workers brought back; {} of {} \
                 attempts in `worker_recovery_history` succeeded)",
                recoveries.succeeded,
                recovery.worker_recovery_attempts.succeeded,
                recovery.worker_recovery_attempts.succeeded
                    + recovery.worker_recovery_attempts.failed
            ),
            (attempts > 0).then_some(success > 95.0),
        ),
        row(
            "average recovery time",
            "< 30 s",
            format!(
                "{:.0} ms mean, p99 {:.0} ms from a faulted worker's restart (or resume) \
                 until the leader counts it healthy",
                back_mean, recovery.worker_back.p99_ms
            ),
            Some(recovery.worker_back.samples > 0 && back_mean < 30_000.0),
        ),
        row(
            "task preservation rate",
            "> 99 %",
            format!(
                "{:.2} % ({} acknowledged tasks through {} worker faults: {} lost, {} twice, \
                 {} wrong)",
                preserved(recovery),
                recovery.acknowledged,
                recovery.worker_faults,
                recovery.lost,
                recovery.duplicated,
                recovery.wrong_outcome
            ),
            Some(preserved(recovery) > 99.0),
        ),
        row(
            "resource impact during recovery",
            "< 30 % increase",
            format!(
                "coordinators' CPU {} and peak memory {} in the 5 s after a worker fault \
                 against the 5 s before (medians)",
                show(cpu),
                show(memory)
            ),
            impact_beaten,
        ),
        row(
            "worker reconnection rate",
            "> 90 %",
            format!(
                "{reconnected:.1} % ({} of {} faulted workers healthy again within 30 s)",
                recovery.workers_back, recovery.worker_faults
            ),
            Some(reconnected > 90.0),
        ),
        row(
            "coordinator uptime (without → with HA)",
            "99.5 % → 99.99 %",
            format!(
                "{:.3} % → {:.3} % at {rate} (writes acknowledged by a probe every 20 ms)",
                100.0 * without.availability,
                100.0 * with.availability
            ),
            Some(with.availability > 0.9999),
        ),
        row(
            "recovery time after a coordinator failure (without → with)",
            "45–60 s → 2–5 s",
            format!(
                "{:.0} / {:.0} ms → {:.0} / {:.0} ms (kill → first write acknowledged, p50 / \
                 p99; the supervisor restarts after {} ms)",
                without.write_outage.p50_ms,
                without.write_outage.p99_ms,
                with.write_outage.p50_ms,
                with.write_outage.p99_ms,
                base.restart_delay_ms
            ),
            Some(with.write_outage.samples > 0 && with.write_outage.p99_ms < 2_000.0),
        ),
        row(
            "test continuity (without → with)",
            "85 % → 99.8 %",
            format!(
                "{:.2} % → {:.2} % of finished tasks ran once, uninterrupted ({} → {} tasks)",
                continuity(without),
                continuity(with),
                without.tasks_finished,
                with.tasks_finished
            ),
            Some(continuity(with) > 99.8),
        ),
        row(
            "data preservation (without → with)",
            "98 % → 99.95 %",
            format!(
                "{:.2} % → {:.2} % of acknowledged tasks present with their right result \
                 ({} → {})",
                preserved(without),
                preserved(with),
                without.acknowledged,
                with.acknowledged
            ),
            Some(preserved(with) > 99.95),
        ),
        row(
            "resource utilization (without → with)",
            "100 % → 60–75 %",
            format!(
                "{:.2} → {:.2} cores, {:.0} → {:.0} MiB peak for the coordinators ({:.0} % of \
                 the CPU, three copies of the state instead of one)",
                without.coordinator_cores,
                with.coordinator_cores,
                without.coordinator_peak_rss_bytes as f64 / (1 << 20) as f64,
                with.coordinator_peak_rss_bytes as f64 / (1 << 20) as f64,
                percent(with.coordinator_cores, without.coordinator_cores)
            ),
            Some(with.coordinator_cores <= 0.75 * without.coordinator_cores),
        ),
    ]
}

/// The claims table in Markdown, with each run's summary.
pub fn markdown(r: &ClaimsReport) -> String {
    let mut out = String::from("| claim | claimed | measured | beaten |\n|---|---|---|---|\n");
    for row in &r.rows {
        let beaten = match row.beaten {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not measurable here",
        };
        out += &format!(
            "| {} | {} | {} | {beaten} |\n",
            row.claim, row.claimed, row.measured
        );
    }
    for (name, run) in [
        ("recovery", &r.recovery),
        ("without HA", &r.without_ha),
        ("with HA", &r.with_ha),
    ] {
        out += &format!("\n{name}:\n```\n{}```\n", summary(run));
    }
    out
}

/// The report as text (the Markdown table) or JSON.
pub fn render(r: &ClaimsReport, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(r).unwrap_or_default() + "\n",
        Output::Table => markdown(r),
    }
}
