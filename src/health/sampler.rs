//! A coordinator's view of its own health: what it measures, and when that is bad enough
//! for a leader to hand leadership to someone else (ARCHITECTURE.md § Self-health).
//!
//! # What is measured
//!
//! [`Sampler::sample`] reads, for this process and its data directory (Linux only; everything
//! comes from `/proc` and two libc calls, nothing is cached between samples except the
//! previous counters):
//!
//! | [`Sample`] field   | source                                                        |
//! |--------------------|---------------------------------------------------------------|
//! | `cpu`              | `/proc/self/stat` `utime + stime` (all threads), in clock ticks, over the wall time since the previous sample |
//! | `threads`          | `/proc/self/stat` `num_threads`                               |
//! | `rss_bytes`        | `/proc/self/statm` `resident` × page size                     |
//! | `mem_total_bytes`  | `/proc/meminfo` `MemTotal`, read once in [`Sampler::new`]     |
//! | `disk_*_bytes`     | `statvfs(data_dir)`: `f_bavail` and `f_blocks` × `f_frsize`    |
//! | `net_errors`       | `/proc/net/snmp` `Tcp: RetransSegs + InErrs`, delta since the previous sample |
//! | `open_fds`         | entries of `/proc/self/fd`; `fd_limit` from `RLIMIT_NOFILE`   |
//!
//! Counters that only make sense as a rate (CPU ticks, TCP errors) are reported as the change
//! since the previous successful sample; the first sample of a [`Sampler`] reports 0 for both.
//! The caller passes `now`, so the arithmetic is a pure function of two readings
//! (`Reading::since`) and is tested with logical time.
//!
//! Request error rate is not visible in `/proc`: gRPC services count their calls in an
//! [`ErrorRate`] and the health loop takes the rate once per sample.
//!
//! # From numbers to a verdict
//!
//! [`assess`] is pure: a sample, an error rate and [`HealthLimits`] give an [`Assessment`]
//! whose [`HealthLevel`] is the worst of the individual checks, with one human-readable reason
//! per check that fired. `Critical` is what a leader acts on by transferring leadership, so
//! only conditions that another node is likely *not* to share and that make this node a bad
//! leader are critical: a data disk about to fill, memory about to run out, a file-descriptor
//! table about to overflow, or most requests failing. CPU load is at most `Degraded`: the
//! leader carries the most load, so stepping down on CPU would only move the load and invite
//! leadership ping-pong. The thresholds and their reasons are on the fields of
//! [`HealthLimits`].
//!
//! A single sample is one interval's average. The leader loop that acts on `Critical` should
//! still require it on a few consecutive samples, so that one burst does not cost an election.
//!
//! # Limits of the measurement
//!
//! * `/proc/net/snmp` is per network namespace, so `net_errors` covers every process in this
//!   one (the whole machine unless the coordinator runs in a container). It is recorded for
//!   charts but not assessed: without the traffic volume a retransmit count is not a rate.
//! * `MemTotal` is the machine's memory; a cgroup memory limit lower than that is not seen.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::state::command::{Command, NodeId, Timestamp};

const PROC_STAT: &str = "/proc/self/stat";
const PROC_STATM: &str = "/proc/self/statm";
const PROC_FD: &str = "/proc/self/fd";
const PROC_MEMINFO: &str = "/proc/meminfo";
const PROC_SNMP: &str = "/proc/net/snmp";

/// One GiB, the unit of the absolute disk threshold.
const GIB: u64 = 1 << 30;

/// One reading of this coordinator's own resources.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// CPU time this process used since the previous sample, as a fraction of one core
    /// (2.0 = two cores busy the whole interval). 0.0 on a sampler's first sample.
    pub cpu: f64,
    /// Resident set size of this process.
    pub rss_bytes: u64,
    /// The machine's memory (`MemTotal`), the yardstick for `rss_bytes`.
    pub mem_total_bytes: u64,
    /// Space on the data directory's file system that this (unprivileged) process may still
    /// use: `f_bavail`, so the root-reserved blocks do not count as free.
    pub disk_free_bytes: u64,
    /// Size of the data directory's file system. 0 when the file system reports none.
    pub disk_total_bytes: u64,
    /// TCP segments retransmitted plus TCP segments received in error, in this network
    /// namespace, since the previous sample (0 on the first). See [`Sampler`].
    pub net_errors: u64,
    /// Threads of this process.
    pub threads: u64,
    /// File descriptors this process holds open.
    pub open_fds: u64,
    /// The soft `RLIMIT_NOFILE`: opening more than this fails with `EMFILE`.
    /// `u64::MAX` when unlimited.
    pub fd_limit: u64,
}

