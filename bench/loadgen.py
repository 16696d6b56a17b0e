"""Load generation shared by the gateway-level benchmarks (filler, flow control).

Open-loop Poisson clients that record, per request, how it ended (status, the
``x-inference-request-dropped-reason`` header, time to the first generated text), and a closed-loop
probe of the pool's capacity straight at the replicas.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

#: Tokens every benchmark request generates (the simulated replicas use a fixed output length).
MAX_TOKENS = 64


def chat_body(i: int, model: str, stream: bool = False, max_tokens: int = MAX_TOKENS) -> dict:
    """A short, unique chat request (no shared prefix between requests)."""
    return {"model": model, "messages": [{"role": "user", "content": f"request {i} " + "x " * 40}],
            "stream": stream, "max_tokens": max_tokens}


def percentile(values: list[float], p: float) -> float:
    """The value at rank ``p``% (nearest rank, no interpolation); NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


@dataclass(slots=True)
class Outcome:
    """How one request ended: HTTP status (0: no answer before the client timeout), the gateway's
    drop reason, seconds to the first generated text (streaming, status 200) and to the end."""

    status: int
    reason: str | None = None
    ttft: float | None = None
    e2e: float | None = None
    #: Seconds from the start of the load to when this request ended.
    ended_at: float = 0.0


#: Seconds at the start of a load phase left out of served rates: the first requests are still running,
#: so nothing completes yet (with ~3 s per request, a 40 s window would read ~8 % low). Steady state only.
WARMUP_S = 8.0


def served_rate(ended_at: list[float], seconds: float, warmup: float = WARMUP_S) -> float:
    """Requests/s that completed inside ``(warmup, seconds]`` of a load phase (its steady state)."""
    return sum(1 for t in ended_at if warmup < t <= seconds) / (seconds - warmup)


async def pool_capacity(urls: list[str], model: str, seconds: float, concurrency: int, stream: bool = False) -> float:
    """Requests/s the replicas complete with ``concurrency`` closed-loop clients each, sent straight
    to them (no gateway admission in the way): every batch slot busy and a queue always waiting.
    ``stream`` as the requests it is compared with (the replicas then do the same work per token);
    counted in the steady state (:func:`served_rate`), like the served rates it is compared with.

    The clients start one by one over the first half of the warm-up. Started together, requests of one
    fixed output length are batched together, finish in the same step and are replaced together: the
    replicas then complete requests in bursts (all 16 of two replicas every ~3 s here), and a window
    counts a whole number of bursts, ±1 burst (±9 % of a 32 s window). Staggered, completions are spread
    out as they are under the open-loop arrivals the capacity is compared with."""
    ended_at: list[float] = []
    clients = concurrency * len(urls)
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as client:
        start = time.monotonic()
        stop = start + seconds

        async def loop(k: int, url: str) -> None:
            i = 0
            await asyncio.sleep(k * WARMUP_S / 2 / clients)
            while time.monotonic() < stop:
                outcome = await _one(client, f"{url}/v1/chat/completions",
                                     chat_body(k * 100000 + i, model, stream=stream), {}, start)
                i += 1
                if outcome.status == 200:
                    ended_at.append(outcome.ended_at)
        await asyncio.gather(*(loop(j * len(urls) + n, url) for j in range(concurrency) for n, url in enumerate(urls)))
    return served_rate(ended_at, seconds)


async def _one(client: httpx.AsyncClient, url: str, body: dict, headers: Mapping[str, str], origin: float) -> Outcome:
    start = time.monotonic()
    first: float | None = None
    try:
        async with client.stream("POST", url, json=body, headers=dict(headers)) as response:
            async for line in response.aiter_lines():
                if first is None and response.status_code == 200 and line.startswith("data: {"):
                    choices = orjson.loads(line[6:]).get("choices") or [{}]
                    if (choices[0].get("delta") or {}).get("content"):
                        first = time.monotonic() - start
            end = time.monotonic()
            return Outcome(response.status_code, response.headers.get("x-inference-request-dropped-reason"),
                           first, end - start, end - origin)
    except httpx.TimeoutException:
        return Outcome(0, "client-timeout", ended_at=time.monotonic() - origin)
    except httpx.TransportError as exc:
        return Outcome(0, type(exc).__name__, ended_at=time.monotonic() - origin)


async def open_loop(base_url: str, model: str, rate: float, seconds: float, headers: Mapping[str, str],
                    seed: int = 1, first_id: int = 0, timeout_s: float = 300.0) -> list[Outcome]:
    """Poisson arrivals of streaming chat requests at ``rate``/s for ``seconds``; waits for all."""
    rng = random.Random(seed)
    url = f"{base_url}/chat/completions"
    async with httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=4096)) as client:
        tasks: list[asyncio.Task[Outcome]] = []
        origin = time.monotonic()
        stop = origin + seconds
        i = first_id
        while time.monotonic() < stop:
            tasks.append(asyncio.create_task(_one(client, url, chat_body(i, model, stream=True), headers, origin)))
            i += 1
            await asyncio.sleep(rng.expovariate(rate))
        return list(await asyncio.gather(*tasks))


def _open_loop_process(*args: object) -> list[Outcome]:
    return asyncio.run(open_loop(*args))  # type: ignore[arg-type]


async def open_loop_apart(base_url: str, model: str, rate: float, seconds: float, headers: Mapping[str, str],
                          seed: int = 1, first_id: int = 0, timeout_s: float = 300.0) -> list[Outcome]:
    """:func:`open_loop` in a process of its own, as separate clients are: a flow's TTFT is then not
    measured through an event loop that also parses every other flow's streamed tokens."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return await asyncio.get_running_loop().run_in_executor(
            pool, _open_loop_process, base_url, model, rate, seconds, dict(headers), seed, first_id, timeout_s)


def ttfts(outcomes: list[Outcome]) -> list[float]:
    return [o.ttft for o in outcomes if o.status == 200 and o.ttft is not None]


def summary(outcomes: list[Outcome], seconds: float) -> dict:
    """Counts by status and drop reason, served rate, TTFT percentiles.

    The served rate divides by the arrival window or, when queued requests were still being served
    after it, by the time until the last request ended (so queued work is not counted as throughput
    of the window)."""
    statuses: dict[str, int] = {}
    for o in outcomes:
        key = str(o.status) if o.reason is None else f"{o.status} {o.reason}"
        statuses[key] = statuses.get(key, 0) + 1
    served = ttfts(outcomes)
    span = max([seconds, *(o.ended_at for o in outcomes)])
    return {"sent": len(outcomes), "outcomes": statuses, "served_rps": round(len(served) / span, 3),
            "span_s": round(span, 1),
            "ttft_p50_s": round(percentile(served, 50), 4), "ttft_p90_s": round(percentile(served, 90), 4),
            "ttft_p99_s": round(percentile(served, 99), 4)}


def write_results(out: str, res: dict, markdown: str) -> None:
    """A benchmark's results: ``OUT.json`` (raw) and ``OUT.md`` (the table), which is also printed."""
    Path(out + ".json").write_text(json.dumps(res, indent=2))
    Path(out + ".md").write_text(markdown)
    print(markdown)
