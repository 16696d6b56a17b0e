"""Start an engine and serve the API with uvicorn (httptools and uvloop when installed)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
import sys
from collections.abc import Iterator

import uvicorn

from inferplane.configfile import ConfigError
from inferplane.observe.logs import announce, setup_logging, uvicorn_log_config
from inferplane.observe.server_telemetry import instrument_server
from inferplane.server.app import create_app
from inferplane.server.config import ServerConfig
from inferplane.server.engine import EngineError
from inferplane.server.engines import create_engine


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class _Server(uvicorn.Server):
    """uvicorn's server, but SIGINT/SIGTERM only end ``serve()``: uvicorn re-raises the signal
    afterwards, which would kill the process before the engine is stopped."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def serve_async(config: ServerConfig) -> None:
    """Load the engine, serve until SIGINT/SIGTERM, then stop the engine."""
    engine = create_engine(config)
    try:
        await engine.start()
    except EngineError as exc:
        raise ConfigError(str(exc)) from None
    try:
        uvicorn_config = uvicorn.Config(
            instrument_server(create_app(engine, config), config),
            host=config.host,
            port=config.port,
            http="httptools" if _has("httptools") else "h11",
            loop="none",
            lifespan="off",
            log_level=config.log_level,
            access_log=config.log_level in ("info", "debug", "trace"),
            log_config=uvicorn_log_config(config.telemetry.log_format),
            timeout_keep_alive=30,
        )
        server = _Server(uvicorn_config)
        announce(
            "server",
            config.telemetry.log_format,
            f"inferplane serve: {config.served_model_name} ({config.engine}) on http://{config.host}:{config.port}",
        )
        await server.serve()
    finally:
        await engine.stop()


def serve(config: ServerConfig) -> None:
    """Run :func:`serve_async` on uvloop when available (a store:// model is fetched to local disk first)."""
    setup_logging("server", config.telemetry.log_format, config.log_level.upper() if config.log_level != "trace" else "DEBUG")
    from inferplane.models.serving import is_store_ref

    loaded = None
    if is_store_ref(config.model):
        from inferplane.models.errors import ModelsError
        from inferplane.models.serving import load_for_server

        assert config.model is not None
        try:
            path, loaded = load_for_server(config.model, config.model_cache_dir, config.model_verify)
        except (ModelsError, OSError) as exc:
            raise ConfigError(f"model {config.model}: {exc}") from None
        print(f"inferplane serve: {config.model} is {loaded.manifest.name}@{loaded.manifest.version} at {path}",
              file=sys.stderr, flush=True)
        config = config.model_copy(update={"model": str(path)})
    try:
        if _has("uvloop"):
            import uvloop

            uvloop.run(serve_async(config))
        else:
            asyncio.run(serve_async(config))
    finally:
        if loaded is not None:
            loaded.release()
