"""InferenceObjectives and InferenceModelRewrites of the pool → plain Python data through callbacks.

Callback shapes (each runs after the first list, then whenever the result changes):

- ``on_objectives(dict[str, int])``: InferenceObjective ``metadata.name`` → ``spec.priority``
  (default 0; higher is more important; negative = sheddable), for objectives whose
  ``spec.poolRef.name`` is this pool.
- ``on_rewrites(list[dict])``: the ``spec.rules[]`` entries of this pool's InferenceModelRewrites,
  verbatim as in the CRD — ``{"matches": [{"model": {"type": "Exact", "value": str}}],
  "targets": [{"modelRewrite": str, "weight": int}]}`` (``matches: []`` matches every request;
  ``weight`` may be absent) — resources oldest first, rules in order: first match wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from inferplane.picker.kubernetes.client import KubeClient, collection_path
from inferplane.picker.kubernetes.reflector import (
    DEFAULT_WATCH,
    Reflector,
    WatchSettings,
)
from inferplane.picker.kubernetes.resources import (
    OBJECTIVE_PLURAL,
    REWRITE_PLURAL,
    X_GROUP,
    X_VERSION,
    objectives,
    rewrite_rules,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class ProjectionWatcher(Generic[T]):
    """Watches one collection; publishes ``project(items, pool)`` through ``callback`` when it changes."""

    def __init__(
        self,
        client: KubeClient,
        path: str,
        pool: str,
        project: Callable[[list[dict[str, Any]], str], T],
        callback: Callable[[T], object],
        settings: WatchSettings = DEFAULT_WATCH,
    ) -> None:
        self.pool = pool
        self.project = project
        self.callback = callback
        self.value: T | None = None
        self.reflector = Reflector(client, path, self._changed, settings)

    async def run(self) -> None:
        await self.reflector.run()

    def _changed(self, reflector: Reflector) -> None:
        value = self.project(list(reflector.items.values()), self.pool)
        if self.value is None or value != self.value:
            self.value = value
            log.info("%s for pool %s: %s", self.reflector.path.rsplit("/", 1)[-1], self.pool, value)
            self.callback(value)


def objective_watcher(
    client: KubeClient,
    namespace: str,
    pool: str,
    on_objectives: Callable[[dict[str, int]], object],
    settings: WatchSettings = DEFAULT_WATCH,
) -> ProjectionWatcher[dict[str, int]]:
    """``on_objectives({name: priority})`` for the pool's InferenceObjectives."""
    path = collection_path(X_GROUP, X_VERSION, OBJECTIVE_PLURAL, namespace)
    return ProjectionWatcher(client, path, pool, objectives, on_objectives, settings)


def rewrite_watcher(
    client: KubeClient,
    namespace: str,
    pool: str,
    on_rewrites: Callable[[list[dict[str, Any]]], object],
    settings: WatchSettings = DEFAULT_WATCH,
) -> ProjectionWatcher[list[dict[str, Any]]]:
    """``on_rewrites([rule, …])`` for the pool's InferenceModelRewrites (CRD ``spec.rules[]`` shape)."""
    path = collection_path(X_GROUP, X_VERSION, REWRITE_PLURAL, namespace)
    return ProjectionWatcher(client, path, pool, rewrite_rules, on_rewrites, settings)
