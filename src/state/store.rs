//! DuckDB materialisation of the state machine: schema, batched writes, reload, snapshots.
//!
//! [`Store`] owns one DuckDB connection and is used from one thread at a time. Each Raft
//! `apply` call ends in one [`Store::commit`]: the rows the [`Machine`] changed, plus
//! `last_applied` and the membership, in **one transaction**. Rows are never written one
//! statement at a time (DuckDB manages a few hundred of those per second): the upserted
//! tables are appended into TEMP staging twins with DuckDB's Appender and merged with one
//! `INSERT OR REPLACE … SELECT` per table; history rows are appended directly.
//!
//! Tasks and attempts, most of what a flush writes, take cheaper paths. A task whose `seq`
//! is above every `seq` in the table (the store keeps that mark) is new and appended; a
//! stored one gets only the columns that change after submission, staged in a TEMP table
//! and set by one `UPDATE … FROM` (a staged task the table lacks is written again whole).
//! An attempt created since the last flush ([`Changes::new_attempts`]) is appended; only an
//! attempt already written is merged. In DuckDB an `INSERT OR REPLACE` deletes and inserts
//! the whole row and probes the key, several times the cost of either (BENCHMARKS.md).
//!
//! A snapshot ([`SnapshotImage`]) is every replicated table's rows as typed cells, read in
//! one read transaction. Installing one replaces every table and `raft_meta` in one
//! transaction, so a failure midway leaves the previous state intact.
//!
//! A [`PinnedRead`] is a read transaction whose snapshot is taken at once, for the replica
//! check: it digests every replicated table ([`super::digest`]) as of one applied index,
//! on another thread, while writes go on.
//!
//! Errors here ([`super::error::StoreError`]) are not deterministic (disk, DuckDB): the caller
//! must stop the node rather than skip the entry, or replicas diverge.

use std::path::Path;

use duckdb::types::{TimeUnit, Value};
use duckdb::{Connection, appender_params_from_iter, params};
use serde::{Deserialize, Serialize};

use super::digest::{TableDigest, TableSum};
use super::error::{Result, StoreError, db};
use super::machine::{Changes, Machine};
use super::rows::{self, RowBatch};
use super::schema::{self, REPLICATED_TABLES, UPSERT_TABLES};
use super::view::Task;

/// DuckDB resource limits for one node (the default would be 80 % of RAM per instance).
#[derive(Clone, Debug)]
pub struct DbSettings {
    pub threads: u32,
    pub memory_limit: String,
}

impl Default for DbSettings {
    fn default() -> Self {
        DbSettings {
            threads: 2,
            memory_limit: "1GB".to_string(),
        }
    }
}

/// What the state machine has applied, stored with the effects. The Raft types are kept
/// opaque (JSON text) so this module does not depend on openraft.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftMeta {
    pub last_applied_index: Option<u64>,
    pub last_applied_json: Option<String>,
    pub membership_json: String,
}

/// The database-wide settings every store is opened with: the limits, and a sandbox for the
/// `sql` reader that shares the instance (`crate::query`). No file but DuckDB's own (the
/// database, its WAL, its temporary files) and no URL can be read or written; no extension is
/// installed or loaded on demand (a URL read would fetch `httpfs`); and the configuration is
/// locked, so no statement can undo any of it (`SET enable_external_access = true` fails).
fn sandboxed(settings: &DbSettings) -> duckdb::Result<duckdb::Config> {
    duckdb::Config::default()
        .threads(i64::from(settings.threads.max(1)))?
        .max_memory(&settings.memory_limit)?
        .enable_external_access(false)?
        .with("autoinstall_known_extensions", "false")?
        .with("autoload_known_extensions", "false")?
        // Self-healing lowers the memory limit under memory pressure (`Store::set_memory_limit`),
        // and the writer connection turns the optimizer off for itself (`Store::init`). The
        // `sql` reader can do neither: its guard refuses every `SET` and every `PRAGMA` that
        // changes anything (`crate::query`).
        .with("allowed_configs", "[memory_limit, enable_optimizer]")?
        .with("lock_configuration", "true")
}

/// One cell of a table in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// Microseconds since the epoch.
    Timestamp(i64),
}

