"""The router process: ext_proc gRPC, gRPC health and the model-list refresh in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from inferplane.eventloop import run_service
from inferplane.gateway.router.catalog import ModelCatalog
from inferplane.gateway.router.config import RouterConfig
from inferplane.gateway.router.service import RouterService, add_to_server
from inferplane.grpc_listen import listen
from inferplane.observe.logs import setup_logging

log = logging.getLogger("inferplane.router")

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
_GRPC_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 80 << 20),  # a buffered body in one message
    ("grpc.max_send_message_length", 16 << 20),
]


class RouterServer:
    """Owns the router's gRPC servers and its catalog's refresh task."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.catalog = ModelCatalog(config)
        self.service = RouterService(self.catalog, config)
        self.health = health_aio.HealthServicer()
        self.grpc_port = 0
        self.health_port = 0
        self._servers: list[grpc.aio.Server] = []
        self._refresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        main = grpc.aio.server(options=_GRPC_OPTIONS)
        add_to_server(self.service, main)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, main)
        self.grpc_port = listen(main, self.config.host, self.config.grpc_port, "grpc_port")
        health = grpc.aio.server(options=_GRPC_OPTIONS)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, health)
        self.health_port = listen(health, self.config.host, self.config.health_port, "health_port")
        self._servers = [main, health]
        for server in self._servers:
            await server.start()
        await self.catalog.refresh()  # a first look at the pools (servers still starting keep the configured names)
        self._refresh = asyncio.create_task(self._refresh_loop(), name="model lists")
        for service in ("liveness", "readiness", EXT_PROC_SERVICE, ""):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_interval_s)
            try:
                await self.catalog.refresh()
            except Exception:
                log.exception("refreshing the model lists failed")

    async def stop(self, grace: float = 0.5) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        with contextlib.suppress(Exception):
            await self.health.enter_graceful_shutdown()
        await asyncio.gather(*(server.stop(grace) for server in self._servers))
        await self.catalog.close()


async def run(config: RouterConfig) -> None:
    """Serve until SIGTERM / SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = RouterServer(config)
    try:
        await server.start()
        log.info("router ready: ext_proc %s:%d, health %d, pools %s", config.host, server.grpc_port,
                 server.health_port, ", ".join(pool.name for pool in config.pools))
        await stop.wait()
    finally:
        await server.stop()


def serve(config: RouterConfig) -> int:
    """Run the router; 0 on a clean stop, 1 when a port is taken."""
    setup_logging("router", config.log_format, config.log_level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return run_service(run(config), log)
