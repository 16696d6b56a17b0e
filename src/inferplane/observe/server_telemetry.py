"""The model server's request telemetry, as ASGI middleware: request id on logs, a GenAI span, one log line.

Installed only when JSON logs, tracing or prompt logging are on, so a plain server pays nothing.
``generate_text`` reports each finished choice with :func:`record_generation`; the middleware
puts the totals on the span (``gen_ai.usage.*``, ``gen_ai.response.finish_reasons``) and the log.
Prompts and completions reach the log only with ``log_prompts``.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from inferplane.observe.logs import bind_request_id
from inferplane.observe.tracing import OPERATIONS, PROVIDER, extract, request_attributes

log = logging.getLogger("inferplane.server.requests")

_MAX_LOGGED_BODY = 1 << 20


@dataclass
class GenerationRecord:
    """Totals of one HTTP request's choices, filled in by :func:`record_generation`."""

    input_tokens: int = 0
    output_tokens: int = 0
    finish_reasons: list[str] = field(default_factory=list)


_CURRENT: contextvars.ContextVar[GenerationRecord | None] = contextvars.ContextVar("inferplane_generation", default=None)


def record_generation(reason: str, prompt_tokens: int, generated_tokens: int) -> None:
    """One choice finished (called by the server's generation loop; a no-op outside telemetry)."""
    record = _CURRENT.get()
    if record is not None:  # one call per prompt: a completions request with several prompts adds them up
        record.input_tokens += prompt_tokens
        record.output_tokens += generated_tokens
        record.finish_reasons.append(reason)


class RequestTelemetry:
    """ASGI middleware around the OpenAI app."""

    def __init__(self, app: Any, tracer: Tracer | None, log_prompts: bool, provider: str = PROVIDER) -> None:
        self.app = app
        self.tracer = tracer
        self.log_prompts = log_prompts
        self.provider = provider

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in OPERATIONS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id")
        if not request_id:  # called directly, not through the gateway: the app answers with this id too
            request_id = uuid.uuid4().hex
            scope = {**scope, "headers": [*scope["headers"], (b"x-request-id", request_id.encode())]}
        bind_request_id(request_id)
        operation = OPERATIONS[scope["path"]]
        record = GenerationRecord()
        _CURRENT.set(record)
        started = time.perf_counter()
        request_body: list[bytes] = []
        response_body: list[bytes] = []
        status = [0]
        span = None
        if self.tracer is not None:
            span = self.tracer.start_span(operation, context=extract(headers), kind=SpanKind.SERVER, attributes={
                "gen_ai.operation.name": operation, "gen_ai.provider.name": self.provider,
                "gen_ai.system": self.provider, "inferplane.request_id": request_id})

        keep_body = span is not None or self.log_prompts

        async def receive_and_keep() -> dict[str, Any]:
            message = await receive()
            if keep_body and message["type"] == "http.request":
                request_body.append(message.get("body", b""))
                if not message.get("more_body") and span is not None:
                    _annotate_request(span, operation, b"".join(request_body))
            return message

        async def send_and_watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif (self.log_prompts and message["type"] == "http.response.body"
                  and sum(map(len, response_body)) < _MAX_LOGGED_BODY):
                response_body.append(message.get("body", b""))
            await send(message)

        try:
            if span is None:
                await self.app(scope, receive_and_keep, send_and_watch)
            else:
                with trace.use_span(span, end_on_exit=False, record_exception=True, set_status_on_exception=True):
                    await self.app(scope, receive_and_keep, send_and_watch)
        finally:
            if span is not None:
                _annotate_response(span, status[0], record)
                span.end()
            self._log(operation, status[0], record, time.perf_counter() - started, request_body, response_body)

    def _log(self, operation: str, status: int, record: GenerationRecord, seconds: float,
             request_body: list[bytes], response_body: list[bytes]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        extra: dict[str, Any] = {
            "operation": operation, "status": status, "duration_ms": round(seconds * 1000, 3),
            "input_tokens": record.input_tokens, "output_tokens": record.output_tokens,
            "finish_reasons": record.finish_reasons,
        }
        if self.log_prompts:
            extra["prompt"] = prompt_of(b"".join(request_body))
            extra["completion"] = completion_of(b"".join(response_body))
        log.info("%s request finished with status %d", operation, status, extra=extra)


def _annotate_request(span: trace.Span, operation: str, raw: bytes) -> None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if isinstance(body, dict):
        attributes = request_attributes(body)
        span.set_attributes(attributes)
        if "gen_ai.request.model" in attributes:
            span.update_name(f"{operation} {attributes['gen_ai.request.model']}")


def _annotate_response(span: trace.Span, status: int, record: GenerationRecord) -> None:
    span.set_attribute("http.response.status_code", status)
    if record.finish_reasons:
        span.set_attributes({"gen_ai.usage.input_tokens": record.input_tokens,
                             "gen_ai.usage.output_tokens": record.output_tokens,
                             "gen_ai.response.finish_reasons": record.finish_reasons})
    if status >= 400:
        span.set_attribute("error.type", str(status))
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))


def prompt_of(raw: bytes) -> Any:
    """The ``messages`` or ``prompt`` of a request body (for ``log_prompts``)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    return body.get("messages", body.get("prompt", body.get("input")))


def completion_of(raw: bytes) -> str | None:
    """The generated text of a JSON or SSE response body (for ``log_prompts``)."""
    documents: list[Any] = []
    if raw.lstrip().startswith(b"data:"):
        for line in raw.split(b"\n"):
            if line.startswith(b"data:") and line[5:].strip() not in (b"", b"[DONE]"):
                try:
                    documents.append(orjson.loads(line[5:]))
                except orjson.JSONDecodeError:
                    continue
    else:
        try:
            documents.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            return None
    parts: list[str] = []
    for document in documents:
        for choice in document.get("choices", []) if isinstance(document, dict) else []:
            message = choice.get("message") or choice.get("delta") or {}
            text = message.get("content") if isinstance(message, dict) else None
            text = text if text is not None else choice.get("text")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


def instrument_server(app: Any, config: Any) -> Any:
    """The model server's ASGI app with the telemetry its ``config.telemetry`` asks for (and GPU gauges)."""
    from inferplane.observe.gpu import GpuCollector, cuda_devices, wants_gpu_metrics
    from inferplane.observe.tracing import setup_tracing

    telemetry = config.telemetry
    if wants_gpu_metrics(config.engine, config.device):
        cuda = cuda_devices()
        if cuda is not None:
            app.state.server.metrics.registry.register(GpuCollector(cuda))
    tracer = setup_tracing(telemetry.tracing, "server")
    if tracer is None and telemetry.log_format == "text" and not telemetry.log_prompts:
        return app  # nothing to do per request: no middleware on the hot path
    return RequestTelemetry(app, tracer, telemetry.log_prompts)