/// All rows of one table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableImage {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// Every replicated table's rows, as of `meta`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotImage {
    /// Bumped when the layout changes; an unknown format is refused.
    pub format: u32,
    pub tables: Vec<TableImage>,
}

/// The snapshot layout this binary writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// A flush of at least this many rows followed a burst of short-lived allocations (the
/// submitted job decoded, applied, its rows built and appended), so the free memory it left
/// is given back to the system after it ([`release_free_memory`]).
pub const TRIM_AFTER_ROWS: usize = 1_000;

/// The most rows one `INSERT OR REPLACE` merges; a larger upsert is staged and merged in
/// chunks of this size, all in the flush's one transaction. What a merge needs beyond the
/// table's index grows with its rows: with 870,000 tasks in `tasks` and the 256 MB limit
/// launched clusters use, one merge of 150,000 rows ran out of memory (DuckDB 2.0: "could not
/// allocate block") where 50,000 did not, and the same 150,000 (or 300,000) in chunks of 10,000
/// went through. A flush under a burst of submissions holds whatever was applied while the
/// previous one wrote, so its size is not bounded by a job's. The tables do not depend on the
/// chunks: the rows of one flush have distinct keys.
pub const MERGE_ROWS: usize = 8_192;

/// Gives the allocator's free memory back to the system. glibc keeps what a burst of
/// allocations freed inside its heaps, spread between long-lived blocks, so without this a
/// coordinator's RSS grows with each large job by what its decoding and writing needed, not by
/// what it keeps (`bench tasks --queued`: BENCHMARKS.md § Memory per queued task).
/// `malloc_trim` returns every free page of every arena, not only the top of the heap.
/// Whether anything was released (`None`: not glibc); `coordinator::relief` uses it too.
pub fn release_free_memory() -> Option<bool> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only reads and changes the allocator's own state, under its
        // locks.
        Some(unsafe { libc::malloc_trim(0) } != 0)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// The DuckDB side of one node.
pub struct Store {
    conn: Connection,
    /// Rows written since this store last checkpointed (DuckDB's own checkpoints, at its WAL
    /// threshold, are not seen: they only make a later checkpoint cheaper).
    unchecked_rows: usize,
    /// The highest `seq` in the `tasks` table (`None` while empty): a task above it is new.
    /// Read at open and after a snapshot install, moved by each committed write.
    last_task_seq: Option<i64>,
}

impl Store {
    /// Opens (or creates) the database file and its schema.
    pub fn open(path: &Path, settings: &DbSettings) -> Result<Store> {
        let config = sandboxed(settings).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let conn =
            Connection::open_with_flags(path, config).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Self::init(conn)
    }

    /// An in-memory database, for tests and tools.
    pub fn open_in_memory() -> Result<Store> {
        let settings = DbSettings {
            threads: 1,
            memory_limit: "256MB".to_string(),
        };
        let config = sandboxed(&settings).map_err(db("configuring an in-memory database"))?;
        let conn = Connection::open_in_memory_with_flags(config)
            .map_err(db("opening an in-memory database"))?;
        Self::init(conn)
    }

