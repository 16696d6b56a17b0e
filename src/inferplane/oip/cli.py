"""``inferplane serve-models`` (alias ``oip``): serve a model repository over the Open Inference Protocol."""

from __future__ import annotations

import argparse
from typing import Any

from inferplane.configfile import add_override_flags, overrides_from_flags

_OVERRIDE_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--repository", str, "model repository directory: MODEL/config.yaml and MODEL/VERSION/"),
    ("--host", str, "address to listen on (default 127.0.0.1)"),
    ("--port", int, "HTTP port: v2 REST, /v1/embeddings, /metrics (default 8000)"),
    ("--grpc-port", int, "gRPC port for inference.GRPCInferenceService (default: no gRPC)"),
    ("--cache-dir", str, "where exported models are cached (default REPOSITORY/.cache)"),
    ("--log-level", str, "log level (default warning)"),
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``serve-models`` subcommand."""
    parser = subparsers.add_parser(
        "serve-models",
        aliases=["oip"],
        help="serve classic and embedding models (KServe v2 / Triton protocol)",
        description="Serve a model repository over v2 REST and gRPC with dynamic batching, plus OpenAI /v1/embeddings.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file (section 'oip')")
    add_override_flags(parser, _OVERRIDE_FLAGS)
    parser.add_argument("--load-model", action="append", dest="load_models", metavar="NAME", help="load only these models at start (repeatable)")
    parser.set_defaults(func=run)
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides = overrides_from_flags(args, _OVERRIDE_FLAGS)
    if args.load_models:
        overrides["load_models"] = args.load_models
    return overrides


def run(args: argparse.Namespace) -> int:
    """Validate the configuration, then serve until interrupted."""
    from inferplane.oip.config import load_oip_config
    from inferplane.oip.runner import serve

    serve(load_oip_config(args.config, overrides_from_args(args)))
    return 0
