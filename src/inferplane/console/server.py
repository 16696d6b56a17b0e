"""``inferplane console``: serve the console with uvicorn until SIGTERM / SIGINT."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

from inferplane.console.app import PREFIX, build_app
from inferplane.console.config import ConsoleConfig


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGTERM / SIGINT end it cleanly (exit 0) instead of being re-raised."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _listen(host: str, port: int) -> socket.socket:
    """The console's listening socket, bound before anything starts so a taken port is reported plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(config: ConsoleConfig) -> int:
    """Run the console; 1 when its port cannot be bound."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        sock = _listen(config.host, config.port)
    except OSError as exc:
        print(f"inferplane console: cannot listen on {config.host}:{config.port} (port): {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(build_app(config), log_level="warning", lifespan="on"))
    print(f"inferplane console: http://{config.host}:{port}{PREFIX}/ (picker {config.picker_url}, "
          f"batch {config.batch_url or 'none'}, envoy admin {config.envoy_admin_url or 'none'})", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1
