//! Processes' CPU time as the kernel counts it, for the benchmarks' "server CPU per operation".
//!
//! A benchmark that starts its servers (coordinators, workers, or a peer such as etcd) knows
//! their pids; the CPU they spent over a measured window, divided by the operations acknowledged
//! in it, is the fairest figure to put two systems side by side, because it does not depend on
//! how fast the load generator is. The kernel keeps each process's user and system time (all
//! its threads) in `/proc/PID/stat`, in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 a second on
//! Linux): [`parse_stat`] reads one such line (pure), [`read_stat`] reads it for a pid, and
//! [`CpuMeter`] reads a fixed set of pids at once, so that [`CpuMeter::spent`] gives what they
//! spent between two readings.
//!
//! Only a process's own time (`utime + stime`) is counted, not that of the children it waited
//! for (`cutime + cstime`): the `true` a worker runs for a task is the task's cost, not the
//! server's. A tick is 10 ms, so a window must be long against `ticks × processes` for the
//! figure to mean anything: over 5 s of three busy processes the rounding is under 1 %.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Why a CPU figure could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuError {
    #[error("cannot read /proc/{pid}/stat (has the process exited?): {reason}")]
    Read { pid: u32, reason: String },
    #[error("unexpected /proc stat line ({reason}): {line:?}")]
    Parse { reason: String, line: String },
    #[error("sysconf(_SC_CLK_TCK) gave no clock tick rate")]
    ClockTicks,
}

/// The fields of `/proc/PID/stat` the benchmarks use (proc(5) numbers them from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 1.
    pub pid: u32,
    /// Field 2, without its parentheses: the executable's name, up to 15 bytes, which may hold
    /// spaces and parentheses itself.
    pub comm: String,
    /// Field 4.
    pub ppid: u32,
    /// Fields 14 and 15: user and system time of every thread of the process, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Fields 16 and 17: the same for its children it has waited for.
    pub cutime: u64,
    pub cstime: u64,
    /// Field 22: when it started, in clock ticks after boot; with the pid it names the process
    /// even if the pid is reused later.
    pub starttime: u64,
}

impl ProcStat {
    /// The process's own CPU time, `utime + stime`, in clock ticks.
    pub fn own_ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }
}

/// Parses one `/proc/PID/stat` line. The name is everything between the first `(` and the
/// *last* `)`, since a name may contain either; the numbered fields follow that `)`.
pub fn parse_stat(line: &str) -> Result<ProcStat, CpuError> {
    let bad = |reason: &str| CpuError::Parse {
        reason: reason.to_string(),
        line: line.chars().take(200).collect(),
    };
    let open = line
        .find('(')
        .ok_or_else(|| bad("no '(' before the name"))?;
    let close = line
        .rfind(')')
        .ok_or_else(|| bad("no ')' after the name"))?;
    if close < open {
        return Err(bad("')' before '('"));
    }
    let pid = line[..open]
        .trim()
        .parse()
        .map_err(|_| bad("the pid is not a number"))?;
    let comm = line[open + 1..close].to_string();
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    let rest: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64, CpuError> {
        let text = rest
            .get(n - 3)
            .ok_or_else(|| bad(&format!("field {n} is missing")))?;
        text.parse()
            .map_err(|_| bad(&format!("field {n} ({text:?}) is not a number")))
    };
    Ok(ProcStat {
        pid,
        comm,
        ppid: u32::try_from(field(4)?).map_err(|_| bad("the parent pid is out of range"))?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
        starttime: field(22)?,
    })
}

/// Reads and parses `/proc/PID/stat`.
pub fn read_stat(pid: u32) -> Result<ProcStat, CpuError> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| CpuError::Read {
            pid,
            reason: e.to_string(),
        })?;
    parse_stat(text.trim_end())
}

/// The group [`thread_ticks`] puts a process's main thread in, with every thread that has no
/// name of its own (a thread's name is its process's until it sets one: DuckDB's do not).
pub const MAIN_THREADS: &str = "main and unnamed";

/// The group [`thread_cpu_spent`] puts the CPU of threads that ended between two readings in:
/// the process's total counts them, the threads listed at the second reading do not.
pub const ENDED_THREADS: &str = "ended threads";

