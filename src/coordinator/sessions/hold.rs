//! Start notices held back for a moment, so that a short attempt's start and result are one
//! log entry.
//!
//! Each attempt a worker runs reports twice: started, then finished. Proposed one by one, they
//! are two consensus rounds, each a replicated, fsynced entry on every node, and for an
//! attempt of a few milliseconds the second follows the first at once. A session therefore
//! holds a start notice for up to [`START_HOLD`]: if the attempt's result arrives meanwhile,
//! both are proposed together (`Batcher::propose_after`), the start first; otherwise the
//! start is proposed alone when its time is up. The start keeps the worker's own timestamp,
//! so nothing but the moment the log learns it moves. Nomad's clients do the same with
//! allocation updates, synced to the servers every 200 ms.
//!
//! Pure: the session loop passes the time in.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::state::command::Command;

/// How long a start notice waits for its attempt's result before it is proposed alone.
pub const START_HOLD: Duration = Duration::from_millis(200);

/// An attempt: its task and number.
pub type AttemptKey = (String, u32);

/// The start notices a session holds.
#[derive(Debug, Default)]
pub struct StartHold {
    /// By attempt.
    held: HashMap<AttemptKey, Command>,
    /// When each was held, oldest first (the hold is the same for all, so this is also the
    /// order they fall due); an attempt whose start was taken by its result stays here until
    /// its time, and is then skipped.
    order: VecDeque<(Instant, AttemptKey)>,
}

impl StartHold {
    /// Holds `start` (a `TaskStarted`) for `key`, received at `now`.
    pub fn hold(&mut self, key: AttemptKey, start: Command, now: Instant) {
        if self.held.insert(key.clone(), start).is_none() {
            self.order.push_back((now + START_HOLD, key));
        }
    }

    /// The held start of `key`, taken to be proposed with its result.
    pub fn take(&mut self, key: &AttemptKey) -> Option<Command> {
        self.held.remove(key)
    }

    /// When the oldest held start falls due, if any is held.
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some((due, key)) = self.order.front() {
            if self.held.contains_key(key) {
                return Some(*due);
            }
            self.order.pop_front();
        }
        None
    }

    /// The starts due at `now`, oldest first: to be proposed alone.
    pub fn due(&mut self, now: Instant) -> Vec<Command> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.order.pop_front()
                && let Some(start) = self.held.remove(&key)
            {
                due.push(start);
            }
        }
        due
    }

    /// Every start still held, oldest first (the session is ending).
    pub fn drain(&mut self) -> Vec<Command> {
        let mut all = Vec::with_capacity(self.held.len());
        for (_, key) in self.order.drain(..) {
            if let Some(start) = self.held.remove(&key) {
                all.push(start);
            }
        }
        all
    }

    /// How many starts are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::Timestamp;

    fn start(task: &str) -> Command {
        Command::TaskStarted {
            task: task.into(),
            attempt: 1,
            worker: "w".into(),
            at: Timestamp(7),
        }
    }

    fn key(task: &str) -> AttemptKey {
        (task.to_string(), 1)
    }

    #[test]
    fn a_start_whose_result_comes_in_time_is_taken_and_never_falls_due() {
        let t0 = Instant::now();
        let mut hold = StartHold::default();
        hold.hold(key("a"), start("a"), t0);
        assert_eq!(hold.next_due(), Some(t0 + START_HOLD));
        assert_eq!(hold.take(&key("a")), Some(start("a")));
        assert_eq!(hold.take(&key("a")), None, "taken once");
        assert_eq!(hold.next_due(), None);
        assert!(hold.due(t0 + 2 * START_HOLD).is_empty());
        assert!(hold.is_empty());
    }

    #[test]
    fn starts_fall_due_oldest_first_once_their_hold_is_over() {
        let t0 = Instant::now();
        let step = Duration::from_millis(10);
        let mut hold = StartHold::default();
        hold.hold(key("a"), start("a"), t0);
        hold.hold(key("b"), start("b"), t0 + step);
        hold.hold(key("c"), start("c"), t0 + 2 * step);
        assert_eq!(hold.take(&key("b")), Some(start("b")));
        assert!(hold.due(t0 + START_HOLD - step).is_empty(), "not yet");
        assert_eq!(hold.due(t0 + START_HOLD), vec![start("a")]);
        // "b" was taken: the next due is "c".
        assert_eq!(hold.next_due(), Some(t0 + 2 * step + START_HOLD));
        assert_eq!(hold.len(), 1);
        assert_eq!(hold.due(t0 + 10 * START_HOLD), vec![start("c")]);
        assert!(hold.is_empty());
    }

    #[test]
    fn a_repeated_start_keeps_its_first_place_and_an_ending_session_gets_every_held_start() {
        let t0 = Instant::now();
        let mut hold = StartHold::default();
        hold.hold(key("a"), start("a"), t0);
        hold.hold(key("b"), start("b"), t0);
        hold.hold(key("a"), start("a"), t0 + START_HOLD);
        assert_eq!(hold.due(t0 + START_HOLD), vec![start("a"), start("b")]);
        hold.hold(key("c"), start("c"), t0);
        hold.hold(key("d"), start("d"), t0);
        assert_eq!(hold.drain(), vec![start("c"), start("d")]);
        assert!(hold.is_empty() && hold.next_due().is_none());
    }
}
