//! Table digests: stable, independent of insertion order, sensitive to every cell.

use super::*;
use crate::state::store::Store;

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn sum(table: &str, columns: &[&str], rows: &[Vec<Cell>]) -> TableSum {
    digest_rows(table, &cols(columns), rows.iter().map(Vec::as_slice))
}

#[test]
fn the_digest_is_sha256_of_the_documented_encoding() {
    // Computed independently (Python's hashlib over the encoding described in the module
    // docs), so a change of the encoding cannot go unnoticed.
    let rows = vec![
        vec![Cell::Text("a".into()), Cell::Int(-1)],
        vec![Cell::Null, Cell::Float(1.5)],
        vec![Cell::Timestamp(7), Cell::Bool(true)],
    ];
    let got = sum("jobs", &["id", "n"], &rows);
    assert_eq!(got.table, "jobs");
    assert_eq!(got.rows, 3);
    assert_eq!(
        got.sha256,
        "25c6d5da2ac320eb93dba8e02bc2e589e8ef77269bf1ff8b90c41d91dcd3e7e3"
    );
}

#[test]
fn one_changed_cell_changes_the_digest() {
    let base = vec![
        vec![
            Cell::Text("t1".into()),
            Cell::Text("passed".into()),
            Cell::Int(1),
        ],
        vec![
            Cell::Text("t2".into()),
            Cell::Text("failed".into()),
            Cell::Int(2),
        ],
    ];
    let reference = sum("tasks", &["id", "status", "attempt"], &base);
    let changes = [
        (1, 1, Cell::Text("passed".into())),
        (0, 2, Cell::Int(3)),
        (0, 2, Cell::Null),
        (1, 0, Cell::Text("t2 ".into())),
        (0, 2, Cell::Timestamp(1)),
        (0, 2, Cell::Float(1.0)),
    ];
    for (row, col, cell) in changes {
        let mut changed = base.clone();
        changed[row][col] = cell.clone();
        let other = sum("tasks", &["id", "status", "attempt"], &changed);
        assert_eq!(other.rows, reference.rows);
        assert_ne!(
            other.sha256, reference.sha256,
            "row {row} column {col} set to {cell:?} left the digest unchanged"
        );
    }
}

#[test]
fn cell_boundaries_types_and_rows_are_part_of_the_digest() {
    let columns = ["a", "b"];
    let pairs = [
        (
            vec![vec![Cell::Text("ab".into()), Cell::Text("c".into())]],
            vec![vec![Cell::Text("a".into()), Cell::Text("bc".into())]],
        ),
        (
            vec![vec![Cell::Null, Cell::Text(String::new())]],
            vec![vec![Cell::Text(String::new()), Cell::Null]],
        ),
        (
            vec![vec![Cell::Int(1), Cell::Bool(true)]],
            vec![vec![Cell::Timestamp(1), Cell::Bool(true)]],
        ),
        (
            vec![vec![Cell::Float(0.0), Cell::Null]],
            vec![vec![Cell::Float(-0.0), Cell::Null]],
        ),
        // One row of two cells is not two rows of one.
        (
            vec![vec![Cell::Int(1), Cell::Int(2)]],
            vec![vec![Cell::Int(1)], vec![Cell::Int(2)]],
        ),
        // A missing last row is noticed.
        (
            vec![
                vec![Cell::Int(1), Cell::Int(2)],
                vec![Cell::Int(3), Cell::Int(4)],
            ],
            vec![vec![Cell::Int(1), Cell::Int(2)]],
        ),
    ];
    for (left, right) in pairs {
        assert_ne!(
            sum("t", &columns, &left).sha256,
            sum("t", &columns, &right).sha256,
            "{left:?} and {right:?} digest the same"
        );
    }
}

#[test]
fn the_table_and_its_columns_are_part_of_the_digest() {
    let empty: Vec<Vec<Cell>> = Vec::new();
    let a = sum("jobs", &["id"], &empty);
    assert_eq!(a.rows, 0);
    assert_ne!(a.sha256, sum("tasks", &["id"], &empty).sha256);
    assert_ne!(a.sha256, sum("jobs", &["key"], &empty).sha256);
    assert_ne!(a.sha256, sum("jobs", &["id", "name"], &empty).sha256);
}

