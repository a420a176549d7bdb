//! Every tunable of a coordinator node: its default, where it comes from, and what makes it
//! valid.
//!
//! A coordinator's settings are layered, later layers winning:
//!
//! 1. the defaults below ([`CoordinatorConfig::default`]);
//! 2. a TOML file named by `--config PATH` (or `TESTFLEET_CONFIG`), whose keys are the
//!    snake_case field names of [`CoordinatorConfig`] — unknown keys are refused, so a typo
//!    never silently falls back to a default;
//! 3. `TESTFLEET_*` environment variables;
//! 4. command-line flags.
//!
//! Layers 3 and 4 are both handled by clap: every field of [`CoordinatorArgs`] is an `Option`
//! declared with `#[arg(long, env = "TESTFLEET_...")]`, so clap yields the flag if given, else
//! the variable, else `None`. [`CoordinatorConfig::resolve`] then reads the file, overlays the
//! `Some` values, and validates the result once, so the rest of the program receives a typed,
//! checked [`CoordinatorConfig`] and never reads the environment itself.
//!
//! Relative paths (in flags, variables and the file alike) are relative to the working
//! directory the coordinator is started in.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the Raft log's directory inside [`CoordinatorConfig::data_dir`].
pub const LOG_FILE_NAME: &str = "raft-log";

/// Directory name of the state-machine snapshots inside [`CoordinatorConfig::data_dir`].
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";

/// Port a coordinator listens on when none is configured.
pub const DEFAULT_PORT: u16 = 8080;

