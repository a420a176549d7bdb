//! The in-memory mirror of the segments: where each live entry's bytes are, the small values
//! (vote, last purged and committed log ids) and the segment files still needed.
//!
//! Replay at open (`open.rs`) and the writer thread after each fsync (`writer.rs`) change it
//! through the same methods, so a store reopened from disk follows the same rules as the one
//! that wrote it. Readers take the locations they need under the store's lock and read the
//! bytes after releasing it; a segment file stays open while any location refers to it, even
//! after it is deleted.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use super::segment::{Meta, MetaState, Saved};

/// One segment file, open for reading (and, for the newest, writing).
#[derive(Debug)]
pub(super) struct Segment {
    pub seq: u64,
    pub file: File,
    pub path: PathBuf,
}

/// Where one entry's encoded bytes are.
#[derive(Clone, Debug)]
pub(super) struct Loc {
    pub segment: Arc<Segment>,
    pub offset: u64,
    pub len: u32,
}

/// The live log and small values, as the segments on disk hold them.
#[derive(Debug, Default)]
pub(super) struct Log {
    /// Index of `entries[0]`.
    first: u64,
    entries: VecDeque<Loc>,
    pub meta: MetaState,
    /// Segment files still needed, oldest first; the last is the one being written.
    pub segments: VecDeque<Arc<Segment>>,
}

impl Log {
    /// Index of the newest entry, if the log holds any.
    pub fn last_index(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.first + self.entries.len() as u64 - 1)
    }

    /// Index of the oldest entry, if the log holds any.
    pub fn first_index(&self) -> Option<u64> {
        (!self.entries.is_empty()).then_some(self.first)
    }

    pub fn purged_index(&self) -> Option<u64> {
        self.meta.last_purged.as_ref().map(|p| p.index)
    }

    /// Adds the entry `index` after the newest one. It must come right after the newest entry,
    /// or right after the last purged one when the log is empty (any index when nothing was
    /// ever purged). With `after_deleted` (replaying segments whose older siblings were
    /// deleted), an empty log takes any index after the last purged one: the entries between
    /// were in deleted segments and a later purge record names them.
    pub fn push(&mut self, index: u64, loc: Loc, after_deleted: bool) -> Result<(), String> {
        let expected = expected_next(self.last_index(), self.purged_index());
        let fits = match expected {
            Some(next) if index == next => true,
            _ if self.entries.is_empty() => match self.purged_index() {
                None => expected.is_none() || after_deleted,
                Some(purged) => after_deleted && index > purged,
            },
            _ => false,
        };
        if !fits {
            return Err(format!(
                "entry {index} does not follow the log (the next index must be {})",
                expected.map_or("any".to_owned(), |n| n.to_string())
            ));
        }
        if self.entries.is_empty() {
            self.first = index;
        }
        self.entries.push_back(loc);
        Ok(())
    }

    /// Applies one change of a small value (or a truncation or purge of entries).
    pub fn apply(&mut self, change: Meta) {
        match change {
            Meta::Vote(bytes) => self.meta.vote = Some(bytes),
            Meta::Truncate { since } => {
                let keep = since
                    .saturating_sub(self.first)
                    .min(self.entries.len() as u64);
                self.entries.truncate(keep as usize);
            }
            Meta::Purge(saved) => {
                if self.purged_index().is_some_and(|p| p >= saved.index) {
                    return;
                }
                let drop = (saved.index + 1).saturating_sub(self.first);
                let drop = drop.min(self.entries.len() as u64);
                self.entries.drain(..drop as usize);
                self.first += drop;
                self.meta.last_purged = Some(saved);
            }
            Meta::Committed(committed) => self.meta.committed = committed,
        }
    }

    /// The locations of the live entries in `first..=last`, in order.
    pub fn locs(&self, first: u64, last: u64) -> Vec<(u64, Loc)> {
        let Some(newest) = self.last_index() else {
            return Vec::new();
        };
        let (from, to) = (first.max(self.first), last.min(newest));
        if from > to {
            return Vec::new();
        }
        (from..=to)
            .map(|i| (i, self.entries[(i - self.first) as usize].clone()))
            .collect()
    }

    /// The location of the newest entry.
    pub fn last_loc(&self) -> Option<(u64, Loc)> {
        Some((self.last_index()?, self.entries.back()?.clone()))
    }

    /// Takes out the oldest segments no live entry is in (never the one being written): their
    /// small values are in the header of every newer segment, so they are no longer needed.
    pub fn dead_segments(&mut self) -> Vec<Arc<Segment>> {
        let Some(active) = self.segments.back().map(|s| s.seq) else {
            return Vec::new();
        };
        let needed = self.entries.front().map_or(active, |l| l.segment.seq);
        let mut dead = Vec::new();
        while self.segments.front().is_some_and(|s| s.seq < needed) {
            dead.extend(self.segments.pop_front());
        }
        dead
    }

    /// Checks what replay produced: the oldest entry comes right after the last purged one.
    pub fn check_replayed(&self) -> Result<(), String> {
        match (self.first_index(), self.purged_index()) {
            (Some(first), Some(purged)) if first != purged + 1 => Err(format!(
                "the oldest entry is {first} but the last purged one is {purged}: entries \
                 between them are missing"
            )),
            _ => Ok(()),
        }
    }
}

