"""The flow controller: admission, the queues, and dispatch whenever capacity may have appeared.

Where the queues live: here, in the picker's event loop, one :class:`Band` per priority holding a
:class:`~inferplane.picker.flowcontrol.policies.Flow` per fairness id. Nothing polls: :meth:`pump`
runs when a request arrives, when a request finishes (in-flight count drops) and after each
scrape, and dispatches while the pool is not saturated.

Saturation is judged twice over. A request arriving at empty queues passes on the scraped
metrics alone (no added latency while the pool has room). Draining a backlog counts the requests
routed since each endpoint's last scrape (minus those already finished) as waiting, so a scrape
showing room lets through about that room, not the whole queue.

**Ranked dispatch** (``ranked=True``, when the model servers schedule by priority and the picker
writes it into the body, ``picker.engine_priority``). Each dispatched request gets an *engine rank*,
``2 × priority + 1`` while its tenant is within its weighted share of the band's requests in flight,
``2 × priority`` beyond it, sent to the server as vLLM's ``priority`` (:func:`engine_priority_value`).
The server runs (and preempts for) higher ranks first, so the load of lower ranks does not stand in
a request's way: saturation is judged per rank, counting only the requests of equal or higher rank
(:meth:`Endpoint.load_below`). Critical traffic is then never held behind a pool saturated by
sheddable work, and a light tenant is not held behind a heavy one in its own band.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from inferplane.picker.errors import QueueFull, QueueTimeout, RequestRejected, Saturated
from inferplane.picker.flowcontrol.config import BandConfig, FlowControlConfig
from inferplane.picker.flowcontrol.policies import (
    CANCELLED,
    DISPATCHED,
    FAIRNESS_POLICIES,
    ORDERING_POLICIES,
    QUEUED,
    REJECTED,
    FairnessPolicy,
    Flow,
    QueueItem,
    QueueOwner,
)

if TYPE_CHECKING:
    from inferplane.picker.metrics import PickerMetrics
    from inferplane.picker.request import InferenceRequest

log = logging.getLogger(__name__)

#: The flow of requests that name no fairness id.
DEFAULT_FAIRNESS_ID = "default"

# Outcomes, as GIE labels ``inference_extension_flow_control_request_queue_duration_seconds``.
DISPATCHED_OUTCOME = "Dispatched"
REJECTED_CAPACITY = "RejectedCapacity"
REJECTED_SATURATED = "RejectedSaturated"
EVICTED_TTL = "EvictedTTL"
EVICTED_CANCELLED = "EvictedContextCancelled"


class Band:
    """The flows of one priority, with the band's limits and policies."""

    __slots__ = ("active", "bytes", "config", "count", "fairness", "flows", "new_queue", "priority", "ttl")

    def __init__(self, config: BandConfig) -> None:
        self.priority = config.priority
        self.config = config
        self.flows: dict[str, Flow] = {}
        #: Non-empty flows in turn order.
        self.active: OrderedDict[str, Flow] = OrderedDict()
        self.count = 0
        self.bytes = 0
        self.fairness: FairnessPolicy = FAIRNESS_POLICIES[config.fairness or "round-robin"]()
        self.new_queue = ORDERING_POLICIES[config.ordering or "fcfs"]
        self.ttl = float(config.ttl or 60.0)


def engine_rank(priority: int, within_share: bool) -> int:
    """Order of a dispatched request at a priority-scheduling server: higher runs first."""
    return 2 * priority + (1 if within_share else 0)


def engine_priority_value(rank: int) -> int:
    """vLLM's ``priority`` field for an engine rank (lower runs first; a tenant within its share at
    priority 0 gets 0, the default, which is left out of the body)."""
    return 1 - rank


