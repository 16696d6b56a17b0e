"""``/metrics``: Triton-named counters, queue / batch histograms and the gauges the picker reads.

Gauges are read from the batchers at scrape time. ``nv_inference_pending_request_count`` is
Triton's queue-size gauge (per model and version); ``vllm:num_requests_waiting`` /
``vllm:num_requests_running`` give it per model (the picker sums the samples) so the endpoint picker's queue and
least-in-flight scorers work on these pools unchanged (design §3), and
``vllm:kv_cache_usage_perc`` is 0 (no KV cache).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from inferplane.oip.repository import ModelRepository

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_QUEUE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _BatcherCollector(Collector):
    def __init__(self, repository: Callable[[], ModelRepository | None]) -> None:
        self._repository = repository

    def collect(self) -> Iterator[Metric]:
        repo = self._repository()
        versions = repo.loaded() if repo else []
        labels = ["model", "version"]

        def family(kind: type, name: str, doc: str, attr: Callable) -> Metric:
            fam = kind(name, doc, labels=labels)
            for v in versions:
                fam.add_metric([v.name, v.version], attr(v.batcher.stats))
            return fam

        yield family(GaugeMetricFamily, "nv_inference_pending_request_count", "Requests waiting in the model's queue.", lambda s: s.queued)
        yield family(GaugeMetricFamily, "inferplane_oip_running_requests", "Requests in batches being computed.", lambda s: s.running)
        yield family(CounterMetricFamily, "nv_inference_request_success", "Successful inference requests.", lambda s: s.requests)
        yield family(CounterMetricFamily, "nv_inference_request_failure", "Failed inference requests.", lambda s: s.failures)
        yield family(CounterMetricFamily, "nv_inference_count", "Inferences performed (batch rows).", lambda s: s.inferences)
        yield family(CounterMetricFamily, "nv_inference_exec_count", "Model executions (batches).", lambda s: s.executions)
        yield family(CounterMetricFamily, "nv_inference_queue_duration_us", "Cumulative queue time, microseconds.", lambda s: s.queue_seconds * 1e6)
        yield family(CounterMetricFamily, "nv_inference_compute_infer_duration_us", "Cumulative compute time, microseconds.", lambda s: s.compute_seconds * 1e6)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Requests waiting, all models (picker contract).", labels=["model_name"])
        running = GaugeMetricFamily("vllm:num_requests_running", "Requests computing, all models (picker contract).", labels=["model_name"])
        kv = GaugeMetricFamily("vllm:kv_cache_usage_perc", "No KV cache: always 0 (picker contract).", labels=["model_name"])
        per_model: dict[str, list[float]] = {}
        for v in versions:
            queued, busy = per_model.setdefault(v.name, [0.0, 0.0])
            per_model[v.name] = [queued + v.batcher.stats.queued, busy + v.batcher.stats.running]
        for name, (queued, busy) in sorted(per_model.items()) or [("", (0.0, 0.0))]:
            waiting.add_metric([name], queued)
            running.add_metric([name], busy)
            kv.add_metric([name], 0.0)
        yield waiting
        yield running
        yield kv


class OipMetrics:
    """The server's Prometheus registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._repository: ModelRepository | None = None
        self.registry.register(_BatcherCollector(lambda: self._repository))
        self.queue_time = Histogram(
            "inferplane_oip_queue_duration_seconds", "Time a request waited before its batch ran.", ["model", "version"], buckets=_QUEUE_BUCKETS, registry=self.registry
        )
        self.batch_size = Histogram(
            "inferplane_oip_batch_size", "Rows in the batch each request ran in.", ["model", "version"], buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.compute_time = Histogram(
            "inferplane_oip_compute_duration_seconds", "Model call time per request's batch.", ["model", "version"], buckets=_QUEUE_BUCKETS, registry=self.registry
        )

    def attach(self, repository: ModelRepository) -> None:
        self._repository = repository

    def observer(self, model: str, version: str) -> Callable[[float, int, float], None]:
        """A callback recording (queue seconds, batch rows, compute seconds) for one model version."""
        queue = self.queue_time.labels(model, version)
        batch = self.batch_size.labels(model, version)
        compute = self.compute_time.labels(model, version)

        def observe(wait: float, rows: int, seconds: float) -> None:
            queue.observe(wait)
            batch.observe(rows)
            compute.observe(seconds)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
