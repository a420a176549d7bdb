//! `testfleet chaos` end to end: 20 seeded faults — kills, pauses, a majority killed at once
//! and, where network namespaces can be made (root), partitions — against three coordinators
//! and three workers under a workload of known outcomes; the checker must find nothing lost,
//! nothing run twice, every outcome as built and every replica identical.

use std::process::Command;

use super::support::{binary, test_dir};

/// Runs `testfleet chaos ARGS -o json` (with partitions where namespaces can be made); its
/// exit code and JSON report.
fn chaos(args: &[&str]) -> (Option<i32>, serde_json::Value, bool) {
    let dir = test_dir();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let report_dir = dir.path().join("report");
    let mut command = Command::new(binary());
    command
        .arg("chaos")
        .args(args)
        .args(["-o", "json", "--report-dir"])
        .arg(&report_dir)
        .env("NO_COLOR", "1");
    if root {
        command.arg("--partitions");
    } else {
        eprintln!("not root: no network namespaces, so the run has no partitions");
    }
    let out = command.output().expect("run testfleet chaos");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("chaos -o json printed no JSON ({e}); stderr:\n{stderr}"));
    assert!(report_dir.join("chaos-report.json").exists());
    assert!(report_dir.join("history.json").exists());
    (out.status.code(), report, root)
}

#[test]
fn twenty_faults_with_partitions_lose_nothing_and_the_replicas_agree() {
    let args = [
        "--nodes",
        "3",
        "--workers",
        "3",
        "--faults",
        "20",
        "--seed",
        "7",
    ];
    let (code, report, root) = chaos(&args);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    assert!(
        report["faults_injected"].as_u64().unwrap() >= 20,
        "{report:#}"
    );
    if root {
        assert!(
            report["partitions_injected"].as_u64().unwrap() >= 1,
            "{report:#}"
        );
    }
    assert!(report["acknowledged"].as_u64().unwrap() > 0, "{report:#}");
    for zero in ["lost", "duplicated", "wrong_outcome"] {
        assert_eq!(report[zero], 0, "{zero}: {report:#}");
    }
    assert_eq!(report["replicas_identical"], true, "{report:#}");
}

/// The anomalies of `kind` in a report.
#[cfg(feature = "negative-controls")]
fn anomalies<'a>(report: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    (report["anomalies"].as_array().unwrap().iter())
        .filter(|a| a["kind"] == kind)
        .collect()
}

/// With appends acknowledged before they are on disk, a majority (or every node) killed at
/// once loses acknowledged jobs — or leaves a node whose durable state openraft refuses to
/// run on (one of its own invariant checks panics: a log that lost entries it had recorded as
/// committed, or, seen once the log's fsyncs got quicker, a log purged past the node's
/// snapshot) — and the checker says which. Runs without the negative control have neither.
#[cfg(feature = "negative-controls")]
#[test]
fn negative_control_ack_before_fsync_loses_acknowledged_tasks_and_the_checker_fails_the_run() {
    let (code, report, _) = chaos(&["--faults", "20", "--negative-control", "ack-before-fsync"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["verdict"], "fail");
    let lost = !anomalies(&report, "lost").is_empty() && report["lost"].as_u64().unwrap() > 0;
    let log_lost_entries = anomalies(&report, "crashed").iter().any(|a| {
        let detail = a["detail"].as_str().unwrap();
        detail.contains("committed") || detail.contains("/openraft-")
    });
    assert!(lost || log_lost_entries, "{report:#}");
}

/// With results of superseded attempts accepted, a paused worker's task is finished twice, and
/// the checker says which.
#[cfg(feature = "negative-controls")]
#[test]
fn negative_control_no_fencing_finishes_tasks_twice_and_the_checker_fails_the_run() {
    let (code, report, _) = chaos(&["--faults", "20", "--negative-control", "no-fencing"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["verdict"], "fail");
    assert!(!anomalies(&report, "superseded").is_empty(), "{report:#}");
}
