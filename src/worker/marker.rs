//! Crash evidence: a run marker per worker name, `<state dir>/worker-<name>.run`.
//!
//! A worker process writes its marker when it starts (its pid and start time) and removes it
//! when it ends on its own terms: it left (SIGTERM, Ctrl-C), an operator removed it, or it gave
//! up (refused credentials, a name held elsewhere). A marker found at start was therefore left
//! by a process that did not end on its own terms — killed (SIGKILL, the OOM killer), panicked,
//! or its machine went down — and the new process says so in its hello
//! (`Hello.previous_exit = "crashed"`), so recovery can tell a crash from a departure.
//!
//! The process holds an `flock` on its marker while it lives, as a default name's lock is held
//! (`super::name`), and the lock, not the pid, tells whether the marker's writer is alive: the
//! kernel drops the lock exactly when its holder dies, while a dead worker's pid may by then
//! belong to an unrelated process. A marker whose lock is held belongs to another live process
//! under the same name on this host (which the leader will refuse); it is left alone.
//!
//! The file name carries the worker's name (letters, digits, `.`, `_` and `-` only:
//! `state::limits::check_worker_id`), so two workers on one host under different names never
//! share a marker.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::state::command::Timestamp;

/// How the previous process under a worker's name on this host ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PreviousExit {
    /// It ended on its own terms, or there was none.
    #[default]
    Clean,
    /// Its marker outlived it. The fields are what the marker said (absent if it was cut
    /// short: the process died while writing it).
    Crashed {
        pid: Option<u32>,
        started_at: Option<Timestamp>,
    },
}

impl PreviousExit {
    /// `Hello.previous_exit`: `""` or `"crashed"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PreviousExit::Clean => "",
            PreviousExit::Crashed { .. } => "crashed",
        }
    }

    /// `Hello.previous_started_at_us`: when the crashed process started, else 0.
    pub fn started_at_us(&self) -> i64 {
        match self {
            PreviousExit::Crashed {
                started_at: Some(at),
                ..
            } => at.micros(),
            _ => 0,
        }
    }

    /// What a marker's text says about its dead writer.
    fn from_marker(text: &str) -> PreviousExit {
        let field = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        PreviousExit::Crashed {
            pid: field("pid").and_then(|pid| pid.parse().ok()),
            started_at: field("started_at_us")
                .and_then(|at| at.parse().ok())
                .map(Timestamp),
        }
    }
}

/// The marker of the running process, locked. Dropping it without [`RunMarker::remove`]
/// leaves the file, as a crash would.
#[derive(Debug)]
pub struct RunMarker {
    path: PathBuf,
    _lock: File,
}

/// Where the marker of `worker` lives in the state directory `dir`.
pub fn marker_path(dir: &Path, worker: &str) -> PathBuf {
    dir.join(format!("worker-{worker}.run"))
}

