//! `testfleet bench pytest --local N [pytest options] -- ARGS`: one pytest suite run four ways
//! on this machine, side by side, in rounds, so that each ratio is measured under the same
//! load:
//!
//! 1. **direct**: `PY -m pytest -p no:cacheprovider ARGS`, one process;
//! 2. **xdist**: the same with `-n N` (pytest-xdist), when PY has it;
//! 3. **fleet, first run**: `testfleet pytest` on a fresh local fleet of N workers
//!    ([`crate::cli::local::LocalFleet`]), with no timing history, so the shards are balanced
//!    by test count alone;
//! 4. **fleet, second run**: the same suite again on the same fleet, balanced by the first
//!    run's durations (`test_results`).
//!
//! Each fleet run's wall time runs from the collection on the client to the merged results
//! (the path of [`crate::cli::pytest::execute`]; the fleet is started before it and not
//! counted, as a fleet is up before a user's run); its shard balance is the longest shard's
//! final attempt against the mean of all shards. Every run's outcome counts (passed, failed,
//! skipped, errors; from JUnit XML) are reported, and whether the four agree. Figures are
//! medians over the rounds, with every sample in the JSON document.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;

use super::median;
use crate::cli::local::{LocalFleet, LocalOptions};
use crate::cli::pytest::{PytestArgs, SuiteRun, balance, execute};
use crate::cli::{CliError, Output, table};

/// Arguments of `testfleet bench pytest`: those of `testfleet pytest`, with `--local N` (the
/// fleet's workers, and xdist's `-n`), and the rounds.
#[derive(clap::Args)]
pub struct PytestBenchArgs {
    #[command(flatten)]
    pub suite: PytestArgs,
    /// Rounds; each starts a fresh fleet
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
}

/// Outcome counts of one run: passed, failed, skipped, errors.
pub type Counts = [usize; 4];

/// The samples of one way of running the suite.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModeSamples {
    pub mode: String,
    pub wall_s: Vec<f64>,
    /// Longest shard / mean shard, per round (fleet runs only).
    pub balance: Vec<f64>,
    /// The last round's outcome counts.
    pub counts: Counts,
}

/// What `bench pytest` measured.
#[derive(Debug, Serialize)]
pub struct PytestBenchReport {
    pub workers: usize,
    pub rounds: u32,
    pub python: String,
    pub args: Vec<String>,
    pub collected: usize,
    pub modes: Vec<ModeSamples>,
    /// Why xdist was left out, if it was.
    pub xdist_missing: Option<String>,
    /// Every mode's last round gave the same outcome counts.
    pub outcomes_agree: bool,
}

/// Runs the rounds.
pub async fn run(args: &PytestBenchArgs) -> Result<PytestBenchReport, CliError> {
    let Some(workers) = args.suite.local else {
        return Err(CliError::Usage(
            "bench pytest runs the suite on local fleets: give --local N (the workers, and \
             pytest-xdist's -n)"
                .into(),
        ));
    };
    let workers = workers as usize;
    let suite = &args.suite;
    let cwd = match &suite.cwd {
        Some(dir) => std::path::absolute(dir),
        None => std::env::current_dir(),
    }
    .map_err(|e| CliError::Other(format!("cannot find the suite's directory: {e}")))?;
    let xdist_missing = xdist_missing(&suite.python);
    if let Some(why) = &xdist_missing {
        eprintln!("bench pytest: leaving xdist out: {why}");
    }
    let mut modes: Vec<ModeSamples> = ["direct", "xdist", "fleet, first run", "fleet, second run"]
        .iter()
        .map(|m| ModeSamples {
            mode: m.to_string(),
            ..ModeSamples::default()
        })
        .collect();
    let scratch = tempfile::tempdir().map_err(|e| CliError::Other(e.to_string()))?;
    let mut collected = 0;
    for round in 1..=args.rounds {
        eprintln!("bench pytest: round {round} of {}", args.rounds);
        let report = scratch.path().join("direct.xml");
        let (wall, counts) = pytest_alone(suite, &cwd, &report, &[])?;
        record(&mut modes[0], wall, counts, None);
        if xdist_missing.is_none() {
            let n = workers.to_string();
            let (wall, counts) = pytest_alone(suite, &cwd, &report, &["-n", &n])?;
            record(&mut modes[1], wall, counts, None);
        }
        let options = LocalOptions {
            workers,
            data_dir: suite
                .data_dir
                .as_ref()
                .map(|d| d.join(format!("round-{round}"))),
            probe: false,
        };
        let mut fleet = LocalFleet::start_with(&options).await?;
        let mut fleet_args = PytestArgs {
            junit_xml: Some(scratch.path().join("fleet.xml")),
            cwd: Some(cwd.clone()),
            ..suite.clone()
        };
        fleet_args.local = None;
        let result = fleet_rounds(fleet.remote(), &fleet_args).await;
        if let Err(e) = fleet.stop().await {
            eprintln!("warning: stopping the local fleet: {e}");
        }
        let (first, second) = result?;
        collected = first.collected;
        for (mode, run) in [(2, first), (3, second)] {
            let counts = [
                run.count("passed"),
                run.count("failed"),
                run.count("skipped"),
                run.count("error"),
            ];
            let balance = balance(&run.shard_ms);
            record(&mut modes[mode], run.wall.as_secs_f64(), counts, balance);
        }
    }
    if xdist_missing.is_some() {
        modes.remove(1);
    }
    let outcomes_agree = modes.windows(2).all(|w| w[0].counts == w[1].counts);
    Ok(PytestBenchReport {
        workers,
        rounds: args.rounds,
        python: suite.python.clone(),
        args: suite.args.clone(),
        collected,
        modes,
        xdist_missing,
        outcomes_agree,
    })
}

