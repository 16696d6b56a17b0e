"""Polls the sources on an interval and keeps the newest view plus the chart history."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from inferplane.console.config import ConsoleConfig
from inferplane.console.history import History, Rates, sample
from inferplane.console.sources import Reading, Sources

log = logging.getLogger(__name__)


class Collector:
    """The console's model: ``snapshot()`` is what the page renders."""

    def __init__(self, config: ConsoleConfig, sources: Sources | None = None) -> None:
        self.config = config
        self.sources = sources or Sources(config)
        self.history = History(config.samples)
        self.rates = Rates()
        self.readings: dict[str, Reading] = {}
        self.updated_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def poll(self) -> None:
        """Read every source once and add a sample to the history."""
        names = ("state", "decisions", "batches", "gateway")
        results = await asyncio.gather(self.sources.picker_state(), self.sources.decisions(),
                                       self.sources.batches(), self.sources.gateway())
        self.readings = dict(zip(names, results))
        now = time.time()
        state = self.readings["state"].data
        decisions_total = (self.readings["decisions"].data or {}).get("total")
        self.history.add(sample(now, state, self.readings["gateway"].data, self.rates, decisions_total))
        self.updated_at = now

    async def run(self) -> None:
        """Poll forever, every ``poll_interval_s`` (a failing poll is logged, never fatal)."""
        while True:
            started = time.monotonic()
            try:
                await self.poll()
            except Exception:  # the console must outlive any bad answer
                log.exception("console poll failed")
            await asyncio.sleep(max(0.0, self.config.poll_interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="console poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.sources.aclose()

    def snapshot(self, since: float = 0.0) -> dict[str, Any]:
        """The newest readings, each source's health, and the history samples newer than ``since``."""
        config = self.config
        readings = self.readings
        sources = {
            "picker": _health(readings.get("state"), config.picker_url),
            "batch": _health(readings.get("batches"), config.batch_url),
            "gateway": _health(readings.get("gateway"), config.envoy_admin_url),
        }
        point = self.history.last() or {}
        return {
            "time": self.updated_at,
            "poll_interval_s": config.poll_interval_s,
            "history_s": config.history_s,
            "sources": sources,
            "state": _data(readings.get("state")),
            "decisions": (_data(readings.get("decisions")) or {}).get("decisions", []),
            "batches": _data(readings.get("batches")) or [],
            "gateway": {
                "counters": _data(readings.get("gateway")) or {},
                "rps": point.get("rps"),
                "gateway_rps": point.get("gateway_rps"),
                "errors_ps": point.get("errors_ps"),
                "decisions_ps": point.get("decisions_ps"),
            },
            "history": self.history.since(since),
        }


def _data(reading: Reading | None) -> Any:
    return reading.data if reading is not None and reading.ok else None


def _health(reading: Reading | None, url: str | None) -> dict[str, Any]:
    if url is None:
        return {"url": None, "ok": False, "error": "not configured"}
    if reading is None:
        return {"url": url, "ok": False, "error": "not read yet"}
    return {"url": url, "ok": reading.ok, "error": reading.error}