/// One reading of a process's CPU: its total (every thread, ended ones included) and what its
/// threads listed now spent, summed by thread name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadTicks {
    pub process: u64,
    pub by_name: BTreeMap<String, u64>,
}

/// Reads `/proc/PID/stat` and every `/proc/PID/task/TID/stat` (`comm` there is the thread's
/// name). A thread that ends while they are read is left out.
pub fn thread_ticks(pid: u32) -> Result<ThreadTicks, CpuError> {
    let process = read_stat(pid)?;
    let read_error = |e: std::io::Error| CpuError::Read {
        pid,
        reason: e.to_string(),
    };
    let mut by_name = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).map_err(read_error)? {
        let Ok(line) = std::fs::read_to_string(entry.map_err(read_error)?.path().join("stat"))
        else {
            continue;
        };
        let thread = parse_stat(line.trim_end())?;
        let ticks = thread.own_ticks();
        let name = if thread.comm == process.comm {
            MAIN_THREADS.to_string()
        } else {
            thread.comm
        };
        *by_name.entry(name).or_default() += ticks;
    }
    Ok(ThreadTicks {
        process: process.own_ticks(),
        by_name,
    })
}

/// What a process spent between two readings, by thread name; what threads that ended in
/// between spent is under [`ENDED_THREADS`]. A group whose threads all ended shows what the
/// threads left spent (never less than zero).
pub fn thread_cpu_spent(start: &ThreadTicks, end: &ThreadTicks) -> BTreeMap<String, u64> {
    let mut spent: BTreeMap<String, u64> = end
        .by_name
        .iter()
        .map(|(name, ticks)| {
            let before = start.by_name.get(name).copied().unwrap_or(0);
            (name.clone(), ticks.saturating_sub(before))
        })
        .collect();
    let listed: u64 = spent.values().sum();
    let ended = end
        .process
        .saturating_sub(start.process)
        .saturating_sub(listed);
    if ended > 0 {
        spent.insert(ENDED_THREADS.to_string(), ended);
    }
    spent
}

/// The kernel's clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> Result<u64, CpuError> {
    // SAFETY: sysconf reads a constant of the running system; it takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz)
        .ok()
        .filter(|hz| *hz > 0)
        .ok_or(CpuError::ClockTicks)
}

/// `ticks` clock ticks at `hz` a second as a duration (zero for a zero rate).
pub fn ticks_to_duration(ticks: u64, hz: u64) -> Duration {
    if hz == 0 {
        return Duration::ZERO;
    }
    let whole = ticks / hz;
    let nanos = (ticks % hz) as u128 * 1_000_000_000 / hz as u128;
    Duration::new(whole, nanos as u32)
}

/// Every process on the machine as `/proc` lists it now (a process that exits meanwhile is
/// left out).
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_stat(pid).ok())
        .collect()
}

/// The command line of a process, one string per argument (empty if it cannot be read).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A fixed set of processes whose CPU time is read together.
#[derive(Clone, Debug)]
pub struct CpuMeter {
    pids: Vec<u32>,
    hz: u64,
}

/// What a [`CpuMeter`] read at one moment: each process's own ticks.
#[derive(Clone, Debug)]
pub struct CpuReading {
    at: Instant,
    /// (pid, starttime) → ticks.
    ticks: BTreeMap<(u32, u64), u64>,
}

/// CPU spent by a set of processes over a wall-clock window.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CpuSpent {
    /// All the processes together.
    pub cpu: Duration,
    /// The window.
    pub wall: Duration,
    /// Processes measured.
    pub processes: usize,
}

impl CpuSpent {
    /// Cores kept busy on average (CPU time / wall time).
    pub fn cores(&self) -> f64 {
        ratio(self.cpu.as_secs_f64(), self.wall.as_secs_f64()).unwrap_or(0.0)
    }

