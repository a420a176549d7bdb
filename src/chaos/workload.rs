//! The chaos run's workload: clients submitting jobs whose every task has an outcome known in
//! advance, recording what they were told.
//!
//! Each task is one of three commands, drawn from the run's seed: `true` (passes), `sh -c
//! 'exit N'` (fails with N, 1..=99) or `sleep 30` under a 1 s timeout (times out). Retries of
//! results are off (`flaky_retries` and `timeout_retries` 0), so each task has exactly one
//! correct final result; infrastructure retries are generous (the faults are the point).
//!
//! A client submits a job to one coordinator after another until one acknowledges it — a job id
//! is idempotent, so retrying is safe — for up to [`SUBMIT_FOR`]. The job's record
//! ([`Submission`]) says `Acknowledged` once any attempt was, `Failed` when a coordinator
//! refused it as invalid (it must then never appear), and `Unknown` when no attempt got an
//! answer (it may or may not appear).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::checker::{Ack, Expected, History, Submission};
use crate::cli::{CliError, Remote};
use crate::demo::Rng;
use crate::state::command::TaskSpec;

/// How long a client keeps retrying one job.
pub const SUBMIT_FOR: Duration = Duration::from_secs(20);

/// How long one submission call may take.
const CALL_LIMIT: Duration = Duration::from_secs(2);

/// Tasks per job.
const TASKS_PER_JOB: usize = 3;

/// A task with a known outcome: its spec and what it must end as.
pub fn task(id: String, expected: Expected) -> TaskSpec {
    let (command, timeout_ms): (Vec<String>, u64) = match expected {
        Expected::Pass => (vec!["true".into()], 60_000),
        Expected::Fail(code) => (
            vec!["sh".into(), "-c".into(), format!("exit {code}")],
            60_000,
        ),
        Expected::TimeOut => (vec!["sleep".into(), "30".into()], 1_000),
    };
    TaskSpec {
        timeout_ms,
        max_retries: 50,
        timeout_retries: 0,
        flaky_retries: 0,
        ..TaskSpec::new(id.clone(), id, command)
    }
}

fn draw(rng: &mut Rng) -> Expected {
    match rng.next() % 10 {
        0..=5 => Expected::Pass,
        6..=8 => Expected::Fail(1 + (rng.next() % 99) as i32),
        _ => Expected::TimeOut,
    }
}

/// Runs one client until `stop`: a job every `pause`, each recorded in `history`.
pub async fn client(
    id: usize,
    remote: Remote,
    seed: u64,
    pause: Duration,
    started: Instant,
    history: Arc<Mutex<History>>,
    stop: CancellationToken,
) {
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut target = id;
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let job = format!("chaos-c{id}-j{n:05}");
        let tasks: Vec<(String, Expected)> = (0..TASKS_PER_JOB)
            .map(|i| (format!("{job}-t{i}"), draw(&mut rng)))
            .collect();
        let specs: Vec<TaskSpec> = tasks.iter().map(|(t, e)| task(t.clone(), *e)).collect();
        let invoked = started.elapsed();
        let deadline = Instant::now() + SUBMIT_FOR;
        let mut last_error;
        let ack = loop {
            let addr = &remote.addrs[target % remote.addrs.len()];
            let call = crate::cli::jobs::submit_once(
                addr,
                &remote.credentials,
                &job,
                "chaos",
                &specs,
                CALL_LIMIT,
            );
            match call.await {
                Ok(_) => break Ack::Acknowledged,
                Err(CliError::Usage(why)) => break Ack::Failed(why),
                Err(e) => {
                    last_error = format!("{addr}: {e}");
                    target += 1;
                }
            }
            if Instant::now() >= deadline || stop.is_cancelled() {
                break Ack::Unknown(last_error);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let submission = Submission {
            client: id,
            job,
            tasks,
            invoked_ms: invoked.as_millis() as u64,
            completed_ms: started.elapsed().as_millis() as u64,
            ack,
        };
        history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .submissions
            .push(submission);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
