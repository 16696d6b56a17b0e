"""Load scorers: model-server queue, KV-cache use, the picker's own in-flight count, LoRA affinity.

Scraped signals come from :meth:`Endpoint.scoring_metrics`: the last scrape, unless the endpoint's
scrapes are failing and it went stale (it then scores 0 on them, as if saturated).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from inferplane.picker.endpoints import Endpoint, EndpointMetrics
from inferplane.picker.scheduling.plugin import CycleContext, Scorer
from inferplane.picker.scheduling.registry import register


def usable_metrics(ctx: CycleContext, endpoints: Sequence[Endpoint]) -> list[EndpointMetrics | None]:
    """:meth:`Endpoint.scoring_metrics` of each endpoint, without the call for the usual case (not failing)."""
    now, staleness = ctx.now, ctx.staleness
    return [ep.metrics if ep.failing_since is None else ep.scoring_metrics(now, staleness) for ep in endpoints]


def min_max_scores(values: Sequence[float | None]) -> list[float]:
    """(max − v)/(max − min) per value: the lowest scores 1, the highest 0, all equal 1; ``None`` scores 0."""
    known = [v for v in values if v is not None]
    if not known:
        return [0.0] * len(values)
    low, high = min(known), max(known)
    if high == low:
        return [0.0 if v is None else 1.0 for v in values]
    span = high - low
    return [0.0 if v is None else (high - v) / span for v in values]


@register()
class QueueScorer(Scorer):
    """Fewer waiting requests is better: ``(maxQ − q)/(maxQ − minQ)`` over the candidates.

    ``q`` is :meth:`Endpoint.queued`: the scraped waiting queue plus the requests routed to the
    endpoint since that scrape, which it cannot show yet, less those it still shows that have
    finished since (a request the scrape caught queued must not keep the endpoint looking busy
    after it is done); and at least this picker's requests there beyond the scraped batch.

    A request with an engine rank counts only the queue it would wait in: the lower-ranked requests
    in flight are taken out (:meth:`Endpoint.load_at`).
    """

    type_name = "queue-scorer"

    def score(self, ctx: CycleContext, endpoints: Sequence[Endpoint]) -> list[float]:
        rank = ctx.request.engine_rank
        if rank is not None:
            return min_max_scores([None if m is None else ep.load_at(m, rank)[0]
                                   for ep, m in zip(endpoints, usable_metrics(ctx, endpoints))])
        # Endpoint.queued(m) and max(q, 0.0) spelled out: this runs for every endpoint of every request
        queues: list[float | None] = []
        for ep, m in zip(endpoints, usable_metrics(ctx, endpoints)):
            if m is None:
                queues.append(None)
                continue
            q = m.waiting + ep.routed_since_scrape - ep.finished_since_scrape
            floor = ep.in_flight - m.running
            if floor > q:
                q = floor
            queues.append(q if q > 0.0 else 0.0)
        return min_max_scores(queues)


@register()
class KVCacheUtilizationScorer(Scorer):
    """More free KV cache is better: ``1 − kv_cache_usage``; for a request with an engine rank, without
    the share of the lower-ranked requests in flight (:meth:`Endpoint.load_at`)."""

    type_name = "kv-cache-utilization-scorer"

    def score(self, ctx: CycleContext, endpoints: Sequence[Endpoint]) -> list[float]:
        rank = ctx.request.engine_rank
        if rank is not None:
            return [0.0 if m is None else min(1.0, max(0.0, 1.0 - ep.load_at(m, rank)[1]))
                    for ep, m in zip(endpoints, usable_metrics(ctx, endpoints))]
        # 1 − usage clamped to [0, 1] (min(free, 1.0) spelled out), in one comprehension
        return [
            0.0 if m is None else (0.0 if (free := 1.0 - m.kv_cache_usage) < 0.0 else (1.0 if 1.0 < free else free))  # noqa: FURB136
            for m in usable_metrics(ctx, endpoints)
        ]


class InFlightParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Extra requests in flight (over the least loaded endpoint) at which the score reaches 0 ...
    tolerance: float = Field(4, gt=0)
    #: ... or this fraction of the mean in-flight count, whichever is larger (scales with load).
    relative_tolerance: float = Field(0.5, ge=0)


@register("active-request-scorer")
class InFlightScorer(Scorer):
    """Fewer requests in flight from this picker is better: ``1 − (n − min) / T``, floored at 0.

    ``T = max(tolerance, relative_tolerance × mean)``. The count changes the moment a request is
    routed or finishes, so it sees bursts that land between two scrapes, when every scraped signal
    still looks the same. With the same weight as the prefix scorer, ``T`` reads as "how many extra
    requests in flight a full prefix-cache hit is worth".

    A request with an engine rank (ranked dispatch to priority-scheduling servers) counts only the
    requests of its rank and above: the server runs it before the others, preempting them, so a
    replica full of filler work is as free for it as an idle one.
    """

    type_name = "in-flight-scorer"
    Parameters = InFlightParameters

    def score(self, ctx: CycleContext, endpoints: Sequence[Endpoint]) -> list[float]:
        rank = ctx.request.engine_rank
        if rank is None:
            counts = [ep.in_flight for ep in endpoints]
        else:
            counts = [ep.in_flight - ep.load_below(rank) for ep in endpoints]
        if not counts:
            return []
        low = min(counts)
        p: InFlightParameters = self.parameters  # type: ignore[assignment]
        span = max(p.tolerance, p.relative_tolerance * sum(counts) / len(counts))
        return [1.0 - (n - low) / span if n - low < span else 0.0 for n in counts]


@register()
class LoraAffinityScorer(Scorer):
    """Prefer servers with the requested adapter loaded: 1.0 active, 0.8 free slot, 0.6 waiting, 0 full.

    A request for a server's base model (its ``model_name``) needs no adapter slot: 1.0 there. A server
    reporting no LoRA state scores 0.8 (unknown, as good as a free slot).
    """

    type_name = "lora-affinity-scorer"

    def score(self, ctx: CycleContext, endpoints: Sequence[Endpoint]) -> list[float]:
        model = ctx.request.model
        scores: list[float] = []
        for ep in endpoints:
            m = ep.metrics
            if m is not None and model in m.models:
                scores.append(1.0)
            elif m is None or m.max_lora is None:
                scores.append(0.8)
            elif model in m.running_loras:
                scores.append(1.0)
            elif len(m.running_loras) < m.max_lora:
                scores.append(0.8)
            elif model in m.waiting_loras:
                scores.append(0.6)
            else:
                scores.append(0.0)
        return scores
