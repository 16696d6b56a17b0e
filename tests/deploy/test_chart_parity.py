"""The Helm chart and `inferplane render` produce the same objects, and the chart passes `helm lint`.

Helm runs in-process through helm-python-sdk (Helm 4's Go SDK in a wheel): no helm binary, no cluster.
"""

from __future__ import annotations

from pathlib import Path

import helm_python
import pytest
import yaml
from deploy_support import (
    CHART,
    EXAMPLES,
    by_identity,
    example_ids,
    load_example,
    render_helm,
    render_python,
)

from inferplane.deploy.chartsync import stale_files
from inferplane.deploy.values import defaults

# Values beyond the examples, so every branch of the templates is compared at least once.
VARIANTS = {
    "defaults": {},
    "l4-hf-token-no-crds": {
        "crds": {"install": False},
        "modelServer": {
            "engine": "vllm", "model": "google/gemma-3-4b-it", "hfTokenSecret": "hf",
            "accelerator": {"type": "nvidia-l4"}, "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}],
            "nodeSelector": {"pool": "l4"}, "tolerations": [{"key": "spot", "operator": "Exists"}],
        },
        "picker": {"replicas": 2, "config": {"scrape_interval": 0.1, "staleness": 0.5}},
        "pool": {"name": "gemma", "failureMode": "FailOpen"},
        "modelRewrites": [{"name": "all-to-gemma", "rules": [{"targets": [{"modelRewrite": "google/gemma-3-4b-it"}]}]}],
    },
    "h200-existing-gateway": {
        "crds": {"keep": False},
        "modelServer": {"engine": "vllm", "model": "m", "accelerator": {"type": "nvidia-h200-141gb", "count": 8}},
        "gateway": {"mode": "none", "existingGateway": "istio-ingress"},
        "networkPolicy": {"enabled": False},
        "pdb": {"enabled": False},
        "serviceAccounts": {"picker": {"create": False}, "modelServer": {"gcpServiceAccount": "sa@p.iam.gserviceaccount.com"}},
        "autoscaling": {"enabled": True, "metricsSource": "prometheus-adapter", "kvCacheTargetPercent": 0},
    },
    "envoy-failopen-cidrs": {
        "pool": {"failureMode": "FailOpen", "targetPort": 9000},
        "gateway": {"envoy": {"port": 10000, "servicePort": 8080, "logLevel": "info"}},
        "networkPolicy": {"allowedCidrs": ["10.0.0.0/8"]},
        "monitoring": {"prometheusAnnotations": False},
        "objectives": [{"name": "no-priority-given"}, {"name": "low", "priority": -3}],
    },
}


def test_chart_generated_files_are_current():
    """values.yaml, values.schema.json, CRDs and the Envoy bootstrap equal what chartsync generates."""
    assert stale_files() == [], "run: python -m inferplane.deploy.chartsync"


def test_chart_values_yaml_equals_model_defaults():
    assert yaml.safe_load((CHART / "values.yaml").read_text()) == defaults()


@pytest.mark.parametrize("example", EXAMPLES, ids=example_ids())
def test_helm_and_render_agree_on_examples(example: Path):
    helm_objects = by_identity(render_helm(load_example(example)))
    python_objects = by_identity(render_python(example))
    assert sorted(helm_objects) == sorted(python_objects)
    for identity, expected in python_objects.items():
        assert helm_objects[identity] == expected, identity


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_helm_and_render_agree_on_variants(name: str, tmp_path: Path):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(VARIANTS[name]))
    helm_objects = by_identity(render_helm(VARIANTS[name]))
    python_objects = by_identity(render_python(values_file))
    assert sorted(helm_objects) == sorted(python_objects)
    for identity, expected in python_objects.items():
        assert helm_objects[identity] == expected, identity


@pytest.mark.parametrize("example", [None, *EXAMPLES], ids=["defaults", *example_ids()])
def test_helm_lint_strict_passes(example: Path | None):
    values = load_example(example) if example else None
    report = helm_python.lint(str(CHART), values, strict=True, kube_version="v1.33.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert problems == []


def test_helm_refuses_values_the_model_refuses():
    """values.schema.json (from the model) makes Helm reject unknown keys and bad enums too."""
    with pytest.raises(Exception, match="replica"):
        render_helm({"picker": {"replicaz": 2}})
    with pytest.raises(Exception, match="accelerator|type"):
        render_helm({"modelServer": {"accelerator": {"type": "nvidia-a999"}}})
