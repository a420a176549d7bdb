//! The planner in logical time. Every instant is `base + offset`; the driver ticks at each
//! [`Planner::next_deadline`] before the next event, as the leader's loop does; scenarios are
//! compared as transcripts ("60.0s record w1 #1 reconnect FAILED: …").

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::recovery::strategy::StrategyStats;
use crate::recovery::{RecoveryLevel, SystemAction, WorkerRecoveryRecord};
use crate::state::command::FaultCategory::{self, Connection, Crash};

mod system;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The default policy with no jitter, so that times in transcripts are exact.
fn policy() -> RecoveryPolicy {
    RecoveryPolicy {
        jitter: 0.0,
        ..RecoveryPolicy::default()
    }
}

struct Sim {
    planner: Planner,
    base: Instant,
    log: Vec<(Duration, Action)>,
}

impl Sim {
    fn new(policy: RecoveryPolicy) -> Self {
        Sim::with(policy, PlannerConfig::default(), StrategyStats::default())
    }

    fn with(policy: RecoveryPolicy, config: PlannerConfig, stats: StrategyStats) -> Self {
        Sim {
            planner: Planner::new(policy, config, stats).expect("valid settings"),
            base: Instant::now(),
            log: Vec::new(),
        }
    }

    fn at(&self, offset: Duration) -> Instant {
        self.base + offset
    }

    /// Ticks at every deadline up to `offset`. Each tick must make progress, or a driver
    /// sleeping until `next_deadline` would spin.
    fn run_until(&mut self, offset: Duration) {
        while let Some(deadline) = self.planner.next_deadline()
            && deadline <= self.at(offset)
        {
            let actions = self.planner.tick(deadline);
            self.note(deadline - self.base, actions);
            let next = self.planner.next_deadline();
            assert!(
                next.is_none_or(|n| n > deadline),
                "no progress at {deadline:?}"
            );
        }
    }

    fn note(&mut self, offset: Duration, actions: Vec<Action>) {
        let active = self.planner.active_recoveries();
        let budget = self.planner.policy().max_concurrent_recoveries;
        assert!(
            active <= budget,
            "{active} recoveries in progress, budget {budget}"
        );
        self.log.extend(actions.into_iter().map(|a| (offset, a)));
    }

    fn event(&mut self, offset: Duration, event: RecoveryEvent) {
        self.run_until(offset);
        let actions = self.planner.on_event(self.at(offset), event);
        self.note(offset, actions);
    }

    fn fail(&mut self, offset: Duration, worker: &str, category: FaultCategory) {
        let event = RecoveryEvent::WorkerFailed {
            worker: worker.to_string(),
            category,
            reason: "no heartbeat for 5.0 s".to_string(),
        };
        self.event(offset, event);
    }

    fn healthy(&mut self, offset: Duration, worker: &str) {
        let worker = worker.to_string();
        self.event(offset, RecoveryEvent::WorkerHealthy { worker });
    }

    fn restart_done(&mut self, offset: Duration, worker: &str, attempt: u32, exit: Option<i32>) {
        let event = RecoveryEvent::RestartFinished {
            worker: worker.to_string(),
            attempt,
            exit_code: exit,
            output_tail: format!("restarted {worker}"),
        };
        self.event(offset, event);
    }

    fn fleet(&mut self, offset: Duration, healthy: usize, total: usize) {
        self.event(offset, RecoveryEvent::FleetSize { healthy, total });
    }

    fn transcript(&self) -> Vec<String> {
        self.log.iter().map(|(t, a)| line(*t, a)).collect()
    }

    /// The transcript without worker-level lines: system recovery only.
    fn system_transcript(&self) -> Vec<String> {
        (self.log.iter())
            .filter(|(_, a)| matches!(a, Action::System(_)))
            .map(|(t, a)| line(*t, a))
            .collect()
    }

    fn records(&self) -> Vec<&WorkerRecoveryRecord> {
        (self.log.iter())
            .filter_map(|(_, a)| match a {
                Action::Record(record) => Some(record),
                _ => None,
            })
            .collect()
    }

