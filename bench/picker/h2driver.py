"""Replay a recorded Envoy ↔ picker conversation as raw HTTP/2 frames: a driver far cheaper than the picker.

``driver.py`` uses grpcio's client, which costs more CPU per request than the picker itself, so on a
2-core machine it, not the picker, sets the rate. This one writes the frames the way Envoy does
(one connection, many concurrent streams, one HEADERS and one DATA frame per message, windows
opened wide once) from bytes serialised in advance: per request it only patches a counter into the
body message and a stream id into the frame headers. Same output as ``driver.py``.

Run: ``python bench/picker/h2driver.py --target 127.0.0.1:9002 --conversation conv.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from capture import load
from driver import PLACEHOLDER

from inferplane.picker import http2

_HEADER = struct.Struct(">BHBBL")
_REQUEST_HEADERS = http2.encode_headers([
    (":method", "POST"), (":scheme", "http"), (":path", "/envoy.service.ext_proc.v3.ExternalProcessor/Process"),
    (":authority", "endpoint_picker"), ("content-type", "application/grpc"), ("te", "trailers"),
])


def _steps(conversation: list[tuple[str, bytes]]) -> list[tuple[bytes, int]]:
    """Each of Envoy's messages as a length-prefixed gRPC message, with the answers read after it."""
    steps: list[tuple[bytes, int]] = []
    for direction, raw in conversation:
        if direction == "in":
            steps.append((b"\x00" + len(raw).to_bytes(4, "big") + raw, 0))
        elif steps:
            steps[-1] = (steps[-1][0], steps[-1][1] + 1)
    return steps


class _Stream:
    __slots__ = ("answers", "buffer", "ended", "waiter")

    def __init__(self) -> None:
        self.answers = 0
        self.buffer = b""
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None


class H2Client(asyncio.Protocol):
    """One HTTP/2 connection; counts the gRPC messages and the end of each stream."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.buffer = bytearray()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        settings = struct.pack(">HL", http2.SETTINGS_INITIAL_WINDOW_SIZE, http2.MAX_WINDOW)
        transport.write(http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0, settings)  # type: ignore[attr-defined]
                        + http2.frame(http2.WINDOW_UPDATE, 0, 0, struct.pack(">L", http2.MAX_WINDOW - 65535)))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        for stream in self.streams.values():
            stream.ended = True
            self._wake(stream)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos, size = 0, len(buffer)
        while size - pos >= 9:
            hi, lo, kind, flags, stream_id = _HEADER.unpack_from(buffer, pos)
            end = pos + 9 + (hi << 16 | lo)
            if end > size:
                break
            payload = bytes(buffer[pos + 9 : end])
            pos = end
            stream = self.streams.get(stream_id)
            if kind == http2.DATA and stream is not None:
                data = stream.buffer + payload
                while len(data) >= 5 and len(data) - 5 >= int.from_bytes(data[1:5], "big"):
                    data = data[5 + int.from_bytes(data[1:5], "big"):]
                    stream.answers += 1
                stream.buffer = data
            elif kind == http2.SETTINGS and not flags & http2.ACK:
                self.transport.write(http2.frame(http2.SETTINGS, http2.ACK, 0))  # type: ignore[union-attr]
            elif kind == http2.PING and not flags & http2.ACK:
                self.transport.write(http2.frame(http2.PING, http2.ACK, 0, payload))  # type: ignore[union-attr]
            if stream is not None and (flags & http2.END_STREAM and kind in (http2.DATA, http2.HEADERS)
                                       or kind == http2.RST_STREAM):
                stream.ended = True
            if stream is not None:
                self._wake(stream)
        del buffer[:pos]

    @staticmethod
    def _wake(stream: _Stream) -> None:
        if stream.waiter is not None and not stream.waiter.done():
            stream.waiter.set_result(None)

    async def until(self, stream: _Stream, answers: int) -> None:
        while stream.answers < answers and not stream.ended:
            stream.waiter = asyncio.get_running_loop().create_future()
            await stream.waiter


async def replay(target: str, steps: list[tuple[bytes, int]], concurrency: int, seconds: float) -> dict:
    host, _, port = target.rpartition(":")
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(H2Client, host, int(port))
    assert isinstance(client, H2Client)
    latencies: list[float] = []
    errors = 0
    next_id = 1
    counter = 0
    stop = time.monotonic() + seconds

    async def one(i: int) -> None:
        nonlocal next_id, errors
        stream_id, next_id = next_id, next_id + 2
        stream = client.streams[stream_id] = _Stream()
        write = client.transport.write  # type: ignore[union-attr]
        started = time.perf_counter()
        write(http2.frame(http2.HEADERS, http2.END_HEADERS, stream_id, _REQUEST_HEADERS))
        expected = 0
        routed = False
        for message, reads in steps:
            if PLACEHOLDER in message:
                message = message.replace(PLACEHOLDER, b"request %06d" % (i % 1_000_000))
            write(http2.frame(http2.DATA, 0, stream_id, message))
            if not reads:
                continue
            expected += reads
            await client.until(stream, expected)
            if stream.answers < expected:
                errors += 1  # the stream ended before all the answers came
                break
            if not routed:  # the first answers carry the routing decision
                routed = True
                latencies.append(time.perf_counter() - started)
        if not stream.ended:
            write(http2.frame(http2.DATA, http2.END_STREAM, stream_id))
            while not stream.ended:
                stream.waiter = loop.create_future()
                await stream.waiter
        del client.streams[stream_id]

    async def worker() -> None:
        nonlocal counter, errors
        while time.monotonic() < stop and not client.lost.done():
            counter += 1
            try:  # a stream still open 10 s after the end counts as failed
                await asyncio.wait_for(one(counter), stop + 10 - time.monotonic())
            except TimeoutError:
                errors += 1
                return

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    client.transport.close()  # type: ignore[union-attr]
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e3, 3) if ordered else None

    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "rps": round(len(latencies) / elapsed, 1), "routing_ms_p50": pct(0.5), "routing_ms_p99": pct(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="the picker's ext_proc address host:port")
    parser.add_argument("--conversation", type=Path, required=True, help="capture.py's recording")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    steps = _steps(load(args.conversation))
    try:
        import uvloop
        result = uvloop.run(replay(args.target, steps, args.concurrency, args.seconds))
    except ImportError:
        result = asyncio.run(replay(args.target, steps, args.concurrency, args.seconds))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
