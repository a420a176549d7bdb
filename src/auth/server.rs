//! A coordinator's side of trust, loaded once at start: the [`Gate`] in front of its services
//! and the [`Credentials`] it presents to its peers.

use super::token::{Keyring, TokenError};
use super::{Credentials, Gate};
use crate::config::CoordinatorConfig;
use std::sync::Arc;

/// Why a coordinator's credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot load the tokens of --auth-dir: {0}")]
    Tokens(#[from] TokenError),
}

/// What a coordinator checks and presents.
#[derive(Clone)]
pub struct ServerTrust {
    pub gate: Gate,
    /// What this node presents when it calls its peers (Raft, forwarding, health reports).
    pub peer: Credentials,
}

impl ServerTrust {
    /// Loads the token files and certificates `config` names; with none, an open gate.
    pub fn load(config: &CoordinatorConfig) -> Result<ServerTrust, TrustError> {
        let mut gate = Gate::open();
        let mut peer = Credentials::none();
        if let Some(dir) = &config.auth_dir {
            let keyring = Keyring::load(dir)?;
            peer = peer.with_token(keyring.peer_token().clone());
            gate = gate.with_tokens(Arc::new(keyring));
        }
        Ok(ServerTrust { gate, peer })
    }
}
