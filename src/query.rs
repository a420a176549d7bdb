//! Read-only SQL over a coordinator's DuckDB state, for `testfleet sql` and the `Query` RPC.
//!
//! Every node holds the same DuckDB tables (ARCHITECTURE.md § The one rule), so any node can
//! answer a query; but only Raft `apply` may change those tables, or the replicas diverge. This
//! module is the gate that keeps `sql` a reader:
//!
//! 1. [`check_read_only`] — an allow-list over the text (`query/guard.rs`): a single statement
//!    starting with a read keyword, with strings, quoted identifiers and comments lexed so a
//!    hidden `;` cannot smuggle in a second statement.
//! 2. [`run_query`] repeats that check, then asks DuckDB's own parser (`json_serialize_sql`)
//!    to confirm that the text is exactly one `SELECT` statement, then runs it inside a
//!    `READ ONLY` transaction that is always rolled back.
//!
//! # The sandbox
//!
//! A `SELECT` can still call table functions that read files (`read_text`, `read_csv`,
//! `read_parquet`, `read_json`, `glob`) or URLs (which would download the `httpfs`
//! extension). The database is opened with DuckDB's own switches against that
//! (`state::store::Store::open`): external access off, no extension installed or loaded on
//! demand, and the configuration locked so that no statement can switch them back. Such a
//! query fails with [`QueryError::Sandboxed`]. The reader shares the writer's database, so
//! the switches are set once for both; DuckDB's own files are not affected.
//!
//! Each query also runs under [`Limits`]: a time limit, after which DuckDB is interrupted
//! ([`QueryError::TimedOut`]), and a cap on the answer's rows ([`QueryError::TooManyRows`])
//! and bytes ([`QueryError::TooLarge`], measured as the JSON text of the rows). An answer
//! over a cap is refused, not truncated, so a reader never mistakes part of an answer for
//! all of it; the error names the limit and says to add a `LIMIT`.
//!
//! Results come back as [`QueryResult`] — column names, DuckDB type names and rows of JSON
//! values — and render as a table ([`render_table`]) or a JSON document ([`render_json`]).
//! Each DuckDB type becomes JSON like this (`query/value.rs`):
//!
//! | DuckDB | JSON |
//! |---|---|
//! | integers up to 64 bits | number |
//! | `HUGEINT` / `UHUGEINT` | number if it fits 64 bits, else a decimal string |
//! | `FLOAT` / `DOUBLE` | number; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings |
//! | `DECIMAL` | number when ≤ 15 significant digits (exact in a double), else a string |
//! | `BOOLEAN`, `VARCHAR`, `ENUM`, `UUID` | boolean / string |
//! | `JSON` | the parsed JSON value (the text itself if it does not parse) |
//! | `BLOB`, `GEOMETRY` (WKB) | lowercase hex string |
//! | `BIT` | string of `0`s and `1`s |
//! | `BIGNUM` | number if it fits 64 bits, else a decimal string |
//! | `DATE`, `TIME`, `TIMESTAMP*` | ISO-8601 string; `TIMESTAMP WITH TIME ZONE` in UTC with `Z` |
//! | `INTERVAL` | ISO-8601 duration string, e.g. `P1Y2M3DT4H5M6.5S` |
//! | `LIST`, `ARRAY` | array |
//! | `STRUCT` | object (serde_json orders its keys alphabetically) |
//! | `MAP` | object keyed by the keys' text |
//! | `UNION` | the value of its active member |
//!
//! A column whose type cannot be returned faithfully (`TIME_NS`, `TIME WITH TIME ZONE`, a
//! `NULL`-typed element inside a list, struct or map) is refused with
//! [`QueryError::UnsupportedType`], which says to cast it to `VARCHAR`; a `VARIANT` column is
//! refused by the `duckdb` crate itself ([`QueryError::Failed`]).
//!
//! The connection passed to [`run_query`] should be the node's dedicated reader connection
//! (`Connection::try_clone` of the state machine's), not one in the middle of an apply.

mod guard;
mod render;
mod value;

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use duckdb::types::Value;
use duckdb::{Connection, InterruptHandle};
use serde_json::Value as Json;

pub use guard::check_read_only;
pub use render::{render_json, render_table};

use guard::Checked;
use value::Shape;

