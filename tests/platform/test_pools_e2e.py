"""Several pools behind one gateway, end to end through the real Envoy, router and pickers.

One ``inferplane up`` serves the module: an LLM pool of two simulated replicas and a KServe v2
``models`` pool (``inferplane serve-models``) holding the fraud example's scikit-learn model and
MiniLM embeddings. Every request goes through Envoy; the tests check where it landed from the
servers' own counters.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from platform_runner import Platform, process_alive, start_pools_platform
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

LLM = "SmolLM2-135M-Instruct"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"


def _repository(root: Path) -> Path:
    """The fraud example's sklearn model (trained on a small sample) and MiniLM."""
    repository = root / "repository"
    (repository / "fraud").mkdir(parents=True)
    shutil.copy(EXAMPLE / "repository" / "fraud" / "config.yaml", repository / "fraud" / "config.yaml")
    sys.path.insert(0, str(EXAMPLE))
    spec = importlib.util.spec_from_file_location("fraud_train", EXAMPLE / "train.py")
    assert spec is not None and spec.loader is not None
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    train.train(repository, n=2000)
    shutil.rmtree(repository / "fraud-onnx")  # the trainer writes an ONNX copy too; not served here
    (repository / "minilm" / "1").mkdir(parents=True)
    (repository / "minilm" / "config.yaml").write_text(
        "runtime: sentence-embeddings\nmax_batch_size: 32\ndynamic_batching: {max_queue_delay_microseconds: 1000}\n")
    return repository


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    root = tmp_path_factory.mktemp("pools")
    pools = [
        {"name": "chat", "kind": "llm", "replicas": 2, "server": {"engine": "sim"}},
        {"name": "classic", "kind": "models", "replicas": 1,
         "server": {"repository": str(_repository(root)), "cache_dir": str(root / "cache")}},
    ]
    running = start_pools_platform(root, pools, console={"enabled": False})
    yield running
    pids = [running.pid(name) for name in ("chat-server-0", "chat-server-1", "chat-picker", "classic-server-0",
                                           "classic-picker", "router", "envoy")]
    assert running.stop() == 0, "\n".join(running.lines[-40:])
    assert not any(process_alive(pid) for pid in pids)


@pytest.fixture(scope="module")
def client(platform: Platform) -> openai.OpenAI:
    return openai.OpenAI(base_url=platform.base_url, api_key="unused", max_retries=0, timeout=60)


