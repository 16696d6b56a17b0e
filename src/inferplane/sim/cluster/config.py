"""Typed configuration of a cluster simulation: the replicas, the workload and the run.

Errors name the bad field (pydantic ``loc``); :func:`replica_from_server_section` reads the
``server`` section of an ``inferplane serve`` YAML (e.g. ``bench/routing/replica.yaml``), so the
simulation runs exactly the replicas a real-process benchmark starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inferplane.sim.config import CostOverrides, OutputLengthConfig, PresetName
from inferplane.sim.cost_model import get_preset
from inferplane.sim.replica import ReplicaSpec


class ReplicaConfig(BaseModel):
    """One simulated replica: a preset plus the overrides ``inferplane serve --engine sim`` takes."""

    model_config = ConfigDict(extra="forbid")

    preset: PresetName = "llama3-8b-h100"
    block_size: int | None = Field(default=None, ge=1)
    num_blocks: int | None = Field(default=None, ge=1)
    max_model_len: int | None = Field(default=None, ge=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    enable_prefix_caching: bool = True
    #: Multiplies every modelled duration, as the real engine's ``sim.time_scale`` stretches its sleeps.
    time_scale: float = Field(default=1.0, gt=0)
    cost: CostOverrides = Field(default_factory=CostOverrides)
    #: Output lengths of requests that do not ask for ``ignore_eos`` (the workloads do by default).
    output_length: OutputLengthConfig = Field(default_factory=OutputLengthConfig)

    def spec(self) -> ReplicaSpec:
        """The replica's resolved geometry, limits and costs (preset values where unset)."""
        preset = get_preset(self.preset)
        block_size = self.block_size or preset.block_size
        num_blocks = self.num_blocks or preset.num_gpu_blocks * preset.block_size // block_size
        return ReplicaSpec(
            cost=preset.cost.with_overrides(self.cost),
            num_blocks=num_blocks,
            block_size=block_size,
            max_model_len=self.max_model_len or preset.max_model_len,
            max_num_seqs=self.max_num_seqs or preset.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens or preset.max_num_batched_tokens,
            enable_prefix_caching=self.enable_prefix_caching,
        )


#: ``server`` fields that describe the simulated replica (the rest are HTTP/process settings).
_SERVER_REPLICA_FIELDS = (
    "block_size",
    "num_blocks",
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "enable_prefix_caching",
)


def replica_from_server_section(server: dict[str, Any]) -> dict[str, Any]:
    """The :class:`ReplicaConfig` fields in an ``inferplane serve`` ``server`` section (unvalidated)."""
    raw: dict[str, Any] = {name: server[name] for name in _SERVER_REPLICA_FIELDS if name in server}
    sim = server.get("sim") or {}
    if not isinstance(sim, dict):
        raise ValueError("server.sim must be a mapping")  # noqa: TRY004 (a user's config error)
    for name in ("preset", "time_scale", "cost", "output_length"):
        if name in sim:
            raw[name] = sim[name]
    if raw.get("time_scale") == 0:
        raw["time_scale"] = 1.0  # 0 = "no sleeping" in the real engine: modelled time as it is
    return raw


