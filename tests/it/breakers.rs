//! Circuit breakers end to end: a worker whose spawns the kernel keeps refusing (injected
//! ENOMEM, through the worker's real spawn path) trips its breaker and stops getting tasks
//! while a healthy worker finishes the job; it is probed half-open while still sick (and opens
//! again), and once it is healthy its trials pass and the breaker closes. A worker whose *tests*
//! fail never trips. Everything is read back from the replicated `breaker_transitions` and
//! `task_attempts`, and through `testfleet breaker list` and `testfleet workers`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::support::{
    WorkerProcess, client, eventually, local_cluster, query_consistent, run, submit_plan, test_dir,
};

const LIMIT: Duration = Duration::from_secs(90);

/// Breakers that act within a test's time: trip after 3 of the last 10 calls failed, stay open
/// 1.5 s (then 3 s), try 2 trials.
const BREAKERS: &str = r#"
[breakers.worker]
window = { kind = "count", calls = 10 }
minimum_calls = 3
open_wait_ms = 1500
open_wait_max_ms = 3000
jitter = 0.0
half_open_trials = 2
"#;

async fn rows(addr: &str, sql: &str) -> Vec<Vec<Value>> {
    query_consistent(&mut client(addr).await, sql).await
}

async fn number(addr: &str, sql: &str) -> u64 {
    rows(addr, sql).await[0][0].as_u64().unwrap_or(0)
}

/// A job of `count` quick tasks named `<prefix>-<n>` that may be retried after worker faults.
fn job(dir: &Path, addr: &str, prefix: &str, count: usize, command: &str) -> String {
    let items: Vec<String> = (1..=count).map(|i| format!("\"{i:02}\"")).collect();
    let plan = format!(
        "name = \"{prefix}\"\n[[matrix]]\nname = \"{prefix}-{{item}}\"\n\
         command = [\"sh\", \"-c\", \"{command}\"]\nmax_retries = 20\nflaky_retries = 0\n\
         items = [{}]\n",
        items.join(", ")
    );
    submit_plan(dir, addr, &format!("{prefix}.toml"), &plan)
}

/// Waits until every task of `job` is final; (status, worker of the final attempt) each.
async fn finished(addr: &str, job: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT t.status, coalesce(a.worker_id, '') FROM tasks t LEFT JOIN task_attempts a \
         ON a.task_id = t.id AND a.attempt = t.attempt WHERE t.job_id = '{job}'"
    );
    eventually(LIMIT, &format!("job {job} to finish"), || async {
        let rows = rows(addr, &sql).await;
        let done = rows
            .iter()
            .all(|r| !matches!(r[0].as_str(), Some("queued" | "assigned" | "running")));
        done.then(|| {
            (rows.iter())
                .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()))
                .collect()
        })
    })
    .await
}

/// The (from, to) transitions of a worker's breaker, in order.
async fn transitions(addr: &str, worker: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT from_state, to_state FROM breaker_transitions WHERE scope = 'worker:{worker}' \
         ORDER BY id"
    );
    (rows(addr, &sql).await.iter())
        .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()))
        .collect()
}

fn breaker_list(dir: &Path, addr: &str) -> Value {
    let (code, out, err) = run(
        &["breaker", "list", "-o", "json", "--coordinator", addr],
        dir,
    );
    assert_eq!(code, 0, "breaker list: {err}");
    serde_json::from_str(&out).expect("breaker list -o json is JSON")
}

