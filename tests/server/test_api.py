"""The OpenAI API of ``inferplane serve`` with the real OpenVINO engine and SmolLM2, via the openai SDK."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.server.conftest import RunningServer

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def aclient(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def wait_for(predicate, what: str, attempts: int = 600) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` a bounded number of times (this is a wait, not a timing assertion)."""
    for _ in range(attempts):
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


# ---------------------------------------------------------------- batching first (it reads a peak)


async def test_concurrent_requests_run_in_one_batch(server: RunningServer, aclient: openai.AsyncOpenAI) -> None:
    async def one(i: int) -> int:
        response = await aclient.completions.create(
            model=MODEL, prompt=f"Count to ten, attempt {i}:", max_tokens=24, extra_body={"ignore_eos": True}
        )
        return response.usage.completion_tokens

    tokens = await asyncio.gather(*(one(i) for i in range(6)))
    assert tokens == [24] * 6
    async with httpx.AsyncClient() as http:
        info = (await http.get(f"{server.base_url}/server_info")).json()
    # OpenVINO's own count of requests scheduled together in one step.
    assert info["internal_states"][0]["max_num_scheduled_observed"] >= 6


# ---------------------------------------------------------------- chat


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_chat_completion(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16)
    assert response.id.startswith("chatcmpl-")
    assert response.object == "chat.completion"
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage is not None and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens is not None


def test_chat_stream_has_role_chunk_deltas_finish_and_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=12, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    choice_chunks = [c for c in chunks if c.choices]
    content = [c.choices[0].delta.content for c in choice_chunks[1:] if c.choices[0].delta.content]
    assert len(content) >= 3  # text arrives in many deltas, not at once
    assert [c.choices[0].finish_reason for c in choice_chunks[:-1]] == [None] * (len(choice_chunks) - 1)
    assert choice_chunks[-1].choices[0].finish_reason == "length"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None and usage_chunk.usage.completion_tokens == 12


def test_stream_chunks_arrive_while_the_request_is_still_generating(server: RunningServer) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 200, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{server.base_url}/v1/completions", json=body) as resp:
        lines = resp.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert '"text"' in first
        # The first chunk is in hand while the engine still runs the request.
        assert server.metrics()["vllm:num_requests_running"] >= 1
    wait_for(lambda: server.metrics()["vllm:num_requests_running"] == 0, "the closed stream was aborted")


def test_max_tokens_gives_length_with_exactly_that_many_tokens(client: openai.OpenAI) -> None:
    response = client.completions.create(model=MODEL, prompt="The alphabet:", max_tokens=7, extra_body={"ignore_eos": True})
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 7
    chat = client.chat.completions.create(model=MODEL, messages=QUESTION, max_completion_tokens=5, extra_body={"ignore_eos": True})
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage.completion_tokens == 5


def test_stop_string_ends_the_text_before_it(client: openai.OpenAI) -> None:
    prompt = "Write a short story about a cat."
    full = client.completions.create(model=MODEL, prompt=prompt, max_tokens=40, temperature=0, extra_body={"ignore_eos": True})
    text = full.choices[0].text
    words = [w for w in text.split() if len(w) > 3 and w.isalpha()]
    assert words, text
    stop = words[len(words) // 2]
    stopped = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=40, temperature=0, stop=[stop], extra_body={"ignore_eos": True}
    )
    choice = stopped.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.text == text[: text.index(stop)]
    assert stopped.usage.completion_tokens < 40


