//! Fast failover: a leader whose process is gone is replaced in milliseconds, not after its lease.
//!
//! openraft grants every leader a lease of `election_timeout_max`: a follower refuses to vote
//! while the lease of the leader it last heard from runs, and starts campaigning only after the
//! lease *and* a random election timeout have passed. That is right for a leader that is slow,
//! paused or cut off — nobody can tell those apart from a dead one — but it makes every failover
//! last `election_timeout_max` + `[min, max]` of silence, even when the leader's process has
//! plainly died. On a real crash the operating system says so at once: it closes the dead
//! process's connections and refuses new ones on its port.
//!
//! This module listens for that:
//!
//! 1. **Watch.** Every follower keeps one `WatchLeader` stream open to the leader it follows
//!    ([`run`]). The stream carries nothing; it ends when the leader stops leading and breaks
//!    when its process dies.
//! 2. **Confirm.** A broken stream is only a hint. The follower connects to the leader's port
//!    for up to `DYING_WINDOW` (a killed process closes its connections a moment before its
//!    listening socket); only an explicit refusal ([`std::io::ErrorKind::ConnectionRefused`])
//!    counts as "gone". A
//!    paused or partitioned leader accepts connections or times out, so it never takes this path
//!    and is replaced by the ordinary election timeout, as before.
//! 3. **Agree.** The follower asks every other voter to confirm by itself (`LeaderGone`,
//!    [`confirm_gone`]): each probes the port on its own, and only if it is refused stops honouring
//!    the dead leader's lease (through openraft's leadership-transfer path, which drops the lease
//!    on every node that is not the transfer target) and answers with its last log id.
//! 4. **Elect.** If the confirming voters (with the asker) are a quorum, the one with the most
//!    up-to-date log (ties: lowest id) campaigns at once. Every confirming node computes the same
//!    choice from the same answers, so one candidate runs and wins in one round. Answers are
//!    awaited for `QUORUM_GRACE` after a quorum confirmed, not for every voter: a node that is
//!    still restarting can hold a call open for the whole `ASK_TIMEOUT`.
//!
//! Nothing here touches Raft's safety: votes, terms and the up-to-date log check are openraft's,
//! and the only thing bypassed — the lease — is dropped by each voter on its own evidence that the
//! leader's port is closed. If any step fails (a voter does not answer, logs moved, the chosen
//! node lost its vote), the nodes whose lease was dropped fall back to their election timeout,
//! which then runs from the last time they heard the leader without the lease on top.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use openraft::ServerState;
use openraft::alias::{LogIdOf, VoteOf};
use openraft::async_runtime::WatchReceiver;
use openraft::raft::TransferLeaderRequest;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::network::{Network, decode, encode};
use super::{RaftNode, TypeConfig};
use crate::raft_proto::raft_reply::Outcome;
use crate::raft_proto::{RaftRequest, WatchLeaderRequest};

/// How long a connection attempt to a suspected-dead leader may take. Only a refusal within this
/// time confirms the leader is gone; a timeout proves nothing.
const PROBE_TIMEOUT: Duration = Duration::from_millis(50);

/// How long after a broken watch a dying leader's port may still accept connections.
const DYING_WINDOW: Duration = Duration::from_millis(100);

/// How often the port is probed within [`DYING_WINDOW`].
const DYING_PROBE_INTERVAL: Duration = Duration::from_millis(5);

/// How long a voter may take to answer `LeaderGone`: its own probes plus a round trip.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// How much longer the other voters' answers are awaited once a quorum has confirmed.
const QUORUM_GRACE: Duration = Duration::from_millis(25);

/// How long to wait before watching again a leader whose stream ended while its port still
/// accepts connections (it is alive; its stream ended for another reason).
const REWATCH_DELAY: Duration = Duration::from_millis(500);

/// `LeaderGone` request: the vote of the leader the asker believes is gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoneRequest {
    /// The committed vote of the leader that seems gone.
    pub vote: VoteOf<TypeConfig>,
}

/// `LeaderGone` reply: what the callee found and how far its log goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoneReply {
    /// The callee follows the same leader and its port refused the callee's connection too;
    /// the callee no longer honours that leader's lease.
    pub confirmed: bool,
    /// The callee's last log id, to pick the most up-to-date candidate.
    pub last_log: Option<LogIdOf<TypeConfig>>,
}

/// The leader this node follows, as far as the watch is concerned.
#[derive(Debug, Clone, PartialEq)]
struct Followed {
    /// The committed vote of that leader.
    vote: VoteOf<TypeConfig>,
    /// The leader's id.
    leader: u64,
    /// The leader's address, from the membership.
    addr: String,
}

