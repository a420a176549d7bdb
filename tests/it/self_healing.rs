//! Self-healing on real processes (ARCHITECTURE.md § Self-health): a leader whose data disk
//! really fills hands leadership to a healthy follower and relieves its disk, every action a
//! `system_recovery_history` row with its measurements; a node whose RSS crosses the
//! configured memory-pressure threshold lowers DuckDB's memory limit.
//!
//! The disk is a small tmpfs mounted on the leader's node directory (its DuckDB file, Raft
//! log, snapshots and log), filled with a file by the test; the followers' directories are on
//! the ordinary disk. Mounting needs root: without it the test says so and skips.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use testfleet::proto::{StatusRequest, TransferLeaderRequest};

use super::support::{
    Tmpfs, client, eventually, local_cluster, query, query_consistent, run, start_coordinator,
    test_dir,
};

const MIB: u64 = 1 << 20;

/// Thresholds for a fast run: a sample a second, two critical samples to hand over, disk
/// judged in bytes alone (critical under 24 MiB free, degraded under 40 MiB; the fractions
/// off, so that the other nodes' ordinary disk never counts as full however little of it this
/// machine has free).
const FAST_HEALING: &str = r#"
[self_healing]
sample_interval_ms = 1000
critical_samples = 2
stale_after_samples = 5

[self_healing.limits]
disk_free_critical_bytes = 25165824
disk_free_degraded_bytes = 41943040
disk_free_critical = 0.0
disk_free_degraded = 0.0
"#;

/// Free bytes of the file system holding `dir`, as an unprivileged process may use them.
fn free_bytes(dir: &Path) -> u64 {
    testfleet::health::sampler::disk_space(dir)
        .expect("statvfs")
        .free_bytes
}

