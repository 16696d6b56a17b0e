"""The Gateway API Inference Extension CRDs shipped with inferplane (files under ``crds/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from inferplane.deploy.release import Release

CRD_DIR = Path(__file__).parent / "crds"


def crd_files() -> list[Path]:
    """The CRD files, in a stable order."""
    return sorted(CRD_DIR.glob("*.yaml"))


def load_crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in crd_files()]


def crd_manifests(release: Release) -> list[dict[str, Any]]:
    """The CRDs when ``crds.install``; annotated to survive ``helm uninstall`` when ``crds.keep``."""
    if not release.values.crds.install:
        return []
    crds = load_crds()
    if release.values.crds.keep:
        for crd in crds:
            crd["metadata"].setdefault("annotations", {})["helm.sh/resource-policy"] = "keep"
    return crds


def crd_schema(kind: str, version: str) -> dict[str, Any]:
    """The openAPIV3Schema of one kind at one version (for validating rendered objects)."""
    for crd in load_crds():
        if crd["spec"]["names"]["kind"] == kind:
            for served in crd["spec"]["versions"]:
                if served["name"] == version:
                    return served["schema"]["openAPIV3Schema"]
    raise KeyError(f"no CRD for {kind} {version}")