impl Sample {
    /// The command that records this sample in `health_samples` (memory is the RSS).
    pub fn to_command(&self, node: NodeId, error_rate: f64, at: Timestamp) -> Command {
        Command::HealthSample {
            node,
            cpu: self.cpu,
            mem_bytes: self.rss_bytes,
            disk_free_bytes: self.disk_free_bytes,
            net_errors: self.net_errors,
            error_rate,
            at,
        }
    }
}

/// Why a sample could not be taken. Each variant names the file or call that failed.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// A `/proc` file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },

    /// A `/proc` file was read but does not look as expected (a kernel with a different
    /// format, or a truncated read).
    #[error("malformed {}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was missing or unparsable.
        reason: String,
    },

    /// `statvfs` on the data directory failed (it does not exist, is not accessible, or its
    /// path contains a NUL byte).
    #[error("statvfs({}) failed: {source}", path.display())]
    Statvfs {
        /// The data directory.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },

    /// A `sysconf` or `getrlimit` query failed or gave a nonsensical value.
    #[error("{call} failed: {reason}")]
    System {
        /// The call, e.g. `sysconf(_SC_CLK_TCK)`.
        call: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Samples this process and its data directory. Keeps the previous counters so that CPU and
/// network errors are reported per interval.
#[derive(Debug)]
pub struct Sampler {
    /// The directory whose file system must not fill up (Raft log, snapshots, DuckDB).
    data_dir: PathBuf,
    /// `sysconf(_SC_CLK_TCK)`: the unit of `utime` and `stime` in `/proc/self/stat`.
    clock_ticks_per_second: u64,
    /// `sysconf(_SC_PAGESIZE)`: the unit of `/proc/self/statm`.
    page_size: u64,
    /// `MemTotal`, read once: the machine's memory does not change under a running process.
    mem_total_bytes: u64,
    /// Counters of the last successful sample; `None` before the first.
    previous: Option<Reading>,
}

impl Sampler {
    /// A sampler for this process and `data_dir`. Reads the clock-tick rate, the page size
    /// and `MemTotal` once; the data directory is first looked at by [`Sampler::sample`].
    pub fn new(data_dir: PathBuf) -> Result<Self, SampleError> {
        let clock_ticks_per_second = sysconf(libc::_SC_CLK_TCK, "sysconf(_SC_CLK_TCK)")?;
        let page_size = sysconf(libc::_SC_PAGESIZE, "sysconf(_SC_PAGESIZE)")?;
        let mem_total_bytes = parse_file(PROC_MEMINFO, |text| {
            parse_meminfo_total(&String::from_utf8_lossy(text))
        })?;
        Ok(Sampler {
            data_dir,
            clock_ticks_per_second,
            page_size,
            mem_total_bytes,
            previous: None,
        })
    }

    /// The directory whose file system is sampled.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Reads everything once. `now` is the time of this sample (the caller's clock, so tests
    /// can use logical time); CPU use is averaged over the time since the previous successful
    /// sample. A failed sample leaves the previous counters in place, so the next success
    /// covers the whole gap.
    pub fn sample(&mut self, now: Instant) -> Result<Sample, SampleError> {
        let stat = parse_file(PROC_STAT, parse_stat)?;
        let resident_pages = parse_file(PROC_STATM, |text| {
            parse_statm_resident(&String::from_utf8_lossy(text))
        })?;
        let tcp_errors = parse_file(PROC_SNMP, |text| {
            parse_snmp_tcp_errors(&String::from_utf8_lossy(text))
        })?;
        let disk = disk_space(&self.data_dir)?;
        let open_fds = count_open_fds()?;
        let fd_limit = fd_limit()?;

        let reading = Reading {
            at: now,
            cpu_ticks: stat.cpu_ticks,
            net_errors: tcp_errors,
        };
        let (cpu, net_errors) = match &self.previous {
            Some(previous) => reading.since(previous, self.clock_ticks_per_second),
            None => (0.0, 0),
        };
        self.previous = Some(reading);

        Ok(Sample {
            cpu,
            rss_bytes: resident_pages.saturating_mul(self.page_size),
            mem_total_bytes: self.mem_total_bytes,
            disk_free_bytes: disk.free_bytes,
            disk_total_bytes: disk.total_bytes,
            net_errors,
            threads: stat.threads,
            open_fds,
            fd_limit,
        })
    }
}

/// Another process's CPU time and memory, as `/proc/<pid>` shows them: for the harnesses
/// (`chaos`, `bench`) that watch the processes they started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// Its parent's process id.
    pub parent: u32,
    /// `utime + stime` since it started, all threads.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Reads [`ProcessUsage`] of `pid`; an error when it is gone.
pub fn process_usage(pid: u32) -> Result<ProcessUsage, SampleError> {
    let stat = parse_file(&format!("/proc/{pid}/stat"), parse_stat)?;
    let resident_pages = parse_file(&format!("/proc/{pid}/statm"), |text| {
        parse_statm_resident(&String::from_utf8_lossy(text))
    })?;
    let ticks = sysconf(libc::_SC_CLK_TCK, "sysconf(_SC_CLK_TCK)")?;
    let page_size = sysconf(libc::_SC_PAGESIZE, "sysconf(_SC_PAGESIZE)")?;
    Ok(ProcessUsage {
        parent: stat.parent,
        cpu_seconds: stat.cpu_ticks as f64 / ticks as f64,
        rss_bytes: resident_pages.saturating_mul(page_size),
    })
}

/// The cumulative counters of one sample, kept to compute the next sample's deltas.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    at: Instant,
    /// `utime + stime` of this process, in clock ticks.
    cpu_ticks: u64,
    /// `RetransSegs + InErrs` of TCP in this network namespace.
    net_errors: u64,
}

impl Reading {
    /// CPU use (fraction of one core) and new network errors between `previous` and `self`.
    /// A zero or negative interval gives 0.0 CPU rather than a division by zero; counters
    /// that went backwards (they cannot, short of a namespace change) give 0.
    fn since(&self, previous: &Reading, clock_ticks_per_second: u64) -> (f64, u64) {
        let elapsed = self.at.saturating_duration_since(previous.at).as_secs_f64();
        let ticks = self.cpu_ticks.saturating_sub(previous.cpu_ticks);
        let cpu = if elapsed > 0.0 && clock_ticks_per_second > 0 {
            ticks as f64 / clock_ticks_per_second as f64 / elapsed
        } else {
            0.0
        };
        (cpu, self.net_errors.saturating_sub(previous.net_errors))
    }
}

/// What `/proc/self/stat` contributes to a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    /// `ppid`.
    parent: u32,
    /// `utime + stime`, in clock ticks, summed over all threads.
    cpu_ticks: u64,
    /// `num_threads`.
    threads: u64,
}

