"""HPA on the model servers' queue depth and KV-cache use, and GKE managed Prometheus PodMonitorings."""

from __future__ import annotations

from typing import Any

from inferplane.deploy.release import Release

MONITORING_API = "monitoring.googleapis.com/v1"


def hpa_metric_name(release: Release, metric: str) -> str:
    """The metric's name in the custom metrics API of the chosen adapter.

    GKE managed Prometheus (Custom Metrics Stackdriver Adapter): ``prometheus.googleapis.com|NAME|gauge``.
    Prometheus adapter: the rule in docs/kubernetes.md exposes ``vllm:x`` as ``vllm_x``.
    """
    if release.values.autoscaling.metrics_source == "gke-managed-prometheus":
        return f"prometheus.googleapis.com|{metric}|gauge"
    return metric.replace(":", "_")


def _pods_metric(name: str, average_value: str) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": average_value}},
    }


def hpa(release: Release) -> dict[str, Any]:
    scaling = release.values.autoscaling
    name = release.component("model-server")
    metrics = [_pods_metric(hpa_metric_name(release, scaling.queue_metric), str(scaling.queue_target))]
    if scaling.kv_cache_target_percent:
        # The metric is a 0-1 fraction: 80 % is the quantity 800m.
        metrics.append(
            _pods_metric(hpa_metric_name(release, scaling.kv_cache_metric), f"{scaling.kv_cache_target_percent * 10}m")
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": release.metadata(name, "model-server"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds},
            },
        },
    }


def pod_monitoring(release: Release, component: str, port: str) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitoring",
        "metadata": release.metadata(release.component(component), component),
        "spec": {
            "selector": {"matchLabels": release.selector_labels(component)},
            "endpoints": [{"port": port, "path": "/metrics", "interval": release.values.monitoring.interval}],
        },
    }


def autoscaling_manifests(release: Release) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = []
    if release.values.monitoring.pod_monitoring:
        manifests += [pod_monitoring(release, "model-server", "http"), pod_monitoring(release, "picker", "metrics")]
    if release.values.autoscaling.enabled:
        manifests.append(hpa(release))
    return manifests