def test_stop_string_in_a_stream(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "List the days of the week."}]
    full = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=30, temperature=0, extra_body={"ignore_eos": True}
    )
    text = full.choices[0].message.content or ""
    words = [w for w in text.split() if len(w) > 3 and w.isalpha()]
    assert words, text
    stop = words[len(words) // 2]
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=30, temperature=0, stop=stop, stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = [c for c in stream if c.choices]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert streamed == text[: text.index(stop)]


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        response = client.completions.create(
            model=MODEL, prompt="My favourite colour is", max_tokens=16, temperature=1.0, seed=seed,
            extra_body={"ignore_eos": True},
        )
        return response.choices[0].text

    assert sample(1234) == sample(1234)


def test_completion_with_token_id_prompt_and_x_request_id(server: RunningServer) -> None:
    ids = httpx.post(f"{server.base_url}/tokenize", json={"prompt": "Hello there"}).json()["tokens"]
    resp = httpx.post(
        f"{server.base_url}/v1/completions",
        json={"model": MODEL, "prompt": ids, "max_tokens": 3},
        headers={"x-request-id": "abc-123"},
        timeout=60,
    )
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == "abc-123"
    body = resp.json()
    assert body["id"] == "cmpl-abc-123"
    assert body["usage"]["prompt_tokens"] == len(ids)


def test_completion_with_several_prompts(client: openai.OpenAI) -> None:
    response = client.completions.create(model=MODEL, prompt=["One", "Two"], max_tokens=3, extra_body={"ignore_eos": True})
    assert [c.index for c in response.choices] == [0, 1]
    assert response.usage.completion_tokens == 6


def test_completion_stream(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=MODEL, prompt="The sky is", max_tokens=6, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert all(c.id.startswith("cmpl-") for c in chunks)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


# ---------------------------------------------------------------- disconnect and metrics


def test_disconnect_frees_the_slot(server: RunningServer) -> None:
    before = server.metrics()
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{server.base_url}/v1/chat/completions", json=body) as resp:
        for line in resp.iter_lines():
            if '"content":"' in line and '"role"' not in line:
                break
    # The connection is closed: the engine aborts the request long before 1500 tokens.
    wait_for(lambda: server.metrics()["vllm:num_requests_running"] == 0, "running count drops after disconnect")
    after = server.metrics()
    abort = 'vllm:request_success_total{finished_reason="abort",model_name="SmolLM2-135M-Instruct"}'
    assert after[abort] == before[abort] + 1
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] < 1500


def test_disconnect_of_a_non_streaming_request_frees_the_slot(server: RunningServer) -> None:
    import json
    import socket

    body = json.dumps({"model": MODEL, "prompt": "Tell me everything.", "max_tokens": 1500, "ignore_eos": True}).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_for(lambda: server.metrics()["vllm:num_requests_running"] == 1, "the request runs")
    wait_for(lambda: server.metrics()["vllm:num_requests_running"] == 0, "running count drops after disconnect")


CONTRACT = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:cache_config_info",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:request_success_total",
]


def test_metrics_contract_and_counters_move(server: RunningServer, client: openai.OpenAI) -> None:
    before = server.metrics()
    for name in CONTRACT:
        assert name in before, name
    assert "vllm:lora_requests_info" not in before  # LoRA is off (OpenVINO cannot apply adapters), as in vLLM
    text = httpx.get(f"{server.base_url}/metrics").text
    assert 'vllm:cache_config_info{block_size="32"' in text and 'num_gpu_blocks="1024"' in text
    assert 'model_name="SmolLM2-135M-Instruct"' in text
    prompt = "A long shared system prompt about the history of tea. " * 8
    for _ in range(2):
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, extra_body={"ignore_eos": True})
    after = server.metrics()
    assert after["vllm:prompt_tokens_total"] > before["vllm:prompt_tokens_total"]
    assert after["vllm:generation_tokens_total"] == before["vllm:generation_tokens_total"] + 8
    assert after["vllm:e2e_request_latency_seconds_count"] == before["vllm:e2e_request_latency_seconds_count"] + 2
    assert after["vllm:prefix_cache_queries_total"] > before["vllm:prefix_cache_queries_total"]
    assert after["vllm:prefix_cache_hits_total"] > before["vllm:prefix_cache_hits_total"]  # second prompt reuses blocks
    assert 0.0 <= after["vllm:kv_cache_usage_perc"] <= 1.0


def test_cached_tokens_reported_for_a_repeated_prompt(client: openai.OpenAI) -> None:
    prompt = "Shared context for caching tests: the quick brown fox jumps over the lazy dog. " * 6
    client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    again = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    details = again.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens >= 32


# ---------------------------------------------------------------- errors


