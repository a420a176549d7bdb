//! The sandbox and the limits of `run_query`, against the store's real database settings
//! (`Store::open_in_memory`, which opens DuckDB the way a coordinator does).

use std::time::{Duration, Instant};

use super::*;
use crate::state::rows::RowBatch;
use crate::state::store::{RaftMeta, Store};

/// A store and a reader on it, as a coordinator's `Query` RPC has them.
fn store_and_reader() -> (Store, Connection) {
    let store = Store::open_in_memory().expect("open the store");
    let reader = store.reader().expect("clone a reader");
    (store, reader)
}

fn assert_no_open_transaction(conn: &Connection) {
    conn.execute_batch("BEGIN TRANSACTION; ROLLBACK")
        .expect("the connection must not be left inside a transaction");
}

fn assert_sandboxed(conn: &Connection, sql: &str) {
    match run_query(conn, sql) {
        Err(e @ QueryError::Sandboxed { .. }) => {
            let text = e.to_string();
            assert!(text.contains("external access"), "{sql}: {text}");
            assert!(text.contains("query the tables"), "{sql}: {text}");
        }
        other => panic!("{sql} should be refused by the sandbox, got {other:?}"),
    }
    assert_no_open_transaction(conn);
}

#[test]
fn every_file_reading_function_is_refused() {
    let (_store, conn) = store_and_reader();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("data.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let csv = csv.display().to_string();
    let d = dir.path().display().to_string();
    for sql in [
        "SELECT * FROM read_text('/etc/passwd')".to_string(),
        "SELECT * FROM read_text('/etc/hostname')".to_string(),
        "SELECT * FROM read_blob('/etc/hostname')".to_string(),
        "SELECT * FROM glob('/*')".to_string(),
        format!("SELECT * FROM glob('{d}/*')"),
        "SELECT * FROM read_csv('/etc/hostname')".to_string(),
        format!("SELECT * FROM read_csv('{csv}')"),
        format!("SELECT * FROM read_csv_auto('{csv}')"),
        format!("SELECT * FROM '{csv}'"),
        format!("SELECT * FROM sniff_csv('{csv}')"),
        format!("SELECT * FROM read_parquet('{csv}')"),
        format!("SELECT * FROM parquet_metadata('{csv}')"),
        format!("SELECT * FROM read_json('{csv}')"),
        format!("SELECT * FROM read_json_auto('{csv}')"),
        format!("SELECT * FROM read_ndjson_objects('{csv}')"),
        format!("WITH t AS (SELECT * FROM read_text('{csv}')) SELECT content FROM t"),
        format!("SELECT (SELECT content FROM read_text('{csv}'))"),
    ] {
        assert_sandboxed(&conn, &sql);
    }
}

#[test]
fn the_sandbox_cannot_be_switched_off_from_a_query() {
    let (_store, conn) = store_and_reader();
    for sql in [
        "SET enable_external_access = true",
        "SET GLOBAL lock_configuration = false",
        "RESET enable_external_access",
    ] {
        assert!(
            matches!(run_query(&conn, sql), Err(QueryError::Refused(_))),
            "{sql}"
        );
    }
    // Even past the guard, DuckDB itself refuses: the configuration is locked.
    let err = conn
        .execute_batch("SET enable_external_access = true")
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("lock"), "{err}");
    let rows = run_query(
        &conn,
        "SELECT current_setting('enable_external_access')::VARCHAR, \
                current_setting('autoinstall_known_extensions')::VARCHAR, \
                current_setting('autoload_known_extensions')::VARCHAR, \
                current_setting('lock_configuration')::VARCHAR",
    )
    .unwrap()
    .rows;
    assert_eq!(
        rows,
        vec![vec![
            Json::from("false"),
            Json::from("false"),
            Json::from("false"),
            Json::from("true")
        ]]
    );
}

/// Every file under DuckDB's default extension directory (`~/.duckdb/extensions`).
fn extension_files() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        walk(
            &std::path::Path::new(&home).join(".duckdb/extensions"),
            &mut files,
        );
    }
    files.sort();
    files
}

