//! Jitter, operators (reset, forced open, disabled) and what counts as a failure.

use super::*;

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
