"""Queue items, the ordering policies inside one flow, the fairness policies between the flows of a band.

Policies are registered by name (``FAIRNESS_POLICIES``, ``ORDERING_POLICIES``) and chosen in YAML.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from inferplane.picker.errors import RequestRejected

QUEUED, DISPATCHED, REJECTED, CANCELLED = "queued", "dispatched", "rejected", "cancelled"


class QueueOwner(Protocol):
    """What waits for a queued request: told once, either way, synchronously."""

    def dispatched(self, engine_rank: int | None) -> None:
        """Route the request now; with ranked dispatch, at this engine rank (see the controller)."""

    def rejected(self, error: RequestRejected) -> None: ...


class QueueItem:
    """One request held by flow control."""

    __slots__ = ("enqueued_at", "fairness_id", "key", "owner", "priority", "seq", "series", "size", "state", "timer")

    def __init__(self, owner: QueueOwner, fairness_id: str, priority: int, size: int, enqueued_at: float, seq: int,
                 deadline: float) -> None:
        self.owner = owner
        self.fairness_id = fairness_id
        self.priority = priority
        self.size = size
        self.enqueued_at = enqueued_at
        #: Order inside a flow (and across flows for ``global-strict``): (deadline or arrival, sequence).
        self.key = (deadline, seq)
        self.seq = seq
        self.state = QUEUED
        self.timer: Any = None
        self.series: Any = None

    def __repr__(self) -> str:
        return f"QueueItem({self.fairness_id!r}, priority={self.priority}, seq={self.seq}, {self.state})"


# ---- ordering inside a flow -----------------------------------------------------------------


class FcfsQueue:
    """First come, first served; O(1) push, pop and removal."""

    edf = False

    def __init__(self) -> None:
        self._items: OrderedDict[int, QueueItem] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: QueueItem) -> None:
        self._items[item.seq] = item

    def peek(self) -> QueueItem:
        return next(iter(self._items.values()))

    def pop(self) -> QueueItem:
        return self._items.popitem(last=False)[1]

    def remove(self, item: QueueItem) -> None:
        self._items.pop(item.seq, None)


class EdfQueue:
    """Earliest deadline first (arrival + ``x-llm-d-slo-ttft-ms``, else arrival + TTL); FCFS among equals."""

    edf = True

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[float, int], QueueItem]] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def push(self, item: QueueItem) -> None:
        heapq.heappush(self._heap, (item.key, item))
        self._count += 1

    def _drop_removed(self) -> None:
        heap = self._heap
        while heap and heap[0][1].state != QUEUED:
            heapq.heappop(heap)

    def peek(self) -> QueueItem:
        self._drop_removed()
        return self._heap[0][1]

    def pop(self) -> QueueItem:
        self._drop_removed()
        self._count -= 1
        return heapq.heappop(self._heap)[1]

    def remove(self, item: QueueItem) -> None:
        """Removed lazily from the heap (the caller marks ``item.state`` first); counted at once."""
        self._count -= 1
        if self._count == 0:
            self._heap.clear()


ORDERING_POLICIES: dict[str, Callable[[], FcfsQueue | EdfQueue]] = {"fcfs": FcfsQueue, "edf": EdfQueue}


# ---- fairness between the flows of one band --------------------------------------------------


class Flow:
    """One tenant's queue in one band."""

    __slots__ = ("bytes", "fairness_id", "queue", "weight")

    def __init__(self, fairness_id: str, queue: FcfsQueue | EdfQueue, weight: float) -> None:
        self.fairness_id = fairness_id
        self.queue = queue
        self.bytes = 0
        self.weight = weight


class FairnessPolicy:
    """Chooses which non-empty flow of a band sends next. ``active`` holds the non-empty flows, oldest first."""

    def pick(self, active: OrderedDict[str, Flow]) -> Flow:
        raise NotImplementedError

    def forget(self, fairness_id: str) -> None:
        """The flow emptied (its turn state, if any, is dropped)."""


class RoundRobin(FairnessPolicy):
    """One request per tenant in turn (the controller moves the served flow to the back)."""

    def pick(self, active: OrderedDict[str, Flow]) -> Flow:
        return next(iter(active.values()))


class WeightedRoundRobin(FairnessPolicy):
    """Smooth weighted round-robin (nginx): backlogged tenants get requests in proportion to their weights,
    interleaved rather than in bursts."""

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def pick(self, active: OrderedDict[str, Flow]) -> Flow:
        current = self._current
        total = 0.0
        best: Flow | None = None
        best_value = 0.0
        for fairness_id, flow in active.items():
            value = current.get(fairness_id, 0.0) + flow.weight
            current[fairness_id] = value
            total += flow.weight
            if best is None or value > best_value:
                best, best_value = flow, value
        assert best is not None
        current[best.fairness_id] = best_value - total
        return best

    def forget(self, fairness_id: str) -> None:
        self._current.pop(fairness_id, None)


class GlobalStrict(FairnessPolicy):
    """No fairness: the band's oldest (or earliest-deadline) request first, whoever sent it."""

    def pick(self, active: OrderedDict[str, Flow]) -> Flow:
        return min(active.values(), key=lambda flow: flow.queue.peek().key)


FAIRNESS_POLICIES: dict[str, Callable[[], FairnessPolicy]] = {
    "round-robin": RoundRobin,
    "weighted-round-robin": WeightedRoundRobin,
    "global-strict": GlobalStrict,
}
