//! DuckDB materialisation of the state machine: schema, batched writes, reload, snapshots.
//!
//! [`Store`] owns one DuckDB connection and is used from one thread at a time. Each Raft
//! `apply` call ends in one [`Store::commit`]: the rows the [`Machine`] changed, plus
//! `last_applied` and the membership, in **one transaction**. Rows are never written one
//! statement at a time (DuckDB manages a few hundred of those per second): the upserted
//! tables are appended into TEMP staging twins with DuckDB's Appender and merged with one
//! `INSERT OR REPLACE … SELECT` per table; history rows are appended directly.
//!
//! A snapshot ([`SnapshotImage`]) is every replicated table's rows as typed cells, read in
//! one read transaction. Installing one replaces every table and `raft_meta` in one
//! transaction, so a failure midway leaves the previous state intact.
//!
//! Errors here are not deterministic (disk, DuckDB): the caller must stop the node rather
//! than skip the entry, or replicas diverge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use duckdb::types::{TimeUnit, Value};
use duckdb::{Connection, appender_params_from_iter, params};
use serde::{Deserialize, Serialize};

use super::command::{
    BreakerState, JobStatus, TaskSpec, TaskStatus, Timestamp, WorkerStatus,
};
use super::machine::{
    Attempt, Changes, Counters, HistoryRow, Machine, MachineParts, Task, Worker,
};
use super::schema::{self, REPLICATED_TABLES, UPSERT_TABLES};

/// A failure of the storage layer. Never deterministic: the node must stop.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the DuckDB database at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: duckdb::Error,
    },
    #[error("DuckDB error while {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: duckdb::Error,
    },
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("snapshot does not match this schema: {0}")]
    Snapshot(String),
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn db(context: &'static str) -> impl FnOnce(duckdb::Error) -> StoreError {
    move |source| StoreError::Db { context, source }
}

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

/// The DuckDB side of one node.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (or creates) the database file and its schema.
    pub fn open(path: &Path, settings: &DbSettings) -> Result<Store> {
        let config = duckdb::Config::default()
            .threads(i64::from(settings.threads.max(1)))
            .and_then(|c| c.max_memory(&settings.memory_limit))
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let conn = Connection::open_with_flags(path, config).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn)
    }

    /// An in-memory database, for tests and tools.
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().map_err(db("opening an in-memory database"))?;
        conn.execute_batch("SET threads TO 1; SET memory_limit = '256MB';")
            .map_err(db("setting limits"))?;
        Self::init(conn)
    }

    fn init(conn: Connection) -> Result<Store> {
        conn.execute_batch(schema::CREATE)
            .map_err(db("creating the schema"))?;
        for table in UPSERT_TABLES {
            conn.execute_batch(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS {table}_stage AS SELECT * FROM main.{table} LIMIT 0;"
            ))
            .map_err(db("creating staging tables"))?;
        }
        Ok(Store { conn })
    }

    /// A second connection to the same database, for reads from another thread.
    pub fn reader(&self) -> Result<Connection> {
        self.conn.try_clone().map_err(db("cloning the connection"))
    }

    /// The connection, for read-only queries on this thread.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// What has been applied, or `None` for a database that never applied anything.
    pub fn read_meta(&self) -> Result<Option<RaftMeta>> {
        read_meta(&self.conn)
    }

    /// Rebuilds the in-memory view from the tables.
    pub fn load_machine(&self) -> Result<Machine> {
        load_machine(&self.conn)
    }

    /// Writes `changes` (rows taken from `machine`) and `meta` in one transaction.
    pub fn commit(&mut self, machine: &Machine, changes: &Changes, meta: &RaftMeta) -> Result<()> {
        let tx = self.conn.transaction().map_err(db("beginning a transaction"))?;
        write_changes(&tx, machine, changes)?;
        write_meta(&tx, meta)?;
        tx.commit().map_err(db("committing applied entries"))
    }

    /// Every replicated table and the meta they correspond to, read in one transaction.
    pub fn dump(&self) -> Result<(SnapshotImage, Option<RaftMeta>)> {
        let reader = self.reader()?;
        dump_with(&reader)
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
        let tx = self.conn.transaction().map_err(db("beginning snapshot install"))?;
        for table in &image.tables {
            let columns = column_names(&tx, &table.name)?;
            if columns != table.columns {
                return Err(StoreError::Snapshot(format!(
                    "table {} has columns {:?}, this schema has {:?}",
                    table.name, table.columns, columns
                )));
            }
            tx.execute_batch(&format!("DELETE FROM main.{};", table.name))
                .map_err(db("clearing a table for snapshot install"))?;
            let mut appender = tx
                .appender(&table.name)
                .map_err(db("appending snapshot rows"))?;
            for row in &table.rows {
                if row.len() != columns.len() {
                    return Err(StoreError::Snapshot(format!(
                        "a row of {} has {} cells, expected {}",
                        table.name,
                        row.len(),
                        columns.len()
                    )));
                }
                appender
                    .append_row(appender_params_from_iter(row.iter().map(Cell::to_value)))
                    .map_err(db("appending snapshot rows"))?;
            }
            appender.flush().map_err(db("appending snapshot rows"))?;
        }
        write_meta(&tx, meta)?;
        tx.commit().map_err(db("committing snapshot install"))
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
            let columns = column_names(conn, table.name)?;
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT * FROM main.{} ORDER BY {}",
                    table.name, table.key
                ))
                .map_err(db("reading a table for a snapshot"))?;
            let mut rows_out = Vec::new();
            let mut rows = stmt.query([]).map_err(db("reading a table for a snapshot"))?;
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

