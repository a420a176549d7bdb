//! `testfleet pytest [--shards N] [--junit-xml FILE] [--python PY] [--cwd DIR] -- [ARGS]`: a
//! pytest suite run across the fleet, sharded by test.
//!
//! 1. The tests are collected here (`PY -m pytest --collect-only -q ARGS` in the working
//!    directory); a collection error is shown as pytest shows it, with its exit code.
//! 2. They are split into shards balanced by each test's past duration from `test_results`
//!    ([`crate::plan::shard`]); by default one shard per slot of the healthy workers, and
//!    never more node ids in one shard than a task's command line may hold.
//! 3. One job with one task per shard runs `PY -m pytest -p no:cacheprovider
//!    --junit-xml=FILE OPTIONS NODE_IDS` in the same directory on the workers (a shared
//!    checkout; FILE in the worker's /tmp), with `junit = FILE`, so each test becomes a
//!    `test_results` row; a shard lost
//!    with its worker runs again and only its final attempt counts. With `--rerun-failures N`
//!    the shard runs `pytest_rerun.py` instead, which reruns the shard's failed tests up to N
//!    times in the same attempt and reports every round in one file: a test that failed and
//!    then passed is recorded as flaky (and counts as passed).
//! 4. It is followed with the progress bar; then the final attempts' tests are written as one
//!    merged JUnit XML file and summed up with the shards' balance (the longest shard's time
//!    against the mean), and the command exits as pytest does: 0 when every
//!    test passed or was skipped, 1 when a test failed, the job's own code (2, 3) when a shard
//!    could not run, 5 when nothing was collected.
//!
//! `ARGS` go to the collection as they are; each shard gets the options among them (paths —
//! what exists in the directory or names a test — are replaced by the shard's node ids).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::args::Target;
use super::{CliError, Remote, jobs};
use crate::plan::{JUNIT_ENV, shard};
use crate::state::command::TaskSpec;
use crate::viz::escape;

/// pytest's exit code when it collected no test.
const NO_TESTS: u8 = 5;
/// Node ids one shard's command line holds at most (a task has at most
/// [`crate::state::limits::MAX_ARGS`] arguments; the rest is room for pytest's options).
pub const MAX_TESTS_PER_SHARD: usize = 3_500;
/// `--rerun-failures`' driver, run with `python -c`.
const RERUN_DRIVER: &str = include_str!("pytest_rerun.py");

