"""Run the server with uvicorn (gRPC, when enabled, shares uvicorn's event loop)."""

from __future__ import annotations

import logging

import uvicorn

from inferplane.oip.config import OipConfig
from inferplane.oip.rest import create_app
from inferplane.oip.state import ServerState


def serve(config: OipConfig) -> None:
    """Serve until interrupted."""
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(ServerState(config))
    loop = "asyncio" if config.grpc_port is not None else "auto"  # grpc.aio needs the stock asyncio loop
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, loop=loop, access_log=False)
