//! `testfleet bench commit --breakdown`: where one commit's time goes, stage by stage.
//!
//! Starts a local cluster of coordinator processes with `--stage-clock` (see
//! [`crate::raft::stages`]), loads it as `bench commit` does — W writers, each a loop of
//! `ProposeBench` calls — and stamps each call's send and answer on the client. After each
//! writer count it reads every node's stage times (`Control.StageTimes`) for the log indexes
//! the writers got back, and splits each commit into segments on the critical path:
//!
//! | segment | from → to |
//! |---|---|
//! | client → leader | client sent → leader `proposed` |
//! | leader append | `proposed` → leader `appended` |
//! | to replication | leader `appended` → leader `sent` |
//! | network to follower | leader `sent` → follower `received` |
//! | follower append | follower `received` → follower `appended` |
//! | follower fsync | follower `appended` → follower `flushed` |
//! | ack to leader | follower `flushed` → leader `acked` |
//! | leader fsync (in parallel) | leader `appended` → leader `flushed` |
//! | commit | later of leader `acked` and `flushed` → leader `apply_started` |
//! | apply | `apply_started` → `applied` |
//! | to the handler | `applied` → leader `replied` |
//! | leader → client | `replied` → client got the answer |
//!
//! The follower of a commit is the one whose fsync finished first (the one that made the
//! quorum of a three-node cluster). Each segment is reported as p50 and p99 over the commits
//! of the measured window; on one machine all processes share the clock, so a segment between
//! processes is real to a few µs. Segments may overlap when the path runs in parallel (the
//! leader's fsync beside the replication), and a segment can be negative when the "later"
//! event won a race; the sum of the critical-path medians need not equal the median total.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cpu::CpuMeter;
use crate::cli::{CliError, Remote, connect, connect_any, table};
use crate::demo::launch::{LocalCluster, Security};
use crate::proto::{BenchRequest, StageTimesRequest};
use crate::raft::stages::{Stage, Times, now_us};

/// Settings of a breakdown run.
#[derive(Clone, Debug)]
pub struct BreakdownSettings {
    pub nodes: u64,
    pub writers: Vec<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    pub payload_bytes: usize,
    pub data_dir: Option<std::path::PathBuf>,
    pub security: Security,
}

/// The segments of a commit, in report order.
pub const SEGMENTS: [&str; 13] = [
    "client → leader",
    "leader append",
    "to replication",
    "network to follower",
    "follower append",
    "follower fsync",
    "ack to leader",
    "leader fsync (parallel)",
    "commit",
    "apply",
    "to the handler",
    "leader → client",
    "total",
];

/// One commit as the client saw it.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub index: u64,
    pub sent_us: u64,
    pub answered_us: u64,
}

/// p50 and p99 of one segment, in µs, over the commits where it could be measured.
#[derive(Clone, Debug, Serialize)]
pub struct Segment {
    pub name: String,
    pub samples: usize,
    pub p50_us: i64,
    pub p99_us: i64,
}

/// One writer count's breakdown.
#[derive(Clone, Debug, Serialize)]
pub struct BreakdownRun {
    pub writers: usize,
    pub commits: usize,
    pub commits_per_sec: f64,
    /// The coordinators' own CPU time over the window, per commit (all nodes together; with
    /// one writer, one commit is one consensus round).
    pub server_cpu_us_per_commit: Option<f64>,
    pub segments: Vec<Segment>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct BreakdownReport {
    pub nodes: u64,
    pub payload_bytes: usize,
    pub runs: Vec<BreakdownRun>,
}

/// The segments of one commit (`None` where a stage was not seen), in [`SEGMENTS`] order.
pub fn segments(sample: &Sample, leader: &Times, followers: &[&Times]) -> [Option<i64>; 13] {
    let at = |t: &Times, s: Stage| Some(t[s as usize]).filter(|v| *v > 0).map(|v| v as i64);
    let span = |from: Option<i64>, to: Option<i64>| Some(to? - from?);
    let follower = followers
        .iter()
        .filter(|f| at(f, Stage::Flushed).is_some())
        .min_by_key(|f| f[Stage::Flushed as usize]);
    let f = |s: Stage| follower.and_then(|t| at(t, s));
    let l = |s: Stage| at(leader, s);
    let committed = match (l(Stage::Acked), l(Stage::Flushed)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    };
    let sent = Some(sample.sent_us as i64);
    let answered = Some(sample.answered_us as i64);
    [
        span(sent, l(Stage::Proposed)),
        span(l(Stage::Proposed), l(Stage::Appended)),
        span(l(Stage::Appended), l(Stage::Sent)),
        span(l(Stage::Sent), f(Stage::Received)),
        span(f(Stage::Received), f(Stage::Appended)),
        span(f(Stage::Appended), f(Stage::Flushed)),
        span(f(Stage::Flushed), l(Stage::Acked)),
        span(l(Stage::Appended), l(Stage::Flushed)),
        span(committed, l(Stage::ApplyStarted)),
        span(l(Stage::ApplyStarted), l(Stage::Applied)),
        span(l(Stage::Applied), l(Stage::Replied)),
        span(l(Stage::Replied), answered),
        span(sent, answered),
    ]
}

/// Nearest-rank percentile `q` of sorted `values`.
fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// p50/p99 of each segment over `commits`.
pub fn aggregate(commits: &[[Option<i64>; 13]]) -> Vec<Segment> {
    SEGMENTS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut values: Vec<i64> = commits.iter().filter_map(|c| c[i]).collect();
            values.sort_unstable();
            Segment {
                name: name.to_string(),
                samples: values.len(),
                p50_us: percentile(&values, 0.5),
                p99_us: percentile(&values, 0.99),
            }
        })
        .collect()
}

