//! Opening the store: creating a new one atomically, locking it, converting one in the old
//! redb layout, and replaying the segments into the in-memory [`Log`], telling the tail of an
//! interrupted write (zeroed) from damage (refused, naming the file and what to do).
//!
//! A new store is made as `<dir>.creating` (its first segment fsynced) and renamed into place,
//! so a crash while it is created leaves either nothing or a complete store; a `.creating`
//! directory found at open is what such a crash left behind before anything was written to
//! the store, and is removed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::RaftTypeConfig;
use openraft::type_config::alias::LogIdOf;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::index::{Loc, Log, Segment};
use super::segment::{self, KIND_ENTRY, KIND_HEADER, KIND_META, MetaState, Next};
use super::writer::Active;
use super::{CommittedSlot, FORMAT_VERSION, Inner, legacy};

/// Name of the lock file in the store's directory.
const LOCK_FILE: &str = "LOCK";

/// How long a busy `LOCK` is tried again before the store is refused as open elsewhere.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Opens (creating or converting it if missing) the store at `path` and replays it.
pub(super) fn open_inner<C>(path: &Path) -> Result<(Inner, Active), io::Error>
where
    C: RaftTypeConfig,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    let parent = parent_of(path);
    std::fs::create_dir_all(parent).map_err(|e| fs_error(path, "create", parent, e))?;
    let creating = with_suffix(path, ".creating");
    if creating.exists() {
        tracing::warn!(
            path = %path.display(),
            "removing {}: a crash interrupted the creation of this log store before anything \
             was written to it",
            creating.display()
        );
        std::fs::remove_dir_all(&creating).map_err(|e| fs_error(path, "remove", &creating, e))?;
    }
    if !path.exists() {
        create::<C>(path, &creating)?;
    }
    let lock = lock(path)?;
    let (log, active) = replay(path)?;
    let inner = Inner {
        path: path.to_path_buf(),
        log: Mutex::new(log),
        pending: Mutex::new(BTreeMap::new()),
        committed: Mutex::new(CommittedSlot::default()),
        stages: std::sync::OnceLock::new(),
        _lock: lock,
    };
    Ok((inner, active))
}

/// Creates the store at `path` through `creating`: empty, or holding what the old redb file
/// next to it held (which is then renamed `.migrated`).
fn create<C>(path: &Path, creating: &Path) -> Result<(), io::Error>
where
    C: RaftTypeConfig,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    let old = path.with_extension("redb");
    let (meta, entries) = if old.is_file() {
        legacy::read::<C>(&old)?
    } else {
        (MetaState::default(), Vec::new())
    };
    std::fs::create_dir(creating).map_err(|e| fs_error(path, "create", creating, e))?;
    let (file, seg_path, start) = segment::create_segment(creating, 1, FORMAT_VERSION, &meta)
        .map_err(|e| fs_error(path, "create the first segment in", creating, e))?;
    if !entries.is_empty() {
        let mut bytes = Vec::new();
        for (index, entry) in &entries {
            segment::push_entry(&mut bytes, *index, entry);
        }
        segment::write_durably(&file, &bytes, start)
            .map_err(|e| fs_error(path, "write", &seg_path, e))?;
    }
    drop(file);
    let parent = parent_of(path);
    std::fs::rename(creating, path).map_err(|e| fs_error(path, "rename", creating, e))?;
    segment::sync_dir(parent).map_err(|e| fs_error(path, "fsync", parent, e))?;
    if old.is_file() {
        let done = with_suffix(&old, ".migrated");
        std::fs::rename(&old, &done).map_err(|e| fs_error(path, "rename", &old, e))?;
        segment::sync_dir(parent).map_err(|e| fs_error(path, "fsync", parent, e))?;
        tracing::info!(
            path = %path.display(),
            entries = entries.len(),
            "converted the raft log from {} (kept as {}; it can be deleted)",
            old.display(),
            done.display()
        );
    }
    Ok(())
}

