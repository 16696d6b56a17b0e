"""Real parts for the picker tests (imported by them and conftest.py): a tiny HTTP server serving model-server metrics, a gRPC ext_proc server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from inferplane.picker.grpcserver import GrpcServer

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} {waiting}
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 99.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} {kv}
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="19208"} 1.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="m"} 0.0
vllm:time_to_first_token_seconds_count{model_name="m"} 12.0
"""


def vllm_metrics(waiting: float = 0.0, kv: float = 0.0) -> str:
    return VLLM_METRICS.replace("{waiting}", str(waiting)).replace("{kv}", str(kv))


@dataclass
class FakeModelServer:
    """A real HTTP server whose ``/metrics`` answer the test controls."""

    address: str = ""
    text: str = field(default_factory=vllm_metrics)
    status: int = 200
    scrapes: int = 0


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve_fake_model_server() -> AsyncIterator[FakeModelServer]:
    state = FakeModelServer()

    async def metrics(request: Request) -> PlainTextResponse:
        state.scrapes += 1
        return PlainTextResponse(state.text, status_code=state.status)

    app = Starlette(routes=[Route("/metrics", metrics)])
    sock = _bound_socket()
    state.address = f"127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield state
    finally:
        server.should_exit = True
        await task
        sock.close()


async def wait_until(condition, limit: float = 10.0, step: float = 0.01) -> None:
    """Poll ``condition`` (bounded); fail the test if it never holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(step)


@contextlib.asynccontextmanager
async def grpc_server(*register) -> AsyncIterator[grpc.aio.Channel]:
    """The picker's gRPC server on a free port with the given ``register(server)`` calls, and a channel to it."""
    server = GrpcServer()
    for add in register:
        add(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(0)
