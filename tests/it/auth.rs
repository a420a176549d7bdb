//! Trust through a real coordinator: every refusal (no token, an unknown token, the wrong role)
//! is checked through the real gRPC path, with the state read back afterwards to show that the
//! refused call changed nothing. Positive controls show the same request does change state
//! when the right role sends it, so the refusals are not vacuous.

use std::path::Path;
use std::time::{Duration, Instant};

use openraft::alias::{SnapshotMetaOf, VoteOf};
use testfleet::auth::{AuthChannel, Credentials, Role, Token};
use testfleet::proto::HealthReport;
use testfleet::proto::control_client::ControlClient;
use testfleet::raft::TypeConfig;
use testfleet::raft::network::encode;
use testfleet::raft_proto::raft_service_client::RaftServiceClient;
use testfleet::raft_proto::snapshot_chunk::Item;
use testfleet::raft_proto::{RaftRequest, SnapshotChunk, SnapshotHeader};

use super::support::{
    Process, client, client_as, count, credentials, disruptive_vote, run_as, start_coordinator,
    term, token_file, wait_for_leader,
};

/// A one-node cluster checking the tests' tokens, and an operator's client to it.
async fn node(dir: &Path) -> (Process, ControlClient<AuthChannel>) {
    let db = dir.join("state.duckdb");
    let node = start_coordinator(&["--db-path", db.to_str().unwrap()], dir);
    let mut control = client(&node.addr).await;
    wait_for_leader(&mut control).await;
    (node, control)
}

/// A Raft client presenting `credentials`.
async fn raft_client(addr: &str, credentials: &Credentials) -> RaftServiceClient<AuthChannel> {
    RaftServiceClient::new(testfleet::cli::channel(addr, credentials).await.unwrap())
}

