"""The InferencePool, its InferenceObjectives and InferenceModelRewrites."""

from __future__ import annotations

from typing import Any

from inferplane.deploy.release import GRPC_PORT, Release

POOL_API = "inference.networking.k8s.io/v1"
OBJECTIVE_API = "inference.networking.x-k8s.io/v1alpha2"


def inference_pool(release: Release) -> dict[str, Any]:
    pool = release.values.pool
    return {
        "apiVersion": POOL_API,
        "kind": "InferencePool",
        "metadata": release.metadata(release.pool_name, "pool"),
        "spec": {
            "selector": {"matchLabels": release.selector_labels("model-server")},
            "targetPorts": [{"number": pool.target_port}],
            "appProtocol": pool.app_protocol,
            "endpointPickerRef": {
                "kind": "Service",
                "name": release.component("picker"),
                "port": {"number": GRPC_PORT},
                "failureMode": pool.failure_mode,
            },
        },
    }


def inference_objectives(release: Release) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": OBJECTIVE_API,
            "kind": "InferenceObjective",
            "metadata": release.metadata(objective.name, "pool"),
            "spec": {"priority": objective.priority, "poolRef": {"name": release.pool_name}},
        }
        for objective in release.values.objectives
    ]


def model_rewrites(release: Release) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": OBJECTIVE_API,
            "kind": "InferenceModelRewrite",
            "metadata": release.metadata(rewrite.name, "pool"),
            "spec": {
                "poolRef": {"name": release.pool_name},
                "rules": [rule.model_dump(by_alias=True, exclude_none=True) for rule in rewrite.rules],
            },
        }
        for rewrite in release.values.model_rewrites
    ]
