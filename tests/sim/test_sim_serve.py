"""``inferplane serve --engine sim`` as a user runs it: a real process answering the OpenAI API."""

import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest
from platform_runner import wait_healthy

SYSTEM_PROMPT = (
    "You are a careful assistant for an inference platform. You answer questions about routing, "
    "prefix caching, KV-cache memory and batching with short, precise explanations and examples."
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = tmp_path_factory.mktemp("sim-serve") / "server.yaml"
    config.write_text("server:\n  engine: sim\n  sim:\n    time_scale: 0.01\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "inferplane", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/health", process)  # up to ~60 s on a busy machine
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_repeated_chat_prompt_is_served_from_the_prefix_cache(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Why does prefix-aware routing help?"},
    ]
    first = client.chat.completions.create(model=model, messages=messages, max_tokens=12)  # type: ignore[arg-type]
    second = client.chat.completions.create(model=model, messages=messages, max_tokens=12)  # type: ignore[arg-type]
    assert first.choices[0].message.content
    assert second.usage is not None and second.usage.prompt_tokens == first.usage.prompt_tokens  # type: ignore[union-attr]
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    assert details.cached_tokens > 0
    assert second.usage.completion_tokens <= 12

    metrics = httpx.get(f"{server}/metrics", timeout=5).text
    lines = {line.split("{")[0].split(" ")[0] for line in metrics.splitlines() if line.startswith("vllm:")}
    assert "vllm:kv_cache_usage_perc" in lines
    hits = [line for line in metrics.splitlines() if line.startswith("vllm:prefix_cache_hits_total")]
    assert hits and float(hits[0].rsplit(" ", 1)[1]) >= details.cached_tokens


def test_streaming_chat_ends_with_usage(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Stream a short answer."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_a_priority_needs_the_priority_policy(server: str) -> None:
    """Like vLLM: a non-zero ``priority`` on a FCFS server is a 400 naming the parameter."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model, prompt="hi", max_tokens=2, extra_body={"priority": 1})
    error = caught.value.body
    assert isinstance(error, dict) and error.get("param") == "priority"
    assert "priority scheduling is not enabled" in str(error.get("message"))
    ok = client.completions.create(model=model, prompt="hi", max_tokens=2, extra_body={"priority": 0})
    assert ok.choices[0].text is not None
