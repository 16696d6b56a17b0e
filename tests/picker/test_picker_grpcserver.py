"""The picker's HTTP/2 gRPC server, against grpcio's own client and against hand-made HTTP/2 frames."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from hpack import Decoder, Encoder

from inferplane.picker import http2
from inferplane.picker.grpcserver import GrpcServer

SERVICE = "test.Echo"


class EchoService:
    """Raw-bytes handlers (no (de)serializers): echo, fail, abort, and one that waits to be cancelled."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def echo(self, requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message[::-1]

    async def boom(self, request: bytes, context: object) -> bytes:
        raise ValueError("boom")

    async def deny(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no, ünïcode")
        return b""

    async def hang(self, requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        try:
            async for message in requests:
                yield message
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        yield b""  # pragma: no cover

    def register(self, server: GrpcServer) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Echo": grpc.stream_stream_rpc_method_handler(self.echo),
            "Boom": grpc.unary_unary_rpc_method_handler(self.boom),
            "Deny": grpc.unary_unary_rpc_method_handler(self.deny),
            "Hang": grpc.stream_stream_rpc_method_handler(self.hang),
        }),))


@pytest.fixture
async def served() -> AsyncIterator[tuple[EchoService, grpc.aio.Channel, int]]:
    service = EchoService()
    health = health_aio.HealthServicer()
    await health.set("readiness", health_pb2.HealthCheckResponse.SERVING)
    server = GrpcServer()
    service.register(server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    service.health = health  # type: ignore[attr-defined]
    try:
        yield service, channel, port
    finally:
        await channel.close()
        await server.stop(0)


async def test_bidi_stream_with_messages_larger_than_windows_and_frames(served) -> None:
    _, channel, _ = served
    call = channel.stream_stream(f"/{SERVICE}/Echo")()
    sizes = [0, 1, 70_000, 3 << 20, 5]
    for size in sizes:
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        await call.write(payload)
        assert await call.read() == payload[::-1]
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_many_concurrent_streams(served) -> None:
    _, channel, _ = served

    async def one(i: int) -> bytes:
        call = channel.stream_stream(f"/{SERVICE}/Echo")()
        await call.write(b"%d" % i)
        answer = await call.read()
        await call.done_writing()
        return answer

    answers = await asyncio.gather(*(one(i) for i in range(200)))
    assert answers == [(b"%d" % i)[::-1] for i in range(200)]


async def test_health_check_watch_and_unknown_service(served) -> None:
    service, channel, _ = served
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service="readiness"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND

    watch = stub.Watch(health_pb2.HealthCheckRequest(service="readiness"))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    await service.health.set("readiness", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()


async def test_errors_become_grpc_statuses(served) -> None:
    _, channel, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await channel.unary_unary(f"/{SERVICE}/Boom")(b"x")
    assert error.value.code() == grpc.StatusCode.UNKNOWN
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await channel.unary_unary(f"/{SERVICE}/Deny")(b"x")
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.value.details() == "no, ünïcode"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await channel.unary_unary(f"/{SERVICE}/Missing")(b"x")
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_client_cancel_cancels_the_handler(served) -> None:
    service, channel, _ = served
    call = channel.stream_stream(f"/{SERVICE}/Hang")()
    await call.write(b"hi")
    assert await call.read() == b"hi"
    call.cancel()
    await asyncio.wait_for(service.cancelled.wait(), 10)


async def test_stop_ends_open_calls() -> None:
    service = EchoService()
    server = GrpcServer()
    service.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(f"/{SERVICE}/Hang")()
        await call.write(b"hi")
        assert await call.read() == b"hi"
        await server.stop(0.05)
        assert service.cancelled.is_set()
        assert await call.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def test_port_taken_is_a_runtime_error() -> None:
    first = GrpcServer()
    port = first.add_insecure_port("127.0.0.1:0")
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
        GrpcServer().add_insecure_port(f"127.0.0.1:{port}")


# ---- raw HTTP/2: what grpcio's client never sends -------------------------------------------


class RawClient:
    """Frames written by hand; the server's frames read back one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.encoder, self.decoder = Encoder(), Decoder()

    async def send(self, kind: int, flags: int, stream: int, payload: bytes = b"") -> None:
        self.writer.write(http2.frame(kind, flags, stream, payload))
        await self.writer.drain()

    async def next_frame(self) -> tuple[int, int, int, bytes]:
        hi, lo, kind, flags, stream = struct.unpack(">BHBBL", await self.reader.readexactly(9))
        return kind, flags, stream, await self.reader.readexactly(hi << 16 | lo)

    async def frames_until(self, kind: int, stream: int) -> list[tuple[int, int, int, bytes]]:
        seen = []
        while True:
            frame = await asyncio.wait_for(self.next_frame(), 10)
            seen.append(frame)
            if frame[0] == kind and frame[2] == stream:
                return seen


async def test_raw_frames_continuation_padding_ping_and_header_cache(served) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = RawClient(reader, writer)
    writer.write(http2.PREFACE)
    await client.send(http2.SETTINGS, 0, 0)
    headers = [(":method", "POST"), (":scheme", "http"), (":path", f"/{SERVICE}/Echo"),
               (":authority", "picker"), ("content-type", "application/grpc"), ("te", "trailers")]
    for stream_id, extra in ((1, "one"), (3, "one"), (5, "two"), (7, "two")):
        # the same headers again (indexed only: cached) or a new value (changes the dynamic table)
        block = client.encoder.encode([*headers, ("x-extra", extra)])
        await client.send(http2.HEADERS, 0, stream_id, block[:3])
        await client.send(http2.CONTINUATION, http2.END_HEADERS, stream_id, block[3:])
        message = b"\x00" + struct.pack(">L", 5) + b"hello"
        padded = bytes([4]) + message + b"\x00" * 4
        await client.send(http2.DATA, http2.PADDED | http2.END_STREAM, stream_id, padded)
        frames = await client.frames_until(http2.HEADERS, stream_id)  # response headers...
        frames += await client.frames_until(http2.HEADERS, stream_id)  # ...then trailers
        data = b"".join(p for kind, _, sid, p in frames if kind == http2.DATA and sid == stream_id)
        assert data == b"\x00" + struct.pack(">L", 5) + b"olleh"
        trailers = [f for f in frames if f[0] == http2.HEADERS and f[2] == stream_id][-1]
        assert trailers[1] & http2.END_STREAM
        assert ("grpc-status", "0") in client.decoder.decode(trailers[3])
    await client.send(http2.PING, 0, 0, b"12345678")
    ping = (await client.frames_until(http2.PING, 0))[-1]
    assert ping[1] == http2.ACK and ping[3] == b"12345678"
    writer.close()


async def test_garbage_instead_of_a_preface_closes_the_connection(served) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), 10)  # everything until the server closes
    assert http2.frame(http2.GOAWAY, 0, 0, struct.pack(">LL", 0, http2.PROTOCOL_ERROR))[3:] in received
    writer.close()


def test_header_block_cache_follows_the_hpack_table() -> None:
    """A cached block must decode anew once another block changed the dynamic table."""
    from hpack.struct import NeverIndexedHeaderTuple

    connection = http2.Connection(lambda conn: None)
    encoder = Encoder()
    first = encoder.encode([("x-tenant", "a")])  # literal with incremental indexing: entry 62 = x-tenant: a
    assert connection._decode(first) == [("x-tenant", "a")]
    again = encoder.encode([("x-tenant", "a"), NeverIndexedHeaderTuple("x-secret", "s")])  # index 62 + a literal
    assert http2._table_unchanged(again)
    assert connection._decode(again) == [("x-tenant", "a"), ("x-secret", "s")]
    assert connection._decode(again) == [("x-tenant", "a"), ("x-secret", "s")]  # from the cache
    connection._decode(encoder.encode([("x-tenant", "b")]))  # entry 62 is now x-tenant: b
    assert not http2._table_unchanged(first)
    assert connection._decode(again) == [("x-tenant", "b"), ("x-secret", "s")]  # same bytes, new meaning
