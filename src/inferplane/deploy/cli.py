"""``inferplane render``: the Kubernetes manifests of a release, without Helm."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inferplane.deploy.render import (
    DEFAULT_NAMESPACE,
    DEFAULT_RELEASE,
    load_values,
    render_manifests,
    to_yaml,
    write_manifests,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``render``."""
    parser = subparsers.add_parser(
        "render",
        help="render the Kubernetes manifests (the Helm chart's output) without Helm",
        description="Render the manifests of deploy/helm/inferplane from values files, like `helm template`.",
    )
    parser.add_argument(
        "--values", "-f", action="append", default=[], metavar="FILE", help="values file (repeatable, later wins)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one value (repeatable)")
    parser.add_argument("--output", "-o", metavar="DIR", help="write one file per object here (default: stdout)")
    parser.add_argument("--release", default=DEFAULT_RELEASE, help=f"release name (default {DEFAULT_RELEASE})")
    parser.add_argument("--namespace", "-n", default=DEFAULT_NAMESPACE, help=f"namespace (default {DEFAULT_NAMESPACE})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    values = load_values(args.values, args.set)
    manifests = render_manifests(values, args.release, args.namespace)
    if args.output:
        paths = write_manifests(manifests, Path(args.output))
        print(f"wrote {len(paths)} manifests to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(to_yaml(manifests))
    return 0
