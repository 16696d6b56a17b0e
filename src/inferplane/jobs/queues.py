"""What the async processor needs from a queue (Redis Streams, Pub/Sub)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from inferplane.jobs.message import Result


@dataclass
class Delivery:
    """One received message: its queue handle, raw JSON and how many times it has been delivered."""

    handle: str
    raw: bytes
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Backlog:
    waiting: int | None  # not yet delivered to any consumer
    pending: int | None  # delivered, not acknowledged
    oldest_age_s: float | None


class Queue(Protocol):
    async def setup(self) -> None: ...
    async def receive(self, count: int, block_s: float) -> list[Delivery]: ...
    async def reclaim(self, count: int) -> list[Delivery]: ...
    async def heartbeat(self, deliveries: list[Delivery]) -> None: ...
    async def complete(self, delivery: Delivery, result: Result) -> bool: ...
    async def dead_letter(self, delivery: Delivery, reason: str) -> None: ...
    async def backlog(self) -> Backlog: ...
    async def close(self) -> None: ...
