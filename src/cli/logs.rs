//! `testfleet logs TASK [-f]`: a task's output, live while it runs (like `kubectl logs -f`).
//!
//! One `Jobs.FollowOutput` call per attempt (ARCHITECTURE.md § Output): the leader relays what
//! the worker holding the attempt captured, then (with `-f`) what it prints, and the end; a
//! finished attempt gets its stored output tail. Output goes to stdout as it comes; everything
//! about it (which attempt, how it ended, waiting, a worker lost) goes to stderr, so `logs -f
//! TASK > file` keeps the output clean.
//!
//! Following survives what a failover or a requeue does to the call: the client remembers the
//! attempt and the byte offset it has printed up to and asks again from there (another
//! coordinator, a new leader); a requeued task's next attempt is followed from its start, after
//! a separator line.

use std::io::Write;
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;

use super::args::ClientAuth;
use super::{CliError, Remote, from_status};
use crate::proto::jobs_client::JobsClient;
use crate::proto::{FollowOutputRequest, OutputEnd, OutputEndReason, output_event};

/// `testfleet logs`.
#[derive(clap::Args)]
pub struct LogsArgs {
    /// Coordinator addresses, HOST:PORT[,HOST:PORT...]; any member works
    #[arg(long, env = "TESTFLEET_COORDINATOR", default_value = "127.0.0.1:8080")]
    pub coordinator: String,
    #[command(flatten)]
    pub auth: ClientAuth,
    /// Keep printing output as the task prints it, until its last attempt ends
    #[arg(short, long)]
    pub follow: bool,
    /// The task: its id or a unique prefix
    pub task: String,
}

/// How long the cluster may stay unreachable while following (a failover takes ~1 s).
const RETRY_FOR: Duration = Duration::from_secs(30);

/// How often a follower asks again while a task waits to be scheduled or to start.
const POLL: Duration = Duration::from_millis(300);

/// Where the client is in the task's output.
#[derive(Default)]
struct Place {
    attempt: u32,
    worker: String,
    /// Bytes of the attempt printed so far.
    offset: u64,
    /// Something was said about waiting (said once).
    waiting: bool,
}

/// What one call ended with.
enum Step {
    /// Nothing more to do.
    Done,
    /// Ask again after a pause.
    Again,
}

