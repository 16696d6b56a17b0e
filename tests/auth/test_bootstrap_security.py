"""The Envoy bootstrap with API keys (ext_authz) and TLS, checked by Envoy itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from secure_support import self_signed_cert

from inferplane.configfile import ConfigError
from inferplane.gateway.bootstrap import build_bootstrap
from inferplane.gateway.config import GatewayConfig
from inferplane.gateway.envoy import envoy_binary, write_bootstrap
from inferplane.up import PlatformConfig, plan


def http_filters(bootstrap: dict) -> list[str]:
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return [f["name"] for f in manager["http_filters"]]


def test_no_auth_no_tls_by_default() -> None:
    bootstrap = build_bootstrap(GatewayConfig(pool_endpoints=["127.0.0.1:8000"]))
    assert "envoy.filters.http.ext_authz" not in http_filters(bootstrap)
    assert "transport_socket" not in bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]


def test_auth_runs_before_the_picker_and_tls_terminates(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    config = GatewayConfig(pool_endpoints=["127.0.0.1:8000"], batch_api_address="127.0.0.1:8090",
                           auth_address="127.0.0.1:9010", tls={"cert_file": str(cert), "key_file": str(key)})
    bootstrap = build_bootstrap(config)
    names = http_filters(bootstrap)
    assert names.index("envoy.filters.http.ext_authz") < names.index("envoy.filters.http.ext_proc")
    chain = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
    assert chain["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    path = write_bootstrap(config, tmp_path)
    checked = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                              "--log-level", "error"], check=False, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_missing_certificate_names_the_field(tmp_path: Path) -> None:
    config = PlatformConfig(gateway={"tls": {"cert_file": str(tmp_path / "nope.pem"), "key_file": "x"}})
    with pytest.raises(ConfigError, match="(?s)section .gateway.*tls.cert_file: .*not a readable file"):
        plan(config, tmp_path)


def test_up_plans_auth_only_with_a_keys_file(tmp_path: Path) -> None:
    server = {"engine": "sim"}
    without = plan(PlatformConfig(server=server), tmp_path)
    assert without.auth is None and without.gateway.auth_address is None and without.batch.dispatch.api_key is None
    with_keys = plan(PlatformConfig(server=server, auth={"keys_file": str(tmp_path / "k.yaml"), "port": 9111}), tmp_path)
    assert with_keys.gateway.auth_address == "127.0.0.1:9111"
    assert with_keys.batch.dispatch.api_key == with_keys.auth.internal_key and with_keys.auth.internal_key


def test_unknown_methods_get_a_405_in_openai_format() -> None:
    import json

    bootstrap = build_bootstrap(GatewayConfig(pool_endpoints=["127.0.0.1:8000"]))
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    first = manager["route_config"]["virtual_hosts"][0]["routes"][0]
    assert first["match"]["headers"][0]["name"] == ":method" and first["direct_response"]["status"] == 405
    assert set(json.loads(first["direct_response"]["body"]["inline_string"])["error"]) == {
        "message", "type", "param", "code"}