/// Parses `/proc/self/stat`. The second field is the command name in parentheses, which may
/// itself contain spaces, parentheses and bytes that are not UTF-8, so the fields are counted
/// from the *last* `)`. Field numbers below are those of proc(5), 1-based.
fn parse_stat(text: &[u8]) -> Result<ProcStat, String> {
    let close = text
        .iter()
        .rposition(|&byte| byte == b')')
        .ok_or("no `)` closing the command name")?;
    let rest = std::str::from_utf8(&text[close + 1..])
        .map_err(|_| "fields after the command name are not text".to_string())?;
    // `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |number: usize, name: &str| -> Result<u64, String> {
        let value = fields.get(number - 3).ok_or_else(|| {
            format!(
                "only {} fields, no field {number} ({name})",
                fields.len() + 2
            )
        })?;
        value
            .parse::<u64>()
            .map_err(|e| format!("field {number} ({name}) {value:?}: {e}"))
    };
    let utime = field(14, "utime")?;
    let stime = field(15, "stime")?;
    let threads = field(20, "num_threads")?;
    let parent = field(4, "ppid")? as u32;
    Ok(ProcStat {
        parent,
        cpu_ticks: utime.saturating_add(stime),
        threads,
    })
}

/// Parses `/proc/self/statm` (`size resident shared text lib data dt`, in pages) and returns
/// `resident`.
fn parse_statm_resident(text: &str) -> Result<u64, String> {
    let resident = text
        .split_ascii_whitespace()
        .nth(1)
        .ok_or("no second field (resident)")?;
    resident
        .parse()
        .map_err(|e| format!("resident {resident:?}: {e}"))
}