/// The `details` of every self-healing row with `action`, as JSON objects.
async fn actions(addr: &str, action: &str) -> Vec<(bool, Value)> {
    let mut control = client(addr).await;
    let rows = query_consistent(
        &mut control,
        "SELECT success, details FROM system_recovery_history \
         WHERE system_status = 'self_healing' ORDER BY id",
    )
    .await;
    rows.into_iter()
        .filter_map(|row| {
            let details = match &row[1] {
                Value::String(text) => serde_json::from_str(text).ok()?,
                other => other.clone(),
            };
            (details["action"] == action).then(|| (row[0] == Value::Bool(true), details))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_fills_hands_over_to_a_healthy_follower_and_relieves_its_disk() {
    let dir = test_dir();
    // The leader-to-be's node directory, before the cluster creates it.
    let Some(tmpfs) = Tmpfs::mount(&dir.path().join("node-1"), "size=64m", false) else {
        return;
    };
    let config = dir.path().join("healing.toml");
    std::fs::write(&config, FAST_HEALING).unwrap();
    let cluster = local_cluster(
        3,
        dir.path(),
        &["--config".to_string(), config.display().to_string()],
    );
    let first = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let mut control = client(cluster.addr(first)).await;
    if first != 1 {
        control
            .transfer_leader(TransferLeaderRequest { to: Some(1) })
            .await
            .expect("hand leadership to node 1, whose disk is the tmpfs");
    }
    assert_eq!(
        cluster.leader(Duration::from_secs(30), None).await.unwrap(),
        1
    );
    let leader = client(cluster.addr(1)).await;
    // Every follower has recorded a sample, so it can be judged fit to take over.
    eventually(
        Duration::from_secs(30),
        "a health sample of each node",
        || {
            let mut leader = leader.clone();
            async move {
                let rows = query(
                    &mut leader,
                    "SELECT count(DISTINCT node_id) FROM health_samples",
                )
                .await;
                (rows[0][0].as_u64() == Some(3)).then_some(())
            }
        },
    )
    .await;
    let healthy_free = free_bytes(tmpfs.path());
    assert!(
        healthy_free > 40 * MIB,
        "the tmpfs should start with room: {healthy_free} bytes free"
    );

    // Fill the leader's disk until 12 MiB are left: under the critical 24 MiB.
    let filler = tmpfs.path().join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; MIB as usize];
        while free_bytes(tmpfs.path()) > 13 * MIB {
            file.write_all(&chunk).unwrap();
        }
        file.sync_all().unwrap();
    }
    let filled_at = Instant::now();
    let free_when_filled = free_bytes(tmpfs.path());
    eventually(
        Duration::from_secs(20),
        "node 1 reporting critical health",
        || {
            let mut leader = leader.clone();
            async move {
                let status = leader.status(StatusRequest {}).await.ok()?.into_inner();
                (status.health_level == "critical").then_some(status.health_reasons)
            }
        },
    )
    .await;
    // The early warning is visible to an operator.
    let (code, shown, err) = run(&["status", "--coordinator", cluster.addr(1)], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        shown.contains("HEALTH") && shown.contains("critical: data disk free"),
        "{shown}"
    );

    let successor = cluster
        .leader(Duration::from_secs(60), Some(1))
        .await
        .expect("leadership moves off the full disk");
    let handed_over_after = filled_at.elapsed();
    assert_ne!(successor, 1);

    let transfers = eventually(Duration::from_secs(30), "the handover's row", || {
        let addr = cluster.addr(successor).to_string();
        async move {
            let rows = actions(&addr, "leader_transfer").await;
            (!rows.is_empty()).then_some(rows)
        }
    })
    .await;
    let (success, transfer) = &transfers[0];
    assert!(success, "{transfer}");
    assert_eq!(transfer["node"], 1, "{transfer}");
    assert_eq!(transfer["to"].as_u64(), Some(successor), "{transfer}");
    assert_eq!(transfer["level"], "critical", "{transfer}");
    assert_eq!(
        transfer["candidates"].as_array().map(Vec::len),
        Some(2),
        "both followers judged: {transfer}"
    );

    let reliefs = eventually(Duration::from_secs(30), "the disk relief's row", || {
        let addr = cluster.addr(successor).to_string();
        async move {
            let rows = actions(&addr, "disk_pressure").await;
            (!rows.is_empty()).then_some(rows)
        }
    })
    .await;
    let (_, relief) = &reliefs[0];
    assert_eq!(relief["node"], 1, "{relief}");
    assert_eq!(relief["snapshot"]["ok"], true, "{relief}");
    assert!(relief["snapshot"]["index"].as_u64().is_some(), "{relief}");
    assert_eq!(relief["checkpoint"]["ok"], true, "{relief}");
    for measured in ["free_bytes_before", "free_bytes_after", "reclaimed_bytes"] {
        assert!(relief[measured].is_number(), "{measured}: {relief}");
    }
    // Rate-limited: one relief, however many samples stayed under the threshold.
    assert_eq!(reliefs.len(), 1, "{reliefs:?}");
    eprintln!(
        "figures: tmpfs free {healthy_free} B healthy, {free_when_filled} B filled; handover to \
         node {successor} {:.1} s after the fill ({} ms for the transfer itself); disk relief: \
         {} B free before, {} B after ({} B reclaimed), snapshot {} ms, checkpoint {} ms",
        handed_over_after.as_secs_f64(),
        transfer["took_ms"],
        relief["free_bytes_before"],
        relief["free_bytes_after"],
        relief["reclaimed_bytes"],
        relief["snapshot"]["ms"],
        relief["checkpoint"]["ms"],
    );

    // Room again: node 1 is healthy, and all three follow one leader.
    std::fs::remove_file(&filler).unwrap();
    eventually(Duration::from_secs(20), "node 1 healthy again", || {
        let mut leader = leader.clone();
        async move {
            let status = leader.status(StatusRequest {}).await.ok()?.into_inner();
            (status.health_level == "ok").then_some(())
        }
    })
    .await;
    cluster
        .settled(Duration::from_secs(30), 100)
        .await
        .expect("every node follows one leader");
    let status = leader
        .clone()
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.role, "follower");
    drop(cluster);
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_its_memory_threshold_lowers_duckdbs_memory_limit_and_records_it() {
    let dir = test_dir();
    // 1 MiB: the process's real RSS is far above it from the first sample on.
    std::fs::write(
        dir.path().join("healing.toml"),
        "[self_healing]\nsample_interval_ms = 500\nmemory_pressure_rss_bytes = 1048576\n",
    )
    .unwrap();
    let node = start_coordinator(
        &["--config", "healing.toml", "--duckdb-memory-limit", "512MB"],
        dir.path(),
    );
    let control = client(&node.addr).await;
    let limit = |rows: Vec<Vec<Value>>| rows[0][0].as_str().unwrap_or_default().to_string();
    let lowered = eventually(Duration::from_secs(30), "a lowered memory limit", || {
        let mut control = control.clone();
        async move {
            let now = limit(query(&mut control, "SELECT current_setting('memory_limit')").await);
            (now != "488.2 MiB").then_some(now)
        }
    })
    .await;
    assert_eq!(lowered, "244.1 MiB", "half of 512MB");
    let rows = eventually(Duration::from_secs(30), "the memory relief's row", || {
        let addr = node.addr.clone();
        async move {
            let rows = actions(&addr, "memory_pressure").await;
            (!rows.is_empty()).then_some(rows)
        }
    })
    .await;
    let (success, relief) = &rows[0];
    assert!(success, "{relief}");
    assert_eq!(
        relief["duckdb_memory_limit_before"], "488.2 MiB",
        "{relief}"
    );
    assert_eq!(relief["duckdb_memory_limit_after"], "244.1 MiB", "{relief}");
    assert_eq!(relief["threshold_rss_bytes"], 1_048_576, "{relief}");
    assert!(
        relief["rss_bytes_before"].as_u64() > Some(1 << 20),
        "{relief}"
    );
    assert!(relief["rss_bytes_after"].is_number(), "{relief}");
    eprintln!(
        "figures: memory relief: RSS {} B before, {} B after; DuckDB memory_limit {} -> {}",
        relief["rss_bytes_before"],
        relief["rss_bytes_after"],
        relief["duckdb_memory_limit_before"],
        relief["duckdb_memory_limit_after"]
    );
    // Pressure never leaves: one relief per cooldown (5 minutes by default), not one a sample.
    eventually(Duration::from_secs(10), "more samples", || {
        let mut control = control.clone();
        async move {
            let rows = query(&mut control, "SELECT count(*) FROM health_samples").await;
            (rows[0][0].as_u64() >= Some(8)).then_some(())
        }
    })
    .await;
    assert_eq!(actions(&node.addr, "memory_pressure").await.len(), 1);
}
