//! Changing who the coordinators are, on an operator's request: `testfleet cluster add-node`,
//! `remove-node` and `snapshot` (`Control.AddNode`, `RemoveNode`, `Snapshot`, `FetchSnapshot`),
//! as etcd's `member add/remove/promote` and Nomad's `operator raft` commands do.
//!
//! [`check_add`] and [`check_remove`] are pure: they judge a request against a [`View`] of the
//! membership the leader holds and refuse, with the reason, what is unsafe or makes no sense —
//! an id or an address already in use, a non-member, the last voter, a removal that would leave
//! fewer reachable voters than a quorum, any change while another one is under way. The
//! drivers then ask openraft: a new node first joins as a **learner** (it replicates, does not
//! vote, so a slow newcomer never costs the cluster its quorum), and is promoted to voter once
//! its log caught up with the leader's; a leader asked to remove itself hands leadership over
//! first and lets the new leader remove it. Before adding a node the leader asks it who it is:
//! a typo in the id or address, or a node that already belongs to a cluster, is refused before
//! anything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use openraft::ChangeMembers;
use tonic::Status;

use super::Coordinator;
use crate::proto::control_client::ControlClient;
use crate::proto::{
    AddNodeRequest, MembershipReply, SnapshotHeader, SnapshotPart, SnapshotReply, snapshot_part,
};

/// A follower whose last heartbeat acknowledgement is older than this does not count as
/// reachable when a removal is checked against the quorum.
pub const REACHABLE_WITHIN: Duration = Duration::from_secs(3);

/// How long an added node may take to catch up before it is promoted, when the request does
/// not say.
pub const DEFAULT_CATCH_UP: Duration = Duration::from_secs(300);

/// How long a membership entry may take to commit. One that cannot (its new majority lost a
/// node meanwhile) stays pending until that node returns; the request says so instead of
/// waiting for ever.
pub const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// How long a snapshot may take to build.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

/// Longest wait for this node's metrics to show a membership change it committed.
const METRICS_WAIT: Duration = Duration::from_secs(2);

/// The bytes of a snapshot file sent in one `SnapshotPart`.
const CHUNK: usize = 1024 * 1024;

/// The membership as the leader holds it, with what the checks need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    pub leader: u64,
    pub voters: BTreeSet<u64>,
    /// Every member (voters and learners) with its address.
    pub nodes: BTreeMap<u64, String>,
    /// Members the leader heard from within [`REACHABLE_WITHIN`] (itself included).
    pub reachable: BTreeSet<u64>,
    /// A change not finished yet: a joint configuration, an uncommitted membership entry, or
    /// another operator's request this leader is still carrying out.
    pub changing: Option<String>,
}

/// What an accepted add-node request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddPlan {
    /// Add it as a learner, wait until it caught up, promote it (unless learner only).
    Add { promote: bool },
    /// It is a learner already, at this address: promote it (a second `add-node` after the
    /// first timed out waiting for it).
    Promote,
}

/// What an accepted remove-node request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovePlan {
    Voter,
    Learner,
    /// The leader itself: hand leadership to this voter, which then removes the old leader.
    HandOverTo(u64),
}

/// Judges `add-node ID ADDR` against the membership.
pub fn check_add(view: &View, id: u64, addr: &str, learner_only: bool) -> Result<AddPlan, String> {
    if let Some(change) = &view.changing {
        return Err(format!(
            "another membership change is under way ({change}); wait for it to finish and retry"
        ));
    }
    if let Some(existing) = view.nodes.get(&id) {
        if view.voters.contains(&id) {
            return Err(format!(
                "node {id} is already a voter (at {existing}); pick an unused id"
            ));
        }
        if existing != addr {
            return Err(format!(
                "node {id} is already a learner at {existing}, not {addr}; remove it first or \
                 pick an unused id"
            ));
        }
        if learner_only {
            return Err(format!("node {id} is already a learner at {addr}"));
        }
        return Ok(AddPlan::Promote);
    }
    if let Some((other, _)) = view.nodes.iter().find(|(_, a)| same_addr(a, addr)) {
        return Err(format!(
            "address {addr} is already node {other}'s; each node needs its own address"
        ));
    }
    Ok(AddPlan::Add {
        promote: !learner_only,
    })
}

