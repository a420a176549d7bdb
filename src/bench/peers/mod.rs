//! `testfleet bench peers ...`: Testfleet side by side with the systems it is measured against,
//! on this machine, in one run, so that the ratios hold on a shared and noisy machine.
//!
//! * [`etcd`] (`bench peers etcd`): a 3-member etcd cluster and Testfleet's 3-node cluster,
//!   started by the command, loaded by the same closed loop ([`crate::bench::load`]): N
//!   writers of 64-byte values, alternating the two systems per writer count. Acknowledged
//!   writes/s, p50/p99, and the servers' CPU per write.
//! * [`celery`] (`bench peers celery`): Celery 5 on a Redis started by the command (no
//!   persistence), driven by `benches/peers/celery_tasks.py`, against `bench tasks`
//!   ([`crate::bench::tasks`]), alternating: tasks/s of a batch, dispatch latency at half that
//!   rate, and the servers' CPU per task, read from a timeline of their `/proc` CPU
//!   ([`timeline`]).
//!
//! Each comparison runs `--rounds` times; a round measures both systems back to back, in an
//! order that alternates from one measurement to the next ([`peer_first`]), and its ratios
//! (Testfleet / peer) are taken within the round. The summary gives each system's medians
//! and the median of the rounds' ratios ([`median_ratio`]). A peer that is not installed is
//! a clear error naming the install command, never a skipped comparison.

pub mod celery;
pub mod etcd;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::cpu::ratio;
use crate::bench::median;
use crate::cli::CliError;

/// The peers `bench peers` compares Testfleet with.
#[derive(clap::Subcommand)]
pub enum PeersCommand {
    /// etcd 3.4 (3 members) against Testfleet's 3-node commits: writes/s, p50/p99, server
    /// CPU per write, with the same writers, alternating
    Etcd(etcd::EtcdArgs),
    /// Celery 5 + Redis against `bench tasks`: tasks/s, dispatch p50/p99 at half load, server
    /// CPU per task, alternating
    Celery(celery::CeleryArgs),
}

/// Runs the comparison and renders its report.
pub async fn run(command: &PeersCommand) -> Result<String, CliError> {
    match command {
        PeersCommand::Etcd(args) => {
            let report = etcd::run(args).await?;
            Ok(etcd::render(&report, args.output))
        }
        PeersCommand::Celery(args) => {
            let report = celery::run(args).await?;
            Ok(celery::render(&report, args.output))
        }
    }
}

/// Whether the peer is measured first in round `round` for the `index`-th measurement of the
/// round: the order alternates from each measurement to the next and from each round to the
/// next, so that neither system is always the one measured on a warmer or busier machine.
pub fn peer_first(round: usize, index: usize) -> bool {
    (round + index).is_multiple_of(2)
}

/// The median of `values` that are known; `None` when none is.
pub fn median_known(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let known: Vec<f64> = values
        .into_iter()
        .flatten()
        .filter(|v| v.is_finite())
        .collect();
    (!known.is_empty()).then(|| median(&known))
}

/// The median over rounds of Testfleet's value / the peer's value, each pair from one round.
pub fn median_ratio(pairs: impl IntoIterator<Item = (Option<f64>, Option<f64>)>) -> Option<f64> {
    median_known(
        pairs
            .into_iter()
            .map(|(testfleet, peer)| ratio(testfleet?, peer?)),
    )
}

/// Checks the settings every comparison shares.
pub fn check_common(rounds: usize, seconds: &[(&str, f64)]) -> Result<(), CliError> {
    if rounds == 0 {
        return Err(CliError::Usage("--rounds must be at least 1".into()));
    }
    for (flag, value) in seconds {
        if !value.is_finite() || *value <= 0.0 || *value > 3600.0 {
            return Err(CliError::Usage(format!(
                "{flag} must be a number of seconds above 0 and at most 3600, got {value}"
            )));
        }
    }
    Ok(())
}

/// Where `program` is: itself when it names a path (it holds a `/`), else the first
/// directory of `path_var` (a `PATH` value) holding an executable file of that name.
pub fn find_program(program: &str, path_var: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).then_some(path);
    }
    std::env::split_paths(path_var)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// [`find_program`] on this process's `PATH`, or a usage error that says how to install it.
