"""The metric gate and the histogram quantile it reads TTFT p90 with."""

from __future__ import annotations

import math

import pytest

from inferplane.rollout.gate import Decision, GateLimits, TargetStats, histogram_quantile, judge

LIMITS = GateLimits(max_error_rate=0.05, max_ttft_p90_ratio=1.5, min_requests=20)


def test_healthy_canary_advances() -> None:
    verdict = judge(TargetStats(requests=100, errors=2, ttft_p90=0.12), 0.1, LIMITS)
    assert verdict.decision == Decision.ADVANCE
    assert "1.20x" in verdict.reason


def test_error_rate_above_the_limit_rolls_back() -> None:
    verdict = judge(TargetStats(requests=100, errors=6, ttft_p90=0.1), 0.1, LIMITS)
    assert verdict.decision == Decision.ROLLBACK
    assert "error rate 6.0%" in verdict.reason


def test_error_rate_at_the_limit_advances() -> None:
    assert judge(TargetStats(requests=100, errors=5, ttft_p90=0.1), 0.1, LIMITS).decision == Decision.ADVANCE


def test_slow_canary_rolls_back() -> None:
    verdict = judge(TargetStats(requests=50, errors=0, ttft_p90=0.4), 0.1, LIMITS)
    assert verdict.decision == Decision.ROLLBACK
    assert "4.00x" in verdict.reason


def test_too_few_requests_hold() -> None:
    verdict = judge(TargetStats(requests=5, errors=0, ttft_p90=9.0), 0.1, LIMITS)
    assert verdict.decision == Decision.HOLD
    assert "need 20" in verdict.reason


def test_few_requests_with_hopeless_errors_roll_back() -> None:
    # 2 errors already exceed 5 % of the 20 requests a window needs, whatever the rest does
    assert judge(TargetStats(requests=3, errors=2), 0.1, LIMITS).decision == Decision.ROLLBACK


def test_no_ttft_baseline_judges_errors_alone() -> None:
    verdict = judge(TargetStats(requests=30, errors=0, ttft_p90=5.0), None, LIMITS)
    assert verdict.decision == Decision.ADVANCE
    assert "TTFT not compared" in verdict.reason


def test_ttft_gate_off() -> None:
    limits = GateLimits(max_error_rate=0.05, max_ttft_p90_ratio=None, min_requests=1)
    assert judge(TargetStats(requests=30, errors=0, ttft_p90=5.0), 0.1, limits).decision == Decision.ADVANCE


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.4, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.2)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)


def test_quantile_in_the_inf_bucket_is_the_largest_bound() -> None:
    assert histogram_quantile(0.9, [(0.1, 1.0), (math.inf, 10.0)]) == pytest.approx(0.1)


def test_quantile_of_nothing() -> None:
    assert histogram_quantile(0.9, []) is None
    assert histogram_quantile(0.9, [(0.1, 0.0), (math.inf, 0.0)]) is None
