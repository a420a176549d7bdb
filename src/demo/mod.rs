//! Local clusters of real processes: coordinator and worker processes of this very binary,
//! started on loopback, killed, paused and restarted at will. They serve the HA demo
//! (`testfleet ha`, [`ha`], wrapped by `run_high_availability_cluster.sh`), the auto-recovery
//! demo (`testfleet test-auto-recovery`, [`auto_recovery`]), the benchmarks (`crate::bench`)
//! and the process-level integration tests (`tests/it/`).
//!
//! [`launch`] starts and controls the processes ([`launch::LocalCluster`],
//! [`launch::LocalWorkers`]); this module adds what every harness needs around them: the
//! executable to start ([`this_binary`]), a place for the processes' files ([`work_dir`]) and
//! latency percentiles ([`Latency`]) for the reports.
//!
//! Nothing here is used by a coordinator or a worker; the client commands of [`crate::cli`]
//! are what these harnesses use to talk to the clusters they start.

pub mod auto_recovery;
pub mod ha;
pub mod launch;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cli::CliError;

/// This executable, to start coordinator and worker processes of the same build.
pub fn this_binary() -> Result<PathBuf, CliError> {
    std::env::current_exe()
        .map_err(|e| CliError::Other(format!("cannot find this executable: {e}")))
}

/// Where a benchmark's processes keep their files: `data_dir` when given (created if
/// missing), else a new temporary directory, removed when the returned guard is dropped.
pub fn work_dir(
    prefix: &str,
    data_dir: Option<&std::path::Path>,
) -> Result<(Option<tempfile::TempDir>, std::path::PathBuf), CliError> {
    match data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                CliError::Usage(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            })?;
            Ok((None, dir.to_path_buf()))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .map_err(|e| {
                    CliError::Other(format!("cannot create a temporary directory: {e}"))
                })?;
            let dir = temp.path().to_path_buf();
            Ok((Some(temp), dir))
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        Latency {
            samples: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: samples.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        }
    }
}

/// A small seeded generator (xorshift64*), so a run reproduces from its seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(samples);
        assert_eq!(l.samples, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        let one = Latency::of(vec![Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert_eq!(Latency::of(Vec::new()).samples, 0);
    }
}
