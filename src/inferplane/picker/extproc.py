"""The Envoy ext_proc service: one gRPC stream per HTTP request, answered per design.md §1.

Request path (request body FULL_DUPLEX_STREAMED): keep the headers, buffer the body chunks until
end of stream, parse, rewrite the model name, admit (flow control may hold the request until the
pool has room) and schedule, then answer the *request headers* with the destination header,
``Content-Length``, ``clear_route_cache`` and matching ``envoy.lb`` dynamic metadata, and stream the
body back in chunks of at most 62,000 bytes. Problems become an ImmediateResponse with an OpenAI
error body, never a gRPC error. Response path: headers, body chunks and trailers pass straight
through; the status and ``usage`` feed the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from opentelemetry.trace import Tracer

from inferplane.observe.logs import bind_request_id
from inferplane.observe.tracing import PickerSpan
from inferplane.picker.endpoints import Endpoint
from inferplane.picker.errors import (
    DROPPED_REASON_HEADER,
    BadRequest,
    BodyTooLarge,
    Evicted,
    InternalError,
    RequestRejected,
)
from inferplane.picker.flowcontrol.controller import (
    DEFAULT_FAIRNESS_ID,
    FlowController,
    engine_priority_value,
    engine_rank,
)
from inferplane.picker.flowcontrol.policies import QueueItem
from inferplane.picker.metrics import PickerMetrics
from inferplane.picker.objectives import Objectives, ObjectiveSpec
from inferplane.picker.request import (
    REQUEST_ID,
    InferenceRequest,
    body_bytes,
    from_headers,
    parse_body,
)
from inferplane.picker.rewrite import ModelRewrites
from inferplane.picker.scheduling.profile import Scheduler

log = logging.getLogger(__name__)

#: Header and ``envoy.lb`` metadata key naming the picked endpoint(s), picked first (GIE protocol).
DESTINATION_ENDPOINT = "x-gateway-destination-endpoint"
METADATA_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
#: Largest body chunk sent back to Envoy (its streamed chunks are limited to 64 KiB; GIE keeps a margin).
MAX_CHUNK = 62_000
#: Largest non-streamed response body kept to read ``usage`` from.
MAX_USAGE_BODY = 4 << 20

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_FULL_DUPLEX = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
_BUFFERED = processing_mode_pb2.ProcessingMode.BUFFERED
_NO_BODY = processing_mode_pb2.ProcessingMode.NONE
_SUPPORTED_REQUEST_MODES = (_FULL_DUPLEX, _BUFFERED)


def _header(key: str, value: str | bytes) -> base_pb2.HeaderValueOption:
    raw = value.encode() if isinstance(value, str) else value
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, raw_value=raw), append_action=_OVERWRITE)


def header_map(headers: base_pb2.HeaderMap) -> dict[str, str]:
    """Envoy's header list as a dict (keys are already lower case; values in ``raw_value``)."""
    return {h.key: h.raw_value.decode("latin-1") if h.raw_value else h.value for h in headers.headers}


def body_chunks(body: bytes, end_of_stream: bool, phase: str = "request_body") -> list[pb.ProcessingResponse]:
    """``body`` as streamed body mutations of at most :data:`MAX_CHUNK` bytes; the last carries ``end_of_stream``."""
    if len(body) <= MAX_CHUNK:  # nearly always: one chunk
        response = pb.ProcessingResponse()
        streamed = getattr(response, phase).response.body_mutation.streamed_response
        streamed.body = body
        streamed.end_of_stream = end_of_stream
        return [response]
    pieces = [body[i : i + MAX_CHUNK] for i in range(0, len(body), MAX_CHUNK)]
    last = len(pieces) - 1
    responses = []
    for i, piece in enumerate(pieces):
        response = pb.ProcessingResponse()
        streamed = getattr(response, phase).response.body_mutation.streamed_response
        streamed.body = piece
        streamed.end_of_stream = end_of_stream and i == last
        responses.append(response)
    return responses


def set_engine_priority(request: InferenceRequest, rank: int) -> None:
    """Write the request's engine rank into a generation body as vLLM's ``priority`` (lower first).

    The rank comes from the objective's priority (see :func:`engine_rank`); vLLM's default 0 is left
    out, and a body with its own ``priority`` keeps it.
    """
    body = request.body
    value = engine_priority_value(rank)
    if value and request.kind in ("chat", "completions") and body is not None and "priority" not in body:
        body["priority"] = value
        request.body_changed = True