/// Parses `/proc/meminfo` and returns `MemTotal` in bytes (the file says kB, meaning KiB).
fn parse_meminfo_total(text: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .ok_or("no MemTotal line")?;
    let mut words = line.split_ascii_whitespace();
    let value = words.next().ok_or("MemTotal has no value")?;
    let kib: u64 = value
        .parse()
        .map_err(|e| format!("MemTotal {value:?}: {e}"))?;
    match words.next() {
        Some("kB") => Ok(kib.saturating_mul(1024)),
        unit => Err(format!("MemTotal unit {unit:?}, expected \"kB\"")),
    }
}

/// Parses `/proc/net/snmp` and returns TCP `RetransSegs + InErrs`, both cumulative since
/// boot (per network namespace).
///
/// Why these two: a retransmitted segment is one the network lost or delayed past the RTO,
/// and `InErrs` counts segments received broken (bad checksum, truncated, bad offset; it
/// already includes `InCsumErrors`, which is therefore not added again). Both mean packets
/// are not getting through. Left out on purpose: `OutRsts`, `AttemptFails` and `EstabResets`,
/// which count resets and refused connections — normal whenever a peer is down or a port is
/// probed, so they measure the *other* side's health, not this node's network.
///
/// The file holds pairs of lines per protocol: `Tcp: <names>` then `Tcp: <values>`.
fn parse_snmp_tcp_errors(text: &str) -> Result<u64, String> {
    let mut tcp = text.lines().filter_map(|line| line.strip_prefix("Tcp:"));
    let names: Vec<&str> = tcp
        .next()
        .ok_or("no Tcp: lines")?
        .split_ascii_whitespace()
        .collect();
    let values: Vec<&str> = tcp
        .next()
        .ok_or("no Tcp: value line after the header")?
        .split_ascii_whitespace()
        .collect();
    if names.len() != values.len() {
        return Err(format!(
            "Tcp: has {} names but {} values",
            names.len(),
            values.len()
        ));
    }
    let counter = |name: &str| -> Result<u64, String> {
        let index = names
            .iter()
            .position(|&n| n == name)
            .ok_or_else(|| format!("no Tcp: {name} counter"))?;
        values[index]
            .parse::<u64>()
            .map_err(|e| format!("Tcp: {name} {:?}: {e}", values[index]))
    };
    Ok(counter("RetransSegs")?.saturating_add(counter("InErrs")?))
}

/// Free and total space of a file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Available to unprivileged processes (`f_bavail`).
    pub free_bytes: u64,
    /// The file system's size (`f_blocks`).
    pub total_bytes: u64,
    /// Mounted read-only (`ST_RDONLY` in `f_flag`).
    pub read_only: bool,
}

