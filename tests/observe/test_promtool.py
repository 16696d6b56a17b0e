"""Prometheus's own checker (``promtool`` from the Debian package) on what inferplane generates.

A fast check, without a running server: the scrape config ``up --observe`` writes is valid, and every
PromQL expression of every dashboard parses (as a recording rule). The e2e test evaluates them too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from inferplane.observe import dashboards
from inferplane.observe.prometheus import write_config
from inferplane.observe.up_prometheus import scrape_jobs
from inferplane.up import PlatformConfig, plan

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def test_the_generated_scrape_config_is_valid(tmp_path: Path) -> None:
    the_plan = plan(PlatformConfig.model_validate({"replicas": 2, "server": {"engine": "sim"},
                                                   "observe": {"prometheus": {"scrape_interval_s": 0.25}}}), tmp_path)
    path = write_config(scrape_jobs(the_plan), the_plan.observe.prometheus, tmp_path)
    result = _promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    rules = []
    for name in ("pool", "picker", "jobs"):
        document = json.loads((ROOT / "deploy" / "grafana" / f"{name}.json").read_text())
        for i, (_, expr) in enumerate(dashboards.expressions(document)):
            rules.append({"record": f"inferplane:check:{name}_{i}", "expr": expr.replace("$__rate_interval", "1m")})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr
