"""The automatic, metric-gated rollout: step the canary's weight up, judge every window, promote or roll back."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inferplane.rollout import actions
from inferplane.rollout.gate import Decision, GateLimits, judge
from inferplane.rollout.observe import Snapshot, window
from inferplane.rollout.state import Rollout

#: Stable TTFT samples a window needs before its p90 becomes the baseline.
MIN_BASELINE_SAMPLES = 5


@dataclass(frozen=True)
class AutoPlan:
    steps: Sequence[int]
    interval_s: float
    limits: GateLimits
    #: Windows in a row with too few canary requests before giving up (rolling back).
    max_holds: int = 10


def run_auto(
    rollout: Rollout,
    plan: AutoPlan,
    save: Callable[[Rollout], None],
    fetch: Callable[[], Snapshot],
    say: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> Rollout:
    """Walk ``plan.steps`` (canary percentages); the final rollout is promoted or rolled back."""
    baseline: float | None = None
    for step in plan.steps:
        rollout = actions.set_weight(rollout, step)
        rollout = rollout.model_copy(update={"message": f"step {step}%"})
        save(rollout)
        say(f"{rollout.model}: {step}% to {rollout.canary}, {100 - step}% to {rollout.stable}")
        holds = 0
        while True:
            before = fetch()
            sleep(plan.interval_s)
            after = fetch()
            stable = window(before, after, rollout.model, rollout.stable)
            if stable.ttft_p90 is not None and stable.ttft_samples >= MIN_BASELINE_SAMPLES:
                baseline = stable.ttft_p90
            canary = window(before, after, rollout.model, rollout.canary)
            verdict = judge(canary, baseline, plan.limits)
            say(f"{rollout.model} at {step}%: {verdict.decision.value}: {verdict.reason}")
            if verdict.decision == Decision.ROLLBACK:
                rollout = actions.rollback(rollout, f"rolled back at {step}%: {verdict.reason}")
                save(rollout)
                return rollout
            if verdict.decision == Decision.ADVANCE:
                break
            holds += 1
            if holds >= plan.max_holds:
                rollout = actions.rollback(rollout, f"rolled back at {step}%: {verdict.reason}, "
                                                    f"{holds} windows in a row")
                save(rollout)
                return rollout
    rollout = actions.promote(rollout, f"promoted after steps {','.join(map(str, plan.steps))}")
    save(rollout)
    return rollout
