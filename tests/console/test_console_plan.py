"""``inferplane up`` plans the console beside the other components and routes /console through Envoy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from inferplane.configfile import ConfigError
from inferplane.gateway.bootstrap import CONSOLE_CLUSTER, build_bootstrap
from inferplane.gateway.envoy import envoy_binary
from inferplane.up import PlatformConfig, plan


def _routes(bootstrap: dict) -> list[dict]:
    listener = bootstrap["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager["route_config"]["virtual_hosts"][0]["routes"]


def test_the_console_reads_this_platforms_parts_and_is_routed_at_slash_console(tmp_path: Path) -> None:
    config = PlatformConfig(picker={"metrics_port": 9191}, gateway={"admin_port": 9902}, batch={"port": 8091},
                            console={"port": 8071})
    the_plan = plan(config, tmp_path)
    console = the_plan.console
    assert console is not None and console.port == 8071
    assert console.picker_url == "http://127.0.0.1:9191"
    assert console.batch_url == "http://127.0.0.1:8091"
    assert console.envoy_admin_url == "http://127.0.0.1:9902"
    assert the_plan.gateway.console_address == "127.0.0.1:8071"

    bootstrap = build_bootstrap(the_plan.gateway)
    [route] = [r for r in _routes(bootstrap) if r.get("route", {}).get("cluster") == CONSOLE_CLUSTER]
    assert route["match"] == {"path_separated_prefix": "/console"}
    assert route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    endpoint = clusters[CONSOLE_CLUSTER]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["port_value"] == 8071

    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(bootstrap))
    checked = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_console_can_be_turned_off_or_pointed_elsewhere(tmp_path: Path) -> None:
    off = plan(PlatformConfig(console={"enabled": False}), tmp_path)
    assert off.console is None and off.gateway.console_address is None
    assert CONSOLE_CLUSTER not in {c["name"] for c in build_bootstrap(off.gateway)["static_resources"]["clusters"]}

    no_batch = plan(PlatformConfig(batch_api=False, console={"picker_url": "http://10.0.0.5:9090"}), tmp_path)
    assert no_batch.console.batch_url is None and no_batch.console.picker_url == "http://10.0.0.5:9090"


def test_a_bad_console_field_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"section 'console'[\s\S]*poll_interval_s"):
        plan(PlatformConfig(console={"poll_interval_s": 0}), tmp_path)
