"""Polling one endpoint's ``/metrics`` over a keep-alive HTTP/1.1 connection, as event-loop callbacks.

No task, future or HTTP library per scrape: the poller writes a prebuilt GET, parses the answer in
the protocol's ``data_received`` and arms a timer for the next scrape, ``interval`` after this one
started. A scrape that fails (refused, reset, timeout, non-200, unreadable page) is recorded in
the datastore and the connection dropped; a reused connection the server had already closed is
retried once on a fresh one before that counts as a failure.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from inferplane.picker.endpoints import Datastore, Endpoint, EndpointMetrics
from inferplane.picker.httpresponse import ProtocolError, ResponseParser


class _Connection(asyncio.Protocol):
    """Hands a connection's events to its poller (which may have moved on to another connection)."""

    __slots__ = ("attempt", "poller", "transport")

    def __init__(self, poller: MetricsPoller, attempt: int) -> None:
        self.poller = poller
        self.attempt = attempt
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] (uvloop's transports are no asyncio.Transport subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.poller.on_made(self)

    def data_received(self, data: bytes) -> None:
        self.poller.on_data(self, data)

    def eof_received(self) -> bool:
        self.poller.on_eof(self)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.poller.on_lost(self, exc)


class MetricsPoller:
    """Scrapes one endpoint every ``interval`` seconds until stopped or the endpoint is removed."""

    def __init__(self, datastore: Datastore, endpoint: Endpoint, path: str, interval: float, timeout: float,
                 parse: Callable[[str], EndpointMetrics]) -> None:
        self.datastore = datastore
        self.endpoint = endpoint
        self.interval = interval
        self.timeout = timeout
        self.parse = parse
        host, _, port = endpoint.address.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self._request = f"GET {path} HTTP/1.1\r\nHost: {endpoint.address}\r\nAccept: text/plain\r\n" \
                        "Accept-Encoding: identity\r\nUser-Agent: inferplane-picker\r\n\r\n".encode()
        self._loop = asyncio.get_running_loop()
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]] | None = None
        self._parser: ResponseParser | None = None
        self._reused = False
        self._attempt = 0
        self._started = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._next: asyncio.Handle | None = None
        self._stopped = False

    def start(self) -> None:
        self._next = self._loop.call_soon(self._begin)

    def stop(self) -> None:
        """No further scrape; the connection is closed."""
        self._stopped = True
        for handle in (self._timer, self._next):
            if handle is not None:
                handle.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        self._parser = None
        self._drop()

    # ---- one scrape ----------------------------------------------------------------------

    def _begin(self) -> None:
        self._next = None
        if self._stopped or self.endpoint.removed:
            self.stop()
            return
        self._started = time.monotonic()
        self._timer = self._loop.call_at(self._started + self.timeout, self._timed_out)
        if self._conn is not None:
            self._send(reused=True)
        else:
            self._connect()

    def _connect(self) -> None:
        self._attempt += 1
        attempt = self._attempt
        connecting = asyncio.ensure_future(
            self._loop.create_connection(lambda: _Connection(self, attempt), self._host, self._port))
        connecting.add_done_callback(self._connect_failed)
        self._connecting = connecting

    def on_made(self, conn: _Connection) -> None:
        """A connection is up: send on it, unless it belongs to an attempt given up meanwhile."""
        if self._stopped or conn.attempt != self._attempt or self._connecting is None:
            assert conn.transport is not None
            conn.transport.close()
            return
        self._connecting = None
        self._conn = conn
        self._send(reused=False)

    def _connect_failed(self, future: asyncio.Future[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]) -> None:
        if future.cancelled() or future.exception() is None:
            return  # given up (stop, timeout), or connected: on_made took it from there
        if future is self._connecting:
            exc = future.exception()
            self._connecting = None
            self._fail(f"{type(exc).__name__}: {exc}")

    def _send(self, reused: bool) -> None:
        assert self._conn is not None and self._conn.transport is not None
        self._parser = ResponseParser()
        self._reused = reused
        self._conn.transport.write(self._request)

    # ---- connection events --------------------------------------------------------------------

    def on_data(self, conn: _Connection, data: bytes) -> None:
        parser = self._parser
        if conn is not self._conn or parser is None:
            if conn.transport is not None:
                conn.transport.close()  # unasked-for bytes: not a connection to keep
            return
        try:
            complete = parser.feed(data)
        except ProtocolError as exc:
            self._drop()
            self._fail(f"ProtocolError: {exc}")
            return
        if complete:
            self._complete(parser)

    def on_eof(self, conn: _Connection) -> None:
        parser = self._parser
        if conn is self._conn and parser is not None and parser.eof():
            self._conn = None  # the server closed it: the next scrape connects anew
            self._complete(parser)

    def on_lost(self, conn: _Connection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        parser = self._parser
        if parser is None:
            return  # closed between scrapes: the next one connects anew
        if parser.eof():
            self._complete(parser)
        elif self._reused and not parser.started:
            self._connect()  # the server had closed the idle connection: retry once on a fresh one
        else:
            reason = f"{type(exc).__name__}: {exc}" if exc else "connection closed before the response ended"
            self._fail(reason)

    # ---- outcomes -------------------------------------------------------------------------

    def _complete(self, parser: ResponseParser) -> None:
        self._parser = None
        if not parser.keep_alive:
            self._drop()
        if parser.status != 200:
            self._record_failure(f"HTTP {parser.status}")
        else:
            try:
                metrics = self.parse(parser.body.decode("utf-8", "replace"))
            except Exception as exc:  # noqa: BLE001 (an unreadable page is a failed scrape)
                self._record_failure(f"{type(exc).__name__}: {exc}")
            else:
                self.datastore.record_scrape(self.endpoint, metrics)
        self._schedule_next()

    def _timed_out(self) -> None:
        self._timer = None
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        self._drop()
        self._fail(f"TimeoutError: no answer within {self.timeout:g} s")

    def _fail(self, reason: str) -> None:
        self._parser = None
        self._record_failure(reason)
        self._schedule_next()

    def _record_failure(self, reason: str) -> None:
        if not self._stopped:
            self.datastore.record_failure(self.endpoint, reason)

    def _schedule_next(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stopped:
            return
        self._next = self._loop.call_at(max(self._started + self.interval, time.monotonic()), self._begin)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()