    fn end_episode(&self) -> (bool, u32, u32, &Value) {
        (self.log.iter())
            .find_map(|(_, a)| match a {
                Action::System(SystemAction::EndEpisode {
                    success,
                    affected_workers,
                    affected_tasks,
                    details,
                }) => Some((*success, *affected_workers, *affected_tasks, details)),
                _ => None,
            })
            .expect("the episode ended")
    }
}

fn line(offset: Duration, action: &Action) -> String {
    let what = match action {
        Action::SetStatus {
            worker, from, to, ..
        } => format!("set {worker} {from}→{to}"),
        Action::CloseSession { worker } => format!("close {worker}"),
        Action::Fail {
            worker, category, ..
        } => format!("fail {worker} as {category}"),
        Action::RunRestart { worker, attempt } => format!("restart {worker} #{attempt}"),
        Action::Record(r) => {
            let result = match &r.error_message {
                None if r.success => "ok".to_string(),
                None => "FAILED".to_string(),
                Some(error) => format!("FAILED: {error}"),
            };
            let (worker, n, kind) = (&r.worker, r.attempt_number, &r.recovery_type);
            format!("record {worker} #{n} {kind} {result}")
        }
        Action::Drain { worker, .. } => format!("drain {worker}"),
        Action::System(step) => match step {
            SystemAction::HoldDispatch { reason } => format!("hold: {reason}"),
            SystemAction::ReconcileLeases => "reconcile leases".to_string(),
            SystemAction::RequeueOrphans => "requeue orphans".to_string(),
            SystemAction::ResetBreakers => "reset breakers".to_string(),
            SystemAction::Snapshot => "snapshot".to_string(),
            SystemAction::ResumeGradually { ramp } => {
                let steps: Vec<String> = (ramp.iter())
                    .map(|(o, rate)| format!("{}s:{rate}", o.as_secs()))
                    .collect();
                format!("resume {}", steps.join(" "))
            }
            SystemAction::EndEpisode {
                success,
                affected_workers,
                affected_tasks,
                ..
            } => format!("end success={success} workers={affected_workers} tasks={affected_tasks}"),
        },
    };
    format!("{:.1}s {what}", offset.as_secs_f64())
}

// --- Worker recovery ---------------------------------------------------------------------

/// A worker failed with a connection fault, brought back by attempt `k`.
fn brought_back_on(k: u32) -> Sim {
    let mut sim = Sim::new(policy());
    sim.fail(secs(0), "w1", Connection);
    match k {
        1 => sim.healthy(secs(10), "w1"),
        2 => {
            sim.restart_done(secs(62), "w1", 2, Some(0));
            sim.healthy(secs(70), "w1");
        }
        _ => {
            sim.restart_done(secs(62), "w1", 2, Some(1));
            sim.healthy(secs(80), "w1");
            sim.run_until(secs(200));
        }
    }
    sim
}

#[test]
fn recovery_succeeds_on_attempt_k() {
    let opening = ["0.0s set w1 failed→recovering", "0.0s close w1"];
    let cases: [(u32, &[&str]); 3] = [
        (1, &["10.0s record w1 #1 reconnect ok"]),
        (
            2,
            &[
                "60.0s record w1 #1 reconnect FAILED: not back within 60.0 s of the reconnect",
                "60.0s restart w1 #2",
                "70.0s record w1 #2 restart ok",
            ],
        ),
        (
            3,
            &[
                "60.0s record w1 #1 reconnect FAILED: not back within 60.0 s of the reconnect",
                "60.0s restart w1 #2",
                "62.0s record w1 #2 restart FAILED: restart command exited with status 1",
                "62.0s set w1 recovering→quarantined",
                "80.0s set w1 healthy→quarantined",
                "122.0s record w1 #3 quarantine ok",
                "122.0s set w1 quarantined→healthy",
            ],
        ),
    ];
    for (k, rest) in cases {
        let sim = brought_back_on(k);
        let expected: Vec<&str> = opening.iter().chain(rest).copied().collect();
        assert_eq!(sim.transcript(), expected, "recovered on attempt {k}");
        assert!(!sim.planner.is_recovering("w1"));
        let last = *sim.records().last().unwrap();
        assert_eq!(last.details["outcome"], "recovered");
        assert_eq!(last.details["attempt"], k);
    }
    // The restart's row carries the command's exit status and output.
    let sim = brought_back_on(2);
    let restart = &sim.records()[1].details["restart"];
    assert_eq!(restart["exit_code"], 0);
    assert_eq!(restart["output_tail"], "restarted w1");
    assert_eq!(restart["finished_after_ms"], 2000);
}

