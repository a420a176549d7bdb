//! Mutual TLS with role-bound certificates.
//!
//! `testfleet tls init DIR` makes a private certificate authority (`ca.pem`, `ca.key`) and one
//! certificate with its key per [`Role`]: `peer.pem`, `operator.pem`, `worker.pem`. Each
//! certificate names its role in a DNS subject alternative name, `<role>.testfleet`
//! (`peer.testfleet`, `operator.testfleet`, `worker.testfleet`); [`role_of`] reads it back from
//! the certificate a caller presented.
//!
//! Both sides prove who they are:
//!
//! * A coordinator serves with the peer certificate and asks every caller for a certificate
//!   signed by the same CA ([`TlsMaterial::server_config`]); a caller without one cannot
//!   finish the handshake.
//! * A client trusts only that CA and checks that the server's certificate is valid for
//!   [`SERVER_NAME`] (`peer.testfleet`), whatever host name it dialled
//!   ([`TlsMaterial::client_config`]). So only the holder of a peer certificate can pose as a
//!   coordinator: the approach of Consul's `server.<dc>.consul` name. For tools that check the
//!   host name instead, the peer certificate also carries `localhost`, `127.0.0.1`, `::1` and
//!   every `--host` given to `tls init`.
//! * Extended key usage backs this up: the peer certificate may act as server and client
//!   (coordinators call each other), operator and worker certificates only as clients.
//!
//! [`TlsFiles::load`] checks a process's files before anything listens or dials: each is PEM,
//! the certificate names one role, was signed by the CA, and belongs to the key.
//!
//! The CA is valid for ten years, the role certificates for `--days` (365 unless told).
//! `ca.key` is only needed to issue certificates: keep it offline. Keys are written with mode
//! 0600, and the directory, when `init` creates it, with mode 0700.

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use super::Role;

/// The name a client checks the coordinator's certificate against: only a peer certificate
/// carries it.
pub const SERVER_NAME: &str = "peer.testfleet";

/// The DNS suffix under which a certificate names its role.
pub const ROLE_DOMAIN: &str = "testfleet";

/// How long the CA `init` makes stays valid: ten years.
pub const CA_DAYS: u32 = 3650;

/// The longest validity `init` gives a role certificate (that of the CA).
pub const MAX_DAYS: u32 = CA_DAYS;

/// How far back a new certificate's validity starts, so that a clock a little behind the
/// issuer's still accepts it.
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// The names every peer certificate carries besides `peer.testfleet`.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// What can go wrong making, writing or loading TLS material. Each message names the file
/// and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `init` would overwrite a file.
    #[error(
        "{} already exists: pass --force to replace the CA and all certificates (every \
         certificate signed by the old CA stops working), or choose another directory",
        path.display()
    )]
    Exists { path: PathBuf },
    /// A file or directory could not be created, written or read.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A file to load does not exist.
    #[error(
        "{what} file {} does not exist: make one with `testfleet tls init DIR`",
        path.display()
    )]
    Missing { what: &'static str, path: PathBuf },
    /// A file to load is not what it should be (not PEM, no certificate, no key, no role).
    #[error("{what} file {}: {problem}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// A `--host` cannot go into a certificate.
    #[error("--host {host:?}: {problem}")]
    BadHost { host: String, problem: String },
    /// A validity that makes no sense.
    #[error("--days {days}: a certificate must be valid for 1 to {MAX_DAYS} days")]
    BadDays { days: u32 },
    /// The CA given to `issue` could not be read.
    #[error("the CA certificate or key cannot be used: {0}")]
    BadCa(String),
    /// rcgen refused to make a key or certificate.
    #[error("cannot make the {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
}

/// Makes a CA and one certificate per role in `dir`; returns the files written.
///
/// Refuses if any of them exists, unless `force`. `hosts` are extra names (DNS names or IP
/// addresses) for the peer certificate; role certificates are valid for `days` days.
pub fn init(
    dir: &Path,
    hosts: &[String],
    days: u32,
    force: bool,
) -> Result<Vec<PathBuf>, TlsError> {
    if days == 0 || days > MAX_DAYS {
        return Err(TlsError::BadDays { days });
    }
    check_hosts(hosts)?;
    let files = init_files(dir);
    if !force {
        refuse_existing(&files)?;
    }
    let contents = generate_all(hosts, days)?;
    create_dir(dir)?;
    let mut written = Vec::with_capacity(files.len());
    for ((path, secret), content) in files.into_iter().zip(contents) {
        write_file(&path, &content, secret, force)?;
        written.push(path);
    }
    Ok(written)
}

