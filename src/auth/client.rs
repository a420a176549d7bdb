//! The client side: the credentials a CLI, a worker or a coordinator presents when it calls a
//! coordinator.
//!
//! [`Credentials`] holds an optional bearer token and optional TLS material. It makes the
//! [`Endpoint`] for an address (`https` with the client certificate when TLS is configured) and
//! the [`Bearer`] interceptor that puts the token on every call; clients are built on an
//! [`AuthChannel`], so no call can leave without them.

use std::path::Path;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::tls::{TlsError, TlsFiles};
use super::token::{Token, TokenError};

/// A channel whose every call carries the caller's token.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// What a client presents. Its `Debug` says only what is there: tonic's TLS configuration
/// would print the private key.
#[derive(Clone, Default)]
pub struct Credentials {
    token: Option<Token>,
    /// Mutual TLS: the CA to trust and the certificate to present.
    tls: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token)
            .field("tls", &self.tls.as_ref().map(|_| "<client certificate>"))
            .finish()
    }
}

/// Why a client's credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl Credentials {
    /// No credentials: for coordinators that need none (loopback, `--insecure`).
    pub fn none() -> Credentials {
        Credentials::default()
    }

    /// A bearer token.
    pub fn with_token(mut self, token: Token) -> Credentials {
        self.token = Some(token);
        self
    }

    /// Mutual TLS with the client configuration of a certificate, its key and the CA.
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Credentials {
        self.tls = Some(tls);
        self
    }

    /// The credentials of a client command or a worker: the token in the file given with
    /// `--token-file`, else the `TESTFLEET_TOKEN` environment variable, else none; and the
    /// certificate files, when given.
    pub fn load(
        token_file: Option<&Path>,
        tls: Option<&TlsFiles>,
    ) -> Result<Credentials, CredentialsError> {
        let token = match token_file {
            Some(path) => Some(Token::read(path)?),
            None => match std::env::var("TESTFLEET_TOKEN") {
                Ok(text) => Token::parse(&text, "TESTFLEET_TOKEN")?,
                Err(_) => None,
            },
        };
        let tls = match tls {
            Some(files) => Some(files.load()?.client_config()),
            None => None,
        };
        Ok(Credentials { token, tls })
    }

    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// The endpoint for `addr` (`host:port`): `https` with this client's certificate when
    /// TLS is configured (tonic speaks plain text to an `http` address whatever its TLS
    /// settings), else `http`. An address with a scheme keeps it.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("{scheme}://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)?;
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()),
            None => Ok(endpoint),
        }
    }

    /// The interceptor that adds this token to every call.
    pub fn bearer(&self) -> Bearer {
        Bearer(self.token.as_ref().map(|token| {
            let mut value: AsciiMetadataValue =
                MetadataValue::try_from(format!("Bearer {}", token.expose()))
                    .expect("a token read from text is ASCII without control characters");
            value.set_sensitive(true);
            value
        }))
    }

    /// `channel` with this token on every call.
    pub fn wrap(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, self.bearer())
    }
}

/// Puts `authorization: Bearer <token>` on every call (nothing without a token). The value is
/// marked sensitive, so HTTP/2 never indexes it and `Debug` hides it.
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn debug_output_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        crate::auth::tls::init(dir.path(), &[], 30, false).unwrap();
        let material = crate::auth::tls::TlsFiles::role(dir.path(), Role::Worker)
            .load()
            .unwrap();
        let token = Token::generate(Role::Worker).unwrap();
        let credentials = Credentials::none()
            .with_token(token.clone())
            .with_tls(material.client_config());
        let shown = format!("{credentials:?}");
        let key = std::fs::read_to_string(dir.path().join("worker.key")).unwrap();
        let key_body = key.lines().nth(1).unwrap();
        assert!(!shown.contains(token.expose()), "{shown}");
        assert!(!shown.contains(key_body), "{shown}");
        // tonic's own Debug prints the key as a list of byte values.
        let as_bytes = format!("{:?}", &key_body.as_bytes()[..24]);
        assert!(
            !shown.contains(as_bytes.trim_matches(['[', ']'])),
            "{shown}"
        );
        assert!(shown.contains("<client certificate>"), "{shown}");
    }
}
