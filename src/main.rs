//! The `testfleet` binary: coordinators, workers and the client commands in one executable.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

use testfleet::bench::{self, failover};
use testfleet::cli::args::{ClientAuth, EXIT_CODES, Target};
use testfleet::cli::{self, CliError, Output, Remote, jobs, status};
use testfleet::config::{CoordinatorArgs, CoordinatorConfig};
use testfleet::coordinator::{self, Coordinator};
use testfleet::demo::launch::Security;
use testfleet::state::command::TaskSpec;
use testfleet::worker::agent::WorkerConfig;

/// Distributed test execution with auto-recovery and highly available coordinators.
#[derive(Parser)]
#[command(name = "testfleet", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a coordinator node (a single-node cluster unless --peers is given)
    Coordinator(Box<CoordinatorArgs>),
    /// Show the cluster: leader, term, and each node's role and log positions
    Status(Target),
    /// The coordinators: members, adding and removing one, leadership, snapshots and
    /// restores, the replica check
    #[command(subcommand)]
    Cluster(testfleet::cli::cluster::ClusterCommand),
    /// Credentials: make the role tokens a coordinator checks
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Mutual TLS: make a private CA and a certificate per role
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Run a read-only SQL query on a coordinator's DuckDB copy of the state
    Sql {
        #[command(flatten)]
        target: Target,
        /// Ask the leader for a linearizable read instead of this node's (possibly stale) copy
        #[arg(long)]
        consistent: bool,
        /// The query, e.g. "SELECT * FROM tasks LIMIT 10"
        query: String,
    },
    /// Run a worker: hold a session with the leader and run the test commands it assigns
    Worker {
        /// Coordinator addresses, HOST:PORT[,HOST:PORT...]; any member works
        #[arg(long, env = "TESTFLEET_COORDINATOR", default_value = "127.0.0.1:8080")]
        coordinator: String,
        /// This worker's fleet-unique name [default: HOST-N, N the first number no other
        /// live worker on this host holds]
        #[arg(long, env = "TESTFLEET_WORKER_NAME")]
        name: Option<String>,
        /// Where workers keep the locks that make default names unique and a run marker per
        /// name, whose survival tells a restart that the previous process crashed
        /// [default: $XDG_STATE_HOME/testfleet or ~/.local/state/testfleet]
        #[arg(long, env = "TESTFLEET_WORKER_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Attempts to run at once
        #[arg(
            long,
            env = "TESTFLEET_WORKER_SLOTS",
            default_value_t = 1,
            value_parser = clap::value_parser!(u32).range(1..=1024)
        )]
        slots: u32,
        #[command(flatten)]
        auth: ClientAuth,
        /// A label, KEY=VALUE; repeat for more (TESTFLEET_WORKER_LABELS: comma-separated)
        #[arg(
            long = "label",
            env = "TESTFLEET_WORKER_LABELS",
            value_delimiter = ',',
            value_name = "KEY=VALUE",
            value_parser = parse_label
        )]
        labels: Vec<(String, String)>,
        /// On SIGTERM, how long running attempts may take to finish before they are stopped
        /// and handed back, e.g. 30s, 5m
        #[arg(long, env = "TESTFLEET_WORKER_GRACE", default_value = "30s", value_parser = parse_duration)]
        grace: Duration,
        /// Testing aid: inject a fault into this worker; repeat for more. SPEC is
        /// spawn-error=ERRNO[,rate=R], drop-session,every=DUR,
        /// stall-heartbeats,every=DUR,for=DUR or slow-heartbeats,factor=F
        /// (ARCHITECTURE.md § Worker faults)
        #[arg(long = "inject-fault", hide = true, value_name = "SPEC")]
        inject_faults: Vec<testfleet::worker::faults::Fault>,
        // --no-probe, --capability, --probe-interval, --probe-backends
        #[command(flatten)]
        probe: testfleet::worker::probe::ProbeArgs,
    },
    /// Print a shell completion script: `testfleet completions bash > /etc/bash_completion.d/testfleet`
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Submit one command as a job of one task; prints the task id
    Submit {
        #[command(flatten)]
        target: Target,
        /// Priority (higher runs first)
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        /// Timeout, e.g. 30s, 5m, or whole seconds (300)
        #[arg(long, default_value = "10m", value_parser = testfleet::plan::parse_timeout)]
        timeout: Duration,
        /// Infrastructure retries (worker lost, lease lost)
        #[arg(long, default_value_t = 3)]
        max_retries: u32,
        /// A label the worker must have, KEY=VALUE; repeat for more
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Job name
        #[arg(long = "job", default_value = "submit")]
        job: String,
        /// The command and its arguments, after --
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run a plan file as one job, follow it, print a summary; exit 0/1/2/3
    Run {
        #[command(flatten)]
        target: Target,
        /// The plan file (TOML)
        plan: std::path::PathBuf,
        /// Submit and print the job id without following it
        #[arg(long, conflicts_with = "local")]
        detach: bool,
        /// Run on a fleet of this command's own: a coordinator in this process and N local
        /// workers, started before the job and stopped after it
        /// (`--coordinator` given with it is refused; TESTFLEET_COORDINATOR is ignored.)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
        local: Option<u16>,
        /// With --local: keep the coordinator's data (DuckDB, Raft log, tokens) and the logs in
        /// DIR instead of a temporary directory
        #[arg(long, value_name = "DIR", requires = "local")]
        data_dir: Option<PathBuf>,
        /// With --local: let the workers probe GPUs and browsers (takes seconds)
        #[arg(long, requires = "local")]
        probe: bool,
    },
    /// Follow a job (e.g. one run with --detach) to its end; print its summary, exit as `run`
    Wait {
        #[command(flatten)]
        target: Target,
        /// The job: its id, a unique prefix, or its name
        job: String,
    },
    /// Cancel a job: its open tasks end cancelled and workers stop the attempts they run
    Cancel {
        #[command(flatten)]
        target: Target,
        /// The job: its id, a unique prefix, or its name
        job: String,
        /// Why, recorded with each cancelled task
        #[arg(long, default_value = "cancelled from the command line")]
        reason: String,
    },
    /// List jobs, the newest first
    Jobs {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        limit: cli::reads::Limit,
    },
    /// List tasks, of one job or of all; a queued task no worker can run says why
    Tasks {
        #[command(flatten)]
        target: Target,
        /// Only the tasks of this job (its id, a unique prefix, or its name)
        #[arg(long)]
        job: Option<String>,
        #[command(flatten)]
        limit: cli::reads::Limit,
    },
    /// A task's output: what its running attempt printed so far, or its stored tail; -f follows
    Logs(cli::logs::LogsArgs),
    /// One task: its spec, and every attempt with worker, outcome, exit code and output tail
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// List workers (those that left on purpose only with --all); drain, undrain or remove one
    #[command(args_conflicts_with_subcommands = true)]
    Workers {
        #[command(subcommand)]
        command: Option<testfleet::cli::workers::WorkersCommand>,
        #[command(flatten)]
        target: Target,
        /// Include workers that left
        #[arg(long)]
        all: bool,
    },
    /// What each worker offers: GPU adapters (verified by a shader), browsers with
    /// WebGPU/WebNN, declared capabilities; and which workers offer each capability
    Capabilities {
        /// One worker's name; all workers without it
        worker: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Run a pytest suite across the fleet, sharded by test and balanced by past durations;
    /// one merged JUnit XML; exit as pytest does
    Pytest(Box<cli::pytest::PytestArgs>),
    /// Per-test results (tasks with `junit = "path"`): the slowest tests, the flaky ones,
    /// one test's history
    #[command(subcommand)]
    Tests(cli::test_results::TestsCommand),
    /// Recovery records
    #[command(subcommand)]
    Recovery(cli::recovery::RecoveryCommand),
    /// Circuit breakers: list them with the recovery level, or reset, force open or disable one
    #[command(subcommand)]
    Breaker(testfleet::cli::breaker::BreakerCommand),
    /// Local HA demo: N coordinators and W workers under load, with seeded faults; report
    Ha(testfleet::demo::ha::HaArgs),
    /// Seeded faults (kills, pauses, partitions) against a local cluster under a workload of
    /// known outcomes, judged by a history checker: exit 0 passed, 1 an anomaly, 2 could not run
    Chaos(testfleet::chaos::run::ChaosArgs),
    /// Auto-recovery end to end with real processes: kill a worker, watch it come back
    TestAutoRecovery {
        /// Worker processes to start
        #[arg(long, default_value_t = 3)]
        num_workers: usize,
        /// Seconds the demonstration may take at most
        #[arg(long, default_value_t = 60)]
        run_time: u64,
    },
    /// Benchmarks
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Pictures of the cluster and its history: cluster, health, leaders, recovery (text, SVG
    /// or PNG), or all of them as files
    Viz(testfleet::cli::viz::VizArgs),
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    testfleet::plan::parse_duration(text)
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Write peer.token, operator.token and worker.token (256 random bits each, mode 0600)
    /// into DIR; start coordinators with --auth-dir DIR and give each client its role's file
    Init {
        /// Directory for the token files (created with mode 0700)
        dir: PathBuf,
        /// Replace existing tokens (every coordinator, worker and operator needs the new ones)
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Show a task (its id or a unique prefix)
    Show {
        #[command(flatten)]
        target: Target,
        task: String,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Write ca.pem/ca.key and peer, operator and worker certificates with their keys into DIR
    Init(testfleet::cli::tls::TlsInitArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Commit throughput and latency of Bench commands, end to end over gRPC
    Commit {
        /// Coordinators to load; without it an in-process single-node coordinator is started
        #[arg(long, env = "TESTFLEET_COORDINATOR")]
        coordinator: Option<String>,
        #[command(flatten)]
        auth: ClientAuth,
        /// Writer counts to measure, one run each, e.g. 1,64
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        writers: Vec<usize>,
        /// Measured seconds per run
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Unmeasured warm-up seconds before each run
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Payload bytes per command
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
        /// Directory for the started node(s)' files and the fsync sample
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Start a local cluster of this many coordinator processes and load it (`--coordinator`
        /// given with it is refused; TESTFLEET_COORDINATOR is ignored)
        #[arg(long)]
        nodes: Option<u64>,
        /// How the started cluster is protected
        #[arg(long, value_enum, default_value_t = Security::Tokens, requires = "nodes")]
        security: Security,
        /// Split each commit into its stages (append, fsync, replication, apply, reply) with
        /// p50/p99 each: the started cluster runs with --stage-clock
        #[arg(long, requires = "nodes")]
        breakdown: bool,
        /// Output format
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Trivial tasks end to end: throughput, dispatch latency, worker memory, pick time
    Tasks(testfleet::bench::tasks::TasksArgs),
    /// Worker SIGKILL to its tasks requeued and finished elsewhere, over many kills
    Recovery(testfleet::bench::recovery::RecoveryArgs),
    /// Leader SIGKILL to every worker holding a session with the new leader
    Reconnect(testfleet::bench::reconnect::ReconnectArgs),
    /// Leader SIGKILL (or SIGSTOP) to new leader, and to the first acknowledged write
    Failover(testfleet::bench::failover::FailoverArgs),
    /// The replaced system's claims (recovery; a coordinator failure without and with HA),
    /// measured by three checked chaos runs
    Claims(testfleet::bench::claims::ClaimsArgs),
    /// The same job with and without circuit breakers while one worker suffers each failure
    /// type; report, JSON and charts in benchmark_reports/<timestamp>/
    Breaker(testfleet::bench::breaker::BreakerBenchArgs),
    /// A restarted follower, and one absent while N commands were committed, until caught
    /// up, at several sizes of state
    Catchup(testfleet::bench::catchup::CatchupArgs),
    /// A pytest suite directly, with pytest-xdist -n N and through a local fleet of N
    /// workers (without, then with a timing history): wall times, shard balance, outcomes
    Pytest(testfleet::bench::pytest::PytestBenchArgs),
    /// Testfleet side by side with etcd (commits) or Celery + Redis (tasks), in one run
    #[command(subcommand)]
    Peers(testfleet::bench::peers::PeersCommand),
}

/// The log filter without `RUST_LOG`. openraft warns on every failed heartbeat and replication
/// RPC, many times a second while a peer is down; the Raft network logs a peer going silent
/// and answering again once each way instead (`raft::network`).
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,openraft::core::heartbeat=error,\
     openraft::replication=error,openraft::engine::handler::replication_handler=error";

/// Logs to stderr (to a file while `run --local` runs its fleet: `cli::local::logs`), in
/// color when stderr is a terminal, unless `plain`.
fn init_tracing(plain: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    use std::io::IsTerminal;
    let ansi = !plain && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(cli::local::logs::Writer)
        .with_ansi(ansi)
        .init();
}

fn seconds(value: f64, flag: &str) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        CliError::Usage(format!(
            "{flag} must be a non-negative number of seconds, got {value}"
        ))
    })
}

async fn run_coordinator(args: CoordinatorArgs) -> Result<(), CliError> {
    #[cfg(feature = "negative-controls")]
    if let Some(control) = args.negative_control {
        testfleet::negative::set(control);
    }
    let config = CoordinatorConfig::resolve(&args).map_err(|e| CliError::Usage(e.to_string()))?;
    if config.auth_dir.is_none() && config.tls_cert.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(
            "INSECURE: listening on {} with neither tokens nor TLS (--insecure): anyone who \
             reaches this port can run commands on every worker and rewrite the cluster's log",
            config.listen
        );
    }
    let listener = coordinator::bind(config.listen)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Other(e.to_string()))?;
    let advertised = coordinator::advertised_address(&config, bound);
    let node = Coordinator::start(config, advertised)
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    tracing::info!(node_id = node.node_id(), addr = %bound, db = %node.config().db_path.display(), "coordinator listening");
    node.serve(listener, cli::interrupt::shutdown_signal())
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Prints a finished job's summary and exits with its code.
fn print_summary(report: testfleet::proto::JobReport, output: Output) -> Result<(), CliError> {
    let summary = jobs::summary(report);
    print!("{}", jobs::render(&summary, output));
    match summary.exit_code {
        0 => Ok(()),
        code => Err(CliError::Exit(code)),
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Worker {
            coordinator,
            name,
            slots,
            labels,
            auth,
            grace,
            state_dir,
            inject_faults,
            probe,
        } => {
            use testfleet::worker::{faults::Faults, marker::RunMarker, name};
            let addrs = cli::parse_addresses(&coordinator)?;
            let faults = Faults::new(inject_faults).map_err(|e| CliError::Usage(e.to_string()))?;
            let probe = probe.settings().map_err(CliError::Usage)?;
            let dir = state_dir.unwrap_or_else(name::default_state_dir);
            // Held for the life of the process: it keeps the default name ours.
            let mut _name_lock = None;
            let name = match name {
                Some(name) => name,
                None => {
                    let taken =
                        name::default_name(&testfleet::worker::host_name(), &dir).map_err(|e| {
                            CliError::Usage(format!(
                                "cannot pick a default worker name in {}: {e}; give the worker \
                                 a --name or a writable --state-dir",
                                dir.display()
                            ))
                        })?;
                    let name = taken.name.clone();
                    _name_lock = Some(taken);
                    name
                }
            };
            // The coordinator refuses a bad name too; refusing it here exits at once with why,
            // instead of retrying a hello that can never be accepted.
            testfleet::state::limits::check_worker_id(&name)
                .map_err(|e| CliError::Usage(format!("bad worker name {name:?}: {e}")))?;
            let (marker, previous_exit) = RunMarker::acquire_or_warn(&dir, &name);
            let mut config = WorkerConfig::new(addrs, name);
            config.credentials = auth.credentials()?;
            config.slots = slots;
            config.labels = labels.into_iter().collect();
            config.grace = grace;
            config.faults = faults;
            config.probe = probe;
            config.previous_exit = previous_exit;
            // The first SIGTERM or Ctrl-C makes the worker leave (it finishes what it runs, up
            // to --grace); a second one stops it at once.
            let shutdown = tokio_util::sync::CancellationToken::new();
            let leave = shutdown.clone();
            let stop_now = config.stop_now.clone();
            tokio::spawn(async move {
                cli::interrupt::shutdown_signal().await;
                leave.cancel();
                cli::interrupt::shutdown_signal().await;
                stop_now.cancel();
            });
            let result = testfleet::worker::agent::run(config, shutdown).await;
            // Any return is an end on the worker's own terms; only a crash leaves the marker.
            if let Some(Err(e)) = marker.map(RunMarker::remove) {
                tracing::warn!("cannot remove the run marker: {e}");
            }
            result.map_err(CliError::Denied)
        }
        Command::Submit {
            target,
            priority,
            timeout,
            max_retries,
            labels,
            job,
            command,
        } => {
            let remote = target.remote()?;
            if command.first().is_none_or(|c| c.is_empty()) {
                return Err(CliError::Usage("the command after -- is empty".into()));
            }
            let task_id = uuid::Uuid::new_v4().to_string();
            let spec = TaskSpec {
                timeout_ms: timeout.as_millis() as u64,
                priority,
                labels: labels.into_iter().collect(),
                max_retries,
                ..TaskSpec::new(task_id.clone(), command.join(" "), command)
            };
            let job_id = uuid::Uuid::new_v4().to_string();
            jobs::submit(&remote, &job_id, &job, &[spec]).await?;
            match target.output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"job_id": job_id, "task_id": task_id})
                ),
                Output::Table => {
                    // stdout stays the task id alone, for `$(testfleet submit ...)`.
                    eprintln!("submitted job {job_id}; its task:");
                    println!("{task_id}");
                }
            }
            Ok(())
        }
        Command::Run {
            target,
            plan,
            detach,
            local,
            data_dir,
            probe,
        } => {
            if let Some(workers) = local {
                let (name, specs) = jobs::load_plan(&plan)?;
                let options = cli::local::LocalOptions {
                    workers: usize::from(workers),
                    data_dir,
                    probe,
                };
                let report = cli::local::run(&options, &name, &specs).await?;
                return print_summary(report, target.output);
            }
            let remote = target.remote()?;
            let (name, specs) = jobs::load_plan(&plan)?;
            let job_id = uuid::Uuid::new_v4().to_string();
            // Ctrl-C from here on cancels the job (once submitted) instead of killing the
            // client and leaving the job running unseen.
            let mut interrupts = (!detach).then(cli::interrupt::interrupts);
            let count = jobs::submit(&remote, &job_id, &name, &specs).await?;
            if detach {
                match target.output {
                    Output::Json => {
                        println!("{}", serde_json::json!({"job_id": job_id, "tasks": count}))
                    }
                    Output::Table => println!("{job_id}"),
                }
                return Ok(());
            }
            eprintln!("submitted job {name} ({job_id}) with {count} tasks");
            let report = jobs::follow_interruptible(&remote, &job_id, interrupts.as_mut()).await?;
            print_summary(report, target.output)
        }
        Command::Completions { shell } => {
            use std::io::Write;
            // Into memory first: clap_complete panics on a write error, and a closed pipe
            // (`| head`) is not an error here.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "testfleet", &mut script);
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(CliError::Other(format!("cannot write the script: {e}")))
                }
                _ => Ok(()),
            }
        }
        Command::Task {
            command: TaskCommand::Show { target, task },
        } => {
            let remote = target.remote()?;
            let id = cli::lookup::task(&remote, &task).await?;
            print!(
                "{}",
                cli::reads::show_task(&remote, &id, target.output).await?
            );
            Ok(())
        }
        Command::Logs(args) => cli::logs::run(args).await,
        Command::Wait { target, job } => {
            let remote = target.remote()?;
            let job = cli::lookup::job(&remote, &job).await?;
            let report = jobs::follow(&remote, &job).await?;
            print_summary(report, target.output)
        }
        Command::Cancel {
            target,
            job,
            reason,
        } => {
            let remote = target.remote()?;
            let job = cli::lookup::job(&remote, &job).await?;
            jobs::cancel(&remote, &job, &reason).await?;
            match target.output {
                Output::Json => {
                    println!("{}", serde_json::json!({"job_id": job, "cancelled": true}))
                }
                Output::Table => println!("cancelled job {job}"),
            }
            Ok(())
        }
        Command::Jobs { target, limit } => cli::reads::jobs(&target, limit).await,
        Command::Tasks { target, job, limit } => {
            cli::reads::tasks(&target, job.as_deref(), limit).await
        }
        Command::TestAutoRecovery {
            num_workers,
            run_time,
        } => {
            let ok =
                testfleet::demo::auto_recovery::run(num_workers, Duration::from_secs(run_time))
                    .await?;
            if ok { Ok(()) } else { Err(CliError::Exit(1)) }
        }
        Command::Chaos(args) => {
            use testfleet::chaos::run;
            let report = match run::run(&args).await {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("error: the chaos run could not be made: {e}");
                    return Err(CliError::Exit(2));
                }
            };
            match args.output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
                Output::Table => print!("{}", testfleet::chaos::report::summary(&report)),
            }
            if report.verdict == "pass" {
                Ok(())
            } else {
                Err(CliError::Exit(1))
            }
        }
        Command::Ha(args) => {
            let report = testfleet::demo::ha::run(&args.settings()?).await?;
            if report.passed {
                Ok(())
            } else {
                Err(CliError::Exit(1))
            }
        }
        Command::Breaker(command) => testfleet::cli::breaker::run(command).await,
        Command::Recovery(command) => cli::recovery::run(command).await,
        Command::Workers {
            command: Some(command),
            ..
        } => testfleet::cli::workers::run(command).await,
        Command::Workers { target, all, .. } => cli::reads::workers(&target, all).await,
        Command::Tests(command) => cli::test_results::run(command).await,
        Command::Pytest(args) => {
            let mut interrupts = cli::interrupt::interrupts();
            cli::pytest::run(*args, Some(&mut interrupts)).await
        }
        Command::Capabilities { worker, target } => {
            testfleet::cli::capabilities::run(&target, worker.as_deref()).await
        }
        Command::Coordinator(args) => run_coordinator(*args).await,
        Command::Cluster(command) => testfleet::cli::cluster::run(command).await,
        Command::Viz(args) => testfleet::cli::viz::run(args).await,
        Command::Status(target) => {
            let remote = target.remote()?;
            let report = status::collect(&remote).await?;
            print!("{}", status::render(&report, target.output));
            Ok(())
        }
        Command::Sql {
            target,
            consistent,
            query,
        } => {
            let remote = target.remote()?;
            print!(
                "{}",
                cli::sql(&remote, &query, consistent, target.output).await?
            );
            Ok(())
        }
        Command::Tls(TlsCommand::Init(args)) => testfleet::cli::tls::init(&args),
        Command::Auth(AuthCommand::Init { dir, force }) => {
            let written = testfleet::auth::token::init(&dir, force)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            for path in &written {
                println!("wrote {}", path.display());
            }
            let dir = dir.display();
            println!(
                "\ncoordinators: testfleet coordinator --auth-dir {dir} ... (each needs the whole \
                 directory)\nworkers:      testfleet worker --token-file {dir}/worker.token ...\n\
                 operators:    testfleet status --token-file {dir}/operator.token (or export \
                 TESTFLEET_TOKEN_FILE)"
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Commit {
            breakdown: true,
            writers,
            duration,
            warmup,
            payload_bytes,
            data_dir,
            nodes,
            security,
            output,
            ..
        }) => {
            let settings = bench::breakdown::BreakdownSettings {
                nodes: nodes.unwrap_or(3),
                writers,
                duration: seconds(duration, "--duration")?,
                warmup: seconds(warmup, "--warmup")?,
                payload_bytes,
                data_dir,
                security,
            };
            let report = bench::breakdown::run(&settings).await?;
            print!("{}", bench::breakdown::render(&report, output));
            Ok(())
        }
        Command::Bench(BenchCommand::Commit {
            coordinator,
            auth,
            writers,
            duration,
            warmup,
            payload_bytes,
            data_dir,
            nodes,
            security,
            output,
            ..
        }) => {
            let settings = bench::commit::BenchSettings {
                nodes,
                // With --nodes, a coordinator from the environment is not the target.
                coordinators: match coordinator.as_deref().filter(|_| nodes.is_none()) {
                    Some(list) => Some(Remote::new(
                        cli::parse_addresses(list)?,
                        auth.credentials()?,
                    )),
                    None => None,
                },
                writers,
                duration: seconds(duration, "--duration")?,
                warmup: seconds(warmup, "--warmup")?,
                payload_bytes,
                data_dir,
                security,
            };
            let report = bench::commit::run(&settings).await?;
            print!("{}", bench::commit::render(&report, output));
            Ok(())
        }
        Command::Bench(BenchCommand::Tasks(args)) => {
            if let Some(settings) = args.queued_settings() {
                let report = bench::tasks::queued::run(&settings).await?;
                print!("{}", bench::tasks::queued::render(&report, args.output));
                return Ok(());
            }
            let report = bench::tasks::run(&args.settings()).await?;
            print!("{}", bench::tasks::render(&report, args.output));
            Ok(())
        }
        Command::Bench(BenchCommand::Recovery(args)) => {
            let report = bench::recovery::run(&args.settings()).await?;
            print!("{}", bench::recovery::render(&report, args.output));
            Ok(())
        }
        Command::Bench(BenchCommand::Reconnect(args)) => {
            let report = bench::reconnect::run(&args.settings()).await?;
            print!("{}", bench::reconnect::render(&report, args.output));
            Ok(())
        }
        Command::Bench(BenchCommand::Failover(args)) => {
            let report = failover::run(&args.settings()).await?;
            print!("{}", failover::render(&report, args.output));
            Ok(())
        }
        Command::Bench(BenchCommand::Breaker(args)) => {
            let report = bench::breaker::run(&args).await?;
            match args.output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
                Output::Table => print!("{}", report.markdown()),
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Catchup(args)) => {
            let report = bench::catchup::run(&args).await?;
            print!("{}", bench::catchup::render(&report, args.output));
            Ok(())
        }
        Command::Bench(BenchCommand::Pytest(args)) => {
            let report = bench::pytest::run(&args).await?;
            print!(
                "{}",
                bench::pytest::render(&report, args.suite.target.output)
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Peers(command)) => {
            print!("{}", bench::peers::run(&command).await?);
            Ok(())
        }
        Command::Bench(BenchCommand::Claims(args)) => {
            let report = bench::claims::run(&args).await?;
            print!("{}", bench::claims::render(&report, args.output));
            if report.passed {
                Ok(())
            } else {
                Err(CliError::Exit(1))
            }
        }
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    if let Err(e) = cli::args::refuse_explicit_conflicts(&matches, Cli::command) {
        e.exit();
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let local = match &cli.command {
        Command::Run { local, .. } => local.is_some(),
        Command::Pytest(args) => args.local.is_some(),
        Command::Bench(BenchCommand::Pytest(_)) => true,
        _ => false,
    };
    init_tracing(local);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The command runs as a task of the runtime, not on this thread: a future `block_on`
    // drives stays on the main thread, outside the worker pool, and every task it wakes (or
    // that wakes it) crosses threads. A worker's session loop spent a fifth of the worker's
    // CPU there (BENCHMARKS.md).
    let command = runtime.block_on(async {
        match tokio::spawn(run(cli)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(CliError::Other(format!("the command was stopped: {e}"))),
        }
    });
    match command {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Exit(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
