//! A browser's processes, started in a process group of their own and stopped as one.
//!
//! Browsers fork helpers (Chromium: a zygote, renderers, a GPU and a network process), so
//! killing the process the probe started is not enough. [`Group::spawn`] makes the child the
//! leader of a new process group, which its helpers inherit, and asks the kernel to kill it if
//! the worker dies first (`PR_SET_PDEATHSIG`, Linux). [`Group::stop`] kills the whole group,
//! reaps the child and waits (briefly) until no process of the group is left; dropping a
//! [`Group`] kills the group too, so a probe cancelled half-way leaves nothing running.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::worker::executor::kill_group;

/// How long [`Group::stop`] waits for the group's last processes to go once killed.
const GONE_WITHIN: Duration = Duration::from_secs(2);

/// A child process leading its own process group.
pub struct Group {
    child: Child,
    pgid: i32,
}

impl Group {
    /// Starts `command` (stdin closed, stdout and stderr piped) as the leader of a new group.
    pub fn spawn(mut command: Command) -> io::Result<Group> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| io::Error::other("the spawned process has no pid"))?;
        Ok(Group { child, pgid })
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the group's leader to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Kills every process of the group, reaps the leader and waits up to 2 s for
    /// the rest to be gone.
    pub async fn stop(mut self) {
        kill_group(self.pgid);
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let until = tokio::time::Instant::now() + GONE_WITHIN;
        while alive(self.pgid) && tokio::time::Instant::now() < until {
            kill_group(self.pgid);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(self.pgid);
    }
}

/// Some process of group `pgid` still exists and is not a zombie waiting to be reaped by
/// init.
fn alive(pgid: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        members(pgid).into_iter().any(|state| state != 'Z')
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: kill with signal 0 only checks that the group exists.
        unsafe { libc::kill(-pgid, 0) == 0 }
    }
}

/// The states (`R`, `S`, `Z`...) of the processes of group `pgid`, from `/proc`.
#[cfg(target_os = "linux")]
pub fn members(pgid: i32) -> Vec<char> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| {
            // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let _ppid = fields.next()?;
            let pgrp: i32 = fields.next()?.parse().ok()?;
            (pgrp == pgid).then_some(state)
        })
        .collect()
}

/// Reads `from` to its end, keeping the last `keep` bytes.
pub async fn tail(from: Option<impl AsyncRead + Unpin>, keep: usize) -> Vec<u8> {
    let Some(mut from) = from else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > keep {
            kept.drain(..kept.len() - keep);
        }
    }
    kept
}

/// The last line of a browser's output worth showing: not blank, without Chromium's
/// `[pid:tid:date/time.us:LEVEL:file(line)]` prefix (which would make every probe's text
/// differ), at most `max` bytes.
pub fn last_line(output: &[u8], max: usize) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().map(str::trim).rev().find(|l| !l.is_empty())?;
    let line = match line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        Some((prefix, message)) if prefix.contains(':') => message,
        _ => line,
    };
    let mut line = line.to_string();
    crate::state::limits::clip(&mut line, max);
    Some(line)
}
