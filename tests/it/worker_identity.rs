//! Workers are who they say they are: a second process under a connected worker's name is
//! refused (and exits 4 with the reason) and the real worker keeps its session and its tasks; the same process reconnecting
//! over its own stale session is let in; a worker killed and restarted under its name gets back
//! in once its old session is gone; and a worker cannot report on another worker's attempt.

use std::path::Path;
use std::time::Duration;

use crate::support::{local_cluster, operator};
use serde_json::Value;
use testfleet::auth::Role;
use testfleet::cli::jobs;
use testfleet::demo::launch::LocalCluster;
use testfleet::proto::fleet_client::FleetClient;
use testfleet::proto::{
    AttemptFinished, AttemptStarted, CoordinatorMessage, Heartbeat, Hello, WorkerMessage,
    coordinator_message, worker_message,
};
use testfleet::state::command::TaskSpec;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::support::{WorkerProcess, client, credentials, eventually, exit_code, query_consistent};

const LIMIT: Duration = Duration::from_secs(60);

fn sleeper(id: &str, seconds: u32) -> TaskSpec {
    TaskSpec {
        timeout_ms: 120_000,
        timeout_retries: 0,
        ..TaskSpec::new(
            id.to_string(),
            id.to_string(),
            vec!["sleep".into(), seconds.to_string()],
        )
    }
}