#[derive(Clone, clap::Args)]
pub struct PytestArgs {
    #[command(flatten)]
    pub target: Target,
    /// Shards to split the tests into [default: the healthy workers' slots]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shards: Option<u32>,
    /// Write every test's result to this JUnit XML file
    #[arg(long, value_name = "FILE")]
    pub junit_xml: Option<PathBuf>,
    /// The Python that runs pytest, here and on the workers
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The suite's directory, here and on the workers (a shared checkout) [default: this one]
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Time limit of one shard, e.g. 30m
    #[arg(long, default_value = "30m", value_parser = crate::plan::parse_timeout)]
    pub timeout: Duration,
    /// Run each shard's failed tests again, up to N times, where they ran; a test that fails
    /// and then passes counts as passed and is recorded as flaky
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub rerun_failures: u32,
    /// Run on a fleet of this command's own: a coordinator in this process and N local
    /// workers, started before the suite and stopped after it
    /// (`--coordinator` given with it is refused; TESTFLEET_COORDINATOR is ignored.)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub local: Option<u16>,
    /// With --local: keep the coordinator's data and the logs in DIR (the test history with
    /// them, for the next run's balance)
    #[arg(long, value_name = "DIR", requires = "local")]
    pub data_dir: Option<PathBuf>,
    /// pytest's own arguments, after --
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// One test's final result.
#[derive(Clone, Debug, PartialEq)]
pub struct TestLine {
    pub classname: String,
    pub name: String,
    pub outcome: String,
    pub duration_ms: u64,
    pub message: String,
    /// Passed after failing in the same attempt (`--rerun-failures`).
    pub flaky: bool,
}

/// Runs the suite on the cluster, or with `--local` on a fleet of its own; `interrupts` cancel
/// the job as in `run`.
pub async fn run(
    args: PytestArgs,
    interrupts: Option<&mut tokio::sync::mpsc::UnboundedReceiver<()>>,
) -> Result<(), CliError> {
    let Some(workers) = args.local else {
        let remote = args.target.remote()?;
        return run_on(&remote, &args, interrupts).await;
    };
    let options = super::local::LocalOptions {
        workers: workers as usize,
        data_dir: args.data_dir.clone(),
        probe: false,
    };
    let mut fleet = super::local::LocalFleet::start_with(&options).await?;
    eprintln!("local fleet up: {workers} workers");
    let result = run_on(fleet.remote(), &args, interrupts).await;
    if let Err(e) = fleet.stop().await {
        eprintln!("warning: stopping the local fleet: {e}");
    }
    result
}

async fn run_on(
    remote: &Remote,
    args: &PytestArgs,
    interrupts: Option<&mut tokio::sync::mpsc::UnboundedReceiver<()>>,
) -> Result<(), CliError> {
    let suite = execute(remote, args, interrupts).await?;
    if let Some(balance) = shard_balance(&suite.shard_ms) {
        eprintln!("{balance}");
    }
    let flaky = suite.tests.iter().filter(|t| t.flaky).count();
    eprintln!(
        "{} passed{}, {} failed, {} skipped, {} errors in {:.1} s ({} of {} collected tests \
         reported)",
        suite.count("passed"),
        if flaky > 0 {
            format!(" ({flaky} flaky: failed, then passed on a rerun)")
        } else {
            String::new()
        },
        suite.count("failed"),
        suite.count("skipped"),
        suite.count("error"),
        suite.wall.as_secs_f64(),
        suite.tests.len(),
        suite.collected
    );
    for t in suite
        .tests
        .iter()
        .filter(|t| t.outcome == "failed" || t.outcome == "error")
    {
        eprintln!(
            "{} {}::{} - {}",
            t.outcome.to_uppercase(),
            t.classname,
            t.name,
            t.message
        );
    }
    match suite.exit_code() {
        0 => Ok(()),
        code => Err(CliError::Exit(code)),
    }
}

/// What one run of a suite on the fleet gave.
#[derive(Debug)]
pub struct SuiteRun {
    /// Tests collected.
    pub collected: usize,
    /// The final attempts' tests, in test id order.
    pub tests: Vec<TestLine>,
    /// Each shard's final attempt, start to end, in ms.
    pub shard_ms: Vec<u64>,
    /// From the start of the collection to the merged results.
    pub wall: Duration,
    /// The job's own exit code (2, 3 when a shard could not run at all).
    pub job_exit_code: u8,
}

impl SuiteRun {
    /// Tests with this outcome.
    pub fn count(&self, outcome: &str) -> usize {
        self.tests.iter().filter(|t| t.outcome == outcome).count()
    }

