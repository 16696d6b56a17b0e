#!/usr/bin/env python3
"""Plot bench/results/engines.json → engines.png (aggregate tok/s vs concurrent streams, one line per engine run).

    python bench/engines/plot.py [engines.json] [engines.png]     # needs matplotlib
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def plot(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rounds = report.get("rounds", 1)
    for e in report["engines"]:
        lv = e.get("levels", [])
        if lv:
            label = e["engine"] + (f" (round {e.get('round', 1)})" if rounds > 1 else "")
            ax.plot([l["concurrency"] for l in lv], [l["tok_s"] for l in lv], marker="o", label=label,
                    linestyle="-" if e.get("round", 1) == 1 else "--")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("generated tokens/s (aggregate)")
    ax.set_xticks(report["workload"]["concurrency"])
    ax.set_title(f"SmolLM2-135M-Instruct, 128 tokens/request, {report['machine']['cpus']} CPU cores, "
                 f"{report['date'][:16]}Z", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> int:
    root = Path(__file__).resolve().parents[1] / "results"
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "engines.json"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_suffix(".png")
    if not plot(json.loads(src.read_text()), dst):
        print("matplotlib is not installed", file=sys.stderr)
        return 1
    print(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
