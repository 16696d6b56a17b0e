"""Several pools behind one Envoy: body-based routing to a pool, then that pool's endpoint picker.

The Gateway API Inference Extension's shape: a body-based router (an ext_proc service, see
:mod:`inferplane.gateway.router`) reads the model a request names, sets ``x-gateway-model-name`` and
``x-inferplane-pool`` and clears the route cache; the routes match the pool header, and an
``ExtProcPerRoute`` override points the picker filter at that pool's picker (one EPP per pool).

Per pool, in match order:

- ``models`` pools with gRPC: ``/inference.GRPCInferenceService/`` to the pool's HTTP/2 cluster. The
  picker names replicas by their HTTP address; a Lua filter on these routes rewrites that list to the
  same replicas' gRPC addresses (``x-inferplane-grpc-endpoint``) for the gRPC cluster's override-host
  balancer.
- ``models`` pools: ``/v2`` (KServe v2 REST) to the pool. The picker routes these on the headers alone
  (request and response bodies are not sent to it): the model is in the path and tensors, often
  binary, need no parsing.
- everything else for the pool (OpenAI routes: chat, completions, embeddings).

Each of these has a "picked" route (the picker set the destination) and an "unpicked" one that is
matched while the picker runs: the picker filter takes its per-route configuration from the route
matched when it starts, before the destination exists. The default (first) pool's routes are
repeated last without the pool-header match, for requests the router did not see (FailOpen).
"""

from __future__ import annotations

from typing import Any

from inferplane.gateway.bootstrap import (
    DESTINATION_HEADER,
    EXT_PROC_PER_ROUTE,
    MODEL_NAME_HEADER,
    PICKER_FILTER,
    ROUTER_FILTER,
    grpc_service_cluster,
    header_scrub,
    override_host_cluster,
    picked_route,
    picker_filter_config,
    route_action,
    unpicked_route,
)
from inferplane.gateway.config import GatewayConfig, GatewayPool

#: Set by the body-based router: the pool a request goes to, and the model it names (GIE's BBR header).
POOL_HEADER = "x-inferplane-pool"
MODEL_HEADER = MODEL_NAME_HEADER
#: Set by the Lua filter on gRPC routes: the picked replicas' gRPC addresses.
GRPC_DESTINATION_HEADER = "x-inferplane-grpc-endpoint"
BODY_ROUTER_FILTER = "inferplane.body_router"
BODY_ROUTER_CLUSTER = "body_router"
LUA_FILTER = "envoy.filters.http.lua"
GRPC_SERVICE_PREFIX = "/inference.GRPCInferenceService/"
OIP_REST_PREFIX = "/v2"


def picker_cluster(pool: GatewayPool) -> str:
    return f"endpoint_picker_{pool.name}"


def pool_cluster(pool: GatewayPool) -> str:
    return f"inference_pool_{pool.name}"


def grpc_cluster(pool: GatewayPool) -> str:
    return f"inference_pool_{pool.name}_grpc"


def _body_router_filter(config: GatewayConfig) -> dict[str, Any]:
    """The router sees request headers and, when it asks for it, the buffered body; never the response."""
    return {
        "name": BODY_ROUTER_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": BODY_ROUTER_CLUSTER},
                             "timeout": f"{config.grpc_timeout_s:g}s"},
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": "SKIP",
                "request_body_mode": "BUFFERED",
                "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            # The router answers from memory; a miss refreshes its model list once (bounded by its own timeout).
            "message_timeout": f"{config.grpc_timeout_s:g}s",
            "failure_mode_allow": config.failure_mode == "FailOpen",
            # Requests routed on their headers (a path naming the model, GET) tell Envoy not to buffer the body.
            "allow_mode_override": True,
            "status_on_error": {"code": "ServiceUnavailable"},
        },
    }


