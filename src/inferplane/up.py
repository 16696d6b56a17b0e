"""``inferplane up``: the whole platform on one machine.

Starts N model-server replicas, the endpoint picker watching them, and Envoy in front, waits
until a request can travel the whole path, prints the OpenAI base URL, and stops everything on
Ctrl-C / SIGTERM. With ``pools`` it starts each pool's servers and picker and the body-based router
between them (see :mod:`inferplane.up_pools`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field

from inferplane.configfile import ConfigError, read_yaml, validate_model
from inferplane.gateway.config import GatewayConfig
from inferplane.gateway.envoy import envoy_command, write_bootstrap
from inferplane.observe import up_prometheus as observe_prometheus
from inferplane.observe.config import ObserveConfig
from inferplane.observe.logs import json_relay
from inferplane.supervisor import Supervisor, python_module_command, wait_until
from inferplane.up_pools import (
    PoolConfig,
    PoolPlan,
    check_port_clashes,
    connect_host,
    gateway_pools,
    listen_ports,
    plan_picker,
    plan_router,
    plan_servers,
    validate_section,
)


class PlatformConfig(BaseModel):
    """The top level of an ``inferplane up`` YAML file.

    ``server``, ``picker`` and ``gateway`` are the components' own sections (see each component's
    configuration reference); ``up`` fills in what ties them together: replica ports, the picker's
    endpoint list and the gateway's pool and picker address. ``pools`` replaces ``replicas``,
    ``server`` and ``picker`` with several pools, each with its own servers and picker, behind one
    gateway that routes by the model a request names.
    """

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(default=2, ge=1, le=64, description="model-server replicas, on ports server.port + i")
    ready_timeout_s: float = Field(default=300.0, gt=0, description="give up if the platform is not ready by then")
    server: dict[str, Any] = Field(default_factory=dict, description="the `server` section (inferplane serve)")
    picker: dict[str, Any] = Field(default_factory=dict, description="the `picker` section (inferplane picker)")
    pools: list[PoolConfig] | None = Field(
        default=None, min_length=1,
        description="several pools (each: name, kind llm|models, replicas, server, picker) instead of "
                    "replicas/server/picker; requests go to the pool serving the model they name",
    )
    primary_pool: str | None = Field(
        default=None, description="with pools: the pool whose picker the Batch API and the console read "
                                  "(default: the first llm pool)")
    router: dict[str, Any] = Field(
        default_factory=dict, description="with pools: the `router` section (the body-based router between pools)")
    gateway: dict[str, Any] = Field(default_factory=dict, description="the `gateway` section (Envoy)")
    batch_api: bool = Field(default=True, description="run the OpenAI Batch API (/v1/files, /v1/batches) too")
    batch: dict[str, Any] = Field(default_factory=dict, description="the `batch` section (inferplane batch serve)")
    observe: ObserveConfig = Field(default_factory=ObserveConfig,
                                   description="Prometheus, JSON logs and tracing (see docs/observability.md)")
    console: dict[str, Any] = Field(
        default_factory=dict, description="the `console` section (inferplane console; `enabled: false` skips it)")
    auth: dict[str, Any] = Field(
        default_factory=dict, description="the `auth` section (API keys; on when auth.keys_file is set)"
    )


class Plan(BaseModel):
    """Validated per-component configurations, ready to be written and launched."""

    pools: list[PoolPlan]
    #: The pool whose picker the Batch API's capacity gate and the console read.
    primary: str
    gateway: GatewayConfig
    router: Any | None = None
    batch: Any | None = None
    observe: ObserveConfig = ObserveConfig()
    console: Any | None = None
    auth: Any | None = None

    @property
    def primary_pool(self) -> PoolPlan:
        return next(pool for pool in self.pools if pool.name == self.primary)

    @property
    def servers(self) -> list[Any]:
        """The primary pool's servers."""
        return self.primary_pool.servers

    @property
    def picker(self) -> Any:
        """The primary pool's picker."""
        return self.primary_pool.picker


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the whole platform locally (Envoy + picker + model servers)",
        description="Start N model servers, the endpoint picker and Envoy; print the OpenAI base URL.",
    )
    parser.add_argument("--config", help="YAML file with sections replicas, server, picker, gateway (or pools)")
    parser.add_argument("--replicas", type=int, help="number of model-server replicas (default 2)")
    parser.add_argument("--port", type=int, help="gateway port (default 8080)")
    parser.add_argument("--engine", help="model-server engine: openvino (default), sim, transformers")
    parser.add_argument("--failure-mode", choices=["FailOpen", "FailClose"], help="when the picker is unreachable")
    parser.add_argument("--run-dir", help="where generated configs go (default: a new temporary directory)")
    parser.add_argument("--observe", action="store_true", help="also start Prometheus scraping every component")
    parser.add_argument("--log-format", choices=["text", "json"], help="log lines as text (default) or JSON objects")
    parser.set_defaults(func=run)