fn assert_refused(code: i32, err: &str, what: &str, hint: &str) {
    assert_eq!(code, 4, "{what}: exit {code}, stderr:\n{err}");
    assert!(
        err.contains(hint),
        "{what}: the message should say {hint:?}:\n{err}"
    );
    assert_eq!(err.lines().count(), 1, "{what}: one line:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_token_or_with_a_foreign_one_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut control) = node(dir.path()).await;
    let addr = node.addr.clone();
    let foreign = dir.path().join("foreign");
    testfleet::auth::token::init(&foreign, false).unwrap();
    let foreign_operator = foreign.join("operator.token");
    for token in [None, Some(foreign_operator.as_path())] {
        let hint = if token.is_some() {
            "not one this coordinator accepts"
        } else {
            "--token-file"
        };
        let runs: [&[&str]; 4] = [
            &["status", "--coordinator", &addr],
            &["submit", "--coordinator", &addr, "--", "true"],
            &["sql", "--coordinator", &addr, "SELECT 1"],
            &["cluster", "check", "--coordinator", &addr],
        ];
        for args in runs {
            let (code, _, err) = run_as(args, dir.path(), token);
            let what = format!("{args:?} with {token:?}");
            if args[0] == "cluster" {
                // The check says why it could not check anything, and exits 2.
                assert_eq!(code, 2, "{what}: {err}");
                assert!(err.contains(hint), "{what}: {err}");
            } else {
                assert_refused(code, &err, &what, hint);
            }
        }
    }
    assert_eq!(count(&mut control, "jobs").await, 0);
    assert_eq!(count(&mut control, "tasks").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_token_cannot_submit_query_or_check_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut control) = node(dir.path()).await;
    let addr = node.addr.clone();
    let worker = token_file(Role::Worker);
    let (code, _, err) = run_as(
        &[
            "submit",
            "--coordinator",
            &addr,
            "--",
            "sh",
            "-c",
            "echo pwned",
        ],
        dir.path(),
        Some(&worker),
    );
    assert_refused(code, &err, "submit", "permission denied: a worker token");
    let (code, _, err) = run_as(
        &["sql", "--coordinator", &addr, "SELECT * FROM workers"],
        dir.path(),
        Some(&worker),
    );
    assert_refused(code, &err, "sql", "it needs an operator token");
    // Status is for everyone with a valid token.
    let (code, out, err) = run_as(
        &["status", "--coordinator", &addr],
        dir.path(),
        Some(&worker),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("leader"), "{out}");
    assert_eq!(count(&mut control, "jobs").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_peer_token_speaks_raft_and_reports_health() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut control) = node(dir.path()).await;
    let before = term(&mut control).await;
    for (role, expected) in [
        (Some(Role::Operator), tonic::Code::PermissionDenied),
        (Some(Role::Worker), tonic::Code::PermissionDenied),
        (None, tonic::Code::Unauthenticated),
    ] {
        let creds = role.map(credentials).unwrap_or_default();
        let mut raft = raft_client(&node.addr, &creds).await;
        let refused = raft.vote(disruptive_vote()).await.unwrap_err();
        assert_eq!(refused.code(), expected, "vote as {role:?}: {refused:?}");
        for call in ["append", "transfer", "gone"] {
            let request = RaftRequest { payload: vec![] };
            let refused = match call {
                "append" => raft.append_entries(request).await,
                "transfer" => raft.transfer_leader(request).await,
                _ => raft.leader_gone(request).await,
            }
            .unwrap_err();
            assert_eq!(refused.code(), expected, "{call} as {role:?}: {refused:?}");
        }
        let header = SnapshotChunk {
            item: Some(Item::Header(SnapshotHeader {
                vote: vec![],
                meta: vec![],
                size: 1,
            })),
        };
        let refused = raft
            .install_snapshot(futures::stream::iter([header]))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            expected,
            "snapshot as {role:?}: {refused:?}"
        );

        let mut as_role = client_as(&node.addr, &creds).await;
        let report = HealthReport {
            node_id: 7,
            cpu: 99.0,
            at_us: i64::MAX,
            ..Default::default()
        };
        let refused = as_role.report_health(report).await.unwrap_err();
        assert_eq!(refused.code(), expected, "health as {role:?}: {refused:?}");
    }
    assert_eq!(
        term(&mut control).await,
        before,
        "a refused vote moved the term"
    );
    assert_eq!(
        count(&mut control, "health_samples WHERE node_id = 7").await,
        0
    );

    // The same vote from a peer does disrupt the node: the refusals above were not vacuous.
    let mut peer = raft_client(&node.addr, &credentials(Role::Peer)).await;
    peer.vote(disruptive_vote()).await.unwrap();
    super::support::until_term(&mut control, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_snapshot_header_is_refused_before_any_data() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut control) = node(dir.path()).await;
    let before = term(&mut control).await;
    let meta = SnapshotMetaOf::<TypeConfig> {
        last_log_id: None,
        last_membership: Default::default(),
    };
    let header = SnapshotChunk {
        item: Some(Item::Header(SnapshotHeader {
            vote: encode("vote", &VoteOf::<TypeConfig>::new(before, 1)).unwrap(),
            meta: encode("meta", &meta).unwrap(),
            size: u64::MAX,
        })),
    };
    let mut peer = raft_client(&node.addr, &credentials(Role::Peer)).await;
    let refused = peer
        .install_snapshot(futures::stream::iter([header]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("more than the limit"),
        "{refused:?}"
    );
    assert_eq!(term(&mut control).await, before);
    assert_eq!(count(&mut control, "raft_meta").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_presenting_the_wrong_token_exits_at_once_and_registers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut control) = node(dir.path()).await;
    let started = Instant::now();
    let (code, _, err) = run_as(
        &["worker", "--coordinator", &node.addr, "--name", "w1"],
        dir.path(),
        Some(&token_file(Role::Operator)),
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("refused this worker"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(count(&mut control, "workers").await, 0);
}

#[test]
fn a_node_on_a_public_address_needs_credentials_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.duckdb");
    let args = [
        "coordinator",
        "--bind",
        "0.0.0.0",
        "--port",
        "0",
        "--db-path",
        db.to_str().unwrap(),
    ];
    let (code, _, err) = run_as(&args, dir.path(), None);
    assert_eq!(code, 2, "{err}");
    for flag in ["--auth-dir", "--insecure", "auth init"] {
        assert!(err.contains(flag), "the refusal should name {flag}:\n{err}");
    }
    assert!(!db.exists(), "a refused node created its database");

    // With --insecure it starts, and says loudly what that means.
    let mut node = start_coordinator(
        &[
            "--bind",
            "0.0.0.0",
            "--insecure",
            "--db-path",
            db.to_str().unwrap(),
        ],
        dir.path(),
    );
    node.kill();
    assert!(node.startup.contains("INSECURE"), "{}", node.startup);
}

#[test]
fn token_files_that_others_can_read_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth");
    testfleet::auth::token::init(&auth, false).unwrap();
    let loose = auth.join("worker.token");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let db = dir.path().join("state.duckdb");
    let (code, _, err) = run_as(
        &[
            "coordinator",
            "--port",
            "0",
            "--auth-dir",
            auth.to_str().unwrap(),
            "--db-path",
            db.to_str().unwrap(),
        ],
        dir.path(),
        None,
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("chmod 600") && err.contains("worker.token"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_logs_status_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, _control) = node(dir.path()).await;
    let secrets: Vec<String> = Role::ALL
        .into_iter()
        .map(|role| Token::read(&token_file(role)).unwrap().expose().to_string())
        .collect();
    let mut seen = String::new();
    for role in Role::ALL {
        for args in [
            vec!["status", "--coordinator", node.addr.as_str(), "-o", "json"],
            vec!["sql", "--coordinator", node.addr.as_str(), "SELECT 1"],
            vec!["jobs", "--coordinator", node.addr.as_str()],
        ] {
            let (_, out, err) = run_as(&args, dir.path(), Some(&token_file(role)));
            seen.push_str(&out);
            seen.push_str(&err);
        }
    }
    node.kill();
    let (_, log) = node.wait_exit(Duration::from_secs(1));
    seen.push_str(&node.startup);
    seen.push_str(&log);
    for secret in &secrets {
        assert!(!seen.contains(secret.as_str()), "a token leaked:\n{seen}");
        // Not even its random part.
        let random = secret.rsplit('-').next().unwrap();
        assert!(!seen.contains(random), "a token leaked:\n{seen}");
    }
}