def pool_filters(config: GatewayConfig, auth_filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Header scrub → API keys → body-based router → the picker (per-route pool) → [Lua] → router."""
    scrub = header_scrub((DESTINATION_HEADER, POOL_HEADER, MODEL_HEADER, GRPC_DESTINATION_HEADER))
    default = config.pools[0]
    picker = {"name": PICKER_FILTER, "typed_config": picker_filter_config(config, picker_cluster(default))}
    filters = [scrub, *auth_filters, _body_router_filter(config), picker]
    if any(pool.grpc_endpoints for pool in config.pools):
        # No default code: the filter only runs where a gRPC route gives it its address map.
        filters.append({"name": LUA_FILTER, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}})
    return [*filters, ROUTER_FILTER]


def _picker_override(config: GatewayConfig, pool: GatewayPool, headers_only: bool) -> dict[str, Any]:
    """``ExtProcPerRoute`` sending the picker's stream to ``pool``'s picker (bodies skipped when ``headers_only``)."""
    overrides: dict[str, Any] = {
        "grpc_service": {"envoy_grpc": {"cluster_name": picker_cluster(pool)},
                         "timeout": f"{config.grpc_timeout_s:g}s"},
    }
    if headers_only:
        overrides["processing_mode"] = {
            "request_header_mode": "SEND",
            "response_header_mode": "SEND",
            "request_body_mode": "NONE",
            "response_body_mode": "NONE",
            "request_trailer_mode": "SKIP",
            # gRPC answers end with trailers: the picker learns the request is over.
            "response_trailer_mode": "SEND",
        }
    return {PICKER_FILTER: {"@type": EXT_PROC_PER_ROUTE, "overrides": overrides}}


def grpc_address_map_lua(pool: GatewayPool) -> str:
    """Lua rewriting the picked HTTP addresses (in order) to the same replicas' gRPC addresses."""
    table = ", ".join(f'["{rest}"] = "{grpc}"' for rest, grpc in sorted(pool.grpc_endpoints.items()))
    return (
        f"local grpc = {{{table}}}\n"
        "function envoy_on_request(handle)\n"
        f'  local picked = handle:headers():get("{DESTINATION_HEADER}")\n'
        "  if picked == nil then return end\n"
        "  local out = {}\n"
        '  for address in string.gmatch(picked, "[^,%s]+") do\n'
        "    out[#out + 1] = grpc[address] or address\n"
        "  end\n"
        f'  handle:headers():replace("{GRPC_DESTINATION_HEADER}", table.concat(out, ","))\n'
        "end\n"
    )


def _routes_of(config: GatewayConfig, pool: GatewayPool, by_header: bool) -> list[dict[str, Any]]:
    """One pool's routes; ``by_header``: only requests the router sent to this pool."""
    suffix = "" if by_header else "-default"
    headers = [{"name": POOL_HEADER, "string_match": {"exact": pool.name}}] if by_header else []
    routes: list[dict[str, Any]] = []
    if pool.grpc_endpoints:
        match = {"prefix": GRPC_SERVICE_PREFIX, "headers": headers}
        action = route_action(config, grpc_cluster(pool))
        per_filter = _picker_override(config, pool, headers_only=True)
        lua = {LUA_FILTER: {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                            "source_code": {"inline_string": grpc_address_map_lua(pool)}}}
        routes.append(picked_route(f"{pool.name}-grpc-picked{suffix}", match, action, per_filter={**per_filter, **lua}))
        routes.append(unpicked_route(config, f"{pool.name}-grpc-unpicked{suffix}", match, action, per_filter))
    action = route_action(config, pool_cluster(pool))
    if pool.kind == "models":
        match = {"path_separated_prefix": OIP_REST_PREFIX, "headers": headers}
        per_filter = _picker_override(config, pool, headers_only=True)
        routes.append(picked_route(f"{pool.name}-v2-picked{suffix}", match, action, per_filter=per_filter))
        routes.append(unpicked_route(config, f"{pool.name}-v2-unpicked{suffix}", match, action, per_filter))
    match = {"prefix": "/", "headers": headers}
    per_filter = _picker_override(config, pool, headers_only=False)
    routes.append(picked_route(f"{pool.name}-picked{suffix}", match, action, per_filter=per_filter))
    routes.append(unpicked_route(config, f"{pool.name}-unpicked{suffix}", match, action, per_filter))
    for route in routes:
        if not route["match"]["headers"]:
            del route["match"]["headers"]
    return routes


def pool_routes(config: GatewayConfig) -> list[dict[str, Any]]:
    """Every pool's routes (matched on the router's pool header), then the default pool's without it."""
    routes = [route for pool in config.pools for route in _routes_of(config, pool, by_header=True)]
    return [*routes, *_routes_of(config, config.pools[0], by_header=False)]


def pool_clusters(config: GatewayConfig) -> list[dict[str, Any]]:
    """The router's and each pool's picker cluster, each pool's servers (and gRPC ports)."""
    assert config.router_address is not None
    clusters = [grpc_service_cluster(BODY_ROUTER_CLUSTER, config.router_address, config)]
    for pool in config.pools:
        clusters.append(grpc_service_cluster(picker_cluster(pool), pool.picker_address, config))
        clusters.append(override_host_cluster(pool_cluster(pool), pool.endpoints, config))
        if pool.grpc_endpoints:
            grpc_addresses = [pool.grpc_endpoints[rest] for rest in pool.endpoints]
            clusters.append(override_host_cluster(grpc_cluster(pool), grpc_addresses, config,
                                                  sources=[{"header": GRPC_DESTINATION_HEADER}], http2=True))
    return clusters
