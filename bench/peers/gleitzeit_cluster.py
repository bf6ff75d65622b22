"""Gleitzeit's Redis mode, whole process: start W `gleitzeit worker` processes,
run one workflow of independent no-op tasks with `gleitzeit run --backend
redis`, stop the workers. Prints one JSON line of measurements.

    python3 gleitzeit_cluster.py BINARY TASKS --workers W --slots S --redis URL

Standard library only. The driver leaves this launcher's own memory out of the
peak RSS: it starts processes and waits, the work is done by its children.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def clear(url, prefix):
    """Deletes the run's keys; redis-cli ships with every Redis server."""
    keys = subprocess.run(
        ["redis-cli", "-u", url, "--scan", "--pattern", f"{prefix}:*"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(
            ["redis-cli", "-u", url, "DEL", *keys[i : i + 500]],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("tasks", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    args = parser.parse_args()

    prefix = f"gz-bench-compare-{os.getpid()}"
    home = Path(tempfile.mkdtemp(prefix="gz-compare-cluster-"))
    flow = home / "flow.yaml"
    flow.write_text(
        "name: many\ntasks:\n"
        + "".join(f"  - {{id: t{i}, method: noop}}\n" for i in range(args.tasks))
    )
    env = dict(
        os.environ,
        GLEITZEIT_HOME=str(home),
        NO_COLOR="1",
        REDIS_URL=args.redis,
        GLEITZEIT_REDIS_PREFIX=prefix,
        GLEITZEIT_BACKEND="redis",
        # No server is wanted: a port nothing listens on keeps the CLI local.
        GLEITZEIT_PORT="1",
    )
    clear(args.redis, prefix)
    workers = []
    try:
        for _ in range(args.workers):
            worker = subprocess.Popen(
                [args.binary, "worker", "--concurrency", str(args.slots)],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            workers.append(worker)
            line = worker.stdout.readline()
            if not line.startswith("Worker "):
                sys.exit(f"gleitzeit_cluster: worker did not start: {line!r}")
            # Nothing more is read; the worker prints little, far below a pipe's buffer.
        started = time.perf_counter()
        run = subprocess.run(
            [args.binary, "--json", "run", "--quiet", str(flow)],
            env=env,
            capture_output=True,
            text=True,
        )
        wall_ms = (time.perf_counter() - started) * 1000.0
        if run.returncode != 0:
            sys.exit(f"gleitzeit_cluster: the workflow failed: {run.stderr.strip()[-500:]}")
        try:
            duration_ms = float(json.loads(run.stdout)["duration_ms"])
        except (ValueError, KeyError, TypeError):
            duration_ms = None
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait()
        clear(args.redis, prefix)
        shutil.rmtree(home, ignore_errors=True)
    print(
        json.dumps(
            {
                "tool": "gleitzeit",
                "workload": "many",
                "tasks": args.tasks,
                # Submit-to-done as Celery's client sees it: the whole
                # scheduler process, parsing and storing the 10,000 tasks
                # included, not only the run it reports.
                "workflow_ms": round(wall_ms, 2),
                "duration_ms": duration_ms,
                "setup": f"{args.workers} worker(s) x {args.slots} slots",
            }
        )
    )


if __name__ == "__main__":
    main()