fn ts(t: Timestamp) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, t.micros())
}

fn opt_ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, ts)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}

fn int(i: impl Into<i64>) -> Value {
    Value::BigInt(i.into())
}

fn uint(i: u64) -> Value {
    Value::BigInt(i64::try_from(i).unwrap_or(i64::MAX))
}

fn json<T: Serialize>(value: &T) -> Value {
    Value::Text(serde_json::to_string(value).unwrap_or_else(|_| "null".to_string()))
}

fn worker_row(w: &Worker) -> Vec<Value> {
    vec![
        text(&w.id),
        text(&w.host),
        text(&w.address),
        text(w.status.as_str()),
        text(&w.capabilities_json),
        json(&w.labels),
        ts(w.registered_at),
        ts(w.status_changed_at),
        text(&w.status_reason),
    ]
}

/// Requirements as stored in `tasks.requirements`.
#[derive(Serialize, Deserialize)]
struct Requirements {
    labels: BTreeMap<String, String>,
    capabilities: Vec<String>,
}

fn task_row(t: &Task) -> Vec<Value> {
    let requirements = Requirements {
        labels: t.spec.labels.clone(),
        capabilities: t.spec.capabilities.clone(),
    };
    let holder = t.current.as_ref();
    vec![
        text(&t.spec.id),
        text(&t.job),
        int(t.seq),
        text(&t.spec.name),
        json(&t.spec.command),
        json(&t.spec.env),
        opt_text(t.spec.cwd.as_deref()),
        uint(t.spec.timeout_ms),
        int(t.spec.priority),
        json(&requirements),
        int(t.spec.max_retries),
        int(t.spec.timeout_retries),
        int(t.spec.flaky_retries),
        text(t.status.as_str()),
        int(t.attempt),
        opt_text(holder.map(|a| a.worker.as_str())),
        holder.map_or(Value::Null, |a| uint(a.term)),
        int(t.infra_retries_used),
        int(t.timeout_retries_used),
        int(t.flaky_retries_used),
        Value::Boolean(t.requeued),
        ts(t.submitted_at),
        ts(t.updated_at),
        opt_ts(t.finished_at),
        opt_text(t.reason.as_deref()),
    ]
}

fn attempt_row(task: &str, a: &Attempt) -> Vec<Value> {
    vec![
        text(task),
        int(a.number),
        text(&a.worker),
        uint(a.term),
        ts(a.assigned_at),
        opt_ts(a.started_at),
        opt_ts(a.finished_at),
        opt_text(a.outcome.as_deref()),
        a.exit_code.map_or(Value::Null, int),
        a.duration_ms.map_or(Value::Null, uint),
        opt_text(a.output_tail.as_deref()),
    ]
}

