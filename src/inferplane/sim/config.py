"""Typed configuration of the simulator engine (``ServerConfig.sim``).

Imports only pydantic, so the server configuration can embed it cheaply.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PresetName = Literal["llama3-8b-h100", "qwen3-32b-tp2-h100", "smollm2-135m-cpu2"]


class CostOverrides(BaseModel):
    """Overrides of the preset's step-time parameters (seconds); unset fields keep the preset's.

    Step time = ``step_base_s + prefill_per_token_s * prefill_tokens + decode_per_seq_s * decodes
    + context_per_token_s * context_tokens + lora_load_s * adapters_loaded``; ``request_overhead_s``
    delays each request before it is scheduled (see :mod:`inferplane.sim.cost_model`).
    """

    model_config = ConfigDict(extra="forbid")

    step_base_s: float | None = Field(default=None, ge=0)
    prefill_per_token_s: float | None = Field(default=None, ge=0)
    decode_per_seq_s: float | None = Field(default=None, ge=0)
    context_per_token_s: float | None = Field(default=None, ge=0)
    # Latency outside the engine loop (HTTP, tokenization), added before a request is scheduled.
    request_overhead_s: float | None = Field(default=None, ge=0)
    # Reading one LoRA adapter that is not among the max_cpu_loras cached ones; the step needing it waits.
    lora_load_s: float | None = Field(default=None, ge=0)


class OutputLengthConfig(BaseModel):
    """How many tokens a request generates before EOS when it does not set ``ignore_eos``.

    The length is drawn per request (seeded by ``SimConfig.seed`` and the request id) and always
    capped by ``max_tokens``. ``fixed`` always gives ``mean``; ``uniform`` draws in [min, max];
    ``exponential`` and ``lognormal`` have mean ``mean`` and are clipped to [min, max].
    """

    model_config = ConfigDict(extra="forbid")

    distribution: Literal["fixed", "uniform", "exponential", "lognormal"] = "lognormal"
    mean: int = Field(default=256, ge=1)
    min: int = Field(default=1, ge=1)
    max: int = Field(default=4096, ge=1)
    # Shape of the lognormal (sigma of the underlying normal).
    sigma: float = Field(default=0.8, gt=0)

    @model_validator(mode="after")
    def _check_bounds(self) -> OutputLengthConfig:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class KVEventsConfig(BaseModel):
    """KV-cache events (BlockStored / BlockRemoved / AllBlocksCleared) as msgpack over ZMQ, like
    vLLM's ``--kv-events-config``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    # ZMQ PUB socket the events go out on (vLLM's default). Bound when it holds "*", "::",
    # ipc:// or inproc://, else connected, as vLLM does.
    endpoint: str = "tcp://*:5557"
    # vLLM's default topic is empty; llm-d's indexer expects "kv@<pod-ip>@<model>".
    topic: str = ""


class SimConfig(BaseModel):
    """The simulator engine: which hardware/model preset it imitates and how fast time runs."""

    model_config = ConfigDict(extra="forbid")

    preset: PresetName = "llama3-8b-h100"
    # 1.0 = real time; 0.01 = 100x faster than the modelled hardware; 0 = no sleeping at all.
    time_scale: float = Field(default=1.0, ge=0)
    seed: int = 0
    cost: CostOverrides = Field(default_factory=CostOverrides)
    output_length: OutputLengthConfig = Field(default_factory=OutputLengthConfig)
    kv_events: KVEventsConfig = Field(default_factory=KVEventsConfig)
