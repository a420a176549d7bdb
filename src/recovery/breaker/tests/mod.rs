//! The breaker in logical time: instants are seconds after an arbitrary wall-clock epoch, and
//! nothing sleeps. Most tests turn jitter off so that waits are exact; the jitter test checks
//! the spread on its own.

//! The transitions are here; what jitter, operators and outcomes do is in [`control`], and
//! snapshots, restores, commands and settings in [`state`].

use super::*;
use crate::state::command::Outcome;

const OK: CallOutcome = CallOutcome::Success;
const FAIL: CallOutcome = CallOutcome::InfraFailure;

/// Some wall-clock instant (mid-2025) in microseconds: the breaker must not care which.
const EPOCH: i64 = 1_750_000_000_000_000;

/// `seconds` after the epoch.
fn t(seconds: f64) -> Timestamp {
    Timestamp(EPOCH + (seconds * 1e6).round() as i64)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The default settings without jitter: the first open wait is exactly 30 s.
fn exact() -> BreakerConfig {
    BreakerConfig {
        jitter: 0.0,
        ..BreakerConfig::default()
    }
}

fn breaker(config: BreakerConfig) -> Breaker {
    Breaker::new(config, t(0.0), 7).expect("valid config")
}

fn transition(from: BreakerState, to: BreakerState, reason: &str) -> Option<Transition> {
    Some(Transition {
        from,
        to,
        reason: reason.to_string(),
    })
}

/// One ordinary call at `now`: it must be allowed without a state change; its outcome is
/// recorded at once.
fn call(b: &mut Breaker, now: Timestamp, outcome: CallOutcome) -> Option<Transition> {
    let (permit, change) = b.allow(now);
    assert_eq!(
        (permit, change),
        (Permit::Allowed, None),
        "a call at {now:?}"
    );
    b.record(now, permit, outcome)
}

/// Fails calls at `now` until the (closed) breaker opens.
fn trip(b: &mut Breaker, now: Timestamp) -> Transition {
    for _ in 0..MAX_WINDOW_CALLS {
        if let Some(transition) = call(b, now, FAIL) {
            assert_eq!(transition.to, BreakerState::Open);
            return transition;
        }
    }
    panic!("the breaker never tripped");
}

/// The open breaker's wait: from entering open to turning half-open.
fn wait_of(b: &Breaker) -> Duration {
    assert_eq!(b.state(), BreakerState::Open);
    let until = b.next_deadline().expect("an open breaker has a deadline");
    elapsed(b.since(), until)
}

/// Polls the open breaker at the end of its wait and takes every trial slot.
fn half_open(b: &mut Breaker) -> Vec<Permit> {
    let now = b.next_deadline().expect("open");
    let change = b.poll(now).expect("half-open at the deadline");
    assert_eq!(
        (change.from, change.to),
        (BreakerState::Open, BreakerState::HalfOpen)
    );
    (0..b.config().half_open_trials)
        .map(|_| {
            let (permit, change) = b.allow(now);
            assert_eq!(change, None);
            assert!(matches!(permit, Permit::Trial { .. }), "{permit:?}");
            permit
        })
        .collect()
}

// --- closed → open ----------------------------------------------------------------------

#[test]
fn closed_trips_when_the_failure_rate_reaches_the_threshold() {
    let mut b = breaker(exact());
    assert_eq!(call(&mut b, t(1.0), OK), None);
    assert_eq!(call(&mut b, t(2.0), OK), None);
    assert_eq!(call(&mut b, t(3.0), FAIL), None);
    assert_eq!(call(&mut b, t(4.0), FAIL), None);
    assert_eq!(
        call(&mut b, t(5.0), FAIL),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            "failure rate 60% (3 of the last 5 calls) ≥ 50% threshold: open for 30.0 s"
        )
    );
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.since(), t(5.0));
    assert_eq!(b.next_deadline(), Some(t(35.0)));
}

#[test]
fn a_rate_below_the_threshold_stays_closed() {
    let mut b = breaker(exact());
    for (i, outcome) in [OK, FAIL, OK, FAIL, OK].into_iter().enumerate() {
        assert_eq!(call(&mut b, t(i as f64), outcome), None);
    }
    assert_eq!(b.snapshot(t(5.0)).failure_rate, 0.4);
    assert_eq!(
        call(&mut b, t(5.0), FAIL),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            "failure rate 50% (3 of the last 6 calls) ≥ 50% threshold: open for 30.0 s"
        )
    );
}

#[test]
fn failures_below_the_minimum_calls_do_not_trip() {
    let mut b = breaker(BreakerConfig {
        minimum_calls: 10,
        ..exact()
    });
    for i in 0..9 {
        assert_eq!(
            call(&mut b, t(f64::from(i)), FAIL),
            None,
            "failure {}",
            i + 1
        );
    }
    let s = b.snapshot(t(9.0));
    assert_eq!(s.state, BreakerState::Closed);
    assert_eq!((s.calls_in_window, s.failures_in_window), (9, 9));
    assert_eq!(s.failure_rate, 1.0);
    assert_eq!(
        call(&mut b, t(9.0), FAIL),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            "failure rate 100% (10 of the last 10 calls) ≥ 50% threshold: open for 30.0 s"
        )
    );
}

