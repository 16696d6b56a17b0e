"""The last scheduling decisions, kept for the console and ``/debug/decisions``.

Recording is one tuple and one bounded ``deque.append`` per request: the scheduler stores references
to what it already computed (candidates, per-scorer score lists, totals, picked endpoints). Turning
them into JSON, and explaining the pick, happens only when someone reads them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from inferplane.picker.endpoints import Endpoint
from inferplane.picker.request import InferenceRequest

_now = time.time

#: Decisions kept by default (the console shows the newest few dozen).
DEFAULT_DECISIONS = 256

# A recorded decision: (wall time, request fields, candidates, per-scorer scores, totals, picked, rejection reason)
_Record = tuple[float, tuple[str, str, str, str, int, str], Sequence[Endpoint], list[list[float]],
                list[float], Sequence[Endpoint], str]


class DecisionLog:
    """A ring buffer of scheduling decisions of one profile, whose scorers are ``(name, weight)``."""

    def __init__(self, scorers: Sequence[tuple[str, float]], picker: str = "picker",
                 maxlen: int = DEFAULT_DECISIONS) -> None:
        self.scorers = list(scorers)
        self.picker = picker
        self._records: deque[_Record] = deque(maxlen=maxlen)
        self._append = self._records.append
        #: Decisions recorded since start (the ring buffer keeps the newest ``maxlen``).
        self.total = 0

    @staticmethod
    def _request(request: InferenceRequest) -> tuple[str, str, str, str, int, str]:
        return (request.request_id, request.requested_model or request.model, request.model, request.objective,
                request.priority, request.fairness_id)

    def picked(self, request: InferenceRequest, candidates: Sequence[Endpoint], scores: list[list[float]],
               totals: list[float], picked: Sequence[Endpoint]) -> None:
        """The scheduler sent ``request`` to ``picked[0]`` (hot path: keep it this cheap)."""
        self.total += 1
        self._append((_now(), (request.request_id, request.requested_model or request.model, request.model,
                               request.objective, request.priority, request.fairness_id),
                      candidates, scores, totals, picked, ""))

    def rejected(self, request: InferenceRequest, candidates: Sequence[Endpoint], reason: str) -> None:
        """The scheduler refused ``request`` (no endpoint, saturated pool)."""
        self.total += 1
        self._records.append((time.time(), self._request(request), candidates, [], [], (), reason))

    def records(self) -> list[_Record]:
        """A copy of the ring buffer, oldest first (safe to call from another thread)."""
        return list(self._records)

    def to_json(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` decisions, newest first, with each candidate's scores and why the pick won."""
        records = self.records()
        if limit is not None:
            records = records[-limit:] if limit > 0 else []
        return [self._describe(record) for record in reversed(records)]

    def last_scores(self) -> dict[str, dict[str, Any]]:
        """Per endpoint address, its scores in the newest decision that considered it."""
        seen: dict[str, dict[str, Any]] = {}
        for at, _, candidates, scores, totals, _, reason in reversed(self.records()):
            if reason:
                continue
            for i, endpoint in enumerate(candidates):
                if endpoint.address not in seen:
                    seen[endpoint.address] = {"time": at, **self._candidate(scores, totals, i)}
        return seen

    def _candidate(self, scores: list[list[float]], totals: list[float], i: int) -> dict[str, Any]:
        return {
            "total": round(totals[i], 4),
            "scores": {name: round(per[i], 4) for (name, _), per in zip(self.scorers, scores)},
        }

    def _describe(self, record: _Record) -> dict[str, Any]:
        at, (request_id, requested, model, objective, priority, fairness_id), candidates, scores, totals, picked, \
            reason = record
        decision: dict[str, Any] = {
            "time": at,
            "request_id": request_id,
            "model": requested,
            "target_model": model,
            "objective": objective,
            "priority": priority,
            "fairness_id": fairness_id,
            "outcome": "rejected" if reason else "picked",
            "picked": [ep.address for ep in picked],
            "candidates": [],
        }
        if reason:
            decision["reason"] = reason
            decision["candidates"] = [{"address": ep.address} for ep in candidates]
            return decision
        decision["candidates"] = [
            {"address": ep.address, **self._candidate(scores, totals, i)} for i, ep in enumerate(candidates)
        ]
        decision["reason"] = self._why(candidates, scores, totals, picked)
        return decision

    def _why(self, candidates: Sequence[Endpoint], scores: list[list[float]], totals: list[float],
             picked: Sequence[Endpoint]) -> str:
        """One sentence: the pick's total against the runner-up's, and the scorers that made the difference."""
        if not picked:
            return "no endpoint picked"
        index = next((i for i, ep in enumerate(candidates) if ep is picked[0]), None)
        if index is None:
            return f"picked by {self.picker}"
        if len(candidates) == 1:
            return "the only candidate"
        others = [i for i in range(len(candidates)) if i != index]
        runner_up = max(others, key=lambda i: totals[i])
        lead = totals[index] - totals[runner_up]
        if abs(lead) < 1e-9:
            return f"tied with {candidates[runner_up].address} at {totals[index]:.2f}: {self.picker} broke the tie"
        if lead < 0:
            return (f"total {totals[index]:.2f} below {candidates[runner_up].address}'s {totals[runner_up]:.2f}: "
                    f"drawn by {self.picker}")
        margins = sorted(
            ((weight * (per[index] - per[runner_up]), name) for (name, weight), per in zip(self.scorers, scores)),
            reverse=True,
        )
        drivers = ", ".join(f"{name} {margin:+.2f}" for margin, name in margins if margin > 1e-9)
        return (f"highest total {totals[index]:.2f} vs {totals[runner_up]:.2f} ({candidates[runner_up].address})"
                + (f"; ahead on {drivers}" if drivers else ""))