/// The files `init` writes, in the order [`generate_all`] makes them, each with whether it is
/// a secret.
fn init_files(dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut files = vec![(dir.join("ca.pem"), false), (dir.join("ca.key"), true)];
    for role in Role::ALL {
        files.push((dir.join(format!("{}.pem", role.name())), false));
        files.push((dir.join(format!("{}.key", role.name())), true));
    }
    files
}

/// Fails on the first of `files` that already exists.
fn refuse_existing(files: &[(PathBuf, bool)]) -> Result<(), TlsError> {
    match files
        .iter()
        .find(|(path, _)| path.symlink_metadata().is_ok())
    {
        Some((path, _)) => Err(TlsError::Exists { path: path.clone() }),
        None => Ok(()),
    }
}

/// The PEM contents of every file `init` writes: the CA, then each role's certificate and key.
fn generate_all(hosts: &[String], days: u32) -> Result<Vec<String>, TlsError> {
    let now = OffsetDateTime::now_utc();
    let not_before = now - CLOCK_SKEW;
    let ca_not_after = now + Duration::days(i64::from(CA_DAYS));
    let leaf_not_after = (now + Duration::days(i64::from(days))).min(ca_not_after);
    let (ca_cert, ca_key) = make_ca(not_before, ca_not_after)?;
    let mut contents = vec![ca_cert.clone(), ca_key.clone()];
    for role in Role::ALL {
        let role_hosts = if role == Role::Peer { hosts } else { &[] };
        let (cert, key) = issue(
            &ca_cert,
            &ca_key,
            role,
            role_hosts,
            not_before,
            leaf_not_after,
        )?;
        contents.push(cert);
        contents.push(key);
    }
    Ok(contents)
}

