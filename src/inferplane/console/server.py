"""``inferplane console``: serve the console with uvicorn until SIGTERM / SIGINT."""

from __future__ import annotations

import logging

import uvicorn

from inferplane.console.app import PREFIX, build_app
from inferplane.console.config import ConsoleConfig


def serve(config: ConsoleConfig) -> int:
    """Run the console; 1 when its port cannot be bound."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = build_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           lifespan="on"))
    print(f"inferplane console: http://{config.host}:{config.port}{PREFIX}/ (picker {config.picker_url}, "
          f"batch {config.batch_url or 'none'}, envoy admin {config.envoy_admin_url or 'none'})", flush=True)
    server.run()
    return 0 if server.started else 1
