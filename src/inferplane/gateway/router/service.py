"""The router's ext_proc service: one stream per request, answered once, then closed.

Envoy sends the request headers; the router either routes on them (the model is in the path, or
the request names none and goes to the default pool) and tells Envoy not to send it the body, or
waits for the buffered body and routes on its ``model``. Routing is a header mutation setting
``x-gateway-model-name`` and ``x-inferplane-pool`` with ``clear_route_cache``, so Envoy picks the
pool's routes (and its picker) again. ``GET /v1/models`` is answered here, listing every pool's
models. Problems are answered in the request's own API: OpenAI error JSON, the KServe v2 REST
``{"error": ...}``, or a gRPC status.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2

from inferplane.gateway.pools import MODEL_HEADER, POOL_HEADER
from inferplane.gateway.router.catalog import ModelCatalog
from inferplane.gateway.router.config import RouterConfig
from inferplane.gateway.router.target import (
    GRPC,
    GRPC_UNIMPLEMENTED,
    OIP,
    RouteError,
    api_of,
    bad_request,
    grpc_method,
    grpc_model,
    grpc_names_model,
    json_model,
    model_not_found,
    models_path_id,
    oip_model,
)

log = logging.getLogger(__name__)

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_SKIP_BODY = processing_mode_pb2.ProcessingMode(request_body_mode=processing_mode_pb2.ProcessingMode.NONE)


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
                                      append_action=_OVERWRITE)


def header_map(headers: base_pb2.HeaderMap) -> dict[str, str]:
    return {h.key: h.raw_value.decode("latin-1") if h.raw_value else h.value for h in headers.headers}


def routed(pool: str, model: str | None) -> pb.CommonResponse:
    """The mutation sending a request to ``pool`` (Envoy matches the routes again)."""
    headers = [_header(POOL_HEADER, pool)]
    if model:
        headers.append(_header(MODEL_HEADER, model))
    return pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=headers), clear_route_cache=True)


def json_reply(status: int, document: object) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status),
        headers=pb.HeaderMutation(set_headers=[_header("content-type", "application/json")]),
        body=orjson.dumps(document),
    ))


def error_reply(error: RouteError, api: str) -> pb.ProcessingResponse:
    """``error`` in the API's own format."""
    if api == GRPC:
        return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=error.status),
            grpc_status=pb.GrpcStatus(status=error.grpc_status),
            body=error.message.encode(),
            details=error.code,
        ))
    if api == OIP:
        return json_reply(error.status, {"error": error.message})
    kind = "invalid_request_error" if error.status < 500 else "internal_error"
    param = "model" if error.code == "model_not_found" else None
    return json_reply(error.status, {"error": {"message": error.message, "type": kind, "param": param,
                                               "code": error.code}})


#: The answer to headers whose body decides the route: Envoy then sends the buffered body.
_AWAIT_BODY = pb.ProcessingResponse(request_headers=pb.HeadersResponse())


class _Request:
    """What the router remembers between a request's headers and its body."""

    __slots__ = ("api", "encoding", "method", "path")

    def __init__(self) -> None:
        self.api = ""
        self.path = ""
        self.method = ""
        self.encoding = ""


