//! Size limits that agree end to end: a job too large for one log entry is refused at the
//! edge with the limit named, and entries that together exceed one Raft message still
//! replicate to a follower that missed them (replication sends them a few at a time).

use std::collections::BTreeMap;
use std::time::Duration;

use testfleet::auth::Role;
use testfleet::proto::jobs_client::JobsClient;
use testfleet::proto::{SubmitJobRequest, TaskSpec as WireTask};
use testfleet::state::command::{Command, TaskSpec, Timestamp};
use testfleet::state::limits;
use testfleet::state::machine::Reply;

use super::cluster::TestCluster;
use super::support::{commit_bench, eventually};

/// A task whose environment carries `bytes` of text.
fn heavy_task(id: String, bytes: usize) -> TaskSpec {
    TaskSpec {
        env: BTreeMap::from([("BLOB".into(), "x".repeat(bytes))]),
        timeout_ms: 60_000,
        max_retries: 1,
        timeout_retries: 0,
        ..TaskSpec::new(id, "heavy", vec!["true".into()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_past_the_size_limit_is_refused_at_the_edge_and_the_cluster_goes_on() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let addr = cluster.peers[&leader].clone();
    // 70 MiB: more than one Raft message. Before the limits it was accepted and appended;
    // the leader could never send it and every later write waited behind it.
    let tasks: Vec<WireTask> = (0..70)
        .map(|i| {
            let t = heavy_task(format!("t{i}"), 1000 * 1024);
            testfleet::coordinator::jobs::task_spec_message(&t)
        })
        .collect();
    let channel = testfleet::cli::channel(&addr, &super::support::credentials(Role::Operator))
        .await
        .unwrap();
    let mut client = JobsClient::new(channel)
        .max_encoding_message_size(200 << 20)
        .max_decoding_message_size(200 << 20);
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        client.submit_job(SubmitJobRequest {
            job_id: "too-big".into(),
            name: "too big".into(),
            tasks,
        }),
    )
    .await
    .expect("an answer, not a stalled cluster")
    .expect_err("a job past the limits is refused");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{refused:?}"
    );

    // Just past the job limit, within one message: refused with the limit named.
    let per_task = limits::MAX_TASK_BYTES - 4096;
    let over: Vec<WireTask> = (0..limits::MAX_JOB_BYTES / per_task + 1)
        .map(|i| {
            let t = heavy_task(format!("u{i}"), per_task - 200);
            testfleet::coordinator::jobs::task_spec_message(&t)
        })
        .collect();
    let refused = client
        .submit_job(SubmitJobRequest {
            job_id: "over".into(),
            name: "over".into(),
            tasks: over,
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("the size of job over")
            && refused.message().contains("several jobs"),
        "{}",
        refused.message()
    );

    // Nothing is stuck: the cluster commits as before.
    let last = commit_bench(&addr, 20, 4).await;
    cluster.applied(last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_larger_together_than_one_raft_message_still_replicate() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.stop(lagging).await;

    // Five jobs of ~15 MB each, all within the limits: ~72 MiB of entries the lagging
    // node must receive, more than one Raft message holds.
    let mut last = 0;
    for job in 0..5 {
        let tasks: Vec<TaskSpec> = (0..15)
            .map(|i| heavy_task(format!("j{job}-t{i}"), 1000 * 1024))
            .collect();
        // Entries this large can cost a busy machine its leader lease: submit to whoever
        // leads (a job id makes a resubmission a no-op).
        let command = Command::SubmitJob {
            job: format!("j{job}"),
            name: "heavy".into(),
            tasks,
            at: Timestamp::now(),
        };
        let response = eventually(Duration::from_secs(120), "the job committed", || {
            let command = command.clone();
            let cluster = &cluster;
            async move {
                let leader = cluster.leader().await;
                cluster.node(leader).raft().client_write(command).await.ok()
            }
        })
        .await;
        assert!(
            matches!(response.data, Reply::JobAccepted { tasks: 15, .. }),
            "{:?}",
            response.data
        );
        last = response.log_id.index;
    }

    cluster.restart(lagging).await;
    cluster.applied(last).await;
    let tasks = |id: u64| {
        let image = cluster.tables(id);
        image
            .tables
            .into_iter()
            .find(|t| t.name == "tasks")
            .unwrap()
    };
    let leader = cluster.leader().await;
    let on_leader = tasks(leader);
    assert_eq!(on_leader.rows.len(), 75);
    assert_eq!(tasks(lagging), on_leader);
}