/// `statvfs(path)`. Sizes are in units of `f_frsize` (the fundamental block size), falling
/// back to `f_bsize` for file systems that leave it 0.
pub fn disk_space(path: &Path) -> Result<DiskSpace, SampleError> {
    let failed = |source| SampleError::Statvfs {
        path: path.to_path_buf(),
        source,
    };
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        failed(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path contains a NUL byte",
        ))
    })?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and outlives the call; `stats` is writable memory
    // of the type `statvfs` fills in.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    // SAFETY: `statvfs` returned 0, so it initialised the whole struct.
    let stats = unsafe { stats.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let (frsize, bsize, bavail, blocks, flags, read_only) = (
        stats.f_frsize as u64,
        stats.f_bsize as u64,
        stats.f_bavail as u64,
        stats.f_blocks as u64,
        stats.f_flag as u64,
        libc::ST_RDONLY as u64,
    );
    let unit = if frsize > 0 { frsize } else { bsize };
    Ok(DiskSpace {
        free_bytes: bavail.saturating_mul(unit),
        total_bytes: blocks.saturating_mul(unit),
        read_only: flags & read_only != 0,
    })
}

/// Counts the entries of `/proc/self/fd`, less the one descriptor used to list it.
fn count_open_fds() -> Result<u64, SampleError> {
    let failed = |source| SampleError::Read {
        path: PathBuf::from(PROC_FD),
        source,
    };
    let mut count: u64 = 0;
    for entry in fs::read_dir(PROC_FD).map_err(failed)? {
        entry.map_err(failed)?;
        count += 1;
    }
    // The directory handle `read_dir` holds is itself listed.
    Ok(count.saturating_sub(1))
}

/// The soft `RLIMIT_NOFILE`, `u64::MAX` when unlimited.
fn fd_limit() -> Result<u64, SampleError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(SampleError::System {
            call: "getrlimit(RLIMIT_NOFILE)",
            reason: io::Error::last_os_error().to_string(),
        });
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return Ok(u64::MAX);
    }
    #[allow(clippy::unnecessary_cast)] // `rlim_t` differs between targets
    Ok(limit.rlim_cur as u64)
}

/// A positive `sysconf` value.
fn sysconf(name: libc::c_int, call: &'static str) -> Result<u64, SampleError> {
    // SAFETY: `sysconf` only reads its integer argument.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| SampleError::System {
            call,
            reason: format!("returned {value}"),
        })
}

/// Reads `path` whole and parses it, naming the file in any error.
fn parse_file<T>(
    path: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, SampleError> {
    let text = fs::read(path).map_err(|source| SampleError::Read {
        path: PathBuf::from(path),
        source,
    })?;
    parse(&text).map_err(|reason| SampleError::Malformed {
        path: PathBuf::from(path),
        reason,
    })
}

/// Counts a gRPC service's calls and how many of them failed, for the request error rate of
/// a [`Sample`]. Shared (in an `Arc`) by every service of a node; the health loop takes the
/// rate once per sample.
///
/// Both counts live in one `AtomicU64` (errors in the high half, calls in the low half) so a
/// take never sees an error without its call: with two separate atomics a call recorded
/// during a take could land half in one window and half in the next, giving a rate above 1.
#[derive(Debug, Default)]
pub struct ErrorRate {
    /// `errors << 32 | calls` since the last take; each half saturates at `u32::MAX`.
    counts: AtomicU64,
}

/// Calls and failed calls in one window of an [`ErrorRate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorCounts {
    /// Calls recorded.
    pub calls: u64,
    /// Of those, failed.
    pub errors: u64,
}

impl ErrorCounts {
    /// `errors / calls`, 0.0 when there were no calls.
    pub fn rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }
}

const CALLS_MASK: u64 = u32::MAX as u64;

impl ErrorRate {
    /// A counter with nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one call. `ok` should be false only for failures that are this node's fault
    /// (internal errors, storage failures, unavailable), not for a client's bad request or a
    /// "not the leader" redirect: the rate is meant to say whether this node is broken.
    pub fn record(&self, ok: bool) {
        // `fetch_update` never fails here: the closure always returns `Some`.
        let _ = self
            .counts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                Some(add_call(word, ok))
            });
    }

    /// The calls and errors since the previous take, and starts a new window.
    pub fn take(&self) -> ErrorCounts {
        let word = self.counts.swap(0, Ordering::Relaxed);
        ErrorCounts {
            calls: word & CALLS_MASK,
            errors: word >> 32,
        }
    }

    /// Errors divided by calls since the previous take (0.0 when there were none), and
    /// starts a new window. With little traffic one failure is a large rate; callers that
    /// mind use [`ErrorRate::take`] and look at `calls` too.
    pub fn take_rate(&self) -> f64 {
        self.take().rate()
    }
}