def immediate_response(error: RequestRejected) -> pb.ProcessingResponse:
    """The picker answers the client itself: status, reason header, OpenAI error JSON."""
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=error.status),
            headers=pb.HeaderMutation(
                set_headers=[
                    _header("content-type", "application/json"),
                    _header(DROPPED_REASON_HEADER, error.reason),
                ]
            ),
            body=error.body(),
            details=error.reason,
        )
    )


def subset_hint(message: pb.ProcessingRequest) -> list[str] | None:
    """The proxy's ``envoy.lb.subset_hint`` endpoint list, or ``None`` when it sent none."""
    if not message.HasField("metadata_context"):
        return None
    namespace = message.metadata_context.filter_metadata.get(SUBSET_NAMESPACE)
    if namespace is None or SUBSET_KEY not in namespace.fields:
        return None
    value = namespace.fields[SUBSET_KEY]
    if value.HasField("list_value"):
        return [item.string_value for item in value.list_value.values if item.string_value]
    if value.HasField("string_value"):
        return [part.strip() for part in value.string_value.split(",") if part.strip()]
    return []


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


def read_usage(document: object) -> Usage | None:
    """``usage`` of an OpenAI response object (chat, completions, embeddings, responses API)."""
    if not isinstance(document, dict):
        return None
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return Usage(prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0)