/// The index the next appended entry must have; `None` when any will do (nothing appended or
/// purged yet).
pub(super) fn expected_next(last: Option<u64>, purged: Option<u64>) -> Option<u64> {
    last.or(purged).map(|i| i + 1)
}

/// A log id and its index, as the store keeps it.
pub(super) fn saved(index: u64, bytes: Vec<u8>) -> Saved {
    Saved { index, bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(segment: &Arc<Segment>, offset: u64) -> Loc {
        Loc {
            segment: segment.clone(),
            offset,
            len: 1,
        }
    }

    fn segment(seq: u64) -> Arc<Segment> {
        Arc::new(Segment {
            seq,
            file: tempfile::tempfile().unwrap(),
            path: PathBuf::from(format!("s{seq}")),
        })
    }

    #[test]
    fn push_truncate_purge_and_dead_segments() {
        let (s1, s2) = (segment(1), segment(2));
        let mut log = Log::default();
        log.segments.push_back(s1.clone());
        for i in 5..10 {
            log.push(i, loc(&s1, i), false).unwrap();
        }
        assert!(log.push(11, loc(&s1, 11), false).is_err(), "a hole");
        assert!(log.push(9, loc(&s1, 9), false).is_err(), "an overwrite");
        log.apply(Meta::Truncate { since: 8 });
        assert_eq!((log.first_index(), log.last_index()), (Some(5), Some(7)));
        log.segments.push_back(s2.clone());
        log.push(8, loc(&s2, 0), false).unwrap();
        log.apply(Meta::Purge(saved(6, vec![6])));
        assert_eq!((log.first_index(), log.purged_index()), (Some(7), Some(6)));
        assert!(log.dead_segments().is_empty(), "entry 7 is in segment 1");
        log.apply(Meta::Purge(saved(7, vec![7])));
        assert_eq!(log.dead_segments().len(), 1);
        assert_eq!(log.locs(1, 100).len(), 1);
        // A purge that does not move forward changes nothing.
        log.apply(Meta::Purge(saved(3, vec![3])));
        assert_eq!(log.purged_index(), Some(7));
        // Purging past the end empties the log; the next entry follows the purge.
        log.apply(Meta::Purge(saved(20, vec![20])));
        assert_eq!(log.last_index(), None);
        assert!(log.push(9, loc(&s2, 1), false).is_err());
        log.push(21, loc(&s2, 2), false).unwrap();
        log.check_replayed().unwrap();
    }

    #[test]
    fn replay_after_deleted_segments_takes_a_later_start() {
        let s = segment(3);
        let mut log = Log::default();
        log.apply(Meta::Purge(saved(10, vec![])));
        assert!(log.push(15, loc(&s, 0), false).is_err());
        log.push(15, loc(&s, 0), true).unwrap();
        assert!(log.check_replayed().is_err(), "11..=14 are missing");
        log.apply(Meta::Purge(saved(14, vec![])));
        log.check_replayed().unwrap();
    }
}