/// The resolved, validated settings of one coordinator node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// This node's Raft id; must appear in `peers` when `peers` is not empty. Default 1.
    pub node_id: u64,
    /// Address the node's gRPC services listen on (all of them share one port). Flags set it
    /// in parts: `--port` the port, `--bind` the IP. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The DuckDB file holding the materialised state. Its directory must exist and be
    /// writable. Default `testfleet.duckdb`.
    pub db_path: PathBuf,
    /// Directory of the Raft log and snapshots; `None` means the DuckDB file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Every cluster member by Raft id, this node included, as `host:port`. Empty means a
    /// single-node cluster of this node alone.
    pub peers: BTreeMap<u64, String>,
    /// How often a leader sends heartbeats (AppendEntries) to followers. Default 100 ms.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout; must exceed the heartbeat interval so
    /// a healthy leader is never voted out. Default 250 ms.
    ///
    /// openraft also grants every leader a lease of `election_timeout_max_ms` during which
    /// followers refuse to vote, so when a leader hangs or vanishes from the network a follower
    /// starts an election only after `election_timeout_max_ms` + a random timeout in
    /// `[min, max]` of silence: 750 to 1000 ms with the defaults, which tolerates the fsync
    /// stalls of these machines. A leader whose process dies does not wait for this: its
    /// followers see its port refuse connections and elect at once
    /// ([`crate::raft::leader_watch`]).
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout; must exceed the lower bound so
    /// candidates spread out and split votes resolve. Default 500 ms.
    pub election_timeout_max_ms: u64,
    /// Take a state-machine snapshot after this many log entries since the last one.
    /// Default 20000 (a snapshot dumps every table, so it is
    /// taken every ~20 s at 1,000 entries/s rather than every few seconds).
    pub snapshot_logs_since_last: u64,
    /// Log entries already covered by a snapshot that are kept anyway, so a slightly lagging
    /// follower catches up from the log instead of receiving a whole snapshot. Default 1000.
    pub max_in_snapshot_log_to_keep: u64,
    /// DuckDB worker threads for this node's database. Default 2.
    pub duckdb_threads: u32,
    /// DuckDB `memory_limit` for this node's database, e.g. `512MB` or `1GB`. DuckDB's own
    /// default is 80 % of RAM for *each* database, which several nodes on one machine would
    /// overcommit. Default `1GB`.
    pub duckdb_memory_limit: String,
    /// Detect and record failures but recover nothing: tasks of a failed worker end
    /// `abandoned` instead of being requeued. Default false.
    pub disable_auto_recovery: bool,
    /// Time every log entry through the commit path (`raft::stages`). Default false.
    pub stage_clock: bool,
    /// How often workers heartbeat to the leader. Default 1000 ms.
    pub worker_heartbeat_interval_ms: u64,
    /// A worker silent this long is failed and its tasks are requeued; it is suspect after
    /// three missed heartbeats. Default 5000 ms.
    pub worker_failure_timeout_ms: u64,
    /// Command the leader runs with `sh -c` to restart a failed worker; `{worker}`, `{host}`
    /// and `{address}` are replaced (e.g. `ssh {host} systemctl restart testfleet-worker`).
    /// Each value is shell-quoted, so it reaches the command as one argument and never runs;
    /// write placeholders bare (see [`crate::recovery::restart`] for what is refused and why).
    /// None: recovery only waits for the worker to reconnect, then quarantines it. The
    /// command runs in its own process group, killed at its timeout or when this node stops
    /// leading: a command that starts a local worker must detach it (`setsid ... &`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_command: Option<String>,
    /// Attempts to bring a failed worker back before it is permanently failed. Default 5.
    pub max_recovery_attempts: u32,
    /// How long one recovery attempt may take to bring the worker back. Default 60000 ms.
    pub recovery_interval_ms: u64,
    /// Drain workers whose heartbeats turn erratic or whose infrastructure failures climb,
    /// before they fail. Default true.
    pub enable_proactive_recovery: bool,
    /// Directory of the role tokens made by `testfleet auth init`; every call must then carry
    /// one (see [`crate::auth`]). None: no tokens are asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_dir: Option<PathBuf>,
    /// Mutual TLS: this node's certificate, its key and the CA that signs every member's,
    /// worker's and operator's certificate (`testfleet tls init`). All three or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Listen beyond loopback without tokens or TLS. Default false: such a node refuses to
    /// start (protected mode).
    pub insecure: bool,
    /// `/metrics` needs a token (any role) like the rest of the API; default: open.
    pub metrics_auth: bool,
    /// A second, HTTP-only port on the listen address (the gRPC port serves HTTP too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// Where the leader writes its pictures (`crate::viz`); none: it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visualization_path: Option<PathBuf>,
    /// How often, in milliseconds (at least 1000).
    pub visualization_interval_ms: u64,
    /// Members of an existing cluster this node is to join, `HOST:PORT,...`: it never
    /// initialises a cluster of its own and waits until an operator adds it (`testfleet
    /// cluster add-node`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    /// The other coordinators' addresses, ids unknown: asked at start (the original design's
    /// `--coordinator-addresses`, [`parse_coordinator_addresses`]). Flags only.
    #[serde(skip)]
    pub discover: Vec<String>,
    /// This node's name when `--coordinator-id` gave one (`coordinator1`). Flags only.
    #[serde(skip)]
    pub name: Option<String>,
    /// The circuit breakers (`[breakers]`, `[breakers.worker]`, `[breakers.system]`,
    /// `[breakers.levels.low|medium|high]`; see [`crate::recovery::fleet::BreakerSettings`]).
    /// On by default; with `enabled = false` the base recovery policy
    /// (`max_recovery_attempts`, `recovery_interval_ms`) stays in force.
    pub breakers: crate::recovery::fleet::BreakerSettings,
    /// Self-health sampling, thresholds and actions (`[self_healing]`, see [`SelfHealing`]).
    pub self_healing: SelfHealing,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            node_id: 1,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
            db_path: PathBuf::from("testfleet.duckdb"),
            data_dir: None,
            peers: BTreeMap::new(),
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 500,
            snapshot_logs_since_last: 20_000,
            max_in_snapshot_log_to_keep: 1000,
            duckdb_threads: 2,
            duckdb_memory_limit: "1GB".to_owned(),
            disable_auto_recovery: false,
            stage_clock: false,
            worker_heartbeat_interval_ms: 1000,
            worker_failure_timeout_ms: 5000,
            restart_command: None,
            max_recovery_attempts: 5,
            recovery_interval_ms: 60_000,
            enable_proactive_recovery: true,
            breakers: crate::recovery::fleet::BreakerSettings::default(),
            self_healing: SelfHealing::default(),
            auth_dir: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            insecure: false,
            metrics_auth: false,
            http_port: None,
            visualization_path: None,
            visualization_interval_ms: 60_000,
            join: None,
            discover: Vec::new(),
            name: None,
        }
    }
}

