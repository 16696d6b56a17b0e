"""The values model: defaults, --set overrides, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferplane.configfile import ConfigError
from inferplane.deploy.merge import deep_merge
from inferplane.deploy.overrides import apply_sets
from inferplane.deploy.render import load_values


def test_defaults_are_a_working_cpu_pool_behind_envoy():
    values = load_values([])
    assert values.model_server.engine == "inferplane"
    assert values.model_server.accelerator.type == "none"
    assert values.gateway.mode == "envoy"
    assert values.pool.failure_mode == "FailClose"


def test_set_types_values_like_helm():
    values = apply_sets({}, [
        "a.b=true", "a.c=10", "a.d=0.8", "a.e=text", "a.f=null", "list={x,y}", "items[1].name=second",
        "p=1,q=two",
    ])
    assert values["a"] == {"b": True, "c": 10, "d": 0.8, "e": "text", "f": None}
    assert values["list"] == ["x", "y"]
    assert values["items"] == [None, {"name": "second"}]
    assert (values["p"], values["q"]) == (1, "two")
    assert apply_sets({}, [r"a=x\,y"]) == {"a": "x,y"}


def test_set_overrides_files_which_override_defaults(tmp_path: Path):
    first = tmp_path / "a.yaml"
    first.write_text("modelServer: {replicas: 2, servedModelName: a}\npicker: {replicas: 2}\n")
    second = tmp_path / "b.yaml"
    second.write_text("modelServer: {replicas: 3}\n")
    values = load_values([first, second], ["picker.replicas=4"])
    assert (values.model_server.replicas, values.model_server.served_model_name) == (3, "a")
    assert values.picker.replicas == 4
    assert values.model_server.inferplane.engine == "openvino"  # untouched defaults stay


def test_merge_replaces_lists_and_null_deletes():
    assert deep_merge({"a": [1, 2], "b": {"c": 1, "d": 2}}, {"a": [3], "b": {"d": None}}) == {"a": [3], "b": {"c": 1}}


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (["modelServer.engine=vllm"], "modelServer.accelerator.type"),
        (["modelServer.engine=vllm", "modelServer.accelerator.type=nvidia-l4"], "modelServer.model"),
        (["modelServer.accelerator.type=nvidia-l4"], "modelServer.accelerator.type"),
        (["modelServer.engine=vllm", "modelServer.model=m", "modelServer.accelerator.type=tpu-v6e-slice"],
         "modelServer.accelerator.tpuTopology"),
        (["modelServer.gcsFuse.enabled=true"], "modelServer.gcsFuse.bucket"),
        (["downloader.enabled=true", "downloader.source=s3://x", "downloader.destination=gs://b"], "downloader.source"),
        (["autoscaling.enabled=true"], "monitoring.podMonitoring"),
        (["autoscaling.enabled=true", "monitoring.podMonitoring=true", "autoscaling.maxReplicas=0"], "autoscaling.maxReplicas"),
        (["pool.failureMode=FailSoft"], "pool.failureMode"),
        (["modelServer.modelStore.url=gs://b"], "modelServer.modelStore.name"),
        (["modelServer.modelStore.url=gs://b", "modelServer.modelStore.name=a/b", "modelServer.model=x"],
         "modelServer.model"),
        (["modelServer.accelerator.type=nvidia-a999"], "modelServer.accelerator.type"),
        (["gateway.gke.gatewayClassName=gke-l7-global"], "gateway.gke.gatewayClassName"),
        (["picker.replicaz=2"], "picker.replicaz"),
        (["modelRewrites[0].name=r", "modelRewrites[0].rules[0].targets[0].modelRewrite=a",
          "modelRewrites[0].rules[0].targets[0].weight=1", "modelRewrites[0].rules[0].targets[1].modelRewrite=b"],
         "modelRewrites.0.rules.0"),
        (["objectives[0].name=Bad_Name"], "objectives.0.name"),
    ],
)
def test_errors_name_the_bad_key(sets: list[str], named: str):
    with pytest.raises(ConfigError) as error:
        load_values([], sets)
    assert named in str(error.value)


def test_bad_set_syntax_is_reported():
    with pytest.raises(ConfigError, match="key=value"):
        load_values([], ["picker.replicas"])
