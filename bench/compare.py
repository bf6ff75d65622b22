#!/usr/bin/env python3
"""Gleitzeit side by side with Prefect 3 and Celery 5, same workloads, same run.

    python3 bench/compare.py --bin target/release/gleitzeit [--quick] [--runs N]

Standard library only (the peers run in their own virtualenvs, which this
script creates under --peers-dir and keeps between runs). `scripts/bench-compare.sh`
is the usual way in: it builds the binary first.

Workloads:
  chain   40 no-op tasks, each after the previous one
  fanout  a start task, 200 no-op tasks after it, a join task after them all
  python  the same with a 10 ms `time.sleep(0.01)` in the 200 middle tasks,
          2 at a time in every tool
  many    10,000 independent no-op tasks on 2 worker processes over Redis
          (Celery and Gleitzeit's Redis mode only)

How memory and time are measured: METHOD below.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
SAMPLE_SECONDS = 0.025
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# One measured run that takes longer than this is stopped and reported failed.
RUN_TIMEOUT_S = 300

PEER_PACKAGES = {
    # Prefect 3's local server does not start with FastAPI 0.120 or later.
    "prefect": ["prefect>=3,<4", "fastapi<0.120"],
    "celery": ["celery[redis]>=5,<6"],
    "plot": ["matplotlib"],
}

WORKLOADS = {
    "chain": "{n}-task sequential chain of no-op tasks",
    "fanout": "{n}-task fan-out/fan-in of no-op tasks",
    "python": "{n}-task fan-out of a 10 ms Python function",
    "many": "{n} no-op tasks, 2 workers, Redis",
}


METHOD = """\
Every measured run is one whole process tree, started fresh: interpreter or
binary start, the workers and servers the tool needs, the workflow, shutdown.
Wall time is the root process's lifetime. Peak RSS is the largest sum of the
resident sets of every process in the run's session (sampled from /proc every
25 ms), or the root's own wait4 figure if that is larger, as it is for runs
shorter than a sample. Shared pages count once per process, for every tool
alike. The Redis server is shared and not counted. The workflow time is each
tool's own submit-to-done figure, measured inside the run. Each figure is the
median of the measured runs after one unmeasured warm-up run (peak RSS: the
largest)."""


class Failed(Exception):
    """A peer or a run that could not be measured; the message says why."""


# ---------------------------------------------------------------- measuring


def session_rss_kb(session, exclude):
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name, which may itself hold spaces and ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        # fields[3] is the session id, fields[21] the resident set in pages.
        if int(fields[3]) == session and int(entry) != exclude:
            total += int(fields[21]) * PAGE_KB
    return total


# The session being measured, so an interrupted comparison stops it too: its
# processes are in a session of their own and see no terminal signal.
RUNNING = []


def stop_running(signum, _frame):
    for pid in RUNNING:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sys.exit(f"stopped by signal {signum}")


def measure(argv, env, log, exclude_root=False, cwd=None):
    """Runs argv to completion as its own session; returns wall ms, peak RSS KB
    and the last JSON line it printed."""
    started = time.perf_counter()
    with open(log, "ab") as err:
        err.write(f"\n$ {' '.join(map(str, argv))}\n".encode())
        err.flush()
        proc = subprocess.Popen(
            [str(a) for a in argv],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    RUNNING.append(proc.pid)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], session_rss_kb(proc.pid, proc.pid if exclude_root else -1))
            done.wait(SAMPLE_SECONDS)

    out = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))
    sampler = threading.Thread(target=sample)
    reader.start()
    sampler.start()
    timer = threading.Timer(RUN_TIMEOUT_S, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    # wait4 rather than Popen.wait: it also returns the child's peak RSS.
    _, status, usage = os.wait4(proc.pid, 0)
    wall_ms = (time.perf_counter() - started) * 1000.0
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    # Whatever the root left behind (a server it did not stop) is not the
    # next run's business.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    RUNNING.remove(proc.pid)
    reader.join()
    if proc.returncode != 0:
        raise Failed(
            f"exit status {proc.returncode}"
            + (f" (timed out after {RUN_TIMEOUT_S} s)" if proc.returncode == -9 else "")
            + f": {last_lines(log)}"
        )
    text = out[0].decode(errors="replace")
    try:
        report = json.loads(text)
    except ValueError:
        report = None
        for line in text.splitlines():
            if line.strip().startswith("{"):
                try:
                    report = json.loads(line)
                except ValueError:
                    pass
    rss_kb = max(peak[0], 0 if exclude_root else usage.ru_maxrss)
    return wall_ms, rss_kb, report


def last_lines(log, n=6):
    try:
        lines = [l for l in Path(log).read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:])[-800:]


# ------------------------------------------------------------------ peers


def ensure_venv(peers_dir, name, log):
    """The peer's virtualenv, created and filled once; a stamp of the package
    list decides whether to reinstall."""
    venv = peers_dir / f"{name}-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".gleitzeit-bench-stamp"
    wanted = "\n".join(PEER_PACKAGES[name])
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing {name} into {venv} (once; log: {log})", flush=True)
    with open(log, "ab") as out:
        for argv in (
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            [str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES[name]],
        ):
            if subprocess.run(argv, stdout=out, stderr=out).returncode != 0:
                raise Failed(f"installing {name} failed: {' '.join(argv[-3:])}: {last_lines(log, 3)}")
    stamp.write_text(wanted)
    return python


def redis_answers(url):
    try:
        out = subprocess.run(
            ["redis-cli", "-u", url, "ping"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "PONG" in out


def with_db(url, db):
    return re.sub(r"(/\d+)?/?$", f"/{db}", url, count=1)


class Bench:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.log = work / "bench.log"
        self.deadline = time.monotonic() + args.budget_minutes * 60

    # Each tool's command for a workload: (argv, env, exclude_root, cwd).

    def gleitzeit(self, workload, n):
        base = dict(os.environ, NO_COLOR="1")
        if workload == "many":
            argv = [
                sys.executable, PEERS / "gleitzeit_cluster.py", self.args.bin, n,
                "--workers", 2, "--slots", 16, "--redis", self.args.redis,
            ]
            return argv, base, True, None
        home = self.work / f"gleitzeit-{workload}"
        home.mkdir(exist_ok=True)
        # The same 2-at-a-time as the peers get (it is also the default on 2 cores).
        (home / "config.yaml").write_text("providers:\n  python:\n    workers: 2\n")
        flow = home / "flow.yaml"
        if workload == "chain":
            lines = ["  - {id: t0, method: noop}"] + [
                f"  - {{id: t{i}, method: noop, dependencies: [t{i - 1}]}}" for i in range(1, n)
            ]
        else:
            middle = (
                "method: noop"
                if workload == "fanout"
                else "method: python/execute, parameters: {code: 'import time; time.sleep(0.01)'}"
            )
            lines = (
                ["  - {id: start, method: noop}"]
                + [f"  - {{id: t{i}, {middle}, dependencies: [start]}}" for i in range(n)]
                + [
                    "  - {id: join, method: noop, dependencies: ["
                    + ", ".join(f"t{i}" for i in range(n))
                    + "]}"
                ]
            )
        flow.write_text(f"name: {workload}\ntasks:\n" + "\n".join(lines) + "\n")
        env = dict(base, GLEITZEIT_HOME=str(home), GLEITZEIT_PORT="1")
        return [self.args.bin, "--json", "run", "--quiet", flow], env, False, None

    def prefect(self, workload, n):
        home = self.work / f"prefect-{workload}"
        home.mkdir(exist_ok=True)
        env = dict(
            os.environ,
            PREFECT_HOME=str(home),
            # Defaults to ~/.prefect whatever PREFECT_HOME says; without it
            # every start repeats the block registration a normal install
            # does once.
            PREFECT_MEMO_STORE_PATH=str(home / "memo_store.toml"),
            # 20 s by default; the first start migrates the database and on
            # 2 busy cores takes longer than that.
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
            # No network here: a telemetry call only adds an error to the log.
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        argv = [self.pythons["prefect"], PEERS / "prefect_bench.py", workload, n]
        if workload == "python":
            argv += ["--concurrency", 2]
        return argv, env, False, PEERS

    def celery(self, workload, n):
        env = dict(os.environ, GZ_BENCH_CELERY_URL=with_db(self.args.redis, self.args.celery_db))
        argv = [self.pythons["celery"], PEERS / "celery_bench.py", workload, n]
        if workload == "many":
            # Two worker processes that each run one task at a time: of the
            # pools tried for no-op tasks on 2 cores, solo was the fastest
            # (prefork --concurrency=1 adds a process and a pipe per worker).
            argv += ["--workers", 2, "--concurrency", 1, "--pool", "solo"]
        else:
            # One worker, 2 processes: the 2-at-a-time the other tools get.
            argv += ["--workers", 1, "--concurrency", 2, "--pool", "prefork"]
        return argv, env, False, PEERS

    def run(self):
        args = self.args
        quick = args.quick
        sizes = {
            "chain": 40,
            "fanout": 200,
            "python": 20 if quick else 200,
            "many": 1_000 if quick else 10_000,
        }
        tools = ["gleitzeit"] if quick else ["gleitzeit", "prefect", "celery"]
        failed = {}
        self.pythons = {}
        if not quick:
            for name in ("prefect", "celery"):
                try:
                    self.pythons[name] = ensure_venv(args.peers_dir, name, self.log)
                except Failed as e:
                    failed[name] = str(e)
                    print(f"{name}: {e}", file=sys.stderr)
        have_redis = redis_answers(args.redis)
        if not have_redis:
            print(f"(no Redis at {args.redis}: the Redis workloads are skipped)")
        runs = 1 if quick else args.runs
        results = []
        for workload, n in sizes.items():
            for tool in tools:
                row = {"tool": tool, "workload": workload, "size": n}
                spec = None
                if workload == "many" and tool == "prefect":
                    continue  # (d) is about a broker and workers: Celery's shape
                if tool in failed:
                    row["error"] = failed[tool]
                else:
                    spec = getattr(self, tool)(workload, n)
                    if workload == "many" and not have_redis:
                        row["error"] = f"no Redis at {args.redis}"
                        spec = None
                if spec is not None:
                    tasks = n + 2 if workload in ("fanout", "python") else n
                    row.update(self.repeat(tool, workload, spec, tasks, runs, not quick))
                results.append(row)
                print(format_line(row), flush=True)
        return results, failed

    def repeat(self, tool, workload, spec, tasks, runs, warm_up):
        argv, env, exclude_root, cwd = spec
        walls, workflows, rss, reports = [], [], [], []
        # One unmeasured run first: page cache, the tool's database created.
        for i in range(runs + (1 if warm_up else 0)):
            if time.monotonic() > self.deadline:
                if not walls:
                    return {"error": f"time budget of {self.args.budget_minutes} min used up"}
                break
            try:
                wall, peak, report = measure(argv, env, self.log, exclude_root, cwd)
            except Failed as e:
                return {"error": f"{tool} {workload}: {e}"}
            if warm_up and i == 0:
                continue
            walls.append(wall)
            rss.append(peak)
            reports.append(report or {})
            workflow = (report or {}).get("workflow_ms") or (report or {}).get("duration_ms")
            workflows.append(float(workflow) if workflow is not None else wall)
        last = reports[-1]
        wall = statistics.median(walls)
        workflow = statistics.median(workflows)
        return {
            "tasks": tasks,
            "runs": len(walls),
            "wall_ms": round(wall, 1),
            "workflow_ms": round(workflow, 1),
            "tasks_per_second": round(tasks / (max(workflow, 1.0) / 1000.0)) if tasks else None,
            "peak_rss_mb": round(max(rss) / 1024.0, 1),
            "setup": last.get("setup"),
            "versions": last.get("versions"),
            "walls_ms": [round(w, 1) for w in walls],
        }


def format_line(row):
    if "error" in row:
        return f"{row['workload']:<7} {row['tool']:<10} FAILED: {row['error']}"
    return (
        f"{row['workload']:<7} {row['tool']:<10} {row['tasks']:>6} tasks  "
        f"whole process {row['wall_ms']:>9.1f} ms  workflow {row['workflow_ms']:>9.1f} ms  "
        f"{row['tasks_per_second'] or 0:>8} tasks/s  peak RSS {row['peak_rss_mb']:>7.1f} MB"
    )


# ---------------------------------------------------------------- reporting


def fmt_ms(ms):
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def fmt_ratio(value):
    return f"{value:.2f}" if value >= 0.01 else f"{value:.3f}"


def add_ratios(results):
    """Gleitzeit's figure divided by each peer's on the same workload: below 1
    is less time or memory for Gleitzeit, above 1 more tasks/s."""
    ours = {r["workload"]: r for r in results if r["tool"] == "gleitzeit" and "error" not in r}
    for row in results:
        gz = ours.get(row["workload"])
        if row["tool"] == "gleitzeit" or gz is None or "error" in row:
            continue
        row["gleitzeit_over_peer"] = {
            "wall": gz["wall_ms"] / row["wall_ms"],
            "tasks_per_second": (gz["tasks_per_second"] or 0) / max(row["tasks_per_second"] or 1, 1),
            "peak_rss": gz["peak_rss_mb"] / row["peak_rss_mb"],
        }
        row["gleitzeit_over_peer"] = {
            k: round(v, 4) for k, v in row["gleitzeit_over_peer"].items()
        }


def table(results):
    lines = [
        "| workload | tool | tasks | whole process | workflow | tasks/s | peak RSS "
        "| Gleitzeit/peer: whole process | tasks/s | peak RSS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        name = WORKLOADS[row["workload"]].format(n=f"{row['size']:,}")
        if "error" in row:
            lines.append(f"| {name} | {row['tool']} | failed | — | — | — | — | — | — | — |")
            continue
        ratio = row.get("gleitzeit_over_peer")
        cells = (
            [fmt_ratio(ratio["wall"]), fmt_ratio(ratio["tasks_per_second"]), fmt_ratio(ratio["peak_rss"])]
            if ratio
            else ["—", "—", "—"]
        )
        lines.append(
            f"| {name} | {row['tool']} | {row['tasks']:,} | {fmt_ms(row['wall_ms'])} "
            f"| {fmt_ms(row['workflow_ms'])} | {row['tasks_per_second']:,} "
            f"| {row['peak_rss_mb']:.0f} MB | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def machine(args):
    def first(path, prefix):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return None

    mem = first("/proc/meminfo", "MemTotal")
    try:
        gz_version = subprocess.run(
            [args.bin, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        gz_version = None
    return {
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "memory_gib": round(int(mem.split()[0]) / 1024 / 1024, 1) if mem else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gleitzeit": gz_version,
        # Other work on the machine skews every tool; this says how much there was.
        "load_average_1_5_15": list(os.getloadavg()),
    }


def versions(results):
    found = {}
    for row in results:
        for name, version in (row.get("versions") or {}).items():
            found.setdefault(name, version)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="the release gleitzeit binary")
    parser.add_argument("--quick", action="store_true", help="Gleitzeit only, one run each, a few seconds")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per tool and workload (median reported)")
    parser.add_argument("--out", type=Path, help="folder for compare.json/.md/.png (default bench/results; --quick: a temporary folder)")
    parser.add_argument("--peers-dir", type=Path, default=Path.home() / ".cache/gleitzeit/bench-peers")
    parser.add_argument("--redis", default=os.environ.get("GLEITZEIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379"))
    parser.add_argument("--celery-db", type=int, default=13, help="Redis database Celery may empty (default 13)")
    parser.add_argument("--budget-minutes", type=float, default=17.0, help="no new run starts after this")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, stop_running)
    signal.signal(signal.SIGINT, stop_running)
    args.bin = Path(args.bin).resolve()
    if not args.bin.exists():
        sys.exit(f"{args.bin} not found: build it with `cargo build --release -p gleitzeit-cli`")
    args.peers_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gz-compare-"))
    # A smoke run leaves the committed figures alone and writes nothing unless asked.
    out = args.out or (None if args.quick else ROOT / "bench" / "results")
    print(
        f"comparison ({'quick, Gleitzeit only' if args.quick else 'full'}), binary {args.bin}, log {work / 'bench.log'}",
        flush=True,
    )
    started = time.monotonic()
    load_before = list(os.getloadavg())
    bench = Bench(args, work)
    results, failed = bench.run()
    add_ratios(results)
    text = table(results)
    report = {
        "quick": args.quick,
        "machine": dict(machine(args), load_average_before=load_before),
        "versions": versions(results),
        "method": " ".join(METHOD.split()),
        "duration_s": round(time.monotonic() - started, 1),
        "failed_peers": failed,
        "results": results,
    }
    print()
    print(text)
    print()
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "compare.md").write_text(text + "\n")
        print(f"written to {out}/compare.json and compare.md")
    if out and not args.quick:
        try:
            plot_python = ensure_venv(args.peers_dir, "plot", bench.log)
            subprocess.run(
                [plot_python, ROOT / "bench" / "plot_compare.py", out / "compare.json", out / "compare.png"],
                check=True,
            )
        except (Failed, subprocess.CalledProcessError) as e:
            print(f"chart not drawn: {e}", file=sys.stderr)
    print(f"took {report['duration_s']} s")
    if any("error" in r for r in results if r["tool"] == "gleitzeit"):
        sys.exit("a Gleitzeit workload failed: see the table")
    if args.quick:
        shutil.rmtree(work, ignore_errors=True)
    else:
        # Prefect's databases and logs stay for a look after a failure, but
        # not forever.
        print(f"run folder (logs, databases): {work}")


if __name__ == "__main__":
    main()
