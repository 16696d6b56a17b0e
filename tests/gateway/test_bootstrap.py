"""The generated Envoy bootstrap: accepted by the real Envoy binary and shaped as GIE expects."""

from __future__ import annotations

import json
import subprocess

import pytest
from pydantic import ValidationError

from inferplane.gateway.bootstrap import DESTINATION_HEADER, build_bootstrap
from inferplane.gateway.config import GatewayConfig
from inferplane.gateway.envoy import envoy_binary, envoy_command

POOL = ["127.0.0.1:8000", "127.0.0.1:8001"]


def _filters(bootstrap: dict) -> list[dict]:
    listener = bootstrap["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


def _routes(bootstrap: dict) -> list[dict]:
    listener = bootstrap["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]


def _route(bootstrap: dict, name: str) -> dict:
    return next(route for route in _routes(bootstrap) if route["name"] == name)


def _clusters(bootstrap: dict) -> dict[str, dict]:
    return {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}


@pytest.mark.parametrize(
    "config",
    [
        GatewayConfig(pool_endpoints=POOL),
        GatewayConfig(pool_endpoints=POOL, failure_mode="FailOpen"),
        GatewayConfig(endpoint_selection="original_dst"),
        GatewayConfig(endpoint_selection="original_dst", failure_mode="FailOpen", pool_endpoints=POOL, access_log=True),
    ],
    ids=["override-host", "override-host-failopen", "original-dst", "original-dst-failopen"],
)
def test_envoy_accepts_bootstrap(config: GatewayConfig, tmp_path) -> None:
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(build_bootstrap(config)))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_ext_proc_follows_gie_processing_mode() -> None:
    ext_proc = next(f for f in _filters(build_bootstrap(GatewayConfig(pool_endpoints=POOL))) if f["name"] == "envoy.filters.http.ext_proc")
    cfg = ext_proc["typed_config"]
    assert cfg["processing_mode"] == {
        "request_header_mode": "SEND",
        "response_header_mode": "SEND",
        "request_body_mode": "FULL_DUPLEX_STREAMED",
        "response_body_mode": "FULL_DUPLEX_STREAMED",
        "request_trailer_mode": "SEND",
        "response_trailer_mode": "SEND",
    }
    assert cfg["message_timeout"] == "1000s"
    assert cfg["grpc_service"]["timeout"] == "10s"
    assert cfg["failure_mode_allow"] is False


def test_failure_mode_maps_to_failure_mode_allow() -> None:
    def allow(mode: str) -> bool:
        filters = _filters(build_bootstrap(GatewayConfig(pool_endpoints=POOL, failure_mode=mode)))
        return next(f for f in filters if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]["failure_mode_allow"]

    assert allow("FailOpen") is True
    assert allow("FailClose") is False


def test_client_cannot_choose_the_endpoint() -> None:
    names = [f["name"] for f in _filters(build_bootstrap(GatewayConfig(pool_endpoints=POOL)))]
    # The destination and model-name headers are scrubbed before the picker runs; the router comes last.
    assert names == ["envoy.filters.http.header_mutation", "envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    scrub = _filters(build_bootstrap(GatewayConfig(pool_endpoints=POOL)))[0]["typed_config"]
    assert scrub["mutations"]["request_mutations"] == [{"remove": DESTINATION_HEADER}, {"remove": "x-gateway-model-name"}]


def test_original_dst_cluster_is_keyed_on_destination_header() -> None:
    clusters = _clusters(build_bootstrap(GatewayConfig(endpoint_selection="original_dst")))
    cluster = clusters["original_destination_cluster"]
    assert cluster["type"] == "ORIGINAL_DST"
    assert cluster["lb_policy"] == "CLUSTER_PROVIDED"
    assert cluster["original_dst_lb_config"] == {"use_http_header": True, "http_header_name": DESTINATION_HEADER}
    route = _route(build_bootstrap(GatewayConfig(endpoint_selection="original_dst")), "picked-endpoint")
    assert route["route"]["cluster"] == "original_destination_cluster"
    assert route["route"]["timeout"] == "0s"  # streams may last minutes


def test_override_host_pool_reads_header_and_metadata() -> None:
    pool = _clusters(build_bootstrap(GatewayConfig(pool_endpoints=POOL)))["inference_pool"]
    policy = pool["load_balancing_policy"]["policies"][0]["typed_extension_config"]["typed_config"]
    assert policy["override_host_sources"] == [
        {"header": DESTINATION_HEADER},
        {"metadata": {"key": "envoy.lb", "path": [{"key": DESTINATION_HEADER}]}},
    ]
    addresses = [
        e["endpoint"]["address"]["socket_address"] for e in pool["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert addresses == [{"address": "127.0.0.1", "port_value": 8000}, {"address": "127.0.0.1", "port_value": 8001}]


def test_fail_close_without_pick_is_503_openai_error() -> None:
    unpicked = _route(build_bootstrap(GatewayConfig(pool_endpoints=POOL)), "no-endpoint")
    assert unpicked["direct_response"]["status"] == 503
    body = json.loads(unpicked["direct_response"]["body"]["inline_string"])
    assert body["error"]["code"] == 503 and body["error"]["message"]


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="pool_endpoints"):
        GatewayConfig(pool_endpoints=["localhost"])
    with pytest.raises(ValidationError, match="pool_endpoints must list"):
        GatewayConfig()
    with pytest.raises(ValidationError, match="failure_mode"):
        GatewayConfig(pool_endpoints=POOL, failure_mode="Sometimes")


def test_envoy_command_disables_hot_restart(tmp_path) -> None:
    command = envoy_command(GatewayConfig(pool_endpoints=POOL), tmp_path / "envoy.json")
    assert "--disable-hot-restart" in command
    assert command[command.index("-c") + 1] == str(tmp_path / "envoy.json")


def test_picker_by_service_name_is_resolved_by_dns() -> None:
    by_ip = _clusters(build_bootstrap(GatewayConfig(pool_endpoints=POOL)))["endpoint_picker"]
    by_name = _clusters(
        build_bootstrap(GatewayConfig(endpoint_selection="original_dst", picker_address="pool-epp.default.svc:9002"))
    )["endpoint_picker"]
    assert by_ip["type"] == "STATIC"
    assert by_name["type"] == "STRICT_DNS"
