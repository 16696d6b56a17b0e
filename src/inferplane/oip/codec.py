"""Decoding v2 REST infer requests (JSON, with the binary-data extension) and encoding responses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from inferplane.oip.errors import BadRequest
from inferplane.oip.tensors import (
    datatype_of,
    from_json,
    from_raw,
    to_json_data,
    to_raw,
)

HEADER_LENGTH = "inference-header-content-length"


@dataclass
class InferRequest:
    """A decoded infer request, protocol-neutral (REST and gRPC both produce one)."""

    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None
    id: str | None = None
    priority: int = 0
    timeout_us: int = 0
    binary_outputs: set[str] = field(default_factory=set)
    binary_default: bool = False


def _int_param(params: dict, name: str) -> int:
    value = params.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"parameter '{name}' must be a non-negative integer")
    return value


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse a REST infer body; binary input data follow the JSON header when ``header_length`` is set."""
    binary = b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length must be an integer") from None
        if not 0 < length <= len(body):
            raise BadRequest("Inference-Header-Content-Length is outside the body")
        body, binary = body[:length], body[length:]
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest("request must be a JSON object with a non-empty 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    view = memoryview(binary)
    for tensor in doc["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise BadRequest("each input must be an object with a 'name'")
        name = tensor["name"]
        datatype, shape = tensor.get("datatype"), tensor.get("shape")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(f"input '{name}': binary_data_size runs past the body")
            inputs[name] = from_raw(name, datatype, shape, view[offset : offset + size])
            offset += size
        elif "data" in tensor:
            inputs[name] = from_json(name, datatype, shape, tensor["data"])
        else:
            raise BadRequest(f"input '{name}' has neither 'data' nor binary_data_size")
    if offset != len(binary):
        raise BadRequest("binary data left over after the last input")
    request = InferRequest(
        inputs=inputs,
        id=doc.get("id") if isinstance(doc.get("id"), str) else None,
        priority=_int_param(params, "priority"),
        timeout_us=_int_param(params, "timeout"),
        binary_default=bool(params.get("binary_data_output", False)),
    )
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise BadRequest("'outputs' must be a list")
        request.outputs = []
        for out in doc["outputs"]:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise BadRequest("each output must be an object with a 'name'")
            request.outputs.append(out["name"])
            if (out.get("parameters") or {}).get("binary_data", request.binary_default):
                request.binary_outputs.add(out["name"])
    return request


def encode_response(
    model: str, version: str, request: InferRequest, result: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary output data follow it."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in result.items():
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if name in request.binary_outputs or (request.outputs is None and request.binary_default):
            raw = to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif array.dtype.kind in "OSU" or array.dtype == np.float16:
            entry["data"] = to_json_data(array) if array.dtype.kind in "OSU" else array.reshape(-1).tolist()
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id is not None:
        doc["id"] = request.id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
