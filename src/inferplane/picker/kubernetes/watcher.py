"""Everything the picker reads from Kubernetes, started and stopped as one.

Two (or more) picker replicas are safe without leader election:

- Discovery: every replica lists and watches the same InferencePool, Pods and objectives itself, so
  all replicas converge on the same endpoint set within one watch event. None writes to the API
  server (get/list/watch is all the RBAC grants), so there is nothing to contend for.
- Shared truth: every replica scrapes every endpoint's ``/metrics`` (queue, KV-cache use, running
  requests). Load one replica places shows up in the other's view at the next scrape (50 ms by
  default), so queue / KV scorers and the saturation detector see the whole pool's load.
- Private state: in-flight counts, "routed since the last scrape" and the approximate prefix-cache
  LRUs are per replica — each knows only what it routed itself. Between two scrapes each replica
  balances its own share of the traffic, so the extra imbalance is bounded by one scrape interval's
  worth of the other replica's requests and does not accumulate; prefix affinity is learned per
  replica (a shared prefix may warm one endpoint per replica), which costs some cache hits, not
  correctness. Flow-control queues, limits and shedding act per replica on the shared metrics:
  priorities and sheddability hold on each, queue limits count per replica.
- Failure: Envoy's gRPC connections to the picker Service land on either replica; when one goes
  away (or turns NOT_SERVING) Envoy reconnects to the other. A replica whose watch breaks keeps its
  last endpoints (the scraper takes dead ones out) and resumes, or relists after 410 Gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from inferplane.picker.kubernetes.client import KubeClient
from inferplane.picker.kubernetes.cluster import (
    ClusterConfig,
    ClusterConfigError,
    default_kubeconfig,
    from_kubeconfig,
    in_cluster,
)
from inferplane.picker.kubernetes.config import KubernetesConfig
from inferplane.picker.kubernetes.objectives import objective_watcher, rewrite_watcher
from inferplane.picker.kubernetes.pool import PoolWatcher
from inferplane.picker.kubernetes.reflector import WatchSettings

log = logging.getLogger(__name__)


def cluster_config(config: KubernetesConfig) -> ClusterConfig:
    """``kubeconfig`` when set; else in-cluster when ``KUBERNETES_SERVICE_HOST`` is set; else ``$KUBECONFIG``."""
    if config.kubeconfig is not None:
        return from_kubeconfig(config.kubeconfig, config.context)
    try:
        return in_cluster()
    except ClusterConfigError:
        fallback = default_kubeconfig()
        if fallback.is_file():
            return from_kubeconfig(fallback, config.context)
        raise


class KubernetesWatcher:
    """Pool pods → ``on_addresses(list[str])``; objectives → ``on_objectives``; rewrites → ``on_rewrites``.

    See ``inferplane.picker.kubernetes.objectives`` for the callbacks' shapes. The cluster connection
    is resolved in the constructor, so a missing service account or kubeconfig fails at start-up with
    a ConfigError naming it.
    """

    def __init__(
        self,
        config: KubernetesConfig,
        on_addresses: Callable[[list[str]], object],
        on_objectives: Callable[[dict[str, int]], object] | None = None,
        on_rewrites: Callable[[list[dict[str, Any]]], object] | None = None,
        cluster: ClusterConfig | None = None,
    ) -> None:
        self.config = config
        self.cluster = cluster if cluster is not None else cluster_config(config)
        self.namespace = config.namespace or self.cluster.namespace or "default"
        settings = WatchSettings(config.watch_timeout, config.backoff_initial, config.backoff_max)
        self.client = KubeClient(self.cluster, config.request_timeout)
        self.pool = PoolWatcher(self.client, self.namespace, config.inference_pool, on_addresses, settings)
        self._runners: list[tuple[str, Callable[[], Any]]] = [("pool", self.pool.run)]
        if config.objectives and on_objectives is not None:
            self.objectives = objective_watcher(
                self.client, self.namespace, config.inference_pool, on_objectives, settings
            )
            self._runners.append(("objectives", self.objectives.run))
        if config.rewrites and on_rewrites is not None:
            self.rewrites = rewrite_watcher(self.client, self.namespace, config.inference_pool, on_rewrites, settings)
            self._runners.append(("rewrites", self.rewrites.run))
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> bool:
        """Start watching; wait up to ``initial_sync_timeout`` for the first endpoint list. True if it came."""
        log.info("watching InferencePool %s/%s at %s", self.namespace, self.config.inference_pool, self.cluster.server)
        for name, run in self._runners:
            self._tasks.append(asyncio.create_task(run(), name=f"kubernetes {name}"))
        try:
            await asyncio.wait_for(self.pool.synced.wait(), self.config.initial_sync_timeout)
        except TimeoutError:
            log.warning("no endpoint list from Kubernetes after %ss; serving meanwhile",
                        self.config.initial_sync_timeout)
            return False
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.client.aclose()
