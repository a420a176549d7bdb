//! The I/O of self-healing's relief actions (ARCHITECTURE.md § Self-health): what a node does
//! when its data disk or its memory runs short. [`crate::health::healing::Healer`] decides
//! when; these functions act and measure, and return whether every step succeeded plus the
//! `details` JSON of the `system_recovery_history` row that records them.
//!
//! **Disk** ([`relieve_disk`]), in the data directory:
//! 1. a Raft snapshot (`trigger().snapshot()`), waited for until it covers what was applied
//!    when it was asked for, then a log purge up to it (`trigger().purge_log`). The purge
//!    ignores `max_in_snapshot_log_to_keep`: a follower lagging behind it will need the
//!    snapshot, which is the price of the space. openraft may delay a purge while it still
//!    replicates those entries; the row says how far the purge had got when measured;
//! 2. a DuckDB `CHECKPOINT` (the WAL folded into the file and truncated), taken under the
//!    store lock that serialises the flusher, so it never interleaves with apply's writes;
//! 3. this node's own stale temporary files: `*.tmp` in the snapshot directory (an atomic
//!    write interrupted by a crash) and DuckDB's spill files in `<db file>.tmp/`, each only
//!    when older than `temp_file_min_age_ms` and not open in this process.
//!
//! Free bytes are measured (`statvfs`) before and after.
//!
//! **Memory** ([`relieve_memory`]): DuckDB's `memory_limit` is lowered to
//! `memory_limit_fraction` of `duckdb_memory_limit` (DuckDB evicts its buffers down to it),
//! then glibc's `malloc_trim(0)` returns freed heap pages to the system. RSS is measured
//! before and after. [`restore_memory`] sets the configured limit back.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use openraft::async_runtime::WatchReceiver;
use serde_json::{Value, json};

use super::Coordinator;
use crate::health::healing::memory_threshold;
use crate::health::sampler::{Assessment, Sample, disk_space, process_usage};

/// How long a disk relief waits for the snapshot it asked for, and for the purge after it.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(30);
const PURGE_WAIT: Duration = Duration::from_secs(10);

/// Snapshot and purge, checkpoint, stale temporary files; free bytes before and after.
pub async fn relieve_disk(
    node: &Coordinator,
    sample: &Sample,
    assessment: &Assessment,
) -> (bool, Value) {
    let config = node.config();
    let data_dir = config.data_dir();
    let free = |dir: &Path| disk_space(dir).map(|d| d.free_bytes).ok();
    let free_before = free(&data_dir);
    let started = Instant::now();
    let (snapshot_ok, snapshot) = snapshot_and_purge(node).await;

    let checkpoint_started = Instant::now();
    let state = node.state().clone();
    let checkpoint = tokio::task::spawn_blocking(move || state.checkpoint())
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    let checkpoint_ms = checkpoint_started.elapsed().as_millis() as u64;

    let min_age = Duration::from_millis(config.self_healing.temp_file_min_age_ms);
    let mut db_temp = config.db_path.clone().into_os_string();
    db_temp.push(".tmp");
    let dirs = [
        (config.snapshot_dir(), true),
        (PathBuf::from(db_temp), false),
    ];
    let temp = tokio::task::spawn_blocking(move || remove_stale_temp_files(&dirs, min_age))
        .await
        .unwrap_or_default();

    let free_after = free(&data_dir);
    let reclaimed = match (free_before, free_after) {
        (Some(before), Some(after)) => Some(after as i64 - before as i64),
        _ => None,
    };
    let success = snapshot_ok && checkpoint.is_ok() && temp.errors.is_empty();
    tracing::warn!(
        ?free_before,
        ?free_after,
        ?reclaimed,
        success,
        "disk pressure: snapshot, log purge, checkpoint and temporary files done"
    );
    let details = json!({
        "action": "disk_pressure",
        "node": node.node_id(),
        "level": format!("{:?}", assessment.level).to_lowercase(),
        "reasons": assessment.reasons,
        "data_dir": data_dir.display().to_string(),
        "disk_total_bytes": sample.disk_total_bytes,
        "free_bytes_before": free_before,
        "free_bytes_after": free_after,
        "reclaimed_bytes": reclaimed,
        "took_ms": started.elapsed().as_millis() as u64,
        "snapshot": snapshot,
        "checkpoint": {
            "ok": checkpoint.is_ok(),
            "ms": checkpoint_ms,
            "error": checkpoint.err().map(|e| e.to_string()),
        },
        "temp_files": {
            "removed": temp.removed,
            "bytes": temp.bytes,
            "errors": temp.errors,
        },
    });
    (success, details)
}