    fn init(mut conn: Connection) -> Result<Store> {
        conn.execute_batch(schema::CREATE)
            .map_err(db("creating the schema"))?;
        rekey_tasks(&mut conn)?;
        for table in UPSERT_TABLES {
            conn.execute_batch(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS {table}_stage AS SELECT * FROM main.{table} LIMIT 0;"
            ))
            .map_err(db("creating staging tables"))?;
        }
        // This connection only writes: each flush's `INSERT OR REPLACE … SELECT * FROM stage`
        // and `DELETE FROM stage`, appends, snapshot installs. DuckDB binds and plans every
        // one of them again at each flush, prepared or not, and its optimizer, which has
        // nothing to improve in them, was a third of the flusher thread's CPU under a full
        // task load (`perf`; BENCHMARKS.md). The setting is this connection's own: readers
        // (`Store::reader`, `load_machine`, the `sql` reader) keep the optimizer.
        //
        // The statements are deliberately not kept prepared (`prepare_cached`): with the
        // merges cached, 1 MB rows ran DuckDB out of its 256 MB at the next snapshot read,
        // every time (`limits::entries_larger_together_than_one_raft_message_still_
        // replicate`), for a saving in parsing too small to measure.
        conn.execute_batch(&schema::create_tasks_update())
            .map_err(db("creating staging tables"))?;
        conn.execute_batch("PRAGMA disable_optimizer;")
            .map_err(db("configuring the writer connection"))?;
        let last_task_seq = last_task_seq(&conn)?;
        Ok(Store {
            conn,
            unchecked_rows: 0,
            last_task_seq,
        })
    }

    /// A second connection to the same database, for reads from another thread.
    pub fn reader(&self) -> Result<Connection> {
        self.conn.try_clone().map_err(db("cloning the connection"))
    }

    /// The connection, for read-only queries on this thread.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Writes DuckDB's WAL into the database file and truncates it (`CHECKPOINT`). The caller
    /// holds the store, so no flush runs meanwhile.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.conn
            .execute_batch("CHECKPOINT;")
            .map_err(db("checkpointing the database"))?;
        self.unchecked_rows = 0;
        Ok(())
    }

    /// Rows written since the last [`Store::checkpoint`].
    pub fn unchecked_rows(&self) -> usize {
        self.unchecked_rows
    }

    /// Sets DuckDB's `memory_limit` for the whole database, to `bytes` (rounded down to KiB).
    pub fn set_memory_limit(&self, bytes: u64) -> Result<()> {
        self.conn
            .execute_batch(&format!(
                "SET memory_limit = '{}KiB';",
                (bytes / 1024).max(1)
            ))
            .map_err(db("setting the memory limit"))
    }

    /// DuckDB's `memory_limit` as it reports it (e.g. `476.8 MiB`).
    pub fn memory_limit(&self) -> Result<String> {
        self.conn
            .query_row("SELECT current_setting('memory_limit')", [], |row| {
                row.get::<_, String>(0)
            })
            .map_err(db("reading the memory limit"))
    }

    /// What has been applied, or `None` for a database that never applied anything.
    pub fn read_meta(&self) -> Result<Option<RaftMeta>> {
        read_meta(&self.conn)
    }

    /// Rebuilds the in-memory view from the tables (on a reader: its queries join and
    /// aggregate, and want the optimizer the writer connection runs without).
    pub fn load_machine(&self) -> Result<Machine> {
        super::load::load_machine(&self.reader()?)
    }

    /// Writes `changes` (rows taken from `machine`) and `meta` in one transaction.
    pub fn commit(&mut self, machine: &Machine, changes: &Changes, meta: &RaftMeta) -> Result<()> {
        self.write(RowBatch::collect(machine, changes), meta)
    }

    /// Writes a batch of rows and `meta` in one transaction.
    pub fn write(&mut self, batch: RowBatch, meta: &RaftMeta) -> Result<()> {
        let rows = batch.rows();
        let large = rows >= TRIM_AFTER_ROWS;
        let tx = self
            .conn
            .transaction()
            .map_err(db("beginning a transaction"))?;
        let written = write_batch(&tx, batch, self.last_task_seq)
            .and_then(|last| write_meta(&tx, meta).map(|()| last))
            .and_then(|last| {
                tx.commit()
                    .map(|()| last)
                    .map_err(db("committing applied entries"))
            });
        match written {
            Ok(last) => self.last_task_seq = last,
            Err(e) => {
                tracing::error!(error = %e, memory = %self.memory_by_tag(), "DuckDB write failed");
                return Err(e);
            }
        }
        self.unchecked_rows = self.unchecked_rows.saturating_add(rows);
        if large {
            release_free_memory();
        }
        Ok(())
    }

    /// What DuckDB's buffer pool holds, by tag (`ART_INDEX=81.2MiB IN_MEMORY_TABLE=…`), and
    /// its temporary files, for the log of a failed write. Read on a new connection: the
    /// failed transaction's own cannot run queries.
    fn memory_by_tag(&self) -> String {
        let report = |conn: &Connection| -> duckdb::Result<String> {
            let mut stmt = conn.prepare(
                "SELECT tag || '=' || round(memory_usage_bytes / 1048576, 1) || 'MiB' \
                 FROM duckdb_memory() WHERE memory_usage_bytes > 0 \
                 UNION ALL SELECT 'temporary_files=' || round(coalesce(sum(size), 0) / 1048576, 1) \
                 || 'MiB' FROM duckdb_temporary_files()",
            )?;
            let parts = stmt.query_map([], |row| row.get::<_, String>(0))?;
            Ok(parts.collect::<duckdb::Result<Vec<_>>>()?.join(" "))
        };
        match self.conn.try_clone() {
            Ok(conn) => report(&conn).unwrap_or_else(|e| format!("unknown ({e})")),
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Every replicated table and the meta they correspond to, read in one transaction.
    pub fn dump(&self) -> Result<(SnapshotImage, Option<RaftMeta>)> {
        let reader = self.reader()?;
        dump_with(&reader)
    }

    /// Opens a read transaction on a new connection and starts its snapshot now, so that it
    /// sees exactly what this database holds at this moment, whatever is written later.
    /// DuckDB takes a transaction's snapshot at its first table access, not at `BEGIN`: the
    /// meta is read here for that. The caller holds off writers until this returns.
    pub fn pin_read(&self) -> Result<PinnedRead> {
        let conn = self.reader()?;
        conn.execute_batch("BEGIN TRANSACTION;")
            .map_err(db("beginning a pinned read"))?;
        let meta = read_meta(&conn)?;
        Ok(PinnedRead { conn, meta })
    }

    /// Replaces every replicated table with `image` and sets `meta`, in one transaction.
    pub fn install(&mut self, image: &SnapshotImage, meta: &RaftMeta) -> Result<()> {
        if image.format != SNAPSHOT_FORMAT {
            return Err(StoreError::Snapshot(format!(
                "format {} (this binary reads {SNAPSHOT_FORMAT})",
                image.format
            )));
        }
        let expected: Vec<&str> = REPLICATED_TABLES.iter().map(|t| t.name).collect();
        let got: Vec<&str> = image.tables.iter().map(|t| t.name.as_str()).collect();
        if expected != got {
            return Err(StoreError::Snapshot(format!(
                "tables {got:?}, expected {expected:?}"
            )));
        }
        let tx = self
            .conn
            .transaction()
            .map_err(db("beginning snapshot install"))?;
        for table in &image.tables {
            let columns = column_names(&tx, &table.name)?;
            // An older node's image lacks the columns added since (they go last): those
            // cells are NULL, as in a file that older build wrote.
            if !columns.starts_with(&table.columns) {
                return Err(StoreError::Snapshot(format!(
                    "table {} has columns {:?}, this schema has {:?}",
                    table.name, table.columns, columns
                )));
            }
            let missing = columns.len() - table.columns.len();
            tx.execute_batch(&format!("DELETE FROM main.{};", table.name))
                .map_err(db("clearing a table for snapshot install"))?;
            let mut appender = tx
                .appender(&table.name)
                .map_err(db("appending snapshot rows"))?;
            for row in &table.rows {
                if row.len() != table.columns.len() {
                    return Err(StoreError::Snapshot(format!(
                        "a row of {} has {} cells, expected {}",
                        table.name,
                        row.len(),
                        table.columns.len()
                    )));
                }
                let cells = (row.iter().map(Cell::to_value))
                    .chain(std::iter::repeat_n(Value::Null, missing));
                appender
                    .append_row(appender_params_from_iter(cells))
                    .map_err(db("appending snapshot rows"))?;
            }
            appender.flush().map_err(db("appending snapshot rows"))?;
        }
        write_meta(&tx, meta)?;
        let last = last_task_seq(&tx)?;
        tx.commit().map_err(db("committing snapshot install"))?;
        self.last_task_seq = last;
        Ok(())
    }
}

impl Cell {
    fn from_value(value: Value) -> Result<Cell> {
        Ok(match value {
            Value::Null => Cell::Null,
            Value::Boolean(b) => Cell::Bool(b),
            Value::TinyInt(i) => Cell::Int(i64::from(i)),
            Value::SmallInt(i) => Cell::Int(i64::from(i)),
            Value::Int(i) => Cell::Int(i64::from(i)),
            Value::BigInt(i) => Cell::Int(i),
            Value::UTinyInt(i) => Cell::Int(i64::from(i)),
            Value::USmallInt(i) => Cell::Int(i64::from(i)),
            Value::UInt(i) => Cell::Int(i64::from(i)),
            Value::Float(f) => Cell::Float(f64::from(f)),
            Value::Double(f) => Cell::Float(f),
            Value::Text(s) => Cell::Text(s),
            Value::Timestamp(unit, v) => Cell::Timestamp(match unit {
                TimeUnit::Second => v.saturating_mul(1_000_000),
                TimeUnit::Millisecond => v.saturating_mul(1_000),
                TimeUnit::Microsecond => v,
                TimeUnit::Nanosecond => v / 1_000,
            }),
            other => {
                return Err(StoreError::Snapshot(format!(
                    "unsupported value in a replicated table: {other:?}"
                )));
            }
        })
    }

    fn to_value(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Boolean(*b),
            Cell::Int(i) => Value::BigInt(*i),
            Cell::Float(f) => Value::Double(*f),
            Cell::Text(s) => Value::Text(s.clone()),
            Cell::Timestamp(v) => Value::Timestamp(TimeUnit::Microsecond, *v),
        }
    }
}

