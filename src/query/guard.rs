//! The read-only guard: decides from the SQL text alone whether a query may run.
//!
//! The guard is an allow-list, not a deny-list: after stripping comments and whitespace the
//! text must be exactly one statement that starts with a read keyword (`SELECT`, `WITH`,
//! `FROM`, `VALUES`, `TABLE`, `SHOW`, `DESCRIBE`, `SUMMARIZE`, `EXPLAIN` of such a statement,
//! or `PRAGMA table_info(...)` / `PRAGMA show_tables`). Everything else is refused.
//!
//! Counting statements is the delicate part: `duckdb::Connection::prepare` *executes* every
//! statement but the last, so a `;` the guard fails to see is a write that runs. A `;` hides
//! from a lexer inside string literals, quoted identifiers and comments, so wherever DuckDB's
//! lexer and this one could disagree about where such a region ends, this one refuses rather
//! than guesses:
//!
//! * `--` comments end at the first `\n` or `\r` (as in PostgreSQL's lexer, which DuckDB's
//!   derives from); a lone `\r` ending one is refused, in case a lexer ends it only at `\n`.
//! * A `/* */` comment containing `/*` is refused: PostgreSQL nests block comments, other
//!   lexers do not, and the two would end the comment in different places.
//! * `'...'` strings and `"..."` identifiers follow the SQL standard (a doubled quote escapes
//!   it); DuckDB treats backslashes in them literally. An escape string `E'...'` containing a
//!   backslash is refused, since there `\'` would not end the string.
//! * `$` outside strings and comments is refused: it starts dollar-quoted strings
//!   (`$tag$...$tag$`) and parameters, neither of which a one-shot read query needs.
//!
//! [`run_query`](super::run_query) adds two checks the text alone cannot give: DuckDB's own
//! parser must see exactly one `SELECT` statement, and the statement runs inside a
//! `READ ONLY` transaction that is rolled back.

use std::ops::Range;

use super::{QueryError, Refusal};

/// Leading keywords that start a plain query (a DuckDB `SELECT` statement).
const QUERY_KEYWORDS: &[&str] = &["SELECT", "WITH", "FROM", "VALUES", "TABLE"];

/// Leading keywords that describe or summarise a table or query.
const DESCRIBE_KEYWORDS: &[&str] = &["SHOW", "DESCRIBE", "SUMMARIZE"];

/// `PRAGMA`s that only read the catalog.
const READ_PRAGMAS: &[&str] = &["table_info", "show_tables"];

/// Leading keywords of statements that change the database, its settings or the session;
/// named so the refusal can say "changes state" rather than "not understood".
const WRITE_KEYWORDS: &[&str] = &[
    "ABORT",
    "ALTER",
    "ANALYZE",
    "ATTACH",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "COMMENT",
    "COMMIT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DELETE",
    "DETACH",
    "DROP",
    "END",
    "EXECUTE",
    "EXPORT",
    "FORCE",
    "GRANT",
    "IMPORT",
    "INSERT",
    "INSTALL",
    "LOAD",
    "MERGE",
    "PREPARE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SET",
    "START",
    "TRUNCATE",
    "UPDATE",
    "UPSERT",
    "USE",
    "VACUUM",
];

/// Keywords that turn a `WITH ...` prefix into a data-modifying statement when they appear
/// outside parentheses.
const DML_KEYWORDS: &[&str] = &["INSERT", "UPDATE", "DELETE", "MERGE"];

/// Functions that change state even inside a `SELECT`.
const WRITING_FUNCTIONS: &[&str] = &["nextval"];

/// What the guard found: which part of the text DuckDB's parser must confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Checked {
    /// A plain query starting at this byte offset; DuckDB's parser must find exactly one
    /// `SELECT` statement from there to the end of the text.
    Query(usize),
    /// A statement whose grammar the guard checked completely (`PRAGMA`, `SHOW TABLES`, ...).
    Complete,
}

/// Refuses anything but a single read statement; see the module docs for the rules.
///
/// This is pure: it looks at the text only. [`run_query`](super::run_query) calls it too,
/// then asks DuckDB's parser to confirm.
pub fn check_read_only(sql: &str) -> Result<(), QueryError> {
    classify(sql).map(|_| ()).map_err(QueryError::Refused)
}

