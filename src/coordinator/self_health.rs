//! Each coordinator samples its own health and records it in the log.
//!
//! Every [`SAMPLE_EVERY`] a node samples its process (CPU, RSS), its data directory's disk,
//! the machine's TCP errors and its own request error rate, and sends the sample through the
//! leader as a `HealthSample` command (a follower uses the leader's `ReportHealth`), so any
//! node can show the health of the whole cluster from its DuckDB.
//!
//! A leader whose own health is critical for [`CRITICAL_SAMPLES`] samples in a row hands
//! leadership to another voter (ARCHITECTURE.md § Self-health): a sick leader slows the whole
//! cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Coordinator;
use crate::health::sampler::{HealthLevel, HealthLimits, Sampler, assess};
use crate::proto::HealthReport;
use crate::proto::control_client::ControlClient;
use crate::state::command::{Command, Timestamp};

/// How often a node samples itself.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Consecutive critical samples after which a leader steps down.
pub const CRITICAL_SAMPLES: u32 = 3;

/// Runs until the node shuts down (the task is aborted with the server).
pub async fn run(node: Arc<Coordinator>) {
    let mut sampler = match Sampler::new(node.config().data_dir()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("self-health sampling is off: {e}");
            return;
        }
    };
    let limits = HealthLimits::default();
    let mut critical_in_a_row = 0u32;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let sample = match sampler.sample(Instant::now()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot sample this node's health: {e}");
                continue;
            }
        };
        let error_rate = node.errors.take_rate();
        let assessment = assess(&sample, error_rate, &limits);
        if assessment.level == HealthLevel::Critical {
            critical_in_a_row += 1;
            tracing::warn!(reasons = ?assessment.reasons, "this node's health is critical");
        } else {
            critical_in_a_row = 0;
        }
        let at = Timestamp::now();
        let command = sample.to_command(node.node_id(), error_rate, at);
        if node.leadership().is_some() {
            if let Err(e) = node.write(command).await {
                tracing::debug!("health sample not recorded: {e}");
            }
            if critical_in_a_row >= CRITICAL_SAMPLES {
                step_down(&node).await;
                critical_in_a_row = 0;
            }
        } else if let Command::HealthSample {
            cpu,
            mem_bytes,
            disk_free_bytes,
            net_errors,
            error_rate,
            ..
        } = command
        {
            send_to_leader(
                &node,
                HealthReport {
                    node_id: node.node_id(),
                    cpu,
                    mem_bytes,
                    disk_free_bytes,
                    net_errors,
                    error_rate,
                    at_us: at.micros(),
                },
            )
            .await;
        }
    }
}

async fn send_to_leader(node: &Coordinator, report: HealthReport) {
    let metrics = node.metrics();
    let Some(addr) = metrics.current_leader.and_then(|id| {
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }) else {
        return;
    };
    match node.forwarding_channel(&addr) {
        Ok(channel) => {
            let mut client = ControlClient::new(channel);
            if let Err(e) = client.report_health(report).await {
                tracing::debug!("health sample not recorded by the leader: {e}");
            }
        }
        Err(e) => tracing::debug!("cannot reach the leader at {addr}: {e}"),
    }
}

/// Transfers leadership to the most caught-up other voter.
async fn step_down(node: &Coordinator) {
    let metrics = node.metrics();
    let target = metrics
        .membership_config
        .voter_ids()
        .find(|id| *id != node.node_id());
    let Some(target) = target else {
        tracing::warn!("health is critical but there is no other voter to lead");
        return;
    };
    tracing::warn!(to = target, "health critical: transferring leadership");
    if let Err(e) = node.raft().trigger().transfer_leader(target).await {
        tracing::warn!("leadership transfer failed: {e}");
    }
}
