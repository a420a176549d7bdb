//! A timeline of processes' CPU, sampled from `/proc` while a benchmark runs, for windows that
//! are known only afterwards.
//!
//! `bench peers celery` cannot read its servers' CPU at the start and end of a measured
//! window as `bench commit` does: `bench tasks` and the Celery script run their phases
//! themselves and say when each began and ended only at the end, as wall-clock stamps (the
//! coordinators' and the tasks' own). So a [`Sampler`] thread reads every tracked process's
//! CPU ([`crate::bench::cpu`]) every [`PERIOD`] and records, per group of processes (e.g. the
//! coordinators or the broker; the workers), the CPU they have spent since they started, with
//! the wall-clock time. [`Timeline::between`] then gives a window's CPU by linear
//! interpolation between the samples around each end (pure).
//!
//! Which processes to track is the caller's rule, applied to a scan of `/proc` every
//! [`DISCOVER_EVERY`] samples: the servers must be found before a window starts (their whole
//! CPU since their start is added when they are found). A process that exits keeps the CPU it
//! had at its last sample, so the totals never go down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bench::cpu::{ProcStat, all_processes, read_stat, ticks_per_second, ticks_to_duration};

/// How often the tracked processes are read.
pub const PERIOD: Duration = Duration::from_millis(25);
/// Every how many samples `/proc` is scanned for new processes to track.
pub const DISCOVER_EVERY: usize = 8;

/// One sample: the time (µs since the Unix epoch) and each group's CPU since its processes
/// started, in clock ticks.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub at_us: i64,
    pub ticks: Vec<u64>,
}

/// Samples in time order, and the clock tick rate.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub samples: Vec<Sample>,
    pub hz: u64,
}

impl Timeline {
    /// Each group's CPU (ticks, fractional) at `t_us`, interpolated between the samples
    /// around it; `None` outside the sampled span.
    pub fn at(&self, t_us: i64) -> Option<Vec<f64>> {
        let after = self.samples.iter().position(|s| s.at_us >= t_us)?;
        let b = &self.samples[after];
        if b.at_us == t_us {
            return Some(b.ticks.iter().map(|t| *t as f64).collect());
        }
        let a = &self.samples[after.checked_sub(1)?];
        let f = (t_us - a.at_us) as f64 / (b.at_us - a.at_us) as f64;
        Some(
            a.ticks
                .iter()
                .zip(&b.ticks)
                .map(|(x, y)| *x as f64 + (*y as f64 - *x as f64) * f)
                .collect(),
        )
    }

    /// Each group's CPU between two times (`from_us` ≤ `to_us`), as durations; `None` when
    /// the window is not inside the sampled span or is reversed.
    pub fn between(&self, from_us: i64, to_us: i64) -> Option<Vec<Duration>> {
        if to_us < from_us {
            return None;
        }
        let start = self.at(from_us)?;
        let end = self.at(to_us)?;
        Some(
            start
                .iter()
                .zip(&end)
                .map(|(a, b)| {
                    let ticks = (b - a).max(0.0);
                    let whole = ticks.floor() as u64;
                    ticks_to_duration(whole, self.hz)
                        + Duration::from_secs_f64((ticks - whole as f64) / self.hz.max(1) as f64)
                })
                .collect(),
        )
    }
}

/// Which group (index) each process to track belongs to, from a scan of every process.
pub type Discover = Box<dyn FnMut(&[ProcStat]) -> Vec<(usize, u32)> + Send>;

/// Samples a timeline on a thread of its own until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Timeline>,
}

