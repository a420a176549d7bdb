//! Orders and learning: defaults per category, the score formula, what does and does not
//! reorder, and reading history rows.

use super::*;
use FaultCategory::*;
use Strategy::*;

/// `successes` of `attempts` for (category, strategy).
fn history(rows: &[(FaultCategory, Strategy, u32, u32)]) -> StrategyStats {
    let outcomes = rows
        .iter()
        .flat_map(|&(c, s, successes, attempts)| (0..attempts).map(move |i| (c, s, i < successes)));
    StrategyStats::from_outcomes(StrategyStats::DEFAULT_MIN_SAMPLES, outcomes)
}

#[test]
fn every_category_has_a_permutation_of_all_strategies() {
    for &category in FaultCategory::ALL {
        let mut order = default_order(category).to_vec();
        order.sort();
        assert_eq!(order, Strategy::ALL.to_vec(), "{category}");
    }
    assert_eq!(default_order(Crash), [Reconnect, Restart, Quarantine]);
    assert_eq!(default_order(Hang), [Restart, Reconnect, Quarantine]);
    assert_eq!(
        default_order(ResourceExhaustion),
        [Quarantine, Restart, Reconnect]
    );
}

#[test]
fn without_history_the_plan_is_the_default_and_says_so() {
    let plan = StrategyStats::default().plan(Connection);
    assert_eq!(plan.order, default_order(Connection));
    assert!(!plan.reordered());
    assert!(
        plan.reason.contains("no strategy has 5 attempts"),
        "{}",
        plan.reason
    );
    assert!(plan.rates.values().all(|r| r.score == 0.5 && !r.learned));
}

#[test]
fn scores_are_laplace_smoothed_above_the_sample_minimum() {
    let stats = history(&[
        (Crash, Reconnect, 1, 10),
        (Crash, Restart, 0, 5),
        (Crash, Quarantine, 3, 4),
    ]);
    let cases = [
        // strategy, learned, score
        (Reconnect, true, 2.0 / 12.0),
        (Restart, true, 1.0 / 7.0),
        (Quarantine, false, 0.5), // 4 < 5 samples: the prior
    ];
    for (strategy, learned, score) in cases {
        let rate = stats.rate(Crash, strategy);
        assert_eq!(rate.learned, learned, "{strategy}");
        assert!(
            (rate.score - score).abs() < 1e-12,
            "{strategy}: {}",
            rate.score
        );
    }
}

#[test]
fn reordering_needs_evidence() {
    // (history for crash's reconnect, expected first strategy)
    let cases = [
        ((0, 1), Reconnect),  // one failure: too few samples
        ((0, 4), Reconnect),  // four failures: still too few
        ((5, 10), Reconnect), // 6/12 = 0.5 ties the prior: default order kept
        ((4, 10), Restart),   // 5/12 < 0.5
        ((1, 10), Restart),   // 1 reconnect in 10 worked: restart first
        ((9, 10), Reconnect), // good history keeps it first
    ];
    for ((successes, attempts), first) in cases {
        let stats = history(&[(Crash, Reconnect, successes, attempts)]);
        let plan = stats.plan(Crash);
        assert_eq!(plan.order[0], first, "{successes}/{attempts}: {plan:?}");
    }
}

#[test]
fn a_strategy_that_failed_nine_of_ten_times_goes_behind_and_the_reason_says_why() {
    let stats = history(&[(Crash, Reconnect, 1, 10), (Crash, Restart, 3, 4)]);
    let plan = stats.plan(Crash);
    assert_eq!(plan.order, vec![Restart, Quarantine, Reconnect]);
    assert!(plan.reordered());
    assert!(
        plan.reason
            .starts_with("reconnect failed 9 of 10 times for crash"),
        "{}",
        plan.reason
    );
    assert!(
        plan.reason.contains("restart (has too little history"),
        "{}",
        plan.reason
    );
    let details = plan.details();
    assert_eq!(
        details["order"],
        json!(["restart", "quarantine", "reconnect"])
    );
    assert_eq!(
        details["default_order"],
        json!(["reconnect", "restart", "quarantine"])
    );
    assert_eq!(details["rates"]["reconnect"]["attempts"], 10);
    assert_eq!(details["rates"]["reconnect"]["score"], 0.167);
    assert_eq!(details["category"], "crash");
}

#[test]
fn a_successful_strategy_moves_ahead_and_categories_learn_separately() {
    let stats = history(&[(Connection, Restart, 8, 10)]);
    assert_eq!(
        stats.plan(Connection).order,
        vec![Restart, Reconnect, Quarantine]
    );
    assert!(
        stats
            .plan(Connection)
            .reason
            .contains("succeeded 8 of 10 times")
    );
    assert_eq!(stats.plan(Timeout).order, default_order(Timeout).to_vec());
}

#[test]
fn learned_rates_that_agree_keep_the_default_and_say_so() {
    let stats = history(&[(Connection, Reconnect, 9, 10), (Connection, Restart, 6, 10)]);
    let plan = stats.plan(Connection);
    assert!(!plan.reordered());
    assert!(plan.reason.contains("agree"), "{}", plan.reason);
}

#[test]
fn attempts_beyond_the_order_quarantine() {
    let plan = StrategyStats::default().plan(Connection);
    let strategies: Vec<Strategy> = (1..=5).map(|n| plan.strategy_for(n)).collect();
    assert_eq!(
        strategies,
        [Reconnect, Restart, Quarantine, Quarantine, Quarantine]
    );
    let plan = StrategyStats::default().plan(ResourceExhaustion);
    assert_eq!(plan.strategy_for(3), Reconnect);
    assert_eq!(plan.strategy_for(4), Quarantine);
}

#[test]
fn history_rows_are_read_back() {
    let details = StrategyStats::default().plan(Hang).details().to_string();
    let cases = [
        (
            "restart",
            true,
            details.as_str(),
            Some((Hang, Restart, true)),
        ),
        (
            "quarantine",
            false,
            details.as_str(),
            Some((Hang, Quarantine, false)),
        ),
        ("proactive_drain", true, details.as_str(), None),
        ("self_recovered", true, details.as_str(), None),
        ("restart", true, "{}", None),
        ("restart", true, r#"{"category": "gremlins"}"#, None),
        ("restart", true, "not json", None),
    ];
    for (recovery_type, success, details, expected) in cases {
        assert_eq!(
            parse_outcome(recovery_type, success, details),
            expected,
            "{recovery_type} {details}"
        );
    }
}

#[test]
fn observing_updates_the_tally() {
    let mut stats = StrategyStats::new(0);
    assert_eq!(stats.min_samples(), 1);
    stats.observe(Storage, Restart, false);
    stats.observe(Storage, Restart, true);
    assert_eq!(
        stats.tally(Storage, Restart),
        Tally {
            successes: 1,
            attempts: 2
        }
    );
    assert_eq!(stats.tally(Storage, Restart).failures(), 1);
    assert_eq!(stats.tally(Storage, Reconnect), Tally::default());
}

#[test]
fn strategy_names_round_trip() {
    for strategy in Strategy::ALL {
        assert_eq!(Strategy::parse(strategy.as_str()), Some(strategy));
        assert_eq!(strategy.to_string(), strategy.as_str());
    }
    assert_eq!(Strategy::parse("reboot"), None);
    assert!(Restart.is_active() && Reconnect.is_active() && !Quarantine.is_active());
    assert_eq!(Quarantine.status(), WorkerStatus::Quarantined);
    assert_eq!(Reconnect.status(), WorkerStatus::Recovering);
}
