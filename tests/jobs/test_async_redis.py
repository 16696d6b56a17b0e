"""The async processor on a real Redis: results, deadlines, dead letters, crash re-delivery, the gate."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import orjson
import redis
import yaml
from jobs_support import FakeGateway, wait_for

from inferplane.jobs.config import DispatchConfig
from inferplane.jobs.gate import SaturationGate
from inferplane.jobs.processor import Processor
from inferplane.jobs.redis_queue import RedisQueue
from inferplane.jobs.sender import Sender


def message(i: int, deadline: float | None = None, content: str | None = None) -> dict:
    return {"message": orjson.dumps({"id": f"m-{i}", "created": time.time(), "deadline": deadline,
                                     "payload": {"model": "m", "messages": [{"role": "user", "content": content or f"m-{i}"}]},
                                     "metadata": {"tenant": "t"}})}


def results(r: redis.Redis, stream: str = "jobs-results") -> list[dict]:
    return [json.loads(fields[b"result"]) for _, fields in r.xrange(stream)]


async def run_until(processor: Processor, done, timeout_s: float = 30.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert done(), "processor did not finish in time"


def make(redis_server, gateway: FakeGateway, metrics_url: str | None = None, **kw) -> Processor:
    queue = RedisQueue(f"{redis_server.url}?stream=jobs&group=g", "w1", claim_idle_s=1.0)
    sender = Sender(DispatchConfig(gateway_url=gateway.url, backoff_base_s=0.05, backoff_max_s=0.2))
    return Processor(queue, sender, SaturationGate(metrics_url, 0.8, 0.05), claim_every_s=0.5, **kw)


async def test_results_deadlines_and_dead_letters(redis_server) -> None:
    r = redis.Redis.from_url(redis_server.url)
    for i in range(20):
        r.xadd("jobs", message(i))
    r.xadd("jobs", message(100, deadline=time.time() - 1))   # already expired: never sent
    r.xadd("jobs", {"message": b'{"id": "broken"}'})          # no payload: dead letter
    r.xadd("jobs", message(101, content="bad-request"))       # a 400 is a result, not a retry
    with FakeGateway(reject_first=5) as gateway:
        processor = make(redis_server, gateway)
        await run_until(processor, lambda: len(results(r)) == 22 and r.xlen("jobs-dead") == 1)
    got = {x["id"]: x for x in results(r)}
    assert all(got[f"m-{i}"]["status_code"] == 200 and got[f"m-{i}"]["error"] is None for i in range(20))
    assert got["m-0"]["payload"]["choices"][0]["message"]["content"] == "echo m-0"
    assert got["m-100"]["error"] == "DEADLINE_EXCEEDED" and "m-100" not in gateway.served
    assert got["m-101"]["status_code"] == 400 and got["m-101"]["error"] == "bad prompt"
    assert gateway.rejected == 5
    assert {h["x-llm-d-inference-objective"] for h in gateway.headers} == {"batch"}
    assert r.xpending("jobs", "g")["pending"] == 0  # everything acknowledged
    dead = json.loads(r.xrange("jobs-dead")[0][1][b"dead_letter"])
    assert "invalid message" in dead["reason"]
    metrics = processor.metrics.registry
    assert metrics.get_sample_value("inferplane_async_results_total", {"outcome": "success"}) == 20
    assert metrics.get_sample_value("inferplane_async_results_total", {"outcome": "deadline_exceeded"}) == 1
    assert metrics.get_sample_value("inferplane_async_retries_total", {"reason": "429"}) == 5


async def test_message_delivered_too_often_goes_to_dead_letter(redis_server) -> None:
    r = redis.Redis.from_url(redis_server.url)
    r.xgroup_create("jobs", "g", id="0", mkstream=True)
    entry = r.xadd("jobs", message(1))
    r.xreadgroup("g", "crashed", {"jobs": ">"}, count=1)
    for _ in range(2):  # three consumers crashed holding it
        r.xclaim("jobs", "g", "crashed", 0, [entry])
    await asyncio.sleep(1.1)
    with FakeGateway() as gateway:
        processor = make(redis_server, gateway, max_attempts=3)
        await run_until(processor, lambda: r.xlen("jobs-dead") == 1)
    assert json.loads(r.xrange("jobs-dead")[0][1][b"dead_letter"])["attempts"] == 4
    assert not gateway.served and r.xlen("jobs-results") == 0


async def test_gate_holds_messages_while_the_pool_is_saturated(redis_server) -> None:
    from platform_runner import free_port
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    saturation = Gauge("inference_extension_flow_control_pool_saturation", "s", ["inference_pool"], registry=registry)
    saturation.labels("pool").set(1.5)
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    r = redis.Redis.from_url(redis_server.url)
    for i in range(5):
        r.xadd("jobs", message(i))
    try:
        with FakeGateway() as gateway:
            processor = make(redis_server, gateway, metrics_url=f"http://127.0.0.1:{port}/metrics")
            stop = asyncio.Event()
            task = asyncio.create_task(processor.run(stop))
            await asyncio.sleep(1.0)
            assert not gateway.served  # closed gate: nothing sent
            saturation.labels("pool").set(0.2)
            while len(results(r)) < 5:
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(task, 10)
    finally:
        server.shutdown()
    assert sum(gateway.served.values()) == 5


def test_worker_killed_with_sigkill_loses_nothing_and_writes_no_duplicate(tmp_path: Path, redis_server) -> None:
    r = redis.Redis.from_url(redis_server.url)
    n = 300
    for i in range(n):
        r.xadd("jobs", message(i))
    with FakeGateway(delay_s=0.05) as gateway:
        config = tmp_path / "async.yaml"
        config.write_text(yaml.safe_dump({"async": {
            "source": f"{redis_server.url}?stream=jobs&group=g", "claim_idle_s": 1.0, "max_in_flight": 16,
            "dispatch": {"gateway_url": gateway.url}}}))

        def start(name: str) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "inferplane.jobs", "async", "run", "--config", str(config),
                                     "--consumer", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        worker = start("w1")
        for k, target in enumerate((n // 4, n // 2)):
            wait_for(lambda target=target: r.xlen("jobs-results") >= target, 60, 0.02)
            worker.kill()
            worker.wait(10)
            worker = start("w1" if k == 0 else "w2")
        try:
            wait_for(lambda: r.xlen("jobs-results") >= n and r.xpending("jobs", "g")["pending"] == 0, 90)
            time.sleep(1.5)  # nothing more arrives
        finally:
            worker.terminate()
            worker.wait(15)
    ids = [x["id"] for x in results(r)]
    assert len(ids) == n and set(ids) == {f"m-{i}" for i in range(n)}
