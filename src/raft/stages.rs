//! Where one commit's time goes: per-entry stage timestamps of the commit path, for
//! `testfleet bench commit --breakdown`.
//!
//! Each node has a [`StageClock`], handed to the parts of the commit path that see entries go
//! by: the Control handler that proposes (`Proposed`, `Replied`), the log store (`Appended`,
//! `Flushed`), the Raft network client and service (`Sent`, `Acked` on the leader; `Received`
//! on a follower) and the state machine (`ApplyStarted`, `Applied`). Each records, for the last
//! [`SLOTS`] log indexes, the wall-clock time (µs since the Unix epoch) at which *this node*
//! first saw the entry reach each stage. The benchmark reads every node's clock
//! (`Control.StageTimes`) after a run and lines the nodes up by log index — on one machine they
//! share a clock, so the differences between nodes are real, to a few µs.
//!
//! A clock is off unless the coordinator runs with `--stage-clock`: then recording costs one
//! relaxed atomic load per call, and no memory is allocated. On, the ring takes
//! `SLOTS × (STAGES + 1) × 8` bytes (5 MiB) and each record takes a short lock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Log indexes remembered: the newest ones, older ones overwritten.
pub const SLOTS: usize = 1 << 16;

/// The stages of one entry, in the order they normally happen on the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The leader's Control handler got the proposal, before handing it to Raft.
    Proposed = 0,
    /// The log store was handed the entry (readable from memory from then on).
    Appended = 1,
    /// The log store's fsync that covers the entry returned.
    Flushed = 2,
    /// The leader first sent an AppendEntries carrying the entry.
    Sent = 3,
    /// A follower's Raft service first received an AppendEntries carrying the entry.
    Received = 4,
    /// The leader first got a successful answer to an AppendEntries carrying the entry.
    Acked = 5,
    /// The state machine began applying the entry (it was committed).
    ApplyStarted = 6,
    /// The state machine had applied it.
    Applied = 7,
    /// The leader's Control handler is answering the proposer.
    Replied = 8,
}

/// How many [`Stage`]s there are.
pub const STAGES: usize = 9;

impl Stage {
    pub const ALL: [Stage; STAGES] = [
        Stage::Proposed,
        Stage::Appended,
        Stage::Flushed,
        Stage::Sent,
        Stage::Received,
        Stage::Acked,
        Stage::ApplyStarted,
        Stage::Applied,
        Stage::Replied,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Proposed => "proposed",
            Stage::Appended => "appended",
            Stage::Flushed => "flushed",
            Stage::Sent => "sent",
            Stage::Received => "received",
            Stage::Acked => "acked",
            Stage::ApplyStarted => "apply_started",
            Stage::Applied => "applied",
            Stage::Replied => "replied",
        }
    }
}

/// One log index's times, µs since the epoch, 0 for a stage not seen.
pub type Times = [u64; STAGES];

/// The ring: for slot `index % SLOTS`, the index it holds now and its times.
struct Ring {
    indexes: Vec<u64>,
    times: Vec<Times>,
}

/// One node's stage timestamps (see the module docs).
pub struct StageClock {
    enabled: AtomicBool,
    ring: Mutex<Option<Ring>>,
}

impl std::fmt::Debug for StageClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageClock")
            .field("enabled", &self.enabled())
            .finish()
    }
}

impl StageClock {
    /// A clock that records (`enabled`) or ignores every call.
    pub fn new(enabled: bool) -> StageClock {
        let ring = enabled.then(|| Ring {
            indexes: vec![u64::MAX; SLOTS],
            times: vec![[0; STAGES]; SLOTS],
        });
        StageClock {
            enabled: AtomicBool::new(enabled),
            ring: Mutex::new(ring),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Notes that entries `first..=last` reached `stage` now, unless they did before.
    pub fn record(&self, first: u64, last: u64, stage: Stage) {
        if self.enabled() {
            self.record_at(first, last, stage, now_us());
        }
    }

    /// As [`StageClock::record`], at a given time.
    pub fn record_at(&self, first: u64, last: u64, stage: Stage, at: u64) {
        if !self.enabled() || last < first {
            return;
        }
        // Only the newest SLOTS of a larger range can be kept.
        let first = first.max(last.saturating_sub(SLOTS as u64 - 1));
        let mut guard = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ring) = guard.as_mut() else { return };
        for index in first..=last {
            let slot = (index % SLOTS as u64) as usize;
            if ring.indexes[slot] != index {
                ring.indexes[slot] = index;
                ring.times[slot] = [0; STAGES];
            }
            let time = &mut ring.times[slot][stage as usize];
            if *time == 0 {
                *time = at;
            }
        }
    }

    /// The times of the indexes in `first..=last` this clock still holds, in index order.
    pub fn read(&self, first: u64, last: u64) -> Vec<(u64, Times)> {
        let guard = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ring) = guard.as_ref() else {
            return Vec::new();
        };
        let first = first.max(last.saturating_sub(SLOTS as u64 - 1));
        (first..=last)
            .filter_map(|index| {
                let slot = (index % SLOTS as u64) as usize;
                (ring.indexes[slot] == index).then(|| (index, ring.times[slot]))
            })
            .collect()
    }
}

/// Now, in µs since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_clock_records_nothing() {
        let clock = StageClock::new(false);
        clock.record_at(1, 5, Stage::Appended, 100);
        assert!(clock.read(1, 5).is_empty());
    }

    #[test]
    fn the_first_time_a_stage_is_seen_is_kept_per_index() {
        let clock = StageClock::new(true);
        clock.record_at(10, 12, Stage::Appended, 100);
        clock.record_at(11, 11, Stage::Appended, 150);
        clock.record_at(12, 12, Stage::Flushed, 180);
        let rows = clock.read(9, 13);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].0, 11);
        assert_eq!(
            rows[1].1[Stage::Appended as usize],
            100,
            "the first time wins"
        );
        assert_eq!(rows[2].1[Stage::Flushed as usize], 180);
        assert_eq!(rows[0].1[Stage::Flushed as usize], 0);
    }

    #[test]
    fn an_index_a_ring_length_later_replaces_the_old_one() {
        let clock = StageClock::new(true);
        clock.record_at(3, 3, Stage::Sent, 7);
        let later = 3 + SLOTS as u64;
        clock.record_at(later, later, Stage::Acked, 9);
        assert!(clock.read(3, 3).is_empty());
        let rows = clock.read(later, later);
        assert_eq!(
            rows[0].1[Stage::Sent as usize],
            0,
            "the old index's times are gone"
        );
        assert_eq!(rows[0].1[Stage::Acked as usize], 9);
        // A range longer than the ring keeps its newest SLOTS entries.
        clock.record_at(0, 3 * SLOTS as u64, Stage::Applied, 1);
        assert_eq!(clock.read(0, 3 * SLOTS as u64).len(), SLOTS);
    }
}