/// The guard proper: the statement's shape, or why it is refused.
pub(super) fn classify(sql: &str) -> Result<Checked, Refusal> {
    let tokens = lex(sql)?;
    let end = tokens
        .iter()
        .position(|t| t.kind == Kind::Semicolon)
        .unwrap_or(tokens.len());
    if let Some(extra) = tokens.get(end + 1) {
        return Err(Refusal::MultipleStatements {
            offset: extra.span.start,
        });
    }
    let statement = &tokens[..end];
    if statement.is_empty() {
        return Err(Refusal::Empty);
    }
    for token in statement {
        if let Kind::Word = token.kind {
            let word = &sql[token.span.clone()];
            if let Some(f) = WRITING_FUNCTIONS
                .iter()
                .find(|f| f.eq_ignore_ascii_case(word))
            {
                return Err(Refusal::WritingFunction {
                    function: (*f).to_owned(),
                });
            }
        }
    }
    classify_statement(sql, statement, true)
}

/// Classifies one statement's tokens; `allow_explain` is false inside an `EXPLAIN`.
fn classify_statement(
    sql: &str,
    tokens: &[Token],
    allow_explain: bool,
) -> Result<Checked, Refusal> {
    // `(SELECT 1) UNION (SELECT 2)` starts with parentheses.
    let first = tokens
        .iter()
        .find(|t| t.kind != Kind::Punct('('))
        .ok_or(Refusal::Empty)?;
    let keyword = match first.kind {
        Kind::Word => sql[first.span.clone()].to_ascii_uppercase(),
        _ => {
            return Err(Refusal::NotARead {
                keyword: sql[first.span.clone()].to_owned(),
            });
        }
    };
    let start = tokens[0].span.start;
    let paren_first = tokens[0].kind == Kind::Punct('(');
    match keyword.as_str() {
        k if QUERY_KEYWORDS.contains(&k) => {
            if k == "WITH" {
                refuse_dml_at_top_level(sql, tokens)?;
            }
            Ok(Checked::Query(start))
        }
        _ if paren_first => Err(Refusal::NotARead { keyword }),
        k if DESCRIBE_KEYWORDS.contains(&k) => classify_describe(sql, &tokens[1..]),
        "EXPLAIN" if allow_explain => {
            let mut rest = &tokens[1..];
            if let Some(t) = rest.first()
                && t.kind == Kind::Word
                && ["ANALYZE", "ANALYSE"]
                    .contains(&sql[t.span.clone()].to_ascii_uppercase().as_str())
            {
                rest = &rest[1..];
            }
            // DuckDB's parser then checks the explained query alone (from its start).
            classify_statement(sql, rest, false)
        }
        "PRAGMA" => classify_pragma(sql, &tokens[1..]),
        k if WRITE_KEYWORDS.contains(&k) => Err(Refusal::Write { keyword }),
        _ => Err(Refusal::NotARead { keyword }),
    }
}

/// `SHOW`, `DESCRIBE` and `SUMMARIZE` take a table name, a query, or (`SHOW`) a few fixed
/// words; a query goes on to DuckDB's parser, the rest is checked here completely.
fn classify_describe(sql: &str, rest: &[Token]) -> Result<Checked, Refusal> {
    let first_word = rest
        .iter()
        .find(|t| t.kind != Kind::Punct('('))
        .filter(|t| t.kind == Kind::Word)
        .map(|t| sql[t.span.clone()].to_ascii_uppercase());
    if let Some(word) = &first_word
        && QUERY_KEYWORDS.contains(&word.as_str())
    {
        return classify_statement(sql, rest, false);
    }
    // A (possibly qualified) name, or SHOW's `TABLES`, `ALL TABLES`, `DATABASES`.
    if is_qualified_name(rest) || is_words(sql, rest, &["ALL", "TABLES"]) {
        Ok(Checked::Complete)
    } else {
        Err(Refusal::Unsupported {
            what: "this form of SHOW/DESCRIBE/SUMMARIZE; give a table name or a query".to_owned(),
        })
    }
}

