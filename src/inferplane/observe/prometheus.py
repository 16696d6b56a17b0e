"""The Prometheus server of ``inferplane up --observe``: scrape config, command line, readiness URL.

Every component the platform started is a target: model servers (``/metrics``), the picker's
metrics port, the Batch API (``/metrics``) and Envoy's admin ``/stats/prometheus``. Samples go to
``<run dir>/prometheus/data``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inferplane.configfile import ConfigError
from inferplane.observe.config import PrometheusConfig


@dataclass
class ScrapeJob:
    """One ``scrape_configs`` entry: a job name, its ``host:port`` targets and the metrics path."""

    name: str
    targets: list[str]
    metrics_path: str = "/metrics"
    labels: dict[str, str] = field(default_factory=dict)


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def scrape_config(jobs: list[ScrapeJob], interval_s: float) -> dict[str, Any]:
    """A Prometheus configuration document scraping ``jobs`` every ``interval_s``.

    Jobs of one name (e.g. the model servers of several pools) become target groups of one job.
    """
    merged: dict[str, dict[str, Any]] = {}
    for job in jobs:
        if not job.targets:
            continue
        entry = merged.setdefault(job.name, {"job_name": job.name, "metrics_path": job.metrics_path,
                                             "static_configs": []})
        entry["static_configs"].append({"targets": job.targets, **({"labels": job.labels} if job.labels else {})})
    return {
        "global": {"scrape_interval": _duration(interval_s), "scrape_timeout": _duration(interval_s),
                   "evaluation_interval": _duration(interval_s)},
        "scrape_configs": list(merged.values()),
    }


def find_binary(config: PrometheusConfig) -> str:
    """The prometheus executable; a ConfigError saying how to install it when absent."""
    found = shutil.which(config.binary)
    if found is None:
        raise ConfigError(
            f"observe.prometheus.binary: {config.binary!r} was not found; install the Debian package "
            "'prometheus' (apt-get install prometheus) or set the path of the executable"
        )
    return found


def write_config(jobs: list[ScrapeJob], config: PrometheusConfig, run_dir: Path) -> Path:
    """``<run dir>/prometheus/prometheus.yml`` (and the data directory next to it)."""
    directory = run_dir / "prometheus"
    (directory / "data").mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(scrape_config(jobs, config.scrape_interval_s), sort_keys=False))
    return path


def prometheus_command(binary: str, config: PrometheusConfig, config_path: Path) -> list[str]:
    """The command line of the Prometheus server."""
    return [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={config_path.parent / 'data'}",
        f"--storage.tsdb.retention.time={config.retention}",
        f"--web.listen-address={config.host}:{config.port}",
        "--log.level=warn",
    ]


def base_url(config: PrometheusConfig) -> str:
    host = "127.0.0.1" if config.host in ("0.0.0.0", "", "::") else config.host
    return f"http://{host}:{config.port}"
