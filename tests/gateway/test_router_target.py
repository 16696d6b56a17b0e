"""What model a request names: OpenAI JSON body, KServe v2 REST path, KServe v2 gRPC message."""

from __future__ import annotations

import gzip

import pytest

from inferplane.gateway.router.target import (
    GRPC,
    OIP,
    OPENAI,
    RouteError,
    api_of,
    grpc_model,
    grpc_names_model,
    json_model,
    models_path_id,
    oip_model,
)
from inferplane.oip.proto import grpc_predict_v2_pb2 as pb


def _frame(message: bytes, compressed: bool = False) -> bytes:
    return bytes([int(compressed)]) + len(message).to_bytes(4, "big") + message


def test_api_by_path_and_content_type() -> None:
    assert api_of("/v1/chat/completions") == OPENAI
    assert api_of("/v2/models/fraud/infer") == OIP and api_of("/v2") == OIP
    assert api_of("/v2x") == OPENAI
    assert api_of("/inference.GRPCInferenceService/ModelInfer") == GRPC
    assert api_of("/other.Service/Call", "application/grpc+proto") == GRPC


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v2/models/fraud/infer", "fraud"),
        ("/v2/models/fraud/versions/2/infer", "fraud"),
        ("/v2/models/fraud", "fraud"),
        ("/v2/models/my%20model/ready", "my model"),
        ("/v2/repository/models/fraud/load", "fraud"),
        ("/v2/health/ready", None),
        ("/v2/repository/index", None),
        ("/v2", None),
    ],
)
def test_kserve_rest_paths(path: str, model: str | None) -> None:
    assert oip_model(path) == model


def test_openai_model_ids_may_hold_slashes() -> None:
    assert models_path_id("/v1/models/org/name") == "org/name"
    assert models_path_id("/v1/models/") is None and models_path_id("/v1/chat/completions") is None


def test_json_body_model_and_its_errors() -> None:
    assert json_model(b'{"model": "m", "messages": []}') == "m"
    for raw, message in ((b"{", "not valid JSON"), (b"[1]", "JSON object"), (b'{"model": 3}', "'model' is required"),
                         (b'{"model": ""}', "'model' is required")):
        with pytest.raises(RouteError, match=message) as caught:
            json_model(raw)
        assert caught.value.status == 400


def test_grpc_messages_name_their_model() -> None:
    infer = pb.ModelInferRequest(model_name="fraud", inputs=[pb.ModelInferRequest.InferInputTensor(name="x")],
                                 raw_input_contents=[b"\0" * 1000])
    assert grpc_model("ModelInfer", _frame(infer.SerializeToString())) == "fraud"
    assert grpc_model("ModelMetadata", _frame(pb.ModelMetadataRequest(name="minilm").SerializeToString())) == "minilm"
    load = pb.RepositoryModelLoadRequest(repository_name="r", model_name="fraud")
    assert grpc_model("RepositoryModelLoad", _frame(load.SerializeToString())) == "fraud"
    compressed = _frame(gzip.compress(infer.SerializeToString()), compressed=True)
    assert grpc_model("ModelInfer", compressed, "gzip") == "fraud"
    assert grpc_names_model("ModelInfer") and not grpc_names_model("ServerLive")


@pytest.mark.parametrize(
    ("method", "raw", "encoding", "message"),
    [
        ("ModelInfer", b"\0\0", "", "shorter than its frame header"),
        ("ModelInfer", b"\0\0\0\0\x09abc", "", "shorter than its frame length"),
        ("ModelInfer", _frame(b"\xff\xff\xff"), "", "cannot be decoded"),
        ("ModelInfer", _frame(b""), "", "names no model"),
        ("ModelInfer", _frame(b"xx", compressed=True), "snappy", "not supported"),
        ("ModelInfer", _frame(b"xx", compressed=True), "gzip", "cannot be decompressed"),
        ("ServerLive", _frame(b""), "", "does not name a model"),
    ],
)
def test_grpc_errors_are_invalid_argument(method: str, raw: bytes, encoding: str, message: str) -> None:
    with pytest.raises(RouteError, match=message) as caught:
        grpc_model(method, raw, encoding)
    assert caught.value.grpc_status == 3  # INVALID_ARGUMENT
