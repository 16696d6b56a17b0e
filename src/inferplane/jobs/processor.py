"""The async processor: queue → gate → gateway (sheddable) → result, with deadlines and dead letters."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from inferplane.jobs.gate import SaturationGate
from inferplane.jobs.message import DEADLINE_EXCEEDED, Message, Result
from inferplane.jobs.queues import Delivery, Queue
from inferplane.jobs.sender import DeadlineReached, Sender

log = logging.getLogger("inferplane.jobs.processor")


class ProcessorMetrics:
    """What an autoscaler reads: backlog, age of the oldest message, in flight, results by outcome."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.backlog = Gauge("inferplane_async_backlog_messages", "Messages not yet delivered to a consumer.", registry=r)
        self.pending = Gauge("inferplane_async_pending_messages", "Messages delivered but not acknowledged.", registry=r)
        self.oldest = Gauge("inferplane_async_oldest_message_age_seconds", "Age of the oldest unfinished message.", registry=r)
        self.in_flight = Gauge("inferplane_async_in_flight_messages", "Messages this worker is processing.", registry=r)
        self.gate_open = Gauge("inferplane_async_gate_open", "1 while the spare-capacity gate is open.", registry=r)
        self.results = Counter("inferplane_async_results", "Messages finished, by outcome.", ("outcome",), registry=r)
        self.retries = Counter("inferplane_async_retries", "Sends retried, by reason (429, 503, errors).", ("reason",),
                               registry=r)


class Processor:
    """Reads deliveries, runs up to ``max_in_flight`` at once, writes one result per message."""

    def __init__(self, queue: Queue, sender: Sender, gate: SaturationGate, *, max_in_flight: int = 32,
                 max_attempts: int = 10, claim_every_s: float = 5.0, metrics: ProcessorMetrics | None = None) -> None:
        self.queue = queue
        self.sender = sender
        self.gate = gate
        self.max_in_flight = max_in_flight
        self.max_attempts = max_attempts
        self.claim_every_s = claim_every_s
        self.metrics = metrics or ProcessorMetrics()
        self._held: dict[str, Delivery] = {}
        self._tasks: set[asyncio.Task] = set()
        sender._on_retry = lambda reason: self.metrics.retries.labels(reason).inc()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await self.queue.setup()
        housekeeping = asyncio.create_task(self._housekeeping(stop))
        last_claim = 0.0
        try:
            while not stop.is_set():
                room = self.max_in_flight - len(self._tasks)
                if room <= 0:
                    await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED, timeout=1.0)
                    continue
                await self.gate.wait_open()
                deliveries: list[Delivery] = []
                if time.monotonic() - last_claim >= self.claim_every_s:
                    deliveries = await self.queue.reclaim(room)
                    last_claim = time.monotonic()
                deliveries = [d for d in deliveries if d.handle not in self._held]
                if not deliveries:
                    deliveries = await self.queue.receive(room, block_s=1.0)
                for delivery in deliveries:
                    self._start(delivery)
        finally:
            housekeeping.cancel()
            await asyncio.gather(housekeeping, *self._tasks, return_exceptions=True)

    async def drain(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, delivery: Delivery) -> None:
        self._held[delivery.handle] = delivery
        task = asyncio.create_task(self._handle(delivery))
        self._tasks.add(task)
        self.metrics.in_flight.set(len(self._tasks))

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            self._held.pop(delivery.handle, None)
            self.metrics.in_flight.set(len(self._tasks))

        task.add_done_callback(done)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.queue.heartbeat(list(self._held.values()))
                backlog = await self.queue.backlog()
                if backlog.waiting is not None:
                    self.metrics.backlog.set(backlog.waiting)
                if backlog.pending is not None:
                    self.metrics.pending.set(backlog.pending)
                if backlog.oldest_age_s is not None:
                    self.metrics.oldest.set(backlog.oldest_age_s)
                self.metrics.gate_open.set(1 if self.gate.is_open else 0)
            except Exception:
                log.exception("async housekeeping failed")
            await asyncio.sleep(1.0)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            await self._process(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:  # the queue is unreachable: leave it pending, it will be re-delivered
            log.exception("message %s: processing failed; it stays pending", delivery.handle)

    async def _process(self, delivery: Delivery) -> None:
        try:
            message = Message.model_validate_json(delivery.raw)
        except ValidationError as exc:
            await self.queue.dead_letter(delivery, f"invalid message: {exc.errors()[0]['msg']}")
            self.metrics.results.labels("invalid").inc()
            return
        if delivery.attempts > self.max_attempts:
            await self.queue.dead_letter(delivery, f"delivered {delivery.attempts} times (max {self.max_attempts})")
            self.metrics.results.labels("dead_letter").inc()
            return
        if message.deadline is not None and time.time() >= message.deadline:
            await self._finish(delivery, Result(id=message.id, status_code=504, error=DEADLINE_EXCEEDED), "deadline_exceeded")
            return
        failures = 0
        while True:
            try:
                outcome = await self.sender.send(
                    message.url, message.payload, deadline=message.deadline, gate=self.gate.wait_open,
                    objective=message.metadata.get("objective"), fairness_id=message.metadata.get("fairness_id"))
            except DeadlineReached:
                await self._finish(delivery, Result(id=message.id, status_code=504, error=DEADLINE_EXCEEDED),
                                   "deadline_exceeded")
                return
            if outcome.status_code < 500:
                break
            failures += 1  # a server error: counts as an attempt
            if delivery.attempts + failures >= self.max_attempts:
                await self.queue.dead_letter(delivery, f"status {outcome.status_code} after {delivery.attempts + failures} attempts")
                self.metrics.results.labels("dead_letter").inc()
                return
            await asyncio.sleep(min(self.sender.config.backoff_max_s, self.sender.config.backoff_base_s * 2 ** (failures - 1)))
        error = None if outcome.status_code < 400 else _error_message(outcome.body)
        outcome_label = "success" if outcome.status_code < 400 else "client_error"
        await self._finish(delivery, Result(id=message.id, status_code=outcome.status_code, payload=outcome.body,
                                            error=error), outcome_label)

    async def _finish(self, delivery: Delivery, result: Result, outcome: str) -> None:
        written = await self.queue.complete(delivery, result)
        self.metrics.results.labels(outcome if written else "duplicate_suppressed").inc()


def _error_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or body["error"])
    return str(body)[:500]
