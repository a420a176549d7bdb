//! The chaos run's write probe: how long the cluster could not acknowledge a write.
//!
//! One probe client proposes a small `Bench` command (a row in `bench_log`) every
//! [`PERIOD`], to the coordinator that answered last and on to the next one when it does not
//! ([`run`]), and records each call ([`Probe`]). A fault's *write outage* ([`outage_after`]) is
//! the time from the fault until the first write invoked after it was acknowledged, when one
//! before that failed — what a client that writes all the time would see, polling delay
//! ([`PERIOD`]) included. Summed over
//! the faults of a run it gives the time without a writable cluster, and so the availability
//! the run measured at its rate of faults.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::auth::Credentials;
use crate::cli::connect;
use crate::proto::BenchRequest;

/// How often a write is proposed.
pub const PERIOD: Duration = Duration::from_millis(20);

/// How long one write may take before it counts as failed.
const CALL_LIMIT: Duration = Duration::from_millis(500);

/// One probe write, in milliseconds since the run started.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Probe {
    pub invoked_ms: f64,
    pub completed_ms: f64,
    pub acknowledged: bool,
}

/// How long writes failed after a fault at `at_ms`: 0 when the first write invoked at or after
/// it was acknowledged (nothing a client would notice), else until the first one that was
/// (ms); `None` when no write after it was (the run ended first).
pub fn outage_after(probes: &[Probe], at_ms: f64) -> Option<f64> {
    let mut after = probes.iter().filter(|p| p.invoked_ms >= at_ms);
    match after.next()? {
        first if first.acknowledged => Some(0.0),
        _ => (after.find(|p| p.acknowledged)).map(|p| p.completed_ms - at_ms),
    }
}

/// Proposes a write every [`PERIOD`] until `stop`, recording each in `probes`.
pub async fn run(
    addrs: Vec<String>,
    credentials: Credentials,
    started: Instant,
    probes: Arc<Mutex<Vec<Probe>>>,
    stop: CancellationToken,
) {
    let mut target = 0;
    let mut client = None;
    while !stop.is_cancelled() {
        let invoked = started.elapsed();
        let addr = &addrs[target % addrs.len()];
        let write = async {
            if client.is_none() {
                client = connect(addr, &credentials).await.ok();
            }
            let c = client.as_mut()?;
            c.propose_bench(BenchRequest {
                payload: vec![0; 16],
            })
            .await
            .ok()
        };
        let acknowledged = matches!(tokio::time::timeout(CALL_LIMIT, write).await, Ok(Some(_)));
        if !acknowledged {
            // A follower forwards to the leader, so a failure means this node is down, cut
            // off or without a leader: ask the next one.
            client = None;
            target += 1;
        }
        let completed = started.elapsed();
        (probes.lock().unwrap_or_else(|e| e.into_inner())).push(Probe {
            invoked_ms: invoked.as_secs_f64() * 1000.0,
            completed_ms: completed.as_secs_f64() * 1000.0,
            acknowledged,
        });
        let next = (invoked + PERIOD).saturating_sub(completed);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(next) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(invoked_ms: f64, completed_ms: f64, acknowledged: bool) -> Probe {
        Probe {
            invoked_ms,
            completed_ms,
            acknowledged,
        }
    }

    #[test]
    fn the_outage_ends_with_the_first_acknowledged_write_invoked_after_the_fault() {
        let probes = [
            probe(0.0, 2.0, true),
            probe(20.0, 22.0, true),
            probe(40.0, 540.0, false),
            probe(540.0, 1040.0, false),
            probe(1040.0, 1043.0, true),
            probe(1060.0, 1062.0, true),
        ];
        assert_eq!(outage_after(&probes, 30.0), Some(1013.0));
        // A write already in flight at the fault does not count, even if acknowledged.
        assert_eq!(outage_after(&probes, 21.0), Some(1022.0));
        // A fault no write noticed costs nothing.
        assert_eq!(outage_after(&probes, 1050.0), Some(0.0));
        assert_eq!(outage_after(&probes, 1061.0), None);
        assert_eq!(outage_after(&probes, 2000.0), None);
    }
}
