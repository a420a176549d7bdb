//! A test suite this project did not write — toolz's own tests, as installed from PyPI
//! (`.ci/run` installs `pytest` and `toolz`) — runs through `testfleet run` on three
//! workers, one task per test file; each file's outcome must match a direct pytest run.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::support::local_cluster;
use testfleet::auth::Role;

use super::support::{WorkerProcess, binary, token_file};

fn toolz_tests() -> Vec<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, toolz, pytest; d = os.path.join(os.path.dirname(toolz.__file__), 'tests'); \
             print('\\n'.join(sorted(os.path.join(d, f) for f in os.listdir(d) \
             if f.startswith('test_') and f.endswith('.py'))))",
        ])
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "pytest and toolz must be installed: python3 -m pip install pytest toolz ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn pytest(file: &str) -> &'static str {
    let status = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", file])
        .output()
        .expect("run pytest")
        .status;
    if status.success() { "passed" } else { "failed" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toolz_test_files_give_the_same_outcomes_through_testfleet() {
    let files = toolz_tests();
    assert!(
        files.len() >= 10,
        "expected toolz's test modules, found {files:?}"
    );
    let dir = super::support::test_dir();
    std::fs::write(dir.path().join("files.txt"), files.join("\n")).unwrap();
    std::fs::write(
        dir.path().join("plan.toml"),
        r#"name = "toolz"
[defaults]
timeout = "5m"
[[matrix]]
name = "{item}"
command = ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "{item}"]
items_file = "files.txt"
"#,
    )
    .unwrap();

    let cluster = local_cluster(3, dir.path(), &[]);
    cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addrs = cluster
        .addresses()
        .into_values()
        .collect::<Vec<_>>()
        .join(",");
    let _workers: Vec<WorkerProcess> = (1..=3)
        .map(|i| WorkerProcess::start(&addrs, &format!("py{i}"), 2, dir.path()))
        .collect();
    let plan = dir.path().join("plan.toml");
    let run = tokio::task::spawn_blocking({
        let addrs = addrs.clone();
        move || {
            Command::new(binary())
                .env("TESTFLEET_TOKEN_FILE", token_file(Role::Operator))
                .args([
                    "run",
                    plan.to_str().unwrap(),
                    "--coordinator",
                    &addrs,
                    "-o",
                    "json",
                ])
                .output()
                .expect("run testfleet run")
        }
    })
    .await
    .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "testfleet run printed no JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&run.stderr)
        )
    });
    let through_testfleet: BTreeMap<String, String> = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let direct: BTreeMap<String, String> = files
        .iter()
        .map(|f| (f.clone(), pytest(f).to_string()))
        .collect();
    assert_eq!(through_testfleet, direct);
    let workers: std::collections::BTreeSet<&str> = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["worker_id"].as_str())
        .collect();
    assert!(
        workers.len() >= 2,
        "the files should spread over the workers: {workers:?}"
    );
    let expected_code = if direct.values().all(|s| s == "passed") {
        0
    } else {
        1
    };
    assert_eq!(run.status.code(), Some(expected_code));
}
