"""Stand-in model servers for the picker benchmark: one Envoy process, one listener per endpoint.

Each listener answers like a model server, from Envoy's ``direct_response`` (C++, so a hundred of
them cost the machine almost nothing): ``GET /metrics`` returns the vLLM metric page that
``inferplane serve`` renders (design.md §3), with per-endpoint queue and KV-cache values, and any
other path returns a tiny non-streamed chat completion (one generated token, with ``usage``).
"""

from __future__ import annotations

import json
import random
from typing import Any

from inferplane.server.engine import EngineStats
from inferplane.server.metrics import CONTENT_TYPE, ServerMetrics

MODEL = "m"

COMPLETION = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
}


class _Stats:
    """The one engine method ``ServerMetrics`` reads."""

    def __init__(self, stats: EngineStats) -> None:
        self._stats = stats

    def stats(self) -> EngineStats:
        return self._stats


def metrics_page(waiting: int, running: int, kv: float) -> str:
    """The ``/metrics`` text an ``inferplane serve`` replica with this load exports."""
    stats = EngineStats(num_requests_running=running, num_requests_waiting=waiting, kv_cache_usage=kv,
                        num_gpu_blocks=19208)
    return ServerMetrics(_Stats(stats), MODEL).render().decode()  # type: ignore[arg-type]


def _route(prefix: str, body: str, content_type: str) -> dict[str, Any]:
    return {
        "match": {"prefix": prefix},
        "direct_response": {"status": 200, "body": {"inline_string": body}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": content_type},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
    }


def _listener(index: int, port: int, page: str) -> dict[str, Any]:
    routes = {
        "name": f"endpoint-{index}",
        "max_direct_response_body_size_bytes": 1 << 20,
        "virtual_hosts": [{
            "name": "model-server", "domains": ["*"],
            "routes": [_route("/metrics", page, CONTENT_TYPE),
                       _route("/", json.dumps(COMPLETION), "application/json")],
        }],
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": f"ep{index}",
        "route_config": routes,
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "name": f"endpoint-{index}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def backends_bootstrap(ports: list[int], admin_port: int, seed: int = 1) -> dict[str, Any]:
    """An Envoy bootstrap serving one stand-in model server per port, each with its own light load
    (0–2 waiting, KV cache 5–50 %: the pool is never saturated, so nothing is shed)."""
    rng = random.Random(seed)
    listeners = [
        _listener(i, port, metrics_page(rng.randint(0, 2), rng.randint(1, 8), round(rng.uniform(0.05, 0.5), 3)))
        for i, port in enumerate(ports)
    ]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners},
    }
