"""OpenTelemetry tracing: provider setup, W3C trace context, GenAI attributes.

The client's ``traceparent`` (passed through Envoy unchanged) is the parent of the picker's span;
without one the picker starts the trace. The picker sets ``traceparent`` in its ext_proc header
mutation to its own span, so the model server's span is the picker's child. Attribute names follow
the OpenTelemetry GenAI semantic conventions (``gen_ai.*``).
"""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from inferplane.observe.config import TracingConfig

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: ``gen_ai.provider.name`` of spans inferplane itself serves.
PROVIDER = "inferplane"
#: URL path → ``gen_ai.operation.name``.
OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "chat",
}

_propagator = TraceContextTextMapPropagator()


def setup_tracing(config: TracingConfig, component: str) -> Tracer | None:
    """A tracer exporting as configured; ``None`` when tracing is off. Spans are flushed at exit."""
    if not config.enabled:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from inferplane import __version__

    exporter: SpanExporter
    if config.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=config.headers or None)
    else:
        exporter = ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
    resource = Resource.create({"service.name": config.service_name or f"inferplane-{component}",
                                "service.version": __version__})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=config.export_delay_ms))
    atexit.register(provider.shutdown)
    return provider.get_tracer(f"inferplane.{component}")


def extract(headers: Mapping[str, str]) -> Context:
    """The trace context of incoming (lower-cased) headers; an empty context when there is none."""
    carrier = {k: v for k, v in ((TRACEPARENT, headers.get(TRACEPARENT)), (TRACESTATE, headers.get(TRACESTATE))) if v}
    return _propagator.extract(carrier) if carrier else Context()


def traceparent_of(span: Span) -> dict[str, str]:
    """The ``traceparent`` (and ``tracestate``) headers that make ``span`` the parent of the next hop."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


class PickerSpan:
    """The picker's span for one request: parent from the client, child context for the model server."""

    __slots__ = ("span",)

    def __init__(self, tracer: Tracer, headers: Mapping[str, str], request_id: str) -> None:
        path = headers.get(":path", "/").split("?", 1)[0]
        self.span = tracer.start_span(
            "route", context=extract(headers), kind=SpanKind.SERVER,
            attributes={"gen_ai.operation.name": OPERATIONS.get(path, "route"), "http.request.method":
                        headers.get(":method", "POST"), "url.path": path, "inferplane.request_id": request_id},
        )

    def headers(self) -> dict[str, str]:
        """Header values to set on the request that goes to the model server."""
        return traceparent_of(self.span)

    def routed(self, model: str, requested_model: str, objective: str, priority: int, fairness_id: str,
               destination: str) -> None:
        span = self.span
        if model:
            span.update_name(f"route {model}")
            span.set_attribute("gen_ai.request.model", model)
        if requested_model and requested_model != model:
            span.set_attribute("inferplane.requested_model", requested_model)
        first = destination.split(",", 1)[0]
        host, _, port = first.rpartition(":")
        span.set_attributes({
            "inferplane.picker.endpoint": first,
            "inferplane.picker.destination": destination,
            "server.address": host,
            "inferplane.objective": objective,
            "inferplane.priority": priority,
            "inferplane.fairness_id": fairness_id,
        })
        if port.isdigit():
            span.set_attribute("server.port", int(port))

    def rejected(self, status: int, reason: str, message: str) -> None:
        self.span.set_attributes({"http.response.status_code": status, "error.type": reason,
                                  "inferplane.dropped_reason": reason})
        self.span.set_status(Status(StatusCode.ERROR, message))

    def responded(self, status: int, input_tokens: int | None, output_tokens: int | None) -> None:
        self.span.set_attribute("http.response.status_code", status)
        if input_tokens:
            self.span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        if output_tokens:
            self.span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
            self.span.set_attribute("error.type", str(status))

    def end(self) -> None:
        self.span.end()


def request_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    """``gen_ai.request.*`` attributes of an OpenAI request body."""
    attributes: dict[str, Any] = {}
    for key, name in (("model", "gen_ai.request.model"), ("temperature", "gen_ai.request.temperature"),
                      ("top_p", "gen_ai.request.top_p"), ("seed", "gen_ai.request.seed"),
                      ("frequency_penalty", "gen_ai.request.frequency_penalty"),
                      ("presence_penalty", "gen_ai.request.presence_penalty")):
        value = body.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            attributes[name] = value
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(max_tokens, int):
        attributes["gen_ai.request.max_tokens"] = max_tokens
    if isinstance(body.get("n"), int):
        attributes["gen_ai.request.choice.count"] = body["n"]
    if isinstance(body.get("stream"), bool):
        attributes["inferplane.stream"] = body["stream"]
    return attributes
