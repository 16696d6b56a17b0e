"""Filler-traffic benchmark: the Batch API dispatcher and the async processor on simulated replicas.

    python bench/filler/run.py [--batch 5000] [--phase-s 30] [--out bench/results/filler]

Phases (one `inferplane up` with sim replicas; picker objectives critical=10, batch=-1):
  1. pool capacity: closed-loop clients straight at the replicas, 2× max_num_seqs each → req/s
  2. batch alone on the idle pool → req/s, as a share of (1)
  3. critical alone at ~60 % of (1), streaming → TTFT p99 (to the first generated text)
  4. critical at the same rate + the batch → critical TTFT p99, batch req/s as a share of the spare capacity
  5. async queue (real Redis) with the worker killed -9 twice → lost, duplicates
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "jobs"))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import MAX_TOKENS, chat_body, open_loop_apart, percentile, pool_capacity, ttfts, write_results
from platform_runner import start_platform

from inferplane.jobs.config import DispatchConfig
from inferplane.jobs.db import open_database
from inferplane.jobs.filestore import FileStore
from inferplane.jobs.sender import Sender
from inferplane.jobs.store import Store
from inferplane.jobs.worker import BatchWorker

MODEL_BODY = {"max_tokens": MAX_TOKENS}
CRITICAL = {"x-llm-d-inference-objective": "critical"}


async def run_batch(tmp: Path, gateway: str, model: str, n: int, concurrency: int,
                    stop_after_s: float | None = None, metrics_url: str | None = None,
                    target_queue: float = 0.0, probe: dict | None = None) -> tuple[float, int]:
    """The real dispatcher (store + worker) on n requests; returns (req/s, completed)."""
    store = Store(await open_database(f"sqlite:///{tmp}/bench-{time.time_ns()}.db"))
    await store.init()
    files = FileStore(str(tmp / "files"))
    lines = b"\n".join(orjson.dumps({"custom_id": f"b-{i}", "method": "POST", "url": "/v1/chat/completions",
                                     "body": chat_body(i, model)}) for i in range(n))
    await files.put("file-in", lines)
    from inferplane.jobs.batches import new_batch
    batch = new_batch("file-in", "/v1/chat/completions", "24h", 86400, None)
    await store.add_batch(batch)
    sender = Sender(DispatchConfig(gateway_url=gateway, objective="batch", max_concurrency=concurrency,
                                   pool_metrics_url=metrics_url, target_queue=target_queue))
    worker = BatchWorker(store, files, sender, 0.2)
    if probe is not None:
        probe["worker"] = worker
    start = time.monotonic()
    task = asyncio.create_task(worker.drive(batch["id"]))
    try:
        if stop_after_s is None:
            await task
        else:
            await asyncio.wait([task], timeout=stop_after_s)
    finally:
        elapsed = time.monotonic() - start
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sender.aclose()
    counts = await store.counts(batch["id"])
    if probe is not None:
        probe["counts"] = counts
    await store.db.close()
    return counts["completed"] / elapsed, counts["completed"]


def async_kill_test(tmp: Path, gateway: str, model: str, n: int) -> dict:
    import redis
    import yaml
    from jobs_support import RedisServer, wait_for

    server = RedisServer(tmp)
    try:
        r = redis.Redis.from_url(server.url)
        for i in range(n):
            r.xadd("jobs", {"message": orjson.dumps({"id": f"m-{i}", "created": time.time(), "deadline": None,
                                                     "payload": chat_body(i, model), "metadata": {}})})
        cfg = tmp / "async.yaml"
        cfg.write_text(yaml.safe_dump({"async": {"source": f"{server.url}?stream=jobs&group=g", "claim_idle_s": 2.0,
                                                 "max_in_flight": 64, "dispatch": {"gateway_url": gateway}}}))

        def start(name: str) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "inferplane.jobs", "async", "run", "--config", str(cfg),
                                     "--consumer", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        t0 = time.monotonic()
        worker = start("w1")
        for k, target in enumerate((n // 3, 2 * n // 3)):
            wait_for(lambda target=target: r.xlen("jobs-results") >= target, 600, 0.05)
            worker.kill()
            worker.wait(10)
            worker = start(f"w{k + 2}")
        wait_for(lambda: r.xlen("jobs-results") >= n and r.xpending("jobs", "g")["pending"] == 0, 600, 0.1)
        elapsed = time.monotonic() - t0
        time.sleep(3)
        worker.terminate()
        worker.wait(15)
        ids = [json.loads(f[b"result"])["id"] for _, f in r.xrange("jobs-results")]
        ok = sum(1 for _, f in r.xrange("jobs-results") if json.loads(f[b"result"])["status_code"] == 200)
        return {"messages": n, "kills": 2, "results": len(ids), "lost": n - len(set(ids)),
                "duplicates": len(ids) - len(set(ids)), "status_200": ok, "seconds": round(elapsed, 1)}
    finally:
        server.stop()


async def main_async(args: argparse.Namespace, tmp: Path, platform) -> dict:
    base = platform.base_url
    gateway = base[:-3]
    model = (httpx.get(f"{base}/models").json()["data"][0]["id"])
    res: dict = {"model": model, "config": {"replicas": args.replicas, "batch_requests": args.batch, "phase_s": args.phase_s,
                            "max_tokens": MODEL_BODY["max_tokens"], "batch_concurrency": args.concurrency,
                            "adaptive_window": args.adaptive, "target_queue": args.target_queue,
                            "engine_priority": args.engine_priority, "max_num_seqs": args.max_num_seqs,
                            "num_blocks": args.num_blocks, "time_scale": args.time_scale,
                            "rounds": args.rounds, "queue_threshold": args.queue_threshold}}
    urls = [platform.server_url(i) for i in range(args.replicas)]
    cap = await pool_capacity(urls, model, args.phase_s, 2 * args.max_num_seqs)
    res["saturated_rps"] = round(cap, 2)
    window = {"metrics_url": f"http://127.0.0.1:{platform.ports['metrics']}/metrics" if args.adaptive else None,
              "target_queue": args.target_queue}
    rps, completed = await run_batch(tmp, gateway, model, args.batch, args.concurrency, **window)
    res["batch_alone"] = {"rps": round(rps, 2), "completed": completed, "share_of_saturated": round(rps / cap, 3)}
    rate = 0.6 * cap
    # Critical alone and critical + batch alternate for --rounds rounds (same arrivals per round), and
    # each side's TTFTs are pooled: a p99 of one short phase is a handful of requests, and this shared
    # machine's noise comes in bursts that alternating spreads over both sides.
    alone: list[float] = []
    mixed: list[float] = []
    batch_done = 0.0
    batch_time = 0.0
    probe: dict = {}
    for round_ in range(args.rounds):
        # fresh prompt ids on each side (no prefix-cache hits from the other side or the batch), same lengths
        alone += ttfts(await open_loop_apart(base, model, rate, args.phase_s, CRITICAL, seed=round_,
                                             first_id=10_000_000 + 2_000_000 * round_))
        probe = {}
        batch_task = asyncio.create_task(run_batch(tmp, gateway, model, args.batch, args.concurrency,
                                                   stop_after_s=args.phase_s + 4, probe=probe, **window))
        await asyncio.sleep(2)
        c0, t0 = probe["worker"].results_recorded, time.monotonic()
        mixed += ttfts(await open_loop_apart(base, model, rate, args.phase_s, CRITICAL, seed=round_,
                                             first_id=11_000_000 + 2_000_000 * round_))
        c1, t1 = probe["worker"].results_recorded, time.monotonic()
        await batch_task
        batch_done += c1 - c0
        batch_time += t1 - t0
    seconds = args.phase_s * args.rounds
    res["critical_alone"] = {"rate_rps": round(rate, 2), "rounds": args.rounds,
                             "ttft_p50_s": round(percentile(alone, 50), 4), "ttft_p90_s": round(percentile(alone, 90), 4),
                             "ttft_p99_s": round(percentile(alone, 99), 4), "n": len(alone)}
    res["critical_with_batch"] = {"ttft_p50_s": round(percentile(mixed, 50), 4),
                                  "ttft_p90_s": round(percentile(mixed, 90), 4),
                                  "ttft_p99_s": round(percentile(mixed, 99), 4), "n": len(mixed),
                                  "ttft_p99_change": round(percentile(mixed, 99) / percentile(alone, 99) - 1, 3)}
    brps = batch_done / batch_time
    spare = cap - len(mixed) / seconds
    res["batch_with_critical"] = {"rps": round(brps, 2), "results_in_window": int(batch_done),
                                  "batch_counts": probe.get("counts"),
                                  "critical_rps": round(len(mixed) / seconds, 2), "spare_rps": round(spare, 2),
                                  "share_of_spare": round(brps / spare, 3) if spare > 0 else None}
    return res


def markdown(res: dict) -> str:
    a = res.get("async_kill", {})
    return "\n".join([
        "# Filler traffic benchmark (batch + async on simulated replicas)", "",
        f"Config: {json.dumps(res['config'])}", "",
        "| measurement | value | target |", "|---|---|---|",
        f"| pool capacity (closed loop, straight at the replicas) | {res['saturated_rps']} req/s | |",
        f"| batch alone | {res['batch_alone']['rps']} req/s = {res['batch_alone']['share_of_saturated']:.0%} of saturated | ≥ 95 % |",
        f"| critical alone @60 % TTFT p50 / p90 / p99 ({res['critical_alone'].get('rounds', 1)} rounds, "
        f"{res['critical_alone']['n']} requests) | {res['critical_alone']['ttft_p50_s']} / "
        f"{res['critical_alone'].get('ttft_p90_s')} / {res['critical_alone']['ttft_p99_s']} s | |",
        f"| critical + batch TTFT p50 / p90 / p99 | {res['critical_with_batch']['ttft_p50_s']} / "
        f"{res['critical_with_batch'].get('ttft_p90_s')} / {res['critical_with_batch']['ttft_p99_s']} s "
        f"(p99 {res['critical_with_batch']['ttft_p99_change']:+.0%}) | p99 ≤ +10 % |",
        f"| batch during critical | {res['batch_with_critical']['rps']} req/s = {res['batch_with_critical']['share_of_spare']} of spare | ≥ 0.90 |",
        f"| async queue, worker killed -9 twice | {a.get('messages')} msgs, lost {a.get('lost')}, duplicates {a.get('duplicates')} | 0 / 0 |",
        ""])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--async-messages", type=int, default=5000)
    parser.add_argument("--phase-s", type=float, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="alternating critical-alone / critical+batch rounds")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--queue-threshold", type=float, default=1)
    parser.add_argument("--evict", action="store_true")
    parser.add_argument("--adaptive", action="store_true", help="batch uses the AIMD window on the pool queue")
    parser.add_argument("--target-queue", type=float, default=0.0)
    parser.add_argument("--engine-priority", action="store_true",
                        help="replicas schedule by priority (vLLM --scheduling-policy priority) and the picker "
                             "hands them each objective's priority")
    parser.add_argument("--num-blocks", type=int, default=None, help="KV blocks per replica (preset default)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="simulated time per modelled second (>1: slower replicas, so the Python processes on "
                             "this machine's few cores add proportionally less noise)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "filler"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="filler-"))
    # Replicas that saturate well below what 2 CPU cores of Python can push: 8 sequences each,
    # 64 output tokens (~0.75 s per request on the llama3-8b-h100 preset).
    server = {"engine": "sim", "max_num_seqs": args.max_num_seqs, "max_num_batched_tokens": 512,
              "sim": {"output_length": {"distribution": "fixed", "mean": MODEL_BODY["max_tokens"]},
                      "time_scale": args.time_scale}}
    if args.num_blocks:
        server["num_blocks"] = args.num_blocks
    if args.engine_priority:
        server["scheduling_policy"] = "priority"
    picker = {"objectives": {"critical": 10, "batch": -1}, "engine_priority": args.engine_priority,
              "flow_control": {"enabled": True, "queue_sheddable": True, "evict_sheddable": args.evict,
                               "bands": [{"priority": -1, "max_requests": 100000, "ttl": 3600}]},
              "saturation": {"type": "utilization-detector",
                             "parameters": {"queue_threshold": args.queue_threshold, "kv_cache_threshold": 0.8}}}
    res_config = {"server": server, "picker": picker}
    platform = start_platform(tmp, replicas=args.replicas, server=server, picker=picker)
    try:
        res = asyncio.run(main_async(args, tmp, platform))
        res["platform"] = res_config
        res["async_kill"] = async_kill_test(tmp, platform.base_url[:-3], res["model"], args.async_messages)
    finally:
        platform.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    write_results(args.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
