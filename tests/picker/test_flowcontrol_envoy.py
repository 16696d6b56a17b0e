"""Flow control end to end: real Envoy → picker (ext_proc) → one simulated vLLM server.

The server runs one sequence at a time and the saturation threshold is one waiting request, so
two long "filler" requests (one running, one waiting at the server) saturate the pool; what
arrives next waits in the picker's queues.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from platform_runner import Platform, start_platform

MODEL = "sim-model"
FILLER_TOKENS = 250  # ~3 s at the llama3-8b-h100 preset's inter-token latency


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    running = start_platform(
        tmp_path_factory.mktemp("flowcontrol"),
        replicas=1,
        server={
            "engine": "sim",
            "served_model_name": MODEL,
            "max_num_seqs": 1,
            "sim": {"preset": "llama3-8b-h100", "output_length": {"distribution": "fixed", "mean": 4096,
                                                                   "max": 4096}},
        },
        picker={
            "objectives": {"critical": 10, "standard": 0, "short-ttl": 1, "batch": -1},
            "default_objective": "standard",
            "saturation": {"type": "utilization-detector", "parameters": {"queue_threshold": 1}},
            "flow_control": {"enabled": True, "evict_sheddable": True, "bands": [{"priority": 1, "ttl": 0.5}]},
        },
        timeout_s=120,
    )
    yield running
    assert running.stop() == 0, "\n".join(running.lines[-40:])


def picker_metric(platform: Platform, name: str, **labels: str) -> float:
    """Sum of the picker's samples of ``name`` whose labels include ``labels``."""
    text = httpx.get(f"http://127.0.0.1:{platform.ports['metrics']}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name)] not in " {":
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def eventually(condition, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.05)


def completion(objective: str, max_tokens: int, tenant: str = "") -> tuple[dict, dict]:
    headers = {"x-llm-d-inference-objective": objective}
    if tenant:
        headers["x-llm-d-inference-fairness-id"] = tenant
    body = {"model": MODEL, "prompt": "Tell me a story about a lighthouse.", "max_tokens": max_tokens,
            "ignore_eos": True}
    return headers, body


class Saturation:
    """Two fillers in flight: one running, one waiting at the server (the pool is saturated)."""

    def __init__(self, client: httpx.AsyncClient, platform: Platform) -> None:
        self.client = client
        self.platform = platform
        self.fillers: list[asyncio.Task[httpx.Response]] = []

    async def __aenter__(self) -> Saturation:
        for i in range(2):
            headers, body = completion("standard", FILLER_TOKENS, tenant=f"filler{i}")
            self.fillers.append(asyncio.ensure_future(self.client.post("/completions", json=body, headers=headers)))
        await eventually(lambda: picker_metric(self.platform, "inference_extension_flow_control_pool_saturation") >= 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for reply in await asyncio.gather(*self.fillers):
            assert reply.status_code == 200, reply.text


@pytest.fixture
async def client(platform: Platform) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=60) as c:
        yield c


async def test_critical_overtakes_standard_while_saturated(platform: Platform, client: httpx.AsyncClient) -> None:
    finished: list[str] = []

    async def send(name: str, objective: str) -> None:
        headers, body = completion(objective, 10, tenant=name)
        reply = await client.post("/completions", json=body, headers=headers)
        assert reply.status_code == 200, reply.text
        finished.append(name)

    async with Saturation(client, platform):
        low = asyncio.ensure_future(send("low", "standard"))
        await eventually(lambda: picker_metric(platform, "inference_extension_flow_control_queue_size",
                                               fairness_id="low") == 1)
        high = asyncio.ensure_future(send("high", "critical"))
        await eventually(lambda: picker_metric(platform, "inference_extension_flow_control_queue_size",
                                               fairness_id="high") == 1)
        await asyncio.gather(low, high)
    assert finished == ["high", "low"]
    assert picker_metric(platform, "inference_extension_flow_control_request_queue_duration_seconds_count",
                         fairness_id="high", priority="10", outcome="Dispatched") == 1


async def test_sheddable_is_429_and_ttl_expiry_is_503(platform: Platform, client: httpx.AsyncClient) -> None:
    async with Saturation(client, platform):
        headers, body = completion("batch", 10)
        shed = await client.post("/completions", json=body, headers=headers)
        assert shed.status_code == 429
        assert shed.headers["x-inference-request-dropped-reason"] == "rejected-saturated"
        assert shed.json()["error"]["type"] == "rate_limit_exceeded"

        headers, body = completion("short-ttl", 10)
        expired = await client.post("/completions", json=body, headers=headers)
        assert expired.status_code == 503
        assert expired.headers["x-inference-request-dropped-reason"] == "queue-ttl-expired"
        assert "time-to-live" in expired.json()["error"]["message"]


async def test_client_disconnect_while_queued_leaves_the_queue(platform: Platform, client: httpx.AsyncClient) -> None:
    async with Saturation(client, platform):
        headers, body = completion("standard", 10, tenant="impatient")
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/completions", json=body, headers=headers, timeout=1.0)
        await eventually(lambda: picker_metric(platform, "inferplane_picker_dropped_requests_total",
                                               reason="client-disconnected", fairness_id="impatient") == 1)
        assert picker_metric(platform, "inference_extension_flow_control_queue_size", fairness_id="impatient") == 0
        assert picker_metric(platform, "inference_extension_flow_control_request_queue_duration_seconds_count",
                             fairness_id="impatient", outcome="Dispatched") == 0


async def test_waiting_critical_request_evicts_a_running_sheddable_one(
    platform: Platform, client: httpx.AsyncClient
) -> None:
    headers, body = completion("batch", FILLER_TOKENS, tenant="victim")
    victim = asyncio.ensure_future(client.post("/completions", json=body, headers=headers))
    dispatched = "inference_extension_flow_control_request_queue_duration_seconds_count"
    await eventually(lambda: picker_metric(platform, dispatched, fairness_id="victim", outcome="Dispatched") == 1)
    headers, body = completion("standard", FILLER_TOKENS, tenant="filler")
    filler = asyncio.ensure_future(client.post("/completions", json=body, headers=headers))
    await eventually(lambda: picker_metric(platform, "inference_extension_flow_control_pool_saturation") >= 1)

    headers, body = completion("critical", 10, tenant="vip")
    critical = await client.post("/completions", json=body, headers=headers)
    assert critical.status_code == 200, critical.text
    evicted = await victim
    assert evicted.status_code == 429
    assert evicted.headers["x-inference-request-dropped-reason"] == "evicted-for-priority"
    assert (await filler).status_code == 200