#[test]
fn a_count_window_keeps_only_the_last_calls() {
    let mut b = breaker(BreakerConfig {
        window: Window::Count { calls: 4 },
        minimum_calls: 4,
        failure_rate_threshold: 0.75,
        ..exact()
    });
    for outcome in [FAIL, FAIL, OK, OK, OK, OK] {
        assert_eq!(call(&mut b, t(1.0), outcome), None);
    }
    let s = b.snapshot(t(1.0));
    assert_eq!(
        (s.calls_in_window, s.failures_in_window),
        (4, 0),
        "the two failures fell out"
    );
    assert_eq!(b.window.calls.len(), 4);
    assert_eq!(call(&mut b, t(2.0), FAIL), None);
    assert_eq!(call(&mut b, t(2.0), FAIL), None, "2 of the last 4: 50%");
    assert_eq!(
        call(&mut b, t(2.0), FAIL),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            "failure rate 75% (3 of the last 4 calls) ≥ 75% threshold: open for 30.0 s"
        )
    );
}

#[test]
fn a_time_window_forgets_old_failures() {
    let mut b = breaker(BreakerConfig {
        window: Window::Time { span_ms: 60_000 },
        minimum_calls: 3,
        ..exact()
    });
    assert_eq!(call(&mut b, t(0.0), FAIL), None);
    assert_eq!(call(&mut b, t(10.0), FAIL), None);
    assert_eq!(b.snapshot(t(59.999)).calls_in_window, 2);
    assert_eq!(
        b.snapshot(t(60.0)).calls_in_window,
        1,
        "a call exactly the span old is out"
    );
    assert_eq!(b.snapshot(t(70.0)).calls_in_window, 0);
    // Were the two failures still in, this third call would make 2 of 3 and trip.
    assert_eq!(call(&mut b, t(70.0), OK), None);
    assert_eq!(
        b.window.calls.len(),
        1,
        "pruned on the call, not only in snapshots"
    );
    assert_eq!(call(&mut b, t(71.0), FAIL), None);
    assert_eq!(
        call(&mut b, t(72.0), FAIL),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            "failure rate 66.7% (2 of 3 calls in the last 60.0 s) ≥ 50% threshold: open for 30.0 s"
        )
    );
}

#[test]
fn a_time_window_judges_a_result_at_the_time_it_comes_in() {
    let mut b = breaker(BreakerConfig {
        window: Window::Time { span_ms: 60_000 },
        minimum_calls: 3,
        ..exact()
    });
    assert_eq!(call(&mut b, t(0.0), FAIL), None);
    assert_eq!(call(&mut b, t(10.0), FAIL), None);
    let (permit, _) = b.allow(t(20.0));
    // A long call: by the time it fails, the two earlier failures are more than 60 s old.
    assert_eq!(b.record(t(75.0), permit, FAIL), None);
    let s = b.snapshot(t(75.0));
    assert_eq!((s.calls_in_window, s.failures_in_window), (1, 1));
}

#[test]
fn a_flood_cannot_grow_a_time_window() {
    let mut b = breaker(BreakerConfig {
        window: Window::Time { span_ms: 60_000 },
        ..exact()
    });
    for _ in 0..25_000 {
        assert_eq!(call(&mut b, t(1.0), OK), None);
    }
    assert_eq!(b.window.calls.len(), MAX_WINDOW_CALLS);
    assert_eq!(b.snapshot(t(1.0)).calls_in_window, MAX_WINDOW_CALLS);
    assert_eq!(call(&mut b, t(61.5), OK), None);
    assert_eq!(b.window.calls.len(), 1);
}

// --- open → half-open → closed or open ---------------------------------------------------

#[test]
fn open_rejects_calls_until_its_wait_ends_then_poll_turns_it_half_open() {
    let mut b = breaker(exact());
    trip(&mut b, t(5.0));
    for now in [t(5.0), t(20.0), t(34.999)] {
        assert_eq!(b.allow(now), (Permit::Rejected, None));
        assert_eq!(b.poll(now), None);
    }
    assert_eq!(b.snapshot(t(34.999)).rejected_calls, 3);
    assert_eq!(
        b.poll(t(35.0)),
        transition(
            BreakerState::Open,
            BreakerState::HalfOpen,
            "open for 30.0 s: trying 3 trial calls"
        )
    );
    assert_eq!(b.since(), t(35.0));
    assert_eq!(b.next_deadline(), None);
    assert_eq!(b.poll(t(99.0)), None);
}

#[test]
fn the_first_allow_after_the_wait_turns_it_half_open_and_takes_a_trial() {
    let mut b = breaker(exact());
    trip(&mut b, t(5.0));
    let (permit, change) = b.allow(t(35.2));
    assert!(matches!(permit, Permit::Trial { .. }), "{permit:?}");
    assert_eq!(
        change,
        transition(
            BreakerState::Open,
            BreakerState::HalfOpen,
            "open for 30.2 s: trying 3 trial calls"
        )
    );
    assert_eq!(b.snapshot(t(35.2)).trials_in_flight, 1);
}

