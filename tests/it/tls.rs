//! Mutual TLS through a real coordinator that also checks tokens: each certificate reaches only
//! its role's calls (a worker certificate cannot speak Raft even next to the peer token), and
//! expired, foreign or missing certificates get nowhere. Every refusal is followed by reading
//! the state back; a positive control shows the refused Raft call would have changed it.

use std::path::{Path, PathBuf};

use testfleet::auth::tls::{self, TlsFiles};
use testfleet::auth::{Credentials, Role, Token};
use testfleet::proto::StatusRequest;
use testfleet::raft_proto::raft_service_client::RaftServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::support::{
    Process, client_as, count, disruptive_vote, run_as, start_coordinator, term, token_file,
};

/// A one-node cluster serving mutual TLS with the certificates made in `<dir>/tls`, and
/// checking the tests' tokens.
fn tls_node(dir: &Path) -> (Process, PathBuf) {
    let certs = dir.join("tls");
    tls::init(&certs, &[], 30, false).unwrap();
    let peer = TlsFiles::role(&certs, Role::Peer);
    let db = dir.join("state.duckdb");
    let node = start_coordinator(
        &[
            "--db-path",
            db.to_str().unwrap(),
            "--tls-cert",
            peer.cert.to_str().unwrap(),
            "--tls-key",
            peer.key.to_str().unwrap(),
            "--tls-ca",
            peer.ca.to_str().unwrap(),
        ],
        dir,
    );
    (node, certs)
}

/// The token of `role` with the certificate of `cert_role` made in `certs`.
fn creds(certs: &Path, role: Role, cert_role: Role) -> Credentials {
    let material = TlsFiles::role(certs, cert_role).load().unwrap();
    Credentials::none()
        .with_token(Token::read(&token_file(role)).unwrap())
        .with_tls(material.client_config())
}

/// The CLI flags for the certificate of `role`.
fn tls_flags(certs: &Path, role: Role) -> Vec<String> {
    let files = TlsFiles::role(certs, role);
    [
        ("--tls-cert", files.cert),
        ("--tls-key", files.key),
        ("--tls-ca", files.ca),
    ]
    .into_iter()
    .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
    .collect()
}

/// A client configuration that trusts the CA in `certs` and presents `identity` (certificate
/// and key PEM), if any.
fn client_tls(certs: &Path, identity: Option<(String, String)>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(certs.join("ca.pem")).unwrap(),
        ))
        .domain_name(tls::SERVER_NAME);
    match identity {
        Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
        None => config,
    }
}

/// Whether a status call with `credentials` succeeds (a refused certificate fails the
/// handshake at connect or, under TLS 1.3, at the first call).
async fn admitted(addr: &str, credentials: &Credentials) -> bool {
    let Ok(mut client) = testfleet::cli::connect(addr, credentials).await else {
        return false;
    };
    client.status(StatusRequest {}).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_reaches_only_its_roles_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (node, certs) = tls_node(dir.path());
    let operator = creds(&certs, Role::Operator, Role::Operator);
    let mut control = client_as(&node.addr, &operator).await;
    super::support::wait_for_leader(&mut control).await;

    // The operator's CLI submits over TLS.
    let mut args = vec!["submit", "--coordinator", node.addr.as_str()];
    let flags = tls_flags(&certs, Role::Operator);
    args.extend(flags.iter().map(String::as_str));
    args.extend(["--", "true"]);
    let (code, _, err) = run_as(&args, dir.path(), Some(&token_file(Role::Operator)));
    assert_eq!(code, 0, "{err}");
    assert_eq!(count(&mut control, "jobs").await, 1);

    // A worker certificate cannot query, even with the operator token.
    let mut as_worker = client_as(&node.addr, &creds(&certs, Role::Operator, Role::Worker)).await;
    let refused = as_worker
        .query(testfleet::proto::QueryRequest {
            sql: "SELECT 1".into(),
            consistent: false,
            timeout_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("worker certificate"),
        "{refused:?}"
    );

    // A worker certificate cannot speak Raft, even with the peer token.
    let before = term(&mut control).await;
    let channel = testfleet::cli::channel(&node.addr, &creds(&certs, Role::Peer, Role::Worker))
        .await
        .unwrap();
    let refused = RaftServiceClient::new(channel)
        .vote(disruptive_vote())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(term(&mut control).await, before);

    // The peer certificate with the peer token does disrupt it: the refusal was real.
    let channel = testfleet::cli::channel(&node.addr, &creds(&certs, Role::Peer, Role::Peer))
        .await
        .unwrap();
    RaftServiceClient::new(channel)
        .vote(disruptive_vote())
        .await
        .unwrap();
    super::support::until_term(&mut control, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_foreign_and_missing_certificates_get_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let (node, certs) = tls_node(dir.path());
    let good = creds(&certs, Role::Operator, Role::Operator);
    let mut control = client_as(&node.addr, &good).await;
    super::support::wait_for_leader(&mut control).await;
    let before = term(&mut control).await;
    let token = Token::read(&token_file(Role::Operator)).unwrap();

    // Expired: signed by the right CA, ended yesterday.
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = tls::issue(
        &std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(certs.join("ca.key")).unwrap(),
        Role::Operator,
        &[],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .unwrap();
    let expired = Credentials::none()
        .with_token(token.clone())
        .with_tls(client_tls(&certs, Some((cert, key))));

    // Foreign: a valid operator certificate of another CA, presented to ours.
    let foreign_dir = dir.path().join("foreign");
    tls::init(&foreign_dir, &[], 30, false).unwrap();
    let foreign_files = TlsFiles::role(&foreign_dir, Role::Operator);
    let foreign = Credentials::none()
        .with_token(token.clone())
        .with_tls(client_tls(
            &certs,
            Some((
                std::fs::read_to_string(&foreign_files.cert).unwrap(),
                std::fs::read_to_string(&foreign_files.key).unwrap(),
            )),
        ));

    // Missing: trusts the CA but presents no certificate.
    let ca_only = Credentials::none()
        .with_token(token.clone())
        .with_tls(client_tls(&certs, None));

    // Plain text: the right token, no TLS at all.
    let plain = Credentials::none().with_token(token);

    for (what, credentials) in [
        ("expired", &expired),
        ("foreign", &foreign),
        ("no certificate", &ca_only),
        ("plain text", &plain),
    ] {
        assert!(
            !admitted(&node.addr, credentials).await,
            "{what} was admitted"
        );
        if let Ok(mut client) = testfleet::cli::connect(&node.addr, credentials).await {
            let refused = client
                .propose_bench(testfleet::proto::BenchRequest { payload: vec![1] })
                .await;
            assert!(refused.is_err(), "{what} wrote");
        }
    }
    assert!(admitted(&node.addr, &good).await, "the good certificate");
    assert_eq!(term(&mut control).await, before);
    assert_eq!(count(&mut control, "bench_log").await, 0);
}
