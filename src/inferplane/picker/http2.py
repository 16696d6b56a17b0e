"""The server side of an HTTP/2 connection (RFC 9113), cleartext with prior knowledge, as an asyncio protocol.

Just what a gRPC server needs, done with few Python calls per frame: the connection preface and
SETTINGS, PING, GOAWAY, RST_STREAM, HEADERS with CONTINUATION (HPACK decoding by the ``hpack``
package, so the dynamic table stays in step with the peer), DATA with padding, and flow control both
ways (received bytes are credited back at once; sent DATA waits for the peer's window). Responses
are encoded without the dynamic table (``encode_headers``), so nothing needs to track it here.
Frames written in one event-loop turn leave in one ``write`` call.

The application (the gRPC layer) gets three callbacks per stream: ``on_headers``, ``on_data`` and
``on_reset``; it answers with :meth:`Connection.send_headers` / :meth:`Connection.send_data`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Protocol

from hpack import Decoder
from hpack.exceptions import HPACKError

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x6, 0x7, 0x8, 0x9

MAX_WINDOW = (1 << 31) - 1
#: Our receive windows: large, and credited back as soon as bytes arrive (the picker buffers bodies itself).
STREAM_WINDOW = 1 << 24
#: Largest frame payload we accept (the peer splits bigger DATA into frames of at most this).
MAX_FRAME = 1 << 20
_CREDIT_AT = 1 << 20  # credit a window back once this much of it was used

_HEADER = struct.Struct(">BHBBL")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: 9-byte header and payload."""
    n = len(payload)
    return _HEADER.pack(n >> 16, n & 0xFFFF, kind, flags, stream_id) + payload


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer with an N-bit prefix (RFC 7541 §5.1); ``first`` holds the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode("latin-1")
    return _integer(len(raw), 7) + raw


#: HPACK static-table indices (RFC 7541 Appendix A) of the entries responses use.
_STATIC = {(":status", "200"): 8}
_STATIC_NAMES = {"content-type": 31}


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """An HPACK header block that never touches the dynamic table: fully indexed static entries, else
    literals without indexing (RFC 7541 §6.2.2), no Huffman coding."""
    out = bytearray()
    for name, value in headers:
        index = _STATIC.get((name, value))
        if index is not None:
            out += _integer(index, 7, 0x80)
            continue
        name_index = _STATIC_NAMES.get(name)
        if name_index is not None:
            out += _integer(name_index, 4) + _string(value)
        else:
            out += b"\x00" + _string(name) + _string(value)
    return bytes(out)


class Application(Protocol):
    """What the connection tells the layer above about its streams."""

    def on_headers(self, stream: Stream, headers: list[tuple[str, str]], end_stream: bool) -> None: ...

    def on_data(self, stream: Stream, data: bytes, end_stream: bool) -> None: ...

    def on_reset(self, stream: Stream) -> None: ...


class Stream:
    """One request/response exchange; ``call`` is the application's state for it."""

    __slots__ = ("call", "id", "local_closed", "outbox", "recv_used", "remote_closed", "send_window")

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.recv_used = 0
        self.outbox: deque[tuple[bool, bytes, bool]] = deque()  # (is_data, payload, end_stream) waiting for window
        self.remote_closed = False
        self.local_closed = False
        self.call: object = None


