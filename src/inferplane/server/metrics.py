"""The vLLM ``/metrics`` contract (design §3), for every engine.

Engine gauges (running / waiting requests, KV-cache use, cache geometry, prefix-cache counters,
the LoRA adapters running and waiting when LoRA is on) are read from ``engine.stats()`` at scrape
time by a custom collector: no background task, no lock, nothing stale. Request-level counters and
histograms are updated by the API handlers. Every series but the ``*_info`` ones carries the label
``model_name``: the base model, also for requests that named a LoRA adapter (as vLLM).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inferplane.server.engine import Engine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0)
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


class EngineStatsCollector(Collector):
    """Gauges and counters the engine owns, read at scrape time."""

    def __init__(self, engine: Engine, model_name: str, enable_prefix_caching: bool = True) -> None:
        self._engine = engine
        self._labels = [model_name]
        self._prefix_caching = str(enable_prefix_caching)

    def collect(self) -> Iterator[Metric]:
        stats = self._engine.stats()
        labels = self._labels

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["model_name"])
            family.add_metric(labels, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["model_name"])
            family.add_metric(labels, value)
            return family

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", stats.num_requests_running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", stats.num_requests_waiting)
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", stats.kv_cache_usage)
        yield gauge("vllm:gpu_cache_usage_perc", "KV-cache usage (older name). 1 means 100 percent usage.", stats.kv_cache_usage)
        info = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the KV cache configuration.",
            labels=["block_size", "num_gpu_blocks", "enable_prefix_caching"],
        )
        info.add_metric([str(stats.block_size), str(stats.num_gpu_blocks), self._prefix_caching], 1.0)
        yield info
        if stats.max_lora is not None:  # LoRA on (vLLM has no such series without --enable-lora)
            # vLLM's shape: the adapter sets as comma-separated labels, the value the time they
            # were current (read at scrape time, so always now).
            lora = GaugeMetricFamily(
                "vllm:lora_requests_info",
                "Running stats on lora requests.",
                labels=["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
            )
            lora.add_metric(
                [str(stats.max_lora), ",".join(stats.waiting_lora_adapters), ",".join(stats.running_lora_adapters)],
                time.time(),
            )
            yield lora
        yield counter("vllm:prefix_cache_queries", "Prefix-cache queries, in tokens.", stats.prefix_cache_queries)
        yield counter("vllm:prefix_cache_hits", "Prefix-cache hits, in tokens.", stats.prefix_cache_hits)
        yield counter("vllm:num_preemptions", "Cumulative number of preemptions.", stats.num_preemptions)


class ServerMetrics:
    """All ``/metrics`` series of one server (its own registry, so several servers can share a process)."""

    def __init__(self, engine: Engine, model_name: str, enable_prefix_caching: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_name = model_name
        self.registry.register(EngineStatsCollector(engine, model_name, enable_prefix_caching))
        labels = ["model_name"]
        reg = self.registry
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=reg).labels(model_name)
        self.generation_tokens = Counter("vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=reg).labels(model_name)
        self._success = Counter(
            "vllm:request_success", "Count of finished requests.", ["model_name", "finished_reason"], registry=reg
        )
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token in seconds.", labels, buckets=_TTFT_BUCKETS, registry=reg).labels(model_name)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Inter-token latency in seconds.", labels, buckets=_ITL_BUCKETS, registry=reg).labels(model_name)
        self.tpot = Histogram("vllm:time_per_output_token_seconds", "Time per output token in seconds (older name).", labels, buckets=_ITL_BUCKETS, registry=reg).labels(model_name)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency in seconds.", labels, buckets=_E2E_BUCKETS, registry=reg).labels(model_name)
        self.request_prompt_tokens = Histogram("vllm:request_prompt_tokens", "Number of prefill tokens per request.", labels, buckets=_TOKEN_BUCKETS, registry=reg).labels(model_name)
        self.request_generation_tokens = Histogram("vllm:request_generation_tokens", "Number of generation tokens per request.", labels, buckets=_TOKEN_BUCKETS, registry=reg).labels(model_name)
        for reason in ("stop", "length", "abort"):
            self._success.labels(model_name, reason)

    def request_finished(self, reason: str, prompt_tokens: int, generation_tokens: int, e2e_seconds: float) -> None:
        self._success.labels(self.model_name, reason).inc()
        self.request_prompt_tokens.observe(prompt_tokens)
        self.request_generation_tokens.observe(generation_tokens)
        self.e2e.observe(e2e_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimer:
    """Per-request timing feeding TTFT, inter-token latency and token counters."""

    __slots__ = ("_done", "_last", "_metrics", "first_token_at", "generated", "prompt_tokens", "start")

    def __init__(self, metrics: ServerMetrics, prompt_tokens: int) -> None:
        self._metrics = metrics
        self.start = time.perf_counter()
        self._last = self.start
        self.first_token_at: float | None = None
        self.prompt_tokens = prompt_tokens
        self.generated = 0
        self._done = False

    def tokens(self, count: int) -> None:
        """``count`` new tokens arrived together."""
        if count <= 0:
            return
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
            self._metrics.ttft.observe(now - self.start)
            self._metrics.prompt_tokens.inc(self.prompt_tokens)
        else:
            gap = (now - self._last) / count
            for _ in range(count):
                self._metrics.itl.observe(gap)
                self._metrics.tpot.observe(gap)
        self._last = now
        self.generated += count
        self._metrics.generation_tokens.inc(count)

    def finish(self, reason: str) -> None:
        if self._done:
            return
        self._done = True
        if self.first_token_at is None:
            self._metrics.prompt_tokens.inc(self.prompt_tokens)
        self._metrics.request_finished(reason, self.prompt_tokens, self.generated, time.perf_counter() - self.start)
