"""``inferplane models``: pull models from the hub into a store, list, inspect, remove and fetch them."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from inferplane.models.errors import BadReferenceError, ModelsError
from inferplane.models.urls import LATEST, parse_name_version

if TYPE_CHECKING:
    from inferplane.models.store import Store

# The actions import the store, hub and fsspec modules when they run: ``inferplane --help`` and
# the other components' commands must not pay for huggingface_hub and fsspec imports.

STORE_ENV = "INFERPLANE_MODEL_STORE"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``models`` and its actions."""
    parser = subparsers.add_parser(
        "models",
        help="manage the model store (pull from the hub, list, inspect, rm, fetch)",
        description="Immutable model versions in a store (local path, s3://, gs://) with a 'latest' pointer.",
    )
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    def store_option(p: argparse.ArgumentParser, *flags: str) -> None:
        p.add_argument(*flags, dest="store", metavar="URL", default=os.environ.get(STORE_ENV),
                       help=f"the store: a path, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (default ${STORE_ENV})")

    p = actions.add_parser("pull", help="download hf://ORG/NAME[@REV] into the store as a new version")
    p.add_argument("source", metavar="hf://ORG/NAME[@REV]")
    store_option(p, "--to", "--store")
    p.add_argument("--name", help="model name in the store (default ORG/NAME)")
    p.add_argument("--allow", "--include", dest="allow", action="append", metavar="PATTERN",
                   help="only files matching this glob (repeatable)")
    p.add_argument("--ignore", "--exclude", dest="ignore", action="append", metavar="PATTERN",
                   help="skip files matching this glob (repeatable)")
    p.add_argument("--staging-dir", type=Path, help="local staging for remote stores "
                   "(default $INFERPLANE_STAGING_DIR or ~/.cache/inferplane/staging)")
    p.add_argument("--no-latest", action="store_true", help="do not move the 'latest' pointer")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=_guarded(_pull))

    p = actions.add_parser("list", help="list models and versions in the store")
    store_option(p, "--store")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded(_list))

    p = actions.add_parser("inspect", help="show the manifest of NAME[@VERSION] (default latest)")
    p.add_argument("model", metavar="NAME[@VERSION]")
    store_option(p, "--store")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=_guarded(_inspect))

    p = actions.add_parser("rm", help="delete NAME@VERSION unless a server uses it")
    p.add_argument("model", metavar="NAME@VERSION")
    store_option(p, "--store")
    p.add_argument("--force", action="store_true", help="delete even if leased or pointed to by 'latest'")
    p.set_defaults(func=_guarded(_rm))

    p = actions.add_parser("fetch", help="fill the node-local cache with NAME[@VERSION]; print its path")
    p.add_argument("model", metavar="NAME[@VERSION]")
    store_option(p, "--store")
    p.add_argument("--cache-dir", type=Path, help="default $INFERPLANE_MODEL_CACHE or ~/.cache/inferplane/models")
    p.add_argument("--verify", choices=["changed", "full", "size"], default="changed",
                   help="check of an already cached version: sha256 of changed files (default), of all, or sizes")
    p.set_defaults(func=_guarded(_fetch))
    return parser


def _guarded(action: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run an action; user errors and store I/O errors become one line on stderr and an exit code."""

    @functools.wraps(action)
    def run(args: argparse.Namespace) -> int:
        prefix = f"inferplane models {args.models_action}"
        try:
            return action(args)
        except ModelsError as exc:
            print(f"{prefix}: {exc}", file=sys.stderr)
            return exc.exit_code
        except (OSError, ValueError) as exc:  # filesystem / credentials errors from fsspec backends
            print(f"{prefix}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1

    return run


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _store(args: argparse.Namespace) -> Store:
    from inferplane.models.store import Store

    if not args.store:
        raise BadReferenceError(f"no store given: pass --store URL (or --to for pull) or set ${STORE_ENV}")
    return Store(args.store)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _pull(args: argparse.Namespace) -> int:
    from inferplane.models.pull import pull

    result = pull(args.source, _store(args), name=args.name, allow_patterns=args.allow,
                  ignore_patterns=args.ignore, staging_root=args.staging_dir,
                  update_latest=not args.no_latest, progress=not args.quiet)
    m = result.manifest
    state = "pulled" if result.created else "already in the store:"
    latest = "" if args.no_latest else " (latest)"
    print(f"{state} {result.ref}{latest}: {len(m.files)} files, {_size(m.total_size)}, commit {m.commit}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from inferplane.models.leases import live_leases

    store = _store(args)
    store.check_exists()
    rows = []
    for name, versions in store.models().items():
        latest = store.latest(name)
        for version in versions:
            m = store.read_manifest(name, version)
            rows.append({"name": name, "version": version, "latest": version == latest,
                         "files": len(m.files), "size": m.total_size, "created": m.created.isoformat(),
                         "source": m.source, "in_use": len(live_leases(store, name, version))})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no models in {store.url}")
        return 0
    table = [("NAME", "VERSION", "LATEST", "FILES", "SIZE", "CREATED", "IN USE", "SOURCE")]
    for r in rows:
        table.append((r["name"], r["version"], "*" if r["latest"] else "", str(r["files"]), _size(r["size"]),
                      r["created"][:19].replace("T", " "), str(r["in_use"]), r["source"]))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from inferplane.models.leases import live_leases

    store = _store(args)
    name, version = parse_name_version(args.model)
    version = store.resolve(name, version or LATEST)
    m = store.read_manifest(name, version)
    if args.json:
        sys.stdout.write(m.to_json().decode())
        return 0
    leases = live_leases(store, name, version)
    print(f"model:    {m.name}@{m.version}{'  (latest)' if store.latest(name) == version else ''}")
    print(f"source:   {m.source}  commit {m.commit}")
    if m.allow_patterns or m.ignore_patterns:
        print(f"patterns: allow {m.allow_patterns or '*'}  ignore {m.ignore_patterns or '-'}")
    print(f"created:  {m.created.isoformat()}")
    print(f"in use:   {', '.join(lease.holder for lease in leases) if leases else 'no'}")
    print(f"files:    {len(m.files)}, {_size(m.total_size)}")
    width = max((len(f.path) for f in m.files), default=0)
    for f in m.files:
        print(f"  {f.path.ljust(width)}  {_size(f.size):>9}  {f.sha256}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    from inferplane.models.remove import remove_version

    store = _store(args)
    name, version = parse_name_version(args.model, default_version=None)
    if version is None or version == LATEST:
        raise BadReferenceError("rm needs an explicit version: NAME@VERSION (see 'inferplane models list')")
    remove_version(store, name, version, force=args.force)
    print(f"removed {name}@{version}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from inferplane.models.cache import ensure_cached

    name, version = parse_name_version(args.model)
    result = ensure_cached(_store(args), name, version or LATEST, args.cache_dir, verify=args.verify)
    if result.repaired:
        print(f"fetched again (damaged in the cache): {', '.join(result.repaired)}", file=sys.stderr)
    print(result.path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of this component alone: ``python -m inferplane.models.cli ...``."""
    parser = argparse.ArgumentParser(prog="inferplane")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(["models", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