fn column_names(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        )
        .map_err(db("reading the schema"))?;
    let names = stmt
        .query_map(params![table], |row| row.get::<_, String>(0))
        .map_err(db("reading the schema"))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(db("reading the schema"))?;
    Ok(names)
}

/// Reads every replicated table and the meta, in one read transaction on `conn`.
pub fn dump_with(conn: &Connection) -> Result<(SnapshotImage, Option<RaftMeta>)> {
    conn.execute_batch("BEGIN TRANSACTION;")
        .map_err(db("beginning a snapshot read"))?;
    let result = (|| {
        let meta = read_meta(conn)?;
        let mut tables = Vec::with_capacity(REPLICATED_TABLES.len());
        for table in REPLICATED_TABLES {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT * FROM main.{} ORDER BY {}",
                    table.name, table.key
                ))
                .map_err(db("reading a table for a snapshot"))?;
            let mut rows_out = Vec::new();
            let mut rows = stmt
                .query([])
                .map_err(db("reading a table for a snapshot"))?;
            // The executed statement names its columns (a catalog query per table costs more
            // than reading a small table).
            let columns = rows
                .as_ref()
                .map(|stmt| stmt.column_names())
                .unwrap_or_default();
            while let Some(row) = rows.next().map_err(db("reading a table for a snapshot"))? {
                let mut cells = Vec::with_capacity(columns.len());
                for i in 0..columns.len() {
                    let value: Value = row.get(i).map_err(db("reading a snapshot cell"))?;
                    cells.push(Cell::from_value(value)?);
                }
                rows_out.push(cells);
            }
            tables.push(TableImage {
                name: table.name.to_string(),
                columns,
                rows: rows_out,
            });
        }
        Ok((
            SnapshotImage {
                format: SNAPSHOT_FORMAT,
                tables,
            },
            meta,
        ))
    })();
    // A read transaction: rolling back only ends it.
    let _ = conn.execute_batch("ROLLBACK;");
    result
}

