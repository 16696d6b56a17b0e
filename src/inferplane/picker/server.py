"""The picker process: ext_proc gRPC, gRPC health, Prometheus and the scraper in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import grpc
from prometheus_client import start_http_server

from inferplane.eventloop import run_service
from inferplane.grpc_listen import listen
from inferplane.observe.logs import setup_logging
from inferplane.observe.tracing import setup_tracing
from inferplane.picker.config import PickerConfig
from inferplane.picker.debug import PickerDebug
from inferplane.picker.discovery import EndpointSource
from inferplane.picker.endpoints import Datastore
from inferplane.picker.extproc import ExtProcService, add_to_server
from inferplane.picker.flowcontrol.controller import FlowController
from inferplane.picker.grpcserver import GrpcServer
from inferplane.picker.health import PickerHealth
from inferplane.picker.kubernetes.watcher import KubernetesWatcher
from inferplane.picker.kv_events import attach_kv_events
from inferplane.picker.metrics import PickerMetrics
from inferplane.picker.objectives import Objectives
from inferplane.picker.rewrite import (
    ModelRewrites,
    RewriteFileSource,
    rewrites_from_rules,
)
from inferplane.picker.scheduling.profile import build_scheduler
from inferplane.picker.scraper import MetricsScraper

log = logging.getLogger("inferplane.picker")

# One gRPC server per port; never share a port with another process (grpc's default is SO_REUSEPORT).
# In BUFFERED mode Envoy sends a whole body in one message: allow more than gRPC's default 4 MiB.
_GRPC_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


class PickerServer:
    """Owns every part of a running picker; ``start()`` binds the ports, ``stop()`` releases them."""

    def __init__(self, config: PickerConfig) -> None:
        self.config = config
        self.datastore = Datastore(staleness=config.staleness, failure_grace=config.failure_grace)
        self.metrics = PickerMetrics()
        self.metrics.watch_pool(self.datastore, config.pool_name)
        self.scheduler = build_scheduler(config, self.datastore, self.metrics)
        self.metrics.watch_saturation(self.scheduler.pool_saturation, config.pool_name)
        self.objectives = Objectives(config.objectives, config.default_objective)
        self.rewrites = ModelRewrites(config.model_rewrites, metrics=self.metrics)
        self.rewrite_file = (
            RewriteFileSource(self.rewrites, config.model_rewrites_file, config.model_rewrites_file_poll_interval)
            if config.model_rewrites_file is not None
            else None
        )
        self.flow: FlowController | None = None
        if config.flow_control.enabled:
            self.flow = FlowController(config.flow_control, self.scheduler.is_saturated, self.metrics,
                                       config.pool_name, ranked=config.engine_priority)
            self.datastore.listeners.append(self.flow.pump)  # each scrape may show room
        self.service = ExtProcService(
            self.scheduler,
            self.metrics,
            response_processing=config.response_processing,
            objectives=self.objectives,
            max_body_bytes=config.max_body_bytes,
            flow=self.flow,
            rewrites=self.rewrites,
            engine_priority=config.engine_priority,
            tracer=setup_tracing(config.telemetry.tracing, "picker"),
        )
        self.health = PickerHealth(self.datastore)
        self.scraper = MetricsScraper(
            self.datastore, config.scrape_interval, config.scrape_timeout, config.metrics_path
        )
        # KV-cache event subscriptions for a precise-prefix-cache-scorer in the profile (else None)
        self.kv_events = attach_kv_events(config, self.datastore, self.scheduler, self.metrics.registry)
        self.source = EndpointSource(
            self.datastore,
            config.endpoints,
            config.endpoints_file,
            config.endpoints_file_poll_interval,
            on_change=self._endpoints_changed,
        )
        self.grpc_port = 0
        self.health_port = 0
        self.metrics_port = 0
        self._grpc: GrpcServer | grpc.aio.Server | None = None
        self._health_grpc: grpc.aio.Server | None = None
        self._metrics_http: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        #: InferenceModelRewrite rules from the cluster (CRD ``spec.rules[]`` shape), newest list.
        self.rewrite_rules: list[dict[str, Any]] = []
        #: Kubernetes discovery (pool pods, InferenceObjectives, InferenceModelRewrites); None when off.
        self.kubernetes: KubernetesWatcher | None = None
        if config.kubernetes is not None:
            self.kubernetes = KubernetesWatcher(
                config.kubernetes,
                on_addresses=self.source.set_discovered,
                on_objectives=self._objectives_changed,
                on_rewrites=self._rewrites_changed,
            )

    def _endpoints_changed(self, removed: list[str]) -> None:
        self.scraper.sync()
        if self.kv_events is not None:
            self.kv_events.sync()
        self.scheduler.forget_endpoints(removed)

    def _objectives_changed(self, objectives: dict[str, int]) -> None:
        """InferenceObjectives from the cluster; they override ``picker.objectives`` entries of the same name."""
        self.objectives.set_source("kubernetes", objectives)

    def _rewrites_changed(self, rules: list[dict[str, Any]]) -> None:
        self.rewrite_rules = rules
        self.rewrites.set_source("kubernetes", rewrites_from_rules(rules, "kubernetes"))

    async def start(self) -> None:
        config = self.config
        self.source.refresh()
        self.scraper.sync()
        if self.kv_events is not None:
            self.kv_events.start()

        # ext_proc on the picker's own HTTP/2 gRPC server: grpc.aio's per-message cost alone exceeded
        # the per-request CPU budget (bench/results/picker.md); the health port stays on grpc.aio.
        self._grpc = GrpcServer() if config.extproc_server == "inferplane" else grpc.aio.server(options=_GRPC_OPTIONS)
        add_to_server(self.service, self._grpc)
        self.health.add_to_server(self._grpc)  # also on the ext_proc port, for a proxy health-checking it
        self.grpc_port = listen(self._grpc, config.host, config.grpc_port, "grpc_port")

        self._health_grpc = grpc.aio.server(options=_GRPC_OPTIONS)
        self.health.add_to_server(self._health_grpc)
        self.health_port = listen(self._health_grpc, config.host, config.health_port, "health_port")

        try:
            self._metrics_http, _ = start_http_server(config.metrics_port, config.host, self.metrics.registry)
        except OSError as exc:
            raise OSError(f"metrics_port {config.metrics_port} on {config.host}: {exc}") from None
        self.metrics_port = self._metrics_http.server_port
        # /debug/state and /debug/decisions (read-only JSON for the console) beside /metrics
        self._metrics_http.set_app(PickerDebug(self).wsgi(self._metrics_http.get_app()))

        await self._grpc.start()
        await self._health_grpc.start()
        await self.health.start()
        if config.endpoints_file is not None:
            self._tasks.append(asyncio.create_task(self.source.watch(), name="endpoints file"))
        if self.rewrite_file is not None:
            self.rewrite_file.refresh()
            self._tasks.append(asyncio.create_task(self.rewrite_file.watch(), name="model rewrites file"))
        if self.kubernetes is not None:
            await self.kubernetes.start()  # waits (bounded) for the first pod list

    async def stop(self, grace: float = 1.0) -> None:
        """Stop promptly: health first (NOT_SERVING), then gRPC with a short grace, scraper, metrics."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.kubernetes is not None:
            await self.kubernetes.stop()
        with contextlib.suppress(Exception):
            await self.health.stop()
        jobs = [server.stop(grace) for server in (self._grpc, self._health_grpc) if server is not None]
        if self._metrics_http is not None:
            jobs.append(asyncio.to_thread(self._close_metrics, self._metrics_http))
            self._metrics_http = None
        await asyncio.gather(*jobs)
        await self.scraper.close()
        if self.kv_events is not None:
            await self.kv_events.close()

    @staticmethod
    def _close_metrics(httpd: Any) -> None:
        httpd.shutdown()  # waits for serve_forever's poll (0.5 s): run off the event loop
        httpd.server_close()


async def run(config: PickerConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM / SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = PickerServer(config)
    try:
        await server.start()
        log.info(
            "picker ready: ext_proc %s:%d, health %d, metrics %d, %d endpoint(s)",
            config.host, server.grpc_port, server.health_port, server.metrics_port, len(server.datastore),
        )
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        log.info("picker stopping")
        await server.stop(grace=0.5)


def serve(config: PickerConfig) -> int:
    """Run the picker in one event loop (uvloop when installed); 0 on a clean stop, 1 when a port is taken."""
    setup_logging("picker", config.telemetry.log_format, logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per scrape otherwise
    return run_service(run(config), log)
