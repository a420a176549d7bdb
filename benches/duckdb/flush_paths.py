"""What a flush's write of task rows costs in DuckDB, three ways (BENCHMARKS.md, eighth session).

    python benches/duckdb/flush_paths.py        # needs `pip install duckdb==2.0.0`

A table with the `tasks` schema (keyed by `seq`) holds EXISTING rows, checkpointed. Each of
FLUSHES transactions then writes BATCH rows, as the coordinator's flusher does every 250 ms:

* `replace`: whole rows staged in a TEMP twin, then `INSERT OR REPLACE … SELECT` (the path
  every task row took before);
* `update`: the columns that change after submission staged, then `UPDATE … FROM` by `seq`
  (with the optimizer on for that statement: without it the join is a nested loop);
* for rows that are new, `replace` against a plain `INSERT`.

Prints the process CPU per row. The rows are generated in SQL, so the figures are DuckDB's
own work, not a client's.
"""

import os
import tempfile
import time

import duckdb

COLUMNS = """id VARCHAR NOT NULL, job_id VARCHAR NOT NULL, seq BIGINT PRIMARY KEY,
name VARCHAR NOT NULL, command JSON NOT NULL, env JSON NOT NULL, cwd VARCHAR,
timeout_ms BIGINT NOT NULL, priority INTEGER NOT NULL, requirements JSON NOT NULL,
max_retries INTEGER NOT NULL, timeout_retries INTEGER NOT NULL, flaky_retries INTEGER NOT NULL,
status VARCHAR NOT NULL, attempt INTEGER NOT NULL, worker_id VARCHAR, lease_term BIGINT,
infra_retries_used INTEGER NOT NULL, timeout_retries_used INTEGER NOT NULL,
flaky_retries_used INTEGER NOT NULL, requeued BOOLEAN NOT NULL, submitted_at TIMESTAMP NOT NULL,
updated_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, reason VARCHAR"""

PROGRESS = """seq BIGINT, status VARCHAR, attempt INTEGER, worker_id VARCHAR, lease_term BIGINT,
infra_retries_used INTEGER, timeout_retries_used INTEGER, flaky_retries_used INTEGER,
requeued BOOLEAN, updated_at TIMESTAMP, finished_at TIMESTAMP, reason VARCHAR"""

UPDATE = """UPDATE main.tasks AS t SET status = u.status, attempt = u.attempt,
worker_id = u.worker_id, lease_term = u.lease_term, infra_retries_used = u.infra_retries_used,
timeout_retries_used = u.timeout_retries_used, flaky_retries_used = u.flaky_retries_used,
requeued = u.requeued, updated_at = u.updated_at, finished_at = u.finished_at, reason = u.reason
FROM temp.main.tasks_update AS u WHERE t.seq = u.seq"""


def full_rows(lo, hi, status):
    return f"""SELECT uuid()::VARCHAR, 'job-1', i,
      'tests/suite_01/test_mod_' || i || '.py::test_case',
      '["python","-m","pytest","tests/suite_01/test_mod.py::test_case_' || i || '","-q"]',
      '{{"A":"1"}}', '/work', 300000, 0, '{{}}', 2, 1, 1, '{status}', 1, 'worker-1', 3, 0, 0, 0,
      false, now(), now(), NULL, NULL FROM range({lo}, {hi}) t(i)"""


def progress_rows(lo, hi, status):
    return (f"SELECT i, '{status}', 1, 'worker-2', 4, 0, 0, 0, false, now(), now(), NULL "
            f"FROM range({lo}, {hi}) t(i)")


def table(directory, existing):
    conn = duckdb.connect(os.path.join(directory, f"flush-{existing}-{time.time_ns()}.duckdb"))
    conn.execute("PRAGMA disable_optimizer")  # as the coordinator's writer connection
    conn.execute(f"CREATE TABLE tasks ({COLUMNS})")
    conn.execute(f"CREATE TEMP TABLE tasks_stage ({COLUMNS})")
    conn.execute(f"CREATE TEMP TABLE tasks_update ({PROGRESS})")
    conn.execute(f"INSERT INTO tasks {full_rows(0, existing, 'queued')}")
    conn.execute("CHECKPOINT")
    return conn


def measure(directory, existing, batch, flushes, write):
    """CPU per row of FLUSHES transactions, each running `write(conn, f)`."""
    conn = table(directory, existing)
    started = time.process_time()
    for f in range(flushes):
        conn.execute("BEGIN")
        write(conn, f)
        conn.execute("COMMIT")
    cpu = time.process_time() - started
    conn.close()
    return cpu * 1e6 / (batch * flushes)


def replace(conn, rows):
    conn.execute(f"INSERT INTO tasks_stage {rows}")
    conn.execute("INSERT OR REPLACE INTO main.tasks SELECT * FROM temp.main.tasks_stage; "
                 "DELETE FROM temp.main.tasks_stage")


def update(conn, rows):
    conn.execute(f"INSERT INTO tasks_update {rows}")
    conn.execute("PRAGMA enable_optimizer")
    conn.execute(UPDATE)
    conn.execute("PRAGMA disable_optimizer; DELETE FROM temp.main.tasks_update")


def paths(directory, existing, batch, flushes):
    """CPU per row: stored rows replaced, stored rows updated, new rows replaced, inserted."""
    def old(f):
        return (f * batch) % (existing - batch)

    def fresh(f):
        return existing + f * batch

    return (
        measure(directory, existing, batch, flushes,
                lambda c, f: replace(c, full_rows(old(f), old(f) + batch, "passed"))),
        measure(directory, existing, batch, flushes,
                lambda c, f: update(c, progress_rows(old(f), old(f) + batch, "passed"))),
        measure(directory, existing, batch, flushes,
                lambda c, f: replace(c, full_rows(fresh(f), fresh(f) + batch, "queued"))),
        measure(directory, existing, batch, flushes,
                lambda c, f: c.execute(
                    f"INSERT INTO main.tasks {full_rows(fresh(f), fresh(f) + batch, 'queued')}")),
    )


def main():
    batch, flushes = 300, 40
    print(f"DuckDB {duckdb.__version__}; {flushes} transactions of {batch} rows; CPU us per row")
    with tempfile.TemporaryDirectory() as directory:
        for existing in (4_000, 100_000):
            stored_replace, stored_update, new_replace, new_insert = paths(
                directory, existing, batch, flushes)
            print(f"{existing} rows stored: stored rows replace {stored_replace:.1f}, "
                  f"update {stored_update:.1f}; new rows replace {new_replace:.1f}, "
                  f"insert {new_insert:.1f}")


if __name__ == "__main__":
    main()