/// Takes the store's lock, or says who has it.
fn lock(path: &Path) -> Result<File, io::Error> {
    let lock_path = path.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| fs_error(path, "open", &lock_path, e))?;
    // A lock this process just released can still be held for a moment: `flock` locks belong
    // to the open file, and a child forked by another thread of this process holds a copy of
    // every descriptor until its `exec` closes them. A store dropped and opened again while
    // something else spawns a process (tests running side by side did) would be refused. So
    // a busy lock is tried again for a short while; one that another process holds open stays
    // busy and is refused after it.
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    let mut locked = file.try_lock();
    while matches!(locked, Err(std::fs::TryLockError::WouldBlock))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
        locked = file.try_lock();
    }
    match locked {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "raft log store {}: the store is locked: another process (or another LogStore \
                 in this process) already has it open",
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(fs_error(path, "lock", &lock_path, e)),
    }
}

/// Reads every segment in order into a [`Log`], zeroes the tail of an interrupted write in the
/// newest one, and returns the segment to append to.
fn replay(path: &Path) -> Result<(Log, Active), io::Error> {
    let mut seqs = Vec::new();
    let listing = std::fs::read_dir(path).map_err(|e| fs_error(path, "list", path, e))?;
    for item in listing {
        let item = item.map_err(|e| fs_error(path, "list", path, e))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = segment::segment_seq(&name) {
            seqs.push(seq);
        } else if name.ends_with(".log.tmp") {
            // A segment whose creation a crash interrupted: never used.
            let tmp = item.path();
            std::fs::remove_file(&tmp).map_err(|e| fs_error(path, "remove", &tmp, e))?;
        }
    }
    seqs.sort_unstable();
    let Some(&newest) = seqs.last() else {
        return Err(damaged(path, path, "it holds no segment file"));
    };
    for pair in seqs.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = path.join(segment::segment_name(pair[0] + 1));
            return Err(damaged(path, &missing, "this segment is missing"));
        }
    }

    let after_deleted = seqs.first().is_some_and(|first| *first > 1);
    let mut log = Log::default();
    let mut active = None;
    for seq in seqs {
        let seg_path = path.join(segment::segment_name(seq));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(seq == newest)
            .open(&seg_path)
            .map_err(|e| fs_error(path, "open", &seg_path, e))?;
        let data = std::fs::read(&seg_path).map_err(|e| fs_error(path, "read", &seg_path, e))?;
        let segment = Arc::new(Segment {
            seq,
            file,
            path: seg_path.clone(),
        });
        let (start, end) = replay_segment(&mut log, &segment, &data, seq == newest, after_deleted)
            .map_err(|what| damaged(path, &seg_path, &what))?;
        if seq == newest {
            zero_tail(&segment, &data, end).map_err(|e| fs_error(path, "repair", &seg_path, e))?;
            active = Some(Active {
                segment: segment.clone(),
                end: end as u64,
                start: start as u64,
                dirty_to: 0,
                spare: None,
            });
        }
        log.segments.push_back(segment);
    }
    log.check_replayed()
        .map_err(|what| damaged(path, path, &what))?;
    if after_deleted && log.purged_index().is_none() {
        // Only a purge deletes segments, and the last purge stays on record: older segments
        // gone from a log never purged were removed by hand.
        let first = path.join(segment::segment_name(1));
        return Err(damaged(
            path,
            &first,
            "this segment is missing (nothing was ever purged from this log, so no segment was \
             deleted)",
        ));
    }
    let active = active.ok_or_else(|| damaged(path, path, "it holds no segment file"))?;
    // Segments replay showed no longer needed (a crash came between a purge and their
    // deletion) are deleted now.
    let dead = log.dead_segments();
    for segment in &dead {
        std::fs::remove_file(&segment.path)
            .map_err(|e| fs_error(path, "remove", &segment.path, e))?;
    }
    if !dead.is_empty() {
        segment::sync_dir(path).map_err(|e| fs_error(path, "fsync", path, e))?;
    }
    Ok((log, active))
}

