"""The endpoint picker: its config, ServiceAccount and RBAC, Deployment and Service."""

from __future__ import annotations

from typing import Any

import yaml

from inferplane.deploy.merge import deep_merge
from inferplane.deploy.release import (
    GRPC_PORT,
    HEALTH_PORT,
    METRICS_PORT,
    PICKER_CONFIG_PATH,
    Release,
)
from inferplane.deploy.workload import pod_annotations, service_account, with_scheduling

COMPONENT = "picker"


def picker_config(release: Release) -> dict[str, Any]:
    """picker.yaml: the ``picker`` section (validated by PickerConfig) and the pool to watch."""
    base = {
        "host": "0.0.0.0",
        "grpc_port": GRPC_PORT,
        "health_port": HEALTH_PORT,
        "metrics_port": METRICS_PORT,
        "pool_name": release.pool_name,
        "objectives": {o.name: o.priority for o in release.values.objectives},
    }
    return {
        "picker": deep_merge(base, release.values.picker.config),
        "kubernetes": {"namespace": release.namespace, "inference_pool": release.pool_name},
    }


def config_map(release: Release) -> dict[str, Any]:
    text = yaml.safe_dump(picker_config(release), sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": release.metadata(release.component(COMPONENT), COMPONENT),
        "data": {"picker.yaml": text},
    }


def role(release: Release) -> dict[str, Any]:
    """Read access to the pool's pods and the Inference* resources, in the release namespace only."""
    watch = ["get", "list", "watch"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": release.metadata(release.component(COMPONENT), COMPONENT),
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": watch},
            {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"], "verbs": watch},
            {
                "apiGroups": ["inference.networking.x-k8s.io"],
                "resources": ["inferenceobjectives", "inferencemodelrewrites"],
                "verbs": watch,
            },
        ],
    }


def role_binding(release: Release) -> dict[str, Any]:
    name = release.component(COMPONENT)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": release.metadata(name, COMPONENT),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": release.namespace}],
    }


def deployment(release: Release) -> dict[str, Any]:
    values = release.values
    name = release.component(COMPONENT)
    container = {
        "name": "picker",
        "image": release.image(values.image),
        "imagePullPolicy": values.image.pull_policy,
        "command": ["inferplane"],
        "args": ["picker", "--config", PICKER_CONFIG_PATH],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "grpc-health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": [
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "livenessProbe": {
            "grpc": {"port": HEALTH_PORT, "service": "liveness"},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "grpc": {"port": HEALTH_PORT, "service": "readiness"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": values.picker.resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "config", "mountPath": "/etc/inferplane", "readOnly": True}],
    }
    pod_spec = with_scheduling(
        {
            "serviceAccountName": name,
            "terminationGracePeriodSeconds": 30,
            "containers": [container],
            "volumes": [{"name": "config", "configMap": {"name": name}}],
        },
        values.picker.node_selector,
        values.picker.tolerations,
    )
    template_meta: dict[str, Any] = {"labels": release.labels(COMPONENT)}
    annotations = pod_annotations(values, METRICS_PORT)
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": release.metadata(name, COMPONENT),
        "spec": {
            "replicas": values.picker.replicas,
            "selector": {"matchLabels": release.selector_labels(COMPONENT)},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def service(release: Release) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": release.metadata(release.component(COMPONENT), COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": release.selector_labels(COMPONENT),
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "http2"},
                {"name": "grpc-health", "port": HEALTH_PORT, "targetPort": "grpc-health", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def picker_manifests(release: Release) -> list[dict[str, Any]]:
    manifests = [config_map(release)]
    account = release.values.service_accounts.picker
    if account.create:
        manifests.append(service_account(release, release.component(COMPONENT), COMPONENT, account))
    manifests += [role(release), role_binding(release), deployment(release), service(release)]
    return manifests
