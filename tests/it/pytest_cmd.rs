//! `testfleet pytest` end to end on a small suite written here: collected on the client,
//! sharded over two workers, one merged JUnit XML that holds exactly the tests and outcomes of
//! a direct pytest run (a module skipped at import included), one `test_results` row per test,
//! pytest's exit code; reruns of failed
//! tests record a test that fails and then passes as flaky; a collection error is shown as
//! pytest shows it.

use std::path::Path;

use super::support::{WorkerProcess, local_cluster, run, test_dir};
use super::third_party::python;

const SUITE: [(&str, &str); 4] = [
    (
        "tests/test_math.py",
        "import pytest\n\
         def test_add():\n    assert 1 + 1 == 2\n\
         def test_div():\n    assert 1 / 0\n\
         @pytest.mark.parametrize('n', [1, 2, 3])\n\
         def test_square(n):\n    assert n * n >= n\n",
    ),
    (
        "tests/test_more.py",
        "import pytest\n\
         class TestGroup:\n    def test_inner(self):\n        assert True\n\
         @pytest.mark.skip(reason='no GPU')\n\
         def test_gpu():\n    pass\n",
    ),
    (
        "tests/test_optional.py",
        "import pytest\n\
         pytest.importorskip('a_module_nobody_installed')\n\
         def test_never_collected():\n    pass\n",
    ),
    ("tests/__init__.py", ""),
];

/// Writes [`SUITE`] under `dir/suite` and returns that directory.
fn write_suite(dir: &Path) -> std::path::PathBuf {
    let suite = dir.join("suite");
    for (file, text) in SUITE {
        let file = suite.join(file);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    suite
}

/// `(id, outcome)` of every test in a JUnit XML file, sorted.
pub(crate) fn outcomes(file: &Path) -> Vec<(String, String)> {
    let mut tests: Vec<(String, String)> = testfleet::worker::junit::read(file)
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.outcome.as_str().to_string()))
        .collect();
    tests.sort();
    tests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suite_sharded_over_two_workers_reports_what_a_direct_run_does() {
    let (py, path) = python();
    let dir = test_dir();
    let d = dir.path();
    let suite = write_suite(d);
    // The direct run: what the fleet must reproduce.
    let direct = d.join("direct.xml");
    let mut command = std::process::Command::new(py);
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("--junit-xml={}", direct.display()))
        .current_dir(&suite);
    if let Some(path) = path {
        command.env("PYTHONPATH", path);
    }
    let status = command.status().unwrap();
    assert_eq!(status.code(), Some(1), "the suite has one failing test");

    let cluster = local_cluster(1, d, &[]);
    cluster
        .leader(std::time::Duration::from_secs(60), None)
        .await
        .unwrap();
    let addr = cluster.addr(1).to_string();
    let env: Vec<(&str, &Path)> = path
        .iter()
        .map(|p| ("PYTHONPATH", Path::new(p.as_str())))
        .collect();
    let _w1 = WorkerProcess::start_with_env(&addr, "w1", d, &[], &env);
    let _w2 = WorkerProcess::start_with_env(&addr, "w2", d, &[], &env);

    let merged = d.join("merged.xml");
    let suite_dir = suite.display().to_string();
    let merged_arg = merged.display().to_string();
    let args = [
        "pytest",
        "--coordinator",
        &addr,
        "--python",
        py,
        "--cwd",
        &suite_dir,
        "--shards",
        "2",
        "--junit-xml",
        &merged_arg,
        "--",
        "tests",
    ];
    let (code, _, err) = run_with_path(&args, d, path.as_deref());
    assert_eq!(code, 1, "one test failed: {err}");
    assert!(
        err.contains("5 passed, 1 failed, 2 skipped, 0 errors"),
        "{err}"
    );
    assert_eq!(outcomes(&merged), outcomes(&direct));

    // Two shards ran, and every test is one row of their final attempts.
    let (code, out, err) = run(
        &[
            "sql",
            "--consistent",
            "-o",
            "json",
            "--coordinator",
            &addr,
            "SELECT count(*) AS n, count(DISTINCT r.task_id) AS shards FROM test_results r \
             JOIN tasks t ON t.id = r.task_id AND t.attempt = r.attempt",
        ],
        d,
    );
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["n"], 8, "{rows}");
    assert_eq!(rows[0]["shards"], 2, "{rows}");

    // --rerun-failures: a test that fails once and then passes counts as passed and is recorded
    // as flaky; one that always fails still fails. No --shards: one shard per healthy slot
    // (two workers of one slot each).
    std::fs::write(
        suite.join("tests/test_flaky.py"),
        "import os\n\
         def test_once():\n    \
             mark = os.path.join(os.path.dirname(__file__), 'failed-once')\n    \
             if not os.path.exists(mark):\n        \
                 open(mark, 'w').close()\n        \
                 assert False, 'the first run fails'\n",
    )
    .unwrap();
    let rerun_args: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !["--shards", "2"].contains(a))
        .collect();
    let rerun_args = [
        &rerun_args[..rerun_args.len() - 2],
        &["--rerun-failures", "2", "--", "tests"],
    ]
    .concat();
    let (code, _, err) = run_with_path(&rerun_args, d, path.as_deref());
    assert_eq!(code, 1, "test_div fails on every run: {err}");
    assert!(err.contains("2 shards: longest"), "{err}");
    assert!(
        err.contains("6 passed (1 flaky: failed, then passed on a rerun), 1 failed"),
        "{err}"
    );
    let once = testfleet::worker::junit::read(&merged)
        .unwrap()
        .into_iter()
        .find(|t| t.id == "tests.test_flaky::test_once")
        .expect("the flaky test is in the merged report");
    assert_eq!(once.outcome.as_str(), "passed");
    assert!(once.flaky);
    assert!(once.message.contains("the first run fails"), "{once:?}");
    let (code, out, err) = run(&["tests", "flaky", "-o", "json", "--coordinator", &addr], d);
    assert_eq!(code, 0, "{err}");
    let flaky: serde_json::Value = serde_json::from_str(&out).unwrap();
    let once = flaky
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["test_id"] == "tests.test_flaky::test_once")
        .unwrap_or_else(|| panic!("not listed as flaky: {flaky}"));
    assert_eq!(once["passed_on_rerun"], 1, "{once}");

    // A collection error is pytest's own, with its exit code (4: usage error).
    std::fs::write(
        suite.join("tests/test_broken.py"),
        "import nothing_like_this\n",
    )
    .unwrap();
    let (code, out, _) = run_with_path(&args, d, path.as_deref());
    assert_eq!(code, 2, "pytest's code for errors during collection");
    assert!(out.contains("nothing_like_this"), "{out}");
}

