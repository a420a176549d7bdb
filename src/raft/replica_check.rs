//! This node's results of replica checks (`testfleet cluster check`), kept in memory.
//!
//! A check is a `CheckReplicas` marker in the Raft log. When the state machine applies one
//! ([`super::state_machine`]) it writes everything up to and including the marker to DuckDB,
//! pins a read transaction at exactly that point, and digests every replicated table from it
//! on a background thread ([`spawn_digest`]), so apply does not wait for the hashing. The
//! outcome lands in [`CheckResults`], which the `Control` service reads to answer
//! `GetCheckDigest`. Only the last [`KEPT`] checks are kept: a result is read once, within
//! seconds, by the client that started the check.
//!
//! Nothing here is replicated state: a restarted node has no results, and says so
//! ([`Answer::Missed`]) instead of pretending to be pending forever.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::state::digest::TableSum;
use crate::state::store::PinnedRead;

/// How many checks' results a node keeps.
pub const KEPT: usize = 16;

/// One node's digests at the marker's log index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// The log index the digested state corresponds to (the marker's).
    pub log_index: u64,
    pub tables: Vec<TableSum>,
}

/// Where one check stands on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Progress {
    Computing,
    Done(Digests),
    Failed(String),
}

/// What this node can say about a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The marker is not applied here yet; `applied` is what is.
    Pending {
        applied: Option<u64>,
    },
    /// The marker is applied; the digests are being computed.
    Computing,
    Done(Digests),
    /// The digests could not be computed (a DuckDB error); the reason.
    Failed(String),
    /// This node applied the marker's index but holds no result for it; the reason.
    Missed(String),
}

/// The results of the last [`KEPT`] checks, by log index of their marker.
#[derive(Debug, Default)]
pub struct CheckResults {
    checks: BTreeMap<u64, (String, Progress)>,
    /// Entries up to this index were applied before this process opened the state machine
    /// or arrived in a snapshot: no marker among them was applied here.
    floor: Option<u64>,
}

impl CheckResults {
    /// Results for a state machine that starts from `applied`.
    pub fn starting_at(applied: Option<u64>) -> CheckResults {
        CheckResults {
            checks: BTreeMap::new(),
            floor: applied,
        }
    }

    /// The state jumped to `applied` (a snapshot was installed).
    pub fn skipped_to(&mut self, applied: Option<u64>) {
        self.floor = self.floor.max(applied);
    }

    /// The marker of check `id` at `log_index` was applied; its digests are being computed.
    pub fn begin(&mut self, id: &str, log_index: u64) {
        self.checks
            .insert(log_index, (id.to_string(), Progress::Computing));
        while self.checks.len() > KEPT {
            self.checks.pop_first();
        }
    }

    /// The digests of the check at `log_index` (ignored once evicted).
    pub fn finish(&mut self, log_index: u64, result: Result<Digests, String>) {
        if let Some((_, progress)) = self.checks.get_mut(&log_index) {
            *progress = match result {
                Ok(digests) => Progress::Done(digests),
                Err(e) => Progress::Failed(e),
            };
        }
    }

    /// What this node can say about check `id`, whose marker is at `log_index`, when it
    /// has applied up to `applied`. Call it holding the lock under which markers are applied
    /// (so a marker applied is always already begun here).
    pub fn answer(&self, id: &str, log_index: u64, applied: Option<u64>) -> Answer {
        if let Some((held, progress)) = self.checks.get(&log_index) {
            if held != id {
                return Answer::Failed(format!(
                    "log index {log_index} holds check {held}, not {id}"
                ));
            }
            return match progress {
                Progress::Computing => Answer::Computing,
                Progress::Done(digests) => Answer::Done(digests.clone()),
                Progress::Failed(e) => Answer::Failed(e.clone()),
            };
        }
        if applied.is_none_or(|a| a < log_index) {
            return Answer::Pending { applied };
        }
        if self.floor.is_some_and(|floor| log_index <= floor) {
            return Answer::Missed(format!(
                "this node holds no digest of check {id}: it applied log index {log_index} \
                 before it last restarted, or received that state in a snapshot; start a new check"
            ));
        }
        Answer::Missed(format!(
            "this node holds no digest of check {id} at log index {log_index}: that entry is \
             not this check, or its result was dropped (only the last {KEPT} checks are kept)"
        ))
    }
}

