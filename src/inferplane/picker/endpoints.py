"""The datastore: the pool's endpoints, their last scraped metrics and the picker's own in-flight counts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EndpointMetrics:
    """What one scrape of a model server's ``/metrics`` told us (vLLM names, SGLang mapped onto them)."""

    waiting: float = 0.0
    running: float = 0.0
    kv_cache_usage: float = 0.0
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    max_lora: int | None = None
    running_loras: frozenset[str] = frozenset()
    waiting_loras: frozenset[str] = frozenset()
    #: Base model names the server serves (the ``model_name`` label of its queue gauge).
    models: frozenset[str] = frozenset()


@dataclass(slots=True, eq=False)
class Endpoint:
    """One model server, ``ip:port``, as the scheduler sees it."""

    address: str
    metrics: EndpointMetrics | None = None
    #: ``time.monotonic()`` of the last successful scrape (0 when never scraped).
    updated_at: float = 0.0
    #: ``time.monotonic()`` of the first failed scrape of the current failure run, else ``None``.
    failing_since: float | None = None
    last_error: str = ""
    #: Requests this picker routed here whose ext_proc stream has not ended yet.
    in_flight: int = 0
    #: Requests routed here since the last successful scrape (and still in flight): not yet visible in ``metrics``.
    routed_since_scrape: int = 0
    #: Requests routed before the last scrape that finished since: ``metrics`` still shows their load.
    finished_since_scrape: int = 0
    #: Counts successful scrapes; a request remembers it when routed, to know which count it is in.
    scrape_generation: int = 0
    removed: bool = field(default=False, repr=False)
    #: Requests in flight per engine rank (ranked dispatch; see the flow controller).
    ranks: dict[int, int] = field(default_factory=dict, repr=False)

    @property
    def pending(self) -> int:
        """Requests the scraped metrics do not show yet, net of finished ones the scrape still shows."""
        return self.routed_since_scrape - self.finished_since_scrape

    def queued(self, metrics: EndpointMetrics) -> float:
        """Requests waiting for a batch slot here, as well as this picker can tell (may be negative:
        finished requests the scrape still shows free slots for the queue).

        The scraped queue plus :attr:`pending`, and at least this picker's own requests in flight
        beyond the scraped batch. A routed request stays out of the server's queue while it is on its
        way and in the API server (vLLM tokenizes and processes input outside the engine core; tens of
        milliseconds, more than a scrape interval under load). A scrape in that time resets
        :attr:`pending` without showing the request, and a picker that forgot it would over-fill one
        replica while another runs dry.
        """
        return max(metrics.waiting + self.pending, self.in_flight - metrics.running)

    def request_routed(self, rank: int | None = None) -> None:
        """This picker sent a request here (at an engine rank, when the server schedules by priority)."""
        self.in_flight += 1
        if rank is not None:
            self.ranks[rank] = self.ranks.get(rank, 0) + 1

    def request_finished(self, generation: int, rank: int | None = None) -> None:
        """A request routed here (at scrape ``generation``) finished: capacity may have appeared."""
        self.in_flight -= 1
        if rank is not None:
            left = self.ranks.get(rank, 0) - 1
            if left > 0:
                self.ranks[rank] = left
            else:
                self.ranks.pop(rank, None)
        if generation == self.scrape_generation:
            if self.routed_since_scrape > 0:
                self.routed_since_scrape -= 1
        else:
            self.finished_since_scrape += 1

    def load_below(self, rank: int) -> int:
        """Requests in flight here that a priority-scheduling server puts after one of ``rank``."""
        return sum(count for other, count in self.ranks.items() if other < rank) if self.ranks else 0

    def load_at(self, metrics: EndpointMetrics, rank: int, pending: bool = True) -> tuple[float, float]:
        """``(waiting, kv_cache_usage)`` as a request of engine ``rank`` meets them here: the requests of
        lower ranks this picker has in flight are taken out of the waiting count (at most all of it) and
        their share of the KV use, since a priority-scheduling server runs the request before them and
        preempts them for it. ``pending`` adds the requests the scrape does not show yet (:meth:`queued`)."""
        waiting = self.queued(metrics) if pending else metrics.waiting
        kv_usage = metrics.kv_cache_usage
        below = self.load_below(rank)
        if below:
            waiting -= below
            if self.in_flight > 0:
                kv_usage *= max(0.0, 1.0 - below / self.in_flight)
        return max(0.0, waiting), kv_usage

    def is_stale(self, now: float, staleness: float) -> bool:
        """Metrics older than ``staleness`` seconds (or none at all): treat the endpoint as saturated."""
        return now - self.updated_at > staleness

    def scoring_metrics(self, now: float, staleness: float) -> EndpointMetrics | None:
        """The metrics scorers and filters may use: the last scrape, unless it is stale *and* the
        endpoint's scrapes are failing (``None`` then, and before the first scrape).

        Old metrics alone are not held against an endpoint: on a busy machine the scraper itself
        falls behind, for every endpoint at different moments, and an idle replica that merely
        waited for its scrape must not lose to a busy one. What moved since the scrape is covered by
        the picker's own counts (``in_flight``, ``pending``). Admission (the saturation detector)
        still treats any stale endpoint as saturated.
        """
        if self.failing_since is not None and now - self.updated_at > staleness:
            return None
        return self.metrics


