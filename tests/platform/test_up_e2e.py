"""End to end through the real platform: Envoy → picker (ext_proc) → two real model servers.

One ``inferplane up`` (FailClose) serves the whole module; the destructive tests (a replica
killed, the picker killed) run last, in file order.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time

import httpx
import openai
import pytest
from platform_runner import Platform, port_is_free, process_alive, start_platform

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Platform:
    running = start_platform(tmp_path_factory.mktemp("up"), replicas=2)
    yield running
    pids = [running.pid(name) for name in ("server-0", "server-1", "picker", "envoy", "batch")]
    assert running.stop() == 0, "\n".join(running.lines[-40:])
    # Ctrl-C / SIGTERM stops every process it started and frees every port.
    for pid in pids:
        assert not process_alive(pid), f"process {pid} outlived inferplane up"
    assert all(port_is_free(port) for port in running.all_ports)
    assert any("all processes stopped" in line for line in running.lines)


@pytest.fixture(scope="module")
def client(platform: Platform) -> openai.OpenAI:
    return openai.OpenAI(base_url=platform.base_url, api_key="unused", max_retries=0, timeout=120)



def _metric(base_url: str, name: str) -> float:
    """Sum of every sample of ``name`` on a model server's /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_models_are_listed_through_the_gateway(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=24
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_chat_arrives_incrementally(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        max_tokens=48,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    arrivals, pieces, finish, usage, roles = [], [], None, None, []
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
                arrivals.append(time.monotonic())
            if choice.finish_reason:
                finish = choice.finish_reason
    assert roles == ["assistant"]
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 48
    assert len(pieces) > 10, "the answer came in too few chunks to be streamed token by token"
    # Incremental: the first token arrived well before the last one did.
    assert arrivals[-1] - arrivals[0] > 0.05


def test_completions_streaming_and_not(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16)
    assert reply.choices[0].text and reply.usage.completion_tokens <= 16
    chunks = list(client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_malformed_json_is_400_openai_error(platform: Platform) -> None:
    response = httpx.post(
        f"{platform.base_url}/chat/completions", content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model" in caught.value.message


def test_oversized_prompt_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="hello " * 5000, max_tokens=16)
    assert caught.value.status_code == 400


def test_batch_api_through_the_gateway(client: openai.OpenAI) -> None:
    """The openai SDK's files and batches calls work against the same base URL."""
    lines = "\n".join(
        json.dumps({
            "custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": f"Say {i}."}]},
        })
        for i in range(3)
    )
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 180
    while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.5)
    assert batch.status == "completed" and batch.request_counts.completed == 3
    results = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(r["custom_id"] for r in results) == ["req-0", "req-1", "req-2"]
    assert all(r["response"]["status_code"] == 200 for r in results)


def test_busy_replica_is_avoided(platform: Platform, client: openai.OpenAI) -> None:
    """While one replica streams a long generation, new requests go to the other one."""
    long_stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count slowly from one to one thousand."}],
        max_tokens=1200,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = iter(long_stream)
    while not any(c.delta.content for c in next(chunks).choices):
        pass  # the role chunk comes first; a content chunk means the long request is generating
    deadline = time.monotonic() + 5
    while sorted(running := [_metric(platform.server_url(i), "vllm:num_requests_running") for i in range(2)]) != [0, 1]:
        assert time.monotonic() < deadline, f"running requests per replica: {running}"
        time.sleep(0.05)
    busy, idle = (0, 1) if running[0] == 1.0 else (1, 0)
    before = [_metric(platform.server_url(i), "vllm:request_success_total") for i in range(2)]
    for n in range(4):
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Say hello number {n}."}], max_tokens=8
        )
        assert reply.choices[0].message.content is not None
    after = [_metric(platform.server_url(i), "vllm:request_success_total") for i in range(2)]
    long_stream.close()
    assert after[idle] - before[idle] == 4
    assert after[busy] - before[busy] == 0


def _ready_pods(platform: Platform) -> float:
    text = httpx.get(f"http://127.0.0.1:{platform.ports['metrics']}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("inference_pool_ready_pods{"))


def test_killed_replica_is_taken_out(platform: Platform, client: openai.OpenAI) -> None:
    assert _ready_pods(platform) == 2
    os.kill(platform.pid("server-1"), signal.SIGKILL)
    # The picker takes it out after its failure grace (1 s of failed scrapes)...
    deadline = time.monotonic() + 10
    while _ready_pods(platform) != 1:
        assert time.monotonic() < deadline, "the picker still counts the killed replica as ready"
        time.sleep(0.1)
    # ...and every request then succeeds on the remaining replica.
    for n in range(8):
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Give me a word, {n}."}], max_tokens=8
        )
        assert reply.choices[0].message.content is not None
    # The supervisor reports the crash and does not restart it silently.
    deadline = time.monotonic() + 10
    while not any("server-1 exited unexpectedly" in line for line in platform.lines):
        assert time.monotonic() < deadline, "the crash was not reported"
        time.sleep(0.1)


def test_picker_down_with_fail_close_is_503(platform: Platform) -> None:
    os.kill(platform.pid("picker"), signal.SIGKILL)
    time.sleep(0.5)
    started = time.monotonic()
    response = httpx.post(
        f"{platform.base_url}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=30,
    )
    assert response.status_code == 503
    assert time.monotonic() - started < 5.0