/// The most rows [`run_query`] returns; a larger result is refused rather than truncated,
/// so a reader never mistakes part of an answer for all of it.
pub const MAX_ROWS: usize = 100_000;

/// The most bytes of an answer: its rows as JSON text, with the column names and types. It
/// keeps a `Query` reply under gRPC's default 4 MiB message limit, which the CLI uses.
pub const MAX_BYTES: usize = 3 * 1024 * 1024;

/// How long a query may run by default; DuckDB is interrupted then.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What one query may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time from the start of execution to the last row converted.
    pub timeout: Duration,
    /// Rows in the answer.
    pub max_rows: usize,
    /// Bytes of the answer (see [`MAX_BYTES`]).
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            max_rows: MAX_ROWS,
            max_bytes: MAX_BYTES,
        }
    }
}

/// The outcome of a read-only query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// Column names, in result order (repeats possible, as in SQL).
    pub columns: Vec<String>,
    /// DuckDB's name for each column's type (`BIGINT`, `VARCHAR`, `JSON`, ...).
    pub column_types: Vec<String>,
    /// The rows; each holds one JSON value per column, in column order.
    pub rows: Vec<Vec<Json>>,
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The read-only guard refused the text; nothing ran.
    #[error("refused: {0}; `sql` only reads (use the CLI commands to change state)")]
    Refused(#[from] Refusal),

    /// DuckDB could not parse, bind or run the query (a typo, an unknown table, ...).
    #[error("query failed: {message}")]
    Failed {
        /// DuckDB's message.
        message: String,
    },

    /// A result column has a type that `sql` cannot return faithfully.
    #[error(
        "column `{column}` has type {type_name}, which `sql` cannot return; cast it to \
         VARCHAR in the query (e.g. `SELECT x::VARCHAR`)"
    )]
    UnsupportedType {
        /// The column's name.
        column: String,
        /// The undecodable (sub)type.
        type_name: String,
    },

    /// The result has more rows than [`Limits::max_rows`].
    #[error("the result has more than {limit} rows; add a LIMIT or aggregate")]
    TooManyRows {
        /// The limit that was exceeded.
        limit: usize,
    },

    /// The answer is larger than [`Limits::max_bytes`].
    #[error(
        "the result is too large: more than {limit} bytes as JSON; add a LIMIT, select fewer \
         or shorter columns (e.g. left(text, 200)), or aggregate"
    )]
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },

    /// The query ran past [`Limits::timeout`] and was interrupted.
    #[error(
        "the query ran longer than the limit of {} ms and was stopped; narrow it (WHERE, \
         LIMIT) or aggregate",
        limit.as_millis()
    )]
    TimedOut {
        /// The time limit.
        limit: Duration,
    },

    /// The query tried to read a file or URL, or to load an extension.
    #[error(
        "`sql` reads only this coordinator's own tables: external access (files, URLs) and \
         extensions are disabled on coordinators; query the tables instead (`SHOW TABLES`). \
         DuckDB said: {message}"
    )]
    Sandboxed {
        /// DuckDB's message.
        message: String,
    },

    /// The connection is inside a transaction, so the query cannot get its own read-only
    /// one. A caller bug: queries need a connection of their own.
    #[error(
        "the DuckDB connection is inside a transaction; run queries on a separate connection \
         (Connection::try_clone)"
    )]
    TransactionOpen,
}

