"""Score transactions in real time over the v2 REST API.

    python examples/fraud/client.py [--url http://127.0.0.1:8000] [--model fraud-onnx]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from data import FEATURES, transactions

OUTPUT = {"fraud": "predict_proba", "fraud-onnx": "probabilities"}


def score(client: httpx.Client, model: str, rows: list[list[float]]) -> list[float]:
    """Fraud probability of each transaction (one v2 request)."""
    request = {
        "inputs": [{"name": "transaction", "datatype": "FP32", "shape": [len(rows), len(FEATURES)], "data": rows}],
        "outputs": [{"name": OUTPUT[model]}],
    }
    response = client.post(f"/v2/models/{model}/infer", json=request)
    response.raise_for_status()
    probabilities = response.json()["outputs"][0]["data"]
    return probabilities[1::2]  # column 1 of [rows, 2]: P(fraud)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="fraud-onnx", choices=sorted(OUTPUT))
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    x, y = transactions(args.count, seed=99)
    with httpx.Client(base_url=args.url) as client:
        for row, label in zip(x.tolist(), y.tolist()):
            started = time.perf_counter()
            (p,) = score(client, args.model, [row])
            ms = (time.perf_counter() - started) * 1000
            print(f"amount={row[0]:8.2f} risk={row[2]:.2f} fraud_probability={p:.3f} label={label} ({ms:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
