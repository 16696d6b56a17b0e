"""The ``inferplane picker`` subcommand."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``picker``: run the endpoint picker (ext_proc gRPC, health, metrics)."""
    parser = subparsers.add_parser(
        "picker",
        help="run the endpoint picker (Envoy ext_proc, GIE protocol)",
        description="Run the endpoint picker: an Envoy ext_proc gRPC service choosing the "
        "model server for each inference request (Gateway API Inference Extension protocol).",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file; settings under its `picker` section (and `kubernetes`, as the Helm chart writes it)",
    )
    parser.add_argument("--grpc-port", type=int, help="override picker.grpc_port")
    parser.add_argument(
        "--endpoint",
        action="append",
        metavar="IP:PORT",
        help="model server endpoint (repeatable); adds to picker.endpoints",
    )
    parser.add_argument("--log-format", choices=["text", "json"], help="override picker.telemetry.log_format")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the configuration and serve until SIGTERM / SIGINT."""
    from pydantic import ValidationError

    from inferplane.configfile import ConfigError, format_validation_error
    from inferplane.picker.config import PickerConfig
    from inferplane.picker.kubernetes.config import load_picker_config
    from inferplane.picker.server import serve

    config = load_picker_config(args.config)  # the `picker` section, plus a top-level `kubernetes` one
    overrides: dict[str, object] = {}
    if args.grpc_port is not None:
        overrides["grpc_port"] = args.grpc_port
    if args.endpoint:
        overrides["endpoints"] = [*config.endpoints, *args.endpoint]
    if getattr(args, "log_format", None):
        overrides["telemetry"] = {**config.telemetry.model_dump(), "log_format": args.log_format}
    if overrides:
        try:
            config = PickerConfig.model_validate({**config.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "the command line")) from None
    return serve(config)
