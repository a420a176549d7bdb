//! Per-test results from an attempt's JUnit XML — the format pytest (`--junit-xml`),
//! cargo-nextest, gotestsum, jest-junit and most CI tools write. A task names its file with
//! `junit = "path"` in a plan (the task's environment then carries
//! [`JUNIT_ENV`]`=path`, which the command may also use); after the command ends the worker
//! reads it and reports each `<testcase>` with the attempt's result.
//!
//! Each test: `classname` and `name` (its id is `classname::name`), `time` in seconds, and an
//! outcome from its children — `<failure>` failed, `<error>` error, `<skipped>` skipped,
//! none passed. A passing test with `<flakyFailure>`/`<flakyError>` or `<rerunFailure>`/
//! `<rerunError>` children (Maven Surefire's and pytest-rerunfailures' way to say it failed
//! before it passed) is flaky; so is a test reported failed and then passed in one file (a
//! runner that reports each run). Nested `<testsuite>`s are walked. Pure apart from reading
//! the file.

use std::collections::BTreeMap;
use std::path::Path;

use crate::state::command::{TestCase, TestOutcome};
use crate::state::limits::{MAX_TEST_MESSAGE_BYTES, MAX_TEST_NAME_BYTES, MAX_TESTS_PER_ATTEMPT};

pub use crate::plan::JUNIT_ENV;

/// The largest JUnit file read (bytes).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The most bytes of test reports one finished attempt carries (names, ids and messages);
/// beyond it messages are dropped, then tests, and the attempt's output says so.
pub const MAX_REPORT_BYTES: usize = 8 * 1024 * 1024;

/// Where the JUnit XML of an attempt with `env` running in `cwd` (the worker's own directory
/// when `None`) is, when its task asked for one.
pub fn requested(
    env: &std::collections::BTreeMap<String, String>,
    cwd: Option<&Path>,
) -> Option<std::path::PathBuf> {
    let path = Path::new(env.get(JUNIT_ENV)?);
    Some(match cwd {
        _ if path.is_absolute() => path.to_path_buf(),
        Some(cwd) => cwd.join(path),
        None => std::env::current_dir().ok()?.join(path),
    })
}

/// Tests as the wire carries them, within [`MAX_REPORT_BYTES`]; what did not fit, in words.
pub fn to_wire(tests: Vec<TestCase>) -> (Vec<crate::proto::TestCaseResult>, Option<String>) {
    let size = |t: &TestCase| t.classname.len() + t.name.len() + t.message.len() + 32;
    let total: usize = tests.iter().map(size).sum();
    let keep_messages = total <= MAX_REPORT_BYTES;
    let mut used = 0;
    let mut wire = Vec::with_capacity(tests.len());
    let count = tests.len();
    for mut test in tests {
        if !keep_messages {
            test.message.clear();
        }
        used += size(&test);
        if used > MAX_REPORT_BYTES {
            break;
        }
        wire.push(crate::proto::TestCaseResult {
            classname: test.classname,
            name: test.name,
            outcome: test.outcome.as_str().to_string(),
            duration_ms: test.duration_ms,
            message: test.message,
            flaky: test.flaky,
        });
    }
    let note = match (wire.len() < count, keep_messages) {
        (true, _) => Some(format!(
            "{} of {count} tests not reported: the report exceeds {MAX_REPORT_BYTES} bytes",
            count - wire.len()
        )),
        (false, false) => Some("test messages dropped: the report was too large".to_string()),
        (false, true) => None,
    };
    (wire, note)
}

/// A test as the leader records it, from the wire (an unknown outcome counts as an error).
pub fn from_wire(t: crate::proto::TestCaseResult) -> TestCase {
    let id = if t.classname.is_empty() {
        t.name.clone()
    } else {
        format!("{}::{}", t.classname, t.name)
    };
    TestCase {
        id,
        outcome: TestOutcome::parse(&t.outcome).unwrap_or(TestOutcome::Error),
        classname: t.classname,
        name: t.name,
        duration_ms: t.duration_ms,
        message: t.message,
        flaky: t.flaky,
    }
}

