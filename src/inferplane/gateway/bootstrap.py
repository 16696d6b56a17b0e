"""The Envoy bootstrap: listener → header scrub → ext_proc (the picker) → router → ORIGINAL_DST.

It follows the Gateway API Inference Extension reference bootstrap (design.md §1): the picker
answers with ``x-gateway-destination-endpoint`` and ``clear_route_cache``; the route that matches
requests carrying that header sends them to the picked endpoint, either through the override-host
load balancer over the pool's known endpoints (ordered fallbacks) or through an ``ORIGINAL_DST``
cluster (the reference). Requests without the header (only possible when the picker is skipped
under ``FailOpen``) go round-robin over the pool, or get a 503 under ``FailClose``.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from inferplane.gateway.config import GatewayConfig, split_host_port

DESTINATION_HEADER = "x-gateway-destination-endpoint"
MODEL_NAME_HEADER = "x-gateway-model-name"
PICKER_CLUSTER = "endpoint_picker"
ORIGINAL_DST_CLUSTER = "original_destination_cluster"
POOL_CLUSTER = "inference_pool"
BATCH_API_CLUSTER = "batch_api"
AUTH_CLUSTER = "ext_authz"
BATCH_API_PREFIXES = ("/v1/files", "/v1/batches")
CONSOLE_CLUSTER = "console"
CONSOLE_PREFIX = "/console"

_HIGH_LIMITS = {
    "thresholds": [
        {
            "max_connections": 40000,
            "max_pending_requests": 40000,
            "max_requests": 40000,
            "max_retries": 1024,
        }
    ]
}


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _socket_address(address: str) -> dict[str, Any]:
    host, port = split_host_port(address)
    return {"socket_address": {"address": host, "port_value": port}}


def _openai_error_body(message: str, code: int) -> str:
    return json.dumps(
        {"error": {"message": message, "type": "ServiceUnavailableError", "param": None, "code": code}}
    )


PICKER_FILTER = "envoy.filters.http.ext_proc"
EXT_PROC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"


def picker_filter_config(config: GatewayConfig, cluster: str) -> dict[str, Any]:
    """The endpoint picker's ext_proc filter (GIE processing mode) calling ``cluster``."""
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster}, "timeout": _duration(config.grpc_timeout_s)},
        "processing_mode": {
            "request_header_mode": "SEND",
            "response_header_mode": "SEND",
            "request_body_mode": config.request_body_mode,
            "response_body_mode": config.response_body_mode,
            "request_trailer_mode": "SEND",
            "response_trailer_mode": "SEND",
        },
        "message_timeout": _duration(config.message_timeout_s),
        "failure_mode_allow": config.failure_mode == "FailOpen",
        "allow_mode_override": True,
        "status_on_error": {"code": "ServiceUnavailable"},
    }


def header_scrub(headers: tuple[str, ...]) -> dict[str, Any]:
    """A filter removing ``headers`` from every request: only the gateway's own services set them."""
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": header} for header in headers]},
        },
    }


ROUTER_FILTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def _http_filters(config: GatewayConfig) -> list[dict[str, Any]]:
    if config.pools:
        from inferplane.gateway.pools import pool_filters

        return pool_filters(config, _auth_filters(config))
    # A client must never choose the endpoint itself: only the picker sets the destination, and only a
    # body-based router (none here) the model-name header the picker reads when it does not parse the body.
    scrub = header_scrub((DESTINATION_HEADER, MODEL_NAME_HEADER))
    ext_proc = {"name": PICKER_FILTER, "typed_config": picker_filter_config(config, PICKER_CLUSTER)}
    return [scrub, *_auth_filters(config), ext_proc, ROUTER_FILTER]


def _auth_filters(config: GatewayConfig) -> list[dict[str, Any]]:
    """API keys (ext_authz, before the picker) on every route; it reads the body for the model name."""
    if not config.auth_address:
        return []
    return [
        {
            "name": "envoy.filters.http.ext_authz",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                "grpc_service": {"envoy_grpc": {"cluster_name": AUTH_CLUSTER}, "timeout": "5s"},
                "transport_api_version": "V3",
                "failure_mode_allow": False,
                "status_on_error": {"code": "ServiceUnavailable"},
                "with_request_body": {
                    "max_request_bytes": config.auth_max_body_bytes,
                    "allow_partial_message": False,
                    "pack_as_bytes": True,
                },
                "clear_route_cache": False,
            },
        }
    ]