    /// pytest's exit code for the whole run.
    pub fn exit_code(&self) -> u8 {
        match (
            self.count("failed") + self.count("error"),
            self.job_exit_code,
        ) {
            (0, 0) => 0,
            // The job's code says more when a shard could not run at all (abandoned, timed
            // out).
            (_, code) if code >= 2 => code,
            _ => 1,
        }
    }
}

/// Collects, shards, runs and gathers the suite on the fleet behind `remote`, and writes the
/// merged JUnit XML; prints only the job's progress.
pub async fn execute(
    remote: &Remote,
    args: &PytestArgs,
    interrupts: Option<&mut tokio::sync::mpsc::UnboundedReceiver<()>>,
) -> Result<SuiteRun, CliError> {
    let started = Instant::now();
    let cwd = match &args.cwd {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().map_err(|e| CliError::Other(e.to_string()))?,
    };
    let cwd = std::path::absolute(&cwd).map_err(|e| CliError::Other(e.to_string()))?;
    let nodes = collect(&args.python, &cwd, &args.args)?;
    let history = history(remote).await?;
    let shards = match args.shards {
        Some(n) => n as usize,
        None => healthy_slots(remote).await?.max(1),
    };
    let packed = shard::pack(
        &shard::with_history(&nodes, &history),
        shards,
        MAX_TESTS_PER_SHARD,
    );
    let job_id = uuid::Uuid::new_v4().to_string();
    let options = options_only(&args.args, &cwd);
    let specs: Vec<TaskSpec> = packed
        .iter()
        .enumerate()
        .map(|(i, (tests, _))| shard_task(args, &cwd, &job_id, i, &options, tests))
        .collect();
    let name = format!(
        "pytest-{}",
        cwd.file_name()
            .map_or("suite".into(), |n| n.to_string_lossy().into_owned())
    );
    jobs::submit(remote, &job_id, &name, &specs).await?;
    eprintln!(
        "{} tests in {} shards (job {job_id}), by past durations where known",
        nodes.len(),
        specs.len()
    );
    let report = jobs::follow_interruptible(remote, &job_id, interrupts).await?;
    let job_exit_code = jobs::summary(report).exit_code;
    let tests = results(remote, &job_id).await?;
    let shard_ms = shard_times(remote, &job_id).await?;
    if let Some(file) = &args.junit_xml {
        std::fs::write(file, junit_xml(&tests, started.elapsed()))
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", file.display())))?;
    }
    Ok(SuiteRun {
        collected: nodes.len(),
        tests,
        shard_ms,
        wall: started.elapsed(),
        job_exit_code,
    })
}

/// The node ids pytest collects, with the modules it skipped while collecting them (a
/// module-level `pytest.importorskip`): a shard given such a module's path reports its skip as
/// a direct run does. Or pytest's own error output and exit code.
fn collect(python: &str, cwd: &Path, args: &[String]) -> Result<Vec<String>, CliError> {
    if let Some(own) = args
        .iter()
        .find(|a| a.starts_with("--junit-xml") || a.starts_with("--junitxml"))
    {
        return Err(CliError::Usage(format!(
            "{own} after -- would take each shard's report: give --junit-xml FILE to testfleet \
             pytest, before --, for the merged report"
        )));
    }
    let report = tempfile::NamedTempFile::new()
        .map_err(|e| CliError::Other(format!("cannot make a temporary file: {e}")))?;
    let out = std::process::Command::new(python)
        .args([
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .arg(format!("--junit-xml={}", report.path().display()))
        .args(args)
        .current_dir(cwd)
        .output()
        .map_err(|e| CliError::Usage(format!("cannot run {python} -m pytest: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let code = out.status.code().unwrap_or(2);
    if code != 0 {
        print!("{stdout}");
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        return Err(CliError::Exit(u8::try_from(code).unwrap_or(2)));
    }
    let mut nodes = shard::collected(&stdout);
    // What pytest skipped while collecting is in its report, named by module.
    if let Ok(skipped) = crate::worker::junit::read(report.path()) {
        nodes.extend(skipped.iter().filter_map(|t| {
            let module = format!("{}.py", t.id.replace('.', "/"));
            (t.classname.is_empty() && cwd.join(&module).is_file()).then_some(module)
        }));
    }
    if nodes.is_empty() {
        print!("{stdout}");
        return Err(CliError::Exit(NO_TESTS));
    }
    Ok(nodes)
}

/// The arguments a shard keeps: options, not the paths or node ids that chose the tests.
fn options_only(args: &[String], cwd: &Path) -> Vec<String> {
    args.iter()
        .filter(|a| {
            a.starts_with('-')
                || !(a.contains("::") || cwd.join(a.split("::").next().unwrap_or(a)).exists())
        })
        .cloned()
        .collect()
}

fn shard_task(
    args: &PytestArgs,
    cwd: &Path,
    job: &str,
    index: usize,
    options: &[String],
    tests: &[String],
) -> TaskSpec {
    // Outside the checkout, which may be shared: the worker's own /tmp.
    let report = format!("/tmp/testfleet-junit-{job}-{index}.xml");
    let mut command = if args.rerun_failures == 0 {
        vec![
            args.python.clone(),
            "-m".into(),
            "pytest".into(),
            "-p".into(),
            "no:cacheprovider".into(),
            format!("--junit-xml={report}"),
        ]
    } else {
        vec![
            args.python.clone(),
            "-c".into(),
            RERUN_DRIVER.into(),
            report.clone(),
            args.rerun_failures.to_string(),
            options.len().to_string(),
        ]
    };
    command.extend(options.iter().cloned());
    command.extend(tests.iter().cloned());
    TaskSpec {
        env: BTreeMap::from([(JUNIT_ENV.to_string(), report)]),
        cwd: Some(cwd.display().to_string()),
        timeout_ms: args.timeout.as_millis() as u64,
        timeout_retries: 0,
        ..TaskSpec::new(format!("{job}-{index}"), format!("shard-{index}"), command)
    }
}

/// Median past duration of every test ever recorded.
async fn history(remote: &Remote) -> Result<BTreeMap<String, u64>, CliError> {
    let sql = "SELECT test_id, CAST(median(duration_ms) AS BIGINT) FROM test_results \
               GROUP BY test_id";
    let result = super::query_result(remote, sql, false).await?;
    Ok(result
        .rows
        .iter()
        .filter_map(|r| Some((r.first()?.as_str()?.to_string(), r.get(1)?.as_u64()?)))
        .collect())
}

/// The slots of the healthy workers (a worker that does not report its slots counts as one).
async fn healthy_slots(remote: &Remote) -> Result<usize, CliError> {
    let sql = "SELECT CAST(coalesce(sum(coalesce(TRY_CAST(capabilities->>'slots' AS BIGINT), 1)), \
               0) AS BIGINT) FROM workers WHERE status = 'healthy' AND drained_at IS NULL";
    let result = super::query_result(remote, sql, false).await?;
    Ok(result
        .rows
        .first()
        .and_then(|r| r.first()?.as_u64())
        .unwrap_or(1) as usize)
}

/// The final attempts' tests of `job`, in test id order.
async fn results(remote: &Remote, job: &str) -> Result<Vec<TestLine>, CliError> {
    super::reads::check_id(job)?;
    let sql = format!(
        "SELECT r.classname, r.name, r.outcome, r.duration_ms, r.message, r.flaky \
         FROM test_results r \
         JOIN tasks t ON t.id = r.task_id AND t.attempt = r.attempt WHERE t.job_id = '{job}' \
         ORDER BY r.test_id"
    );
    let result = super::query_result(remote, &sql, true).await?;
    let text =
        |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap_or_default().to_string();
    Ok(result
        .rows
        .iter()
        .map(|r| TestLine {
            classname: text(r.first()),
            name: text(r.get(1)),
            outcome: text(r.get(2)),
            duration_ms: r.get(3).and_then(|v| v.as_u64()).unwrap_or(0),
            message: text(r.get(4)),
            flaky: r.get(5).and_then(|v| v.as_bool()).unwrap_or(false),
        })
        .collect())
}

/// Each shard's final attempt of `job`, start to end, in ms.
async fn shard_times(remote: &Remote, job: &str) -> Result<Vec<u64>, CliError> {
    let sql = format!(
        "SELECT epoch_ms(a.finished_at) - epoch_ms(a.started_at) FROM tasks t \
         JOIN task_attempts a ON a.task_id = t.id AND a.attempt = t.attempt \
         WHERE t.job_id = '{job}' AND a.started_at IS NOT NULL AND a.finished_at IS NOT NULL"
    );
    let result = super::query_result(remote, &sql, true).await?;
    Ok(result
        .rows
        .iter()
        .filter_map(|r| r.first()?.as_u64())
        .collect())
}

/// The longest shard's time over the mean of all, for two shards or more.
pub fn balance(shard_ms: &[u64]) -> Option<f64> {
    let longest = *shard_ms.iter().max()?;
    let mean = shard_ms.iter().sum::<u64>() as f64 / shard_ms.len() as f64;
    (shard_ms.len() >= 2 && mean > 0.0).then(|| longest as f64 / mean)
}

/// "N shards: longest L s, mean M s (R× the mean)" for `times` in ms, with two shards or more.
pub fn shard_balance(times: &[u64]) -> Option<String> {
    let ratio = balance(times)?;
    let longest = times.iter().max().copied().unwrap_or(0);
    let mean = times.iter().sum::<u64>() as f64 / times.len() as f64;
    Some(format!(
        "{} shards: longest {:.2} s, mean {:.2} s ({ratio:.2}× the mean)",
        times.len(),
        longest as f64 / 1000.0,
        mean / 1000.0,
    ))
}

/// One JUnit XML document of every test.
pub fn junit_xml(tests: &[TestLine], wall: Duration) -> String {
    let count = |o: &str| tests.iter().filter(|t| t.outcome == o).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<testsuites><testsuite name=\"testfleet\" \
         tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        tests.len(),
        count("failed"),
        count("error"),
        count("skipped"),
        wall.as_secs_f64()
    );
    for t in tests {
        xml.push_str(&format!(
            "<testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            escape(&t.classname),
            escape(&t.name),
            t.duration_ms as f64 / 1000.0
        ));
        let child = match t.outcome.as_str() {
            "failed" => Some("failure"),
            "error" => Some("error"),
            "skipped" => Some("skipped"),
            // Surefire's spelling of a test that passed on a rerun.
            _ if t.flaky => Some("flakyFailure"),
            _ => None,
        };
        match child {
            Some(tag) => xml.push_str(&format!(
                "><{tag} message=\"{}\"/></testcase>\n",
                escape(&t.message)
            )),
            None => xml.push_str("/>\n"),
        }
    }
    xml.push_str("</testsuite></testsuites>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merged_report_reads_back_as_the_same_tests() {
        let tests = vec![
            TestLine {
                classname: "tests.test_a".into(),
                name: "test_ok[<1>]".into(),
                outcome: "passed".into(),
                duration_ms: 12,
                message: String::new(),
                flaky: false,
            },
            TestLine {
                classname: "tests.test_a".into(),
                name: "test_bad".into(),
                outcome: "failed".into(),
                duration_ms: 1500,
                message: "assert 1 == \"2\" & more".into(),
                flaky: false,
            },
            TestLine {
                classname: "tests.test_b".into(),
                name: "test_skip".into(),
                outcome: "skipped".into(),
                duration_ms: 0,
                message: "no GPU".into(),
                flaky: false,
            },
            TestLine {
                classname: "tests.test_b".into(),
                name: "test_sometimes".into(),
                outcome: "passed".into(),
                duration_ms: 7,
                message: String::new(),
                flaky: true,
            },
        ];
        let xml = junit_xml(&tests, Duration::from_secs(2));
        let back = crate::worker::junit::parse(&xml).unwrap();
        let seen: Vec<(String, &str, u64, String)> = back
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.outcome.as_str(),
                    t.duration_ms,
                    t.message.clone(),
                )
            })
            .collect();
        let flaky: Vec<bool> = back.iter().map(|t| t.flaky).collect();
        assert_eq!(flaky, [false, false, false, true]);
        assert_eq!(
            seen,
            [
                (
                    "tests.test_a::test_ok[<1>]".to_string(),
                    "passed",
                    12,
                    String::new()
                ),
                (
                    "tests.test_a::test_bad".to_string(),
                    "failed",
                    1500,
                    "assert 1 == \"2\" & more".to_string()
                ),
                (
                    "tests.test_b::test_skip".to_string(),
                    "skipped",
                    0,
                    "no GPU".to_string()
                ),
                (
                    "tests.test_b::test_sometimes".to_string(),
                    "passed",
                    7,
                    String::new()
                ),
            ]
        );
    }

    #[test]
    fn the_balance_is_the_longest_shard_against_the_mean() {
        assert_eq!(shard_balance(&[]), None);
        assert_eq!(shard_balance(&[1200]), None);
        assert_eq!(
            shard_balance(&[1000, 2000, 3000]).unwrap(),
            "3 shards: longest 3.00 s, mean 2.00 s (1.50× the mean)"
        );
        assert_eq!(shard_balance(&[0, 0]), None);
        assert_eq!(balance(&[1000, 3000]), Some(1.5));
    }

    #[test]
    fn shards_keep_options_and_drop_the_paths_that_chose_the_tests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        let args: Vec<String> = ["-x", "tests", "-k", "not slow", "tests/test_a.py::test_b"]
            .map(String::from)
            .to_vec();
        assert_eq!(options_only(&args, dir.path()), ["-x", "-k", "not slow"]);
    }
}
