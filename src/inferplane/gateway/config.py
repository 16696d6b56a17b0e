"""Typed configuration of the Envoy gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BodyMode = Literal["NONE", "BUFFERED", "STREAMED", "FULL_DUPLEX_STREAMED"]


class TLSConfig(BaseModel):
    """TLS termination on the listener: a PEM certificate chain and its private key."""

    model_config = ConfigDict(extra="forbid")

    cert_file: str = Field(description="PEM certificate chain served to clients")
    key_file: str = Field(description="PEM private key of the certificate")

    @field_validator("cert_file", "key_file")
    @classmethod
    def _readable(cls, value: str) -> str:
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"{value} is not a readable file")
        return str(path.resolve())


class GatewayPool(BaseModel):
    """One InferencePool behind the gateway when there are several (set by `inferplane up` from ``pools``).

    Requests reach it when the body-based router names it in ``x-inferplane-pool``; its own picker
    then chooses the replica. A ``models`` pool (KServe v2 / Triton servers) also gets the ``/v2``
    REST routes and, when ``grpc_endpoints`` is set, the ``inference.GRPCInferenceService`` routes.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$", description="pool name (DNS label)")
    kind: Literal["llm", "models"] = Field(default="llm", description="llm: inferplane serve; models: serve-models")
    picker_address: str = Field(description="this pool's endpoint picker (ext_proc gRPC) as host:port")
    endpoints: list[str] = Field(min_length=1, description="the pool's servers (HTTP) as host:port")
    grpc_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="models pools: HTTP address -> the same replica's KServe v2 gRPC address (empty: no gRPC)",
    )

    @field_validator("picker_address")
    @classmethod
    def _check_picker(cls, value: str) -> str:
        split_host_port(value)
        return value

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: list[str]) -> list[str]:
        for address in value:
            split_host_port(address)
        return value

    @model_validator(mode="after")
    def _check_grpc(self) -> GatewayPool:
        for rest, grpc in self.grpc_endpoints.items():
            if rest not in self.endpoints:
                raise ValueError(f"grpc_endpoints: {rest!r} is not one of the pool's endpoints")
            split_host_port(grpc)
        if self.grpc_endpoints and self.kind != "models":
            raise ValueError("grpc_endpoints: only a models pool serves KServe v2 gRPC")
        if self.grpc_endpoints and set(self.grpc_endpoints) != set(self.endpoints):
            raise ValueError("grpc_endpoints: name the gRPC address of every endpoint, or of none")
        return self


