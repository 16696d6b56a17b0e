"""The model server's request telemetry, in process over the simulator engine: spans, request ids, prompts."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferplane.observe.logs import setup_logging
from inferplane.observe.server_telemetry import RequestTelemetry
from inferplane.server.app import create_app
from inferplane.server.config import ServerConfig
from inferplane.server.engines import create_engine

MODEL = "sim-model"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SECRET = "the secret prompt 7d1c"


@pytest.fixture
def logs():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    setup_logging("server", "json", logging.INFO, stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


async def _serve(log_prompts: bool, exporter: InMemorySpanExporter | None, *requests: dict) -> list[httpx.Response]:
    config = ServerConfig(engine="sim", served_model_name=MODEL)
    engine = create_engine(config)
    await engine.start()
    try:
        tracer = None
        if exporter is not None:
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            tracer = provider.get_tracer("test")
        app = RequestTelemetry(create_app(engine, config), tracer, log_prompts)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server") as client:
            return [await client.post(r["path"], json=r["body"], headers=r.get("headers", {})) for r in requests]
    finally:
        await engine.stop()


def _chat(stream: bool = False, **headers: str) -> dict:
    return {"path": "/v1/chat/completions", "headers": headers, "body": {
        "model": MODEL, "messages": [{"role": "user", "content": SECRET}], "max_tokens": 5, "stream": stream,
        "temperature": 0.5, **({"stream_options": {"include_usage": True}} if stream else {})}}


async def test_the_span_is_the_callers_child_with_genai_attributes() -> None:
    exporter = InMemorySpanExporter()
    traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
    (response, streamed) = await _serve(False, exporter, _chat(traceparent=traceparent, **{"x-request-id": "rid-1"}),
                                        _chat(stream=True))
    assert response.status_code == 200 and streamed.status_code == 200
    first, second = exporter.get_finished_spans()
    assert first.name == f"chat {MODEL}"
    assert format(first.context.trace_id, "032x") == TRACE_ID
    assert format(first.parent.span_id, "016x") == CLIENT_SPAN
    usage = response.json()["usage"]
    attributes = first.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == MODEL
    assert attributes["gen_ai.request.max_tokens"] == 5
    assert attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == (response.json()["choices"][0]["finish_reason"],)
    assert attributes["inferplane.request_id"] == "rid-1"
    assert second.parent is None  # no traceparent: a new trace
    assert second.attributes["inferplane.request_id"] == streamed.headers["x-request-id"]
    assert second.attributes["gen_ai.usage.output_tokens"] > 0


async def test_completions_with_several_prompts_add_up() -> None:
    exporter = InMemorySpanExporter()
    request = {"path": "/v1/completions", "body": {"model": MODEL, "prompt": ["one two", "three four five"], "max_tokens": 3}}
    (response,) = await _serve(False, exporter, request)
    (span,) = exporter.get_finished_spans()
    assert span.attributes["gen_ai.operation.name"] == "text_completion"
    assert span.attributes["gen_ai.usage.input_tokens"] == response.json()["usage"]["prompt_tokens"]
    assert len(span.attributes["gen_ai.response.finish_reasons"]) == 2


async def test_request_log_lines_carry_the_request_id_and_never_the_prompt(logs: io.StringIO) -> None:
    (response,) = await _serve(False, None, _chat(**{"x-request-id": "rid-42"}))
    entries = [json.loads(line) for line in logs.getvalue().splitlines()]
    finished = [e for e in entries if e["logger"] == "inferplane.server.requests"]
    assert len(finished) == 1
    assert finished[0]["request_id"] == "rid-42" and finished[0]["status"] == 200
    assert finished[0]["output_tokens"] == response.json()["usage"]["completion_tokens"]
    assert SECRET not in logs.getvalue()
    assert response.json()["choices"][0]["message"]["content"] not in logs.getvalue()


async def test_prompts_and_completions_are_logged_only_when_enabled(logs: io.StringIO) -> None:
    (response, streamed) = await _serve(True, None, _chat(), _chat(stream=True))
    entries = [json.loads(line) for line in logs.getvalue().splitlines() if "inferplane.server.requests" in line]
    assert entries[0]["prompt"] == [{"role": "user", "content": SECRET}]
    assert entries[0]["completion"] == response.json()["choices"][0]["message"]["content"]
    text = "".join(json.loads(line[5:])["choices"][0]["delta"].get("content", "")
                   for line in streamed.text.splitlines()
                   if line.startswith("data:") and line[5:].strip() != "[DONE]" and json.loads(line[5:])["choices"])
    assert entries[1]["completion"] == text