/// A read transaction whose snapshot is already taken (see [`Store::pin_read`]). It can be
/// moved to another thread; dropping it ends the transaction.
pub struct PinnedRead {
    conn: Connection,
    meta: Option<RaftMeta>,
}

impl PinnedRead {
    /// What had been applied when the snapshot was taken.
    pub fn meta(&self) -> Option<&RaftMeta> {
        self.meta.as_ref()
    }

    /// The digest of every replicated table ([`REPLICATED_TABLES`] order), rows in key order
    /// (every column breaks ties, so the order is total even where the key is not unique).
    pub fn digest(self) -> Result<Vec<TableSum>> {
        let mut sums = Vec::with_capacity(REPLICATED_TABLES.len());
        for table in REPLICATED_TABLES {
            let columns = column_names(&self.conn, table.name)?;
            let mut digest = TableDigest::new(table.name, &columns);
            let tie_breakers: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
            let mut stmt = self
                .conn
                .prepare(&format!(
                    "SELECT * FROM main.{} ORDER BY {}, {}",
                    table.name,
                    table.key,
                    tie_breakers.join(", ")
                ))
                .map_err(db("reading a table for a digest"))?;
            let mut rows = stmt.query([]).map_err(db("reading a table for a digest"))?;
            let mut cells = Vec::with_capacity(columns.len());
            while let Some(row) = rows.next().map_err(db("reading a table for a digest"))? {
                cells.clear();
                for i in 0..columns.len() {
                    let value: Value = row.get(i).map_err(db("reading a cell for a digest"))?;
                    cells.push(Cell::from_value(value)?);
                }
                digest.add_row(&cells);
            }
            sums.push(digest.finish());
        }
        Ok(sums)
    }
}