/// The suite twice on one fleet: without and then with a timing history.
async fn fleet_rounds(
    remote: &crate::cli::Remote,
    args: &PytestArgs,
) -> Result<(SuiteRun, SuiteRun), CliError> {
    let first = execute(remote, args, None).await?;
    let second = execute(remote, args, None).await?;
    Ok((first, second))
}

fn record(samples: &mut ModeSamples, wall: f64, counts: Counts, balance: Option<f64>) {
    samples.wall_s.push(wall);
    samples.counts = counts;
    samples.balance.extend(balance);
}

/// Why `python -m xdist` cannot be used, or `None` when it can.
fn xdist_missing(python: &str) -> Option<String> {
    match std::process::Command::new(python)
        .args(["-c", "import xdist"])
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(_) => Some(format!(
            "{python} cannot import xdist (pip install pytest-xdist)"
        )),
        Err(e) => Some(format!("cannot run {python}: {e}")),
    }
}

/// One pytest process on the whole suite (with `extra` options): its wall time and the outcome
/// counts of its JUnit XML report. A run that could not test (pytest's code 2 or more) is an
/// error, with the end of its output.
fn pytest_alone(
    suite: &PytestArgs,
    cwd: &Path,
    report: &Path,
    extra: &[&str],
) -> Result<(f64, Counts), CliError> {
    let started = Instant::now();
    let out = std::process::Command::new(&suite.python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("--junit-xml={}", report.display()))
        .args(extra)
        .args(&suite.args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CliError::Other(format!("cannot run {}: {e}", suite.python)))?;
    let wall = started.elapsed().as_secs_f64();
    if out.status.code().is_none_or(|c| c >= 2) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = stdout.lines().rev().take(20).collect();
        return Err(CliError::Other(format!(
            "pytest {} ended with {}:\n{}{}",
            extra.join(" "),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let tests = crate::worker::junit::read(report).map_err(CliError::Other)?;
    let mut counts = BTreeMap::new();
    for t in &tests {
        *counts.entry(t.outcome.as_str()).or_insert(0) += 1;
    }
    let get = |o: &str| counts.get(o).copied().unwrap_or(0);
    Ok((
        wall,
        [get("passed"), get("failed"), get("skipped"), get("error")],
    ))
}

/// The report as a table, or JSON.
pub fn render(report: &PytestBenchReport, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(report).unwrap_or_default() + "\n";
    }
    let direct = median(&report.modes[0].wall_s);
    let rows: Vec<Vec<String>> = report
        .modes
        .iter()
        .map(|m| {
            let wall = median(&m.wall_s);
            vec![
                m.mode.clone(),
                format!("{wall:.1}"),
                m.wall_s
                    .iter()
                    .map(|w| format!("{w:.1}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                format!("{:.2}×", direct / wall),
                if m.balance.is_empty() {
                    "-".into()
                } else {
                    format!(
                        "{:.2} [{}]",
                        median(&m.balance),
                        m.balance
                            .iter()
                            .map(|b| format!("{b:.2}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                },
                format!(
                    "{}/{}/{}/{}",
                    m.counts[0], m.counts[1], m.counts[2], m.counts[3]
                ),
            ]
        })
        .collect();
    let mut out = format!(
        "pytest {} ({} tests collected): {} workers (xdist -n {}), {} rounds, a fresh fleet \
         each; {}\nWall seconds from the start to the merged results; median, then every \
         round.\n\n",
        report.args.join(" "),
        report.collected,
        report.workers,
        report.workers,
        report.rounds,
        report.python,
    );
    out.push_str(&table(
        &[
            "MODE",
            "WALL_S",
            "ROUNDS",
            "SPEEDUP",
            "LONGEST/MEAN SHARD",
            "PASSED/FAILED/SKIPPED/ERRORS",
        ],
        &rows,
    ));
    if let Some(why) = &report.xdist_missing {
        out.push_str(&format!("\nxdist left out: {why}\n"));
    }
    out.push_str(&format!(
        "\noutcomes agree across modes: {}\n",
        if report.outcomes_agree { "yes" } else { "NO" }
    ));
    out
}