/// Asks openraft for a snapshot, waits until one covers what was applied when asked, then
/// purges the log up to it and waits (a while) for the purge.
async fn snapshot_and_purge(node: &Coordinator) -> (bool, Value) {
    let raft = node.raft();
    let previous = node.metrics().snapshot.map(|l| l.index);
    let started = Instant::now();
    let snapshot_index = match node.snapshot_now(SNAPSHOT_WAIT).await {
        Ok(taken) => Some(taken.index),
        Err(error) => {
            return (
                false,
                json!({ "ok": false, "previous_index": previous, "error": error }),
            );
        }
    };
    let mut watch = raft.metrics();
    let snapshot_ms = started.elapsed().as_millis() as u64;
    let Some(upto) = snapshot_index else {
        return (false, json!({ "ok": false, "error": "no snapshot index" }));
    };
    let purged_before = node.metrics().purged.map(|l| l.index);
    if let Err(e) = raft.trigger().purge_log(upto).await {
        return (
            false,
            json!({ "ok": false, "index": upto, "ms": snapshot_ms, "purge_error": e.to_string() }),
        );
    }
    let deadline = tokio::time::Instant::now() + PURGE_WAIT;
    let purged = loop {
        let purged = watch.borrow_watched().purged.map(|l| l.index);
        if purged >= Some(upto) {
            break purged;
        }
        if !matches!(
            tokio::time::timeout_at(deadline, watch.changed()).await,
            Ok(Ok(()))
        ) {
            break watch.borrow_watched().purged.map(|l| l.index);
        }
    };
    (
        true,
        json!({
            "ok": true,
            "previous_index": previous,
            "index": upto,
            "ms": snapshot_ms,
            "purge_upto": upto,
            "purged_before": purged_before,
            "purged_after": purged,
        }),
    )
}

/// What [`remove_stale_temp_files`] did.
#[derive(Debug, Default)]
struct Removed {
    removed: u64,
    bytes: u64,
    errors: Vec<String>,
}

/// Removes regular files in `dirs` (only `*.tmp` ones where the flag says so) that are older
/// than `min_age` and not open in this process. A directory that does not exist is skipped.
fn remove_stale_temp_files(dirs: &[(PathBuf, bool)], min_age: Duration) -> Removed {
    let open = open_files();
    let now = SystemTime::now();
    let mut done = Removed::default();
    for (dir, only_tmp) in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let is_tmp = path.extension().is_some_and(|e| e == "tmp");
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= min_age);
            let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
            if !meta.is_file() || (*only_tmp && !is_tmp) || !old || open.contains(&canonical) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), bytes = meta.len(), "removed a stale temporary file");
                    done.removed += 1;
                    done.bytes += meta.len();
                }
                Err(e) => done.errors.push(format!("{}: {e}", path.display())),
            }
        }
    }
    done
}

