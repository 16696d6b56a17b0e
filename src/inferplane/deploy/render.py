"""Render every manifest of a release from its values, without Helm.

The order is the order Helm applies kinds in (CRDs, accounts, RBAC, config, services, workloads, ...);
the Helm chart in ``deploy/helm/inferplane`` renders the same objects (tests/deploy holds them equal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from inferplane.configfile import ConfigError, read_yaml, validate_model
from inferplane.deploy.autoscaling import autoscaling_manifests
from inferplane.deploy.crds import crd_manifests
from inferplane.deploy.gateway import gateway_manifests
from inferplane.deploy.merge import deep_merge
from inferplane.deploy.modelserver import model_server_manifests
from inferplane.deploy.overrides import apply_sets
from inferplane.deploy.picker import picker_manifests
from inferplane.deploy.policies import policy_manifests
from inferplane.deploy.pool import inference_objectives, inference_pool, model_rewrites
from inferplane.deploy.release import Release
from inferplane.deploy.values import Values, defaults

DEFAULT_RELEASE = "inferplane"
DEFAULT_NAMESPACE = "default"


def load_values(files: list[str | Path], sets: list[str] | None = None) -> Values:
    """Defaults, then each values file in order, then ``--set`` assignments; validated as one."""
    raw = defaults()
    for path in files:
        raw = deep_merge(raw, read_yaml(path))
    try:
        raw = apply_sets(raw, list(sets or []))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    source = ", ".join(str(path) for path in files) or "defaults"
    if sets:
        source += " with --set " + " ".join(sets)
    return validate_model(Values, raw, source)


def render_manifests(values: Values, release: str = DEFAULT_RELEASE, namespace: str = DEFAULT_NAMESPACE) -> list[dict[str, Any]]:
    """Every object of the release, as dicts."""
    rel = Release(release, namespace, values)
    return [
        *crd_manifests(rel),
        *picker_manifests(rel),
        *model_server_manifests(rel),
        inference_pool(rel),
        *inference_objectives(rel),
        *model_rewrites(rel),
        *gateway_manifests(rel),
        *autoscaling_manifests(rel),
        *policy_manifests(rel),
    ]


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-objects out in full: no &anchors / *aliases in manifests."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    """One multi-document YAML stream."""
    return yaml.dump_all(manifests, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)


def file_name(index: int, manifest: dict[str, Any]) -> str:
    return f"{index:02d}-{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"


def write_manifests(manifests: list[dict[str, Any]], directory: Path) -> list[Path]:
    """One file per object (numbered in apply order); files left from an earlier render are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("[0-9][0-9]-*.yaml"):
        stale.unlink()
    paths = []
    for index, manifest in enumerate(manifests):
        path = directory / file_name(index, manifest)
        path.write_text(to_yaml([manifest]))
        paths.append(path)
    return paths