/// Judges `remove-node ID` against the membership.
pub fn check_remove(view: &View, id: u64) -> Result<RemovePlan, String> {
    if let Some(change) = &view.changing {
        return Err(format!(
            "another membership change is under way ({change}); wait for it to finish and retry"
        ));
    }
    if !view.nodes.contains_key(&id) {
        return Err(format!(
            "node {id} is not a member (members: {}); see `testfleet cluster members`",
            list(view.nodes.keys())
        ));
    }
    if !view.voters.contains(&id) {
        return Ok(RemovePlan::Learner);
    }
    if view.voters.len() == 1 {
        return Err(format!(
            "node {id} is the last voter: without it the cluster could never elect a leader; \
             add another node first"
        ));
    }
    let remaining: BTreeSet<u64> = view.voters.iter().copied().filter(|v| *v != id).collect();
    let reachable = remaining.intersection(&view.reachable).count();
    let quorum = remaining.len() / 2 + 1;
    if reachable < quorum {
        let unreachable: Vec<&u64> = remaining.difference(&view.reachable).collect();
        return Err(format!(
            "removing node {id} would leave {reachable} reachable voter(s) of {}, fewer than the \
             quorum of {quorum} (unreachable: {}); bring those back first, or remove an \
             unreachable node instead",
            remaining.len(),
            list(unreachable)
        ));
    }
    if id == view.leader {
        // The most reachable remaining voter, lowest id first: the transfer checks the rest.
        let to = remaining
            .iter()
            .find(|v| view.reachable.contains(v))
            .copied()
            .expect("a quorum of remaining voters is reachable");
        return Ok(RemovePlan::HandOverTo(to));
    }
    Ok(RemovePlan::Voter)
}

