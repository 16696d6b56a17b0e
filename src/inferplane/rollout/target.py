"""Where a ``rollout`` command finds the running picker: its rewrites file and its metrics URL.

From the picker's configuration (``--picker-config FILE``, a YAML file with a ``picker`` section,
or ``--run-dir DIR`` of ``inferplane up``, whose ``picker.yaml`` it reads), or given directly
(``--rewrites-file``, ``--metrics-url``), which wins over the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inferplane.configfile import ConfigError, read_yaml
from inferplane.rollout.state import RolloutError

_DEFAULT_METRICS_PORT = 9090


@dataclass(frozen=True)
class PickerTarget:
    rewrites_file: Path | None
    metrics_url: str | None
    pool: str = ""


def _connect_host(bind_host: str) -> str:
    return "127.0.0.1" if bind_host in ("0.0.0.0", "", "::") else bind_host


def resolve_target(
    run_dir: str | None = None,
    picker_config: str | None = None,
    rewrites_file: str | None = None,
    metrics_url: str | None = None,
) -> PickerTarget:
    """The picker's rewrites file and metrics URL; a :class:`RolloutError` says what is missing."""
    config_path = Path(picker_config) if picker_config else (Path(run_dir) / "picker.yaml" if run_dir else None)
    pool = ""
    if config_path is not None:
        try:
            section = read_yaml(config_path).get("picker") or {}
        except ConfigError as exc:
            raise RolloutError(str(exc)) from None
        if not isinstance(section, dict):
            raise RolloutError(f"{config_path}: section 'picker' must be a mapping")
        configured = section.get("model_rewrites_file")
        if not rewrites_file:
            if not configured:
                raise RolloutError(
                    f"the picker configured in {config_path} has no model_rewrites_file: set "
                    "picker.model_rewrites_file (and restart it once), or pass --rewrites-file"
                )
            rewrites_file = str(configured)
        if not metrics_url:
            host = _connect_host(str(section.get("host", "127.0.0.1")))
            metrics_url = f"http://{host}:{section.get('metrics_port', _DEFAULT_METRICS_PORT)}/metrics"
        pool = str(section.get("pool_name", ""))
    return PickerTarget(Path(rewrites_file) if rewrites_file else None, metrics_url, pool)
