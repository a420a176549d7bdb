//! Read-only SQL over a coordinator's DuckDB state, for `testfleet sql` and the `Query` RPC.
//!
//! Every node holds the same DuckDB tables (DESIGN.md §1), so any node can answer a query;
//! but only Raft `apply` may change those tables, or the replicas diverge. This module is the
//! gate that keeps `sql` a reader:
//!
//! 1. [`check_read_only`] — an allow-list over the text (`query/guard.rs`): a single statement
//!    starting with a read keyword, with strings, quoted identifiers and comments lexed so a
//!    hidden `;` cannot smuggle in a second statement.
//! 2. [`run_query`] repeats that check, then asks DuckDB's own parser (`json_serialize_sql`)
//!    to confirm that the text is exactly one `SELECT` statement, then runs it inside a
//!    `READ ONLY` transaction that is always rolled back.
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

use duckdb::Connection;
use duckdb::types::Value;
use serde_json::Value as Json;

pub use guard::check_read_only;
pub use render::{render_json, render_table};

use guard::Checked;
use value::Shape;

/// The most rows [`run_query`] returns; a larger result is refused rather than truncated,
/// so a reader never mistakes part of an answer for all of it.
pub const MAX_ROWS: usize = 100_000;

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

    /// The result has more rows than [`MAX_ROWS`].
    #[error("the result has more than {limit} rows; add a LIMIT or aggregate")]
    TooManyRows {
        /// The limit that was exceeded.
        limit: usize,
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

/// Runs one read-only statement and returns its columns, types and rows as JSON values.
///
/// See the module docs for the three checks. The connection must not be inside a
/// transaction ([`QueryError::TransactionOpen`]).
pub fn run_query(conn: &Connection, sql: &str) -> Result<QueryResult, QueryError> {
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
    let result = fetch(conn, sql);
    // Always roll back: a read has nothing to keep, and the connection must leave the
    // transaction even when the query failed.
    let rollback = conn.execute_batch("ROLLBACK");
    let result = result?;
    rollback?;
    Ok(result)
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

/// Executes `sql` (already checked) and converts the rows.
fn fetch(conn: &Connection, sql: &str) -> Result<QueryResult, QueryError> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
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

    let mut out: Vec<Vec<Json>> = Vec::new();
    while let Some(row) = rows.next()? {
        if out.len() == MAX_ROWS {
            return Err(QueryError::TooManyRows { limit: MAX_ROWS });
        }
        let mut values = Vec::with_capacity(shapes.len());
        for (i, shape) in shapes.iter().enumerate() {
            if *shape == Shape::Null {
                // The crate cannot decode a NULL-typed column, and needs not.
                values.push(Json::Null);
                continue;
            }
            let v: Value = row.get_ref(i)?.to_owned();
            values.push(value::to_json(v, shape));
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
mod tests;
