"""Ranked dispatch end to end: real Envoy → picker with ``engine_priority`` → one simulated vLLM server
scheduling by priority (two sequences at a time, saturated at one waiting request).

What a user of a shared pool checks: a critical request is not held behind sheddable work that fills
the pool, and a light tenant is not held behind a heavy tenant of its own band; both finish while the
long requests that saturate the pool are still running, and the excess of the saturating flow waits in
the picker's queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from platform_runner import Platform, start_platform
from test_flowcontrol_envoy import FILLER_TOKENS, MODEL, completion, eventually, picker_metric

QUEUE_SIZE = "inference_extension_flow_control_queue_size"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    running = start_platform(
        tmp_path_factory.mktemp("ranked"),
        replicas=1,
        server={
            "engine": "sim",
            "served_model_name": MODEL,
            "max_num_seqs": 2,
            "scheduling_policy": "priority",
            "sim": {"preset": "llama3-8b-h100", "output_length": {"distribution": "fixed", "mean": 4096,
                                                                   "max": 4096}},
        },
        picker={
            "objectives": {"critical": 10, "standard": 0, "batch": -1},
            "default_objective": "standard",
            "engine_priority": True,
            "saturation": {"type": "utilization-detector", "parameters": {"queue_threshold": 1}},
            "flow_control": {"enabled": True, "queue_sheddable": True},
        },
        timeout_s=120,
    )
    yield running
    assert running.stop() == 0, "\n".join(running.lines[-40:])


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=60) as c:
        yield c


async def saturate(client: httpx.AsyncClient, platform: Platform, objective: str,
                   tenant: str) -> list[asyncio.Task[httpx.Response]]:
    """Long requests of one flow until the excess waits in the picker's queue (2 run, 1 or 2 wait at the server,
    depending on when scrapes land)."""
    long_requests = []
    for _ in range(4):
        headers, body = completion(objective, FILLER_TOKENS, tenant=tenant)
        long_requests.append(asyncio.ensure_future(client.post("/completions", json=body, headers=headers)))
    await eventually(lambda: picker_metric(platform, QUEUE_SIZE, fairness_id=tenant) >= 1)
    return long_requests


async def finishes_first(client: httpx.AsyncClient, long_requests: list[asyncio.Task[httpx.Response]],
                         objective: str, tenant: str) -> None:
    headers, body = completion(objective, 10, tenant=tenant)
    short = await client.post("/completions", json=body, headers=headers)
    assert short.status_code == 200, short.text
    assert not any(task.done() for task in long_requests), "the short request waited for the long ones"
    for reply in await asyncio.gather(*long_requests):
        assert reply.status_code == 200, reply.text


async def test_critical_goes_past_a_pool_saturated_by_sheddable_work(platform: Platform,
                                                                    client: httpx.AsyncClient) -> None:
    fillers = await saturate(client, platform, "batch", "filler")
    await finishes_first(client, fillers, "critical", "vip")
    assert picker_metric(platform, "inference_extension_flow_control_request_queue_duration_seconds_count",
                         fairness_id="vip", priority="10", outcome="Dispatched") == 1


async def test_light_tenant_goes_past_a_heavy_tenant_of_its_band(platform: Platform,
                                                                client: httpx.AsyncClient) -> None:
    heavy = await saturate(client, platform, "standard", "heavy")
    await finishes_first(client, heavy, "standard", "light")
