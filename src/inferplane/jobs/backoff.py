"""Exponential backoff with jitter for 429 / 503 answers."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float = 2.0, max_s: float = 60.0, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = first retry).

    ``base · 2^(attempt-1)`` capped at ``max_s``, then "equal jitter": a uniform draw in [d/2, d].
    A server's ``Retry-After`` is a floor (still capped at ``max_s``).
    """
    ceiling = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after is not None and retry_after > delay:
        delay = min(max_s, retry_after)
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the delta-seconds form only), or None."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
