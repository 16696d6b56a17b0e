"""What an operator checks in the rendered manifests of each deployment shape."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from deploy_support import NAMESPACE, RELEASE, REPO, find, render_python

from inferplane.deploy.cli import add_parser
from inferplane.gateway.config import GatewayConfig
from inferplane.picker.config import PickerConfig

EXAMPLES = REPO / "deploy" / "examples"


def _container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_pool_points_at_the_picker_and_selects_the_model_servers():
    manifests = render_python(EXAMPLES / "gke-h100-vllm.yaml")
    pool = find(manifests, "InferencePool", RELEASE)
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["endpointPickerRef"] == {
        "kind": "Service", "name": f"{RELEASE}-picker", "port": {"number": 9002}, "failureMode": "FailClose",
    }
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    pod_labels = find(manifests, "Deployment", f"{RELEASE}-model-server")["spec"]["template"]["metadata"]["labels"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    objectives = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "InferenceObjective"}
    assert objectives["batch"]["apiVersion"] == "inference.networking.x-k8s.io/v1alpha2"
    assert objectives["batch"]["spec"] == {"priority": -10, "poolRef": {"name": RELEASE}}
    rewrite = find(manifests, "InferenceModelRewrite", "qwen-canary")
    assert rewrite["spec"]["poolRef"] == {"name": RELEASE}
    assert rewrite["spec"]["rules"] == [{
        "matches": [{"model": {"type": "Exact", "value": "qwen"}}],
        "targets": [{"modelRewrite": "qwen3-32b", "weight": 90}, {"modelRewrite": "qwen3-32b-support-v2", "weight": 10}],
    }]


def test_picker_runs_with_its_config_ports_probes_and_rbac():
    manifests = render_python(EXAMPLES / "cpu-local.yaml")
    container = _container(find(manifests, "Deployment", f"{RELEASE}-picker"))
    assert container["command"] + container["args"] == [
        "inferplane", "picker", "--config", "/etc/inferplane/picker.yaml",
    ]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": 9002, "grpc-health": 9003, "metrics": 9090,
    }
    assert container["livenessProbe"]["grpc"] == {"port": 9003, "service": "liveness"}
    assert container["readinessProbe"]["grpc"] == {"port": 9003, "service": "readiness"}
    config = yaml.safe_load(find(manifests, "ConfigMap", f"{RELEASE}-picker")["data"]["picker.yaml"])
    picker = PickerConfig.model_validate(config["picker"])  # the picker accepts what we render
    assert (picker.host, picker.grpc_port, picker.pool_name) == ("0.0.0.0", 9002, RELEASE)
    assert picker.objectives == {"interactive": 10, "batch": -1}
    assert config["kubernetes"] == {"namespace": NAMESPACE, "inference_pool": RELEASE}
    rules = find(manifests, "Role", f"{RELEASE}-picker")["rules"]
    watched = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert {("", "pods"), ("inference.networking.k8s.io", "inferencepools"),
            ("inference.networking.x-k8s.io", "inferenceobjectives")} <= watched
    assert all(rule["verbs"] == ["get", "list", "watch"] for rule in rules)


def test_h100_vllm_lands_on_h100_nodes_with_gcs_fuse_and_workload_identity():
    manifests = render_python(EXAMPLES / "gke-h100-vllm.yaml")
    deployment = find(manifests, "Deployment", f"{RELEASE}-model-server")
    pod = deployment["spec"]["template"]
    container = _container(deployment)
    assert pod["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == "2"
    assert container["args"][container["args"].index("--model") + 1] == "/models/Qwen/Qwen3-32B/versions/9216db5781bf/files"
    assert container["args"][container["args"].index("--served-model-name") + 1] == "qwen3-32b"
    assert pod["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "models")
    assert volume["csi"]["driver"] == "gcsfuse.csi.storage.gke.io"
    assert volume["csi"]["volumeAttributes"]["bucketName"] == "my-project-inferplane-models"
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    account = find(manifests, "ServiceAccount", f"{RELEASE}-model-server")
    assert account["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "inferplane-models@my-project.iam.gserviceaccount.com"
    }
    job = next(m for m in manifests if m["kind"] == "Job")
    assert job["metadata"]["name"].startswith(f"{RELEASE}-models-pull-")
    job_container = job["spec"]["template"]["spec"]["containers"][0]
    assert job_container["command"] + job_container["args"] == [
        "inferplane", "models", "pull", "hf://Qwen/Qwen3-32B", "--to", "gs://my-project-inferplane-models",
    ]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == f"{RELEASE}-model-server"


def test_gke_inference_gateway_routes_to_the_pool():
    manifests = render_python(EXAMPLES / "gke-h100-vllm.yaml")
    gateway = find(manifests, "Gateway", f"{RELEASE}-gateway")
    assert gateway["spec"]["gatewayClassName"] == "gke-l7-regional-external-managed"
    route = find(manifests, "HTTPRoute", f"{RELEASE}-route")
    assert route["spec"]["parentRefs"][0]["name"] == f"{RELEASE}-gateway"
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": RELEASE}
    ]
    assert find(manifests, "GCPBackendPolicy", RELEASE)["spec"]["default"]["timeoutSec"] == 600
    assert not [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-gateway")]


def test_hpa_scales_on_queue_depth_and_kv_cache_from_managed_prometheus():
    manifests = render_python(EXAMPLES / "gke-h100-vllm.yaml")
    hpa = find(manifests, "HorizontalPodAutoscaler", f"{RELEASE}-model-server")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-model-server"
    targets = {m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"] for m in hpa["spec"]["metrics"]}
    assert targets == {
        "prometheus.googleapis.com|vllm:num_requests_waiting|gauge": "10",
        "prometheus.googleapis.com|vllm:kv_cache_usage_perc|gauge": "800m",
    }
    monitored = {m["metadata"]["name"]: m["spec"]["endpoints"][0]["port"] for m in manifests if m["kind"] == "PodMonitoring"}
    assert monitored == {f"{RELEASE}-model-server": "http", f"{RELEASE}-picker": "metrics"}


def test_prometheus_adapter_metric_names():
    hpa = find(render_python(EXAMPLES / "standalone-envoy.yaml"), "HorizontalPodAutoscaler", f"{RELEASE}-model-server")
    assert [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == [
        "vllm_num_requests_waiting", "vllm_kv_cache_usage_perc",
    ]


def test_tpu_variant_requests_tpu_chips_on_the_slice():
    manifests = render_python(EXAMPLES / "gke-tpu.yaml")
    deployment = find(manifests, "Deployment", f"{RELEASE}-model-server")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice", "cloud.google.com/gke-tpu-topology": "2x4",
    }
    container = _container(deployment)
    assert container["resources"]["limits"]["google.com/tpu"] == 8
    assert container["image"].startswith("vllm/vllm-tpu:")
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN", "optional": True}
    # The model comes from the store: an init container fetches it into the pod-local cache.
    assert container["args"][container["args"].index("--model") + 1] == "/model-cache/current"
    assert container["args"][container["args"].index("--served-model-name") + 1] == "meta-llama/Llama-3.1-8B-Instruct"
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert "inferplane models fetch" in init["command"][2]
    assert {e["name"]: e["value"] for e in init["env"]} == {
        "MODEL": "meta-llama/Llama-3.1-8B-Instruct@latest", "STORE": "gs://my-project-inferplane-models/models",
    }
    assert {"name": "model-cache", "mountPath": "/model-cache"} in container["volumeMounts"]
    assert find(manifests, "Gateway", f"{RELEASE}-gateway")["spec"]["gatewayClassName"] == "gke-l7-rilb"


def test_l4_and_h200_node_labels():
    for accelerator in ("nvidia-l4", "nvidia-h200-141gb"):
        sets = ["modelServer.engine=vllm", "modelServer.model=m", f"modelServer.accelerator.type={accelerator}"]
        pod = find(render_python(sets=sets), "Deployment", f"{RELEASE}-model-server")["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": accelerator}


def test_standalone_envoy_uses_inferplanes_bootstrap_with_original_dst():
    manifests = render_python(EXAMPLES / "standalone-envoy.yaml")
    bootstrap = json.loads(find(manifests, "ConfigMap", f"{RELEASE}-gateway")["data"]["envoy.json"])
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    assert clusters["original_destination_cluster"]["type"] == "ORIGINAL_DST"
    assert clusters["original_destination_cluster"]["original_dst_lb_config"]["http_header_name"] == (
        "x-gateway-destination-endpoint"
    )
    picker = clusters["endpoint_picker"]
    assert picker["type"] == "STRICT_DNS"
    address = picker["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address == {"address": f"{RELEASE}-picker.{NAMESPACE}.svc.cluster.local", "port_value": 9002}
    listener = bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "0.0.0.0", "port_value": 8080}
    container = _container(find(manifests, "Deployment", f"{RELEASE}-gateway"))
    assert container["args"][:2] == ["--config-path", "/etc/envoy/envoy.json"]
    assert find(manifests, "Service", f"{RELEASE}-gateway")["spec"]["type"] == "LoadBalancer"


def test_network_policies_and_disruption_budgets():
    manifests = render_python(EXAMPLES / "cpu-local.yaml")
    picker_policy = find(manifests, "NetworkPolicy", f"{RELEASE}-picker")["spec"]["ingress"]
    ext_proc = next(rule for rule in picker_policy if rule["ports"][0]["port"] == 9002)
    assert ext_proc["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "inferplane", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "gateway"}}}]
    envoy_policy = find(manifests, "NetworkPolicy", f"{RELEASE}-gateway")["spec"]["ingress"]
    assert envoy_policy == [{"ports": [{"protocol": "TCP", "port": 8080}]}]  # not the admin port 19000
    budgets = {m["metadata"]["name"]: m["spec"] for m in manifests if m["kind"] == "PodDisruptionBudget"}
    assert set(budgets) == {f"{RELEASE}-picker", f"{RELEASE}-model-server", f"{RELEASE}-gateway"}
    assert all(spec["maxUnavailable"] == 1 for spec in budgets.values())


def test_crds_can_be_left_out_and_are_kept_on_uninstall():
    kept = [m for m in render_python() if m["kind"] == "CustomResourceDefinition"]
    assert {m["metadata"]["name"] for m in kept} >= {
        "inferencepools.inference.networking.k8s.io", "inferenceobjectives.inference.networking.x-k8s.io",
    }
    assert all(m["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for m in kept)
    assert not [m for m in render_python(sets=["crds.install=false"]) if m["kind"] == "CustomResourceDefinition"]


def test_cpu_server_command():
    container = _container(find(render_python(EXAMPLES / "cpu-local.yaml"), "Deployment", f"{RELEASE}-model-server"))
    assert container["command"] + container["args"] == [
        "inferplane", "serve", "--host", "0.0.0.0", "--port", "8000", "--engine", "openvino",
        "--served-model-name", "SmolLM2-135M-Instruct",
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert "nodeSelector" not in find(render_python(), "Deployment", f"{RELEASE}-model-server")["spec"]["template"]["spec"]


def test_render_command_writes_one_file_per_object(tmp_path: Path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args([
        "render", "--values", str(EXAMPLES / "cpu-local.yaml"), "--set", "modelServer.replicas=3",
        "--output", str(tmp_path), "--release", RELEASE, "--namespace", NAMESPACE,
    ])
    assert args.func(args) == 0
    files = sorted(tmp_path.glob("*.yaml"))
    objects = [yaml.safe_load(path.read_text()) for path in files]
    assert files[0].name.startswith("00-customresourcedefinition-")
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{RELEASE}-model-server")
    assert deployment["spec"]["replicas"] == 3


def test_render_prints_a_yaml_stream_and_names_bad_values(tmp_path: Path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["render"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "&id" not in out and "*id" not in out  # no YAML anchors: plain manifests
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out)]
    assert "InferencePool" in kinds and "Deployment" in kinds
    bad = tmp_path / "bad.yaml"
    bad.write_text("modelServer:\n  replicas: -1\n  acelerator: {}\n")
    from inferplane.configfile import ConfigError

    try:
        args = parser.parse_args(["render", "-f", str(bad)])
        args.func(args)
    except ConfigError as exc:
        assert "modelServer.replicas" in str(exc) and "modelServer.acelerator" in str(exc)
    else:
        raise AssertionError("bad values were accepted")


def test_gateway_config_of_the_standalone_envoy_is_valid():
    from inferplane.deploy.envoy import gateway_config

    config = gateway_config(8080, "picker.ns.svc.cluster.local", "FailOpen")
    assert isinstance(config, GatewayConfig) and config.endpoint_selection == "original_dst"

