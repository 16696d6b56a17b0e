"""The model servers behind the pool (vLLM on GPU / TPU, or inferplane's CPU server) and the model downloader."""

from __future__ import annotations

import hashlib
from typing import Any

from inferplane.deploy.merge import deep_merge
from inferplane.deploy.release import Release
from inferplane.deploy.values import NVIDIA_ACCELERATORS, TPU_ACCELERATORS, Values
from inferplane.deploy.workload import pod_annotations, service_account, with_scheduling

COMPONENT = "model-server"
HEALTH_PATH = "/health"
GCSFUSE_DRIVER = "gcsfuse.csi.storage.gke.io"
MODEL_CACHE_DIR = "/model-cache"
#: The init container links the fetched version here.
STORE_MODEL_PATH = f"{MODEL_CACHE_DIR}/current"


def model_and_name(values: Values) -> tuple[str, str]:
    """(what the server loads, the name clients send); either may be empty for the inferplane server."""
    server = values.model_server
    if server.model_store.url:
        return STORE_MODEL_PATH, server.served_model_name or server.model_store.name
    return server.model, server.served_model_name or server.model


def fetch_init_container(release: Release) -> dict[str, Any]:
    """``inferplane models fetch`` into the pod-local cache, linked at STORE_MODEL_PATH."""
    values = release.values
    store = values.model_server.model_store
    script = (
        f'ln -sfn "$(inferplane models fetch "$MODEL" --store "$STORE" --cache-dir {MODEL_CACHE_DIR}/store)" '
        f"{STORE_MODEL_PATH}"
    )
    return {
        "name": "fetch-model",
        "image": release.image(values.image),
        "imagePullPolicy": values.image.pull_policy,
        "command": ["sh", "-c", script],
        "env": [
            {"name": "MODEL", "value": f"{store.name}@{store.version}"},
            {"name": "STORE", "value": store.url},
        ],
        "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_CACHE_DIR}],
    }


def accelerator_placement(values: Values) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, Any]]:
    """(node selector, tolerations, resource limits) that put a replica on its GKE accelerator nodes."""
    accelerator = values.model_server.accelerator
    if accelerator.type in NVIDIA_ACCELERATORS:
        return (
            {"cloud.google.com/gke-accelerator": accelerator.type},
            [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            {"nvidia.com/gpu": accelerator.count},
        )
    if accelerator.type in TPU_ACCELERATORS:
        return (
            {
                "cloud.google.com/gke-tpu-accelerator": accelerator.type,
                "cloud.google.com/gke-tpu-topology": accelerator.tpu_topology,
            },
            [{"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}],
            {"google.com/tpu": accelerator.count},
        )
    return {}, [], {}


def _vllm_container(release: Release) -> dict[str, Any]:
    server = release.values.model_server
    image = server.vllm.tpu_image if server.accelerator.type in TPU_ACCELERATORS else server.vllm.image
    model, served_name = model_and_name(release.values)
    args = [
        "--model", model,
        "--served-model-name", served_name,
        "--host", "0.0.0.0",
        "--port", str(release.values.pool.target_port),
        "--tensor-parallel-size", str(server.accelerator.count),
    ]
    if server.vllm.max_model_len:
        args += ["--max-model-len", str(server.vllm.max_model_len)]
    return {
        "name": "vllm",
        "image": release.image(image),
        "imagePullPolicy": image.pull_policy,
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": args + list(server.vllm.extra_args),
    }


def _inferplane_container(release: Release) -> dict[str, Any]:
    values = release.values
    server = values.model_server
    args = [
        "serve",
        "--host", "0.0.0.0",
        "--port", str(values.pool.target_port),
        "--engine", server.inferplane.engine,
    ]
    model, served_name = model_and_name(values)
    if served_name:
        args += ["--served-model-name", served_name]
    if model:
        args += ["--model", model]
    return {
        "name": "server",
        "image": release.image(values.image),
        "imagePullPolicy": values.image.pull_policy,
        "command": ["inferplane"],
        "args": args + list(server.inferplane.extra_args),
    }


def _hf_token_env(values: Values) -> list[dict[str, Any]]:
    secret = values.model_server.hf_token_secret
    if not secret:
        return []
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "HF_TOKEN", "optional": True}}}]