#[test]
fn a_worker_back_during_reconnect_is_a_reconnect_success() {
    let sim = brought_back_on(1);
    let records = sim.records();
    let [record] = records.as_slice() else {
        panic!("one row: {records:?}")
    };
    assert_eq!(
        (
            record.attempt_number,
            record.success,
            record.recovery_type.as_str()
        ),
        (1, true, "reconnect")
    );
    assert_eq!(record.error_message, None);
    let d = &record.details;
    assert_eq!(d["strategy"], "reconnect");
    assert_eq!(d["category"], "connection");
    assert_eq!(d["order"], json!(["reconnect", "restart", "quarantine"]));
    assert_eq!(d["failure_reason"], "no heartbeat for 5.0 s");
    assert_eq!(d["timings"]["healthy_after_ms"], 10_000);
    assert_eq!(d["timings"]["window_ms"], 60_000);
    assert_eq!(d["policy"]["max_recovery_attempts"], 5);
    assert_eq!(
        sim.planner
            .stats()
            .tally(Connection, Strategy::Reconnect)
            .successes,
        1
    );
}

#[test]
fn exhausted_attempts_end_permanently_failed() {
    let mut sim = Sim::new(policy());
    sim.fail(secs(0), "w1", Connection);
    sim.restart_done(secs(61), "w1", 2, Some(1));
    sim.run_until(secs(1000));
    let quarantine = "FAILED: not back and healthy within the 60.0 s quarantine";
    assert_eq!(
        sim.transcript(),
        [
            "0.0s set w1 failed→recovering".to_string(),
            "0.0s close w1".to_string(),
            "60.0s record w1 #1 reconnect FAILED: not back within 60.0 s of the reconnect"
                .to_string(),
            "60.0s restart w1 #2".to_string(),
            "61.0s record w1 #2 restart FAILED: restart command exited with status 1".to_string(),
            "61.0s set w1 recovering→quarantined".to_string(),
            format!("121.0s record w1 #3 quarantine {quarantine}"),
            format!("181.0s record w1 #4 quarantine {quarantine}"),
            format!("241.0s record w1 #5 quarantine {quarantine}"),
            "241.0s set w1 quarantined→permanently_failed".to_string(),
        ]
    );
    let outcomes: Vec<&Value> = sim
        .records()
        .iter()
        .map(|r| &r.details["outcome"])
        .collect();
    assert_eq!(
        outcomes,
        ["failed", "failed", "failed", "failed", "permanently_failed"]
    );
    assert!(!sim.planner.is_recovering("w1"));
    assert_eq!(sim.planner.next_deadline(), None);
    let Some((_, Action::SetStatus { reason, .. })) = sim.log.last() else {
        panic!("ends with a status change")
    };
    assert!(reason.starts_with("5 recovery attempts failed"), "{reason}");
}

#[test]
fn a_restart_that_never_reports_fails_at_the_window_and_a_late_report_is_ignored() {
    let mut sim = Sim::new(policy());
    sim.fail(secs(0), "w1", Connection);
    sim.run_until(secs(120));
    sim.restart_done(secs(125), "w1", 2, Some(0));
    let records = sim.records();
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[1].details["restart"],
        json!({"finished": false, "exit_code": null})
    );
    assert_eq!(sim.planner.attempt("w1"), Some((3, Strategy::Quarantine)));
}