/// Two addresses are the same when they are equal ignoring case (host names are).
fn same_addr(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn list<'a>(ids: impl IntoIterator<Item = &'a u64>) -> String {
    let ids: Vec<String> = ids.into_iter().map(u64::to_string).collect();
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

/// The leader's view of the membership.
pub fn view(node: &Coordinator) -> View {
    let metrics = node.metrics();
    let membership = metrics.membership_config.membership();
    let mut reachable = BTreeSet::from([metrics.id]);
    if let Some(beats) = &metrics.heartbeat {
        for (id, at) in beats {
            let recent = at
                .as_ref()
                .is_some_and(|at| openraft::Instant::elapsed(&**at) < REACHABLE_WITHIN);
            if recent {
                reachable.insert(*id);
            }
        }
    }
    let joint = membership.get_joint_config().len() > 1;
    let uncommitted =
        metrics.membership_config.log_id() != metrics.committed_membership_config.log_id();
    let running = node.membership_change_running();
    View {
        leader: metrics.id,
        voters: membership.voter_ids().collect(),
        nodes: membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect(),
        reachable,
        changing: running.or_else(|| {
            (joint || uncommitted).then(|| "a configuration change not committed yet".into())
        }),
    }
}

/// Asks the node at `addr` who it is, and refuses one that is someone else or already belongs
/// to a cluster.
async fn identify(node: &Coordinator, id: u64, addr: &str) -> Result<(), Status> {
    let status = node
        .peer_status(addr, Duration::from_secs(5))
        .await
        .map_err(|e| {
            Status::failed_precondition(format!(
                "cannot reach node {id} at {addr}: {e}; start it first (`testfleet coordinator \
                 --node-id {id} --join ...`) and check the address"
            ))
        })?;
    if status.node_id != id {
        return Err(Status::failed_precondition(format!(
            "the coordinator at {addr} is node {}, not node {id}; check the id and the address",
            status.node_id
        )));
    }
    let ours: BTreeSet<u64> = node
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    let theirs: Vec<u64> = status.members.iter().map(|m| m.id).collect();
    if !theirs.is_empty() && !theirs.iter().any(|m| ours.contains(m) && *m != id) {
        return Err(Status::failed_precondition(format!(
            "node {id} at {addr} already belongs to another cluster (its members: {}); start it \
             on an empty data directory with --join",
            list(&theirs)
        )));
    }
    Ok(())
}

/// Adds a node (this node leads): learner, catch-up, promotion.
pub async fn add(node: &Coordinator, request: &AddNodeRequest) -> Result<MembershipReply, Status> {
    let started = Instant::now();
    let (id, addr) = (request.id, request.addr.trim().to_string());
    crate::config::validate_peer_addr(&addr)
        .map_err(|reason| Status::invalid_argument(format!("bad address {addr:?}: {reason}")))?;
    let plan = check_add(&view(node), id, &addr, request.learner_only)
        .map_err(Status::failed_precondition)?;
    let _running = node.begin_membership_change(format!("adding node {id}"))?;
    let raft = node.raft();
    // The log index of the last change written, for the reply to wait for.
    let mut changed_at = None;
    let wait = match request.wait_ms {
        0 => DEFAULT_CATCH_UP,
        ms => Duration::from_millis(ms),
    };
    if let AddPlan::Add { .. } = plan {
        identify(node, id, &addr).await?;
        tracing::info!(id, addr, "an operator adds a coordinator as a learner");
        let added = tokio::time::timeout(
            wait,
            raft.add_learner(id, BasicNode { addr: addr.clone() }, true),
        )
        .await;
        match added {
            Ok(Ok(written)) => changed_at = Some(written.log_id.index),
            Ok(Err(e)) => {
                return Err(Status::aborted(format!("adding node {id} failed: {e}")));
            }
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "node {id} was added as a learner but did not catch up within {} s, so it \
                     was not promoted; check it (`testfleet cluster members` shows its lag), \
                     then run `cluster add-node {id} {addr}` again to promote it, or \
                     `cluster remove-node {id}`",
                    wait.as_secs()
                )));
            }
        }
    }
    let promote = matches!(plan, AddPlan::Promote | AddPlan::Add { promote: true });
    if promote {
        if plan == AddPlan::Promote {
            // Wait for it to catch up as the first request would have.
            wait_caught_up(node, id, wait).await?;
        }
        tracing::info!(id, "promoting the caught-up learner to voter");
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        let written = committed(
            raft.change_membership(change, true),
            &format!("promoting node {id}"),
        )
        .await?;
        changed_at = Some(written.log_id.index);
    }
    let summary = if promote {
        format!("node {id} ({addr}) is a voter")
    } else {
        format!("node {id} ({addr}) is a learner")
    };
    Ok(reply(node, summary, started, changed_at).await)
}

/// Waits until the leader's log matches `id`'s up to the leader's last index at the start.
async fn wait_caught_up(node: &Coordinator, id: u64, wait: Duration) -> Result<(), Status> {
    let target = node.metrics().last_log_index.unwrap_or(0);
    let deadline = Instant::now() + wait;
    loop {
        let metrics = node.metrics();
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map(|l| l.index);
        if matched.is_some_and(|m| m >= target) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Status::deadline_exceeded(format!(
                "learner {id} did not catch up within {} s (matched {:?} of {target}); it \
                 stays a learner",
                wait.as_secs(),
                matched
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes a member (this node leads). The leader itself is handed over first and removed by
/// its successor.
pub async fn remove(node: &Coordinator, id: u64) -> Result<MembershipReply, Status> {
    let started = Instant::now();
    let plan = check_remove(&view(node), id).map_err(Status::failed_precondition)?;
    if let RemovePlan::HandOverTo(to) = plan {
        tracing::info!(to, "an operator removes this leader: handing over first");
        super::transfer::transfer(node, Some(to)).await?;
        let addr = node
            .peer_addr(to)
            .map(str::to_string)
            .or_else(|| view(node).nodes.get(&to).cloned())
            .ok_or_else(|| Status::internal(format!("no address for node {to}")))?;
        let mut leader = ControlClient::new(node.forwarding_channel(&addr)?);
        let mut reply = leader
            .remove_node(super::forwarded(crate::proto::RemoveNodeRequest { id }))
            .await?
            .into_inner();
        reply.millis = started.elapsed().as_millis() as u64;
        return Ok(reply);
    }
    let _running = node.begin_membership_change(format!("removing node {id}"))?;
    tracing::info!(id, "an operator removes a coordinator");
    let ids = BTreeSet::from([id]);
    let change = match plan {
        RemovePlan::Learner => ChangeMembers::RemoveNodes(ids),
        _ => ChangeMembers::RemoveVoters(ids),
    };
    let written = committed(
        node.raft().change_membership(change, false),
        &format!("removing node {id}"),
    )
    .await?;
    let summary = format!("node {id} is no longer a member; stop its process and remove its data");
    Ok(reply(node, summary, started, Some(written.log_id.index)).await)
}

/// Waits for a membership change to commit, at most [`COMMIT_WAIT`].
async fn committed<T, E: std::fmt::Display>(
    change: impl std::future::Future<Output = Result<T, E>>,
    what: &str,
) -> Result<T, Status> {
    match tokio::time::timeout(COMMIT_WAIT, change).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(Status::aborted(format!("{what} failed: {e}"))),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{what} did not commit within {} s: a voter it needs stopped answering meanwhile; \
             the change completes once that node is back (see `testfleet cluster members`)",
            COMMIT_WAIT.as_secs()
        ))),
    }
}

