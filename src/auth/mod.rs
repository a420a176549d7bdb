//! Who may call what: roles, credentials, and the gate every gRPC call passes.
//!
//! A coordinator's port serves four services: the Raft service (coordinators only), worker
//! sessions, jobs, and control (status, queries, health reports, checks). Each caller has one
//! [`Role`], proven by a bearer token (`auth init` writes one per role) and, with mutual TLS, by
//! the role written in its client certificate. When a mechanism is configured, a call must
//! satisfy it: a worker certificate cannot speak Raft even next to a peer token.
//!
//! Without any credential configured a coordinator only listens on loopback (protected mode,
//! as Redis does); `--insecure` lifts that, loudly.

pub mod tls;

use std::fmt;
use std::str::FromStr;

/// What a caller is allowed to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Another coordinator: Raft, health reports, forwarded client requests. Trusted with
    /// everything, as it can write the log anyway.
    Peer,
    /// A person or program running the fleet: submit, cancel, query, status, checks.
    Operator,
    /// A worker: its session with the leader, and status.
    Worker,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Peer, Role::Operator, Role::Worker];

    /// The role's name as written in token files and certificates.
    pub fn name(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Operator => "operator",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected peer, operator or worker"))
    }
}

pub mod client;
pub mod gate;
pub mod server;
pub mod token;

pub use client::{AuthChannel, Credentials};
pub use gate::Gate;
pub use token::{Keyring, Token};

/// The certificates the client presented on this connection, if it runs TLS (shared, not
/// copied: the gate reads the first one on every call).
pub fn peer_certificates(
    extensions: &http::Extensions,
) -> Option<std::sync::Arc<Vec<tonic::transport::CertificateDer<'static>>>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()
}
