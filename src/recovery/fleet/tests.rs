//! The fleet's breakers in logical time: what each driver call does to the worker and system
//! breakers, which commands come out, and how a new leader or an operator takes over.

use super::*;

fn at(s: i64) -> Timestamp {
    Timestamp(1_000_000_000_000 + s * 1_000_000)
}

fn fleet(settings: BreakerSettings) -> FleetBreakers {
    FleetBreakers::new(settings, &BTreeMap::new(), at(0), 7).unwrap()
}

/// One dispatched and reported attempt; returns the commands.
fn run(
    f: &mut FleetBreakers,
    worker: &str,
    task: &str,
    outcome: Outcome,
    now: Timestamp,
) -> Vec<Command> {
    let mut out = Vec::new();
    assert!(
        f.allow(worker, task, 1, now, &mut out),
        "{worker} refused {task}"
    );
    f.finished(worker, task, 1, outcome, now, &mut out);
    out
}

/// Five worker faults in a row (at 0..4 s): the worker's breaker opens.
fn trip(f: &mut FleetBreakers, worker: &str) {
    for i in 0..5 {
        run(f, worker, &format!("bad{i}"), Outcome::WorkerFault, at(i));
    }
}

fn transitions(commands: &[Command]) -> Vec<(String, BreakerState, BreakerState)> {
    (commands.iter())
        .filter_map(|c| match c {
            Command::BreakerTransition {
                scope, from, to, ..
            } => Some((scope.clone(), *from, *to)),
            _ => None,
        })
        .collect()
}

#[test]
fn worker_faults_trip_the_workers_breaker_and_stop_its_dispatch() {
    let mut f = fleet(BreakerSettings::default());
    let mut all = Vec::new();
    for i in 0..5 {
        all.extend(run(
            &mut f,
            "w1",
            &format!("t{i}"),
            Outcome::WorkerFault,
            at(i),
        ));
    }
    assert_eq!(
        transitions(&all),
        vec![("worker:w1".into(), BreakerState::Closed, BreakerState::Open)]
    );
    let mut out = Vec::new();
    assert!(!f.allow("w1", "t9", 1, at(6), &mut out));
    // Other workers are not affected.
    assert!(f.allow("w2", "t9", 1, at(6), &mut out));
    assert_eq!(f.trial_slots("w1"), None);
}

#[test]
fn failing_tests_never_trip_a_breaker() {
    let mut f = fleet(BreakerSettings::default());
    let mut all = Vec::new();
    for i in 0..100 {
        let outcome = [Outcome::Failed, Outcome::TimedOut, Outcome::Error][i % 3];
        all.extend(run(&mut f, "w1", &format!("t{i}"), outcome, at(i as i64)));
    }
    assert!(transitions(&all).is_empty(), "{all:?}");
    assert_eq!(f.level(), Some(RecoveryLevel::Low));
}

#[test]
fn an_open_worker_is_probed_half_open_and_closes_when_its_trials_pass() {
    let mut f = fleet(BreakerSettings::default());
    trip(&mut f, "w1");
    let mut out = Vec::new();
    // The open wait is 30 s ± 20 %.
    f.tick(at(20), &mut out);
    assert!(out.is_empty());
    f.tick(at(45), &mut out);
    assert_eq!(
        transitions(&out),
        vec![(
            "worker:w1".into(),
            BreakerState::Open,
            BreakerState::HalfOpen
        )]
    );
    assert_eq!(f.trial_slots("w1"), Some(3));
    out.clear();
    for i in 0..3 {
        assert!(f.allow("w1", &format!("trial{i}"), 1, at(46), &mut out));
    }
    assert!(
        !f.allow("w1", "trial3", 1, at(46), &mut out),
        "only 3 trials"
    );
    for i in 0..3 {
        f.finished(
            "w1",
            &format!("trial{i}"),
            1,
            Outcome::Passed,
            at(47),
            &mut out,
        );
    }
    assert_eq!(
        transitions(&out),
        vec![(
            "worker:w1".into(),
            BreakerState::HalfOpen,
            BreakerState::Closed
        )]
    );
    assert!(f.allow("w1", "next", 1, at(48), &mut out));
}