def assert_openai_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status and error["message"]
    for internal in ("pydantic", "Traceback", "validation error for", "https://"):
        assert internal not in error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "messages": QUESTION, "temperature": 5}, "temperature"),
        ({"model": MODEL, "messages": QUESTION, "n": 2}, "n"),
        ({"model": MODEL, "messages": QUESTION, "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "messages": QUESTION, "top_p": 0}, "top_p"),
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": MODEL, "messages": QUESTION, "stop": ""}, "stop"),
        ({"model": MODEL, "messages": QUESTION, "logprobs": True}, "logprobs"),
    ],
)
def test_bad_parameters_are_400(server: RunningServer, body: dict, param: str) -> None:
    error = assert_openai_error(httpx.post(f"{server.base_url}/v1/chat/completions", json=body), 400)
    assert error["type"] == "BadRequestError"
    assert error["param"] == param


def test_malformed_json_is_400(server: RunningServer) -> None:
    for path in ("/v1/chat/completions", "/v1/completions"):
        resp = httpx.post(f"{server.base_url}{path}", content=b'{"model": "x", ', headers={"content-type": "application/json"})
        assert "JSON" in assert_openai_error(resp, 400)["message"]
    assert_openai_error(httpx.post(f"{server.base_url}/v1/completions", json=[1, 2]), 400)


def test_context_overflow_is_400_naming_the_lengths(server: RunningServer, client: openai.OpenAI) -> None:
    body = {"model": MODEL, "prompt": "hello " * 100, "max_tokens": 2000}
    error = assert_openai_error(httpx.post(f"{server.base_url}/v1/completions", json=body), 400)
    assert "2048" in error["message"] and "2000" in error["message"]
    long_prompt = list(range(100, 2200))
    error = assert_openai_error(
        httpx.post(f"{server.base_url}/v1/completions", json={"model": MODEL, "prompt": long_prompt}), 400
    )
    assert "2100" in error["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi " * 3000}])


def test_unknown_model_is_404(server: RunningServer, client: openai.OpenAI) -> None:
    error = assert_openai_error(
        httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "gpt-9", "messages": QUESTION}), 404
    )
    assert "gpt-9" in error["message"] and error["type"] == "NotFoundError"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="hi", max_tokens=2)


def test_unknown_route_is_openai_404(server: RunningServer) -> None:
    assert_openai_error(httpx.get(f"{server.base_url}/v1/nothing-here"), 404)


# ---------------------------------------------------------------- endpoints peer routers read


def test_tokenize_detokenize_roundtrip(server: RunningServer) -> None:
    tokens = httpx.post(f"{server.base_url}/tokenize", json={"model": MODEL, "prompt": "Hello, wörld! 日本"}).json()
    assert tokens["count"] == len(tokens["tokens"]) and tokens["max_model_len"] == 2048
    text = httpx.post(f"{server.base_url}/detokenize", json={"model": MODEL, "tokens": tokens["tokens"]}).json()
    assert text["prompt"] == "Hello, wörld! 日本"
    chat = httpx.post(f"{server.base_url}/tokenize", json={"messages": QUESTION}).json()
    assert chat["count"] > tokens["count"]


def test_render_endpoints_match_what_generation_uses(server: RunningServer, client: openai.OpenAI) -> None:
    rendered = httpx.post(f"{server.base_url}/v1/chat/completions/render", json={"model": MODEL, "messages": QUESTION}).json()
    assert rendered["request_id"].startswith("chatcmpl-")
    chat = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1)
    assert len(rendered["token_ids"]) == chat.usage.prompt_tokens
    assert rendered["sampling_params"]["max_tokens"] == 2048 - chat.usage.prompt_tokens
    listed = httpx.post(f"{server.base_url}/v1/completions/render", json={"model": MODEL, "prompt": ["a b", "c"]}).json()
    assert len(listed) == 2 and all(item["token_ids"] for item in listed)
    assert_openai_error(httpx.post(f"{server.base_url}/v1/completions/render", json={"model": "nope", "prompt": "a"}), 404)


def test_model_and_server_info(server: RunningServer) -> None:
    model_info = httpx.get(f"{server.base_url}/model_info").json()
    assert model_info["is_generation"] is True and model_info["tokenizer_path"]
    info = httpx.get(f"{server.base_url}/server_info").json()
    assert info["served_model_name"] == MODEL and info["context_length"] == 2048
    assert info["max_running_requests"] == 16
