"""How traffic reaches the pool: GKE Inference Gateway, a standalone Envoy, or a route to an existing Gateway."""

from __future__ import annotations

from typing import Any

from inferplane.deploy.envoy import envoy_manifests
from inferplane.deploy.release import Release

GATEWAY_API = "gateway.networking.k8s.io/v1"
POOL_GROUP = "inference.networking.k8s.io"


def gke_gateway(release: Release) -> dict[str, Any]:
    gke = release.values.gateway.gke
    return {
        "apiVersion": GATEWAY_API,
        "kind": "Gateway",
        "metadata": release.metadata(release.component("gateway"), "gateway"),
        "spec": {
            "gatewayClassName": gke.gateway_class_name,
            "listeners": [{"name": "http", "protocol": "HTTP", "port": gke.port}],
        },
    }


def http_route(release: Release, gateway_name: str) -> dict[str, Any]:
    """Every path to the InferencePool: the gateway asks the pool's picker which pod serves each request."""
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": release.metadata(release.component("route"), "gateway"),
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway_name}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"group": POOL_GROUP, "kind": "InferencePool", "name": release.pool_name}],
                }
            ],
        },
    }


def backend_policy(release: Release) -> dict[str, Any]:
    """GKE's backend timeout for the pool (the 30 s default would cut long generations)."""
    return {
        "apiVersion": "networking.gke.io/v1",
        "kind": "GCPBackendPolicy",
        "metadata": release.metadata(release.pool_name, "gateway"),
        "spec": {
            "targetRef": {"group": POOL_GROUP, "kind": "InferencePool", "name": release.pool_name},
            "default": {"timeoutSec": release.values.gateway.gke.backend_timeout_seconds},
        },
    }


def gateway_manifests(release: Release) -> list[dict[str, Any]]:
    gateway = release.values.gateway
    if gateway.mode == "gke":
        return [gke_gateway(release), http_route(release, release.component("gateway")), backend_policy(release)]
    if gateway.mode == "envoy":
        return envoy_manifests(release)
    if gateway.existing_gateway:
        return [http_route(release, gateway.existing_gateway)]
    return []
