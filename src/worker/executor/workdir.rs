//! The write check of an attempt's working directory, made before the command is spawned.
//!
//! A test run in a directory that is read-only, full, over quota or on a failing disk fails,
//! and without this check that failure would be reported as the test's (`failed`), blamed on
//! the code under test and retried nowhere else. So before each spawn the executor writes a
//! small file where the command will run — the task's `cwd`, or the worker's own working
//! directory when the task names none ([`attempt_dir`]) — and a refusal the kernel explains as
//! a disk problem (`ENOSPC`, `EROFS`, `EDQUOT`, `EIO`: [`super::fault_category`] says
//! `storage`) becomes a `storage` worker fault with the directory and the errno in its message
//! ([`storage_fault`]); the command does not run.
//!
//! **Two checks.** Every attempt asks the file system for its state (`statvfs`: mounted
//! read-only, or less than [`PROBE_SIZE`] left to unprivileged writers). Some attempts write:
//! a directory's first, then one per [`PROBE_INTERVAL`], the next one after an attempt there
//! did not pass ([`ProbeSchedule`]), and any attempt whose `statvfs` looks wrong, so that the
//! kernel's own answer (its errno) names the fault.
//!
//! **The probe** ([`probe`]): a hidden file, `.testfleet-write-check-<pid>-<n>`, created with
//! `O_CREAT|O_EXCL` (never someone else's file, nor one of a concurrent attempt), [`PROBE_SIZE`]
//! bytes written and synced, closed and removed — removed whatever happened after it was
//! created, a partial write included. `O_CREAT` meets a read-only file system and the write a
//! full disk or quota (ext4, XFS and tmpfs reserve the blocks at `write`). A disk that fails on
//! writeback, or an NFS server out of space, only says so to `fdatasync`, hence the sync.
//!
//! **Cost.** A probe creates, writes, syncs and removes a file: metadata a journalling file
//! system commits, and a journal commit that queues behind the machine's other writers (a
//! coordinator's Raft log included). `probe_cost` in the tests prints it (debug build, ext4 on
//! a virtio disk, 2 shared cores under load: 0.4–0.65 ms on average with the sync, 0.05–0.08
//! ms without). Written before every attempt, the probe without its sync was still a fifth of a
//! worker's CPU at a full load of short tasks (`perf`, BENCHMARKS.md); a `statvfs` is one
//! system call. What the spacing gives up: a quota or a failing disk that `statvfs` does not
//! show (`EDQUOT`, `EIO`) is found by the next probe, at most [`PROBE_INTERVAL`] later or at the
//! next attempt after one that did not pass, where the earlier design found it at the next
//! attempt. A read-only or full file system, the common cases, is still found before every
//! attempt.
//!
//! **Not the task's problems.** Any other error (`EACCES`: a directory the task cannot write is
//! the task's business, and it may not need to write at all; `ENOENT`: a missing cwd is already
//! the task's `error`; out of descriptors: the spawn meets it and classifies it) leaves the
//! attempt to go on as it would have without the check.
//!
//! **A disk that hangs** (a dead NFS server, a dying drive) would hold the attempt before its
//! timeout even started. The probe runs on the blocking pool and the attempt waits for it at
//! most [`PROBE_LIMIT`]: past that the directory is reported as a storage fault too. The probe
//! thread removes its file whenever the write ends.
//!
//! **Leftovers.** A worker killed between creating and removing its probe file leaves it
//! behind. The first probe of each directory in a worker process first removes probe files
//! older than [`STALE_PROBE`] there ([`sweep_stale_probes`]): by age, not by PID, because a
//! worker of another host sharing the directory may be probing in it right now.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::state::command::FaultCategory;

/// Bytes the probe writes: one page, a block of every common file system.
pub const PROBE_SIZE: usize = 4096;

/// How long an attempt waits for the probe before calling its directory a storage fault.
pub const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// The start of a probe file's name; the rest is `<pid>-<n>`.
pub const PROBE_PREFIX: &str = ".testfleet-write-check-";

/// A probe file older than this was left by a worker killed mid-probe: a probe lives at most
/// [`PROBE_LIMIT`].
pub const STALE_PROBE: Duration = Duration::from_secs(60);

/// Directories this process has swept of stale probe files (bounded like [`ProbeSchedule`]:
/// once full, no more sweeps; a leftover costs 4 KiB).
static SWEPT: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// How long a directory's last probe vouches for what `statvfs` does not show (a quota, a
/// disk that fails on writeback).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Directories a [`SyncSchedule`] remembers; past that it forgets the stale ones (all of them,
/// if need be: a forgotten directory is only synced once more).
const SCHEDULE_CAPACITY: usize = 1024;

/// The worker's schedule: one per process, as the directories are the process's, shared by
/// every attempt (`std::sync::Mutex`: held for a map lookup, never across an await).
static SCHEDULE: LazyLock<Mutex<ProbeSchedule>> =
    LazyLock::new(|| Mutex::new(ProbeSchedule::default()));

/// Which attempts write a probe: a directory's first, then one per [`PROBE_INTERVAL`], and the
/// next one after an attempt there did not pass (its failure may be the disk's).
#[derive(Debug, Default)]
pub struct ProbeSchedule {
    /// When each directory was last probed (was due to be).
    synced: HashMap<PathBuf, Instant>,
}

