"""KV-cache events as vLLM publishes them: msgpack batches on a ZMQ PUB socket.

Wire format (vLLM ``vllm/distributed/kv_events.py``, msgspec structs with ``array_like=True``,
``tag=True``, ``omit_defaults=True``), one ZMQ multipart message per engine step with changes:
``[topic, sequence number (8 bytes big-endian), payload]`` where payload is
``[ts, [event, ...], data_parallel_rank]`` and an event is one of

- ``["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name]``
- ``["BlockRemoved", block_hashes, medium]``
- ``["AllBlocksCleared"]``

Block hashes are the unsigned 64-bit chain hashes of :func:`inferplane.sim.kv_cache.hash_block_tokens`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from inferplane.sim.kv_cache import CacheEvent

MEDIUM_GPU = "GPU"


def event_to_wire(event: CacheEvent, block_size: int) -> list[Any]:
    if event.kind == "stored":
        return [
            "BlockStored",
            event.block_hashes,
            event.parent_block_hash,
            event.token_ids,
            block_size,
            None,
            MEDIUM_GPU,
            event.lora_name,
        ]
    if event.kind == "removed":
        return ["BlockRemoved", event.block_hashes, MEDIUM_GPU]
    return ["AllBlocksCleared"]


def encode_event_batch(
    events: Sequence[CacheEvent], block_size: int, ts: float | None = None, data_parallel_rank: int = 0
) -> bytes:
    """One step's events as vLLM's msgpack ``KVEventBatch``."""
    import msgpack

    wire = [event_to_wire(event, block_size) for event in events]
    payload: bytes = msgpack.packb([time.time() if ts is None else ts, wire, data_parallel_rank])
    return payload


def decode_event_batch(payload: bytes) -> tuple[float, list[list[Any]], int | None]:
    """The inverse of :func:`encode_event_batch` (for tests and subscribers)."""
    import msgpack

    batch = msgpack.unpackb(payload)
    return batch[0], batch[1], batch[2] if len(batch) > 2 else None


def _binds(endpoint: str) -> bool:
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


class KVEventPublisher:
    """A ZMQ PUB socket sending one batch per step; never blocks the engine loop (messages
    beyond the high-water mark are dropped, as with any slow PUB/SUB subscriber)."""

    def __init__(self, endpoint: str, topic: str = "", block_size: int = 16, hwm: int = 100_000) -> None:
        import zmq

        self._zmq = zmq
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.set_hwm(hwm)
        if _binds(endpoint):
            self._socket.bind(endpoint)
        else:
            self._socket.connect(endpoint)
        self._topic = topic.encode()
        self._block_size = block_size
        self._sequence = 0
        self.dropped = 0

    def publish(self, events: Sequence[CacheEvent]) -> None:
        payload = encode_event_batch(events, self._block_size)
        message = (self._topic, self._sequence.to_bytes(8, "big"), payload)
        self._sequence += 1
        try:
            self._socket.send_multipart(message, flags=self._zmq.NOBLOCK)
        except self._zmq.Again:
            self.dropped += 1

    def close(self) -> None:
        self._socket.close(linger=0)
