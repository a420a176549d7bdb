//! Real file systems: a read-only tmpfs, a full one, an ordinary directory. Mounting needs
//! root (CAP_SYS_ADMIN), which the tests have here and in CI; a test that cannot mount says so
//! on stderr and checks nothing else, and one that could mount asserts.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::super::{AttemptResult, AttemptSpec, Outcome, run};
use super::*;

/// A tmpfs mounted on a fresh directory of its own (tests run in parallel); lazily unmounted
/// (`umount -l`) when dropped, before its directory is removed.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`size=16k`), read-only if asked. `None`, after saying
    /// why on stderr, when this process may not mount (not root): the caller skips.
    fn mount(options: &str, read_only: bool) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let target = CString::new(path.as_os_str().as_bytes()).unwrap();
        let data = CString::new(options).unwrap();
        let flags = if read_only { libc::MS_RDONLY } else { 0 };
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::EPERM),
                "mounting a tmpfs on {} failed: {err}",
                path.display()
            );
            eprintln!(
                "SKIPPED: mounting a tmpfs needs root (CAP_SYS_ADMIN), which this test process \
                 lacks ({err}); the write check was not tested on a real file system"
            );
            return None;
        }
        Some(Tmpfs { path, _dir: dir })
    }

    /// Remounts it read-only, as a file system whose disk failed often is.
    fn remount_read_only(&self) {
        let target = CString::new(self.path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mount(2) with a valid NUL-terminated target; a remount takes no source,
        // type or data.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "remount: {}", io::Error::last_os_error());
    }

    /// Writes a file until the file system is full.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = [0u8; 1024];
        loop {
            match filler.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.path.as_os_str().as_bytes()).unwrap();
        // SAFETY: umount2(2) with a valid path; MNT_DETACH (`umount -l`) so that a file still
        // open cannot keep the mount.
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// An attempt in `cwd` that leaves a mark in `marks` if its command runs.
fn marking_attempt(cwd: &Path, marks: &Path) -> AttemptSpec {
    let script = format!("touch {}/ran", marks.display());
    let mut spec = AttemptSpec::new(["sh", "-c", &script], Duration::from_secs(10));
    spec.cwd = Some(cwd.to_path_buf());
    spec
}

/// The probe files left in `dir`.
fn probe_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(PROBE_PREFIX))
        .collect()
}

fn storage_fault_result(message: String) -> AttemptResult {
    AttemptResult {
        fault: Some(FaultCategory::Storage),
        ..AttemptResult::not_started(Outcome::WorkerFault, message)
    }
}

#[tokio::test]
async fn a_read_only_work_directory_is_a_storage_fault_and_the_command_does_not_run() {
    let Some(tmpfs) = Tmpfs::mount("size=1m", true) else {
        return;
    };
    let marks = tempfile::tempdir().unwrap();
    let result = run(
        marking_attempt(&tmpfs.path, marks.path()),
        CancellationToken::new(),
    )
    .await;

    let erofs = io::Error::from_raw_os_error(libc::EROFS);
    let message = format!(
        "work directory {} is read-only (EROFS): {erofs}",
        tmpfs.path.display()
    );
    assert_eq!(result, storage_fault_result(message));
    assert_eq!(result.fault_name(), "storage");
    assert!(
        !marks.path().join("ran").exists(),
        "the command must not run"
    );
}

#[tokio::test]
async fn a_full_work_directory_is_a_storage_fault_and_the_probe_leaves_nothing() {
    let Some(tmpfs) = Tmpfs::mount("size=16k", false) else {
        return;
    };
    tmpfs.fill();
    let marks = tempfile::tempdir().unwrap();
    let result = run(
        marking_attempt(&tmpfs.path, marks.path()),
        CancellationToken::new(),
    )
    .await;

    let enospc = io::Error::from_raw_os_error(libc::ENOSPC);
    let message = format!(
        "work directory {} is full (ENOSPC): {enospc}",
        tmpfs.path.display()
    );
    assert_eq!(result, storage_fault_result(message));
    assert_eq!(result.fault_name(), "storage");
    assert!(
        !marks.path().join("ran").exists(),
        "the command must not run"
    );
    // The probe file was created (a full tmpfs still has inodes) and its write failed: it is
    // removed all the same.
    assert_eq!(probe_files(&tmpfs.path), Vec::<String>::new());
}