fn history_row(row: &HistoryRow) -> (&'static str, Vec<Value>) {
    match row {
        HistoryRow::LeaderTransition {
            id,
            term,
            leader,
            at,
        } => (
            "leader_transitions",
            vec![int(*id), uint(*term), uint(*leader), ts(*at)],
        ),
        HistoryRow::BreakerTransition {
            id,
            scope,
            from,
            to,
            reason,
            at,
        } => (
            "breaker_transitions",
            vec![
                int(*id),
                text(scope),
                text(from.as_str()),
                text(to.as_str()),
                text(reason),
                ts(*at),
            ],
        ),
        HistoryRow::HealthSample {
            id,
            node,
            cpu,
            mem_bytes,
            disk_free_bytes,
            net_errors,
            error_rate,
            at,
        } => (
            "health_samples",
            vec![
                int(*id),
                uint(*node),
                Value::Double(*cpu),
                uint(*mem_bytes),
                uint(*disk_free_bytes),
                uint(*net_errors),
                Value::Double(*error_rate),
                ts(*at),
            ],
        ),
        HistoryRow::WorkerRecovery {
            id,
            worker,
            at,
            attempt_number,
            success,
            recovery_type,
            error_message,
            details_json,
        } => (
            "worker_recovery_history",
            vec![
                int(*id),
                text(worker),
                ts(*at),
                int(*attempt_number),
                Value::Boolean(*success),
                text(recovery_type),
                opt_text(error_message.as_deref()),
                text(details_json),
            ],
        ),
        HistoryRow::TaskRecovery {
            id,
            task,
            worker,
            at,
            attempt_number,
            success,
            recovery_type,
            error_message,
            details_json,
        } => (
            "task_recovery_history",
            vec![
                int(*id),
                text(task),
                opt_text(worker.as_deref()),
                ts(*at),
                int(*attempt_number),
                Value::Boolean(*success),
                text(recovery_type),
                opt_text(error_message.as_deref()),
                text(details_json),
            ],
        ),
        HistoryRow::SystemRecovery {
            id,
            at,
            system_status,
            success,
            affected_workers,
            affected_tasks,
            details_json,
        } => (
            "system_recovery_history",
            vec![
                int(*id),
                ts(*at),
                text(system_status),
                Value::Boolean(*success),
                int(*affected_workers),
                int(*affected_tasks),
                text(details_json),
            ],
        ),
        HistoryRow::Bench {
            log_index,
            payload_bytes,
        } => ("bench_log", vec![uint(*log_index), uint(*payload_bytes)]),
        HistoryRow::StaleResult {
            id,
            task,
            attempt,
            worker,
            outcome,
            exit_code,
            reason,
            at,
        } => (
            "stale_results",
            vec![
                int(*id),
                text(task),
                int(*attempt),
                text(worker),
                text(outcome.as_str()),
                exit_code.map_or(Value::Null, int),
                text(reason),
                ts(*at),
            ],
        ),
    }
}

/// Appends `rows` to `table` (a TEMP table when `temp`) with one Appender, never a
/// statement per row.
fn append(conn: &Connection, table: &str, temp: bool, rows: Vec<Vec<Value>>) -> Result<()> {
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
            .append_row(appender_params_from_iter(row))
            .map_err(db("appending rows"))?;
    }
    appender.flush().map_err(db("flushing appended rows"))
}

/// Upserts `rows` into `table` through its TEMP staging twin.
fn upsert(conn: &Connection, table: &str, rows: Vec<Vec<Value>>) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    append(conn, &format!("{table}_stage"), true, rows)?;
    conn.execute_batch(&format!(
        "INSERT OR REPLACE INTO main.{table} SELECT * FROM temp.main.{table}_stage; \
         DELETE FROM temp.main.{table}_stage;"
    ))
    .map_err(db("merging staged rows"))
}

