//! The server side: a tower layer in front of every service that admits or refuses each call.
//!
//! [`Gate`] reads the gRPC path of a call (`/package.Service/Method`), the role that path needs
//! ([`access`]), and the caller's credentials: the `authorization: Bearer <token>` metadata when
//! the node has an auth directory, and the role in the client certificate when it runs mutual
//! TLS. A call without a credential that is required is `Unauthenticated`; one whose role does
//! not reach the path is `PermissionDenied`. A refused call never reaches a service, so it
//! cannot change anything. An admitted call carries its [`Caller`] in the request extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};

use super::Role;
use super::token::Keyring;

/// The role a path requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, authenticated or not (the standard gRPC health service, `/livez`).
    Open,
    /// Any authenticated caller (status).
    Any,
    Operator,
    Worker,
    Peer,
}

/// What `path` requires. Unknown paths are for peers only: a new service is closed until it is
/// given a rule here.
pub fn access(path: &str) -> Access {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    match (service, method) {
        ("testfleet.v1.Control", "Status") => Access::Any,
        (
            "testfleet.v1.Control",
            "Query" | "ProposeBench" | "StartCheck" | "GetCheckDigest" | "DrainWorker"
            | "RemoveWorker" | "ListBreakers" | "SetBreaker" | "TransferLeader" | "AddNode"
            | "RemoveNode" | "Snapshot" | "FetchSnapshot" | "RecoverWorker" | "ResetWorker"
            | "StageTimes",
        ) => Access::Operator,
        ("testfleet.v1.Jobs", _) => Access::Operator,
        ("testfleet.v1.Fleet", "Session") => Access::Worker,
        ("grpc.health.v1.Health", _) => Access::Open,
        _ => Access::Peer,
    }
}

/// Whether `path` is an HTTP route (`/livez`, `/api/status`) rather than a gRPC method
/// (`/package.Service/Method`, whose first segment holds a dot). The gate passes HTTP routes
/// through; `crate::http` applies the same rules to them with [`Gate::admit_as`].
pub fn is_http(path: &str) -> bool {
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    !first.contains('.')
}

/// Whether `role` may call a path that requires `access`. A peer may call everything: it can
/// write the log anyway, and it forwards operators' requests to the leader.
pub fn permits(role: Role, access: Access) -> bool {
    matches!(
        (role, access),
        (Role::Peer, _)
            | (_, Access::Open | Access::Any)
            | (Role::Operator, Access::Operator)
            | (Role::Worker, Access::Worker)
    )
}

/// Who made an admitted call, as far as the configured mechanisms tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The role of the token, when tokens are required.
    pub token: Option<Role>,
    /// The role of the client certificate, when mutual TLS is on.
    pub certificate: Option<Role>,
}

/// Reads the role a client certificate (DER) carries.
pub type CertificateRole = fn(&[u8]) -> Result<Role, String>;

/// The server's admission rules.
#[derive(Clone, Default)]
pub struct Gate {
    tokens: Option<Arc<Keyring>>,
    certificates: Option<CertificateRole>,
}

impl Gate {
    /// Admits everyone (loopback-only nodes without credentials, and `--insecure`).
    pub fn open() -> Gate {
        Gate::default()
    }

    /// Requires a token from `keyring` on every call.
    pub fn with_tokens(mut self, keyring: Arc<Keyring>) -> Gate {
        self.tokens = Some(keyring);
        self
    }

    /// Requires a client certificate whose role `read` finds on every call.
    pub fn with_certificates(mut self, read: CertificateRole) -> Gate {
        self.certificates = Some(read);
        self
    }

    /// Admits a call to `path` or says why not.
    pub fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        certificate: Option<&[u8]>,
    ) -> Result<Caller, tonic::Status> {
        self.admit_as(access(path), path, headers, certificate)
    }

    /// Admits a request to `path` that needs `needed` (the HTTP routes say what they need
    /// themselves), or says why not.
    pub fn admit_as(
        &self,
        needed: Access,
        path: &str,
        headers: &http::HeaderMap,
        certificate: Option<&[u8]>,
    ) -> Result<Caller, tonic::Status> {
        let call = path.trim_start_matches('/');
        let mut caller = Caller {
            token: None,
            certificate: None,
        };
        if needed == Access::Open {
            return Ok(caller);
        }
        if let Some(keyring) = &self.tokens {
            let role = token_role(keyring, headers)?;
            check(role, needed, call, "token")?;
            caller.token = Some(role);
        }
        if let Some(read) = self.certificates {
            let der = certificate.ok_or_else(|| {
                tonic::Status::unauthenticated(
                    "this coordinator requires a client certificate and none was presented: \
                     pass --tls-cert, --tls-key and --tls-ca (from `testfleet tls init DIR`)",
                )
            })?;
            let role = read(der).map_err(|e| {
                tonic::Status::unauthenticated(format!(
                    "the client certificate names no Testfleet role ({e}): use one made by \
                     `testfleet tls init`"
                ))
            })?;
            check(role, needed, call, "certificate")?;
            caller.certificate = Some(role);
        }
        Ok(caller)
    }
}

