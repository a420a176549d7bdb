//! The breaker in logical time: instants are seconds after an arbitrary wall-clock epoch, and
//! nothing sleeps. Most tests turn jitter off so that waits are exact; the jitter test checks
//! the spread on its own.

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

// --- jitter ----------------------------------------------------------------------------

/// The first open wait of a default breaker seeded with `seed`.
fn first_wait(config: BreakerConfig, seed: u64) -> Duration {
    let mut b = Breaker::new(config, t(0.0), seed).expect("valid config");
    trip(&mut b, t(1.0));
    wait_of(&b)
}

#[test]
fn jitter_spreads_waits_within_bounds_and_follows_the_seed() {
    let waits: Vec<f64> = (0..500)
        .map(|seed| first_wait(BreakerConfig::default(), seed).as_secs_f64())
        .collect();
    for &w in &waits {
        assert!((24.0..36.0).contains(&w), "30 s ± 20 %: {w}");
    }
    let lowest = waits.iter().copied().fold(f64::MAX, f64::min);
    let highest = waits.iter().copied().fold(f64::MIN, f64::max);
    assert!(
        lowest < 25.0 && highest > 35.0,
        "spread: {lowest}..{highest}"
    );
    let mean = waits.iter().sum::<f64>() / waits.len() as f64;
    assert!((29.0..31.0).contains(&mean), "centred: {mean}");

    assert_eq!(
        first_wait(BreakerConfig::default(), 42),
        first_wait(BreakerConfig::default(), 42),
        "the same seed, the same wait"
    );
    assert_ne!(
        first_wait(BreakerConfig::default(), 42),
        first_wait(BreakerConfig::default(), 43)
    );
    assert_eq!(first_wait(exact(), 42), secs(30), "no jitter, no spread");
}

#[test]
fn jitter_applies_to_the_capped_wait() {
    let config = BreakerConfig {
        open_wait_max_ms: 40_000,
        ..BreakerConfig::default()
    };
    for seed in 0..100 {
        let mut b = Breaker::new(config.clone(), t(0.0), seed).expect("valid config");
        trip(&mut b, t(0.0));
        for _ in 0..3 {
            let trials = half_open(&mut b);
            let _ = b.record(b.since(), trials[0], FAIL);
        }
        let wait = wait_of(&b).as_secs_f64();
        assert!((32.0..48.0).contains(&wait), "40 s ± 20 %: {wait}");
    }
}

// --- operators --------------------------------------------------------------------------

#[test]
fn reset_clears_window_trials_and_backoff() {
    let mut b = breaker(exact());
    trip(&mut b, t(0.0));
    let trials = half_open(&mut b);
    let _ = b.record(t(30.0), trials[0], FAIL).expect("open again");
    assert_eq!(b.allow(t(31.0)), (Permit::Rejected, None));
    assert_eq!(
        b.reset(t(32.0), "the NFS mount is back"),
        transition(
            BreakerState::Open,
            BreakerState::Closed,
            "reset by an operator: the NFS mount is back"
        )
    );
    let s = b.snapshot(t(32.0));
    assert_eq!(
        (s.state, s.calls_in_window, s.reopens, s.trials_in_flight),
        (BreakerState::Closed, 0, 0, 0)
    );
    assert_eq!((s.next_trial_at, s.rejected_calls), (None, 1));
    trip(&mut b, t(33.0));
    assert_eq!(wait_of(&b), secs(30), "the back-off starts over");

    let mut closed = breaker(exact());
    assert_eq!(call(&mut closed, t(1.0), FAIL), None);
    assert_eq!(closed.reset(t(2.0), "again"), None, "closed stays closed");
    assert_eq!(closed.snapshot(t(2.0)).calls_in_window, 0, "but is cleared");
}

