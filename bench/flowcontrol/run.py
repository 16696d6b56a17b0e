"""Flow-control benchmark (issue 4): priorities and tenant fairness on one shared pool of simulated replicas.

    python bench/flowcontrol/run.py [--phase-s 40] [--time-scale 4] [--out bench/results/flowcontrol]

One `inferplane up` (sim replicas, vLLM priority scheduling; picker flow control with objectives
critical=10, standard=0, sheddable=-1, and the objectives' priorities handed to the replicas), then:
  1. pool capacity: closed-loop clients of streaming requests straight at the replicas → req/s
  2. critical alone at ~60 % of capacity → TTFT p99
  3. the same critical traffic plus sheddable traffic offered at 3x the remaining capacity →
     critical TTFT p99 vs (2); sheddable served req/s vs the spare capacity; how every sheddable
     request ended (200, or 429/503 with the gateway's reason; status 0 would mean it hung)
  4. tenant "light" alone at 10 % of capacity → TTFT; then with tenant "heavy" offering 10x that
     (both in one band) → light's TTFT change
  5. saturation share: light offering 60 % and heavy 600 % of capacity, equal weights → served
     req/s per tenant vs its weighted share (50 %)
  6. canary: 10,000 tiny requests for `app`, which the picker rewrites 90/10 to the base model and a
     LoRA adapter of it → the share the adapter answered (from each response's `model`)
Every phase uses open-loop Poisson arrivals of streaming requests, each flow from a client process of its
own; TTFT is to the first generated text. Served rates, the capacity of (1) included, count the requests
completed in the steady state of the window (after a warm-up of loadgen.WARMUP_S, before the end of the
arrivals: queued work drained after it is left out); saturation shares are of what the pool served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import (MAX_TOKENS, WARMUP_S, open_loop_apart, percentile, pool_capacity, served_rate, summary, ttfts,
                     write_results)
from platform_runner import Platform, start_platform

OBJECTIVE = "x-llm-d-inference-objective"
TENANT = "x-llm-d-inference-fairness-id"
BASE_MODEL = "sim-base"
CANARY_ALIAS = "app"  # the name clients send; the picker rewrites it 90/10
CANARY_ADAPTER = "sim-canary"  # a LoRA adapter of the base model, served by every replica


def change(after: float, before: float) -> float:
    return round(after / before - 1, 3)


def window_rps(outcomes: list, seconds: float) -> float:
    """Requests/s completed (200) in the steady state of the arrival window: what the pool served while all
    flows offered load (the warm-up, before the first requests can finish, and requests drained from the queues
    after the window do not count)."""
    return served_rate([o.ended_at for o in outcomes if o.status == 200], seconds)


async def phases(args: argparse.Namespace, platform: Platform) -> dict:
    base = platform.base_url
    model = httpx.get(f"{base}/models").json()["data"][0]["id"]
    urls = [platform.server_url(i) for i in range(args.replicas)]
    seconds = args.phase_s
    res: dict = {"model": model}

    cap = await pool_capacity(urls, model, seconds, 2 * args.max_num_seqs, stream=True)
    res["capacity_rps"] = round(cap, 3)

    # -- priorities: critical at 60 %, sheddable offered at 3x what is left -------------------
    critical = {OBJECTIVE: "critical"}
    rate = 0.6 * cap
    # Critical alone and critical + sheddable alternate for --rounds rounds, TTFTs pooled per side: a p99
    # of one short phase is a handful of requests, and this shared machine's noise comes in bursts.
    # Same arrivals (seed) on both sides of a round, fresh prompt ids (no prefix-cache hits across sides).
    alone: list = []
    mixed: list = []
    shed: list = []
    shed_window = critical_window = 0.0
    for r in range(args.rounds):
        alone += await open_loop_apart(base, model, rate, seconds, critical, seed=1 + r, first_id=6_000_000 + 10_000 * r)
        round_mixed, round_shed = await asyncio.gather(
            open_loop_apart(base, model, rate, seconds, critical, seed=1 + r, first_id=7_000_000 + 10_000 * r),
            open_loop_apart(base, model, 3 * (cap - rate), seconds, {OBJECTIVE: "sheddable"}, seed=20 + r,
                      first_id=1_000_000 + 100_000 * r),
        )
        mixed += round_mixed
        shed += round_shed
        shed_window += window_rps(round_shed, seconds) / args.rounds
        critical_window += window_rps(round_mixed, seconds) / args.rounds
        await drained(platform)
    spare = cap - critical_window
    shed_summary = summary(shed, seconds * args.rounds)
    res["priority"] = {
        "rounds": args.rounds,
        "critical_rate_rps": round(rate, 3),
        "critical_alone": summary(alone, seconds * args.rounds),
        "critical_with_sheddable": summary(mixed, seconds * args.rounds),
        "critical_ttft_p99_change": change(percentile(ttfts(mixed), 99), percentile(ttfts(alone), 99)),
        "critical_ttft_p90_change": change(percentile(ttfts(mixed), 90), percentile(ttfts(alone), 90)),
        "sheddable_offered_rps": round(3 * (cap - rate), 3),
        "sheddable": shed_summary,
        "spare_rps": round(spare, 3),
        "sheddable_window_rps": round(shed_window, 3),
        "sheddable_share_of_spare": round(shed_window / spare, 3) if spare > 0 else None,
        "sheddable_unanswered": sum(1 for o in shed if o.status == 0),
        "sheddable_errors_without_reason": sum(1 for o in shed if o.status not in (0, 200) and not o.reason),
    }

    # -- tenants in one band --------------------------------------------------------------------
    light, heavy = {OBJECTIVE: "standard", TENANT: "light"}, {OBJECTIVE: "standard", TENANT: "heavy"}
    light_rate = 0.1 * cap
    light_alone = await open_loop_apart(base, model, light_rate, seconds, light, seed=3, first_id=2_000_000)
    light_mixed, heavy_mixed = await asyncio.gather(
        open_loop_apart(base, model, light_rate, seconds, light, seed=3, first_id=8_000_000),
        open_loop_apart(base, model, 10 * light_rate, seconds, heavy, seed=4, first_id=3_000_000),
    )
    res["tenants"] = {
        "light_rate_rps": round(light_rate, 3),
        "light_alone": summary(light_alone, seconds),
        "light_with_heavy": summary(light_mixed, seconds),
        "heavy": summary(heavy_mixed, seconds),
        "light_ttft_p90_change": change(percentile(ttfts(light_mixed), 90), percentile(ttfts(light_alone), 90)),
        "light_ttft_p99_change": change(percentile(ttfts(light_mixed), 99), percentile(ttfts(light_alone), 99)),
    }

    light_sat, heavy_sat = await asyncio.gather(
        open_loop_apart(base, model, 0.6 * cap, seconds, light, seed=5, first_id=4_000_000),
        open_loop_apart(base, model, 6.0 * cap, seconds, heavy, seed=6, first_id=5_000_000),
    )
    light_window, heavy_window = window_rps(light_sat, seconds), window_rps(heavy_sat, seconds)
    res["saturation"] = {
        "light_offered_rps": round(0.6 * cap, 3),
        "heavy_offered_rps": round(6.0 * cap, 3),
        "light": summary(light_sat, seconds),
        "heavy": summary(heavy_sat, seconds),
        "light_window_rps": round(light_window, 3),
        "heavy_window_rps": round(heavy_window, 3),
        # shares of what the saturated pool served inside the window (not of the closed-loop estimate)
        "light_share_of_served": round(light_window / (light_window + heavy_window), 3),
        "heavy_share_of_served": round(heavy_window / (light_window + heavy_window), 3),
        "served_vs_capacity": round((light_window + heavy_window) / cap, 3),
        "unanswered": sum(1 for o in [*light_sat, *heavy_sat] if o.status == 0),
    }

    await drained(platform)
    res["canary"] = await canary(base, args.canary_requests)
    return res


async def drained(platform: Platform, limit_s: float = 120.0) -> None:
    """Until the picker's queues are empty (the saturation phase leaves the heavy tenant's backlog)."""
    url = f"http://127.0.0.1:{platform.ports['metrics']}/metrics"
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            text = (await client.get(url)).text
            queued = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                         if line.startswith("inference_extension_flow_control_queue_size{"))
            if queued == 0:
                return
            await asyncio.sleep(0.5)


async def canary(base: str, requests: int, concurrency: int = 32) -> dict:
    """``requests`` tiny completions for the rewritten name ``app`` (90 % base model, 10 % the canary
    adapter): which model answered, counted from the responses."""
    served: dict[str, int] = {}
    errors: dict[int, int] = {}
    next_id = iter(range(requests))
    body = {"model": CANARY_ALIAS, "prompt": "Say hello.", "max_tokens": 1}
    started = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        async def worker() -> None:
            for _ in next_id:
                reply = await client.post("/completions", json=body, headers={OBJECTIVE: "standard"})
                if reply.status_code == 200:
                    name = reply.json()["model"]
                    served[name] = served.get(name, 0) + 1
                else:
                    errors[reply.status_code] = errors.get(reply.status_code, 0) + 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    total = sum(served.values())
    share = served.get(CANARY_ADAPTER, 0) / total if total else 0.0
    return {"requests": requests, "seconds": round(time.monotonic() - started, 1), "served_by_model": served,
            "errors": errors, "canary_share": round(share, 4), "target_share": 0.1,
            "within_2_points": abs(share - 0.1) <= 0.02}


def _outcomes(s: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(s["outcomes"].items()))


def markdown(res: dict, command: str) -> str:
    p, t, s, c = res["priority"], res["tenants"], res["saturation"], res["canary"]
    lines = [
        "# Flow-control benchmark (priorities and tenants on simulated replicas)", "",
        f"Config: `{json.dumps(res['config'])}`", "",
        "Pool capacity (closed loop of streaming requests straight at the replicas, steady state): "
        f"**{res['capacity_rps']} req/s**.", "",
        "| measurement | value | target |", "|---|---|---|",
        f"| critical alone @60 % TTFT p50 / p90 / p99 ({p['rounds']} rounds, {p['critical_alone']['sent']} requests) | "
        f"{p['critical_alone']['ttft_p50_s']} / {p['critical_alone']['ttft_p90_s']} / "
        f"{p['critical_alone']['ttft_p99_s']} s | |",
        f"| critical + sheddable @3x spare TTFT p50 / p90 / p99 | {p['critical_with_sheddable']['ttft_p50_s']} / "
        f"{p['critical_with_sheddable']['ttft_p90_s']} / {p['critical_with_sheddable']['ttft_p99_s']} s "
        f"(p90 {p['critical_ttft_p90_change']:+.0%}, p99 {p['critical_ttft_p99_change']:+.0%}) | p99 ≤ +10 % |",
        f"| sheddable served in the window (steady state: after {WARMUP_S:g} s) | {p['sheddable_window_rps']} req/s = {p['sheddable_share_of_spare']} of "
        f"spare ({p['spare_rps']} req/s) | ≥ 0.90 |",
        f"| sheddable outcomes | {_outcomes(p['sheddable'])}; unanswered {p['sheddable_unanswered']}, "
        f"errors without reason {p['sheddable_errors_without_reason']} | none hangs |",
        f"| light tenant alone @10 % TTFT p90 / p99 | {t['light_alone']['ttft_p90_s']} / "
        f"{t['light_alone']['ttft_p99_s']} s | |",
        f"| light tenant with heavy @10x TTFT p90 / p99 | {t['light_with_heavy']['ttft_p90_s']} / "
        f"{t['light_with_heavy']['ttft_p99_s']} s ({t['light_ttft_p90_change']:+.0%} / "
        f"{t['light_ttft_p99_change']:+.0%}) | ≤ +20 % |",
        f"| saturation, equal weights: light (offers 60 %) / heavy (offers 600 %), share of what the pool served | "
        f"{s['light_share_of_served']:.0%} / {s['heavy_share_of_served']:.0%} ({s['light_window_rps']} / "
        f"{s['heavy_window_rps']} req/s; pool {s['served_vs_capacity']:.0%} of capacity) | each ≥ its share "
        "(light: min(60 %, 50 %)) |",
        f"| saturation outcomes | light: {_outcomes(s['light'])}; heavy: {_outcomes(s['heavy'])} | |",
        f"| canary rewrite 90/10 over {c['requests']} requests: share answered by the canary adapter | "
        f"{c['canary_share']:.2%} (by model: {c['served_by_model']}; errors: {c['errors'] or 'none'}) | "
        "10 % ± 2 points |",
        "", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase-s", type=float, default=40)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--queue-threshold", type=float, default=5)
    parser.add_argument("--time-scale", type=float, default=4.0,
                        help="simulated time per modelled second (>1: slower replicas, less CPU noise)")
    parser.add_argument("--ttl", type=float, default=30.0, help="flow-control queue TTL (s)")
    parser.add_argument("--canary-requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating critical-alone / critical+sheddable rounds")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "flowcontrol"))
    args = parser.parse_args()
    server = {"engine": "sim", "max_num_seqs": args.max_num_seqs, "max_num_batched_tokens": 512,
              "scheduling_policy": "priority", "served_model_name": BASE_MODEL,
              "lora_modules": [f"{CANARY_ADAPTER}=/adapters/{CANARY_ADAPTER}"], "max_loras": 1,
              "sim": {"output_length": {"distribution": "fixed", "mean": MAX_TOKENS}, "time_scale": args.time_scale}}
    canary_rule = {"matches": [{"model": {"value": CANARY_ALIAS}}],
                   "targets": [{"modelRewrite": BASE_MODEL, "weight": 90}, {"modelRewrite": CANARY_ADAPTER, "weight": 10}]}
    picker = {"objectives": {"critical": 10, "standard": 0, "sheddable": -1}, "engine_priority": True,
              "model_rewrites": [{"name": "canary", "rules": [canary_rule]}],
              "flow_control": {"enabled": True, "queue_sheddable": True, "ttl": args.ttl, "max_requests": 2000},
              "saturation": {"type": "utilization-detector",
                             "parameters": {"queue_threshold": args.queue_threshold, "kv_cache_threshold": 0.8}}}
    tmp = Path(tempfile.mkdtemp(prefix="flowcontrol-"))
    platform = start_platform(tmp, replicas=args.replicas, server=server, picker=picker)
    try:
        res = asyncio.run(phases(args, platform))
    finally:
        platform.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    res["config"] = {"warmup_s": WARMUP_S, "replicas": args.replicas, "phase_s": args.phase_s, "rounds": args.rounds, "max_tokens": MAX_TOKENS,
                     "max_num_seqs": args.max_num_seqs, "time_scale": args.time_scale, "ttl": args.ttl,
                     "server": server, "picker": picker}
    command = "python bench/flowcontrol/run.py " + " ".join(sys.argv[1:])
    write_results(args.out, res, markdown(res, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