/// Runs the breakdown.
pub async fn run(settings: &BreakdownSettings) -> Result<BreakdownReport, CliError> {
    if settings.writers.is_empty() || settings.writers.contains(&0) {
        return Err(CliError::Usage(
            "--writers needs one or more counts above zero".into(),
        ));
    }
    let binary = crate::demo::this_binary()?;
    let (_temp, dir) = crate::demo::work_dir("testfleet-breakdown-", settings.data_dir.as_deref())?;
    let cluster = LocalCluster::start_secured(
        &binary,
        settings.nodes,
        None,
        &dir,
        &["--stage-clock".to_string()],
        settings.security,
    )
    .map_err(|e| CliError::Other(e.to_string()))?;
    let leader = cluster
        .leader(Duration::from_secs(30), None)
        .await
        .map_err(|e| CliError::Unavailable(e.to_string()))?;
    let remote = Remote::new(
        vec![cluster.addr(leader).to_string()],
        cluster.credentials(crate::auth::Role::Operator),
    );
    let pids: Vec<u32> = cluster
        .addresses()
        .keys()
        .filter_map(|id| cluster.pid(*id))
        .collect();
    let meter = CpuMeter::new(pids).ok();
    let mut runs = Vec::new();
    for &writers in &settings.writers {
        // The CPU is read over the measured window, beside the load.
        let cpu = async {
            let meter = meter.as_ref()?;
            tokio::time::sleep(settings.warmup).await;
            let start = meter.read().ok()?;
            tokio::time::sleep(settings.duration).await;
            meter.spent(&start, &meter.read().ok()?).ok()
        };
        let (loaded, cpu) = tokio::join!(load(&remote, writers, settings), cpu);
        let (samples, seconds) = loaded?;
        let times = stage_times(&cluster, &samples).await?;
        let leader_id = leader;
        let commits: Vec<[Option<i64>; 13]> = samples
            .iter()
            .filter_map(|s| {
                let leader = times.get(&leader_id)?.get(&s.index)?;
                let followers: Vec<&Times> = times
                    .iter()
                    .filter(|(id, _)| **id != leader_id)
                    .filter_map(|(_, rows)| rows.get(&s.index))
                    .collect();
                Some(segments(s, leader, &followers))
            })
            .collect();
        runs.push(BreakdownRun {
            writers,
            commits: samples.len(),
            commits_per_sec: samples.len() as f64 / seconds,
            server_cpu_us_per_commit: cpu
                .and_then(|c| c.us_per_op(samples.len(), settings.duration)),
            segments: aggregate(&commits),
        });
    }
    Ok(BreakdownReport {
        nodes: settings.nodes,
        payload_bytes: settings.payload_bytes,
        runs,
    })
}