    /// Microseconds of CPU per operation, for `ops` operations done in a window of `nominal`
    /// seconds: the CPU rate over the readings' actual window times `nominal`, so that a
    /// reading taken a few ms late does not count work outside the operations' window.
    /// `None` for no operations.
    pub fn us_per_op(&self, ops: usize, nominal: Duration) -> Option<f64> {
        if ops == 0 || self.wall.is_zero() {
            return None;
        }
        Some(self.cores() * nominal.as_secs_f64() * 1e6 / ops as f64)
    }
}

impl CpuMeter {
    /// A meter over `pids`; fails only when the tick rate cannot be read.
    pub fn new(pids: Vec<u32>) -> Result<CpuMeter, CpuError> {
        Ok(CpuMeter {
            pids,
            hz: ticks_per_second()?,
        })
    }

    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Reads every process now; fails if one of them cannot be read (it exited).
    pub fn read(&self) -> Result<CpuReading, CpuError> {
        let mut ticks = BTreeMap::new();
        for pid in &self.pids {
            let stat = read_stat(*pid)?;
            ticks.insert((stat.pid, stat.starttime), stat.own_ticks());
        }
        Ok(CpuReading {
            at: Instant::now(),
            ticks,
        })
    }

    /// CPU spent between `start` and `end`, two readings of this meter.
    pub fn spent(&self, start: &CpuReading, end: &CpuReading) -> Result<CpuSpent, CpuError> {
        let ticks = end.ticks_since(start)?;
        Ok(CpuSpent {
            cpu: ticks_to_duration(ticks, self.hz),
            wall: end.at.saturating_duration_since(start.at),
            processes: end.ticks.len(),
        })
    }

    /// Reads, waits `window`, reads again: what the processes spend while nothing is asked of
    /// them.
    pub async fn idle(&self, window: Duration) -> Result<CpuSpent, CpuError> {
        let start = self.read()?;
        tokio::time::sleep(window).await;
        let end = self.read()?;
        self.spent(&start, &end)
    }
}

impl CpuReading {
    /// Ticks spent since `earlier` by the processes of both readings; a process missing from
    /// either (it exited, or its pid now names another process) makes the window unknown.
    pub fn ticks_since(&self, earlier: &CpuReading) -> Result<u64, CpuError> {
        let mut total = 0u64;
        for (key, now) in &self.ticks {
            let before = earlier.ticks.get(key).ok_or_else(|| CpuError::Read {
                pid: key.0,
                reason: "the process was not the same at both readings".into(),
            })?;
            total = total.saturating_add(now.saturating_sub(*before));
        }
        if earlier.ticks.len() != self.ticks.len() {
            return Err(CpuError::Read {
                pid: earlier
                    .ticks
                    .keys()
                    .find(|k| !self.ticks.contains_key(k))
                    .map_or(0, |k| k.0),
                reason: "the process was not there at the second reading".into(),
            });
        }
        Ok(total)
    }
}

