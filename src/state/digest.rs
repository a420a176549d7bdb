//! Table digests for the replica consistency check (`testfleet cluster check`).
//!
//! Every node applies the same log, so at one log index every node's DuckDB tables must hold
//! the same rows. A [`TableDigest`] condenses one table into a row count and a SHA-256 over
//! its rows; two replicas agree on a table when both numbers are equal. The digest is pure
//! and stable across builds and machines:
//!
//! * rows are fed in the table's key order (the caller reads them `ORDER BY` the key, see
//!   [`super::store::PinnedRead::digest`]), so the order in which rows were inserted does
//!   not matter;
//! * every cell is encoded canonically ([`encode_cell`]): a type tag, then a fixed-width
//!   big-endian number or a length-prefixed UTF-8 string, so no two different rows encode
//!   to the same bytes;
//! * the table name and column names are hashed first, so a digest is never confused with
//!   another table's or another schema's.
//!
//! Where the rows come from (a read transaction pinned at the check's log index) is the
//! business of [`super::store`] and `raft::state_machine`; this file only hashes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::Cell;

/// Names the encoding; bumped if it ever changes, so digests of two layouts never match.
const FORMAT: &[u8] = b"testfleet-table-digest-v1";

const NULL: u8 = 0;
const BOOL: u8 = 1;
const INT: u8 = 2;
const FLOAT: u8 = 3;
const TEXT: u8 = 4;
const TIMESTAMP: u8 = 5;
/// Starts every row, so a row boundary is part of what is hashed.
const ROW: u8 = 0xfe;

/// One table's row count and digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSum {
    pub table: String,
    pub rows: u64,
    /// SHA-256 of the header and every row, lower-case hex (64 characters).
    pub sha256: String,
}

/// Hashes one table's rows, fed one at a time in key order.
pub struct TableDigest {
    table: String,
    rows: u64,
    hasher: Sha256,
    buffer: Vec<u8>,
}

impl TableDigest {
    /// Starts the digest of `table`, whose rows have `columns` (in column order).
    pub fn new(table: &str, columns: &[String]) -> TableDigest {
        let mut digest = TableDigest {
            table: table.to_string(),
            rows: 0,
            hasher: Sha256::new(),
            buffer: Vec::with_capacity(256),
        };
        digest.buffer.extend_from_slice(FORMAT);
        put_text(&mut digest.buffer, table);
        digest
            .buffer
            .extend_from_slice(&(columns.len() as u64).to_be_bytes());
        for column in columns {
            put_text(&mut digest.buffer, column);
        }
        digest.hasher.update(&digest.buffer);
        digest.buffer.clear();
        digest
    }

    /// Adds the next row (in key order).
    pub fn add_row(&mut self, row: &[Cell]) {
        self.buffer.clear();
        self.buffer.push(ROW);
        self.buffer
            .extend_from_slice(&(row.len() as u64).to_be_bytes());
        for cell in row {
            encode_cell(cell, &mut self.buffer);
        }
        self.hasher.update(&self.buffer);
        self.rows += 1;
    }

    /// The row count and the hex digest.
    pub fn finish(mut self) -> TableSum {
        // The row count closes the stream: a prefix of a table never matches the table.
        self.hasher.update(self.rows.to_be_bytes());
        let hash = self.hasher.finalize();
        let mut sha256 = String::with_capacity(64);
        for byte in hash.iter() {
            sha256.push_str(&format!("{byte:02x}"));
        }
        TableSum {
            table: self.table,
            rows: self.rows,
            sha256,
        }
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Appends the canonical encoding of `cell` to `out`: a type tag, then the value. Floats
/// are encoded by their bits (so `0.0` and `-0.0` differ, as they do on disk), except that
/// every NaN encodes the same.
pub fn encode_cell(cell: &Cell, out: &mut Vec<u8>) {
    match cell {
        Cell::Null => out.push(NULL),
        Cell::Bool(b) => {
            out.push(BOOL);
            out.push(u8::from(*b));
        }
        Cell::Int(i) => {
            out.push(INT);
            out.extend_from_slice(&i.to_be_bytes());
        }
        Cell::Float(f) => {
            out.push(FLOAT);
            let bits = if f.is_nan() {
                f64::NAN.to_bits()
            } else {
                f.to_bits()
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Cell::Text(s) => {
            out.push(TEXT);
            put_text(out, s);
        }
        Cell::Timestamp(us) => {
            out.push(TIMESTAMP);
            out.extend_from_slice(&us.to_be_bytes());
        }
    }
}

/// The digest of `rows` (already in key order) of `table`.
pub fn digest_rows<'a>(
    table: &str,
    columns: &[String],
    rows: impl IntoIterator<Item = &'a [Cell]>,
) -> TableSum {
    let mut digest = TableDigest::new(table, columns);
    for row in rows {
        digest.add_row(row);
    }
    digest.finish()
}

#[cfg(test)]
mod tests;
