"""Filters: drop endpoints that should not take the request (never all of them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from inferplane.picker.endpoints import Endpoint
from inferplane.picker.scheduling.plugin import CycleContext, Filter
from inferplane.picker.scheduling.registry import register


class LowQueueParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Endpoints with more waiting requests than this are dropped.
    threshold: float = Field(128, ge=0)


@register()
class LowQueueFilter(Filter):
    """Keep endpoints whose scraped waiting queue is at most ``threshold``; all of them if none qualifies."""

    type_name = "low-queue-filter"
    Parameters = LowQueueParameters

    def filter(self, ctx: CycleContext, endpoints: list[Endpoint]) -> list[Endpoint]:
        limit = self.parameters.threshold  # type: ignore[attr-defined]
        now, staleness = ctx.now, ctx.staleness
        kept = [
            ep
            for ep in endpoints
            if (m := ep.scoring_metrics(now, staleness)) is not None and m.waiting <= limit
        ]
        return kept or endpoints


class NotSaturatedParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue_threshold: float = Field(5, gt=0)
    kv_cache_threshold: float = Field(0.8, gt=0)


@register()
class NotSaturatedFilter(Filter):
    """Keep endpoints below saturation (``max(waiting/queue, kv/kv_threshold) < 1`` on their scoring metrics).

    When every endpoint is saturated all are kept: admission, not this filter, decides about
    rejecting requests.
    """

    type_name = "not-saturated-filter"
    Parameters = NotSaturatedParameters

    def filter(self, ctx: CycleContext, endpoints: list[Endpoint]) -> list[Endpoint]:
        p: NotSaturatedParameters = self.parameters  # type: ignore[assignment]
        now, staleness = ctx.now, ctx.staleness
        kept = [
            ep
            for ep in endpoints
            if (m := ep.scoring_metrics(now, staleness)) is not None
            and m.waiting / p.queue_threshold < 1.0
            and m.kv_cache_usage / p.kv_cache_threshold < 1.0
        ]
        return kept or endpoints
