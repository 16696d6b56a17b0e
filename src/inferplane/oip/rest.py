"""The v2 REST API (KServe / Triton), the repository extension, ``/metrics`` and ``/v1/embeddings``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferplane import __version__
from inferplane.oip.codec import HEADER_LENGTH, decode_request, encode_response
from inferplane.oip.embeddings_api import embeddings
from inferplane.oip.errors import BadRequest, InferError, LoadError
from inferplane.oip.metrics import CONTENT_TYPE
from inferplane.oip.state import ServerState

log = logging.getLogger("inferplane.oip")
EXTENSIONS = ["binary_tensor_data", "model_repository", "schedule_policy"]
Handler = Callable[[Request], Awaitable[Response]]


def json_response(doc: object, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def error_response(exc: InferError) -> Response:
    return json_response({"error": str(exc)}, exc.http_status)


def v2_errors(handler: Handler) -> Handler:
    """Turn InferErrors (and anything unexpected) into KServe's ``{"error": ...}`` JSON."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except InferError as exc:
            return error_response(exc)
        except LoadError as exc:
            return json_response({"error": str(exc)}, 400)
        except Exception as exc:
            log.exception("unexpected error in %s", request.url.path)
            return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)

    return wrapped


def _state(request: Request) -> ServerState:
    return request.app.state.oip


async def server_metadata(request: Request) -> Response:
    return json_response({"name": "inferplane", "version": __version__, "extensions": EXTENSIONS})


async def live(request: Request) -> Response:
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    is_ready = _state(request).ready()
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


async def model_metadata(request: Request) -> Response:
    state = _state(request)
    name, version = request.path_params["name"], request.path_params.get("version")
    model = state.repository.get(name, version)
    return json_response(state.metadata(model))


async def model_ready(request: Request) -> Response:
    state = _state(request)
    name, version = request.path_params["name"], request.path_params.get("version")
    is_ready = state.model_ready(name, version)
    return json_response({"name": name, "ready": is_ready}, 200 if is_ready else 400)


async def infer(request: Request) -> Response:
    state = _state(request)
    name, version = request.path_params["name"], request.path_params.get("version")
    model = state.repository.get(name, version)
    decoded = decode_request(await request.body(), request.headers.get(HEADER_LENGTH))
    result = await model.infer(decoded.inputs, decoded.outputs, decoded.priority, decoded.timeout_us)
    body, header_length = encode_response(model.name, model.version, decoded, result)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header_length)})


async def repository_index(request: Request) -> Response:
    body = await request.body()
    ready_only = False
    if body:
        try:
            ready_only = bool(orjson.loads(body).get("ready", False))
        except (orjson.JSONDecodeError, AttributeError):
            raise BadRequest("repository index body must be a JSON object") from None
    rows = _state(request).repository.index()
    return json_response([r for r in rows if r["state"] == "READY"] if ready_only else rows)


async def repository_load(request: Request) -> Response:
    body = await request.body()
    overrides = None
    if body:
        try:
            params = orjson.loads(body).get("parameters") or {}
        except (orjson.JSONDecodeError, AttributeError):
            raise BadRequest("load body must be a JSON object") from None
        if "config" in params:
            try:
                overrides = orjson.loads(params["config"])
            except (orjson.JSONDecodeError, TypeError):
                raise BadRequest("parameters.config must be a JSON string") from None
    await _state(request).repository.load(request.path_params["name"], overrides)
    return json_response({})


async def repository_unload(request: Request) -> Response:
    await _state(request).repository.unload(request.path_params["name"])
    return json_response({})


async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)


def routes() -> list[Route]:
    """Every route of the server."""
    v2 = [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
    ]
    wrapped = [Route(r.path, v2_errors(r.endpoint), methods=r.methods) for r in v2]
    return wrapped + [
        Route("/metrics", metrics),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]


def create_app(state: ServerState) -> Starlette:
    """The Starlette app; ``state`` loads the repository at startup and unloads it at shutdown."""
    app = Starlette(routes=routes(), lifespan=state.lifespan)
    app.state.oip = state
    return app
