//! Handing leadership over on an operator's request (`testfleet cluster transfer-leader
//! [ID]`, `Control.TransferLeader`), as Consul's `operator raft transfer-leader` does.
//!
//! [`choose`] (pure) checks the request against the membership the leader holds — the node
//! named must be a voter and not this leader — or, when none is named, picks the follower
//! whose log matches the leader's furthest (ties: the lowest id), so the new leader has the
//! least to catch up. [`transfer`] asks openraft to hand over (the leader sends the target a
//! `TransferLeader` and steps down; the target starts an election at once) and waits until the
//! target leads, or says it did not within [`WAIT`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tonic::Status;

use super::Coordinator;
use crate::proto::TransferLeaderReply;

/// How long the handover may take before the request says it did not happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// The voter to hand leadership to: `requested`, if it may lead, or the most caught-up
/// follower. `matched` is each member's matched log index as the leader tracks it.
pub fn choose(
    leader: u64,
    voters: &BTreeSet<u64>,
    members: &BTreeSet<u64>,
    matched: &BTreeMap<u64, Option<u64>>,
    requested: Option<u64>,
) -> Result<u64, String> {
    if let Some(to) = requested {
        if to == leader {
            return Err(format!("node {to} already leads"));
        }
        if !members.contains(&to) {
            return Err(format!(
                "node {to} is not a member (members: {}); see `testfleet cluster members`",
                list(members)
            ));
        }
        if !voters.contains(&to) {
            return Err(format!(
                "node {to} is a learner, which cannot lead; promote it first"
            ));
        }
        return Ok(to);
    }
    voters
        .iter()
        .filter(|id| **id != leader)
        .max_by_key(|id| (matched.get(id).copied().flatten(), std::cmp::Reverse(**id)))
        .copied()
        .ok_or_else(|| "this leader is the only voter: there is no one to hand over to".into())
}

fn list(ids: &BTreeSet<u64>) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Hands leadership from this node (the leader) to the chosen voter and waits until it leads.
pub async fn transfer(
    node: &Coordinator,
    requested: Option<u64>,
) -> Result<TransferLeaderReply, Status> {
    // The membership and each member's matched index, as `Control.Status` reports them.
    let status = super::control::node_status(node);
    let voters: BTreeSet<u64> = (status.members.iter())
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    let members: BTreeSet<u64> = status.members.iter().map(|m| m.id).collect();
    let matched: BTreeMap<u64, Option<u64>> =
        status.members.iter().map(|m| (m.id, m.matched)).collect();
    let to = choose(status.node_id, &voters, &members, &matched, requested)
        .map_err(Status::failed_precondition)?;
    let started = Instant::now();
    tracing::info!(to, "an operator asked to hand leadership over");
    node.raft()
        .trigger()
        .transfer_leader(to)
        .await
        .map_err(|e| Status::unavailable(format!("the handover could not start: {e}")))?;
    use openraft::async_runtime::WatchReceiver;
    let mut watch = node.raft().metrics();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        {
            let m = watch.borrow_watched();
            if m.current_leader == Some(to) {
                return Ok(TransferLeaderReply {
                    from: status.node_id,
                    to,
                    term: m.current_term,
                    millis: started.elapsed().as_millis() as u64,
                });
            }
        }
        match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(Status::unavailable(format!(
                    "node {to} did not take over within {} s (it may be down or behind); \
                     leadership may have moved elsewhere: see `testfleet status`",
                    WAIT.as_secs()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_named_node_must_be_a_voter_other_than_the_leader() {
        let voters = set(&[1, 2, 3]);
        let members = set(&[1, 2, 3, 4]);
        let matched = BTreeMap::new();
        assert_eq!(choose(1, &voters, &members, &matched, Some(2)), Ok(2));
        let refused = |to| choose(1, &voters, &members, &matched, Some(to)).unwrap_err();
        assert_eq!(refused(1), "node 1 already leads");
        assert!(refused(4).contains("learner"), "{}", refused(4));
        assert!(
            refused(9).contains("not a member (members: 1, 2, 3, 4)"),
            "{}",
            refused(9)
        );
    }

    #[test]
    fn without_a_name_the_most_caught_up_follower_is_chosen() {
        let voters = set(&[1, 2, 3]);
        let members = voters.clone();
        let matched = BTreeMap::from([(1, Some(50)), (2, Some(40)), (3, Some(48))]);
        assert_eq!(choose(1, &voters, &members, &matched, None), Ok(3));
        // Equal positions: the lowest id; unknown positions come last.
        let tied = BTreeMap::from([(2, Some(48)), (3, Some(48))]);
        assert_eq!(choose(1, &voters, &members, &tied, None), Ok(2));
        let unknown = BTreeMap::from([(2, None), (3, Some(1))]);
        assert_eq!(choose(1, &voters, &members, &unknown, None), Ok(3));
        let alone = set(&[1]);
        assert!(
            choose(1, &alone, &alone, &matched, None)
                .unwrap_err()
                .contains("only voter")
        );
    }
}
