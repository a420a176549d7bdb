//! A coordinator's side of trust, loaded once at start: the [`Gate`] in front of its services
//! and the [`Credentials`] it presents to its peers.

use std::sync::Arc;

use tonic::transport::ServerTlsConfig;

use super::tls::{TlsError, TlsFiles};
use super::token::{Keyring, TokenError};
use super::{Credentials, Gate, Role};
use crate::config::CoordinatorConfig;

/// Why a coordinator's credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot load the tokens of --auth-dir: {0}")]
    Tokens(#[from] TokenError),
    #[error("cannot load the TLS files: {0}")]
    Tls(#[from] TlsError),
    #[error(
        "--tls-cert is a {0} certificate: a coordinator serves with the peer certificate \
         (peer.pem from `testfleet tls init`)"
    )]
    NotPeer(Role),
}

/// What a coordinator checks and presents.
#[derive(Clone)]
pub struct ServerTrust {
    pub gate: Gate,
    /// What this node presents when it calls its peers (Raft, forwarding, health reports).
    pub peer: Credentials,
    /// The server side of mutual TLS, when configured.
    pub tls: Option<ServerTlsConfig>,
}

impl ServerTrust {
    /// Loads the token files and certificates `config` names; with none, an open gate.
    pub fn load(config: &CoordinatorConfig) -> Result<ServerTrust, TrustError> {
        let mut gate = Gate::open();
        let mut peer = Credentials::none();
        let mut tls = None;
        if let Some(dir) = &config.auth_dir {
            let keyring = Keyring::load(dir)?;
            peer = peer.with_token(keyring.peer_token().clone());
            gate = gate.with_tokens(Arc::new(keyring));
        }
        if let (Some(cert), Some(key), Some(ca)) =
            (&config.tls_cert, &config.tls_key, &config.tls_ca)
        {
            let files = TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            };
            let material = files.load()?;
            if material.role() != Role::Peer {
                return Err(TrustError::NotPeer(material.role()));
            }
            peer = peer.with_tls(material.client_config());
            gate = gate.with_certificates(super::tls::role_of);
            tls = Some(material.server_config());
        }
        Ok(ServerTrust { gate, peer, tls })
    }
}
