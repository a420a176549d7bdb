//! `run_query` against a real in-memory DuckDB: every type family, the checks, the limits.

use super::*;
use serde_json::json;

/// An in-memory database, sized like a test should be, with one small table.
fn db() -> Connection {
    let conn = Connection::open_in_memory().expect("open in-memory DuckDB");
    conn.execute_batch(
        "SET threads = 1;
         SET memory_limit = '256MB';
         CREATE TABLE raft_meta (key VARCHAR PRIMARY KEY, value BIGINT);
         INSERT INTO raft_meta VALUES ('last_applied', 7), ('term', 2);",
    )
    .expect("create test table");
    conn
}

/// Runs a query that must succeed and returns its only row.
fn one_row(conn: &Connection, sql: &str) -> (Vec<String>, Vec<Json>) {
    let result = run_query(conn, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(result.rows.len(), 1, "{sql}");
    (result.column_types, result.rows.into_iter().next().unwrap())
}

/// Fails unless the connection is outside any transaction (a BEGIN succeeds).
fn assert_no_open_transaction(conn: &Connection) {
    conn.execute_batch("BEGIN TRANSACTION; ROLLBACK")
        .expect("the connection must not be left inside a transaction");
}

fn raft_meta_count(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM raft_meta", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn selects_rows_with_names_and_types() {
    let conn = db();
    let result = run_query(&conn, "SELECT key, value FROM raft_meta ORDER BY key").unwrap();
    assert_eq!(result.columns, ["key", "value"]);
    assert_eq!(result.column_types, ["VARCHAR", "BIGINT"]);
    assert_eq!(
        result.rows,
        vec![
            vec![json!("last_applied"), json!(7)],
            vec![json!("term"), json!(2)]
        ]
    );
    assert_no_open_transaction(&conn);
}

#[test]
fn integers() {
    let conn = db();
    let (types, row) = one_row(
        &conn,
        "SELECT -1::TINYINT, -2::SMALLINT, -3::INTEGER, -4::BIGINT,
                1::UTINYINT, 2::USMALLINT, 3::UINTEGER, 18446744073709551615::UBIGINT,
                5::HUGEINT, 170141183460469231731687303715884105727::HUGEINT,
                340282366920938463463374607431768211455::UHUGEINT, NULL::INTEGER",
    );
    assert_eq!(
        types,
        [
            "TINYINT",
            "SMALLINT",
            "INTEGER",
            "BIGINT",
            "UTINYINT",
            "USMALLINT",
            "UINTEGER",
            "UBIGINT",
            "HUGEINT",
            "HUGEINT",
            "UHUGEINT",
            "INTEGER"
        ]
    );
    assert_eq!(
        row,
        [
            json!(-1),
            json!(-2),
            json!(-3),
            json!(-4),
            json!(1),
            json!(2),
            json!(3),
            json!(u64::MAX),
            json!(5),
            json!("170141183460469231731687303715884105727"),
            json!("340282366920938463463374607431768211455"),
            Json::Null
        ]
    );
}

#[test]
fn floats_and_decimals() {
    let conn = db();
    let (types, row) = one_row(
        &conn,
        "SELECT 1.5::FLOAT, 2.25::DOUBLE, 'NaN'::DOUBLE, '-inf'::DOUBLE,
                123.45::DECIMAL(5,2), -0.001::DECIMAL(4,3),
                12345678901234567.89::DECIMAL(19,2)",
    );
    assert_eq!(
        types,
        [
            "FLOAT",
            "DOUBLE",
            "DOUBLE",
            "DOUBLE",
            "DECIMAL(5,2)",
            "DECIMAL(4,3)",
            "DECIMAL(19,2)"
        ]
    );
    assert_eq!(
        row,
        [
            json!(1.5),
            json!(2.25),
            json!("NaN"),
            json!("-Infinity"),
            json!(123.45),
            json!(-0.001),
            json!("12345678901234567.89")
        ]
    );
}

#[test]
fn text_like_types() {
    let conn = db();
    conn.execute_batch("CREATE TYPE mood AS ENUM ('happy', 'sad')")
        .unwrap();
    let (types, row) = one_row(
        &conn,
        "SELECT true, 'héllo', 'sad'::mood,
                '6f1b9d3e-8c1a-4b7e-9a55-0a2c4d6e8f10'::UUID, '\\xAA\\x00'::BLOB",
    );
    assert_eq!(types, ["BOOLEAN", "VARCHAR", "ENUM", "UUID", "BLOB"]);
    assert_eq!(
        row,
        [
            json!(true),
            json!("héllo"),
            json!("sad"),
            json!("6f1b9d3e-8c1a-4b7e-9a55-0a2c4d6e8f10"),
            json!("aa00")
        ]
    );
}

#[test]
fn json_columns_are_parsed() {
    let conn = db();
    conn.execute_batch(
        "CREATE TABLE events (details JSON);
         INSERT INTO events VALUES ('{\"worker\": \"w1\", \"codes\": [1, 2]}');",
    )
    .unwrap();
    let (types, row) = one_row(&conn, "SELECT details, [details] AS wrapped FROM events");
    assert_eq!(types, ["JSON", "JSON[]"]);
    assert_eq!(row[0], json!({"worker": "w1", "codes": [1, 2]}));
    assert_eq!(row[1], json!([{"worker": "w1", "codes": [1, 2]}]));
}

#[test]
fn dates_times_and_intervals() {
    let conn = db();
    let (types, row) = one_row(
        &conn,
        "SELECT DATE '2024-02-29', TIME '12:34:56.5', TIMESTAMP '2024-02-29 01:02:03.000004',
                TIMESTAMP_S '2024-02-29 01:02:03', TIMESTAMP_MS '2024-02-29 01:02:03.250',
                TIMESTAMP_NS '2024-02-29 01:02:03.000000007',
                TIMESTAMPTZ '2024-02-29 01:02:03+00', INTERVAL '1 year 2 months 3 days 4 hours',
                'infinity'::TIMESTAMP, 'epoch'::DATE - 1",
    );
    assert_eq!(
        types,
        [
            "DATE",
            "TIME",
            "TIMESTAMP",
            "TIMESTAMP_S",
            "TIMESTAMP_MS",
            "TIMESTAMP_NS",
            "TIMESTAMP WITH TIME ZONE",
            "INTERVAL",
            "TIMESTAMP",
            "DATE"
        ]
    );
    assert_eq!(
        row,
        [
            json!("2024-02-29"),
            json!("12:34:56.500000"),
            json!("2024-02-29T01:02:03.000004"),
            json!("2024-02-29T01:02:03"),
            json!("2024-02-29T01:02:03.250"),
            json!("2024-02-29T01:02:03.000000007"),
            json!("2024-02-29T01:02:03Z"),
            json!("P1Y2M3DT4H"),
            json!("infinity"),
            json!("1969-12-31")
        ]
    );
}

#[test]
fn nested_types() {
    let conn = db();
    let (types, row) = one_row(
        &conn,
        "SELECT [1, 2, NULL] AS list, [1, 2, 3]::INTEGER[3] AS arr,
                {'name': 'w1', 'slots': 4} AS st,
                MAP {'a': 1, 'b': 2} AS m,
                union_value(num := 2)::UNION(num INTEGER, str VARCHAR) AS u,
                [{'d': DATE '2024-01-01'}] AS deep",
    );
    assert_eq!(
        types,
        [
            "INTEGER[]",
            "INTEGER[3]",
            "STRUCT(name VARCHAR, slots INTEGER)",
            "MAP(VARCHAR, INTEGER)",
            "UNION(num INTEGER, str VARCHAR)",
            "STRUCT(d DATE)[]"
        ]
    );
    assert_eq!(
        row,
        [
            json!([1, 2, null]),
            json!([1, 2, 3]),
            json!({"name": "w1", "slots": 4}),
            json!({"a": 1, "b": 2}),
            json!(2),
            json!([{"d": "2024-01-01"}])
        ]
    );
}

#[test]
fn catalog_reads_work() {
    let conn = db();
    let tables = run_query(&conn, "SHOW TABLES").unwrap();
    assert!(tables.rows.iter().any(|r| r[0] == json!("raft_meta")));
    let described = run_query(&conn, "DESCRIBE raft_meta").unwrap();
    assert_eq!(described.rows.len(), 2);
    let info = run_query(&conn, "PRAGMA table_info('raft_meta')").unwrap();
    assert_eq!(info.rows.len(), 2);
    let plan = run_query(&conn, "EXPLAIN SELECT * FROM raft_meta").unwrap();
    assert!(!plan.rows.is_empty());
    let summary = run_query(&conn, "SUMMARIZE SELECT * FROM raft_meta").unwrap();
    assert_eq!(summary.rows.len(), 2);
    let from_first = run_query(&conn, "FROM raft_meta WHERE value > 5; -- done").unwrap();
    assert_eq!(from_first.rows, vec![vec![json!("last_applied"), json!(7)]]);
}

#[test]
fn writes_are_refused_and_change_nothing() {
    let conn = db();
    for sql in [
        "DELETE FROM raft_meta",
        "SELECT 1; DELETE FROM raft_meta",
        "WITH x AS (SELECT 1) DELETE FROM raft_meta",
        "EXPLAIN ANALYZE DELETE FROM raft_meta",
        "DROP TABLE raft_meta",
    ] {
        let err = run_query(&conn, sql).unwrap_err();
        assert!(matches!(err, QueryError::Refused(_)), "{sql}: {err:?}");
        assert_eq!(raft_meta_count(&conn), 2, "{sql} must not have run");
    }
    assert_no_open_transaction(&conn);
}

#[test]
fn the_parser_confirms_what_the_guard_allowed() {
    let conn = db();
    assert!(confirm_single_select(&conn, "SELECT 1; -- c").is_ok());
    assert!(confirm_single_select(&conn, "SELECT 1 /* c */").is_ok());
    assert!(matches!(
        confirm_single_select(&conn, "SELECT 1; SELECT 2"),
        Err(QueryError::Refused(Refusal::ParserDisagrees { .. }))
    ));
    assert!(matches!(
        confirm_single_select(&conn, "DELETE FROM raft_meta"),
        Err(QueryError::Refused(Refusal::ParserDisagrees { .. }))
    ));
    assert!(matches!(
        confirm_single_select(&conn, "SELEC 1"),
        Err(QueryError::Failed { .. })
    ));
}

#[test]
fn the_read_only_transaction_is_a_backstop() {
    let conn = db();
    conn.execute_batch("CREATE SEQUENCE s").unwrap();
    // Bypass the text guard to show the transaction alone stops a write.
    conn.execute_batch("BEGIN TRANSACTION READ ONLY").unwrap();
    let write = conn.execute_batch("DELETE FROM raft_meta");
    conn.execute_batch("ROLLBACK").unwrap();
    assert!(write.is_err());
    assert_eq!(raft_meta_count(&conn), 2);
    let err = run_query(&conn, "SELECT nextval('s')").unwrap_err();
    assert!(matches!(err, QueryError::Refused(_)), "{err:?}");
}

#[test]
fn errors_are_reported_not_panicked() {
    let conn = db();
    let err = run_query(&conn, "SELECT * FROM no_such_table").unwrap_err();
    match &err {
        QueryError::Failed { message } => assert!(message.contains("no_such_table"), "{message}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_no_open_transaction(&conn);
    let err = run_query(&conn, "SELECT 1 +").unwrap_err();
    assert!(matches!(err, QueryError::Failed { .. }), "{err:?}");
}

#[test]
fn an_open_transaction_is_refused() {
    let conn = db();
    conn.execute_batch("BEGIN TRANSACTION").unwrap();
    let err = run_query(&conn, "SELECT 1").unwrap_err();
    assert!(matches!(err, QueryError::TransactionOpen), "{err:?}");
    conn.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn oversized_results_are_refused() {
    let conn = db();
    let sql = format!("SELECT * FROM range({})", MAX_ROWS + 1);
    let err = run_query(&conn, &sql).unwrap_err();
    assert!(
        matches!(err, QueryError::TooManyRows { limit: MAX_ROWS }),
        "{err:?}"
    );
    let sql = format!("SELECT * FROM range({MAX_ROWS})");
    assert_eq!(run_query(&conn, &sql).unwrap().rows.len(), MAX_ROWS);
}

#[test]
fn renders_a_real_result() {
    let conn = db();
    let result = run_query(&conn, "SELECT key, value FROM raft_meta ORDER BY key").unwrap();
    assert_eq!(
        render_table(&result),
        "     key      | value\n--------------+-------\n last_applied |     7\n term         |     2\n(2 rows)\n"
    );
    assert_eq!(
        render_json(&result),
        "[\n  {\"key\":\"last_applied\",\"value\":7},\n  {\"key\":\"term\",\"value\":2}\n]\n"
    );
}

#[test]
fn bits_and_bignums_match_duckdbs_own_text() {
    let conn = db();
    let result = run_query(
        &conn,
        "SELECT b, b::VARCHAR AS text FROM (VALUES
            (0::BIGNUM), (255::BIGNUM), (256::BIGNUM), (-(1::BIGNUM)), (-(256::BIGNUM)),
            (9223372036854775807::BIGNUM),
            (-(12345678901234567890123456789012345678901234567890::BIGNUM)),
            (1000000000000000000000000000000000000::BIGNUM)) t(b)",
    )
    .unwrap();
    assert_eq!(result.column_types, ["BIGNUM", "VARCHAR"]);
    for row in &result.rows {
        let text = row[1].as_str().unwrap();
        match &row[0] {
            Json::Number(n) => assert_eq!(n.to_string(), text),
            Json::String(s) => assert_eq!(s, text),
            other => panic!("unexpected {other:?} for {text}"),
        }
    }
    let (types, row) = one_row(
        &conn,
        "SELECT '101'::BIT, '0'::BIT, '100000000'::BIT, ['11'::BIT]",
    );
    assert_eq!(types, ["BIT", "BIT", "BIT", "BIT[]"]);
    assert_eq!(
        row,
        [json!("101"), json!("0"), json!("100000000"), json!(["11"])]
    );
}

#[test]
fn nulls_of_every_kind() {
    let conn = db();
    let (types, row) = one_row(
        &conn,
        "SELECT NULL, NULL::JSON, [1, NULL], []::INTEGER[], MAP {}::MAP(VARCHAR, INTEGER),
                {'a': NULL::INTEGER}",
    );
    assert_eq!(
        types,
        [
            "\"NULL\"",
            "JSON",
            "INTEGER[]",
            "INTEGER[]",
            "MAP(VARCHAR, INTEGER)",
            "STRUCT(a INTEGER)"
        ]
    );
    assert_eq!(
        row,
        [
            Json::Null,
            Json::Null,
            json!([1, null]),
            json!([]),
            json!({}),
            json!({"a": null})
        ]
    );
}

#[test]
fn types_that_cannot_be_returned_are_refused_with_a_hint() {
    let conn = db();
    for (sql, type_name) in [
        ("SELECT '12:34:56.123456789'::TIME_NS AS t", "TIME_NS"),
        ("SELECT TIMETZ '12:34:56+02' AS t", "TIME WITH TIME ZONE"),
        ("SELECT [NULL] AS t", "\"NULL\""),
        ("SELECT {'a': NULL} AS t", "\"NULL\""),
        // Untyped empty containers have NULL-typed elements too.
        ("SELECT [] AS t", "\"NULL\""),
    ] {
        match run_query(&conn, sql) {
            Err(QueryError::UnsupportedType {
                column,
                type_name: got,
            }) => {
                assert_eq!(column, "t", "{sql}");
                assert_eq!(got, type_name, "{sql}");
            }
            other => panic!("{sql}: expected UnsupportedType, got {other:?}"),
        }
        assert_no_open_transaction(&conn);
    }
    // The hint works.
    let (_, row) = one_row(&conn, "SELECT TIMETZ '12:34:56+02'::VARCHAR");
    assert_eq!(row, [json!("12:34:56+02")]);
    // VARIANT: the crate itself refuses it, as an error.
    let err = run_query(&conn, "SELECT 1::VARIANT").unwrap_err();
    assert!(matches!(err, QueryError::Failed { .. }), "{err:?}");
}

#[test]
fn escapes_and_comments_are_read_as_duckdb_reads_them() {
    let conn = db();
    // A backslash in a standard string is an ordinary character, as the guard assumes.
    let (_, row) = one_row(&conn, "SELECT 'a\\' AS s -- trailing");
    assert_eq!(row, [json!("a\\")]);
    let (_, row) = one_row(&conn, "SELECT ';' AS \"x;y\" /* ; */");
    assert_eq!(row, [json!(";")]);
    // DuckDB's query() table function accepts only a SELECT.
    let err = run_query(&conn, "SELECT * FROM query('DELETE FROM raft_meta')").unwrap_err();
    assert!(matches!(err, QueryError::Failed { .. }), "{err:?}");
    assert_eq!(raft_meta_count(&conn), 2);
}