class GatewayConfig(BaseModel):
    """What the generated Envoy bootstrap listens on and where it sends traffic.

    ``endpoint_selection`` says how Envoy turns the picker's answer into a connection:

    - ``override_host`` (default): the pool's endpoints are known to the gateway (``pool_endpoints``);
      Envoy's override-host load balancer takes the picker's ordered list and, when the first
      endpoint refuses the connection, retries on the next one.
    - ``original_dst``: the GIE reference bootstrap; Envoy connects to whatever address the header
      names, so endpoints may change without touching Envoy, but only the first one is used.

    ``failure_mode`` is ``InferencePool.spec.endpointPickerRef.failureMode``: with ``FailClose`` a
    request fails (503) when the picker cannot be reached; with ``FailOpen`` Envoy skips the picker
    and spreads requests over ``pool_endpoints`` round-robin.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="address the listener binds (0.0.0.0 for all)")
    port: int = Field(default=8080, ge=0, le=65535, description="port of the OpenAI-compatible listener")
    admin_host: str = Field(default="127.0.0.1", description="address of Envoy's admin interface")
    admin_port: int = Field(default=9901, ge=0, le=65535, description="port of Envoy's admin interface")
    picker_address: str = Field(default="127.0.0.1:9002", description="the endpoint picker's ext_proc gRPC address")
    failure_mode: Literal["FailOpen", "FailClose"] = Field(
        default="FailClose", description="what happens when the picker cannot be reached (see above)"
    )
    endpoint_selection: Literal["override_host", "original_dst"] = Field(
        default="override_host", description="how the picked endpoint becomes a connection (see above)"
    )
    pool_endpoints: list[str] = Field(
        default_factory=list, description="the pool's model servers as host:port (set by `inferplane up`)"
    )
    batch_api_address: str | None = Field(
        default=None,
        description="host:port of the Batch API server; /v1/files and /v1/batches go there, skipping the picker",
    )
    console_address: str | None = Field(
        default=None, description="host:port of the web console; /console goes there, skipping the picker")
    num_retries: int = Field(
        default=0, ge=0, le=10,
        description=(
            "attempts on the picker's fallback endpoints when a server fails before answering; off by default: "
            "Envoy cannot replay a body that ext_proc streamed (FULL_DUPLEX_STREAMED), so retries need BUFFERED"
        ),
    )
    message_timeout_s: float = Field(default=1000.0, gt=0, description="ext_proc message timeout (GIE: 1000 s)")
    grpc_timeout_s: float = Field(default=10.0, gt=0, description="ext_proc gRPC call timeout (GIE: 10 s)")
    request_body_mode: BodyMode | None = Field(
        default=None,
        description=(
            "ext_proc request body mode; default FULL_DUPLEX_STREAMED, or BUFFERED under FailOpen (Envoy cannot "
            "fail open once a body has streamed to a picker that then fails, but can with a buffered body)"
        ),
    )
    response_body_mode: BodyMode = Field(
        default="FULL_DUPLEX_STREAMED",
        description="ext_proc response body mode; NONE skips the picker on the response path (no token accounting)",
    )
    route_timeout_s: float = Field(default=0.0, ge=0, description="whole-request timeout; 0 = none (streams last minutes)")
    stream_idle_timeout_s: float = Field(default=600.0, gt=0, description="close a stream idle this long")
    connect_timeout_s: float = Field(default=2.0, gt=0, description="upstream connect timeout")
    max_request_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="per-connection buffer limit")
    base_id: int = Field(default=0, ge=0, description="Envoy --base-id (0: not passed; hot restart is disabled)")
    concurrency: int = Field(default=1, ge=1, description="Envoy worker threads")
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical", "off"] = Field(
        default="warning", description="Envoy log level"
    )
    access_log: bool = Field(default=False, description="JSON access log on Envoy's stdout")
    tls: TLSConfig | None = Field(
        default=None, description="terminate TLS on the listener (HTTPS only): {cert_file, key_file}, PEM file paths"
    )
    auth_address: str | None = Field(
        default=None,
        description="host:port of the ext_authz service (API keys); set by `inferplane up` when auth.keys_file is set",
    )
    pools: list[GatewayPool] = Field(
        default_factory=list,
        description=(
            "several pools behind the body-based router (set by `inferplane up` from `pools`); the first is the "
            "default pool; empty: one pool, `picker_address` and `pool_endpoints`"
        ),
    )
    router_address: str | None = Field(
        default=None, description="host:port of the body-based router (ext_proc) that chooses the pool; needs pools"
    )
    auth_max_body_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0,
        description="request bodies buffered for ext_authz (the model is read from them); larger bodies get 413",
    )

    @field_validator("picker_address", "pool_endpoints", "batch_api_address", "console_address", "auth_address",
                     "router_address")
    @classmethod
    def _check_addresses(cls, value: str | list[str] | None) -> str | list[str] | None:
        for address in [value] if isinstance(value, str) else value or []:
            split_host_port(address)
        return value

    @model_validator(mode="after")
    def _default_body_mode(self) -> GatewayConfig:
        if self.request_body_mode is None:
            self.request_body_mode = "BUFFERED" if self.failure_mode == "FailOpen" else "FULL_DUPLEX_STREAMED"
        return self

    @model_validator(mode="after")
    def _check_pools(self) -> GatewayConfig:
        if not self.pools:
            if self.router_address:
                raise ValueError("router_address: the body-based router needs `pools`")
            return self
        names = [pool.name for pool in self.pools]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"pools[{i}].name: pool {name!r} is listed twice")
        if not self.router_address:
            raise ValueError("router_address: several pools need the body-based router's address")
        if self.endpoint_selection != "override_host":
            raise ValueError("endpoint_selection: several pools need override_host")
        return self

    @model_validator(mode="after")
    def _check_pool(self) -> GatewayConfig:
        if self.endpoint_selection == "override_host" and not self.pool_endpoints and not self.pools:
            raise ValueError("pool_endpoints must list the pool's endpoints when endpoint_selection is override_host")
        return self


def split_host_port(address: str) -> tuple[str, int]:
    """``"10.0.0.1:8000"`` → ``("10.0.0.1", 8000)``; a ValueError names what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)