/// `a / b`, or `None` when either is not finite or `b` is not positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_is_split_by_name_and_ended_threads_are_the_remainder() {
        let reading = |process, names: &[(&str, u64)]| ThreadTicks {
            process,
            by_name: names.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
        };
        let start = reading(
            100,
            &[("tokio-rt-worker", 60), ("flusher", 30), ("gone", 10)],
        );
        let end = reading(
            190,
            &[("tokio-rt-worker", 110), ("flusher", 45), ("new", 5)],
        );
        let spent = thread_cpu_spent(&start, &end);
        assert_eq!(spent["tokio-rt-worker"], 50);
        assert_eq!(spent["flusher"], 15);
        assert_eq!(spent["new"], 5);
        // 90 spent in all, 70 by the threads still there.
        assert_eq!(spent[ENDED_THREADS], 20);
        assert_eq!(spent.values().sum::<u64>(), 90);
    }

    #[test]
    fn a_named_thread_of_this_process_is_read_under_its_name() {
        let busy = std::thread::Builder::new()
            .name("tf-cpu-probe".into())
            .spawn(|| {
                let end = Instant::now() + Duration::from_millis(60);
                let mut x = 0u64;
                while Instant::now() < end {
                    x = x.wrapping_mul(31).wrapping_add(7);
                }
                std::hint::black_box(x);
                std::thread::park();
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(80));
        let reading = thread_ticks(std::process::id()).unwrap();
        busy.thread().unpark();
        busy.join().unwrap();
        assert!(reading.by_name.contains_key("tf-cpu-probe"), "{reading:?}");
        assert!(reading.by_name.contains_key(MAIN_THREADS), "{reading:?}");
    }

    /// A real line of a process named `tokio-rt (w) 2`, trimmed of nothing.
    const LINE: &str = "4242 (tokio-rt (w) 2) S 17 4242 17 0 -1 4194560 1200 0 3 0 \
                        731 129 40 12 20 0 9 0 123456 104857600 5000 18446744073709551615 \
                        1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_its_name_parses() {
        let stat = parse_stat(LINE).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "tokio-rt (w) 2");
        assert_eq!(stat.ppid, 17);
        assert_eq!((stat.utime, stat.stime), (731, 129));
        assert_eq!((stat.cutime, stat.cstime), (40, 12));
        assert_eq!(stat.starttime, 123456);
        assert_eq!(stat.own_ticks(), 860);
    }

    #[test]
    fn a_name_that_looks_like_fields_does_not_shift_them() {
        let line = LINE.replace("tokio-rt (w) 2", ") S 1 2 3 (");
        let stat = parse_stat(&line).unwrap();
        assert_eq!(stat.comm, ") S 1 2 3 (");
        assert_eq!((stat.utime, stat.stime), (731, 129));
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for line in [
            "",
            "12 no parentheses 1 2 3",
            "12 (short) S 1",
            "x (name) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
            "12 (name) S 1 2 3 4 5 6 7 8 9 10 eleven 12 13 14 15 16 17 18 19",
            "12 )name( S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
        ] {
            assert!(
                matches!(parse_stat(line), Err(CpuError::Parse { .. })),
                "{line:?}"
            );
        }
    }

    #[test]
    fn ticks_become_durations_at_the_given_rate() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(ticks_to_duration(7, 0), Duration::ZERO);
    }

    #[test]
    fn this_process_can_be_read_and_its_cpu_only_grows() {
        let me = std::process::id();
        let meter = CpuMeter::new(vec![me]).unwrap();
        let start = meter.read().unwrap();
        // Burn a little CPU so that the clock can move (at least one tick, 10 ms).
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let end = meter.read().unwrap();
        let spent = meter.spent(&start, &end).unwrap();
        assert!(spent.cpu >= Duration::from_millis(10), "{spent:?}");
        assert!(
            spent.cpu <= spent.wall + Duration::from_millis(500),
            "{spent:?}"
        );
        assert_eq!(read_stat(me).unwrap().pid, me);
    }

    #[test]
    fn a_process_that_changed_between_readings_makes_the_window_unknown() {
        let reading = |entries: &[((u32, u64), u64)]| CpuReading {
            at: Instant::now(),
            ticks: entries.iter().copied().collect(),
        };
        let a = reading(&[((1, 10), 100), ((2, 20), 50)]);
        let b = reading(&[((1, 10), 130), ((2, 20), 55)]);
        assert_eq!(b.ticks_since(&a), Ok(35));
        // Pid 2 now names another process (another start time).
        let reused = reading(&[((1, 10), 130), ((2, 99), 1)]);
        assert!(reused.ticks_since(&a).is_err());
        let gone = reading(&[((1, 10), 130)]);
        assert!(gone.ticks_since(&a).is_err());
    }

    #[test]
    fn cpu_per_operation_scales_to_the_nominal_window() {
        let spent = CpuSpent {
            cpu: Duration::from_millis(1_500),
            wall: Duration::from_millis(1_010),
            processes: 3,
        };
        // 1.485 cores over a nominal 1 s for 1,000 operations: 1,485 µs each.
        let per = spent.us_per_op(1_000, Duration::from_secs(1)).unwrap();
        assert!((per - 1_485.1).abs() < 0.1, "{per}");
        assert_eq!(spent.us_per_op(0, Duration::from_secs(1)), None);
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
    }

    #[test]
    fn a_missing_process_is_a_read_error() {
        // Pid 0 is never a process in /proc.
        assert!(matches!(read_stat(0), Err(CpuError::Read { pid: 0, .. })));
    }
}
