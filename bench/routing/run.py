"""Side-by-side routing benchmark: the same 8 simulated replicas behind each router in turn.

    python bench/routing/run.py            # full run (~45 min): every router, every workload
    python bench/routing/run.py --quick    # pipeline check (~10 min): short ladder
    python bench/routing/run.py --routers round-robin,inferplane --workloads shared-prefix

For each router: start 8 fresh simulated replicas (`inferplane serve --engine sim`, config
replica.yaml; fresh so every router starts with cold caches), start the router in front of them,
wait until a completion goes through it, then run inference-perf (a third-party client, in its
own Python 3.12 venv, see setup.sh) once per workload with the workload's whole rate ladder as
stages. While inference-perf runs, every replica's /metrics is read when a stage starts and when
it completes (inference-perf logs both), which gives per-stage request share per replica and
prefix-cache hit rate. Everything is stopped before the next router starts.

Output (default bench/results/): routing.json (every number), routing.md (tables), routing.png
(TTFT p90 and output tok/s against rate), plus the raw inference-perf reports and logs under
bench/.work/routing-runs/ (git-ignored).

Routers:
  round-robin  Envoy with a static cluster and ROUND_ROBIN (what a Kubernetes Service does)
  vllm-router  `vllm-router --policy cache_aware` (PyPI vllm-router)
  sglang-router  `sglang-router launch --policy cache_aware` (PyPI sglang-router)
  inferplane   `inferplane picker` (default profile) + `inferplane gateway` (Envoy, ext_proc)

Only loopback addresses are used; every process started here is stopped on exit (also on
Ctrl-C); each inference-perf run is bounded by its stages plus a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / "bench" / ".work"
PERF_VENV = WORK / "perf"
ROUTERS_VENV = WORK / "routers"
TOKENIZER_DIR = WORK / "sim-tokenizer"
RUNS_DIR = WORK / "routing-runs"

ALL_ROUTERS = ("round-robin", "vllm-router", "sglang-router", "inferplane")
ALL_WORKLOADS = ("shared-prefix", "random", "few-prefix")
NUM_REPLICAS = 8
HOST = "127.0.0.1"

# Ports (loopback only), relative to --port-base (default 28000): replicas base+0..7, whichever
# router runs listens on base+100, the routers' side ports on base+190..199.
REPLICA_BASE_PORT = ROUTER_PORT = PICKER_GRPC = PICKER_HEALTH = PICKER_METRICS = 0
ENVOY_ADMIN_RR = ENVOY_ADMIN_GW = VLLM_ROUTER_PROM = SGLANG_ROUTER_PROM = 0


def set_ports(base: int) -> None:
    global REPLICA_BASE_PORT, ROUTER_PORT, PICKER_GRPC, PICKER_HEALTH, PICKER_METRICS
    global ENVOY_ADMIN_RR, ENVOY_ADMIN_GW, VLLM_ROUTER_PROM, SGLANG_ROUTER_PROM
    REPLICA_BASE_PORT, ROUTER_PORT = base, base + 100
    PICKER_GRPC, PICKER_HEALTH, PICKER_METRICS = base + 190, base + 191, base + 192
    VLLM_ROUTER_PROM, SGLANG_ROUTER_PROM = base + 193, base + 194
    ENVOY_ADMIN_RR, ENVOY_ADMIN_GW = base + 198, base + 199


set_ports(28000)
ENVOY_BASE_ID_RR, ENVOY_BASE_ID_GW = 4711, 4712


def log(message: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# -- processes -------------------------------------------------------------------------------


class Procs:
    """Children started by this run, each in its own process group, all stopped on exit."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes], Any]] = []

    def start(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, cwd=str(cwd or REPO), start_new_session=True)
        self.children.append((name, proc, handle))
        return proc

    def stop(self, names: set[str] | None = None, timeout: float = 10.0) -> None:
        keep = []
        stopping = []
        for name, proc, handle in self.children:
            if names is None or name in names:
                stopping.append((name, proc, handle))
            else:
                keep.append((name, proc, handle))
        for _, proc, _ in stopping:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)  # the group this run created for the child
        deadline = time.monotonic() + timeout
        for _, proc, handle in stopping:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            handle.close()
        self.children = keep

    def dead(self) -> list[str]:
        return [name for name, proc, _ in self.children if proc.poll() is not None]


