"""The model a request names: from the JSON body, the KServe v2 REST path, or the gRPC message.

- OpenAI routes (``/v1/chat/completions``, ``/v1/embeddings``...): the body's ``model``.
- KServe v2 REST: the path, ``/v2/models/NAME[/versions/V]/...`` or ``/v2/repository/models/NAME/...``.
- KServe v2 gRPC (``/inference.GRPCInferenceService/METHOD``): the message's model field, read
  with the protocol's own protobuf classes from the (single, possibly compressed) gRPC frame.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from google.protobuf.message import DecodeError

from inferplane.gateway.pools import GRPC_SERVICE_PREFIX
from inferplane.picker.request import json_body_model

OPENAI, OIP, GRPC = "openai", "oip", "grpc"

#: gRPC status codes (grpc.StatusCode values, without importing grpc here).
GRPC_INVALID_ARGUMENT, GRPC_NOT_FOUND, GRPC_UNIMPLEMENTED = 3, 5, 12


@dataclass
class RouteError(Exception):
    """A request the router answers itself: HTTP status, message, OpenAI error code, gRPC status."""

    status: int
    message: str
    code: str
    grpc_status: int

    def __str__(self) -> str:
        return self.message


def bad_request(message: str) -> RouteError:
    return RouteError(400, message, "invalid_request_error", GRPC_INVALID_ARGUMENT)


def model_not_found(model: str) -> RouteError:
    return RouteError(404, f"The model '{model}' does not exist", "model_not_found", GRPC_NOT_FOUND)


def api_of(path: str, content_type: str = "") -> str:
    """Which API a request speaks: ``grpc``, ``oip`` (KServe v2 REST) or ``openai``."""
    if path.startswith(GRPC_SERVICE_PREFIX) or content_type.startswith("application/grpc"):
        return GRPC
    if path == "/v2" or path.startswith("/v2/"):
        return OIP
    return OPENAI


def oip_model(path: str) -> str | None:
    """The model a KServe v2 REST path names, or ``None`` (server health, metadata, repository index)."""
    parts = path.split("/")  # ["", "v2", "models", NAME, ...]
    if len(parts) >= 4 and parts[2] == "models" and parts[3]:
        return unquote(parts[3])
    if len(parts) >= 5 and parts[2] == "repository" and parts[3] == "models" and parts[4]:
        return unquote(parts[4])
    return None


def models_path_id(path: str) -> str | None:
    """``/v1/models/ID`` → ``ID`` (ids may hold slashes: ``org/name``); ``None`` for other paths."""
    prefix = "/v1/models/"
    return unquote(path[len(prefix):]) if path.startswith(prefix) and len(path) > len(prefix) else None


def json_model(raw: bytes) -> str:
    """The ``model`` of a JSON request body; a 400 :class:`RouteError` when there is none."""
    try:
        return json_body_model(raw)[1]
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _model_messages() -> dict[str, tuple[Any, str]]:
    from inferplane.oip.proto import grpc_predict_v2_pb2 as pb

    return {
        "ModelInfer": (pb.ModelInferRequest, "model_name"),
        "ModelMetadata": (pb.ModelMetadataRequest, "name"),
        "ModelReady": (pb.ModelReadyRequest, "name"),
        "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, "model_name"),
        "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, "model_name"),
    }


_MODEL_MESSAGES: dict[str, tuple[Any, str]] | None = None


def grpc_method(path: str) -> str:
    """``/inference.GRPCInferenceService/ModelInfer`` → ``ModelInfer``."""
    return path[len(GRPC_SERVICE_PREFIX):] if path.startswith(GRPC_SERVICE_PREFIX) else ""


def grpc_names_model(method: str) -> bool:
    """The method's (unary) request message names a model: the body must be read to route it."""
    global _MODEL_MESSAGES
    if _MODEL_MESSAGES is None:
        _MODEL_MESSAGES = _model_messages()
    return method in _MODEL_MESSAGES


def grpc_model(method: str, raw: bytes, encoding: str = "") -> str:
    """The model named by one unary gRPC request body (5-byte frame header, then the message)."""
    if not grpc_names_model(method):
        raise bad_request(f"gRPC method {method!r} does not name a model")
    assert _MODEL_MESSAGES is not None
    if len(raw) < 5:
        raise bad_request("gRPC request body is shorter than its frame header")
    compressed, length = raw[0], int.from_bytes(raw[1:5], "big")
    message = raw[5:5 + length]
    if len(message) != length:
        raise bad_request("gRPC request body is shorter than its frame length")
    if compressed:
        message = _decompress(message, encoding)
    cls, field = _MODEL_MESSAGES[method]
    try:
        parsed = cls.FromString(message)
    except DecodeError as exc:
        raise bad_request(f"gRPC {method} request cannot be decoded: {exc}") from None
    model = getattr(parsed, field)
    if not model:
        raise bad_request(f"gRPC {method} request names no model ({field} is empty)")
    return model


def _decompress(message: bytes, encoding: str) -> bytes:
    try:
        if encoding == "gzip":
            return gzip.decompress(message)
        if encoding == "deflate":
            return zlib.decompress(message)
    except (OSError, zlib.error) as exc:
        raise bad_request(f"gRPC message cannot be decompressed ({encoding}): {exc}") from None
    raise bad_request(f"gRPC message compression {encoding or '(none named)'!r} is not supported")