def platform_config_from_args(args: argparse.Namespace) -> PlatformConfig:
    raw = read_yaml(args.config) if args.config else {}
    source = args.config or "command line"
    for section in ("server", "picker", "gateway"):
        raw[section] = dict(raw.get(section) or {})
    if raw.get("pools") is not None:
        if args.replicas is not None or args.engine:
            raise ConfigError(f"{source}: with `pools`, set replicas and engine per pool, not on the command line")
        for section in ("server", "picker"):
            if not raw[section]:
                del raw[section]
    if args.replicas is not None:
        raw["replicas"] = args.replicas
    if args.port is not None:
        raw["gateway"]["port"] = args.port
    if args.engine:
        raw["server"]["engine"] = args.engine
    if args.failure_mode:
        raw["gateway"]["failure_mode"] = args.failure_mode
    if getattr(args, "observe", False) or getattr(args, "log_format", None):
        observe = raw["observe"] = dict(raw.get("observe") or {})
        if args.observe:
            observe["prometheus"] = {**(observe.get("prometheus") or {}), "enabled": True}
        if args.log_format:
            observe["log_format"] = args.log_format
    return validate_section(PlatformConfig, raw, source, "")


def _check_pools(config: PlatformConfig, source: str) -> list[PoolConfig]:
    """The pools to run: ``pools``, or the top-level replicas/server/picker as one LLM pool."""
    if config.pools is None:
        if config.primary_pool is not None or config.router:
            field = "primary_pool" if config.primary_pool is not None else "router"
            raise ConfigError(f"invalid configuration in {source}:\n  {field}: only used with `pools`")
        return [PoolConfig(name="default", replicas=config.replicas, server=config.server, picker=config.picker)]
    for field in ("replicas", "server", "picker"):
        if field in config.model_fields_set:
            raise ConfigError(f"invalid configuration in {source}:\n  {field}: with `pools`, set it in each pool "
                              f"(pools[i].{field})")
    names = [pool.name for pool in config.pools]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"invalid configuration in {source}:\n  pools[{i}].name: pool {name!r} is listed twice")
    if config.primary_pool is not None and config.primary_pool not in names:
        raise ConfigError(f"invalid configuration in {source}:\n  primary_pool: {config.primary_pool!r} is not one "
                          f"of the pools ({', '.join(names)})")
    return config.pools