/// Runs `testfleet logs`.
pub async fn run(args: LogsArgs) -> Result<(), CliError> {
    let remote = Remote::new(
        super::parse_addresses(&args.coordinator)?,
        args.auth.credentials()?,
    );
    let task = super::lookup::task(&remote, &args.task).await?;
    let mut place = Place::default();
    let mut unreachable_since: Option<Instant> = None;
    let mut next = 0usize;
    loop {
        let addr = &remote.addrs[next % remote.addrs.len()];
        match call(&remote, addr, &task, args.follow, &mut place).await {
            Ok(Step::Done) => return Ok(()),
            Ok(Step::Again) => {
                unreachable_since = None;
                tokio::time::sleep(POLL).await;
            }
            Err(CliError::Unavailable(why)) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RETRY_FOR {
                    return Err(CliError::Unavailable(why));
                }
                tracing::debug!("{why}; asking again");
                next += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One `FollowOutput` call, printing as it goes.
async fn call(
    remote: &Remote,
    addr: &str,
    task: &str,
    follow: bool,
    place: &mut Place,
) -> Result<Step, CliError> {
    let channel = super::channel(addr, &remote.credentials).await?;
    let request = FollowOutputRequest {
        task_id: task.to_string(),
        follow,
        attempt: place.attempt,
        from_offset: place.offset,
    };
    let mut stream = JobsClient::new(channel)
        .follow_output(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let mut stdout = std::io::stdout();
    while let Some(item) = stream.next().await {
        match item.map_err(status_error)?.body {
            Some(output_event::Body::Attempt(a)) => {
                if a.attempt != place.attempt {
                    if place.attempt != 0 && a.attempt != 0 && a.status != "queued" {
                        eprintln!("--- attempt {} on worker {} ---", a.attempt, a.worker_id);
                    }
                    if a.status != "queued" {
                        place.attempt = a.attempt;
                        place.offset = 0;
                    }
                }
                place.worker = a.worker_id;
            }
            Some(output_event::Body::Chunk(c)) => {
                if c.skipped > 0 {
                    eprintln!("[... {} bytes of output lost ...]", c.skipped);
                }
                place.offset = c.offset + c.data.len() as u64;
                let written = stdout.write_all(&c.data).and_then(|()| stdout.flush());
                if let Err(e) = written {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(Step::Done);
                    }
                    return Err(CliError::Other(format!("cannot write the output: {e}")));
                }
            }
            Some(output_event::Body::End(end)) => return Ok(finish(&end, follow, place)),
            None => {}
        }
    }
    Err(CliError::Unavailable(format!(
        "{addr} ended the output stream without saying why"
    )))
}

/// A status mid-stream: a broken connection or a leader that stepped down means "ask again".
fn status_error(status: tonic::Status) -> CliError {
    match status.code() {
        tonic::Code::NotFound => CliError::Usage(status.message().to_string()),
        tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Internal
            if std::error::Error::source(&status).is_some() =>
        {
            CliError::Unavailable(format!("the connection broke: {}", status.message()))
        }
        _ => from_status(status),
    }
}

/// Says how a call ended (stderr) and whether to go on.
fn finish(end: &OutputEnd, follow: bool, place: &mut Place) -> Step {
    match end.reason() {
        OutputEndReason::OutputEndEnded => {
            eprintln!("{}", ending(place.attempt, end));
            let last = crate::state::command::TaskStatus::parse(&end.task_status)
                .is_none_or(|s| s.is_final());
            if follow && !last {
                place.waiting = false;
                Step::Again
            } else {
                Step::Done
            }
        }
        OutputEndReason::OutputEndRunning | OutputEndReason::OutputEndUnspecified => Step::Done,
        OutputEndReason::OutputEndWaiting => {
            if !place.waiting {
                eprintln!("task {}: {}", end.task_status, end.detail);
                place.waiting = true;
            }
            if follow { Step::Again } else { Step::Done }
        }
        OutputEndReason::OutputEndDisconnected => {
            eprintln!("{}; waiting for the task's next attempt", end.detail);
            place.waiting = true;
            if follow { Step::Again } else { Step::Done }
        }
    }
}

/// "attempt 2 passed (exit 0) in 3.1s", "attempt 1 failed (killed by SIGSEGV (signal 11)) in
/// 0.2s", "attempt 1 requeued: worker left".
pub fn ending(attempt: u32, end: &OutputEnd) -> String {
    let outcome = if end.outcome.is_empty() {
        "ended"
    } else {
        end.outcome.as_str()
    };
    let mut line = format!("attempt {attempt} {outcome}");
    match (end.exit_code, end.signal) {
        (_, Some(signal)) => line.push_str(&format!(" ({})", super::signals::killed_by(signal))),
        (Some(code), None) => line.push_str(&format!(" (exit {code})")),
        (None, None) => {}
    }
    if let Some(ms) = end.duration_ms {
        line.push_str(&format!(" in {:.1}s", ms as f64 / 1000.0));
    }
    if end.exit_code.is_none() && end.signal.is_none() && !end.detail.is_empty() {
        line.push_str(&format!(": {}", end.detail));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempts_end_reads_like_a_sentence() {
        let end = |outcome: &str, exit_code, signal, duration_ms, detail: &str| OutputEnd {
            outcome: outcome.into(),
            exit_code,
            signal,
            duration_ms,
            detail: detail.into(),
            ..OutputEnd::default()
        };
        assert_eq!(
            ending(2, &end("passed", Some(0), None, Some(3100), "")),
            "attempt 2 passed (exit 0) in 3.1s"
        );
        assert_eq!(
            ending(1, &end("timed_out", None, Some(9), Some(5000), "")),
            "attempt 1 timed_out (killed by SIGKILL (signal 9)) in 5.0s"
        );
        assert_eq!(
            ending(1, &end("requeued", None, None, None, "worker left")),
            "attempt 1 requeued: worker left"
        );
    }
}
