"""Per-tenant request and token budgets with a controlled clock."""

from __future__ import annotations

from inferplane.auth.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_refill_and_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.check("a", 2, None, 0) is None
    assert limiter.check("a", 2, None, 0) is None
    assert limiter.check("a", 2, None, 0) == ("requests", 2, 30)  # one request refills in 60/2 s
    assert limiter.check("b", 2, None, 0) is None  # tenants have their own budgets
    clock.now += 30
    assert limiter.check("a", 2, None, 0) is None
    assert limiter.check("a", 2, None, 0) is not None


def test_tokens_per_minute_and_no_partial_charge() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.check("a", 10, 100, 80) is None
    what, limit, retry_after = limiter.check("a", 10, 100, 50)
    assert (what, limit) == ("tokens", 100) and retry_after == 18  # 30 tokens missing at 100/min
    # the refused request was not charged a request either: 9 more fit
    assert all(limiter.check("a", 10, None, 0) is None for _ in range(9))
    assert limiter.check("a", 10, None, 0)[0] == "requests"


def test_a_request_larger_than_the_budget_waits_for_a_full_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.check("a", None, 100, 500) is None
    assert limiter.check("a", None, 100, 500) == ("tokens", 100, 60)
    clock.now += 60
    assert limiter.check("a", None, 100, 500) is None


def test_no_limits_never_refuses() -> None:
    limiter = RateLimiter(Clock())
    assert all(limiter.check("a", None, None, 10**9) is None for _ in range(1000))
