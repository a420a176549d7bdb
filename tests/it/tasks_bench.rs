//! `testfleet bench tasks` through the real binary, small: the throughput job runs on a real
//! cluster and workers, and the servers' CPU per task comes back split by process role and
//! thread, read from `/proc` before and after the job.

use crate::support::{bench_json, test_dir};

#[test]
fn the_full_load_cpu_is_split_by_role_and_thread() {
    let dir = test_dir();
    let report = bench_json(
        &[
            "tasks",
            "--nodes",
            "1",
            "--workers",
            "1",
            "--slots",
            "2",
            "--tasks",
            "300",
            "--half-load-seconds",
            "1",
            "--security",
            "open",
        ],
        dir.path(),
    );
    assert!(report["tasks_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    let cpu = report["full_load_cpu_us_per_task"].as_object().unwrap();
    let us = |key: &str| {
        cpu.get(key)
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| panic!("no {key:?} in {cpu:?}"))
    };
    // A coordinator's runtime does work for every task, and so does a worker's.
    assert!(us("coordinators: tokio-rt-worker") > 0.0, "{cpu:?}");
    assert!(us("workers: all") > 0.0, "{cpu:?}");
    let coordinators: f64 = (cpu.iter())
        .filter(|(k, _)| k.starts_with("coordinators: ") && *k != "coordinators: all")
        .map(|(_, v)| v.as_f64().unwrap())
        .sum();
    assert!(
        (coordinators - us("coordinators: all")).abs() < 1.0,
        "the threads add up to the whole: {cpu:?}"
    );
}
