//! Errors of opening the redb file, each naming the file: a lock held elsewhere, a damaged
//! file (with what to do about it), or anything else redb or the disk reports.

use std::io;
use std::path::Path;

use super::error_kind;

/// The error for `path` failing to open with `err`.
pub(super) fn open_error(path: &Path, err: redb::DatabaseError) -> io::Error {
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
