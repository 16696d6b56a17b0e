"""A ring buffer of samples over the last minutes, for the console's charts."""

from __future__ import annotations

from collections import deque
from typing import Any


class Rates:
    """Per-second rates of monotonically increasing counters between two reads."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def rate(self, name: str, value: float | None, now: float) -> float | None:
        """The counter's increase per second since the last read of ``name`` (None on the first read)."""
        if value is None:
            self._last.pop(name, None)
            return None
        previous = self._last.get(name)
        self._last[name] = (now, value)
        if previous is None or now <= previous[0] or value < previous[1]:  # first read, or a restart
            return None
        return (value - previous[1]) / (now - previous[0])


def sample(now: float, state: dict[str, Any] | None, gateway: dict[str, float] | None, rates: Rates,
           decisions_total: float | None) -> dict[str, Any]:
    """One point of every chart: per-endpoint load and KV use, saturation, queued, request and error rates."""
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
    return {
        "t": now,
        "endpoints": endpoints,
        "saturation": (state or {}).get("saturation"),
        "queued": ((state or {}).get("flow_control") or {}).get("queued"),
        "rps": rates.rate("requests", total, now),
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
