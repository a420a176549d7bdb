//! `testfleet bench tasks --queued` through the real binary: one coordinator with tasks
//! queued and no worker, its memory read at each size, and a second build (here the same
//! binary, given with `--binary`) measured side by side in the same run.

use std::process::Command;

use crate::support::{bench_json, binary, test_dir};

#[test]
fn memory_per_queued_task_is_reported_for_both_builds() {
    let dir = test_dir();
    let report = bench_json(
        &[
            "tasks",
            "--queued",
            "1000,2000",
            "--job-size",
            "700",
            "--binary",
            binary(),
            "--rounds",
            "1",
            "--security",
            "open",
        ],
        dir.path(),
    );
    let builds = report["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 2, "{report}");
    assert_eq!(builds[0]["build"], "this build");
    assert_eq!(builds[1]["build"], binary());
    for build in builds {
        let median = build["median"].as_array().unwrap();
        let tasks: Vec<u64> = median
            .iter()
            .map(|s| s["tasks"].as_u64().unwrap())
            .collect();
        assert_eq!(tasks, [0, 1000, 2000], "{build}");
        for s in median {
            assert!(s["rss_bytes"].as_u64().unwrap() > 0, "{s}");
            assert!(s["anon_bytes"].as_u64().unwrap() > 0, "{s}");
            assert!(s["rss_bytes"].as_u64() >= s["anon_bytes"].as_u64(), "{s}");
        }
        assert!(median[2]["duckdb_bytes"].as_u64().unwrap() > 0, "{build}");
        let step = build["step"].as_array().unwrap();
        let from_idle = build["from_idle"].as_array().unwrap();
        assert_eq!((step.len(), from_idle.len()), (2, 2), "{build}");
        assert_eq!(step[1]["from_tasks"], 1000);
        assert_eq!(from_idle[1]["from_tasks"], 0);
        assert_eq!(from_idle[1]["to_tasks"], 2000);
        assert!(
            from_idle[1]["rss_mib_per_10k"]
                .as_f64()
                .unwrap()
                .is_finite()
        );
    }

    // The table says the same.
    let out = Command::new(binary())
        .args(["bench", "tasks", "--queued", "500", "--security", "open"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run testfleet bench tasks --queued");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("RSS/10K FROM IDLE"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("this build") && l.contains("idle")),
        "{stdout}"
    );
}