def plan(config: PlatformConfig, run_dir: Path, source: str = "configuration") -> Plan:
    """Derive and validate every component's configuration; a ConfigError names the bad field."""
    from inferplane.jobs.config import BatchConfig

    pool_configs = _check_pools(config, source)
    multi = config.pools is not None
    primary = config.primary_pool or next(
        (p.name for p in pool_configs if p.kind == "llm"), pool_configs[0].name)
    batch_raw: dict[str, Any] = {**config.batch, "dispatch": dict(config.batch.get("dispatch") or {})}
    # Batch requests are filler traffic: sheddable unless the user defined the objective.
    objectives = {batch_raw["dispatch"].get("objective", "batch"): -1} if config.batch_api else {}
    gateway_raw: dict[str, Any] = dict(config.gateway)
    override_host = gateway_raw.get("endpoint_selection", "override_host") == "override_host"
    telemetry = config.observe.telemetry()
    pools = []
    for i, pool in enumerate(pool_configs):
        where = f"pools[{i}]" if multi else ""
        servers = plan_servers(pool, i, multi, telemetry, source, where)
        rewrites = run_dir / ("model-rewrites.yaml" if pool.name == primary else f"model-rewrites-{pool.name}.yaml")
        picker = plan_picker(pool, servers, i, multi, telemetry, objectives, rewrites, override_host, source, where)
        pools.append(PoolPlan(name=pool.name, kind=pool.kind, prefix=pool.name if multi else "", servers=servers,
                              picker=picker))
    router = None
    if multi and (len(pools) > 1 or pools[0].kind == "models"):
        router = plan_router(config.router, pools, config.observe.log_format, source)
        gateway_raw["pools"] = gateway_pools(pools)
        gateway_raw.setdefault("router_address", f"{connect_host(router.host)}:{router.grpc_port}")
    else:
        only = pools[0]
        gateway_raw["pool_endpoints"] = only.endpoints
        gateway_raw.setdefault("picker_address", f"{connect_host(only.picker.host)}:{only.picker.grpc_port}")
    primary_picker = next(p.picker for p in pools if p.name == primary)
    auth = _plan_auth(config, source)
    if auth is not None:
        gateway_raw.setdefault("auth_address", f"{connect_host(auth.host)}:{auth.port}")
        gateway_raw.setdefault("auth_max_body_bytes", auth.max_body_bytes)
    batch = None
    if config.batch_api:
        batch_raw.setdefault("database", f"sqlite:///{run_dir / 'batch' / 'batch.db'}")
        batch_raw.setdefault("files_url", str(run_dir / "batch" / "files"))
        batch = validate_model(BatchConfig, batch_raw, f"{source} (section 'batch')")
        gateway_raw.setdefault("batch_api_address", f"{connect_host(batch.host)}:{batch.port}")
    gateway = validate_model(GatewayConfig, gateway_raw, f"{source} (section 'gateway')")
    console = _console_plan(config, primary_picker, batch, gateway, source)
    if console is not None and gateway.console_address is None:  # reachable through the gateway at /console
        gateway_raw["console_address"] = f"{connect_host(console.host)}:{console.port}"
        gateway = validate_model(GatewayConfig, gateway_raw, f"{source} (section 'gateway')")
    if batch is not None:
        batch.dispatch.gateway_url = _gateway_url(gateway)
        if gateway.tls is not None:
            batch.dispatch.verify_tls = False  # loopback to our own Envoy, whose certificate names a public host
        if auth is not None:
            batch.dispatch.api_key = auth.internal_key
        batch.dispatch.pool_metrics_url = batch.dispatch.pool_metrics_url or (
            f"http://{connect_host(primary_picker.host)}:{primary_picker.metrics_port}/metrics"
        )
    the_plan = Plan(pools=pools, primary=primary, gateway=gateway, router=router, batch=batch,
                    observe=config.observe, console=console, auth=auth)
    check_port_clashes(the_plan, source)
    return the_plan


def _console_plan(config: PlatformConfig, picker: Any, batch: Any, gateway: GatewayConfig, source: str) -> Any:
    """The console's configuration, reading this platform's picker, Batch API and Envoy; None when disabled."""
    from inferplane.console.config import ConsoleConfig

    where = f"{source} (section 'console')"
    if not validate_model(ConsoleConfig, config.console, where).enabled:
        return None
    raw = {
        "picker_url": f"http://{_connect_host(picker.host)}:{picker.metrics_port}",
        "batch_url": f"http://{_connect_host(batch.host)}:{batch.port}" if batch is not None else None,
        "envoy_admin_url": f"http://{_connect_host(gateway.admin_host)}:{gateway.admin_port}",
        **config.console,
    }
    return validate_model(ConsoleConfig, raw, where)


def _plan_auth(config: PlatformConfig, source: str) -> Any | None:
    """The auth service's configuration when a keys file is configured, with a fresh internal key."""
    import secrets

    from inferplane.auth.config import AuthConfig

    auth = validate_model(AuthConfig, config.auth, f"{source} (section 'auth')")
    if not auth.keys_file:
        return None
    auth.keys_file = str(Path(auth.keys_file).resolve())
    auth.internal_key = auth.internal_key or f"ipk_internal_{secrets.token_urlsafe(32)}"
    return auth


