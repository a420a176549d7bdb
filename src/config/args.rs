//! The coordinator's command-line flags ([`CoordinatorArgs`]), kept apart from the settings
//! they resolve into ([`super::CoordinatorConfig`]): each flag also reads a `TESTFLEET_*`
//! environment variable, and `None` means "not given", so the config file or the default
//! applies.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

/// The coordinator's command-line flags; each also reads a `TESTFLEET_*` environment variable.
///
/// `None` means "not given on the command line nor in the environment": the value then comes
/// from the config file or the default. Flatten it into the `coordinator` subcommand with
/// `#[command(flatten)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct CoordinatorArgs {
    /// TOML file with coordinator settings (keys: the snake_case names of these flags)
    #[arg(long, env = "TESTFLEET_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// This node's Raft id [default: 1]
    #[arg(long, env = "TESTFLEET_NODE_ID", value_name = "ID")]
    pub node_id: Option<u64>,

    /// Port for all gRPC services of this node [default: 8080]
    #[arg(long, env = "TESTFLEET_PORT")]
    pub port: Option<u16>,

    /// IP address to listen on [default: 127.0.0.1]
    #[arg(long, env = "TESTFLEET_BIND", value_name = "IP")]
    pub bind: Option<IpAddr>,

    /// DuckDB file holding the replicated state [default: testfleet.duckdb]
    #[arg(long, env = "TESTFLEET_DB_PATH", value_name = "PATH")]
    pub db_path: Option<PathBuf>,

    /// Directory for the Raft log and snapshots [default: the DuckDB file's directory]
    #[arg(long, env = "TESTFLEET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Every cluster member, this node included: `1=host:port,2=host:port,...`
    /// [default: none, a single-node cluster]
    #[arg(long, env = "TESTFLEET_PEERS", value_name = "ID=HOST:PORT,...")]
    pub peers: Option<String>,

    /// Leader heartbeat interval in milliseconds [default: 100]
    #[arg(long, env = "TESTFLEET_HEARTBEAT_INTERVAL_MS", value_name = "MS")]
    pub heartbeat_interval_ms: Option<u64>,

    /// Minimum election timeout in milliseconds [default: 250]
    #[arg(long, env = "TESTFLEET_ELECTION_TIMEOUT_MIN_MS", value_name = "MS")]
    pub election_timeout_min_ms: Option<u64>,

    /// Maximum election timeout in milliseconds [default: 500]
    #[arg(long, env = "TESTFLEET_ELECTION_TIMEOUT_MAX_MS", value_name = "MS")]
    pub election_timeout_max_ms: Option<u64>,

    /// Snapshot after this many log entries since the last snapshot [default: 20000]
    #[arg(long, env = "TESTFLEET_SNAPSHOT_LOGS_SINCE_LAST", value_name = "N")]
    pub snapshot_logs_since_last: Option<u64>,

    /// Log entries kept after a snapshot covers them [default: 1000]
    #[arg(long, env = "TESTFLEET_MAX_IN_SNAPSHOT_LOG_TO_KEEP", value_name = "N")]
    pub max_in_snapshot_log_to_keep: Option<u64>,

    /// DuckDB worker threads [default: 2]
    #[arg(long, env = "TESTFLEET_DUCKDB_THREADS", value_name = "N")]
    pub duckdb_threads: Option<u32>,

    /// DuckDB memory limit, e.g. 512MB or 1GB [default: 1GB]
    #[arg(long, env = "TESTFLEET_DUCKDB_MEMORY_LIMIT", value_name = "SIZE")]
    pub duckdb_memory_limit: Option<String>,

    /// Detect and record failures, but recover nothing [default: false]
    #[arg(
        long,
        env = "TESTFLEET_DISABLE_AUTO_RECOVERY",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub disable_auto_recovery: Option<bool>,

    /// Time every log entry through the commit path (append, fsync, send, receive, ack,
    /// apply, reply) for `bench commit --breakdown`: a diagnostic, 5 MiB [default: false]
    #[arg(
        long,
        env = "TESTFLEET_STAGE_CLOCK",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub stage_clock: Option<bool>,

    /// How often workers heartbeat, in milliseconds [default: 1000]
    #[arg(
        long,
        env = "TESTFLEET_WORKER_HEARTBEAT_INTERVAL_MS",
        value_name = "MS"
    )]
    pub worker_heartbeat_interval_ms: Option<u64>,

    /// Silence after which a worker is failed, in milliseconds [default: 5000]
    #[arg(long, env = "TESTFLEET_WORKER_FAILURE_TIMEOUT_MS", value_name = "MS")]
    pub worker_failure_timeout_ms: Option<u64>,

    /// Command that restarts a failed worker ({worker}, {host}, {address} become quoted words)
    #[arg(long, env = "TESTFLEET_RESTART_COMMAND", value_name = "TEMPLATE")]
    pub restart_command: Option<String>,

    /// Attempts to bring a failed worker back [default: 5]
    #[arg(long, env = "TESTFLEET_MAX_RECOVERY_ATTEMPTS", value_name = "N")]
    pub max_recovery_attempts: Option<u32>,

    /// Time one recovery attempt may take, in milliseconds [default: 60000]
    #[arg(long, env = "TESTFLEET_RECOVERY_INTERVAL_MS", value_name = "MS")]
    pub recovery_interval_ms: Option<u64>,

    /// Drain erratic workers before they fail [default: true]
    #[arg(
        long,
        env = "TESTFLEET_ENABLE_PROACTIVE_RECOVERY",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub enable_proactive_recovery: Option<bool>,

    /// Turn the circuit breakers off: every worker gets work whatever its faults, and the base
    /// recovery policy (--max-recovery-attempts, --recovery-interval-ms) replaces the level the
    /// system breaker would pick [default: breakers on]
    #[arg(
        long,
        env = "TESTFLEET_DISABLE_CIRCUIT_BREAKER",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub disable_circuit_breaker: Option<bool>,

    /// Directory of role tokens from `testfleet auth init`: every call must carry one
    #[arg(long, env = "TESTFLEET_AUTH_DIR", value_name = "DIR")]
    pub auth_dir: Option<PathBuf>,

    /// Mutual TLS: this node's certificate (PEM, the peer certificate of `testfleet tls init`)
    #[arg(long, env = "TESTFLEET_TLS_CERT", value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,

    /// Mutual TLS: this node's private key (PEM)
    #[arg(long, env = "TESTFLEET_TLS_KEY", value_name = "PEM", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: the CA certificate every caller's certificate must be signed by (PEM)
    #[arg(long, env = "TESTFLEET_TLS_CA", value_name = "PEM", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,

    /// Listen on a non-loopback address without tokens or TLS (anyone who reaches the port
    /// can run commands on every worker)
    #[arg(long, env = "TESTFLEET_INSECURE")]
    pub insecure: bool,

    /// `/metrics` asks for a token (any role), like the API; `/livez` and `/readyz` stay open
    /// [default: /metrics open, as Prometheus scrapers expect]
    #[arg(long, env = "TESTFLEET_METRICS_AUTH")]
    pub metrics_auth: bool,

    /// Also serve the HTTP routes (probes, metrics, API) on this port of the listen address,
    /// plain HTTP; they are always on the gRPC port too. Not with TLS (the gRPC port then
    /// speaks HTTPS)
    #[arg(long, env = "TESTFLEET_HTTP_PORT", value_name = "PORT")]
    pub http_port: Option<u16>,

    /// While this node leads, write the cluster, health, leader and recovery pictures (SVG and
    /// PNG) into DIR every --visualization-interval, keeping the newest hour's
    #[arg(long, env = "TESTFLEET_VISUALIZATION_PATH", value_name = "DIR")]
    pub visualization_path: Option<PathBuf>,

    /// How often the leader writes the pictures, e.g. 60s, 5m [default: 60s]
    #[arg(
        long = "visualization-interval",
        env = "TESTFLEET_VISUALIZATION_INTERVAL",
        value_name = "DUR",
        value_parser = duration_ms
    )]
    pub visualization_interval_ms: Option<u64>,

    /// Join an existing cluster whose members are HOST:PORT,...: never initialise a cluster
    /// of its own; wait until an operator adds this node (`testfleet cluster add-node`)
    #[arg(
        long,
        env = "TESTFLEET_JOIN",
        value_name = "HOST:PORT,...",
        conflicts_with_all = ["peers", "coordinator_addresses"]
    )]
    pub join: Option<String>,

    /// The original design's spelling of a cluster start; needs --coordinator-addresses
    #[arg(long, requires = "coordinator_addresses")]
    pub high_availability: bool,

    /// The other coordinators (or all of them) as HOST:PORT,HOST:PORT,...; their ids are
    /// learned by asking them at start
    #[arg(
        long,
        env = "TESTFLEET_COORDINATOR_ADDRESSES",
        value_name = "HOST:PORT,...",
        conflicts_with = "peers"
    )]
    pub coordinator_addresses: Option<String>,

    /// This node's id: a number, a name (coordinator1 is node 1), or its own HOST:PORT in
    /// --coordinator-addresses (its position there is its id)
    #[arg(
        long,
        env = "TESTFLEET_COORDINATOR_ID",
        value_name = "ID",
        requires = "coordinator_addresses",
        conflicts_with = "node_id"
    )]
    pub coordinator_id: Option<String>,

    /// Puts a bug back on purpose (chaos checker's negative controls; feature builds only)
    #[cfg(feature = "negative-controls")]
    #[arg(long, hide = true, value_enum)]
    pub negative_control: Option<crate::negative::Control>,
}

/// A duration flag (`60s`, `5m`, or whole seconds) in milliseconds.
fn duration_ms(text: &str) -> Result<u64, String> {
    let duration = crate::plan::parse_duration(text)?;
    u64::try_from(duration.as_millis()).map_err(|_| format!("{text:?} is too long"))
}
