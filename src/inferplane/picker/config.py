"""The picker's configuration (YAML section ``picker``), validated at start with errors naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from inferplane.observe.config import TelemetryConfig
from inferplane.picker.addresses import parse_address
from inferplane.picker.flowcontrol.config import FlowControlConfig
from inferplane.picker.kubernetes.config import KubernetesConfig
from inferplane.picker.objectives import ObjectiveSpec
from inferplane.picker.rewrite import ModelRewrite
from inferplane.picker.scheduling import registry

#: ``ip:port``, normalised; host names are refused (ORIGINAL_DST needs an address).
Address = Annotated[str, AfterValidator(parse_address)]


class PluginSpec(BaseModel):
    """``{type, name?, parameters}`` of one plugin; the type must be registered, parameters valid for it."""

    model_config = ConfigDict(extra="forbid")
    kind: ClassVar[str] = ""

    type: str
    name: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _buildable(self) -> PluginSpec:
        registry.build(self.kind, self.type, self.name, self.parameters)  # raises ValueError naming the problem
        return self

    def build(self) -> Any:
        return registry.build(self.kind, self.type, self.name, self.parameters)


class FilterSpec(PluginSpec):
    kind = "filter"


class ScorerSpec(PluginSpec):
    kind = "scorer"
    #: Multiplies the scorer's [0, 1] score in the sum the picker chooses by.
    weight: float = Field(1.0, ge=0)


class PickerSpec(PluginSpec):
    kind = "picker"


class SaturationSpec(PluginSpec):
    kind = "saturation detector"


def default_scorers() -> list[ScorerSpec]:
    """GIE v1.5's default profile (queue ×2, kv ×2, prefix ×3) plus the prefill backlog ×1.

    Why the prefill backlog: a request is invisible to every scraped signal from the moment it is
    routed until the server has queued it (its API server tokenizes first) and the next scrape
    runs; meanwhile queue and KV look the same and a burst lands on one endpoint. The backlog (the
    uncached prompt tokens routed to an endpoint whose first token has not come back) moves on
    every pick and every first token, and it tells a cached 60-token question from a 7,000-token
    miss. As a ratio at ×1 it decides between endpoints that are otherwise alike (cold starts,
    prompts without shared prefixes) but cannot pull a shared prefix away from the endpoint holding
    it under load, which thrashes the KV caches (bench/results/routing-sim.md: the previous
    default, with the in-flight count ×3, lost prefix affinity from 40 QPS at full size). The
    prefix-cache scorer must come before it: it reads that scorer's matches.
    """
    return [
        ScorerSpec(type="queue-scorer", weight=2),
        ScorerSpec(type="kv-cache-utilization-scorer", weight=2),
        ScorerSpec(type="prefix-cache-scorer", weight=3),
        ScorerSpec(type="prefill-backlog-scorer", weight=1),
    ]


def cpu_engine_scorers() -> list[ScorerSpec]:
    """The default scorers plus the picker's in-flight count ×3, for model servers on CPU cores.

    On a CPU engine every decoding sequence takes its share of a few cores, so a replica streaming
    one long answer is busy in a way the scraped queue (zero) and KV use (a few percent) do not
    show; the in-flight count does. On GPUs, where one more sequence in the batch costs little and
    prefix affinity is what matters, it cost throughput under load (bench/results/routing-sim.md),
    so it is not in the general default. ``inferplane up`` uses this profile for its OpenVINO
    replicas unless the configuration names a profile.
    """
    return [*default_scorers(), ScorerSpec(type="in-flight-scorer", weight=3)]


def ranked_scorers() -> list[ScorerSpec]:
    """The default scorers plus the picker's in-flight count ×1, for servers scheduling by priority.

    With ``engine_priority`` a replica's scraped queue and KV use mostly show lower-ranked work the
    server preempts for a more urgent request, so they no longer tell where that request will wait.
    The in-flight scorer then counts only the requests of its rank and above, which spreads urgent
    traffic over the replicas by its own load (bench/results/flowcontrol.md). At ×1 it decides
    between endpoints the other scorers find alike and does not outvote prefix affinity.
    """
    return [*default_scorers(), ScorerSpec(type="in-flight-scorer", weight=1)]


def default_filters() -> list[FilterSpec]:
    """The hot-spot filter: no endpoint holds more than 1.5x the mean of the requests in flight (+4)."""
    return [FilterSpec(type="hot-spot-filter")]


class ProfileConfig(BaseModel):
    """One scheduling profile: filters in order, weighted scorers, one picker."""

    model_config = ConfigDict(extra="forbid")

    filters: list[FilterSpec] = Field(default_factory=default_filters)
    scorers: list[ScorerSpec] = Field(default_factory=default_scorers)
    picker: PickerSpec = Field(default_factory=lambda: PickerSpec(type="max-score-picker"))


def _zmq_address(value: str) -> str:
    if not value.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"{value!r} is not a ZMQ address (tcp://host:port, ipc://path)")
    return value


class KVEventsConfig(BaseModel):
    """Where the picker reads the model servers' KV-cache events (vLLM ``--kv-events-config``,
    the simulator's ``sim.kv_events``); used only when the profile has a ``precise-prefix-cache-scorer``."""

    model_config = ConfigDict(extra="forbid")

    #: The port every endpoint publishes on: endpoint ``ip:port`` is read at ``tcp://ip:<port>``.
    port: int = Field(5557, ge=1, le=65535)
    #: Explicit ZMQ address per endpoint (``ip:port`` -> ``tcp://host:port``), overriding ``port``.
    addresses: dict[Address, Annotated[str, AfterValidator(_zmq_address)]] = Field(default_factory=dict)
    #: Topic prefix to subscribe to ("" = every topic; vLLM publishes on "" unless told otherwise).
    topic: str = ""
    #: Blocks indexed per endpoint; beyond it the oldest are dropped (only when removals were lost).
    max_blocks_per_endpoint: int = Field(1_000_000, ge=1)
    #: Messages queued per endpoint socket before ZMQ drops (a drop shows as a gap and resets the index).
    receive_hwm: int = Field(100_000, ge=1)
    #: Seconds before resubscribing to an endpoint whose subscription failed unexpectedly.
    retry_interval: float = Field(1.0, gt=0)