def _gateway_url(gateway: GatewayConfig) -> str:
    scheme = "https" if gateway.tls is not None else "http"
    return f"{scheme}://{_connect_host(gateway.host)}:{gateway.port}"


_connect_host = connect_host


def _check_ports_free(plan: Plan) -> None:
    """Every port the platform will listen on is free now (a ConfigError names the process otherwise)."""
    for what, field, host, port in listen_ports(plan):
        if port == 0:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                raise ConfigError(f"port {port} on {host} ({what}, {field}) is already in use") from None


def _write_section(directory: Path, name: str, section: str, model: BaseModel) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({section: model.model_dump(mode="json")}, sort_keys=False))
    return path


async def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    # Only ever our own loopback components: a TLS gateway's certificate names its public host.
    async with httpx.AsyncClient(timeout=2.0, verify=False) as client:
        return (await client.get(url, headers=headers)).status_code == 200


async def _grpc_serving(address: str, service: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2.0
        )
        return reply.status == health_pb2.HealthCheckResponse.SERVING


async def _start_pool(supervisor: Supervisor, pool: PoolPlan, run_dir: Path) -> list[tuple[str, Any, Any]]:
    """Start a pool's servers and picker; ``(process, readiness check, child)`` for each."""
    waits: list[tuple[str, Any, Any]] = []
    for i, server in enumerate(pool.servers):
        name = pool.process(f"server-{i}")
        url = f"http://{_connect_host(server.host)}:{server.port}"
        if pool.kind == "llm":
            path = _write_section(run_dir, name, "server", server)
            command, health = ["serve", "--config", str(path)], f"{url}/health"
        else:
            path = _write_section(run_dir, name, "oip", server)
            command, health = ["serve-models", "--config", str(path)], f"{url}/v2/health/ready"
        child = await supervisor.start(name, python_module_command("inferplane", *command))
        waits.append((name, lambda health=health: _http_ok(health), child))
    name = pool.process("picker")
    path = _write_section(run_dir, name, "picker", pool.picker)
    rewrites = pool.picker.model_rewrites_file
    if rewrites is not None and not rewrites.exists():
        rewrites.write_text("# model rewrites; 'inferplane rollout' writes its canaries here\n")
    child = await supervisor.start(name, python_module_command("inferplane", "picker", "--config", str(path)))
    health_address = f"{_connect_host(pool.picker.host)}:{pool.picker.health_port}"
    waits.append((name, lambda: _grpc_serving(health_address, "readiness"), child))
    return waits