#[test]
fn a_restarted_worker_back_before_the_command_reports_is_recorded_with_its_exit_status() {
    let mut sim = Sim::new(policy());
    sim.fail(secs(0), "w1", Connection);
    sim.healthy(secs(65), "w1");
    assert_eq!(sim.records().len(), 1, "the row waits for the exit status");
    assert_eq!(
        sim.planner.active_recoveries(),
        0,
        "a worker that is back takes no budget"
    );
    sim.restart_done(secs(66), "w1", 2, Some(0));
    let last = *sim.records().last().unwrap();
    assert!(last.success);
    assert_eq!(last.details["restart"]["exit_code"], 0);
    assert_eq!(last.details["timings"]["healthy_after_ms"], 5000);
}

#[test]
fn a_worker_that_fails_again_soon_after_recovering_continues_its_recovery() {
    let mut sim = Sim::new(policy());
    sim.fail(secs(0), "w1", Connection);
    sim.healthy(secs(10), "w1");
    sim.fail(secs(30), "w1", Connection);
    assert_eq!(sim.planner.attempt("w1"), Some((2, Strategy::Restart)));
    sim.healthy(secs(40), "w1");
    sim.restart_done(secs(41), "w1", 2, Some(0));
    // Well after the interval, a failure starts afresh.
    sim.fail(secs(200), "w1", Connection);
    assert_eq!(sim.planner.attempt("w1"), Some((1, Strategy::Reconnect)));
}

#[test]
fn a_worker_back_before_its_attempt_starts_is_recorded_as_self_recovered() {
    let mut sim = Sim::new(RecoveryPolicy {
        max_concurrent_recoveries: 1,
        ..policy()
    });
    sim.fail(secs(0), "w1", Connection);
    sim.fail(secs(0), "w2", Connection);
    assert_eq!(sim.planner.attempt("w2"), None, "waiting for the budget");
    sim.healthy(secs(10), "w2");
    let records = sim.records();
    let [record] = records.as_slice() else {
        panic!("one row: {records:?}")
    };
    assert_eq!(record.recovery_type, "self_recovered");
    assert_eq!((record.attempt_number, record.success), (0, true));
    assert!(!sim.planner.is_recovering("w2"));
    assert_eq!(
        sim.planner
            .stats()
            .tally(Connection, Strategy::Reconnect)
            .attempts,
        0
    );
}

#[test]
fn the_budget_caps_recoveries_in_progress_when_ten_workers_fail_at_once() {
    // Workers come back 20 s after their session is closed; the budget is 4.
    let mut sim = Sim::new(policy());
    let workers: Vec<String> = (0..10).map(|i| format!("w{i:02}")).collect();
    for worker in &workers {
        sim.fail(secs(0), worker, Connection);
    }
    assert_eq!(sim.planner.active_recoveries(), 4);
    let mut returns: BTreeMap<Duration, Vec<String>> = BTreeMap::new();
    let mut seen = 0;
    loop {
        for (t, action) in &sim.log[seen..] {
            if let Action::CloseSession { worker } = action {
                returns
                    .entry(*t + secs(20))
                    .or_default()
                    .push(worker.clone());
            }
        }
        seen = sim.log.len();
        let Some((t, back)) = returns.pop_first() else {
            break;
        };
        for worker in back {
            sim.healthy(t, &worker);
        }
    }
    let closes: Vec<String> = (sim.log.iter())
        .filter(|(_, a)| matches!(a, Action::CloseSession { .. }))
        .map(|(t, a)| line(*t, a))
        .collect();
    let expected: Vec<String> = (workers.iter().enumerate())
        .map(|(i, w)| format!("{}.0s close {w}", i / 4 * 20))
        .collect();
    assert_eq!(closes, expected, "first come, first served, four at a time");
    let successes = sim.records().iter().filter(|r| r.success).count();
    assert_eq!(successes, 10);
    assert_eq!(sim.planner.active_recoveries(), 0);
}

