"""Helpers for the deployment tests: the example values files, both renderers, normalised objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from inferplane.deploy.render import load_values, render_manifests

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "inferplane"
EXAMPLES = sorted((REPO / "deploy" / "examples").glob("*.yaml"))
TERRAFORM = REPO / "deploy" / "terraform" / "gke"
RELEASE, NAMESPACE = "demo", "llm"


def example_ids() -> list[str]:
    return [path.stem for path in EXAMPLES]


def render_python(values_file: Path | None = None, sets: list[str] | None = None) -> list[dict[str, Any]]:
    values = load_values([values_file] if values_file else [], sets)
    return render_manifests(values, RELEASE, NAMESPACE)


def render_helm(values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm template` through Helm's Go SDK (helm-python-sdk), objects in file then document order."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [doc for _, text in sorted(rendered.items()) for doc in yaml.safe_load_all(text) if doc]


def normalise(manifest: dict[str, Any]) -> dict[str, Any]:
    """The object with the config files inside ConfigMaps parsed, so formatting differences vanish."""
    manifest = json.loads(json.dumps(manifest))
    if manifest["kind"] == "ConfigMap":
        for key, text in manifest.get("data", {}).items():
            manifest["data"][key] = json.loads(text) if key.endswith(".json") else yaml.safe_load(text)
    return manifest


def by_identity(manifests: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(m["apiVersion"], m["kind"], m["metadata"]["name"]): normalise(m) for m in manifests}


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest
    raise AssertionError(f"no {kind} {name} among {[(m['kind'], m['metadata']['name']) for m in manifests]}")


def load_example(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}
