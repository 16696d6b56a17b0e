"""Typed configuration: the server's (YAML section ``oip``) and each model's ``config.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inferplane.configfile import ConfigError, load_model, read_yaml, validate_model

DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES")
RUNTIMES = ("sklearn", "xgboost", "onnx", "torchscript", "sentence-embeddings")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_Strict):
    """One input or output; ``shape`` excludes the batch dimension when the model batches (-1: any)."""

    name: str
    datatype: Literal[DATATYPES]  # type: ignore[valid-type]
    shape: list[int] = Field(default_factory=list)


class QueuePolicy(_Strict):
    """Limits of one priority level's queue (0: unlimited / no timeout)."""

    max_queue_size: int = Field(0, ge=0)
    default_timeout_microseconds: int = Field(0, ge=0)


class DynamicBatching(_Strict):
    """Triton-style dynamic batching: requests queued up to ``max_queue_delay_microseconds`` are merged."""

    enabled: bool = True
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_delay_microseconds: int = Field(0, ge=0)
    priority_levels: int = Field(1, ge=1, le=16)
    default_priority_level: int = Field(0, ge=0)
    max_queue_size: int = Field(0, ge=0)
    default_timeout_microseconds: int = Field(0, ge=0)
    priority_queue_policy: dict[int, QueuePolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _levels(self) -> DynamicBatching:
        if self.default_priority_level > self.priority_levels:
            raise ValueError("default_priority_level must be at most priority_levels")
        for level in self.priority_queue_policy:
            if not 1 <= level <= self.priority_levels:
                raise ValueError(f"priority_queue_policy level {level} is outside 1..priority_levels")
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise ValueError("preferred_batch_sizes must be positive")
        return self

    def level_of(self, priority: int) -> int:
        """The 1-based level a request's priority maps to (0 or out of range: the default level)."""
        if 1 <= priority <= self.priority_levels:
            return priority
        return self.default_priority_level or (self.priority_levels + 1) // 2

    def policy(self, level: int) -> QueuePolicy:
        """Queue limits for ``level``, falling back to the model-wide ones."""
        return self.priority_queue_policy.get(
            level,
            QueuePolicy(max_queue_size=self.max_queue_size, default_timeout_microseconds=self.default_timeout_microseconds),
        )


class LatestPolicy(_Strict):
    num_versions: int = Field(1, ge=1)


class SpecificPolicy(_Strict):
    versions: list[int] = Field(min_length=1)


class VersionPolicy(_Strict):
    """Which version directories are served: the latest N, specific ones, or all."""

    latest: LatestPolicy | None = None
    specific: SpecificPolicy | None = None
    all: dict | None = None

    @model_validator(mode="after")
    def _one(self) -> VersionPolicy:
        if sum(x is not None for x in (self.latest, self.specific, self.all)) > 1:
            raise ValueError("set only one of latest, specific, all")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve among ``available``."""
        ordered = sorted(available)
        if self.specific is not None:
            return [v for v in ordered if v in self.specific.versions]
        if self.all is not None:
            return ordered
        keep = self.latest.num_versions if self.latest else 1
        return ordered[-keep:]


class ModelConfig(_Strict):
    """A model's ``config.yaml``."""

    name: str | None = None
    runtime: Literal[RUNTIMES]  # type: ignore[valid-type]
    platform: str | None = None
    max_batch_size: int = Field(0, ge=0)
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    dynamic_batching: DynamicBatching | None = None
    instance_count: int = Field(1, ge=1, le=64)
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _batching(self) -> ModelConfig:
        if self.dynamic_batching and self.dynamic_batching.enabled and self.max_batch_size == 0:
            raise ValueError("dynamic_batching needs max_batch_size > 0")
        if self.dynamic_batching and any(s > self.max_batch_size for s in self.dynamic_batching.preferred_batch_sizes):
            raise ValueError("preferred_batch_sizes must not exceed max_batch_size")
        return self

    @property
    def batching(self) -> bool:
        return bool(self.dynamic_batching and self.dynamic_batching.enabled and self.max_batch_size > 0)


def load_model_config(model_dir: Path, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """Read and validate ``model_dir/config.yaml`` (errors name the file and the bad field)."""
    path = model_dir / "config.yaml"
    raw = read_yaml(path)
    if overrides:
        raw = {**raw, **overrides}
    config = validate_model(ModelConfig, raw, str(path))
    if config.name and config.name != model_dir.name:
        raise ConfigError(f"{path}: name '{config.name}' differs from the directory name '{model_dir.name}'")
    return config


class OipConfig(_Strict):
    """``inferplane serve-models``: YAML section ``oip``, overridden by command-line flags."""

    #: Model repository: MODEL/config.yaml and MODEL/VERSION/ directories.
    repository: Path
    #: Address to listen on (HTTP and gRPC).
    host: str = "127.0.0.1"
    #: HTTP port: v2 REST, /v1/embeddings, /metrics.
    port: int = Field(8000, ge=0, le=65535)
    #: gRPC port for inference.GRPCInferenceService; null: no gRPC.
    grpc_port: int | None = Field(None, ge=0, le=65535)
    #: Models to load at start; null: every model in the repository.
    load_models: list[str] | None = None
    #: Where exported models (embeddings) are cached; null: REPOSITORY/.cache.
    cache_dir: Path | None = None
    #: Server log level.
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "warning"

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value


def load_oip_config(path: str | None, overrides: dict[str, Any]) -> OipConfig:
    """The server configuration from the YAML file's ``oip`` section plus ``overrides``."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = dict(read_yaml(path).get("oip") or {})
    raw.update(overrides)
    if "repository" not in raw:
        raise ConfigError("oip.repository: a model repository directory is required (--repository)")
    return validate_model(OipConfig, raw, f"{path} (section 'oip')" if path else "command line")


__all__ = ["ModelConfig", "OipConfig", "TensorSpec", "load_model", "load_model_config", "load_oip_config"]
