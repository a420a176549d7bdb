//! A coordinator whose storage fails under it exits with the cause and a non-zero code, so that
//! a supervisor restarts it, instead of lingering with a stopped Raft.
//!
//! The failure is real: the DuckDB file (or, in the second test, the Raft log) lives on a small
//! tmpfs that is filled up while the node runs, so its next write fails with "No space left on
//! device"; the other files are on the ordinary disk, so it is that store that fails. Mounting needs root (CAP_SYS_ADMIN):
//! without it the test fails and says so, rather than passing without testing anything.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testfleet::proto::{BenchRequest, StatusRequest};

use super::support::{client, eventually, query_consistent, start_coordinator, test_dir};

/// A tmpfs of `size` mounted on a directory; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let target = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let options = CString::new(format!("size={size}")).unwrap();
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "this test mounts a small tmpfs to fill a disk for real, which needs root \
             (CAP_SYS_ADMIN); mount on {} failed: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Writes a file until the file system is full.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match filler.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // Partial pages may still fit one more small write: take them too.
        while filler.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: umount2(2) with a valid path; lazy, so a file still open cannot block it.
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// Starts a coordinator with its DuckDB file in `db_dir` and its Raft log and snapshots in
/// `data_dir`, fills `full` while it leads, keeps writing, and returns how it ended: its exit
/// status and stderr. Panics if it still runs a minute later.
async fn fill_under_a_running_node(
    dir: &Path,
    db_dir: &Path,
    data_dir: &Path,
    full: &Tmpfs,
) -> (std::process::ExitStatus, String) {
    std::fs::create_dir_all(db_dir).unwrap();
    std::fs::create_dir_all(data_dir).unwrap();
    let db = db_dir.join("state.duckdb");
    let mut node = start_coordinator(
        &[
            "--db-path",
            db.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        dir,
    );
    let control = client(&node.addr).await;
    eventually(Duration::from_secs(30), "the node to lead", || {
        let mut control = control.clone();
        async move {
            let s = control.status(StatusRequest {}).await.ok()?.into_inner();
            (s.role == "leader").then_some(())
        }
    })
    .await;
    // Writes work before the disk is full.
    let mut writer = control.clone();
    writer
        .propose_bench(BenchRequest {
            payload: vec![1; 64],
        })
        .await
        .expect("a write before the disk is full");

    full.fill();
    // Keep writing: the next write to the full disk fails, and with it Raft, and the process.
    let writing = tokio::spawn(async move {
        loop {
            let request = BenchRequest {
                payload: vec![2; 4096],
            };
            let _ =
                tokio::time::timeout(Duration::from_secs(1), writer.propose_bench(request)).await;
        }
    });
    let (status, stderr) = tokio::task::block_in_place(|| node.wait_exit(Duration::from_secs(60)));
    writing.abort();
    let status = status.unwrap_or_else(|| {
        panic!("the node still runs 60 s after its disk filled up; its stderr:\n{stderr}")
    });
    (status, stderr)
}

fn assert_exited_with(status: std::process::ExitStatus, stderr: &str, needed: &[&str]) {
    assert_eq!(
        status.code(),
        Some(1),
        "exit status {status:?}; stderr:\n{stderr}"
    );
    let common = [
        "Raft stopped on a storage failure",
        "No space left on device",
        "exiting so that a supervisor can restart this node",
    ];
    for needed in common.iter().chain(needed) {
        assert!(
            stderr.contains(needed),
            "{needed:?} missing from stderr:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_duckdb_makes_the_coordinator_exit_with_the_cause() {
    let dir = test_dir();
    let db_dir = dir.path().join("db");
    let tmpfs = Tmpfs::mount(&db_dir, "32m");
    let data_dir = dir.path().join("data");
    let (status, stderr) = fill_under_a_running_node(dir.path(), &db_dir, &data_dir, &tmpfs).await;
    assert_exited_with(
        status,
        &stderr,
        &["writing applied entries to DuckDB failed"],
    );

    // What a supervisor does once the disk has room again: start it on the same files. It
    // comes back with the write acknowledged before the disk filled up and takes new ones.
    std::fs::remove_file(db_dir.join("filler")).unwrap();
    let db = db_dir.join("state.duckdb");
    let node = start_coordinator(
        &[
            "--db-path",
            db.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        dir.path(),
    );
    let mut control = client(&node.addr).await;
    let reply = eventually(Duration::from_secs(30), "a write after the restart", || {
        let mut control = control.clone();
        async move {
            let request = BenchRequest {
                payload: vec![3; 64],
            };
            Some(control.propose_bench(request).await.ok()?.into_inner())
        }
    })
    .await;
    let rows = query_consistent(
        &mut control,
        "SELECT count(*) FILTER (WHERE payload_bytes = 64) FROM bench_log",
    )
    .await;
    assert!(
        rows[0][0].as_u64() >= Some(2),
        "the write before the disk filled up and the one after the restart (index {}): {rows:?}",
        reply.log_index
    );
    drop(node);
    drop(tmpfs);
}

/// The data directory holds the Raft log and the snapshots. The log's segments are allocated
/// ahead (a write into a full disk fails only once a new segment is needed), so what fails
/// first may be the log or the snapshot the full disk makes the node take: either way the node
/// exits with the cause and the file, which is in the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_raft_log_makes_the_coordinator_exit_with_the_cause() {
    let dir = test_dir();
    let data_dir = dir.path().join("data");
    let tmpfs = Tmpfs::mount(&data_dir, "32m");
    let db_dir = dir.path().join("db");
    let (status, stderr) = fill_under_a_running_node(dir.path(), &db_dir, &data_dir, &tmpfs).await;
    let data_dir = data_dir.display().to_string();
    let failed = stderr
        .lines()
        .find(|line| line.starts_with("error: Raft stopped on a storage failure"))
        .unwrap_or_default();
    assert!(
        failed.contains(&format!("{data_dir}/raft-log"))
            || failed.contains(&format!("{data_dir}/snapshots/")),
        "the exit should name the file in {data_dir}:\n{stderr}"
    );
    assert_exited_with(status, &stderr, &[]);
    drop(tmpfs);
}