/// Replays one segment's records into `log`; returns the offsets after its header and after
/// its last valid record. An invalid record ends the newest segment (an interrupted write) and
/// is damage anywhere else.
fn replay_segment(
    log: &mut Log,
    segment: &Arc<Segment>,
    data: &[u8],
    newest: bool,
    after_deleted: bool,
) -> Result<(usize, usize), String> {
    let (start, header) = match segment::next_record(data, 0) {
        Next::Record {
            kind: KIND_HEADER,
            payload,
            next,
            ..
        } => (next, segment::decode_header(payload)),
        _ => (0, None),
    };
    let Some(header) = header else {
        return Err("it does not start with a segment header".into());
    };
    if header.version != FORMAT_VERSION {
        return Err(format!(
            "it has layout version {} and this build reads version {FORMAT_VERSION}",
            header.version
        ));
    }
    if header.seq != segment.seq {
        return Err(format!("its header names segment {}", header.seq));
    }
    if log.segments.is_empty() {
        log.meta = header.meta;
    }
    let mut at = start;
    loop {
        match segment::next_record(data, at) {
            Next::End => return Ok((start, at)),
            Next::Invalid(_) if newest => return Ok((start, at)),
            Next::Invalid(what) => return Err(what),
            Next::Record {
                kind,
                payload,
                payload_at,
                next,
            } => {
                match kind {
                    KIND_ENTRY => {
                        let (index, entry) = segment::split_entry(payload).ok_or_else(|| {
                            format!("an entry record at offset {at} is too short")
                        })?;
                        let loc = Loc {
                            segment: segment.clone(),
                            offset: (payload_at + 8) as u64,
                            len: entry.len() as u32,
                        };
                        log.push(index, loc, after_deleted)
                            .map_err(|e| format!("at offset {at}: {e}"))?;
                    }
                    KIND_META => {
                        let change = segment::decode_meta(payload)
                            .map_err(|e| format!("a record at offset {at}: {e}"))?;
                        log.apply(change);
                    }
                    other => {
                        return Err(format!("a record of unknown kind {other} at offset {at}"));
                    }
                }
                at = next;
            }
        }
    }
}

/// Zeroes what follows the last valid record of the segment being appended to, if anything
/// does: the tail of a write a crash interrupted, never acknowledged. Left there, a later
/// shorter write could make an old record after it valid again.
fn zero_tail(segment: &Segment, data: &[u8], end: usize) -> Result<(), io::Error> {
    let Some(dirty) = data[end..].iter().rposition(|b| *b != 0) else {
        return Ok(());
    };
    tracing::warn!(
        path = %segment.path.display(),
        offset = end,
        bytes = dirty + 1,
        "discarding the tail of an interrupted write to the raft log"
    );
    segment.file.write_all_at(&vec![0; dirty + 1], end as u64)?;
    segment.file.sync_data()
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `path` with `suffix` added to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

pub(super) fn fs_error(path: &Path, op: &str, file: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "raft log store {}: cannot {op} {}: {e}",
            path.display(),
            file.display()
        ),
    )
}

/// The error for a store that is damaged in a way a crash cannot leave: what is wrong, and
/// what to do. The files are left as they are, for whoever looks into it.
pub(super) fn damaged(path: &Path, file: &Path, what: &str) -> io::Error {
    let dir = parent_of(path);
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "raft log store {}: {} is damaged ({what}). A crash only ever leaves an interrupted \
             write at the end of the newest segment, which is discarded at open, so this came \
             from elsewhere (a disk fault, a truncated copy, another program writing to it); \
             the files were left as they are. If the other members of the cluster are running, \
             stop this node, move its data directory {} aside and start the node again: it \
             rejoins with an empty log and receives a snapshot from the leader. On a one-node \
             cluster there is no other copy: restore the directory from a backup.",
            path.display(),
            file.display(),
            dir.display()
        ),
    )
}