#[test]
fn forced_open_rejects_everything_and_never_leaves_by_time() {
    let mut b = breaker(exact());
    trip(&mut b, t(0.0));
    assert_eq!(
        b.force_open(t(1.0), "maintenance of rack 4"),
        transition(
            BreakerState::Open,
            BreakerState::ForcedOpen,
            "forced open by an operator: maintenance of rack 4"
        )
    );
    assert_eq!(b.next_deadline(), None);
    let year = 365.0 * 24.0 * 3600.0;
    for now in [t(31.0), t(3600.0), t(year)] {
        assert_eq!(b.poll(now), None);
        assert_eq!(b.allow(now), (Permit::Rejected, None));
    }
    assert_eq!(b.record(t(year), Permit::Allowed, OK), None);
    assert_eq!(b.force_open(t(year), "again"), None);
    let s = b.snapshot(t(year));
    assert_eq!((s.state, s.rejected_calls), (BreakerState::ForcedOpen, 3));
    assert_eq!(
        b.reset(t(year), "done").map(|tr| (tr.from, tr.to)),
        Some((BreakerState::ForcedOpen, BreakerState::Closed))
    );
    assert_eq!(b.allow(t(year)), (Permit::Allowed, None));
}

#[test]
fn disabled_allows_everything_and_never_trips() {
    let mut b = breaker(exact());
    assert_eq!(
        b.disable(t(1.0), "flaky network under investigation"),
        transition(
            BreakerState::Closed,
            BreakerState::Disabled,
            "disabled by an operator: flaky network under investigation"
        )
    );
    for i in 0..1000 {
        assert_eq!(call(&mut b, t(2.0 + f64::from(i)), FAIL), None);
    }
    let s = b.snapshot(t(2000.0));
    assert_eq!(s.state, BreakerState::Disabled);
    assert_eq!(
        (s.calls_in_window, s.failures_in_window, s.rejected_calls),
        (0, 0, 0)
    );
    assert_eq!(b.disable(t(2000.0), "again"), None);
    let _ = b.reset(t(2001.0), "done").expect("closed again");
    assert_eq!(call(&mut b, t(2002.0), FAIL), None);
    assert_eq!(b.snapshot(t(2002.0)).calls_in_window, 1, "counting again");
}

#[test]
fn an_open_breaker_can_be_disabled_and_then_forced_open() {
    let mut b = breaker(exact());
    trip(&mut b, t(0.0));
    let to = |tr: Option<Transition>| tr.map(|tr| (tr.from, tr.to));
    assert_eq!(
        to(b.disable(t(1.0), "x")),
        Some((BreakerState::Open, BreakerState::Disabled))
    );
    assert_eq!(b.next_deadline(), None);
    assert_eq!(
        to(b.force_open(t(2.0), "y")),
        Some((BreakerState::Disabled, BreakerState::ForcedOpen))
    );
}

// --- what counts ------------------------------------------------------------------------

#[test]
fn failing_tests_are_successes_for_the_infrastructure_and_never_trip() {
    for &outcome in Outcome::ALL {
        let expected = if outcome == Outcome::WorkerFault {
            FAIL
        } else {
            OK
        };
        assert_eq!(CallOutcome::from_attempt(outcome), expected, "{outcome}");
    }
    let mut b = breaker(exact());
    let tests = [
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Error,
        Outcome::Failed,
    ];
    for i in 0..1000 {
        let outcome = CallOutcome::from_attempt(tests[i % tests.len()]);
        assert_eq!(call(&mut b, t(i as f64), outcome), None);
    }
    let s = b.snapshot(t(1000.0));
    assert_eq!(
        (s.state, s.calls_in_window, s.failure_rate),
        (BreakerState::Closed, 20, 0.0)
    );
}

// --- snapshot, restore, commands ---------------------------------------------------------