class Stage(BaseModel):
    """``duration`` seconds of Poisson arrivals at ``rate`` per second."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(gt=0)
    duration: float = Field(gt=0)


class Arrivals(BaseModel):
    """When requests arrive: Poisson at ``rate`` (for ``num_requests`` or ``duration``), or ``stages``."""

    model_config = ConfigDict(extra="forbid")

    rate: float | None = Field(default=None, gt=0)
    stages: list[Stage] = Field(default_factory=list)
    num_requests: int | None = Field(default=None, ge=1)
    duration: float | None = Field(default=None, gt=0)
    #: Start each stage only once every request of the previous one has finished (inference-perf).
    drain_between_stages: bool = False
    #: Seconds between a drained stage's last completion and the next stage's first arrival.
    stage_interval: float = Field(default=0.0, ge=0)
    #: Seconds after a stage's end at which the client cancels its requests still unfinished (they
    #: count as failures): inference-perf with a stage ``timeout`` of the stage's duration plus its
    #: ``stage_teardown_grace_seconds``. None: never, as inference-perf without a stage timeout.
    teardown_grace: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_schedule(self) -> Arrivals:
        if self.rate is not None and self.stages:
            raise ValueError("give either rate or stages, not both")
        if self.rate is None and not self.stages:
            raise ValueError("give a rate (with num_requests or duration) or stages")
        if self.rate is not None and self.num_requests is None and self.duration is None:
            raise ValueError("a rate needs num_requests or duration")
        return self

    def stage_list(self) -> list[Stage]:
        """The stages; a single rate is one stage (open-ended when only ``num_requests`` bounds it)."""
        if self.stages:
            return self.stages
        assert self.rate is not None
        return [Stage(rate=self.rate, duration=self.duration or float("inf"))]


class SharedPrefixWorkload(BaseModel):
    """inference-perf's ``shared_prefix`` data (design.md §6): ``num_groups`` system prompts, each
    followed by one of ``prompts_per_group`` questions; the prompts are shuffled once and cycled."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["shared-prefix"] = "shared-prefix"
    num_groups: int = Field(default=150, ge=1)
    prompts_per_group: int = Field(default=5, ge=1)
    system_prompt_len: int = Field(default=6000, ge=0)
    question_len: int = Field(default=1200, ge=1)
    output_len: int = Field(default=1000, ge=1)
    seed: int = 42
    arrivals: Arrivals


class RandomWorkload(BaseModel):
    """The low-prefix control: every prompt is ``input_len`` random tokens."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["random"] = "random"
    input_len: int = Field(default=7200, ge=1)
    output_len: int = Field(default=1000, ge=1)
    seed: int = 42
    arrivals: Arrivals


class TraceWorkload(BaseModel):
    """Replay a JSONL trace: ``{timestamp, prompt | prompt_tokens, max_tokens, ...}`` per line.

    ``timestamp`` is in seconds (shifted so the first request arrives at 0) and divided by
    ``speedup``. ``prompt_tokens`` is a list of token ids, or a count (random tokens; with
    Mooncake-style ``hash_ids`` equal ids give equal ``hash_block_tokens``-token blocks).
    ``output_tokens`` is accepted for ``max_tokens``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["trace"] = "trace"
    path: Path
    speedup: float = Field(default=1.0, gt=0)
    num_requests: int | None = Field(default=None, ge=1)
    default_max_tokens: int = Field(default=256, ge=1)
    hash_block_tokens: int = Field(default=512, ge=1)
    seed: int = 42


Workload = Annotated[SharedPrefixWorkload | RandomWorkload | TraceWorkload, Field(discriminator="kind")]


class ClusterConfig(BaseModel):
    """A whole simulation but the router: how many replicas of what, and the traffic."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(default=8, ge=1)
    replica: ReplicaConfig = Field(default_factory=ReplicaConfig)
    workload: Workload
    #: Seeds the picker's random tie-breaks and the replicas' samplers (the workload has its own);
    #: every replica gets the same sampler seed, so a request's output does not depend on its route.
    seed: int = 0
    #: Generate exactly max_tokens per request (what the benchmarks ask for).
    ignore_eos: bool = True
    #: Most requests the client keeps in flight (inference-perf's worker concurrency); arrivals
    #: beyond it wait at the client and are sent when one finishes. None: open loop.
    max_concurrency: int | None = Field(default=None, ge=1)
    #: Virtual seconds between two samples of the queue / KV-cache time series.
    sample_interval: float = Field(default=1.0, gt=0)
    #: Model name requests carry (the prefix scorer seeds its hashes with it); default: the preset's.
    model: str | None = None
