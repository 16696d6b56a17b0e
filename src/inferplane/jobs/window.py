"""An AIMD window on filler requests in flight, driven by the pool's queue at the model servers.

The window grows by one every poll while nothing waits at the servers, and shrinks by a factor as
soon as requests queue there: filler traffic fills the spare slots but backs off before real-time
requests would have to wait behind it.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from prometheus_client.parser import text_string_to_metric_families

from inferplane.jobs.gate import AVG_QUEUE


def average_queue(text: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == AVG_QUEUE:
                return float(sample.value)
    return None


class AdaptiveWindow:
    def __init__(self, metrics_url: str, max_window: int, min_window: int = 1, poll_s: float = 0.1,
                 target_queue: float = 0.0, decrease: float = 0.7) -> None:
        self.metrics_url = metrics_url
        self.max_window = max_window
        self.min_window = min_window
        self.poll_s = poll_s
        self.target_queue = target_queue
        self.decrease = decrease
        self.window = float(min_window)
        self.in_flight = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._client = httpx.AsyncClient(timeout=1.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                response = await self._client.get(self.metrics_url)
                queue = average_queue(response.text) if response.status_code == 200 else None
            except httpx.HTTPError:
                queue = None
            if queue is None or queue > self.target_queue:
                self.window = max(float(self.min_window), self.window * self.decrease)
            elif self.in_flight >= int(self.window):  # only grow a window that is in use
                self.window = min(float(self.max_window), self.window + 1)
            async with self._changed:
                self._changed.notify_all()
            await asyncio.sleep(self.poll_s)

    async def acquire(self) -> None:
        self.start()
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < int(self.window))
            self.in_flight += 1

    async def release(self) -> None:
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()