#[test]
fn snapshot_reports_the_numbers() {
    let mut b = breaker(exact());
    for (i, outcome) in [FAIL, OK, FAIL, OK].into_iter().enumerate() {
        let _ = call(&mut b, t(1.0 + i as f64), outcome);
    }
    assert_eq!(
        b.snapshot(t(10.0)),
        BreakerSnapshot {
            state: BreakerState::Closed,
            since: t(0.0),
            time_in_state_ms: 10_000,
            failure_rate: 0.5,
            calls_in_window: 4,
            failures_in_window: 2,
            rejected_calls: 0,
            trials_in_flight: 0,
            reopens: 0,
            next_trial_at: None,
        }
    );
    let _ = call(&mut b, t(11.0), FAIL).expect("3 of 5 trips");
    assert_eq!(b.allow(t(12.0)), (Permit::Rejected, None));
    assert_eq!(b.allow(t(13.0)), (Permit::Rejected, None));
    assert_eq!(
        b.snapshot(t(20.5)),
        BreakerSnapshot {
            state: BreakerState::Open,
            since: t(11.0),
            time_in_state_ms: 9_500,
            failure_rate: 0.6,
            calls_in_window: 5,
            failures_in_window: 3,
            rejected_calls: 2,
            trials_in_flight: 0,
            reopens: 0,
            next_trial_at: Some(t(41.0)),
        }
    );
    let (first, _) = b.allow(t(41.0));
    let _ = b.allow(t(41.0));
    let s = b.snapshot(t(42.0));
    assert_eq!(
        (s.state, s.trials_in_flight, s.time_in_state_ms),
        (BreakerState::HalfOpen, 2, 1_000)
    );
    let _ = b.record(t(42.0), first, OK);
    assert_eq!(b.snapshot(t(42.0)).trials_in_flight, 1);

    let json = serde_json::to_value(b.snapshot(t(42.0))).expect("serializes");
    assert_eq!(json["trials_in_flight"], 1);
    assert_eq!(json["since"], EPOCH + 41_000_000);
}

#[test]
fn a_restored_open_breaker_stays_open_for_its_wait_from_since() {
    let mut b = Breaker::restore(exact(), BreakerState::Open, t(100.0), 1).expect("valid");
    assert_eq!(b.next_deadline(), Some(t(130.0)));
    assert_eq!(b.allow(t(110.0)), (Permit::Rejected, None));
    assert_eq!(b.poll(t(129.999)), None);
    assert_eq!(
        b.poll(t(130.0)),
        transition(
            BreakerState::Open,
            BreakerState::HalfOpen,
            "open for 30.0 s: trying 3 trial calls"
        )
    );

    // A failover long after the breaker opened: the first call is a trial.
    let mut late = Breaker::restore(exact(), BreakerState::Open, t(0.0), 1).expect("valid");
    let (permit, change) = late.allow(t(500.0));
    assert!(matches!(permit, Permit::Trial { .. }), "{permit:?}");
    assert_eq!(
        change.map(|c| c.reason),
        Some("open for 500.0 s: trying 3 trial calls".to_string())
    );
}

#[test]
fn every_state_can_be_restored() {
    let mut half = Breaker::restore(exact(), BreakerState::HalfOpen, t(5.0), 1).expect("valid");
    for _ in 0..3 {
        assert!(matches!(half.allow(t(6.0)).0, Permit::Trial { .. }));
    }
    assert_eq!(half.allow(t(6.0)), (Permit::Rejected, None));

    let mut forced = Breaker::restore(exact(), BreakerState::ForcedOpen, t(5.0), 1).expect("valid");
    assert_eq!((forced.next_deadline(), forced.poll(t(1e6))), (None, None));
    assert_eq!(forced.allow(t(1e6)), (Permit::Rejected, None));

    let mut disabled = Breaker::restore(exact(), BreakerState::Disabled, t(5.0), 1).expect("valid");
    assert_eq!(disabled.allow(t(6.0)), (Permit::Allowed, None));

    for &state in BreakerState::ALL {
        let b = Breaker::restore(exact(), state, t(5.0), 1).expect("valid");
        assert_eq!((b.state(), b.since()), (state, t(5.0)));
        assert_eq!(b.snapshot(t(6.0)).time_in_state_ms, 1_000);
    }

    let bad = BreakerConfig {
        half_open_trials: 0,
        ..exact()
    };
    assert!(Breaker::restore(bad, BreakerState::Open, t(0.0), 1).is_err());
}