/// The answer to a membership change, from this node's status once its metrics show the
/// change written at log index `changed_at` (the write can be answered before openraft's core
/// publishes its metrics; read at once, the reply showed the members before the change).
async fn reply(
    node: &Coordinator,
    summary: String,
    started: Instant,
    changed_at: Option<u64>,
) -> MembershipReply {
    if let Some(index) = changed_at {
        let shown = node
            .raft()
            .wait(Some(METRICS_WAIT))
            .metrics(
                |m| m.membership_config.log_id().as_ref().map(|l| l.index) >= Some(index),
                "the membership change in this node's metrics",
            )
            .await;
        if let Err(e) = shown {
            tracing::warn!("answering a membership change with the members as they were: {e}");
        }
    }
    let status = super::control::node_status(node);
    MembershipReply {
        members: status.members,
        summary,
        millis: started.elapsed().as_millis() as u64,
        leader_id: status.node_id,
    }
}

/// Takes a snapshot now (this node leads) and waits until it covers what was applied when
/// asked.
pub async fn snapshot(node: &Coordinator) -> Result<SnapshotReply, Status> {
    let started = Instant::now();
    let taken = node
        .snapshot_now(SNAPSHOT_WAIT)
        .await
        .map_err(Status::unavailable)?;
    let status = super::control::node_status(node);
    Ok(SnapshotReply {
        leader_id: status.node_id,
        leader_addr: status.leader_addr,
        index: taken.index,
        term: taken.leader_id.term,
        millis: started.elapsed().as_millis() as u64,
        first_log_index: node.metrics().purged.map(|p| p.index + 1),
    })
}

