//! Snapshots, restoring from the replicated state, transitions as commands, settings.

use super::*;

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