def wait_port_free(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
                return
            except OSError:
                time.sleep(0.5)
    raise RuntimeError(f"port {port} is still in use")


# -- replicas and their metrics ----------------------------------------------------------------


def replica_addresses() -> list[str]:
    return [f"{HOST}:{REPLICA_BASE_PORT + i}" for i in range(NUM_REPLICAS)]


def start_replicas(procs: Procs, run_dir: Path, python: str) -> None:
    for i, address in enumerate(replica_addresses()):
        port = address.rsplit(":", 1)[1]
        procs.start(f"replica{i}", [python, "-m", "inferplane", "serve", "--config", str(HERE / "replica.yaml"),
                                    "--port", port], run_dir / "logs" / f"replica{i}.log")


def wait_http_ok(urls: list[str], timeout: float, procs: Procs) -> None:
    deadline = time.monotonic() + timeout
    pending = list(urls)
    with httpx.Client(timeout=2.0) as client:
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout:.0f} s: {pending}")
            if procs.dead():
                raise RuntimeError(f"exited during startup: {procs.dead()}")
            still = []
            for url in pending:
                try:
                    if client.get(url).status_code != 200:
                        still.append(url)
                except httpx.HTTPError:
                    still.append(url)
            pending = still
            if pending:
                time.sleep(0.5)


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([^\s]+)")
COUNTERS = {
    "vllm:request_success_total": "requests",
    "vllm:prefix_cache_queries_total": "prefix_queries",
    "vllm:prefix_cache_hits_total": "prefix_hits",
    "vllm:generation_tokens_total": "generation_tokens",
    "vllm:prompt_tokens_total": "prompt_tokens",
}


def parse_counters(text: str) -> dict[str, float]:
    out = {name: 0.0 for name in COUNTERS.values()}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match and match.group(1) in COUNTERS:
            with contextlib.suppress(ValueError):
                out[COUNTERS[match.group(1)]] += float(match.group(3))
    return out


def snapshot(client: httpx.Client) -> dict[str, Any]:
    replicas = []
    for address in replica_addresses():
        try:
            replicas.append(parse_counters(client.get(f"http://{address}/metrics").text))
        except httpx.HTTPError:
            replicas.append(None)
    return {"time": time.time(), "replicas": replicas}


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    per_replica = []
    for b, a in zip(before["replicas"], after["replicas"]):
        per_replica.append(None if a is None or b is None else {k: a[k] - b[k] for k in a})
    ok = [r for r in per_replica if r is not None]
    requests = [r["requests"] if r else None for r in per_replica]
    total_requests = sum(r["requests"] for r in ok)
    queries = sum(r["prefix_queries"] for r in ok)
    hits = sum(r["prefix_hits"] for r in ok)
    wall = after["time"] - before["time"]
    shares = [None if n is None else (n / total_requests if total_requests else 0.0) for n in requests]
    fair = 1.0 / NUM_REPLICAS
    return {
        "wall_s": wall,
        "replica_requests": requests,
        "replica_share": shares,
        "max_share_over_fair": (max(s for s in shares if s is not None) / fair) if total_requests else None,
        "prefix_hit_rate": hits / queries if queries else None,
        "replica_prefix_hit_rate": [None if r is None or not r["prefix_queries"] else r["prefix_hits"] / r["prefix_queries"]
                                    for r in per_replica],
        "server_output_tok_s": sum(r["generation_tokens"] for r in ok) / wall if wall > 0 else None,
        "server_requests": total_requests,
        "metrics_missing": sum(1 for r in per_replica if r is None),
    }


# -- routers -----------------------------------------------------------------------------------


