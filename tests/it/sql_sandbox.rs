//! The `sql` sandbox through a real coordinator: a file read is refused (by the RPC and by
//! `testfleet sql`), and a query past its time limit is interrupted while the node goes on
//! committing, flushing and answering.

use std::time::{Duration, Instant};

use crate::support::local_cluster;
use testfleet::proto::{QueryRequest, StatusRequest};

use super::support::{client, commit_bench, query, query_consistent, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_query_is_interrupted_at_its_limit_and_the_node_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let mut control = client(&addr).await;

    let limit = Duration::from_secs(8);
    let long = tokio::spawn({
        let mut control = control.clone();
        async move {
            let started = Instant::now();
            let reply = control
                .query(QueryRequest {
                    // 10¹⁸ rows: it never ends by itself.
                    sql: "SELECT count(*) FROM range(1000000000) a, range(1000000000) b".into(),
                    consistent: false,
                    timeout_ms: limit.as_millis() as u32,
                })
                .await;
            (reply, started.elapsed())
        }
    });

    // While it runs, writes commit, the flusher writes them to DuckDB (a consistent read
    // waits for that), and the node answers.
    let index = commit_bench(&addr, 20, 2).await;
    let rows = query_consistent(&mut control, "SELECT last_applied_index FROM raft_meta").await;
    assert!(rows[0][0].as_u64().unwrap() >= index, "{rows:?} < {index}");
    control.status(StatusRequest {}).await.unwrap();
    assert!(
        !long.is_finished(),
        "the long query ended before the node's other work was checked"
    );

    let (reply, elapsed) = long.await.unwrap();
    let status = reply.expect_err("the query must be stopped");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("ran longer than the limit of 8000 ms"),
        "{status:?}"
    );
    assert!(
        elapsed >= limit && elapsed < limit + Duration::from_secs(10),
        "stopped after {elapsed:?}"
    );
    // The node answers queries as before.
    assert_eq!(
        query(&mut control, "SELECT 42").await,
        vec![vec![serde_json::Value::from(42)]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_reads_are_refused_by_the_node_and_the_cli_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let mut control = client(&addr).await;
    for sql in [
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM read_csv('https://example.com/x.csv')",
    ] {
        let status = control
            .query(QueryRequest {
                sql: sql.into(),
                consistent: false,
                timeout_ms: 0,
            })
            .await
            .expect_err(sql);
        assert!(
            status.message().contains("external access"),
            "{sql}: {status:?}"
        );
    }
    let (code, stdout, stderr) = run(
        &[
            "sql",
            "--coordinator",
            &addr,
            "SELECT content FROM read_text('/etc/hostname')",
        ],
        dir.path(),
    );
    assert_ne!(code, 0, "{stdout}");
    assert!(stderr.contains("external access"), "{stderr}");
    assert!(
        !stdout.contains(&testfleet::worker::host_name()),
        "{stdout}"
    );
}
