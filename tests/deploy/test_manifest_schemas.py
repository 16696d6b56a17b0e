"""Every rendered object validates: built-in kinds against Kubernetes' own schemas (kubernetes-validate,
strict: unknown fields fail), Inference* objects against our CRDs' openAPIV3Schema, Gateway API and
GKE objects against the schemas in tests/deploy/schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_support import EXAMPLES, example_ids, render_python

from inferplane.deploy.crds import crd_schema, load_crds

KUBERNETES_VERSION = "1.33"
CRD_KINDS = {
    ("inference.networking.k8s.io/v1", "InferencePool"),
    ("inference.networking.x-k8s.io/v1alpha2", "InferenceObjective"),
    ("inference.networking.x-k8s.io/v1alpha2", "InferenceModelRewrite"),
}
SCHEMA_DIR = Path(__file__).parent / "schemas"


def _local_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    path = SCHEMA_DIR / f"{api_version.replace('/', '_')}_{kind}.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def validate(manifest: dict[str, Any]) -> None:
    """Raise when the object is invalid for its kind (or its kind has no schema here)."""
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    if (api_version, kind) in CRD_KINDS:
        jsonschema.Draft202012Validator(crd_schema(kind, api_version.split("/")[1])).validate(manifest)
    elif (schema := _local_schema(api_version, kind)) is not None:
        jsonschema.Draft202012Validator(schema).validate(manifest)
    else:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("example", [None, *EXAMPLES], ids=["defaults", *example_ids()])
def test_every_rendered_object_is_valid(example: Path | None):
    manifests = render_python(example)
    assert manifests
    for manifest in manifests:
        try:
            validate(manifest)
        except (jsonschema.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:  # name the object
            pytest.fail(f"{manifest['kind']} {manifest['metadata']['name']}: {exc}")


def test_crds_are_valid_custom_resource_definitions():
    for crd in load_crds():
        kubernetes_validate.validate(crd, KUBERNETES_VERSION, strict=True)
        for version in crd["spec"]["versions"]:
            jsonschema.Draft202012Validator.check_schema(version["schema"]["openAPIV3Schema"])


def test_validation_catches_broken_objects():
    """The checks above are not vacuous: typical mistakes fail them."""
    manifests = {m["kind"]: m for m in render_python()}
    pool = yaml.safe_load(yaml.safe_dump(manifests["InferencePool"]))
    pool["spec"]["targetPorts"] = [{"number": 8000 + i} for i in range(9)]  # at most 8
    with pytest.raises(jsonschema.ValidationError):
        validate(pool)
    pool["spec"]["targetPorts"] = [{"number": 8000}]
    pool["spec"]["endpointPickerRef"]["failureMode"] = "FailSoft"
    with pytest.raises(jsonschema.ValidationError):
        validate(pool)
    deployment = yaml.safe_load(yaml.safe_dump(manifests["Deployment"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
             "spec": {"rules": [{"backendRefs": [{"kind": "InferencePool"}]}]}}  # no name
    with pytest.raises(jsonschema.ValidationError):
        validate(route)