impl CoordinatorConfig {
    /// Layers defaults, the `--config` file (if any) and the flags/environment in `args`, then
    /// validates the result (see [`CoordinatorConfig::validate`]).
    pub fn resolve(args: &CoordinatorArgs) -> Result<CoordinatorConfig, ConfigError> {
        let mut config = match &args.config {
            Some(path) => CoordinatorConfig::from_file(path)?,
            None => CoordinatorConfig::default(),
        };
        config.overlay(args)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML config file; keys absent from it keep their defaults.
    pub fn from_file(path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Replaces every setting that `args` carries (flag or environment variable).
    fn overlay(&mut self, args: &CoordinatorArgs) -> Result<(), ConfigError> {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *target = value.clone();
            }
        }
        set(&mut self.node_id, &args.node_id);
        if let Some(port) = args.port {
            self.listen.set_port(port);
        }
        if let Some(ip) = args.bind {
            self.listen.set_ip(ip);
        }
        set(&mut self.db_path, &args.db_path);
        if let Some(dir) = &args.data_dir {
            self.data_dir = Some(dir.clone());
        }
        if let Some(peers) = &args.peers {
            self.peers = parse_peers(peers)?;
        }
        if let Some(list) = &args.coordinator_addresses {
            let found = parse_coordinator_addresses(list, args.coordinator_id.as_deref())?;
            self.peers = BTreeMap::new();
            self.discover = found.addresses;
            self.name = found.name;
            if let Some(id) = found.node_id {
                self.node_id = id;
            }
            if args.port.is_none()
                && let Some(port) = found
                    .own_address
                    .and_then(|a| a.rsplit(':').next().map(str::to_owned))
                    .and_then(|p| p.parse().ok())
            {
                self.listen.set_port(port);
            }
        }
        if let Some(join) = &args.join {
            self.join = Some(join.clone());
        }
        set(&mut self.heartbeat_interval_ms, &args.heartbeat_interval_ms);
        set(
            &mut self.election_timeout_min_ms,
            &args.election_timeout_min_ms,
        );
        set(
            &mut self.election_timeout_max_ms,
            &args.election_timeout_max_ms,
        );
        set(
            &mut self.snapshot_logs_since_last,
            &args.snapshot_logs_since_last,
        );
        set(
            &mut self.max_in_snapshot_log_to_keep,
            &args.max_in_snapshot_log_to_keep,
        );
        set(&mut self.duckdb_threads, &args.duckdb_threads);
        set(&mut self.duckdb_memory_limit, &args.duckdb_memory_limit);
        set(&mut self.disable_auto_recovery, &args.disable_auto_recovery);
        set(&mut self.stage_clock, &args.stage_clock);
        set(
            &mut self.worker_heartbeat_interval_ms,
            &args.worker_heartbeat_interval_ms,
        );
        set(
            &mut self.worker_failure_timeout_ms,
            &args.worker_failure_timeout_ms,
        );
        if let Some(command) = &args.restart_command {
            self.restart_command = Some(command.clone()).filter(|c| !c.trim().is_empty());
        }
        set(&mut self.max_recovery_attempts, &args.max_recovery_attempts);
        set(&mut self.recovery_interval_ms, &args.recovery_interval_ms);
        set(
            &mut self.enable_proactive_recovery,
            &args.enable_proactive_recovery,
        );
        if let Some(dir) = &args.auth_dir {
            self.auth_dir = Some(dir.clone());
        }
        if args.tls_cert.is_some() {
            self.tls_cert = args.tls_cert.clone();
            self.tls_key = args.tls_key.clone();
            self.tls_ca = args.tls_ca.clone();
        }
        self.insecure |= args.insecure;
        self.metrics_auth |= args.metrics_auth;
        if args.http_port.is_some() {
            self.http_port = args.http_port;
        }
        if let Some(dir) = &args.visualization_path {
            self.visualization_path = Some(dir.clone());
        }
        set(
            &mut self.visualization_interval_ms,
            &args.visualization_interval_ms,
        );
        if args.disable_circuit_breaker == Some(true) {
            self.breakers.enabled = false;
        }
        Ok(())
    }

