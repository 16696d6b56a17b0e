"""The picker's endpoints follow the InferencePool's ready pods on a (fake, real-HTTP) Kubernetes API server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from kubernetes_support import (
    NS,
    PODS,
    POOL,
    POOLS,
    FakeApiServer,
    pod,
    pool,
    serve_fake_api,
)
from picker_support import wait_until

from inferplane.picker.discovery import EndpointSource
from inferplane.picker.endpoints import Datastore
from inferplane.picker.kubernetes.client import KubeClient
from inferplane.picker.kubernetes.cluster import ClusterConfig
from inferplane.picker.kubernetes.pool import PoolWatcher
from inferplane.picker.kubernetes.reflector import WatchSettings

FAST = WatchSettings(watch_timeout=30, backoff_initial=0.02, backoff_max=0.1)


@dataclass
class Picker:
    """What the picker sees: its datastore (fed through EndpointSource) and every change it was told of."""

    api: FakeApiServer
    datastore: Datastore
    watcher: PoolWatcher
    changes: list[list[str]]

    def addresses(self) -> list[str]:
        return sorted(ep.address for ep in self.datastore.all())

    async def settle(self, expected: list[str]) -> None:
        await wait_until(lambda: self.addresses() == sorted(expected), limit=5)


@contextlib.asynccontextmanager
async def picker(api: FakeApiServer, settings: WatchSettings = FAST) -> AsyncIterator[Picker]:
    datastore = Datastore()
    removed: list[list[str]] = []
    source = EndpointSource(datastore, ["10.9.9.9:8000"], on_change=removed.append)
    client = KubeClient(ClusterConfig(server=api.url, token=api.token))
    watcher = PoolWatcher(client, NS, POOL, source.set_discovered, settings)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.synced.wait(), 5)
        yield Picker(api, datastore, watcher, removed)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with serve_fake_api(bookmark_interval=0.1) as server:
        yield server


STATIC = "10.9.9.9:8000"  # the static list still applies next to the discovered pods


async def test_ready_pods_become_endpoints_and_leave_when_unready_terminating_or_deleted(api):
    api.apply(POOLS, pool({"app": "vllm"}, [8000]))
    api.apply(PODS, pod("a", "10.0.0.1"))
    api.apply(PODS, pod("b", "10.0.0.2", ready=False))
    api.apply(PODS, pod("c", None))  # pending: no IP yet
    api.apply(PODS, pod("other", "10.0.0.9", labels={"app": "web"}))
    async with picker(api) as p:
        await p.settle([STATIC, "10.0.0.1:8000"])

        api.apply(PODS, pod("b", "10.0.0.2", ready=True))
        api.apply(PODS, pod("c", "10.0.0.3"))
        await p.settle([STATIC, "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"])

        api.apply(PODS, pod("a", "10.0.0.1", ready=False))
        await p.settle([STATIC, "10.0.0.2:8000", "10.0.0.3:8000"])
        assert ["10.0.0.1:8000"] in p.changes  # the scheduler is told which endpoints left

        api.apply(PODS, pod("b", "10.0.0.2", terminating=True))
        api.delete(PODS, "c")
        await p.settle([STATIC])


async def test_every_ready_pod_times_every_target_port(api):
    api.apply(POOLS, pool({"app": "vllm"}, [8000, 8001, 8002]))
    api.apply(PODS, pod("a", "10.0.0.1"))
    api.apply(PODS, pod("b", "fd00::2"))
    async with picker(api) as p:
        await p.settle([STATIC] + [f"10.0.0.1:{port}" for port in (8000, 8001, 8002)]
                       + [f"[fd00::2]:{port}" for port in (8000, 8001, 8002)])

        api.apply(POOLS, pool({"app": "vllm"}, [9000]))  # targetPorts edited: same pods, new ports
        await p.settle([STATIC, "10.0.0.1:9000", "[fd00::2]:9000"])


async def test_pool_selector_change_switches_to_the_newly_selected_pods(api):
    api.apply(POOLS, pool({"app": "vllm", "model": "qwen"}, [8000]))
    api.apply(PODS, pod("old", "10.0.0.1", labels={"app": "vllm", "model": "qwen"}))
    api.apply(PODS, pod("new", "10.0.0.2", labels={"app": "vllm", "model": "qwen3"}))
    async with picker(api) as p:
        await p.settle([STATIC, "10.0.0.1:8000"])

        api.apply(POOLS, pool({"app": "vllm", "model": "qwen3"}, [8000]))
        await p.settle([STATIC, "10.0.0.2:8000"])
        listed = [q["labelSelector"] for kind, path, q in api.requests if path == PODS and kind == "list"]
        assert listed == ["app=vllm,model=qwen", "app=vllm,model=qwen3"]  # filtered by the API server

        # relabelling a pod moves it in or out of the pool (the server sends ADDED / DELETED)
        api.apply(PODS, pod("old", "10.0.0.1", labels={"app": "vllm", "model": "qwen3"}))
        await p.settle([STATIC, "10.0.0.1:8000", "10.0.0.2:8000"])
        api.apply(PODS, pod("new", "10.0.0.2", labels={"app": "vllm"}))
        await p.settle([STATIC, "10.0.0.1:8000"])


async def test_missing_then_created_then_deleted_pool(api):
    api.apply(PODS, pod("a", "10.0.0.1"))
    async with picker(api) as p:
        assert p.addresses() == [STATIC]  # no pool yet: synced, nothing discovered
        api.apply(POOLS, pool({"app": "vllm"}, [8000]))
        await p.settle([STATIC, "10.0.0.1:8000"])
        api.delete(POOLS, POOL)
        await p.settle([STATIC])


async def test_dropped_watch_reconnects_from_its_resource_version_without_losing_events(api):
    api.apply(POOLS, pool({"app": "vllm"}, [8000]))
    api.apply(PODS, pod("a", "10.0.0.1"))
    async with picker(api) as p:
        await p.settle([STATIC, "10.0.0.1:8000"])
        await wait_until(lambda: api.open_watches == 2)
        lists_before = p.watcher.pod_reflector.lists

        api.drop_watches()
        before = api.rv
        # changes while no watch is open: the resumed watch must replay them
        api.apply(PODS, pod("b", "10.0.0.2"))
        api.apply(PODS, pod("a", "10.0.0.1", ready=False))
        await p.settle([STATIC, "10.0.0.2:8000"])
        assert p.watcher.pod_reflector.lists == lists_before  # resumed, not relisted
        resumed = [q for kind, path, q in api.requests if kind == "watch" and path == PODS]
        assert len(resumed) == 2 and int(resumed[1]["resourceVersion"]) <= before  # replayed from its version


@pytest.mark.parametrize("gone_as_status", [False, True], ids=["error-event", "http-410"])
async def test_410_gone_relists_and_forgets_what_was_deleted_meanwhile(gone_as_status):
    async with serve_fake_api(gone_as_status=gone_as_status) as api:
        api.apply(POOLS, pool({"app": "vllm"}, [8000]))
        api.apply(PODS, pod("a", "10.0.0.1"))
        api.apply(PODS, pod("b", "10.0.0.2"))
        async with picker(api, WatchSettings(watch_timeout=1, backoff_initial=0.02, backoff_max=0.1)) as p:
            await p.settle([STATIC, "10.0.0.1:8000", "10.0.0.2:8000"])
            await wait_until(lambda: api.open_watches == 2)
            api.bookmark_interval = 3600  # no bookmark will refresh the watchers' resourceVersion
            api.drop_watches()
            api.delete(PODS, "a")
            api.apply(PODS, pod("c", "10.0.0.3"))
            api.compact()  # the history those watchers would resume from is gone

            await p.settle([STATIC, "10.0.0.2:8000", "10.0.0.3:8000"])
            assert p.watcher.pod_reflector.lists == 2
            await wait_until(lambda: p.watcher.pool_reflector.lists == 2)  # the pool's watch relists too
            await asyncio.sleep(0.2)
            assert (p.watcher.pod_reflector.lists, p.watcher.pool_reflector.lists) == (2, 2)  # once each


async def test_bookmarks_keep_a_quiet_watch_resumable_after_compaction(api):
    api.apply(POOLS, pool({"app": "vllm"}, [8000]))
    api.apply(PODS, pod("a", "10.0.0.1"))
    async with picker(api) as p:
        await p.settle([STATIC, "10.0.0.1:8000"])
        for i in range(5):  # other pods' churn: invisible to the pool's watch except through bookmarks
            api.apply(PODS, pod(f"web-{i}", f"10.1.0.{i}", labels={"app": "web"}))
        start = int(p.watcher.pod_reflector.resource_version)
        await wait_until(lambda: int(p.watcher.pod_reflector.resource_version) >= api.rv, limit=5)
        assert int(p.watcher.pod_reflector.resource_version) > start
        api.compact()
        api.drop_watches()
        api.apply(PODS, pod("b", "10.0.0.2"))
        await p.settle([STATIC, "10.0.0.1:8000", "10.0.0.2:8000"])
        assert p.watcher.pod_reflector.lists == 1  # resumed from the bookmark: no relist needed


async def test_api_errors_are_retried_with_backoff_until_the_server_answers(api):
    api.apply(POOLS, pool({"app": "vllm"}, [8000]))
    api.apply(PODS, pod("a", "10.0.0.1"))
    good = api.token
    api.token = "rotated-elsewhere"  # every request now gets 401
    datastore = Datastore()
    source = EndpointSource(datastore, [])
    client = KubeClient(ClusterConfig(server=api.url, token=good))
    watcher = PoolWatcher(client, NS, POOL, source.set_discovered, FAST)
    task = asyncio.create_task(watcher.run())
    try:
        await wait_until(lambda: len(api.auth_headers) >= 3)
        assert len(datastore) == 0 and not watcher.synced.is_set()
        api.token = good
        await asyncio.wait_for(watcher.synced.wait(), 5)
        await wait_until(lambda: [ep.address for ep in datastore.all()] == ["10.0.0.1:8000"])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
