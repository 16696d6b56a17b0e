"""Binding a gRPC server's port with an error that names the configuration field."""

from __future__ import annotations

import grpc


def listen(server: grpc.aio.Server, host: str, port: int, field: str) -> int:
    """Add an insecure port; returns the bound port (``port`` 0 picks a free one).

    Raises :class:`OSError` naming ``field`` and the address when it cannot be bound.
    """
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"{field}: cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"{field}: cannot listen on {address}")
    return bound
