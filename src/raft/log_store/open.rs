//! Opening the redb file: a new file is created atomically, and every error names the file —
//! a lock held elsewhere, a damaged file (with what to do about it), or anything else redb or
//! the disk reports.
//!
//! redb writes a new file's header first and its magic number last, so a crash while it
//! creates the file leaves one without the magic number, which redb then refuses to open
//! ("not a redb database") for ever. A new log store is therefore created and initialised
//! (tables, layout version) as `<file>.creating`, fsynced, and renamed into place; a
//! `.creating` file found at open is what a crash left behind before anything was written to
//! the store, and is removed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::Database;

use super::{CACHE_SIZE_BYTES, CommittedSlot, Inner, error_kind};

/// Opens (creating it if missing) the database at `path` and checks its tables and layout.
pub(super) fn open_inner(path: &Path) -> Result<Inner, io::Error> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "raft log store {}: cannot create directory {}: {e}",
                path.display(),
                dir.display()
            ),
        )
    })?;
    let creating = creating_path(path);
    if creating.exists() {
        tracing::warn!(
            path = %path.display(),
            "removing {}: a crash interrupted the creation of this log store before anything \
             was written to it",
            creating.display()
        );
        std::fs::remove_file(&creating).map_err(|e| fs_error(path, "remove", &creating, e))?;
    }
    if !path.exists() {
        let inner = open_at(&creating, path)?;
        drop(inner);
        let sync = |file: &Path| std::fs::File::open(file).and_then(|f| f.sync_all());
        sync(&creating).map_err(|e| fs_error(path, "fsync", &creating, e))?;
        std::fs::rename(&creating, path).map_err(|e| fs_error(path, "rename", &creating, e))?;
        sync(dir).map_err(|e| fs_error(path, "fsync", dir, e))?;
    }
    open_at(path, path)
}

/// `<path>.creating`.
fn creating_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".creating");
    PathBuf::from(name)
}

/// Opens the redb file `file` (the store at `path`, or its creation file) and checks (or
/// writes) its tables and layout version.
fn open_at(file: &Path, path: &Path) -> Result<Inner, io::Error> {
    let db = Database::builder()
        .set_cache_size(CACHE_SIZE_BYTES)
        .create(file)
        .map_err(|e| open_error(path, e))?;
    let inner = Inner {
        db,
        path: path.to_path_buf(),
        pending: Mutex::new(BTreeMap::new()),
        committed: Mutex::new(CommittedSlot::default()),
        stages: std::sync::OnceLock::new(),
    };
    inner.init()?;
    Ok(inner)
}

fn fs_error(path: &Path, op: &str, file: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "raft log store {}: cannot {op} {}: {e}",
            path.display(),
            file.display()
        ),
    )
}

/// The error for `path` failing to open with `err`.
fn open_error(path: &Path, err: redb::DatabaseError) -> io::Error {
    match err {
        redb::DatabaseError::DatabaseAlreadyOpen => io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "raft log store {}: the file is locked: another process (or another \
                 LogStore in this process) already has it open",
                path.display()
            ),
        ),
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
            io::Error::new(io::ErrorKind::InvalidData, damaged_message(path, &what))
        }
        // "Not a redb database": the header (with its magic number) is gone.
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == io::ErrorKind::InvalidData =>
        {
            io::Error::new(
                io::ErrorKind::InvalidData,
                damaged_message(path, &e.to_string()),
            )
        }
        other => {
            let other = redb::Error::from(other);
            io::Error::new(
                error_kind(&other),
                format!(
                    "raft log store {}: cannot open or create the database: {other}",
                    path.display()
                ),
            )
        }
    }
}

/// What is wrong with a file redb finds damaged, and what to do. A crash cannot cause this
/// (redb repairs an interrupted commit on open), so the file is left untouched for whoever
/// looks into it.
fn damaged_message(path: &Path, what: &str) -> String {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    format!(
        "raft log store {}: the file is damaged ({what}). redb repairs what a crash leaves \
         behind when it opens a file, so this came from elsewhere (a disk fault, a truncated \
         copy, another program writing to it); the file was left as it is. If the other members \
         of the cluster are running, stop this node, move its data directory {} aside and start \
         the node again: it rejoins with an empty log and receives a snapshot from the leader. \
         On a one-node cluster there is no other copy: restore the directory from a backup.",
        path.display(),
        dir.display()
    )
}
