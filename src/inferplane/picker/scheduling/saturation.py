"""Saturation detection (design.md §4): per endpoint ``max(waiting/queue, kv/kv_threshold)``, pool = mean."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from inferplane.picker.endpoints import Endpoint
from inferplane.picker.scheduling.plugin import SaturationDetector
from inferplane.picker.scheduling.registry import register


class UtilizationParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Waiting requests at which an endpoint counts as saturated.
    queue_threshold: float = Field(5, gt=0)
    #: KV-cache use (0-1) at which an endpoint counts as saturated.
    kv_cache_threshold: float = Field(0.8, gt=0)


@register()
class UtilizationDetector(SaturationDetector):
    """The pool is saturated when its endpoints' mean saturation reaches 1; stale metrics count as 1."""

    type_name = "utilization-detector"
    Parameters = UtilizationParameters

    def endpoint_saturation(self, endpoint: Endpoint, now: float, staleness: float, pending: bool = False) -> float:
        m = endpoint.metrics
        if m is None or now - endpoint.updated_at > staleness:
            return 1.0
        p: UtilizationParameters = self.parameters  # type: ignore[assignment]
        waiting = max(0.0, m.waiting + endpoint.pending) if pending else m.waiting
        return max(waiting / p.queue_threshold, m.kv_cache_usage / p.kv_cache_threshold)

    def pool_saturation(self, endpoints: Sequence[Endpoint], now: float, staleness: float,
                        pending: bool = False) -> float:
        if not endpoints:
            return 1.0
        p: UtilizationParameters = self.parameters  # type: ignore[assignment]
        queue, kv = p.queue_threshold, p.kv_cache_threshold
        total = 0.0
        for ep in endpoints:  # endpoint_saturation inlined: this runs for every request under flow control
            m = ep.metrics
            if m is None or now - ep.updated_at > staleness:
                total += 1.0
                continue
            waiting = m.waiting + ep.routed_since_scrape - ep.finished_since_scrape if pending else m.waiting
            total += max(max(0.0, waiting) / queue, m.kv_cache_usage / kv)
        return total / len(endpoints)
