//! `testfleet bench tasks --queued SIZES`: a coordinator's memory per queued task.
//!
//! Starts ONE coordinator process and no worker, submits pytest-like tasks in jobs of
//! `--job-size` until `SIZES[0]` tasks are queued, waits until they are applied and flushed
//! (a `--consistent` read flushes first), and reads the process's `VmRSS` and `RssAnon` from
//! `/proc/PID/status` and DuckDB's own accounting (`duckdb_memory()`) through the query path;
//! then on to the next size, on the same process. An idle baseline is read before the first
//! job. With `--binary PATH` an older build is measured the same way in the same run, the two
//! alternating round by round (`--rounds`); the report gives each build's medians and the
//! MiB per 10,000 queued tasks between sizes and from the idle baseline. A round that fails (a
//! coordinator that stops: DuckDB out of memory, say) is reported with its build, round and
//! error, and left out of that build's medians; the run fails only if every round of a build
//! did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cli::{CliError, Output, Remote, table, unavailable};
use crate::demo::launch::{LocalCluster, Security};
use crate::state::command::TaskSpec;
use crate::state::limits::MAX_TASKS_PER_JOB;

/// Settings of the memory benchmark.
#[derive(Clone, Debug)]
pub struct QueuedSettings {
    /// Total queued tasks at which memory is read, ascending.
    pub sizes: Vec<usize>,
    /// Another build to measure side by side (e.g. the build before a change).
    pub other: Option<PathBuf>,
    pub rounds: usize,
    pub job_size: usize,
    /// Seconds to wait after each size's last job before reading memory: the queue at rest.
    pub settle: f64,
    pub security: Security,
    pub data_dir: Option<PathBuf>,
}

impl QueuedSettings {
    /// Why these settings cannot run, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.sizes.is_empty() || self.sizes.contains(&0) {
            return Err("--queued needs sizes above 0, e.g. --queued 10000,100000".to_string());
        }
        if self.sizes.windows(2).any(|w| w[0] >= w[1]) {
            return Err("--queued sizes must be ascending".to_string());
        }
        if self.job_size == 0 || self.job_size > MAX_TASKS_PER_JOB {
            return Err(format!("--job-size must be 1..={MAX_TASKS_PER_JOB}"));
        }
        if self.rounds == 0 {
            return Err("--rounds must be at least 1".to_string());
        }
        if !(0.0..=3600.0).contains(&self.settle) {
            return Err("--settle must be 0..=3600 seconds".to_string());
        }
        Ok(())
    }
}

/// Memory of the coordinator with `tasks` tasks queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    pub tasks: usize,
    pub rss_bytes: u64,
    pub anon_bytes: u64,
    pub duckdb_bytes: u64,
}

/// MiB per 10,000 queued tasks over an interval of queue sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Growth {
    pub from_tasks: usize,
    pub to_tasks: usize,
    pub rss_mib_per_10k: f64,
    pub anon_mib_per_10k: f64,
    pub duckdb_mib_per_10k: f64,
}

/// One build's runs.
#[derive(Clone, Debug, Serialize)]
pub struct BuildReport {
    /// `this build` or the path given with `--binary`.
    pub build: String,
    /// Every round's samples, the idle baseline first.
    pub rounds: Vec<Vec<Sample>>,
    /// The per-field median over rounds of each sample, the idle baseline first.
    pub median: Vec<Sample>,
    /// Growth from the previous size (the idle baseline for the first), per size.
    pub step: Vec<Growth>,
    /// Growth from the idle baseline, per size.
    pub from_idle: Vec<Growth>,
    /// The rounds that failed, and why (`round 2: …`); not in `rounds` nor the medians.
    pub failed: Vec<String>,
}

