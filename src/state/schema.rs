//! The DuckDB schema of the replicated state (ARCHITECTURE.md § Tables).
//!
//! Every node holds these tables with the same rows. The three recovery tables are exactly
//! as the original design specifies them. `raft_meta` holds `last_applied` and the
//! membership, written in the same transaction as the effects they account for.

/// Tables whose rows are replicated state, in the order snapshots list them. `raft_meta`
/// is not among them: a snapshot carries its own metadata.
pub const REPLICATED_TABLES: &[Table] = &[
    Table {
        name: "workers",
        key: "id",
    },
    Table {
        name: "jobs",
        key: "id",
    },
    Table {
        name: "tasks",
        key: "id",
    },
    Table {
        name: "task_attempts",
        key: "task_id, attempt",
    },
    Table {
        name: "stale_results",
        key: "id",
    },
    Table {
        name: "leader_transitions",
        key: "id",
    },
    Table {
        name: "breaker_transitions",
        key: "id",
    },
    Table {
        name: "health_samples",
        key: "id",
    },
    Table {
        name: "worker_recovery_history",
        key: "id",
    },
    Table {
        name: "task_recovery_history",
        key: "id",
    },
    Table {
        name: "system_recovery_history",
        key: "id",
    },
    Table {
        name: "bench_log",
        key: "log_index",
    },
    Table {
        name: "test_results",
        key: "id",
    },
];

/// A replicated table and the columns that order its rows.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub name: &'static str,
    pub key: &'static str,
}

/// Tables that are upserted by key from the in-memory view, each with a staging twin.
/// `tasks` is not among them: a task new since the last flush is appended, and a stored one
/// gets its changing columns updated (`UPDATE_TASKS`), which is several times cheaper in
/// DuckDB than replacing the whole row (BENCHMARKS.md).
pub const UPSERT_TABLES: &[&str] = &["workers", "jobs", "task_attempts"];

/// The columns of a `tasks` row that change after submission, in the table's order; the
/// rest (the spec, the job, `seq`, `submitted_at`) is fixed when the task is submitted.
pub const TASK_PROGRESS_COLUMNS: &[(&str, &str)] = &[
    ("status", "VARCHAR"),
    ("attempt", "INTEGER"),
    ("worker_id", "VARCHAR"),
    ("lease_term", "BIGINT"),
    ("infra_retries_used", "INTEGER"),
    ("timeout_retries_used", "INTEGER"),
    ("flaky_retries_used", "INTEGER"),
    ("requeued", "BOOLEAN"),
    ("updated_at", "TIMESTAMP"),
    ("finished_at", "TIMESTAMP"),
    ("reason", "VARCHAR"),
];

/// The TEMP table a flush stages stored tasks' new progress in: `seq`, then
/// [`TASK_PROGRESS_COLUMNS`].
pub fn create_tasks_update() -> String {
    let columns: Vec<String> = TASK_PROGRESS_COLUMNS
        .iter()
        .map(|(name, ty)| format!("{name} {ty}"))
        .collect();
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS tasks_update (seq BIGINT, {});",
        columns.join(", ")
    )
}

/// Sets the progress columns of every stored task staged in `tasks_update`, by `seq`.
pub fn update_tasks() -> String {
    let set: Vec<String> = TASK_PROGRESS_COLUMNS
        .iter()
        .map(|(name, _)| format!("{name} = u.{name}"))
        .collect();
    format!(
        "UPDATE main.tasks AS t SET {} FROM temp.main.tasks_update AS u WHERE t.seq = u.seq",
        set.join(", ")
    )
}

/// The `tasks` table's columns, in one place for [`CREATE`] and [`rekey_tasks`].
///
/// Keyed by `seq` (the replicated submission counter, unique per task), not by `id`: DuckDB
/// keeps a primary key as an ART index, and over random UUID text that index costs about 90
/// bytes a task while loaded (89 MiB at a million tasks), reloaded whole by the next upsert
/// after a checkpoint; over `seq`, dense and increasing, it is about 2 MiB at a million
/// (BENCHMARKS.md § Memory per queued task). Ids stay unique because apply refuses a known
/// one; nothing in DuckDB needs them indexed.
macro_rules! tasks_columns {
    () => {
        r#"
    id VARCHAR NOT NULL,
    job_id VARCHAR NOT NULL,
    seq BIGINT PRIMARY KEY,
    name VARCHAR NOT NULL,
    command JSON NOT NULL,
    env JSON NOT NULL,
    cwd VARCHAR,
    timeout_ms BIGINT NOT NULL,
    priority INTEGER NOT NULL,
    requirements JSON NOT NULL,
    max_retries INTEGER NOT NULL,
    timeout_retries INTEGER NOT NULL,
    flaky_retries INTEGER NOT NULL,
    status VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id VARCHAR,
    lease_term BIGINT,
    infra_retries_used INTEGER NOT NULL,
    timeout_retries_used INTEGER NOT NULL,
    flaky_retries_used INTEGER NOT NULL,
    requeued BOOLEAN NOT NULL,
    submitted_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    reason VARCHAR

"#
    };
}

