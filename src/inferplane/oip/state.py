"""What the REST and gRPC front ends share: the repository, metrics and readiness."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from inferplane.oip.config import OipConfig
from inferplane.oip.errors import InferError, LoadError
from inferplane.oip.metrics import OipMetrics
from inferplane.oip.repository import ModelRepository, ModelVersion

log = logging.getLogger("inferplane.oip")


class ServerState:
    """Loads the repository at startup (each model on its own: one failure spares the rest)."""

    def __init__(self, config: OipConfig) -> None:
        self.config = config
        self.metrics = OipMetrics()
        self.repository = ModelRepository(config.repository, self.metrics, config.cache_dir)
        self.metrics.attach(self.repository)
        self.started = False
        self.grpc_port: int | None = None

    async def start(self) -> None:
        names = self.repository.scan()
        wanted = names if self.config.load_models is None else self.config.load_models
        for name in wanted:
            try:
                await self.repository.load(name)
                log.info("model %s ready", name)
            except (LoadError, InferError) as exc:
                log.error("%s", exc)
        self.started = True

    async def stop(self) -> None:
        await self.repository.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        grpc_server = None
        await self.start()
        if self.config.grpc_port is not None:
            from inferplane.oip.grpc_service import start_grpc_server

            grpc_server = await start_grpc_server(self, self.config.host, self.config.grpc_port)
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=1.0)
            await self.stop()

    def ready(self) -> bool:
        """Started, nothing loading, and no model that failed to load."""
        if not self.started:
            return False
        for entry in self.repository.models.values():
            if entry.state == "LOADING" or (entry.state == "UNAVAILABLE" and entry.reason not in ("", "unloaded")):
                return False
        return True

    def model_ready(self, name: str, version: str | None) -> bool:
        try:
            self.repository.get(name, version or None)
        except InferError:
            return False
        return True

    def metadata(self, model: ModelVersion) -> dict:
        """v2 model metadata."""

        def tensors(specs: list) -> list[dict]:
            return [{"name": s.name, "datatype": s.datatype, "shape": model.public_shape(s)} for s in specs]

        return {
            "name": model.name,
            "versions": self.repository.ready_versions(model.name),
            "platform": model.config.platform or model.runtime.platform,
            "inputs": tensors(model.inputs),
            "outputs": tensors(model.outputs),
        }