    /// Checks that the settings can work together and that the node can write where it must.
    ///
    /// This touches the file system: it creates and removes a probe file in the database
    /// directory (and in the data directory if one is set), because permission bits alone do
    /// not say whether a write succeeds (root ignores them; read-only mounts ignore them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval_ms == 0 {
            return Err(invalid(
                "heartbeat_interval_ms",
                "0",
                "the heartbeat interval must be at least 1 ms",
            ));
        }
        if !(self.heartbeat_interval_ms < self.election_timeout_min_ms
            && self.election_timeout_min_ms < self.election_timeout_max_ms)
        {
            return Err(ConfigError::Timing {
                heartbeat_ms: self.heartbeat_interval_ms,
                election_min_ms: self.election_timeout_min_ms,
                election_max_ms: self.election_timeout_max_ms,
            });
        }
        self.validate_worker_timing()?;
        if let Err(reason) = self.breakers.validate() {
            return Err(invalid("breakers", "(see the reason)", &reason));
        }
        self.self_healing
            .validate()
            .map_err(ConfigError::SelfHealing)?;
        if self.snapshot_logs_since_last == 0 {
            return Err(invalid(
                "snapshot_logs_since_last",
                "0",
                "a snapshot needs at least 1 new log entry; use a large number to snapshot rarely",
            ));
        }
        if self.duckdb_threads == 0 {
            return Err(invalid(
                "duckdb_threads",
                "0",
                "DuckDB needs at least 1 thread",
            ));
        }
        validate_memory_limit(&self.duckdb_memory_limit)?;
        if let Some(template) = &self.restart_command {
            crate::recovery::restart::check_template(template)
                .map_err(|e| invalid("restart_command", template, &e.to_string()))?;
        }
        for (id, addr) in &self.peers {
            validate_peer_addr(addr).map_err(|reason| ConfigError::BadPeer {
                key: "peers",
                item: format!("{id}={addr}"),
                reason,
            })?;
        }
        for addr in self.join_addresses() {
            validate_peer_addr(&addr).map_err(|reason| ConfigError::BadPeer {
                key: "join",
                item: addr.clone(),
                reason,
            })?;
        }
        if self.join.is_some() && self.peers.len() > 1 {
            return Err(invalid(
                "join",
                self.join.as_deref().unwrap_or_default(),
                "a joining node learns its peers when it is added: drop `peers`",
            ));
        }
        self.validate_trust()?;
        if !self.peers.is_empty() && !self.peers.contains_key(&self.node_id) {
            let ids: Vec<String> = self.peers.keys().map(u64::to_string).collect();
            return Err(ConfigError::SelfNotInPeers {
                node_id: self.node_id,
                peers: ids.join(", "),
            });
        }
        self.validate_paths()
    }

    /// Checks the worker heartbeat and failure timeout, naming the setting that is wrong (the
    /// failure detector's own errors speak of its internal names).
    fn validate_worker_timing(&self) -> Result<(), ConfigError> {
        let (heartbeat, failure) = (
            self.worker_heartbeat_interval_ms,
            self.worker_failure_timeout_ms,
        );
        if heartbeat == 0 {
            return Err(invalid(
                "worker_heartbeat_interval_ms",
                "0",
                "workers must heartbeat at least every few seconds; the interval must be at \
                 least 1 ms",
            ));
        }
        if failure == 0 {
            return Err(invalid(
                "worker_failure_timeout_ms",
                "0",
                "the failure timeout must be at least 1 ms",
            ));
        }
        let detector = crate::health::detector::DetectorConfig::from_timing(
            std::time::Duration::from_millis(heartbeat),
            std::time::Duration::from_millis(failure),
        );
        let missed = u64::from(detector.suspect_after_missed);
        if failure <= heartbeat.saturating_mul(missed) {
            return Err(invalid(
                "worker_failure_timeout_ms",
                &failure.to_string(),
                &format!(
                    "a worker is suspect after {missed} missed heartbeats and must be suspect \
                     before it fails, so the failure timeout must be more than {missed} × \
                     `worker_heartbeat_interval_ms` (--worker-heartbeat-interval-ms) {heartbeat} \
                     = {} ms; raise it or lower the heartbeat interval",
                    heartbeat.saturating_mul(missed)
                ),
            ));
        }
        detector.validate().map_err(|e| {
            invalid(
                "worker_failure_timeout_ms",
                &failure.to_string(),
                &format!("with worker_heartbeat_interval_ms {heartbeat}: {e}"),
            )
        })
    }

    /// Checks the TLS files come as a set, and protected mode: a node without tokens or TLS
    /// listens on loopback only, unless `insecure`.
    fn validate_trust(&self) -> Result<(), ConfigError> {
        let tls = [
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_ca", &self.tls_ca),
        ];
        let (given, missing): (Vec<_>, Vec<_>) = tls.iter().partition(|(_, f)| f.is_some());
        if !given.is_empty() && !missing.is_empty() {
            let list = |keys: &[&(&str, &Option<PathBuf>)]| {
                let names: Vec<String> = keys.iter().map(|(k, _)| format!("`{k}`")).collect();
                format!(
                    "{} {}",
                    names.join(" and "),
                    if names.len() == 1 { "is" } else { "are" }
                )
            };
            return Err(ConfigError::PartialTls {
                given: list(&given),
                missing: list(&missing),
            });
        }
        if !self.listen.ip().is_loopback()
            && self.auth_dir.is_none()
            && self.tls_cert.is_none()
            && !self.insecure
        {
            return Err(ConfigError::Unprotected {
                listen: self.listen,
            });
        }
        if self.visualization_interval_ms < 1000
            || self.visualization_interval_ms > MAX_VISUALIZATION_INTERVAL_MS
        {
            return Err(invalid(
                "visualization_interval_ms",
                &self.visualization_interval_ms.to_string(),
                "give at least 1000 (a second) and at most 86400000 (a day)",
            ));
        }
        if let Some(port) = self.http_port {
            if self.tls_cert.is_some() {
                return Err(invalid(
                    "http_port",
                    &port.to_string(),
                    "a plain HTTP port would carry operator tokens unencrypted on a TLS node; \
                     use the gRPC port, which speaks HTTPS",
                ));
            }
            if port == self.listen.port() && port != 0 {
                return Err(invalid(
                    "http_port",
                    &port.to_string(),
                    "it is the gRPC port, which serves HTTP already; leave it out",
                ));
            }
        }
        Ok(())
    }

    /// Checks that the database file can be created and the data directory written.
    fn validate_paths(&self) -> Result<(), ConfigError> {
        if self.db_path.as_os_str().is_empty() {
            return Err(invalid(
                "db_path",
                "",
                "give the path of the DuckDB file, e.g. ./testfleet.duckdb",
            ));
        }
        if self.db_path.is_dir() {
            return Err(ConfigError::DbPathIsDirectory {
                path: self.db_path.clone(),
            });
        }
        check_writable_dir("database", &parent_dir(&self.db_path))?;
        if let Some(dir) = &self.data_dir {
            check_writable_dir("data", dir)?;
        }
        Ok(())
    }

    /// Directory of the Raft log and snapshots: `data_dir` if set, else the DuckDB file's
    /// directory.
    /// The worker heartbeat interval, as sent to workers in `Welcome`.
    pub fn worker_heartbeat_ms(&self) -> u32 {
        u32::try_from(self.worker_heartbeat_interval_ms).unwrap_or(u32::MAX)
    }

    pub fn data_dir(&self) -> PathBuf {
        match &self.data_dir {
            Some(dir) => dir.clone(),
            None => parent_dir(&self.db_path),
        }
    }

    /// The Raft log's directory: `<data_dir>/raft-log`.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir().join(LOG_FILE_NAME)
    }

    /// The addresses of `join`, split.
    pub fn join_addresses(&self) -> Vec<String> {
        self.join
            .iter()
            .flat_map(|j| j.split(','))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The directory of state-machine snapshots: `<data_dir>/snapshots`.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir().join(SNAPSHOT_DIR_NAME)
    }
}