/// When each of ten workers' first and second attempts start, with `seed` and 50 % jitter.
fn jittered_starts(seed: u64) -> Vec<(Duration, Duration)> {
    let policy = RecoveryPolicy {
        jitter: 0.5,
        max_concurrent_recoveries: 100,
        ..RecoveryPolicy::default()
    };
    let config = PlannerConfig {
        seed,
        ..PlannerConfig::default()
    };
    let mut sim = Sim::with(policy, config, StrategyStats::default());
    for i in 0..10 {
        sim.fail(secs(0), &format!("w{i}"), Connection);
    }
    sim.run_until(secs(300));
    (0..10)
        .map(|i| {
            let worker = format!("w{i}");
            let close = (sim.log.iter()).find(|(_, a)| {
                *a == Action::CloseSession {
                    worker: worker.clone(),
                }
            });
            let restart = (sim.log.iter()).find(|(_, a)| {
                *a == Action::RunRestart {
                    worker: worker.clone(),
                    attempt: 2,
                }
            });
            (close.expect("attempt 1").0, restart.expect("attempt 2").0)
        })
        .collect()
}

#[test]
fn jitter_spreads_attempt_starts_deterministically() {
    let starts = jittered_starts(42);
    assert_eq!(starts, jittered_starts(42), "the same seed, the same times");
    assert_ne!(starts, jittered_starts(43), "another seed, other times");
    let mut firsts: Vec<Duration> = starts.iter().map(|(first, _)| *first).collect();
    for (first, second) in &starts {
        assert!(*first < secs(30), "within jitter × interval: {first:?}");
        let after_window = *second - (*first + secs(60));
        assert!(
            after_window < secs(30),
            "spaced by jitter: {after_window:?}"
        );
    }
    firsts.sort();
    firsts.dedup();
    assert_eq!(firsts.len(), 10, "no two workers start together");
    assert!(firsts[9] - firsts[0] > secs(10), "spread out: {firsts:?}");
}

#[test]
fn history_where_reconnect_failed_nine_of_ten_times_makes_restart_go_first() {
    let history = (0..10).map(|i| (Crash, Strategy::Reconnect, i == 0));
    let stats = StrategyStats::from_outcomes(StrategyStats::DEFAULT_MIN_SAMPLES, history);
    let mut sim = Sim::with(policy(), PlannerConfig::default(), stats);
    sim.fail(secs(0), "w1", Crash);
    sim.restart_done(secs(3), "w1", 1, Some(0));
    sim.healthy(secs(8), "w1");
    assert_eq!(
        sim.transcript(),
        [
            "0.0s set w1 failed→recovering",
            "0.0s restart w1 #1",
            "8.0s record w1 #1 restart ok"
        ]
    );
    let details = &sim.records()[0].details;
    assert_eq!(details["strategy"], "restart");
    assert_eq!(
        details["order"],
        json!(["restart", "quarantine", "reconnect"])
    );
    assert_eq!(details["rates"]["reconnect"]["successes"], 1);
    assert_eq!(details["rates"]["reconnect"]["attempts"], 10);
    let reason = details["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("reconnect failed 9 of 10 times for crash"),
        "{reason}"
    );
    let learned = sim.planner.stats().tally(Crash, Strategy::Restart);
    assert_eq!((learned.successes, learned.attempts), (1, 1));
}

#[test]
fn a_policy_swap_takes_effect_on_the_next_attempt() {
    let mut sim = Sim::new(policy());
    sim.fail(secs(0), "w1", Connection);
    sim.run_until(secs(10));
    let high = RecoveryPolicy {
        max_recovery_attempts: 3,
        recovery_interval: secs(5),
        reconnect_wait: secs(5),
        ..policy()
    };
    sim.planner.set_policy(high).unwrap();
    sim.run_until(secs(200));
    assert_eq!(
        sim.transcript(),
        [
            "0.0s set w1 failed→recovering",
            "0.0s close w1",
            "60.0s record w1 #1 reconnect FAILED: not back within 60.0 s of the reconnect",
            "60.0s restart w1 #2",
            "65.0s record w1 #2 restart FAILED: not back within 5.0 s of the restart",
            "65.0s set w1 recovering→quarantined",
            "70.0s record w1 #3 quarantine FAILED: not back and healthy within the 5.0 s quarantine",
            "70.0s set w1 quarantined→permanently_failed",
        ]
    );
}