/// `run` with PYTHONPATH set when the test's Python needs it.
fn run_with_path(args: &[&str], dir: &Path, path: Option<&str>) -> (i32, String, String) {
    match path {
        None => run(args, dir),
        Some(path) => {
            let out = std::process::Command::new(super::support::binary())
                .args(args)
                .current_dir(dir)
                .env("PYTHONPATH", path)
                .env(
                    "TESTFLEET_TOKEN_FILE",
                    super::support::token_file(testfleet::auth::Role::Operator),
                )
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    }
}

#[test]
fn pytest_local_runs_the_suite_on_a_fleet_of_its_own() {
    let (py, path) = python();
    let dir = test_dir();
    let d = dir.path();
    let suite = write_suite(d);
    let merged = d.join("merged.xml");
    let data = d.join("data");
    let (suite_dir, merged_arg, data_arg) = (
        suite.display().to_string(),
        merged.display().to_string(),
        data.display().to_string(),
    );
    let args = [
        "pytest",
        "--local",
        "2",
        "--data-dir",
        &data_arg,
        "--python",
        py,
        "--cwd",
        &suite_dir,
        "--junit-xml",
        &merged_arg,
        "--",
        "tests",
    ];
    let (code, _, err) = run_with_path(&args, d, path.as_deref());
    assert_eq!(code, 1, "one test failed: {err}");
    assert!(
        err.contains("5 passed, 1 failed, 2 skipped, 0 errors"),
        "{err}"
    );
    let ids: Vec<String> = outcomes(&merged).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert!(ids.contains(&"tests.test_more.TestGroup::test_inner".to_string()));
    // The fleet is gone: nothing mentions its data directory any more.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&data_arg))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