class PickerConfig(BaseModel):
    """Everything ``inferplane picker`` needs; every field has a working default."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    #: Envoy ext_proc gRPC port; 0 picks a free one.
    grpc_port: int = Field(9002, ge=0, le=65535)
    #: gRPC health port (services ``liveness``, ``readiness``, the ext_proc service name); 0 = free port.
    health_port: int = Field(9003, ge=0, le=65535)
    #: Prometheus port; 0 = free port.
    metrics_port: int = Field(9090, ge=0, le=65535)
    #: The InferencePool's name, used as the ``name`` label of the pool metrics.
    pool_name: str = "default"

    #: Model servers as ``ip:port``.
    endpoints: list[Address] = Field(default_factory=list)
    #: A file of further ``ip:port`` lines, re-read when it changes.
    endpoints_file: Path | None = None
    endpoints_file_poll_interval: float = Field(1.0, gt=0)

    #: Seconds between two scrapes of one endpoint's metrics.
    scrape_interval: float = Field(0.05, gt=0)
    scrape_timeout: float = Field(0.5, gt=0)
    metrics_path: str = "/metrics"
    #: Metrics older than this (seconds) count as stale: the endpoint is treated as saturated.
    staleness: float = Field(0.2, gt=0)
    #: An endpoint failing its scrapes for this long (seconds) leaves the pool until one succeeds.
    failure_grace: float = Field(1.0, ge=0)

    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    saturation: SaturationSpec = Field(
        default_factory=lambda: SaturationSpec(
            type="utilization-detector", parameters={"queue_threshold": 5, "kv_cache_threshold": 0.8}
        )
    )
    #: Endpoints listed after the picked one in ``x-gateway-destination-endpoint`` (for proxy retries).
    fallback_endpoints: int = Field(0, ge=0, le=16)
    #: Watch responses (status, ``usage`` token metrics). Off: Envoy is told to skip the response path.
    response_processing: bool = True
    #: The gRPC server carrying ext_proc: ``inferplane`` (the picker's own HTTP/2 server, cleartext, about a
    #: third of grpc.aio's CPU per request; bench/results/picker.md) or ``grpcio`` (grpc.aio, e.g. to rule
    #: the former out when debugging). The health port always uses grpc.aio.
    extproc_server: Literal["inferplane", "grpcio"] = "inferplane"
    #: Largest request body the picker buffers to parse; larger ones get 413.
    max_body_bytes: int = Field(64 << 20, gt=0)
    #: InferenceObjective name -> ``{priority}`` (or just the priority; negative = sheddable), chosen per
    #: request by header ``x-llm-d-inference-objective`` (older ``x-gateway-inference-objective``).
    objectives: dict[str, int | ObjectiveSpec] = Field(default_factory=dict)
    #: The objective of requests naming none (or an unknown one); "" = priority 0, no objective.
    default_objective: str = ""
    #: Also hand the objective's priority to the model server, as vLLM's body field ``priority``
    #: (``1 - rank``, rank = 2 × objective priority, + 1 while the tenant is within its fair share of the
    #: band: a lower vLLM number is served first), for servers started with ``--scheduling-policy
    #: priority``: there a critical request overtakes queued filler work and a running filler request
    #: is preempted first. With flow control on, saturation is then judged per rank: the load of lower
    #: ranks does not hold a request back (the server preempts it). Requests that set ``priority``
    #: themselves keep theirs. Off by default: a FCFS vLLM rejects a non-zero priority. Unless ``profile``
    #: is set, it also adds the in-flight scorer ×1 to the default scorers, counting per rank.
    engine_priority: bool = False
    #: Queue requests while the pool is saturated (priority bands, tenant fairness, TTL); see flow_control.
    flow_control: FlowControlConfig = Field(default_factory=FlowControlConfig)
    #: InferenceModelRewrite-shaped rules:
    #: ``[{name, rules: [{matches: [{model: {value}}], targets: [{modelRewrite, weight}]}]}]``.
    model_rewrites: list[ModelRewrite] = Field(default_factory=list)
    #: A YAML file of more rewrites (InferenceModelRewrite resources or the list above), re-read when it changes.
    model_rewrites_file: Path | None = None
    model_rewrites_file_poll_interval: float = Field(1.0, gt=0)
    #: Discover endpoints (and objectives, rewrites) from an InferencePool on Kubernetes; off when absent.
    kubernetes: KubernetesConfig | None = None
    #: JSON logs and OpenTelemetry tracing (the picker's span is the model server's parent).
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    #: KV-cache event subscription for the ``precise-prefix-cache-scorer`` (see docs/precise-prefix.md).
    kv_events: KVEventsConfig = Field(default_factory=KVEventsConfig)

    @model_validator(mode="after")
    def _default_objective_exists(self) -> PickerConfig:
        # With Kubernetes discovery the default may be an InferenceObjective that only the cluster defines.
        from_cluster = self.kubernetes is not None
        if self.default_objective and self.default_objective not in self.objectives and not from_cluster:
            raise ValueError(
                f"default_objective {self.default_objective!r} is not one of the objectives "
                f"({', '.join(sorted(self.objectives)) or 'none configured'})"
            )
        return self

    @model_validator(mode="after")
    def _ranked_default_profile(self) -> PickerConfig:
        # engine_priority without a profile of its own: the default scorers plus the rank-aware in-flight count
        if self.engine_priority and "profile" not in self.model_fields_set:
            self.profile = ProfileConfig(scorers=ranked_scorers())
        return self

    @model_validator(mode="after")
    def _staleness_covers_interval(self) -> PickerConfig:
        if self.staleness <= self.scrape_interval:
            raise ValueError(
                f"staleness ({self.staleness}s) must exceed scrape_interval ({self.scrape_interval}s), "
                "or every endpoint would always look stale"
            )
        return self
