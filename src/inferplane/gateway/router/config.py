"""Typed configuration of the body-based router (YAML section ``router``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inferplane.gateway.config import split_host_port


class RouterPool(BaseModel):
    """One pool the router may send requests to, and where its servers list their models."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the pool's name (what the router writes in x-inferplane-pool)")
    kind: Literal["llm", "models"] = Field(
        default="llm",
        description="llm: servers list models at GET /v1/models; models: KServe v2 servers, POST /v2/repository/index",
    )
    endpoints: list[str] = Field(min_length=1, description="the pool's servers (HTTP) as host:port")
    models: list[str] = Field(
        default_factory=list, description="models known before the first discovery (served names, repository models)"
    )
    grpc: bool = Field(default=False, description="the pool serves KServe v2 gRPC (models pools with grpc_port)")
    model_rewrites: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the pool picker's model rewrites ({name, rules}): the names they match route to this pool",
    )
    model_rewrites_file: Path | None = Field(
        default=None, description="the pool picker's rewrites file (re-read with the model lists; `rollout` writes it)"
    )

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: list[str]) -> list[str]:
        for address in value:
            split_host_port(address)
        return value


class RouterConfig(BaseModel):
    """``inferplane router``: where it listens and the pools it routes between (the first is the default)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="address the gRPC servers bind")
    grpc_port: int = Field(default=9004, ge=0, le=65535, description="ext_proc gRPC port (0 picks a free one)")
    health_port: int = Field(default=9005, ge=0, le=65535, description="gRPC health port (0 picks a free one)")
    pools: list[RouterPool] = Field(min_length=1, description="the pools, in priority order for a model served twice")
    refresh_interval_s: float = Field(default=5.0, gt=0, description="how often the pools' model lists are re-read")
    discovery_timeout_s: float = Field(default=2.0, gt=0, description="time limit of one model-list request")
    miss_refresh_s: float = Field(
        default=0.5, ge=0,
        description="an unknown model re-reads the model lists first, at most this often (a model just loaded)",
    )
    max_body_bytes: int = Field(default=64 << 20, gt=0, description="largest request body the router reads")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="log level")
    log_format: Literal["text", "json"] = Field(default="text", description="log lines as text or JSON objects")

    @model_validator(mode="after")
    def _unique_pools(self) -> RouterConfig:
        names = [pool.name for pool in self.pools]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"pools[{i}].name: pool {name!r} is listed twice")
        return self
