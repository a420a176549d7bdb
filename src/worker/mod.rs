//! The worker agent: holds a session with the leader and runs the test commands it is given.
//!
//! * [`agent`] — the session: hello (identity, capabilities, labels, slots, what it runs),
//!   heartbeats, assignments in, starts and results out, reconnect with backoff, term fencing.
//! * [`executor`] — one attempt as a subprocess in its own process group, with a timeout, a
//!   bounded output tail, and the outcome classified (passed, failed, timed out, error,
//!   worker fault).
//! * [`faults`] — faults a worker injects into itself for tests and benchmarks
//!   (`--inject-fault`): failed spawns, dropped sessions, stalled or slow heartbeats.
//! * [`marker`] — crash evidence: a run marker per name, whose survival tells the next start
//!   that the previous process crashed.
//! * [`name`] — a default name unique among a host's live workers (`<host>-<n>`).
//! * [`output`] — an attempt's output streamed to the leader while someone watches it.
//! * [`probe`] — what the worker offers, found out: a GPU probe that proves each adapter
//!   computes, declared capabilities, re-probing.

pub mod agent;
pub mod executor;
pub mod faults;
pub mod junit;
pub mod marker;
pub mod name;
pub mod output;
pub mod probe;

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Total memory in GiB, from /proc/meminfo.
fn memory_gb() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 / 1024.0 * 10.0).round() / 10.0)
}

/// The capabilities every worker reports: OS, architecture, CPUs, memory.
pub fn basic_capabilities() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut caps = serde_json::Map::new();
    caps.insert("os".into(), std::env::consts::OS.into());
    caps.insert("arch".into(), std::env::consts::ARCH.into());
    caps.insert("cpus".into(), cpus.into());
    if let Some(gb) = memory_gb() {
        caps.insert("memory_gb".into(), gb.into());
    }
    serde_json::Value::Object(caps).to_string()
}

/// `base` (a capabilities JSON object) with the attempts the worker runs at once as `slots`, so
/// that the `workers` table tells a fleet's capacity (`testfleet pytest` shards by it). A `base`
/// that is not an object is left as it is.
pub fn with_slots(base: &str, slots: u32) -> String {
    match serde_json::from_str(base) {
        Ok(serde_json::Value::Object(mut caps)) => {
            caps.insert("slots".into(), slots.max(1).into());
            serde_json::Value::Object(caps).to_string()
        }
        _ => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slots_join_the_capabilities_and_anything_else_is_left_alone() {
        let caps: serde_json::Value =
            serde_json::from_str(&super::with_slots(&super::basic_capabilities(), 4)).unwrap();
        assert_eq!(caps["slots"], 4);
        assert!(caps["cpus"].as_u64().is_some_and(|n| n >= 1));
        assert_eq!(super::with_slots("{}", 0), r#"{"slots":1}"#);
        assert_eq!(super::with_slots("not json", 2), "not json");
    }
}
