"""Scheduling cost alone: the default profile over N endpoints, in-process, CPU time per call.

Endpoints get random scraped load; requests are chat bodies with ~``prompt_chars`` of system
prompt from 50 groups (prefix-cache scorer at work) or tiny ones. Each call is timed with the
process CPU clock (the machine is shared: wall time would count other work). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import orjson

from inferplane.picker.config import PickerConfig
from inferplane.picker.endpoints import Datastore, EndpointMetrics
from inferplane.picker.metrics import PickerMetrics
from inferplane.picker.request import from_headers, parse_body
from inferplane.picker.scheduling.profile import build_scheduler


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e3, 4)


def measure(endpoints: int, requests: int, prompt_chars: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    datastore = Datastore(staleness=1e9)
    datastore.set_addresses([f"10.0.{i // 250}.{i % 250}:8000" for i in range(endpoints)])
    for ep in datastore.all():
        datastore.record_scrape(ep, EndpointMetrics(waiting=rng.randint(0, 5), kv_cache_usage=rng.random()))
    scheduler = build_scheduler(PickerConfig(), datastore, PickerMetrics())
    groups = [f"system prompt of group {g} " * max(1, prompt_chars // 25) for g in range(50)]
    bodies = []
    for i in range(requests):
        messages = [{"role": "user", "content": f"request {i}"}]
        if prompt_chars:
            messages.insert(0, {"role": "system", "content": rng.choice(groups)})
        bodies.append(orjson.dumps({"model": "m", "messages": messages, "max_tokens": 1}))
    parse, schedule = [], []
    endpoints_list = datastore.all()
    for body in bodies:
        t0 = time.process_time()
        request = from_headers({":path": "/v1/chat/completions"})
        parse_body(request, body)
        t1 = time.process_time()
        picked = scheduler.schedule(request)
        t2 = time.process_time()
        picked[0].in_flight += 1
        if rng.random() < 0.5:  # keep in-flight counts moving
            rng.choice(endpoints_list).in_flight = 0
        parse.append(t1 - t0)
        schedule.append(t2 - t1)
    return {"endpoints": endpoints, "requests": requests, "prompt_chars": prompt_chars,
            "parse_ms_p50": _pct(parse, 0.5), "schedule_ms_p50": _pct(schedule, 0.5),
            "schedule_ms_p90": _pct(schedule, 0.9), "schedule_ms_p99": _pct(schedule, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--prompt-chars", type=int, nargs="+", default=[0, 2000])
    args = parser.parse_args()
    for chars in args.prompt_chars:
        print(json.dumps(measure(args.endpoints, args.requests, chars)), flush=True)


if __name__ == "__main__":
    main()
