"""The chart's values: one typed model read by ``inferplane render`` and mirrored by the Helm chart.

``deploy/helm/inferplane/values.yaml`` and ``values.schema.json`` are generated from this model
(``python -m inferplane.deploy.chartsync``); a test checks they are current, so the chart's defaults
always equal the model's. Keys are camelCase, as Helm users expect; errors name the bad key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

NVIDIA_ACCELERATORS = ("nvidia-l4", "nvidia-h100-80gb", "nvidia-h200-141gb")
TPU_ACCELERATORS = ("tpu-v5-lite-podslice", "tpu-v6e-slice")
Accelerator = Literal["none", "nvidia-l4", "nvidia-h100-80gb", "nvidia-h200-141gb", "tpu-v5-lite-podslice", "tpu-v6e-slice"]


class Section(BaseModel):
    """Base of every values section: camelCase keys, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class Image(Section):
    """A container image."""

    repository: str = Field(min_length=1)
    tag: str = Field(min_length=1)
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class Crds(Section):
    """The InferencePool / InferenceObjective / InferenceModelRewrite CRDs, rendered as templates."""

    install: bool = Field(True, description="render the CRDs; false when the cluster already has them")
    keep: bool = Field(True, description="annotate helm.sh/resource-policy: keep so uninstall never deletes pools")


class Objective(Section):
    """An InferenceObjective: requests naming it by header get this priority (negative = sheddable)."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    priority: int = 0


class ModelMatch(Section):
    type: Literal["Exact"] = "Exact"
    value: str = Field(min_length=1)


class RewriteMatch(Section):
    model: ModelMatch


class RewriteTarget(Section):
    model_rewrite: str = Field(min_length=1)
    weight: int | None = Field(None, ge=1, le=1_000_000)


class RewriteRule(Section):
    matches: list[RewriteMatch] = Field(default_factory=list)
    targets: list[RewriteTarget] = Field(min_length=1)

    @model_validator(mode="after")
    def _weights_all_or_none(self) -> RewriteRule:
        weighted = [target.weight is not None for target in self.targets]
        if any(weighted) and not all(weighted):
            raise ValueError("targets: set weight on every target or on none")
        return self


class ModelRewrite(Section):
    """An InferenceModelRewrite: requests for a model name go to weighted targets (canary, A/B)."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    rules: list[RewriteRule] = Field(min_length=1)


class Pool(Section):
    """The InferencePool (inference.networking.k8s.io/v1) selecting the model-server pods."""

    name: str = Field("", description="pool name; empty: the release name")
    target_port: int = Field(8000, ge=1, le=65535, description="model servers' HTTP port")
    app_protocol: Literal["http", "kubernetes.io/h2c"] = "http"
    failure_mode: Literal["FailOpen", "FailClose"] = Field(
        "FailClose", description="what the gateway does when the picker cannot be reached"
    )


class ServiceAccount(Section):
    create: bool = Field(True, description="create it (false: it exists already, with this release's name)")
    gcp_service_account: str = Field(
        "", description="Workload Identity: GCP service account email (annotation iam.gke.io/gcp-service-account)"
    )


class ServiceAccounts(Section):
    """The picker's and the model servers' (also the downloader's) Kubernetes ServiceAccounts."""

    picker: ServiceAccount = Field(default_factory=ServiceAccount)
    model_server: ServiceAccount = Field(default_factory=ServiceAccount)