def envoy_round_robin_bootstrap() -> dict[str, Any]:
    """A plain Envoy: one listener, one STATIC cluster of the replicas, ROUND_ROBIN."""
    endpoints = [{"endpoint": {"address": {"socket_address": {"address": a.rsplit(":", 1)[0],
                                                               "port_value": int(a.rsplit(":", 1)[1])}}}}
                 for a in replica_addresses()]
    big = 1_000_000
    return {
        "admin": {"address": {"socket_address": {"address": HOST, "port_value": ENVOY_ADMIN_RR}}},
        "static_resources": {
            "listeners": [{
                "name": "rr",
                "address": {"socket_address": {"address": HOST, "port_value": ROUTER_PORT}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "rr",
                        "stream_idle_timeout": "600s",
                        "request_timeout": "0s",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "pool", "timeout": "0s", "idle_timeout": "600s"}}],
                        }]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "pool",
                "type": "STATIC",
                "lb_policy": "ROUND_ROBIN",
                "connect_timeout": "2s",
                "circuit_breakers": {"thresholds": [{"max_connections": big, "max_pending_requests": big,
                                                     "max_requests": big, "max_retries": big}]},
                "load_assignment": {"cluster_name": "pool", "endpoints": [{"lb_endpoints": endpoints}]},
            }],
        },
    }


INFERPLANE_OVERRIDES: list[str] = []  # --inferplane-set SECTION.KEY=VALUE (YAML value), applied in order


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        node = config
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return config


def start_router(name: str, procs: Procs, run_dir: Path, python: str) -> None:
    logs = run_dir / "logs"
    workers = [f"http://{a}" for a in replica_addresses()]
    if name == "round-robin":
        bootstrap = run_dir / "envoy-rr.json"
        bootstrap.write_text(json.dumps(envoy_round_robin_bootstrap(), indent=1))
        envoy = shutil.which("envoy") or "envoy"
        procs.start("router", [envoy, "-c", str(bootstrap), "--concurrency", "1", "--base-id", str(ENVOY_BASE_ID_RR),
                               "--log-level", "warning"], logs / "router.log")
    elif name == "vllm-router":
        procs.start("router", [str(ROUTERS_VENV / "bin" / "vllm-router"), "--host", HOST, "--port", str(ROUTER_PORT),
                               "--worker-urls", *workers, "--policy", "cache_aware",
                               "--worker-startup-check-interval", "1", "--prometheus-host", HOST,
                               "--prometheus-port", str(VLLM_ROUTER_PROM), "--log-level", "warning"],
                    logs / "router.log")
    elif name == "sglang-router":
        procs.start("router", [str(ROUTERS_VENV / "bin" / "sglang-router"), "launch", "--host", HOST,
                               "--port", str(ROUTER_PORT), "--worker-urls", *workers, "--policy", "cache_aware",
                               "--worker-startup-check-interval", "1", "--prometheus-host", HOST,
                               "--prometheus-port", str(SGLANG_ROUTER_PROM), "--log-level", "warn"],
                    logs / "router.log")
    elif name == "inferplane":
        config = {
            "picker": {"host": HOST, "grpc_port": PICKER_GRPC, "health_port": PICKER_HEALTH,
                       "metrics_port": PICKER_METRICS, "endpoints": replica_addresses()},
            "gateway": {"host": HOST, "port": ROUTER_PORT, "admin_host": HOST, "admin_port": ENVOY_ADMIN_GW,
                        "picker_address": f"{HOST}:{PICKER_GRPC}", "pool_endpoints": replica_addresses(),
                        "base_id": ENVOY_BASE_ID_GW},
        }
        apply_overrides(config, INFERPLANE_OVERRIDES)
        path = run_dir / "inferplane.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        procs.start("picker", [python, "-m", "inferplane", "picker", "--config", str(path)], logs / "picker.log")
        procs.start("router", [python, "-m", "inferplane", "gateway", "--config", str(path)], logs / "router.log")
    else:
        raise ValueError(f"unknown router {name}")