class RouterService(pb_grpc.ExternalProcessorServicer):
    """``envoy.service.ext_proc.v3.ExternalProcessor`` choosing each request's pool."""

    def __init__(self, catalog: ModelCatalog, config: RouterConfig) -> None:
        self.catalog = catalog
        self.config = config
        self._grpc = {pool.name: pool.grpc for pool in config.pools}

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: object) -> AsyncIterator[pb.ProcessingResponse]:
        request = _Request()
        async for message in request_iterator:
            kind = message.WhichOneof("request")
            try:
                if kind == "request_headers":
                    response = await self._on_headers(request, message.request_headers)
                elif kind == "request_body":
                    response = await self._on_body(request, message.request_body)
                else:
                    response = _unchanged(kind)
            except RouteError as error:
                log.debug("%s %s: %s %s", request.method, request.path, error.status, error.message)
                response = error_reply(error, request.api)
            except Exception:
                log.exception("router: failed on %s", kind)
                response = error_reply(RouteError(500, "internal error in the gateway's router", "internal_error", 13),
                                       request.api)
            yield response
            if response is not _AWAIT_BODY:
                return  # answered: the request is routed (or refused); Envoy sends nothing more

    async def _on_headers(self, request: _Request, message: pb.HttpHeaders) -> pb.ProcessingResponse:
        headers = header_map(message.headers)
        request.path = path = headers.get(":path", "/").split("?", 1)[0]
        request.method = method = headers.get(":method", "GET")
        request.encoding = headers.get("grpc-encoding", "")
        request.api = api = api_of(path, headers.get("content-type", ""))
        has_body = not message.end_of_stream
        if api == GRPC:
            rpc = grpc_method(path)
            if grpc_names_model(rpc):
                if not has_body:
                    raise bad_request(f"gRPC {rpc} request has no message")
                return _AWAIT_BODY
            return self._route_headers(self._grpc_pool(self._default_models_pool()), None, has_body)
        if api == OIP:
            model = oip_model(path)
            pool = await self._pool_of(model) if model else self._default_models_pool()
            return self._route_headers(pool, model, has_body)
        if method == "GET" and path.rstrip("/") == "/v1/models":
            await self.catalog.refresh_if_older(self.config.miss_refresh_s)
            return json_reply(200, {"object": "list", "data": self.catalog.cards()})
        model_id = models_path_id(path) if method == "GET" else None
        if model_id is not None:
            card = self.catalog.card(model_id)
            if card is None:
                await self.catalog.refresh_if_older(self.config.miss_refresh_s)
                card = self.catalog.card(model_id)
            if card is None:
                raise model_not_found(model_id)
            return json_reply(200, card)
        if not has_body:
            return self._route_headers(self.catalog.default_pool, None, has_body)
        return _AWAIT_BODY  # route once the body is in

    async def _on_body(self, request: _Request, message: pb.HttpBody) -> pb.ProcessingResponse:
        raw = message.body
        if len(raw) > self.config.max_body_bytes:
            raise RouteError(413, f"request body is larger than {self.config.max_body_bytes} bytes",
                             "request_too_large", 8)
        if request.api == GRPC:
            model = grpc_model(grpc_method(request.path), raw, request.encoding)
            pool = self._grpc_pool(await self._pool_of(model))
        else:
            model = json_model(raw)
            pool = await self._pool_of(model)
        log.debug("%s %s: model %r -> pool %s", request.method, request.path, model, pool)
        return pb.ProcessingResponse(request_body=pb.BodyResponse(response=routed(pool, model)))

    def _route_headers(self, pool: str, model: str | None, has_body: bool) -> pb.ProcessingResponse:
        """Route on the headers; a body that follows goes on without the router (no buffering)."""
        response = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=routed(pool, model)))
        if has_body:
            response.mode_override.CopyFrom(_SKIP_BODY)
        return response

    async def _pool_of(self, model: str) -> str:
        """The pool serving ``model``; an unknown name re-reads the model lists once, then is a 404."""
        pool = self.catalog.pool_of(model)
        if pool is None:
            await self.catalog.refresh_if_older(self.config.miss_refresh_s)
            pool = self.catalog.pool_of(model)
        if pool is None:
            raise model_not_found(model)
        return pool

    def _grpc_pool(self, pool: str) -> str:
        """``pool``, if it serves KServe v2 gRPC (an UNIMPLEMENTED status otherwise)."""
        if not self._grpc.get(pool, False):
            raise RouteError(501, f"pool '{pool}' serves no KServe v2 gRPC", "not_implemented", GRPC_UNIMPLEMENTED)
        return pool

    def _default_models_pool(self) -> str:
        pool = self.catalog.default_pool_of_kind("models")
        if pool is None:
            raise RouteError(404, "no pool serves the KServe v2 (Open Inference Protocol) API", "not_found",
                             GRPC_UNIMPLEMENTED)
        return pool


def _unchanged(kind: str | None) -> pb.ProcessingResponse:
    """Any other message (not configured to be sent): let it through untouched."""
    if kind == "request_trailers":
        return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
    if kind == "response_headers":
        return pb.ProcessingResponse(response_headers=pb.HeadersResponse())
    if kind == "response_body":
        return pb.ProcessingResponse(response_body=pb.BodyResponse())
    return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())


def add_to_server(service: RouterService, server: object) -> None:
    pb_grpc.add_ExternalProcessorServicer_to_server(service, server)