/// Reads the tests of the JUnit XML file at `path`; an error says what is wrong with it.
pub fn read(path: &Path) -> Result<Vec<TestCase>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the JUnit XML {}: {e}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "the JUnit XML {} is {size} bytes, more than the {MAX_FILE_BYTES} read",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the JUnit XML {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The tests of a JUnit XML document, in document order, each test once (its last report,
/// flaky when an earlier one failed and the last passed). At most
/// [`MAX_TESTS_PER_ATTEMPT`].
pub fn parse(text: &str) -> Result<Vec<TestCase>, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if !matches!(root.tag_name().name(), "testsuites" | "testsuite") {
        return Err(format!(
            "not JUnit XML: the root element is <{}>, not <testsuites> or <testsuite>",
            root.tag_name().name()
        ));
    }
    let mut order: Vec<String> = Vec::new();
    let mut by_id: BTreeMap<String, TestCase> = BTreeMap::new();
    for case in root
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "testcase")
    {
        let test = test_case(case);
        match by_id.get_mut(&test.id) {
            Some(seen) => {
                let failed_before =
                    matches!(seen.outcome, TestOutcome::Failed | TestOutcome::Error) || seen.flaky;
                let flaky = test.flaky || (failed_before && test.outcome == TestOutcome::Passed);
                // A flaky pass keeps what the failure said, as Surefire's <flakyFailure> does.
                let message = if flaky && test.message.is_empty() {
                    std::mem::take(&mut seen.message)
                } else {
                    test.message
                };
                *seen = TestCase {
                    flaky,
                    message,
                    ..test
                };
            }
            None => {
                if order.len() == MAX_TESTS_PER_ATTEMPT {
                    return Err(format!(
                        "more than {MAX_TESTS_PER_ATTEMPT} tests in one file: split the task"
                    ));
                }
                order.push(test.id.clone());
                by_id.insert(test.id.clone(), test);
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect())
}

fn test_case(node: roxmltree::Node) -> TestCase {
    let attr = |name: &str| {
        clipped(
            node.attribute(name).unwrap_or_default(),
            MAX_TEST_NAME_BYTES,
        )
    };
    let classname = attr("classname");
    let name = attr("name");
    let id = if classname.is_empty() {
        name.clone()
    } else {
        format!("{classname}::{name}")
    };
    let seconds: f64 = node
        .attribute("time")
        .and_then(|t| t.trim().replace(',', "").parse().ok())
        .filter(|t: &f64| t.is_finite() && *t >= 0.0)
        .unwrap_or(0.0);
    let child = |tags: &[&str]| {
        node.children()
            .find(|c| c.is_element() && tags.contains(&c.tag_name().name()))
    };
    let (outcome, detail) = if let Some(c) = child(&["failure"]) {
        (TestOutcome::Failed, Some(c))
    } else if let Some(c) = child(&["error"]) {
        (TestOutcome::Error, Some(c))
    } else if let Some(c) = child(&["skipped"]) {
        (TestOutcome::Skipped, Some(c))
    } else {
        (TestOutcome::Passed, None)
    };
    let reran = child(&["flakyFailure", "flakyError", "rerunFailure", "rerunError"]);
    let message = detail.or(reran).map_or(String::new(), |c| {
        let text = c
            .attribute("message")
            .filter(|m| !m.is_empty())
            .or_else(|| c.text())
            .unwrap_or_default();
        clipped(text.trim(), MAX_TEST_MESSAGE_BYTES)
    });
    TestCase {
        id,
        classname,
        name,
        outcome,
        duration_ms: (seconds * 1000.0).round() as u64,
        message,
        flaky: outcome == TestOutcome::Passed && reran.is_some(),
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn clipped(text: &str, max: usize) -> String {
    let mut text = text.to_string();
    crate::state::limits::clip(&mut text, max);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5" time="0.5">
<testcase classname="tests.test_math" name="test_add" time="0.001" />
<testcase classname="tests.test_math" name="test_div[0]" time="0.250">
  <failure message="ZeroDivisionError: division by zero">Traceback...</failure>
</testcase>
<testcase classname="tests.test_math" name="test_io" time="0.002"><error message="fixture 'db' not found">E</error></testcase>
<testcase classname="tests.test_math" name="test_gpu" time="0"><skipped type="pytest.skip" message="no GPU">skip</skipped></testcase>
<testcase classname="tests.test_net" name="test_retry" time="1.5"><rerunFailure message="timeout">t</rerunFailure></testcase>
</testsuite></testsuites>"#;

    #[test]
    fn a_pytest_report_gives_each_test_its_outcome_time_and_message() {
        let tests = parse(PYTEST).unwrap();
        let summary: Vec<(&str, &str, u64, &str, bool)> = tests
            .iter()
            .map(|t| {
                (
                    t.id.as_str(),
                    t.outcome.as_str(),
                    t.duration_ms,
                    t.message.as_str(),
                    t.flaky,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("tests.test_math::test_add", "passed", 1, "", false),
                (
                    "tests.test_math::test_div[0]",
                    "failed",
                    250,
                    "ZeroDivisionError: division by zero",
                    false
                ),
                (
                    "tests.test_math::test_io",
                    "error",
                    2,
                    "fixture 'db' not found",
                    false
                ),
                ("tests.test_math::test_gpu", "skipped", 0, "no GPU", false),
                (
                    "tests.test_net::test_retry",
                    "passed",
                    1500,
                    "timeout",
                    true
                ),
            ]
        );
    }

    #[test]
    fn a_test_reported_failed_then_passed_is_one_flaky_test() {
        let xml = r#"<testsuite name="s">
          <testcase classname="c" name="t" time="0.1"><failure message="boom"/></testcase>
          <testcase classname="c" name="t" time="0.2"/>
          <testsuite name="inner"><testcase name="bare" time="1,000.5"/></testsuite>
        </testsuite>"#;
        let tests = parse(xml).unwrap();
        assert_eq!(tests.len(), 2);
        assert_eq!(tests[0].id, "c::t");
        assert_eq!(tests[0].outcome, TestOutcome::Passed);
        assert!(tests[0].flaky);
        assert_eq!(tests[0].message, "boom", "what the failure said");
        assert_eq!(tests[1].id, "bare");
        assert_eq!(tests[1].duration_ms, 1_000_500);
    }

    #[test]
    fn what_is_not_junit_is_refused_with_the_reason() {
        assert!(parse("not xml").unwrap_err().contains("not XML"));
        let html = parse("<html><body/></html>").unwrap_err();
        assert!(html.contains("the root element is <html>"), "{html}");
        let huge = "x".repeat(5000);
        let xml = format!(
            r#"<testsuite><testcase name="{huge}"><failure message="{huge}"/></testcase></testsuite>"#
        );
        let tests = parse(&xml).unwrap();
        assert_eq!(tests[0].name.len(), MAX_TEST_NAME_BYTES);
        assert_eq!(tests[0].message.len(), MAX_TEST_MESSAGE_BYTES);
    }
}
