"""Pickers: choose the endpoint from the combined scores and order the fallbacks after it."""

from __future__ import annotations

import random
from collections.abc import Sequence

from inferplane.picker.endpoints import Endpoint
from inferplane.picker.scheduling.plugin import Picker
from inferplane.picker.scheduling.registry import register


def _fallbacks(
    endpoints: Sequence[Endpoint], scores: Sequence[float], picked: int, count: int
) -> list[Endpoint]:
    """The next ``count - 1`` best endpoints after ``picked``, best first (random order among equals)."""
    if count <= 1:
        return [endpoints[picked]]
    rest = [i for i in range(len(endpoints)) if i != picked]
    random.shuffle(rest)
    rest.sort(key=scores.__getitem__, reverse=True)
    return [endpoints[picked], *(endpoints[i] for i in rest[: count - 1])]


@register()
class MaxScorePicker(Picker):
    """The highest combined score; ties broken at random."""

    type_name = "max-score-picker"

    def pick(self, endpoints: Sequence[Endpoint], scores: Sequence[float], count: int) -> list[Endpoint]:
        if not endpoints:
            return []
        best = max(scores)
        tied = [i for i, s in enumerate(scores) if s == best]
        picked = tied[0] if len(tied) == 1 else random.choice(tied)
        return _fallbacks(endpoints, scores, picked, count)


@register()
class WeightedRandomPicker(Picker):
    """At random, with probability proportional to the combined score (uniform when all are 0)."""

    type_name = "weighted-random-picker"

    def pick(self, endpoints: Sequence[Endpoint], scores: Sequence[float], count: int) -> list[Endpoint]:
        if not endpoints:
            return []
        weights = [max(0.0, s) for s in scores]
        if sum(weights) <= 0.0:
            picked = random.randrange(len(endpoints))
        else:
            picked = random.choices(range(len(endpoints)), weights=weights)[0]
        return _fallbacks(endpoints, scores, picked, count)


@register()
class RandomPicker(Picker):
    """Uniformly at random, ignoring scores (a baseline)."""

    type_name = "random-picker"

    def pick(self, endpoints: Sequence[Endpoint], scores: Sequence[float], count: int) -> list[Endpoint]:
        if not endpoints:
            return []
        order = random.sample(list(endpoints), k=min(len(endpoints), max(1, count)))
        return order
