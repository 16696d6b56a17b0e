"""The InferencePool and its Pods → the picker's endpoint addresses (ready pod IP × each target port)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from inferplane.picker.kubernetes.client import KubeClient, collection_path
from inferplane.picker.kubernetes.reflector import (
    DEFAULT_WATCH,
    Reflector,
    WatchSettings,
)
from inferplane.picker.kubernetes.resources import (
    POOL_GROUP,
    POOL_PLURAL,
    POOL_VERSION,
    label_selector,
    pool_addresses,
    target_ports,
)

log = logging.getLogger(__name__)


class PoolWatcher:
    """Watches one InferencePool and the Pods its selector matches; publishes ``on_addresses(list)``.

    The pool itself is watched too: when ``spec.selector`` changes the pod watch restarts with the new
    label selector (the old addresses stay published until the new pod list arrives); when only
    ``spec.targetPorts`` changes the addresses are recomputed from the pods already known. A pool that
    does not exist (yet, or any more) has no endpoints. ``on_addresses`` runs only when the sorted
    address list differs from the last one published.
    """

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        pool: str,
        on_addresses: Callable[[list[str]], object],
        settings: WatchSettings = DEFAULT_WATCH,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.pool = pool
        self.on_addresses = on_addresses
        self.settings = settings
        self.pool_reflector = Reflector(
            client,
            collection_path(POOL_GROUP, POOL_VERSION, POOL_PLURAL, namespace),
            self._pool_changed,
            settings,
            field_selector=f"metadata.name={pool}",
        )
        self.pod_reflector: Reflector | None = None
        self.addresses: list[str] | None = None
        #: Set once the first address list is published (pool and pods listed, or pool known absent).
        self.synced = asyncio.Event()
        self._selector: str | None = None
        self._ports: list[int] = []
        self._pod_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Until cancelled (then the pod watch stops too)."""
        try:
            await self.pool_reflector.run()
        finally:
            await self._stop_pods()

    def _pool_changed(self, reflector: Reflector) -> None:
        pool: dict[str, Any] | None = reflector.items.get(self.pool)
        if pool is None:
            if self.pod_reflector is not None or not self.synced.is_set():
                log.warning("InferencePool %s/%s not found: no endpoints", self.namespace, self.pool)
            self._selector, self._ports = None, []
            self._replace_pod_watch(None)
            self._publish([])
            return
        selector, self._ports = label_selector(pool), target_ports(pool)
        if selector is None:
            log.warning("InferencePool %s/%s: empty spec.selector.matchLabels selects no pods",
                        self.namespace, self.pool)
        if not self._ports:
            log.warning("InferencePool %s/%s: no valid spec.targetPorts", self.namespace, self.pool)
        if selector != self._selector or (selector is not None and self.pod_reflector is None):
            self._selector = selector
            self._replace_pod_watch(selector)
            if selector is None:
                self._publish([])
        elif self.pod_reflector is not None and self.pod_reflector.synced.is_set():
            self._publish(pool_addresses(self.pod_reflector.items.values(), self._ports))

    def _replace_pod_watch(self, selector: str | None) -> None:
        if self._pod_task is not None:
            self._pod_task.cancel()  # a cancelled reflector never calls back again
            self._pod_task = None
        self.pod_reflector = None
        if selector is None:
            return
        log.info("InferencePool %s/%s: watching pods %s, ports %s", self.namespace, self.pool, selector, self._ports)
        reflector = Reflector(
            self.client,
            collection_path("", "v1", "pods", self.namespace),
            self._pods_changed,
            self.settings,
            label_selector=selector,
        )
        self.pod_reflector = reflector
        self._pod_task = asyncio.create_task(reflector.run(), name=f"watch pods {selector}")

    def _pods_changed(self, reflector: Reflector) -> None:
        if reflector is self.pod_reflector:
            self._publish(pool_addresses(reflector.items.values(), self._ports))

    def _publish(self, addresses: list[str]) -> None:
        if addresses != self.addresses:
            self.addresses = addresses
            self.on_addresses(list(addresses))
        self.synced.set()

    async def _stop_pods(self) -> None:
        task, self._pod_task = self._pod_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
