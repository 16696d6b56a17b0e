"""Scraping every endpoint's Prometheus ``/metrics`` into the datastore.

Only the few series the scheduler needs are read (design.md §3), by searching the text for their
names rather than parsing every line: a vLLM ``/metrics`` page is mostly histograms we ignore.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

import httpx

from inferplane.picker.endpoints import Datastore, Endpoint, EndpointMetrics

log = logging.getLogger(__name__)

# Series name -> EndpointMetrics field; samples of one series (several engines) are summed.
_GAUGES: dict[str, str] = {
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_requests_running": "running",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage",  # vLLM < 0.10 name
    "sglang:num_queue_reqs": "waiting",
    "sglang:num_running_reqs": "running",
    "sglang:token_usage": "kv_cache_usage",
}
_CACHE_CONFIG = ("vllm:cache_config_info", "sglang:cache_config_info")
_LORA_INFO = "vllm:lora_requests_info"
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _samples(text: str, name: str) -> list[tuple[str, float]]:
    """Every sample of series ``name`` in ``text`` (which starts with a newline), as (labels, value)."""
    found: list[tuple[str, float]] = []
    needle = "\n" + name
    start = text.find(needle)
    while start != -1:
        at = start + len(needle)
        end = text.find("\n", at)
        if end == -1:
            end = len(text)
        follow = text[at : at + 1]
        if follow == "{":
            close = text.rfind("}", at, end)
            labels, rest = text[at + 1 : close], text[close + 1 : end]
        elif follow == " ":
            labels, rest = "", text[at:end]
        else:  # a longer name sharing the prefix, e.g. vllm:num_requests_waiting_by_reason
            start = text.find(needle, at)
            continue
        parts = rest.split()
        if parts:
            try:
                found.append((labels, float(parts[0])))
            except ValueError:
                pass
        start = text.find(needle, end)
    return found


def parse_metrics(text: str) -> EndpointMetrics:
    """Read the scheduler's signals from a Prometheus text page (vLLM or SGLang names)."""
    text = "\n" + text
    metrics = EndpointMetrics()
    seen: set[str] = set()
    for name, attr in _GAUGES.items():
        if attr in seen:
            continue  # the first name present wins (kv_cache_usage_perc over gpu_cache_usage_perc)
        samples = _samples(text, name)
        if samples:
            seen.add(attr)
            setattr(metrics, attr, sum(value for _, value in samples))
            if attr == "waiting":
                metrics.models = _served_models(samples)
    for name in _CACHE_CONFIG:
        samples = _samples(text, name)
        if samples:
            labels = dict(_LABEL.findall(samples[0][0]))
            metrics.block_size = _int_or_none(labels.get("block_size"))
            metrics.num_gpu_blocks = _int_or_none(labels.get("num_gpu_blocks"))
            break
    lora = _samples(text, _LORA_INFO)
    if lora:
        labels_text, _ = max(lora, key=lambda sample: sample[1])  # value is a timestamp: newest wins
        labels = dict(_LABEL.findall(labels_text))
        metrics.max_lora = _int_or_none(labels.get("max_lora"))
        metrics.running_loras = _adapter_set(labels.get("running_lora_adapters", ""))
        metrics.waiting_loras = _adapter_set(labels.get("waiting_lora_adapters", ""))
    return metrics


def _served_models(samples: list[tuple[str, float]]) -> frozenset[str]:
    names = (dict(_LABEL.findall(labels)).get("model_name", "") for labels, _ in samples)
    return frozenset(name for name in names if name)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


def _adapter_set(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


class MetricsScraper:
    """One polling loop per endpoint (a slow server never delays the others), sharing one keep-alive client."""

    def __init__(
        self,
        datastore: Datastore,
        interval: float = 0.05,
        timeout: float = 0.5,
        path: str = "/metrics",
    ) -> None:
        self.datastore = datastore
        self.interval = interval
        self.timeout = timeout
        self.path = path
        self._client: httpx.AsyncClient | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def sync(self) -> None:
        """Start loops for new endpoints and stop those of removed ones (call after ``set_addresses``)."""
        if self._client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            self._client = httpx.AsyncClient(timeout=self.timeout, limits=limits, trust_env=False)
        current = {ep.address: ep for ep in self.datastore.all()}
        for address in list(self._tasks):
            if address not in current:
                self._tasks.pop(address).cancel()
        for address, endpoint in current.items():
            if address not in self._tasks:
                self._tasks[address] = asyncio.create_task(self._loop(endpoint), name=f"scrape {address}")

    async def scrape_once(self, endpoint: Endpoint) -> None:
        """Fetch and record one endpoint's metrics; failures are recorded, never raised."""
        assert self._client is not None, "call sync() first"
        url = f"http://{endpoint.address}{self.path}"
        try:
            response = await self._client.get(url)
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            metrics = parse_metrics(response.text)
        except Exception as exc:  # noqa: BLE001 (any failure takes the endpoint out after the grace period)
            self.datastore.record_failure(endpoint, f"{type(exc).__name__}: {exc}")
            return
        self.datastore.record_scrape(endpoint, metrics)

    async def _loop(self, endpoint: Endpoint) -> None:
        while not endpoint.removed:
            started = time.monotonic()
            await self.scrape_once(endpoint)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def close(self) -> None:
        """Stop every loop and close the HTTP client."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None
