"""Record the exact ext_proc conversation between Envoy and the picker, for the replay driver.

A recording proxy stands where Envoy expects the picker: every message Envoy sends is forwarded
to the real picker and every answer back, and both are logged in the order they crossed.
The log of one whole request (a list of ``("in" | "out", serialized message)``) is what
``driver.py`` replays, so the picker alone sees the same message sequence, byte for byte, as
behind Envoy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

Conversation = list[tuple[str, bytes]]


class RecordingProxy(pb_grpc.ExternalProcessorServicer):
    """Forwards ext_proc streams to ``target`` and keeps each finished stream's conversation."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.conversations: list[Conversation] = []
        self._channel: grpc.aio.Channel | None = None

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ProcessingResponse]:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        call = pb_grpc.ExternalProcessorStub(self._channel).Process()
        log: Conversation = []

        async def forward() -> None:
            async for message in request_iterator:
                log.append(("in", message.SerializeToString()))
                await call.write(message)
            await call.done_writing()

        pump = asyncio.create_task(forward())
        try:
            async for response in call:
                log.append(("out", response.SerializeToString()))
                yield response
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await pump
            self.conversations.append(log)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


def save(conversation: Conversation, path: Path) -> None:
    path.write_text(json.dumps([[d, base64.b64encode(m).decode()] for d, m in conversation], indent=1))


def load(path: Path) -> Conversation:
    return [(d, base64.b64decode(m)) for d, m in json.loads(path.read_text())]


def describe(conversation: Conversation) -> list[str]:
    """The message kinds in order, e.g. ``in request_headers``, ``out request_headers`` (for the report)."""
    kinds = []
    for direction, raw in conversation:
        message = pb.ProcessingRequest() if direction == "in" else pb.ProcessingResponse()
        message.ParseFromString(raw)
        field = message.WhichOneof("request" if direction == "in" else "response")
        kinds.append(f"{direction} {field}")
    return kinds