fn write_changes(conn: &Connection, machine: &Machine, changes: &Changes) -> Result<()> {
    let workers = changes
        .workers
        .iter()
        .filter_map(|id| machine.worker(id))
        .map(worker_row)
        .collect();
    upsert(conn, "workers", workers)?;
    let jobs = changes
        .jobs
        .iter()
        .filter_map(|id| machine.job(id))
        .map(|j| {
            vec![
                text(&j.id),
                text(&j.name),
                text(j.status.as_str()),
                ts(j.submitted_at),
                opt_ts(j.finished_at),
                int(j.tasks.len() as i64),
                int(j.open_tasks),
            ]
        })
        .collect();
    upsert(conn, "jobs", jobs)?;
    let tasks = changes
        .tasks
        .iter()
        .filter_map(|id| machine.task(id))
        .map(task_row)
        .collect();
    upsert(conn, "tasks", tasks)?;
    let attempts = changes
        .attempts
        .iter()
        .filter_map(|id| machine.task(id))
        .filter_map(|t| t.current.as_ref().map(|a| attempt_row(&t.spec.id, a)))
        .collect();
    upsert(conn, "task_attempts", attempts)?;

    let mut by_table: BTreeMap<&'static str, Vec<Vec<Value>>> = BTreeMap::new();
    for row in &changes.history {
        let (table, values) = history_row(row);
        by_table.entry(table).or_default().push(values);
    }
    for (table, rows) in by_table {
        append(conn, table, false, rows)?;
    }
    if !changes.deleted_health_samples.is_empty() {
        let ids: Vec<String> = changes
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
    Ok(())
}

fn parse<T>(what: &str, text: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
    parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown {what} {text:?}")))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn load_machine(conn: &Connection) -> Result<Machine> {
    let mut parts = MachineParts::default();
    let ctx = "loading the state";

    let mut stmt = conn
        .prepare(
            "SELECT id, host, address, status, CAST(capabilities AS VARCHAR), \
             CAST(labels AS VARCHAR), epoch_us(registered_at), epoch_us(status_changed_at), \
             status_reason FROM workers",
        )
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let status: String = r.get(3).map_err(db(ctx))?;
        let labels: String = r.get(5).map_err(db(ctx))?;
        parts.workers.push(Worker {
            id: r.get(0).map_err(db(ctx))?,
            host: r.get(1).map_err(db(ctx))?,
            address: r.get(2).map_err(db(ctx))?,
            status: parse("worker status", &status, WorkerStatus::parse)?,
            capabilities_json: r.get(4).map_err(db(ctx))?,
            labels: from_json("worker labels", &labels)?,
            registered_at: Timestamp(r.get(6).map_err(db(ctx))?),
            status_changed_at: Timestamp(r.get(7).map_err(db(ctx))?),
            status_reason: r.get(8).map_err(db(ctx))?,
        });
    }

    let mut stmt = conn
        .prepare("SELECT id, name, status, epoch_us(submitted_at), epoch_us(finished_at) FROM jobs")
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let status: String = r.get(2).map_err(db(ctx))?;
        let finished: Option<i64> = r.get(4).map_err(db(ctx))?;
        parts.jobs.push((
            r.get(0).map_err(db(ctx))?,
            r.get(1).map_err(db(ctx))?,
            parse("job status", &status, JobStatus::parse)?,
            Timestamp(r.get(3).map_err(db(ctx))?),
            finished.map(Timestamp),
        ));
    }

    let mut attempts: BTreeMap<(String, u32), Attempt> = BTreeMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT a.task_id, a.attempt, a.worker_id, a.term, epoch_us(a.assigned_at), \
             epoch_us(a.started_at), epoch_us(a.finished_at), a.outcome, a.exit_code, \
             a.duration_ms, a.output_tail FROM task_attempts a JOIN tasks t \
             ON a.task_id = t.id AND a.attempt = t.attempt",
        )
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let task: String = r.get(0).map_err(db(ctx))?;
        let number: i64 = r.get(1).map_err(db(ctx))?;
        let term: i64 = r.get(3).map_err(db(ctx))?;
        let duration: Option<i64> = r.get(9).map_err(db(ctx))?;
        let started: Option<i64> = r.get(5).map_err(db(ctx))?;
        let finished: Option<i64> = r.get(6).map_err(db(ctx))?;
        attempts.insert(
            (task, number as u32),
            Attempt {
                number: number as u32,
                worker: r.get(2).map_err(db(ctx))?,
                term: term as u64,
                assigned_at: Timestamp(r.get(4).map_err(db(ctx))?),
                started_at: started.map(Timestamp),
                finished_at: finished.map(Timestamp),
                outcome: r.get(7).map_err(db(ctx))?,
                exit_code: r.get(8).map_err(db(ctx))?,
                duration_ms: duration.map(|d| d as u64),
                output_tail: r.get(10).map_err(db(ctx))?,
            },
        );
    }

    let mut stmt = conn
        .prepare(
            "SELECT id, job_id, seq, name, CAST(command AS VARCHAR), CAST(env AS VARCHAR), cwd, \
             timeout_ms, priority, CAST(requirements AS VARCHAR), max_retries, timeout_retries, \
             flaky_retries, status, attempt, infra_retries_used, timeout_retries_used, \
             flaky_retries_used, requeued, epoch_us(submitted_at), epoch_us(updated_at), \
             epoch_us(finished_at), reason FROM tasks",
        )
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let id: String = r.get(0).map_err(db(ctx))?;
        let command: String = r.get(4).map_err(db(ctx))?;
        let env: String = r.get(5).map_err(db(ctx))?;
        let requirements: String = r.get(9).map_err(db(ctx))?;
        let requirements: Requirements = from_json("task requirements", &requirements)?;
        let status: String = r.get(13).map_err(db(ctx))?;
        let attempt: i64 = r.get(14).map_err(db(ctx))?;
        let timeout: i64 = r.get(7).map_err(db(ctx))?;
        let get_u32 = |i: usize| -> Result<u32> {
            let v: i64 = r.get(i).map_err(db(ctx))?;
            Ok(v as u32)
        };
        let finished: Option<i64> = r.get(21).map_err(db(ctx))?;
        let current = attempts.remove(&(id.clone(), attempt as u32));
        parts.tasks.push(Task {
            spec: TaskSpec {
                id: id.clone(),
                name: r.get(3).map_err(db(ctx))?,
                command: from_json("task command", &command)?,
                env: from_json("task env", &env)?,
                cwd: r.get(6).map_err(db(ctx))?,
                timeout_ms: timeout as u64,
                priority: r.get(8).map_err(db(ctx))?,
                labels: requirements.labels,
                capabilities: requirements.capabilities,
                max_retries: get_u32(10)?,
                timeout_retries: get_u32(11)?,
                flaky_retries: get_u32(12)?,
            },
            job: r.get(1).map_err(db(ctx))?,
            seq: r.get(2).map_err(db(ctx))?,
            status: parse("task status", &status, TaskStatus::parse)?,
            attempt: attempt as u32,
            current,
            infra_retries_used: get_u32(15)?,
            timeout_retries_used: get_u32(16)?,
            flaky_retries_used: get_u32(17)?,
            requeued: r.get(18).map_err(db(ctx))?,
            submitted_at: Timestamp(r.get(19).map_err(db(ctx))?),
            updated_at: Timestamp(r.get(20).map_err(db(ctx))?),
            finished_at: finished.map(Timestamp),
            reason: r.get(22).map_err(db(ctx))?,
        });
    }

    let mut stmt = conn
        .prepare(
            "SELECT scope, arg_max(to_state, id) FROM breaker_transitions GROUP BY scope",
        )
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let scope: String = r.get(0).map_err(db(ctx))?;
        let state: String = r.get(1).map_err(db(ctx))?;
        parts
            .breakers
            .insert(scope, parse("breaker state", &state, BreakerState::parse)?);
    }

    let mut stmt = conn
        .prepare("SELECT node_id, id FROM health_samples ORDER BY id")
        .map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        let node: i64 = r.get(0).map_err(db(ctx))?;
        parts.health_ids.push((node as u64, r.get(1).map_err(db(ctx))?));
    }

    parts.counters = load_counters(conn)?;
    Ok(Machine::from_parts(parts))
}

fn load_counters(conn: &Connection) -> Result<Counters> {
    let ctx = "loading row-id counters";
    let max = |sql: &str| -> Result<i64> {
        conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .map(|v| v.unwrap_or(0))
            .map_err(db(ctx))
    };
    Ok(Counters {
        leader_transitions: max("SELECT max(id) FROM leader_transitions")?,
        breaker_transitions: max("SELECT max(id) FROM breaker_transitions")?,
        health_samples: max("SELECT max(id) FROM health_samples")?,
        worker_recovery: max("SELECT max(id) FROM worker_recovery_history")?,
        task_recovery: max("SELECT max(id) FROM task_recovery_history")?,
        system_recovery: max("SELECT max(id) FROM system_recovery_history")?,
        stale_results: max("SELECT max(id) FROM stale_results")?,
        task_seq: max("SELECT max(seq) FROM tasks")?,
    })
}

#[cfg(test)]
mod tests;
