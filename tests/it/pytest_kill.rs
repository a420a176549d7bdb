//! `testfleet pytest` with a suite this project did not write and a worker lost mid-run:
//! pyflakes' own tests (as installed from PyPI, copied into a checkout of their own) sharded by
//! test over three workers, one shard per worker slot. One worker is SIGKILLed while it holds
//! its shard (its executor wedged with the injected `withhold-results`, so that it is
//! certainly still holding it); the shard is requeued and runs again on a survivor. The merged
//! JUnit XML must hold exactly the tests and outcomes of a direct pytest run, and
//! `test_results` one final row per test, none from the lost attempt.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::pytest_cmd::outcomes;
use super::support::{
    WorkerProcess, binary, client, count_reaches, local_cluster, query_consistent, test_dir,
    token_file,
};
use super::third_party::{python, python_command};

const LIMIT: Duration = Duration::from_secs(120);

/// Copies pyflakes' installed tests to `dir/checkout/pyflakes_tests`; returns the checkout.
fn pyflakes_checkout(dir: &Path) -> PathBuf {
    let out = python_command()
        .args([
            "-c",
            "import os, pyflakes; print(os.path.join(os.path.dirname(pyflakes.__file__), 'test'))",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let checkout = dir.join("checkout");
    let tests = checkout.join("pyflakes_tests");
    std::fs::create_dir_all(&tests).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, tests.join(path.file_name().unwrap())).unwrap();
        }
    }
    checkout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyflakes_sharded_over_three_workers_survives_one_killed_mid_run() {
    let (py, path) = python();
    let dir = test_dir();
    let d = dir.path();
    let checkout = pyflakes_checkout(d);

    let direct = d.join("direct.xml");
    let status = python_command()
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("--junit-xml={}", direct.display()))
        .arg("pyflakes_tests")
        .current_dir(&checkout)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "pyflakes' tests pass directly");
    let expected = outcomes(&direct);
    assert!(expected.len() > 500, "{} tests", expected.len());

    let cluster = local_cluster(1, d, &[]);
    cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(1).to_string();
    let env: Vec<(&str, &Path)> = path
        .iter()
        .map(|p| ("PYTHONPATH", Path::new(p.as_str())))
        .collect();
    let _w1 = WorkerProcess::start_with_env(&addr, "w1", d, &["--no-probe"], &env);
    let _w2 = WorkerProcess::start_with_env(&addr, "w2", d, &["--no-probe"], &env);
    let mut doomed = WorkerProcess::start_with_env(
        &addr,
        "doomed",
        d,
        &["--no-probe", "--inject-fault", "withhold-results"],
        &env,
    );
    count_reaches(
        &addr,
        "SELECT count(*) FROM workers WHERE status = 'healthy'",
        3,
        LIMIT,
    )
    .await;

    // No --shards: one per healthy slot, so each worker gets one.
    let merged = d.join("merged.xml");
    let mut command = std::process::Command::new(binary());
    command
        .args([
            "pytest",
            "--coordinator",
            &addr,
            "--python",
            py,
            "--junit-xml",
        ])
        .arg(&merged)
        .arg("--cwd")
        .arg(&checkout)
        .args(["--", "pyflakes_tests"])
        .current_dir(d)
        .env(
            "TESTFLEET_TOKEN_FILE",
            token_file(testfleet::auth::Role::Operator),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = path {
        command.env("PYTHONPATH", path);
    }
    let pytest = command.spawn().unwrap();

    count_reaches(
        &addr,
        "SELECT count(*) FROM tasks WHERE worker_id = 'doomed' AND status = 'running'",
        1,
        LIMIT,
    )
    .await;
    doomed.kill();

    let out = tokio::time::timeout(
        LIMIT,
        tokio::task::spawn_blocking(move || pytest.wait_with_output()),
    )
    .await
    .expect("testfleet pytest ends")
    .unwrap()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("3 shards: longest"), "{err}");
    assert_eq!(outcomes(&merged), expected, "{err}");

    // The doomed worker's shard ran again; every test is one row, of its final attempt.
    let mut c = client(&addr).await;
    let rows = query_consistent(
        &mut c,
        "SELECT (SELECT count(*) FROM test_results), \
         (SELECT count(DISTINCT test_id) FROM test_results), \
         (SELECT count(*) FROM test_results r JOIN tasks t \
            ON t.id = r.task_id AND t.attempt = r.attempt), \
         (SELECT count(*) FROM test_results WHERE worker_id = 'doomed'), \
         (SELECT count(*) FROM tasks WHERE attempt > 1), \
         (SELECT count(*) FROM task_attempts WHERE worker_id = 'doomed')",
    )
    .await;
    let n = expected.len() as u64;
    let counts: Vec<u64> = rows[0].iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(counts, [n, n, n, 0, 1, 1], "{rows:?}");
}