impl Drop for PinnedRead {
    fn drop(&mut self) {
        // A read transaction: rolling back only ends it.
        let _ = self.conn.execute_batch("ROLLBACK;");
    }
}

fn read_meta(conn: &Connection) -> Result<Option<RaftMeta>> {
    let mut stmt = conn
        .prepare(
            "SELECT last_applied_index, CAST(last_applied AS VARCHAR), CAST(membership AS VARCHAR) \
             FROM raft_meta WHERE id = 1",
        )
        .map_err(db("reading raft_meta"))?;
    let mut rows = stmt.query([]).map_err(db("reading raft_meta"))?;
    let Some(row) = rows.next().map_err(db("reading raft_meta"))? else {
        return Ok(None);
    };
    let index: Option<i64> = row.get(0).map_err(db("reading raft_meta"))?;
    Ok(Some(RaftMeta {
        last_applied_index: index.map(|i| i as u64),
        last_applied_json: row.get(1).map_err(db("reading raft_meta"))?,
        membership_json: row.get(2).map_err(db("reading raft_meta"))?,
    }))
}

fn write_meta(conn: &Connection, meta: &RaftMeta) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO raft_meta (id, last_applied_index, last_applied, membership) \
         VALUES (1, ?, ?, ?)",
        params![
            meta.last_applied_index.map(|i| i as i64),
            meta.last_applied_json,
            meta.membership_json
        ],
    )
    .map_err(db("writing raft_meta"))?;
    Ok(())
}

/// Appends `rows` to `table` (a TEMP table when `temp`) with one Appender, never a
/// statement per row. Each row's values are built just before it is appended.
fn append<T>(
    conn: &Connection,
    table: &str,
    temp: bool,
    rows: &[T],
    values: impl Fn(&T) -> Vec<Value>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let appender = if temp {
        conn.appender_to_catalog_and_db(table, "temp", "main")
    } else {
        conn.appender(table)
    };
    let mut appender = appender.map_err(db("opening an appender"))?;
    for row in rows {
        appender
            .append_row(appender_params_from_iter(values(row)))
            .map_err(db("appending rows"))?;
    }
    appender.flush().map_err(db("flushing appended rows"))
}

/// Re-keys a `tasks` table made before it was keyed by `seq` (see `schema::tasks_columns`),
/// in one transaction: a failure leaves the file as it was. Whether it had to.
fn rekey_tasks(conn: &mut Connection) -> Result<bool> {
    let keyed_by_id: bool = conn
        .query_row(schema::TASKS_KEYED_BY_ID, [], |row| row.get(0))
        .map_err(db("reading the tasks table's key"))?;
    if !keyed_by_id {
        return Ok(false);
    }
    let ctx = "re-keying the tasks table by seq (a file from an older build)";
    let tx = conn.transaction().map_err(db(ctx))?;
    tx.execute_batch(schema::REKEY_TASKS).map_err(db(ctx))?;
    tx.commit().map_err(db(ctx))?;
    tracing::info!("re-keyed the tasks table by seq (a file made by an older build)");
    Ok(true)
}

/// The highest `seq` in the `tasks` table, `None` while it is empty.
fn last_task_seq(conn: &Connection) -> Result<Option<i64>> {
    conn.query_row("SELECT max(seq) FROM main.tasks", [], |row| row.get(0))
        .map_err(db("reading the last stored task"))
}

