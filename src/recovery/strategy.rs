//! The ways of bringing a worker back ([`Strategy`]), the order each fault category tries them
//! in ([`default_order`]), and how recovery history reorders them ([`StrategyStats::plan`]).
//!
//! # Default orders
//!
//! | category              | order                            | why                                           |
//! |-----------------------|----------------------------------|-----------------------------------------------|
//! | `connection`          | reconnect → restart → quarantine | the process is probably alive; the network blipped |
//! | `lease_lost`          | reconnect → restart → quarantine | same: the worker lost its session, not its process |
//! | `timeout`             | reconnect → restart → quarantine | a silent worker may only be slow or cut off   |
//! | `crash`               | reconnect → restart → quarantine | a supervised worker (systemd) comes back by itself; a reconnect is cheap and learning moves restart first where it is not so |
//! | `hang`                | restart → reconnect → quarantine | a stuck process does not unstick when its session is closed |
//! | `storage`             | restart → reconnect → quarantine | a restart remounts and reopens; reconnecting keeps the broken handle |
//! | `resource_exhaustion` | quarantine → restart → reconnect | with no new tasks a worker frees memory and disk by itself; a restart frees what a leak holds |
//!
//! Attempts beyond the end of the order are [`Strategy::Quarantine`]: the worker is held out of
//! service and watched until `max_recovery_attempts` runs out.
//!
//! # Learning
//!
//! [`StrategyStats`] counts, per (category, strategy), the attempts made and how many brought
//! the worker back — loaded from `worker_recovery_history` when a leader starts
//! ([`parse_outcome`] reads a row) and updated by the planner as attempts end. Each strategy
//! gets a score:
//!
//! * with at least `min_samples` attempts (default [`StrategyStats::DEFAULT_MIN_SAMPLES`], 5),
//!   the Laplace-smoothed success rate `(successes + 1) / (attempts + 2)`;
//! * with fewer, the prior `1/2` — what the smoothed rate is with no data at all.
//!
//! The order for a category sorts its default order by score, highest first, with a **stable**
//! sort, so ties keep the default order. Two guards keep noise from reordering: below
//! `min_samples` a strategy's history is not used at all (one failure, or four, changes
//! nothing), and smoothing pulls small samples towards `1/2` (5 failures out of 5 score 0.14,
//! not 0). A strategy that keeps failing (reconnect: 1 success in 10, score 2/12 = 0.17) falls
//! behind one with no history (score 0.5), which then gets tried first and earns its own
//! record; one that succeeds (8 in 10, 0.75) moves ahead of the unknown. Rates mix attempt
//! positions (a quarantine usually comes after two failures), which is why quarantine, the
//! last resort, rarely rises: the order reflects what worked for that category here, not a
//! controlled experiment.
//!
//! The [`Plan`] carries the order, the scores behind it and a sentence saying why, all of which
//! go into each attempt's `details` (see [`Plan::details`]).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value, json};

use crate::state::command::{FaultCategory, WorkerStatus};

/// One way of trying to bring a failed worker back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    /// Close the worker's session and wait `reconnect_wait` for it to register again.
    Reconnect,
    /// Run the worker's restart command (the executor does it) and wait `recovery_interval`
    /// for it to register again.
    Restart,
    /// Give it no tasks and watch it for `recovery_interval`; it passes if it is back and still
    /// healthy when the interval ends.
    Quarantine,
}

impl Strategy {
    /// Every strategy, from the lightest to the heaviest: the default order of escalation.
    pub const ALL: [Strategy; 3] = [Strategy::Reconnect, Strategy::Restart, Strategy::Quarantine];

