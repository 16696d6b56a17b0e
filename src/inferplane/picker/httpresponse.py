"""An incremental parser of one HTTP/1.1 response to a GET, for the metrics scraper.

Bodies framed by ``Content-Length``, by ``Transfer-Encoding: chunked``, or by the server closing
the connection; interim ``1xx`` responses are skipped; a gzip body is inflated. No other feature
of HTTP is needed to read ``/metrics``, and every malformed response raises :class:`ProtocolError`.
"""

from __future__ import annotations

import zlib

#: Largest response (head and body) read: a metrics page is tens of kilobytes.
MAX_RESPONSE = 16 << 20


class ProtocolError(ValueError):
    """The bytes are not an HTTP/1.1 response this parser reads."""


class ResponseParser:
    """Feed the bytes of one response as they arrive; ``feed`` says when it is complete."""

    __slots__ = ("_buffer", "_chunked", "_chunks", "_encoding", "_length", "_pos", "body", "complete", "keep_alive",
                 "started", "status")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0  # where the body (or the next chunk) starts in the buffer; 0 while the head is unread
        self._length: int | None = None
        self._chunked = False
        self._chunks: list[bytes] = []
        self._encoding = b""
        self.status = 0
        self.keep_alive = True
        self.body = b""
        self.complete = False
        #: Any byte of the response arrived (a reused connection that fails before this may be retried).
        self.started = False

    def feed(self, data: bytes) -> bool:
        """Add bytes; True once the response is complete (extra bytes after it are an error)."""
        if self.complete:
            if data:
                raise ProtocolError("bytes after the end of the response")
            return True
        if data:
            self.started = True
            self._buffer += data
            if len(self._buffer) > MAX_RESPONSE:
                raise ProtocolError(f"response larger than {MAX_RESPONSE} bytes")
        if not self.status and not self._read_head():
            return False
        if self._chunked:
            return self._read_chunks()
        if self._length is not None and len(self._buffer) - self._pos >= self._length:
            end = self._pos + self._length
            if len(self._buffer) > end:
                raise ProtocolError("bytes after the end of the response")
            self._finish(bytes(self._buffer[self._pos : end]))
        return self.complete

    def eof(self) -> bool:
        """The server closed the connection: True when that completes the response (a body read to close)."""
        if not self.complete and self.status and not self._chunked and self._length is None:
            self.keep_alive = False
            self._finish(bytes(self._buffer[self._pos :]))
        return self.complete

    def _read_head(self) -> bool:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end == -1:
                return False
            lines = bytes(self._buffer[:end]).split(b"\r\n")
            del self._buffer[: end + 4]
            version, _, rest = lines[0].partition(b" ")
            code = rest[:3]
            if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
            status = int(code)
            if 100 <= status < 200:
                continue  # an interim response: the real one follows
            self.status = status
            self.keep_alive = version != b"HTTP/1.0"
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep:
                    raise ProtocolError(f"malformed header line: {line[:80]!r}")
                name, value = name.strip().lower(), value.strip()
                if name == b"content-length":
                    if not value.isdigit():
                        raise ProtocolError(f"bad Content-Length: {value[:40]!r}")
                    self._length = int(value)
                    if self._length > MAX_RESPONSE:
                        raise ProtocolError(f"response larger than {MAX_RESPONSE} bytes")
                elif name == b"transfer-encoding":
                    self._chunked = value.lower().endswith(b"chunked")
                elif name == b"connection":
                    self.keep_alive = b"close" not in value.lower() and (
                        self.keep_alive or b"keep-alive" in value.lower())
                elif name == b"content-encoding":
                    self._encoding = value.lower()
            if status in (204, 304):
                self._length = 0
            return True

    def _read_chunks(self) -> bool:
        buffer = self._buffer
        while True:
            pos = self._pos
            line_end = buffer.find(b"\r\n", pos)
            if line_end == -1:
                return False
            size_text = bytes(buffer[pos:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_text[:40]!r}") from None
            if size == 0:  # the last chunk: optional trailer fields, then an empty line
                if buffer.startswith(b"\r\n", line_end + 2):
                    end = line_end + 4
                else:
                    trailers_end = buffer.find(b"\r\n\r\n", line_end + 2)
                    if trailers_end == -1:
                        return False
                    end = trailers_end + 4
                if len(buffer) > end:
                    raise ProtocolError("bytes after the end of the response")
                self._finish(b"".join(self._chunks))
                return True
            data_end = line_end + 2 + size
            if len(buffer) < data_end + 2:
                return False
            if buffer[data_end : data_end + 2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            self._chunks.append(bytes(buffer[line_end + 2 : data_end]))
            self._pos = data_end + 2

    def _finish(self, body: bytes) -> None:
        if self._encoding in (b"gzip", b"x-gzip", b"deflate"):
            try:
                body = zlib.decompress(body, 47 if self._encoding != b"deflate" else 15)
            except zlib.error as exc:
                raise ProtocolError(f"bad {self._encoding.decode()} body: {exc}") from None
        elif self._encoding not in (b"", b"identity"):
            raise ProtocolError(f"unsupported Content-Encoding {self._encoding[:40]!r}")
        self.body = body
        self.complete = True
