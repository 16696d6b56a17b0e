"""The picker's span, fed the ext_proc messages Envoy sends: parent from the client, traceparent to the server."""

from __future__ import annotations

import time

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from inferplane.picker.config import PickerConfig
from inferplane.picker.endpoints import Datastore, EndpointMetrics
from inferplane.picker.extproc import ExtProcService
from inferplane.picker.metrics import PickerMetrics
from inferplane.picker.scheduling.profile import build_scheduler

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
ADDRESSES = ["10.1.0.1:8000", "10.1.0.2:8000", "10.1.0.3:8000"]
POST = {":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json"}


def _header_map(headers: dict[str, str]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()])


def headers_message(headers: dict[str, str]) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=_header_map(headers)))


def body_messages(body: bytes) -> list[pb.ProcessingRequest]:
    return [pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))]


def chat_body() -> bytes:
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "Hello there"}]})


async def _exchange(exporter: InMemorySpanExporter, messages: list[pb.ProcessingRequest],
                    config: PickerConfig | None = None) -> list[pb.ProcessingResponse]:
    config = config or PickerConfig()
    datastore = Datastore(staleness=1e9)
    datastore.set_addresses(ADDRESSES)
    for ep in datastore.all():
        datastore.record_scrape(ep, EndpointMetrics(waiting=0, kv_cache_usage=0.0), now=time.monotonic())
    metrics = PickerMetrics()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    service = ExtProcService(build_scheduler(config, datastore, metrics), metrics, True, config.objectives,
                             tracer=provider.get_tracer("test"))


    async def from_envoy():
        for message in messages:
            yield message

    return [response async for response in service.Process(from_envoy(), None)]


def _set_headers(responses: list[pb.ProcessingResponse]) -> dict[str, str]:
    routed = next(r for r in responses if r.HasField("request_headers"))
    return {h.header.key: h.header.raw_value.decode() for h in routed.request_headers.response.header_mutation.set_headers}


def _response(status: int, usage: dict) -> list[pb.ProcessingRequest]:
    headers = _header_map({":status": str(status), "content-type": "application/json"})
    return [pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=headers)),
            pb.ProcessingRequest(response_body=pb.HttpBody(body=orjson.dumps({"usage": usage}), end_of_stream=True))]


async def test_the_picker_span_continues_the_client_trace_and_parents_the_server() -> None:
    exporter = InMemorySpanExporter()
    headers = {**POST, "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01", "x-request-id": "rid-7"}
    responses = await _exchange(exporter, [headers_message(headers), *body_messages(chat_body()),
                                           *_response(200, {"prompt_tokens": 11, "completion_tokens": 4})])
    set_headers = _set_headers(responses)
    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == CLIENT_SPAN
    # The server's parent is the picker's span: same trace, the picker's span id, sampled.
    assert set_headers["traceparent"] == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"
    assert span.name == "route m"
    assert span.attributes["gen_ai.request.model"] == "m"
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert span.attributes["inferplane.picker.endpoint"] == set_headers["x-gateway-destination-endpoint"].split(",")[0]
    assert span.attributes["inferplane.request_id"] == "rid-7"
    assert span.attributes["gen_ai.usage.input_tokens"] == 11
    assert span.attributes["gen_ai.usage.output_tokens"] == 4
    assert span.attributes["http.response.status_code"] == 200


async def test_without_a_traceparent_the_picker_starts_the_trace() -> None:
    exporter = InMemorySpanExporter()
    responses = await _exchange(exporter, [headers_message(POST), *body_messages(chat_body())])
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert _set_headers(responses)["traceparent"].split("-")[1] == format(span.context.trace_id, "032x")


async def test_a_rejected_request_ends_its_span_with_an_error() -> None:
    exporter = InMemorySpanExporter()
    await _exchange(exporter, [headers_message(POST), *body_messages(b'{"model": ')])
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 400