/// Parses `1=127.0.0.1:9001,2=127.0.0.1:9002` into a map from Raft id to address.
///
/// Whitespace around items is ignored and a trailing comma is allowed; an empty string is an
/// empty map (a single-node cluster). Each error names the offending item.
/// What `--coordinator-addresses` and `--coordinator-id` say.
#[derive(Clone, Debug, PartialEq)]
pub struct CoordinatorAddresses {
    /// Every address listed: the other coordinators, and maybe this one. Their ids are
    /// learned by asking them when the node starts.
    pub addresses: Vec<String>,
    /// This node's Raft id, from `--coordinator-id` ([`node_id_of`]).
    pub node_id: Option<u64>,
    /// The name given, when it was not a bare number.
    pub name: Option<String>,
    /// This node's own address, when `--coordinator-id` named one of the list.
    pub own_address: Option<String>,
}

/// Parses the original design's `--coordinator-addresses a:p,b:p` (the other coordinators,
/// or all of them) and `--coordinator-id` (a number, a name such as `coordinator1`, or this
/// node's own address in the list).
pub fn parse_coordinator_addresses(
    list: &str,
    me: Option<&str>,
) -> Result<CoordinatorAddresses, ConfigError> {
    let addresses: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    for addr in &addresses {
        validate_peer_addr(addr).map_err(|reason| ConfigError::BadPeer {
            key: "coordinator_addresses",
            item: addr.clone(),
            reason,
        })?;
    }
    if addresses.is_empty() {
        return Err(invalid(
            "coordinator_addresses",
            list,
            "list the other coordinators (or all of them) as HOST:PORT,HOST:PORT",
        ));
    }
    let mut found = CoordinatorAddresses {
        addresses,
        node_id: None,
        name: None,
        own_address: None,
    };
    let Some(me) = me.map(str::trim) else {
        return Ok(found);
    };
    if let Some(position) = found.addresses.iter().position(|a| a == me) {
        // This node's own address: its id is its position, as the list is written.
        found.node_id = Some(position as u64 + 1);
        found.own_address = Some(me.to_owned());
        return Ok(found);
    }
    found.node_id = Some(node_id_of(me).ok_or_else(|| {
        invalid(
            "coordinator_id",
            me,
            "give a number, a name (letters, digits, - and _, e.g. coordinator1), or this node's \
             HOST:PORT as listed in --coordinator-addresses",
        )
    })?);
    if me.parse::<u64>().is_err() {
        found.name = Some(me.to_owned());
    }
    Ok(found)
}