/// Only `PRAGMA show_tables` and `PRAGMA table_info(<name or 'name'>)`.
fn classify_pragma(sql: &str, rest: &[Token]) -> Result<Checked, Refusal> {
    let name = match rest.first() {
        Some(t) if t.kind == Kind::Word => sql[t.span.clone()].to_ascii_lowercase(),
        _ => {
            return Err(Refusal::Pragma {
                name: String::new(),
            });
        }
    };
    let args = &rest[1..];
    let ok = match name.as_str() {
        "show_tables" => args.is_empty(),
        "table_info" => {
            args.len() >= 3
                && args[0].kind == Kind::Punct('(')
                && args[args.len() - 1].kind == Kind::Punct(')')
                && {
                    let inner = &args[1..args.len() - 1];
                    matches!(inner, [t] if t.kind == Kind::String) || is_qualified_name(inner)
                }
        }
        _ => false,
    };
    if ok && READ_PRAGMAS.contains(&name.as_str()) {
        Ok(Checked::Complete)
    } else {
        Err(Refusal::Pragma { name })
    }
}

/// After `WITH`, a data-modifying statement shows as a DML keyword outside parentheses.
fn refuse_dml_at_top_level(sql: &str, tokens: &[Token]) -> Result<(), Refusal> {
    let mut depth = 0usize;
    for token in tokens {
        match token.kind {
            Kind::Punct('(') => depth += 1,
            Kind::Punct(')') => depth = depth.saturating_sub(1),
            Kind::Word if depth == 0 => {
                let word = sql[token.span.clone()].to_ascii_uppercase();
                if DML_KEYWORDS.contains(&word.as_str()) {
                    return Err(Refusal::Write { keyword: word });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `name`, `"name"`, `schema.name`, `db.schema.name`, in any mix of quoted and bare parts.
fn is_qualified_name(tokens: &[Token]) -> bool {
    if tokens.is_empty() || tokens.len().is_multiple_of(2) {
        return false;
    }
    tokens.iter().enumerate().all(|(i, t)| {
        if i % 2 == 0 {
            matches!(t.kind, Kind::Word | Kind::QuotedIdent)
        } else {
            t.kind == Kind::Punct('.')
        }
    })
}

/// True when `tokens` are words equal to a suffix of `expected`, e.g. `TABLES` or
/// `ALL TABLES` against `["ALL", "TABLES"]`.
fn is_words(sql: &str, tokens: &[Token], expected: &[&str]) -> bool {
    !tokens.is_empty()
        && tokens.len() <= expected.len()
        && tokens
            .iter()
            .zip(&expected[expected.len() - tokens.len()..])
            .all(|(t, e)| t.kind == Kind::Word && sql[t.span.clone()].eq_ignore_ascii_case(e))
}

/// The kinds of token the guard distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A keyword, bare identifier or number.
    Word,
    /// A `'...'` string literal (any prefix such as `E` is a separate word).
    String,
    /// A `"..."` quoted identifier.
    QuotedIdent,
    /// A statement separator.
    Semicolon,
    /// Any other character outside strings and comments.
    Punct(char),
}

/// One token and where it is in the text.
#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    span: Range<usize>,
}

/// Splits SQL into tokens, dropping whitespace and comments; see the module docs for why
/// each rule is as strict as it is.
fn lex(sql: &str) -> Result<Vec<Token>, Refusal> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n' || b == b'\r')
                    .map_or(bytes.len(), |p| i + p);
                if bytes.get(i) == Some(&b'\r') && bytes.get(i + 1) != Some(&b'\n') {
                    return Err(Refusal::Unsupported {
                        what: "a `--` comment ended by a lone carriage return".to_owned(),
                    });
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let close = sql[i + 2..]
                    .find("*/")
                    .ok_or(Refusal::Unterminated { what: "comment" })?;
                if sql[i + 2..i + 2 + close].contains("/*") {
                    return Err(Refusal::Unsupported {
                        what: "nested /* comments */".to_owned(),
                    });
                }
                i = i + 2 + close + 2;
            }
            b'\'' => {
                i = quoted_end(bytes, i, b'\'').ok_or(Refusal::Unterminated {
                    what: "string literal",
                })?;
                if is_escape_prefix(sql, &tokens, start) && sql[start..i].contains('\\') {
                    return Err(Refusal::Unsupported {
                        what: "backslash escapes in E'...' strings; use a standard '...' \
                               string (a doubled '' is a quote)"
                            .to_owned(),
                    });
                }
                tokens.push(Token {
                    kind: Kind::String,
                    span: start..i,
                });
            }
            b'"' => {
                i = quoted_end(bytes, i, b'"').ok_or(Refusal::Unterminated {
                    what: "quoted identifier",
                })?;
                tokens.push(Token {
                    kind: Kind::QuotedIdent,
                    span: start..i,
                });
            }
            b'$' => {
                return Err(Refusal::Unsupported {
                    what: "`$` (dollar-quoted strings and parameters)".to_owned(),
                });
            }
            b';' => {
                i += 1;
                tokens.push(Token {
                    kind: Kind::Semicolon,
                    span: start..i,
                });
            }
            _ if is_word_byte(c) => {
                while i < bytes.len() && is_word_byte(bytes[i]) {
                    i += 1;
                }
                tokens.push(Token {
                    kind: Kind::Word,
                    span: start..i,
                });
            }
            _ => {
                // Any other character, taken whole (it may be multi-byte).
                let ch = sql[i..].chars().next().unwrap_or('\u{fffd}');
                i += ch.len_utf8().max(1);
                tokens.push(Token {
                    kind: Kind::Punct(ch),
                    span: start..i,
                });
            }
        }
    }
    Ok(tokens)
}