#[tokio::test]
async fn an_ordinary_work_directory_passes_the_check_and_the_command_runs() {
    let cwd = tempfile::tempdir().unwrap();
    let marks = tempfile::tempdir().unwrap();
    let result = run(
        marking_attempt(cwd.path(), marks.path()),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        (result.outcome, result.fault_name()),
        (Outcome::Passed, ""),
        "{result:?}"
    );
    assert!(marks.path().join("ran").exists());
    assert_eq!(probe_files(cwd.path()), Vec::<String>::new());
}

#[test]
fn an_attempt_without_cwd_is_checked_in_the_workers_own_directory() {
    let here = std::env::current_dir().unwrap();
    assert_eq!(attempt_dir(None), here);
    assert_eq!(attempt_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
}

#[test]
fn only_the_disks_errors_are_storage_faults() {
    let dir = Path::new("/w");
    let message = |errno| describe(dir, &io::Error::from_raw_os_error(errno));
    let err = |errno| io::Error::from_raw_os_error(errno).to_string();
    let cases = [
        (libc::EROFS, "is read-only (EROFS)"),
        (libc::ENOSPC, "is full (ENOSPC)"),
        (libc::EDQUOT, "is over its disk quota (EDQUOT)"),
        (libc::EIO, "is on a failing disk (EIO)"),
    ];
    for (errno, words) in cases {
        assert_eq!(
            message(errno),
            Some(format!("work directory /w {words}: {}", err(errno)))
        );
    }
    // The task's business (a directory it may not write, a cwd that vanished) or a shortage
    // the spawn meets and classifies itself: the attempt goes on.
    for errno in [
        libc::EACCES,
        libc::EPERM,
        libc::ENOENT,
        libc::EMFILE,
        libc::ENOMEM,
    ] {
        assert_eq!(message(errno), None, "{}", err(errno));
    }
    assert_eq!(describe(dir, &io::Error::other("no errno")), None);
}

#[test]
fn the_probe_of_a_missing_directory_fails_without_leaving_anything() {
    let dir = tempfile::tempdir().unwrap();
    let err = probe(&dir.path().join("gone"), true).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    probe(dir.path(), true).unwrap();
    probe(dir.path(), false).unwrap();
    assert_eq!(probe_files(dir.path()), Vec::<String>::new());
}

#[test]
fn a_directory_is_probed_once_per_interval_and_again_after_an_attempt_that_did_not_pass() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let (a, b) = (Path::new("/a"), Path::new("/b"));
    let mut schedule = ProbeSchedule::default();
    assert!(schedule.due(a, at(0)), "a directory's first attempt probes");
    assert!(!schedule.due(a, at(10)));
    assert!(
        schedule.due(b, at(10)),
        "each directory has its own schedule"
    );
    assert!(!schedule.due(a, at(999)));
    assert!(schedule.due(a, at(1000)), "one probe per interval");
    assert!(!schedule.due(a, at(1001)));
    schedule.forget(a);
    assert!(
        schedule.due(a, at(1002)),
        "after an attempt that did not pass"
    );
    assert!(!schedule.due(b, at(1009)));
}

#[tokio::test]
async fn a_directory_that_turned_read_only_since_its_last_probe_fails_the_next_attempt() {
    let Some(tmpfs) = Tmpfs::mount("size=1m", false) else {
        return;
    };
    let marks = tempfile::tempdir().unwrap();
    let attempt = || marking_attempt(&tmpfs.path, marks.path());
    let first = run(attempt(), CancellationToken::new()).await;
    assert_eq!(first.outcome, Outcome::Passed, "{first:?}");
    std::fs::remove_file(marks.path().join("ran")).unwrap();

    // Next attempt at once: no probe is due yet, `statvfs` sees the remount.
    tmpfs.remount_read_only();
    let second = run(attempt(), CancellationToken::new()).await;
    let erofs = io::Error::from_raw_os_error(libc::EROFS);
    let message = format!(
        "work directory {} is read-only (EROFS): {erofs}",
        tmpfs.path.display()
    );
    assert_eq!(second, storage_fault_result(message));
    assert!(
        !marks.path().join("ran").exists(),
        "the command must not run"
    );
}

