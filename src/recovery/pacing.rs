//! Requeue pacing while the system breaker is open (ARCHITECTURE.md § Circuit breakers).
//!
//! A mass outage is system recovery's to handle — it holds dispatch, requeues what the lost
//! workers held in one sweep and resumes gradually — not a thousand single requeues thrashing
//! tasks between the survivors and spending their retry budgets. So while the system breaker
//! is open (or forced open), the leader's *per-attempt* requeues — an attempt stalled past
//! its timeout on a worker that still heartbeats (the health monitor), an attempt a
//! reconnecting worker no longer knows (its session) — each need a token from a
//! [`RequeuePacer`]: a token bucket refilled at `rate` per second and holding one second's
//! worth (at least one). An attempt refused a token stays as it is and is found again by the
//! next scan or heartbeat; nothing is lost, it only waits. A worker's failure still requeues
//! everything it held at once (`FailWorker`: those tasks have no holder left), and the
//! system recovery episode's orphan sweep is not paced: it is the one in charge.
//!
//! With the system breaker closed or half-open, or breakers off, every requeue passes and the
//! bucket stays full. Pure: the caller passes `now` and whether the breaker is open.

use std::time::Instant;

/// A token bucket for per-attempt requeues, in force while the system breaker is open.
#[derive(Clone, Debug)]
pub struct RequeuePacer {
    /// Tokens per second.
    rate: f64,
    tokens: f64,
    refilled: Option<Instant>,
    /// Requeues refused a token since the pacer was made.
    deferred: u64,
}

impl RequeuePacer {
    /// A pacer allowing `rate` requeues per second while the system breaker is open; `rate`
    /// must be positive and finite (checked with the configuration).
    pub fn new(rate: f64) -> Self {
        RequeuePacer {
            rate,
            tokens: Self::burst(rate),
            refilled: None,
            deferred: 0,
        }
    }

    /// The bucket's size: one second's worth, at least one requeue.
    fn burst(rate: f64) -> f64 {
        rate.max(1.0)
    }

    /// May one requeue be proposed at `now`? Always while the system breaker is not open;
    /// otherwise only with a token, which it takes.
    pub fn allow(&mut self, now: Instant, system_open: bool) -> bool {
        let burst = Self::burst(self.rate);
        if !system_open {
            self.tokens = burst;
            self.refilled = Some(now);
            return true;
        }
        let elapsed = self
            .refilled
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.tokens = (self.tokens + elapsed * self.rate).min(burst);
        self.refilled = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.deferred += 1;
            false
        }
    }

    /// Requeues refused a token so far.
    pub fn deferred(&self) -> u64 {
        self.deferred
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn closed_lets_everything_through_and_keeps_the_bucket_full() {
        let start = Instant::now();
        let mut pacer = RequeuePacer::new(2.0);
        assert!((0..1000).all(|_| pacer.allow(start, false)));
        assert_eq!(pacer.deferred(), 0);
        // Opening right after a burst of closed requeues still starts with a full bucket.
        assert!(pacer.allow(start + ms(1), true));
        assert!(pacer.allow(start + ms(2), true));
        assert!(!pacer.allow(start + ms(3), true));
    }

    #[test]
    fn open_paces_at_the_rate_after_a_burst_of_one_second() {
        let start = Instant::now();
        let mut pacer = RequeuePacer::new(2.0);
        // A scan that finds 10 stalled attempts at once: the burst passes, the rest waits.
        let first: usize = (0..10).filter(|_| pacer.allow(start, true)).count();
        assert_eq!(first, 2);
        assert_eq!(pacer.deferred(), 8);
        // Scans every 100 ms for 5 s, each offering all that still wait: 2 per second pass.
        let mut waiting = 8;
        let mut passed_at = Vec::new();
        for tick in 1..=50 {
            let now = start + ms(100 * tick);
            for _ in 0..waiting {
                if pacer.allow(now, true) {
                    passed_at.push(tick);
                    waiting -= 1;
                    break;
                }
            }
        }
        assert_eq!(waiting, 0);
        assert_eq!(passed_at, [5, 10, 15, 20, 25, 30, 35, 40]);
    }

    #[test]
    fn a_slow_rate_still_lets_one_through_and_a_long_idle_does_not_bank_tokens() {
        let start = Instant::now();
        let mut pacer = RequeuePacer::new(0.2);
        assert!(pacer.allow(start, true));
        assert!(!pacer.allow(start + ms(4_000), true));
        assert!(pacer.allow(start + ms(5_000), true));
        // An hour of quiet refills one second's worth (here: one), not 720.
        let later = start + Duration::from_secs(3_600);
        assert!(pacer.allow(later, true));
        assert!(!pacer.allow(later, true));
    }
}
