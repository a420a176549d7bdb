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
use tonic::transport::{Channel, Endpoint};

use super::token::{Token, TokenError};

/// A channel whose every call carries the caller's token.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// What a client presents.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    token: Option<Token>,
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

    /// The token of a client command or a worker: the file given with `--token-file`, else
    /// the `TESTFLEET_TOKEN` environment variable, else none.
    pub fn from_token_file_or_env(file: Option<&Path>) -> Result<Credentials, TokenError> {
        let token = match file {
            Some(path) => Some(Token::read(path)?),
            None => match std::env::var("TESTFLEET_TOKEN") {
                Ok(text) => Token::parse(&text, "TESTFLEET_TOKEN")?,
                Err(_) => None,
            },
        };
        Ok(Credentials { token })
    }

    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// The endpoint for `addr` (`host:port`; an address with a scheme is taken as is).
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        Endpoint::from_shared(uri)
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
