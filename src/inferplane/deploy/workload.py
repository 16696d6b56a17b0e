"""Pieces every workload shares: ServiceAccounts, scheduling fields, scrape annotations."""

from __future__ import annotations

from typing import Any

from inferplane.deploy.release import Release
from inferplane.deploy.values import ServiceAccount, Values

WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"


def service_account(release: Release, name: str, component: str, account: ServiceAccount) -> dict[str, Any]:
    """A ServiceAccount, bound to a GCP service account through Workload Identity when one is named."""
    annotations = {WORKLOAD_IDENTITY_ANNOTATION: account.gcp_service_account} if account.gcp_service_account else None
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": release.metadata(name, component, annotations)}


def with_scheduling(
    pod_spec: dict[str, Any], node_selector: dict[str, str], tolerations: list[dict[str, Any]]
) -> dict[str, Any]:
    """``pod_spec`` plus nodeSelector / tolerations when there are any."""
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = list(tolerations)
    return pod_spec


def pod_annotations(values: Values, metrics_port: int, path: str = "/metrics") -> dict[str, str]:
    """prometheus.io scrape annotations (for a Prometheus reading them), when enabled."""
    if not values.monitoring.prometheus_annotations:
        return {}
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port), "prometheus.io/path": path}
