"""Side-by-side benchmark: one sklearn model served by inferplane (dynamic batching on and off) and
by KServe's Python model server, closed-loop wrk clients at rising concurrency, in one run.

    python bench/classic/run.py [--kserve-python /tmp/kserve-venv/bin/python] [--seconds 8]

KServe runs from its own venv (``python -m venv V && V/bin/pip install kserve scikit-learn``).
Writes bench/results/classic.json and classic.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "examples" / "fraud"))
from data import transactions
from train import train

THREADS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
P99_BUDGET_MS = 50.0
MODEL = "logreg"
MODELS = {
    "logreg": "scikit-learn Pipeline(StandardScaler, LogisticRegression) on the examples/fraud data, predict_proba",
    "forest": "scikit-learn RandomForestClassifier (60 trees, depth 10) from examples/fraud, predict_proba",
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def make_repository(work: Path) -> tuple[Path, Path]:
    """The fraud forest, in an inferplane repository twice (batching on / off) and as a joblib file."""
    repo = work / "repository"
    shutil.rmtree(repo, ignore_errors=True)
    if MODEL == "forest":
        train(work / "trained", n=20000)
        model = work / "trained" / "fraud" / "1" / "model.joblib"
    else:
        import joblib
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x, y = transactions(20000)
        model = work / "logreg.joblib"
        joblib.dump(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y), model)
    base = yaml.safe_load((ROOT / "examples" / "fraud" / "repository" / "fraud" / "config.yaml").read_text())
    for name, batching in (("fraud", {"max_queue_delay_microseconds": 0}), ("fraud-nobatch", {"enabled": False})):
        (repo / name / "1").mkdir(parents=True)
        config = {**base, "max_batch_size": 64, "dynamic_batching": batching}
        (repo / name / "config.yaml").write_text(yaml.safe_dump(config))
        shutil.copy(model, repo / name / "1" / "model.joblib")
    return repo, model


def wait_ready(port: int, process: subprocess.Popen, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError("server not ready in time")


def wrk(port: int, path: str, body_file: Path, concurrency: int, seconds: float) -> dict:
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "-s", str(HERE / "wrk_report.lua"), f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "WRK_BODY_FILE": str(body_file)}, check=True).stdout
    raw = json.loads(out.strip().splitlines()[-1])
    return {
        "concurrency": concurrency,
        "requests": raw["requests"],
        "errors": raw["non2xx"] + raw["socket_errors"],
        "throughput_rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


def bench_server(name: str, command: list[str], port: int, path: str, body_file: Path, levels: list[int], seconds: float) -> dict:
    process = subprocess.Popen(command, env={**os.environ, **THREADS_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, process)
        probe = httpx.post(f"http://127.0.0.1:{port}{path}", content=body_file.read_bytes(), headers={"Content-Type": "application/json"})
        probe.raise_for_status()
        wrk(port, path, body_file, 8, 2)  # warm-up
        rows = []
        for level in levels:
            row = wrk(port, path, body_file, level, seconds)
            rows.append(row)
            print(f"{name:24s} c={level:3d} {row['throughput_rps']:8.1f} req/s  p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  errors {row['errors']}", flush=True)
        return {"server": name, "response": probe.json(), "levels": rows}
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """Per server and concurrency, the median round by throughput (all rounds kept under 'rounds')."""
    merged = []
    for per_server in zip(*rounds):
        levels = []
        for rows in zip(*(r["levels"] for r in per_server)):
            ordered = sorted(rows, key=lambda row: row["throughput_rps"])
            levels.append(ordered[(len(ordered) - 1) // 2])
        merged.append({"server": per_server[0]["server"], "response": per_server[0]["response"], "levels": levels, "rounds": [r["levels"] for r in per_server]})
    return merged


def best_within_budget(result: dict) -> dict | None:
    ok = [r for r in result["levels"] if r["p99_ms"] <= P99_BUDGET_MS and r["errors"] == 0]
    return max(ok, key=lambda r: r["throughput_rps"]) if ok else None


def markdown(report: dict) -> str:
    lines = [
        "# Classic model serving: inferplane vs KServe (side by side, one run)",
        "",
        f"Model: {report['model']}. Request: one transaction (7 FP32 features) per v2 REST request, JSON.",
        f"Clients: wrk, 1 thread, closed loop, {report['seconds']} s per level; {report['rounds']} rounds in alternating server order,",
        f"each row the lower-median round by throughput. Machine: {report['machine']}.",
        f"Load before: `{report['uptime_before']}`; after: `{report['uptime_after']}`.",
        "",
        "| server | concurrency | req/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in report["results"]:
        for r in result["levels"]:
            lines.append(f"| {result['server']} | {r['concurrency']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['errors']} |")
    lines += ["", f"Best throughput with p99 ≤ {P99_BUDGET_MS:.0f} ms:", ""]
    for name, best in report["best_within_p99_budget"].items():
        lines.append(f"- {name}: " + (f"{best['throughput_rps']} req/s at concurrency {best['concurrency']} (p99 {best['p99_ms']} ms)" if best else "none within budget"))
    ratio_text = f"{report['ratio_vs_kserve']}×" if report["ratio_vs_kserve"] else "n/a (KServe has no level within the budget)"
    lines += ["", f"inferplane (batching on) / KServe, best within budget: **{ratio_text}**; batching on / off: **{report['ratio_batching']}×**.", ""]
    lines += ["Throughput ratio at equal concurrency:", "", "| concurrency | inferplane on / KServe | inferplane on / off |", "|---|---|---|"]
    for c, row in report["ratio_per_concurrency"].items():
        lines.append(f"| {c} | {row['vs_kserve']}× | {row['batching']}× |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kserve-python", default="/tmp/kserve-venv/bin/python")
    parser.add_argument("--model", choices=sorted(MODELS), default="logreg")
    parser.add_argument("--levels", default="1,2,4,8,16,64")
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/inferplane-bench-classic"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "classic")
    parser.add_argument("--from-json", type=Path, help="only rebuild the report (ratios, markdown) from an earlier run's JSON")
    args = parser.parse_args()
    if args.from_json:
        earlier = json.loads(args.from_json.read_text())
        args.seconds, args.rounds = earlier["seconds"], earlier.get("rounds", 1)
        report = build_report(args, earlier["results"], earlier["uptime_before"])
        report.update({k: earlier[k] for k in ("model", "machine", "uptime_after")})
        write(report, args.out)
        return 0
    levels = [int(v) for v in args.levels.split(",")]
    global MODEL
    MODEL = args.model
    args.work.mkdir(parents=True, exist_ok=True)
    repo, model = make_repository(args.work)
    x, _ = transactions(1, seed=3)
    body = {"inputs": [{"name": "transaction", "datatype": "FP32", "shape": [1, 7], "data": x.tolist()}], "outputs": [{"name": "predict_proba"}]}
    body_file = args.work / "body.json"
    body_file.write_text(json.dumps(body))
    before = uptime()
    servers = {
        "inferplane (batching on)": lambda port: ([sys.executable, "-m", "inferplane.oip", "--repository", str(repo), "--port", str(port)], "/v2/models/fraud/infer"),
        "kserve 0.21 (python)": lambda port: (
            [args.kserve_python, str(HERE / "kserve_model.py"), "--model_path", str(model), "--http_port", str(port), "--served_name", "fraud"],
            "/v2/models/fraud/infer",
        ),
        "inferplane (batching off)": lambda port: ([sys.executable, "-m", "inferplane.oip", "--repository", str(repo), "--port", str(port)], "/v2/models/fraud-nobatch/infer"),
    }
    rounds: list[list[dict]] = []
    for index in range(args.rounds):
        order = list(servers) if index % 2 == 0 else list(reversed(servers))  # alternate to cancel drift in load
        done = {}
        for name in order:
            port = free_port()
            command, path = servers[name](port)
            done[name] = bench_server(name, command, port, path, body_file, levels, args.seconds)
        rounds.append([done[name] for name in servers])
    results = merge_rounds(rounds)
    report = build_report(args, results, before)
    write(report, args.out)
    return 0


def build_report(args: argparse.Namespace, results: list[dict], before: str) -> dict:
    best = {r["server"]: best_within_budget(r) for r in results}
    on, ks, off = (best[r["server"]] for r in results)

    def ratio(a: dict | None, b: dict | None) -> float | None:
        return round(a["throughput_rps"] / b["throughput_rps"], 2) if a and b else None

    per_level = {
        str(a["concurrency"]): {"vs_kserve": ratio(a, k), "batching": ratio(a, o)}
        for a, k, o in zip(results[0]["levels"], results[1]["levels"], results[2]["levels"])
    }
    return {
        "model": MODELS[args.model] + "; OMP/BLAS threads 1 in every server",
        "seconds": args.seconds,
        "rounds": args.rounds,
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}",
        "uptime_before": before,
        "uptime_after": uptime(),
        "results": results,
        "best_within_p99_budget": best,
        "ratio_vs_kserve": ratio(on, ks),
        "ratio_batching": ratio(on, off),
        "ratio_per_concurrency": per_level,
    }


def write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    sys.exit(main())