/// `word` with one more call (and one more error unless `ok`). A half that is full stays
/// full; the call is then dropped whole, so the rate stays that of the calls counted.
fn add_call(word: u64, ok: bool) -> u64 {
    let calls = word & CALLS_MASK;
    let errors = word >> 32;
    if calls == CALLS_MASK || errors == CALLS_MASK {
        return word;
    }
    let errors = if ok { errors } else { errors + 1 };
    errors << 32 | (calls + 1)
}

/// How healthy a node is, worst last (so `max` of several is the overall level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthLevel {
    /// Nothing to report.
    Ok,
    /// Worth a warning and a dashboard colour; no action.
    Degraded,
    /// The node should not lead: a leader transfers leadership.
    Critical,
}

/// The verdict on one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The worst level of any check.
    pub level: HealthLevel,
    /// One line per check that was not `Ok`, in a fixed order (cpu, memory, disk, file
    /// descriptors, error rate).
    pub reasons: Vec<String>,
}

/// Where [`assess`] draws its lines. Fractions are of the named total; a check whose
/// critical threshold is reached does not also report its degraded one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthLimits {
    /// CPU (fraction of one core) at or above which the node is degraded. Default 0.9: the
    /// Raft heartbeat and apply paths need a little headroom, and a node close to a full
    /// core is where heartbeat delays start. Never critical (see the module docs).
    pub cpu_degraded: f64,
    /// RSS as a fraction of `MemTotal` at or above which the node is degraded. Default 0.6:
    /// a coordinator's memory is its in-memory view plus DuckDB's buffer (capped per
    /// instance), so this much is a leak or a misconfigured DuckDB `memory_limit`.
    pub rss_degraded: f64,
    /// RSS as a fraction of `MemTotal` at or above which the node is critical. Default 0.8:
    /// past this the OOM killer (or swapping, which stalls heartbeats) is near, and a leader
    /// killed mid-term costs a full election timeout instead of a quick transfer.
    pub rss_critical: f64,
    /// Free data-disk space, as a fraction of its size, below which the node is degraded.
    /// Default 0.10: time to purge logs or add space while writes still succeed.
    pub disk_free_degraded: f64,
    /// Free data-disk space, as a fraction of its size, below which the node is critical.
    /// Default 0.05: a snapshot or DuckDB checkpoint can need several percent at once, and a
    /// leader whose log append fails with `ENOSPC` stops the whole cluster's progress.
    pub disk_free_critical: f64,
    /// Free data-disk space in bytes below which the node is critical whatever the fraction.
    /// Default 1 GiB: on a large disk 5 % is plenty, but a snapshot plus a checkpoint needs
    /// room in absolute terms.
    pub disk_free_critical_bytes: u64,
    /// Free data-disk space in bytes below which the node is degraded whatever the fraction.
    /// Default 0 (off): the fraction decides. A small data disk (a tmpfs, a volume sized for
    /// the database) is judged by bytes, not by its share of a large one.
    pub disk_free_degraded_bytes: u64,
    /// Open descriptors as a fraction of the soft `RLIMIT_NOFILE` at or above which the node
    /// is degraded. Default 0.8.
    pub fds_degraded: f64,
    /// Open descriptors as a fraction of the soft `RLIMIT_NOFILE` at or above which the node
    /// is critical. Default 0.95: at the limit `accept` fails with `EMFILE`, so workers
    /// cannot open sessions and snapshots cannot be written; stepping down also closes the
    /// worker sessions that hold most of the descriptors.
    pub fds_critical: f64,
    /// Request error rate at or above which the node is degraded. Default 0.1: one call in
    /// ten failing through this node's fault is far above the noise of healthy operation.
    pub error_rate_degraded: f64,
    /// Request error rate at or above which the node is critical. Default 0.5: when most
    /// calls fail the node is broken (storage errors, a wedged apply), and another node can
    /// serve them.
    pub error_rate_critical: f64,
}

