//! A worker's default name, unique among the live workers of one host: `<host>-<n>`.
//!
//! Two `testfleet worker` on one host used to register both as the host name, and the second
//! took over the first's session. Now each worker without `--name` takes the first free slot
//! `n` in its state directory: a lock file `worker-<n>.lock` held with `flock` for as long as the
//! process lives. The kernel drops the lock when the process dies, however it dies, so a
//! restarted worker takes its old name back (the lowest free slot) and two live ones never
//! share one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Slots tried before giving up (a host with more live workers than this names them).
pub const MAX_SLOTS: u32 = 1024;

/// A default name and the lock that keeps it ours; drop it (or exit) to free the name.
#[derive(Debug)]
pub struct DefaultName {
    pub name: String,
    _lock: File,
}

/// The state directory of workers on this host: `TESTFLEET_WORKER_STATE_DIR` is read by the
/// CLI; this is the fallback, `$XDG_STATE_HOME/testfleet`, `~/.local/state/testfleet`, or a
/// per-user directory under the system's temporary directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("testfleet");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/testfleet");
    }
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("testfleet-{uid}"))
}

/// `<host>-<n>` for the first slot `n` whose lock in `dir` is free.
pub fn default_name(host: &str, dir: &Path) -> io::Result<DefaultName> {
    std::fs::create_dir_all(dir)?;
    for n in 1..=MAX_SLOTS {
        let path = dir.join(format!("worker-{n}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        // SAFETY: flock(2) on a descriptor this function owns.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if locked {
            return Ok(DefaultName {
                name: format!("{host}-{n}"),
                _lock: file,
            });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e);
        }
    }
    Err(io::Error::other(format!(
        "all {MAX_SLOTS} worker name slots in {} are taken: give this worker a --name",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_workers_get_distinct_names_and_a_freed_name_is_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = default_name("h", dir.path()).unwrap();
        let second = default_name("h", dir.path()).unwrap();
        assert_eq!(first.name, "h-1");
        assert_eq!(second.name, "h-2");
        drop(first);
        // The lowest free slot: a restarted worker gets its name back.
        assert_eq!(default_name("h", dir.path()).unwrap().name, "h-1");
    }
}
