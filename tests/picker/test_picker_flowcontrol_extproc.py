"""Flow control, objectives and model rewrites through the real ext_proc servicer over gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from picker_support import grpc_server, wait_until
from test_picker_extproc import (
    POST,
    body_messages,
    chat_body,
    headers_message,
    immediate,
    response_body,
    response_headers,
    set_headers,
    streamed,
)

from inferplane.picker.config import PickerConfig
from inferplane.picker.endpoints import Datastore, EndpointMetrics
from inferplane.picker.extproc import ExtProcService, add_to_server
from inferplane.picker.flowcontrol.controller import FlowController
from inferplane.picker.metrics import PickerMetrics
from inferplane.picker.objectives import Objectives
from inferplane.picker.rewrite import ModelRewrites
from inferplane.picker.scheduling.profile import build_scheduler

OBJECTIVES = {"chat": 10, "standard": 0, "batch": -1}


class Gateway:
    """One endpoint (queue threshold 5) behind the servicer with flow control on."""

    def __init__(self, stub: pb_grpc.ExternalProcessorStub, datastore: Datastore, metrics: PickerMetrics,
                 flow: FlowController) -> None:
        self.stub = stub
        self.datastore = datastore
        self.metrics = metrics
        self.flow = flow
        self.endpoint = datastore.all()[0]

    def scrape(self, waiting: float) -> None:
        """What a scrape of the model server would record (and its capacity trigger)."""
        self.datastore.record_scrape(self.endpoint, EndpointMetrics(waiting=waiting), now=time.monotonic())

    async def open(self, objective: str = "standard", tenant: str = "", **extra: str) -> grpc.aio.StreamStreamCall:
        """Send a request's headers and body; keep its stream open (the request is 'running')."""
        call = self.stub.Process()
        headers = {**POST, "x-llm-d-inference-objective": objective, **extra}
        if tenant:
            headers["x-llm-d-inference-fairness-id"] = tenant
        for message in [headers_message(headers), *body_messages(chat_body(), 1)]:
            await call.write(message)
        return call

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


@contextlib.asynccontextmanager
async def make_gateway(engine_priority: bool = False, **flow: object) -> AsyncIterator[Gateway]:
    config = PickerConfig(objectives=OBJECTIVES, flow_control={"enabled": True, **flow}, engine_priority=engine_priority,
                          model_rewrites=[{"name": "canary", "rules": [
                              {"matches": [{"model": {"value": "m-alias"}}], "targets": [{"modelRewrite": "m2"}]}]}])
    datastore = Datastore(staleness=1e9)
    datastore.set_addresses(["10.1.0.1:8000"])
    metrics = PickerMetrics()
    scheduler = build_scheduler(config, datastore, metrics)
    controller = FlowController(config.flow_control, scheduler.is_saturated, metrics, "pool", ranked=engine_priority)
    datastore.listeners.append(controller.pump)
    service = ExtProcService(scheduler, metrics, objectives=Objectives(config.objectives), flow=controller,
                             engine_priority=engine_priority,
                             rewrites=ModelRewrites(config.model_rewrites, metrics=metrics))
    async with grpc_server(lambda server: add_to_server(service, server)) as channel:
        gateway = Gateway(pb_grpc.ExternalProcessorStub(channel), datastore, metrics, controller)
        gateway.scrape(0)
        yield gateway


async def first_reply(call: grpc.aio.StreamStreamCall) -> pb.ProcessingResponse:
    return await call.read()


async def test_saturated_pool_holds_requests_and_releases_them_by_priority_on_scrapes() -> None:
    async with make_gateway() as gw:
        gw.scrape(waiting=10)  # saturated
        low1 = await gw.open("standard")
        await wait_until(lambda: gw.flow.queued == 1)
        high = await gw.open("chat")
        await wait_until(lambda: gw.flow.queued == 2)
        low2 = await gw.open("standard")
        await wait_until(lambda: gw.flow.queued == 3)
        replies = {name: asyncio.ensure_future(first_reply(call))
                   for name, call in [("low1", low1), ("high", high), ("low2", low2)]}
        released: list[str] = []
        for _ in range(3):
            # room for exactly one more: 4 waiting + 1 routed since the scrape reaches the threshold
            gw.scrape(waiting=4)
            done, _ = await asyncio.wait(
                [t for n, t in replies.items() if n not in released], return_when=asyncio.FIRST_COMPLETED
            )
            assert len(done) == 1
            name = next(n for n, t in replies.items() if t in done)
            assert replies[name].result().WhichOneof("response") == "request_headers"
            assert gw.flow.queued == 2 - len(released)
            released.append(name)
        assert released == ["high", "low1", "low2"]
        for call in (low1, high, low2):
            call.cancel()
        waited = gw.metric("inference_extension_flow_control_request_queue_duration_seconds_count",
                           fairness_id="default", priority="10", outcome="Dispatched", inference_pool="pool",
                           model_name="m", target_model_name="m")
        assert waited == 1