/// The leader `raft` follows right now, if it follows one it can reach by address.
fn followed(raft: &RaftNode) -> Option<Followed> {
    let metrics = raft.server_metrics().borrow_watched().clone();
    if metrics.state != ServerState::Follower || !metrics.vote.committed {
        return None;
    }
    let leader = metrics.vote.leader_id.node_id;
    if leader == metrics.id {
        return None;
    }
    let addr = metrics
        .membership_config
        .membership()
        .get_node(&leader)?
        .addr
        .clone();
    Some(Followed {
        vote: metrics.vote,
        leader,
        addr,
    })
}

/// Watches the leader this node follows until `stop` is cancelled; when its process dies, gets
/// the best-placed voter elected at once (see the module documentation).
pub async fn run(raft: RaftNode, network: Network, stop: CancellationToken) {
    let mut metrics = raft.server_metrics();
    loop {
        let Some(target) = followed(&raft) else {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
            continue;
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            () = leader_changes(&raft, &target) => continue,
            () = watch(&network, &target.addr) => {}
        }
        if followed(&raft).as_ref() != Some(&target) {
            continue;
        }
        // A confirmed departure is handled once: the election (or, failing that, the election
        // timeout) moves this node on. A leader that is alive is watched again after a pause.
        let gone = depart(&raft, &network, &target).await;
        let rewatch = async {
            if gone {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(REWATCH_DELAY).await;
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            () = leader_changes(&raft, &target) => {}
            () = rewatch => {}
        }
    }
}

/// Resolves when `raft` no longer follows `target` (or its Raft stopped).
async fn leader_changes(raft: &RaftNode, target: &Followed) {
    let mut metrics = raft.server_metrics();
    loop {
        if followed(raft).as_ref() != Some(target) {
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Holds a `WatchLeader` stream to `addr` open; resolves when it ends, breaks or cannot open.
async fn watch(network: &Network, addr: &str) {
    let Ok(mut client) = network.client(addr) else {
        return;
    };
    let mut stream = match client.watch_leader(WatchLeaderRequest {}).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::debug!(addr, "cannot watch the leader: {status}");
            return;
        }
    };
    tracing::debug!(addr, "watching the leader");
    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => break "the leader ended the stream".to_string(),
            Err(status) => break status.to_string(),
        }
    };
    tracing::debug!(addr, "the leader watch ended: {ended}");
}

/// Whether the port at `addr` (`host:port`, optionally with a scheme) refuses a connection now.
async fn refuses_connections(addr: &str) -> bool {
    let host_port = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let host_port = host_port.trim_end_matches('/');
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(host_port)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Whether the port at `addr` starts refusing connections within [`DYING_WINDOW`]. A killed
/// process closes its descriptors one by one, so its connections can break a moment before
/// its listening socket closes; a live process keeps accepting throughout.
async fn stops_accepting(addr: &str) -> bool {
    let deadline = tokio::time::Instant::now() + DYING_WINDOW;
    loop {
        if refuses_connections(addr).await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DYING_PROBE_INTERVAL).await;
    }
}

/// Answers `LeaderGone` on this node: if it follows the leader of `vote` and that leader's port
/// refuses a connection, this node stops honouring the leader's lease.
pub async fn confirm_gone(raft: &RaftNode, request: &GoneRequest) -> GoneReply {
    let last_log = raft.data_metrics().borrow_watched().last_log;
    let confirmed = match followed(raft) {
        Some(target) if target.vote == request.vote => {
            stops_accepting(&target.addr).await && drop_lease(raft, &target).await
        }
        _ => false,
    };
    GoneReply {
        confirmed,
        last_log,
    }
}

/// Makes this node stop honouring the lease of `target`'s leader. openraft drops the lease on
/// every node that receives a leadership transfer from the current leader and is not its target;
/// naming the dead leader itself as the target makes this node drop the lease and do nothing else.
async fn drop_lease(raft: &RaftNode, target: &Followed) -> bool {
    let request = TransferLeaderRequest::new(target.vote, target.leader, None);
    match raft.handle_transfer_leader(request).await {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!("cannot drop the lease of the departed leader: {e}");
            false
        }
    }
}

