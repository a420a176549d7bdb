//! The self-healing decisions with logical time: which action when, hysteresis, cooldowns,
//! and who takes over.

use super::*;

const SAMPLE: Duration = Duration::from_secs(10);

fn rules() -> Rules {
    Rules {
        actions: true,
        critical_samples: 3,
        restore_after: 3,
        cooldown: Duration::from_secs(300),
        warn_every: Duration::from_secs(300),
    }
}

/// A sample at `n` intervals after `base`.
fn seen(base: Instant, n: u32, level: HealthLevel) -> Observation {
    Observation {
        now: base + SAMPLE * n,
        level,
        disk_pressure: false,
        memory_pressure: false,
        leader: true,
    }
}

fn without_warnings(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, Action::Warn { .. }))
        .collect()
}

#[test]
fn a_leader_hands_over_after_the_configured_critical_samples_in_a_row() {
    let base = Instant::now();
    let mut healer = Healer::new(rules());
    let critical = |n| seen(base, n, HealthLevel::Critical);
    assert!(without_warnings(healer.observe(critical(0))).is_empty());
    assert!(without_warnings(healer.observe(critical(1))).is_empty());
    assert_eq!(
        without_warnings(healer.observe(critical(2))),
        [Action::HandOver]
    );
    // The count restarts after a handover.
    assert!(without_warnings(healer.observe(critical(3))).is_empty());
    // A healthy sample in between restarts it too.
    let mut healer = Healer::new(rules());
    healer.observe(critical(0));
    healer.observe(critical(1));
    healer.observe(seen(base, 2, HealthLevel::Degraded));
    assert!(without_warnings(healer.observe(critical(3))).is_empty());
}

#[test]
fn a_follower_never_hands_over_but_does_once_it_leads_while_still_critical() {
    let base = Instant::now();
    let mut healer = Healer::new(rules());
    for n in 0..5 {
        let follower = Observation {
            leader: false,
            ..seen(base, n, HealthLevel::Critical)
        };
        assert!(!healer.observe(follower).contains(&Action::HandOver));
    }
    let leading = seen(base, 5, HealthLevel::Critical);
    assert_eq!(
        without_warnings(healer.observe(leading)),
        [Action::HandOver]
    );
}

#[test]
fn disk_relief_runs_at_once_then_at_most_once_per_cooldown() {
    let base = Instant::now();
    let mut healer = Healer::new(rules());
    let full = |n| Observation {
        disk_pressure: true,
        leader: false,
        ..seen(base, n, HealthLevel::Degraded)
    };
    let mut relieved_at = Vec::new();
    // 65 samples of 10 s: 640 s of pressure.
    for n in 0..65 {
        if healer.observe(full(n)).contains(&Action::RelieveDisk) {
            relieved_at.push(n);
        }
    }
    assert_eq!(relieved_at, [0, 30, 60], "every 300 s, not every sample");
}

#[test]
fn memory_is_restored_only_after_enough_calm_samples_in_a_row() {
    let base = Instant::now();
    let mut healer = Healer::new(rules());
    let sample = |n, pressure| Observation {
        memory_pressure: pressure,
        ..seen(base, n, HealthLevel::Degraded)
    };
    assert_eq!(
        without_warnings(healer.observe(sample(0, true))),
        [Action::RelieveMemory]
    );
    assert!(healer.memory_lowered());
    // Pressure again within the cooldown: nothing new.
    assert!(without_warnings(healer.observe(sample(1, true))).is_empty());
    // Two calm samples, then pressure: the calm count starts again (hysteresis).
    assert!(without_warnings(healer.observe(sample(2, false))).is_empty());
    assert!(without_warnings(healer.observe(sample(3, false))).is_empty());
    assert!(without_warnings(healer.observe(sample(4, true))).is_empty());
    assert!(without_warnings(healer.observe(sample(5, false))).is_empty());
    assert!(without_warnings(healer.observe(sample(6, false))).is_empty());
    assert_eq!(
        without_warnings(healer.observe(sample(7, false))),
        [Action::RestoreMemory]
    );
    assert!(!healer.memory_lowered());
    // Calm goes on: nothing more to restore.
    assert!(without_warnings(healer.observe(sample(8, false))).is_empty());
    // A new episode is relieved at once, cooldown or not.
    assert_eq!(
        without_warnings(healer.observe(sample(9, true))),
        [Action::RelieveMemory]
    );
}