def _counter(port: int, name: str, model: str | None = None) -> float:
    """Sum of a server's counter samples (only those of ``model`` when given)."""
    total = 0.0
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name) and line[len(name)] in " {" and (model is None or f'model="{model}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _llm_successes(platform: Platform) -> float:
    return sum(_counter(port, "vllm:request_success_total") for port in platform.ports["pools"]["chat"]["servers"])


def _classic_successes(platform: Platform, model: str) -> float:
    port = platform.ports["pools"]["classic"]["servers"][0]
    return _counter(port, "nv_inference_request_success_total", model)


def _eventually(read, expected: float, within_s: float = 5.0) -> None:
    """``read()`` reaches ``expected`` (a server counts a request once its answer is sent)."""
    deadline = time.monotonic() + within_s
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"counter at {value}, expected {expected}"
        time.sleep(0.05)


def _picker_requests(platform: Platform, pool: str) -> int:
    """Requests the pool's picker routed (its decision log)."""
    url = f"http://127.0.0.1:{platform.ports['pools'][pool]['metrics']}/debug/decisions?limit=1000"
    return sum(1 for d in httpx.get(url, timeout=5).json()["decisions"] if d["outcome"] == "picked")


def test_models_lists_every_pool(client: openai.OpenAI) -> None:
    assert sorted(model.id for model in client.models.list().data) == sorted([LLM, "fraud", "minilm"])
    assert client.models.retrieve("minilm").id == "minilm"


def test_chat_lands_on_the_llm_pool(platform: Platform, client: openai.OpenAI) -> None:
    before, classic_before = _llm_successes(platform), _picker_requests(platform, "classic")
    reply = client.chat.completions.create(model=LLM, messages=[{"role": "user", "content": "Hi!"}], max_tokens=8)
    assert reply.choices[0].message.content and reply.usage.completion_tokens <= 8
    stream = client.chat.completions.create(model=LLM, messages=[{"role": "user", "content": "Hi!"}], max_tokens=8,
                                            stream=True)
    assert sum(1 for chunk in stream if chunk.choices and chunk.choices[0].delta.content) > 1
    _eventually(lambda: _llm_successes(platform) - before, 2)
    assert _picker_requests(platform, "classic") == classic_before


def test_embeddings_land_on_the_models_pool(platform: Platform, client: openai.OpenAI) -> None:
    before, llm_before = _classic_successes(platform, "minilm"), _llm_successes(platform)
    reply = client.embeddings.create(model="minilm", input=["a cat", "a dog"])
    assert len(reply.data) == 2 and len(reply.data[0].embedding) == 384
    _eventually(lambda: _classic_successes(platform, "minilm") - before >= 1, True)
    assert _llm_successes(platform) == llm_before


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_through_envoy(platform: Platform, protocol: str) -> None:
    """Unmodified tritonclient against the gateway's address: metadata and inference via the pool's picker."""
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(platform.base_url.removeprefix("http://").removesuffix("/v1"))
    assert client.is_server_ready() and client.is_model_ready("fraud")
    metadata = client.get_model_metadata("fraud", as_json=True) if protocol == "grpc" else client.get_model_metadata("fraud")
    assert metadata["inputs"][0]["name"] == "transaction"
    rows = np.random.default_rng(1).normal(size=(4, 7)).astype(np.float32)
    tensor = module.InferInput("transaction", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    before, picked = _classic_successes(platform, "fraud"), _picker_requests(platform, "classic")
    probabilities = client.infer("fraud", [tensor]).as_numpy("predict_proba")
    assert probabilities.shape == (4, 2) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    _eventually(lambda: _classic_successes(platform, "fraud") - before, 1)
    assert _picker_requests(platform, "classic") > picked
    with pytest.raises(InferenceServerException, match="does not exist"):
        client.infer("no-such-model", [tensor])


def test_unknown_model_is_404_in_each_api(platform: Platform, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_found" and "no-such-model" in caught.value.message
    response = httpx.post(f"{platform.base_url.removesuffix('/v1')}/v2/models/no-such-model/infer", json={}, timeout=10)
    assert response.status_code == 404 and "no-such-model" in response.json()["error"]


def test_malformed_body_is_400_openai_error(platform: Platform) -> None:
    response = httpx.post(f"{platform.base_url}/chat/completions", content=b'{"model": "x", "messages": [',
                          headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["message"]
    response = httpx.post(f"{platform.base_url}/embeddings", json={"input": "no model named"}, timeout=10)
    assert response.status_code == 400 and "model" in response.json()["error"]["message"]


def test_batch_requests_reach_the_pool_of_their_model(client: openai.OpenAI) -> None:
    """The Batch API dispatches through the gateway: embedding lines land on the models pool."""
    lines = "\n".join(json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                                  "body": {"model": "minilm", "input": f"text {i}"}}) for i in range(2))
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    deadline = time.monotonic() + 60
    while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.2)
    assert batch.status == "completed" and batch.request_counts.completed == 2
    results = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert all(len(r["response"]["body"]["data"][0]["embedding"]) == 384 for r in results)


def test_two_llm_pools_routed_by_the_body_model(tmp_path: Path) -> None:
    """Two LLM pools serving different models: each request reaches the pool serving its model."""
    pools = [
        {"name": "alpha", "server": {"engine": "sim", "served_model_name": "alpha-model"}},
        {"name": "beta", "server": {"engine": "sim", "served_model_name": "beta-model"}},
    ]
    platform = start_pools_platform(tmp_path, pools, batch_api=False, console={"enabled": False})
    try:
        client = openai.OpenAI(base_url=platform.base_url, api_key="unused", max_retries=0, timeout=60)
        assert sorted(m.id for m in client.models.list().data) == ["alpha-model", "beta-model"]
        ports = {name: platform.ports["pools"][name]["servers"][0] for name in ("alpha", "beta")}
        for model, pool, other in (("alpha-model", "alpha", "beta"), ("beta-model", "beta", "alpha"),
                                   ("beta-model", "beta", "alpha")):
            before = {name: _counter(port, "vllm:request_success_total") for name, port in ports.items()}
            reply = client.completions.create(model=model, prompt="Once upon a time", max_tokens=4)
            assert reply.model == model
            _eventually(lambda p=pool, b=before: _counter(ports[p], "vllm:request_success_total") - b[p], 1)
            assert _counter(ports[other], "vllm:request_success_total") == before[other]
    finally:
        assert platform.stop() == 0
