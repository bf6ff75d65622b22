"""Draws bench/results/compare.json as grouped bars, one group per workload:
whole-process wall time, tasks per second and peak RSS, each on a log scale
because the tools differ by orders of magnitude.

    python plot_compare.py compare.json compare.png    (needs matplotlib)
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TOOLS = ["gleitzeit", "prefect", "celery"]
COLORS = {"gleitzeit": "#2a7ab0", "prefect": "#e07b39", "celery": "#6a9f58"}
PANELS = [
    ("wall_ms", "whole process, s (lower is better)", 1 / 1000),
    ("tasks_per_second", "tasks/s in the workflow (higher is better)", 1),
    ("peak_rss_mb", "peak RSS of the process tree, MB (lower is better)", 1),
]
LABELS = {
    "chain": "40-task chain\n(no-op)",
    "fanout": "200-task\nfan-out/in (no-op)",
    "python": "200 × 10 ms\nPython (2 at once)",
    "many": "10,000 no-op,\n2 workers, Redis",
}


def main(source, target):
    report = json.load(open(source))
    rows = [r for r in report["results"] if "error" not in r]
    workloads = [w for w in LABELS if any(r["workload"] == w for r in report["results"])]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(18, 5.4))
    width = 0.8 / len(TOOLS)
    for ax, (key, title, scale) in zip(axes, PANELS):
        for t, tool in enumerate(TOOLS):
            xs, ys = [], []
            for i, workload in enumerate(workloads):
                row = next((r for r in rows if r["tool"] == tool and r["workload"] == workload), None)
                if row and row.get(key):
                    xs.append(i + (t - (len(TOOLS) - 1) / 2) * width)
                    ys.append(row[key] * scale)
            bars = ax.bar(xs, ys, width, label=tool, color=COLORS[tool])
            for bar, y in zip(bars, ys):
                ax.annotate(
                    f"{y:,.0f}" if y >= 100 else f"{y:.3g}",
                    (bar.get_x() + bar.get_width() / 2, y),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels([LABELS[w] for w in workloads], fontsize=7.5)
        ax.grid(axis="y", which="both", alpha=0.25)
    axes[0].legend()
    m = report.get("machine", {})
    v = report.get("versions", {})
    fig.suptitle(
        f"Gleitzeit vs Prefect {v.get('prefect', '?')} vs Celery {v.get('celery', '?')} "
        f"(Redis {v.get('redis-server', '?')}) — {m.get('cpus')} × {m.get('cpu_model')}, "
        f"{m.get('memory_gib')} GiB",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
