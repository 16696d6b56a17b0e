"""Objectives (GIE ``InferenceObjective``): a name per request, chosen by header, giving its priority.

Priority is an integer, higher is more important, negative is sheddable (design.md §2). The
picker's configuration gives the first set; an ``InferenceObjective`` watch can later feed its
own set through :meth:`Objectives.set_source` without touching the configured one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

#: Request headers naming the objective, in order of preference (llm-d's, then GIE's older spelling).
OBJECTIVE_HEADERS = ("x-llm-d-inference-objective", "x-gateway-inference-objective")


class ObjectiveSpec(BaseModel):
    """One objective in YAML: ``name: {priority: 10}`` (or just ``name: 10``)."""

    model_config = ConfigDict(extra="forbid")

    #: Higher is more important; negative = sheddable (429 when the pool is saturated).
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Objective:
    """The objective a request runs under ("" when none is named or known and there is no default)."""

    name: str
    priority: int = 0

    @property
    def sheddable(self) -> bool:
        return self.priority < 0


NO_OBJECTIVE = Objective("", 0)


class Objectives:
    """Objective name -> priority, merged from named sources; resolves a request's headers to one."""

    def __init__(self, configured: Mapping[str, int | ObjectiveSpec] | None = None, default: str = "") -> None:
        self._sources: dict[str, dict[str, int]] = {}
        self._merged: dict[str, Objective] = {}
        self.default_name = default
        self.set_source("config", configured or {})

    def set_source(self, source: str, objectives: Mapping[str, int | ObjectiveSpec]) -> None:
        """Replace the objectives one source provides (``config``, ``kubernetes``…); later sources win a name."""
        self._sources[source] = {
            name: spec.priority if isinstance(spec, ObjectiveSpec) else int(spec) for name, spec in objectives.items()
        }
        merged: dict[str, Objective] = {}
        for entries in self._sources.values():
            for name, priority in entries.items():
                merged[name] = Objective(name, priority)
        self._merged = merged

    def get(self, name: str) -> Objective | None:
        return self._merged.get(name)

    def names(self) -> dict[str, int]:
        return {name: o.priority for name, o in self._merged.items()}

    @property
    def default(self) -> Objective:
        """The default objective, or priority 0 without a name when none is configured (or it vanished)."""
        return self._merged.get(self.default_name, NO_OBJECTIVE) if self.default_name else NO_OBJECTIVE

    def resolve(self, headers: Mapping[str, str]) -> Objective:
        """The objective the (lower-cased) headers name; unknown or absent names get the default.

        As the GIE reference EPP: an unknown objective is not an error, the request runs at the
        default priority. The unknown name is not used as a metric label (clients choose it).
        """
        for header in OBJECTIVE_HEADERS:
            name = headers.get(header)
            if name:
                found = self._merged.get(name)
                if found is not None:
                    return found
                log.debug("unknown objective %r: using the default objective", name)
                break
        return self.default