#[test]
fn half_open_lets_through_only_its_trial_calls() {
    let mut b = breaker(exact());
    trip(&mut b, t(5.0));
    let trials = half_open(&mut b);
    assert_eq!(trials.len(), 3);
    assert_eq!(b.allow(t(35.0)), (Permit::Rejected, None), "a fourth call");
    assert_eq!(b.record(t(36.0), trials[0], OK), None);
    assert_eq!(
        b.allow(t(36.0)),
        (Permit::Rejected, None),
        "the slots are spent for this period, not returned"
    );
    let s = b.snapshot(t(36.0));
    assert_eq!(
        (s.state, s.trials_in_flight, s.rejected_calls),
        (BreakerState::HalfOpen, 2, 2)
    );
}

#[test]
fn half_open_closes_when_every_trial_succeeds() {
    let mut b = breaker(exact());
    trip(&mut b, t(5.0));
    let trials = half_open(&mut b);
    assert_eq!(b.record(t(36.0), trials[0], OK), None);
    assert_eq!(b.record(t(37.0), trials[1], OK), None);
    assert_eq!(
        b.record(t(38.0), trials[2], OK),
        transition(
            BreakerState::HalfOpen,
            BreakerState::Closed,
            "3 trial calls succeeded: closed"
        )
    );
    let s = b.snapshot(t(38.0));
    assert_eq!((s.state, s.since), (BreakerState::Closed, t(38.0)));
    assert_eq!(
        (s.calls_in_window, s.failures_in_window, s.failure_rate),
        (0, 0, 0.0)
    );
    assert_eq!(
        (s.trials_in_flight, s.reopens, s.next_trial_at),
        (0, 0, None)
    );
    assert_eq!(
        call(&mut b, t(39.0), FAIL),
        None,
        "the window starts afresh"
    );
}

#[test]
fn a_failed_trial_opens_it_again_for_twice_as_long() {
    let mut b = breaker(exact());
    trip(&mut b, t(5.0));
    let trials = half_open(&mut b);
    assert_eq!(b.record(t(36.0), trials[0], OK), None);
    assert_eq!(
        b.record(t(37.0), trials[1], FAIL),
        transition(
            BreakerState::HalfOpen,
            BreakerState::Open,
            "trial call failed: open again for 60.0 s (re-open 1)"
        )
    );
    assert_eq!(b.next_deadline(), Some(t(97.0)));
    assert_eq!(b.snapshot(t(37.0)).reopens, 1);
    // The last trial of that period reports late, and so do ordinary calls from before the
    // trip: none of it moves an open breaker.
    assert_eq!(b.record(t(38.0), trials[2], OK), None);
    assert_eq!(b.record(t(38.0), Permit::Allowed, FAIL), None);
    assert_eq!(
        b.snapshot(t(38.0)).calls_in_window,
        5,
        "the window that tripped"
    );
    // ...nor the next half-open period's trials.
    let next = half_open(&mut b);
    assert_ne!(next[0], trials[2]);
    assert_eq!(b.record(t(98.0), trials[2], FAIL), None, "a stale trial");
    assert_eq!(b.record(t(98.0), Permit::Allowed, FAIL), None);
    assert_eq!(b.record(t(98.0), Permit::Rejected, FAIL), None);
    assert_eq!(b.snapshot(t(98.0)).trials_in_flight, 3);
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[test]
fn the_wait_doubles_with_each_reopen_up_to_the_cap() {
    let mut b = breaker(BreakerConfig {
        open_wait_max_ms: 200_000,
        ..exact()
    });
    trip(&mut b, t(0.0));
    let mut waits = vec![wait_of(&b)];
    for reopen in 1..=4 {
        let trials = half_open(&mut b);
        let now = b.since();
        let change = b.record(now, trials[0], FAIL).expect("open again");
        assert!(
            change.reason.ends_with(&format!("(re-open {reopen})")),
            "{}",
            change.reason
        );
        assert_eq!(b.snapshot(now).reopens, reopen);
        waits.push(wait_of(&b));
    }
    assert_eq!(waits, [secs(30), secs(60), secs(120), secs(200), secs(200)]);
}

#[test]
fn closing_resets_the_backoff() {
    let mut b = breaker(exact());
    trip(&mut b, t(0.0));
    for _ in 0..2 {
        let trials = half_open(&mut b);
        let _ = b.record(b.since(), trials[0], FAIL).expect("open again");
    }
    assert_eq!(wait_of(&b), secs(120));
    let trials = half_open(&mut b);
    let now = b.since();
    for trial in trials {
        let _ = b.record(now, trial, OK);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot(now).reopens, 0);
    trip(&mut b, now);
    assert_eq!(wait_of(&b), secs(30));
}

mod control;
mod state;