    /// The name stored as `recovery_type` in `worker_recovery_history`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Reconnect => "reconnect",
            Strategy::Restart => "restart",
            Strategy::Quarantine => "quarantine",
        }
    }

    /// Parses a stored `recovery_type`; `None` for rows that are not strategy attempts
    /// (`proactive_drain`, `self_recovered`).
    pub fn parse(text: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether an attempt acts on the worker (closes its session, runs a command) and so takes
    /// a place in `max_concurrent_recoveries`. A quarantine only watches and takes none.
    pub fn is_active(self) -> bool {
        !matches!(self, Strategy::Quarantine)
    }

    /// The worker's status while an attempt with this strategy runs.
    pub fn status(self) -> WorkerStatus {
        match self {
            Strategy::Reconnect | Strategy::Restart => WorkerStatus::Recovering,
            Strategy::Quarantine => WorkerStatus::Quarantined,
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The order a category tries strategies in when history says nothing (module docs, table).
pub fn default_order(category: FaultCategory) -> [Strategy; 3] {
    use Strategy::{Quarantine, Reconnect, Restart};
    match category {
        FaultCategory::Connection
        | FaultCategory::LeaseLost
        | FaultCategory::Timeout
        | FaultCategory::Crash => [Reconnect, Restart, Quarantine],
        FaultCategory::Hang | FaultCategory::Storage => [Restart, Reconnect, Quarantine],
        FaultCategory::ResourceExhaustion => [Quarantine, Restart, Reconnect],
    }
}

/// Attempts and successes of one strategy for one category.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub successes: u32,
    pub attempts: u32,
}

impl Tally {
    /// Attempts that did not bring the worker back.
    pub fn failures(self) -> u32 {
        self.attempts - self.successes
    }
}

/// The score a strategy is ordered by, and what it rests on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// The history behind it.
    pub tally: Tally,
    /// `(successes + 1) / (attempts + 2)` when `learned`, else the prior `0.5`.
    pub score: f64,
    /// Whether the tally reached `min_samples` and so counts.
    pub learned: bool,
}

/// Success counts per (category, strategy): what recovery has learned (module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct StrategyStats {
    min_samples: u32,
    tallies: BTreeMap<(FaultCategory, Strategy), Tally>,
}

impl Default for StrategyStats {
    fn default() -> Self {
        StrategyStats::new(StrategyStats::DEFAULT_MIN_SAMPLES)
    }
}

impl StrategyStats {
    /// Attempts a (category, strategy) needs before its history can reorder anything.
    pub const DEFAULT_MIN_SAMPLES: u32 = 5;

    /// No history; `min_samples` is raised to at least 1.
    pub fn new(min_samples: u32) -> Self {
        StrategyStats {
            min_samples: min_samples.max(1),
            tallies: BTreeMap::new(),
        }
    }

    /// Stats from past outcomes `(category, strategy, success)`, e.g. every
    /// `worker_recovery_history` row that [`parse_outcome`] understands.
    pub fn from_outcomes(
        min_samples: u32,
        outcomes: impl IntoIterator<Item = (FaultCategory, Strategy, bool)>,
    ) -> Self {
        let mut stats = StrategyStats::new(min_samples);
        for (category, strategy, success) in outcomes {
            stats.observe(category, strategy, success);
        }
        stats
    }

    /// Counts one attempt's outcome.
    pub fn observe(&mut self, category: FaultCategory, strategy: Strategy, success: bool) {
        let tally = self.tallies.entry((category, strategy)).or_default();
        tally.attempts = tally.attempts.saturating_add(1);
        if success {
            tally.successes = tally.successes.saturating_add(1);
        }
    }

    /// The sample count below which history is ignored.
    pub fn min_samples(&self) -> u32 {
        self.min_samples
    }

    /// The history of `strategy` for `category`.
    pub fn tally(&self, category: FaultCategory, strategy: Strategy) -> Tally {
        self.tallies
            .get(&(category, strategy))
            .copied()
            .unwrap_or_default()
    }

    /// The score `strategy` is ordered by for `category`.
    pub fn rate(&self, category: FaultCategory, strategy: Strategy) -> Rate {
        let tally = self.tally(category, strategy);
        let learned = tally.attempts >= self.min_samples;
        let score = if learned {
            (f64::from(tally.successes) + 1.0) / (f64::from(tally.attempts) + 2.0)
        } else {
            0.5
        };
        Rate {
            tally,
            score,
            learned,
        }
    }