async def test_a_request_finishing_releases_the_next_without_a_scrape() -> None:
    async with make_gateway() as gw:
        gw.scrape(waiting=5)
        first = await gw.open()
        second = await gw.open()
        await wait_until(lambda: gw.flow.queued == 2)
        gw.scrape(waiting=4)  # room for one
        assert (await first.read()).WhichOneof("response") == "request_headers"
        assert gw.flow.queued == 1
        await first.done_writing()  # the first request ends: its stream closes, in flight drops
        while await first.read() is not grpc.aio.EOF:
            pass
        assert (await second.read()).WhichOneof("response") == "request_headers"
        second.cancel()


async def test_time_to_live_expiry_is_503_with_reason() -> None:
    async with make_gateway(bands=[{"priority": 0, "ttl": 0.1}]) as gw:
        gw.scrape(waiting=10)
        call = await gw.open()
        await call.done_writing()
        responses = [r async for r in call]
        status, headers, body = immediate(responses)
        assert status == 503 and headers["x-inference-request-dropped-reason"] == "queue-ttl-expired"
        assert body["error"]["type"] == "service_unavailable" and "time-to-live" in body["error"]["message"]
        assert gw.flow.queued == 0
        assert gw.metric("inferplane_picker_dropped_requests_total", reason="queue-ttl-expired", priority="0",
                         fairness_id="default") == 1


async def test_full_band_is_429_and_sheddable_on_saturated_pool_is_429() -> None:
    async with make_gateway(max_requests=1) as gw:
        gw.scrape(waiting=10)
        held = await gw.open(tenant="t1")
        await wait_until(lambda: gw.flow.queued == 1)
        full = await gw.open(tenant="t2")
        await full.done_writing()
        status, headers, body = immediate([r async for r in full])
        assert status == 429 and headers["x-inference-request-dropped-reason"] == "rejected-queue-full"
        assert body["error"]["type"] == "rate_limit_exceeded"

        shed = await gw.open("batch")
        await shed.done_writing()
        status, headers, _ = immediate([r async for r in shed])
        assert status == 429 and headers["x-inference-request-dropped-reason"] == "rejected-saturated"
        held.cancel()


async def test_client_disconnect_removes_the_queued_request_at_once() -> None:
    async with make_gateway() as gw:
        gw.scrape(waiting=10)
        call = await gw.open(tenant="gone")
        other = await gw.open(tenant="stays")
        await wait_until(lambda: gw.flow.queued == 2)
        call.cancel()  # Envoy resets the ext_proc stream when the client goes away
        await wait_until(lambda: gw.flow.queued == 1)
        assert gw.flow.queue_sizes() == {(0, "stays"): (1, len(chat_body()))}
        assert gw.metric("inferplane_picker_dropped_requests_total", reason="client-disconnected", priority="0",
                         fairness_id="gone") == 1
        gw.scrape(waiting=0)
        assert (await other.read()).WhichOneof("response") == "request_headers"
        assert gw.endpoint.in_flight == 1  # only the request that stayed was routed
        other.cancel()


