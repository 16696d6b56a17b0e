"""Dynamic batching: merging, splitting, priorities, queue limits, timeouts, failures."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from inferplane.oip.batcher import Batcher
from inferplane.oip.config import DynamicBatching
from inferplane.oip.errors import ModelError, QueueTimeout, Unavailable


class Model:
    """Doubles ``x``; records each call's batch; can be held to let a queue build up."""

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        self.entered.set()
        self.gate.wait(30)
        self.calls.append(inputs["x"])
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": inputs["x"] * 2}


def make(model: Model, **batching) -> Batcher:
    config = DynamicBatching(**batching)
    batcher = Batcher(model, max_batch_size=16, batching=config, instance_count=1, name="t")
    batcher.start()
    return batcher


async def hold(model: Model, batcher: Batcher) -> asyncio.Task:
    """Occupy the only instance with one request, so later ones queue."""
    model.gate.clear()
    model.entered.clear()
    task = asyncio.create_task(batcher.infer({"x": np.array([[100.0]])}, ["y"]))
    await asyncio.to_thread(model.entered.wait, 30)
    return task


async def until_queued(batcher: Batcher, n: int) -> None:
    for _ in range(1000):
        if batcher.stats.queued >= n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never saw {n} queued requests")


async def test_concurrent_requests_merge_into_one_call_and_split_back() -> None:
    model = Model()
    batcher = make(model)
    first = await hold(model, batcher)
    tasks = [asyncio.create_task(batcher.infer({"x": np.array([[float(i)]] * (1 + i % 2))}, ["y"])) for i in range(6)]
    await until_queued(batcher, 6)
    model.gate.set()
    results = await asyncio.gather(*tasks)
    await first
    assert [len(c) for c in model.calls] == [1, 9]
    for i, result in enumerate(results):
        assert result["y"].tolist() == [[2.0 * i]] * (1 + i % 2)
    assert batcher.stats.executions == 2 and batcher.stats.inferences == 10
    await batcher.close()


async def test_batches_never_exceed_max_batch_size() -> None:
    model = Model()
    batcher = make(model)
    first = await hold(model, batcher)
    tasks = [asyncio.create_task(batcher.infer({"x": np.ones((5, 1))}, ["y"])) for _ in range(5)]
    await until_queued(batcher, 5)
    model.gate.set()
    await asyncio.gather(first, *tasks)
    assert all(len(c) <= 16 for c in model.calls)
    assert sum(len(c) for c in model.calls) == 26
    await batcher.close()


async def test_preferred_batch_size_is_used_when_more_is_queued() -> None:
    model = Model()
    batcher = make(model, preferred_batch_sizes=[4, 8])
    first = await hold(model, batcher)
    tasks = [asyncio.create_task(batcher.infer({"x": np.ones((1, 1))}, ["y"])) for _ in range(6)]
    await until_queued(batcher, 6)
    model.gate.set()
    await asyncio.gather(first, *tasks)
    assert [len(c) for c in model.calls] == [1, 4, 2]
    await batcher.close()


async def test_incompatible_shapes_are_not_merged() -> None:
    model = Model()
    batcher = make(model)
    first = await hold(model, batcher)
    a = asyncio.create_task(batcher.infer({"x": np.ones((1, 2))}, ["y"]))
    b = asyncio.create_task(batcher.infer({"x": np.ones((1, 3))}, ["y"]))
    await until_queued(batcher, 2)
    model.gate.set()
    ra, rb = await asyncio.gather(a, b)
    await first
    assert ra["y"].shape == (1, 2) and rb["y"].shape == (1, 3)
    assert len(model.calls) == 3
    await batcher.close()


async def test_higher_priority_runs_first() -> None:
    model = Model()
    batcher = make(model, priority_levels=2, default_priority_level=2, preferred_batch_sizes=[1])
    first = await hold(model, batcher)
    low = asyncio.create_task(batcher.infer({"x": np.array([[1.0]])}, ["y"], priority=2))
    await until_queued(batcher, 1)
    high = asyncio.create_task(batcher.infer({"x": np.array([[2.0]])}, ["y"], priority=1))
    await until_queued(batcher, 2)
    model.gate.set()
    await asyncio.gather(first, low, high)
    assert [c.tolist() for c in model.calls[1:]] == [[[2.0]], [[1.0]]]
    await batcher.close()


async def test_full_queue_rejects_at_once() -> None:
    model = Model()
    batcher = make(model, max_queue_size=2)
    first = await hold(model, batcher)
    queued = [asyncio.create_task(batcher.infer({"x": np.ones((1, 1))}, ["y"])) for _ in range(2)]
    await until_queued(batcher, 2)
    with pytest.raises(Unavailable, match="queue size"):
        await batcher.infer({"x": np.ones((1, 1))}, ["y"])
    model.gate.set()
    await asyncio.gather(first, *queued)
    await batcher.close()


async def test_request_waiting_past_its_timeout_fails_and_leaves_the_queue() -> None:
    model = Model()
    batcher = make(model)
    first = await hold(model, batcher)
    with pytest.raises(QueueTimeout):
        await batcher.infer({"x": np.ones((1, 1))}, ["y"], timeout_us=1000)
    assert batcher.stats.queued == 0
    model.gate.set()
    await first
    await batcher.close()


async def test_model_failure_fails_every_request_of_the_batch_only() -> None:
    model = Model()
    batcher = make(model)
    first = await hold(model, batcher)
    bad = asyncio.create_task(batcher.infer({"x": -np.ones((1, 1))}, ["y"]))
    also = asyncio.create_task(batcher.infer({"x": np.ones((1, 1))}, ["y"]))
    await until_queued(batcher, 2)
    model.gate.set()
    await first
    for task in (bad, also):
        with pytest.raises(ModelError, match="negative input"):
            await task
    assert (await batcher.infer({"x": np.ones((1, 1))}, ["y"]))["y"].tolist() == [[2.0]]
    await batcher.close()


async def test_without_dynamic_batching_each_request_runs_alone() -> None:
    model = Model()
    batcher = Batcher(model, max_batch_size=16, batching=None, instance_count=1, name="t")
    batcher.start()
    results = await asyncio.gather(*(batcher.infer({"x": np.ones((2, 1)) * i}, ["y"]) for i in range(4)))
    assert [len(c) for c in model.calls] == [2, 2, 2, 2]
    assert [r["y"][0, 0] for r in results] == [0.0, 2.0, 4.0, 6.0]
    await batcher.close()


async def test_close_fails_queued_requests() -> None:
    model = Model()
    batcher = make(model)
    first = await hold(model, batcher)
    queued = asyncio.create_task(batcher.infer({"x": np.ones((1, 1))}, ["y"]))
    await until_queued(batcher, 1)
    await batcher.close()
    with pytest.raises(Unavailable):
        await queued
    model.gate.set()
    first.cancel()


async def test_drain_lets_queued_requests_finish_and_refuses_new_ones() -> None:
    model = Model()
    batcher = make(model)
    first = await hold(model, batcher)
    queued = asyncio.create_task(batcher.infer({"x": np.ones((1, 1))}, ["y"]))
    await until_queued(batcher, 1)
    draining = asyncio.create_task(batcher.drain())
    await asyncio.sleep(0)
    with pytest.raises(Unavailable):
        await batcher.infer({"x": np.ones((1, 1))}, ["y"])
    model.gate.set()
    await draining
    assert (await queued)["y"].tolist() == [[2.0]]
    await first
