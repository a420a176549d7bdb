//! What the coordinators cost while a run goes on: CPU and memory, sampled from `/proc`.
//!
//! [`run`] finds this process's children that are coordinators (their command line has the
//! `coordinator` subcommand) every [`PERIOD`] and records their summed CPU time (cumulative:
//! a process that died keeps what it had used) and resident memory ([`Usage`]). The pure
//! helpers turn the samples into the cores used over a window ([`cores_between`]) and the
//! memory held ([`rss_between`]), so a fault's *resource impact* is the window after it set
//! against the window before it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::health::sampler::process_usage;

/// How often the coordinators are sampled.
pub const PERIOD: Duration = Duration::from_millis(250);

/// The coordinators' usage at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Usage {
    /// Milliseconds since the run started.
    pub at_ms: f64,
    /// CPU seconds used by every coordinator process of the run so far.
    pub cpu_seconds: f64,
    /// Resident memory of the coordinators running now.
    pub rss_bytes: u64,
}

/// Cores used on average between `from_ms` and `to_ms`: the CPU time between the last sample
/// at or before each end, over the time between those samples. `None` without two samples.
pub fn cores_between(samples: &[Usage], from_ms: f64, to_ms: f64) -> Option<f64> {
    let at_or_before = |t: f64| samples.iter().rev().find(|s| s.at_ms <= t);
    let start = at_or_before(from_ms).or_else(|| samples.first())?;
    let end = at_or_before(to_ms)?;
    let span_s = (end.at_ms - start.at_ms) / 1000.0;
    (span_s > 0.0).then(|| (end.cpu_seconds - start.cpu_seconds) / span_s)
}

/// The mean and the largest resident memory of the samples in `[from_ms, to_ms]`.
pub fn rss_between(samples: &[Usage], from_ms: f64, to_ms: f64) -> Option<(f64, u64)> {
    let inside: Vec<u64> = (samples.iter())
        .filter(|s| s.at_ms >= from_ms && s.at_ms <= to_ms)
        .map(|s| s.rss_bytes)
        .collect();
    let max = *inside.iter().max()?;
    Some((inside.iter().sum::<u64>() as f64 / inside.len() as f64, max))
}

/// Whether `pid`'s command line runs the `coordinator` subcommand.
fn is_coordinator(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|line| line.split(|b| *b == 0).any(|arg| arg == b"coordinator"))
}

/// Samples this process's coordinator children every [`PERIOD`] until `stop`.
pub async fn run(started: Instant, samples: Arc<Mutex<Vec<Usage>>>, stop: CancellationToken) {
    let me = std::process::id();
    // CPU seconds last seen per coordinator process, kept after it is gone.
    let mut used: BTreeMap<u32, f64> = BTreeMap::new();
    while !stop.is_cancelled() {
        let mut rss_bytes = 0;
        let pids = (std::fs::read_dir("/proc").into_iter().flatten().flatten())
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok());
        for pid in pids {
            match process_usage(pid) {
                Ok(usage) if usage.parent == me && is_coordinator(pid) => {
                    used.insert(pid, usage.cpu_seconds);
                    rss_bytes += usage.rss_bytes;
                }
                _ => {}
            }
        }
        (samples.lock().unwrap_or_else(|e| e.into_inner())).push(Usage {
            at_ms: started.elapsed().as_secs_f64() * 1000.0,
            cpu_seconds: used.values().sum(),
            rss_bytes,
        });
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(at_ms: f64, cpu_seconds: f64, rss_bytes: u64) -> Usage {
        Usage {
            at_ms,
            cpu_seconds,
            rss_bytes,
        }
    }

    #[test]
    fn cores_are_cpu_time_over_wall_time_between_the_samples_at_the_window_ends() {
        let samples = [
            usage(0.0, 0.0, 100),
            usage(1000.0, 0.5, 100),
            usage(2000.0, 1.0, 300),
            usage(3000.0, 2.5, 200),
        ];
        assert_eq!(cores_between(&samples, 0.0, 2000.0), Some(0.5));
        assert_eq!(cores_between(&samples, 2000.0, 3000.0), Some(1.5));
        // Ends between samples take the sample before them.
        assert_eq!(cores_between(&samples, 1500.0, 3500.0), Some(1.0));
        assert_eq!(cores_between(&samples, 2500.0, 2600.0), None);
        assert_eq!(cores_between(&[], 0.0, 1.0), None);
    }

    #[test]
    fn memory_is_the_mean_and_peak_inside_the_window() {
        let samples = [
            usage(0.0, 0.0, 100),
            usage(1000.0, 0.5, 100),
            usage(2000.0, 1.0, 400),
        ];
        assert_eq!(rss_between(&samples, 500.0, 2000.0), Some((250.0, 400)));
        assert_eq!(rss_between(&samples, 3000.0, 4000.0), None);
    }

    // Two runtime threads: the test blocks one while it waits, the sampler runs on the other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_coordinator_child_is_sampled_and_its_cpu_kept_after_it_exits() {
        // A child whose command line has `coordinator` as an argument, busy until told to stop.
        let dir = tempfile::tempdir().unwrap();
        let stop_file = dir.path().join("stop");
        let script = format!("while [ ! -e {} ]; do :; done", stop_file.display());
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script, "coordinator"])
            .spawn()
            .unwrap();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let sampler = tokio::spawn(run(Instant::now(), samples.clone(), stop.clone()));
        let last = || {
            *samples
                .lock()
                .unwrap()
                .last()
                .unwrap_or(&usage(0.0, 0.0, 0))
        };
        let until = |what: &str, done: &dyn Fn(Usage) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done(last()) {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {:?}",
                    samples.lock().unwrap()
                );
                std::thread::sleep(PERIOD / 5);
            }
        };
        until("the running child was not seen using CPU", &|u| {
            u.rss_bytes > 0 && u.cpu_seconds > 0.0
        });
        let used = last().cpu_seconds;
        std::fs::write(&stop_file, "").unwrap();
        child.wait().unwrap();
        until("the child is gone", &|u| u.rss_bytes == 0);
        assert!(last().cpu_seconds >= used, "its CPU time was kept");
        stop.cancel();
        sampler.await.unwrap();
    }
}
