//! Each coordinator samples its own health, records it in the log, and acts on it
//! (ARCHITECTURE.md § Self-health).
//!
//! Every `[self_healing] sample_interval_ms` a node samples its process (CPU, RSS), its data
//! directory's disk, the machine's TCP errors and its own request error rate, judges the
//! sample against `[self_healing.limits]`, and sends it through the leader as a
//! `HealthSample` command (a follower uses the leader's `ReportHealth`), so any node can show
//! the health of the whole cluster from its DuckDB. Its latest verdict is kept for
//! `Control.Status` ([`Latest`]).
//!
//! What to do about a sample is decided by the pure [`Healer`]; this loop does the I/O:
//!
//! * warnings in the log, rate-limited;
//! * disk and memory relief ([`super::relief`]);
//! * a handover: a leader critical on `critical_samples` samples in a row hands leadership to
//!   the healthiest caught-up follower ([`choose_successor`], over each follower's latest
//!   `health_samples` row and the matched indexes the leader tracks).
//!
//! Every action becomes a `system_recovery_history` row (`system_status` = `self_healing`, the
//! action and its measurements in `details`), proposed by the leader; a follower sends it to
//! the leader with `Control.ReportRecovery`, since it cannot propose.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Coordinator;
use crate::health::healing::{
    Action, Follower, Healer, Kind, Observation, Recorded, Rules, SuccessorRules, choose_successor,
    disk_pressure, memory_pressure,
};
use crate::health::sampler::{Assessment, HealthLevel, Sampler, assess};
use crate::proto::control_client::ControlClient;
use crate::proto::{HealthReport, RecoveryReport};
use crate::state::command::{Command, Timestamp};
use crate::state::limits;

/// `system_recovery_history.system_status` of every self-healing row.
pub const SYSTEM_STATUS: &str = "self_healing";

/// How long the record of an action keeps trying to reach a leader (leadership may be
/// moving: a handover's own record goes to the new leader).
const RECORD_WAIT: Duration = Duration::from_secs(15);

/// This node's latest health verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Latest {
    pub level: HealthLevel,
    pub reasons: Vec<String>,
    pub at: Timestamp,
}

impl Latest {
    /// The level as `Control.Status` names it.
    pub fn level_name(&self) -> &'static str {
        level_name(self.level)
    }
}

fn level_name(level: HealthLevel) -> &'static str {
    match level {
        HealthLevel::Ok => "ok",
        HealthLevel::Degraded => "degraded",
        HealthLevel::Critical => "critical",
    }
}

/// Runs until the node shuts down (the task is aborted with the server).
pub async fn run(node: Arc<Coordinator>) {
    let healing = node.config().self_healing.clone();
    let mut sampler = match Sampler::new(node.config().data_dir()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("self-health sampling is off: {e}");
            return;
        }
    };
    let mut healer = Healer::new(Rules::from_config(&healing));
    let mut tick = tokio::time::interval(healing.sample_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let sample = match sampler.sample(now) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot sample this node's health: {e}");
                continue;
            }
        };
        let error_rate = node.errors.take_rate();
        let assessment = assess(&sample, error_rate, &healing.limits);
        let at = Timestamp::now();
        *node.health.lock().unwrap_or_else(|e| e.into_inner()) = Some(Latest {
            level: assessment.level,
            reasons: assessment.reasons.clone(),
            at,
        });
        let leader = node.leadership().is_some();
        record_sample(
            &node,
            sample.to_command(node.node_id(), error_rate, at),
            leader,
        )
        .await;
        let actions = healer.observe(Observation {
            now,
            level: assessment.level,
            disk_pressure: disk_pressure(&sample, &healing.limits),
            memory_pressure: memory_pressure(&sample, &healing),
            leader,
        });
        for action in actions {
            match action {
                Action::Warn { level, changed } => warn(level, changed, &assessment),
                Action::RelieveDisk => {
                    let (success, details) =
                        super::relief::relieve_disk(&node, &sample, &assessment).await;
                    record(&node, success, details);
                }
                Action::RelieveMemory => {
                    let (success, details) =
                        super::relief::relieve_memory(&node, &sample, &assessment).await;
                    record(&node, success, details);
                }
                Action::RestoreMemory => {
                    let (success, details) = super::relief::restore_memory(&node).await;
                    record(&node, success, details);
                }
                Action::HandOver => hand_over(&node, &assessment, &mut healer).await,
            }
        }
    }
}