/// Handles a broken watch: confirms the leader is gone, gathers the other voters' answers, and
/// campaigns if this node is the best placed. Returns whether this node confirmed the departure.
async fn depart(raft: &RaftNode, network: &Network, target: &Followed) -> bool {
    let request = GoneRequest { vote: target.vote };
    let mine = confirm_gone(raft, &request).await;
    if !mine.confirmed {
        return false;
    }
    let metrics = raft.server_metrics().borrow_watched().clone();
    let me = metrics.id;
    let membership = metrics.membership_config.membership().clone();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let peers: BTreeMap<u64, String> = voters
        .iter()
        .filter(|id| **id != me && **id != target.leader)
        .filter_map(|id| Some((*id, membership.get_node(id)?.addr.clone())))
        .collect();
    let quorum = voters.len() / 2 + 1;
    let request = &request;
    let mut answers: futures::stream::FuturesUnordered<_> = peers
        .iter()
        .map(|(id, addr)| async move { (*id, ask(network, addr, request).await) })
        .collect();
    let mut candidates = vec![(mine.last_log, me)];
    // Wait for every answer, but once a quorum has confirmed, only QUORUM_GRACE longer: a peer
    // that is restarting may hold the call until ASK_TIMEOUT, and the live ones answer within
    // milliseconds of each other (so every confirmer still sees the same set).
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let next = match grace {
            Some(deadline) => match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => answers.next().await,
        };
        let Some((id, reply)) = next else { break };
        if let Some(reply) = reply.filter(|r| r.confirmed) {
            candidates.push((reply.last_log, id));
        }
        if grace.is_none() && candidates.len() >= quorum {
            grace = Some(tokio::time::Instant::now() + QUORUM_GRACE);
        }
    }
    if candidates.len() < quorum {
        tracing::info!(
            leader = target.leader,
            confirming = candidates.len(),
            quorum,
            "the leader's port refuses connections, but too few voters confirm; \
             waiting for the election timeout"
        );
        return true;
    }
    let Some(best) = best_candidate(&candidates) else {
        return true;
    };
    tracing::info!(
        leader = target.leader,
        term = target.vote.leader_id.term,
        candidate = best,
        confirming = candidates.len(),
        "the leader's process is gone (its port refuses connections); electing a successor now"
    );
    if best == me
        && let Err(e) = raft.trigger().elect(false).await
    {
        tracing::warn!("cannot start an election after the leader left: {e}");
    }
    true
}

/// The node to campaign among confirming voters: the most up-to-date log, then the lowest id.
fn best_candidate(candidates: &[(Option<LogIdOf<TypeConfig>>, u64)]) -> Option<u64> {
    candidates
        .iter()
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, id)| *id)
}

/// Sends `LeaderGone` to the voter at `addr`; `None` if it does not answer in time.
async fn ask(network: &Network, addr: &str, request: &GoneRequest) -> Option<GoneReply> {
    let mut client = network.client(addr).ok()?;
    let payload = encode("LeaderGone request", request).ok()?;
    let mut call = tonic::Request::new(RaftRequest { payload });
    call.set_timeout(ASK_TIMEOUT);
    let reply = tokio::time::timeout(ASK_TIMEOUT, client.leader_gone(call))
        .await
        .ok()?
        .ok()?
        .into_inner();
    match reply.outcome? {
        Outcome::Ok(bytes) => decode("LeaderGone reply", &bytes).ok(),
        Outcome::RaftError(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderIdExt;

    use super::*;

    fn log(term: u64, node: u64, index: u64) -> Option<LogIdOf<TypeConfig>> {
        Some(LogIdOf::<TypeConfig>::new(
            openraft::vote::leader_id_adv::LeaderId::new_committed(term, node),
            index,
        ))
    }

    #[test]
    fn the_most_up_to_date_log_campaigns() {
        assert_eq!(
            best_candidate(&[(log(2, 1, 10), 1), (log(2, 1, 12), 3), (log(2, 1, 11), 2)]),
            Some(3)
        );
    }

    #[test]
    fn a_later_term_beats_a_longer_log() {
        assert_eq!(
            best_candidate(&[(log(2, 1, 50), 1), (log(3, 4, 12), 2)]),
            Some(2)
        );
    }

    #[test]
    fn equal_logs_pick_the_lowest_id_whatever_the_order() {
        let a = [(log(2, 1, 10), 3), (log(2, 1, 10), 2), (None, 1)];
        let b = [(None, 1), (log(2, 1, 10), 2), (log(2, 1, 10), 3)];
        assert_eq!(best_candidate(&a), Some(2));
        assert_eq!(best_candidate(&b), Some(2));
    }

    #[tokio::test]
    async fn a_closed_port_refuses_and_an_open_one_does_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        assert!(!refuses_connections(&open).await);
        assert!(!refuses_connections(&format!("http://{open}")).await);
        drop(listener);
        assert!(refuses_connections(&open).await);
    }
}
