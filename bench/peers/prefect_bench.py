"""One Prefect 3 workload, whole process, as `python flow.py` runs it: with no
API URL configured Prefect starts its own local (ephemeral) server. Prints one
JSON line of measurements.

    python prefect_bench.py WORKLOAD TASKS [--concurrency C]

WORKLOAD is chain (each task called after the previous one returned), fanout
(no-op tasks submitted after a start task, a join task waiting for them all) or
python (the same with a 10 ms sleep in the middle tasks). PREFECT_HOME is set
by the driver, so the server's SQLite database lives in the run's own folder.
"""

import argparse
import json
import time

from prefect import __version__, flow, task
from prefect.task_runners import ThreadPoolTaskRunner


@task
def noop(_previous=None):
    return None


@task
def sleep10ms():
    time.sleep(0.01)
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workload")
    parser.add_argument("tasks", type=int)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="threads of the task runner (0: Prefect's default)",
    )
    args = parser.parse_args()
    n = args.tasks
    runner = (
        ThreadPoolTaskRunner(max_workers=args.concurrency)
        if args.concurrency
        else ThreadPoolTaskRunner()
    )

    @flow(task_runner=runner)
    def chain():
        previous = None
        for _ in range(n):
            previous = noop(previous)

    @flow(task_runner=runner)
    def fanout(middle):
        start = noop.submit()
        futures = [middle.submit(wait_for=[start]) for _ in range(n)]
        noop.submit(wait_for=futures).result()

    # The local server starts on the first API call; start it here so the
    # workflow time below is the flow's own, like the other tools' (the whole
    # process time includes it).
    from prefect.client.orchestration import get_client

    started = time.perf_counter()
    with get_client(sync_client=True) as client:
        client.api_healthcheck()
    server_ms = (time.perf_counter() - started) * 1000.0

    started = time.perf_counter()
    if args.workload == "chain":
        chain()
        tasks = n
    elif args.workload == "fanout":
        fanout(noop)
        tasks = n + 2
    elif args.workload == "python":
        fanout(sleep10ms)
        tasks = n + 2
    else:
        raise SystemExit(f"unknown workload {args.workload}")
    workflow_ms = (time.perf_counter() - started) * 1000.0
    print(
        json.dumps(
            {
                "tool": "prefect",
                "workload": args.workload,
                "tasks": tasks,
                "workflow_ms": round(workflow_ms, 2),
                "server_start_ms": round(server_ms, 2),
                "versions": {"prefect": __version__},
                "setup": "ephemeral local server, ThreadPoolTaskRunner("
                + (f"max_workers={args.concurrency}" if args.concurrency else "default")
                + ")",
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
