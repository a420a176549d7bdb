//! `testfleet bench peers etcd`: etcd and Testfleet, three members each on loopback, loaded by
//! the same writers in one run.
//!
//! The command starts a 3-member etcd cluster (the `etcd` binary, Debian's `etcd-server` 3.4:
//! free loopback ports, data directories in the work directory, default settings otherwise)
//! and a 3-node Testfleet cluster of processes (`bench commit`'s `StartedCluster`,
//! open by default, as etcd runs without TLS or auth here). Both are loaded by
//! [`crate::bench::load::closed_loop`]: N writers, each a sequential loop of one write of a
//! `--payload-bytes` value, measured for `--duration` after `--warmup`. Testfleet's write is
//! `Control.ProposeBench` (a `Bench` command committed and applied); etcd's is `KV.Put`
//! (committed by a majority and applied), spoken through `proto/etcd_kv.proto`, a minimal
//! wire-compatible copy of that one method. Writers share one HTTP/2 connection to the
//! leader on both sides (etcd's leader is found from its `/metrics`), so neither pays a
//! follower's forwarding hop.
//!
//! For each writer count the two systems are measured back to back, the order alternating
//! ([`super::peer_first`]). Reported for both: acknowledged writes/s, p50/p99 latency, the
//! servers' CPU per write (all three processes, from `/proc`), the idle clusters' CPU, and the
//! ratios Testfleet / etcd.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

use super::{
    Compared, Daemon, check_common, first_line_of, peer_first, require_program, version_in,
};
use crate::bench::commit::{IdleCpu, ProposeBench, StartedCluster, optional, security_name};
use crate::bench::cpu::CpuMeter;
use crate::bench::load::{LoadRun, Operation, Shape, closed_loop};
use crate::cli::{CliError, Output, connect_any, table};
use crate::demo::Latency;
use crate::demo::launch::{Security, free_port};

/// The generated client of etcd's `KV` service (`proto/etcd_kv.proto`).
pub mod wire {
    tonic::include_proto!("etcdserverpb");
}

use wire::PutRequest;
use wire::kv_client::KvClient;

/// Members of each cluster.
const MEMBERS: usize = 3;

/// Arguments of `testfleet bench peers etcd`.
#[derive(Clone, Debug, clap::Args)]
pub struct EtcdArgs {
    /// Writer counts to measure, e.g. 1,64,256
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    pub writers: Vec<usize>,
    /// Measured seconds per writer count and system
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Unmeasured warm-up seconds before each measurement
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Bytes of each written value
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Rounds over every writer count; ratios are taken within a round
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The etcd server binary (Debian: `apt-get install etcd-server`)
    #[arg(long, default_value = "etcd")]
    pub etcd: String,
    /// How Testfleet's cluster is protected (etcd runs without TLS or auth)
    #[arg(long, value_enum, default_value_t = Security::Open)]
    pub security: Security,
    /// Directory for both clusters' files (default: a temporary directory)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl EtcdArgs {
    /// Checks the arguments; the shape of one measurement of `writers` writers.
    pub fn check(&self) -> Result<(), CliError> {
        check_common(self.rounds, &[("--duration", self.duration)])?;
        if !(0.0..=3600.0).contains(&self.warmup) {
            return Err(CliError::Usage(format!(
                "--warmup must be a number of seconds from 0 to 3600, got {}",
                self.warmup
            )));
        }
        if self.writers.is_empty()
            || self.writers.contains(&0)
            || self.writers.iter().any(|w| *w > 10_000)
        {
            return Err(CliError::Usage(
                "--writers needs one or more counts from 1 to 10000, e.g. --writers 1,64,256"
                    .into(),
            ));
        }
        if self.payload_bytes == 0 || self.payload_bytes > 1 << 20 {
            return Err(CliError::Usage(format!(
                "--payload-bytes must be from 1 to 1048576, got {}",
                self.payload_bytes
            )));
        }
        Ok(())
    }

    fn shape(&self, writers: usize) -> Shape {
        Shape {
            writers,
            duration: Duration::from_secs_f64(self.duration),
            warmup: Duration::from_secs_f64(self.warmup),
        }
    }
}

/// One system's figures for one measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    pub writes: usize,
    pub writes_per_sec: f64,
    pub latency: Latency,
    /// Its three server processes' CPU per acknowledged write, in µs.
    pub cpu_us_per_write: Option<f64>,
    /// Cores those processes kept busy over the window.
    pub cpu_cores: Option<f64>,
    pub errors: usize,
    pub last_error: Option<String>,
}