async def test_pool_with_room_routes_at_once_and_counts_objective_and_tenant() -> None:
    async with make_gateway() as gw:
        document = orjson.dumps({"object": "chat.completion", "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
        call = await gw.open("chat", tenant="acme")
        for message in [response_headers("200", "application/json"), response_body(document, end=True)]:
            await call.write(message)
        await call.done_writing()
        kinds = [r.WhichOneof("response") async for r in call]
        assert kinds == ["request_headers", "request_body", "response_headers", "response_body"]
        assert gw.metric("inferplane_picker_objective_requests_total", objective="chat", priority="10",
                         fairness_id="acme") == 1
        assert gw.metric("inferplane_picker_objective_tokens_total", objective="chat", fairness_id="acme",
                         direction="output") == 3
        assert gw.metric("inferplane_picker_objective_tokens_total", objective="chat", fairness_id="acme",
                         direction="input") == 7


async def test_model_rewrite_rule_changes_the_forwarded_body() -> None:
    async with make_gateway() as gw:
        call = gw.stub.Process()
        body = orjson.dumps({"model": "m-alias", "prompt": "hello"})
        for message in [headers_message({**POST, ":path": "/v1/completions"}), *body_messages(body, 2)]:
            await call.write(message)
        await call.done_writing()
        responses = [r async for r in call]
        forwarded = b"".join(c.body for c in streamed(responses[1:]))
        assert orjson.loads(forwarded) == {"model": "m2", "prompt": "hello"}
        assert set_headers(responses[0])["content-length"] == str(len(forwarded))
        assert gw.metric("inference_extension_model_rewrite_decisions_total", model_rewrite_name="canary",
                         model_name="m-alias", target_model="m2") == 1
        assert gw.metric("inference_objective_request_total", model_name="m-alias", target_model_name="m2") == 1


async def test_waiting_critical_request_evicts_the_newest_sheddable_in_flight() -> None:
    async with make_gateway(evict_sheddable=True) as gw:
        older = await gw.open("batch", tenant="older")  # the pool has room: both sheddable requests run
        assert (await older.read()).WhichOneof("response") == "request_headers"
        newer = await gw.open("batch", tenant="newer")
        assert (await newer.read()).WhichOneof("response") == "request_headers"
        assert gw.endpoint.in_flight == 2

        gw.scrape(waiting=10)  # saturated
        critical = await gw.open("chat")
        await wait_until(lambda: gw.endpoint.in_flight == 1)  # one victim, not both
        replies = []
        while (reply := await newer.read()) is not grpc.aio.EOF:
            replies.append(reply)
        status, headers, body = immediate(replies[-1:])
        assert status == 429 and headers["x-inference-request-dropped-reason"] == "evicted-for-priority"
        assert body["error"]["type"] == "rate_limit_exceeded"
        assert gw.flow.queued == 1  # the critical request still waits for room to show ...
        gw.scrape(waiting=4)
        assert (await critical.read()).WhichOneof("response") == "request_headers"  # ... and then goes
        assert gw.metric("inferplane_picker_dropped_requests_total", reason="evicted-for-priority", priority="-1",
                         fairness_id="newer") == 1
        for call in (older, critical):
            call.cancel()


async def test_without_eviction_sheddable_requests_in_flight_are_left_alone() -> None:
    async with make_gateway() as gw:
        shed = await gw.open("batch")
        assert (await shed.read()).WhichOneof("response") == "request_headers"
        gw.scrape(waiting=10)
        critical = await gw.open("chat")
        await wait_until(lambda: gw.flow.queued == 1)
        assert gw.endpoint.in_flight == 1
        for call in (shed, critical):
            call.cancel()


async def test_body_ended_by_trailers_gets_one_trailers_answer_held_or_not() -> None:
    trailers = pb.ProcessingRequest(request_trailers=pb.HttpTrailers())
    messages = [headers_message(POST), *body_messages(chat_body(), 2, end_of_stream=False), trailers]
    async with make_gateway() as gw:
        call = gw.stub.Process()
        for message in messages:
            await call.write(message)
        await call.done_writing()
        kinds = [r.WhichOneof("response") async for r in call]
        assert kinds.count("request_trailers") == 1 and kinds[0] == "request_headers"

        gw.scrape(waiting=10)
        held = gw.stub.Process()
        for message in messages:
            await held.write(message)
        await wait_until(lambda: gw.flow.queued == 1)
        gw.scrape(waiting=0)
        await held.done_writing()
        kinds = [r.WhichOneof("response") async for r in held]
        assert kinds.count("request_trailers") == 1 and kinds[0] == "request_headers"
        assert kinds[-1] == "request_trailers"


async def test_ranked_dispatch_sends_critical_past_a_pool_full_of_sheddable_work() -> None:
    async with make_gateway(engine_priority=True, queue_sheddable=True) as gw:
        batch = [await gw.open("batch") for _ in range(5)]
        replies = [await call.read() for call in batch]
        assert all(reply.WhichOneof("response") == "request_headers" for reply in replies)
        gw.scrape(waiting=6)  # saturated (threshold 5), by the 5 sheddable requests and one unknown
        queued = await gw.open("batch")
        await wait_until(lambda: gw.flow.queued == 1)  # a sheddable request meets the whole load: it waits
        bodies = {}
        for objective in ("chat", "standard"):
            call = await gw.open(objective)
            reply = await call.read()  # at once: only 1 request of its rank or above waits there
            assert reply.WhichOneof("response") == "request_headers"
            bodies[objective] = orjson.loads(b"".join(c.body for c in streamed([await call.read()])))
            call.cancel()
        # vLLM priority 1 - rank: chat 1 - 21, standard (within its share) 1 - 1 = 0, vLLM's default, left out
        assert bodies["chat"]["priority"] == -20 and "priority" not in bodies["standard"]
        assert gw.flow.queued == 1
        for call in (*batch, queued):
            call.cancel()