#[test]
fn a_quarantined_worker_that_fails_its_probation_is_not_recovered_by_it() {
    let mut sim = Sim::new(policy());
    sim.fail(secs(0), "w1", FaultCategory::ResourceExhaustion);
    assert_eq!(sim.planner.attempt("w1"), Some((1, Strategy::Quarantine)));
    sim.healthy(secs(20), "w1");
    sim.fail(secs(40), "w1", FaultCategory::ResourceExhaustion);
    sim.run_until(secs(61));
    let record = sim.records()[0];
    assert_eq!(
        (record.recovery_type.as_str(), record.success),
        ("quarantine", false)
    );
    assert_eq!(sim.planner.attempt("w1"), Some((2, Strategy::Restart)));
    assert_eq!(sim.planner.active_recoveries(), 1);
}

#[test]
fn no_attempts_allowed_means_permanently_failed_at_once() {
    let mut sim = Sim::new(RecoveryPolicy {
        max_recovery_attempts: 0,
        ..policy()
    });
    sim.fail(secs(0), "w1", Connection);
    assert_eq!(sim.transcript(), ["0.0s set w1 failed→permanently_failed"]);
}

// --- Proactive recovery ------------------------------------------------------------------

fn infra_faults(sim: &mut Sim, worker: &str, minutes: &[u64]) {
    for (i, &m) in minutes.iter().enumerate() {
        let event = RecoveryEvent::InfraFault {
            worker: worker.to_string(),
            task: format!("t{i}"),
            category: FaultCategory::LeaseLost,
        };
        sim.event(secs(m * 60), event);
    }
}

#[test]
fn climbing_infrastructure_faults_drain_a_worker_before_it_fails() {
    // fault times in minutes, proactive on, drained?
    let cases: [(&[u64], bool, bool); 5] = [
        (&[0, 1, 9], true, true),
        (&[0, 5, 11], true, false), // the first one left the 10-minute window
        (&[0, 5, 11, 12], true, true),
        (&[0, 1], true, false),
        (&[0, 1, 2], false, false),
    ];
    for (minutes, proactive, drained) in cases {
        let mut sim = Sim::new(RecoveryPolicy {
            enable_proactive_recovery: proactive,
            ..policy()
        });
        infra_faults(&mut sim, "w1", minutes);
        assert_eq!(
            sim.planner.is_draining("w1"),
            drained,
            "{minutes:?} {proactive}"
        );
        if drained {
            let at = minutes.last().unwrap() * 60;
            assert_eq!(
                sim.transcript(),
                [
                    format!("{at}.0s drain w1"),
                    format!("{at}.0s set w1 healthy→draining"),
                    format!("{at}.0s record w1 #0 proactive_drain ok"),
                ]
            );
        }
    }
}

#[test]
fn an_erratic_worker_is_drained_and_returns_after_a_quiet_interval() {
    let mut sim = Sim::new(policy());
    let erratic = RecoveryEvent::WorkerErratic {
        worker: "w1".to_string(),
        reason: "phi 6.2 at 1.4 s".to_string(),
    };
    sim.event(secs(0), erratic.clone());
    sim.event(secs(30), erratic); // still erratic: the hold restarts
    sim.run_until(secs(200));
    assert_eq!(
        sim.transcript(),
        [
            "0.0s drain w1",
            "0.0s set w1 healthy→draining",
            "0.0s record w1 #0 proactive_drain ok",
            "90.0s set w1 draining→healthy",
        ]
    );
    let Action::Drain { reason, .. } = &sim.log[0].1 else {
        panic!()
    };
    assert_eq!(reason, "erratic heartbeats: phi 6.2 at 1.4 s");
}

