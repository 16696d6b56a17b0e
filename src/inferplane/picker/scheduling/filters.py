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


class HotSpotParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Endpoints with more requests in flight than this multiple of the candidates' mean ...
    max_mean_multiple: float = Field(1.5, ge=1.0)
    #: ... plus this many are dropped (the slack keeps a light load from counting as a hot spot).
    slack: float = Field(4, ge=0)


@register()
class HotSpotFilter(Filter):
    """Drop endpoints holding far more of this picker's requests in flight than the average:
    ``in_flight > max_mean_multiple × mean + slack``.

    Prefix affinity without load awareness piles a popular prefix onto one endpoint (the cache_aware
    routers' hot spot, design.md §4). Scorers trade affinity against load by weights, which either
    lets the hot spot grow or, set strong enough to prevent it, scatters prefixes under ordinary
    load; this filter only acts on the hot spot itself, and the request then seeds a second copy
    of the prefix elsewhere. The least loaded endpoint is never above the mean, so some always stay.
    """

    type_name = "hot-spot-filter"
    Parameters = HotSpotParameters

    def filter(self, ctx: CycleContext, endpoints: list[Endpoint]) -> list[Endpoint]:
        if not endpoints:
            return endpoints
        p: HotSpotParameters = self.parameters  # type: ignore[assignment]
        counts = [ep.in_flight for ep in endpoints]
        limit = p.max_mean_multiple * sum(counts) / len(counts) + p.slack
        if max(counts) <= limit:
            return endpoints  # the common case: nothing to drop, no new list
        return [ep for ep, n in zip(endpoints, counts) if n <= limit]
