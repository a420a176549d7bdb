//! System recovery in logical time: episodes entered by a mass failure, a storage error or an
//! exploding requeue rate; held, ramped back, relapsed, forced to resume; and what is not an
//! emergency.

use super::*;

#[test]
fn half_the_fleet_failing_within_a_minute_holds_dispatch_then_ramps_back() {
    let mut sim = Sim::new(policy());
    sim.fleet(secs(0), 10, 10);
    for i in 0..5 {
        sim.fail(secs(i + 1), &format!("w{i}"), Crash);
    }
    sim.fleet(secs(6), 5, 10);
    assert!(sim.planner.in_episode());
    assert_eq!(sim.planner.dispatch_allowance(sim.at(secs(14))), Some(0.0));
    sim.run_until(secs(16));
    assert_eq!(sim.planner.dispatch_allowance(sim.at(secs(16))), Some(1.0));
    assert_eq!(sim.planner.dispatch_allowance(sim.at(secs(21))), Some(5.0));
    assert_eq!(sim.planner.dispatch_allowance(sim.at(secs(29))), Some(20.0));
    sim.run_until(secs(60));
    assert_eq!(
        sim.system_transcript(),
        [
            "5.0s hold: 5 of 10 workers failed within 60.0 s",
            "5.0s reconcile leases",
            "5.0s requeue orphans",
            "5.0s reset breakers",
            "5.0s snapshot",
            "15.0s resume 0s:1 5s:5 10s:20",
            "30.0s end success=true workers=5 tasks=0",
        ]
    );
    assert!(!sim.planner.in_episode());
    assert_eq!(sim.planner.dispatch_allowance(sim.at(secs(30))), None);
    let (_, _, _, details) = sim.end_episode();
    assert_eq!(details["held_ms"], 10_000);
    assert_eq!(details["duration_ms"], 25_000);
    assert_eq!(details["workers"], json!(["w0", "w1", "w2", "w3", "w4"]));
    assert_eq!(details["system_status"], "recovered");
    // Worker recovery went on under its budget meanwhile.
    let closes = sim
        .transcript()
        .iter()
        .filter(|l| l.contains("close"))
        .count();
    assert_eq!(closes, 4);
}

#[test]
fn failures_short_of_half_or_spread_over_more_than_the_window_are_no_emergency() {
    // failure offsets in seconds (fleet of 10)
    let cases: [&[u64]; 3] = [&[1, 2, 3, 4], &[0, 20, 40, 60, 80], &[0, 61, 122, 183, 244]];
    for offsets in cases {
        let mut sim = Sim::new(policy());
        sim.fleet(secs(0), 10, 10);
        for (i, &t) in offsets.iter().enumerate() {
            sim.fail(secs(t), &format!("w{i}"), Crash);
        }
        assert!(!sim.planner.in_episode(), "{offsets:?}");
        assert_eq!(sim.planner.dispatch_allowance(sim.at(secs(300))), None);
    }
    // In a fleet of two, one failure is half but not an emergency.
    let mut sim = Sim::new(policy());
    sim.fleet(secs(0), 2, 2);
    sim.fail(secs(1), "w0", Crash);
    assert!(!sim.planner.in_episode());
}

#[test]
fn a_storage_error_enters_an_episode() {
    let mut sim = Sim::new(policy());
    sim.fleet(secs(0), 3, 3);
    let error = RecoveryEvent::StorageError {
        reason: "duckdb: disk I/O error".to_string(),
    };
    sim.event(secs(1), error);
    assert!(sim.planner.in_episode());
    sim.run_until(secs(60));
    assert_eq!(
        sim.system_transcript(),
        [
            "1.0s hold: storage error: duckdb: disk I/O error",
            "1.0s reconcile leases",
            "1.0s requeue orphans",
            "1.0s reset breakers",
            "1.0s snapshot",
            "11.0s resume 0s:1 5s:3 10s:12",
            "26.0s end success=true workers=0 tasks=0",
        ]
    );
    assert_eq!(sim.end_episode().3["storage_errors"], 1);
}

#[test]
fn the_system_breaker_opening_hands_over_to_system_recovery() {
    let mut sim = Sim::new(policy());
    sim.fleet(secs(0), 3, 3);
    let opened = RecoveryEvent::SystemBreakerOpened {
        reason: "failure rate 60% (6 of the last 10 calls)".to_string(),
    };
    sim.event(secs(2), opened);
    assert!(sim.planner.in_episode());
    assert_eq!(sim.planner.dispatch_allowance(sim.at(secs(3))), Some(0.0));
    sim.run_until(secs(60));
    assert_eq!(
        sim.system_transcript()[0],
        "2.0s hold: system circuit breaker open: failure rate 60% (6 of the last 10 calls)"
    );
}

#[test]
fn an_exploding_requeue_rate_enters_an_episode() {
    let mut sim = Sim::new(policy());
    sim.fleet(secs(0), 50, 50);
    let requeued = || RecoveryEvent::TaskRequeued {
        worker: "w1".to_string(),
    };
    // 99 in a minute is below the limit; the 100th within a minute of the others is not.
    for i in 0..99 {
        sim.event(Duration::from_millis(i * 500), requeued());
    }
    assert!(!sim.planner.in_episode());
    sim.event(secs(55), requeued());
    assert!(sim.planner.in_episode());
    sim.event(secs(56), requeued());
    sim.run_until(secs(200));
    let (success, _, tasks, details) = sim.end_episode();
    assert!(success);
    assert_eq!(tasks, 101);
    assert_eq!(
        details["triggers"][0]["reason"],
        "100 tasks requeued within a minute (limit 100)"
    );
}

#[test]
fn a_new_emergency_during_the_ramp_holds_dispatch_again() {
    let mut sim = Sim::new(policy());
    sim.fleet(secs(0), 4, 4);
    let error = |reason: &str| RecoveryEvent::StorageError {
        reason: reason.to_string(),
    };
    sim.event(secs(0), error("first"));
    sim.event(secs(20), error("second"));
    assert_eq!(sim.planner.dispatch_allowance(sim.at(secs(20))), Some(0.0));
    sim.run_until(secs(100));
    assert_eq!(
        sim.system_transcript()[5..],
        [
            "10.0s resume 0s:1 5s:4 10s:16",
            "20.0s hold: relapse during the resume ramp: storage error: second",
            "20.0s reconcile leases",
            "20.0s requeue orphans",
            "30.0s resume 0s:1 5s:4 10s:16",
            "45.0s end success=true workers=0 tasks=0",
        ]
    );
    let (_, _, _, details) = sim.end_episode();
    assert_eq!(details["relapses"], 1);
    assert_eq!(details["held_ms"], 20_000);
    assert_eq!(details["storage_errors"], 2);
}

#[test]
fn dispatch_resumes_at_max_hold_even_if_the_system_never_goes_quiet() {
    let mut sim = Sim::new(policy());
    sim.fleet(secs(0), 4, 4);
    for t in (0..120).step_by(5) {
        let error = RecoveryEvent::StorageError {
            reason: format!("error at {t} s"),
        };
        sim.event(secs(t), error);
    }
    sim.run_until(secs(136));
    assert_eq!(
        sim.system_transcript()[5..],
        [
            "120.0s resume 0s:1 5s:4 10s:16",
            "135.0s end success=false workers=0 tasks=0"
        ]
    );
    let (success, _, _, details) = sim.end_episode();
    assert!(!success);
    assert_eq!(details["forced_resume"], true);
    assert_eq!(details["system_status"], "degraded");
}
