//! Why a coordinator's configuration could not be resolved, and how each message names a
//! setting: by the key the config file uses *and* the flags that set it (e.g. `` `listen`
//! (--bind / --port) ``), since the value may have come from either (or from the flag's
//! `TESTFLEET_*` variable), and the user must find what they wrote.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A setting as the user may have written it: its config-file key and its flags, e.g.
/// `` `db_path` (--db-path) ``. `coordinator_id` has no config-file key, only a flag.
pub fn setting(key: &str) -> String {
    match key {
        "listen" => "`listen` (--bind / --port)".to_owned(),
        "peers" => "`peers` (--peers, or --coordinator-addresses)".to_owned(),
        "node_id" => "`node_id` (--node-id, or --coordinator-id)".to_owned(),
        "coordinator_id" => "--coordinator-id".to_owned(),
        "coordinator_addresses" => "--coordinator-addresses".to_owned(),
        key => format!("`{key}` (--{})", key.replace('_', "-")),
    }
}

/// Why a coordinator's configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A non-loopback address without credentials (protected mode).
    #[error(
        "refusing to listen on {listen} (`listen`, --bind / --port) without credentials: anyone \
         who reaches that port could run commands on every worker. Make tokens with `testfleet \
         auth init DIR` and start with --auth-dir DIR (`auth_dir` in the config file), or use \
         mutual TLS (--tls-cert/--tls-key/--tls-ca), or pass --insecure (`insecure = true`) on \
         a network you trust"
    )]
    Unprotected { listen: SocketAddr },

    /// The `--config` file could not be read.
    #[error(
        "cannot read config file {}: {source}; check the path given with --config or \
         TESTFLEET_CONFIG",
        path.display()
    )]
    ReadFile {
        /// The file as given.
        path: PathBuf,
        /// Why reading failed.
        source: io::Error,
    },

    /// The `--config` file is not valid TOML, has an unknown key, or a value of the wrong
    /// type. `message` is toml's, with line and column.
    #[error(
        "malformed config file {}: {message}\nfix the file; its keys are the snake_case \
         names of the coordinator flags (see `testfleet coordinator --help`)",
        path.display()
    )]
    ParseFile {
        /// The file as given.
        path: PathBuf,
        /// toml's description of the problem, including line and column.
        message: String,
    },

    /// One item of a peers list is not `id=host:port` (or, in `--coordinator-addresses`, not
    /// `host:port`).
    #[error("bad peer `{item}` in {}: {reason}; {}", setting(key), hint(key))]
    BadPeer {
        /// Where it was written: `peers` or `coordinator_addresses`.
        key: &'static str,
        /// The offending item, as written.
        item: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A peers list is given but this node is not in it.
    #[error(
        "node id {node_id} (`node_id`, --node-id) is not among the peers ({peers}) of `peers` \
         (--peers); list every member including this node, or set node_id to this node's id \
         in the list"
    )]
    SelfNotInPeers {
        /// This node's configured id.
        node_id: u64,
        /// The configured peer ids, comma separated.
        peers: String,
    },

    /// The Raft timing settings cannot elect and keep a leader.
    #[error(
        "Raft timings must satisfy heartbeat_interval_ms < election_timeout_min_ms < \
         election_timeout_max_ms (--heartbeat-interval-ms, --election-timeout-min-ms, \
         --election-timeout-max-ms), got {heartbeat_ms} / {election_min_ms} / \
         {election_max_ms}; raise the election timeouts or lower the heartbeat interval"
    )]
    Timing {
        /// The configured heartbeat interval.
        heartbeat_ms: u64,
        /// The configured minimum election timeout.
        election_min_ms: u64,
        /// The configured maximum election timeout.
        election_max_ms: u64,
    },

    /// A single setting has a value it cannot take.
    #[error("invalid value `{value}` for {}: {reason}", setting(key))]
    Invalid {
        /// The setting's snake_case name.
        key: &'static str,
        /// The value as configured.
        value: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },

    /// A key of the `[self_healing]` section has a value it cannot take.
    #[error(
        "invalid value `{}` for `{}` in the config file: {}",
        .0.value,
        .0.key,
        .0.reason
    )]
    SelfHealing(super::healing::Invalid),

    /// Some of the three mutual-TLS files are set, not all.
    #[error(
        "mutual TLS needs all three of `tls_cert`, `tls_key` and `tls_ca` (--tls-cert, \
         --tls-key, --tls-ca); {given} set, {missing} missing"
    )]
    PartialTls {
        /// The keys that are set, e.g. "`tls_cert` is".
        given: String,
        /// The keys that are not.
        missing: String,
    },

    /// A directory the node needs does not exist.
    #[error(
        "{what} directory {} (from {}) does not exist; create it (mkdir -p {}) or choose \
         another path",
        dir.display(),
        dir_setting(what),
        dir.display()
    )]
    DirMissing {
        /// Which directory: "database" or "data".
        what: &'static str,
        /// The missing directory.
        dir: PathBuf,
    },

    /// A path that must be a directory is something else (a file, say).
    #[error(
        "{what} directory {} (from {}) is not a directory; choose a path inside a directory",
        dir.display(),
        dir_setting(what)
    )]
    NotADirectory {
        /// Which directory: "database" or "data".
        what: &'static str,
        /// The offending path.
        dir: PathBuf,
    },

    /// The node cannot create files in a directory it must write to.
    #[error(
        "{what} directory {} (from {}) is not writable ({source}); fix its permissions or \
         choose another path",
        dir.display(),
        dir_setting(what)
    )]
    NotWritable {
        /// Which directory: "database" or "data".
        what: &'static str,
        /// The directory.
        dir: PathBuf,
        /// The error from trying to create a file there.
        source: io::Error,
    },

    /// The DuckDB path names a directory rather than a file.
    #[error(
        "`db_path` (--db-path) {} is a directory; give a file path such as {}",
        path.display(),
        path.join("testfleet.duckdb").display()
    )]
    DbPathIsDirectory {
        /// The configured database path.
        path: PathBuf,
    },
}

/// How to write the items of a peers setting.
fn hint(key: &str) -> &'static str {
    if key == "coordinator_addresses" {
        "write the other coordinators (or all of them) as HOST:PORT, comma separated, e.g. \
         `127.0.0.1:9001,127.0.0.1:9002`"
    } else if key == "join" {
        "write members of the cluster to join as HOST:PORT, comma separated, e.g. \
         `10.0.0.11:8080,10.0.0.12:8080`"
    } else {
        "write peers as `1=127.0.0.1:9001,2=127.0.0.1:9002` on the command line, or \
         `1 = \"127.0.0.1:9001\"` under `[peers]` in the config file (every member, this node \
         included)"
    }
}

/// The setting a directory comes from: "database" is `db_path`'s, "data" is `data_dir`.
fn dir_setting(what: &str) -> &'static str {
    if what == "data" {
        "`data_dir`, --data-dir"
    } else {
        "`db_path`, --db-path"
    }
}