impl Default for HealthLimits {
    fn default() -> Self {
        HealthLimits {
            cpu_degraded: 0.9,
            rss_degraded: 0.6,
            rss_critical: 0.8,
            disk_free_degraded: 0.10,
            disk_free_critical: 0.05,
            disk_free_critical_bytes: GIB,
            disk_free_degraded_bytes: 0,
            fds_degraded: 0.8,
            fds_critical: 0.95,
            error_rate_degraded: 0.1,
            error_rate_critical: 0.5,
        }
    }
}

/// Judges `sample` and `error_rate` against `limits`. Pure: no I/O, no clock.
///
/// A total of 0 (no `MemTotal`, a file system that reports no size, no fd limit) skips the
/// checks that divide by it, except that the absolute disk floor still applies when the size
/// is known.
pub fn assess(sample: &Sample, error_rate: f64, limits: &HealthLimits) -> Assessment {
    let mut assessment = Assessment {
        level: HealthLevel::Ok,
        reasons: Vec::new(),
    };
    let mut report = |level: HealthLevel, reason: String| {
        assessment.level = assessment.level.max(level);
        assessment.reasons.push(reason);
    };

    if sample.cpu >= limits.cpu_degraded {
        report(
            HealthLevel::Degraded,
            format!(
                "cpu {:.2} of a core >= {:.2}",
                sample.cpu, limits.cpu_degraded
            ),
        );
    }

    if sample.mem_total_bytes > 0 {
        let used = sample.rss_bytes as f64 / sample.mem_total_bytes as f64;
        let describe = |limit: f64| {
            format!(
                "rss {} is {} of memory {} >= {}",
                gib(sample.rss_bytes),
                percent(used),
                gib(sample.mem_total_bytes),
                percent(limit)
            )
        };
        if used >= limits.rss_critical {
            report(HealthLevel::Critical, describe(limits.rss_critical));
        } else if used >= limits.rss_degraded {
            report(HealthLevel::Degraded, describe(limits.rss_degraded));
        }
    }

    if sample.disk_total_bytes > 0 {
        let free = sample.disk_free_bytes as f64 / sample.disk_total_bytes as f64;
        let describe = |limit: String| {
            format!(
                "data disk free {} ({} of {}) < {limit}",
                gib(sample.disk_free_bytes),
                percent(free),
                gib(sample.disk_total_bytes),
            )
        };
        if free < limits.disk_free_critical {
            report(
                HealthLevel::Critical,
                describe(percent(limits.disk_free_critical)),
            );
        } else if sample.disk_free_bytes < limits.disk_free_critical_bytes {
            report(
                HealthLevel::Critical,
                describe(gib(limits.disk_free_critical_bytes)),
            );
        } else if free < limits.disk_free_degraded {
            report(
                HealthLevel::Degraded,
                describe(percent(limits.disk_free_degraded)),
            );
        } else if sample.disk_free_bytes < limits.disk_free_degraded_bytes {
            report(
                HealthLevel::Degraded,
                describe(gib(limits.disk_free_degraded_bytes)),
            );
        }
    }

    if sample.fd_limit > 0 && sample.fd_limit != u64::MAX {
        let used = sample.open_fds as f64 / sample.fd_limit as f64;
        let describe = |limit: f64| {
            format!(
                "{} open fds of limit {} >= {}",
                sample.open_fds,
                sample.fd_limit,
                percent(limit)
            )
        };
        if used >= limits.fds_critical {
            report(HealthLevel::Critical, describe(limits.fds_critical));
        } else if used >= limits.fds_degraded {
            report(HealthLevel::Degraded, describe(limits.fds_degraded));
        }
    }

    let describe = |limit: f64| format!("error rate {} >= {}", percent(error_rate), percent(limit));
    if error_rate >= limits.error_rate_critical {
        report(HealthLevel::Critical, describe(limits.error_rate_critical));
    } else if error_rate >= limits.error_rate_degraded {
        report(HealthLevel::Degraded, describe(limits.error_rate_degraded));
    }

    assessment
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB as f64)
}

#[cfg(test)]
mod tests;