#[test]
fn without_a_probe_due_the_check_writes_nothing_and_still_finds_a_read_only_or_full_disk() {
    let mtime = |dir: &Path| std::fs::metadata(dir).unwrap().modified().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let made = mtime(dir.path());
    // File system timestamps come from a coarse clock (a tick of 4–10 ms): past one, a file
    // created and removed in the directory moves its mtime.
    std::thread::sleep(Duration::from_millis(30));
    check(dir.path(), false).unwrap();
    assert_eq!(mtime(dir.path()), made, "statvfs alone: nothing written");
    check(dir.path(), true).unwrap();
    assert_ne!(
        mtime(dir.path()),
        made,
        "a probe creates and removes its file"
    );
    assert_eq!(probe_files(dir.path()), Vec::<String>::new());

    let Some(read_only) = Tmpfs::mount("size=1m", true) else {
        return;
    };
    let err = check(&read_only.path, false).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let full = Tmpfs::mount("size=16k", false).unwrap();
    full.fill();
    let err = check(&full.path, false).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert_eq!(probe_files(&full.path), Vec::<String>::new());
}

#[test]
fn a_schedule_full_of_directories_forgets_the_stale_ones() {
    let t0 = Instant::now();
    let mut schedule = ProbeSchedule::default();
    for i in 0..SCHEDULE_CAPACITY {
        assert!(schedule.due(&PathBuf::from(format!("/old/{i}")), t0));
    }
    let later = t0 + PROBE_INTERVAL / 2;
    assert!(schedule.due(Path::new("/recent"), later));
    assert_eq!(schedule.synced.len(), 1, "all were recent: cleared");
    let late = t0 + PROBE_INTERVAL * 2;
    for i in 0..SCHEDULE_CAPACITY - 1 {
        assert!(schedule.due(&PathBuf::from(format!("/new/{i}")), late));
    }
    assert!(schedule.due(Path::new("/newest"), late + PROBE_INTERVAL / 2));
    // "/recent" was stale by then; the others were not.
    assert_eq!(schedule.synced.len(), SCHEDULE_CAPACITY);
    assert!(!schedule.synced.contains_key(Path::new("/recent")));
}

/// The figures the module docs quote: what the check adds to an attempt, a probe that syncs
/// and one that does not, each with the hop to the blocking pool an attempt pays. Printed,
/// never asserted (run with `--nocapture` to see them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_cost() {
    const ROUNDS: usize = 300;
    let disk = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount("size=1m", false);
    let mut dirs = vec![("temp dir", disk.path().to_path_buf())];
    if let Some(tmpfs) = &tmpfs {
        dirs.push(("tmpfs", tmpfs.path.clone()));
    }
    for (what, dir) in dirs {
        for sync in [true, false] {
            let mut took = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let start = Instant::now();
                let owned = dir.clone();
                tokio::task::spawn_blocking(move || probe(&owned, sync))
                    .await
                    .unwrap()
                    .unwrap();
                took.push(start.elapsed());
            }
            took.sort();
            let mean = took.iter().sum::<Duration>() / ROUNDS as u32;
            eprintln!(
                "write check in a {what} ({}), {}: mean {mean:?}, median {:?}, p99 {:?}, \
                 max {:?} over {ROUNDS} probes",
                dir.display(),
                if sync { "synced" } else { "not synced" },
                took[ROUNDS / 2],
                took[ROUNDS * 99 / 100],
                took[ROUNDS - 1],
            );
        }
    }
}

#[test]
fn a_sweep_removes_only_probe_files_older_than_a_probe_can_live() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now();
    let make = |name: &str, age: Duration| {
        let file = std::fs::File::create(dir.path().join(name)).unwrap();
        file.set_modified(now - age).unwrap();
    };
    // Left by a worker SIGKILLed mid-probe, five minutes ago.
    make(&format!("{PROBE_PREFIX}4242-7"), Duration::from_secs(300));
    // Another host's worker probing right now, in a shared directory.
    make(&format!("{PROBE_PREFIX}99-1"), Duration::from_secs(1));
    // Not a probe file, however old.
    make("results.xml", Duration::from_secs(3600));

    assert_eq!(sweep_stale_probes(dir.path(), now), 1);
    assert_eq!(probe_files(dir.path()), vec![format!("{PROBE_PREFIX}99-1")]);
    assert!(dir.path().join("results.xml").exists());
    // A directory that cannot be read is left alone.
    assert_eq!(sweep_stale_probes(&dir.path().join("missing"), now), 0);
}