/// What the read-only guard refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Nothing but whitespace and comments.
    #[error("the query is empty")]
    Empty,

    /// More than one statement; `offset` is the byte where the second begins.
    #[error("only one statement may run, but more text follows the `;` (at byte {offset})")]
    MultipleStatements {
        /// Byte offset of the first token after the first `;`.
        offset: usize,
    },

    /// A statement that changes data, schema, settings or the session.
    #[error("{keyword} changes state")]
    Write {
        /// The statement's keyword, upper-cased.
        keyword: String,
    },

    /// A statement that is not on the allow-list.
    #[error(
        "`{keyword}` does not start a read; start with SELECT, WITH, FROM, VALUES, TABLE, \
         SHOW, DESCRIBE, SUMMARIZE, EXPLAIN, or PRAGMA table_info/show_tables"
    )]
    NotARead {
        /// The first word (or token) of the statement.
        keyword: String,
    },

    /// A `PRAGMA` other than the two that only read.
    #[error(
        "PRAGMA `{name}` is not allowed; only PRAGMA table_info('<table>') and \
         PRAGMA show_tables"
    )]
    Pragma {
        /// The pragma's name, lower-cased (empty if missing).
        name: String,
    },

    /// A function that changes state even inside a `SELECT`.
    #[error("{function}() changes state")]
    WritingFunction {
        /// The function's name.
        function: String,
    },

    /// A string, identifier or comment that never ends.
    #[error("unterminated {what}")]
    Unterminated {
        /// "string literal", "quoted identifier" or "comment".
        what: &'static str,
    },

    /// The text passed the guard, but DuckDB's parser reads it differently: as several
    /// statements, or as something other than a `SELECT`.
    #[error("DuckDB's parser reads it as {reading}")]
    ParserDisagrees {
        /// What the parser saw instead of one `SELECT`.
        reading: String,
    },

    /// Syntax the guard does not accept because it cannot be sure how DuckDB reads it.
    #[error("{what} is not supported")]
    Unsupported {
        /// The construct.
        what: String,
    },
}

impl From<duckdb::Error> for QueryError {
    fn from(e: duckdb::Error) -> Self {
        QueryError::Failed {
            message: e.to_string(),
        }
    }
}

/// Runs one read-only statement under the default [`Limits`]; see [`run_query_with`].
pub fn run_query(conn: &Connection, sql: &str) -> Result<QueryResult, QueryError> {
    run_query_with(conn, sql, Limits::default())
}

/// Runs one read-only statement and returns its columns, types and rows as JSON values.
///
/// See the module docs for the checks, the sandbox and the limits. The connection must not
/// be inside a transaction ([`QueryError::TransactionOpen`]). Blocking: up to
/// `limits.timeout`, plus the time DuckDB takes to notice the interrupt.
pub fn run_query_with(
    conn: &Connection,
    sql: &str,
    limits: Limits,
) -> Result<QueryResult, QueryError> {
    let checked = guard::classify(sql)?;
    if let Checked::Query(start) = checked {
        confirm_single_select(conn, &sql[start..])?;
    }
    conn.execute_batch("BEGIN TRANSACTION READ ONLY")
        .map_err(|e| {
            // `Connection::is_autocommit` does not see a transaction begun in SQL, so the
            // failed BEGIN is how an open one shows.
            let message = e.to_string();
            if message.contains("within a transaction") {
                QueryError::TransactionOpen
            } else {
                QueryError::Failed { message }
            }
        })?;
    let watchdog = Watchdog::start(conn.interrupt_handle(), limits.timeout);
    let result = fetch(conn, sql, limits, watchdog.deadline);
    let interrupted = watchdog.stop();
    // Always roll back: a read has nothing to keep, and the connection must leave the
    // transaction even when the query failed. An interrupt that landed after the query ended
    // may fail the first attempt; the watchdog is stopped now, so a second one cannot.
    let rollback = conn
        .execute_batch("ROLLBACK")
        .or_else(|_| conn.execute_batch("ROLLBACK"));
    let result = result.map_err(|e| match e {
        QueryError::Failed { .. } if interrupted => QueryError::TimedOut {
            limit: limits.timeout,
        },
        other => other,
    })?;
    rollback?;
    Ok(result)
}

/// Interrupts the connection's query when the time limit passes, from a thread of its own.
struct Watchdog {
    deadline: Instant,
    done: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    fn start(handle: Arc<InterruptHandle>, limit: Duration) -> Watchdog {
        let (done, wait) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || match wait.recv_timeout(limit) {
            Err(RecvTimeoutError::Timeout) => {
                handle.interrupt();
                true
            }
            _ => false,
        });
        Watchdog {
            deadline: Instant::now() + limit,
            done,
            thread,
        }
    }

    /// Stops the watchdog; true if it interrupted the query.
    fn stop(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(false)
    }
}