/// The Raft id of a coordinator named `name`: a number is itself; a name ending in digits
/// takes them (`coordinator1` is 1, `coord-12` is 12), so the usual names give small, readable
/// ids; any other name a stable 48-bit hash of it. Two names that give the same id are
/// refused when the coordinators meet. `None` for an empty name, one with characters other
/// than letters, digits, `-`, `_` and `.`, or id 0.
pub fn node_id_of(name: &str) -> Option<u64> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return None;
    }
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let id = if digits > 0 {
        name[name.len() - digits..].parse::<u64>().ok()?
    } else {
        // FNV-1a, folded to 48 bits: readable in a table, stable across builds.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash >> 16) | 1 << 47
    };
    (id != 0).then_some(id)
}

pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |reason: &str| ConfigError::BadPeer {
            key: "peers",
            item: item.to_owned(),
            reason: reason.to_owned(),
        };
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| bad("expected `id=host:port`"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad("the id must be a non-negative integer"))?;
        let addr = addr.trim();
        validate_peer_addr(addr).map_err(|reason| bad(&reason))?;
        if peers.insert(id, addr.to_owned()).is_some() {
            return Err(bad(&format!("id {id} is listed more than once")));
        }
    }
    Ok(peers)
}

/// Checks that `addr` looks like `host:port` (or `[v6]:port`) with a non-zero port. Names are
/// not resolved here: a peer may be down or not yet in DNS when this node starts.
pub fn validate_peer_addr(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok_and(|a| a.port() != 0) {
        return Ok(());
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| "the address must be host:port".to_owned())?;
    if host.is_empty() {
        return Err("the address has an empty host".to_owned());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("write an IPv6 address in brackets, e.g. [::1]:9001".to_owned());
    }
    if host.chars().any(char::is_whitespace) {
        return Err("the host contains whitespace".to_owned());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("`{port}` is not a port (1-65535)")),
        Ok(_) => Ok(()),
    }
}

