//! `testfleet cluster members [-o json]`: the Raft membership as the leader holds it — each
//! member's id, address, role (`voter` or `learner`), how far its log matches the leader's
//! and how many entries it lags behind — like `etcdctl member list` or Nomad's `operator raft
//! list-peers`.
//!
//! The nodes named on the command line are asked who leads (`testfleet status`'s walk), then
//! the leader is asked for its view: only it knows the followers' positions. Without a known
//! leader the membership is shown as the freshest answer has it, without positions, and the
//! command says so (exit 5).

use serde::Serialize;

use super::{CliError, Output, Remote, table};

/// One member as the leader sees it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemberLine {
    pub id: u64,
    pub addr: String,
    /// `voter` or `learner`.
    pub role: String,
    pub leader: bool,
    /// The index up to which its log matches the leader's.
    pub matched: Option<u64>,
    /// Entries behind the leader's last one.
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard from it (none for the leader).
    pub heard_ms: Option<u64>,
}

/// The membership (`-o json` prints it as is).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Members {
    pub leader_id: u64,
    pub term: u64,
    pub leader_last_log_index: Option<u64>,
    pub members: Vec<MemberLine>,
}

/// Asks the leader for its view of the membership.
pub async fn members(remote: &Remote) -> Result<Members, CliError> {
    let status = super::status::collect(remote).await?;
    let Some(leader_addr) = status.leader_addr.clone() else {
        let seen: Vec<String> = status
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "{} ({})",
                    n.addr,
                    n.role.as_deref().unwrap_or("unreachable")
                )
            })
            .collect();
        return Err(CliError::Unavailable(format!(
            "no leader is known (an election may be under way), so no member's position can be \
             read; members seen: {}",
            seen.join(", ")
        )));
    };
    let (_, answer) = super::status::ask(leader_addr.clone(), &remote.credentials).await;
    let leader = answer.map_err(|e| {
        CliError::Unavailable(format!("the leader at {leader_addr} did not answer: {e}"))
    })?;
    let last = leader.last_log_index;
    let mut members: Vec<MemberLine> = leader
        .members
        .iter()
        .map(|m| MemberLine {
            id: m.id,
            addr: m.addr.clone(),
            role: if m.voter { "voter" } else { "learner" }.to_string(),
            leader: Some(m.id) == leader.leader_id,
            matched: m.matched,
            lag: match (last, m.matched) {
                (Some(last), Some(matched)) => Some(last.saturating_sub(matched)),
                _ => None,
            },
            heard_ms: m.millis_since_heard,
        })
        .collect();
    members.sort_by_key(|m| m.id);
    Ok(Members {
        leader_id: leader.node_id,
        term: leader.term,
        leader_last_log_index: last,
        members,
    })
}

/// The table or JSON `members` prints.
pub fn render(members: &Members, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(members).unwrap_or_default() + "\n";
    }
    let dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let rows: Vec<Vec<String>> = members
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.addr.clone(),
                m.role.clone(),
                if m.leader {
                    "*".to_string()
                } else {
                    String::new()
                },
                dash(m.matched),
                dash(m.lag),
                m.heard_ms.map_or("-".to_string(), |ms| {
                    format!("{:.1}s ago", ms as f64 / 1000.0)
                }),
            ]
        })
        .collect();
    format!(
        "Leader: {}   Term: {}   Last log index: {}\n\n{}",
        members.leader_id,
        members.term,
        dash(members.leader_last_log_index),
        table(
            &["ID", "ADDRESS", "ROLE", "LEADER", "MATCHED", "LAG", "HEARD"],
            &rows
        )
    )
}

/// `testfleet cluster transfer-leader [ID]`: asks the leader (through any node) to hand over
/// to `to`, or to its most caught-up follower, and waits until the new leader leads.
pub async fn transfer_leader(
    remote: &Remote,
    to: Option<u64>,
    output: Output,
) -> Result<String, CliError> {
    let reply = super::jobs::with_retry_control(remote, |mut client| async move {
        client
            .transfer_leader(crate::proto::TransferLeaderRequest { to })
            .await
            .map(|r| r.into_inner())
    })
    .await?;
    Ok(match output {
        Output::Json => {
            serde_json::json!({
                "from": reply.from,
                "to": reply.to,
                "term": reply.term,
                "millis": reply.millis,
            })
            .to_string()
                + "\n"
        }
        Output::Table => format!(
            "leadership moved from node {} to node {} (term {}) in {} ms\n",
            reply.from, reply.to, reply.term, reply.millis
        ),
    })
}