/// `writers` loops of `ProposeBench` for the warm-up and the measured window; the commits
/// whose call began and ended inside the window, and its length in seconds.
async fn load(
    remote: &Remote,
    writers: usize,
    settings: &BreakdownSettings,
) -> Result<(Vec<Sample>, f64), CliError> {
    let client = connect_any(remote).await?;
    let payload = vec![0x5a_u8; settings.payload_bytes];
    let start = Instant::now();
    let measure_from = start + settings.warmup;
    let end = measure_from + settings.duration;
    let mut tasks = Vec::with_capacity(writers);
    for _ in 0..writers {
        let mut client = client.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < end {
                let began = Instant::now();
                let sent_us = now_us();
                let result = client
                    .propose_bench(BenchRequest {
                        payload: payload.clone(),
                    })
                    .await;
                let answered_us = now_us();
                match result {
                    Ok(reply) if began >= measure_from && Instant::now() <= end => {
                        samples.push(Sample {
                            index: reply.into_inner().log_index,
                            sent_us,
                            answered_us,
                        })
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(
            task.await
                .map_err(|e| CliError::Other(format!("a benchmark writer failed: {e}")))?,
        );
    }
    if all.is_empty() {
        return Err(CliError::Unavailable(format!(
            "no command was committed with {writers} writers"
        )));
    }
    Ok((all, settings.duration.as_secs_f64()))
}

/// Every node's stage times for the indexes of `samples`, by node id and index.
async fn stage_times(
    cluster: &LocalCluster,
    samples: &[Sample],
) -> Result<BTreeMap<u64, BTreeMap<u64, Times>>, CliError> {
    let first = samples.iter().map(|s| s.index).min().unwrap_or(0);
    let last = samples.iter().map(|s| s.index).max().unwrap_or(0);
    let credentials = cluster.credentials(crate::auth::Role::Operator);
    let mut by_node = BTreeMap::new();
    for (id, addr) in cluster.addresses() {
        let mut client = connect(&addr, &credentials).await?;
        let reply = client
            .stage_times(StageTimesRequest {
                first_index: first,
                last_index: last,
            })
            .await
            .map_err(|e| CliError::Unavailable(format!("node {id}: {}", e.message())))?
            .into_inner();
        if !reply.enabled {
            return Err(CliError::Other(format!(
                "node {id} runs without --stage-clock"
            )));
        }
        let rows: BTreeMap<u64, Times> = reply
            .rows
            .into_iter()
            .filter_map(|r| Some((r.index, Times::try_from(r.at_us.as_slice()).ok()?)))
            .collect();
        by_node.insert(id, rows);
    }
    Ok(by_node)
}

/// The report as a table (one column pair per writer count), or JSON.
pub fn render(report: &BreakdownReport, output: crate::cli::Output) -> String {
    if output == crate::cli::Output::Json {
        return serde_json::to_string_pretty(report).unwrap_or_default() + "\n";
    }
    let mut header: Vec<String> = vec!["SEGMENT (µs)".into()];
    for run in &report.runs {
        header.push(format!("{}W P50", run.writers));
        header.push(format!("{}W P99", run.writers));
    }
    let rows: Vec<Vec<String>> = SEGMENTS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut row = vec![name.to_string()];
            for run in &report.runs {
                let s = &run.segments[i];
                row.push(s.p50_us.to_string());
                row.push(s.p99_us.to_string());
            }
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut out = format!(
        "Commit path of a local {}-node cluster (--stage-clock), {}-byte commands; \
         commits/s: {}\n\n",
        report.nodes,
        report.payload_bytes,
        report
            .runs
            .iter()
            .map(|r| format!(
                "{} writers {:.0} (server CPU {} µs per commit)",
                r.writers,
                r.commits_per_sec,
                r.server_cpu_us_per_commit
                    .map_or("?".to_string(), |c| format!("{c:.0}"))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str(&table(&header, &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(pairs: &[(Stage, u64)]) -> Times {
        let mut t = [0; crate::raft::stages::STAGES];
        for (s, at) in pairs {
            t[*s as usize] = *at;
        }
        t
    }

    #[test]
    fn a_commit_splits_into_segments_through_the_quorum_follower() {
        use Stage::*;
        let sample = Sample {
            index: 7,
            sent_us: 1_000,
            answered_us: 2_000,
        };
        let leader = times(&[
            (Proposed, 1_050),
            (Appended, 1_100),
            (Sent, 1_120),
            (Flushed, 1_300),
            (Acked, 1_500),
            (ApplyStarted, 1_600),
            (Applied, 1_650),
            (Replied, 1_700),
        ]);
        // The slow follower fsynced after the fast one: the fast one made the quorum.
        let slow = times(&[(Received, 1_150), (Appended, 1_160), (Flushed, 1_900)]);
        let fast = times(&[(Received, 1_200), (Appended, 1_210), (Flushed, 1_400)]);
        let s = segments(&sample, &leader, &[&slow, &fast]);
        assert_eq!(
            s,
            [
                Some(50),
                Some(50),
                Some(20),
                Some(80),
                Some(10),
                Some(190),
                Some(100),
                Some(200),
                Some(100),
                Some(50),
                Some(50),
                Some(300),
                Some(1_000)
            ]
        );
        // A stage never seen leaves its segments out, not zero.
        let bare = times(&[(Proposed, 1_050)]);
        let s = segments(&sample, &bare, &[]);
        assert_eq!(s[0], Some(50));
        assert_eq!(s[1], None);
        assert_eq!(s[3], None);
        assert_eq!(s[12], Some(1_000));
    }

    #[test]
    fn segments_aggregate_to_nearest_rank_percentiles() {
        let commits: Vec<[Option<i64>; 13]> = (1..=100)
            .map(|v| {
                let mut c = [None; 13];
                c[0] = Some(v);
                c
            })
            .collect();
        let agg = aggregate(&commits);
        assert_eq!(agg[0].samples, 100);
        assert_eq!(agg[0].p50_us, 50);
        assert_eq!(agg[0].p99_us, 99);
        assert_eq!(agg[1].samples, 0);
    }
}