class Connection(asyncio.Protocol):
    """One client connection; ``app_factory(connection)`` makes its application."""

    def __init__(self, app_factory: Callable[[Connection], Application],
                 on_closed: Callable[[Connection], None] | None = None) -> None:
        self._app_factory = app_factory
        self._on_closed = on_closed
        self.app: Application | None = None
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self._buffer = bytearray()
        self._preface = False
        self._decoder = Decoder()
        self._header_cache: dict[bytes, tuple[int, list[tuple[str, str]]]] = {}
        self._table_epoch = 0  # bumped by every header block that may have changed the dynamic table
        self._headers_stream = 0  # a HEADERS block continues in CONTINUATION frames on this stream
        self._headers_flags = 0
        self._headers_block = bytearray()
        self._last_stream = 0
        self._send_window = 65535
        self._recv_used = 0
        self._peer_initial_window = 65535
        self._peer_max_frame = 16384
        self._table_update = True  # start our first header block with a table size update to 0
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._blocked: dict[Stream, None] = {}
        self.closing = False
        self.peer = ""

    # ---- asyncio protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"ipv4:{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.app = self._app_factory(self)
        settings = struct.pack(">HLHL", SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW, SETTINGS_MAX_FRAME_SIZE, MAX_FRAME)
        self._write(frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", MAX_WINDOW - 65535)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            self._reset_app(stream)
        if self._on_closed is not None:
            self._on_closed(self)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        pos = 0
        if not self._preface:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(bytes(buffer)):
                    self._abort(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            if not buffer.startswith(PREFACE):
                self._abort(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            self._preface = True
            pos = len(PREFACE)
        size = len(buffer)
        try:
            while size - pos >= 9:
                hi, lo, kind, flags, stream_id = _HEADER.unpack_from(buffer, pos)
                length = hi << 16 | lo
                if length > MAX_FRAME:
                    self._abort(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                    return
                end = pos + 9 + length
                if end > size:
                    break
                payload = bytes(buffer[pos + 9 : end])
                pos = end
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload)
                if self.transport is None:
                    return
        except _ConnectionError as exc:
            self._abort(exc.code, str(exc))
            return
        del buffer[:pos]

    # ---- frames in -----------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._headers_stream and kind != CONTINUATION:
            raise _ConnectionError(PROTOCOL_ERROR, "header block interrupted")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            if stream_id != self._headers_stream or not stream_id:
                raise _ConnectionError(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            self._headers_block += payload
            if flags & END_HEADERS:
                self._end_headers()
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PING:
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self._blocked.pop(stream, None)
                self._reset_app(stream)
        elif kind == GOAWAY:
            self.closing = True
        elif kind == PUSH_PROMISE:
            raise _ConnectionError(PROTOCOL_ERROR, "a client sent PUSH_PROMISE")
        # PRIORITY and unknown frame types are ignored (RFC 9113 §5.5).

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        n = len(payload)
        self._recv_used += n
        if self._recv_used >= _CREDIT_AT:
            self._write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", self._recv_used)))
            self._recv_used = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream_id > self._last_stream or not stream_id:
                raise _ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # a stream we already finished: the peer had not seen that yet
        if flags & PADDED:
            payload = _unpad(payload)
        stream.recv_used += n
        if stream.recv_used >= _CREDIT_AT and not flags & END_STREAM:
            self._write(frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">L", stream.recv_used)))
            stream.recv_used = 0
        end = bool(flags & END_STREAM)
        if end:
            stream.remote_closed = True
            self._forget_if_done(stream)
        assert self.app is not None
        self.app.on_data(stream, payload, end)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise _ConnectionError(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            payload = _unpad(payload)
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        self._headers_stream, self._headers_flags = stream_id, flags
        self._headers_block = bytearray(payload)
        if flags & END_HEADERS:
            self._end_headers()

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        """HPACK-decode ``block``. A block that leaves the dynamic table as it was decodes the same way
        until a block that does change it: such blocks (a proxy sends the same headers on every
        stream) are decoded once per table state."""
        cached = self._header_cache.get(block)
        if cached is not None and cached[0] == self._table_epoch:
            return cached[1]
        try:
            headers = self._decoder.decode(block)
        except HPACKError as exc:
            raise _ConnectionError(COMPRESSION_ERROR, f"HPACK: {exc}") from None
        if _table_unchanged(block):
            if len(self._header_cache) >= 64:
                self._header_cache.clear()
            self._header_cache[block] = (self._table_epoch, headers)
        else:
            self._table_epoch += 1
        return headers

    def _end_headers(self) -> None:
        stream_id, flags = self._headers_stream, self._headers_flags
        self._headers_stream = 0
        headers = self._decode(bytes(self._headers_block))
        end = bool(flags & END_STREAM)
        stream = self.streams.get(stream_id)
        assert self.app is not None
        if stream is None:
            if stream_id <= self._last_stream or not stream_id & 1:
                return  # trailers of a stream we finished already, or a stream id a client may not open
            self._last_stream = stream_id
            stream = Stream(stream_id, self._peer_initial_window)
            self.streams[stream_id] = stream
            stream.remote_closed = end
            if self.closing:
                self.reset(stream, REFUSED_STREAM)
                return
            self.app.on_headers(stream, headers, end)
            if end:
                self._forget_if_done(stream)
            return
        # headers on an open stream: trailers, which end it
        stream.remote_closed = True
        self._forget_if_done(stream)
        self.app.on_data(stream, b"", True)

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS length")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HL", payload, i)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise _ConnectionError(PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_max_frame = value
            elif key == SETTINGS_HEADER_TABLE_SIZE:
                self._table_update = True
        self._write(frame(SETTINGS, ACK, 0))
        self._drain_blocked()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        increment = struct.unpack(">L", payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            self._send_window += increment
            self._drain_blocked()
        else:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.send_window += increment
                self._drain(stream)

    # ---- frames out ----------------------------------------------------------------------------

    def send_headers(self, stream: Stream, block: bytes, end_stream: bool = False) -> None:
        """A header block (see :func:`encode_headers`); after any DATA still waiting for window."""
        if stream.local_closed or self.transport is None:
            return
        if stream.outbox:
            stream.outbox.append((False, block, end_stream))
        else:
            self._write_headers(stream, block, end_stream)

    def send_data(self, stream: Stream, data: bytes, end_stream: bool = False) -> None:
        if stream.local_closed or self.transport is None:
            return
        n = len(data)
        if not stream.outbox and n <= self._peer_max_frame and n <= self._send_window and n <= stream.send_window:
            self._send_window -= n
            stream.send_window -= n
            self._write(frame(DATA, END_STREAM if end_stream else 0, stream.id, data))
            if end_stream:
                self._closed_locally(stream)
            return
        stream.outbox.append((True, data, end_stream))
        self._drain(stream)

    def reset(self, stream: Stream, code: int = CANCEL) -> None:
        """RST_STREAM: this stream ends now, in both directions."""
        if self.transport is not None and not (stream.local_closed and stream.remote_closed):
            self._write(frame(RST_STREAM, 0, stream.id, struct.pack(">L", code)))
        stream.local_closed = stream.remote_closed = True
        stream.outbox.clear()
        self.streams.pop(stream.id, None)
        self._blocked.pop(stream, None)

    def goaway(self, code: int = NO_ERROR) -> None:
        """No new streams; those open may finish."""
        self.closing = True
        self._write(frame(GOAWAY, 0, 0, struct.pack(">LL", self._last_stream, code)))

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def _write_headers(self, stream: Stream, block: bytes, end_stream: bool) -> None:
        if self._table_update:  # the first block on the wire after a table size change (and the very first)
            block = b"\x20" + block  # dynamic table size update to 0: we never index
            self._table_update = False
        flags = END_STREAM if end_stream else 0
        limit = self._peer_max_frame
        if len(block) <= limit:
            self._write(frame(HEADERS, flags | END_HEADERS, stream.id, block))
        else:
            pieces = [block[i : i + limit] for i in range(0, len(block), limit)]
            self._write(frame(HEADERS, flags, stream.id, pieces[0]))
            for i, piece in enumerate(pieces[1:], 2):
                self._write(frame(CONTINUATION, END_HEADERS if i == len(pieces) else 0, stream.id, piece))
        if end_stream:
            self._closed_locally(stream)

    def _drain(self, stream: Stream) -> None:
        outbox = stream.outbox
        while outbox:
            is_data, payload, end = outbox[0]
            if not is_data:
                outbox.popleft()
                self._write_headers(stream, payload, end)
                continue
            window = min(self._send_window, stream.send_window, self._peer_max_frame)
            if window <= 0 and payload:
                self._blocked[stream] = None
                return
            piece, rest = payload[:window], payload[window:]
            self._send_window -= len(piece)
            stream.send_window -= len(piece)
            if rest:
                outbox[0] = (True, rest, end)
                self._write(frame(DATA, 0, stream.id, piece))
            else:
                outbox.popleft()
                self._write(frame(DATA, END_STREAM if end else 0, stream.id, piece))
                if end:
                    self._closed_locally(stream)
        self._blocked.pop(stream, None)

    def _drain_blocked(self) -> None:
        for stream in list(self._blocked):
            if self._send_window <= 0:
                return
            self._drain(stream)

    def _closed_locally(self, stream: Stream) -> None:
        stream.local_closed = True
        self._forget_if_done(stream)
        # The peer may still send on it; frames for a stream we no longer know are dropped quietly.
        self.streams.pop(stream.id, None)

    def _forget_if_done(self, stream: Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            self.streams.pop(stream.id, None)

    def _reset_app(self, stream: Stream) -> None:
        stream.local_closed = stream.remote_closed = True
        if self.app is not None:
            self.app.on_reset(stream)

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._out and self.transport is not None:
            out, self._out = self._out, []
            self.transport.write(b"".join(out))

    def _abort(self, code: int, reason: str) -> None:
        log.warning("HTTP/2 connection from %s closed: %s", self.peer, reason)
        if self.transport is not None:
            self._out.append(frame(GOAWAY, 0, 0, struct.pack(">LL", self._last_stream, code) + reason.encode()[:200]))
            self.close()


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _hpack_int(block: bytes, i: int, prefix_bits: int) -> tuple[int, int]:
    """An HPACK integer (RFC 7541 §5.1) starting at ``block[i]``: (value, index after it)."""
    limit = (1 << prefix_bits) - 1
    value = block[i] & limit
    i += 1
    if value == limit:
        shift = 0
        while True:
            byte = block[i]
            i += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return value, i


def _table_unchanged(block: bytes) -> bool:
    """Whether decoding this HPACK block leaves the dynamic table as it was: only indexed fields
    (§6.1) and literals without indexing or never indexed (§6.2.2, §6.2.3), no incremental
    indexing and no table size update."""
    i, n = 0, len(block)
    try:
        while i < n:
            byte = block[i]
            if byte & 0x80:  # indexed field
                _, i = _hpack_int(block, i, 7)
            elif byte & 0xE0 == 0:  # 0000xxxx / 0001xxxx: literal, not indexed
                name_index, i = _hpack_int(block, i, 4)
                for _ in range(1 if name_index else 2):  # the value, after the name when not indexed
                    length, i = _hpack_int(block, i, 7)
                    i += length
            else:  # incremental indexing or a table size update
                return False
    except IndexError:
        return False
    return i == n


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise _ConnectionError(PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise _ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]