pub fn require_program(program: &str, flag: &str, install: &str) -> Result<PathBuf, CliError> {
    let path_var = std::env::var("PATH").unwrap_or_default();
    find_program(program, &path_var).ok_or_else(|| {
        CliError::Usage(format!(
            "{program} not found{}: install it with `{install}`, or pass {flag} PATH",
            if program.contains('/') {
                String::new()
            } else {
                " on PATH".to_string()
            }
        ))
    })
}

/// The first line a program prints for `args` (e.g. its `--version`), or why not.
pub fn first_line_of(program: &Path, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

/// The version number in a program's `--version` line: the first word that starts with a
/// digit, once a `v=` or `v` before it is dropped (`etcd Version: 3.4.23` → `3.4.23`,
/// `Redis server v=7.0.15 sha=…` → `7.0.15`); the whole line when there is none.
pub fn version_in(line: &str) -> String {
    line.split_whitespace()
        .map(|word| {
            let word = word.strip_prefix("v=").unwrap_or(word);
            word.strip_prefix('v').unwrap_or(word)
        })
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(line)
        .to_string()
}

/// A server process of a peer, in a process group of its own, logging to a file; it and
/// everything it started (the group) are SIGKILLed when this is dropped.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` with its stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Daemon, CliError> {
        let file = std::fs::File::create(log)
            .map_err(|e| CliError::Other(format!("cannot create {}: {e}", log.display())))?;
        command.stdout(file);
        Self::spawn_keeping_stdout(name, command, log)
    }

    /// Starts `command` with its stderr going to (the end of) `log`; its stdout is as the
    /// caller set it.
    pub fn spawn_keeping_stdout(
        name: &str,
        mut command: Command,
        log: &Path,
    ) -> Result<Daemon, CliError> {
        use std::os::unix::process::CommandExt;
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| CliError::Other(format!("cannot open {}: {e}", log.display())))?;
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| CliError::Other(format!("cannot start {name}: {e}")))?;
        Ok(Daemon {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The exit status once the process has exited, `None` while it runs.
    pub fn try_status(&mut self) -> Result<Option<std::process::ExitStatus>, CliError> {
        let Some(child) = self.child.as_mut() else {
            return Err(CliError::Other(format!("{} is not running", self.name)));
        };
        child
            .try_wait()
            .map_err(|e| CliError::Other(format!("cannot wait for {}: {e}", self.name)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An error if the process has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<(), CliError> {
        match self.try_status()? {
            None => Ok(()),
            Some(status) => Err(CliError::Unavailable(format!(
                "{} exited ({status}); the end of its log ({}):\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 15)
            ))),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group this process created (pgid = the child's
            // pid). The kernel hands out no pid that is still a group's id, so while any of
            // the group lives (e.g. workers its leader left behind) the signal reaches only
            // them; once the group is empty it fails with ESRCH.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Calls `check` every 50 ms until it succeeds, or fails with its last error after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<(), CliError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(CliError::Unavailable(format!(
                "{what} within {limit:?}: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One figure of both systems and their ratio, for a summary row.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Compared {
    pub testfleet: Option<f64>,
    pub peer: Option<f64>,
    /// The median over rounds of Testfleet / peer.
    pub ratio: Option<f64>,
}

impl Compared {
    /// The medians of `testfleet` and `peer` over `rounds`, and the median of their ratios.
    pub fn of<R>(
        rounds: &[R],
        testfleet: impl Fn(&R) -> Option<f64>,
        peer: impl Fn(&R) -> Option<f64>,
    ) -> Compared {
        Compared {
            testfleet: median_known(rounds.iter().map(&testfleet)),
            peer: median_known(rounds.iter().map(&peer)),
            ratio: median_ratio(rounds.iter().map(|r| (testfleet(r), peer(r)))),
        }
    }

    /// The table cells: Testfleet, the peer, the ratio.
    pub fn cells(&self, decimals: usize) -> [String; 3] {
        let value = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.decimals$}"));
        [
            value(self.testfleet),
            value(self.peer),
            self.ratio.map_or("-".to_string(), |r| format!("{r:.2}x")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_alternates_within_and_across_rounds() {
        let order: Vec<bool> = (0..3).map(|i| peer_first(0, i)).collect();
        assert_eq!(order, [true, false, true]);
        let next: Vec<bool> = (0..3).map(|i| peer_first(1, i)).collect();
        assert_eq!(next, [false, true, false]);
    }

    #[test]
    fn ratios_are_taken_within_a_round_then_their_median() {
        // Round 2 is slower for both: its ratio still counts as measured side by side.
        let rounds = [
            (Some(200.0), Some(100.0)),
            (Some(90.0), Some(60.0)),
            (Some(150.0), Some(50.0)),
        ];
        let c = Compared::of(&rounds, |r| r.0, |r| r.1);
        assert_eq!(c.testfleet, Some(150.0));
        assert_eq!(c.peer, Some(60.0));
        // Ratios 2.0, 1.5, 3.0: median 2.0 (not 150 / 60 = 2.5).
        assert_eq!(c.ratio, Some(2.0));
        assert_eq!(c.cells(0), ["150".to_string(), "60".into(), "2.00x".into()]);
    }

    #[test]
    fn unknown_or_zero_figures_give_no_ratio() {
        assert_eq!(median_ratio([(Some(1.0), None), (None, Some(1.0))]), None);
        assert_eq!(median_ratio([(Some(1.0), Some(0.0))]), None);
        assert_eq!(
            median_ratio([(Some(1.0), Some(0.0)), (Some(3.0), Some(2.0))]),
            Some(1.5)
        );
        assert_eq!(median_known([None, Some(f64::NAN)]), None);
        let c = Compared::of(&[(None, Some(2.0))], |r| r.0, |r| r.1);
        assert_eq!(c.cells(1), ["-".to_string(), "2.0".into(), "-".into()]);
    }

    #[test]
    fn settings_out_of_range_are_usage_errors() {
        assert!(check_common(1, &[("--duration", 5.0)]).is_ok());
        for (rounds, value) in [(0, 5.0), (1, 0.0), (1, -1.0), (1, f64::NAN), (1, 1e9)] {
            let e = check_common(rounds, &[("--duration", value)]).unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{e}");
        }
        let e = check_common(1, &[("--duration", 0.0)]).unwrap_err();
        assert!(e.to_string().contains("--duration"), "{e}");
    }

    #[test]
    fn programs_are_found_on_the_path_or_named_by_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("peerd");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = dir.path().join("notes");
        std::fs::write(&plain, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path_var = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(find_program("peerd", &path_var), Some(exe.clone()));
        assert_eq!(find_program("notes", &path_var), None, "not executable");
        assert_eq!(find_program("peerd", "/nonexistent"), None);
        assert_eq!(find_program(exe.to_str().unwrap(), ""), Some(exe));
        let e = require_program("/nonexistent/etcd", "--etcd", "apt-get install etcd-server")
            .unwrap_err();
        assert!(matches!(e, CliError::Usage(_)));
        assert!(e.to_string().contains("apt-get install etcd-server"), "{e}");
        assert!(e.to_string().contains("--etcd PATH"), "{e}");
    }

    #[test]
    fn versions_are_read_from_the_programs_own_words() {
        assert_eq!(version_in("etcd Version: 3.4.23"), "3.4.23");
        let redis = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64";
        assert_eq!(version_in(redis), "7.0.15");
        assert_eq!(version_in("tool v2.1"), "2.1");
        assert_eq!(
            version_in("unknown (No such file)"),
            "unknown (No such file)"
        );
    }

    #[test]
    fn a_daemon_that_exits_says_so_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo cannot bind; exit 3"]);
        let mut daemon = Daemon::spawn("peerd", command, &dir.path().join("peerd.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let error = loop {
            match daemon.check_running() {
                Err(e) => break e,
                Ok(()) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(()) => panic!("sh did not exit"),
            }
        };
        assert!(error.to_string().contains("cannot bind"), "{error}");
    }
}
