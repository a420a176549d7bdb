//! High availability with real processes: twenty leader SIGKILLs under load lose and
//! duplicate nothing, and leave every replica with the same rows; a paused leader is
//! replaced and, resumed, commits nothing as leader.

use std::process::Command;
use std::time::Duration;

use crate::support::binary;
use crate::support::local_cluster;
use testfleet::proto::BenchRequest;

use super::support::{client, eventually};

#[test]
fn twenty_leader_kills_under_load_lose_nothing() {
    let dir = super::support::test_dir();
    let report_dir = dir.path().join("report");
    let out = Command::new(binary())
        .args(["ha", "--nodes", "3", "--workers", "2", "--runtime", "80"])
        .args([
            "--fault-injection",
            "--leader-kills-only",
            "--fault-interval",
            "1.5",
        ])
        .arg("--report-dir")
        .arg(&report_dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run testfleet ha");
    let text = std::fs::read_to_string(report_dir.join("ha-report.json")).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        report["coordinator_faults"].as_u64().unwrap() >= 20,
        "{report}"
    );
    assert!(
        report["failover"]["samples"].as_u64().unwrap() >= 20,
        "{report}"
    );
    assert!(
        report["tasks_submitted"].as_u64().unwrap() > 100,
        "{report}"
    );
    assert_eq!(report["tasks_lost"], 0, "{report}");
    assert_eq!(report["tasks_duplicated"], 0, "{report}");
    assert_eq!(report["replica_check"]["verdict"], "agree", "{report}");
    assert_eq!(report["passed"], true, "{report}");
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_does_not_act_as_leader_after_resuming() {
    let dir = super::support::test_dir();
    let cluster = local_cluster(3, dir.path(), &[]);
    let old = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let (_, old_term) = cluster.role(old).await.unwrap();
    cluster.signal(old, libc::SIGSTOP);
    let new = cluster
        .leader(Duration::from_secs(30), Some(old))
        .await
        .unwrap();
    // Acknowledged by the new leadership; retried as a client would, since on a loaded machine
    // the two remaining nodes can hold one more election before a write goes through.
    let before = eventually(Duration::from_secs(20), "a write to the new leader", || {
        let addr = cluster.addr(new).to_string();
        async move {
            let mut to_new = client(&addr).await;
            let reply = to_new
                .propose_bench(BenchRequest { payload: vec![1] })
                .await;
            reply.ok().map(|r| r.into_inner())
        }
    })
    .await;
    assert!(before.term > old_term);
    cluster.signal(old, libc::SIGCONT);
    // Resumed, the old leader learns the new term and steps down...
    eventually(
        Duration::from_secs(10),
        "the old leader to step down",
        || {
            let cluster = &cluster;
            async move {
                let (role, term) = cluster.role(old).await?;
                (role != "leader" && term >= before.term).then_some(())
            }
        },
    )
    .await;
    // ...and a write sent to it is committed by the new leader, in the new term.
    let mut to_old = client(cluster.addr(old)).await;
    let after = to_old
        .propose_bench(BenchRequest { payload: vec![2] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.term, before.term);
    assert!(after.log_index > before.log_index);
}
