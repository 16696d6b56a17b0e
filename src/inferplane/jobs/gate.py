"""The spare-capacity gate: open while the picker reports the pool below a saturation threshold."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

SATURATION = "inference_extension_flow_control_pool_saturation"
AVG_QUEUE = "inference_pool_average_queue_size"
AVG_KV = "inference_pool_average_kv_cache_utilization"


def saturation_from_metrics(text: str) -> float | None:
    """The pool saturation from picker metrics: the flow-control gauge, else max(avg queue / 5, avg kv / 0.8)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (SATURATION, AVG_QUEUE, AVG_KV):
                values[sample.name] = max(values.get(sample.name, 0.0), float(sample.value))
    if SATURATION in values:
        return values[SATURATION]
    if AVG_QUEUE in values or AVG_KV in values:
        return max(values.get(AVG_QUEUE, 0.0) / 5.0, values.get(AVG_KV, 0.0) / 0.8)
    return None


class SaturationGate:
    """Polls the picker's ``/metrics``; closed while saturation ≥ ``max_saturation`` or metrics are unreadable."""

    def __init__(self, metrics_url: str | None, max_saturation: float = 0.8, poll_s: float = 0.25,
                 client: httpx.AsyncClient | None = None) -> None:
        self.metrics_url = metrics_url
        self.max_saturation = max_saturation
        self.poll_s = poll_s
        self._client = client or httpx.AsyncClient(timeout=2.0)
        self.saturation: float | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        if self.metrics_url is None:
            return
        try:
            response = await self._client.get(self.metrics_url)
            self.saturation = saturation_from_metrics(response.text) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            self.saturation = None
        self._checked = time.monotonic()

    @property
    def is_open(self) -> bool:
        if self.metrics_url is None:
            return True
        return self.saturation is not None and self.saturation < self.max_saturation

    async def wait_open(self) -> None:
        """Return once the gate is open (re-reading the metrics at most every ``poll_s``)."""
        while True:
            async with self._lock:
                if time.monotonic() - self._checked >= self.poll_s:
                    await self.refresh()
            if self.is_open:
                return
            await asyncio.sleep(self.poll_s)

    async def aclose(self) -> None:
        await self._client.aclose()
