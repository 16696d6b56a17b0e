"""gRPC health (GIE protocol): ``liveness`` always, readiness once an endpoint has fresh metrics."""

from __future__ import annotations

import asyncio
import contextlib

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from inferplane.picker.endpoints import Datastore

LIVENESS = "liveness"
READINESS = "readiness"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class PickerHealth:
    """Keeps the health servicer's statuses in step with the datastore."""

    def __init__(self, datastore: Datastore, interval: float = 0.1) -> None:
        self.datastore = datastore
        self.interval = interval
        self.servicer = health_aio.HealthServicer()
        self.ready = False
        self._task: asyncio.Task[None] | None = None

    def add_to_server(self, server: object) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await self.servicer.set(LIVENESS, SERVING)
        await self.update()
        self._task = asyncio.create_task(self._loop(), name="picker health")

    async def update(self) -> None:
        """Readiness = at least one ready endpoint with fresh metrics; the ext_proc and "" services follow it."""
        ready = self.datastore.has_fresh()
        if ready == self.ready and self._task is not None:
            return
        self.ready = ready
        status = SERVING if ready else NOT_SERVING
        for service in (READINESS, EXT_PROC_SERVICE, ""):
            await self.servicer.set(service, status)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.update()

    async def stop(self) -> None:
        """Report NOT_SERVING everywhere (shutting down) and stop following the datastore."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.servicer.enter_graceful_shutdown()