async fn one_node(dir: &Path) -> (LocalCluster, String) {
    let cluster = local_cluster(1, dir, &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    (cluster, addr)
}

async fn rows(addr: &str, sql: &str) -> Vec<Vec<Value>> {
    query_consistent(&mut client(addr).await, sql).await
}

/// Waits until `task` runs (its attempt started) on `worker`; returns the attempt number.
async fn running_on(addr: &str, task: &str, worker: &str) -> u64 {
    let sql = format!(
        "SELECT attempt FROM tasks WHERE id = '{task}' AND status = 'running' \
         AND worker_id = '{worker}'"
    );
    eventually(LIMIT, &format!("{task} running on {worker}"), || async {
        rows(addr, &sql).await.first().and_then(|r| r[0].as_u64())
    })
    .await
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Waits until a worker process's log says `text`.
async fn log_says(dir: &Path, name: &str, text: &str) {
    eventually(LIMIT, &format!("{name}'s log saying {text:?}"), || async {
        log_of(dir, name).contains(text).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_is_refused_and_the_real_worker_keeps_its_session_and_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (real_dir, impostor_dir) = (dir.path().join("real"), dir.path().join("impostor"));
    std::fs::create_dir_all(&real_dir).unwrap();
    std::fs::create_dir_all(&impostor_dir).unwrap();
    let (_cluster, addr) = one_node(dir.path()).await;
    let addrs = vec![addr.clone()];
    let _real = WorkerProcess::start(&addr, "w1", 1, &real_dir);
    log_says(&real_dir, "w1", "session open with the leader").await;
    jobs::submit(&operator(&addrs), "job-i", "job-i", &[sleeper("t-i", 8)])
        .await
        .unwrap();
    assert_eq!(running_on(&addr, "t-i", "w1").await, 1);

    let mut impostor = WorkerProcess::start(&addr, "w1", 1, &impostor_dir);
    log_says(
        &impostor_dir,
        "w1",
        "a worker named w1 is already connected from",
    )
    .await;
    // It gives up within a second or so (it asks twice more in case the name's holder just
    // died), exits 4 and says what to do.
    assert_eq!(exit_code(&mut impostor.child, LIMIT), Some(4));
    assert!(
        log_of(&impostor_dir, "w1").contains("give this worker another --name"),
        "{}",
        log_of(&impostor_dir, "w1")
    );
    assert!(
        !log_of(&impostor_dir, "w1").contains("session open with the leader"),
        "the impostor got a session"
    );

    // The real worker's attempt runs to its end, never requeued or taken over.
    let attempts = after_the_job(
        &addr,
        "job-i",
        "SELECT attempt, worker_id, outcome FROM task_attempts WHERE task_id = 't-i'",
    )
    .await;
    assert_eq!(
        attempts,
        vec![vec![
            Value::from(1),
            Value::from("w1"),
            Value::from("passed")
        ]]
    );
    let requeues = rows(&addr, "SELECT count(*) FROM task_recovery_history").await;
    assert_eq!(requeues, vec![vec![Value::from(0)]]);
    // The real worker never had to reconnect.
    assert_eq!(
        log_of(&real_dir, "w1")
            .matches("session open with the leader")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_and_restarted_under_its_name_gets_back_in() {
    let dir = tempfile::tempdir().unwrap();
    let (first_dir, second_dir) = (dir.path().join("first"), dir.path().join("second"));
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::create_dir_all(&second_dir).unwrap();
    let (_cluster, addr) = one_node(dir.path()).await;
    let mut first = WorkerProcess::start(&addr, "w2", 1, &first_dir);
    log_says(&first_dir, "w2", "session open with the leader").await;
    first.kill(); // SIGKILL
    let _second = WorkerProcess::start(&addr, "w2", 1, &second_dir);
    log_says(&second_dir, "w2", "session open with the leader").await;
    // It holds the session: it is given work and reports it.
    let addrs = vec![addr.clone()];
    jobs::submit(&operator(&addrs), "job-r", "job-r", &[sleeper("t-r", 0)])
        .await
        .unwrap();
    let attempts = after_the_job(
        &addr,
        "job-r",
        "SELECT worker_id, outcome FROM task_attempts WHERE task_id = 't-r'",
    )
    .await;
    assert_eq!(
        attempts,
        vec![vec![Value::from("w2"), Value::from("passed")]]
    );
}

/// Follows `job` until it has finished, then returns the rows of `sql`.
async fn after_the_job(addr: &str, job: &str, sql: &str) -> Vec<Vec<Value>> {
    let addrs = vec![addr.to_string()];
    let report = tokio::time::timeout(LIMIT, jobs::follow(&operator(&addrs), job))
        .await
        .expect("the job ends")
        .unwrap();
    assert_eq!(report.status, "finished", "{report:?}");
    rows(addr, sql).await
}

/// A worker session spoken by hand: the hello, then whatever the test sends. Dropping it
/// closes the stream.
struct RawSession {
    out: mpsc::Sender<WorkerMessage>,
    inbound: Streaming<CoordinatorMessage>,
    heartbeats: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for RawSession {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeats.take() {
            task.abort();
        }
    }
}

fn hello(worker: &str, session_id: &str, host: &str) -> Hello {
    Hello {
        worker_id: worker.to_string(),
        host: host.to_string(),
        capabilities_json: "{}".to_string(),
        labels: Default::default(),
        slots: 1,
        running: vec![],
        version: "test".to_string(),
        seen_term: 0,
        session_id: session_id.to_string(),
        ..Hello::default()
    }
}

/// Opens a session with `hello`; `Err` is the leader's refusal. A redirect (the node does not
/// lead yet, e.g. it has not applied an entry of its term) is retried, as a worker does.
async fn open(addr: &str, hello: Hello) -> Result<RawSession, tonic::Status> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match open_once(addr, hello.clone()).await? {
            Some(session) => return Ok(session),
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            None => panic!("{addr} kept redirecting for {LIMIT:?}"),
        }
    }
}

/// One attempt of [`open`]: `None` when the node redirected the session.
async fn open_once(addr: &str, hello: Hello) -> Result<Option<RawSession>, tonic::Status> {
    let channel = testfleet::cli::channel(addr, &credentials(Role::Worker))
        .await
        .unwrap();
    let mut fleet = FleetClient::new(channel);
    let (out, rx) = mpsc::channel(64);
    out.send(WorkerMessage {
        body: Some(worker_message::Body::Hello(hello)),
    })
    .await
    .unwrap();
    let inbound = fleet.session(ReceiverStream::new(rx)).await?.into_inner();
    let mut session = RawSession {
        out,
        inbound,
        heartbeats: None,
    };
    match session.next().await {
        Some(coordinator_message::Body::Welcome(_)) => Ok(Some(session)),
        Some(coordinator_message::Body::Redirect(_)) => Ok(None),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

impl RawSession {
    async fn next(&mut self) -> Option<coordinator_message::Body> {
        match tokio::time::timeout(LIMIT, self.inbound.next()).await {
            Ok(Some(Ok(message))) => message.body,
            Ok(Some(Err(status))) => panic!("session failed: {status:?}"),
            Ok(None) => None,
            Err(_) => panic!("no message from the leader within {LIMIT:?}"),
        }
    }

    async fn send(&self, body: worker_message::Body) {
        self.out
            .send(WorkerMessage { body: Some(body) })
            .await
            .unwrap();
    }

    /// Heartbeats every 200 ms while the session lives, so it stays alive on the leader.
    fn keep_alive(&mut self) {
        let out = self.out.clone();
        self.heartbeats = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let beat = WorkerMessage {
                    body: Some(worker_message::Body::Heartbeat(Heartbeat {
                        running: vec![],
                        ..Default::default()
                    })),
                };
                if out.send(beat).await.is_err() {
                    return;
                }
            }
        }));
    }
}

fn refused(result: Result<RawSession, tonic::Status>, holder_host: &str) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
            assert!(
                status.message().contains(&format!(
                    "is already connected from {holder_host}; give this one another --name"
                )),
                "{status:?}"
            );
        }
        Ok(_) => panic!("a second process was given the session"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_process_reconnects_over_its_stale_session_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, addr) = one_node(dir.path()).await;
    let mut first = open(&addr, hello("raw1", "process-a", "host-a"))
        .await
        .unwrap();
    first.keep_alive();
    refused(
        open(&addr, hello("raw1", "process-b", "host-b")).await,
        "host-a",
    );
    refused(open(&addr, hello("raw1", "", "host-b")).await, "host-a");
    // Process A again, while its first stream is still open (a network blip it noticed
    // first): it replaces its own session.
    let mut second = open(&addr, hello("raw1", "process-a", "host-a2"))
        .await
        .unwrap();
    second.keep_alive();
    refused(
        open(&addr, hello("raw1", "process-b", "host-b")).await,
        "host-a2",
    );
    // The replaced stream can no longer speak for raw1: its next message ends it.
    if let Some(task) = first.heartbeats.take() {
        task.abort();
    }
    first
        .send(worker_message::Body::Heartbeat(Heartbeat {
            running: vec![],
            ..Default::default()
        }))
        .await;
    match tokio::time::timeout(LIMIT, first.inbound.next()).await {
        Ok(Some(Ok(message))) => panic!("the replaced session got {message:?}"),
        Ok(_) => {}
        Err(_) => panic!("the replaced session was not ended"),
    }
    // Once process A's session is gone, the name is free.
    drop(first);
    drop(second);
    eventually(LIMIT, "raw1's session to end", || async {
        open(&addr, hello("raw1", "process-b", "host-b")).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_report_on_another_workers_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, addr) = one_node(dir.path()).await;
    let addrs = vec![addr.clone()];
    let _real = WorkerProcess::start(&addr, "w1", 1, dir.path());
    log_says(dir.path(), "w1", "session open with the leader").await;
    jobs::submit(&operator(&addrs), "job-s", "job-s", &[sleeper("t-s", 6)])
        .await
        .unwrap();
    let attempt = running_on(&addr, "t-s", "w1").await as u32;

    let mut intruder = open(&addr, hello("w9", "process-x", "host-x"))
        .await
        .unwrap();
    intruder
        .send(worker_message::Body::Started(AttemptStarted {
            task_id: "t-s".into(),
            attempt,
            at_us: 0,
        }))
        .await;
    intruder
        .send(worker_message::Body::Finished(AttemptFinished {
            task_id: "t-s".into(),
            attempt,
            outcome: "failed".into(),
            exit_code: Some(1),
            duration_ms: 1,
            output_tail: "forged".into(),
            at_us: 0,
            signal: None,
            ..AttemptFinished::default()
        }))
        .await;
    // The forged result is committed as stale (and acknowledged, so it is not re-sent).
    loop {
        match intruder.next().await {
            Some(coordinator_message::Body::Ack(ack)) => {
                assert_eq!((ack.task_id.as_str(), ack.attempt), ("t-s", attempt));
                break;
            }
            Some(_) => continue,
            None => panic!("the intruder's session ended"),
        }
    }
    let stale = rows(
        &addr,
        "SELECT task_id, attempt, worker_id FROM stale_results",
    )
    .await;
    assert_eq!(
        stale,
        vec![vec![
            Value::from("t-s"),
            Value::from(attempt),
            Value::from("w9")
        ]]
    );
    // The attempt is untouched: still running on w1, and it ends as w1 reports it.
    assert_eq!(running_on(&addr, "t-s", "w1").await, u64::from(attempt));
    let report = tokio::time::timeout(LIMIT, jobs::follow(&operator(&addrs), "job-s"))
        .await
        .expect("the job ends")
        .unwrap();
    assert_eq!(report.status, "finished", "{report:?}");
    let attempts = rows(
        &addr,
        "SELECT attempt, worker_id, outcome, output_tail FROM task_attempts WHERE task_id = 't-s'",
    )
    .await;
    assert_eq!(
        attempts,
        vec![vec![
            Value::from(attempt),
            Value::from("w1"),
            Value::from("passed"),
            Value::from("")
        ]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_without_a_name_on_one_host_get_distinct_names() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, addr) = one_node(dir.path()).await;
    let state = dir.path().join("worker-state");
    let spawn = || {
        std::process::Command::new(super::support::binary())
            .args(["worker", "--coordinator", &addr])
            .env("TESTFLEET_WORKER_STATE_DIR", &state)
            .env(
                "TESTFLEET_TOKEN_FILE",
                super::support::token_file(Role::Worker),
            )
            .env_remove("TESTFLEET_WORKER_NAME")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut workers = [spawn(), spawn()];
    let host = testfleet::worker::host_name();
    let expected = vec![format!("{host}-1"), format!("{host}-2")];
    let names = eventually(Duration::from_secs(30), "two healthy workers", || {
        let addr = addr.clone();
        async move {
            let rows = query_consistent(
                &mut client(&addr).await,
                "SELECT id FROM workers WHERE status = 'healthy' ORDER BY id",
            )
            .await;
            let names: Vec<String> = rows
                .iter()
                .map(|r| r[0].as_str().unwrap().to_string())
                .collect();
            (names.len() == 2).then_some(names)
        }
    })
    .await;
    assert_eq!(names, expected);
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
}