class FlowController:
    """Holds requests while the pool is saturated and releases them by priority, fairness and order.

    ``is_saturated(pending)`` asks the pool's saturation detector; ``pending=True`` also counts
    requests routed since the last scrape. With ``ranked`` it is called as
    ``is_saturated(pending, rank)`` and counts only the load of that engine rank and above.
    """

    def __init__(
        self,
        config: FlowControlConfig,
        is_saturated: Callable[..., bool],
        metrics: PickerMetrics | None = None,
        pool_name: str = "default",
        clock: Callable[[], float] = time.monotonic,
        ranked: bool = False,
    ) -> None:
        self.config = config
        self.is_saturated = is_saturated
        self.ranked = ranked
        #: Dispatched requests still in flight, per band priority and fairness id (ranked dispatch).
        self.running: dict[int, dict[str, int]] = {}
        self.metrics = metrics
        self.pool_name = pool_name
        self.clock = clock
        self.bands: dict[int, Band] = {}
        #: Priorities of the bands, highest first.
        self._order: list[int] = []
        self.queued = 0
        self._seq = 0
        self._pumping = False
        self._series: dict[tuple[str, int, str, str], tuple[object, object]] = {}
        #: Called when a non-sheddable request had to wait (``evict_sheddable``): free capacity if you can.
        self.on_critical_waiting: Callable[[], None] | None = None
        self._durations: dict[tuple[str, int, str, str, str], object] = {}

    # ---- admission ---------------------------------------------------------------------------

    def enqueue(self, owner: QueueOwner, request: InferenceRequest, size: int) -> QueueItem | None:
        """Admit ``request``: ``None`` when it was dispatched at once (``owner.dispatched()`` has run), else its item.

        Raises :class:`Saturated` (sheddable on a saturated pool) or :class:`QueueFull`.
        """
        fairness_id = request.fairness_id or DEFAULT_FAIRNESS_ID
        priority = request.priority
        if self.ranked:
            within = self.within_share(priority, fairness_id)
            rank: int | None = engine_rank(priority, within)
            saturated = self.is_saturated(True, rank)
            ahead = self._queued_ahead(priority, fairness_id, within)
        else:
            rank, saturated, ahead = None, self.is_saturated(False), self.queued > 0
        if saturated and request.sheddable and not self.config.queue_sheddable:
            self._observe(fairness_id, priority, request, REJECTED_SATURATED, 0.0)
            error: RequestRejected = Saturated("the inference pool is saturated and the request is sheddable")
            raise error
        if not saturated and not ahead:
            self._observe(fairness_id, priority, request, DISPATCHED_OUTCOME, 0.0)
            self._started(priority, fairness_id)
            owner.dispatched(rank)
            return None
        band = self._band(priority)
        limits = band.config
        if band.count + 1 > (limits.max_requests or 0) or band.bytes + size > (limits.max_bytes or 0):
            self._observe(fairness_id, priority, request, REJECTED_CAPACITY, 0.0)
            error = QueueFull(
                f"the queue of priority {priority} is full ({band.count} requests, {band.bytes} bytes queued)"
            )
            raise error
        now = self.clock()
        self._seq += 1
        deadline = now + band.ttl
        if band.new_queue is ORDERING_POLICIES["edf"] and request.slo_ttft_ms is not None:
            deadline = now + max(0.0, request.slo_ttft_ms) / 1000.0
        item = QueueItem(owner, fairness_id, priority, size, now, self._seq, deadline)
        item.series = (request.requested_model, request.model)
        flow = band.flows.get(fairness_id)
        if flow is None:
            weight = self.config.weights.get(fairness_id, self.config.default_weight)
            flow = band.flows[fairness_id] = Flow(fairness_id, band.new_queue(), weight)
        if not len(flow.queue):
            band.active[fairness_id] = flow
        flow.queue.push(item)
        flow.bytes += size
        band.count += 1
        band.bytes += size
        self.queued += 1
        self._gauge(item, 1)
        item.timer = asyncio.get_running_loop().call_later(band.ttl, self._expire, item)
        self.pump()
        if item.state == QUEUED and priority >= 0 and self.on_critical_waiting is not None:
            self.on_critical_waiting()
        return item

    def cancel(self, item: QueueItem) -> None:
        """The client went away (its ext_proc stream ended): drop the request from its queue now."""
        if item.state != QUEUED:
            return
        self._remove(item, CANCELLED)
        self._observe_item(item, EVICTED_CANCELLED)
        self._count("client-disconnected", item.priority, item.fairness_id)

    def _expire(self, item: QueueItem) -> None:
        if item.state != QUEUED:
            return
        self._remove(item, REJECTED)
        self._observe_item(item, EVICTED_TTL)
        waited = self.clock() - item.enqueued_at
        error = QueueTimeout(f"no capacity in the inference pool within the queue time-to-live ({waited:.1f}s)")
        self._tell(item, error)

    # ---- dispatch ------------------------------------------------------------------------------

    def pump(self) -> None:
        """Dispatch queued requests, most important first, while the pool is not saturated."""
        if not self.queued or self._pumping:
            return
        self._pumping = True
        started = time.perf_counter()
        try:
            while self.queued:
                found = self._next()
                if found is None:
                    break
                item, rank = found
                self._remove(item, DISPATCHED)
                self._observe_item(item, DISPATCHED_OUTCOME)
                self._started(item.priority, item.fairness_id)
                self._tell(item, None, rank)
        finally:
            self._pumping = False
            if self.metrics is not None:
                self.metrics.flow_dispatch_cycle.observe(time.perf_counter() - started)

    def _next(self) -> tuple[QueueItem, int | None] | None:
        """The request to dispatch now and its engine rank; ``None`` while the pool is saturated for all of them.

        Saturation only grows towards lower ranks, so the first band that cannot dispatch ends the search.
        """
        for priority in self._order:
            band = self.bands[priority]
            if not band.count:
                continue
            if not self.ranked:
                return None if self.is_saturated(True) else (band.fairness.pick(band.active).queue.peek(), None)
            within = [fid for fid in band.active if self.within_share(priority, fid)]
            if within and not self.is_saturated(True, engine_rank(priority, True)):
                active = band.active
                if len(within) < len(active):
                    active = OrderedDict((fid, active[fid]) for fid in within)
                return band.fairness.pick(active).queue.peek(), engine_rank(priority, True)
            if within or self.is_saturated(True, engine_rank(priority, False)):
                return None
            return band.fairness.pick(band.active).queue.peek(), engine_rank(priority, False)
        return None

    # ---- ranked dispatch: shares of the requests in flight ---------------------------------------

    def within_share(self, priority: int, fairness_id: str) -> bool:
        """Whether one more request of this tenant keeps it within its weighted share of its band's
        requests in flight (the tenants counted are those with requests in flight or queued).

        A tenant alone in its band shares with a newcomer of the default weight: the rest of its
        requests go at the lower rank, so a tenant arriving later overtakes them at once.
        """
        running = self.running.get(priority)
        if not running:
            return True
        mine = running.get(fairness_id, 0)
        if mine == 0:
            return True
        band = self.bands.get(priority)
        tenants = running.keys() | (band.flows.keys() if band is not None else ()) | {fairness_id}
        weights, default = self.config.weights, self.config.default_weight
        total_weight = sum(weights.get(tenant, default) for tenant in tenants)
        if len(tenants) == 1:
            total_weight += default
        share = weights.get(fairness_id, default) / total_weight
        return mine < share * (sum(running.values()) + 1)

    def _queued_ahead(self, priority: int, fairness_id: str, within: bool) -> bool:
        """Whether a queued request goes before a new one: a higher band's, its own tenant's, or (beyond
        its share) any of its band's."""
        for other in self._order:
            if other < priority:
                break
            band = self.bands[other]
            if not band.count:
                continue
            if other > priority or not within or fairness_id in band.flows:
                return True
        return False

    def _started(self, priority: int, fairness_id: str) -> None:
        if self.ranked:
            band = self.running.setdefault(priority, {})
            band[fairness_id] = band.get(fairness_id, 0) + 1

    def finished(self, priority: int, fairness_id: str) -> None:
        """A request dispatched by this controller ended (ranked dispatch counts the shares in flight)."""
        band = self.running.get(priority)
        if band is None or fairness_id not in band:
            return
        if band[fairness_id] <= 1:
            del band[fairness_id]
        else:
            band[fairness_id] -= 1

    def _remove(self, item: QueueItem, state: str) -> None:
        band = self.bands[item.priority]
        flow = band.flows[item.fairness_id]
        if state == DISPATCHED:  # always the flow's head (see _next)
            flow.queue.pop()
            item.state = state
        else:
            item.state = state  # before remove(): the EDF heap drops marked items lazily
            flow.queue.remove(item)
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        flow.bytes -= item.size
        band.count -= 1
        band.bytes -= item.size
        self.queued -= 1
        self._gauge(item, -1)
        if len(flow.queue):
            if state == DISPATCHED:
                band.active.move_to_end(item.fairness_id)  # its turn is over
        else:
            band.active.pop(item.fairness_id, None)
            band.fairness.forget(item.fairness_id)
            del band.flows[item.fairness_id]

    @staticmethod
    def _tell(item: QueueItem, error: RequestRejected | None, rank: int | None = None) -> None:
        try:
            if error is None:
                item.owner.dispatched(rank)
            else:
                item.owner.rejected(error)
        except Exception:  # an owner's failure must not stop the other dispatches
            log.exception("flow control: the owner of a queued request failed")

    def _band(self, priority: int) -> Band:
        band = self.bands.get(priority)
        if band is None:
            band = self.bands[priority] = Band(self.config.band(priority))
            self._order = sorted(self.bands, reverse=True)
        return band

    # ---- introspection and metrics --------------------------------------------------------------

    def queue_sizes(self) -> dict[tuple[int, str], tuple[int, int]]:
        """``{(priority, fairness id): (requests, bytes)}`` of the non-empty flows."""
        return {
            (band.priority, flow.fairness_id): (len(flow.queue), flow.bytes)
            for band in self.bands.values()
            for flow in band.flows.values()
        }

    def _gauge(self, item: QueueItem, delta: int) -> None:
        if self.metrics is None:
            return
        model, target = item.series
        key = (item.fairness_id, item.priority, model, target)
        series = self._series.get(key)
        if series is None:
            labels = (item.fairness_id, str(item.priority), self.pool_name, model, target)
            series = self._series[key] = (
                self.metrics.flow_queue_size.labels(*labels),
                self.metrics.flow_queue_bytes.labels(*labels),
            )
        series[0].inc(delta)  # type: ignore[attr-defined]
        series[1].inc(delta * item.size)  # type: ignore[attr-defined]

    def _observe_item(self, item: QueueItem, outcome: str) -> None:
        model, target = item.series
        self._observe_labels(item.fairness_id, item.priority, model, target, outcome,
                             self.clock() - item.enqueued_at)

    def _observe(self, fairness_id: str, priority: int, request: InferenceRequest, outcome: str,
                 waited: float) -> None:
        self._observe_labels(fairness_id, priority, request.requested_model, request.model, outcome, waited)

    def _observe_labels(self, fairness_id: str, priority: int, model: str, target: str, outcome: str,
                        waited: float) -> None:
        if self.metrics is None:
            return
        key = (fairness_id, priority, outcome, model, target)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self.metrics.flow_queue_duration.labels(
                fairness_id, str(priority), outcome, self.pool_name, model, target
            )
        child.observe(waited)  # type: ignore[attr-defined]

    def _count(self, reason: str, priority: int, fairness_id: str) -> None:
        """``inferplane_picker_dropped_requests_total`` for what gets no response (rejections count in ext_proc)."""
        if self.metrics is not None:
            self.metrics.dropped.labels(reason, str(priority), fairness_id).inc()