impl ProbeSchedule {
    /// Whether an attempt in `dir` at `now` writes a probe; if it does, it counts as `dir`'s.
    pub fn due(&mut self, dir: &Path, now: Instant) -> bool {
        if let Some(&at) = self.synced.get(dir)
            && now.saturating_duration_since(at) < PROBE_INTERVAL
        {
            return false;
        }
        if self.synced.len() >= SCHEDULE_CAPACITY && !self.synced.contains_key(dir) {
            self.synced
                .retain(|_, at| now.saturating_duration_since(*at) < PROBE_INTERVAL);
            if self.synced.len() >= SCHEDULE_CAPACITY {
                self.synced.clear();
            }
        }
        self.synced.insert(dir.to_path_buf(), now);
        true
    }

    /// An attempt in `dir` did not pass: its next probe syncs.
    pub fn forget(&mut self, dir: &Path) {
        self.synced.remove(dir);
    }
}

/// An attempt in `dir` ended without passing: the next attempt there writes a probe
/// ([`ProbeSchedule`]).
pub(super) fn attempt_not_passed(dir: &Path) {
    SCHEDULE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .forget(dir);
}

/// The directory the attempt runs in: `cwd`, or the worker's own working directory (as the
/// kernel resolves it now) when the task gives none, or `.` when even that cannot be read.
pub fn attempt_dir(cwd: Option<&Path>) -> PathBuf {
    match cwd {
        Some(cwd) => cwd.to_path_buf(),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}

/// Whether `statvfs` says `dir`'s file system would refuse a probe: mounted read-only, or
/// less than [`PROBE_SIZE`] left to unprivileged writers (a worker run as root may still
/// write into the reserve; the probe that follows says).
pub fn looks_unwritable(dir: &Path) -> io::Result<bool> {
    let space = crate::health::sampler::disk_space(dir).map_err(|e| match e {
        crate::health::sampler::SampleError::Statvfs { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })?;
    Ok(space.read_only || space.free_bytes < PROBE_SIZE as u64)
}

/// The check of an attempt in `dir`: [`probe`] (synced) when `write`, else `statvfs`, and the
/// probe after all when that looks wrong.
fn check(dir: &Path, write: bool) -> io::Result<()> {
    if write || looks_unwritable(dir)? {
        probe(dir, true)
    } else {
        Ok(())
    }
}

/// Writes a probe file in `dir`, syncs it if `sync`, and removes it. The file is removed
/// whenever it was created, whatever failed after; the first error is returned.
pub fn probe(dir: &Path, sync: bool) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{PROBE_PREFIX}{}-{n}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let written = (file.write_all(&[0; PROBE_SIZE]))
        .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    drop(file);
    let removed = std::fs::remove_file(&path);
    written.and(removed)
}

/// Removes the probe files in `dir` last modified more than [`STALE_PROBE`] before `now`
/// (module docs, "Leftovers"); returns how many. Whatever fails is left as it is.
pub fn sweep_stale_probes(dir: &Path, now: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PROBE_PREFIX) {
            continue;
        }
        let stale = (entry.metadata().and_then(|m| m.modified()))
            .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age > STALE_PROBE));
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed probe files left by a killed worker");
    }
    removed
}

/// Checks that `dir` would take a write (`check`: a probe when the schedule says so,
/// `statvfs` otherwise; on the blocking pool, for at most `limit`). `Some(message)` when it
/// would not because of the disk: the attempt is a `storage` worker fault. `None` when it
/// would, or the check failed for another reason (module docs).
pub async fn storage_fault(dir: &Path, limit: Duration) -> Option<String> {
    let write = (SCHEDULE.lock().unwrap_or_else(|e| e.into_inner())).due(dir, Instant::now());
    let sweep = {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        swept.len() < SCHEDULE_CAPACITY && swept.insert(dir.to_path_buf())
    };
    let owned = dir.to_path_buf();
    let probing = tokio::task::spawn_blocking(move || {
        if sweep {
            sweep_stale_probes(&owned, SystemTime::now());
        }
        check(&owned, write)
    });
    match tokio::time::timeout(limit, probing).await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(err))) => {
            let message = describe(dir, &err);
            if message.is_none() {
                tracing::debug!(dir = %dir.display(), %err, "write check failed, not for the disk: the attempt goes on");
            }
            message
        }
        // The probe panicked: nothing is known of the disk.
        Ok(Err(err)) => {
            tracing::warn!(dir = %dir.display(), %err, "write check crashed");
            None
        }
        Err(_) => Some(format!(
            "work directory {} did not complete a {} KiB write within {limit:?}",
            dir.display(),
            PROBE_SIZE / 1024
        )),
    }
}

/// What a failed write in `dir` says about the disk, as a worker fault's message, when
/// [`super::fault_category`] calls it `storage`: "work directory /x is read-only (EROFS): …".
pub(super) fn describe(dir: &Path, err: &io::Error) -> Option<String> {
    if super::fault_category(err) != Some(FaultCategory::Storage) {
        return None;
    }
    let (state, name) = match err.raw_os_error() {
        Some(libc::EROFS) => ("is read-only", "EROFS"),
        Some(libc::ENOSPC) => ("is full", "ENOSPC"),
        Some(libc::EDQUOT) => ("is over its disk quota", "EDQUOT"),
        Some(libc::EIO) => ("is on a failing disk", "EIO"),
        // fault_category grew a storage errno this table does not know yet.
        _ => ("does not take a write", "?"),
    };
    Some(format!(
        "work directory {} {state} ({name}): {err}",
        dir.display()
    ))
}

#[cfg(test)]
mod tests;
