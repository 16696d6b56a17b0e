"""The picker's Prometheus metrics, named as the GIE reference EPP names them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inferplane.picker.endpoints import Datastore

_LATENCY_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10,
                    15, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600)
_SCHEDULER_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
_SIZE_BUCKETS = tuple(2.0**i for i in range(6, 31))
_INPUT_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536,
                        131072, 262144, 524288, 1048576)
_OUTPUT_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2, 3, 5, 10, 20,
                 30, 60, 120)
_MODEL = ("model_name", "target_model_name")
_QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_FLOW = ("fairness_id", "priority")


class PickerMetrics:
    """All series in one registry (one per picker, so tests can run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("inference_objective_request", "Requests per model and target model.",
                                _MODEL, registry=r)
        self.errors = Counter("inference_objective_request_error", "Request errors per model, target model and code.",
                              (*_MODEL, "error_code"), registry=r)
        self.duration = Histogram("inference_objective_request_duration_seconds",
                                  "Request latency from request headers to the end of the response.",
                                  _MODEL, buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("inference_objective_request_ttft_seconds",
                              "Time to first token: request headers to the first generated text (a stream's first "
                              "SSE event with text; a whole answer's first bytes), successful responses.", _MODEL, buckets=_TTFT_BUCKETS, registry=r)
        self.request_sizes = Histogram("inference_objective_request_sizes", "Request body sizes in bytes.",
                                       _MODEL, buckets=_SIZE_BUCKETS, registry=r)
        self.response_sizes = Histogram("inference_objective_response_sizes", "Response body sizes in bytes.",
                                        _MODEL, buckets=_SIZE_BUCKETS, registry=r)
        self.input_tokens = Histogram("inference_objective_input_tokens", "Prompt tokens per request (from usage).",
                                      _MODEL, buckets=_INPUT_TOKEN_BUCKETS, registry=r)
        self.output_tokens = Histogram("inference_objective_output_tokens",
                                       "Completion tokens per request (from usage).",
                                       _MODEL, buckets=_OUTPUT_TOKEN_BUCKETS, registry=r)
        self.running = Gauge("inference_objective_running_requests", "Requests in flight per model.",
                             ("model_name",), registry=r)
        self.scheduler_e2e = Histogram("inference_extension_scheduler_e2e_duration_seconds",
                                       "End-to-end scheduling latency.", buckets=_SCHEDULER_BUCKETS, registry=r)
        self.plugin_duration = Histogram("inference_extension_plugin_duration_seconds",
                                         "Plugin latency per extension point, plugin type and name.",
                                         ("extension_point", "plugin_type", "plugin_name"),
                                         buckets=_SCHEDULER_BUCKETS, registry=r)
        self.info = Gauge("inference_extension_info", "Build information.", ("commit", "build_ref"), registry=r)
        # flow control (GIE names and labels)
        self.flow_queue_duration = Histogram(
            "inference_extension_flow_control_request_queue_duration_seconds",
            "Time requests spend in flow control, from enqueue to outcome.",
            (*_FLOW, "outcome", "inference_pool", *_MODEL), buckets=_QUEUE_BUCKETS, registry=r)
        self.flow_dispatch_cycle = Histogram("inference_extension_flow_control_dispatch_cycle_duration_seconds",
                                             "Time of one flow-control dispatch cycle.",
                                             buckets=_SCHEDULER_BUCKETS, registry=r)
        self.flow_queue_size = Gauge("inference_extension_flow_control_queue_size",
                                     "Requests held in flow control per fairness id and priority.",
                                     (*_FLOW, "inference_pool", *_MODEL), registry=r)
        self.flow_queue_bytes = Gauge("inference_extension_flow_control_queue_bytes",
                                      "Body bytes held in flow control per fairness id and priority.",
                                      (*_FLOW, "inference_pool", *_MODEL), registry=r)
        self.pool_saturation = Gauge("inference_extension_flow_control_pool_saturation",
                                     "Saturation of the pool (mean endpoint saturation; 1 = saturated).",
                                     ("inference_pool",), registry=r)
        self.rewrite_decisions = Counter("inference_extension_model_rewrite_decisions",
                                         "Model-name rewrites per rewrite, requested model and target model.",
                                         ("model_rewrite_name", "model_name", "target_model"), registry=r)
        # inferplane's own: objectives and tenants
        self.dropped = Counter("inferplane_picker_dropped_requests",
                               "Requests the picker did not send on, by reason (the dropped-reason header value, "
                               "or client-disconnected while queued).", ("reason", *reversed(_FLOW)), registry=r)
        self.objective_requests = Counter("inferplane_picker_objective_requests",
                                          "Requests per objective, priority and fairness id.",
                                          ("objective", "priority", "fairness_id"), registry=r)
        self.objective_tokens = Counter("inferplane_picker_objective_tokens",
                                        "Tokens (from usage) per objective, fairness id and direction.",
                                        ("objective", "fairness_id", "direction"), registry=r)
        from inferplane import __version__

        self.info.labels("", __version__).set(1)

    def watch_pool(self, datastore: Datastore, pool_name: str) -> None:
        """Export the pool gauges, computed from the datastore when Prometheus scrapes."""
        self.registry.register(PoolCollector(datastore, pool_name))

    def watch_saturation(self, saturation: Callable[[], float], pool_name: str) -> None:
        """Export the pool saturation, computed when Prometheus scrapes (off the event loop: torn reads retry)."""

        def read() -> float:
            for _ in range(3):
                try:
                    return saturation()
                except RuntimeError:  # the pool changed size while being read
                    continue
            return 0.0

        self.pool_saturation.labels(pool_name).set_function(read)


class PoolCollector(Collector):
    """``inference_pool_*`` gauges read from the datastore at collection time."""

    def __init__(self, datastore: Datastore, pool_name: str) -> None:
        self.datastore = datastore
        self.pool_name = pool_name

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready = self._ready()
        name = self.pool_name
        kv = GaugeMetricFamily("inference_pool_average_kv_cache_utilization",
                               "Mean KV-cache use of the pool's ready endpoints.", labels=["name"])
        queue = GaugeMetricFamily("inference_pool_average_queue_size",
                                  "Mean waiting requests of the pool's ready endpoints.", labels=["name"])
        pods = GaugeMetricFamily("inference_pool_ready_pods", "Ready endpoints in the pool.", labels=["name"])
        per_pod = GaugeMetricFamily("inference_pool_per_pod_queue_size", "Waiting requests per endpoint.",
                                    labels=["name", "model_server_pod"])
        with_metrics = [ep for ep in ready if ep.metrics is not None]
        if with_metrics:
            kv.add_metric([name], sum(ep.metrics.kv_cache_usage for ep in with_metrics) / len(with_metrics))
            queue.add_metric([name], sum(ep.metrics.waiting for ep in with_metrics) / len(with_metrics))
        else:
            kv.add_metric([name], 0.0)
            queue.add_metric([name], 0.0)
        pods.add_metric([name], len(ready))
        for ep in with_metrics:
            per_pod.add_metric([name, ep.address], ep.metrics.waiting)
        yield from (kv, queue, pods, per_pod)

    def _ready(self) -> list:
        # Runs on the exposition thread while the event loop may be changing the pool: retry a torn read.
        for _ in range(3):
            try:
                return self.datastore.ready(time.monotonic())
            except RuntimeError:
                continue
        return []
