"""One Celery workload, whole process: start the workers, submit, wait for every
result, stop the workers. Prints one JSON line of measurements.

    python celery_bench.py WORKLOAD TASKS --workers W --concurrency C --pool POOL

WORKLOAD is chain (sequential no-op chain), fanout (no-op, a chord between a
start and a join task), python (the same with a 10 ms sleep in the middle
tasks) or many (independent no-op tasks as one group). The Redis database in
GZ_BENCH_CELERY_URL belongs to this run: it is emptied before and after.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
from celery import chain, chord, group

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from celery_app import URL, app, noop, sleep10ms  # noqa: E402

MARKER = "gleitzeit-bench-compare"


def claim_database():
    """Refuses a database that holds someone else's keys: FLUSHDB would lose them."""
    db = redis.Redis.from_url(URL)
    if db.dbsize() and not db.exists(MARKER):
        sys.exit(
            f"celery_bench: {URL} is not empty and not ours; "
            "choose a free database with --celery-db"
        )
    db.flushdb()
    db.set(MARKER, "1")
    return db


def start_workers(count, concurrency, pool):
    workers = []
    for i in range(count):
        workers.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                    f"--pool={pool}", f"--concurrency={concurrency}",
                    "-n", f"w{i}@%h", "--loglevel=WARNING",
                    # Gossip, mingle and heartbeats exchange state between
                    # workers at startup and every few seconds; the benchmark
                    # needs none of it, and Celery's own tuning guide turns it off.
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                ],
                cwd=HERE,
                stdout=subprocess.DEVNULL,
            )
        )
    deadline = time.monotonic() + 120
    while True:
        # A ping only reaches workers already listening, so ask often; `limit`
        # returns as soon as all have answered instead of waiting the timeout.
        replies = app.control.ping(timeout=0.25, limit=count)
        if len(replies) >= count:
            return workers
        if any(w.poll() is not None for w in workers):
            stop_workers(workers)
            sys.exit("celery_bench: a worker exited during startup")
        if time.monotonic() > deadline:
            stop_workers(workers)
            sys.exit(f"celery_bench: only {len(replies)} of {count} workers answered a ping")


def stop_workers(workers):
    # SIGTERM is Celery's warm shutdown: what a deployment does to stop it.
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=30)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()


def signature(workload, n):
    if workload == "chain":
        return chain(*[noop.si() for _ in range(n)]), n
    if workload in ("fanout", "python"):
        middle = noop if workload == "fanout" else sleep10ms
        return noop.si() | chord([middle.si() for _ in range(n)], noop.si()), n + 2
    if workload == "many":
        return group(noop.si() for _ in range(n)), n
    raise SystemExit(f"unknown workload {workload}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workload")
    parser.add_argument("tasks", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--pool", default="prefork")
    args = parser.parse_args()

    db = claim_database()
    workers = start_workers(args.workers, args.concurrency, args.pool)
    try:
        sig, tasks = signature(args.workload, args.tasks)
        started = time.perf_counter()
        result = sig.apply_async()
        if args.workload == "many":
            values = result.join_native(timeout=600)
            if len(values) != args.tasks:
                sys.exit(f"celery_bench: {len(values)} results for {args.tasks} tasks")
        else:
            result.get(timeout=600)
        workflow_ms = (time.perf_counter() - started) * 1000.0
    finally:
        stop_workers(workers)
        db.flushdb()
    import celery
    import kombu

    print(
        json.dumps(
            {
                "tool": "celery",
                "workload": args.workload,
                "tasks": tasks,
                "workflow_ms": round(workflow_ms, 2),
                "versions": {
                    "celery": celery.__version__,
                    "kombu": kombu.__version__,
                    "redis-py": redis.__version__,
                    "redis-server": db.info("server").get("redis_version"),
                },
                "setup": f"{args.workers} worker(s), --pool={args.pool} --concurrency={args.concurrency}",
            }
        )
    )


if __name__ == "__main__":
    main()
