"""Scraping every endpoint's Prometheus ``/metrics`` into the datastore.

Only the few series the scheduler needs are read (design.md §3), by searching the text for their
names rather than parsing every line: a vLLM ``/metrics`` page is mostly histograms we ignore.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from dataclasses import dataclass

from inferplane.picker.endpoints import Datastore, EndpointMetrics
from inferplane.picker.poller import MetricsPoller

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class _Dialect:
    """One engine's metric names. Gauges map series name -> EndpointMetrics field; the samples of one
    series (several engines in one server) are summed; the first name present per field wins."""

    gauges: dict[str, str]
    cache_config: str
    lora_info: str | None = None


# vLLM first: a page with any vLLM gauge is not searched for SGLang names.
_DIALECTS = (
    _Dialect({"vllm:num_requests_waiting": "waiting", "vllm:num_requests_running": "running",
              "vllm:kv_cache_usage_perc": "kv_cache_usage",
              "vllm:gpu_cache_usage_perc": "kv_cache_usage"},  # vLLM < 0.10 name
             "vllm:cache_config_info", "vllm:lora_requests_info"),
    _Dialect({"sglang:num_queue_reqs": "waiting", "sglang:num_running_reqs": "running",
              "sglang:token_usage": "kv_cache_usage"}, "sglang:cache_config_info"),
)
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _samples(text: str, name: str) -> list[tuple[str, float]]:
    """Every sample of series ``name`` in ``text`` (which starts with a newline), as (labels, value).

    The text format keeps all samples of one metric family on consecutive lines, so reading stops
    at the first line of another family instead of searching the rest of the page.
    """
    needle = "\n" + name
    size = len(needle)
    start = text.find(needle)
    while start != -1 and text[start + size : start + size + 1] not in ("{", " "):
        start = text.find(needle, start + size)  # a longer name sharing the prefix, e.g. ..._by_reason
    found: list[tuple[str, float]] = []
    while start != -1:
        at = start + size
        follow = text[at : at + 1]
        end = text.find("\n", at)
        if end == -1:
            end = len(text)
        if follow == "{":
            close = text.rfind("}", at, end)
            labels, rest = text[at + 1 : close], text[close + 1 : end]
        elif follow == " ":
            labels, rest = "", text[at:end]
        else:  # the next family begins
            break
        parts = rest.split()
        if parts:
            try:
                found.append((labels, float(parts[0])))
            except ValueError:
                pass
        start = end if text.startswith(name, end + 1) else -1
    return found


def parse_metrics(text: str) -> EndpointMetrics:
    """Read the scheduler's signals from a Prometheus text page (vLLM or SGLang names)."""
    text = "\n" + text
    metrics = EndpointMetrics()
    dialects = _DIALECTS
    for dialect in _DIALECTS:
        if _read_gauges(text, dialect, metrics):
            dialects = (dialect,)
            break
    for dialect in dialects:
        samples = _samples(text, dialect.cache_config)
        if samples:
            metrics.block_size, metrics.num_gpu_blocks = _cache_geometry(samples[0][0])
            break
    for dialect in dialects:
        lora = _samples(text, dialect.lora_info) if dialect.lora_info else []
        if lora:
            labels_text, _ = max(lora, key=lambda sample: sample[1])  # value is a timestamp: newest wins
            metrics.max_lora, metrics.running_loras, metrics.waiting_loras = _lora_state(labels_text)
            break
    return metrics


# Label texts repeat on every page of a server: each distinct one is parsed once.
_memo = functools.lru_cache(maxsize=1024)


@_memo
def _cache_geometry(labels_text: str) -> tuple[int | None, int | None]:
    """(block_size, num_gpu_blocks) of a cache_config_info sample."""
    labels = dict(_LABEL.findall(labels_text))
    return _int_or_none(labels.get("block_size")), _int_or_none(labels.get("num_gpu_blocks"))


@_memo
def _lora_state(labels_text: str) -> tuple[int | None, frozenset[str], frozenset[str]]:
    """(max_lora, running adapters, waiting adapters) of a lora_requests_info sample."""
    labels = dict(_LABEL.findall(labels_text))
    return (_int_or_none(labels.get("max_lora")), _adapter_set(labels.get("running_lora_adapters", "")),
            _adapter_set(labels.get("waiting_lora_adapters", "")))


@_memo
def _model_name(labels_text: str) -> str:
    return dict(_LABEL.findall(labels_text)).get("model_name", "")


def _read_gauges(text: str, dialect: _Dialect, metrics: EndpointMetrics) -> bool:
    """Set the fields of ``dialect``'s gauges present in ``text``; False when none is."""
    seen: set[str] = set()
    for name, attr in dialect.gauges.items():
        if attr in seen:
            continue  # the first name present wins (kv_cache_usage_perc over gpu_cache_usage_perc)
        samples = _samples(text, name)
        if samples:
            seen.add(attr)
            setattr(metrics, attr, sum(value for _, value in samples))
            if attr == "waiting":
                metrics.models = _served_models(samples)
    return bool(seen)


def _served_models(samples: list[tuple[str, float]]) -> frozenset[str]:
    names = [_model_name(labels) for labels, _ in samples]
    return frozenset(name for name in names if name)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


def _adapter_set(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


class MetricsScraper:
    """One poller per endpoint (a slow server never delays the others), each on its own keep-alive connection.

    The pollers are callbacks on the event loop, not tasks: one scrape costs a write, a read
    callback and a timer (``httpx`` cost ~40x more per scrape, which at 100 endpoints scraped every
    50 ms took a whole core).
    """

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
        self._pollers: dict[str, MetricsPoller] = {}

    def sync(self) -> None:
        """Start pollers for new endpoints and stop those of removed ones (call after ``set_addresses``)."""
        current = {ep.address: ep for ep in self.datastore.all()}
        for address in list(self._pollers):
            if address not in current:
                self._pollers.pop(address).stop()
        for address, endpoint in current.items():
            if address not in self._pollers:
                poller = MetricsPoller(self.datastore, endpoint, self.path, self.interval, self.timeout,
                                       parse_metrics)
                self._pollers[address] = poller
                poller.start()

    async def close(self) -> None:
        """Stop every poller and close its connection."""
        pollers = list(self._pollers.values())
        self._pollers.clear()
        for poller in pollers:
            poller.stop()
        await asyncio.sleep(0)  # let the transports finish closing
