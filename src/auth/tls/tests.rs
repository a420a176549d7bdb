use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use tempfile::TempDir;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

use super::*;
use crate::proto::control_client::ControlClient;
use crate::proto::control_server::{Control, ControlServer};
use crate::proto::{
    BenchReply, BenchRequest, CheckDigestReply, CheckDigestRequest, HealthAck, HealthReport,
    NodeStatus, QueryReply, QueryRequest, StartCheckReply, StartCheckRequest, StatusRequest,
};

const NAMES: [&str; 8] = [
    "ca.pem",
    "ca.key",
    "peer.pem",
    "peer.key",
    "operator.pem",
    "operator.key",
    "worker.pem",
    "worker.key",
];

/// A fresh directory with `tls init` run in its `tls` subdirectory.
fn initialised() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    init(&dir, &["coordinator-1.example".into()], 365, false).unwrap();
    (tmp, dir)
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The DER of the first certificate in a PEM text.
fn der(pem_text: &str) -> Vec<u8> {
    Pem::iter_from_buffer(pem_text.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .contents
}

fn files(dir: &Path, role: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{role}.pem")),
        key: dir.join(format!("{role}.key")),
        ca: dir.join("ca.pem"),
    }
}

#[test]
fn init_writes_every_file_with_keys_private() {
    let (_tmp, dir) = initialised();
    assert_eq!(mode(&dir), 0o700);
    for name in NAMES {
        let path = dir.join(name);
        if name.ends_with(".key") {
            assert_eq!(mode(&path), 0o600, "{name}");
        }
        assert!(read(&dir, name).starts_with("-----BEGIN "), "{name}");
    }
}

#[test]
fn init_refuses_existing_files_unless_forced() {
    let (_tmp, dir) = initialised();
    let old_ca = read(&dir, "ca.pem");
    let err = init(&dir, &[], 365, false).unwrap_err().to_string();
    assert!(err.contains("ca.pem") && err.contains("--force"), "{err}");
    assert_eq!(
        read(&dir, "ca.pem"),
        old_ca,
        "a refused init changes nothing"
    );

    fs::set_permissions(dir.join("worker.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let written = init(&dir, &[], 30, true).unwrap();
    assert_eq!(written.len(), NAMES.len());
    assert_ne!(read(&dir, "ca.pem"), old_ca);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(
        mode(&dir.join("worker.key")),
        0o600,
        "a replaced key is private again"
    );
}

#[test]
fn init_refuses_a_single_existing_file() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("worker.key"), "mine").unwrap();
    let err = init(tmp.path(), &[], 365, false).unwrap_err().to_string();
    assert!(err.contains("worker.key"), "{err}");
    assert!(!tmp.path().join("ca.pem").exists());
}

#[test]
fn init_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let hosts = |h: &str| vec![h.to_string()];
    assert!(matches!(
        init(tmp.path(), &[], 0, false),
        Err(TlsError::BadDays { .. })
    ));
    for bad in [
        "",
        "operator.testfleet",
        "Worker.TestFleet.",
        "a b",
        "é.example",
    ] {
        let result = init(tmp.path(), &hosts(bad), 365, false);
        assert!(
            matches!(result, Err(TlsError::BadHost { .. })),
            "{bad:?}: {result:?}"
        );
    }
    assert!(!tmp.path().join("ca.pem").exists());
}

#[test]
fn role_of_reads_each_role_certificate() {
    let (_tmp, dir) = initialised();
    for role in Role::ALL {
        let cert = read(&dir, &format!("{}.pem", role.name()));
        assert_eq!(role_of(&der(&cert)), Ok(role));
    }
}