class Datastore:
    """The endpoints of one pool, keyed by address; the scraper writes, the scheduler reads."""

    def __init__(self, staleness: float = 0.2, failure_grace: float = 1.0) -> None:
        self.staleness = staleness
        self.failure_grace = failure_grace
        self._endpoints: dict[str, Endpoint] = {}
        #: Called after each successful scrape and when endpoints join: capacity may have appeared.
        self.listeners: list[Callable[[], None]] = []
        #: Bumped on every change of endpoints or their scraped state (for caches of derived values).
        self.version = 0

    def set_addresses(self, addresses: Iterable[str]) -> tuple[list[Endpoint], list[Endpoint]]:
        """Make the pool exactly ``addresses``; keep known endpoints' state. Returns (added, removed)."""
        wanted = dict.fromkeys(addresses)
        added = [Endpoint(address) for address in wanted if address not in self._endpoints]
        removed = [ep for address, ep in self._endpoints.items() if address not in wanted]
        for ep in removed:
            ep.removed = True
            del self._endpoints[ep.address]
        for ep in added:
            self._endpoints[ep.address] = ep
        if added or removed:
            self.version += 1
        return added, removed

    def notify(self) -> None:
        """Tell the listeners capacity may have changed; one failing listener does not stop the others."""
        for listener in self.listeners:
            try:
                listener()
            except Exception:
                log.exception("datastore listener failed")

    def get(self, address: str) -> Endpoint | None:
        return self._endpoints.get(address)

    def all(self) -> list[Endpoint]:
        return list(self._endpoints.values())

    def __len__(self) -> int:
        return len(self._endpoints)

    def record_scrape(self, endpoint: Endpoint, metrics: EndpointMetrics, now: float | None = None) -> None:
        """A successful scrape: fresh metrics, failure run over."""
        endpoint.metrics = metrics
        endpoint.routed_since_scrape = 0
        endpoint.finished_since_scrape = 0
        endpoint.scrape_generation += 1
        endpoint.updated_at = time.monotonic() if now is None else now
        endpoint.failing_since = None
        endpoint.last_error = ""
        self.version += 1
        if self.listeners:
            self.notify()

    def record_failure(self, endpoint: Endpoint, error: str, now: float | None = None) -> None:
        """A failed scrape; the endpoint leaves the ready set once failures last ``failure_grace``."""
        if endpoint.failing_since is None:
            endpoint.failing_since = time.monotonic() if now is None else now
        endpoint.last_error = error
        self.version += 1

    def is_ready(self, endpoint: Endpoint, now: float) -> bool:
        """Scraped at least once and not failing for longer than the grace period."""
        if endpoint.metrics is None:
            return False
        return endpoint.failing_since is None or now - endpoint.failing_since < self.failure_grace

    def ready(self, now: float | None = None) -> list[Endpoint]:
        """Endpoints requests may be sent to."""
        now = time.monotonic() if now is None else now
        grace = self.failure_grace
        return [
            ep
            for ep in self._endpoints.values()
            if ep.metrics is not None and (ep.failing_since is None or now - ep.failing_since < grace)
        ]

    def has_fresh(self, now: float | None = None) -> bool:
        """At least one ready endpoint with metrics younger than the staleness bound (readiness)."""
        now = time.monotonic() if now is None else now
        return any(not ep.is_stale(now, self.staleness) for ep in self.ready(now))