/// A DuckDB error, with the sandbox's refusals told apart.
fn failed(e: duckdb::Error) -> QueryError {
    let message = e.to_string();
    // Files and URLs: "... file system operations are disabled by configuration". A function
    // of an extension that is not loaded: "... exists in the parquet extension. Please try
    // installing and loading ...: INSTALL parquet; LOAD parquet;".
    let sandbox = message.contains("disabled by configuration")
        || (message.contains(" extension") && message.contains("INSTALL "));
    if sandbox {
        QueryError::Sandboxed { message }
    } else {
        QueryError::Failed { message }
    }
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asks DuckDB's parser whether `sql` is exactly one `SELECT` statement. Parsing runs
/// nothing; `json_serialize_sql` reports an error for any other kind of statement.
fn confirm_single_select(conn: &Connection, sql: &str) -> Result<(), QueryError> {
    let serialized: String = conn.query_row(
        "SELECT json_serialize_sql(?::VARCHAR)::VARCHAR",
        [sql],
        |row| row.get(0),
    )?;
    let parsed: Json = serde_json::from_str(&serialized).map_err(|e| QueryError::Failed {
        message: format!("cannot read DuckDB's parse of the query: {e}"),
    })?;
    if parsed.get("error").and_then(Json::as_bool) == Some(true) {
        let message = parsed
            .get("error_message")
            .and_then(Json::as_str)
            .unwrap_or("unknown parse error");
        // The parser rejects non-SELECT statements with a "not implemented" error; anything
        // else is a syntax error the user should see as such.
        return Err(
            if parsed.get("error_type").and_then(Json::as_str) == Some("not implemented") {
                Refusal::ParserDisagrees {
                    reading: "a statement other than SELECT".to_owned(),
                }
                .into()
            } else {
                QueryError::Failed {
                    message: message.to_owned(),
                }
            },
        );
    }
    let count = parsed
        .get("statements")
        .and_then(Json::as_array)
        .map_or(0, Vec::len);
    match count {
        1 => Ok(()),
        0 => Err(Refusal::Empty.into()),
        n => Err(Refusal::ParserDisagrees {
            reading: format!("{n} statements"),
        }
        .into()),
    }
}

/// Executes `sql` (already checked) and converts the rows, within `limits`.
fn fetch(
    conn: &Connection,
    sql: &str,
    limits: Limits,
    deadline: Instant,
) -> Result<QueryResult, QueryError> {
    let mut stmt = conn.prepare(sql).map_err(failed)?;
    let mut rows = stmt.query([]).map_err(failed)?;
    let Some(stmt) = rows.as_ref() else {
        return Ok(QueryResult {
            columns: Vec::new(),
            column_types: Vec::new(),
            rows: Vec::new(),
        });
    };
    let columns = stmt.column_names();
    let mut column_types = Vec::with_capacity(columns.len());
    let mut shapes = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let logical = stmt.column_logical_type(i);
        let arrow = stmt.column_type(i);
        column_types.push(value::type_name(&logical, Some(&arrow)));
        let shape = value::shape_of(&logical).map_err(|type_name| QueryError::UnsupportedType {
            column: column.clone(),
            type_name,
        })?;
        shapes.push(shape);
    }

    let mut bytes = ByteCount(0);
    for text in columns.iter().chain(&column_types) {
        bytes.0 += text.len();
    }
    let mut out: Vec<Vec<Json>> = Vec::new();
    while let Some(row) = rows.next().map_err(failed)? {
        if out.len() == limits.max_rows {
            return Err(QueryError::TooManyRows {
                limit: limits.max_rows,
            });
        }
        if Instant::now() >= deadline {
            return Err(QueryError::TimedOut {
                limit: limits.timeout,
            });
        }
        let mut values = Vec::with_capacity(shapes.len());
        for (i, shape) in shapes.iter().enumerate() {
            if *shape == Shape::Null {
                // The crate cannot decode a NULL-typed column, and needs not.
                values.push(Json::Null);
                continue;
            }
            let v: Value = row.get_ref(i).map_err(failed)?.to_owned();
            values.push(value::to_json(v, shape));
        }
        serde_json::to_writer(&mut bytes, &values).map_err(|e| QueryError::Failed {
            message: format!("cannot encode a row as JSON: {e}"),
        })?;
        if bytes.0 > limits.max_bytes {
            return Err(QueryError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        out.push(values);
    }
    Ok(QueryResult {
        columns,
        column_types,
        rows: out,
    })
}

#[cfg(test)]
mod sandbox_tests;
#[cfg(test)]
mod tests;
