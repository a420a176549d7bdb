//! Opening a node's state machine after a crash: a damaged DuckDB file is set aside and the
//! state rebuilt from the snapshot and the Raft log.
//!
//! DuckDB holds a copy. What a node knows is its snapshot (`<snapshot_dir>/current.snapshot`)
//! plus the entries of its Raft log after it. So when the DuckDB file no longer opens, or opens
//! but its rows do not load ([`OpenError::Damaged`]), [`open_state_machine`]:
//!
//! 1. checks that the snapshot and the log still cover everything: every entry after the
//!    snapshot must still be in the log (not purged);
//! 2. renames the file and its WAL files to `<file>.corrupt-<unix seconds>` (`….wal` …) next
//!    to it, and logs a warning naming both;
//! 3. opens a fresh database. openraft rebuilds the state at start:
//!    `StorageHelper::get_initial_state` installs the current snapshot (the fresh database is
//!    behind it) and re-applies the committed entries after it; the rest comes from the
//!    leader as usual.
//!
//! If the log is purged past what the snapshot covers (no snapshot, or an unreadable one), the
//! state cannot be rebuilt on this node: it refuses to start with [`HealError::CannotRebuild`],
//! changes nothing on disk, and says what to do (remove this node's files so that it rejoins
//! empty and receives a snapshot from the leader). The same check guards a database that
//! opens fine but is behind the purged log (e.g. the snapshot file was deleted by hand):
//! openraft would otherwise start it with entries missing.
//!
//! Only positive signs of damage lead to a rebuild ([`crate::state::error::StoreError::is_damage`]):
//! a lock held by another process, a full disk or missing permissions fail the start as
//! before, without touching the file.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftLogStorage;

use super::TypeConfig;
use super::log_store::LogStore;
use super::state_machine::{OpenError, StateMachine, saved_snapshot_index};
use crate::state::store::DbSettings;

/// DuckDB's companion files of a database `x`: `x.wal`, and the WAL files of a checkpoint in
/// progress.
const COMPANIONS: &[&str] = &[".wal", ".wal.checkpoint", ".wal.recovery"];

/// Why the state machine of a node could not be opened (or rebuilt).
#[derive(Debug, thiserror::Error)]
pub enum HealError {
    #[error("cannot read the Raft log's state at {}: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the state database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the state database {} is damaged ({reason}) and cannot be moved aside: {source}",
        path.display()
    )]
    MoveAside {
        path: PathBuf,
        reason: String,
        #[source]
        source: io::Error,
    },
    /// The log is purged past what this node's snapshot and database cover.
    #[error("{0}")]
    CannotRebuild(String),
}

/// Opens the state machine of a node whose Raft log is `log`, setting a damaged database
/// aside and starting a fresh one when the snapshot and the log can rebuild it (see the module
/// docs). Refuses to start a node whose state cannot be rebuilt.
pub async fn open_state_machine(
    db_path: &Path,
    snapshot_dir: &Path,
    settings: &DbSettings,
    log: &mut LogStore<TypeConfig>,
) -> Result<StateMachine, HealError> {
    let log_path = log.path().to_path_buf();
    let purged = log
        .get_log_state()
        .await
        .map_err(|source| HealError::Log {
            path: log_path.clone(),
            source,
        })?
        .last_purged_log_id
        .map(|l| l.index);
    let place = Place {
        db: db_path.to_path_buf(),
        snapshots: snapshot_dir.to_path_buf(),
        log: log_path,
    };
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || open_blocking(&place, &settings, purged))
        .await
        .map_err(|e| HealError::Open {
            path: db_path.to_path_buf(),
            source: io::Error::other(format!("opening the state machine panicked: {e}")),
        })?
}

/// Where one node's state lives.
struct Place {
    db: PathBuf,
    snapshots: PathBuf,
    log: PathBuf,
}