#[test]
fn a_trial_that_ends_without_a_result_or_a_broken_session_reopens_the_breaker() {
    for ending in ["released", "session"] {
        let mut f = fleet(BreakerSettings::default());
        trip(&mut f, "w1");
        let mut out = Vec::new();
        f.tick(at(45), &mut out);
        assert!(f.allow("w1", "trial", 1, at(46), &mut out));
        out.clear();
        match ending {
            "released" => f.released("trial", 1, at(47), &mut out),
            _ => f.infra_failure("w1", at(47), &mut out),
        }
        assert_eq!(
            transitions(&out),
            vec![(
                "worker:w1".into(),
                BreakerState::HalfOpen,
                BreakerState::Open
            )],
            "{ending}"
        );
    }
}

#[test]
fn the_system_breaker_follows_the_fleets_failures_and_picks_the_recovery_level() {
    let mut f = fleet(BreakerSettings::default());
    assert_eq!(f.level(), Some(RecoveryLevel::Low));
    let mut out = Vec::new();
    // Ten workers' sessions break within a minute: half the fleet's calls fail.
    for i in 0..10 {
        f.infra_failure(&format!("w{i}"), at(i), &mut out);
    }
    assert!(
        transitions(&out).contains(&("system".into(), BreakerState::Closed, BreakerState::Open)),
        "{out:?}"
    );
    assert_eq!(f.level(), Some(RecoveryLevel::High));
    out.clear();
    f.tick(at(60), &mut out);
    assert_eq!(f.level(), Some(RecoveryLevel::Medium));
    // Five successful observations (recoveries that worked) close it.
    for _ in 0..5 {
        f.recovery_outcome(true, at(61), &mut out);
    }
    assert_eq!(f.level(), Some(RecoveryLevel::Low));
    assert!(transitions(&out).contains(&(
        "system".into(),
        BreakerState::HalfOpen,
        BreakerState::Closed
    )));
}

#[test]
fn with_breakers_off_everything_is_allowed_nothing_is_proposed_and_the_base_policy_applies() {
    let mut f = fleet(BreakerSettings {
        enabled: false,
        ..BreakerSettings::default()
    });
    let mut all = Vec::new();
    for i in 0..50 {
        all.extend(run(
            &mut f,
            "w1",
            &format!("t{i}"),
            Outcome::WorkerFault,
            at(i),
        ));
        f.infra_failure("w1", at(i), &mut all);
        f.recovery_outcome(false, at(i), &mut all);
    }
    f.tick(at(100), &mut all);
    assert!(all.is_empty());
    assert_eq!(f.level(), None);
}

#[test]
fn a_new_leader_keeps_an_open_breaker_open_until_its_wait_from_the_transition() {
    let replicated = BTreeMap::from([
        ("worker:w1".to_string(), (BreakerState::Open, at(0))),
        ("system".to_string(), (BreakerState::HalfOpen, at(0))),
    ]);
    let mut f = FleetBreakers::new(BreakerSettings::default(), &replicated, at(5), 7).unwrap();
    let mut out = Vec::new();
    assert!(!f.allow("w1", "t", 1, at(5), &mut out));
    assert_eq!(f.level(), Some(RecoveryLevel::Medium));
    f.tick(at(40), &mut out);
    assert_eq!(
        transitions(&out),
        vec![(
            "worker:w1".into(),
            BreakerState::Open,
            BreakerState::HalfOpen
        )]
    );
}

#[test]
fn operators_force_disable_and_reset_and_a_committed_change_is_taken_over() {
    let mut f = fleet(BreakerSettings::default());
    let command = f
        .operator("worker:w1", OperatorAction::ForceOpen, "bad disk", at(1))
        .unwrap();
    assert_eq!(
        transitions(&[command]),
        vec![(
            "worker:w1".into(),
            BreakerState::Closed,
            BreakerState::ForcedOpen
        )]
    );
    let mut out = Vec::new();
    assert!(!f.allow("w1", "t", 1, at(2), &mut out));
    f.tick(at(10_000), &mut out);
    assert!(out.is_empty(), "forced open never ends by time");
    assert_eq!(
        f.operator("worker:w1", OperatorAction::ForceOpen, "again", at(3))
            .unwrap_err(),
        "the breaker of worker:w1 is already forced_open"
    );
    assert!(
        f.operator("w1", OperatorAction::Reset, "", at(3))
            .unwrap_err()
            .contains("not a breaker")
    );
    // Another leader's (or an operator's) committed reset is taken over.
    assert!(f.sync("worker:w1", BreakerState::Closed, at(4)));
    assert!(
        !f.sync("worker:w1", BreakerState::Closed, at(4)),
        "no change"
    );
    assert!(f.allow("w1", "t", 1, at(5), &mut out));
    // Disabling the system breaker leaves the base policy in force.
    f.operator("system", OperatorAction::Disable, "incident", at(6))
        .unwrap();
    assert_eq!(f.level(), None);
}