#[test]
fn a_url_read_is_refused_without_a_download() {
    let (_store, conn) = store_and_reader();
    let before = extension_files();
    for sql in [
        "SELECT * FROM read_csv('https://example.com/data.csv')",
        "SELECT * FROM 'http://example.com/data.csv'",
        "SELECT * FROM read_parquet('s3://bucket/data.parquet')",
        "SELECT * FROM read_text('https://example.com/')",
        "SELECT * FROM read_json('https://example.com/data.json')",
    ] {
        let started = Instant::now();
        let err = run_query(&conn, sql).unwrap_err();
        // A download would take time and speak of it; a refusal is immediate.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{sql}: took {:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(
            matches!(err, QueryError::Sandboxed { .. }),
            "{sql}: {err:?}"
        );
        for word in ["download", "HTTP Error", "Failed to install"] {
            assert!(!text.contains(word), "{sql}: {text}");
        }
        assert_no_open_transaction(&conn);
    }
    // Nothing was installed: the extension directory is as it was (DuckDB cannot even list
    // it now, which is why it is read here and not through `duckdb_extensions()`).
    assert_eq!(extension_files(), before, "an extension was downloaded");
}

#[test]
fn a_long_query_is_interrupted_at_the_timeout_and_the_writer_goes_on() {
    let (mut store, conn) = store_and_reader();
    let limits = Limits {
        timeout: Duration::from_millis(1500),
        ..Limits::default()
    };
    let long = std::thread::spawn(move || {
        let started = Instant::now();
        // 10¹⁸ rows: it never ends by itself (a plain range(10⁹) count finished inside the
        // limit once on a quiet machine).
        let result = run_query_with(
            &conn,
            "SELECT count(*) FROM range(1000000000) a, range(1000000000) b",
            limits,
        );
        (result, started.elapsed(), conn)
    });
    // The writer commits while the query runs, without waiting for it.
    for index in 1..=20u64 {
        let started = Instant::now();
        let meta = RaftMeta {
            last_applied_index: Some(index),
            last_applied_json: None,
            membership_json: "{}".to_string(),
        };
        store.write(RowBatch::default(), &meta).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "a commit took {:?} during the query",
            started.elapsed()
        );
    }
    let (result, elapsed, conn) = long.join().unwrap();
    match result {
        Err(e @ QueryError::TimedOut { .. }) => {
            let text = e.to_string();
            assert!(text.contains("1500 ms"), "{text}");
            assert!(text.contains("LIMIT"), "{text}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        elapsed >= limits.timeout && elapsed < limits.timeout + Duration::from_secs(5),
        "interrupted after {elapsed:?}"
    );
    // The connection is usable at once, outside any transaction, and sees the writes.
    assert_no_open_transaction(&conn);
    let rows = run_query(&conn, "SELECT last_applied_index FROM raft_meta")
        .unwrap()
        .rows;
    assert_eq!(rows, vec![vec![Json::from(20)]]);
}

#[test]
fn an_oversized_answer_is_refused_with_the_limit_named() {
    let (_store, conn) = store_and_reader();
    // 5000 rows of 1000 characters: about 5 MB as JSON.
    let err = run_query(&conn, "SELECT repeat('x', 1000) FROM range(5000)").unwrap_err();
    assert!(
        matches!(err, QueryError::TooLarge { limit: MAX_BYTES }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&MAX_BYTES.to_string()), "{text}");
    assert!(text.contains("add a LIMIT"), "{text}");
    assert_no_open_transaction(&conn);
    // Under the cap it is answered in full.
    let fits = run_query(&conn, "SELECT repeat('x', 1000) FROM range(2000)").unwrap();
    assert_eq!(fits.rows.len(), 2000);
    // The cap counts the JSON text: `["ab"]` is 6 bytes, plus the name and type.
    let exact = Limits {
        max_bytes: "s".len() + "VARCHAR".len() + r#"["ab"]"#.len(),
        ..Limits::default()
    };
    assert!(run_query_with(&conn, "SELECT 'ab' AS s", exact).is_ok());
    let under = Limits {
        max_bytes: exact.max_bytes - 1,
        ..exact
    };
    assert!(matches!(
        run_query_with(&conn, "SELECT 'ab' AS s", under),
        Err(QueryError::TooLarge { .. })
    ));
}