def _json_error(message: str, type_: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


#: Envoy response flags of upstream failures (connect failure, reset, timeout, overflow, no healthy host...).
_UPSTREAM_FAILURE_FLAGS = ["UF", "UH", "UO", "URX", "UT", "UC", "UPE", "NC", "UMSDR"]


def _local_reply_config() -> dict[str, Any]:
    """Envoy's own replies in OpenAI error JSON (the picker and auth service write theirs already)."""
    too_large = _json_error("request body is too large", "invalid_request_error", "request_too_large")
    auth_down = _json_error("the authorization service is unavailable", "service_unavailable",
                            "service_unavailable")
    malformed = _json_error("the HTTP request could not be processed (%RESPONSE_CODE_DETAILS%)",
                            "invalid_request_error", "%RESPONSE_CODE%")
    upstream = _json_error("upstream error: %LOCAL_REPLY_BODY%", "service_unavailable", "%RESPONSE_CODE%")
    return {
        "mappers": [
            {
                "filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 413,
                                                                                         "runtime_key": "ip_413"}}}},
                "body_format_override": {"json_format": too_large},
            },
            {
                "filter": {"and_filter": {"filters": [
                    {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 503,
                                                                                 "runtime_key": "ip_503"}}}},
                    {"response_flag_filter": {"flags": ["UAEX"]}},
                ]}},
                "body_format_override": {"json_format": auth_down},
            },
            {
                # A request Envoy cannot parse (a protocol error): its own 4xx, with an empty body otherwise.
                "filter": {"response_flag_filter": {"flags": ["DPE"]}},
                "body_format_override": {"json_format": malformed},
            },
            {
                # A model server or the Batch API failed before answering: Envoy's own 5xx text, as JSON.
                "filter": {"response_flag_filter": {"flags": _UPSTREAM_FAILURE_FLAGS}},
                "body_format_override": {"json_format": upstream},
            },
        ]
    }


def route_action(config: GatewayConfig, cluster: str) -> dict[str, Any]:
    """Forward to ``cluster``: no whole-request timeout (streams), idle timeout, optional retries."""
    action: dict[str, Any] = {
        "cluster": cluster,
        "timeout": _duration(config.route_timeout_s),
        "idle_timeout": _duration(config.stream_idle_timeout_s),
    }
    if config.endpoint_selection == "override_host" and config.num_retries:
        # Only failures before any response header came back (a refused connection, or a pooled
        # connection to a server that died): the client never sees a partial answer twice.
        action["retry_policy"] = {
            "retry_on": "connect-failure,refused-stream,reset",
            "num_retries": config.num_retries,
        }
    return action


def picked_route(name: str, match: dict[str, Any], action: dict[str, Any], header: str = DESTINATION_HEADER,
                 per_filter: dict[str, Any] | None = None) -> dict[str, Any]:
    """Requests the picker answered (``header`` present) go to ``action``'s cluster."""
    headers = [*match.get("headers", []), {"name": header, "present_match": True}]
    route = {"name": name, "match": {**match, "headers": headers}, "route": action}
    if per_filter:
        route["typed_per_filter_config"] = per_filter
    return route


