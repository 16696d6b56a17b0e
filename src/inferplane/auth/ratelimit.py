"""Per-tenant token buckets for requests and tokens per minute."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Bucket:
    """Holds up to ``capacity`` units, refilled at ``capacity`` per minute."""

    capacity: float
    level: float
    stamp: float

    def refill(self, capacity: float, now: float) -> None:
        self.level = min(capacity, self.level + (now - self.stamp) * capacity / 60.0)
        self.capacity = capacity
        self.stamp = now

    def wait_s(self, cost: float) -> float:
        """Seconds until ``cost`` units are available (0 when they are now)."""
        missing = cost - self.level
        return 0.0 if missing <= 1e-9 else missing * 60.0 / self.capacity


class RateLimiter:
    """Request and token budgets per tenant; a request is charged only when both allow it.

    Limits come with each call (from the key), so changing a key's limits takes effect at once.
    A request costing more than the whole budget is charged the whole budget (it waits for a full
    bucket instead of being refused forever).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def _bucket(self, tenant: str, kind: str, capacity: int, now: float) -> Bucket:
        bucket = self._buckets.get((tenant, kind))
        if bucket is None:
            bucket = self._buckets[(tenant, kind)] = Bucket(capacity, capacity, now)
        bucket.refill(capacity, now)
        return bucket

    def check(self, tenant: str, rpm: int | None, tpm: int | None, tokens: int) -> tuple[str, int, int] | None:
        """Charge one request of ``tokens``; or ``(what, limit, retry_after_s)`` when a budget is exhausted."""
        now = self._clock()
        wanted: list[tuple[str, int, Bucket, float]] = []
        if rpm is not None:
            wanted.append(("requests", rpm, self._bucket(tenant, "requests", rpm, now), 1.0))
        if tpm is not None and tokens > 0:
            wanted.append(("tokens", tpm, self._bucket(tenant, "tokens", tpm, now), float(min(tokens, tpm))))
        for what, limit, bucket, cost in wanted:
            wait = bucket.wait_s(cost)
            if wait > 0:
                return what, limit, max(1, math.ceil(wait))
        for _, _, bucket, cost in wanted:
            bucket.level -= cost
        return None