class Picker(Section):
    """The endpoint picker (EPP): Deployment, Service (9002 grpc, 9003 health, 9090 metrics), RBAC."""

    replicas: int = Field(1, ge=1, description="picker pods (each serves every Envoy / gateway request stream)")
    config: dict[str, Any] = Field(
        default_factory=dict, description="settings merged into the `picker` section of picker.yaml"
    )
    resources: dict[str, Any] = Field(
        default_factory=lambda: {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)


class AcceleratorSpec(Section):
    """The GPU / TPU of each model-server replica: node selector, toleration and resource limit follow."""

    type: Accelerator = Field("none", description="GKE accelerator (node label value) or none for CPU")
    count: int = Field(1, ge=1, le=16, description="GPUs / TPU chips per replica (also vLLM tensor parallelism)")
    tpu_topology: str = Field("", description="TPU slice topology, e.g. 2x4 (label cloud.google.com/gke-tpu-topology)")


class Vllm(Section):
    """vLLM settings (modelServer.engine: vllm)."""

    image: Image = Field(default_factory=lambda: Image(repository="vllm/vllm-openai", tag="v0.33.0"))
    tpu_image: Image = Field(default_factory=lambda: Image(repository="vllm/vllm-tpu", tag="v0.32.0"))
    max_model_len: int = Field(0, ge=0, description="--max-model-len; 0: the model's own")
    extra_args: list[str] = Field(default_factory=list)


class InferplaneServer(Section):
    """inferplane serve settings (modelServer.engine: inferplane)."""

    engine: Literal["openvino", "sim", "transformers"] = Field("openvino", description="sim: the vLLM simulator")
    extra_args: list[str] = Field(default_factory=list)


class GcsFuse(Section):
    """Mount a GCS bucket with the GKE Cloud Storage FUSE CSI driver (models load without a copy)."""

    enabled: bool = False
    bucket: str = ""
    mount_path: str = "/models"
    mount_options: str = "implicit-dirs,file-cache:max-size-mb:-1,file-cache:enable-parallel-downloads:true"
    read_only: bool = True


class ModelStore(Section):
    """Load the model from an inferplane model store (where the downloader Job pulls to).

    An init container runs ``inferplane models fetch NAME@VERSION --store URL`` into a pod-local
    cache; the server reads it from there. ``latest`` follows the store's pointer at each pod start.
    """

    url: str = Field("", description="store URL, e.g. gs://BUCKET/models; empty: not used")
    name: str = Field("", description="model name in the store, ORG/NAME")
    version: str = Field("latest", min_length=1)
    cache_size_limit: str = Field("200Gi", description="size limit of the pod-local cache (emptyDir)")


class ModelServer(Section):
    """The model-server Deployment behind the pool: vLLM on GPU/TPU, or inferplane's CPU server."""

    engine: Literal["vllm", "inferplane"] = Field("inferplane", description="vllm (GPU / TPU) or inferplane (CPU)")
    replicas: int = Field(1, ge=0, description="ignored when autoscaling.enabled")
    model: str = Field("", description="model path or id (vLLM: HF id or a path under gcsFuse.mountPath)")
    served_model_name: str = Field("", description="name clients send; empty: the model (or the server's default)")
    accelerator: AcceleratorSpec = Field(default_factory=AcceleratorSpec)
    vllm: Vllm = Field(default_factory=Vllm)
    inferplane: InferplaneServer = Field(default_factory=InferplaneServer)
    hf_token_secret: str = Field("", description="Secret with key HF_TOKEN, for gated Hugging Face models")
    gcs_fuse: GcsFuse = Field(default_factory=GcsFuse)
    model_store: ModelStore = Field(default_factory=ModelStore)
    resources: dict[str, Any] = Field(
        default_factory=lambda: {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    env: list[dict[str, Any]] = Field(default_factory=list, description="extra container env entries")
    startup_timeout_seconds: int = Field(1800, ge=60, description="time allowed for the model to load")


class Downloader(Section):
    """A Job running `inferplane models pull SOURCE --to DESTINATION` (e.g. Hugging Face → GCS)."""

    enabled: bool = False
    source: str = Field("", description="hf://ORG/NAME")
    destination: str = Field("", description="the model store, gs://BUCKET[/PREFIX]")
    resources: dict[str, Any] = Field(
        default_factory=lambda: {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
    )


class Autoscaling(Section):
    """HPA on the model servers' vLLM-contract metrics: queue depth and KV-cache use per pod."""

    enabled: bool = False
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(4, ge=1)
    metrics_source: Literal["gke-managed-prometheus", "prometheus-adapter"] = "gke-managed-prometheus"
    queue_metric: str = "vllm:num_requests_waiting"
    queue_target: int = Field(10, ge=1, description="waiting requests per pod")
    kv_cache_metric: str = "vllm:kv_cache_usage_perc"
    kv_cache_target_percent: int = Field(80, ge=0, le=100, description="KV-cache use per pod, percent; 0: not used")
    scale_down_stabilization_seconds: int = Field(300, ge=0)


class Monitoring(Section):
    """How Prometheus finds the picker's and model servers' /metrics."""

    pod_monitoring: bool = Field(False, description="GKE managed Prometheus PodMonitoring (monitoring.googleapis.com/v1)")
    prometheus_annotations: bool = Field(True, description="prometheus.io/scrape annotations on the pods")
    interval: str = "15s"


class GkeGateway(Section):
    """gateway.mode gke: a GKE Inference Gateway (Gateway, HTTPRoute, GCPBackendPolicy)."""

    gateway_class_name: Literal["gke-l7-regional-external-managed", "gke-l7-rilb"] = "gke-l7-regional-external-managed"
    port: int = Field(80, ge=1, le=65535)
    backend_timeout_seconds: int = Field(300, ge=1, description="GCPBackendPolicy timeoutSec (streams last minutes)")


class StandaloneEnvoy(Section):
    """gateway.mode envoy: Envoy with inferplane's bootstrap (ORIGINAL_DST to the picked pod)."""

    image: Image = Field(default_factory=lambda: Image(repository="envoyproxy/envoy", tag="v1.40.0"))
    replicas: int = Field(1, ge=1)
    port: int = Field(8080, ge=1, le=65535, description="listener port in the pod")
    service_type: Literal["ClusterIP", "LoadBalancer", "NodePort"] = "ClusterIP"
    service_port: int = Field(80, ge=1, le=65535)
    concurrency: int = Field(2, ge=1)
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical", "off"] = "warning"
    resources: dict[str, Any] = Field(
        default_factory=lambda: {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    )


class Gateway(Section):
    """How traffic reaches the pool.

    ``gke``: a Gateway (GKE Inference Gateway class) and an HTTPRoute whose backend is the
    InferencePool. ``envoy``: a standalone Envoy Deployment with inferplane's bootstrap (any cluster).
    ``none``: only an HTTPRoute to ``existingGateway`` when set (Istio, Envoy Gateway, ...).
    """

    mode: Literal["gke", "envoy", "none"] = "envoy"
    existing_gateway: str = Field("", description="mode none: the Gateway the HTTPRoute attaches to")
    gke: GkeGateway = Field(default_factory=GkeGateway)
    envoy: StandaloneEnvoy = Field(default_factory=StandaloneEnvoy)


class NetworkPolicy(Section):
    """Ingress rules for the picker, the model servers and the standalone Envoy."""

    enabled: bool = True
    allowed_cidrs: list[str] = Field(
        default_factory=list,
        description="extra sources allowed to the picker and model servers (GKE: the proxy-only subnet)",
    )
    metrics_namespace: str = Field("gmp-system", description="namespace of the Prometheus scraping the pods")


class Pdb(Section):
    """PodDisruptionBudgets for the picker, the model servers and the standalone Envoy."""

    enabled: bool = True
    max_unavailable: int = Field(1, ge=1)


class Values(Section):
    """Everything the chart renders; every field has a working default (a CPU-only pool behind Envoy)."""

    image: Image = Field(
        default_factory=lambda: Image(repository="ghcr.io/inferplane/inferplane", tag="0.1.0"),
        description="the inferplane image: picker, CPU server, downloader (deploy/docker/Dockerfile)",
    )
    crds: Crds = Field(default_factory=Crds)
    pool: Pool = Field(default_factory=Pool)
    objectives: list[Objective] = Field(
        default_factory=list, description="InferenceObjectives: [{name, priority}]; negative priority = sheddable"
    )
    model_rewrites: list[ModelRewrite] = Field(
        default_factory=list,
        description="InferenceModelRewrites: [{name, rules: [{matches: [{model: {value}}], targets: [{modelRewrite, weight}]}]}]",
    )
    service_accounts: ServiceAccounts = Field(default_factory=ServiceAccounts)
    picker: Picker = Field(default_factory=Picker)
    model_server: ModelServer = Field(default_factory=ModelServer)
    downloader: Downloader = Field(default_factory=Downloader)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    gateway: Gateway = Field(default_factory=Gateway)
    network_policy: NetworkPolicy = Field(default_factory=NetworkPolicy)
    pdb: Pdb = Field(default_factory=Pdb)
    global_: dict[str, Any] = Field(default_factory=dict, alias="global", description="Helm's shared values (unused)")

    @model_validator(mode="after")
    def _consistent(self) -> Values:
        server = self.model_server
        accelerator = server.accelerator.type
        if server.engine == "vllm" and accelerator == "none":
            raise ValueError("modelServer.accelerator.type: vLLM needs a GPU or TPU accelerator")
        if server.engine == "inferplane" and accelerator != "none":
            raise ValueError("modelServer.accelerator.type: the inferplane server runs on CPU; use none")
        store = server.model_store
        if bool(store.url) != bool(store.name):
            raise ValueError("modelServer.modelStore.name: url and name go together")
        if store.url and server.model:
            raise ValueError("modelServer.model: leave empty when modelServer.modelStore is used")
        if server.engine == "vllm" and not (server.model or store.url):
            raise ValueError("modelServer.model: vLLM needs a model (Hugging Face id, a path, or modelStore)")
        if accelerator in TPU_ACCELERATORS and not server.accelerator.tpu_topology:
            raise ValueError("modelServer.accelerator.tpuTopology: required for a TPU accelerator, e.g. 2x4")
        if server.gcs_fuse.enabled and not server.gcs_fuse.bucket:
            raise ValueError("modelServer.gcsFuse.bucket: required when gcsFuse.enabled")
        if self.downloader.enabled:
            if not self.downloader.source.startswith("hf://"):
                raise ValueError("downloader.source: must be hf://ORG/NAME")
            if not self.downloader.destination.startswith("gs://"):
                raise ValueError("downloader.destination: must be a gs://BUCKET[/PREFIX] model store")
        if self.autoscaling.enabled:
            if self.autoscaling.max_replicas < self.autoscaling.min_replicas:
                raise ValueError("autoscaling.maxReplicas: must be at least autoscaling.minReplicas")
            if self.autoscaling.metrics_source == "gke-managed-prometheus" and not self.monitoring.pod_monitoring:
                raise ValueError(
                    "monitoring.podMonitoring: must be true when autoscaling.metricsSource is gke-managed-prometheus"
                )
        names = [objective.name for objective in self.objectives]
        if len(names) != len(set(names)):
            raise ValueError("objectives: names must be unique")
        return self


def defaults() -> dict[str, Any]:
    """The default values as the chart's values.yaml holds them (camelCase keys)."""
    return Values().model_dump(by_alias=True, mode="json")
