"""``inferplane up --observe``: the scrape targets of a platform plan, and Prometheus's command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferplane.observe.prometheus import (
    ScrapeJob,
    base_url,
    find_binary,
    prometheus_command,
    write_config,
)

__all__ = ["base_url", "check", "command", "scrape_jobs"]


def _host(bind_host: str) -> str:
    return "127.0.0.1" if bind_host in ("0.0.0.0", "", "::") else bind_host


def scrape_jobs(plan: Any) -> list[ScrapeJob]:
    """One job per component kind the plan starts (model servers, picker, Envoy, Batch API).

    With several pools each pool's servers and picker are a target group of the kind's job,
    labelled ``pool``; ``serve-models`` replicas are the ``oip-servers`` job.
    """
    gateway = plan.gateway
    jobs = []
    for pool in plan.pools:
        labels = {"pool": pool.name} if pool.prefix else {}
        kind = "model-servers" if pool.kind == "llm" else "oip-servers"
        jobs.append(ScrapeJob(kind, [f"{_host(s.host)}:{s.port}" for s in pool.servers], labels=labels))
        jobs.append(ScrapeJob("picker", [f"{_host(pool.picker.host)}:{pool.picker.metrics_port}"], labels=labels))
    jobs.append(
        ScrapeJob("envoy", [f"{_host(gateway.admin_host)}:{gateway.admin_port}"], metrics_path="/stats/prometheus"))
    if plan.batch is not None:
        jobs.append(ScrapeJob("batch-api", [f"{_host(plan.batch.host)}:{plan.batch.port}"]))
    jobs += [ScrapeJob(extra.job, list(extra.targets), extra.metrics_path) for extra in plan.observe.prometheus.extra_jobs]
    return jobs


def check(plan: Any) -> None:
    """Fail before anything starts when the prometheus executable is missing (ConfigError)."""
    find_binary(plan.observe.prometheus)


def command(plan: Any, run_dir: Path) -> list[str]:
    """Write ``<run dir>/prometheus/prometheus.yml``; the command that serves it."""
    config = plan.observe.prometheus
    path = write_config(scrape_jobs(plan), config, run_dir)
    return prometheus_command(find_binary(config), config, path)