/// Digests `pinned` on a new low-priority thread and records the outcome for the check at
/// `log_index` in `results`. The snapshot of `pinned` must be at `log_index`; any other is
/// recorded as a failure.
pub fn spawn_digest(pinned: PinnedRead, log_index: u64, results: Arc<Mutex<CheckResults>>) {
    let on_thread = results.clone();
    let spawned = std::thread::Builder::new()
        .name("replica-check".to_string())
        .spawn(move || {
            super::state_machine::lower_this_threads_priority();
            let result = digest_at(pinned, log_index);
            lock(&on_thread).finish(log_index, result);
        });
    if let Err(e) = spawned {
        lock(&results).finish(
            log_index,
            Err(format!("cannot start a thread to digest the tables: {e}")),
        );
    }
}

fn digest_at(pinned: PinnedRead, log_index: u64) -> Result<Digests, String> {
    let at = pinned.meta().and_then(|m| m.last_applied_index);
    if at != Some(log_index) {
        return Err(format!(
            "the database held log index {} instead of the check's {log_index} when the read \
             was pinned",
            at.map_or_else(|| "none".to_string(), |i| i.to_string())
        ));
    }
    pinned
        .digest()
        .map(|tables| Digests { log_index, tables })
        .map_err(|e| format!("cannot digest the tables: {e}"))
}

/// Locks the results; a panic elsewhere cannot leave them half-updated.
pub fn lock(results: &Mutex<CheckResults>) -> MutexGuard<'_, CheckResults> {
    results.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(index: u64) -> Digests {
        Digests {
            log_index: index,
            tables: vec![TableSum {
                table: "jobs".into(),
                rows: 1,
                sha256: "ab".into(),
            }],
        }
    }

    #[test]
    fn a_check_is_pending_then_computing_then_done() {
        let mut results = CheckResults::starting_at(Some(10));
        assert_eq!(
            results.answer("c1", 20, Some(15)),
            Answer::Pending { applied: Some(15) }
        );
        results.begin("c1", 20);
        assert_eq!(results.answer("c1", 20, Some(20)), Answer::Computing);
        results.finish(20, Ok(digests(20)));
        assert_eq!(
            results.answer("c1", 20, Some(25)),
            Answer::Done(digests(20))
        );
        results.begin("c2", 30);
        results.finish(30, Err("disk on fire".into()));
        assert_eq!(
            results.answer("c2", 30, Some(30)),
            Answer::Failed("disk on fire".into())
        );
    }

    #[test]
    fn a_marker_applied_before_this_process_started_is_missed_not_pending() {
        let results = CheckResults::starting_at(Some(50));
        assert!(matches!(
            results.answer("old", 40, Some(60)),
            Answer::Missed(why) if why.contains("restarted")
        ));
        assert_eq!(
            CheckResults::starting_at(None).answer("new", 1, None),
            Answer::Pending { applied: None }
        );
    }

    #[test]
    fn a_snapshot_past_the_marker_makes_it_missed() {
        let mut results = CheckResults::starting_at(Some(5));
        results.skipped_to(Some(100));
        assert!(matches!(
            results.answer("c", 80, Some(100)),
            Answer::Missed(why) if why.contains("snapshot")
        ));
    }

    #[test]
    fn only_the_last_checks_are_kept() {
        let mut results = CheckResults::starting_at(None);
        for i in 1..=(KEPT as u64 + 2) {
            results.begin(&format!("c{i}"), i);
            results.finish(i, Ok(digests(i)));
        }
        let last = KEPT as u64 + 2;
        assert!(matches!(
            results.answer("c1", 1, Some(last)),
            Answer::Missed(why) if why.contains("last 16")
        ));
        assert_eq!(
            results.answer(&format!("c{last}"), last, Some(last)),
            Answer::Done(digests(last))
        );
        assert_eq!(results.checks.len(), KEPT);
    }

    #[test]
    fn another_check_at_the_index_is_not_this_one() {
        let mut results = CheckResults::starting_at(None);
        results.begin("mine", 7);
        assert!(matches!(
            results.answer("yours", 7, Some(7)),
            Answer::Failed(why) if why.contains("holds check mine")
        ));
    }
}
