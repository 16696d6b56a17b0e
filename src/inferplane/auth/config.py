"""Typed configuration of the authorization service (the ``auth`` section)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AuthConfig(BaseModel):
    """Where the ext_authz service listens and which keys file it enforces.

    Authorization is off when ``keys_file`` is not set: ``inferplane up`` then runs no auth service
    and Envoy has no ext_authz filter (the quick start works without keys).
    """

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="address the ext_authz gRPC service binds")
    port: int = Field(default=9010, ge=0, le=65535, description="port of the ext_authz gRPC service (and its gRPC health)")
    keys_file: str | None = Field(
        default=None, description="the keys file written by `inferplane keys` (hashes only); unset = no authorization"
    )
    internal_key: str | None = Field(
        default=None,
        description=(
            "a key for inferplane's own traffic (the batch dispatcher, readiness checks); it may name the tenant in "
            "the fairness header and has no rate limits. Set by `inferplane up`; keep it secret"
        ),
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0,
        description="largest request body Envoy hands to the service (the model is read from it); larger → 413",
    )
    default_max_tokens: int = Field(
        default=256, ge=0, description="output tokens assumed for the token rate limit when a request names no max_tokens"
    )
    chars_per_token: float = Field(default=4.0, gt=0, description="prompt characters per token for the token estimate")
