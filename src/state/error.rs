//! The storage layer's error: what [`super::store`] (DuckDB writes, snapshots) and
//! [`super::load`] (rebuilding the machine from the tables) fail with, and whether a failure
//! shows that the file itself is damaged.
//!
//! These errors are not deterministic (disk, DuckDB): the caller must stop the node rather
//! than skip the entry, or replicas diverge.

use std::path::PathBuf;

/// A failure of the storage layer. Never deterministic: the node must stop.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the DuckDB database at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: duckdb::Error,
    },
    #[error("DuckDB error while {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: duckdb::Error,
    },
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("snapshot does not match this schema: {0}")]
    Snapshot(String),
}

/// What DuckDB says when the file itself is damaged: a header that is not DuckDB's, a block
/// whose checksum fails, a file shorter than its own metadata, or a WAL it cannot replay (a
/// merely torn WAL tail is not an error: DuckDB drops it). Anything else — a lock held by
/// another process, a full disk, missing permissions — says nothing about the file.
const DAMAGE_SIGNS: &[&str] = &[
    "not a valid DuckDB database file",
    "Corrupt database file",
    "Corrupt WAL file",
    "Data Corruption",
    "Failure while replaying WAL file",
    "Failure while replaying checkpoint WAL file",
    "Could not read enough bytes from file",
    "Could not read all bytes from file",
];

/// Causes that say nothing about the file even inside a message with a sign of damage (e.g.
/// "Failure while replaying WAL file …: Out of Memory Error"): a retry may well succeed.
const NOT_DAMAGE_SIGNS: &[&str] = &[
    "Out of Memory",
    "No space left on device",
    "Could not set lock",
    "Permission denied",
    "Too many open files",
];

impl StoreError {
    /// Whether this error shows that the database file (or its WAL) is damaged, as opposed to
    /// the disk, a lock or a resource failing. A damaged file can be set aside and rebuilt
    /// from the Raft log; any other failure must not lead to that.
    pub fn is_damage(&self) -> bool {
        match self {
            StoreError::Corrupt(_) => true,
            StoreError::Open { source, .. } | StoreError::Db { source, .. } => {
                let message = source.to_string();
                DAMAGE_SIGNS.iter().any(|sign| message.contains(sign))
                    && !NOT_DAMAGE_SIGNS.iter().any(|sign| message.contains(sign))
            }
            StoreError::Snapshot(_) => false,
        }
    }
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

pub(super) type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(super) fn db(context: &'static str) -> impl FnOnce(duckdb::Error) -> StoreError {
    move |source| StoreError::Db { context, source }
}
