//! The cluster scenario with real processes: three `testfleet coordinator` processes,
//! the leader SIGKILLed mid-run, restarted on its files; all DuckDB files end identical, and
//! `cluster check` agrees.

use std::time::Duration;

use crate::support::local_cluster;

use super::support::{client, cluster_check_json, commit_bench, eventually, query};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_leader_process_rejoins_and_every_node_holds_the_same_rows() {
    let dir = super::support::test_dir();
    let mut cluster = local_cluster(3, dir.path(), &[]);
    let first = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    commit_bench(cluster.addr(first), 1000, 8).await;

    cluster.kill(first);
    let second = cluster
        .leader(Duration::from_secs(30), Some(first))
        .await
        .unwrap();
    assert_ne!(first, second);
    commit_bench(cluster.addr(second), 1000, 8).await;

    cluster.restart(first).unwrap();
    let expected = "SELECT count(*), count(DISTINCT log_index), min(log_index), max(log_index) \
                    FROM bench_log";
    let mut answers = Vec::new();
    for (id, addr) in cluster.addresses() {
        let mut control = client(&addr).await;
        let row = eventually(
            Duration::from_secs(60),
            &format!("node {id} to catch up"),
            || {
                let mut control = control.clone();
                async move {
                    let rows = query(&mut control, expected).await;
                    (rows[0][0].as_u64() == Some(2000)).then(|| rows[0].clone())
                }
            },
        )
        .await;
        assert_eq!(
            row[1].as_u64(),
            Some(2000),
            "node {id} applied an entry twice"
        );
        let all = query(&mut control, "SELECT * FROM bench_log ORDER BY log_index").await;
        answers.push((id, all));
    }
    for (id, rows) in &answers[1..] {
        assert!(
            rows == &answers[0].1,
            "node {id} differs from node {}",
            answers[0].0
        );
    }
    let addrs: Vec<String> = cluster.addresses().into_values().collect();
    let (code, report, stderr) = cluster_check_json(&addrs).await;
    assert_eq!(code, 0, "cluster check: {report}\nstderr: {stderr}");
    assert_eq!(report["verdict"], "agree", "{report}");
}
