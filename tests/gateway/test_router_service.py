"""The body-based router over real gRPC, asked the way Envoy asks, with a real KServe v2 server to discover.

The ``models`` pool is a real ``inferplane serve-models`` process; the ``llm`` pool's only replica is
down, so the router keeps its configured model name for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from platform_runner import free_port, wait_healthy

from inferplane.gateway.router.config import RouterConfig
from inferplane.gateway.router.server import RouterServer
from inferplane.oip.proto import grpc_predict_v2_pb2 as oip_pb

pytestmark = pytest.mark.integration


def _sklearn_model(repository: Path, name: str) -> None:
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    (repository / name / "1").mkdir(parents=True)
    (repository / name / "config.yaml").write_text("runtime: sklearn\nmax_batch_size: 8\n")
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), repository / name / "1" / "model.joblib")


@pytest.fixture(scope="module")
def oip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``serve-models`` with models ``fraud`` (loaded) and ``later`` (on disk, not loaded)."""
    repository = tmp_path_factory.mktemp("repo")
    _sklearn_model(repository, "fraud")
    _sklearn_model(repository, "later")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "inferplane", "serve-models", "--repository", str(repository),
                                "--port", str(port), "--load-model", "fraud"],
                               env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/v2/health/ready", process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
async def router(oip_server: str) -> AsyncIterator[pb_grpc.ExternalProcessorStub]:
    config = RouterConfig(
        grpc_port=0, health_port=0, miss_refresh_s=0,
        pools=[{"name": "chat", "kind": "llm", "endpoints": [f"127.0.0.1:{free_port()}"], "models": ["alpha"]},
               {"name": "classic", "kind": "models", "endpoints": [oip_server], "grpc": True}],
    )
    server = RouterServer(config)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            yield pb_grpc.ExternalProcessorStub(channel)
    finally:
        await server.stop()


def _headers(method: str, path: str, end_of_stream: bool, **extra: str) -> pb.ProcessingRequest:
    values = {":method": method, ":path": path, **{k.replace("_", "-"): v for k, v in extra.items()}}
    headers = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()])
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=headers, end_of_stream=end_of_stream))


def _body(raw: bytes) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True))


async def _ask(stub: pb_grpc.ExternalProcessorStub, *messages: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
    """Send the messages as Envoy does (the next one only after the previous answer) until the stream ends."""
    call = stub.Process()
    answers = []
    for message in messages:
        await call.write(message)
        answers.append(await call.read())
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF  # the router closes the stream once it has answered
    return answers


def _set_headers(response: pb.CommonResponse) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in response.header_mutation.set_headers}


async def test_openai_body_routes_to_the_pool_serving_the_model(router: pb_grpc.ExternalProcessorStub) -> None:
    waiting, routed = await _ask(router, _headers("POST", "/v1/embeddings", False), _body(b'{"model": "fraud"}'))
    assert waiting.request_headers == pb.HeadersResponse()  # no decision before the body
    common = routed.request_body.response
    assert common.clear_route_cache
    assert _set_headers(common) == {"x-inferplane-pool": "classic", "x-gateway-model-name": "fraud"}
    (routed,) = (await _ask(router, _headers("POST", "/v1/chat/completions", False), _body(b'{"model": "alpha"}')))[1:]
    assert _set_headers(routed.request_body.response)["x-inferplane-pool"] == "chat"


async def test_kserve_rest_routes_on_the_path_without_the_body(router: pb_grpc.ExternalProcessorStub) -> None:
    (answer,) = await _ask(router, _headers("POST", "/v2/models/fraud/infer", False))
    assert _set_headers(answer.request_headers.response)["x-inferplane-pool"] == "classic"
    assert answer.mode_override.request_body_mode == processing_mode_pb2.ProcessingMode.NONE
    (answer,) = await _ask(router, _headers("GET", "/v2/health/ready", True))
    assert _set_headers(answer.request_headers.response) == {"x-inferplane-pool": "classic"}


async def test_grpc_routes_on_the_message(router: pb_grpc.ExternalProcessorStub) -> None:
    message = oip_pb.ModelInferRequest(model_name="fraud").SerializeToString()
    frame = b"\0" + len(message).to_bytes(4, "big") + message
    path = "/inference.GRPCInferenceService/ModelInfer"
    _, routed = await _ask(router, _headers("POST", path, False, content_type="application/grpc"), _body(frame))
    assert _set_headers(routed.request_body.response)["x-gateway-model-name"] == "fraud"
    message = oip_pb.ModelInferRequest(model_name="nope").SerializeToString()
    frame = b"\0" + len(message).to_bytes(4, "big") + message
    _, refused = await _ask(router, _headers("POST", path, False, content_type="application/grpc"), _body(frame))
    assert refused.immediate_response.grpc_status.status == grpc.StatusCode.NOT_FOUND.value[0]
    assert b"nope" in refused.immediate_response.body
    # a model of a pool without gRPC (the llm pool here)
    message = oip_pb.ModelMetadataRequest(name="alpha").SerializeToString()
    frame = b"\0" + len(message).to_bytes(4, "big") + message
    _, refused = await _ask(router, _headers("POST", "/inference.GRPCInferenceService/ModelMetadata", False,
                                             content_type="application/grpc"), _body(frame))
    assert refused.immediate_response.grpc_status.status == grpc.StatusCode.UNIMPLEMENTED.value[0]


async def test_unknown_model_is_404_in_the_api_format(router: pb_grpc.ExternalProcessorStub) -> None:
    _, refused = await _ask(router, _headers("POST", "/v1/chat/completions", False), _body(b'{"model": "nope"}'))
    reply = refused.immediate_response
    assert reply.status.code == 404
    assert orjson.loads(reply.body)["error"] == {"message": "The model 'nope' does not exist",
                                                 "type": "invalid_request_error", "param": "model",
                                                 "code": "model_not_found"}
    (refused,) = await _ask(router, _headers("GET", "/v2/models/nope", True))
    assert refused.immediate_response.status.code == 404
    assert orjson.loads(refused.immediate_response.body) == {"error": "The model 'nope' does not exist"}


async def test_models_lists_every_pool_and_follows_loads(router: pb_grpc.ExternalProcessorStub,
                                                        oip_server: str) -> None:
    async def listed() -> list[str]:
        (answer,) = await _ask(router, _headers("GET", "/v1/models", True))
        assert answer.immediate_response.status.code == 200
        document = orjson.loads(answer.immediate_response.body)
        assert document["object"] == "list"
        return [card["id"] for card in document["data"]]

    assert await listed() == ["alpha", "fraud"]  # "later" is on disk but not loaded
    async with httpx.AsyncClient(base_url=f"http://{oip_server}", timeout=30) as server:
        (await server.post("/v2/repository/models/later/load")).raise_for_status()
        try:
            assert await listed() == ["alpha", "fraud", "later"]
            (card,) = await _ask(router, _headers("GET", "/v1/models/later", True))
            assert orjson.loads(card.immediate_response.body)["id"] == "later"
        finally:
            (await server.post("/v2/repository/models/later/unload")).raise_for_status()


async def test_bad_bodies_are_400(router: pb_grpc.ExternalProcessorStub) -> None:
    _, refused = await _ask(router, _headers("POST", "/v1/completions", False), _body(b'{"prompt": "x"}'))
    assert refused.immediate_response.status.code == 400
    assert "'model' is required" in orjson.loads(refused.immediate_response.body)["error"]["message"]