def unpicked_route(config: GatewayConfig, name: str, match: dict[str, Any], action: dict[str, Any],
                   per_filter: dict[str, Any] | None = None) -> dict[str, Any]:
    """No endpoint was picked: round-robin over the pool under FailOpen (the picker was skipped), else 503."""
    if config.failure_mode == "FailOpen" and (config.pool_endpoints or config.pools):
        # The picker was skipped: round-robin over the pool (override-host's fallback policy).
        route: dict[str, Any] = {"name": name, "match": match, "route": action}
    else:
        route = {
            "name": name,
            "match": match,
            "direct_response": {
                "status": 503,
                "body": {"inline_string": _openai_error_body("no endpoint was picked for this request", 503)},
            },
            "response_headers_to_add": [
                {
                    "header": {"key": "content-type", "value": "application/json"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        }
    if per_filter:
        route["typed_per_filter_config"] = per_filter
    return route


def _routes(config: GatewayConfig) -> list[dict[str, Any]]:
    fixed = [_unknown_method_route(config), *_batch_api_routes(config), *_console_routes(config)]
    if config.pools:
        from inferplane.gateway.pools import pool_routes

        return [*fixed, *pool_routes(config)]
    cluster = POOL_CLUSTER if config.endpoint_selection == "override_host" else ORIGINAL_DST_CLUSTER
    action = route_action(config, cluster)
    picked = picked_route("picked-endpoint", {"prefix": "/"}, action)
    unpicked = unpicked_route(config, "fail-open" if config.failure_mode == "FailOpen" and config.pool_endpoints
                              else "no-endpoint", {"prefix": "/"}, {**action, "cluster": POOL_CLUSTER})
    return [*fixed, picked, unpicked]


def skip_services(config: GatewayConfig) -> dict[str, Any]:
    """Per-route configuration switching off the picker (and, with several pools, the body-based router)."""
    skipped = {PICKER_FILTER: {"@type": EXT_PROC_PER_ROUTE, "disabled": True}}
    if config.pools:
        from inferplane.gateway.pools import BODY_ROUTER_FILTER

        skipped[BODY_ROUTER_FILTER] = {"@type": EXT_PROC_PER_ROUTE, "disabled": True}
    return skipped


#: Methods the public API uses; others (e.g. QUERY, which the model servers' HTTP parser rejects with
#: an empty 400) get a 405 in OpenAI error JSON at the gateway.
KNOWN_METHODS = ("GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH")


def _unknown_method_route(config: GatewayConfig) -> dict[str, Any]:
    return {
        "name": "unknown-method",
        "match": {
            "prefix": "/",
            "headers": [{"name": ":method", "invert_match": True,
                         "string_match": {"safe_regex": {"regex": "|".join(KNOWN_METHODS)}}}],
        },
        "direct_response": {
            "status": 405,
            "body": {"inline_string": json.dumps(_json_error("method not allowed", "invalid_request_error",
                                                             "method_not_allowed"))},
        },
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": "application/json"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
        "typed_per_filter_config": skip_services(config),
    }


def _batch_api_routes(config: GatewayConfig) -> list[dict[str, Any]]:
    """Files and batches go to the Batch API server; the picker is skipped (uploads are multipart)."""
    if not config.batch_api_address:
        return []
    skip_picker = skip_services(config)
    if config.auth_address:
        # Uploads may be far larger than the body ext_authz reads; files and batches carry no model.
        skip_picker["envoy.filters.http.ext_authz"] = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"disable_request_body_buffering": True},
        }
    return [
        {
            "name": f"batch-api{prefix.replace('/', '-')}",
            "match": {"prefix": prefix},
            "route": {"cluster": BATCH_API_CLUSTER, "timeout": "300s"},
            "typed_per_filter_config": skip_picker,
        }
        for prefix in BATCH_API_PREFIXES
    ]


def _console_routes(config: GatewayConfig) -> list[dict[str, Any]]:
    """The web console (page and JSON API) under /console, skipping the picker."""
    if not config.console_address:
        return []
    return [
        {
            "name": "console",
            "match": {"path_separated_prefix": CONSOLE_PREFIX},
            "route": {"cluster": CONSOLE_CLUSTER, "timeout": "30s"},
            "typed_per_filter_config": skip_services(config),
        }
    ]


def _listener(config: GatewayConfig) -> dict[str, Any]:
    connection_manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "inference_gateway",
        "codec_type": "AUTO",
        "stream_idle_timeout": _duration(config.stream_idle_timeout_s),
        "request_timeout": "0s",
        "generate_request_id": True,
        "preserve_external_request_id": True,
        "route_config": {
            "name": "inference_route",
            "virtual_hosts": [{"name": "inference", "domains": ["*"], "routes": _routes(config)}],
        },
        "http_filters": _http_filters(config),
        "local_reply_config": _local_reply_config(),
    }
    if config.access_log:
        connection_manager["access_log"] = [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    "log_format": {
                        "json_format": {
                            "time": "%START_TIME%",
                            "request_id": "%REQ(X-REQUEST-ID)%",
                            "method": "%REQ(:METHOD)%",
                            "path": "%REQ(:PATH)%",
                            "status": "%RESPONSE_CODE%",
                            "upstream": "%UPSTREAM_HOST%",
                            "duration_ms": "%DURATION%",
                            "flags": "%RESPONSE_FLAGS%",
                        }
                    },
                },
            }
        ]
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": connection_manager}]
    }
    if config.tls is not None:
        chain["transport_socket"] = _tls_transport_socket(config)
    return {
        "name": "inference_listener",
        "address": _socket_address(f"{config.host}:{config.port}"),
        "per_connection_buffer_limit_bytes": config.max_request_bytes,
        "filter_chains": [chain],
    }


def _tls_transport_socket(config: GatewayConfig) -> dict[str, Any]:
    """TLS termination with the configured certificate (HTTP/2 and HTTP/1.1 by ALPN)."""
    assert config.tls is not None
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": config.tls.cert_file},
                        "private_key": {"filename": config.tls.key_file},
                    }
                ],
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            },
        },
    }


def _load_assignment(name: str, addresses: list[str]) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(a)}} for a in addresses]}],
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_HTTP2 = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


