//! `testfleet recovery recover-worker` and `recovery reset` on a real cluster: a worker whose
//! restart keeps failing ends `permanently_failed`; requests that make no sense are refused
//! with the reason; a reset lifts the permanent failure, and a recovery asked at level `high`
//! runs that level's attempts (recorded as such) and brings the worker back once it runs
//! again.

use std::time::Duration;

use super::auto_recovery::{args, one_node_fleet, sql, worker_reaches};
use super::support::{eventually, run};

fn recovery(args: &[&str], addr: &str, dir: &std::path::Path) -> (i32, String, String) {
    let mut all = vec!["recovery"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--coordinator", addr]);
    run(&all, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_resets_and_recovers_a_permanently_failed_worker() {
    let dir = super::support::test_dir();
    let d = dir.path();
    let extra = args(&[
        "--disable-circuit-breaker",
        "--recovery-interval-ms",
        "800",
        "--max-recovery-attempts",
        "2",
        "--restart-command",
        "echo cannot restart {worker}; exit 7",
    ]);
    let (cluster, addrs, mut workers) = one_node_fleet(d, &extra, "mr", 2, 1).await;
    let addr = addrs[0].clone();

    // Refusals, decided in apply: a healthy worker needs neither.
    let (code, _, err) = recovery(&["recover-worker", "mr2"], &addr, d);
    assert_ne!(code, 0);
    assert!(
        err.contains("worker mr2 cannot be recovered: it is healthy"),
        "{err}"
    );
    let (code, _, err) = recovery(&["reset", "mr2"], &addr, d);
    assert_ne!(code, 0);
    assert!(
        err.contains("no quarantine or permanent failure to lift"),
        "{err}"
    );
    let (code, _, err) = recovery(&["reset", "nobody"], &addr, d);
    assert_ne!(code, 0);
    assert!(err.contains("no worker is named"), "{err}");

    workers.kill("mr1");
    worker_reaches(&cluster, "mr1", "permanently_failed").await;

    // Reset: no session, so `failed` — a hello will make it healthy.
    let (code, out, err) = recovery(&["reset", "mr1", "--reason", "disk replaced"], &addr, d);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("now failed"), "{out}");
    let reason = sql(
        &cluster,
        "SELECT status_reason FROM workers WHERE id = 'mr1'",
    )
    .await;
    assert!(
        reason[0][0]
            .as_str()
            .unwrap()
            .contains("reset by an operator: disk replaced"),
        "{reason:?}"
    );

    // Recover at level high: 10 attempts of 5 s, recorded with the level.
    let (code, _, err) = recovery(&["recover-worker", "mr1", "--level", "high"], &addr, d);
    assert_eq!(code, 0, "{err}");
    eventually(
        Duration::from_secs(60),
        "the operator's recovery attempts",
        || {
            let cluster = &cluster;
            async move {
                let rows = sql(
                    cluster,
                    "SELECT recovery_type, details->>'operator_level', \
                 CAST(details->>'max_attempts' AS INTEGER) FROM worker_recovery_history \
                 WHERE worker_id = 'mr1' ORDER BY id",
                )
                .await;
                let asked = rows.iter().any(|r| r[0] == "operator_request");
                let attempt = rows
                    .iter()
                    .any(|r| r[1] == "high" && r[2].as_u64() == Some(10));
                (asked && attempt).then_some(())
            }
        },
    )
    .await;
    // A second request while it runs is refused by the leader.
    let (code, _, err) = recovery(&["recover-worker", "mr1"], &addr, d);
    assert_ne!(code, 0);
    assert!(err.contains("being recovered already"), "{err}");

    // The worker runs again: recovery sees it back.
    workers.spawn("mr1").unwrap();
    worker_reaches(&cluster, "mr1", "healthy").await;
}
