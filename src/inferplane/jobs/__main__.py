"""``python -m inferplane.jobs batch|async …`` (the same commands as ``inferplane batch|async``)."""

from __future__ import annotations

import argparse
import sys

from inferplane.configfile import ConfigError
from inferplane.jobs.cli import add_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferplane.jobs")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND"))
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
