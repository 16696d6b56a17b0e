"""The standalone Envoy gateway for any cluster: inferplane's bootstrap in a ConfigMap, Deployment, Service.

The bootstrap is ``inferplane.gateway.bootstrap.build_bootstrap`` with ``endpoint_selection:
original_dst`` (the GIE reference: Envoy connects to the pod the picker names, so pods may come and
go without touching Envoy). In a cluster the picker is a Service name, so its cluster resolves by DNS.
"""

from __future__ import annotations

import json
from typing import Any

from inferplane.deploy.release import ENVOY_ADMIN_PORT, GRPC_PORT, Release
from inferplane.gateway.bootstrap import build_bootstrap
from inferplane.gateway.config import GatewayConfig

COMPONENT = "gateway"
BOOTSTRAP_KEY = "envoy.json"


def gateway_config(listener_port: int, picker_host: str, failure_mode: str) -> GatewayConfig:
    return GatewayConfig(
        host="0.0.0.0",
        port=listener_port,
        admin_host="0.0.0.0",
        admin_port=ENVOY_ADMIN_PORT,
        picker_address=f"{picker_host}:{GRPC_PORT}",
        failure_mode=failure_mode,
        endpoint_selection="original_dst",
    )


def bootstrap(release: Release) -> dict[str, Any]:
    values = release.values
    return build_bootstrap(
        gateway_config(values.gateway.envoy.port, release.picker_host, values.pool.failure_mode)
    )


def config_map(release: Release) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": release.metadata(release.component(COMPONENT), COMPONENT),
        "data": {BOOTSTRAP_KEY: json.dumps(bootstrap(release), indent=1, sort_keys=True)},
    }


def deployment(release: Release) -> dict[str, Any]:
    envoy = release.values.gateway.envoy
    name = release.component(COMPONENT)
    ready = {"httpGet": {"path": "/ready", "port": "admin"}}
    container = {
        "name": "envoy",
        "image": release.image(envoy.image),
        "imagePullPolicy": envoy.image.pull_policy,
        "command": ["envoy"],
        "args": [
            "--config-path", f"/etc/envoy/{BOOTSTRAP_KEY}",
            "--concurrency", str(envoy.concurrency),
            "--log-level", envoy.log_level,
        ],
        "ports": [
            {"name": "http", "containerPort": envoy.port, "protocol": "TCP"},
            {"name": "admin", "containerPort": ENVOY_ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {**ready, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**ready, "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 6},
        "resources": envoy.resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 101,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "bootstrap", "mountPath": "/etc/envoy", "readOnly": True}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": release.metadata(name, COMPONENT),
        "spec": {
            "replicas": envoy.replicas,
            "selector": {"matchLabels": release.selector_labels(COMPONENT)},
            "template": {
                "metadata": {"labels": release.labels(COMPONENT)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 60,
                    "containers": [container],
                    "volumes": [{"name": "bootstrap", "configMap": {"name": name}}],
                },
            },
        },
    }


def service(release: Release) -> dict[str, Any]:
    envoy = release.values.gateway.envoy
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": release.metadata(release.component(COMPONENT), COMPONENT),
        "spec": {
            "type": envoy.service_type,
            "selector": release.selector_labels(COMPONENT),
            "ports": [{"name": "http", "port": envoy.service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def envoy_manifests(release: Release) -> list[dict[str, Any]]:
    return [config_map(release), deployment(release), service(release)]
