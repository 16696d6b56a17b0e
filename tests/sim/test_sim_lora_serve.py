"""Two ``inferplane serve --engine sim`` processes with LoRA adapters, scraped by the picker's real scraper.

The picker's ``lora-affinity-scorer`` reads ``vllm:lora_requests_info``; this checks that what the
model server exports arrives in the picker's datastore as ``max_lora`` / ``running_loras`` /
``waiting_loras`` (the picker is used read-only).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from platform_runner import free_port, wait_healthy

from inferplane.picker.endpoints import Datastore, Endpoint
from inferplane.picker.scraper import MetricsScraper


@contextlib.contextmanager
def sim_server(config_dir: Path, name: str, max_loras: int) -> Iterator[str]:
    """A sim server serving adapters ``a`` and ``b`` with ``max_loras``; yields its ``host:port``."""
    config = config_dir / f"{name}.yaml"
    # time_scale 1: the llama3-8b preset's ~11 ms steps, so a long request keeps running while we look.
    config.write_text(
        "server:\n  engine: sim\n  sim:\n    time_scale: 1.0\n"
        f"  max_loras: {max_loras}\n  lora_modules:\n    - a=/adapters/a\n    - {{name: b, path: /adapters/b}}\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "inferplane", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    config_dir = tmp_path_factory.mktemp("lora-serve")
    with sim_server(config_dir, "one-slot", max_loras=1) as one, sim_server(config_dir, "two-slots", max_loras=2) as two:
        yield one, two


async def until(condition: Callable[[], bool], what: str, attempts: int = 1500) -> None:
    """Poll ``condition`` a bounded number of times (a wait, not a timing assertion)."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


@contextlib.asynccontextmanager
async def long_stream(client: httpx.AsyncClient, address: str, model: str) -> AsyncIterator[None]:
    """A streaming completion that runs (or waits) until the block ends; closing it aborts it."""

    async def run() -> None:
        body = {"model": model, "prompt": "Write a very long story.", "max_tokens": 2000, "ignore_eos": True,
                "stream": True}
        async with client.stream("POST", f"http://{address}/v1/completions", json=body) as response:
            assert response.status_code == 200
            async for _ in response.aiter_bytes():
                pass

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def lora_state(endpoint: Endpoint) -> tuple[int | None, set[str], set[str]] | None:
    metrics = endpoint.metrics
    if metrics is None:
        return None
    return metrics.max_lora, set(metrics.running_loras), set(metrics.waiting_loras)


async def test_adapter_metrics_of_two_servers_reach_the_picker_datastore(servers: tuple[str, str]) -> None:
    one, two = servers
    datastore = Datastore(staleness=5.0, failure_grace=5.0)
    datastore.set_addresses([one, two])
    scraper = MetricsScraper(datastore, interval=0.05, timeout=2.0)
    scraper.sync()
    endpoint_one, endpoint_two = datastore.get(one), datastore.get(two)
    assert endpoint_one is not None and endpoint_two is not None
    try:
        await until(lambda: lora_state(endpoint_one) == (1, set(), set()), "server one idle, max_lora 1")
        await until(lambda: lora_state(endpoint_two) == (2, set(), set()), "server two idle, max_lora 2")
        async with (
            httpx.AsyncClient(timeout=60) as client,
            long_stream(client, one, "a"),
            long_stream(client, two, "a"),
        ):
            await until(lambda: lora_state(endpoint_one) == (1, {"a"}, set()), "a runs on server one")
            # One slot: b waits on server one; two slots: b runs beside a on server two.
            async with long_stream(client, one, "b"), long_stream(client, two, "b"):
                await until(lambda: lora_state(endpoint_one) == (1, {"a"}, {"b"}), "b waits on server one")
                await until(lambda: lora_state(endpoint_two) == (2, {"a", "b"}, set()), "a and b run on two")
                assert endpoint_one.metrics.waiting == 1 and endpoint_one.metrics.running == 1  # type: ignore[union-attr]
                # The base model label stays the base model for adapter requests.
                assert endpoint_two.metrics.models == {"SmolLM2-135M-Instruct"}  # type: ignore[union-attr]
        await until(lambda: lora_state(endpoint_one) == (1, set(), set()), "aborted streams leave server one")
        await until(lambda: lora_state(endpoint_two) == (2, set(), set()), "aborted streams leave server two")
    finally:
        await scraper.close()
