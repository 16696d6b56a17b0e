"""The ext_proc servicer through a real grpc.aio channel, fed the messages Envoy sends (FULL_DUPLEX_STREAMED)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

import grpc
import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import json_format, struct_pb2
from picker_support import grpc_server, wait_until

from inferplane.picker.config import PickerConfig
from inferplane.picker.endpoints import Datastore, EndpointMetrics
from inferplane.picker.extproc import ExtProcService, add_to_server
from inferplane.picker.metrics import PickerMetrics
from inferplane.picker.scheduling.profile import build_scheduler

ADDRESSES = ["10.1.0.1:8000", "10.1.0.2:8000", "10.1.0.3:8000"]


def headers_message(headers: dict[str, str], end_of_stream: bool = False, subset: list[str] | None = None) -> pb.ProcessingRequest:
    message = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(
            headers=base_pb2.HeaderMap(
                headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
            ),
            end_of_stream=end_of_stream,
        )
    )
    if subset is not None:
        hint = struct_pb2.Struct()
        hint.update({"x-gateway-destination-endpoint-subset": subset})
        message.metadata_context.filter_metadata["envoy.lb.subset_hint"].CopyFrom(hint)
    return message


def body_messages(body: bytes, pieces: int, end_of_stream: bool = True) -> list[pb.ProcessingRequest]:
    size = -(-len(body) // pieces)
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return [
        pb.ProcessingRequest(request_body=pb.HttpBody(body=chunk, end_of_stream=end_of_stream and i == len(chunks) - 1))
        for i, chunk in enumerate(chunks)
    ]


def chat_body(prompt: str = "Hello there", **extra: object) -> bytes:
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}], **extra})


POST = {":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json"}


class Picker:
    """A servicer over a datastore of three live endpoints, reached through a real gRPC channel."""

    def __init__(self, stub: pb_grpc.ExternalProcessorStub, datastore: Datastore, metrics: PickerMetrics) -> None:
        self.stub = stub
        self.datastore = datastore
        self.metrics = metrics

    async def exchange(self, messages: Sequence[pb.ProcessingRequest]) -> list[pb.ProcessingResponse]:
        call = self.stub.Process()
        for message in messages:
            await call.write(message)
        await call.done_writing()
        return [response async for response in call]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


async def make_picker(config: PickerConfig, loads: Sequence[tuple[float, float]] = ((0, 0.0),) * 3) -> AsyncIterator[Picker]:
    datastore = Datastore(staleness=1e9)
    datastore.set_addresses(ADDRESSES[: len(loads)])
    for ep, (waiting, kv) in zip(datastore.all(), loads):
        datastore.record_scrape(ep, EndpointMetrics(waiting=waiting, kv_cache_usage=kv), now=time.monotonic())
    metrics = PickerMetrics()
    service = ExtProcService(
        build_scheduler(config, datastore, metrics),
        metrics,
        config.response_processing,
        config.objectives,
        engine_priority=config.engine_priority,
    )
    async with grpc_server(lambda server: add_to_server(service, server)) as channel:
        yield Picker(pb_grpc.ExternalProcessorStub(channel), datastore, metrics)


@pytest.fixture
async def picker() -> AsyncIterator[Picker]:
    async for p in make_picker(PickerConfig(fallback_endpoints=2)):
        yield p


def set_headers(response: pb.ProcessingResponse) -> dict[str, str]:
    mutation = response.request_headers.response.header_mutation
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}


def streamed(responses: Sequence[pb.ProcessingResponse], phase: str = "request_body") -> list[pb.StreamedBodyResponse]:
    return [getattr(r, phase).response.body_mutation.streamed_response for r in responses]


def immediate(responses: Sequence[pb.ProcessingResponse]) -> tuple[int, dict[str, str], dict]:
    assert len(responses) == 1 and responses[0].HasField("immediate_response")
    reply = responses[0].immediate_response
    headers = {h.header.key: h.header.raw_value.decode() for h in reply.headers.set_headers}
    return reply.status.code, headers, orjson.loads(reply.body)


# ---- request path -----------------------------------------------------------------------------


async def test_body_in_chunks_is_routed_then_streamed_back(picker: Picker) -> None:
    body = chat_body()
    responses = await picker.exchange([headers_message(POST), *body_messages(body, 3)])

    first, *rest = responses
    assert first.WhichOneof("response") == "request_headers"
    assert first.request_headers.response.clear_route_cache
    headers = set_headers(first)
    destination = headers["x-gateway-destination-endpoint"]
    endpoints = destination.split(",")
    assert len(endpoints) == 3 and set(endpoints) == set(ADDRESSES)  # picked + 2 ordered fallbacks
    assert headers["content-length"] == str(len(body))
    assert headers["x-request-id"]  # added: the client sent none
    metadata = json_format.MessageToDict(first.dynamic_metadata)
    assert metadata == {"envoy.lb": {"x-gateway-destination-endpoint": destination}}  # agrees with the header

    assert all(r.WhichOneof("response") == "request_body" for r in rest)
    chunks = streamed(rest)
    assert b"".join(c.body for c in chunks) == body
    assert [c.end_of_stream for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert picker.metric("inference_objective_request_total", model_name="m", target_model_name="m") == 1


async def test_client_request_id_is_kept(picker: Picker) -> None:
    responses = await picker.exchange([headers_message({**POST, "x-request-id": "abc"}), *body_messages(chat_body(), 1)])
    assert "x-request-id" not in set_headers(responses[0])


async def test_get_without_body_is_routed_on_headers(picker: Picker) -> None:
    responses = await picker.exchange([headers_message({":method": "GET", ":path": "/v1/models"}, end_of_stream=True)])
    assert len(responses) == 1
    headers = set_headers(responses[0])
    assert headers["x-gateway-destination-endpoint"].split(",")[0] in ADDRESSES
    assert "content-length" not in headers
    assert responses[0].request_headers.response.clear_route_cache


async def test_large_body_goes_back_in_chunks_of_at_most_62000_bytes(picker: Picker) -> None:
    body = chat_body("x" * 200_000)
    responses = await picker.exchange([headers_message(POST), *body_messages(body, 7)])
    chunks = streamed(responses[1:])
    assert len(chunks) == 4
    assert all(len(c.body) <= 62_000 for c in chunks)
    assert b"".join(c.body for c in chunks) == body
    assert set_headers(responses[0])["content-length"] == str(len(body))
    assert chunks[-1].end_of_stream and not any(c.end_of_stream for c in chunks[:-1])


async def test_body_ended_by_trailers(picker: Picker) -> None:
    body = chat_body()
    trailers = pb.ProcessingRequest(request_trailers=pb.HttpTrailers())
    responses = await picker.exchange([headers_message(POST), *body_messages(body, 2, end_of_stream=False), trailers])
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds[0] == "request_headers" and kinds[-1] == "request_trailers"
    chunks = streamed(responses[1:-1])
    assert b"".join(c.body for c in chunks) == body and not any(c.end_of_stream for c in chunks)


async def test_model_rewrite_header_changes_the_body() -> None:
    async for picker in make_picker(PickerConfig()):
        headers = {**POST, "x-llm-d-model-name-rewrite": "m-canary"}
        responses = await picker.exchange([headers_message(headers), *body_messages(chat_body(), 1)])
        body = b"".join(c.body for c in streamed(responses[1:]))
        assert orjson.loads(body)["model"] == "m-canary"
        assert set_headers(responses[0])["content-length"] == str(len(body))
        assert picker.metric("inference_objective_request_total", model_name="m", target_model_name="m-canary") == 1


async def test_engine_priority_hands_the_objective_priority_to_the_server() -> None:
    config = PickerConfig(objectives={"critical": 10, "batch": -1}, engine_priority=True)
    async for picker in make_picker(config):
        forwarded = {}
        for objective in ("critical", "batch", "unknown"):
            headers = {**POST, "x-llm-d-inference-objective": objective}
            responses = await picker.exchange([headers_message(headers), *body_messages(chat_body(), 1)])
            forwarded[objective] = orjson.loads(b"".join(c.body for c in streamed(responses[1:])))
        # vLLM's priority: lower first, 1 - (2 × objective priority + 1); 0 is left out.
        assert forwarded["critical"]["priority"] == -20 and forwarded["batch"]["priority"] == 2
        assert "priority" not in forwarded["unknown"]
        own = orjson.dumps({**orjson.loads(chat_body()), "priority": 3})
        headers = {**POST, "x-llm-d-inference-objective": "critical"}
        responses = await picker.exchange([headers_message(headers), *body_messages(own, 1)])
        assert orjson.loads(b"".join(c.body for c in streamed(responses[1:])))["priority"] == 3


async def test_subset_hint_restricts_candidates(picker: Picker) -> None:
    responses = await picker.exchange(
        [headers_message(POST, subset=[ADDRESSES[2]]), *body_messages(chat_body(), 1)]
    )
    assert set_headers(responses[0])["x-gateway-destination-endpoint"] == ADDRESSES[2]


# ---- errors -------------------------------------------------------------------------------------


async def test_bad_json_is_400_in_openai_format(picker: Picker) -> None:
    responses = await picker.exchange([headers_message(POST), *body_messages(b'{"model": "m", "mess', 2)])
    status, headers, body = immediate(responses)
    assert status == 400
    assert headers["x-inference-request-dropped-reason"] == "bad-request"
    assert headers["content-type"] == "application/json"
    assert body["error"]["type"] == "invalid_request_error" and "JSON" in body["error"]["message"]
    assert picker.metric(
        "inference_objective_request_error_total", model_name="", target_model_name="", error_code="BadRequest"
    ) == 1


async def test_missing_model_is_400(picker: Picker) -> None:
    responses = await picker.exchange([headers_message(POST), *body_messages(b'{"prompt": "hi"}', 1)])
    status, _, body = immediate(responses)
    assert status == 400 and "model" in body["error"]["message"]


async def test_body_over_the_limit_is_413() -> None:
    config = PickerConfig(max_body_bytes=1000)
    datastore = Datastore(staleness=1e9)
    service = ExtProcService(build_scheduler(config, datastore), max_body_bytes=config.max_body_bytes)
    async with grpc_server(lambda server: add_to_server(service, server)) as channel:
        picker = Picker(pb_grpc.ExternalProcessorStub(channel), datastore, PickerMetrics())
        first_chunk = body_messages(chat_body("x" * 5000), 3)[0]  # 1,700 bytes, more to come
        call = picker.stub.Process()
        await call.write(headers_message(POST))
        await call.write(first_chunk)
        status, headers, _ = immediate([await call.read()])  # rejected without waiting for the rest
        assert status == 413 and headers["x-inference-request-dropped-reason"] == "request-too-large"
        assert await call.read() is grpc.aio.EOF


async def test_no_ready_endpoint_is_503() -> None:
    async for picker in make_picker(PickerConfig(), loads=()):
        responses = await picker.exchange([headers_message(POST), *body_messages(chat_body(), 1)])
        status, headers, body = immediate(responses)
        assert status == 503
        assert headers["x-inference-request-dropped-reason"] == "no-ready-endpoints"
        assert body["error"]["code"] == 503


async def test_subset_without_ready_endpoint_is_503(picker: Picker) -> None:
    responses = await picker.exchange([headers_message(POST, subset=["10.9.9.9:1"]), *body_messages(chat_body(), 1)])
    assert immediate(responses)[0] == 503


async def test_sheddable_request_on_saturated_pool_is_429() -> None:
    config = PickerConfig(objectives={"batch": -1, "chat": 10})
    async for picker in make_picker(config, loads=((9, 0.9), (6, 0.5))):
        shed = {**POST, "x-llm-d-inference-objective": "batch"}
        status, headers, _ = immediate(await picker.exchange([headers_message(shed), *body_messages(chat_body(), 1)]))
        assert status == 429 and headers["x-inference-request-dropped-reason"] == "rejected-saturated"

        kept = {**POST, "x-gateway-inference-objective": "chat"}  # the older header spelling
        responses = await picker.exchange([headers_message(kept), *body_messages(chat_body(), 1)])
        assert responses[0].WhichOneof("response") == "request_headers"


# ---- response path ------------------------------------------------------------------------------


def response_headers(status: str, content_type: str) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(
            headers=base_pb2.HeaderMap(
                headers=[
                    base_pb2.HeaderValue(key=":status", raw_value=status.encode()),
                    base_pb2.HeaderValue(key="content-type", raw_value=content_type.encode()),
                ]
            )
        )
    )


def response_body(chunk: bytes, end: bool = False) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=chunk, end_of_stream=end))


SSE = [
    b'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"Hi"}}]}\n\n',
    b'data: {"object":"chat.completion.chunk","choices":[],"us',  # a line split across two chunks
    b'age":{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16}}\n\ndata: [DONE]\n\n',
]


async def test_sse_response_passes_through_chunk_by_chunk_and_counts_tokens(picker: Picker) -> None:
    call = picker.stub.Process()
    for message in [headers_message(POST), *body_messages(chat_body(stream=True), 1)]:
        await call.write(message)
    assert (await call.read()).WhichOneof("response") == "request_headers"
    assert (await call.read()).WhichOneof("response") == "request_body"
    picked = [ep for ep in picker.datastore.all() if ep.in_flight == 1]
    assert len(picked) == 1  # counted in flight while the request runs
    assert picked[0].routed_since_scrape == 1

    await call.write(response_headers("200", "text/event-stream"))
    assert (await call.read()).WhichOneof("response") == "response_headers"
    for i, chunk in enumerate(SSE):
        await call.write(response_body(chunk, end=i == len(SSE) - 1))
        echoed = streamed([await call.read()], "response_body")[0]
        assert echoed.body == chunk and echoed.end_of_stream == (i == len(SSE) - 1)
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    await wait_until(lambda: picked[0].in_flight == 0)

    labels = {"model_name": "m", "target_model_name": "m"}
    assert picker.metric("inference_objective_input_tokens_sum", **labels) == 12
    assert picker.metric("inference_objective_output_tokens_sum", **labels) == 4
    assert picker.metric("inference_objective_request_duration_seconds_count", **labels) == 1
    assert picker.metric("inference_objective_running_requests", model_name="m") == 0


async def test_json_response_passes_through_and_counts_tokens(picker: Picker) -> None:
    document = orjson.dumps({"object": "chat.completion", "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    responses = await picker.exchange(
        [
            headers_message(POST),
            *body_messages(chat_body(), 1),
            response_headers("200", "application/json"),
            response_body(document[:10]),
            response_body(document[10:], end=True),
            pb.ProcessingRequest(response_trailers=pb.HttpTrailers()),
        ]
    )
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds == ["request_headers", "request_body", "response_headers", "response_body", "response_body", "response_trailers"]
    assert b"".join(c.body for c in streamed(responses[3:5], "response_body")) == document
    assert picker.metric("inference_objective_output_tokens_sum", model_name="m", target_model_name="m") == 3


async def test_error_status_from_the_server_is_counted(picker: Picker) -> None:
    error = b'{"error": {"message": "model not found", "code": 404}}'
    await picker.exchange(
        [headers_message(POST), *body_messages(chat_body(), 1), response_headers("404", "application/json"),
         response_body(error, end=True)]
    )
    assert picker.metric(
        "inference_objective_request_error_total", model_name="m", target_model_name="m", error_code="ModelServerError"
    ) == 1


async def test_without_response_processing_the_stream_ends_after_the_request() -> None:
    async for picker in make_picker(PickerConfig(response_processing=False)):
        call = picker.stub.Process()
        for message in [headers_message(POST), *body_messages(chat_body(), 2)]:
            await call.write(message)
        responses = [r async for r in call]  # the picker closes the stream: Envoy skips the response path
        assert [r.WhichOneof("response") for r in responses] == ["request_headers", "request_body"]
        assert (await call.code()).name == "OK"


# ---- other Envoy body modes ---------------------------------------------------------------------


def with_protocol(message: pb.ProcessingRequest, request_mode: str, response_mode: str) -> pb.ProcessingRequest:
    modes = processing_mode_pb2.ProcessingMode
    message.protocol_config.request_body_mode = modes.BodySendMode.Value(request_mode)
    message.protocol_config.response_body_mode = modes.BodySendMode.Value(response_mode)
    return message


async def test_buffered_mode_routes_on_the_body_response(picker: Picker) -> None:
    body = chat_body()
    call = picker.stub.Process()
    await call.write(with_protocol(headers_message(POST), "BUFFERED", "BUFFERED"))
    first = await call.read()  # answered at once: Envoy holds the body until then
    assert first.WhichOneof("response") == "request_headers"
    assert not first.request_headers.response.header_mutation.set_headers

    await call.write(pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)))
    routed = await call.read()
    assert routed.WhichOneof("response") == "request_body"
    common = routed.request_body.response
    headers = {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}
    assert common.clear_route_cache
    assert headers["x-gateway-destination-endpoint"].split(",")[0] in ADDRESSES
    assert json_format.MessageToDict(routed.dynamic_metadata)["envoy.lb"]["x-gateway-destination-endpoint"] == (
        headers["x-gateway-destination-endpoint"]
    )
    assert not common.HasField("body_mutation")  # body unchanged

    await call.write(response_headers("200", "application/json"))
    assert (await call.read()).WhichOneof("response") == "response_headers"
    await call.write(response_body(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 1}}', end=True))
    reply = await call.read()
    assert reply.WhichOneof("response") == "response_body" and not reply.response_body.response.HasField("body_mutation")
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert picker.metric("inference_objective_input_tokens_sum", model_name="m", target_model_name="m") == 3
