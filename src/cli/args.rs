//! The flags every client command shares: where the coordinators are ([`Target`]), what to
//! present to them ([`ClientAuth`]), the exit codes `--help` lists, and the one conflict
//! between them and a command's own fleet ([`refuse_explicit_conflicts`]).

use std::path::PathBuf;

use super::{CliError, Output, Remote};
use crate::auth::Credentials;

/// The exit codes of every command, shown by `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (run/wait: every task passed)
  1  run/wait: a task failed, timed out or was cancelled; cluster check: replicas differ;
     other commands: an unexpected error
  2  bad usage or input (flags, plan file, unknown job or worker); cluster check: a node could
     not be checked
  3  run/wait: a task could not run (its program not found, abandoned after retries)
  4  the coordinator refused the credentials (no token, an unknown one, the wrong role);
     worker: its name is held by another live worker
  5  no coordinator could be reached (refused, no such host, not a Testfleet coordinator),
     or the cluster could not answer
  130  run: interrupted a second time (Ctrl-C), the job left running (--local: stopped)";

/// Coordinator addresses, as any subset of the cluster.
#[derive(Clone, clap::Args)]
pub struct Target {
    /// Coordinator addresses, HOST:PORT[,HOST:PORT...]; any member works
    #[arg(long, env = "TESTFLEET_COORDINATOR", default_value = "127.0.0.1:8080")]
    pub coordinator: String,
    #[command(flatten)]
    pub auth: ClientAuth,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Lists: read the answering node's own copy, which may trail the leader by a flush,
    /// instead of the leader's view
    #[arg(long)]
    pub stale: bool,
}

impl Target {
    pub fn remote(&self) -> Result<Remote, CliError> {
        Ok(Remote::new(
            super::parse_addresses(&self.coordinator)?,
            self.auth.credentials()?,
        ))
    }
}

/// What a client or worker presents to the coordinators.
#[derive(Clone, clap::Args)]
pub struct ClientAuth {
    /// File holding the token to present (from `testfleet auth init`); without it, the
    /// TESTFLEET_TOKEN environment variable, if set
    #[arg(long, env = "TESTFLEET_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Mutual TLS: this client's certificate (PEM, from `testfleet tls init`)
    #[arg(long, env = "TESTFLEET_TLS_CERT", value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Mutual TLS: this client's private key (PEM)
    #[arg(long, env = "TESTFLEET_TLS_KEY", value_name = "PEM", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: the CA that signed the coordinators' certificate (PEM)
    #[arg(long, env = "TESTFLEET_TLS_CA", value_name = "PEM", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl ClientAuth {
    pub fn credentials(&self) -> Result<Credentials, CliError> {
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(crate::auth::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        };
        Credentials::load(self.token_file.as_deref(), tls.as_ref())
            .map_err(|e| CliError::Usage(e.to_string()))
    }
}

/// `--coordinator` conflicts with `--local` (`run`, `pytest`) and `--nodes` (`bench commit`)
/// only when both are on the command line. `TESTFLEET_COORDINATOR` in the environment names the
/// cluster a shell usually talks to, and a command told to start a fleet of its own ignores it;
/// clap's `conflicts_with` counts a value from the environment too, so it refused `run --local`
/// in every shell that exports the variable. `command` builds the whole CLI, for the usage
/// error.
pub fn refuse_explicit_conflicts(
    matches: &clap::ArgMatches,
    command: impl FnOnce() -> clap::Command,
) -> Result<(), clap::Error> {
    use clap::parser::ValueSource;
    let mut current = matches;
    while let Some((_, sub)) = current.subcommand() {
        let given = |id: &str| {
            sub.ids().any(|present| present.as_str() == id)
                && sub.value_source(id) == Some(ValueSource::CommandLine)
        };
        for own in ["local", "nodes"] {
            if given(own) && given("coordinator") {
                return Err(command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "the argument '--{own}' cannot be used with '--coordinator': --{own} \
                         starts a fleet of its own"
                    ),
                ));
            }
        }
        current = sub;
    }
    Ok(())
}