/// The files this process holds open (`/proc/self/fd`).
fn open_files() -> HashSet<PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Lowers DuckDB's memory limit and trims the heap; RSS before and after.
pub async fn relieve_memory(
    node: &Coordinator,
    sample: &Sample,
    assessment: &Assessment,
) -> (bool, Value) {
    let config = node.config();
    let healing = &config.self_healing;
    let rss_before = rss();
    let configured = memory_limit_bytes(&config.duckdb_memory_limit);
    let target = configured.map(|c| (c as f64 * healing.memory_limit_fraction) as u64);
    let state = node.state().clone();
    let limits = tokio::task::spawn_blocking(move || {
        let before = state.memory_limit()?;
        let after = match target {
            Some(bytes) => state.set_memory_limit(bytes)?,
            None => before.clone(),
        };
        Ok::<_, std::io::Error>((before, after))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    let trimmed = crate::state::store::release_free_memory();
    let rss_after = rss();
    let success = limits.is_ok() && target.is_some();
    tracing::warn!(
        ?rss_before,
        ?rss_after,
        ?limits,
        "memory pressure: DuckDB's memory limit lowered and the heap trimmed"
    );
    let (limit_before, limit_after, error) = match limits {
        Ok((before, after)) => (Some(before), Some(after), None),
        Err(e) => (None, None, Some(e.to_string())),
    };
    let details = json!({
        "action": "memory_pressure",
        "node": node.node_id(),
        "level": format!("{:?}", assessment.level).to_lowercase(),
        "reasons": assessment.reasons,
        "threshold_rss_bytes": memory_threshold(sample, healing),
        "sampled_rss_bytes": sample.rss_bytes,
        "rss_bytes_before": rss_before,
        "rss_bytes_after": rss_after,
        "rss_bytes_freed": rss_before.zip(rss_after).map(|(b, a)| b as i64 - a as i64),
        "duckdb_memory_limit_configured": config.duckdb_memory_limit,
        "duckdb_memory_limit_before": limit_before,
        "duckdb_memory_limit_after": limit_after,
        "malloc_trim_released": trimmed,
        "error": error.or_else(|| target.is_none().then(|| format!(
            "duckdb_memory_limit {:?} is not a size this node can halve",
            config.duckdb_memory_limit
        ))),
    });
    (success, details)
}

/// Sets DuckDB's configured memory limit back.
pub async fn restore_memory(node: &Coordinator) -> (bool, Value) {
    let configured_text = node.config().duckdb_memory_limit.clone();
    let configured = memory_limit_bytes(&configured_text);
    let state = node.state().clone();
    let result = tokio::task::spawn_blocking(move || {
        let before = state.memory_limit()?;
        let after = match configured {
            Some(bytes) => state.set_memory_limit(bytes)?,
            None => before.clone(),
        };
        Ok::<_, std::io::Error>((before, after))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    tracing::info!(
        ?result,
        "memory pressure gone: DuckDB's memory limit restored"
    );
    let details = match &result {
        Ok((before, after)) => json!({
            "action": "memory_restored",
            "node": node.node_id(),
            "rss_bytes": rss(),
            "duckdb_memory_limit_configured": configured_text,
            "duckdb_memory_limit_before": before,
            "duckdb_memory_limit_after": after,
        }),
        Err(e) => json!({
            "action": "memory_restored",
            "node": node.node_id(),
            "error": e.to_string(),
        }),
    };
    (result.is_ok() && configured.is_some(), details)
}

/// This process's resident set size.
fn rss() -> Option<u64> {
    process_usage(std::process::id()).ok().map(|u| u.rss_bytes)
}

/// `duckdb_memory_limit` in bytes, with DuckDB's units (`KB` = 1000 bytes, `KiB` = 1024).
pub fn memory_limit_bytes(text: &str) -> Option<u64> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" | "bytes" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * unit;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_are_read_in_duckdbs_units() {
        assert_eq!(memory_limit_bytes("1GB"), Some(1_000_000_000));
        assert_eq!(memory_limit_bytes("256MB"), Some(256_000_000));
        assert_eq!(memory_limit_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(memory_limit_bytes(" 512 kib "), Some(512 * 1024));
        assert_eq!(memory_limit_bytes("lots"), None);
        assert_eq!(memory_limit_bytes("12 parsecs"), None);
    }

    #[test]
    fn only_old_closed_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = dir.path().join("snapshots");
        let spill = dir.path().join("db.duckdb.tmp");
        std::fs::create_dir_all(&snapshots).unwrap();
        std::fs::create_dir_all(&spill).unwrap();
        std::fs::write(snapshots.join("current.tmp"), vec![0u8; 4096]).unwrap();
        std::fs::write(snapshots.join("current.snapshot"), b"keep").unwrap();
        std::fs::write(spill.join("duckdb_temp_storage-0.tmp"), vec![0u8; 1000]).unwrap();
        let held = std::fs::File::create(spill.join("in_use.block")).unwrap();
        let dirs = [(snapshots.clone(), true), (spill.clone(), false)];
        // Too young: nothing goes.
        let young = remove_stale_temp_files(&dirs, Duration::from_secs(3600));
        assert_eq!((young.removed, young.bytes), (0, 0));
        // Old enough: the stray files go; the snapshot and the open file stay.
        let done = remove_stale_temp_files(&dirs, Duration::ZERO);
        assert_eq!((done.removed, done.bytes), (2, 5096), "{done:?}");
        assert!(done.errors.is_empty());
        assert!(snapshots.join("current.snapshot").exists());
        assert!(spill.join("in_use.block").exists());
        drop(held);
    }
}