fn open_blocking(
    place: &Place,
    settings: &DbSettings,
    purged: Option<u64>,
) -> Result<StateMachine, HealError> {
    let open_error = |source: io::Error| HealError::Open {
        path: place.db.clone(),
        source,
    };
    let reason = match StateMachine::open(&place.db, &place.snapshots, settings) {
        Ok(sm) => {
            let covered = sm.durable_index().max(sm.snapshot_index());
            if let Some(purged) = purged.filter(|p| covered < Some(*p)) {
                let problem = match sm.durable_index() {
                    Some(index) => format!("holds the state up to index {index} only"),
                    None => "is empty".to_string(),
                };
                return Err(cannot_rebuild(place, &problem, purged, covered));
            }
            return Ok(sm);
        }
        Err(OpenError::Damaged { reason, .. }) => reason,
        Err(OpenError::Io(source)) => return Err(open_error(source)),
    };

    let snapshot = saved_snapshot_index(&place.snapshots).map_err(|e| {
        let file = place.snapshots.join("current.snapshot");
        open_error(io::Error::new(
            e.kind(),
            format!("cannot read the snapshot {}: {e}", file.display()),
        ))
    })?;
    if let Some(purged) = purged.filter(|p| snapshot < Some(*p)) {
        let problem = format!("is damaged ({reason})");
        return Err(cannot_rebuild(place, &problem, purged, snapshot));
    }
    let aside = move_aside(&place.db).map_err(|source| HealError::MoveAside {
        path: place.db.clone(),
        reason: reason.clone(),
        source,
    })?;
    tracing::warn!(
        damaged = %place.db.display(),
        moved_to = %aside.display(),
        "THE STATE DATABASE IS DAMAGED ({reason}). It was moved to {} (with its WAL, if any) \
         and a fresh database is being rebuilt from the snapshot ({}) and the Raft log ({}). \
         The old file is kept for inspection; delete it once no longer needed.",
        aside.display(),
        match snapshot {
            Some(index) => format!("up to index {index}"),
            None => "none: the log starts at the beginning".to_string(),
        },
        place.log.display(),
    );
    StateMachine::open(&place.db, &place.snapshots, settings).map_err(|e| open_error(e.into()))
}

/// The refusal to start, with what is wrong and what to do.
fn cannot_rebuild(place: &Place, problem: &str, purged: u64, covered: Option<u64>) -> HealError {
    let has = match covered {
        None => format!(
            "there is no usable snapshot in {}",
            place.snapshots.display()
        ),
        Some(index) => format!(
            "its snapshot in {} and its database reach index {index} only",
            place.snapshots.display()
        ),
    };
    let db = place.db.display();
    HealError::CannotRebuild(format!(
        "this node cannot rebuild its state: the state database {db} {problem}, its Raft log {} \
         is purged up to index {purged}, and {has}. Nothing was changed on disk. If the other \
         members of the cluster are running, stop this node, delete its files ({db}, {db}.wal, \
         {} and {}) and start it again: it rejoins with an empty log and receives a snapshot \
         from the leader. (On a one-node cluster there is no other copy: restore these files \
         from a backup.)",
        place.log.display(),
        place.log.display(),
        place.snapshots.display(),
    ))
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Renames the database file and its companions to `<file>.corrupt-<unix seconds>` (plus the
/// same suffixes), never over an existing file; returns the new name of the database file.
fn move_aside(db_path: &Path) -> io::Result<PathBuf> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let taken = |base: &Path| {
        base.exists()
            || COMPANIONS
                .iter()
                .any(|suffix| with_suffix(base, suffix).exists())
    };
    let mut aside = with_suffix(db_path, &format!(".corrupt-{now}"));
    let mut n = 1;
    while taken(&aside) {
        n += 1;
        aside = with_suffix(db_path, &format!(".corrupt-{now}-{n}"));
    }
    if db_path.exists() {
        std::fs::rename(db_path, &aside)?;
    }
    for suffix in COMPANIONS {
        let from = with_suffix(db_path, suffix);
        if from.exists() {
            std::fs::rename(&from, with_suffix(&aside, suffix))?;
        }
    }
    // The renames must survive a crash before the fresh file is created under the old name.
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_aside_keeps_the_file_and_its_wal_under_a_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.duckdb");
        std::fs::write(&db, b"damaged").unwrap();
        std::fs::write(with_suffix(&db, ".wal"), b"wal").unwrap();
        let first = move_aside(&db).unwrap();
        assert!(!db.exists() && !with_suffix(&db, ".wal").exists());
        assert_eq!(std::fs::read(&first).unwrap(), b"damaged");
        assert_eq!(std::fs::read(with_suffix(&first, ".wal")).unwrap(), b"wal");
        let name = first.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("state.duckdb.corrupt-"), "{name}");

        // A second damage in the same second gets its own name.
        std::fs::write(&db, b"again").unwrap();
        let second = move_aside(&db).unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read(&first).unwrap(), b"damaged");
        assert_eq!(std::fs::read(&second).unwrap(), b"again");
    }
}