/// The report of `bench tasks --queued`.
#[derive(Clone, Debug, Serialize)]
pub struct QueuedReport {
    pub sizes: Vec<usize>,
    pub job_size: usize,
    pub rounds: usize,
    /// Seconds waited after each size's last job before memory was read.
    pub settle: f64,
    pub security: Security,
    /// This build first, then the `--binary` build if any.
    pub builds: Vec<BuildReport>,
}

/// Bytes of a `/proc/PID/status` field given in kB (`VmRSS:  1234 kB`).
pub fn status_field(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The per-field median of several rounds' samples at one size.
pub fn median_sample(samples: &[Sample]) -> Sample {
    let med = |f: fn(&Sample) -> u64| {
        let values: Vec<f64> = samples.iter().map(|s| f(s) as f64).collect();
        super::super::median(&values) as u64
    };
    Sample {
        tasks: samples.first().map_or(0, |s| s.tasks),
        rss_bytes: med(|s| s.rss_bytes),
        anon_bytes: med(|s| s.anon_bytes),
        duckdb_bytes: med(|s| s.duckdb_bytes),
    }
}

/// MiB per 10,000 tasks between two samples (negative when memory shrank).
pub fn growth(from: &Sample, to: &Sample) -> Growth {
    let tasks = to.tasks.saturating_sub(from.tasks).max(1) as f64;
    let per_10k = |a: u64, b: u64| (b as f64 - a as f64) / (1u64 << 20) as f64 / tasks * 10_000.0;
    Growth {
        from_tasks: from.tasks,
        to_tasks: to.tasks,
        rss_mib_per_10k: per_10k(from.rss_bytes, to.rss_bytes),
        anon_mib_per_10k: per_10k(from.anon_bytes, to.anon_bytes),
        duckdb_mib_per_10k: per_10k(from.duckdb_bytes, to.duckdb_bytes),
    }
}

/// One build's report from its rounds (each the idle baseline, then one sample per size).
pub fn summarize(build: String, rounds: Vec<Vec<Sample>>) -> BuildReport {
    let points = rounds.iter().map(Vec::len).min().unwrap_or(0);
    let median: Vec<Sample> = (0..points)
        .map(|i| median_sample(&rounds.iter().map(|r| r[i]).collect::<Vec<_>>()))
        .collect();
    let step = median.windows(2).map(|w| growth(&w[0], &w[1])).collect();
    let from_idle = match median.split_first() {
        Some((idle, rest)) => rest.iter().map(|s| growth(idle, s)).collect(),
        None => Vec::new(),
    };
    BuildReport {
        build,
        rounds,
        median,
        step,
        from_idle,
        failed: Vec::new(),
    }
}

/// The order in which builds run in round `round`: alternating, so neither always runs
/// first on a machine that warms up or fills up.
pub fn round_order(builds: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..builds).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// Task `n` of the benchmark: one pytest test, as `testfleet pytest` would submit it.
pub fn pytest_task(id: String, n: usize) -> TaskSpec {
    let test = format!(
        "tests/suite_{:02}/test_module_{:05}.py::test_case_{:03}",
        n / 10_000 % 100,
        n / 40,
        n % 40
    );
    let command = [
        "python",
        "-m",
        "pytest",
        &test,
        "-q",
        "--tb=short",
        "-p",
        "no:cacheprovider",
        "--timeout=300",
        "--junitxml=.testfleet/junit.xml",
    ];
    TaskSpec {
        env: BTreeMap::from([("PYTHONHASHSEED".to_string(), "0".to_string())]),
        cwd: Some("repo".to_string()),
        timeout_ms: 300_000,
        ..TaskSpec::new(id, test.clone(), command.map(str::to_string).to_vec())
    }
}

async fn query(remote: &Remote, sql: &str) -> Result<Vec<Vec<serde_json::Value>>, CliError> {
    crate::cli::query_rows(remote, sql, true).await
}

/// The coordinator's memory now, with `tasks` queued. The consistent read flushes every
/// applied row to DuckDB first.
async fn sample(remote: &Remote, pid: u32, tasks: usize) -> Result<Sample, CliError> {
    let rows = query(
        remote,
        "SELECT (SELECT count(*) FROM tasks WHERE status = 'queued'), \
         (SELECT sum(memory_usage_bytes) FROM duckdb_memory())",
    )
    .await?;
    let cell = |i: usize| rows.first().and_then(|r| r.get(i)).and_then(as_u64);
    let queued = cell(0).unwrap_or(0) as usize;
    if queued != tasks {
        return Err(unavailable(format!(
            "{queued} tasks queued after submitting {tasks}"
        )));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| unavailable(format!("reading /proc/{pid}/status: {e}")))?;
    let field = |name: &str| {
        status_field(&status, name)
            .ok_or_else(|| unavailable(format!("no {name} in /proc/{pid}/status")))
    };
    Ok(Sample {
        tasks,
        rss_bytes: field("VmRSS")?,
        anon_bytes: field("RssAnon")?,
        duckdb_bytes: cell(1).unwrap_or(0),
    })
}

/// A number cell, which the query path may give as a number or as text (`HUGEINT` sums).
fn as_u64(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().map(|f| f.max(0.0) as u64))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// One round of one build: a fresh coordinator, the idle baseline, then each size.
async fn one_round(
    binary: &Path,
    dir: &Path,
    settings: &QueuedSettings,
) -> Result<Vec<Sample>, CliError> {
    let cluster = LocalCluster::start_secured(binary, 1, None, dir, &[], settings.security)
        .map_err(unavailable)?;
    cluster
        .leader(Duration::from_secs(30), None)
        .await
        .map_err(unavailable)?;
    let pid = cluster
        .pid(1)
        .ok_or_else(|| unavailable("the coordinator is not running"))?;
    let remote = cluster.remote();
    let settle = Duration::from_secs_f64(settings.settle);
    tokio::time::sleep(settle).await;
    let mut samples = vec![sample(&remote, pid, 0).await?];
    let mut queued = 0;
    for &size in &settings.sizes {
        while queued < size {
            let n = settings.job_size.min(size - queued);
            let job = uuid::Uuid::new_v4().to_string();
            let tasks: Vec<TaskSpec> = (queued..queued + n)
                .map(|i| pytest_task(uuid::Uuid::new_v4().to_string(), i))
                .collect();
            crate::cli::jobs::submit(&remote, &job, "queued", &tasks).await?;
            queued += n;
        }
        // The consistent read in `sample` flushes first, so the flusher's rest starts
        // at the latest then; waiting before it lets a rest that began at the last job run.
        tokio::time::sleep(settle).await;
        samples.push(sample(&remote, pid, queued).await?);
    }
    drop(cluster);
    Ok(samples)
}

/// Runs the benchmark.
pub async fn run(settings: &QueuedSettings) -> Result<QueuedReport, CliError> {
    settings.check().map_err(CliError::Usage)?;
    let mut builds = vec![("this build".to_string(), crate::demo::this_binary()?)];
    if let Some(other) = &settings.other {
        if !other.is_file() {
            return Err(CliError::Usage(format!(
                "--binary {}: no such file",
                other.display()
            )));
        }
        builds.push((other.display().to_string(), other.clone()));
    }
    let (_temp, dir) =
        crate::demo::work_dir("testfleet-bench-queued-", settings.data_dir.as_deref())?;
    let mut rounds: Vec<Vec<Vec<Sample>>> = vec![Vec::new(); builds.len()];
    let mut failed: Vec<Vec<String>> = vec![Vec::new(); builds.len()];
    for round in 0..settings.rounds {
        for b in round_order(builds.len(), round) {
            let run_dir = dir.join(format!("round-{round}-build-{b}"));
            std::fs::create_dir_all(&run_dir)
                .map_err(|e| CliError::Other(format!("{}: {e}", run_dir.display())))?;
            match one_round(&builds[b].1, &run_dir, settings).await {
                Ok(samples) => rounds[b].push(samples),
                Err(e) => {
                    let first_line = e.to_string().lines().next().unwrap_or_default().to_string();
                    failed[b].push(format!("round {}: {first_line}", round + 1));
                }
            }
            // Each round's database is only needed while it runs.
            let _ = std::fs::remove_dir_all(&run_dir);
        }
    }
    if let Some(b) = rounds.iter().position(Vec::is_empty) {
        return Err(CliError::Other(format!(
            "{}: every round failed: {}",
            builds[b].0,
            failed[b].join("; ")
        )));
    }
    Ok(QueuedReport {
        sizes: settings.sizes.clone(),
        job_size: settings.job_size,
        rounds: settings.rounds,
        settle: settings.settle,
        security: settings.security,
        builds: builds
            .into_iter()
            .zip(rounds.into_iter().zip(failed))
            .map(|((name, _), (r, failed))| BuildReport {
                failed,
                ..summarize(name, r)
            })
            .collect(),
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 20) as f64)
}

/// Renders the report.
pub fn render(r: &QueuedReport, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(r).unwrap_or_default() + "\n";
    }
    let mut out = format!(
        "memory per queued task: one coordinator, no workers, pytest commands in jobs of {}; \
         read {} s after each size's last job; median of {} round{} per build\n",
        r.job_size,
        r.settle,
        r.rounds,
        if r.rounds == 1 { "" } else { "s" }
    );
    let mut rows = Vec::new();
    for b in &r.builds {
        for (i, s) in b.median.iter().enumerate() {
            let per = |g: Option<&Growth>, f: fn(&Growth) -> f64| {
                g.map_or("-".to_string(), |g| format!("{:.1}", f(g)))
            };
            let step = i.checked_sub(1).and_then(|i| b.step.get(i));
            let idle = i.checked_sub(1).and_then(|i| b.from_idle.get(i));
            rows.push(vec![
                b.build.clone(),
                if i == 0 {
                    "idle".to_string()
                } else {
                    s.tasks.to_string()
                },
                mib(s.rss_bytes),
                mib(s.anon_bytes),
                mib(s.duckdb_bytes),
                per(step, |g| g.rss_mib_per_10k),
                per(step, |g| g.anon_mib_per_10k),
                per(step, |g| g.duckdb_mib_per_10k),
                per(idle, |g| g.rss_mib_per_10k),
                per(idle, |g| g.anon_mib_per_10k),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "BUILD",
            "QUEUED",
            "RSS MIB",
            "ANON MIB",
            "DUCKDB MIB",
            "RSS/10K STEP",
            "ANON/10K STEP",
            "DUCKDB/10K STEP",
            "RSS/10K FROM IDLE",
            "ANON/10K FROM IDLE",
        ],
        &rows,
    ));
    out.push_str("(MiB; /10K: MiB per 10,000 queued tasks, from the previous size or from idle)\n");
    for b in r.builds.iter().filter(|b| !b.failed.is_empty()) {
        out.push_str(&format!(
            "{}: {} of {} rounds failed, left out of its medians:\n",
            b.build,
            b.failed.len(),
            r.rounds
        ));
        for failure in &b.failed {
            out.push_str(&format!("  {failure}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(tasks: usize, rss_mib: u64, anon_mib: u64, duckdb_mib: u64) -> Sample {
        Sample {
            tasks,
            rss_bytes: rss_mib << 20,
            anon_bytes: anon_mib << 20,
            duckdb_bytes: duckdb_mib << 20,
        }
    }

    #[test]
    fn status_fields_are_read_in_bytes() {
        let status = "Name:\ttestfleet\nVmRSS:\t  204800 kB\nRssAnon:\t  102400 kB\n";
        assert_eq!(status_field(status, "VmRSS"), Some(200 << 20));
        assert_eq!(status_field(status, "RssAnon"), Some(100 << 20));
        assert_eq!(status_field(status, "RssFile"), None);
        assert_eq!(status_field("VmRSS:\tlots kB\n", "VmRSS"), None);
    }

    #[test]
    fn growth_is_mib_per_10k_tasks_from_the_medians() {
        let rounds = vec![
            vec![
                s(0, 100, 50, 1),
                s(10_000, 120, 70, 6),
                s(30_000, 140, 90, 16),
            ],
            vec![
                s(0, 102, 52, 1),
                s(10_000, 130, 72, 6),
                s(30_000, 150, 92, 16),
            ],
            vec![
                s(0, 101, 51, 1),
                s(10_000, 125, 71, 6),
                s(30_000, 144, 91, 16),
            ],
        ];
        let r = summarize("b".into(), rounds);
        assert_eq!(r.median[0], s(0, 101, 51, 1));
        assert_eq!(r.median[1], s(10_000, 125, 71, 6));
        assert_eq!(r.step.len(), 2);
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} != {b}");
        close(r.step[0].rss_mib_per_10k, 24.0);
        close(r.step[1].rss_mib_per_10k, 9.5);
        close(r.step[1].duckdb_mib_per_10k, 5.0);
        close(r.from_idle[1].anon_mib_per_10k, 40.0 / 3.0);
        assert_eq!(
            (r.from_idle[1].from_tasks, r.from_idle[1].to_tasks),
            (0, 30_000)
        );
    }

    #[test]
    fn a_failed_round_is_named_and_left_out_of_the_medians() {
        let ok = vec![s(0, 100, 50, 1), s(10_000, 120, 70, 6)];
        let report = QueuedReport {
            sizes: vec![10_000],
            job_size: 10_000,
            rounds: 2,
            settle: 0.0,
            security: Security::Tokens,
            builds: vec![BuildReport {
                failed: vec!["round 2: out of memory".to_string()],
                ..summarize("old".into(), vec![ok.clone()])
            }],
        };
        assert_eq!(report.builds[0].median, ok);
        let text = render(&report, Output::Table);
        assert!(
            text.contains(
                "old: 1 of 2 rounds failed, left out of its medians:\n  round 2: out of memory\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn builds_alternate_which_runs_first() {
        assert_eq!(round_order(2, 0), vec![0, 1]);
        assert_eq!(round_order(2, 1), vec![1, 0]);
        assert_eq!(round_order(1, 1), vec![0]);
    }

    #[test]
    fn bad_settings_are_refused() {
        let ok = QueuedSettings {
            sizes: vec![10, 20],
            other: None,
            rounds: 1,
            job_size: 10,
            settle: 0.0,
            security: Security::Open,
            data_dir: None,
        };
        assert!(ok.check().is_ok());
        for bad in [
            QueuedSettings {
                sizes: vec![20, 10],
                ..ok.clone()
            },
            QueuedSettings {
                sizes: vec![0, 10],
                ..ok.clone()
            },
            QueuedSettings {
                sizes: vec![],
                ..ok.clone()
            },
            QueuedSettings {
                rounds: 0,
                ..ok.clone()
            },
            QueuedSettings {
                settle: f64::NAN,
                ..ok.clone()
            },
            QueuedSettings {
                settle: -1.0,
                ..ok.clone()
            },
            QueuedSettings {
                job_size: MAX_TASKS_PER_JOB + 1,
                ..ok.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tasks_are_valid_pytest_commands() {
        let t = pytest_task("id-1".into(), 12_345);
        assert_eq!(t.name, "tests/suite_01/test_module_00308.py::test_case_025");
        assert_eq!(&t.command[..4], ["python", "-m", "pytest", t.name.as_str()]);
        let job: Vec<TaskSpec> = (0..3).map(|i| pytest_task(format!("t{i}"), i)).collect();
        assert!(crate::state::limits::check_job("j", "queued", &job).is_ok());
    }
}
