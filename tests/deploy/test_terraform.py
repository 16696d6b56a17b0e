"""The GKE Terraform module parses (python-hcl2, Terraform's HCL2 grammar) and is internally consistent:
every variable, local, resource and data source it references is declared, and it agrees with the chart."""

from __future__ import annotations

import re

import hcl2
import pytest
from deploy_support import TERRAFORM

from inferplane.deploy.render import load_values, render_manifests
from inferplane.deploy.values import NVIDIA_ACCELERATORS

FILES = sorted(TERRAFORM.glob("*.tf"))


def _name(key: str) -> str:
    return key.strip('"')


def _parsed() -> dict[str, list]:
    merged: dict[str, list] = {}
    for path in FILES:
        with path.open() as handle:
            for block, entries in hcl2.load(handle).items():
                merged.setdefault(block, []).extend(entries)
    return merged


def _text() -> str:
    return "\n".join(path.read_text() for path in FILES)


def _declared(parsed: dict[str, list], block: str, depth: int) -> set[str]:
    names = set()
    for entry in parsed.get(block, []):
        for first, inner in entry.items():
            if depth == 1:
                names.add(_name(first))
            else:
                names.update(f"{_name(first)}.{_name(second)}" for second in inner)
    return names


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_file_parses(path):
    with path.open() as handle:
        assert hcl2.load(handle)


def test_module_has_the_expected_pieces():
    resources = _declared(_parsed(), "resource", 2)
    assert {
        "google_container_cluster.this", "google_container_node_pool.gpu", "google_container_node_pool.tpu",
        "google_storage_bucket.models", "google_service_account.models",
        "google_service_account_iam_member.models_workload_identity", "google_compute_subnetwork.proxy_only",
    } <= resources
    text = _text()
    assert 'source  = "hashicorp/google"' in text
    assert "workload_pool = \"${var.project_id}.svc.id.goog\"" in text
    assert "gcs_fuse_csi_driver_config" in text and "gateway_api_config" in text


def test_variables_are_typed_described_declared_and_used():
    parsed = _parsed()
    text = _text()
    declared = {}
    for entry in parsed["variable"]:
        for name, body in entry.items():
            declared[_name(name)] = body
    for name, body in declared.items():
        assert body.get("description") and body.get("type"), f"variable {name} needs a type and a description"
    referenced = set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", text))
    assert referenced - set(declared) == set(), "undeclared variables"
    assert set(declared) - referenced == set(), "unused variables"


def test_references_resolve():
    parsed = _parsed()
    text = _text()
    resources = _declared(parsed, "resource", 2)
    data = _declared(parsed, "data", 2)
    locals_ = {name for entry in parsed.get("locals", []) for name in entry if name != "__is_block__"}
    for kind, name in re.findall(r"(?<![\w.])(google_[a-z0-9_]+)\.([a-z_][a-z0-9_]*)", text):
        assert f"{kind}.{name}" in resources, f"reference to undeclared resource {kind}.{name}"
    for kind, name in re.findall(r"\bdata\.(google_[a-z0-9_]+)\.([a-z_][a-z0-9_]*)", text):
        assert f"{kind}.{name}" in data
    assert set(re.findall(r"\blocal\.([a-z_][a-z0-9_]*)", text)) <= locals_
    for entry in parsed["output"]:
        for name, body in entry.items():
            assert body.get("description"), f"output {name} needs a description"


def test_accelerators_and_workload_identity_match_the_chart():
    text = _text()
    allowed = re.search(r'contains\(\[("nvidia[^\]]+)\], pool\.accelerator\)', text).group(1)
    assert tuple(re.findall(r'"([^"]+)"', allowed)) == NVIDIA_ACCELERATORS
    # The binding names <release_name>-model-server in <namespace>: the chart's model-server ServiceAccount.
    assert "svc.id.goog[${var.namespace}/${var.release_name}-model-server]" in text
    release = re.search(r'variable "release_name" \{[^}]*default\s*=\s*"([^"]+)"', text).group(1)
    namespace = re.search(r'variable "namespace" \{[^}]*default\s*=\s*"([^"]+)"', text).group(1)
    accounts = [m for m in render_manifests(load_values([]), release, namespace) if m["kind"] == "ServiceAccount"]
    assert f"{release}-model-server" in {a["metadata"]["name"] for a in accounts}