/// Logs the node's health: a warning while degraded or critical, a note when it is ok again.
fn warn(level: HealthLevel, changed: bool, assessment: &Assessment) {
    let reasons = &assessment.reasons;
    match level {
        HealthLevel::Ok => tracing::info!("this node's health is ok again"),
        HealthLevel::Degraded => tracing::warn!(
            ?reasons,
            changed,
            "early warning: this node's health is degraded"
        ),
        HealthLevel::Critical => {
            tracing::warn!(?reasons, changed, "this node's health is critical")
        }
    }
}

/// Records a sample: the leader proposes it, a follower sends it to the leader.
async fn record_sample(node: &Coordinator, command: Command, leader: bool) {
    if leader {
        if let Err(e) = node.write(command).await {
            tracing::debug!("health sample not recorded: {e}");
        }
        return;
    }
    let Command::HealthSample {
        node: node_id,
        cpu,
        mem_bytes,
        disk_free_bytes,
        net_errors,
        error_rate,
        at,
    } = command
    else {
        return;
    };
    let Some(mut client) = leader_client(node) else {
        return;
    };
    let report = HealthReport {
        node_id,
        cpu,
        mem_bytes,
        disk_free_bytes,
        net_errors,
        error_rate,
        at_us: at.micros(),
    };
    if let Err(e) = client.report_health(report).await {
        tracing::debug!("health sample not recorded by the leader: {e}");
    }
}

/// A client of the leader this node knows of, over the forwarding channel.
fn leader_client(node: &Coordinator) -> Option<ControlClient<crate::auth::AuthChannel>> {
    let metrics = node.metrics();
    let addr = metrics.current_leader.and_then(|id| {
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    })?;
    match node.forwarding_channel(&addr) {
        Ok(channel) => Some(ControlClient::new(channel)),
        Err(e) => {
            tracing::debug!("cannot reach the leader at {addr}: {e}");
            None
        }
    }
}

/// Records a self-healing action as a `system_recovery_history` row, in the background: the
/// leader proposes it; a follower (or a leader that just handed over) sends it to the leader
/// with `ReportRecovery`, trying for [`RECORD_WAIT`] while leadership settles.
pub(super) fn record(node: &Arc<Coordinator>, success: bool, details: serde_json::Value) {
    let command = Command::RecordSystemRecovery {
        system_status: SYSTEM_STATUS.to_string(),
        success,
        affected_workers: 0,
        affected_tasks: 0,
        details_json: details.to_string(),
        at: Timestamp::now(),
    };
    if let Err(e) = limits::check(&command) {
        tracing::warn!("self-healing action not recorded: {e}");
        return;
    }
    let node = node.clone();
    tokio::spawn(async move {
        let deadline = Instant::now() + RECORD_WAIT;
        let mut retry = tokio::time::interval(Duration::from_millis(200));
        loop {
            retry.tick().await;
            let outcome = if node.leadership().is_some() {
                node.write(command.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if let Some(mut client) = leader_client(&node) {
                let Command::RecordSystemRecovery {
                    system_status,
                    success,
                    affected_workers,
                    affected_tasks,
                    details_json,
                    at,
                } = command.clone()
                else {
                    return;
                };
                let report = RecoveryReport {
                    node_id: node.node_id(),
                    system_status,
                    success,
                    affected_workers,
                    affected_tasks,
                    details_json,
                    at_us: at.micros(),
                };
                client
                    .report_recovery(report)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.message().to_string())
            } else {
                Err("no leader is known".to_string())
            };
            match outcome {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    tracing::warn!("self-healing action not recorded: {e}");
                    return;
                }
                Err(_) => {}
            }
        }
    });
}