/// Whether the `tasks` table is still keyed by `id`, as files made before `tasks_columns`
/// keyed it by `seq` have it.
pub const TASKS_KEYED_BY_ID: &str = "SELECT count(*) > 0 FROM duckdb_constraints() \
    WHERE database_name = current_database() AND schema_name = 'main' \
    AND table_name = 'tasks' AND constraint_type = 'PRIMARY KEY' \
    AND constraint_column_names = ['id']";

/// Rebuilds such a `tasks` table keyed by `seq`, rows as they are, run in one transaction:
/// DuckDB cannot drop or change a primary key in place.
pub const REKEY_TASKS: &str = concat!(
    "CREATE TABLE main.tasks_by_seq (",
    tasks_columns!(),
    "); INSERT INTO main.tasks_by_seq BY NAME SELECT * FROM main.tasks; \
     DROP TABLE main.tasks; ALTER TABLE main.tasks_by_seq RENAME TO tasks;"
);

/// Creates every table if it does not exist yet.
pub const CREATE: &str = concat!(
    r#"
CREATE TABLE IF NOT EXISTS raft_meta (
    id INTEGER PRIMARY KEY,
    last_applied_index BIGINT,
    last_applied JSON,
    membership JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    id VARCHAR PRIMARY KEY,
    host VARCHAR NOT NULL,
    address VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    capabilities JSON NOT NULL,
    labels JSON NOT NULL,
    registered_at TIMESTAMP NOT NULL,
    status_changed_at TIMESTAMP NOT NULL,
    status_reason VARCHAR NOT NULL,
    drained_at TIMESTAMP,
    drain_reason VARCHAR
);
CREATE TABLE IF NOT EXISTS jobs (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    submitted_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    task_count INTEGER NOT NULL,
    open_tasks INTEGER NOT NULL
);
"#,
    "CREATE TABLE IF NOT EXISTS tasks (",
    tasks_columns!(),
    ");",
    r#"
CREATE TABLE IF NOT EXISTS task_attempts (
    task_id VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id VARCHAR NOT NULL,
    term BIGINT NOT NULL,
    assigned_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    outcome VARCHAR,
    exit_code INTEGER,
    duration_ms BIGINT,
    output_tail VARCHAR,
    -- The signal that killed the command (then exit_code is NULL); added after the first
    -- release, so it stays the last column (see the ALTER below).
    signal INTEGER,
    PRIMARY KEY (task_id, attempt)
);
CREATE TABLE IF NOT EXISTS stale_results (
    id BIGINT PRIMARY KEY,
    task_id VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    exit_code INTEGER,
    reason VARCHAR NOT NULL,
    reported_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS leader_transitions (
    id BIGINT PRIMARY KEY,
    term BIGINT NOT NULL,
    leader_id BIGINT NOT NULL,
    elected_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS breaker_transitions (
    id BIGINT PRIMARY KEY,
    scope VARCHAR NOT NULL,
    from_state VARCHAR NOT NULL,
    to_state VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    changed_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS health_samples (
    id BIGINT PRIMARY KEY,
    node_id BIGINT NOT NULL,
    cpu DOUBLE NOT NULL,
    mem_bytes BIGINT NOT NULL,
    disk_free_bytes BIGINT NOT NULL,
    net_errors BIGINT NOT NULL,
    error_rate DOUBLE NOT NULL,
    sampled_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS bench_log (
    log_index BIGINT NOT NULL,
    payload_bytes BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS worker_recovery_history (id INTEGER PRIMARY KEY, worker_id VARCHAR,
  recovery_time TIMESTAMP, attempt_number INTEGER, success BOOLEAN, recovery_type VARCHAR,
  error_message VARCHAR, details JSON);
CREATE TABLE IF NOT EXISTS task_recovery_history (id INTEGER PRIMARY KEY, task_id VARCHAR,
  worker_id VARCHAR, recovery_time TIMESTAMP, attempt_number INTEGER, success BOOLEAN,
  recovery_type VARCHAR, error_message VARCHAR, details JSON);
CREATE TABLE IF NOT EXISTS system_recovery_history (id INTEGER PRIMARY KEY,
  recovery_time TIMESTAMP, system_status VARCHAR, success BOOLEAN, affected_workers INTEGER,
  affected_tasks INTEGER, details JSON);
CREATE TABLE IF NOT EXISTS test_results (id BIGINT PRIMARY KEY, task_id VARCHAR NOT NULL,
  attempt INTEGER NOT NULL, worker_id VARCHAR NOT NULL, test_id VARCHAR NOT NULL,
  classname VARCHAR NOT NULL, name VARCHAR NOT NULL, outcome VARCHAR NOT NULL,
  duration_ms BIGINT NOT NULL, message VARCHAR NOT NULL, flaky BOOLEAN NOT NULL,
  recorded_at TIMESTAMP NOT NULL);
-- Columns added after the first release, for files made before them: always last, so that a
-- new file and an old one have their columns in the same order (the staging twins and
-- snapshot images depend on it).
ALTER TABLE workers ADD COLUMN IF NOT EXISTS drained_at TIMESTAMP;
ALTER TABLE workers ADD COLUMN IF NOT EXISTS drain_reason VARCHAR;
ALTER TABLE task_attempts ADD COLUMN IF NOT EXISTS signal INTEGER;
"#
);