#[test]
fn relief_comes_before_the_handover_in_one_sample() {
    let base = Instant::now();
    let mut healer = Healer::new(Rules {
        critical_samples: 1,
        ..rules()
    });
    let both = Observation {
        disk_pressure: true,
        memory_pressure: true,
        ..seen(base, 0, HealthLevel::Critical)
    };
    assert_eq!(
        healer.observe(both),
        [
            Action::Warn {
                level: HealthLevel::Critical,
                changed: true
            },
            Action::RelieveDisk,
            Action::RelieveMemory,
            Action::HandOver
        ]
    );
}

#[test]
fn with_actions_off_only_warnings_come_out() {
    let base = Instant::now();
    let mut healer = Healer::new(Rules {
        actions: false,
        critical_samples: 1,
        ..rules()
    });
    for n in 0..10 {
        let all = Observation {
            disk_pressure: true,
            memory_pressure: true,
            ..seen(base, n, HealthLevel::Critical)
        };
        assert!(without_warnings(healer.observe(all)).is_empty());
    }
}

#[test]
fn warnings_come_on_a_change_of_level_and_are_repeated_only_every_warn_every() {
    let base = Instant::now();
    let mut healer = Healer::new(rules());
    let mut warned = Vec::new();
    let levels = [
        (0, HealthLevel::Ok),
        (1, HealthLevel::Degraded),
        (2, HealthLevel::Degraded),
        (3, HealthLevel::Critical),
        (4, HealthLevel::Critical),
        (33, HealthLevel::Critical),
        (34, HealthLevel::Critical),
        (35, HealthLevel::Ok),
        (36, HealthLevel::Ok),
    ];
    for (n, level) in levels {
        let observation = Observation {
            leader: false,
            ..seen(base, n, level)
        };
        for action in healer.observe(observation) {
            if let Action::Warn { level, changed } = action {
                warned.push((n, level, changed));
            }
        }
    }
    assert_eq!(
        warned,
        [
            (1, HealthLevel::Degraded, true),
            (3, HealthLevel::Critical, true),
            (33, HealthLevel::Critical, false),
            (35, HealthLevel::Ok, true),
        ]
    );
}

#[test]
fn pressure_is_judged_against_the_configured_thresholds() {
    let sample = Sample {
        cpu: 0.1,
        rss_bytes: 700,
        mem_total_bytes: 1000,
        disk_free_bytes: 15 << 20,
        disk_total_bytes: 64 << 20,
        net_errors: 0,
        threads: 1,
        open_fds: 1,
        fd_limit: 1024,
    };
    let mut config = SelfHealing::default();
    // 15 MiB of 64 MiB is 23 % free: above the default fractions, under 1 GiB.
    assert!(disk_pressure(&sample, &config.limits));
    config.limits.disk_free_critical_bytes = 8 << 20;
    assert!(!disk_pressure(&sample, &config.limits));
    config.limits.disk_free_degraded_bytes = 16 << 20;
    assert!(disk_pressure(&sample, &config.limits));
    // RSS 70 % of memory: over the default rss_degraded (60 %).
    assert_eq!(memory_threshold(&sample, &config), Some(600));
    assert!(memory_pressure(&sample, &config));
    config.memory_pressure_rss_bytes = Some(701);
    assert!(!memory_pressure(&sample, &config));
}

fn row(at_us: i64, cpu: f64, mem_bytes: u64, disk_free_bytes: u64) -> Recorded {
    Recorded {
        at_us,
        cpu,
        mem_bytes,
        disk_free_bytes,
        error_rate: 0.0,
    }
}

fn successor_rules() -> SuccessorRules {
    SuccessorRules {
        max_lag: 100,
        stale_after: Duration::from_secs(30),
        limits: HealthLimits {
            disk_free_critical_bytes: 1000,
            disk_free_degraded_bytes: 2000,
            ..HealthLimits::default()
        },
    }
}

