//! A closed-loop load generator: N writers, each a sequential loop of one operation (send,
//! wait for the acknowledgement, send the next), measured over a window after a warm-up.
//!
//! `bench commit` drives Testfleet's `ProposeBench` with it and `bench peers etcd` drives
//! etcd's `KV.Put` with the very same loop, so that the two systems see the same load shape.
//! An operation counts when it was sent after the warm-up and acknowledged before the window
//! ended; a failed one is counted as an error and its writer pauses 20 ms before the next.
//! When given a [`CpuMeter`] over the servers' processes, the loop reads it at the start and
//! at the end of the measured window ([`crate::bench::cpu`]).

use std::future::Future;
use std::time::{Duration, Instant};

use super::cpu::{CpuMeter, CpuSpent};

/// One operation of a writer; cloned once per writer (clones may share a connection).
pub trait Operation: Clone + Send + 'static {
    /// Sends one operation and waits for its acknowledgement; the error's text is reported.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// How many writers, for how long.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub writers: usize,
    pub duration: Duration,
    pub warmup: Duration,
}

/// What one closed-loop run measured.
#[derive(Clone, Debug)]
pub struct LoadRun {
    pub writers: usize,
    /// Latency of every operation acknowledged within the window.
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub last_error: Option<String>,
    /// The measured window (the nominal one: `Shape::duration`).
    pub seconds: f64,
    /// The servers' CPU over the window, when a meter was given and both readings worked.
    pub cpu: Option<CpuSpent>,
    /// Why the CPU could not be read, when a meter was given and it could not.
    pub cpu_error: Option<String>,
}

impl LoadRun {
    pub fn ops(&self) -> usize {
        self.latencies.len()
    }

    pub fn ops_per_sec(&self) -> f64 {
        super::cpu::ratio(self.ops() as f64, self.seconds).unwrap_or(0.0)
    }

    /// Server CPU per acknowledged operation, in µs.
    pub fn cpu_us_per_op(&self) -> Option<f64> {
        let nominal = Duration::from_secs_f64(self.seconds);
        self.cpu.and_then(|c| c.us_per_op(self.ops(), nominal))
    }
}

/// Runs `shape.writers` writers of `op` and measures them; `meter`, when given, is read at the
/// window's start and end.
pub async fn closed_loop<O: Operation>(op: O, shape: Shape, meter: Option<CpuMeter>) -> LoadRun {
    let start = Instant::now();
    let measure_from = start + shape.warmup;
    let end = measure_from + shape.duration;
    let cpu = meter.map(|meter| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let first = meter.read().map_err(|e| e.to_string())?;
            tokio::time::sleep_until(end.into()).await;
            let last = meter.read().map_err(|e| e.to_string())?;
            meter.spent(&first, &last).map_err(|e| e.to_string())
        })
    });
    let mut writers = Vec::with_capacity(shape.writers);
    for _ in 0..shape.writers {
        let mut op = op.clone();
        writers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut last_error = None;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = op.call().await;
                let done = Instant::now();
                match result {
                    Ok(()) if sent >= measure_from && done <= end => latencies.push(done - sent),
                    Ok(()) => {}
                    Err(e) => {
                        errors += 1;
                        last_error = Some(e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (latencies, errors, last_error)
        }));
    }
    let mut run = LoadRun {
        writers: shape.writers,
        latencies: Vec::new(),
        errors: 0,
        last_error: None,
        seconds: shape.duration.as_secs_f64(),
        cpu: None,
        cpu_error: None,
    };
    for writer in writers {
        match writer.await {
            Ok((latencies, errors, last)) => {
                run.latencies.extend(latencies);
                run.errors += errors;
                if last.is_some() {
                    run.last_error = last;
                }
            }
            Err(e) => {
                run.errors += 1;
                run.last_error = Some(format!("a writer task failed: {e}"));
            }
        }
    }
    if let Some(cpu) = cpu {
        match cpu.await {
            Ok(Ok(spent)) => run.cpu = Some(spent),
            Ok(Err(e)) => run.cpu_error = Some(e),
            Err(e) => run.cpu_error = Some(format!("the CPU reader failed: {e}")),
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Acknowledges after 2 ms; every third call fails.
    #[derive(Clone)]
    struct Flaky(Arc<AtomicUsize>);

    impl Operation for Flaky {
        async fn call(&mut self) -> Result<(), String> {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
            if n % 3 == 2 {
                Err(format!("call {n} refused"))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn only_operations_inside_the_window_count_and_errors_are_kept() {
        let calls = Arc::new(AtomicUsize::new(0));
        let shape = Shape {
            writers: 2,
            duration: Duration::from_millis(100),
            warmup: Duration::from_millis(50),
        };
        let run = closed_loop(Flaky(Arc::clone(&calls)), shape, None).await;
        let total = calls.load(Ordering::Relaxed);
        assert!(run.errors > 0 && run.last_error.as_deref().unwrap().ends_with("refused"));
        // The warm-up's calls ran but are not counted.
        assert!(
            run.ops() + run.errors < total,
            "{} {} {total}",
            run.ops(),
            run.errors
        );
        assert!(run.ops() > 0);
        assert!(run.latencies.iter().all(|l| *l >= Duration::from_millis(2)));
        assert_eq!(run.ops_per_sec(), run.ops() as f64 / 0.1);
        assert!(run.cpu.is_none() && run.cpu_us_per_op().is_none());
    }

    #[tokio::test]
    async fn a_meter_over_a_process_that_is_gone_reports_why() {
        let calls = Arc::new(AtomicUsize::new(0));
        let shape = Shape {
            writers: 1,
            duration: Duration::from_millis(30),
            warmup: Duration::ZERO,
        };
        // Pid 0 never exists in /proc.
        let meter = CpuMeter::new(vec![0]).unwrap();
        let run = closed_loop(Flaky(calls), shape, Some(meter)).await;
        assert!(run.cpu.is_none());
        assert!(run.cpu_error.unwrap().contains("/proc/0/stat"));
    }
}