#[test]
fn peer_certificate_names_loopback_and_hosts() {
    let (_tmp, dir) = initialised();
    let peer = der(&read(&dir, "peer.pem"));
    let (_, cert) = x509_parser::parse_x509_certificate(&peer).unwrap();
    let names: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => dns.to_string(),
            GeneralName::IPAddress(ip) => format!("{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(names[0], SERVER_NAME);
    assert!(names.contains(&"localhost".to_string()), "{names:?}");
    assert!(
        names.contains(&"coordinator-1.example".to_string()),
        "{names:?}"
    );
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn role_of_refuses_certificates_without_exactly_one_role() {
    let key = KeyPair::generate().unwrap();
    let none = CertificateParams::new(vec!["example.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let err = role_of(none.der()).unwrap_err();
    assert!(err.contains("no role"), "{err}");

    let two = CertificateParams::new(vec![
        "peer.testfleet".to_string(),
        "worker.testfleet".to_string(),
    ])
    .unwrap()
    .self_signed(&key)
    .unwrap();
    let err = role_of(two.der()).unwrap_err();
    assert!(err.contains("peer, worker"), "{err}");

    let unknown = CertificateParams::new(vec!["admin.testfleet".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let err = role_of(unknown.der()).unwrap_err();
    assert!(err.contains("admin"), "{err}");

    let err = role_of(b"not a certificate").unwrap_err();
    assert!(err.contains("cannot be parsed"), "{err}");
}

#[test]
fn load_gives_the_role_and_hides_the_key() {
    let (_tmp, dir) = initialised();
    let material = files(&dir, "worker").load().unwrap();
    assert_eq!(material.role(), Role::Worker);
    let debug = format!("{material:?}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn load_names_a_missing_file() {
    let (_tmp, dir) = initialised();
    let mut files = files(&dir, "operator");
    files.key = dir.join("nope.key");
    let err = files.load().unwrap_err().to_string();
    assert!(
        err.contains("nope.key") && err.contains("does not exist"),
        "{err}"
    );
    assert!(err.contains("testfleet tls init"), "{err}");
}

#[test]
fn load_names_a_file_that_is_not_pem() {
    let (_tmp, dir) = initialised();
    let junk = dir.join("junk.pem");
    fs::write(&junk, "hello\n").unwrap();
    let mut files = files(&dir, "operator");
    files.ca = junk;
    let err = files.load().unwrap_err().to_string();
    assert!(
        err.contains("junk.pem") && err.contains("not a PEM file"),
        "{err}"
    );
}

#[test]
fn load_refuses_a_key_as_certificate_and_a_certificate_without_role() {
    let (_tmp, dir) = initialised();
    let mut swapped = files(&dir, "operator");
    swapped.cert = dir.join("operator.key");
    let err = swapped.load().unwrap_err().to_string();
    assert!(
        err.contains("operator.key") && err.contains("no certificate"),
        "{err}"
    );

    let key = KeyPair::generate().unwrap();
    let anonymous = CertificateParams::new(vec!["example.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    fs::write(dir.join("anon.pem"), anonymous.pem()).unwrap();
    fs::write(dir.join("anon.key"), key.serialize_pem()).unwrap();
    let err = files(&dir, "anon").load().unwrap_err().to_string();
    assert!(err.contains("anon.pem") && err.contains("no role"), "{err}");
}

#[test]
fn load_refuses_a_certificate_of_another_ca_or_key() {
    let (_tmp, dir) = initialised();
    let (_other_tmp, other_dir) = initialised();
    let foreign = TlsFiles {
        ca: dir.join("ca.pem"),
        ..files(&other_dir, "worker")
    };
    let err = foreign.load().unwrap_err().to_string();
    assert!(err.contains("not signed by the CA"), "{err}");
    assert!(
        err.contains(&dir.join("ca.pem").display().to_string()),
        "{err}"
    );

    let mismatched = TlsFiles {
        key: dir.join("operator.key"),
        ..files(&dir, "worker")
    };
    let err = mismatched.load().unwrap_err().to_string();
    assert!(
        err.contains("worker.pem") && err.contains("operator.key"),
        "{err}"
    );
    assert!(err.contains("does not belong"), "{err}");
}

/// A worker certificate signed by the CA in `dir` that expired yesterday, written to
/// `expired.pem` and `expired.key` there.
fn write_expired_worker(dir: &Path) {
    let now = OffsetDateTime::now_utc();
    let (cert, key) = issue(
        &read(dir, "ca.pem"),
        &read(dir, "ca.key"),
        Role::Worker,
        &[],
        now - Duration::days(30),
        now - Duration::days(1),
    )
    .unwrap();
    fs::write(dir.join("expired.pem"), cert).unwrap();
    fs::write(dir.join("expired.key"), key).unwrap();
}

#[test]
fn issue_with_a_past_end_makes_an_expired_certificate() {
    let (_tmp, dir) = initialised();
    write_expired_worker(&dir);
    let der = der(&read(&dir, "expired.pem"));
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!cert.validity().is_valid());
    assert!(cert.validity().not_after.to_datetime() < OffsetDateTime::now_utc());
    assert_eq!(role_of(&der), Ok(Role::Worker));
}

/// A `Control` service that records the role of each caller's certificate.
#[derive(Default)]
struct RoleRecorder {
    seen: Arc<Mutex<Vec<Result<Role, String>>>>,
}

#[tonic::async_trait]
impl Control for RoleRecorder {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<NodeStatus>, Status> {
        let role = match request.peer_certs() {
            Some(certs) => match certs.first() {
                Some(cert) => role_of(cert),
                None => Err("empty certificate chain".into()),
            },
            None => Err("no peer certificates".into()),
        };
        self.seen.lock().unwrap().push(role);
        Ok(Response::new(NodeStatus::default()))
    }

    async fn query(&self, _: Request<QueryRequest>) -> Result<Response<QueryReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn propose_bench(
        &self,
        _: Request<BenchRequest>,
    ) -> Result<Response<BenchReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn report_health(&self, _: Request<HealthReport>) -> Result<Response<HealthAck>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn report_recovery(
        &self,
        _: Request<crate::proto::RecoveryReport>,
    ) -> Result<Response<HealthAck>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn stage_times(
        &self,
        _: Request<crate::proto::StageTimesRequest>,
    ) -> Result<Response<crate::proto::StageTimesReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn start_check(
        &self,
        _: Request<StartCheckRequest>,
    ) -> Result<Response<StartCheckReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn get_check_digest(
        &self,
        _: Request<CheckDigestRequest>,
    ) -> Result<Response<CheckDigestReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn drain_worker(
        &self,
        _: Request<crate::proto::DrainWorkerRequest>,
    ) -> Result<Response<crate::proto::WorkerChangeReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn remove_worker(
        &self,
        _: Request<crate::proto::RemoveWorkerRequest>,
    ) -> Result<Response<crate::proto::WorkerChangeReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn list_breakers(
        &self,
        _: Request<crate::proto::ListBreakersRequest>,
    ) -> Result<Response<crate::proto::BreakerList>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn set_breaker(
        &self,
        _: Request<crate::proto::SetBreakerRequest>,
    ) -> Result<Response<crate::proto::BreakerChange>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn transfer_leader(
        &self,
        _: Request<crate::proto::TransferLeaderRequest>,
    ) -> Result<Response<crate::proto::TransferLeaderReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn add_node(
        &self,
        _: Request<crate::proto::AddNodeRequest>,
    ) -> Result<Response<crate::proto::MembershipReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn remove_node(
        &self,
        _: Request<crate::proto::RemoveNodeRequest>,
    ) -> Result<Response<crate::proto::MembershipReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn snapshot(
        &self,
        _: Request<crate::proto::SnapshotRequest>,
    ) -> Result<Response<crate::proto::SnapshotReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn recover_worker(
        &self,
        _: Request<crate::proto::RecoverWorkerRequest>,
    ) -> Result<Response<crate::proto::WorkerChangeReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn reset_worker(
        &self,
        _: Request<crate::proto::ResetWorkerRequest>,
    ) -> Result<Response<crate::proto::WorkerChangeReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    type FetchSnapshotStream =
        tokio_stream::wrappers::ReceiverStream<Result<crate::proto::SnapshotPart, Status>>;

    async fn fetch_snapshot(
        &self,
        _: Request<crate::proto::FetchSnapshotRequest>,
    ) -> Result<Response<Self::FetchSnapshotStream>, Status> {
        Err(Status::unimplemented("test"))
    }
}

/// Connects to `addr` over TLS and calls `Status`; any failure as text.
async fn call_status(addr: &str, config: ClientTlsConfig) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(https_uri(addr))
        .map_err(|e| e.to_string())?
        .tls_config(config)
        .map_err(|e| format!("tls config: {e}"))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    ControlClient::new(channel)
        .status(StatusRequest::default())
        .await
        .map(drop)
        .map_err(|e| format!("call: {e}"))
}

#[tokio::test]
async fn mutual_tls_admits_only_valid_certificates_of_the_ca() {
    let (_tmp, dir) = initialised();
    let (_other_tmp, other_dir) = initialised();
    write_expired_worker(&dir);

    let server_tls = files(&dir, "peer").load().unwrap().server_config();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let recorder = RoleRecorder::default();
    let seen = recorder.seen.clone();
    let server = Server::builder()
        .tls_config(server_tls)
        .unwrap()
        .add_service(ControlServer::new(recorder))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);

    // An operator of this CA gets in, and the server sees its role.
    let operator = files(&dir, "operator").load().unwrap();
    call_status(&addr, operator.client_config()).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![Ok(Role::Operator)]);

    // A certificate of another CA, trusting the right CA so that the server is the one
    // refusing (`load` would refuse this mix).
    let foreign = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&dir, "ca.pem")))
        .identity(Identity::from_pem(
            read(&other_dir, "operator.pem"),
            read(&other_dir, "operator.key"),
        ))
        .domain_name(SERVER_NAME);
    let result = call_status(&addr, foreign).await;
    let err = result.unwrap_err();
    assert!(
        err.contains("received fatal alert"),
        "foreign certificate: {err}"
    );

    // An expired worker certificate of the right CA.
    let expired = TlsFiles {
        ca: dir.join("ca.pem"),
        ..files(&dir, "expired")
    };
    let result = call_status(&addr, expired.load().unwrap().client_config()).await;
    let err = result.unwrap_err();
    assert!(
        err.contains("CertificateExpired"),
        "expired certificate: {err}"
    );

    // No client certificate at all.
    let anonymous = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&dir, "ca.pem")))
        .domain_name(SERVER_NAME);
    let result = call_status(&addr, anonymous).await;
    let err = result.unwrap_err();
    assert!(err.contains("CertificateRequired"), "no certificate: {err}");

    // A client trusting another CA refuses this server.
    let other = files(&other_dir, "operator").load().unwrap();
    let result = call_status(&addr, other.client_config()).await;
    let err = result.unwrap_err();
    assert!(
        err.contains("InvalidCertificate"),
        "server of another CA: {err}"
    );

    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the operator got through"
    );
    server.abort();
}