def grpc_service_cluster(name: str, address: str, config: GatewayConfig) -> dict[str, Any]:
    """A gRPC (HTTP/2) cluster of one service; a DNS name (a Kubernetes Service) is resolved strictly."""
    by_name = not _is_ip(split_host_port(address)[0])
    return {
        "name": name,
        "type": "STRICT_DNS" if by_name else "STATIC",
        **({"dns_lookup_family": "V4_PREFERRED"} if by_name else {}),
        "connect_timeout": _duration(config.connect_timeout_s),
        "circuit_breakers": _HIGH_LIMITS,
        "load_assignment": _load_assignment(name, [address]),
        "typed_extension_protocol_options": _HTTP2,
    }


def _picker_cluster(config: GatewayConfig) -> dict[str, Any]:
    """The picker's gRPC (HTTP/2) cluster."""
    return grpc_service_cluster(PICKER_CLUSTER, config.picker_address, config)


def _grpc_cluster(name: str, address: str, config: GatewayConfig) -> dict[str, Any]:
    """A static HTTP/2 cluster of one gRPC service."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": _duration(config.connect_timeout_s),
        "circuit_breakers": _HIGH_LIMITS,
        "load_assignment": _load_assignment(name, [address]),
        "typed_extension_protocol_options": _HTTP2,
    }


def override_host_cluster(name: str, endpoints: list[str], config: GatewayConfig,
                          sources: list[dict[str, Any]] | None = None, http2: bool = False) -> dict[str, Any]:
    """A pool's known endpoints; the override-host policy follows the picker's ordered list.

    ``sources`` say where the list is read (default: the destination header, then ``envoy.lb``
    metadata); without one, or naming no endpoint of the cluster, requests go round-robin.
    """
    round_robin = {
        "name": "envoy.load_balancing_policies.round_robin",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"
        },
    }
    override_host = {
        "name": "envoy.load_balancing_policies.override_host",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
            "override_host_sources": sources or [
                {"header": DESTINATION_HEADER},
                {"metadata": {"key": "envoy.lb", "path": [{"key": DESTINATION_HEADER}]}},
            ],
            "fallback_policy": {"policies": [{"typed_extension_config": round_robin}]},
        },
    }
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": _duration(config.connect_timeout_s),
        "circuit_breakers": _HIGH_LIMITS,
        "load_assignment": _load_assignment(name, endpoints),
        "load_balancing_policy": {"policies": [{"typed_extension_config": override_host}]},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = _HTTP2
    return cluster


def _pool_cluster(config: GatewayConfig) -> dict[str, Any]:
    """The pool's known endpoints; the override-host policy follows the picker's ordered list."""
    return override_host_cluster(POOL_CLUSTER, config.pool_endpoints, config)


def _original_dst_cluster(config: GatewayConfig) -> dict[str, Any]:
    """The GIE reference cluster: connect to the address the picker put in the header."""
    return {
        "name": ORIGINAL_DST_CLUSTER,
        "type": "ORIGINAL_DST",
        "connect_timeout": _duration(config.connect_timeout_s),
        "lb_policy": "CLUSTER_PROVIDED",
        "original_dst_lb_config": {"use_http_header": True, "http_header_name": DESTINATION_HEADER},
        "circuit_breakers": _HIGH_LIMITS,
    }


def _clusters(config: GatewayConfig) -> list[dict[str, Any]]:
    if config.pools:
        from inferplane.gateway.pools import pool_clusters

        clusters = pool_clusters(config)
    else:
        clusters = [_picker_cluster(config)]
    if config.endpoint_selection == "original_dst":
        clusters.append(_original_dst_cluster(config))
    if config.pool_endpoints and not config.pools:
        clusters.append(_pool_cluster(config))
    if config.auth_address:
        clusters.append(_grpc_cluster(AUTH_CLUSTER, config.auth_address, config))
    if config.batch_api_address:
        clusters.append(
            {
                "name": BATCH_API_CLUSTER,
                "type": "STATIC",
                "connect_timeout": _duration(config.connect_timeout_s),
                "load_assignment": _load_assignment(BATCH_API_CLUSTER, [config.batch_api_address]),
            }
        )
    if config.console_address:
        clusters.append(
            {
                "name": CONSOLE_CLUSTER,
                "type": "STATIC",
                "connect_timeout": _duration(config.connect_timeout_s),
                "load_assignment": _load_assignment(CONSOLE_CLUSTER, [config.console_address]),
            }
        )
    return clusters


def build_bootstrap(config: GatewayConfig) -> dict[str, Any]:
    """The whole Envoy bootstrap as a JSON-compatible dict."""
    return {
        "node": {"id": "inferplane-gateway", "cluster": "inferplane"},
        "admin": {"address": _socket_address(f"{config.admin_host}:{config.admin_port}")},
        "static_resources": {"listeners": [_listener(config)], "clusters": _clusters(config)},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 50000,
                    },
                }
            ]
        },
    }
