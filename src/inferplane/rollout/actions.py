"""What each ``rollout`` command does to a rollout: pure transitions, no I/O."""

from __future__ import annotations

from inferplane.rollout.state import Phase, Rollout, RolloutError


def start(existing: Rollout | None, model: str, canary: str, weight: int, stable: str | None = None) -> Rollout:
    """A new rollout of ``model``: ``weight`` percent to ``canary``, the rest to the stable version
    (``stable``, else the stable version of the model's last rollout, else ``model`` itself)."""
    if existing is not None and existing.phase == Phase.PROGRESSING and existing.canary and existing.weight > 0:
        raise RolloutError(
            f"a rollout of {model!r} is in progress ({existing.canary!r} at {existing.weight}%): "
            "promote it or roll it back first"
        )
    stable = stable or (existing.stable if existing is not None else model)
    if canary == stable:
        raise RolloutError(f"the canary {canary!r} is already the stable version of {model!r}")
    return Rollout(model=model, stable=stable, canary=canary, weight=_percent(weight),
                   message=f"started: {weight}% to {canary}")


def set_weight(rollout: Rollout, weight: int) -> Rollout:
    """Send ``weight`` percent to the canary."""
    _needs_canary(rollout, "set a weight")
    return rollout.model_copy(update={"weight": _percent(weight), "phase": Phase.PROGRESSING,
                                      "message": f"weight set to {weight}%"})


def promote(rollout: Rollout, reason: str = "promoted") -> Rollout:
    """All traffic to the canary, which becomes the stable version."""
    _needs_canary(rollout, "promote")
    return Rollout(model=rollout.model, stable=rollout.canary, canary="", weight=0, phase=Phase.PROMOTED,
                   message=reason)


def rollback(rollout: Rollout, reason: str = "rolled back") -> Rollout:
    """All traffic back to the stable version (the canary stays named, at 0 %)."""
    _needs_canary(rollout, "roll back")
    return rollout.model_copy(update={"weight": 0, "phase": Phase.ROLLED_BACK, "message": reason})


def _needs_canary(rollout: Rollout, what: str) -> None:
    if not rollout.canary:
        raise RolloutError(f"cannot {what}: the rollout of {rollout.model!r} has no canary "
                           f"(it is {rollout.phase.value}; start a new one)")


def _percent(weight: int) -> int:
    if not 0 <= weight <= 100:
        raise RolloutError(f"weight {weight}: must be a percentage from 0 to 100")
    return weight
