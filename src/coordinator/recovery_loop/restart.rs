//! Running a restart command for the recovery loop: `sh -c` in its own process group, with a
//! time limit, its exit status and output tail reported back. The command line itself comes
//! from the configured template, filled in and shell-quoted by
//! [`crate::recovery::restart::render`] (which says what is refused and why).
//!
//! # The run belongs to the leadership
//!
//! [`run`] takes the leadership's cancellation token: when this node stops leading, a restart
//! command still running is killed with its whole process group, and nothing is reported.
//! Processes the command left behind after it exited (a worker it started in the background)
//! are not touched.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::worker::executor::kill_group;

/// How long a restart command may run.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

/// The most output kept from a restart command (its last characters).
const OUTPUT_TAIL_CHARS: usize = 4096;

/// How a restart run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ran {
    /// The command exited (`None`: killed by a signal, or it could not be run or waited for)
    /// with this output tail (or the reason it did not run).
    Finished {
        exit_code: Option<i32>,
        output_tail: String,
    },
    /// The leadership ended while the command ran; it was killed.
    Cancelled,
}

/// Runs `sh -c command` in its own process group and waits for the shell, up to `limit` or
/// until `cancel` fires; either way the whole group is killed. Unlike a test attempt, processes
/// the command leaves running when it exits are left alone: a restart command may start a
/// daemon. Output is read until the shell exits (plus a short grace), so a daemon holding the
/// pipes open cannot hang recovery.
pub async fn run(command: &str, limit: Duration, cancel: &CancellationToken) -> Ran {
    use tokio::io::AsyncReadExt;
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Ran::Finished {
                exit_code: None,
                output_tail: format!("cannot start sh: {e}"),
            };
        }
    };
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let kill = |pgid: Option<i32>| {
        if let Some(pgid) = pgid {
            kill_group(pgid);
        }
    };
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut text).await;
        }
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut text).await;
        }
        text
    });
    let waited = tokio::select! {
        _ = cancel.cancelled() => {
            kill(pgid);
            let _ = child.wait().await;
            reader.abort();
            return Ran::Cancelled;
        }
        waited = tokio::time::timeout(limit, child.wait()) => waited,
    };
    let exit_code = match waited {
        Ok(Ok(status)) => status.code(),
        Ok(Err(e)) => {
            kill(pgid);
            return Ran::Finished {
                exit_code: None,
                output_tail: format!("waiting for the restart command failed: {e}"),
            };
        }
        Err(_) => {
            kill(pgid);
            let _ = child.wait().await;
            reader.abort();
            return Ran::Finished {
                exit_code: None,
                output_tail: format!("the restart command ran past {limit:?} and was killed"),
            };
        }
    };
    let text = match tokio::time::timeout(Duration::from_millis(200), reader).await {
        Ok(Ok(text)) => text,
        _ => Vec::new(),
    };
    let text = String::from_utf8_lossy(&text);
    let skip = text.chars().count().saturating_sub(OUTPUT_TAIL_CHARS);
    Ran::Finished {
        exit_code,
        output_tail: text.chars().skip(skip).collect(),
    }
}

#[cfg(test)]
mod tests;
