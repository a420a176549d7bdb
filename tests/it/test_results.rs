//! Per-test results end to end: a plan task names its JUnit XML (`junit = "report.xml"`), the
//! command writes it (finding the path in `TESTFLEET_JUNIT_XML`), the worker reads it and
//! reports each test with the attempt's result, the leader records one `test_results` row per
//! test, and `testfleet tests slowest|flaky|history` read them.

use serde_json::Value;

use super::support::{one_node_one_worker, run};

/// A task that writes a JUnit report of three tests (one failed, one skipped, one flaky)
/// and fails as pytest would.
const PLAN: &str = r#"
name = "junit"

[[task]]
name = "suite"
junit = "report-{index}.xml"
command = ["sh", "-c", """
cat > "$TESTFLEET_JUNIT_XML" <<'XML'
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.test_math" name="test_add" time="0.004"/>
<testcase classname="tests.test_math" name="test_div" time="1.250"><failure message="ZeroDivisionError">trace</failure></testcase>
<testcase classname="tests.test_gpu" name="test_shader" time="0"><skipped message="no GPU"/></testcase>
<testcase classname="tests.test_net" name="test_retry" time="0.3"><rerunFailure message="timeout"/></testcase>
</testsuite></testsuites>
XML
exit 1
"""]

[[task]]
name = "no-report"
junit = "missing.xml"
command = ["true"]
"#;

fn json(args: &[&str], addr: &str, dir: &std::path::Path) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-o", "json", "--coordinator", addr]);
    let (code, out, err) = run(&all, dir);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_junit_report_becomes_per_test_rows_and_history() {
    let (dir, _cluster, addr, _worker) = one_node_one_worker().await;
    let d = dir.path();
    let plan = d.join("plan.toml");
    std::fs::write(&plan, PLAN.replace("{index}", "1")).unwrap();
    let (code, _, err) = run(
        &["run", &plan.display().to_string(), "--coordinator", &addr],
        d,
    );
    assert_eq!(code, 1, "a test failed: {err}");

    let rows = json(
        &[
            "sql",
            "--consistent",
            "SELECT test_id, outcome, duration_ms, message, flaky FROM test_results ORDER BY id",
        ],
        &addr,
        d,
    );
    let rows: Vec<(String, String, u64, String, bool)> = rows
        .as_array()
        .unwrap_or_else(|| panic!("{rows}"))
        .iter()
        .map(|r| {
            (
                r["test_id"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["duration_ms"].as_u64().unwrap(),
                r["message"].as_str().unwrap().to_string(),
                r["flaky"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("tests.test_math::test_add", "passed", 4, "", false),
        (
            "tests.test_math::test_div",
            "failed",
            1250,
            "ZeroDivisionError",
            false,
        ),
        ("tests.test_gpu::test_shader", "skipped", 0, "no GPU", false),
        ("tests.test_net::test_retry", "passed", 300, "timeout", true),
    ];
    let expected: Vec<(String, String, u64, String, bool)> = expected
        .iter()
        .map(|(a, b, c, d, e)| (a.to_string(), b.to_string(), *c, d.to_string(), *e))
        .collect();
    assert_eq!(rows, expected);

    // A task whose report is missing still finishes; its output says why it has no tests.
    let (code, out, err) = run(&["tasks", "--coordinator", &addr, "-o", "json"], d);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no-report"), "{out}");
    let tail = json(
        &[
            "sql",
            "--consistent",
            "SELECT a.output_tail FROM task_attempts a JOIN tasks t ON t.id = a.task_id \
             WHERE t.name = 'no-report'",
        ],
        &addr,
        d,
    );
    assert!(
        tail[0]["output_tail"]
            .as_str()
            .unwrap()
            .contains("no per-test results: cannot read the JUnit XML"),
        "{tail}"
    );

    let slowest = json(&["tests", "slowest"], &addr, d);
    assert_eq!(
        slowest[0]["test_id"], "tests.test_math::test_div",
        "{slowest}"
    );
    let flaky = json(&["tests", "flaky"], &addr, d);
    let flaky_ids: Vec<&str> = flaky
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["test_id"].as_str().unwrap())
        .collect();
    assert_eq!(flaky_ids, ["tests.test_net::test_retry"], "{flaky}");
    let history = json(&["tests", "history", "test_div"], &addr, d);
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["outcome"], "failed", "{history}");
    let (code, _, err) = run(
        &[
            "tests",
            "history",
            "nothing_like_it",
            "--coordinator",
            &addr,
        ],
        d,
    );
    assert_ne!(code, 0);
    assert!(err.contains("no recorded run of a test matching"), "{err}");
}
