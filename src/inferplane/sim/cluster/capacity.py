"""Capacity questions: the fewest replicas that meet an SLO, and the best routing profile."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inferplane.sim.cluster.config import (
    ClusterConfig,
)
from inferplane.sim.cluster.loop import Progress, run
from inferplane.sim.cluster.report import summarize
from inferplane.sim.cluster.routing import make_router
from inferplane.sim.cluster.workload import generate
from inferplane.sim.cost_model import get_preset
from inferplane.sim.tokenizer import get_tokenizer


@dataclass(frozen=True, slots=True)
class Slo:
    """Upper bounds (seconds) a run must meet; unset bounds are not checked."""

    ttft_p90: float | None = None
    itl_p90: float | None = None
    e2e_p90: float | None = None

    def violations(self, summary: dict[str, Any]) -> list[str]:
        """What the run missed ("ttft p90 1.8 s > 1.0 s"); empty when it met every bound."""
        missed = []
        for name, bound, key in (("ttft", self.ttft_p90, "ttft_s"), ("itl", self.itl_p90, "itl_s"), ("e2e", self.e2e_p90, "e2e_s")):
            if bound is None:
                continue
            value = summary[key]["p90"]
            if value is None or value > bound:
                missed.append(f"{name} p90 {value if value is None else round(value, 3)} s > {bound} s")
        if summary["completed"] < summary["sent"]:
            missed.append(f"{summary['sent'] - summary['completed']} requests not completed")
        return missed


def simulate(config: ClusterConfig, profile: str, progress: Progress | None = None) -> dict[str, Any]:
    """One run of ``config`` behind ``profile``; its summary."""
    tokenizer = get_tokenizer(get_preset(config.replica.preset).chat_template)
    router = make_router(profile, config.replicas, config.seed)
    data = run(config, router, generate(config.workload, tokenizer), progress)
    return summarize(data)


@dataclass(slots=True)
class CapacityResult:
    """The smallest replica count meeting the SLO (None: not even ``max_replicas``) and every trial."""

    replicas: int | None
    trials: list[dict[str, Any]] = field(default_factory=list)


def find_replicas(
    config: ClusterConfig,
    profile: str,
    slo: Slo,
    max_replicas: int = 1024,
    on_trial: Callable[[int, dict[str, Any], list[str]], None] | None = None,
) -> CapacityResult:
    """Doubling from 1 until the SLO holds, then bisection between the last miss and the first hit.

    Assumes more replicas never hurt (true of every routing profile here up to noise); every
    trial is kept so a caller can check.
    """
    result = CapacityResult(None)
    verdicts: dict[int, bool] = {}

    def meets(n: int) -> bool:
        summary = simulate(config.model_copy(update={"replicas": n}), profile)
        missed = slo.violations(summary)
        summary.pop("series", None)
        result.trials.append({"replicas": n, "meets_slo": not missed, "missed": missed, "summary": summary})
        if on_trial is not None:
            on_trial(n, summary, missed)
        verdicts[n] = not missed
        return not missed

    low, high = 0, 1  # low misses (0 trivially), high is the candidate
    while not meets(high):
        low = high
        if high >= max_replicas:
            return result
        high = min(high * 2, max_replicas)
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    result.replicas = high
    return result


def compare_profiles(
    config: ClusterConfig, profiles: Sequence[str], progress: Progress | None = None
) -> list[dict[str, Any]]:
    """The same workload behind each profile, in order."""
    return [simulate(config, profile, progress) for profile in profiles]
