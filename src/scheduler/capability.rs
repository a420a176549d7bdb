//! Capability expressions and what a worker offers: the matching rules of the scheduler
//! (ARCHITECTURE.md § Capabilities), apart from its queues.
//!
//! A task's expression — `name` (present and not `false`), `name=value`, `name>=N` — is parsed
//! once per requirement class ([`Expr::parse`]) and tested against a worker's flattened
//! capabilities ([`Expr::holds`]); a parked task's reason says what the live workers have
//! instead ([`Expr::closest`]). [`offers`] lists what tells a worker apart from the others,
//! for the rarity that serves plain workers first.

use std::collections::{BTreeMap, BTreeSet};

use super::WorkerProfile;
use crate::state::command::WorkerId;

/// Capability keys that describe a worker without offering anything a task can ask for in
/// a way that tells workers apart: the basics every worker reports, and the probes'
/// bookkeeping (their details and errors). Not counted in a worker's rarity.
pub(super) const NOT_OFFERS: [&str; 10] = [
    "os",
    "arch",
    "cpus",
    "memory_gb",
    "probed",
    "declared",
    "gpu_adapters",
    "gpu_probe_error",
    "browsers",
    "browser_probe_error",
];

/// What a worker offers that a requirement can tell apart: each label `k=v`; each capability
/// `k=v` for text and `k` for numbers and `true` (a present `false` or empty value offers
/// nothing); the keys of [`NOT_OFFERS`] left out.
pub(super) fn offers(profile: &WorkerProfile) -> BTreeSet<String> {
    let labels = (profile.labels.iter()).map(|(k, v)| format!("label {k}={v}"));
    let capabilities = (profile.capabilities.iter())
        .filter(|(k, _)| !NOT_OFFERS.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let v = v.trim();
            if v.is_empty() || v.eq_ignore_ascii_case("false") {
                None
            } else if v.eq_ignore_ascii_case("true") || v.parse::<f64>().is_ok() {
                Some(k.clone())
            } else {
                Some(format!("{k}={v}"))
            }
        });
    labels.chain(capabilities).collect()
}

/// One parsed capability expression.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Expr {
    /// `name`: present and not `false`.
    Present(String),
    /// `name=value`.
    Equals(String, String),
    /// `name>=N`: the worker's value parses as a number at least `N`.
    AtLeast(String, f64),
    /// Not one of the forms above; no worker satisfies it.
    Invalid,
}

impl Expr {
    pub(super) fn parse(text: &str) -> Expr {
        let name_ok = |name: &str| !name.is_empty() && !name.contains(['<', '>', '=', '!', ' ']);
        let text = text.trim();
        if let Some((name, bound)) = text.split_once(">=") {
            return match bound.trim().parse::<f64>() {
                Ok(n) if n.is_finite() && name_ok(name.trim()) => {
                    Expr::AtLeast(name.trim().to_string(), n)
                }
                _ => Expr::Invalid,
            };
        }
        if let Some((name, value)) = text.split_once('=') {
            let value = value.trim();
            if !name_ok(name.trim()) || value.starts_with(['<', '>', '=']) {
                return Expr::Invalid;
            }
            return Expr::Equals(name.trim().to_string(), value.to_string());
        }
        if !name_ok(text) {
            return Expr::Invalid;
        }
        Expr::Present(text.to_string())
    }

    pub(super) fn holds(&self, capabilities: &BTreeMap<String, String>) -> bool {
        match self {
            Expr::Present(name) => capabilities
                .get(name)
                .is_some_and(|v| !v.trim().eq_ignore_ascii_case("false")),
            Expr::Equals(name, value) => capabilities.get(name) == Some(value),
            Expr::AtLeast(name, bound) => capabilities
                .get(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v >= *bound),
            Expr::Invalid => false,
        }
    }

    /// What the live workers offer instead, for a reason: ` (the most a live worker has is
    /// 16, on w1)` for `name>=N`, ` (live workers have cpu, integrated)` for `name=value`,
    /// empty when none reports the name at all or for `name`.
    pub(super) fn closest<'a>(&self, live: impl Iterator<Item = &'a WorkerProfile>) -> String {
        match self {
            Expr::AtLeast(name, _) => {
                let best = live
                    .filter_map(|w| {
                        let v = w.capabilities.get(name)?.trim().parse::<f64>().ok()?;
                        Some((v, &w.id))
                    })
                    .fold(None::<(f64, &WorkerId)>, |best, (v, id)| match best {
                        Some((b, _)) if b >= v => best,
                        _ => Some((v, id)),
                    });
                best.map_or(String::new(), |(v, id)| {
                    format!(" (the most a live worker has is {v}, on {id})")
                })
            }
            Expr::Equals(name, _) => {
                let values: BTreeSet<&str> = live
                    .filter_map(|w| w.capabilities.get(name).map(|v| v.as_str()))
                    .collect();
                if values.is_empty() {
                    String::new()
                } else {
                    let values: Vec<&str> = values.into_iter().collect();
                    format!(" (live workers have {name}={})", values.join(", "))
                }
            }
            Expr::Present(_) | Expr::Invalid => String::new(),
        }
    }
}

/// Does a worker with these (flattened) capabilities meet `expression` — `name`,
/// `name=value` or `name>=N`? The scheduler's own rule, for readers outside it.
pub fn meets(expression: &str, capabilities: &BTreeMap<String, String>) -> bool {
    Expr::parse(expression).holds(capabilities)
}
