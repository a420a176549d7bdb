//! `testfleet bench commit --nodes 3 --breakdown` through the real binary: three coordinator
//! processes with `--stage-clock`, and every commit of the window is split into the stages
//! every node saw — each segment measured on (nearly) every commit, the follower's fsync and
//! the network inside the total.

use crate::support::{bench_json, test_dir};

#[test]
fn a_commit_is_split_into_the_stages_every_node_saw() {
    let dir = test_dir();
    let report = bench_json(
        &[
            "commit",
            "--nodes",
            "3",
            "--breakdown",
            "--writers",
            "1,8",
            "--duration",
            "1",
            "--warmup",
            "0.5",
        ],
        dir.path(),
    );
    for run in report["runs"].as_array().unwrap() {
        let commits = run["commits"].as_u64().unwrap();
        assert!(commits > 10, "{run}");
        let segment = |name: &str| {
            run["segments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .unwrap_or_else(|| panic!("no segment {name}: {run}"))
                .clone()
        };
        for s in run["segments"].as_array().unwrap() {
            // A commit whose stage a node missed (an entry sent before the window) may lack
            // a segment; nearly all have every one.
            assert!(
                s["samples"].as_u64().unwrap() * 10 >= commits * 9,
                "{s} of {commits} commits"
            );
        }
        let p50 = |name: &str| segment(name)["p50_us"].as_i64().unwrap();
        assert!(p50("follower fsync") > 0, "{run}");
        assert!(p50("network to follower") > 0, "{run}");
        assert!(p50("total") >= p50("follower fsync"), "{run}");
        assert!(p50("total") >= p50("client → leader"), "{run}");
    }
}