impl Side {
    fn of(run: LoadRun) -> Side {
        Side {
            writes: run.ops(),
            writes_per_sec: run.ops_per_sec(),
            cpu_us_per_write: run.cpu_us_per_op(),
            cpu_cores: run.cpu.map(|c| c.cores()),
            errors: run.errors,
            last_error: run.last_error.clone(),
            latency: Latency::of(run.latencies),
        }
    }
}

/// Both systems at one writer count in one round.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub round: usize,
    pub writers: usize,
    pub etcd_first: bool,
    pub etcd: Side,
    pub testfleet: Side,
}

/// Medians over the rounds at one writer count, and the medians of the rounds' ratios.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub writers: usize,
    pub writes_per_sec: Compared,
    pub p50_ms: Compared,
    pub p99_ms: Compared,
    pub cpu_us_per_write: Compared,
}

/// What `bench peers etcd` measured.
#[derive(Clone, Debug, Serialize)]
pub struct EtcdReport {
    pub etcd_version: String,
    pub testfleet_security: Security,
    pub payload_bytes: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub rounds: usize,
    pub etcd_idle: Option<IdleCpu>,
    pub testfleet_idle: Option<IdleCpu>,
    pub summary: Vec<Summary>,
    pub measurements: Vec<Measurement>,
}

/// One `KV.Put` of the writer's own key: the operation of the etcd side.
#[derive(Clone)]
struct EtcdPut {
    client: KvClient<Channel>,
    value: Vec<u8>,
    /// This writer's key, taken from `next_key` at its first put.
    key: Option<Vec<u8>>,
    next_key: Arc<AtomicUsize>,
}

impl Operation for EtcdPut {
    async fn call(&mut self) -> Result<(), String> {
        let next_key = &self.next_key;
        let key = self
            .key
            .get_or_insert_with(|| {
                format!(
                    "testfleet-bench/{}",
                    next_key.fetch_add(1, Ordering::Relaxed)
                )
                .into_bytes()
            })
            .clone();
        let request = PutRequest {
            key,
            value: self.value.clone(),
        };
        match self.client.put(request).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{}: {}", e.code(), e.message())),
        }
    }
}

/// Whether etcd's Prometheus text says this member leads (`etcd_server_is_leader 1`);
/// `None` when the metric is not there.
pub fn says_leader(metrics: &str) -> Option<bool> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix("etcd_server_is_leader ")?;
        let value: f64 = value.trim().parse().ok()?;
        Some(value == 1.0)
    })
}

/// A 3-member etcd cluster on loopback, killed when dropped.
struct EtcdCluster {
    members: Vec<Daemon>,
    /// Each member's client address, `127.0.0.1:port`.
    clients: Vec<String>,
}

impl EtcdCluster {
    fn start(etcd: &std::path::Path, dir: &std::path::Path) -> Result<EtcdCluster, CliError> {
        let port = || free_port().map_err(|e| CliError::Other(e.to_string()));
        let mut ports = Vec::new();
        for _ in 0..MEMBERS {
            ports.push((port()?, port()?));
        }
        let initial = (ports.iter().enumerate())
            .map(|(i, (_, peer))| format!("m{}=http://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut clients = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{}", i + 1);
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut command = Command::new(etcd);
            command
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join(format!("{name}.etcd")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", "testfleet-bench"])
                .args(["--initial-cluster-state", "new"])
                .args(["--logger", "zap", "--log-outputs", "stderr"]);
            let log = dir.join(format!("{name}.log"));
            members.push(Daemon::spawn(
                &format!("etcd member {name}"),
                command,
                &log,
            )?);
            clients.push(format!("127.0.0.1:{client}"));
        }
        Ok(EtcdCluster { members, clients })
    }

    fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(Daemon::pid).collect()
    }