    /// The order to try for a worker that failed with `category`, and why.
    pub fn plan(&self, category: FaultCategory) -> Plan {
        let default = default_order(category);
        let rates: BTreeMap<Strategy, Rate> = default
            .iter()
            .map(|&s| (s, self.rate(category, s)))
            .collect();
        let mut order = default.to_vec();
        // Stable: equal scores keep the default order.
        order.sort_by(|a, b| rates[b].score.total_cmp(&rates[a].score));
        let reason = self.explain(category, &default, &order, &rates);
        Plan {
            category,
            order,
            rates,
            reason,
        }
    }

    fn explain(
        &self,
        category: FaultCategory,
        default: &[Strategy],
        order: &[Strategy],
        rates: &BTreeMap<Strategy, Rate>,
    ) -> String {
        if order == default {
            return if rates.values().any(|r| r.learned) {
                format!("default order for {category}; the learned rates agree with it")
            } else {
                format!(
                    "default order for {category}; no strategy has {} attempts of history yet",
                    self.min_samples
                )
            };
        }
        let position = |list: &[Strategy], s: Strategy| list.iter().position(|&x| x == s);
        // Strategies that moved back because of their own record, then the one now first.
        let mut parts: Vec<String> = default
            .iter()
            .filter(|&&s| rates[&s].learned && position(order, s) > position(default, s))
            .map(|&s| {
                let tally = rates[&s].tally;
                format!(
                    "{s} failed {} of {} times for {category}",
                    tally.failures(),
                    tally.attempts
                )
            })
            .collect();
        let first = order[0];
        let rate = rates[&first];
        let basis = if rate.learned {
            format!(
                "succeeded {} of {} times",
                rate.tally.successes, rate.tally.attempts
            )
        } else {
            "has too little history to judge".to_string()
        };
        parts.push(format!(
            "{first} ({basis}, score {:.2}) goes first",
            rate.score
        ));
        parts.join("; ")
    }
}

/// The strategies a worker's recovery will try, in order, with the evidence for the order.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What the worker failed with.
    pub category: FaultCategory,
    /// Strategies in the order attempts use them.
    pub order: Vec<Strategy>,
    /// The score of each strategy when the plan was made.
    pub rates: BTreeMap<Strategy, Rate>,
    /// Why this order, for people: "reconnect failed 9 of 10 times for crash; …".
    pub reason: String,
}

impl Plan {
    /// The strategy of attempt `attempt` (1-based); quarantine beyond the end of the order.
    pub fn strategy_for(&self, attempt: u32) -> Strategy {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.order
            .get(index)
            .copied()
            .unwrap_or(Strategy::Quarantine)
    }

    /// Whether history changed the default order.
    pub fn reordered(&self) -> bool {
        self.order[..] != default_order(self.category)[..]
    }

    /// `{"category", "order", "default_order", "rates": {strategy: {successes, attempts,
    /// score, learned}}, "reason"}` — the part of an attempt's `details` that explains the
    /// choice.
    pub fn details(&self) -> Value {
        let names = |list: &[Strategy]| list.iter().map(|s| s.as_str()).collect::<Vec<_>>();
        let rates: serde_json::Map<String, Value> = (self.rates.iter())
            .map(|(s, r)| {
                let rate = json!({
                    "successes": r.tally.successes,
                    "attempts": r.tally.attempts,
                    "score": (r.score * 1000.0).round() / 1000.0,
                    "learned": r.learned,
                });
                (s.as_str().to_string(), rate)
            })
            .collect();
        json!({
            "category": self.category.as_str(),
            "order": names(&self.order),
            "default_order": names(&default_order(self.category)),
            "rates": rates,
            "reason": self.reason,
        })
    }
}

/// The `(category, strategy, success)` of a `worker_recovery_history` row written by the
/// planner, from its `recovery_type`, `success` and `details_json` (whose `"category"` the
/// planner sets). `None` for rows that are not strategy attempts or lack a known category.
pub fn parse_outcome(
    recovery_type: &str,
    success: bool,
    details_json: &str,
) -> Option<(FaultCategory, Strategy, bool)> {
    let strategy = Strategy::parse(recovery_type)?;
    let details: Value = serde_json::from_str(details_json).ok()?;
    let category = FaultCategory::parse(details.get("category")?.as_str()?)?;
    Some((category, strategy, success))
}

#[cfg(test)]
mod tests;
