"""Saturation detection (design.md §4): per endpoint ``max(waiting/queue, kv/kv_threshold)``, pool = mean."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from inferplane.picker.endpoints import Endpoint, EndpointMetrics
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
    """The pool is saturated when its endpoints' mean saturation reaches 1; stale metrics count as 1.

    With an engine ``rank`` (ranked flow control) the saturation is the one a request of that rank
    meets: the waiting and KV use of lower-ranked requests in flight are subtracted.
    """

    type_name = "utilization-detector"
    Parameters = UtilizationParameters

    def endpoint_saturation(self, endpoint: Endpoint, now: float, staleness: float, pending: bool = False,
                            rank: int | None = None) -> float:
        m = endpoint.metrics
        if m is None or endpoint.is_stale(now, staleness):
            return 1.0
        p: UtilizationParameters = self.parameters  # type: ignore[assignment]
        return _saturation(endpoint, m, p.queue_threshold, p.kv_cache_threshold, pending, rank)

    def pool_saturation(self, endpoints: Sequence[Endpoint], now: float, staleness: float,
                        pending: bool = False, rank: int | None = None) -> float:
        if not endpoints:
            return 1.0
        p: UtilizationParameters = self.parameters  # type: ignore[assignment]
        queue, kv = p.queue_threshold, p.kv_cache_threshold
        total = 0.0
        for ep in endpoints:  # this runs for every request under flow control: the common case inline
            m = ep.metrics
            if m is None or now - ep.updated_at > staleness:
                total += 1.0
            elif rank is None:
                waiting = m.waiting
                if pending:  # Endpoint.queued(m), inline
                    waiting += ep.routed_since_scrape - ep.finished_since_scrape
                    floor = ep.in_flight - m.running
                    if floor > waiting:
                        waiting = floor
                total += max(max(0.0, waiting) / queue, m.kv_cache_usage / kv)
            else:
                total += _saturation(ep, m, queue, kv, pending, rank)
        return total / len(endpoints)


def _saturation(endpoint: Endpoint, m: EndpointMetrics, queue: float, kv: float, pending: bool,
                rank: int | None) -> float:
    """``max(waiting / queue, kv / kv)`` of one endpoint; with ``rank``, the requests of lower engine
    ranks this picker sent there are left out (the server runs the rank first, preempting them)."""
    if rank is not None:
        waiting, kv_usage = endpoint.load_at(m, rank, pending)
    else:
        waiting, kv_usage = endpoint.queued(m) if pending else m.waiting, m.kv_cache_usage
    return max(max(0.0, waiting) / queue, kv_usage / kv)
