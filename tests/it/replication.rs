//! A 3-node cluster on loopback, in process: election, commits, failover, restart and
//! catch-up (from the log and by snapshot), forwarding, and no progress without a quorum.

use std::time::Duration;

use testfleet::state::command::Command;

use super::cluster::TestCluster;
use super::support::{commit_bench, eventually};

/// Every running node ends with the same rows in every replicated table. Nodes apply at
/// their own pace (and health samples keep arriving), so compare until they agree.
async fn assert_same_tables(cluster: &TestCluster) {
    let ids = cluster.running();
    eventually(
        Duration::from_secs(30),
        "every node to hold the same rows",
        || {
            let images: Vec<_> = ids.iter().map(|id| cluster.tables(*id)).collect();
            async move {
                let bench = images[0].tables.iter().find(|t| t.name == "bench_log")?;
                (!bench.rows.is_empty() && images.iter().all(|i| *i == images[0])).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_commit_fail_over_and_the_old_leader_catches_up() {
    let mut cluster = TestCluster::start(3).await;
    let first_leader = cluster.leader().await;
    commit_bench(&cluster.peers[&first_leader].clone(), 1000, 16).await;

    cluster.stop(first_leader).await;
    let second_leader = cluster.leader().await;
    assert_ne!(second_leader, first_leader);
    let last = commit_bench(&cluster.peers[&second_leader].clone(), 1000, 16).await;

    cluster.restart(first_leader).await;
    cluster.applied(last).await;
    assert_same_tables(&cluster).await;
    let rows = cluster.tables(first_leader);
    let bench = rows.tables.iter().find(|t| t.name == "bench_log").unwrap();
    assert_eq!(bench.rows.len(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_missed_the_purge_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start_with(3, 100).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.stop(follower).await;
    let last = commit_bench(&cluster.peers[&leader].clone(), 600, 16).await;
    // Snapshots are built in the background; the leader purges its log behind them.
    let node = cluster.node(leader).clone();
    eventually(
        Duration::from_secs(30),
        "the leader to purge its log behind a snapshot",
        || {
            let purged = node.metrics().purged;
            async move { purged.is_some_and(|p| p.index > 100).then_some(()) }
        },
    )
    .await;
    // Operators see it in the leader's status.
    let purged = node.metrics().purged.map(|p| p.index);
    let status = super::support::client(&cluster.peers[&leader])
        .await
        .status(testfleet::proto::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(
        status.purged_index >= purged,
        "status says purged to {:?}, the node's metrics {purged:?}",
        status.purged_index
    );

    cluster.restart(follower).await;
    cluster.applied(last).await;
    let snapshot = cluster.node(follower).metrics().snapshot;
    assert!(
        snapshot.is_some(),
        "the follower should have installed a snapshot"
    );
    assert_same_tables(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_forwards_writes_and_a_lone_node_commits_nothing() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let index = commit_bench(&cluster.peers[&follower].clone(), 5, 16).await;
    assert!(index > 0);

    // Leave one node alone: whatever role it had, it cannot commit anything.
    let lone = follower;
    for id in 1..=3 {
        if id != lone {
            cluster.stop(id).await;
        }
    }
    let raft = cluster.node(lone).raft().clone();
    let committed_before = cluster.node(lone).metrics().local_committed;
    let write =
        tokio::time::timeout(Duration::from_secs(3), raft.client_write(Command::Noop)).await;
    assert!(
        !matches!(write, Ok(Ok(_))),
        "a node without a quorum committed a write"
    );
    let committed_after = cluster.node(lone).metrics().local_committed;
    assert_eq!(committed_before, committed_after);
}
