//! When a store gives the allocator's free memory back to the system after a flush.
//!
//! A large flush follows a burst of short-lived allocations (a submitted job decoded, applied,
//! its rows built and appended), and glibc keeps what they freed inside its heaps, so the
//! store trims after one (`release_free_memory`). A trim is not free: `malloc_trim` walks
//! every arena and `madvise`s each free page away, and the pages the allocator reuses next are
//! faulted in and zeroed again. Under a steady load every flush is large (256 writers: about
//! 6,000 rows each), and trimming after each one was about 2 % of the three coordinators' CPU
//! in a `perf` profile. So a trim is owed after a large flush but done at most once per
//! [`TRIM_EVERY`]; one owed when that interval has not passed is done by the next flush after
//! it, or by the flusher when it has been idle for a while ([`Trim::idle`]). A burst therefore
//! still ends trimmed, within about [`TRIM_EVERY`] of its last large flush.
//!
//! The decision is pure, on times given by the caller (`Instant`s in the store, logical ones
//! in the tests).

use std::ops::Add;
use std::time::Duration;

/// A flush of at least this many rows leaves a trim owed.
pub const TRIM_AFTER_ROWS: usize = 1_000;

/// At most one trim per this interval.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Whether a trim is owed and when the last one was done.
#[derive(Debug)]
pub struct Trim<T> {
    owed: bool,
    last: Option<T>,
}

impl<T> Default for Trim<T> {
    fn default() -> Self {
        Trim {
            owed: false,
            last: None,
        }
    }
}

impl<T: Copy + Ord + Add<Duration, Output = T>> Trim<T> {
    /// After a flush of `rows` rows at `now`: whether to trim now.
    pub fn after_flush(&mut self, rows: usize, now: T) -> bool {
        self.owed |= rows >= TRIM_AFTER_ROWS;
        self.due(now)
    }

    /// When the flusher has had nothing to write for a while, at `now`: whether to trim now.
    pub fn idle(&mut self, now: T) -> bool {
        self.due(now)
    }

    fn due(&mut self, now: T) -> bool {
        let allowed = self.last.is_none_or(|last| now >= last + TRIM_EVERY);
        if self.owed && allowed {
            self.owed = false;
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logical time in milliseconds.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Ms(u64);

    impl Add<Duration> for Ms {
        type Output = Ms;
        fn add(self, d: Duration) -> Ms {
            Ms(self.0 + d.as_millis() as u64)
        }
    }

    const EVERY: u64 = TRIM_EVERY.as_millis() as u64;

    #[test]
    fn a_small_flush_owes_nothing() {
        let mut trim = Trim::default();
        assert!(!trim.after_flush(TRIM_AFTER_ROWS - 1, Ms(0)));
        assert!(!trim.idle(Ms(10 * EVERY)));
    }

    #[test]
    fn the_first_large_flush_trims_at_once() {
        let mut trim = Trim::default();
        assert!(trim.after_flush(TRIM_AFTER_ROWS, Ms(5)));
        assert!(
            !trim.idle(Ms(10 * EVERY)),
            "the trim was done, nothing is owed"
        );
    }

    #[test]
    fn large_flushes_in_a_row_trim_once_per_interval() {
        let mut trim = Trim::default();
        let trims: Vec<u64> = (0..40u64)
            .map(|i| Ms(i * 250))
            .filter(|&now| trim.after_flush(6_000, now))
            .map(|now| now.0)
            .collect();
        assert_eq!(trims, vec![0, EVERY, 2 * EVERY, 3 * EVERY, 4 * EVERY]);
    }

    #[test]
    fn a_trim_owed_is_done_by_a_later_small_flush_or_when_idle() {
        let mut trim = Trim::default();
        assert!(trim.after_flush(5_000, Ms(0)));
        // Owed, but too soon.
        assert!(!trim.after_flush(5_000, Ms(250)));
        assert!(!trim.idle(Ms(EVERY - 1)));
        // A small flush after the interval does it.
        assert!(trim.after_flush(10, Ms(EVERY)));
        assert!(!trim.after_flush(10, Ms(3 * EVERY)));

        // And with no flush at all, the idle flusher does it.
        let mut trim = Trim::default();
        assert!(trim.after_flush(5_000, Ms(0)));
        assert!(!trim.after_flush(5_000, Ms(100)));
        assert!(trim.idle(Ms(EVERY + 100)));
        assert!(!trim.idle(Ms(5 * EVERY)));
    }
}