/// The role of the bearer token in `headers`.
fn token_role(keyring: &Keyring, headers: &http::HeaderMap) -> Result<Role, tonic::Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(tonic::Status::unauthenticated(
            "this coordinator requires a token and none was sent: pass --token-file FILE or set \
             TESTFLEET_TOKEN (the token files come from `testfleet auth init DIR`)",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    presented
        .and_then(|token| keyring.role_of(token))
        .ok_or_else(|| {
            tonic::Status::unauthenticated(
                "the token is not one this coordinator accepts: use a token file from the \
                 directory given to the coordinator's --auth-dir",
            )
        })
}

fn check(role: Role, needed: Access, call: &str, what: &str) -> Result<(), tonic::Status> {
    if permits(role, needed) {
        return Ok(());
    }
    let needs = match needed {
        Access::Open | Access::Any | Access::Operator => "an operator",
        Access::Worker => "a worker",
        Access::Peer => "a peer (coordinator)",
    };
    let article = if role == Role::Operator { "an" } else { "a" };
    Err(tonic::Status::permission_denied(format!(
        "{article} {role} {what} cannot call {call}: it needs {needs} {what}"
    )))
}

impl<S> tower_layer::Layer<S> for Gate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            gate: self.clone(),
            inner,
        }
    }
}

/// A service behind a [`Gate`].
#[derive(Clone)]
pub struct Gated<S> {
    gate: Gate,
    inner: S,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Gated<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<Ready<Result<http::Response<R>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let open = self.gate.tokens.is_none() && self.gate.certificates.is_none();
        if open || is_http(request.uri().path()) {
            return Either::Right(self.inner.call(request));
        }
        let certificates = super::peer_certificates(request.extensions());
        let first = certificates.as_ref().and_then(|c| c.first());
        match self.gate.admit(
            request.uri().path(),
            request.headers(),
            first.map(|c| c.as_ref()),
        ) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Right(self.inner.call(request))
            }
            Err(status) => {
                tracing::debug!(
                    path = request.uri().path(),
                    "refused a call: {}",
                    status.message()
                );
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_method_has_the_role_it_should() {
        use Access::*;
        for (path, want) in [
            ("/testfleet.v1.Control/Status", Any),
            ("/testfleet.v1.Control/Query", Operator),
            ("/testfleet.v1.Control/ProposeBench", Operator),
            ("/testfleet.v1.Control/StartCheck", Operator),
            ("/testfleet.v1.Control/GetCheckDigest", Operator),
            ("/testfleet.v1.Control/DrainWorker", Operator),
            ("/testfleet.v1.Control/RemoveWorker", Operator),
            ("/testfleet.v1.Control/ListBreakers", Operator),
            ("/testfleet.v1.Control/SetBreaker", Operator),
            ("/testfleet.v1.Control/ReportHealth", Peer),
            ("/testfleet.v1.Control/ReportRecovery", Peer),
            ("/testfleet.v1.Jobs/SubmitJob", Operator),
            ("/testfleet.v1.Control/TransferLeader", Operator),
            ("/testfleet.v1.Control/AddNode", Operator),
            ("/testfleet.v1.Control/RemoveNode", Operator),
            ("/testfleet.v1.Control/Snapshot", Operator),
            ("/testfleet.v1.Control/FetchSnapshot", Operator),
            ("/testfleet.v1.Control/RecoverWorker", Operator),
            ("/testfleet.v1.Control/ResetWorker", Operator),
            ("/testfleet.v1.Control/StageTimes", Operator),
            ("/testfleet.v1.Jobs/CancelJob", Operator),
            ("/testfleet.v1.Jobs/GetJob", Operator),
            // Output relayed from the workers: an operator's, never a worker's.
            ("/testfleet.v1.Jobs/FollowOutput", Operator),
            ("/testfleet.v1.Fleet/Session", Worker),
            ("/testfleet.raft.v1.RaftService/AppendEntries", Peer),
            ("/testfleet.raft.v1.RaftService/AppendStream", Peer),
            ("/testfleet.raft.v1.RaftService/InstallSnapshot", Peer),
            ("/grpc.reflection.v1.ServerReflection/Info", Peer),
            ("/grpc.health.v1.Health/Check", Open),
            ("garbage", Peer),
        ] {
            assert_eq!(access(path), want, "{path}");
        }
        // HTTP routes pass the gate; `crate::http` checks them with `admit_as`.
        for (path, http) in [
            ("/livez", true),
            ("/api/status", true),
            ("/", true),
            ("/testfleet.v1.Control/Query", false),
            ("/grpc.health.v1.Health/Check", false),
        ] {
            assert_eq!(is_http(path), http, "{path}");
        }
    }

    #[test]
    fn roles_reach_their_own_paths_and_peers_reach_all() {
        use Access::*;
        assert!(permits(Role::Operator, Operator) && permits(Role::Operator, Any));
        assert!(!permits(Role::Operator, Worker) && !permits(Role::Operator, Peer));
        assert!(permits(Role::Worker, Worker) && permits(Role::Worker, Any));
        assert!(!permits(Role::Worker, Operator) && !permits(Role::Worker, Peer));
        for access in [Any, Operator, Worker, Peer] {
            assert!(permits(Role::Peer, access));
        }
    }
}
