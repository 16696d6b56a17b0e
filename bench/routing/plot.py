"""Plot TTFT p90 and output tok/s against request rate, one line per router, one column per workload.

    bench/.work/perf/bin/python bench/routing/plot.py bench/results/routing.json bench/results/routing.png
(run.py calls it; matplotlib lives in the bench venv, not in the project's Python.)
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter

STYLE = {"round-robin": ("tab:gray", "o"), "vllm-router": ("tab:orange", "s"),
         "sglang-router": ("tab:green", "^"), "inferplane": ("tab:blue", "D")}


def main(src: str, dst: str) -> None:
    with open(src) as handle:
        results = json.load(handle)
    workloads = results["meta"]["workloads"]
    fig, axes = plt.subplots(2, len(workloads), figsize=(6 * len(workloads), 8), squeeze=False)
    for col, workload in enumerate(workloads):
        for router in results["meta"]["routers"]:
            rows = sorted((r for r in results["rows"] if r["router"] == router and r["workload"] == workload),
                          key=lambda r: r["rate"])
            rows = [r for r in rows if r.get("report")]
            if not rows:
                continue
            color, marker = STYLE.get(router, (None, "x"))
            rates = [r["rate"] for r in rows]
            axes[0][col].plot(rates, [r.get("ttft_p90_s") for r in rows], color=color, marker=marker, label=router)
            axes[1][col].plot(rates, [r.get("output_tok_s") for r in rows], color=color, marker=marker, label=router)
        axes[0][col].set_title(f"{workload}: TTFT p90")
        axes[0][col].set_ylabel("seconds")
        axes[0][col].set_yscale("log")
        axes[0][col].yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes[0][col].yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        axes[1][col].set_title(f"{workload}: output tokens/s")
        axes[1][col].set_ylabel("tokens/s")
        for row in (0, 1):
            axes[row][col].set_xlabel("request rate (QPS, Poisson)")
            axes[row][col].grid(True, alpha=0.3)
            axes[row][col].legend()
    meta = results["meta"]
    fig.suptitle(f"8 simulated replicas ({meta['replica']['preset']}, scaled; {meta['mode']} run {meta['started']})")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