async def run_platform(plan: Plan, run_dir: Path, ready_timeout_s: float, ready_event: asyncio.Event | None = None) -> int:
    supervisor = Supervisor(pid_dir=run_dir, line_format=json_relay if plan.observe.log_format == "json" else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    gateway = plan.gateway
    base_url = f"{_gateway_url(gateway)}/v1"
    try:
        waits_for: list[tuple[str, Any, Any]] = []  # (process, readiness check, child)
        for pool in plan.pools:
            waits_for += await _start_pool(supervisor, pool, run_dir)
        if plan.router is not None:
            router_path = _write_section(run_dir, "router", "router", plan.router)
            router = await supervisor.start("router", python_module_command("inferplane", "router", "--config",
                                                                            str(router_path)))
            router_health = f"{_connect_host(plan.router.host)}:{plan.router.health_port}"
            waits_for.append(("router", lambda: _grpc_serving(router_health, "readiness"), router))
        auth = None
        if plan.auth is not None:
            auth_path = _write_section(run_dir, "auth", "auth", plan.auth)
            auth_path.chmod(0o600)  # holds the internal key
            auth = await supervisor.start("auth", python_module_command("inferplane", "auth", "--config", str(auth_path)))
        envoy = await supervisor.start("envoy", envoy_command(gateway, write_bootstrap(gateway, run_dir)))
        batch = None
        if plan.batch is not None:
            (run_dir / "batch").mkdir(parents=True, exist_ok=True)
            batch_path = _write_section(run_dir, "batch", "batch", plan.batch)
            batch = await supervisor.start("batch", python_module_command("inferplane", "batch", "serve", "--config", str(batch_path)))
        prometheus = None
        if plan.observe.prometheus.enabled:
            prometheus = await supervisor.start("prometheus", observe_prometheus.command(plan, run_dir))
        console = None
        if plan.console is not None:
            console_path = _write_section(run_dir, "console", "console", plan.console)
            console = await supervisor.start("console", python_module_command("inferplane", "console", "--config", str(console_path)))
        supervisor.say(f"generated configuration in {run_dir}")

        async def ready(what: str, check, child) -> None:
            await wait_until(check, ready_timeout_s, what, alive=lambda: child.running)

        waits = [ready(what, check, child) for what, check, child in waits_for]
        waits.append(ready("envoy", lambda: _http_ok(f"http://{_connect_host(gateway.admin_host)}:{gateway.admin_port}/ready"), envoy))
        if auth is not None:
            auth_address = f"{_connect_host(plan.auth.host)}:{plan.auth.port}"
            waits.append(ready("auth", lambda: _grpc_serving(auth_address, "envoy.service.auth.v3.Authorization"), auth))
        if batch is not None:
            batch_url = f"http://{_connect_host(plan.batch.host)}:{plan.batch.port}/health"
            waits.append(ready("batch", lambda: _http_ok(batch_url), batch))
        if prometheus is not None:
            prometheus_ready = f"{observe_prometheus.base_url(plan.observe.prometheus)}/-/ready"
            waits.append(ready("prometheus", lambda: _http_ok(prometheus_ready), prometheus))
        if console is not None:
            console_root = f"http://{_connect_host(plan.console.host)}:{plan.console.port}/console"
            waits.append(ready("console", lambda: _http_ok(f"{console_root}/health"), console))
        startup = asyncio.ensure_future(asyncio.gather(*waits))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            startup.cancel()
            supervisor.say("interrupted before the platform was ready")
            return 130
        stopped.cancel()
        try:
            startup.result()
            probe_headers = {"authorization": f"Bearer {plan.auth.internal_key}"} if plan.auth else None
            await wait_until(lambda: _http_ok(f"{base_url}/models", probe_headers), 30.0, "gateway end to end")
        except (TimeoutError, RuntimeError) as exc:
            supervisor.say(f"start-up failed: {exc}")
            return 1
        parts = ", ".join(f"{len(pool.servers)} {'model' if pool.kind == 'llm' else 'serve-models'} server(s) "
                          f"and a picker" + (f" (pool {pool.name})" if pool.prefix else "") for pool in plan.pools)
        parts += (", router" if plan.router is not None else "") + ", envoy" + (", batch API" if batch else "")
        parts += ", auth (API keys)" if auth else ""
        parts += ", prometheus" if prometheus else ""
        parts += ", console" if console else ""
        supervisor.say(f"ready in {time.monotonic() - started:.1f}s: {parts}")
        if prometheus is not None:
            supervisor.say(f"Prometheus: {observe_prometheus.base_url(plan.observe.prometheus)}")
        if console is not None:
            via = f" (also {base_url.removesuffix('/v1')}/console/)" if gateway.console_address else ""
            supervisor.say(f"console: {console_root}/{via}")
        supervisor.say(f"OpenAI base URL: {base_url}")
        supervisor.say("press Ctrl-C to stop")
        if ready_event:
            ready_event.set()
        await stop.wait()
        supervisor.say("stopping")
        return 0
    finally:
        await supervisor.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        supervisor.say("all processes stopped")


def run(args: argparse.Namespace) -> int:
    config = platform_config_from_args(args)
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="inferplane-up-"))
    run_dir = run_dir.resolve()
    the_plan = plan(config, run_dir, args.config or "configuration")
    if the_plan.observe.prometheus.enabled:
        observe_prometheus.check(the_plan)
    _check_ports_free(the_plan)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop

        return uvloop.run(run_platform(the_plan, run_dir, config.ready_timeout_s))
    except ImportError:
        return asyncio.run(run_platform(the_plan, run_dir, config.ready_timeout_s))