impl RunMarker {
    /// Takes the marker of `worker` in `dir` for this process (`pid`, started `now`) and reads
    /// what the previous one left. `None` when another live process holds it.
    pub fn acquire(
        dir: &Path,
        worker: &str,
        pid: u32,
        now: Timestamp,
    ) -> io::Result<(Option<RunMarker>, PreviousExit)> {
        std::fs::create_dir_all(dir)?;
        let path = marker_path(dir, worker);
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            // SAFETY: flock(2) on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Ok((None, PreviousExit::Clean));
                }
                return Err(e);
            }
            // A process that exited cleanly between our open and our lock removed the file:
            // the lock is then on a file nobody will find. Open the path again.
            let same = match std::fs::metadata(&path) {
                Ok(on_disk) => {
                    let held = file.metadata()?;
                    (on_disk.dev(), on_disk.ino()) == (held.dev(), held.ino())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if !same {
                continue;
            }
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            let previous = if text.is_empty() {
                PreviousExit::Clean
            } else {
                PreviousExit::from_marker(&text)
            };
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "pid={pid}\nstarted_at_us={}\n", now.micros())?;
            file.sync_data()?;
            return Ok((Some(RunMarker { path, _lock: file }), previous));
        }
    }

    /// [`RunMarker::acquire`] for a worker process about to start: a marker that cannot be
    /// kept is logged and the worker runs without (its crash then goes unreported), as it does
    /// when another live process holds the marker.
    pub fn acquire_or_warn(dir: &Path, worker: &str) -> (Option<RunMarker>, PreviousExit) {
        let path = marker_path(dir, worker);
        match RunMarker::acquire(dir, worker, std::process::id(), Timestamp::now()) {
            Ok((None, previous)) => {
                tracing::warn!(
                    "another live process holds {}: is a worker named {worker} already running \
                     here?",
                    path.display()
                );
                (None, previous)
            }
            Ok((marker, previous)) => {
                if let PreviousExit::Crashed { pid, started_at } = previous {
                    tracing::warn!(
                        pid,
                        started_at_us = started_at.map(|at| at.micros()),
                        "the previous {worker} on this host crashed (it left {})",
                        path.display()
                    );
                }
                (marker, previous)
            }
            Err(e) => {
                tracing::warn!(
                    "cannot keep a run marker at {}: {e}; if this worker crashes, its next start \
                     cannot say so",
                    path.display()
                );
                (None, PreviousExit::Clean)
            }
        }
    }

    /// The process ends on its own terms: the marker goes.
    pub fn remove(self) -> io::Result<()> {
        std::fs::remove_file(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STARTED: Timestamp = Timestamp(1_700_000_000_000_000);

    fn take(dir: &Path, worker: &str, pid: u32) -> (Option<RunMarker>, PreviousExit) {
        RunMarker::acquire(dir, worker, pid, STARTED).unwrap()
    }

    #[test]
    fn a_first_start_and_a_start_after_a_clean_exit_are_clean() {
        let dir = tempfile::tempdir().unwrap();
        let (marker, previous) = take(dir.path(), "w1", 10);
        assert_eq!(previous, PreviousExit::Clean);
        let text = std::fs::read_to_string(marker_path(dir.path(), "w1")).unwrap();
        assert_eq!(
            text,
            format!("pid=10\nstarted_at_us={}\n", STARTED.micros())
        );
        marker.unwrap().remove().unwrap();
        assert!(!marker_path(dir.path(), "w1").exists());
        assert_eq!(take(dir.path(), "w1", 11).1, PreviousExit::Clean);
    }

    #[test]
    fn a_marker_left_behind_says_the_previous_process_crashed() {
        let dir = tempfile::tempdir().unwrap();
        let (marker, _) = take(dir.path(), "w1", 10);
        // Its process died: the lock goes with its descriptor, the file stays.
        drop(marker);
        let (marker, previous) = take(dir.path(), "w1", 11);
        assert!(marker.is_some());
        assert_eq!(
            previous,
            PreviousExit::Crashed {
                pid: Some(10),
                started_at: Some(STARTED)
            }
        );
        assert_eq!(
            (previous.as_str(), previous.started_at_us()),
            ("crashed", STARTED.micros())
        );
        // Now it is the new process's marker.
        let text = std::fs::read_to_string(marker_path(dir.path(), "w1")).unwrap();
        assert!(text.starts_with("pid=11\n"), "{text}");
    }

    #[test]
    fn a_marker_cut_short_still_says_crashed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(marker_path(dir.path(), "w1"), "pid=1").unwrap();
        let previous = take(dir.path(), "w1", 11).1;
        assert_eq!(
            previous,
            PreviousExit::Crashed {
                pid: Some(1),
                started_at: None
            }
        );
        assert_eq!(previous.started_at_us(), 0);
    }

    #[test]
    fn a_live_holder_keeps_its_marker_and_other_names_have_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let (held, _) = take(dir.path(), "w1", 10);
        let (second, previous) = take(dir.path(), "w1", 11);
        assert!(second.is_none());
        assert_eq!(previous, PreviousExit::Clean);
        let text = std::fs::read_to_string(marker_path(dir.path(), "w1")).unwrap();
        assert!(text.starts_with("pid=10\n"), "{text}");
        // Another name on the same host: its own marker, its own history.
        let (other, previous) = take(dir.path(), "w2", 12);
        assert!(other.is_some());
        assert_eq!(previous, PreviousExit::Clean);
        drop(held);
    }
}