#[test]
fn faults_that_say_resources_or_storage_fail_the_worker_into_their_categorys_strategies() {
    for (category, first) in [
        (FaultCategory::ResourceExhaustion, "failed→quarantined"),
        (FaultCategory::Storage, "restart w1 #1"),
    ] {
        let mut sim = Sim::new(policy());
        for (i, seen) in [FaultCategory::Connection, category, category]
            .into_iter()
            .enumerate()
        {
            let event = RecoveryEvent::InfraFault {
                worker: "w1".to_string(),
                task: format!("t{i}"),
                category: seen,
            };
            sim.event(secs(i as u64), event);
        }
        let Some(Action::Fail {
            category: failed_as,
            reason,
            ..
        }) = sim.log.iter().map(|(_, a)| a).next_back()
        else {
            panic!("{category}: not failed: {:?}", sim.transcript());
        };
        assert_eq!(*failed_as, category);
        assert!(reason.contains(&format!("t2: {category}")), "{reason}");
        assert!(!sim.planner.is_draining("w1"));
        // The executor commits the failure; recovery then starts with the category's first
        // strategy.
        sim.fail(secs(3), "w1", category);
        sim.run_until(secs(4));
        assert!(
            sim.transcript().iter().any(|l| l.contains(first)),
            "{category}: {:?}",
            sim.transcript()
        );
    }
}

#[test]
fn a_crash_reported_by_the_restarted_worker_recategorises_its_recovery() {
    let mut sim = Sim::new(policy());
    sim.fail(secs(0), "w1", Connection);
    sim.event(
        secs(1),
        RecoveryEvent::WorkerCrashed {
            worker: "w1".into(),
        },
    );
    sim.event(
        secs(2),
        RecoveryEvent::WorkerHealthy {
            worker: "w1".into(),
        },
    );
    sim.run_until(secs(120));
    let records = sim.records();
    let last = records.last().unwrap();
    assert!(last.success, "{records:?}");
    assert_eq!(last.details["category"], "crash", "{:?}", last.details);
}

#[test]
fn a_drained_worker_that_fails_is_recovered_from_draining() {
    let mut sim = Sim::new(policy());
    infra_faults(&mut sim, "w1", &[0, 0, 0]);
    sim.fail(secs(10), "w1", Crash);
    let lines = sim.transcript();
    assert_eq!(
        &lines[3..],
        ["10.0s set w1 draining→recovering", "10.0s close w1"]
    );
    assert!(!sim.planner.is_draining("w1"));
    // A worker being recovered is not drained.
    infra_faults(&mut sim, "w1", &[1, 1, 1]);
    assert_eq!(sim.transcript().len(), 5);
}

#[test]
fn a_worker_that_leaves_is_no_longer_recovered_and_the_open_case_says_why() {
    let mut sim = Sim::new(policy());
    sim.fail(secs(0), "w1", Crash);
    let before = sim.transcript().len();
    sim.event(
        secs(1),
        RecoveryEvent::WorkerLeft {
            worker: "w1".into(),
        },
    );
    let records = sim.records();
    let last = records.last().unwrap();
    assert_eq!(
        (last.recovery_type.as_str(), last.success),
        ("stopped", false)
    );
    // Nothing more happens to it, however long we wait.
    let after = sim.transcript().len();
    assert_eq!(after, before + 1, "{:?}", sim.transcript());
    sim.run_until(secs(3600));
    assert_eq!(sim.transcript().len(), after, "{:?}", sim.transcript());
}

// --- Settings ----------------------------------------------------------------------------

