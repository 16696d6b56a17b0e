"""InferenceObjectives and InferenceModelRewrites of the pool reach the picker as plain data."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_support import (
    NS,
    OBJECTIVES,
    POOL,
    REWRITES,
    FakeApiServer,
    objective,
    rewrite,
    serve_fake_api,
)
from picker_support import wait_until

from inferplane.picker.kubernetes.client import KubeClient
from inferplane.picker.kubernetes.cluster import ClusterConfig
from inferplane.picker.kubernetes.objectives import objective_watcher, rewrite_watcher
from inferplane.picker.kubernetes.reflector import WatchSettings

FAST = WatchSettings(watch_timeout=30, backoff_initial=0.02, backoff_max=0.1)

CANARY = {
    "matches": [{"model": {"type": "Exact", "value": "qwen"}}],
    "targets": [{"modelRewrite": "qwen-v1", "weight": 90}, {"modelRewrite": "qwen-v2", "weight": 10}],
}
FALLBACK = {"matches": [], "targets": [{"modelRewrite": "Qwen/Qwen3-32B"}]}


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with serve_fake_api(bookmark_interval=0.1) as server:
        yield server


@contextlib.asynccontextmanager
async def watching(api: FakeApiServer) -> AsyncIterator[tuple[list[dict[str, int]], list[list[dict[str, Any]]]]]:
    objectives: list[dict[str, int]] = []
    rewrites: list[list[dict[str, Any]]] = []
    client = KubeClient(ClusterConfig(server=api.url, token=api.token))
    watchers = [objective_watcher(client, NS, POOL, objectives.append, FAST),
                rewrite_watcher(client, NS, POOL, rewrites.append, FAST)]
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    try:
        yield objectives, rewrites
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await client.aclose()


async def test_objective_priorities_of_this_pool_are_delivered_and_follow_edits(api):
    api.apply(OBJECTIVES, objective("interactive", 10))
    api.apply(OBJECTIVES, objective("batch", -1))
    api.apply(OBJECTIVES, objective("default-priority", None))
    api.apply(OBJECTIVES, objective("elsewhere", 50, pool_name="other-pool"))
    async with watching(api) as (objectives, _):
        await wait_until(lambda: len(objectives) == 1)
        assert objectives[0] == {"interactive": 10, "batch": -1, "default-priority": 0}

        api.apply(OBJECTIVES, objective("batch", -5))
        await wait_until(lambda: objectives[-1].get("batch") == -5)
        api.delete(OBJECTIVES, "interactive")
        await wait_until(lambda: "interactive" not in objectives[-1])
        assert objectives[-1] == {"batch": -5, "default-priority": 0}

        count = len(objectives)
        api.apply(OBJECTIVES, objective("elsewhere", 60, pool_name="other-pool"))  # not ours: no callback
        api.apply(OBJECTIVES, objective("batch", -5))  # no effective change: no callback
        api.apply(OBJECTIVES, objective("probe", 1))
        await wait_until(lambda: "probe" in objectives[-1])
        assert len(objectives) == count + 1


async def test_rewrite_rules_are_delivered_verbatim_oldest_resource_first(api):
    api.apply(REWRITES, rewrite("qwen-canary", [CANARY]))
    api.apply(REWRITES, rewrite("fallback", [FALLBACK]))
    api.apply(REWRITES, rewrite("not-ours", [CANARY], pool_name="other-pool"))
    async with watching(api) as (_, rewrites):
        await wait_until(lambda: len(rewrites) == 1)
        assert rewrites[0] == [CANARY, FALLBACK]  # the CRD's spec.rules[] shape, untouched

        shifted = {**CANARY, "targets": [{"modelRewrite": "qwen-v1", "weight": 50},
                                         {"modelRewrite": "qwen-v2", "weight": 50}]}
        api.apply(REWRITES, rewrite("qwen-canary", [shifted]))  # canary moves to 50/50
        await wait_until(lambda: rewrites[-1] == [shifted, FALLBACK])
        api.delete(REWRITES, "qwen-canary")
        await wait_until(lambda: rewrites[-1] == [FALLBACK])


async def test_empty_collections_are_reported_once_so_the_picker_knows_there_are_none(api):
    async with watching(api) as (objectives, rewrites):
        await wait_until(lambda: objectives == [{}] and rewrites == [[]])


async def test_crds_not_installed_yet_are_retried_until_they_appear(api):
    api.missing = {"inferenceobjectives", "inferencemodelrewrites"}
    async with watching(api) as (objectives, rewrites):
        await wait_until(lambda: sum(1 for h in api.auth_headers) >= 4)
        assert objectives == [] and rewrites == []
        api.missing = set()
        api.apply(OBJECTIVES, objective("batch", -1))
        await wait_until(lambda: objectives == [{"batch": -1}] and rewrites == [[]])


async def test_a_failing_consumer_does_not_stop_the_watch(api):
    delivered: list[dict[str, int]] = []

    def consumer(objectives: dict[str, int]) -> None:
        delivered.append(objectives)
        if len(delivered) == 1:
            raise RuntimeError("consumer bug")

    client = KubeClient(ClusterConfig(server=api.url, token=api.token))
    task = asyncio.create_task(objective_watcher(client, NS, POOL, consumer, FAST).run())
    try:
        await wait_until(lambda: delivered == [{}])
        api.apply(OBJECTIVES, objective("batch", -1))
        await wait_until(lambda: delivered == [{}, {"batch": -1}])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
