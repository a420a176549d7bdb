//! The client side of the command line: find a coordinator, ask it, print the answer.
//!
//! Every command accepts any subset of the coordinators (`--coordinator a,b,c` or
//! `TESTFLEET_COORDINATOR`) and prints a table for people or, with `-o json`, one JSON
//! document for scripts. Logs go to stderr; results to stdout.

pub mod args;
pub mod breaker;
pub mod capabilities;
pub mod cluster;
pub mod cluster_check;
pub mod interrupt;
pub mod jobs;
pub mod local;
pub mod logs;
pub mod lookup;
pub mod members;
pub mod pytest;
pub mod reads;
pub mod recovery;
pub mod recovery_report;
pub mod signals;
pub mod status;
pub mod test_results;
pub mod time;
pub mod tls;
pub mod viz;
pub mod workers;

use std::time::Duration;

use crate::auth::{AuthChannel, Credentials};
use crate::proto::control_client::ControlClient;

/// Where a client command sends its calls (any subset of the coordinators) and what it
/// presents there.
#[derive(Clone, Debug)]
pub struct Remote {
    pub addrs: Vec<String>,
    pub credentials: Credentials,
}

impl Remote {
    pub fn new(addrs: Vec<String>, credentials: Credentials) -> Remote {
        Remote { addrs, credentials }
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document (snake_case keys) for scripts.
    Json,
}

/// Why a client command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or input (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The cluster could not be reached or failed (exit 5).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (exit 1).
    #[error("{0}")]
    Other(String),
    /// The coordinator refused the credentials: none, unknown, or the wrong role (exit 4).
    #[error("{0}")]
    Denied(String),
    /// Nothing went wrong in the tool, but the outcome asks for this exit code (e.g. a test
    /// failed in `run`); nothing more is printed.
    #[error("")]
    Exit(u8),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unavailable(_) => 5,
            CliError::Other(_) => 1,
            CliError::Denied(_) => 4,
            CliError::Exit(code) => *code,
        }
    }
}

/// Splits a `host:port,host:port` list; refuses an empty one.
pub fn parse_addresses(list: &str) -> Result<Vec<String>, CliError> {
    let addrs: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if addrs.is_empty() {
        return Err(CliError::Usage(
            "no coordinator address given: pass --coordinator HOST:PORT[,HOST:PORT...]".into(),
        ));
    }
    // The same address twice is one node.
    let mut seen = std::collections::BTreeSet::new();
    let addrs: Vec<String> = addrs
        .into_iter()
        .filter(|a| seen.insert(a.clone()))
        .collect();
    for addr in &addrs {
        if !addr.contains(':') {
            return Err(CliError::Usage(format!(
                "coordinator address {addr:?} has no port: write it as HOST:PORT"
            )));
        }
    }
    Ok(addrs)
}