#[test]
fn the_successor_is_the_healthiest_caught_up_follower_not_the_first() {
    let now = Timestamp(100_000_000);
    let fresh = now.micros() - 1_000_000;
    let followers = [
        // The first voter: caught up but degraded (low disk).
        Follower {
            id: 2,
            matched: Some(500),
            latest: Some(row(fresh, 0.1, 100, 1500)),
        },
        // Healthy but busier than 4.
        Follower {
            id: 3,
            matched: Some(499),
            latest: Some(row(fresh, 0.5, 100, 1 << 30)),
        },
        Follower {
            id: 4,
            matched: Some(450),
            latest: Some(row(fresh, 0.2, 900, 1 << 30)),
        },
    ];
    let (chosen, verdicts) = choose_successor(500, &followers, now, &successor_rules());
    assert_eq!(chosen, Some(4));
    assert_eq!(verdicts.len(), 3);
    assert_eq!(verdicts[0].level, Some(HealthLevel::Degraded));
    assert!(verdicts.iter().all(|v| v.skipped.is_none()));
    // Equal health and load: the most caught up, then the lowest id.
    let twins = [
        Follower {
            id: 5,
            matched: Some(480),
            latest: Some(row(fresh, 0.2, 100, 1 << 30)),
        },
        Follower {
            id: 6,
            matched: Some(490),
            latest: Some(row(fresh, 0.2, 100, 1 << 30)),
        },
        Follower {
            id: 7,
            matched: Some(490),
            latest: Some(row(fresh, 0.2, 100, 1 << 30)),
        },
    ];
    let (chosen, _) = choose_successor(500, &twins, now, &successor_rules());
    assert_eq!(chosen, Some(6));
}

#[test]
fn behind_stale_critical_or_unknown_followers_are_skipped_with_the_reason() {
    let now = Timestamp(100_000_000);
    let fresh = now.micros() - 1_000_000;
    let stale = now.micros() - 31_000_000;
    let followers = [
        Follower {
            id: 2,
            matched: Some(300),
            latest: Some(row(fresh, 0.1, 100, 1 << 30)),
        },
        Follower {
            id: 3,
            matched: Some(500),
            latest: Some(row(stale, 0.1, 100, 1 << 30)),
        },
        Follower {
            id: 4,
            matched: Some(500),
            latest: Some(row(fresh, 0.1, 100, 10)),
        },
        Follower {
            id: 5,
            matched: Some(500),
            latest: None,
        },
        Follower {
            id: 6,
            matched: None,
            latest: Some(row(fresh, 0.1, 100, 1 << 30)),
        },
    ];
    let (chosen, verdicts) = choose_successor(500, &followers, now, &successor_rules());
    assert_eq!(chosen, None);
    let why: Vec<&str> = verdicts
        .iter()
        .map(|v| v.skipped.as_deref().unwrap_or("-"))
        .collect();
    assert_eq!(
        why,
        [
            "200 entries behind (at most 100 allowed)",
            "its latest health sample is 31000 ms old",
            "its health is critical",
            "no health sample recorded",
            "its log position is unknown",
        ]
    );
    // Once the critical one is healthy again, it is chosen.
    let mut healed = followers.clone();
    healed[2].latest = Some(row(fresh, 0.1, 100, 1 << 30));
    assert_eq!(
        choose_successor(500, &healed, now, &successor_rules()).0,
        Some(4)
    );
}

#[test]
fn a_recorded_sample_is_judged_by_its_absolute_numbers() {
    let limits = successor_rules().limits;
    let mut sample = row(0, 0.95, 1, 1500);
    sample.error_rate = 0.6;
    let (level, reasons) = assess_recorded(&sample, &limits);
    assert_eq!(level, HealthLevel::Critical);
    assert_eq!(
        reasons,
        [
            "cpu 0.95 >= 0.90",
            "disk free 1500 B < 2000 B",
            "error rate 0.60 >= 0.50"
        ]
    );
    assert_eq!(
        assess_recorded(&row(0, 0.1, 1, 1 << 30), &limits),
        (HealthLevel::Ok, vec![])
    );
}