/// Accepts what DuckDB's `memory_limit` accepts in the common case — a number and a unit
/// (`512MB`, `1.5GiB`, `1GB`) — and nothing that could smuggle SQL into the `SET` statement
/// that applies it.
fn validate_memory_limit(value: &str) -> Result<(), ConfigError> {
    const UNITS: &[&str] = &[
        "b", "bytes", "kb", "mb", "gb", "tb", "kib", "mib", "gib", "tib",
    ];
    let trimmed = value.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number_ok = number.parse::<f64>().is_ok_and(|n| n > 0.0);
    let unit_ok = UNITS.contains(&unit.trim().to_ascii_lowercase().as_str());
    if number_ok && unit_ok {
        Ok(())
    } else {
        Err(invalid(
            "duckdb_memory_limit",
            value,
            "write a positive size with a unit, e.g. 512MB or 1GB (units: B, KB, MB, GB, TB, \
             KiB, MiB, GiB, TiB)",
        ))
    }
}

/// The longest `visualization_interval_ms`: a day.
pub const MAX_VISUALIZATION_INTERVAL_MS: u64 = 86_400_000;

fn invalid(key: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The directory a file path lives in; `.` for a bare file name.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Checks that `dir` is an existing directory in which a file can be created, by creating and
/// removing a probe file.
fn check_writable_dir(what: &'static str, dir: &Path) -> Result<(), ConfigError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(ConfigError::NotADirectory {
                what,
                dir: dir.to_owned(),
            });
        }
        // A path *through* a regular file ("file.txt/sub") fails with NotADirectory.
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(ConfigError::NotADirectory {
                what,
                dir: dir.to_owned(),
            });
        }
        Err(_) => {
            return Err(ConfigError::DirMissing {
                what,
                dir: dir.to_owned(),
            });
        }
    }
    let probe = dir.join(format!(".testfleet-write-probe-{}", std::process::id()));
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .or_else(|e| {
            // A probe left behind by a crashed run of this same pid: reuse it.
            if e.kind() == io::ErrorKind::AlreadyExists {
                OpenOptions::new().write(true).open(&probe)
            } else {
                Err(e)
            }
        });
    match created {
        Ok(file) => {
            drop(file);
            // Failing to remove the probe leaves a harmless empty file; it is not a reason to
            // refuse to start.
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(ConfigError::NotWritable {
            what,
            dir: dir.to_owned(),
            source,
        }),
    }
}

mod args;
mod error;
mod healing;
pub use args::CoordinatorArgs;
pub use error::{ConfigError, setting};
pub use healing::SelfHealing;

#[cfg(test)]
mod tests;
