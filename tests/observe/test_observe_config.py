"""The ``observe`` section of ``inferplane up``, the generated scrape config and the shipped dashboards."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from inferplane.configfile import ConfigError
from inferplane.observe import dashboards
from inferplane.observe.config import PrometheusConfig, TelemetryConfig
from inferplane.observe.prometheus import find_binary, prometheus_command, write_config
from inferplane.observe.up_prometheus import scrape_jobs
from inferplane.up import PlatformConfig, plan

ROOT = Path(__file__).resolve().parents[2]


def _plan(tmp_path: Path, **observe):
    config = PlatformConfig.model_validate({"replicas": 3, "server": {"engine": "sim", "port": 8100},
                                           "gateway": {"admin_port": 9911}, "observe": observe})
    return plan(config, tmp_path)


def test_every_component_is_a_scrape_target(tmp_path: Path) -> None:
    the_plan = _plan(tmp_path, prometheus={"enabled": True, "scrape_interval_s": 0.5})
    path = write_config(scrape_jobs(the_plan), the_plan.observe.prometheus, tmp_path)
    document = yaml.safe_load(path.read_text())
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    assert jobs["model-servers"]["static_configs"][0]["targets"] == ["127.0.0.1:8100", "127.0.0.1:8101", "127.0.0.1:8102"]
    assert jobs["picker"]["static_configs"][0]["targets"] == [f"127.0.0.1:{the_plan.picker.metrics_port}"]
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["static_configs"][0]["targets"] == ["127.0.0.1:9911"]
    assert jobs["batch-api"]["static_configs"][0]["targets"] == [f"127.0.0.1:{the_plan.batch.port}"]
    assert document["global"]["scrape_interval"] == "500ms"
    assert (tmp_path / "prometheus" / "data").is_dir()


def test_extra_jobs_are_scraped_too(tmp_path: Path) -> None:
    the_plan = _plan(tmp_path, prometheus={"extra_jobs": [{"job": "async", "targets": ["127.0.0.1:9400"]}]})
    jobs = {job.name: job for job in scrape_jobs(the_plan)}
    assert jobs["async"].targets == ["127.0.0.1:9400"] and jobs["async"].metrics_path == "/metrics"
    with pytest.raises(ConfigError, match=r"observe\.prometheus\.extra_jobs\.0\.targets"):
        from inferplane.configfile import validate_model

        validate_model(PlatformConfig, {"observe": {"prometheus": {"extra_jobs": [{"job": "a", "targets": []}]}}}, "up.yaml")


def test_the_data_dir_is_under_the_run_dir(tmp_path: Path) -> None:
    config = PrometheusConfig(port=9555)
    path = write_config([], config, tmp_path)
    command = prometheus_command("/usr/bin/prometheus", config, path)
    assert f"--storage.tsdb.path={tmp_path / 'prometheus' / 'data'}" in command
    assert "--web.listen-address=127.0.0.1:9555" in command


def test_observe_telemetry_reaches_the_components_unless_they_set_their_own(tmp_path: Path) -> None:
    config = PlatformConfig.model_validate({
        "server": {"engine": "sim", "telemetry": {"log_format": "text"}},
        "observe": {"log_format": "json", "tracing": {"exporter": "otlp", "endpoint": "http://127.0.0.1:4318/v1/traces"}},
    })
    the_plan = plan(config, tmp_path)
    assert the_plan.picker.telemetry.log_format == "json"
    assert the_plan.picker.telemetry.tracing.exporter == "otlp"
    assert all(s.telemetry == TelemetryConfig() for s in the_plan.servers)  # the server's own section wins


def test_bad_observe_fields_are_named() -> None:
    from inferplane.configfile import validate_model

    with pytest.raises(ConfigError, match=r"observe\.prometheus\.scrape_interval_s"):
        validate_model(PlatformConfig, {"observe": {"prometheus": {"scrape_interval_s": 0}}}, "up.yaml")
    with pytest.raises(ConfigError, match=r"observe\.tracing\.endpoint"):
        validate_model(PlatformConfig, {"observe": {"tracing": {"endpoint": "localhost:4318"}}}, "up.yaml")
    with pytest.raises(ConfigError, match=r"observe\.log_format"):
        validate_model(PlatformConfig, {"observe": {"log_format": "xml"}}, "up.yaml")


def test_a_missing_prometheus_binary_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="observe.prometheus.binary.*apt-get install prometheus"):
        find_binary(PrometheusConfig(binary="/nonexistent/prometheus"))


def test_up_observe_flag_enables_prometheus() -> None:
    from inferplane.cli import build_parser
    from inferplane.up import platform_config_from_args

    args = build_parser().parse_args(["up", "--observe", "--log-format", "json"])
    config = platform_config_from_args(args)
    assert config.observe.prometheus.enabled and config.observe.log_format == "json"


def test_committed_dashboards_are_current(tmp_path: Path) -> None:
    for written in dashboards.write_all(tmp_path):
        committed = ROOT / "deploy" / "grafana" / written.name
        assert committed.read_text() == written.read_text(), (
            f"{committed} is stale: run python -m inferplane.observe.dashboards deploy/grafana")


def test_dashboard_metrics_are_exported_by_the_code() -> None:
    """Every inferplane / vLLM / GIE metric a dashboard reads is defined somewhere in src/ (typos fail here)."""
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "inferplane").rglob("*.py"))
    names: set[str] = set()
    for name in ("pool", "picker", "jobs"):
        document = json.loads((ROOT / "deploy" / "grafana" / f"{name}.json").read_text())
        for _, expr in dashboards.expressions(document):
            names |= set(re.findall(r"\b((?:vllm:|inference_|inferplane_)[a-z0-9_:]+)", expr))
    assert names
    for metric in sorted(names):
        base = re.sub(r"_(bucket|count|sum|total)$", "", metric)
        assert f'"{base}"' in source, f"{metric}: no metric named {base} in src/"