/// Letters, digits, `_`, and every byte of a non-ASCII character (identifiers may be
/// Unicode; treating such bytes as word bytes never splits a character).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Index just past the closing `quote` of the region opening at `open`, where a doubled
/// quote stands for itself; `None` if it never closes.
fn quoted_end(bytes: &[u8], open: usize, quote: u8) -> Option<usize> {
    let mut i = open + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// True when the string at `start` is directly preceded by an `E`/`e` word, which makes it
/// an escape string.
fn is_escape_prefix(sql: &str, tokens: &[Token], start: usize) -> bool {
    tokens.last().is_some_and(|t| {
        t.kind == Kind::Word && t.span.end == start && sql[t.span.clone()].eq_ignore_ascii_case("e")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queries the guard lets through.
    const ALLOWED: &[&str] = &[
        "SELECT 1",
        "select * from raft_meta",
        "  SELECT 1 ;  ",
        "SELECT 1; -- trailing comment",
        "SELECT 1; /* trailing block */",
        "-- leading comment\nSELECT 1",
        "/* leading */ SELECT 1",
        "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
        "FROM raft_meta",
        "VALUES (1, 'a'), (2, 'b')",
        "TABLE raft_meta",
        "(SELECT 1) UNION (SELECT 2)",
        "SHOW TABLES",
        "SHOW ALL TABLES",
        "SHOW raft_meta",
        "DESCRIBE raft_meta",
        "DESCRIBE main.raft_meta",
        "DESCRIBE SELECT 1 AS x",
        "SUMMARIZE raft_meta",
        "SUMMARIZE SELECT * FROM range(10)",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "PRAGMA table_info('raft_meta')",
        "PRAGMA table_info(raft_meta)",
        "pragma show_tables",
        "SELECT 'a;b' AS semicolon_in_string",
        "SELECT 'it''s; fine'",
        "SELECT \"odd;name\" FROM (SELECT 1 AS \"odd;name\")",
        "SELECT 1 -- comment with ; inside",
        "SELECT 1 -- windows line end\r\n",
        "SELECT /* ; */ 1",
        "SELECT 'back\\slash; is literal'",
        "SELECT E'no backslash here'",
        "SELECT update_count, deleted FROM t",
        "SELECT 'INSERT INTO t VALUES (1)'",
        "SELECT 'é;ü' AS ünïcode",
    ];

    /// Queries the guard refuses.
    const REFUSED: &[&str] = &[
        "",
        "   ",
        "-- only a comment",
        ";",
        "SELECT 1; SELECT 2",
        "SELECT 1;;",
        "SELECT 1; DROP TABLE raft_meta",
        "SELECT 1 -- c\r; DROP TABLE raft_meta",
        "PRAGMA table_info --\r('\n(x); DROP TABLE t; -- ')",
        "PRAGMA table_info /* /* */ (' */ (x); DROP TABLE t; -- ')",
        "SELECT 1 /* a /* b */ ; DROP TABLE raft_meta; -- */",
        "SELECT 'unterminated",
        "SELECT \"unterminated",
        "SELECT /* unterminated",
        "SELECT E'\\''; DROP TABLE raft_meta; -- '",
        "SELECT $$ ' $$; DROP TABLE raft_meta; -- '",
        "SELECT $1",
        "INSERT INTO t VALUES (1)",
        "insert into t values (1)",
        "UPDATE t SET x = 1",
        "DELETE FROM t",
        "CREATE TABLE t (x INT)",
        "DROP TABLE t",
        "ALTER TABLE t ADD COLUMN y INT",
        "COPY t TO '/tmp/t.csv'",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "ATTACH '/tmp/other.duckdb' AS other",
        "DETACH other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 64",
        "RESET threads",
        "CALL pragma_version()",
        "EXPORT DATABASE '/tmp/dump'",
        "IMPORT DATABASE '/tmp/dump'",
        "CHECKPOINT",
        "VACUUM",
        "BEGIN",
        "COMMIT",
        "TRUNCATE t",
        "USE other",
        "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
        "WITH x AS (SELECT 1) DELETE FROM t",
        "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
        "EXPLAIN ANALYZE DELETE FROM t",
        "EXPLAIN EXPLAIN SELECT 1",
        "PRAGMA enable_profiling",
        "PRAGMA threads = 8",
        "PRAGMA table_info('t'); DROP TABLE t",
        "PRAGMA table_info('t') extra",
        "SELECT nextval('seq')",
        "DESCRIBE t; DROP TABLE t",
        "SHOW x y z",
        "(INSERT INTO t VALUES (1))",
        "'SELECT 1'",
        "PIVOT t ON x",
    ];

    #[test]
    fn allowed_queries_pass() {
        for sql in ALLOWED {
            assert!(
                classify(sql).is_ok(),
                "should allow {sql:?}: {:?}",
                classify(sql)
            );
        }
    }

    #[test]
    fn refused_queries_fail() {
        for sql in REFUSED {
            assert!(classify(sql).is_err(), "should refuse {sql:?}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let cases: &[(&str, Refusal)] = &[
            ("", Refusal::Empty),
            (
                "SELECT 1; SELECT 2",
                Refusal::MultipleStatements { offset: 10 },
            ),
            (
                "insert into t values (1)",
                Refusal::Write {
                    keyword: "INSERT".into(),
                },
            ),
            (
                "WITH x AS (SELECT 1) DELETE FROM t",
                Refusal::Write {
                    keyword: "DELETE".into(),
                },
            ),
            (
                "EXPLAIN ANALYZE UPDATE t SET x = 1",
                Refusal::Write {
                    keyword: "UPDATE".into(),
                },
            ),
            (
                "PIVOT t ON x",
                Refusal::NotARead {
                    keyword: "PIVOT".into(),
                },
            ),
            (
                "PRAGMA threads = 8",
                Refusal::Pragma {
                    name: "threads".into(),
                },
            ),
            (
                "SELECT nextval('s')",
                Refusal::WritingFunction {
                    function: "nextval".into(),
                },
            ),
            (
                "SELECT 'open",
                Refusal::Unterminated {
                    what: "string literal",
                },
            ),
        ];
        for (sql, expected) in cases {
            assert_eq!(classify(sql).as_ref(), Err(expected), "{sql:?}");
        }
    }

    #[test]
    fn the_message_says_sql_only_reads() {
        let message = check_read_only("DROP TABLE t").unwrap_err().to_string();
        assert!(message.contains("DROP"), "{message}");
        assert!(message.contains("only reads"), "{message}");
        assert!(message.contains("CLI commands"), "{message}");
    }

    #[test]
    fn queries_are_handed_to_the_parser_with_their_span() {
        assert_eq!(classify("  SELECT 1 ; "), Ok(Checked::Query(2)));
        assert_eq!(classify("(SELECT 1)"), Ok(Checked::Query(0)));
        assert_eq!(classify("EXPLAIN SELECT 1"), Ok(Checked::Query(8)));
        assert_eq!(classify("DESCRIBE SELECT 1"), Ok(Checked::Query(9)));
        assert_eq!(classify("SHOW TABLES"), Ok(Checked::Complete));
        assert_eq!(classify("PRAGMA show_tables"), Ok(Checked::Complete));
    }
}
