"""Celery's side of `testfleet bench peers celery`: the same two measurements as `bench tasks`.

`testfleet bench peers celery` starts a Redis server (persistence off), writes this file into
its work directory and runs it with the Python given by `--python`:

    python celery_tasks.py --workers 4 --concurrency 4 --tasks 2000 --half-load-seconds 5

This script then starts `--workers` Celery workers (`celery -A celery_tasks worker`, prefork
pool of `--concurrency` processes each, Celery's default settings otherwise), whose one task
runs `true` in a subprocess as Testfleet's workers do, and measures, as `bench tasks` does:

* throughput: a batch of `--tasks` tasks run from a full queue: every worker stops consuming,
  the tasks are submitted one `apply_async` after another, the workers consume again, and the
  batch runs from that moment to the last task's end (stamped inside the task, as Testfleet's
  workers stamp a result). Without the hold the figure would be this client's submission rate
  (about 800 a second on a 2-core machine), not Celery's; Testfleet's batch is one job, whose
  submission is one call;
* dispatch latency: submission (stamped by this client just before `apply_async`) to the
  task's start (stamped first thing inside the task), with one task at a time submitted at an
  even pace of half the measured throughput for `--half-load-seconds`.

It prints one JSON document on stdout (wall-clock microseconds, so that the caller can find
the windows in its CPU timeline of the servers) and stops its workers. The broker and the
result backend are Redis databases 0 and 1 at `PEERS_CELERY_REDIS` (redis://host:port).
`--check` only prints the versions, to tell whether Celery and its Redis client import.

Exit codes: 0 measured, 2 bad arguments, 3 Celery or redis-py missing, 4 the workers did not
come up, 5 tasks failed or did not finish in time.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

REDIS = os.environ.get("PEERS_CELERY_REDIS", "redis://127.0.0.1:6379")

try:
    import celery
    import redis
    from celery import Celery
    from celery.result import ResultSet
except ImportError as e:  # pragma: no cover - reported to the caller
    if __name__ == "__main__":
        print(f"cannot import Celery with its Redis client: {e}", file=sys.stderr)
        sys.exit(3)
    raise

app = Celery("celery_tasks", broker=f"{REDIS}/0", backend=f"{REDIS}/1")
# Keep the workers' own logging quiet; every other setting is Celery's default.
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True


def now_us():
    return time.time_ns() // 1000


@app.task(name="peers.run_true")
def run_true():
    """Runs `true` in a subprocess; returns when the task started and ended (µs)."""
    started = now_us()
    subprocess.run(["true"], check=True)
    return [started, now_us()]


def start_workers(count, concurrency, log_dir):
    here = os.path.dirname(os.path.abspath(__file__))
    workers = []
    for i in range(count):
        log = open(os.path.join(log_dir, f"celery-worker-{i + 1}.log"), "ab")
        workers.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "celery_tasks", "worker",
                    "--pool", "prefork", "--concurrency", str(concurrency),
                    "--hostname", f"peers{i + 1}@%h", "--loglevel", "WARNING",
                ],
                cwd=here,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        )
    return workers


def stop_workers(workers):
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for w in workers:
        try:
            w.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()


def wait_ready(count, workers, limit_s=60):
    """Until every worker answers a ping (its pool is then up)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for w in workers:
            if w.poll() is not None:
                raise SystemExit(f"a Celery worker exited with {w.returncode} while starting")
        replies = app.control.ping(timeout=0.5)
        if len(replies) >= count:
            return
    raise TimeoutError(f"fewer than {count} Celery workers answered within {limit_s} s")


def collect(results, limit_s):
    """Each task's [started_us, ended_us], in submission order."""
    values = ResultSet(results).join_native(timeout=limit_s, propagate=True)
    if len(values) != len(results):
        raise RuntimeError(f"{len(values)} results for {len(results)} tasks")
    return values


def consume(queue_on, count):
    """Every worker stops (`queue_on` false) or starts again consuming the default queue."""
    control = app.control.add_consumer if queue_on else app.control.cancel_consumer
    replies = control("celery", reply=True, timeout=5.0, limit=count)
    if len(replies) != count:
        raise RuntimeError(f"{len(replies)} of {count} Celery workers answered {control.__name__}")


def batch(n, hold_workers=None):
    """`n` tasks; with `hold_workers` (the worker count) submitted while no worker consumes,
    then released at once (`released_us`)."""
    if hold_workers:
        consume(False, hold_workers)
    submitted = []
    results = []
    for _ in range(n):
        submitted.append(now_us())
        results.append(run_true.apply_async())
    last_submit = now_us()
    released = None
    if hold_workers:
        released = now_us()
        consume(True, hold_workers)
    values = collect(results, 600)
    return {
        "tasks": n,
        "first_submit_us": submitted[0],
        "last_submit_us": last_submit,
        "released_us": released,
        "last_finish_us": max(v[1] for v in values),
        "dispatch_us": [v[0] - s for v, s in zip(values, submitted)],
    }


def paced(rate, seconds):
    count = max(10, int(rate * seconds))
    pace = 1.0 / max(rate, 1.0)
    submitted = []
    results = []
    start = time.monotonic()
    for i in range(count):
        delay = start + i * pace - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        submitted.append(now_us())
        results.append(run_true.apply_async())
    values = collect(results, 600)
    return {
        "rate": rate,
        "tasks": count,
        "first_submit_us": submitted[0],
        "last_finish_us": max(v[1] for v in values),
        "dispatch_us": [v[0] - s for v, s in zip(values, submitted)],
    }


def versions():
    return {
        "celery": celery.__version__,
        "redis_py": redis.__version__,
        "python": sys.version.split()[0],
    }


def positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print the versions and exit")
    parser.add_argument("--workers", type=positive(int), default=4)
    parser.add_argument("--concurrency", type=positive(int), default=4)
    parser.add_argument("--tasks", type=positive(int), default=2000)
    parser.add_argument("--warmup-tasks", type=positive(int), default=200)
    parser.add_argument("--half-load-seconds", type=positive(float), default=5.0)
    parser.add_argument("--log-dir", default=".")
    args = parser.parse_args()
    if args.check:
        print(json.dumps(versions()))
        return 0
    workers = start_workers(args.workers, args.concurrency, args.log_dir)
    try:
        try:
            wait_ready(args.workers, workers)
        except (TimeoutError, SystemExit) as e:
            print(f"{e} (logs in {args.log_dir}/celery-worker-*.log)", file=sys.stderr)
            return 4
        try:
            batch(args.warmup_tasks)
            full = batch(args.tasks, hold_workers=args.workers)
            rate = full["tasks"] / max(1e-6, (full["last_finish_us"] - full["released_us"]) / 1e6)
            half = paced(rate / 2.0, args.half_load_seconds)
        except Exception as e:  # a task failed or timed out: the caller gets why
            print(f"Celery tasks did not all finish: {type(e).__name__}: {e}", file=sys.stderr)
            return 5
        report = versions()
        report.update(
            {
                "workers": args.workers,
                "concurrency": args.concurrency,
                "worker_pids": [w.pid for w in workers],
                "batch": full,
                "half": half,
            }
        )
        print(json.dumps(report))
        return 0
    finally:
        stop_workers(workers)


if __name__ == "__main__":
    sys.exit(main())
