"""The ``inferplane`` command: one subcommand per component.

Each component module exposes ``add_parser(subparsers)``, which registers its subcommand and sets
``func`` on the parsed namespace to a callable returning the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from inferplane import __version__
from inferplane.configfile import ConfigError

# Modules providing subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "inferplane.up",
    "inferplane.server.cli",
    "inferplane.picker.cli",
    "inferplane.gateway.cli",
    "inferplane.models.cli",
    "inferplane.rollout.cli",
    "inferplane.deploy.cli",
    "inferplane.jobs.cli",
    "inferplane.console.cli",
    "inferplane.oip.cli",
    "inferplane.sim.cluster.cli",
    "inferplane.auth.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferplane",
        description="inferplane: an inference platform of Envoy, a GIE endpoint picker and OpenAI-compatible servers.",
    )
    parser.add_argument("--version", action="version", version=f"inferplane {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"inferplane {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