def _probes(values: Values) -> dict[str, Any]:
    """Startup covers the model load; after it, readiness takes a busy or broken server out of the pool."""
    get = {"path": HEALTH_PATH, "port": "http"}
    return {
        "startupProbe": {
            "httpGet": get,
            "periodSeconds": 10,
            "failureThreshold": values.model_server.startup_timeout_seconds // 10,
        },
        "readinessProbe": {"httpGet": get, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": get, "periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 5},
    }


def deployment(release: Release) -> dict[str, Any]:
    values = release.values
    server = values.model_server
    name = release.component(COMPONENT)
    node_selector, tolerations, accelerator_limits = accelerator_placement(values)
    container = _vllm_container(release) if server.engine == "vllm" else _inferplane_container(release)
    container["ports"] = [{"name": "http", "containerPort": values.pool.target_port, "protocol": "TCP"}]
    env = _hf_token_env(values) + list(server.env)
    if env:
        container["env"] = env
    container.update(_probes(values))
    container["resources"] = deep_merge(server.resources, {"limits": accelerator_limits}) if accelerator_limits else server.resources
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if accelerator_limits:
        # Tensor parallelism exchanges data through shared memory; the default 64 MiB /dev/shm is too small.
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    annotations = pod_annotations(values, values.pool.target_port)
    fuse = server.gcs_fuse
    if fuse.enabled:
        annotations["gke-gcsfuse/volumes"] = "true"
        mounts.append({"name": "models", "mountPath": fuse.mount_path, "readOnly": fuse.read_only})
        volumes.append(
            {
                "name": "models",
                "csi": {
                    "driver": GCSFUSE_DRIVER,
                    "readOnly": fuse.read_only,
                    "volumeAttributes": {"bucketName": fuse.bucket, "mountOptions": fuse.mount_options},
                },
            }
        )
    if server.model_store.url:
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_DIR})
        volumes.append({"name": "model-cache", "emptyDir": {"sizeLimit": server.model_store.cache_size_limit}})
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "terminationGracePeriodSeconds": 120,
        "containers": [container],
    }
    if server.model_store.url:
        pod_spec["initContainers"] = [fetch_init_container(release)]
    if volumes:
        pod_spec["volumes"] = volumes
    pod_spec = with_scheduling(
        pod_spec, {**node_selector, **server.node_selector}, tolerations + list(server.tolerations)
    )
    template_meta: dict[str, Any] = {"labels": release.labels(COMPONENT)}
    if annotations:
        template_meta["annotations"] = annotations
    spec: dict[str, Any] = {
        "selector": {"matchLabels": release.selector_labels(COMPONENT)},
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    if not values.autoscaling.enabled:
        spec = {"replicas": server.replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": release.metadata(name, COMPONENT), "spec": spec}


def downloader_job_name(release: Release) -> str:
    """Named after what it copies, so a new source or destination is a new Job (a Job's pod template is immutable)."""
    downloader = release.values.downloader
    digest = hashlib.sha256(f"{downloader.source} {downloader.destination}".encode()).hexdigest()[:8]
    return f"{release.component('models-pull')}-{digest}"


def downloader_job(release: Release) -> dict[str, Any]:
    values = release.values
    downloader = values.downloader
    container: dict[str, Any] = {
        "name": "pull",
        "image": release.image(values.image),
        "imagePullPolicy": values.image.pull_policy,
        "command": ["inferplane"],
        "args": ["models", "pull", downloader.source, "--to", downloader.destination],
        "resources": downloader.resources,
    }
    env = _hf_token_env(values)
    if env:
        container["env"] = env
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": release.metadata(downloader_job_name(release), "downloader"),
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": release.labels("downloader")},
                "spec": {
                    "serviceAccountName": release.component(COMPONENT),
                    "restartPolicy": "Never",
                    "containers": [container],
                },
            },
        },
    }


def model_server_manifests(release: Release) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = []
    account = release.values.service_accounts.model_server
    if account.create:
        manifests.append(service_account(release, release.component(COMPONENT), COMPONENT, account))
    manifests.append(deployment(release))
    if release.values.downloader.enabled:
        manifests.append(downloader_job(release))
    return manifests