#[test]
fn a_worker_that_leaves_takes_its_breaker_and_permits_along() {
    let mut f = fleet(BreakerSettings::default());
    let mut out = Vec::new();
    assert!(f.allow("w1", "t", 1, at(0), &mut out));
    f.forget("w1");
    assert!(f.permits.is_empty());
    assert_eq!(
        f.snapshots(at(1)).len(),
        1,
        "only the system breaker is left"
    );
}

#[test]
fn a_transition_the_log_refused_is_undone_after_a_grace_period() {
    let mut f = fleet(BreakerSettings::default());
    trip(&mut f, "w1");
    // The open transition (at 4 s) was refused: the log still says closed.
    let committed = BTreeMap::new();
    let grace = std::time::Duration::from_secs(5);
    f.reconcile(&committed, grace, at(6));
    let mut out = Vec::new();
    assert!(
        !f.allow("w1", "t", 1, at(6), &mut out),
        "still within the grace period"
    );
    f.reconcile(&committed, grace, at(10));
    assert!(
        f.allow("w1", "t", 1, at(10), &mut out),
        "closed, as the log says"
    );
}

#[test]
fn system_recovery_resets_tripped_breakers_but_not_an_operators() {
    let mut f = fleet(BreakerSettings::default());
    trip(&mut f, "w1");
    f.operator("worker:w2", OperatorAction::ForceOpen, "", at(5))
        .unwrap();
    let mut out = Vec::new();
    assert_eq!(f.reset_tripped("episode", at(6), &mut out), 1);
    assert_eq!(
        transitions(&out),
        vec![("worker:w1".into(), BreakerState::Open, BreakerState::Closed)]
    );
    assert!(!f.allow("w2", "t", 1, at(7), &mut out));
}

#[test]
fn a_table_in_the_file_changes_only_its_keys_and_keeps_that_breakers_defaults() {
    #[derive(serde::Deserialize)]
    struct File {
        breakers: BreakerSettings,
    }
    let file: File = toml::from_str(
        "[breakers.system]\nopen_wait_ms = 2000\n[breakers.worker]\nminimum_calls = 3\n",
    )
    .unwrap();
    let defaults = BreakerSettings::default();
    assert_eq!(file.breakers.system.open_wait_ms, 2000);
    assert_eq!(
        file.breakers.system.window, defaults.system.window,
        "the system's own window"
    );
    assert_eq!(file.breakers.system.minimum_calls, 10);
    assert_eq!(file.breakers.worker.minimum_calls, 3);
    assert_eq!(file.breakers.worker.window, defaults.worker.window);
    assert!(file.breakers.enabled);
    let typo = toml::from_str::<File>("[breakers.system]\nopen_wait = 2000\n");
    assert!(typo.is_err(), "unknown keys are refused");
}

#[test]
fn one_worker_failing_every_call_at_once_does_not_open_the_system_breaker() {
    let mut f = fleet(BreakerSettings::default());
    let mut out = Vec::new();
    // Over 20 s, three healthy workers pass a task a second each while the black hole fails
    // ten a second.
    for s in 0..20 {
        for w in ["h1", "h2", "h3"] {
            let task = format!("{w}-{s}");
            assert!(f.allow(w, &task, 1, at(s), &mut out));
            f.finished(w, &task, 1, Outcome::Passed, at(s), &mut out);
        }
        for k in 0..10 {
            let task = format!("s1-{s}-{k}");
            if f.allow("s1", &task, 1, at(s), &mut out) {
                f.finished("s1", &task, 1, Outcome::WorkerFault, at(s), &mut out);
            }
        }
    }
    let moved = transitions(&out);
    assert!(
        moved.contains(&("worker:s1".into(), BreakerState::Closed, BreakerState::Open)),
        "{moved:?}"
    );
    assert!(
        !moved.iter().any(|(scope, _, _)| scope == "system"),
        "the system breaker moved: {moved:?}"
    );
    assert_eq!(f.level(), Some(RecoveryLevel::Low));
}