    /// Until every member has acknowledged a put, then the member that leads.
    async fn ready_leader(&mut self) -> Result<usize, CliError> {
        for i in 0..self.clients.len() {
            let addr = self.clients[i].clone();
            let members = &mut self.members;
            super::wait_until(
                Duration::from_secs(30),
                &format!("etcd member {} did not acknowledge a put", i + 1),
                || {
                    let addr = addr.clone();
                    let running = members[i].check_running().map_err(|e| e.to_string());
                    async move {
                        running?;
                        let mut client = KvClient::new(channel(&addr).await?);
                        client
                            .put(PutRequest {
                                key: b"testfleet-bench/ready".to_vec(),
                                value: b"1".to_vec(),
                            })
                            .await
                            .map(|_| ())
                            .map_err(|e| e.message().to_string())
                    }
                },
            )
            .await?;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut last = String::new();
            for (i, addr) in self.clients.iter().enumerate() {
                match metrics(addr).await.map(|text| says_leader(&text)) {
                    Ok(Some(true)) => return Ok(i),
                    Ok(_) => last = format!("etcd_server_is_leader is not 1 on {addr}"),
                    Err(e) => last = e,
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(CliError::Unavailable(format!(
                    "no etcd member said it leads within 10 s: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A plaintext gRPC channel to `addr` (`host:port`).
async fn channel(addr: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// `GET /metrics` from an etcd member's client port (HTTP/1.0, the whole body).
async fn metrics(addr: &str) -> Result<String, String> {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .map_err(|e| format!("cannot ask {addr} for its metrics: {e}"))?;
        let mut body = Vec::new();
        stream
            .read_to_end(&mut body)
            .await
            .map_err(|e| format!("cannot read {addr}'s metrics: {e}"))?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .map_err(|_| format!("{addr} did not send its metrics within 2 s"))?
}

/// Runs the comparison.
pub async fn run(args: &EtcdArgs) -> Result<EtcdReport, CliError> {
    args.check()?;
    let etcd_bin = require_program(&args.etcd, "--etcd", "apt-get install etcd-server")?;
    let etcd_version = version_in(&first_line_of(&etcd_bin, &["--version"]));
    let (_temp, dir) = crate::demo::work_dir("testfleet-peers-etcd-", args.data_dir.as_deref())?;
    let etcd_dir = dir.join("etcd");
    std::fs::create_dir_all(&etcd_dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", etcd_dir.display())))?;
    let mut etcd = EtcdCluster::start(&etcd_bin, &etcd_dir)?;
    let testfleet =
        StartedCluster::start(MEMBERS as u64, Some(&dir.join("testfleet")), args.security).await?;
    let leader = etcd.ready_leader().await?;
    let etcd_leader = etcd.clients[leader].clone();
    let etcd_meter = CpuMeter::new(etcd.pids()).map_err(|e| CliError::Other(e.to_string()))?;
    let testfleet_meter = testfleet
        .meter
        .clone()
        .ok_or_else(|| CliError::Other("the coordinators' CPU cannot be read".into()))?;

    let testfleet_idle = testfleet.idle_cpu().await;
    let etcd_idle = match etcd_meter.idle(Duration::from_secs(2)).await {
        Ok(spent) => Some(IdleCpu::of(&spent)),
        Err(e) => {
            tracing::warn!("etcd's idle CPU not measured: {e}");
            None
        }
    };

    let payload = vec![0xab_u8; args.payload_bytes];
    let next_key = Arc::new(AtomicUsize::new(0));
    let mut measurements = Vec::new();
    for round in 0..args.rounds {
        for (index, &writers) in args.writers.iter().enumerate() {
            let shape = args.shape(writers);
            let etcd_first = peer_first(round, index);
            let etcd_turn = async || {
                let op = EtcdPut {
                    client: KvClient::new(
                        channel(&etcd_leader).await.map_err(CliError::Unavailable)?,
                    ),
                    value: payload.clone(),
                    key: None,
                    next_key: Arc::clone(&next_key),
                };
                measured(
                    "etcd",
                    closed_loop(op, shape, Some(etcd_meter.clone())).await,
                )
            };
            let testfleet_turn = async || {
                let op = ProposeBench {
                    client: connect_any(&testfleet.remote).await?,
                    payload: payload.clone(),
                };
                let run = closed_loop(op, shape, Some(testfleet_meter.clone())).await;
                measured("Testfleet", run)
            };
            let (etcd_side, testfleet_side) = if etcd_first {
                let etcd_side = etcd_turn().await?;
                (etcd_side, testfleet_turn().await?)
            } else {
                let testfleet_side = testfleet_turn().await?;
                (etcd_turn().await?, testfleet_side)
            };
            measurements.push(Measurement {
                round,
                writers,
                etcd_first,
                etcd: etcd_side,
                testfleet: testfleet_side,
            });
        }
    }
    drop(etcd);
    drop(testfleet);
    Ok(EtcdReport {
        etcd_version,
        testfleet_security: args.security,
        payload_bytes: args.payload_bytes,
        duration_s: args.duration,
        warmup_s: args.warmup,
        rounds: args.rounds,
        etcd_idle,
        testfleet_idle,
        summary: summarise(&args.writers, &measurements),
        measurements,
    })
}

/// A run's figures, or an error when nothing was acknowledged.
fn measured(system: &str, run: LoadRun) -> Result<Side, CliError> {
    if run.ops() == 0 {
        return Err(CliError::Unavailable(format!(
            "{system} acknowledged no write with {} writers{}",
            run.writers,
            run.last_error
                .as_deref()
                .map_or(String::new(), |e| format!(": {e}"))
        )));
    }
    if let Some(e) = &run.cpu_error {
        tracing::warn!(
            "{system}'s CPU not measured with {} writers: {e}",
            run.writers
        );
    }
    Ok(Side::of(run))
}

/// Per writer count, in the order given: medians and median ratios over the rounds.
pub fn summarise(writers: &[usize], measurements: &[Measurement]) -> Vec<Summary> {
    writers
        .iter()
        .map(|&w| {
            let at: Vec<&Measurement> = measurements.iter().filter(|m| m.writers == w).collect();
            Summary {
                writers: w,
                writes_per_sec: Compared::of(
                    &at,
                    |m| Some(m.testfleet.writes_per_sec),
                    |m| Some(m.etcd.writes_per_sec),
                ),
                p50_ms: Compared::of(
                    &at,
                    |m| Some(m.testfleet.latency.p50_ms),
                    |m| Some(m.etcd.latency.p50_ms),
                ),
                p99_ms: Compared::of(
                    &at,
                    |m| Some(m.testfleet.latency.p99_ms),
                    |m| Some(m.etcd.latency.p99_ms),
                ),
                cpu_us_per_write: Compared::of(
                    &at,
                    |m| m.testfleet.cpu_us_per_write,
                    |m| m.etcd.cpu_us_per_write,
                ),
            }
        })
        .collect()
}

/// Renders the report.
pub fn render(r: &EtcdReport, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(r).unwrap_or_default() + "\n";
    }
    let mut out = format!(
        "etcd {} and Testfleet (security: {}), {MEMBERS} members each on loopback; \
         {}-byte values, {} s measured after {} s of warm-up, {} round(s), alternating\n",
        r.etcd_version,
        security_name(r.testfleet_security),
        r.payload_bytes,
        r.duration_s,
        r.warmup_s,
        r.rounds
    );
    let idle = |i: &Option<IdleCpu>| {
        i.as_ref().map_or("-".to_string(), |i| {
            format!("{:.1} % of a core per member", i.percent_of_a_core_each)
        })
    };
    out.push_str(&format!(
        "idle: Testfleet {}, etcd {}\n\nmedians over the rounds; ratio = Testfleet / etcd, the \
         median of the rounds' ratios\n\n",
        idle(&r.testfleet_idle),
        idle(&r.etcd_idle)
    ));
    let rows: Vec<Vec<String>> = (r.summary.iter())
        .flat_map(|s| {
            [
                ("writes/s", s.writes_per_sec, 0),
                ("p50 ms", s.p50_ms, 2),
                ("p99 ms", s.p99_ms, 2),
                ("server CPU us/write", s.cpu_us_per_write, 0),
            ]
            .into_iter()
            .map(|(name, c, decimals)| {
                let [t, e, ratio] = c.cells(decimals);
                vec![s.writers.to_string(), name.to_string(), t, e, ratio]
            })
        })
        .collect();
    out.push_str(&table(
        &["WRITERS", "MEASURE", "TESTFLEET", "ETCD", "RATIO"],
        &rows,
    ));
    out.push_str("\nevery measurement:\n");
    let rows: Vec<Vec<String>> = (r.measurements.iter())
        .map(|m| {
            vec![
                (m.round + 1).to_string(),
                m.writers.to_string(),
                if m.etcd_first { "etcd" } else { "Testfleet" }.to_string(),
                format!(
                    "{:.0} / {:.0}",
                    m.testfleet.writes_per_sec, m.etcd.writes_per_sec
                ),
                format!(
                    "{:.2} / {:.2}",
                    m.testfleet.latency.p99_ms, m.etcd.latency.p99_ms
                ),
                format!(
                    "{} / {}",
                    optional(m.testfleet.cpu_us_per_write, 0),
                    optional(m.etcd.cpu_us_per_write, 0)
                ),
                format!("{} / {}", m.testfleet.errors, m.etcd.errors),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ROUND",
            "WRITERS",
            "FIRST",
            "WRITES/S TF / ETCD",
            "P99 MS TF / ETCD",
            "CPU US/WRITE TF / ETCD",
            "ERRORS TF / ETCD",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: EtcdArgs,
    }

    fn parse(args: &[&str]) -> EtcdArgs {
        Cli::try_parse_from(std::iter::once("etcd").chain(args.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn the_leader_is_read_from_etcds_metrics() {
        let text = "# HELP etcd_server_is_leader Whether or not this member is a leader.\n\
                    # TYPE etcd_server_is_leader gauge\netcd_server_is_leader 1\n\
                    etcd_server_is_learner 0\n";
        assert_eq!(says_leader(text), Some(true));
        assert_eq!(
            says_leader(&text.replace("leader 1", "leader 0")),
            Some(false)
        );
        assert_eq!(says_leader("HTTP/1.0 404 Not Found\r\n\r\n"), None);
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        assert!(parse(&[]).check().is_ok());
        assert_eq!(parse(&[]).writers, vec![1, 64, 256]);
        for bad in [
            &["--writers", "0"][..],
            &["--writers", "1,20000"],
            &["--duration", "0"],
            &["--duration=-3"],
            &["--warmup=-1"],
            &["--warmup", "NaN"],
            &["--rounds", "0"],
            &["--payload-bytes", "0"],
        ] {
            let e = parse(bad).check().unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{bad:?}: {e}");
        }
        assert!(
            parse(&["--warmup", "0"]).check().is_ok(),
            "no warm-up is allowed"
        );
    }

    #[tokio::test]
    async fn a_missing_etcd_is_a_clear_error_naming_the_package() {
        let args = parse(&["--etcd", "/nonexistent/etcd"]);
        let e = run(&args).await.unwrap_err();
        assert!(matches!(e, CliError::Usage(_)), "{e}");
        assert!(e.to_string().contains("apt-get install etcd-server"), "{e}");
    }

    fn side(per_sec: f64, p99: f64, cpu: Option<f64>) -> Side {
        Side {
            writes: 1,
            writes_per_sec: per_sec,
            latency: Latency {
                samples: 1,
                p50_ms: p99 / 2.0,
                p99_ms: p99,
                max_ms: p99,
            },
            cpu_us_per_write: cpu,
            cpu_cores: None,
            errors: 0,
            last_error: None,
        }
    }

    #[test]
    fn the_summary_pairs_each_rounds_systems_per_writer_count() {
        let m = |round, writers, tf: Side, etcd: Side| Measurement {
            round,
            writers,
            etcd_first: peer_first(round, 0),
            etcd,
            testfleet: tf,
        };
        let measurements = vec![
            m(
                0,
                1,
                side(600.0, 4.0, Some(2000.0)),
                side(1200.0, 1.0, Some(500.0)),
            ),
            m(
                0,
                64,
                side(12000.0, 12.0, Some(100.0)),
                side(10000.0, 20.0, None),
            ),
            m(
                1,
                1,
                side(500.0, 6.0, Some(2400.0)),
                side(1000.0, 2.0, Some(400.0)),
            ),
            m(
                1,
                64,
                side(11000.0, 14.0, Some(110.0)),
                side(11000.0, 22.0, Some(150.0)),
            ),
        ];
        let s = summarise(&[1, 64], &measurements);
        assert_eq!(s[0].writers, 1);
        assert_eq!(s[0].writes_per_sec.ratio, Some(0.5));
        assert_eq!(s[0].p99_ms.ratio, Some(3.5), "ratios 4 and 3");
        assert_eq!(s[0].cpu_us_per_write.ratio, Some(5.0), "ratios 4 and 6");
        // A round without etcd's CPU has no CPU ratio; the other round's stands.
        assert_eq!(s[1].cpu_us_per_write.peer, Some(150.0));
        assert!((s[1].cpu_us_per_write.ratio.unwrap() - 110.0 / 150.0).abs() < 1e-12);
        let report = EtcdReport {
            etcd_version: "3.4.23".into(),
            testfleet_security: Security::Open,
            payload_bytes: 64,
            duration_s: 5.0,
            warmup_s: 1.0,
            rounds: 2,
            etcd_idle: None,
            testfleet_idle: None,
            summary: s,
            measurements,
        };
        let table = render(&report, Output::Table);
        assert!(table.contains("server CPU us/write"), "{table}");
        assert!(table.contains("0.50x"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&render(&report, Output::Json)).unwrap();
        assert_eq!(json["summary"][0]["writes_per_sec"]["ratio"], 0.5);
    }
}
