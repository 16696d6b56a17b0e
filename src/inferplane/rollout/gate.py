"""The metric gate of an automatic rollout: a pure function from one window's numbers to a decision.

Each step of a rollout is judged on the requests of its own window (counter deltas): the canary's
error rate must stay at or below ``max_error_rate`` and its TTFT p90 at or below
``max_ttft_p90_ratio`` times the stable version's (the last stable p90 seen, so the final 100 %
step, where the stable version gets no traffic, still has a baseline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Decision(str, Enum):
    ADVANCE = "advance"  # the canary is within bounds: next step (or promote after the last)
    HOLD = "hold"  # too few canary requests to judge: watch another window
    ROLLBACK = "rollback"  # the canary broke a bound: all traffic back to the stable version


@dataclass(frozen=True)
class TargetStats:
    """One target model's requests in a window: attempts, failed ones, TTFT p90 (``None``: no samples)."""

    requests: float
    errors: float
    ttft_p90: float | None = None
    ttft_samples: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0


@dataclass(frozen=True)
class GateLimits:
    max_error_rate: float = 0.05
    #: Canary TTFT p90 / stable TTFT p90 above this rolls back; ``None``: TTFT not gated.
    max_ttft_p90_ratio: float | None = 1.5
    #: Canary requests a window needs before it can be judged.
    min_requests: int = 20


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str


def judge(canary: TargetStats, stable_ttft_p90: float | None, limits: GateLimits) -> Verdict:
    """Advance, hold or roll back, with the reason in words."""
    rate_text = f"canary error rate {canary.error_rate:.1%} (limit {limits.max_error_rate:.1%})"
    if canary.requests < limits.min_requests:
        # Enough failures that even a clean rest of the window could not bring the rate under the limit.
        if canary.errors > limits.max_error_rate * limits.min_requests:
            return Verdict(Decision.ROLLBACK, f"canary errors: {canary.errors:g} of {canary.requests:g} requests, "
                                              f"more than {limits.max_error_rate:.1%} of the {limits.min_requests} "
                                              "a window needs")
        return Verdict(Decision.HOLD, f"only {canary.requests:g} canary requests in the window "
                                      f"(need {limits.min_requests} to judge)")
    if canary.error_rate > limits.max_error_rate:
        return Verdict(Decision.ROLLBACK, rate_text)
    if limits.max_ttft_p90_ratio is not None and canary.ttft_p90 is not None and stable_ttft_p90:
        ratio = canary.ttft_p90 / stable_ttft_p90
        ttft_text = (f"canary TTFT p90 {canary.ttft_p90 * 1000:.0f} ms = {ratio:.2f}x stable "
                     f"{stable_ttft_p90 * 1000:.0f} ms (limit {limits.max_ttft_p90_ratio:g}x)")
        if ratio > limits.max_ttft_p90_ratio:
            return Verdict(Decision.ROLLBACK, ttft_text)
        return Verdict(Decision.ADVANCE, f"{rate_text}; {ttft_text}")
    return Verdict(Decision.ADVANCE, f"{rate_text}; TTFT not compared (no samples on one side)")


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram ``[(le, count), …]`` (Prometheus' interpolation).

    ``None`` when it holds no observation; a quantile in the ``+Inf`` bucket is the largest finite bound.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
