"""The flow-control benchmark's priority scenario in virtual time: what the replicas allow, without CPU noise.

    python bench/flowcontrol/virtual_time.py [--seconds 4000] [--out bench/results/flowcontrol-virtual]

The same two replicas as bench/flowcontrol/run.py (the simulator's llama3-8b-h100 preset, 8 sequences,
512 batched tokens, vLLM priority scheduling, 64 output tokens, ~45-token prompts), stepped by one event
heap instead of asyncio sleeps: no HTTP, no Envoy, no picker process, so no machine noise. The picker is
reduced to what matters here:
  - sheddable requests wait in a gate while the pool is saturated (the utilization detector's mean
    ``waiting / queue_threshold``, counting requests sent but not yet at the server);
  - each request goes to a replica either at random or to the one with the fewest requests in flight that
    it competes with (critical: critical only; the rank-aware in-flight count of ``ranked_scorers``).
It reports critical TTFT alone at 60 % of capacity and with sheddable work offered at 3x the spare
capacity, and the sheddable throughput as a share of the spare capacity, all in modelled seconds
(steady state: the first 200 s are left out).
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import write_results

from inferplane.sim.config import OutputLengthConfig
from inferplane.sim.cost_model import get_preset
from inferplane.sim.replica import Replica, ReplicaSpec
from inferplane.sim.tokenizer import get_tokenizer

REPLICAS, MAX_NUM_SEQS, OUTPUT_TOKENS, QUEUE_THRESHOLD, WARMUP_S = 2, 8, 64, 5.0, 200.0
CRITICAL, SHEDDABLE = -20, 2  # vLLM priorities (lower first), as ranked dispatch writes them


def run(critical_rps: float, sheddable_rps: float, seconds: float, routing: str, seed: int = 1) -> dict:
    preset = get_preset("llama3-8b-h100")
    spec = replace(ReplicaSpec.from_preset(preset), max_num_seqs=MAX_NUM_SEQS, max_num_batched_tokens=512,
                   scheduling_policy="priority")
    tokenizer = get_tokenizer("llama3")
    output = OutputLengthConfig(distribution="fixed", mean=OUTPUT_TOKENS)
    replicas = [Replica(spec, tokenizer, output, seed=i) for i in range(REPLICAS)]
    rng = random.Random(seed)
    events: list[tuple[float, int, str, tuple]] = []
    order = 0

    def push(at: float, kind: str, data: tuple) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (at, order, kind, data))

    for kind, rate in (("critical", critical_rps), ("sheddable", sheddable_rps)):
        t = 0.0
        while rate > 0 and (t := t + rng.expovariate(rate)) < seconds:
            push(t, "arrive", (kind, t))

    busy = [False] * REPLICAS
    in_flight = {"critical": [0] * REPLICAS, "sheddable": [0] * REPLICAS}
    on_the_way = [0] * REPLICAS  # sent, still in the API server (request_overhead_s)
    gate: list[float] = []
    arrived: dict[str, tuple[str, float, int]] = {}
    ttft: dict[str, float] = {}
    ended: list[tuple[str, float]] = []
    overhead = preset.cost.request_overhead_s
    ids = iter(range(10**9))

    def saturated() -> bool:
        return sum((r.scheduler.num_waiting_reported + on_the_way[i]) / QUEUE_THRESHOLD
                   for i, r in enumerate(replicas)) / REPLICAS >= 1.0

    def pick(kind: str) -> int:
        if routing == "random":
            return rng.randrange(REPLICAS)
        competing = in_flight["critical"] if kind == "critical" else [
            c + s for c, s in zip(in_flight["critical"], in_flight["sheddable"])]
        return min(range(REPLICAS), key=lambda i: (competing[i], rng.random()))

    def send(kind: str, arrival: float, now: float) -> None:
        i = pick(kind)
        request_id = f"{kind}-{next(ids)}"
        arrived[request_id] = (kind, arrival, i)
        in_flight[kind][i] += 1
        on_the_way[i] += 1
        push(now + overhead, "admit", (i, request_id, kind))

    def step(i: int, now: float) -> None:
        if not busy[i] and (timed := replicas[i].begin_step()) is not None:
            busy[i] = True
            push(now + timed.duration, "stepped", (i, timed))

    while events:
        now, _, what, data = heapq.heappop(events)
        if what == "arrive":
            kind, arrival = data
            if kind == "sheddable" and (gate or saturated()):
                gate.append(arrival)
            else:
                send(kind, arrival, now)
        elif what == "admit":
            i, request_id, kind = data
            on_the_way[i] -= 1
            prompt = tokenizer.encode(f"request {request_id} " + "x " * 40)
            replicas[i].add_request(request_id, prompt, OUTPUT_TOKENS, ignore_eos=True, arrival_time=now,
                                    priority=CRITICAL if kind == "critical" else SHEDDABLE)
            step(i, now)
        else:
            i, timed = data
            busy[i] = False
            for request in replicas[i].finish_step(timed):
                kind, arrival, _ = arrived[request.request_id]
                ttft.setdefault(request.request_id, now - arrival)
                if request.finish_reason:
                    in_flight[kind][i] -= 1
                    ended.append((kind, now))
            step(i, now)
            while gate and not saturated():
                send("sheddable", gate.pop(0), now)

    def served(kind: str) -> float:
        return sum(1 for k, t in ended if k == kind and WARMUP_S < t <= seconds) / (seconds - WARMUP_S)

    critical = sorted(t for request_id, t in ttft.items() if arrived[request_id][0] == "critical")

    def percentile(p: float) -> float:
        return critical[min(len(critical) - 1, int(p / 100 * len(critical)))] if critical else float("nan")

    return {"critical_rps": round(served("critical"), 3), "sheddable_rps": round(served("sheddable"), 3),
            "ttft_p50_s": round(percentile(50), 4), "ttft_p90_s": round(percentile(90), 4),
            "ttft_p99_s": round(percentile(99), 4), "critical_requests": len(critical),
            "preemptions": sum(r.scheduler.num_preemptions for r in replicas)}


def scenario(routing: str, seconds: float) -> dict:
    capacity = run(0.0, 200.0, min(seconds, 600.0), routing)["sheddable_rps"]  # gate always full
    rate = 0.6 * capacity
    alone = run(rate, 0.0, seconds, routing)
    mixed = run(rate, 3 * (capacity - rate), seconds, routing)
    spare = capacity - mixed["critical_rps"]
    return {"capacity_rps": capacity, "critical_rps": round(rate, 3), "alone": alone, "with_sheddable": mixed,
            "ttft_p90_change": round(mixed["ttft_p90_s"] / alone["ttft_p90_s"] - 1, 3),
            "ttft_p99_change": round(mixed["ttft_p99_s"] / alone["ttft_p99_s"] - 1, 3),
            "sheddable_share_of_spare": round(mixed["sheddable_rps"] / spare, 3)}


def markdown(res: dict) -> str:
    lines = ["# Flow-control priority scenario in virtual time", "",
             f"`python bench/flowcontrol/virtual_time.py --seconds {res['seconds']:g}`: {__doc__.split(chr(10))[0]}",
             "", "Modelled seconds (the real-process benchmark runs these replicas at time_scale 4).", "",
             "| routing | capacity req/s | critical alone TTFT p50 / p90 / p99 | with sheddable p50 / p90 / p99 "
             "| p99 change | sheddable share of spare |", "|---|---:|---|---|---:|---:|"]
    for name, r in res["routing"].items():
        a, m = r["alone"], r["with_sheddable"]
        lines.append(f"| {name} | {r['capacity_rps']} | {a['ttft_p50_s']} / {a['ttft_p90_s']} / {a['ttft_p99_s']} | "
                     f"{m['ttft_p50_s']} / {m['ttft_p90_s']} / {m['ttft_p99_s']} | {r['ttft_p99_change']:+.0%} | "
                     f"{r['sheddable_share_of_spare']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4000.0, help="modelled seconds of arrivals per phase")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "flowcontrol-virtual"))
    args = parser.parse_args()
    res = {"seconds": args.seconds,
           "routing": {name: scenario(key, args.seconds)
                       for name, key in (("at random", "random"), ("rank-aware in-flight", "ranked"))}}
    write_results(args.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
