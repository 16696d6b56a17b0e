"""``inferplane gateway``: render the Envoy bootstrap, or run Envoy with it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from inferplane.configfile import read_yaml, validate_model
from inferplane.gateway.bootstrap import build_bootstrap
from inferplane.gateway.config import GatewayConfig
from inferplane.gateway.envoy import envoy_command, write_bootstrap


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run the Envoy data plane in front of the endpoint picker",
        description="Generate the Envoy bootstrap (listener → ext_proc picker → pool) and run Envoy.",
    )
    parser.add_argument("--config", help="YAML file; its 'gateway' section is read")
    parser.add_argument("--render", action="store_true", help="print the bootstrap as JSON and exit")
    parser.add_argument("--port", type=int, help="listener port (overrides the config)")
    parser.add_argument("--picker", dest="picker_address", help="picker gRPC address host:port")
    parser.add_argument("--endpoints", help="comma-separated pool endpoints host:port,...")
    parser.add_argument("--failure-mode", choices=["FailOpen", "FailClose"])
    parser.set_defaults(func=run)
    from inferplane.gateway.router import cli as router_cli

    router_cli.add_parser(subparsers)


def _config_from_args(args: argparse.Namespace) -> GatewayConfig:
    raw = dict(read_yaml(args.config).get("gateway") or {}) if args.config else {}
    if args.port is not None:
        raw["port"] = args.port
    if args.picker_address:
        raw["picker_address"] = args.picker_address
    if args.endpoints:
        raw["pool_endpoints"] = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if args.failure_mode:
        raw["failure_mode"] = args.failure_mode
    return validate_model(GatewayConfig, raw, source=args.config or "command line")


def run(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    if args.render:
        json.dump(build_bootstrap(config), sys.stdout, indent=1)
        print()
        return 0
    directory = Path(tempfile.mkdtemp(prefix="inferplane-gateway-"))
    command = envoy_command(config, write_bootstrap(config, directory))
    # Envoy takes over this process: signals reach it directly and it exits with its own code.
    os.execv(command[0], command)
    return 0  # not reached