#[test]
fn every_nan_digests_the_same() {
    let quiet = f64::NAN;
    let other = f64::from_bits(f64::NAN.to_bits() | 1);
    assert!(other.is_nan());
    assert_eq!(
        sum("h", &["x"], &[vec![Cell::Float(quiet)]]).sha256,
        sum("h", &["x"], &[vec![Cell::Float(other)]]).sha256
    );
}

/// Inserts `jobs` rows (id, name, open_tasks) into a fresh in-memory store in the given
/// order, and digests every replicated table.
fn store_digest(rows: &[(&str, &str, i32)]) -> Vec<TableSum> {
    let store = Store::open_in_memory().unwrap();
    for (id, name, open) in rows {
        store
            .connection()
            .execute(
                "INSERT INTO jobs VALUES (?, ?, 'running', TIMESTAMP '2026-01-01 00:00:00', \
                 NULL, 3, ?)",
                duckdb::params![id, name, open],
            )
            .unwrap();
    }
    store
        .connection()
        .execute_batch(
            "INSERT INTO bench_log VALUES (9, 1), (2, 5), (9, 0); \
             INSERT INTO health_samples VALUES (2, 1, 0.5, 1, 2, 3, 0.0, TIMESTAMP '2026-01-01 00:00:01');",
        )
        .unwrap();
    store.pin_read().unwrap().digest().unwrap()
}

#[test]
fn the_same_rows_in_any_insertion_order_digest_the_same() {
    let rows = [("j3", "c", 0), ("j1", "a", 2), ("j2", "b", 1)];
    let forward = store_digest(&rows);
    let mut reversed = rows;
    reversed.reverse();
    assert_eq!(forward, store_digest(&reversed));
    let mut rotated = rows;
    rotated.rotate_left(1);
    assert_eq!(forward, store_digest(&rotated));

    let names: Vec<&str> = forward.iter().map(|s| s.table.as_str()).collect();
    let expected: Vec<&str> = crate::state::schema::REPLICATED_TABLES
        .iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, expected, "one sum per replicated table, in order");
    let jobs = forward.iter().find(|s| s.table == "jobs").unwrap();
    assert_eq!(jobs.rows, 3);
    let bench = forward.iter().find(|s| s.table == "bench_log").unwrap();
    assert_eq!(bench.rows, 3);
}

#[test]
fn one_changed_cell_in_the_database_changes_only_that_table() {
    let rows = [("j1", "a", 2), ("j2", "b", 1)];
    let reference = store_digest(&rows);
    let changed = store_digest(&[("j1", "a", 2), ("j2", "b", 0)]);
    for (r, c) in reference.iter().zip(&changed) {
        assert_eq!(r.rows, c.rows, "{}", r.table);
        if r.table == "jobs" {
            assert_ne!(r.sha256, c.sha256, "the changed cell went unnoticed");
        } else {
            assert_eq!(r.sha256, c.sha256, "{} changed", r.table);
        }
    }
}

#[test]
fn a_pinned_read_does_not_see_later_writes() {
    let store = Store::open_in_memory().unwrap();
    store
        .connection()
        .execute_batch("INSERT INTO bench_log VALUES (1, 1);")
        .unwrap();
    let pinned = store.pin_read().unwrap();
    store
        .connection()
        .execute_batch("INSERT INTO bench_log VALUES (2, 1);")
        .unwrap();
    let sums = pinned.digest().unwrap();
    let bench = sums.iter().find(|s| s.table == "bench_log").unwrap();
    assert_eq!(
        bench.rows, 1,
        "the digest saw a row written after it was pinned"
    );
    let now = store.pin_read().unwrap().digest().unwrap();
    let bench_now = now.iter().find(|s| s.table == "bench_log").unwrap();
    assert_eq!(bench_now.rows, 2);
}