def has_token(chunk: bytes) -> bool:
    """An SSE chunk carries generated text (not just the opening ``role`` chunk or an error)."""
    for line in chunk.split(b"\n"):
        if not line.startswith(b"data:") or (b'"content"' not in line and b'"text"' not in line):
            continue
        try:
            event = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            continue
        choices = event.get("choices") if isinstance(event, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if choice.get("text") or (isinstance(delta, dict) and (delta.get("content") or delta.get("reasoning_content"))):
                return True
    return False


class RequestStream:
    """The state of one HTTP request across its ext_proc messages."""

    def __init__(self, service: ExtProcService) -> None:
        self.service = service
        self.started = time.perf_counter()
        self.request: InferenceRequest | None = None
        self.add_request_id = False
        self.subset: list[str] | None = None
        self.chunks: list[bytes] = []
        self.body_bytes = 0
        self.scheduled = False
        self.picked: list[Endpoint] = []
        self.finished = False  # an ImmediateResponse was sent: nothing more will be asked
        self.request_sent = False  # the request went on to the model server, body and all
        self.destination = ""
        #: Envoy's body modes (its first message says; FULL_DUPLEX_STREAMED when it does not).
        self.request_mode = _FULL_DUPLEX
        self.response_mode = _FULL_DUPLEX
        self.status = 0
        self.sse = False
        self.usage: Usage | None = None
        self.response_bytes = 0
        self.first_byte_at = 0.0  # perf_counter() of the first token's bytes (time to first token)
        self.sse_tail = b""
        self.json_chunks: list[bytes] = []
        self.response_done = False
        # flow control: the body to send once dispatched, the queue item while held, the answer when decided
        self.body = b""
        self.end_of_stream = False
        self.released = False
        self.trailers_follow = False
        self.queue_item: QueueItem | None = None
        self.deferred: list[pb.ProcessingResponse] | None = None
        self._wake: asyncio.Future[None] | None = None
        self.generation = 0  # the picked endpoint's scrape generation when routed
        #: The engine rank it was sent at (``None``: no engine priority), counted on its endpoint.
        self.engine_rank: int | None = None
        self.flow_started = False  # dispatched by flow control: tell it when the request ends
        #: Set for a sheddable request in flight that may be evicted (``flow_control.evict_sheddable``).
        self.evict_signal: asyncio.Future[None] | None = None
        #: The OpenTelemetry span of this request (``None`` while tracing is off).
        self.span: PickerSpan | None = None

    # ---- request path -------------------------------------------------------------------

    def on_request_headers(self, message: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        headers = header_map(message.request_headers.headers)
        self.add_request_id = not headers.get(REQUEST_ID)
        self.request = from_headers(headers, self.service.objectives)
        bind_request_id(self.request.request_id)
        if self.service.tracer is not None:
            self.span = PickerSpan(self.service.tracer, headers, self.request.request_id)
        body_follows = not message.request_headers.end_of_stream
        if body_follows and self.request_mode == _FULL_DUPLEX:
            return []  # answered once the whole body is in
        if body_follows and self.request_mode == _BUFFERED:
            # Envoy waits for this answer before sending the body; the routing rides on the body answer.
            return [pb.ProcessingResponse(request_headers=pb.HeadersResponse())]
        # No body (GET), or a mode that never shows us the body before the headers leave: route now.
        common = self._route(None)
        self.request_sent = not body_follows or self.request_mode == _NO_BODY
        return [pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common),
                                      dynamic_metadata=self._metadata())]

    def on_request_body(self, message: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        if self.scheduled:  # STREAMED mode: routed on the headers; chunks pass unchanged
            self.request_sent = message.request_body.end_of_stream
            return [pb.ProcessingResponse(request_body=pb.BodyResponse())]
        self.chunks.append(message.request_body.body)
        self.body_bytes += len(message.request_body.body)
        if self.body_bytes > self.service.max_body_bytes:
            raise BodyTooLarge(f"request body is larger than {self.service.max_body_bytes} bytes")
        if message.request_body.end_of_stream or self.request_mode == _BUFFERED:
            return self._finish_body(end_of_stream=message.request_body.end_of_stream)
        return []

    def on_request_trailers(self, message: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        # With trailers the last body chunk does not carry end_of_stream: the trailers end the body.
        self.trailers_follow = True
        responses = [] if self.scheduled or self.queue_item is not None else self._finish_body(end_of_stream=False)
        if self.finished or self.waiting:
            return responses  # a held request gets its trailers answer when dispatched
        responses.append(pb.ProcessingResponse(request_trailers=pb.TrailersResponse()))
        self.request_sent = True
        return responses

    def _finish_body(self, end_of_stream: bool) -> list[pb.ProcessingResponse]:
        """Parse, rewrite, admit; the routing answer now, or nothing while flow control holds the request."""
        request = self.request
        if request is None:
            raise BadRequest("request body arrived before its headers")
        raw = b"".join(self.chunks)
        self.chunks = []
        parse_body(request, raw)
        service = self.service
        if service.rewrites and not request.body_changed:  # the rewrite header, when sent, wins
            service.rewrites.apply(request)
        if service.engine_priority and service.flow is None:  # with flow control: on dispatch, at its rank
            self.engine_rank = request.engine_rank = engine_rank(request.priority, True)
            set_engine_priority(request, self.engine_rank)
        if request.body_changed:
            raw = body_bytes(request)
        self.body, self.end_of_stream = raw, end_of_stream
        service.on_admitting(self)
        if service.flow is None:
            return self._send_body()
        self.queue_item = service.flow.enqueue(self, request, len(raw))  # may call dispatched() at once
        if self.deferred is None:
            return []  # held: Process awaits wait()
        return self.take_deferred()

    def _send_body(self) -> list[pb.ProcessingResponse]:
        """Schedule, then the routing answer and the (possibly rewritten) body."""
        raw, end_of_stream = self.body, self.end_of_stream
        common = self._route(raw)
        self.request_sent = end_of_stream
        if self.request_mode == _BUFFERED:
            # BUFFERED: the headers are still held, so the routing mutations ride on the body response.
            if self.request is not None and self.request.body_changed:
                common.body_mutation.body = raw
            return [pb.ProcessingResponse(request_body=pb.BodyResponse(response=common),
                                          dynamic_metadata=self._metadata())]
        headers = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common),
                                        dynamic_metadata=self._metadata())
        return [headers, *body_chunks(raw, end_of_stream)]

    # ---- flow control (QueueOwner) ------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """Held by flow control, no decision yet."""
        return self.queue_item is not None and self.deferred is None

    def dispatched(self, engine_rank: int | None = None) -> None:
        """Flow control let the request go: route it now (synchronously, so the pool's load counts it)."""
        self.flow_started = True
        try:
            if engine_rank is not None:
                self._rank_body(engine_rank)
            responses = self._send_body()
        except RequestRejected as error:
            responses = self._reject_request(error)
        except Exception:
            log.exception("ext_proc: failed routing a request released by flow control")
            responses = self._reject_request(InternalError("internal error in the endpoint picker"))
        self._decide(responses)

    def _rank_body(self, rank: int) -> None:
        """Ranked dispatch: the body carries the engine rank flow control chose for it."""
        request = self.request
        assert request is not None
        self.engine_rank = request.engine_rank = rank
        if self.service.engine_priority:
            changed = request.body_changed
            request.body_changed = False
            set_engine_priority(request, rank)
            if request.body_changed:
                self.body = body_bytes(request)
            request.body_changed = request.body_changed or changed

    def rejected(self, error: RequestRejected) -> None:
        """Flow control gave up on the request (time-to-live)."""
        self._decide(self._reject_request(error))

    def _decide(self, responses: list[pb.ProcessingResponse]) -> None:
        # A request that was held owes the trailers answer too (on_request_trailers left it out).
        if not self.finished and self.trailers_follow and self.queue_item is not None:
            responses.append(pb.ProcessingResponse(request_trailers=pb.TrailersResponse()))
            self.request_sent = True
        self.deferred = responses
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def wait(self) -> list[pb.ProcessingResponse]:
        """Until flow control decides; cancelled (client gone) → ``close()`` takes the request out of the queue."""
        if self.deferred is None:
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
        return self.take_deferred()

    def evict(self) -> None:
        """Stop this sheddable request in flight (Process answers with an ImmediateResponse)."""
        if self.evict_signal is not None and not self.evict_signal.done():
            self.evict_signal.set_result(None)

    async def next_message(self, messages: AsyncIterator[pb.ProcessingRequest]) -> pb.ProcessingRequest | None:
        """The next message from Envoy, or ``None`` when the stream ended or the request was evicted first."""
        assert self.evict_signal is not None
        read = asyncio.ensure_future(anext(messages, None))
        await asyncio.wait((read, self.evict_signal), return_when=asyncio.FIRST_COMPLETED)
        if read.done():
            return read.result()
        read.cancel()
        return None

    def take_deferred(self) -> list[pb.ProcessingResponse]:
        responses, self.deferred = self.deferred or [], []
        return responses

    def _reject_request(self, error: RequestRejected) -> list[pb.ProcessingResponse]:
        self.finished = True
        if self.span is not None:
            self.span.rejected(error.status, error.reason, error.message)
        self.service.on_rejected(self, error)
        return [immediate_response(error)]

    def _route(self, body: bytes | None) -> pb.CommonResponse:
        """Schedule; the header mutations (with ``clear_route_cache``) that send the request on."""
        request = self.request
        assert request is not None
        service = self.service
        picked = service.scheduler.schedule(request, self.subset, admission=service.flow is None)
        self.scheduled = True
        self.picked = picked
        for endpoint in picked[:1]:
            endpoint.request_routed(self.engine_rank)
            self.generation = endpoint.scrape_generation
        if request.sheddable and service.evicting:
            self.evict_signal = asyncio.get_running_loop().create_future()
            service.evictable[self] = None
        self.service.on_scheduled(self, body)
        self.destination = ",".join(ep.address for ep in picked)
        set_headers = [_header(DESTINATION_ENDPOINT, self.destination)]
        if body is not None:
            set_headers.append(_header("content-length", str(len(body))))
        if self.add_request_id:
            set_headers.append(_header(REQUEST_ID, request.request_id))
        if self.span is not None:  # the model server's span becomes a child of ours
            self.span.routed(request.model, request.requested_model, request.objective, request.priority,
                             request.fairness_id, self.destination)
            set_headers.extend(_header(key, value) for key, value in self.span.headers().items())
        return pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=set_headers), clear_route_cache=True)

    def _metadata(self) -> struct_pb2.Struct:
        """``{"envoy.lb": {"x-gateway-destination-endpoint": ...}}``, the same value as the header."""
        metadata = struct_pb2.Struct()
        metadata.fields[METADATA_NAMESPACE].struct_value.fields[DESTINATION_ENDPOINT].string_value = self.destination
        return metadata

    # ---- response path ------------------------------------------------------------------

    def on_response_headers(self, message: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        headers = header_map(message.response_headers.headers)
        try:
            self.status = int(headers.get(":status", "0"))
        except ValueError:
            self.status = 0
        self.sse = "text/event-stream" in headers.get("content-type", "")
        if message.response_headers.end_of_stream:
            self._response_complete()
        return [pb.ProcessingResponse(response_headers=pb.HeadersResponse())]

    def on_response_body(self, message: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        chunk = message.response_body.body
        end = message.response_body.end_of_stream
        if not self.response_bytes and chunk:
            self._response_started()  # the first token (of a stream): the prompt is prefilled
        self.response_bytes += len(chunk)
        if chunk and not self.first_byte_at and (not self.sse or has_token(chunk)):
            self.first_byte_at = time.perf_counter()
        if self.sse:
            self._scan_sse(chunk)
        elif sum(map(len, self.json_chunks)) + len(chunk) <= MAX_USAGE_BODY:
            self.json_chunks.append(chunk)
        if end:
            self._response_complete()
        if self.response_mode != _FULL_DUPLEX:
            return [pb.ProcessingResponse(response_body=pb.BodyResponse())]  # one answer per chunk, unchanged
        return body_chunks(chunk, end, phase="response_body")

    def on_response_trailers(self, message: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        self._response_complete()
        return [pb.ProcessingResponse(response_trailers=pb.TrailersResponse())]

    def _scan_sse(self, chunk: bytes) -> None:
        """Keep the last ``usage`` seen in complete ``data:`` lines (a line may span chunks)."""
        data = self.sse_tail + chunk if self.sse_tail else chunk
        cut = data.rfind(b"\n")
        if cut == -1:
            self.sse_tail = data[-MAX_USAGE_BODY:]
            return
        complete, self.sse_tail = data[:cut], data[cut + 1 :]
        if b'"usage"' not in complete:
            return
        for line in complete.split(b"\n"):
            if line.startswith(b"data:") and b'"usage"' in line:
                try:
                    usage = read_usage(orjson.loads(line[5:]))
                except orjson.JSONDecodeError:
                    continue
                if usage is not None:
                    self.usage = usage

    def _response_complete(self) -> None:
        if self.response_done:
            return
        self.response_done = True
        # Released before the last chunk goes back to Envoy: a client that sends its next request the moment
        # this answer ends must not find the endpoint still counted as busy.
        self._release_endpoint()
        if not self.sse and self.json_chunks:
            try:
                self.usage = read_usage(orjson.loads(b"".join(self.json_chunks)))
            except orjson.JSONDecodeError:
                pass
            self.json_chunks = []
        self.service.on_response_complete(self)
        if self.span is not None:
            usage = self.usage
            self.span.responded(self.status, usage.prompt_tokens if usage else None,
                                usage.completion_tokens if usage else None)

    # ---- lifecycle ----------------------------------------------------------------------

    def handle(self, message: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        """The responses for one message; user-visible problems become an ImmediateResponse."""
        kind = message.WhichOneof("request")
        if self.request is None and self.subset is None:
            self.subset = subset_hint(message)
        try:
            return self._HANDLERS[kind](self, message)
        except RequestRejected as error:
            return self._reject(error, message)
        except Exception:
            log.exception("ext_proc: failed on %s", kind)
            return self._reject(InternalError("internal error in the endpoint picker"), message)

    def _reject(self, error: RequestRejected, message: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        kind = message.WhichOneof("request")
        if kind == "response_headers":  # the response has started: let it through untouched
            return [pb.ProcessingResponse(response_headers=pb.HeadersResponse())]
        if kind == "response_body" and self.response_mode != _FULL_DUPLEX:
            return [pb.ProcessingResponse(response_body=pb.BodyResponse())]
        if kind == "response_body":
            body = message.response_body
            return body_chunks(body.body, body.end_of_stream, phase="response_body")
        if kind == "response_trailers":
            return [pb.ProcessingResponse(response_trailers=pb.TrailersResponse())]
        return self._reject_request(error)

    def close(self) -> None:
        """The gRPC stream ended: the request is over (completed, rejected or cancelled)."""
        if self.status and not self.response_done:
            self._response_complete()  # Envoy stopped sending the response (body mode NONE, or reset)
        flow = self.service.flow
        if self.queue_item is not None and flow is not None:
            flow.cancel(self.queue_item)  # still queued: the client went away
        if self.evict_signal is not None:
            self.service.evictable.pop(self, None)
        self._release_endpoint()
        self.service.on_closed(self)
        if self.span is not None:
            self.span.end()

    def _response_started(self) -> None:
        """Tell the scheduler the picked endpoint has started answering (prefill-aware scorers)."""
        if self.picked and self.request is not None:
            self.service.scheduler.response_started(self.request, self.picked[0])

    def _release_endpoint(self) -> None:
        """Count the request out of its endpoint's in-flight requests, once."""
        if not self.released:
            self.released = True
            self._response_started()  # a no-op unless it ended before its first body chunk
            for endpoint in self.picked[:1]:
                endpoint.request_finished(self.generation, self.engine_rank)
            flow = self.service.flow
            if self.flow_started and flow is not None and self.request is not None:
                flow.finished(self.request.priority, self.request.fairness_id or DEFAULT_FAIRNESS_ID)

    _HANDLERS: ClassVar[dict[str | None, Callable[[RequestStream, pb.ProcessingRequest], list[pb.ProcessingResponse]]]] = {
        "request_headers": on_request_headers,
        "request_body": on_request_body,
        "request_trailers": on_request_trailers,
        "response_headers": on_response_headers,
        "response_body": on_response_body,
        "response_trailers": on_response_trailers,
    }


class ExtProcService(pb_grpc.ExternalProcessorServicer):
    """``envoy.service.ext_proc.v3.ExternalProcessor`` backed by a :class:`Scheduler`."""

    def __init__(
        self,
        scheduler: Scheduler,
        metrics: PickerMetrics | None = None,
        response_processing: bool = True,
        objectives: Objectives | Mapping[str, int | ObjectiveSpec] | None = None,
        max_body_bytes: int = 64 << 20,
        flow: FlowController | None = None,
        rewrites: ModelRewrites | None = None,
        engine_priority: bool = False,
        tracer: Tracer | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.engine_priority = engine_priority
        #: OpenTelemetry tracer for one span per request; ``None``: tracing off.
        self.tracer = tracer
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.response_processing = response_processing
        self.objectives = objectives if isinstance(objectives, Objectives) else Objectives(objectives)
        #: Holds requests while the pool is saturated; ``None``: admission is the scheduler's sheddable check.
        self.flow = flow
        self.rewrites = rewrites
        self._warned_mode = False
        self._model_series: dict[tuple[str, str], ModelSeries] = {}
        self._tenant_series: dict[tuple[str, int, str], TenantSeries] = {}
        #: Sheddable requests in flight that may be evicted, oldest first (``flow_control.evict_sheddable``).
        self.evictable: dict[RequestStream, None] = {}
        self.evicting = flow is not None and flow.config.evict_sheddable
        if self.evicting:
            assert flow is not None
            flow.on_critical_waiting = self._evict_one

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: object
    ) -> AsyncIterator[pb.ProcessingResponse]:
        stream = RequestStream(self)
        messages = aiter(request_iterator)
        try:
            while True:
                if stream.evict_signal is None:
                    message = await anext(messages, None)
                else:  # a sheddable request in flight: also listen for its eviction
                    message = await stream.next_message(messages)
                    if message is None and stream.evict_signal.done():
                        error = Evicted("the request was stopped to make room for more important requests")
                        yield stream._reject_request(error)[0]
                        return
                if message is None:
                    return
                if message.HasField("protocol_config"):
                    self._check_protocol(message.protocol_config)
                    stream.request_mode = message.protocol_config.request_body_mode
                    stream.response_mode = message.protocol_config.response_body_mode
                for response in stream.handle(message):
                    yield response
                if stream.waiting:  # held by flow control: no other message comes before our answer
                    for response in await stream.wait():
                        yield response
                if stream.finished:
                    return  # after an ImmediateResponse Envoy expects nothing more
                if stream.request_sent and not self.response_processing:
                    # Closing the stream cleanly makes Envoy carry on without us for the response
                    # (ext_proc protocol). Envoy ignores mode_override once FULL_DUPLEX_STREAMED body
                    # chunks were sent, so this is the only per-request way to skip the response path.
                    return
        finally:
            stream.close()

    def _evict_one(self) -> None:
        """A non-sheddable request waits: evict the newest in-flight request of the lowest priority, if any."""
        if not self.evictable:
            return
        victim = min(reversed(self.evictable), key=lambda s: s.request.priority if s.request else 0)
        del self.evictable[victim]
        log.info("evicting sheddable request %s", victim.request and victim.request.request_id)
        victim.evict()

    def _check_protocol(self, config: pb.ProtocolConfiguration) -> None:
        if config.request_body_mode not in _SUPPORTED_REQUEST_MODES and not self._warned_mode:
            self._warned_mode = True
            log.warning(
                "Envoy sends the request body in mode %s: requests are scheduled on their headers alone "
                "(no prefix affinity, no body parsing); configure FULL_DUPLEX_STREAMED (or BUFFERED)",
                processing_mode_pb2.ProcessingMode.BodySendMode.Name(config.request_body_mode),
            )

    # ---- accounting hooks ------------------------------------------------------------------

    def _series(self, request: InferenceRequest) -> ModelSeries:
        key = (request.requested_model, request.model)
        series = self._model_series.get(key)
        if series is None:
            assert self.metrics is not None
            series = self._model_series[key] = ModelSeries(self.metrics, *key)
        return series

    def _tenant(self, request: InferenceRequest) -> TenantSeries:
        key = (request.objective, request.priority, request.fairness_id or DEFAULT_FAIRNESS_ID)
        series = self._tenant_series.get(key)
        if series is None:
            assert self.metrics is not None
            series = self._tenant_series[key] = TenantSeries(self.metrics, *key)
        return series

    def on_admitting(self, stream: RequestStream) -> None:
        """A parsed request is about to be admitted (counted per objective and tenant)."""
        if self.metrics is not None and stream.request is not None:
            self._tenant(stream.request).requests.inc()

    def on_scheduled(self, stream: RequestStream, body: bytes | None) -> None:
        request = stream.request
        assert request is not None
        if self.metrics is None or not request.model:
            return
        series = self._series(request)
        series.requests.inc()
        if body is not None:
            series.request_sizes.observe(len(body))
        series.running.inc()

    def on_rejected(self, stream: RequestStream, error: RequestRejected) -> None:
        request = stream.request
        log.debug("request %s rejected: %s %s", request and request.request_id, error.status, error.message)
        if self.metrics is not None:
            model = request.requested_model if request else ""
            target = request.model if request else ""
            self.metrics.errors.labels(model, target, error.error_code).inc()
            priority = str(request.priority) if request else "0"
            tenant = (request.fairness_id if request else "") or DEFAULT_FAIRNESS_ID
            self.metrics.dropped.labels(error.reason, priority, tenant).inc()

    def on_response_complete(self, stream: RequestStream) -> None:
        request = stream.request
        if self.metrics is None or request is None or not request.model:
            return
        series = self._series(request)
        series.duration.observe(time.perf_counter() - stream.started)
        series.response_sizes.observe(stream.response_bytes)
        if stream.status >= 400:
            self.metrics.errors.labels(request.requested_model, request.model, "ModelServerError").inc()
        elif stream.first_byte_at:
            series.ttft.observe(stream.first_byte_at - stream.started)
        if stream.usage is not None:
            tenant = self._tenant(request)
            if stream.usage.prompt_tokens > 0:
                series.input_tokens.observe(stream.usage.prompt_tokens)
                tenant.input_tokens.inc(stream.usage.prompt_tokens)
            if stream.usage.completion_tokens > 0:
                series.output_tokens.observe(stream.usage.completion_tokens)
                tenant.output_tokens.inc(stream.usage.completion_tokens)

    def on_closed(self, stream: RequestStream) -> None:
        request = stream.request
        if self.metrics is not None and stream.scheduled and request is not None and request.model:
            self._series(request).running.dec()
        if stream.picked and self.flow is not None:
            self.flow.pump()  # a request finished: capacity may have appeared


class ModelSeries:
    """The per-model label children, resolved once (``labels()`` costs more than the update itself)."""

    def __init__(self, metrics: PickerMetrics, model: str, target: str) -> None:
        self.requests = metrics.requests.labels(model, target)
        self.request_sizes = metrics.request_sizes.labels(model, target)
        self.response_sizes = metrics.response_sizes.labels(model, target)
        self.duration = metrics.duration.labels(model, target)
        self.ttft = metrics.ttft.labels(model, target)
        self.input_tokens = metrics.input_tokens.labels(model, target)
        self.output_tokens = metrics.output_tokens.labels(model, target)
        self.running = metrics.running.labels(model)


class TenantSeries:
    """Per (objective, priority, fairness id) label children of the objective counters."""

    def __init__(self, metrics: PickerMetrics, objective: str, priority: int, fairness_id: str) -> None:
        self.requests = metrics.objective_requests.labels(objective, str(priority), fairness_id)
        self.input_tokens = metrics.objective_tokens.labels(objective, fairness_id, "input")
        self.output_tokens = metrics.objective_tokens.labels(objective, fairness_id, "output")


def add_to_server(service: ExtProcService, server: object) -> None:
    """Register the service on a ``grpc.aio`` server."""
    pb_grpc.add_ExternalProcessorServicer_to_server(service, server)

