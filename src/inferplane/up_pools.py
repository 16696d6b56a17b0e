"""``inferplane up`` with several pools: each pool's servers and picker, and the router between them.

A pool is one base model (``llm``: ``inferplane serve`` replicas) or one model repository
(``models``: ``inferplane serve-models`` replicas, KServe v2 REST and gRPC, OpenAI embeddings) with
its own endpoint picker, as one InferencePool with one EPP in the Gateway API Inference Extension.
Without ``pools`` the top-level ``replicas``/``server``/``picker`` are one LLM pool, as before.

Port defaults keep pools apart: pool ``i``'s servers start at ``8000 + 100 i`` (a models pool's gRPC
ports follow its HTTP ports), its picker listens on ``9002 + 10 i``, ``9003 + 10 i`` and
``9090 + 10 i``. Every port of every process is checked for clashes before anything starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferplane.configfile import ConfigError

POOL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"


class PoolConfig(BaseModel):
    """One pool of ``pools``: its kind, replica count, server section and picker section."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=POOL_NAME_PATTERN, description="the pool's name (a DNS label: a-z, 0-9, '-')")
    kind: Literal["llm", "models"] = Field(
        default="llm", description="llm: `inferplane serve` replicas; models: `inferplane serve-models` replicas")
    replicas: int = Field(default=1, ge=1, le=64, description="server replicas, on ports server.port + i")
    server: dict[str, Any] = Field(
        default_factory=dict,
        description="llm: the `server` section (inferplane serve); models: the `oip` section (serve-models, "
                    "`repository` required; gRPC on grpc_port + i unless `grpc_port: null`)",
    )
    picker: dict[str, Any] = Field(
        default_factory=dict,
        description="this pool's `picker` section; models pools default to queue and in-flight scoring")


class PoolPlan(BaseModel):
    """One pool's validated server and picker configurations; ``prefix`` names its processes."""

    name: str
    kind: Literal["llm", "models"]
    #: "" for the single pool of a configuration without ``pools`` (processes ``server-0``, ``picker``).
    prefix: str = ""
    servers: list[Any]
    picker: Any

    @property
    def endpoints(self) -> list[str]:
        """The servers' HTTP addresses (what the picker scrapes and names)."""
        return [f"{connect_host(s.host)}:{s.port}" for s in self.servers]

    @property
    def grpc_endpoints(self) -> dict[str, str]:
        """HTTP address → the same replica's KServe v2 gRPC address (models pools with gRPC)."""
        if self.kind != "models":
            return {}
        return {f"{connect_host(s.host)}:{s.port}": f"{connect_host(s.host)}:{s.grpc_port}"
                for s in self.servers if s.grpc_port is not None}

    def process(self, what: str) -> str:
        """A child process's name: ``server-0``, ``picker``, or ``chat-server-0``, ``chat-picker``."""
        return f"{self.prefix}-{what}" if self.prefix else what

    def models(self) -> list[str]:
        """The model names known from the configuration (the router learns the rest from the servers)."""
        if self.kind == "llm":
            return sorted({s.served_model_name for s in self.servers})
        names = set()
        for server in self.servers:
            if server.load_models is not None:
                names.update(server.load_models)
            else:
                names.update(p.name for p in Path(server.repository).iterdir() if (p / "config.yaml").is_file())
        return sorted(names)


def connect_host(bind_host: str) -> str:
    return "127.0.0.1" if bind_host in ("0.0.0.0", "", "::") else bind_host