impl Sampler {
    /// Starts sampling `groups` groups of the processes `discover` picks.
    pub fn start(groups: usize, mut discover: Discover) -> Result<Sampler, String> {
        let hz = ticks_per_second().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("cpu-timeline".into())
            .spawn(move || {
                // (pid, starttime) → (group, ticks at its last sample)
                let mut tracked: BTreeMap<(u32, u64), (usize, u64)> = BTreeMap::new();
                let mut samples = Vec::new();
                let mut n = 0usize;
                loop {
                    if n.is_multiple_of(DISCOVER_EVERY) {
                        let all = all_processes();
                        for (group, pid) in discover(&all) {
                            if let Some(stat) = all.iter().find(|s| s.pid == pid) {
                                tracked
                                    .entry((pid, stat.starttime))
                                    .or_insert((group.min(groups.saturating_sub(1)), 0));
                            }
                        }
                    }
                    for ((pid, start), (_, ticks)) in tracked.iter_mut() {
                        if let Ok(stat) = read_stat(*pid)
                            && stat.starttime == *start
                        {
                            *ticks = (*ticks).max(stat.own_ticks());
                        }
                    }
                    let mut totals = vec![0u64; groups];
                    for (group, ticks) in tracked.values() {
                        if let Some(total) = totals.get_mut(*group) {
                            *total += ticks;
                        }
                    }
                    samples.push(Sample {
                        at_us: now_us(),
                        ticks: totals,
                    });
                    n += 1;
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(PERIOD);
                }
                Timeline { samples, hz }
            })
            .map_err(|e| format!("cannot start the CPU sampler thread: {e}"))?;
        Ok(Sampler { stop, thread })
    }

    /// Takes a last sample and returns the timeline.
    pub fn finish(self) -> Result<Timeline, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the CPU sampler thread panicked".to_string())
    }
}

/// Now, in µs since the Unix epoch (the unit of the coordinators' and the tasks' stamps).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Timeline {
        let sample = |at_us, ticks: &[u64]| Sample {
            at_us,
            ticks: ticks.to_vec(),
        };
        Timeline {
            samples: vec![
                sample(1_000, &[0, 10]),
                sample(2_000, &[100, 10]),
                sample(4_000, &[300, 50]),
            ],
            hz: 100,
        }
    }

    #[test]
    fn a_window_is_interpolated_between_the_samples_around_each_end() {
        let t = timeline();
        assert_eq!(t.at(1_500), Some(vec![50.0, 10.0]));
        assert_eq!(t.at(2_000), Some(vec![100.0, 10.0]));
        assert_eq!(t.at(3_000), Some(vec![200.0, 30.0]));
        // 1,500 → 3,000 µs: 150 ticks and 20 ticks at 100 a second.
        let cpu = t.between(1_500, 3_000).unwrap();
        assert_eq!(
            cpu,
            vec![Duration::from_millis(1_500), Duration::from_millis(200)]
        );
        assert_eq!(t.between(2_000, 2_000).unwrap(), vec![Duration::ZERO; 2]);
    }

    #[test]
    fn a_window_outside_the_samples_or_reversed_is_unknown() {
        let t = timeline();
        assert_eq!(t.at(999), None);
        assert_eq!(t.at(4_001), None);
        assert_eq!(t.between(500, 3_000), None);
        assert_eq!(t.between(3_000, 5_000), None);
        assert_eq!(t.between(3_000, 2_000), None);
        let empty = Timeline {
            samples: Vec::new(),
            hz: 100,
        };
        assert_eq!(empty.between(0, 1), None);
    }

    #[test]
    fn a_child_that_burns_cpu_is_seen_in_its_group() {
        use std::sync::atomic::AtomicU32;
        let me = std::process::id();
        let child_pid = Arc::new(AtomicU32::new(0));
        let wanted = Arc::clone(&child_pid);
        let sampler = Sampler::start(
            2,
            Box::new(move |all| {
                let pid = wanted.load(Ordering::Relaxed);
                all.iter()
                    .filter(|s| s.ppid == me && s.pid == pid)
                    .map(|s| (1, s.pid))
                    .collect()
            }),
        )
        .unwrap();
        // The first sample is taken at once; the window starts after it.
        std::thread::sleep(PERIOD * 2);
        let from = now_us();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        child_pid.store(child.id(), Ordering::Relaxed);
        // Found at the next scan of /proc, while it runs or after: its CPU is added then.
        std::thread::sleep(PERIOD * (DISCOVER_EVERY as u32 + 2));
        child.wait().unwrap();
        std::thread::sleep(PERIOD * 2);
        let to = now_us();
        let t = sampler.finish().unwrap();
        let cpu = t.between(from, to).unwrap();
        assert_eq!(cpu[0], Duration::ZERO, "nothing in group 0");
        assert!(cpu[1] >= Duration::from_millis(20), "{cpu:?}");
    }
}
