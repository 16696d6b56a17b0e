"""Gateway benchmark: what Envoy + the picker cost, measured side by side in one run.

1. Throughput: 8 concurrent streaming chat completions (128 generated tokens each, ``ignore_eos``)
   through the gateway vs directly to the same single OpenVINO model server.
2. Added latency: small non-streamed requests, one at a time, to simulated servers (fast time
   scale) directly, through a plain Envoy round-robin, and through Envoy + picker; the picker's
   added latency is the difference between the last two.

Run: ``python bench/gateway/run.py`` (about 5 minutes); writes bench/results/gateway.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from inferplane.gateway.bootstrap import build_bootstrap
from inferplane.gateway.config import GatewayConfig
from inferplane.gateway.envoy import envoy_command

RESULTS = Path(__file__).resolve().parents[1] / "results"
MODEL = "SmolLM2-135M-Instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_up(workdir: Path, replicas: int, server: dict) -> tuple[subprocess.Popen, dict, float]:
    base = free_port()
    ports = {"servers": [base + i for i in range(replicas)], "gateway": free_port()}
    config = {
        "replicas": replicas,
        "server": {"port": base, **server},
        "picker": {"grpc_port": free_port(), "health_port": free_port(), "metrics_port": free_port()},
        "gateway": {"port": ports["gateway"], "admin_port": free_port()},
    }
    path = workdir / f"up-{base}.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "inferplane", "up", "--config", str(path), "--run-dir", str(workdir / f"run-{base}")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout
    for line in process.stdout:
        if "OpenAI base URL" in line:
            return process, ports, time.monotonic() - started
    raise RuntimeError("inferplane up exited before it was ready")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)


async def stream_tokens(client: httpx.AsyncClient, url: str, max_tokens: int) -> int:
    body = {
        "model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": max_tokens,
        "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True,
    }
    tokens = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    return tokens


async def throughput(url: str, concurrency: int, requests: int, max_tokens: int) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        await stream_tokens(client, url, 8)  # warm-up
        queue = list(range(requests))
        total = 0

        async def worker() -> None:
            nonlocal total
            while queue:
                queue.pop()
                # await first: `total += await ...` reads total before the await and so drops what the
                # other workers added while this stream ran
                tokens = await stream_tokens(client, url, max_tokens)
                total += tokens

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.monotonic() - started)


async def latencies(url: str, count: int) -> list[float]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    out = []
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(20):
            (await client.post(f"{url}/v1/chat/completions", json=body)).raise_for_status()
        for _ in range(count):
            started = time.perf_counter()
            (await client.post(f"{url}/v1/chat/completions", json=body)).raise_for_status()
            out.append((time.perf_counter() - started) * 1000)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def plain_envoy(workdir: Path, endpoints: list[str]) -> tuple[subprocess.Popen, int]:
    """Envoy round-robin over the same servers, no picker: the ext_proc filter removed."""
    port = free_port()
    config = GatewayConfig(port=port, admin_port=free_port(), pool_endpoints=endpoints, failure_mode="FailOpen")
    bootstrap = build_bootstrap(config)
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"] = [f for f in manager["http_filters"] if f["name"] != "envoy.filters.http.ext_proc"]
    path = workdir / "envoy-rr.json"
    path.write_text(json.dumps(bootstrap))
    process = subprocess.Popen(envoy_command(config, path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).raise_for_status()
            return process, port
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("plain Envoy did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="inferplane-bench-gateway-"))
    result: dict = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "load1_before": os.getloadavg()[0],
    }

    # 1. Throughput through the gateway vs direct, one OpenVINO replica.
    process, ports, ready_s = start_up(workdir, 1, {})
    try:
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        direct = f"http://127.0.0.1:{ports['servers'][0]}"
        runs = {"gateway": [], "direct": []}
        for _ in range(args.rounds):
            for name, url in (("direct", direct), ("gateway", gateway)):
                runs[name].append(asyncio.run(throughput(url, 8, 16, 128)))
        result["up_ready_s_openvino_1_replica"] = round(ready_s, 1)
        result["throughput_8_streams_tok_s"] = {k: [round(v, 1) for v in vs] for k, vs in runs.items()}
    finally:
        stop(process)

    # 2. Added latency per request, on simulated servers.
    process, ports, ready_s = start_up(workdir, 2, {"engine": "sim", "sim": {"time_scale": 0.01}})
    envoy = None
    try:
        endpoints = [f"127.0.0.1:{p}" for p in ports["servers"]]
        envoy, rr_port = plain_envoy(workdir, endpoints)
        paths = {
            "direct": f"http://{endpoints[0]}",
            "envoy_round_robin": f"http://127.0.0.1:{rr_port}",
            "envoy_picker": f"http://127.0.0.1:{ports['gateway']}",
        }
        samples: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(args.rounds):
            for name, url in paths.items():
                samples[name] += asyncio.run(latencies(url, args.latency_requests // args.rounds))
        result["up_ready_s_sim_2_replicas"] = round(ready_s, 1)
        result["latency_ms"] = {
            name: {"p50": round(percentile(v, 0.5), 2), "p90": round(percentile(v, 0.9), 2), "p99": round(percentile(v, 0.99), 2), "n": len(v)}
            for name, v in samples.items()
        }
        rr, picked = result["latency_ms"]["envoy_round_robin"], result["latency_ms"]["envoy_picker"]
        result["picker_added_ms"] = {q: round(picked[q] - rr[q], 2) for q in ("p50", "p90", "p99")}
    finally:
        if envoy:
            envoy.terminate()
            envoy.wait(10)
        stop(process)
    result["load1_after"] = os.getloadavg()[0]

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(result, indent=1) + "\n")
    t, lat = result["throughput_8_streams_tok_s"], result["latency_ms"]
    lines = [
        "# Gateway benchmark",
        "",
        f"{result['date']}, {result['machine']}, load average {result['load1_before']:.1f} before / "
        f"{result['load1_after']:.1f} after; `python bench/gateway/run.py` (one run, paths alternated).",
        "",
        "## Aggregate generated tok/s, 8 concurrent streams, one OpenVINO SmolLM2 server",
        "",
        "| path | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | mean |",
        "|---|" + "---|" * (args.rounds + 1),
    ]
    for name in ("direct", "gateway"):
        lines.append(f"| {name} | " + " | ".join(f"{v}" for v in t[name]) + f" | {statistics.mean(t[name]):.1f} |")
    lines += [
        "",
        "## Latency of a small request (max_tokens 1, simulated servers at time_scale 0.01), ms",
        "",
        "| path | p50 | p90 | p99 | n |",
        "|---|---|---|---|---|",
    ]
    for name, q in lat.items():
        lines.append(f"| {name} | {q['p50']} | {q['p90']} | {q['p99']} | {q['n']} |")
    added = result["picker_added_ms"]
    lines += [
        "",
        f"Picker added latency (Envoy + picker minus plain Envoy): p50 {added['p50']} ms, p90 {added['p90']} ms, "
        f"p99 {added['p99']} ms.",
        "",
        f"`inferplane up` to ready: {result['up_ready_s_openvino_1_replica']} s (1 OpenVINO replica), "
        f"{result['up_ready_s_sim_2_replicas']} s (2 simulated replicas).",
    ]
    (RESULTS / "gateway.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