/// This node's current snapshot file, as a header and chunks; refused when it covers less
/// than `min_index`.
pub fn snapshot_parts(node: &Coordinator, min_index: u64) -> Result<Vec<SnapshotPart>, Status> {
    let file = node.config().snapshot_dir().join("current.snapshot");
    let bytes = std::fs::read(&file).map_err(|e| {
        Status::failed_precondition(format!(
            "node {} has no snapshot to send ({}: {e}); run `testfleet cluster snapshot` first",
            node.node_id(),
            file.display()
        ))
    })?;
    let meta = crate::raft::state_machine::snapshot_file_meta(&bytes).map_err(|e| {
        Status::internal(format!(
            "the snapshot {} is unreadable: {e}",
            file.display()
        ))
    })?;
    if meta.index < min_index {
        return Err(Status::failed_precondition(format!(
            "node {}'s snapshot covers index {} only, not {min_index}; retry",
            node.node_id(),
            meta.index
        )));
    }
    let mut parts = vec![SnapshotPart {
        part: Some(snapshot_part::Part::Header(SnapshotHeader {
            node_id: node.node_id(),
            index: meta.index,
            term: meta.term,
            size: bytes.len() as u64,
        })),
    }];
    parts.extend(bytes.chunks(CHUNK).map(|chunk| SnapshotPart {
        part: Some(snapshot_part::Part::Data(chunk.to_vec())),
    }));
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> View {
        View {
            leader: 1,
            voters: BTreeSet::from([1, 2, 3]),
            nodes: BTreeMap::from([
                (1, "10.0.0.1:8080".into()),
                (2, "10.0.0.2:8080".into()),
                (3, "10.0.0.3:8080".into()),
            ]),
            reachable: BTreeSet::from([1, 2, 3]),
            changing: None,
        }
    }

    #[test]
    fn a_new_id_at_a_new_address_is_added_and_promoted() {
        let view = three();
        assert_eq!(
            check_add(&view, 4, "10.0.0.4:8080", false),
            Ok(AddPlan::Add { promote: true })
        );
        assert_eq!(
            check_add(&view, 4, "10.0.0.4:8080", true),
            Ok(AddPlan::Add { promote: false })
        );
    }

    #[test]
    fn reused_ids_and_addresses_are_refused() {
        let view = three();
        let voter = check_add(&view, 2, "10.0.0.9:8080", false).unwrap_err();
        assert!(voter.contains("node 2 is already a voter"), "{voter}");
        let addr = check_add(&view, 4, "10.0.0.2:8080", false).unwrap_err();
        assert!(addr.contains("already node 2's"), "{addr}");
        let case = check_add(&view, 4, "10.0.0.2:8080".to_uppercase().as_str(), false);
        assert!(case.is_err());
    }

    #[test]
    fn a_learner_added_again_at_its_address_is_promoted() {
        let mut view = three();
        view.nodes.insert(4, "10.0.0.4:8080".into());
        assert_eq!(
            check_add(&view, 4, "10.0.0.4:8080", false),
            Ok(AddPlan::Promote)
        );
        let moved = check_add(&view, 4, "10.0.0.5:8080", false).unwrap_err();
        assert!(
            moved.contains("already a learner at 10.0.0.4:8080"),
            "{moved}"
        );
        assert!(check_add(&view, 4, "10.0.0.4:8080", true).is_err());
    }

    #[test]
    fn nothing_changes_while_another_change_is_under_way() {
        let mut view = three();
        view.changing = Some("adding node 4".into());
        let add = check_add(&view, 5, "10.0.0.5:8080", false).unwrap_err();
        assert!(add.contains("another membership change is under way (adding node 4)"));
        let remove = check_remove(&view, 3).unwrap_err();
        assert!(remove.contains("another membership change"), "{remove}");
    }

    #[test]
    fn removals_that_would_break_the_cluster_are_refused() {
        let view = three();
        let stranger = check_remove(&view, 9).unwrap_err();
        assert!(stranger.contains("node 9 is not a member (members: 1, 2, 3)"));

        let alone = View {
            voters: BTreeSet::from([1]),
            nodes: BTreeMap::from([(1, "a:1".into())]),
            reachable: BTreeSet::from([1]),
            ..three()
        };
        assert!(
            check_remove(&alone, 1)
                .unwrap_err()
                .contains("the last voter")
        );

        // 3 down: removing 2 leaves {1, 3} with only 1 reachable, below a quorum of 2.
        let mut down = three();
        down.reachable = BTreeSet::from([1, 2]);
        let quorum = check_remove(&down, 2).unwrap_err();
        assert!(
            quorum.contains("1 reachable voter(s) of 2, fewer than the quorum of 2")
                && quorum.contains("unreachable: 3"),
            "{quorum}"
        );
        // Removing the node that is down is exactly what an operator should do.
        assert_eq!(check_remove(&down, 3), Ok(RemovePlan::Voter));
    }

    #[test]
    fn learners_go_at_once_and_a_leader_hands_over_first() {
        let mut view = three();
        view.nodes.insert(4, "10.0.0.4:8080".into());
        assert_eq!(check_remove(&view, 4), Ok(RemovePlan::Learner));
        assert_eq!(check_remove(&view, 1), Ok(RemovePlan::HandOverTo(2)));
        // Five voters, 2 silent: the leader goes to a reachable one.
        view.voters.extend([4, 5]);
        view.nodes.insert(5, "10.0.0.5:8080".into());
        view.reachable = BTreeSet::from([1, 3, 4, 5]);
        assert_eq!(check_remove(&view, 1), Ok(RemovePlan::HandOverTo(3)));
    }
}