#[test]
fn a_clock_that_steps_back_reads_as_no_time_passed() {
    let mut b = breaker(exact());
    trip(&mut b, t(100.0));
    assert_eq!(b.poll(t(50.0)), None);
    assert_eq!(b.snapshot(t(50.0)).time_in_state_ms, 0);
}

#[test]
fn a_transition_becomes_a_breaker_transition_command() {
    let mut b = breaker(exact());
    let change = b.force_open(t(3.0), "rack 4").expect("a change");
    assert_eq!(
        change.command("worker:w1", t(3.0)),
        Command::BreakerTransition {
            scope: "worker:w1".to_string(),
            from: BreakerState::Closed,
            to: BreakerState::ForcedOpen,
            reason: "forced open by an operator: rack 4".to_string(),
            at: t(3.0),
        }
    );
}

#[test]
fn every_transition_starts_from_the_state_it_leaves() {
    // A seeded walk through calls, outcomes, polls and operator actions: each transition must
    // leave the state the breaker was in and enter the one it is in, as apply's `from` check
    // requires, and the bounds must hold throughout.
    let config = BreakerConfig {
        window: Window::Count { calls: 8 },
        minimum_calls: 3,
        half_open_trials: 2,
        open_wait_ms: 1_000,
        open_wait_max_ms: 8_000,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(config, t(0.0), 3).expect("valid");
    let mut rng = 0x5eed_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut now = 0.0;
    let mut permits = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20_000 {
        now += next(500) as f64 / 1000.0;
        let before = b.state();
        let change = match next(100) {
            0..=44 => {
                let (permit, change) = b.allow(t(now));
                permits.push(permit);
                change
            }
            45..=89 if !permits.is_empty() => {
                let permit = permits.swap_remove(next(permits.len() as u64) as usize);
                let outcome = if next(3) == 0 { OK } else { FAIL };
                b.record(t(now), permit, outcome)
            }
            90..=96 => b.poll(t(now)),
            97 => b.reset(t(now), "walk"),
            98 => b.force_open(t(now), "walk"),
            _ => b.disable(t(now), "walk"),
        };
        if let Some(change) = change {
            assert_eq!(change.from, before, "{change:?}");
            assert_eq!(change.to, b.state(), "{change:?}");
            assert_ne!(change.from, change.to);
            assert!(!change.reason.is_empty());
            seen.insert((change.from, change.to));
        } else {
            assert_eq!(b.state(), before);
        }
        let s = b.snapshot(t(now));
        assert!(s.calls_in_window <= 8);
        assert!(s.trials_in_flight <= 2);
        assert_eq!(s.next_trial_at.is_some(), s.state == BreakerState::Open);
    }
    use BreakerState::*;
    for pair in [
        (Closed, Open),
        (Open, HalfOpen),
        (HalfOpen, Closed),
        (HalfOpen, Open),
    ] {
        assert!(
            seen.contains(&pair),
            "the walk never went {pair:?}: {seen:?}"
        );
    }
}

// --- settings and levels -----------------------------------------------------------------

#[test]
fn config_validation_names_the_key_and_what_it_accepts() {
    assert_eq!(BreakerConfig::default().validate(), Ok(()));
    type Change = fn(&mut BreakerConfig);
    let cases: [(Change, &str); 14] = [
        (
            |c| c.failure_rate_threshold = 0.0,
            "breaker failure_rate_threshold is 0; it must be a fraction above 0 and at most 1",
        ),
        (
            |c| c.failure_rate_threshold = 1.5,
            "breaker failure_rate_threshold is 1.5;",
        ),
        (
            |c| c.failure_rate_threshold = f64::NAN,
            "breaker failure_rate_threshold is NaN;",
        ),
        (
            |c| c.half_open_trials = 0,
            "breaker half_open_trials is 0; it must be at least 1",
        ),
        (
            |c| c.minimum_calls = 0,
            "breaker minimum_calls is 0; it must be at least 1",
        ),
        (
            |c| c.minimum_calls = 21,
            "breaker minimum_calls is 21, more than the 20 calls the count window holds",
        ),
        (
            |c| c.window = Window::Count { calls: 0 },
            "breaker window.calls is 0; it must be between 1 and 10000",
        ),
        (
            |c| c.window = Window::Count { calls: 10_001 },
            "breaker window.calls is 10001;",
        ),
        (
            |c| c.window = Window::Time { span_ms: 0 },
            "breaker window.span_ms is 0; it must be above 0 and at most a week (604800000)",
        ),
        (
            |c| c.open_wait_ms = 0,
            "breaker open_wait_ms is 0; it must be above 0",
        ),
        (
            |c| c.open_wait_max_ms = 700_000_000,
            "breaker open_wait_max_ms is 700000000; it must be above 0 and at most a week",
        ),
        (
            |c| c.open_wait_max_ms = 10_000,
            "breaker open_wait_max_ms is 10000, below open_wait_ms (30000); it must be at least \
             open_wait_ms",
        ),
        (
            |c| c.jitter = 1.0,
            "breaker jitter is 1; it must be a fraction at least 0 and below 1",
        ),
        (|c| c.jitter = -0.1, "breaker jitter is -0.1;"),
    ];
    for (change, expected) in cases {
        let mut config = BreakerConfig::default();
        change(&mut config);
        let error = config.validate().expect_err(expected);
        assert!(error.starts_with(expected), "{error}\nexpected: {expected}");
    }
    let time = BreakerConfig {
        window: Window::Time { span_ms: 60_000 },
        minimum_calls: 500,
        ..Default::default()
    };
    assert_eq!(
        time.validate(),
        Ok(()),
        "a time window has no call count to exceed"
    );
}

#[test]
fn config_reads_from_toml_with_defaults_for_missing_keys() {
    let config: BreakerConfig = toml::from_str(
        "minimum_calls = 10\nwindow = { kind = \"time\", span_ms = 60000 }\njitter = 0.1\n",
    )
    .expect("parses");
    assert_eq!(
        config,
        BreakerConfig {
            window: Window::Time { span_ms: 60_000 },
            minimum_calls: 10,
            jitter: 0.1,
            ..BreakerConfig::default()
        }
    );
    assert_eq!(
        toml::from_str::<BreakerConfig>("window = { kind = \"count\", calls = 50 }")
            .expect("parses")
            .window,
        Window::Count { calls: 50 }
    );
    assert!(toml::from_str::<BreakerConfig>("minimum_cals = 10").is_err());
    assert!(toml::from_str::<BreakerConfig>("window = { kind = \"count\", span_ms = 5 }").is_err());
    let defaults = BreakerConfig::default();
    assert_eq!(
        (
            defaults.window,
            defaults.minimum_calls,
            defaults.failure_rate_threshold,
            defaults.open_wait_ms,
            defaults.open_wait_max_ms,
            defaults.jitter,
            defaults.half_open_trials
        ),
        (Window::Count { calls: 20 }, 5, 0.5, 30_000, 300_000, 0.2, 3)
    );
}

#[test]
fn each_state_picks_its_recovery_level() {
    let levels: Vec<_> = BreakerState::ALL
        .iter()
        .map(|&state| (state, level_for(state)))
        .collect();
    assert_eq!(
        levels,
        [
            (BreakerState::Closed, Some(RecoveryLevel::Low)),
            (BreakerState::HalfOpen, Some(RecoveryLevel::Medium)),
            (BreakerState::Open, Some(RecoveryLevel::High)),
            (BreakerState::ForcedOpen, Some(RecoveryLevel::High)),
            (BreakerState::Disabled, None),
        ]
    );
}
