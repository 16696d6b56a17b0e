"""A ring buffer of samples over the last minutes, for the console's charts."""

from __future__ import annotations

from collections import deque
from typing import Any


class Rates:
    """Per-second rates of monotonically increasing counters, averaged over the last ``window_s`` seconds.

    A window of a few polls keeps bursty traffic (closed-loop clients finishing together) from
    reading as zero between two close reads.
    """

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._reads: dict[str, deque[tuple[float, float]]] = {}

    def rate(self, name: str, value: float | None, now: float) -> float | None:
        """The counter's increase per second over the window (None on the first read or after a reset)."""
        if value is None:
            self._reads.pop(name, None)
            return None
        reads = self._reads.setdefault(name, deque())
        if reads and (value < reads[-1][1] or now <= reads[-1][0]):  # the counter restarted, or time went back
            reads.clear()
        reads.append((now, value))
        while len(reads) > 2 and now - reads[1][0] >= self.window_s:
            reads.popleft()
        if len(reads) < 2:
            return None
        start_t, start_value = reads[0]
        return (value - start_value) / (now - start_t)


def sample(now: float, state: dict[str, Any] | None, gateway: dict[str, float] | None, rates: Rates,
           decisions_total: float | None) -> dict[str, Any]:
    """One point of every chart: per-endpoint load and KV use, saturation, queued, request and error rates.

    ``rps``: requests Envoy sent to the pool (inference); ``gateway_rps`` and ``errors_ps`` (4xx + 5xx):
    every route of the listener (files, batches, the console itself).
    """
    endpoints: dict[str, dict[str, float | None]] = {}
    for row in (state or {}).get("endpoints", []):
        endpoints[row["address"]] = {
            "running": row.get("running"),
            "waiting": row.get("waiting"),
            "kv": row.get("kv_cache_usage"),
            "in_flight": row.get("in_flight"),
        }
    gateway = gateway or {}
    total = gateway.get("downstream_rq_total")
    errors = None
    if total is not None:
        errors = float(gateway.get("downstream_rq_5xx", 0)) + float(gateway.get("downstream_rq_4xx", 0))
    to_pool = [v for k, v in gateway.items() if k.endswith(".upstream_rq_total")]
    inference = float(sum(to_pool)) if to_pool else None
    return {
        "t": now,
        "endpoints": endpoints,
        "saturation": (state or {}).get("saturation"),
        "queued": ((state or {}).get("flow_control") or {}).get("queued"),
        "rps": rates.rate("inference", inference, now),
        "gateway_rps": rates.rate("requests", total, now),
        "errors_ps": rates.rate("errors", errors, now),
        "decisions_ps": rates.rate("decisions", decisions_total, now),
    }


class History:
    """The newest ``size`` samples, oldest first."""

    def __init__(self, size: int) -> None:
        self._samples: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, point: dict[str, Any]) -> None:
        self._samples.append(point)

    def since(self, t: float = 0.0) -> list[dict[str, Any]]:
        return [s for s in self._samples if s["t"] > t]

    def last(self) -> dict[str, Any] | None:
        return self._samples[-1] if self._samples else None

    def __len__(self) -> int:
        return len(self._samples)
