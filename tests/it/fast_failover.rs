//! Fast failover on real processes ([`testfleet::raft::leader_watch`]). The nodes run with
//! election timeouts of a minute, so the ordinary path (lease, then election timeout) cannot
//! replace a leader within these tests: a SIGKILLed leader that is replaced anyway was replaced
//! by the leader watch, and a SIGSTOPped one must not be (a hang is not a crash).

use std::time::Duration;

use crate::support::local_cluster;

use super::support::commit_bench;

/// Timings under which only the leader watch can elect a new leader in time.
fn slow_elections() -> Vec<String> {
    [
        "--heartbeat-interval-ms",
        "100",
        "--election-timeout-min-ms",
        "60000",
        "--election-timeout-max-ms",
        "120000",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_keeps_its_lease_and_a_killed_one_is_replaced_at_once() {
    let dir = super::support::test_dir();
    let mut cluster = local_cluster(3, dir.path(), &slow_elections());
    let first = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    commit_bench(cluster.addr(first), 100, 4).await;

    // A hang: the leader's sockets stay open, so nothing may treat it as gone. Three seconds
    // are 30 heartbeat intervals; the watch would have acted within milliseconds.
    cluster.signal(first, libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.signal(first, libc::SIGCONT);
    let after_pause = cluster.leader(Duration::from_secs(30), None).await.unwrap();
    assert_eq!(after_pause, first, "a paused leader was replaced");
    let (_, term_before) = cluster.role(first).await.expect("the leader answers");

    // A crash: the survivors elect one of them long before a minute-long election timeout.
    cluster.kill(first);
    let second = cluster
        .leader(Duration::from_secs(30), Some(first))
        .await
        .expect("a killed leader is replaced without waiting for the election timeout");
    let (role, term) = cluster.role(second).await.expect("the new leader answers");
    assert_eq!(role, "leader");
    assert_eq!(
        term,
        term_before + 1,
        "one election, won at the first attempt"
    );
    commit_bench(cluster.addr(second), 100, 4).await;

    // The old leader rejoins as a follower of the new one.
    cluster.restart(first).unwrap();
    commit_bench(cluster.addr(second), 100, 4).await;
    assert_eq!(
        cluster.leader(Duration::from_secs(30), None).await.unwrap(),
        second
    );
}