/// Hands leadership to the healthiest caught-up follower, and records the handover (or that
/// nobody could take over, at most once per cooldown).
async fn hand_over(node: &Arc<Coordinator>, assessment: &Assessment, healer: &mut Healer) {
    let healing = &node.config().self_healing;
    let status = super::control::node_status(node);
    if status.role != "leader" {
        return;
    }
    let rows = match latest_samples(node).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!("cannot read the followers' health samples: {e}");
            BTreeMap::new()
        }
    };
    let followers: Vec<Follower> = (status.members.iter())
        .filter(|m| m.voter && m.id != status.node_id)
        .map(|m| Follower {
            id: m.id,
            matched: m.matched,
            latest: rows.get(&m.id).copied(),
        })
        .collect();
    let rules = SuccessorRules {
        max_lag: healing.successor_max_lag,
        stale_after: healing.sample_interval() * healing.stale_after_samples,
        limits: healing.limits.clone(),
    };
    let leader_last = status.last_log_index.unwrap_or(0);
    let (chosen, verdicts) = choose_successor(leader_last, &followers, Timestamp::now(), &rules);
    let mut details = json!({
        "action": "leader_transfer",
        "node": status.node_id,
        "level": level_name(assessment.level),
        "reasons": assessment.reasons,
        "critical_samples": healing.critical_samples,
        "leader_last_log_index": leader_last,
        "term": status.term,
        "candidates": verdicts,
    });
    let Some(to) = chosen else {
        tracing::warn!(
            ?verdicts,
            "health critical, but no follower is caught up and healthy enough to take over"
        );
        if healer.allow(Kind::NoSuccessor, Instant::now()) {
            details["error"] = json!("no follower is caught up with a fresh, non-critical sample");
            record(node, false, details);
        }
        return;
    };
    tracing::warn!(to, reasons = ?assessment.reasons, "health critical: transferring leadership");
    match super::transfer::transfer(node, Some(to)).await {
        Ok(reply) => {
            details["to"] = json!(reply.to);
            details["new_term"] = json!(reply.term);
            details["took_ms"] = json!(reply.millis);
            tracing::warn!(
                to,
                millis = reply.millis,
                "leadership handed over on critical health"
            );
            record(node, true, details);
        }
        Err(e) => {
            tracing::warn!(to, "leadership transfer failed: {}", e.message());
            details["to"] = json!(to);
            details["error"] = json!(e.message());
            record(node, false, details);
        }
    }
}

/// Each node's latest `health_samples` row, from this node's DuckDB (flushed first, so the
/// reports applied so far are in it).
async fn latest_samples(node: &Coordinator) -> io::Result<BTreeMap<u64, Recorded>> {
    let state = node.state().clone();
    tokio::task::spawn_blocking(move || {
        state.flush()?;
        let conn = state.reader()?;
        let mut statement = conn
            .prepare(
                "SELECT node_id, cpu, mem_bytes, disk_free_bytes, error_rate, \
                 epoch_us(sampled_at) FROM health_samples \
                 QUALIFY row_number() OVER (PARTITION BY node_id ORDER BY id DESC) = 1",
            )
            .map_err(io::Error::other)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)? as u64,
                    Recorded {
                        cpu: row.get(1)?,
                        mem_bytes: row.get::<_, i64>(2)?.max(0) as u64,
                        disk_free_bytes: row.get::<_, i64>(3)?.max(0) as u64,
                        error_rate: row.get(4)?,
                        at_us: row.get(5)?,
                    },
                ))
            })
            .map_err(io::Error::other)?;
        rows.collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(io::Error::other)
    })
    .await
    .map_err(io::Error::other)?
}
