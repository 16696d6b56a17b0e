"""The scheduler: candidates → admission → filters → weighted scorers → picker."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from itertools import repeat
from operator import add, mul

from inferplane.picker.config import PickerConfig
from inferplane.picker.endpoints import Datastore, Endpoint
from inferplane.picker.errors import NoReadyEndpoint, Saturated
from inferplane.picker.metrics import PickerMetrics
from inferplane.picker.request import InferenceRequest
from inferplane.picker.scheduling.decisions import DecisionLog
from inferplane.picker.scheduling.plugin import (
    CycleContext,
    Filter,
    Picker,
    SaturationDetector,
    Scorer,
)

#: Longest a cached pool saturation is reused while the datastore does not change (staleness lag).
SATURATION_CACHE_S = 0.01


class Scheduler:
    """Runs one profile over the datastore's ready endpoints for each request."""

    def __init__(
        self,
        datastore: Datastore,
        filters: Sequence[Filter],
        scorers: Sequence[tuple[Scorer, float]],
        picker: Picker,
        saturation: SaturationDetector,
        fallback_endpoints: int = 0,
        metrics: PickerMetrics | None = None,
    ) -> None:
        self.datastore = datastore
        self.filters = list(filters)
        self.scorers = [(scorer, float(weight)) for scorer, weight in scorers if weight > 0]
        self.picker = picker
        self.saturation = saturation
        self.count = 1 + fallback_endpoints
        self.metrics = metrics
        #: Scorers that follow responses (override ``on_response_started``): the others cost nothing there.
        self._response_scorers = [
            scorer for scorer, _ in self.scorers if type(scorer).on_response_started is not Scorer.on_response_started
        ]
        self._cycles = 0
        self._saturation_cache: tuple[int, float, float] = (-1, 0.0, 0.0)
        #: The last decisions, for ``/debug/decisions`` and the console.
        self.decisions = DecisionLog([(scorer.name, weight) for scorer, weight in self.scorers], picker.name)
        # label children resolved once: the hot path only calls observe()
        self._observers = (
            {
                id(plugin): metrics.plugin_duration.labels(point, plugin.type_name, plugin.name)
                for point, plugins in (
                    ("Filter", self.filters),
                    ("Scorer", [s for s, _ in self.scorers]),
                    ("Picker", [picker]),
                )
                for plugin in plugins
            }
            if metrics
            else {}
        )

    def forget_endpoints(self, addresses: Collection[str]) -> None:
        """Endpoints left the pool: scorers drop what they remembered about them."""
        for scorer, _ in self.scorers:
            for address in addresses:
                scorer.forget_endpoint(address)

    def response_started(self, request: InferenceRequest, endpoint: Endpoint) -> None:
        """The response to a request this scheduler sent to ``endpoint`` began (or the request ended)."""
        for scorer in self._response_scorers:
            scorer.on_response_started(request, endpoint)

    def candidates(self, now: float, subset: Collection[str] | None = None) -> list[Endpoint]:
        """Ready endpoints, restricted to the proxy's subset hint when it sent one."""
        ready = self.datastore.ready(now)
        if subset is not None:
            ready = [ep for ep in ready if ep.address in subset]
        return ready

    def pool_saturation(self, pending: bool = False, rank: int | None = None) -> float:
        """The saturation detector's view of the whole pool (1 or more = saturated).

        Without ``pending`` the value only changes with the datastore (scrapes, endpoints) and with
        time (metrics going stale): it is cached until the datastore changes, for at most
        :data:`SATURATION_CACHE_S`, so admitting a request stays O(1) on a large pool.
        """
        now = time.monotonic()
        datastore = self.datastore
        cached = not pending and rank is None
        if cached:
            version, at, value = self._saturation_cache
            if version == datastore.version and now - at < SATURATION_CACHE_S:
                return value
        value = self.saturation.pool_saturation(datastore.ready(now), now, datastore.staleness, pending, rank)
        if cached:
            self._saturation_cache = (datastore.version, now, value)
        return value

    def is_saturated(self, pending: bool = False, rank: int | None = None) -> bool:
        return self.pool_saturation(pending, rank) >= 1.0

    def schedule(
        self, request: InferenceRequest, subset: Collection[str] | None = None, admission: bool = True
    ) -> list[Endpoint]:
        """Endpoints for ``request``: the picked one first, then up to ``fallback_endpoints`` more.

        Body-less requests (``GET /v1/models``) go through the same profile: with no prompt the
        prefix scorer scores every endpoint 0 and the load scorers decide.

        Raises :class:`NoReadyEndpoint` (503) or, for a sheddable request on a saturated pool,
        :class:`Saturated` (429); ``admission=False`` skips the latter (flow control admitted it).
        """
        started = time.perf_counter()
        now = time.monotonic()
        staleness = self.datastore.staleness
        endpoints = self.candidates(now, subset)
        if not endpoints:
            if subset is not None:
                raise self._rejected(request, endpoints,
                                     NoReadyEndpoint("none of the endpoints in the proxy's subset hint is ready"))
            raise self._rejected(request, endpoints, NoReadyEndpoint("no ready endpoint in the inference pool"))
        endpoints = serving(endpoints, request.model)
        if admission and request.sheddable and self.saturation.is_saturated(endpoints, now, staleness):
            raise self._rejected(request, endpoints,
                                 Saturated("the inference pool is saturated and the request is sheddable"))
        ctx = CycleContext(request, now, staleness)
        # plugin timings on one request in 16: the histograms stay representative at a 16th of the cost
        self._cycles += 1
        observers = self._observers if self._cycles & 15 == 0 else None
        for f in self.filters:
            t = time.perf_counter() if observers else 0.0
            endpoints = f.filter(ctx, endpoints)
            if observers:
                observers[id(f)].observe(time.perf_counter() - t)
            if not endpoints:
                raise self._rejected(request, endpoints, NoReadyEndpoint(f"filter {f.name!r} left no endpoint"))
        totals: list[float] | None = None
        per_scorer: list[list[float]] = []
        for scorer, weight in self.scorers:
            if observers:
                t = time.perf_counter()
                scores = scorer.score(ctx, endpoints)
                observers[id(scorer)].observe(time.perf_counter() - t)
            else:
                scores = scorer.score(ctx, endpoints)
            per_scorer.append(scores)
            # the weighted sum, in scorer order (map over operator functions: ~2x a zip comprehension)
            if totals is None:
                totals = [weight * score for score in scores]
            else:
                totals = list(map(add, totals, map(mul, repeat(weight), scores)))
        if totals is None:
            totals = [0.0] * len(endpoints)
        if observers:
            t = time.perf_counter()
            picked = self.picker.pick(endpoints, totals, self.count)
            observers[id(self.picker)].observe(time.perf_counter() - t)
        else:
            picked = self.picker.pick(endpoints, totals, self.count)
        picked[0].routed_since_scrape += 1
        for scorer, _ in self.scorers:
            scorer.on_picked(ctx, picked[0])
        self.decisions.picked(request, endpoints, per_scorer, totals, picked)
        if self.metrics:
            self.metrics.scheduler_e2e.observe(time.perf_counter() - started)
        return picked

    def _rejected(self, request: InferenceRequest, candidates: list[Endpoint], error: Exception) -> Exception:
        """Record a refused request in the decision log; returns ``error`` for the caller to raise."""
        self.decisions.rejected(request, candidates, str(error))
        return error


def serving(endpoints: list[Endpoint], model: str) -> list[Endpoint]:
    """The endpoints whose metrics name ``model`` as their base model (a pool serving several versions, e.g.
    during a rollout); all of them when none does (one model per pool, LoRA adapters, servers without the label)."""
    if not model:
        return endpoints
    matching = [ep for ep in endpoints if ep.metrics is not None and model in ep.metrics.models]
    return matching or endpoints


def build_scheduler(config: PickerConfig, datastore: Datastore, metrics: PickerMetrics | None = None) -> Scheduler:
    """The scheduler a :class:`~inferplane.picker.config.PickerConfig` describes."""
    profile = config.profile
    return Scheduler(
        datastore,
        filters=[spec.build() for spec in profile.filters],
        scorers=[(spec.build(), spec.weight) for spec in profile.scorers],
        picker=profile.picker.build(),
        saturation=config.saturation.build(),
        fallback_endpoints=config.fallback_endpoints,
        metrics=metrics,
    )
