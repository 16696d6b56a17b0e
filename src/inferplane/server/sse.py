"""Server-sent events and client-disconnect handling, as plain ASGI.

:class:`EventStream` sends each chunk as soon as it is produced and, while it waits for the next
one, watches for ``http.disconnect``: a client that goes away mid-stream (even during a long
prefill) closes the chunk iterator at once, which aborts the engine request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from starlette.types import Receive, Scope, Send

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"


# Characters that JSON allows raw inside strings but that line splitters such as Python's
# ``str.splitlines`` (httpx's ``iter_lines`` among them) treat as line breaks: escape them, as
# ``json.dumps`` does, so every event stays on one line for every client.
_LINE_BREAKING = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def sse_event(payload: bytes) -> bytes:
    for raw, escaped in _LINE_BREAKING:
        if raw in payload:
            payload = payload.replace(raw, escaped)
    return b"data: " + payload + b"\n\n"


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


async def until_disconnect(work: Awaitable[T], receive: Receive) -> T:
    """Run ``work``; cancel it (and raise :class:`ClientDisconnected`) if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ClientDisconnected()
    return task.result()


class EventStream:
    """A ``text/event-stream`` response fed by an async iterator of already-framed chunks."""

    def __init__(self, chunks: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> None:
        self._chunks = chunks
        self._headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        for name, value in (headers or {}).items():
            self._headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})

        async def pump() -> None:
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        pumping = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({pumping, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not pumping.done():
                pumping.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await pumping
            close: Any = getattr(self._chunks, "aclose", None)
            if close is not None:
                await close()
        if pumping.done() and not pumping.cancelled():
            error = pumping.exception()
            if error is not None and not isinstance(error, OSError):
                raise error
