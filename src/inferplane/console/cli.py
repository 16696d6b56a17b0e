"""``inferplane console``: the web console, standalone against given picker / Batch API / Envoy URLs."""

from __future__ import annotations

import argparse

from inferplane.configfile import OverrideFlag, add_override_flags, load_model, overrides_from_flags, validate_model

FLAGS: list[OverrideFlag] = [
    ("--host", str, "address to listen on (default 127.0.0.1)"),
    ("--port", int, "port to listen on (default 8070)"),
    ("--picker-url", str, "the picker's metrics server, e.g. http://127.0.0.1:9090"),
    ("--batch-url", str, "the Batch API, e.g. http://127.0.0.1:8090"),
    ("--envoy-admin-url", str, "Envoy's admin interface, e.g. http://127.0.0.1:9901"),
    ("--poll-interval-s", float, "how often the sources are read (default 1)"),
]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "console",
        help="web console: pool load, routing decisions, queues, rollouts, batch jobs",
        description="Serve the web console at http://HOST:PORT/console/, reading the given picker, Batch API "
                    "and Envoy admin URLs.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file; settings under its `console` section")
    add_override_flags(parser, FLAGS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inferplane.console.config import ConsoleConfig
    from inferplane.console.server import serve

    base = load_model(ConsoleConfig, args.config, "console")
    overrides = overrides_from_flags(args, FLAGS)
    config = validate_model(ConsoleConfig, {**base.model_dump(), **overrides},
                            "command line" if not args.config else f"{args.config} and the command line")
    return serve(config)