fn listed<'a>(list: &'a Value, scope: &str) -> Option<&'a Value> {
    (list["breakers"].as_array()?.iter()).find(|b| b["scope"] == scope)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_spawns_keep_failing_is_cut_off_probed_and_let_back_once_healthy() {
    let dir = test_dir();
    let config = dir.path().join("breakers.toml");
    std::fs::write(&config, BREAKERS).unwrap();
    // Proactive recovery would fail a worker with climbing resource faults on its own; off
    // here, so that what keeps work away from the sick worker is its breaker alone.
    let extra = [
        "--config".to_string(),
        config.display().to_string(),
        "--enable-proactive-recovery=false".to_string(),
    ];
    let cluster = local_cluster(1, dir.path(), &extra);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _healthy = WorkerProcess::start_with(&addr, "h1", dir.path(), &[]);
    let mut sick = WorkerProcess::start_with(
        &addr,
        "s1",
        dir.path(),
        &["--inject-fault", "spawn-error=ENOMEM"],
    );

    // A slow job keeps both workers asked for work for a while.
    let first = job(dir.path(), &addr, "first", 30, "sleep 0.1");
    let results = finished(&addr, &first).await;
    assert!(
        results
            .iter()
            .all(|(status, worker)| status == "passed" && worker == "h1"),
        "every task passed on the healthy worker: {results:?}"
    );
    let moved = transitions(&addr, "s1").await;
    assert_eq!(
        moved.first(),
        Some(&("closed".to_string(), "open".to_string())),
        "{moved:?}"
    );
    // The sick worker got its first calls until the breaker tripped (3, and one more at
    // most in flight), then only trials: at most 2 per half-open period.
    let probes = moved.iter().filter(|(_, to)| to == "half_open").count();
    let sick_attempts = number(
        &addr,
        "SELECT count(*) FROM task_attempts WHERE worker_id = 's1'",
    )
    .await;
    assert!(
        sick_attempts as usize <= 4 + 2 * probes,
        "{sick_attempts} attempts on the sick worker with {probes} half-open periods: {moved:?}"
    );
    // While sick, each half-open period's trial failed and opened it again.
    eventually(
        LIMIT,
        "a failed trial to open the breaker again",
        || async {
            let moved = transitions(&addr, "s1").await;
            moved
                .iter()
                .any(|(from, to)| from == "half_open" && to == "open")
                .then_some(())
        },
    )
    .await;
    let list = breaker_list(dir.path(), &addr);
    let s1 = listed(&list, "worker:s1").expect("the sick worker's breaker is listed");
    assert!(
        matches!(s1["state"].as_str(), Some("open" | "half_open")),
        "{s1}"
    );
    assert_eq!(list["recovery_level"], "low", "{list}");

    // Healthy again (the same name, no injected fault): trials pass and the breaker closes.
    sick.kill();
    let _cured = WorkerProcess::start_with(&addr, "s1", dir.path(), &[]);
    let second = job(dir.path(), &addr, "second", 40, "sleep 0.2");
    eventually(LIMIT, "the cured worker's breaker to close", || async {
        let moved = transitions(&addr, "s1").await;
        (moved.last() == Some(&("half_open".to_string(), "closed".to_string()))).then_some(())
    })
    .await;
    let results = finished(&addr, &second).await;
    assert!(
        results.iter().all(|(status, _)| status == "passed"),
        "{results:?}"
    );
    assert!(
        results.iter().any(|(_, worker)| worker == "s1"),
        "the cured worker got work again: {results:?}"
    );
    let (code, out, err) = run(
        &["workers", "-o", "json", "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let workers: Value = serde_json::from_str(&out).unwrap();
    let s1 = (workers.as_array().unwrap().iter())
        .find(|w| w["id"] == "s1")
        .expect("s1 listed");
    assert_eq!(s1["breaker"], "closed", "{s1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_tests_fail_never_trips_its_breaker_and_operators_can_force_it() {
    let dir = test_dir();
    let config = dir.path().join("breakers.toml");
    std::fs::write(&config, BREAKERS).unwrap();
    let extra = ["--config".to_string(), config.display().to_string()];
    let cluster = local_cluster(1, dir.path(), &extra);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _worker = WorkerProcess::start_with(&addr, "f1", dir.path(), &[]);

    let failing = job(dir.path(), &addr, "failing", 20, "exit 3");
    let results = finished(&addr, &failing).await;
    assert!(
        results.iter().all(|(status, _)| status == "failed"),
        "{results:?}"
    );
    assert_eq!(
        transitions(&addr, "f1").await,
        vec![],
        "a failing test is not a fault"
    );
    let list = breaker_list(dir.path(), &addr);
    let f1 = listed(&list, "worker:f1").expect("f1's breaker is listed");
    assert_eq!(f1["state"], "closed", "{f1}");
    assert_eq!(f1["failure_rate"], 0.0, "{f1}");
    assert_eq!(f1["calls"], 10, "a full window of successful calls: {f1}");

    // An operator forces it open: nothing is assigned to it until the reset.
    let (code, out, err) = run(
        &[
            "breaker",
            "force-open",
            "f1",
            "--reason",
            "bad disk",
            "--coordinator",
            &addr,
        ],
        dir.path(),
    );
    assert_eq!(
        (code, out.trim()),
        (0, "worker:f1: closed → forced_open"),
        "{err}"
    );
    let (code, _, err) = run(
        &["breaker", "force-open", "f1", "--coordinator", &addr],
        dir.path(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("already forced_open"), "{err}");
    let (code, _, err) = run(
        &["breaker", "reset", "nobody", "--coordinator", &addr],
        dir.path(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("no worker is named"), "{err}");
    let held = job(dir.path(), &addr, "held", 2, "true");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queued = number(
        &addr,
        &format!("SELECT count(*) FROM tasks WHERE job_id = '{held}' AND status = 'queued'"),
    )
    .await;
    assert_eq!(queued, 2, "a forced-open worker got work");
    let (code, _, err) = run(
        &["breaker", "reset", "f1", "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let results = finished(&addr, &held).await;
    assert!(
        results.iter().all(|(status, _)| status == "passed"),
        "{results:?}"
    );
    let reasons = rows(
        &addr,
        "SELECT reason FROM breaker_transitions WHERE scope = 'worker:f1' ORDER BY id",
    )
    .await;
    assert_eq!(
        reasons[0][0], "forced open by an operator: bad disk",
        "{reasons:?}"
    );
}
