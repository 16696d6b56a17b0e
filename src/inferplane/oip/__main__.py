"""``python -m inferplane.oip``: the same as ``inferplane serve-models``."""

import argparse
import sys

from inferplane.configfile import ConfigError
from inferplane.oip.cli import add_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferplane.oip")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["serve-models", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"inferplane serve-models: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