/// A connection to one address, presenting `credentials`; fails fast when nothing listens
/// there.
pub async fn channel(addr: &str, credentials: &Credentials) -> Result<AuthChannel, CliError> {
    let endpoint = credentials
        .endpoint(addr)
        .map_err(|e| CliError::Usage(format!("bad coordinator address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| unreachable(addr, &e))?;
    Ok(credentials.wrap(channel))
}

/// A `Control` client for one address; fails fast when nothing listens there.
pub async fn connect(
    addr: &str,
    credentials: &Credentials,
) -> Result<ControlClient<AuthChannel>, CliError> {
    Ok(ControlClient::new(channel(addr, credentials).await?).max_decoding_message_size(256 << 20))
}

/// A client for the first coordinator of `remote` that answers.
pub async fn connect_any(remote: &Remote) -> Result<ControlClient<AuthChannel>, CliError> {
    let mut errors = Vec::new();
    for addr in &remote.addrs {
        match connect(addr, &remote.credentials).await {
            Ok(client) => return Ok(client),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(CliError::Unavailable(format!(
        "no coordinator answered: {}",
        errors.join("; ")
    )))
}

/// Rows of a read-only query as JSON values; `consistent` asks the leader for a
/// linearizable read.
pub async fn query_rows(
    remote: &Remote,
    sql: &str,
    consistent: bool,
) -> Result<Vec<Vec<serde_json::Value>>, CliError> {
    let mut client = connect_any(remote).await?;
    let reply = client
        .query(crate::proto::QueryRequest {
            sql: sql.to_string(),
            consistent,
            timeout_ms: 0,
        })
        .await
        .map_err(from_status)?
        .into_inner();
    reply
        .rows_json
        .iter()
        .map(|r| {
            serde_json::from_str(r)
                .map_err(|e| CliError::Other(format!("the coordinator sent a malformed row: {e}")))
        })
        .collect()
}

/// Why `addr` could not be reached, with the whole cause ("tcp connect error: Connection
/// refused", not tonic's bare "transport error").
pub fn unreachable(addr: &str, error: &tonic::transport::Error) -> CliError {
    let mut causes = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    CliError::Unavailable(format!(
        "cannot reach coordinator {addr}: {}",
        causes.join(": ")
    ))
}

/// Whether a failed connection was refused outright: nothing listens at the address.
pub fn refused(error: &CliError) -> bool {
    matches!(error, CliError::Unavailable(text) if text.contains("Connection refused"))
}

/// An infrastructure error (exit 5) from anything displayable.
pub fn unavailable(e: impl std::fmt::Display) -> CliError {
    CliError::Unavailable(e.to_string())
}

/// Maps a gRPC status to a CLI error with the server's message.
pub fn from_status(status: tonic::Status) -> CliError {
    // A call that failed in the transport carries the cause as its source; tonic's own message
    // is a bare "transport error".
    let mut causes = vec![status.message().to_string()];
    let mut source = std::error::Error::source(&status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    let cause = causes.join(": ");
    // Something that is not a gRPC server over HTTP/2 answered (a web server, SSH, a database),
    // or plain HTTP/2 met a TLS port (or TLS a plain one): the connection fails as a protocol
    // error. Say what usually causes it.
    let foreign = [
        "protocol error",
        "http2 error",
        "frame with invalid size",
        "invalid HTTP",
    ];
    if matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown)
        && foreign.iter().any(|f| cause.contains(f))
    {
        return CliError::Unavailable(format!(
            "not a Testfleet coordinator: what answers there does not speak gRPC ({cause}); check \
             the address, or — if the coordinator runs mutual TLS — pass --tls-cert, --tls-key \
             and --tls-ca (and leave them out if it does not)"
        ));
    }
    if matches!(status.code(), tonic::Code::Unknown | tonic::Code::Cancelled)
        && std::error::Error::source(&status).is_some()
    {
        return CliError::Unavailable(format!("the connection failed: {cause}"));
    }
    match status.code() {
        // Bad input, or something named that does not exist (exit 2).
        tonic::Code::InvalidArgument | tonic::Code::NotFound => {
            CliError::Usage(status.message().to_string())
        }
        // A request the state refuses (e.g. removing a worker that holds tasks): the reason.
        tonic::Code::FailedPrecondition => {
            CliError::Other(format!("refused: {}", status.message()))
        }
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            CliError::Unavailable(status.message().to_string())
        }
        tonic::Code::Unauthenticated => {
            CliError::Denied(format!("not authenticated: {}", status.message()))
        }
        tonic::Code::PermissionDenied => {
            CliError::Denied(format!("permission denied: {}", status.message()))
        }
        _ => CliError::Other(format!("{:?}: {cause}", status.code())),
    }
}

/// A read-only query's whole answer (names, DuckDB types, rows); `consistent` asks the leader
/// for a linearizable read.
pub async fn query_result(
    remote: &Remote,
    sql: &str,
    consistent: bool,
) -> Result<crate::query::QueryResult, CliError> {
    let mut client = connect_any(remote).await?;
    let reply = client
        .query(crate::proto::QueryRequest {
            sql: sql.to_string(),
            consistent,
            timeout_ms: 0,
        })
        .await
        .map_err(from_status)?
        .into_inner();
    let rows = reply
        .rows_json
        .iter()
        .map(|r| serde_json::from_str::<Vec<serde_json::Value>>(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Other(format!("the coordinator sent a malformed row: {e}")))?;
    Ok(crate::query::QueryResult {
        columns: reply.columns,
        column_types: reply.column_types,
        rows,
    })
}

/// Runs `testfleet sql`: a read-only query on one coordinator's DuckDB copy.
pub async fn sql(
    remote: &Remote,
    sql: &str,
    consistent: bool,
    output: Output,
) -> Result<String, CliError> {
    crate::query::check_read_only(sql).map_err(|e| CliError::Usage(e.to_string()))?;
    let result = query_result(remote, sql, consistent).await?;
    Ok(render(&result, output))
}

/// A query's answer as a table or a JSON array of objects.
pub fn render(result: &crate::query::QueryResult, output: Output) -> String {
    match output {
        Output::Table => crate::query::render_table(result),
        Output::Json => crate::query::render_json(result),
    }
}

/// Formats rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count())));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
