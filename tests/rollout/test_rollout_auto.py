"""The stepping controller and the per-target numbers it reads, on the picker's real metric registry."""

from __future__ import annotations

from prometheus_client import generate_latest

from inferplane.picker.metrics import PickerMetrics
from inferplane.rollout import actions
from inferplane.rollout.auto import AutoPlan, run_auto
from inferplane.rollout.gate import GateLimits
from inferplane.rollout.observe import parse_snapshot, target_stats, window
from inferplane.rollout.state import Phase, Rollout

MODEL = "llama"


class FakePicker:
    """A picker registry fed with ``traffic(rollout)`` each time the controller waits."""

    def __init__(self, canary_ttft: float, canary_error_every: int = 0) -> None:
        self.metrics = PickerMetrics()
        self.canary_ttft = canary_ttft
        self.canary_error_every = canary_error_every
        self.rollout: Rollout | None = None
        self.saved: list[Rollout] = []

    def save(self, rollout: Rollout) -> None:
        self.saved.append(rollout)
        self.rollout = rollout

    def fetch(self):
        return parse_snapshot(generate_latest(self.metrics.registry).decode())

    def sleep(self, _seconds: float) -> None:
        """100 requests split by the current weights."""
        assert self.rollout is not None
        m = self.metrics
        canary_share = self.rollout.weight
        for i in range(100):
            to_canary = i < canary_share
            target = self.rollout.canary if to_canary else self.rollout.stable
            m.requests.labels(MODEL, target).inc()
            if to_canary and self.canary_error_every and i % self.canary_error_every == 0:
                m.errors.labels(MODEL, target, "ModelServerError").inc()
                continue
            m.ttft.labels(MODEL, target).observe(self.canary_ttft if to_canary else 0.1)


def plan(steps=(10, 50, 100)) -> AutoPlan:
    return AutoPlan(steps, 1.0, GateLimits(max_error_rate=0.05, max_ttft_p90_ratio=1.5, min_requests=10))


def start() -> Rollout:
    return actions.start(None, MODEL, "llama-v2", 10, stable="llama-v1")


def test_good_canary_is_promoted() -> None:
    picker = FakePicker(canary_ttft=0.11)
    lines: list[str] = []
    final = run_auto(start(), plan(), picker.save, picker.fetch, lines.append, picker.sleep)
    assert final.phase == Phase.PROMOTED
    assert final.stable == "llama-v2"
    assert [r.weight for r in picker.saved[:-1]] == [10, 50, 100]
    # at 100 % the stable version gets no traffic: the gate compares with the last stable p90
    assert "x stable" in lines[-1]


def test_slow_canary_is_rolled_back_at_the_first_step() -> None:
    picker = FakePicker(canary_ttft=1.0)
    final = run_auto(start(), plan(), picker.save, picker.fetch, lambda _: None, picker.sleep)
    assert final.phase == Phase.ROLLED_BACK
    assert final.weight == 0
    assert "at 10%" in final.message and "TTFT" in final.message
    assert [r.weight for r in picker.saved] == [10, 0]


def test_failing_canary_is_rolled_back() -> None:
    picker = FakePicker(canary_ttft=0.1, canary_error_every=5)  # 20 % errors
    final = run_auto(start(), plan(), picker.save, picker.fetch, lambda _: None, picker.sleep)
    assert final.phase == Phase.ROLLED_BACK
    assert "error rate 20.0%" in final.message


def test_idle_canary_holds_then_gives_up() -> None:
    picker = FakePicker(canary_ttft=0.1)
    picker.sleep = lambda _s: None  # no traffic at all
    final = run_auto(start(), AutoPlan((10, 100), 1.0, GateLimits(min_requests=10), max_holds=3),
                     picker.save, picker.fetch, lambda _: None, picker.sleep)
    assert final.phase == Phase.ROLLED_BACK
    assert "3 windows in a row" in final.message


def test_refused_requests_count_as_errors_and_windows_are_deltas() -> None:
    metrics = PickerMetrics()
    metrics.requests.labels(MODEL, "v2").inc(10)
    before = parse_snapshot(generate_latest(metrics.registry).decode())
    metrics.requests.labels(MODEL, "v2").inc(8)
    metrics.errors.labels(MODEL, "v2", "ModelServerError").inc(1)
    metrics.errors.labels(MODEL, "v2", "Saturated").inc(2)  # refused by the picker: never scheduled
    for value in (0.05, 0.05, 0.05, 0.3):
        metrics.ttft.labels(MODEL, "v2").observe(value)
    after = parse_snapshot(generate_latest(metrics.registry).decode())
    stats = window(before, after, MODEL, "v2")
    assert stats.requests == 10 and stats.errors == 3
    assert stats.ttft_samples == 4
    assert 0.05 < stats.ttft_p90 <= 0.3
    assert target_stats(after, MODEL, "v2").requests == 20
    assert target_stats(after, MODEL, "unknown").requests == 0
