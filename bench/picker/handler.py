"""The ext_proc handler alone: the recorded conversation through ``ExtProcService.Process`` in-process.

No gRPC, no sockets: what the picker's own request logic (parse, admission, scheduling over N
endpoints with random light load, header mutations, response accounting) costs in CPU per request.
Prints one JSON line.

Run: ``python bench/picker/handler.py --conversation conv.json [--endpoints 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from capture import load
from driver import plan, with_counter

from inferplane.picker.config import PickerConfig
from inferplane.picker.endpoints import EndpointMetrics
from inferplane.picker.server import PickerServer


async def _messages(messages: list) -> AsyncIterator:
    for message in messages:
        yield message


async def measure(conversation: Path, endpoints: int, requests: int) -> dict:
    steps = plan(load(conversation))
    server = PickerServer(PickerConfig(endpoints=[f"10.0.{i // 250}.{i % 250 + 1}:8000" for i in range(endpoints)]))
    server.source.refresh()
    rng = random.Random(1)
    for endpoint in server.datastore.all():
        server.datastore.record_scrape(endpoint, EndpointMetrics(waiting=rng.randint(0, 2), running=rng.randint(1, 8),
                                                                 kv_cache_usage=rng.uniform(0.05, 0.5)))
    service = server.service

    async def one(i: int) -> None:
        async for _ in service.Process(_messages([with_counter(m, i) for m, _ in steps]), None):
            pass

    for i in range(200):  # warm-up
        await one(i)
    started = time.process_time()
    for i in range(requests):
        await one(i)
    cpu = time.process_time() - started
    return {"endpoints": endpoints, "requests": requests, "handler_cpu_ms_per_req": round(1e3 * cpu / requests, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversation", type=Path, required=True)
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    try:
        import uvloop
        result = uvloop.run(measure(args.conversation, args.endpoints, args.requests))
    except ImportError:
        result = asyncio.run(measure(args.conversation, args.endpoints, args.requests))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
