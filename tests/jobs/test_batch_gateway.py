"""A batch and async messages through the real platform (Envoy + picker + sim servers)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import openai
import pytest
import redis
from jobs_support import BatchServer, wait_for
from platform_runner import start_platform

from inferplane.jobs.config import DispatchConfig
from inferplane.jobs.gate import SaturationGate
from inferplane.jobs.processor import Processor
from inferplane.jobs.redis_queue import RedisQueue
from inferplane.jobs.sender import Sender

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    p = start_platform(tmp_path_factory.mktemp("platform"), replicas=2,
                       server={"engine": "sim", "sim": {"time_scale": 0.1}},
                       picker={"objectives": {"batch": -1}, "flow_control": {"enabled": True, "queue_sheddable": True}})
    yield p
    p.stop()


def test_batch_through_the_gateway(tmp_path: Path, platform) -> None:
    model = openai.OpenAI(base_url=platform.base_url, api_key="x").models.list().data[0].id
    lines = "\n".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": model, "max_tokens": 8,
                                           "messages": [{"role": "user", "content": f"hello {i}"}]}})
                      for i in range(12))
    server = BatchServer(tmp_path, platform.base_url).start()
    try:
        client = openai.OpenAI(base_url=server.url, api_key="unused")
        f = client.files.create(file=("in.jsonl", io.BytesIO(lines.encode())), purpose="batch")
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        done = wait_for(lambda: (x := client.batches.retrieve(b.id)).status in ("completed", "failed") and x, 120)
        assert done.status == "completed" and done.request_counts.completed == 12
        out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    finally:
        server.stop()
    assert all(o["response"]["body"]["choices"][0]["message"]["content"] for o in out)


async def test_async_through_the_gateway_with_the_picker_gate(tmp_path: Path, platform, redis_server) -> None:
    model = openai.OpenAI(base_url=platform.base_url, api_key="x").models.list().data[0].id
    r = redis.Redis.from_url(redis_server.url)
    for i in range(10):
        r.xadd("jobs", {"message": json.dumps({"id": f"a{i}", "created": time.time(), "deadline": time.time() + 120,
                                               "payload": {"model": model, "max_tokens": 8,
                                                           "messages": [{"role": "user", "content": "hi"}]}})})
    queue = RedisQueue(f"{redis_server.url}?stream=jobs&group=g", "w1")
    gate = SaturationGate(f"http://127.0.0.1:{platform.ports['metrics']}/metrics", 0.8, 0.1)
    processor = Processor(queue, Sender(DispatchConfig(gateway_url=platform.base_url)), gate)
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    deadline = time.monotonic() + 60
    while r.xlen("jobs-results") < 10 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 15)
    got = [json.loads(f[b"result"]) for _, f in r.xrange("jobs-results")]
    assert sorted(x["id"] for x in got) == sorted(f"a{i}" for i in range(10))
    assert all(x["status_code"] == 200 for x in got) and gate.saturation is not None