#[test]
fn settings_that_cannot_work_are_refused() {
    let bad_policies = [
        RecoveryPolicy {
            jitter: 1.5,
            ..policy()
        },
        RecoveryPolicy {
            max_concurrent_recoveries: 0,
            ..policy()
        },
        RecoveryPolicy {
            recovery_interval: Duration::ZERO,
            ..policy()
        },
    ];
    for bad in bad_policies {
        let planner = Planner::new(
            bad.clone(),
            PlannerConfig::default(),
            StrategyStats::default(),
        );
        assert!(planner.is_err(), "{bad:?}");
        let mut sim = Sim::new(policy());
        assert!(sim.planner.set_policy(bad).is_err());
        assert_eq!(sim.planner.policy(), &policy());
    }
    let bad_config = PlannerConfig {
        ramp: vec![(secs(1), 1.0)],
        ..PlannerConfig::default()
    };
    assert!(Planner::new(policy(), bad_config, StrategyStats::default()).is_err());
    for level in [
        RecoveryLevel::Low,
        RecoveryLevel::Medium,
        RecoveryLevel::High,
    ] {
        assert_eq!(RecoveryPolicy::for_level(level).validate(), Ok(()));
    }
    assert_eq!(
        RecoveryPolicy::for_level(RecoveryLevel::High).max_recovery_attempts,
        10
    );
}

#[test]
fn an_idle_planner_has_no_deadline() {
    let sim = Sim::new(policy());
    assert_eq!(sim.planner.next_deadline(), None);
    assert!(!sim.planner.in_episode());
}

#[test]
fn an_operators_recovery_runs_its_levels_attempts_and_windows() {
    let mut sim = Sim::new(policy());
    sim.fail(secs(0), "w1", Connection);
    sim.restart_done(secs(61), "w1", 2, Some(1));
    sim.run_until(secs(1000));
    assert!(!sim.planner.is_recovering("w1"), "permanently failed");
    sim.log.clear();

    // Level low: 3 attempts of 30 s each, whatever the policy says (5 of 60 s).
    let level = crate::recovery::RecoveryLevel::Low;
    let worker = "w1".to_string();
    sim.event(secs(2000), RecoveryEvent::OperatorRecover { worker, level });
    sim.restart_done(secs(2031), "w1", 2, Some(1));
    sim.run_until(secs(3000));
    assert_eq!(
        sim.transcript(),
        [
            "2000.0s record w1 #0 operator_request ok".to_string(),
            "2000.0s set w1 failed→recovering".to_string(),
            "2000.0s close w1".to_string(),
            "2030.0s record w1 #1 reconnect FAILED: not back within 30.0 s of the reconnect"
                .to_string(),
            "2030.0s restart w1 #2".to_string(),
            "2031.0s record w1 #2 restart FAILED: restart command exited with status 1".to_string(),
            "2031.0s set w1 recovering→quarantined".to_string(),
            "2061.0s record w1 #3 quarantine FAILED: not back and healthy within the 30.0 s \
             quarantine"
                .to_string(),
            "2061.0s set w1 quarantined→permanently_failed".to_string(),
        ]
    );
    let records = sim.records();
    assert_eq!(records[0].details["level"], "low");
    assert_eq!(records[1].details["operator_level"], "low");
    assert_eq!(records[1].details["max_attempts"], 3);
}

#[test]
fn an_operators_recovery_succeeds_when_the_worker_is_back_and_a_reset_forgets_it() {
    let mut sim = Sim::new(policy());
    let level = crate::recovery::RecoveryLevel::High;
    let worker = "w1".to_string();
    sim.event(secs(0), RecoveryEvent::OperatorRecover { worker, level });
    sim.healthy(secs(2), "w1");
    assert!(!sim.planner.is_recovering("w1"));
    let records = sim.records();
    assert!(records.last().unwrap().success, "{records:?}");

    sim.fail(secs(100), "w2", Connection);
    assert!(sim.planner.is_recovering("w2"));
    let worker = "w2".to_string();
    sim.event(secs(101), RecoveryEvent::OperatorReset { worker });
    assert!(!sim.planner.is_recovering("w2"));
    assert_eq!(sim.planner.next_deadline(), None);
}
