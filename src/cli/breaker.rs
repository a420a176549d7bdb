//! `testfleet breaker list|reset|force-open|disable`: the circuit breakers, as the leader holds
//! them, and an operator's hand on them (ARCHITECTURE.md § Circuit breakers).
//!
//! `list` asks the leader (`Control.ListBreakers`; a follower forwards) for every breaker's
//! state and numbers and the recovery level the system breaker picked. The changes
//! (`Control.SetBreaker`) become a `BreakerTransition` in the log, proposed by the leader, so a
//! new leader continues from them.

use serde::Serialize;

use super::args::Target;
use super::jobs::with_retry_control;
use super::{CliError, Output, table};
use crate::proto::{BreakerChange, BreakerList, ListBreakersRequest, SetBreakerRequest};

/// What `testfleet breaker` does.
#[derive(clap::Subcommand)]
pub enum BreakerCommand {
    /// Every breaker (the system's and each worker's): state, failure rate, calls, time in
    /// state; and the recovery level in force
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Close a breaker and clear its counts (lifts a forced-open or disabled breaker too)
    Reset(Change),
    /// Open a breaker until it is reset: no work for the worker; the highest recovery level
    /// for `system`
    ForceOpen(Change),
    /// Let everything through and count nothing; for `system`, the base recovery policy applies
    Disable(Change),
}

/// The breaker to change.
#[derive(clap::Args)]
pub struct Change {
    /// A worker's name, or `system`
    target_breaker: String,
    /// Why, for the record (`breaker_transitions.reason`)
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    target: Target,
}

/// Runs one of the commands.
pub async fn run(command: BreakerCommand) -> Result<(), CliError> {
    let (change, action) = match command {
        BreakerCommand::List { target } => {
            let list = list(&target.remote()?).await?;
            print!("{}", render_list(&list, target.output));
            return Ok(());
        }
        BreakerCommand::Reset(change) => (change, "reset"),
        BreakerCommand::ForceOpen(change) => (change, "force_open"),
        BreakerCommand::Disable(change) => (change, "disable"),
    };
    let remote = change.target.remote()?;
    let reply = with_retry_control(&remote, |mut client| {
        let request = SetBreakerRequest {
            target: change.target_breaker.clone(),
            action: action.to_string(),
            reason: change.reason.clone(),
        };
        async move { client.set_breaker(request).await.map(|r| r.into_inner()) }
    })
    .await?;
    print!("{}", render_change(&reply, change.target.output));
    Ok(())
}

/// The leader's breakers.
pub async fn list(remote: &super::Remote) -> Result<BreakerList, CliError> {
    with_retry_control(remote, |mut client| async move {
        (client.list_breakers(ListBreakersRequest {}).await).map(|r| r.into_inner())
    })
    .await
}

#[derive(Serialize)]
struct ListJson<'a> {
    enabled: bool,
    recovery_level: &'a str,
    max_recovery_attempts: u32,
    recovery_interval_ms: u64,
    breakers: Vec<BreakerJson<'a>>,
}

#[derive(Serialize)]
struct BreakerJson<'a> {
    scope: &'a str,
    state: &'a str,
    since: Option<String>,
    failure_rate: f64,
    calls: u64,
    failures: u64,
    rejected: u64,
    trials_in_flight: u32,
    reopens: u32,
    next_trial_at: Option<String>,
}

fn render_list(list: &BreakerList, output: Output) -> String {
    let now_us = crate::state::command::Timestamp::now().0;
    if output == Output::Json {
        let json = ListJson {
            enabled: list.enabled,
            recovery_level: &list.recovery_level,
            max_recovery_attempts: list.max_recovery_attempts,
            recovery_interval_ms: list.recovery_interval_ms,
            breakers: (list.breakers.iter())
                .map(|b| BreakerJson {
                    scope: &b.scope,
                    state: &b.state,
                    since: super::time::rfc3339_utc(b.since_us),
                    failure_rate: b.failure_rate,
                    calls: b.calls,
                    failures: b.failures,
                    rejected: b.rejected,
                    trials_in_flight: b.trials_in_flight,
                    reopens: b.reopens,
                    next_trial_at: (b.next_trial_at_us > 0)
                        .then(|| super::time::rfc3339_utc(b.next_trial_at_us))
                        .flatten(),
                })
                .collect(),
        };
        return serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
    }
    let mut out = match (list.enabled, list.recovery_level.as_str()) {
        (false, _) => format!(
            "circuit breakers off (--disable-circuit-breaker): base recovery policy, {} \
             attempts of {} s\n",
            list.max_recovery_attempts,
            list.recovery_interval_ms / 1000
        ),
        (true, "off") => "auto-recovery is off on this leader\n".to_string(),
        (true, level) => format!(
            "recovery level: {level} ({} attempts of {} s)\n",
            list.max_recovery_attempts,
            list.recovery_interval_ms as f64 / 1000.0
        ),
    };
    let rows: Vec<Vec<String>> = (list.breakers.iter())
        .map(|b| {
            let in_state = (now_us - b.since_us).max(0) as f64 / 1e6;
            let mut state = b.state.clone();
            if b.next_trial_at_us > 0 {
                let left = (b.next_trial_at_us - now_us).max(0) as f64 / 1e6;
                state += &format!(" (trials in {left:.0} s)");
            }
            vec![
                b.scope.clone(),
                state,
                format!("{:.0} %", b.failure_rate * 100.0),
                format!("{} / {}", b.failures, b.calls),
                b.rejected.to_string(),
                human_seconds(in_state),
            ]
        })
        .collect();
    out += &table(
        &[
            "BREAKER",
            "STATE",
            "FAILURE RATE",
            "FAILED / CALLS",
            "REJECTED",
            "IN STATE",
        ],
        &rows,
    );
    out
}

fn human_seconds(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

fn render_change(reply: &BreakerChange, output: Output) -> String {
    match output {
        Output::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "scope": reply.scope,
                "from": reply.from,
                "to": reply.to,
            }))
            .unwrap_or_default()
                + "\n"
        }
        Output::Table => format!("{}: {} → {}\n", reply.scope, reply.from, reply.to),
    }
}
