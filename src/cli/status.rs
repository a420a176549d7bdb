//! `testfleet status`: the cluster as its members see it.
//!
//! Every listed address is asked for its status, then every member those answers name,
//! concurrently and with a short timeout, so one dead node never hides the others. The
//! report answers as long as any node answers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{CliError, Output, Remote, connect, table};
use crate::auth::Credentials;
use crate::proto::{NodeStatus, StatusRequest};

/// One node's line in the report.
#[derive(Clone, Debug, Serialize)]
pub struct NodeLine {
    pub id: Option<u64>,
    pub addr: String,
    pub reachable: bool,
    pub role: Option<String>,
    pub term: Option<u64>,
    pub leader_id: Option<u64>,
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    /// The last entry purged from the node's log (behind a snapshot).
    pub purged_index: Option<u64>,
    pub committed: Option<u64>,
    pub voter: Option<bool>,
    /// The node's own health at its latest sample: ok, degraded or critical.
    pub health: Option<String>,
    /// Why it is not ok.
    pub health_reasons: Vec<String>,
    pub error: Option<String>,
}

/// The whole report (`-o json` prints it as is).
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub leader_id: Option<u64>,
    pub leader_addr: Option<String>,
    pub term: u64,
    pub nodes: Vec<NodeLine>,
}

pub(super) async fn ask(
    addr: String,
    credentials: &Credentials,
) -> (String, Result<NodeStatus, String>) {
    let result = tokio::time::timeout(Duration::from_secs(3), async {
        let mut client = connect(&addr, credentials)
            .await
            .map_err(|e| e.to_string())?;
        client
            .status(StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|e| match super::from_status(e) {
                CliError::Denied(why) => format!("{DENIED}{why}"),
                other => other.to_string(),
            })
    })
    .await
    .unwrap_or_else(|_| Err("timed out after 3 s".to_string()));
    (addr, result)
}

/// Marks a node's answer as a refusal of the credentials, to exit as one.
const DENIED: &str = "denied: ";

/// Asks every listed node and every member they know of.
pub async fn collect(remote: &Remote) -> Result<ClusterStatus, CliError> {
    let mut answers: BTreeMap<String, Result<NodeStatus, String>> = BTreeMap::new();
    let mut pending: Vec<String> = remote.addrs.clone();
    while !pending.is_empty() {
        let asked =
            futures::future::join_all(pending.drain(..).map(|addr| ask(addr, &remote.credentials)))
                .await;
        for (addr, answer) in asked {
            if let Ok(status) = &answer {
                for member in &status.members {
                    if !answers.contains_key(&member.addr) && !pending.contains(&member.addr) {
                        pending.push(member.addr.clone());
                    }
                }
            }
            answers.insert(addr, answer);
        }
        pending.retain(|a| !answers.contains_key(a));
    }
    if answers.values().all(Result::is_err)
        && let Some(Err(why)) = answers
            .values()
            .find(|a| a.as_ref().is_err_and(|e| e.starts_with(DENIED)))
    {
        return Err(CliError::Denied(why[DENIED.len()..].to_string()));
    }
    if answers.values().all(Result::is_err) {
        let why: Vec<String> = answers
            .iter()
            .map(|(a, e)| format!("{a}: {}", e.as_ref().err().cloned().unwrap_or_default()))
            .collect();
        return Err(CliError::Unavailable(format!(
            "no coordinator answered ({})",
            why.join("; ")
        )));
    }
    // The freshest view of the membership and leadership: the answer with the highest term.
    let best = answers
        .values()
        .filter_map(|a| a.as_ref().ok())
        .max_by_key(|s| (s.term, s.leader_id.is_some(), s.last_applied))
        .cloned();
    let voters: BTreeMap<String, (u64, bool)> = best
        .iter()
        .flat_map(|s| s.members.iter().map(|m| (m.addr.clone(), (m.id, m.voter))))
        .collect();
    let mut nodes: Vec<NodeLine> = answers
        .into_iter()
        .map(|(addr, answer)| {
            let member = voters.get(&addr).copied();
            match answer {
                Ok(s) => NodeLine {
                    id: Some(s.node_id),
                    addr,
                    reachable: true,
                    role: Some(s.role),
                    term: Some(s.term),
                    leader_id: s.leader_id,
                    last_applied: s.last_applied,
                    last_log_index: s.last_log_index,
                    purged_index: s.purged_index,
                    committed: s.committed,
                    voter: member.map(|m| m.1),
                    health: Some(s.health_level).filter(|h| !h.is_empty()),
                    health_reasons: s.health_reasons,
                    error: None,
                },
                Err(e) => NodeLine {
                    id: member.map(|m| m.0),
                    addr,
                    reachable: false,
                    role: None,
                    term: None,
                    leader_id: None,
                    last_applied: None,
                    last_log_index: None,
                    purged_index: None,
                    committed: None,
                    voter: member.map(|m| m.1),
                    health: None,
                    health_reasons: Vec::new(),
                    error: Some(e),
                },
            }
        })
        .collect();
    nodes.sort_by_key(|n| (n.id.unwrap_or(u64::MAX), n.addr.clone()));
    let leader_id = best.as_ref().and_then(|s| s.leader_id);
    Ok(ClusterStatus {
        leader_id,
        leader_addr: best
            .as_ref()
            .map(|s| s.leader_addr.clone())
            .filter(|a| !a.is_empty()),
        term: best.as_ref().map_or(0, |s| s.term),
        nodes,
    })
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

/// A node's health as the table shows it: the level, and why when it is not ok.
fn health_cell(node: &NodeLine) -> String {
    match &node.health {
        None => "-".to_string(),
        Some(level) if node.health_reasons.is_empty() => level.clone(),
        Some(level) => format!("{level}: {}", node.health_reasons.join("; ")),
    }
}

/// Renders the report.
pub fn render(status: &ClusterStatus, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(status).unwrap_or_default() + "\n",
        Output::Table => {
            let mut out = format!(
                "Leader: {}   Term: {}\n\n",
                match (&status.leader_id, &status.leader_addr) {
                    (Some(id), Some(addr)) => format!("{id} ({addr})"),
                    (Some(id), None) => id.to_string(),
                    _ => "none known".to_string(),
                },
                status.term
            );
            let rows: Vec<Vec<String>> = status
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        opt(&n.id),
                        n.addr.clone(),
                        n.role.clone().unwrap_or_else(|| "unreachable".to_string()),
                        n.voter.map_or("-".to_string(), |v| {
                            if v { "voter" } else { "learner" }.to_string()
                        }),
                        opt(&n.term),
                        opt(&n.committed),
                        opt(&n.last_applied),
                        opt(&n.purged_index),
                        health_cell(n),
                        n.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "ID",
                    "ADDRESS",
                    "ROLE",
                    "VOTER",
                    "TERM",
                    "COMMITTED",
                    "APPLIED",
                    "PURGED",
                    "HEALTH",
                    "ERROR",
                ],
                &rows,
            ));
            out
        }
    }
}