def wait_router_ready(model: str, procs: Procs, timeout: float) -> float:
    """Until one small completion goes through the router (every router registers workers its own way)."""
    started = time.monotonic()
    deadline = started + timeout
    body = {"model": model, "prompt": "ready?", "max_tokens": 1}
    last = ""
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if procs.dead():
                raise RuntimeError(f"exited during startup: {procs.dead()}")
            try:
                response = client.post(f"http://{HOST}:{ROUTER_PORT}/v1/completions", json=body)
                if response.status_code == 200:
                    return time.monotonic() - started
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.5)
    raise RuntimeError(f"router not ready after {timeout:.0f} s: {last}")


# -- inference-perf ------------------------------------------------------------------------------


STAGE_LINE = re.compile(r"Stage (\d+) - run (started|completed)")


def run_inference_perf(workload: str, ladder: dict[str, Any], out_dir: Path, procs: Procs) -> dict[str, Any]:
    """One inference-perf process for the workload's whole ladder; /metrics around every stage."""
    config = yaml.safe_load((HERE / "workloads" / f"{workload}.yaml").read_text())
    config["server"]["base_url"] = f"http://{HOST}:{ROUTER_PORT}"
    config["tokenizer"]["pretrained_model_name_or_path"] = str(TOKENIZER_DIR)
    config["storage"]["local_storage"]["path"] = str(out_dir / "reports")
    config["load"]["stages"] = [{"rate": float(r), "duration": int(ladder["duration"])} for r in ladder["rates"]]
    config["load"]["interval"] = ladder.get("interval", config["load"].get("interval", 5))
    if "teardown_grace" in ladder:
        config["load"]["stage_teardown_grace_seconds"] = ladder["teardown_grace"]
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "inference-perf.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    grace = float(config["load"].get("stage_teardown_grace_seconds", 120))
    budget = 180 + sum(int(ladder["duration"]) + grace + float(config["load"]["interval"]) for _ in ladder["rates"])
    argv = [str(PERF_VENV / "bin" / "inference-perf"), "--config_file", str(config_path), "--log-level", "INFO"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    snapshots: dict[int, dict[str, Any]] = {}
    log_path = out_dir / "inference-perf.log"
    started = time.monotonic()
    with open(log_path, "w") as log_file, httpx.Client(timeout=2.0) as client:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(REPO), start_new_session=True, text=True, bufsize=1)
        timer = threading.Timer(budget, lambda: os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_file.write(line)
                match = STAGE_LINE.search(line)
                if match:
                    stage, event = int(match.group(1)), match.group(2)
                    snapshots.setdefault(stage, {})[event] = snapshot(client)
                    log(f"  {workload}: stage {stage} ({ladder['rates'][stage]} QPS) {event}")
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        log(f"  inference-perf exited {proc.returncode} after {elapsed:.0f} s (see {log_path})")
    return {"returncode": proc.returncode, "elapsed_s": elapsed, "snapshots": snapshots,
            "reports": out_dir / "reports"}


def pct(dist: dict[str, Any] | None, key: str) -> float | None:
    if not dist:
        return None
    value = dist.get(key)
    return float(value) if value is not None else None


def summarize_stage(report: dict[str, Any] | None) -> dict[str, Any]:
    if not report:
        return {"report": False}
    successes = report.get("successes") or {}
    failures = report.get("failures") or {}
    latency = successes.get("latency") or {}
    throughput = successes.get("throughput") or {}
    load = report.get("load_summary") or {}
    ttft = latency.get("time_to_first_token")
    itl = latency.get("inter_token_latency")
    tpot = latency.get("time_per_output_token")
    e2e = latency.get("request_latency")
    return {
        "report": True,
        "requested_rate": load.get("requested_rate"),
        "achieved_rate": load.get("achieved_rate"),
        "successes": successes.get("count", 0),
        "failures": failures.get("count", 0),
        "output_tok_s": throughput.get("output_tokens_per_sec"),
        "requests_per_s": throughput.get("requests_per_sec"),
        "ttft_p50_s": pct(ttft, "median"), "ttft_p90_s": pct(ttft, "p90"), "ttft_p99_s": pct(ttft, "p99"),
        "itl_p50_s": pct(itl, "median"), "itl_p90_s": pct(itl, "p90"), "itl_p99_s": pct(itl, "p99"),
        "tpot_p50_s": pct(tpot, "median"), "tpot_p90_s": pct(tpot, "p90"),
        "e2e_p50_s": pct(e2e, "median"), "e2e_p90_s": pct(e2e, "p90"),
        "benchmark_time_s": report.get("benchmark_time_seconds"),
    }


def collect(router: str, workload: str, ladder: dict[str, Any], result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for stage, rate in enumerate(ladder["rates"]):
        path = Path(result["reports"]) / f"stage_{stage}_lifecycle_metrics.json"
        report = json.loads(path.read_text()) if path.is_file() else None
        row: dict[str, Any] = {"router": router, "workload": workload, "stage": stage, "rate": float(rate)}
        row.update(summarize_stage(report))
        snaps = result["snapshots"].get(stage, {})
        if "started" in snaps and "completed" in snaps:
            row.update(delta(snaps["started"], snaps["completed"]))
        rows.append(row)
    return rows


# -- one router ----------------------------------------------------------------------------------


def bench_router(router: str, workloads: list[str], ladders: dict[str, Any], run_root: Path, python: str,
                 model: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    run_dir = run_root / router
    run_dir.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    info: dict[str, Any] = {"router": router}
    rows: list[dict[str, Any]] = []
    try:
        for port in [ROUTER_PORT, *[REPLICA_BASE_PORT + i for i in range(NUM_REPLICAS)], PICKER_GRPC, PICKER_HEALTH,
                     PICKER_METRICS, VLLM_ROUTER_PROM, SGLANG_ROUTER_PROM, ENVOY_ADMIN_RR, ENVOY_ADMIN_GW]:
            wait_port_free(port)
        log(f"{router}: starting {NUM_REPLICAS} replicas")
        start_replicas(procs, run_dir, python)
        wait_http_ok([f"http://{a}/health" for a in replica_addresses()], 120, procs)
        log(f"{router}: starting the router")
        start_router(router, procs, run_dir, python)
        info["ready_s"] = wait_router_ready(model, procs, 120)
        log(f"{router}: ready in {info['ready_s']:.1f} s")
        for workload in workloads:
            ladder = ladders[workload]
            log(f"{router}: {workload} at {ladder['rates']} QPS, {ladder['duration']} s each")
            result = run_inference_perf(workload, ladder, run_dir / workload, procs)
            info[f"{workload}_elapsed_s"] = round(result["elapsed_s"], 1)
            info[f"{workload}_returncode"] = result["returncode"]
            rows.extend(collect(router, workload, ladder, result))
            if procs.dead():
                raise RuntimeError(f"exited during the run: {procs.dead()}")
    except Exception as exc:  # noqa: BLE001 - record and go on with the next router
        info["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{router}: FAILED: {info['error']}")
    finally:
        procs.stop()
    return rows, info


# -- report --------------------------------------------------------------------------------------


def fmt(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value * scale:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing (or b is 0)."""
    return a / b if a is not None and b else None


#: The workloads whose prefixes spread evenly over the replicas, where issue 3 asks for fair shares.
SYMMETRIC_WORKLOADS = ("shared-prefix", "random")
#: The workloads where the cache-aware routers are compared at every rate.
PREFIX_WORKLOADS = ("shared-prefix", "few-prefix")


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 3's targets for inferplane, at the top rate of each ladder (None when not measured)."""
    def at(router: str, workload: str) -> dict[str, Any] | None:
        candidates = [r for r in rows if r["router"] == router and r["workload"] == workload and r.get("report")]
        return max(candidates, key=lambda r: r["rate"]) if candidates else None

    out = []
    ip, rr = at("inferplane", "shared-prefix"), at("round-robin", "shared-prefix")
    if ip and rr:
        value = ratio(ip.get("output_tok_s"), rr.get("output_tok_s"))
        out.append({"target": f"shared-prefix @ {ip['rate']:g} QPS: inferplane output tok/s >= 2x round-robin",
                    "value": value, "met": value is not None and value >= 2.0})
    rust = [r for r in (at("vllm-router", "shared-prefix"), at("sglang-router", "shared-prefix"))
            if r and r.get("ttft_p90_s") is not None]
    if ip and rust:
        value = ratio(ip.get("ttft_p90_s"), min(r["ttft_p90_s"] for r in rust))
        out.append({"target": "shared-prefix top rate: inferplane TTFT p90 <= 0.5x the better Rust router's",
                    "value": value, "met": value is not None and value <= 0.5})
    shares = [r.get("max_share_over_fair") for r in rows if r["router"] == "inferplane"
              and r["workload"] in SYMMETRIC_WORKLOADS and r.get("max_share_over_fair")]
    if shares:
        out.append({"target": "every inferplane stage of the symmetric workloads: no replica above 1.5x its fair "
                              "share of requests", "value": max(shares), "met": max(shares) <= 1.5})
    ipc, rrc = at("inferplane", "random"), at("round-robin", "random")
    if ipc and rrc:
        tok = ratio(ipc.get("output_tok_s"), rrc.get("output_tok_s"))
        ttft = ratio(ipc.get("ttft_p90_s"), rrc.get("ttft_p90_s"))
        out.append({"target": "control (random): inferplane no worse than round-robin "
                              "(tok/s >= 0.95x and TTFT p90 <= 1.1x; value = TTFT p90 ratio)",
                    "value": ttft, "tok_s_ratio": tok,
                    "met": tok is not None and ttft is not None and tok >= 0.95 and ttft <= 1.1})
    return out


def rate_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per prefix workload and rate: inferplane's output tok/s over round-robin's and its TTFT p90 over the
    better Rust router's (None where a router did not run that rate)."""
    def row(router: str, workload: str, rate: float) -> dict[str, Any] | None:
        return next((r for r in rows if r["router"] == router and r["workload"] == workload
                     and r["rate"] == rate and r.get("report")), None)

    out = []
    for workload in PREFIX_WORKLOADS:
        for rate in sorted({r["rate"] for r in rows if r["router"] == "inferplane" and r["workload"] == workload}):
            ip, rr = row("inferplane", workload, rate), row("round-robin", workload, rate)
            if ip is None:
                continue
            rust = [r for r in (row("vllm-router", workload, rate), row("sglang-router", workload, rate)) if r]
            ttfts = [r["ttft_p90_s"] for r in rust if r.get("ttft_p90_s") is not None]
            shares = [r["max_share_over_fair"] for r in rust if r.get("max_share_over_fair") is not None]
            out.append({"workload": workload, "rate": rate,
                        "tok_s_vs_round_robin": ratio(ip.get("output_tok_s"), rr.get("output_tok_s") if rr else None),
                        "ttft_p90_vs_rust": ratio(ip.get("ttft_p90_s"), min(ttfts) if ttfts else None),
                        "max_share": ip.get("max_share_over_fair"),
                        "rust_max_share": max(shares) if shares else None})
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Routing benchmark: same 8 simulated replicas, one router at a time", "",
             (f"Run {results['meta']['started']} – {results['meta']['finished']} ({results['meta']['mode']} mode), "
             f"{results['meta']['machine']}. Client: inference-perf {results['meta'].get('inference_perf', '?')}; "
             f"replicas: `inferplane serve --engine sim` ({results['meta']['replica']['preset']}, "
             f"time_scale {results['meta']['replica']['time_scale']}, {results['meta']['replica']['kv_tokens']} KV "
             f"tokens each). See bench/routing/README.md for the workload scaling."), ""]
    if results["meta"].get("inferplane_overrides"):
        lines += [f"inferplane config overrides: `{' '.join(results['meta']['inferplane_overrides'])}`", ""]
    for workload in results["meta"]["workloads"]:
        lines += [f"## {workload}", "",
                  ("| router | rate (QPS) | achieved | ok / fail | output tok/s | TTFT p50 / p90 / p99 (s) | "
                  "ITL p50 / p90 (ms) | prefix hit | max replica share (× fair) | requests per replica |"),
                  "|---|---:|---:|---:|---:|---|---|---:|---:|---|"]
        for row in results["rows"]:
            if row["workload"] != workload:
                continue
            per = row.get("replica_requests") or []
            lines.append(
                f"| {row['router']} | {row['rate']:g} | {fmt(row.get('achieved_rate'))} | "
                f"{row.get('successes', '–')} / {row.get('failures', '–')} | {fmt(row.get('output_tok_s'), digits=0)} | "
                f"{fmt(row.get('ttft_p50_s'))} / {fmt(row.get('ttft_p90_s'))} / {fmt(row.get('ttft_p99_s'))} | "
                f"{fmt(row.get('itl_p50_s'), 1000, 0)} / {fmt(row.get('itl_p90_s'), 1000, 0)} | "
                f"{fmt(row.get('prefix_hit_rate'), 100, 1)}% | {fmt(row.get('max_share_over_fair'))} | "
                f"{' '.join('–' if n is None else str(int(n)) for n in per)} |")
        lines.append("")
    if results.get("targets"):
        lines += ["## Targets (issue 3)", "", "| target | value | met |", "|---|---:|---|"]
        lines += [f"| {t['target']} | {fmt(t['value'])} | {'yes' if t['met'] else 'no'} |" for t in results["targets"]]
        lines.append("")
    ratios = rate_ratios(results["rows"])
    if ratios:
        lines += ["inferplane against the others at every rate" + (" (the targets above are checked at the top rate):"
                                                                   if results.get("targets") else ":"),
                  "", ("| workload | rate (QPS) | output tok/s ÷ round-robin's | TTFT p90 ÷ the better Rust router's | "
                       "max replica share (× fair): inferplane / the Rust routers' highest |"),
                  "|---|---:|---:|---:|---|"]
        lines += [f"| {r['workload']} | {r['rate']:g} | {fmt(r['tok_s_vs_round_robin'])} | {fmt(r['ttft_p90_vs_rust'])} | "
                  f"{fmt(r['max_share'])} / {fmt(r['rust_max_share'])} |" for r in ratios]
        lines.append("")
    errors = [i for i in results["routers"] if i.get("error")]
    if errors:
        lines += ["## Errors", ""] + [f"- {i['router']}: {i['error']}" for i in errors] + [""]
    lines += [("Output tok/s, TTFT and ITL are inference-perf's per-stage figures (client side; output tokens "
              "as reported by the server's usage). Prefix hit rate = Δ`vllm:prefix_cache_hits_total` / "
              "Δ`vllm:prefix_cache_queries_total` and requests per replica = Δ`vllm:request_success_total` over "
              "the stage (start → all its requests done), summed over the replicas' /metrics.")]
    return "\n".join(lines) + "\n"


def replica_meta() -> dict[str, Any]:
    server = yaml.safe_load((HERE / "replica.yaml").read_text())["server"]
    return {"preset": server["sim"]["preset"], "time_scale": server["sim"]["time_scale"],
            "kv_tokens": server["num_blocks"] * server["block_size"], "model": server["served_model_name"],
            "config": server}


def versions() -> dict[str, str]:
    out = {}
    for venv, packages in ((PERF_VENV, ["inference-perf"]), (ROUTERS_VENV, ["vllm-router", "sglang-router"])):
        pip = venv / "bin" / "pip"
        for package in packages:
            try:
                text = subprocess.run([str(pip), "show", package], capture_output=True, text=True, timeout=60, check=False).stdout
                match = re.search(r"^Version: (.+)$", text, re.MULTILINE)
                out[package.replace("-", "_")] = match.group(1) if match else "?"
            except (OSError, subprocess.SubprocessError):
                out[package.replace("-", "_")] = "?"
    envoy = shutil.which("envoy")
    if envoy:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run([envoy, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
            match = re.search(r"version: \S+/(\d+\.\d+\.\d+)", text)
            out["envoy"] = match.group(1) if match else text.strip()[:80]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short ladder to check the pipeline")
    parser.add_argument("--routers", default=",".join(ALL_ROUTERS), help="comma-separated subset, in run order")
    parser.add_argument("--workloads", default=",".join(ALL_WORKLOADS), help="comma-separated subset")
    parser.add_argument("--rates", help="override every ladder: comma-separated QPS")
    parser.add_argument("--duration", type=int, help="override the stage duration (s)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="directory for routing.{json,md,png}")
    parser.add_argument("--name", default="routing", help="base name of the result files")
    parser.add_argument("--python", default=sys.executable, help="Python that has inferplane installed")
    parser.add_argument("--port-base", type=int, default=28000, help="first of the loopback ports used (base..base+199)")
    parser.add_argument("--inferplane-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override inferplane's generated config, e.g. gateway.num_retries=0 (repeatable)")
    args = parser.parse_args(argv)
    set_ports(args.port_base)
    INFERPLANE_OVERRIDES[:] = args.inferplane_set

    routers = [r for r in args.routers.split(",") if r]
    workloads = [w for w in args.workloads.split(",") if w]
    for r in routers:
        if r not in ALL_ROUTERS:
            parser.error(f"unknown router {r}; choose from {', '.join(ALL_ROUTERS)}")
    for w in workloads:
        if w not in ALL_WORKLOADS:
            parser.error(f"unknown workload {w}; choose from {', '.join(ALL_WORKLOADS)}")
    missing = [str(p) for p in (PERF_VENV / "bin" / "inference-perf", TOKENIZER_DIR / "tokenizer.json")
               if not p.exists()]
    if any(r in ("vllm-router", "sglang-router") for r in routers):
        missing += [str(p) for p in (ROUTERS_VENV / "bin" / "vllm-router", ROUTERS_VENV / "bin" / "sglang-router")
                    if not p.exists()]
    if missing:
        print(f"missing {', '.join(missing)}: run bench/routing/setup.sh first", file=sys.stderr)
        return 2

    ladder_file = yaml.safe_load((HERE / "workloads" / "ladder.yaml").read_text())
    ladders = ladder_file["quick" if args.quick else "full"]
    for w in workloads:
        if args.rates:
            ladders[w]["rates"] = [float(x) for x in args.rates.split(",")]
        if args.duration:
            ladders[w]["duration"] = args.duration

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_root = RUNS_DIR / stamp
    run_root.mkdir(parents=True, exist_ok=True)
    replica = replica_meta()
    meta = {"started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            "mode": "quick" if args.quick else "full", "routers": routers, "workloads": workloads,
            "ladders": {w: ladders[w] for w in workloads}, "replica": replica, "num_replicas": NUM_REPLICAS,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "inferplane_overrides": list(args.inferplane_set),
            "raw": str(run_root.relative_to(REPO))}
    meta.update(versions())
    log(f"routing benchmark ({meta['mode']}): routers {routers}, workloads {workloads}; raw output in {run_root}")

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    rows: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out_dir / f"{args.name}.{ext}" for ext in ("json", "md", "png"))
    results: dict[str, Any] = {"meta": meta, "rows": rows, "routers": infos}
    try:
        for router in routers:
            router_rows, info = bench_router(router, workloads, ladders, run_root, args.python, replica["model"])
            rows.extend(router_rows)
            infos.append(info)
            meta["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            json_path.write_text(json.dumps(results, indent=1))  # partial results survive an interruption
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    meta["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    results["targets"] = check_targets(rows)
    results["rate_ratios"] = rate_ratios(rows)
    json_path.write_text(json.dumps(results, indent=1))
    md_path.write_text(markdown(results))
    plot = subprocess.run([str(PERF_VENV / "bin" / "python"), str(HERE / "plot.py"), str(json_path), str(png_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    if plot.returncode != 0:
        log(f"plot failed: {plot.stderr.strip()[-500:]}")
    log(f"wrote {json_path}, {md_path}, {png_path}")
    print(md_path.read_text())
    return 0 if all(not i.get("error") for i in infos) and len(infos) == len(routers) else 1


if __name__ == "__main__":
    sys.exit(main())
