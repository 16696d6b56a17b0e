"""Engine registry: ``create_engine(config)`` picks the engine named by ``config.engine``.

Engines are imported lazily so that, for example, the simulator needs neither OpenVINO nor torch.
"""

from __future__ import annotations

from inferplane.configfile import ConfigError
from inferplane.server.config import ServerConfig
from inferplane.server.engine import Engine


def create_engine(config: ServerConfig) -> Engine:
    """The engine for ``config.engine``; :class:`ConfigError` when it cannot be built here."""
    if config.engine == "openvino":
        from inferplane.server.engines.openvino import OpenVINOEngine

        return OpenVINOEngine(config)
    if config.engine == "sim":
        try:
            from inferplane.sim.engine import create_engine as create_sim_engine
        except ImportError as exc:
            raise ConfigError(f"engine 'sim' is not available: {exc}") from None
        return create_sim_engine(config)
    if config.engine == "transformers":
        from inferplane.server.engines.transformers import TransformersEngine

        return TransformersEngine(config)
    raise ConfigError(f"engine: unknown engine {config.engine!r}")