/// A new self-signed CA: certificate PEM and key PEM.
fn make_ca(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, String), TlsError> {
    let key = new_key("CA key")?;
    let mut params = CertificateParams::default();
    // A name of its own, so that a certificate of another CA fails as "unknown issuer".
    let id = uuid::Uuid::new_v4().simple().to_string();
    params.distinguished_name = name(&format!("Testfleet CA {}", &id[..8]));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params
        .self_signed(&key)
        .map_err(|source| TlsError::Generate {
            what: "CA certificate".into(),
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues a certificate for `role`, signed by the CA, valid from `not_before` to `not_after`:
/// certificate PEM and key PEM.
///
/// The certificate names `<role>.testfleet`; a peer certificate also names the loopback
/// addresses and `hosts`, which must not be `*.testfleet` names themselves.
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    role: Role,
    hosts: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, String), TlsError> {
    check_hosts(hosts)?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| TlsError::BadCa(format!("key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)
        .map_err(|e| TlsError::BadCa(format!("certificate: {e}")))?;
    let key = new_key(&format!("{role} key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!("testfleet {role}"));
    params.subject_alt_names = role_names(role, hosts)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = extended_key_usages(role);
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| TlsError::Generate {
            what: format!("{role} certificate"),
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A fresh ECDSA P-256 key.
fn new_key(what: &str) -> Result<KeyPair, TlsError> {
    KeyPair::generate().map_err(|source| TlsError::Generate {
        what: what.into(),
        source,
    })
}

/// A subject with this common name, organisation Testfleet.
fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Testfleet");
    name.push(DnType::CommonName, common_name);
    name
}

/// The subject alternative names of a role's certificate: its role name first.
fn role_names(role: Role, hosts: &[String]) -> Result<Vec<SanType>, TlsError> {
    let mut names = vec![role_san(role)?];
    if role == Role::Peer {
        for host in LOOPBACK_NAMES
            .iter()
            .copied()
            .chain(hosts.iter().map(String::as_str))
        {
            let san = host_san(host)?;
            if !names.contains(&san) {
                names.push(san);
            }
        }
    }
    Ok(names)
}

/// `<role>.testfleet` as a DNS name.
fn role_san(role: Role) -> Result<SanType, TlsError> {
    let name = format!("{}.{ROLE_DOMAIN}", role.name());
    name.try_into()
        .map(SanType::DnsName)
        .map_err(|e| TlsError::Generate {
            what: format!("{role} certificate"),
            source: e,
        })
}

/// A host as an IP address or DNS name.
fn host_san(host: &str) -> Result<SanType, TlsError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    host.to_string()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|e| TlsError::BadHost {
            host: host.into(),
            problem: format!("not a DNS name: {e}"),
        })
}

/// Refuses hosts that are empty, not plain ASCII, or would name a role.
fn check_hosts(hosts: &[String]) -> Result<(), TlsError> {
    for host in hosts {
        let bad = |problem: &str| TlsError::BadHost {
            host: host.clone(),
            problem: problem.into(),
        };
        if host.is_empty() {
            return Err(bad("empty"));
        }
        if host.parse::<IpAddr>().is_ok() {
            continue;
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '_'))
        {
            return Err(bad(
                "a host name has only letters, digits, '-', '.' and '*'",
            ));
        }
        if role_label(host).is_some() {
            return Err(bad(&format!(
                "names under .{ROLE_DOMAIN} are reserved for roles"
            )));
        }
    }
    Ok(())
}

/// The part before `.testfleet` of a DNS name under it (any case), if it is one.
fn role_label(dns: &str) -> Option<String> {
    let lower = dns.trim_end_matches('.').to_ascii_lowercase();
    let label = lower.strip_suffix(ROLE_DOMAIN)?.strip_suffix('.')?;
    Some(label.to_string())
}

/// Peers act as server and client; everyone else only as client.
fn extended_key_usages(role: Role) -> Vec<ExtendedKeyUsagePurpose> {
    match role {
        Role::Peer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Operator | Role::Worker => vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
}

/// Creates `dir` with mode 0700 if it does not exist; leaves an existing one as it is.
fn create_dir(dir: &Path) -> Result<(), TlsError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes a new file (mode 0600 if `secret`, else 0644 less the umask); never overwrites
/// one unless `replace`, and then removes it first, so that a key never lands in a file
/// created earlier with wider permissions.
fn write_file(path: &Path, content: &str, secret: bool, replace: bool) -> Result<(), TlsError> {
    let io_error = |action| {
        move |source| TlsError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    if replace {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("replace")(e)),
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io_error("create"))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error("write"))
}

/// The role a certificate (DER) names in its one `*.testfleet` DNS name.
///
/// Errors say what was found instead: no such name, names of two different roles, an
/// unknown role, or a certificate that cannot be parsed.
pub fn role_of(cert_der: &[u8]) -> Result<Role, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| format!("the certificate's alternative names cannot be parsed: {e}"))?;
    let mut roles: Vec<Role> = Vec::new();
    for general_name in sans.iter().flat_map(|ext| &ext.value.general_names) {
        let GeneralName::DNSName(dns) = general_name else {
            continue;
        };
        let Some(label) = role_label(dns) else {
            continue;
        };
        let role = label
            .parse::<Role>()
            .map_err(|e| format!("the certificate names {dns:?}: {e}"))?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    match roles.as_slice() {
        [role] => Ok(*role),
        [] => Err(format!(
            "the certificate names no role: it has no DNS name peer.{ROLE_DOMAIN}, \
             operator.{ROLE_DOMAIN} or worker.{ROLE_DOMAIN}"
        )),
        _ => Err(format!(
            "the certificate names several roles ({}): it must name exactly one",
            roles
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Where a process finds its certificate, its key and the CA certificate (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files `tls init` wrote into `dir` for `role`.
    pub fn role(dir: &Path, role: Role) -> TlsFiles {
        TlsFiles {
            cert: dir.join(format!("{role}.pem")),
            key: dir.join(format!("{role}.key")),
            ca: dir.join("ca.pem"),
        }
    }

    /// Reads and checks the three files: each must be PEM, the certificate and the CA must
    /// hold a certificate, the key a private key; the certificate must name its role, be
    /// signed by the CA and belong to the key.
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let cert_pem = read_pem_file("certificate", &self.cert, is_certificate, "no certificate")?;
        let key_pem = read_pem_file("key", &self.key, is_private_key, "no private key")?;
        let ca_pem = read_pem_file("CA certificate", &self.ca, is_certificate, "no certificate")?;
        let invalid_cert = |problem: String| TlsError::Invalid {
            what: "certificate",
            path: self.cert.clone(),
            problem,
        };
        let cert_der = first_certificate(&cert_pem);
        let role = role_of(&cert_der).map_err(|problem| {
            invalid_cert(format!(
                "{problem}; make certificates with `testfleet tls init DIR`"
            ))
        })?;
        check_signed_by(&cert_der, &first_certificate(&ca_pem)).map_err(|problem| {
            invalid_cert(format!(
                "{problem} {}: use the ca.pem written with it by `testfleet tls init`",
                self.ca.display()
            ))
        })?;
        check_key_matches(&cert_der, &key_pem).map_err(|problem| {
            invalid_cert(format!(
                "{problem} {}: use the .key file written with it",
                self.key.display()
            ))
        })?;
        Ok(TlsMaterial {
            cert_pem,
            key_pem,
            ca_pem,
            role,
        })
    }
}

/// Reads a PEM file and checks that one of its blocks passes `wanted`.
fn read_pem_file(
    what: &'static str,
    path: &Path,
    wanted: fn(&str) -> bool,
    missing_block: &str,
) -> Result<String, TlsError> {
    let invalid = |problem: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        problem,
    };
    let text = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TlsError::Missing {
                what,
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(TlsError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let text =
        String::from_utf8(text).map_err(|_| invalid("not a PEM file (it is not text)".into()))?;
    let labels = pem_labels(&text).map_err(|e| invalid(format!("not a PEM file: {e}")))?;
    if labels.is_empty() {
        return Err(invalid(
            "not a PEM file (no -----BEGIN ...----- block); make one with `testfleet tls init DIR`"
                .into(),
        ));
    }
    if !labels.iter().any(|label| wanted(label)) {
        return Err(invalid(format!(
            "{missing_block} in it (found {}); make one with `testfleet tls init DIR`",
            labels.join(", ")
        )));
    }
    Ok(text)
}

/// The labels of a text's PEM blocks (`CERTIFICATE`, `PRIVATE KEY`, ...).
fn pem_labels(text: &str) -> Result<Vec<String>, String> {
    Pem::iter_from_buffer(text.as_bytes())
        .map(|block| block.map(|pem| pem.label).map_err(|e| e.to_string()))
        .collect()
}

fn is_certificate(label: &str) -> bool {
    label == "CERTIFICATE"
}

/// PKCS#8, SEC1 (EC) or PKCS#1 (RSA) private keys, as rustls reads them.
fn is_private_key(label: &str) -> bool {
    matches!(label, "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY")
}

/// The DER of the first certificate in a PEM text (empty if none: [`read_pem_file`] has
/// made sure there is one).
fn first_certificate(pem_text: &str) -> Vec<u8> {
    Pem::iter_from_buffer(pem_text.as_bytes())
        .filter_map(Result::ok)
        .find(|pem| is_certificate(&pem.label))
        .map(|pem| pem.contents)
        .unwrap_or_default()
}

/// Whether the CA certificate's key signed `cert_der`; the error ends where the CA's path
/// goes.
fn check_signed_by(cert_der: &[u8], ca_der: &[u8]) -> Result<(), String> {
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der)
        .map_err(|e| format!("the CA certificate cannot be parsed ({e}); see"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("it cannot be parsed ({e}); see"))?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| "it was not signed by the CA in".to_string())
}

/// Whether the private key in `key_pem` is the one of `cert_der`. A key rcgen cannot read
/// is let through: rustls checks the pair again when the configuration is built.
fn check_key_matches(cert_der: &[u8], key_pem: &str) -> Result<(), String> {
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return Ok(());
    };
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("it cannot be parsed ({e}); see"))?;
    if cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw() {
        Ok(())
    } else {
        Err("it does not belong to the key in".into())
    }
}

/// A process's loaded TLS material: its certificate and key, the CA, and the role its
/// certificate names. `Debug` leaves the key out.
#[derive(Clone)]
pub struct TlsMaterial {
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
    role: Role,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("role", &self.role)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &self.ca_pem)
            .finish()
    }
}

impl TlsMaterial {
    /// The role this process's own certificate names.
    pub fn role(&self) -> Role {
        self.role
    }

    /// For a coordinator's server: serve with this certificate and require every client to
    /// present a certificate signed by the CA (tonic's `client_auth_optional` stays false).
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
    }

    /// For a client (or a coordinator calling another): trust only the CA, present this
    /// certificate, and accept only a server whose certificate names [`SERVER_NAME`].
    ///
    /// tonic uses TLS only for `https://` addresses: with an `http://` one the same endpoint
    /// connects in plain text; see [`https_uri`].
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(SERVER_NAME)
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// `https://HOST:PORT` for a `HOST:PORT` (or `http://HOST:PORT`) address: tonic only uses a
/// [`ClientTlsConfig`] when the scheme is `https`.
pub fn https_uri(addr: &str) -> String {
    let bare = addr
        .strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr);
    format!("https://{bare}")
}
