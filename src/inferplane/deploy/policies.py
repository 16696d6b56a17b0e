"""PodDisruptionBudgets and NetworkPolicies."""

from __future__ import annotations

from typing import Any

from inferplane.deploy.release import GRPC_PORT, HEALTH_PORT, METRICS_PORT, Release


def pdb(release: Release, component: str) -> dict[str, Any]:
    """At most ``pdb.maxUnavailable`` pods of a component evicted at once (node upgrades, drains)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": release.metadata(release.component(component), component),
        "spec": {
            "maxUnavailable": release.values.pdb.max_unavailable,
            "selector": {"matchLabels": release.selector_labels(component)},
        },
    }


def _gateway_sources(release: Release) -> list[dict[str, Any]]:
    """Who may send inference traffic (and ext_proc calls): our Envoy and the allowed CIDRs.

    An empty list means anyone: a GKE or mesh gateway calls from addresses the chart cannot know
    unless ``networkPolicy.allowedCidrs`` names them (GKE: the proxy-only subnet).
    """
    sources: list[dict[str, Any]] = []
    if release.values.gateway.mode == "envoy":
        sources.append({"podSelector": {"matchLabels": release.selector_labels("gateway")}})
    sources += [{"ipBlock": {"cidr": cidr}} for cidr in release.values.network_policy.allowed_cidrs]
    return sources


def _rule(port: int, sources: list[dict[str, Any]] | None) -> dict[str, Any]:
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
    if sources:
        rule["from"] = sources
    return rule


def _metrics_scraper(release: Release) -> list[dict[str, Any]]:
    namespace = release.values.network_policy.metrics_namespace
    return [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}]


def network_policy(release: Release, component: str, ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": release.metadata(release.component(component), component),
        "spec": {
            "podSelector": {"matchLabels": release.selector_labels(component)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def network_policies(release: Release) -> list[dict[str, Any]]:
    """Model servers: their port from the picker (scrapes), the gateway and the metrics namespace.
    Picker: ext_proc from the gateway, health from anywhere (probes), metrics from the metrics namespace.
    Standalone Envoy: its listener from anywhere; the admin port stays closed to other pods."""
    gateway = _gateway_sources(release)
    picker = [{"podSelector": {"matchLabels": release.selector_labels("picker")}}]
    port = release.values.pool.target_port
    server_sources = picker + gateway if gateway else []
    policies = [
        network_policy(
            release, "model-server", [_rule(port, server_sources), _rule(port, _metrics_scraper(release))]
        ),
        network_policy(
            release,
            "picker",
            [_rule(GRPC_PORT, gateway), _rule(HEALTH_PORT, None), _rule(METRICS_PORT, _metrics_scraper(release))],
        ),
    ]
    if release.values.gateway.mode == "envoy":
        policies.append(network_policy(release, "gateway", [_rule(release.values.gateway.envoy.port, None)]))
    return policies


def policy_manifests(release: Release) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = []
    if release.values.pdb.enabled:
        components = ["picker", "model-server"] + (["gateway"] if release.values.gateway.mode == "envoy" else [])
        manifests += [pdb(release, component) for component in components]
    if release.values.network_policy.enabled:
        manifests += network_policies(release)
    return manifests
