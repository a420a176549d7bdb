//! `testfleet bench catchup` at tiny sizes through the real binary: the JSON document has
//! sane figures, and with a snapshot interval far below the size the absent follower
//! rejoins through a snapshot install.

use crate::support::{bench_json, test_dir};

#[test]
fn the_catchup_bench_reports_a_restart_and_a_rejoin_through_a_snapshot() {
    let dir = test_dir();
    let report = bench_json(
        &[
            "catchup",
            "--commands",
            "2000",
            "--repetitions",
            "1",
            "--writers",
            "32",
            "--timeout",
            "60",
            // 20 snapshots during the absence: the leader purges the entries the follower
            // lacks.
            "--snapshot-logs-since-last",
            "100",
            "--max-in-snapshot-log-to-keep",
            "10",
        ],
        dir.path(),
    );
    let size = &report["sizes"][0];
    assert_eq!(size["commands"], 2000, "{report}");
    let positive = |v: &serde_json::Value| v.as_f64().is_some_and(|x| x > 0.0);

    let rejoin = &size["rejoins"][0];
    assert!(positive(&rejoin["serving_ms"]), "{report}");
    assert!(
        rejoin["applied_ms"].as_f64() >= rejoin["serving_ms"].as_f64(),
        "{report}"
    );
    // Everything committed while it was down, and the cluster's own first entries.
    assert!(rejoin["target_index"].as_u64().unwrap() >= 2000, "{report}");
    assert_eq!(rejoin["snapshot_installed"], true, "{report}");
    assert_eq!(size["rejoin_path"], "snapshot + log tail", "{report}");
    let installed = rejoin["snapshot_index"].as_u64().expect("snapshot index");
    assert!(installed > 100, "{report}");
    assert!(
        installed <= rejoin["target_index"].as_u64().unwrap(),
        "{report}"
    );
    assert!(positive(&rejoin["snapshot_received_ms"]), "{report}");
    // The node was started again only once the leader had purged past its log.
    assert!(rejoin["purge_wait_ms"].as_f64().is_some(), "{report}");
    assert!(positive(&rejoin["leader_snapshot_bytes"]), "{report}");

    let restart = &size["restarts"][0];
    assert!(positive(&restart["serving_ms"]), "{report}");
    assert!(
        restart["applied_ms"].as_f64() >= restart["serving_ms"].as_f64(),
        "{report}"
    );
    assert!(
        restart["target_index"].as_u64().unwrap() >= 2000,
        "{report}"
    );
    assert!(positive(&restart["open_state_ms"]), "{report}");
    assert!(
        restart["duckdb_applied"].as_u64().unwrap() >= 2000,
        "{report}"
    );

    let state = &size["state"][0];
    for key in ["duckdb_bytes", "log_bytes", "snapshot_bytes"] {
        assert!(positive(&state[key]), "{key}: {report}");
    }
    assert!(state["applied_index"].as_u64().unwrap() >= 2000, "{report}");
    assert!(size["commit_rate"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(
        size["restart_applied"]["samples_ms"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