/// Writes the batch's tasks: appends those above `last_seq` (the highest `seq` stored) and
/// updates the progress of the others, [`MERGE_ROWS`] at a time. Answers the new highest
/// `seq`.
fn write_tasks(conn: &Connection, tasks: &[Task], last_seq: Option<i64>) -> Result<Option<i64>> {
    let (new, stored): (Vec<&Task>, Vec<&Task>) = tasks
        .iter()
        .partition(|t| last_seq.is_none_or(|last| t.seq > last));
    append(conn, "tasks", false, &new, |t| rows::task_row(t))?;
    for chunk in stored.chunks(MERGE_ROWS) {
        append(conn, "tasks_update", true, chunk, |t| {
            rows::task_update_row(t)
        })?;
        // The join wants the optimizer (without it, a nested loop over the whole table),
        // which this connection otherwise runs without (`Store::init`).
        conn.execute_batch("PRAGMA enable_optimizer;")
            .map_err(db("updating stored tasks"))?;
        let updated = update_stored_tasks(conn, chunk);
        let cleared =
            conn.execute_batch("PRAGMA disable_optimizer; DELETE FROM temp.main.tasks_update;");
        updated?;
        cleared.map_err(db("updating stored tasks"))?;
    }
    Ok(new.iter().map(|t| t.seq).chain(last_seq).max())
}

/// Sets the progress of the stored tasks staged from `chunk`. A staged task the table does not
/// have (its row removed behind this store's back: nothing here deletes tasks) is written
/// again whole from the machine, which is the truth the table mirrors, and logged.
fn update_stored_tasks(conn: &Connection, chunk: &[&Task]) -> Result<()> {
    let updated = conn
        .execute(&schema::update_tasks(), [])
        .map_err(db("updating stored tasks"))?;
    if updated == chunk.len() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare(
            "SELECT u.seq FROM temp.main.tasks_update AS u \
             ANTI JOIN main.tasks AS t ON t.seq = u.seq",
        )
        .map_err(db("finding stored tasks missing from the table"))?;
    let missing: std::collections::HashSet<i64> = stmt
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .map_err(db("finding stored tasks missing from the table"))?;
    let again: Vec<&Task> = (chunk.iter().copied())
        .filter(|t| missing.contains(&t.seq))
        .collect();
    tracing::warn!(
        missing = again.len(),
        "tasks at or below the last stored seq were missing from DuckDB's tasks table \
         (removed outside testfleet?): written again whole"
    );
    append(conn, "tasks", false, &again, |t| rows::task_row(t))
}

/// Upserts `rows` into `table` through its TEMP staging twin, [`MERGE_ROWS`] at a time.
fn upsert<T>(
    conn: &Connection,
    table: &str,
    rows: &[T],
    values: impl Fn(&T) -> Vec<Value>,
) -> Result<()> {
    for chunk in rows.chunks(MERGE_ROWS) {
        append(conn, &format!("{table}_stage"), true, chunk, &values)?;
        conn.execute_batch(&format!(
            "INSERT OR REPLACE INTO main.{table} SELECT * FROM temp.main.{table}_stage; \
             DELETE FROM temp.main.{table}_stage;"
        ))
        .map_err(db("merging staged rows"))?;
    }
    Ok(())
}

/// Writes every row of `batch`; answers the highest task `seq` stored after it.
fn write_batch(conn: &Connection, batch: RowBatch, last_seq: Option<i64>) -> Result<Option<i64>> {
    upsert(conn, "workers", &batch.workers, rows::worker_row)?;
    upsert(conn, "jobs", &batch.jobs, rows::job_row)?;
    let last_seq = write_tasks(conn, &batch.tasks, last_seq)?;
    upsert(conn, "task_attempts", &batch.attempts, |(task, a)| {
        rows::attempt_row(task, a)
    })?;
    append(
        conn,
        "task_attempts",
        false,
        &batch.new_attempts,
        |(task, a)| rows::attempt_row(task, a),
    )?;
    for (table, history) in batch.history_by_table() {
        append(conn, table, false, &history, |row| {
            rows::history_values(row)
        })?;
    }
    if !batch.deleted_health_samples.is_empty() {
        let ids: Vec<String> = batch
            .deleted_health_samples
            .iter()
            .map(i64::to_string)
            .collect();
        conn.execute_batch(&format!(
            "DELETE FROM main.health_samples WHERE id IN ({});",
            ids.join(",")
        ))
        .map_err(db("deleting expired health samples"))?;
    }
    Ok(last_seq)
}

#[cfg(test)]
mod flush_boundaries;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_paths;
