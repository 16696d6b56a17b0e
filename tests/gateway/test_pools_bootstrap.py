"""The bootstrap for several pools: accepted by Envoy, routed by the router's pool header to each pool's picker."""

from __future__ import annotations

import json
import subprocess

import pytest
from pydantic import ValidationError

from inferplane.gateway.bootstrap import DESTINATION_HEADER, build_bootstrap
from inferplane.gateway.config import GatewayConfig
from inferplane.gateway.envoy import envoy_binary
from inferplane.gateway.pools import (
    BODY_ROUTER_FILTER,
    GRPC_DESTINATION_HEADER,
    POOL_HEADER,
    grpc_address_map_lua,
)

CHAT = {"name": "chat", "picker_address": "127.0.0.1:9002", "endpoints": ["127.0.0.1:8000", "127.0.0.1:8001"]}
CLASSIC = {"name": "classic", "kind": "models", "picker_address": "127.0.0.1:9012", "endpoints": ["127.0.0.1:8100"],
           "grpc_endpoints": {"127.0.0.1:8100": "127.0.0.1:8200"}}


def _config(**extra) -> GatewayConfig:
    return GatewayConfig(pools=[CHAT, CLASSIC], router_address="127.0.0.1:9004", **extra)


def _hcm(bootstrap: dict) -> dict:
    return bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _routes(config: GatewayConfig) -> dict[str, dict]:
    return {route["name"]: route for route in _hcm(build_bootstrap(config))["route_config"]["virtual_hosts"][0]["routes"]}


def _picker_override(route: dict) -> dict:
    return route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["overrides"]


@pytest.mark.parametrize("mode", ["FailClose", "FailOpen"])
def test_envoy_accepts_the_pools_bootstrap(mode: str, tmp_path) -> None:
    config = _config(failure_mode=mode, batch_api_address="127.0.0.1:8090", console_address="127.0.0.1:8070",
                     auth_address="127.0.0.1:9010")
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(build_bootstrap(config)))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_filters_run_router_then_picker() -> None:
    filters = _hcm(build_bootstrap(_config(auth_address="127.0.0.1:9010")))["http_filters"]
    assert [f["name"] for f in filters] == [
        "envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", BODY_ROUTER_FILTER,
        "envoy.filters.http.ext_proc", "envoy.filters.http.lua", "envoy.filters.http.router"]
    removed = [m["remove"] for m in filters[0]["typed_config"]["mutations"]["request_mutations"]]
    assert {DESTINATION_HEADER, POOL_HEADER, "x-gateway-model-name", GRPC_DESTINATION_HEADER} == set(removed)
    router = filters[2]["typed_config"]
    assert router["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert router["processing_mode"]["response_header_mode"] == "SKIP"
    assert router["allow_mode_override"] is True


def test_each_pool_routes_to_its_own_picker_and_cluster() -> None:
    routes = _routes(_config())
    for pool, picker in (("chat", "endpoint_picker_chat"), ("classic", "endpoint_picker_classic")):
        picked, unpicked = routes[f"{pool}-picked"], routes[f"{pool}-unpicked"]
        assert {"name": POOL_HEADER, "string_match": {"exact": pool}} in picked["match"]["headers"]
        assert {"name": DESTINATION_HEADER, "present_match": True} in picked["match"]["headers"]
        assert picked["route"]["cluster"] == f"inference_pool_{pool}"
        # the picker reads its per-route configuration while the request is still unpicked
        for route in (picked, unpicked):
            assert _picker_override(route)["grpc_service"]["envoy_grpc"]["cluster_name"] == picker
        assert unpicked["direct_response"]["status"] == 503
    # requests the router did not see (FailOpen) belong to the default pool
    assert "headers" not in routes["chat-unpicked-default"]["match"]


def test_kserve_routes_skip_bodies_and_grpc_maps_addresses() -> None:
    routes = _routes(_config())
    v2 = routes["classic-v2-unpicked"]
    assert v2["match"]["path_separated_prefix"] == "/v2"
    assert _picker_override(v2)["processing_mode"]["request_body_mode"] == "NONE"
    grpc = routes["classic-grpc-picked"]
    assert grpc["match"]["prefix"] == "/inference.GRPCInferenceService/"
    assert grpc["route"]["cluster"] == "inference_pool_classic_grpc"
    assert "127.0.0.1:8200" in grpc["typed_per_filter_config"]["envoy.filters.http.lua"]["source_code"]["inline_string"]
    assert "chat-grpc-picked" not in routes and "chat-v2-picked" not in routes
    clusters = {c["name"]: c for c in build_bootstrap(_config())["static_resources"]["clusters"]}
    lb = clusters["inference_pool_classic_grpc"]["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert lb["typed_config"]["override_host_sources"] == [{"header": GRPC_DESTINATION_HEADER}]
    assert "http2_protocol_options" in json.dumps(clusters["inference_pool_classic_grpc"])
    assert {"body_router", "endpoint_picker_chat", "endpoint_picker_classic", "inference_pool_chat"} <= set(clusters)


def test_batch_console_and_unknown_methods_skip_router_and_picker() -> None:
    routes = _routes(_config(batch_api_address="127.0.0.1:8090", console_address="127.0.0.1:8070"))
    for name in ("batch-api-v1-files", "console", "unknown-method"):
        per_filter = routes[name]["typed_per_filter_config"]
        assert per_filter[BODY_ROUTER_FILTER]["disabled"] and per_filter["envoy.filters.http.ext_proc"]["disabled"]


def test_fail_open_round_robins_over_the_pool() -> None:
    routes = _routes(_config(failure_mode="FailOpen"))
    assert routes["classic-unpicked"]["route"]["cluster"] == "inference_pool_classic"
    assert routes["classic-grpc-unpicked"]["route"]["cluster"] == "inference_pool_classic_grpc"


def test_lua_keeps_the_picked_order() -> None:
    lua = grpc_address_map_lua(GatewayConfig.model_validate({"pools": [CLASSIC], "router_address": "127.0.0.1:1"}).pools[0])
    assert '["127.0.0.1:8100"] = "127.0.0.1:8200"' in lua
    assert "table.concat(out" in lua


def test_pool_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="router_address"):
        GatewayConfig(pools=[CHAT])
    with pytest.raises(ValidationError, match=r"pools\[1\].name: pool 'chat' is listed twice"):
        GatewayConfig(pools=[CHAT, CHAT], router_address="127.0.0.1:9004")
    with pytest.raises(ValidationError, match="grpc_endpoints: only a models pool"):
        GatewayConfig(pools=[{**CHAT, "grpc_endpoints": {"127.0.0.1:8000": "127.0.0.1:8200",
                                                          "127.0.0.1:8001": "127.0.0.1:8201"}}],
                      router_address="127.0.0.1:9004")
    with pytest.raises(ValidationError, match="is not one of the pool's endpoints"):
        GatewayConfig(pools=[{**CLASSIC, "grpc_endpoints": {"127.0.0.1:9999": "127.0.0.1:8200"}}],
                      router_address="127.0.0.1:9004")
    with pytest.raises(ValidationError, match="endpoint_selection: several pools need override_host"):
        _config(endpoint_selection="original_dst")
    with pytest.raises(ValidationError, match="router_address: the body-based router needs"):
        GatewayConfig(pool_endpoints=["127.0.0.1:8000"], router_address="127.0.0.1:9004")
