//! `testfleet chaos` end to end: 20 seeded faults — kills, pauses, a majority killed at once
//! and, where network namespaces can be made (root), partitions — against three coordinators
//! and three workers under a workload of known outcomes; the checker must find nothing lost,
//! nothing run twice, every outcome as built and every replica identical.

use std::process::Command;

use super::support::{binary, test_dir};

#[test]
fn twenty_faults_with_partitions_lose_nothing_and_the_replicas_agree() {
    let dir = test_dir();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let report_dir = dir.path().join("report");
    let mut command = Command::new(binary());
    command
        .args([
            "chaos",
            "--nodes",
            "3",
            "--workers",
            "3",
            "--faults",
            "20",
            "--seed",
            "7",
        ])
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
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{stderr}");
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
    assert!(report_dir.join("chaos-report.json").exists());
    assert!(report_dir.join("history.json").exists());
}
