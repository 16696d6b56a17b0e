"""Dynamic batching: requests from many clients queued per priority level and merged into one call.

One scheduler task per model version waits for a free instance, then for the first queued
request, then (up to ``max_queue_delay_microseconds``) for enough compatible requests to fill a
preferred batch size; the merged batch runs on a worker thread of a pool sized by
``instance_count`` so the event loop stays free. Requests whose non-batch shapes or datatypes
differ are never merged. Queue limits reject at once; timeouts fail a request that waits too long.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from inferplane.oip.config import DynamicBatching
from inferplane.oip.errors import (
    BadRequest,
    InferError,
    ModelError,
    QueueTimeout,
    Unavailable,
)

Predict = Callable[[dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]


@dataclass(eq=False)
class _Pending:
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    rows: int
    key: tuple
    level: int
    enqueued: float
    future: asyncio.Future = field(repr=False)


@dataclass
class BatchStats:
    """Counters read by ``/metrics`` and the statistics API."""

    queued: int = 0
    running: int = 0
    requests: int = 0
    failures: int = 0
    inferences: int = 0
    executions: int = 0
    queue_seconds: float = 0.0
    compute_seconds: float = 0.0


class Batcher:
    """Queues requests for one model version and runs them in merged batches."""

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch_size: int,
        batching: DynamicBatching | None,
        instance_count: int,
        name: str,
        observe: Callable[[float, int, float], None] | None = None,
    ) -> None:
        self._predict = predict
        self._max_batch = max(max_batch_size, 1)
        self._batching = batching if batching and batching.enabled and max_batch_size > 0 else None
        levels = self._batching.priority_levels if self._batching else 1
        self._queues: list[deque[_Pending]] = [deque() for _ in range(levels)]
        self._delay = (self._batching.max_queue_delay_microseconds / 1e6) if self._batching else 0.0
        preferred = sorted(self._batching.preferred_batch_sizes) if self._batching else []
        self._preferred = preferred
        self._target = preferred[-1] if preferred else self._max_batch
        self._slots = asyncio.Semaphore(instance_count)
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=instance_count, thread_name_prefix=f"oip-{name}")
        self._observe = observe
        self.stats = BatchStats()
        self._task: asyncio.Task | None = None
        self._closed = False

    def start(self) -> None:
        """Start the scheduler on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._schedule())

    async def drain(self, limit_s: float = 30.0) -> None:
        """Wait (at most ``limit_s``) until nothing is queued or computing, then close."""
        self._closed = True
        deadline = time.monotonic() + limit_s
        while (self.stats.queued or self.stats.running) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await self.close()

    async def close(self) -> None:
        """Stop scheduling, fail whatever is queued, and free the worker threads."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for queue in self._queues:
            while queue:
                item = queue.popleft()
                if not item.future.done():
                    item.future.set_exception(Unavailable("model is being unloaded"))
        self.stats.queued = 0
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def infer(
        self, inputs: dict[str, np.ndarray], outputs: list[str], *, priority: int = 0, timeout_us: int = 0
    ) -> dict[str, np.ndarray]:
        """Queue one request and wait for its slice of the batch result."""
        if self._closed:
            raise Unavailable("model is being unloaded")
        rows = self._rows(inputs)
        level = self._batching.level_of(priority) if self._batching else 1
        policy = self._batching.policy(level) if self._batching else None
        queue = self._queues[level - 1]
        if policy and policy.max_queue_size and len(queue) >= policy.max_queue_size:
            self.stats.failures += 1
            raise Unavailable("exceeds maximum queue size")
        timeout = (timeout_us or (policy.default_timeout_microseconds if policy else 0)) / 1e6
        key = tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items())) + (tuple(outputs),)
        item = _Pending(inputs, tuple(outputs), rows, key, level, time.perf_counter(), asyncio.get_running_loop().create_future())
        queue.append(item)
        self.stats.queued += 1
        self._wake.set()
        try:
            if timeout > 0:
                return await asyncio.wait_for(asyncio.shield(item.future), timeout)
            return await item.future
        except TimeoutError:
            if item not in self._queues[item.level - 1]:
                return await item.future  # already batched: the timeout covers queueing only
            self._drop(item)
            self.stats.failures += 1
            raise QueueTimeout("request timeout expired") from None
        except asyncio.CancelledError:
            self._drop(item)
            raise

    def _drop(self, item: _Pending) -> None:
        """Take a request that gave up out of its queue (if the scheduler has not taken it yet)."""
        queue = self._queues[item.level - 1]
        try:
            queue.remove(item)
            self.stats.queued -= 1
        except ValueError:
            pass
        if not item.future.done():
            item.future.cancel()

    def _rows(self, inputs: dict[str, np.ndarray]) -> int:
        if not self._batching:
            return 1
        counts = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
        if len(counts) != 1 or -1 in counts:
            raise BadRequest("all inputs must share the same batch (first) dimension")
        rows = counts.pop()
        if rows > self._max_batch:
            raise BadRequest(f"batch of {rows} exceeds the model's max_batch_size {self._max_batch}")
        return rows

    def _head(self) -> _Pending | None:
        for queue in self._queues:
            if queue:
                return queue[0]
        return None

    def _compatible_rows(self, key: tuple, limit: int) -> int:
        total = 0
        for queue in self._queues:
            for item in queue:
                if item.key == key:
                    total += item.rows
                    if total >= limit:
                        return total
        return total

    def _take(self, key: tuple) -> list[_Pending]:
        """The batch to run: compatible requests in priority then arrival order, up to a good size."""
        if not self._batching:
            for queue in self._queues:
                if queue:
                    self.stats.queued -= 1
                    return [queue.popleft()]
        available = self._compatible_rows(key, self._max_batch)
        limit = self._max_batch
        if self._preferred and available < self._max_batch:
            fitting = [p for p in self._preferred if p <= available]
            limit = fitting[-1] if fitting else available
        batch: list[_Pending] = []
        rows = 0
        for queue in self._queues:
            kept: deque[_Pending] = deque()
            while queue:
                item = queue.popleft()
                if item.key == key and (rows + item.rows <= limit or not batch):
                    batch.append(item)
                    rows += item.rows
                else:
                    kept.append(item)
            queue.extend(kept)
        self.stats.queued -= len(batch)
        return batch

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            head = self._head()
            while head is None:
                self._wake.clear()
                await self._wake.wait()
                head = self._head()
            if self._delay > 0:
                deadline = head.enqueued + self._delay
                while self._compatible_rows(head.key, self._target) < self._target:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    except TimeoutError:
                        break
                    if self._head() is None:
                        break
                head = self._head()
                if head is None:
                    self._slots.release()
                    continue
            batch = self._take(head.key)
            loop.create_task(self._run(batch))

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            live = [item for item in batch if not item.future.done()]
            if not live:
                return
            started = time.perf_counter()
            if self._batching and len(live) > 1:
                inputs = {name: np.concatenate([item.inputs[name] for item in live]) for name in live[0].inputs}
            else:
                inputs = live[0].inputs
            rows = sum(item.rows for item in live)
            self.stats.running += len(live)
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(self._pool, self._predict, inputs, list(live[0].outputs))
                error: BaseException | None = None
            except InferError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - a model failure becomes the requests' error
                error = ModelError(f"model failed: {type(exc).__name__}: {exc}")
            finally:
                self.stats.running -= len(live)
            compute = time.perf_counter() - started
            self.stats.executions += 1
            self.stats.compute_seconds += compute
            for item in live:
                wait = started - item.enqueued
                self.stats.queue_seconds += wait
                if self._observe:
                    self._observe(wait, rows, compute)
            if error is not None:
                self.stats.failures += len(live)
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
            self.stats.requests += len(live)
            self.stats.inferences += rows
            self._scatter(live, result)
        finally:
            self._slots.release()

    def _scatter(self, live: list[_Pending], result: dict[str, np.ndarray]) -> None:
        if not self._batching or len(live) == 1:
            if not live[0].future.done():
                live[0].future.set_result(result)
            return
        total = sum(item.rows for item in live)
        for name, value in result.items():
            if value.ndim == 0 or value.shape[0] != total:
                error = ModelError(f"output '{name}' has {value.shape[0] if value.ndim else 0} rows for a batch of {total}")
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
        offset = 0
        for item in live:
            part = {name: value[offset : offset + item.rows] for name, value in result.items()}
            offset += item.rows
            if not item.future.done():
                item.future.set_result(part)
