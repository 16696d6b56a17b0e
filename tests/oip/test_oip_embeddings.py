"""Sentence embeddings: the export matches sentence-transformers; OpenAI /v1/embeddings via the SDK."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from oip_support import serve

from inferplane.oip.runtimes.embeddings import default_model_dir, reference_embeddings
from inferplane.oip.state import ServerState

TEXTS = ["The cat sits on the mat.", "Dynamic batching merges requests from many clients into one model call.", "ok"]


@pytest.fixture
async def embed_server(repo: Path, cache_dir: Path) -> AsyncIterator[tuple[ServerState, httpx.AsyncClient]]:
    async with serve(repo, cache_dir, ["minilm"]) as pair:
        yield pair


@pytest.fixture(scope="session")
def reference() -> np.ndarray:
    return reference_embeddings(default_model_dir(), TEXTS)


async def test_export_is_verified_against_the_reference(embed_server: tuple[ServerState, httpx.AsyncClient], reference: np.ndarray) -> None:
    state, _ = embed_server
    runtime = state.repository.get("minilm").runtime
    assert runtime.verified["max_abs_diff"] <= 1e-5
    ours, counts = runtime.encode(TEXTS)
    assert np.max(np.abs(ours - reference)) <= 1e-5
    assert counts.tolist()[2] == 3  # [CLS] ok [SEP]


async def test_openai_sdk_embeddings(embed_server: tuple[ServerState, httpx.AsyncClient], reference: np.ndarray) -> None:
    _, client = embed_server
    sdk = openai.AsyncOpenAI(api_key="unused", base_url="http://oip/v1", http_client=client)
    result = await sdk.embeddings.create(model="minilm", input=TEXTS, encoding_format="float")
    assert [d.index for d in result.data] == [0, 1, 2]
    assert np.max(np.abs(np.asarray([d.embedding for d in result.data]) - reference)) <= 1e-5
    assert result.usage.prompt_tokens == result.usage.total_tokens > len(TEXTS)
    single = await sdk.embeddings.create(model="minilm", input=TEXTS[0])
    assert len(single.data) == 1 and len(single.data[0].embedding) == 384


async def test_base64_encoding(embed_server: tuple[ServerState, httpx.AsyncClient], reference: np.ndarray) -> None:
    _, client = embed_server
    body = (await client.post("/v1/embeddings", json={"model": "minilm", "input": TEXTS, "encoding_format": "base64"})).json()
    vectors = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype=np.float32) for d in body["data"]])
    assert np.max(np.abs(vectors - reference)) <= 1e-5


async def test_more_texts_than_a_batch(embed_server: tuple[ServerState, httpx.AsyncClient]) -> None:
    _, client = embed_server
    texts = [f"sentence number {i}" for i in range(70)]
    body = (await client.post("/v1/embeddings", json={"model": "minilm", "input": texts})).json()
    assert [d["index"] for d in body["data"]] == list(range(70))


async def test_v2_infer_on_the_embedding_model(embed_server: tuple[ServerState, httpx.AsyncClient], reference: np.ndarray) -> None:
    _, client = embed_server
    request = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3, 1], "data": TEXTS}], "outputs": [{"name": "embedding"}]}
    body = (await client.post("/v2/models/minilm/infer", json=request)).json()
    out = body["outputs"][0]
    assert out["shape"] == [3, 384]
    assert np.max(np.abs(np.asarray(out["data"]).reshape(3, 384) - reference)) <= 1e-5


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "minilm", "input": []}, 400, "input"),
        ({"model": "minilm", "input": [1, 2]}, 400, "input"),
        ({"model": "minilm", "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"model": "nope", "input": "x"}, 404, "model"),
        ({"input": "x"}, 400, "model"),
        ({"model": "minilm", "input": "x", "dimensions": 7}, 400, "dimensions"),
    ],
)
async def test_bad_embedding_requests_get_openai_errors(embed_server: tuple[ServerState, httpx.AsyncClient], body: dict, status: int, param: str) -> None:
    _, client = embed_server
    response = await client.post("/v1/embeddings", json=body)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param
