"""OpenAI ``POST /v1/embeddings`` over a ``sentence-embeddings`` model, through its dynamic batcher."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from inferplane.oip.errors import InferError


def openai_error(message: str, status: int, param: str | None = None, kind: str = "invalid_request_error") -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _texts(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


async def embeddings(request: Request) -> Response:
    state = request.app.state.oip
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return openai_error("request body is not valid JSON", 400)
    if not isinstance(body, dict):
        return openai_error("request body must be a JSON object", 400)
    name = body.get("model")
    if not isinstance(name, str):
        return openai_error("'model' is required", 400, "model")
    texts = _texts(body.get("input"))
    if texts is None:
        return openai_error("'input' must be a non-empty string or list of strings", 400, "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return openai_error("'encoding_format' must be 'float' or 'base64'", 400, "encoding_format")
    try:
        model = state.repository.get(name)
    except InferError as exc:
        return openai_error(str(exc), 404, "model", "not_found_error")
    if model.config.runtime != "sentence-embeddings":
        return openai_error(f"model '{name}' is not an embedding model", 400, "model")
    if body.get("dimensions") not in (None, model.outputs[0].shape[-1]):
        return openai_error(f"model '{name}' produces {model.outputs[0].shape[-1]} dimensions", 400, "dimensions")
    step = max(model.config.max_batch_size, 1)
    chunks = [texts[i : i + step] for i in range(0, len(texts), step)]

    async def run(chunk: list[str]) -> dict[str, np.ndarray]:
        array = np.empty((len(chunk), 1), dtype=object)
        array[:, 0] = [t.encode() for t in chunk]
        return await model.infer({"text": array}, ["embedding", "token_count"])

    try:
        results = await asyncio.gather(*(run(c) for c in chunks))
    except InferError as exc:
        return openai_error(str(exc), exc.http_status, kind="server_error" if exc.http_status >= 500 else "invalid_request_error")
    vectors = np.concatenate([r["embedding"] for r in results]).astype(np.float32, copy=False)
    tokens = int(sum(int(r["token_count"].sum()) for r in results))
    data = []
    for i, vector in enumerate(vectors):
        embedding = base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    doc = {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