def field_path(loc: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    """``("pools", 1, "replicas")`` → ``pools[1].replicas`` (under ``prefix``)."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def validate_section(model: type[BaseModel], raw: dict[str, Any], source: str, prefix: str) -> Any:
    """Validate ``raw`` as ``model``; a ConfigError names each bad field as ``prefix.field``."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"invalid configuration in {source}:"]
        lines += [f"  {field_path(problem['loc'], prefix)}: {problem['msg']}" for problem in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def classic_model_scorers() -> list[Any]:
    """Models pools (classic and embedding models): fewest requests in flight, then the shortest queue.

    No prefix or KV-cache scorer: these servers hold no KV cache, and a request's cost does not depend
    on what ran before it.
    """
    from inferplane.picker.config import ScorerSpec

    return [ScorerSpec(type="in-flight-scorer", weight=2), ScorerSpec(type="queue-scorer", weight=1)]


def plan_servers(pool: PoolConfig, index: int, multi: bool, telemetry: Any, source: str,
                 where: str) -> list[Any]:
    """The replicas' server configurations (``where`` prefixes field names in errors)."""
    raw = dict(pool.server)
    if multi:
        raw.setdefault("port", 8000 + 100 * index)
    if pool.kind == "llm":
        from inferplane.server.config import ServerConfig

        raw = {"telemetry": telemetry, **raw}
        base = validate_section(ServerConfig, raw, source, f"{where}.server")
        return [validate_section(ServerConfig, {**raw, "port": base.port + i}, source, f"{where}.server")
                for i in range(pool.replicas)]
    from inferplane.oip.config import OipConfig

    base = validate_section(OipConfig, raw, source, f"{where}.server")
    grpc_base = raw["grpc_port"] if "grpc_port" in raw else base.port + pool.replicas
    return [
        validate_section(OipConfig, {**raw, "port": base.port + i,
                                     "grpc_port": None if grpc_base is None else grpc_base + i},
                         source, f"{where}.server")
        for i in range(pool.replicas)
    ]


def plan_picker(pool: PoolConfig, servers: list[Any], index: int, multi: bool, telemetry: Any,
                objectives: dict[str, int], rewrites_file: Path, fallbacks: bool, source: str, where: str) -> Any:
    """The pool's picker: its endpoints, load profile, objectives and model-rewrite file."""
    from inferplane.picker.config import PickerConfig, cpu_engine_scorers

    endpoints = [f"{connect_host(s.host)}:{s.port}" for s in servers]
    raw: dict[str, Any] = {"telemetry": telemetry, **pool.picker, "endpoints": endpoints}
    if multi:
        raw.setdefault("pool_name", pool.name)
        raw.setdefault("grpc_port", 9002 + 10 * index)
        raw.setdefault("health_port", 9003 + 10 * index)
        raw.setdefault("metrics_port", 9090 + 10 * index)
    if "profile" not in pool.picker:
        if pool.kind == "models":
            raw["profile"] = {"scorers": [spec.model_dump() for spec in classic_model_scorers()]}
        elif servers[0].engine == "openvino":
            # CPU replicas: a replica streaming an answer is busy although its queue is empty.
            raw["profile"] = {"scorers": [spec.model_dump() for spec in cpu_engine_scorers()]}
    # Where `inferplane rollout --run-dir` writes its weighted model rewrites (re-read, no restart).
    raw.setdefault("model_rewrites_file", str(rewrites_file))
    if fallbacks:
        # Ordered fallbacks for Envoy's override-host balancer; used when gateway.num_retries > 0.
        raw.setdefault("fallback_endpoints", min(2, len(endpoints) - 1))
    if objectives:
        raw["objectives"] = {**objectives, **(pool.picker.get("objectives") or {})}
    return validate_section(PickerConfig, raw, source, f"{where}.picker")


def plan_router(router: dict[str, Any], pools: list[PoolPlan], log_format: str, source: str) -> Any:
    """The body-based router between ``pools`` (the first is the default pool)."""
    from inferplane.gateway.router.config import RouterConfig

    raw = {
        "log_format": log_format,
        **router,
        "pools": [{"name": p.name, "kind": p.kind, "endpoints": p.endpoints, "models": p.models(),
                   "grpc": bool(p.grpc_endpoints),
                   "model_rewrites": [rewrite.model_dump(by_alias=True) for rewrite in p.picker.model_rewrites],
                   "model_rewrites_file": p.picker.model_rewrites_file} for p in pools],
    }
    return validate_section(RouterConfig, raw, source, "router")


def gateway_pools(pools: list[PoolPlan]) -> list[dict[str, Any]]:
    """The gateway's view of the pools: picker address, HTTP endpoints, gRPC addresses."""
    return [
        {
            "name": p.name,
            "kind": p.kind,
            "picker_address": f"{connect_host(p.picker.host)}:{p.picker.grpc_port}",
            "endpoints": p.endpoints,
            "grpc_endpoints": p.grpc_endpoints,
        }
        for p in pools
    ]


def listen_ports(plan: Any) -> list[tuple[str, str, str, int]]:
    """``(process, configuration field, host, port)`` of every port the platform listens on."""
    ports: list[tuple[str, str, str, int]] = []
    for i, pool in enumerate(plan.pools):
        where = f"pools[{i}]" if pool.prefix else ""
        server_field = f"{where}.server.port" if where else "server.port"
        for j, server in enumerate(pool.servers):
            ports.append((f"{pool.process('server')} {j}", server_field, server.host, server.port))
            if pool.kind == "models" and server.grpc_port is not None:
                ports.append((f"{pool.process('server')} {j} gRPC", f"{where}.server.grpc_port", server.host,
                              server.grpc_port))
        picker = pool.picker
        picker_field = f"{where}.picker" if where else "picker"
        ports += [
            (f"{pool.process('picker')} gRPC", f"{picker_field}.grpc_port", picker.host, picker.grpc_port),
            (f"{pool.process('picker')} health", f"{picker_field}.health_port", picker.host, picker.health_port),
            (f"{pool.process('picker')} metrics", f"{picker_field}.metrics_port", picker.host, picker.metrics_port),
        ]
    if plan.router is not None:
        ports += [("router gRPC", "router.grpc_port", plan.router.host, plan.router.grpc_port),
                  ("router health", "router.health_port", plan.router.host, plan.router.health_port)]
    gateway = plan.gateway
    ports += [("gateway", "gateway.port", gateway.host, gateway.port),
              ("gateway admin", "gateway.admin_port", gateway.admin_host, gateway.admin_port)]
    if plan.batch is not None:
        ports.append(("batch API", "batch.port", plan.batch.host, plan.batch.port))
    if plan.observe.prometheus.enabled:
        prometheus = plan.observe.prometheus
        ports.append(("prometheus", "observe.prometheus.port", prometheus.host, prometheus.port))
    if plan.console is not None:
        ports.append(("console", "console.port", plan.console.host, plan.console.port))
    if plan.auth is not None:
        ports.append(("auth", "auth.port", plan.auth.host, plan.auth.port))
    return ports


def check_port_clashes(plan: Any, source: str) -> None:
    """Two processes configured on one port: a ConfigError naming both fields."""
    seen: list[tuple[str, str, str, int]] = []
    for what, field, host, port in listen_ports(plan):
        if port == 0:
            continue  # a free port, chosen at start
        for other, other_field, other_host, other_port in seen:
            wildcard = {host, other_host} & {"0.0.0.0", "", "::"}
            if port == other_port and (host == other_host or wildcard):
                raise ConfigError(
                    f"invalid configuration in {source}:\n  {field}: port {port} ({what}) is also the port of "
                    f"{other} ({other_field})")
        seen.append((what, field, host, port))
