"""``inferplane keys`` (create, list, revoke API keys) and ``inferplane auth`` (the ext_authz service)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from inferplane.auth.config import AuthConfig
from inferplane.configfile import ConfigError, load_model

KEYS_FILE_ENV = "INFERPLANE_KEYS_FILE"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser(
        "keys", help="create, list and revoke API keys",
        description="Manage API keys. The keys file is --keys-file, else auth.keys_file of --config, "
                    f"else ${KEYS_FILE_ENV}. Only hashes are stored; a new key is printed once.",
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key for a tenant and print it (once)")
    create.add_argument("--tenant", required=True, help="tenant (fairness id) of every request made with the key")
    create.add_argument("--models", default="", help="comma-separated models the key may use (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute for the tenant")
    create.add_argument("--tpm", type=int, help="tokens per minute for the tenant (prompt estimate + max_tokens)")
    create.set_defaults(func=_create)
    listing = actions.add_parser("list", help="list keys (ids, tenants, limits; never the keys)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.set_defaults(func=_list)
    revoke = actions.add_parser("revoke", help="revoke a key by id (takes effect at once)")
    revoke.add_argument("key_id", help="the key's id (or the key itself)")
    revoke.set_defaults(func=_revoke)
    for action in (create, listing, revoke):
        action.add_argument("--keys-file", help="the keys file")
        action.add_argument("--config", help="a YAML file whose auth.keys_file names the keys file")

    auth = subparsers.add_parser(
        "auth", help="run the Envoy ext_authz service (API keys, tenants, rate limits)",
        description="Serve envoy.service.auth.v3.Authorization for the keys file of the `auth` section.",
    )
    auth.add_argument("--config", help="YAML file with an `auth` section")
    auth.add_argument("--keys-file", help="the keys file (overrides auth.keys_file)")
    auth.add_argument("--port", type=int, help="gRPC port (overrides auth.port)")
    auth.set_defaults(func=_serve)


def keys_path(args: argparse.Namespace) -> Path:
    if args.keys_file:
        return Path(args.keys_file)
    if args.config:
        config = load_model(AuthConfig, args.config, "auth")
        if config.keys_file:
            return Path(config.keys_file)
        raise ConfigError(f"{args.config}: auth.keys_file is not set")
    if os.environ.get(KEYS_FILE_ENV):
        return Path(os.environ[KEYS_FILE_ENV])
    raise ConfigError(f"no keys file: pass --keys-file, --config with auth.keys_file, or set ${KEYS_FILE_ENV}")


def _create(args: argparse.Namespace) -> int:
    from inferplane.auth.keys import create_key

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    path = keys_path(args)
    record, key = create_key(path, args.tenant, models, args.rpm, args.tpm)
    print(key)
    scope = ", ".join(record.models) or "all models"
    print(f"created key {record.id} for tenant {record.tenant!r} ({scope}) in {path}; "
          "this is the only time the key is shown", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    from inferplane.auth.keys import read_keys

    records = [r for r in read_keys(keys_path(args)).keys if args.all or r.active]
    if args.json:
        print(json.dumps([r.model_dump(exclude={"hash"}) for r in records], indent=2))
        return 0
    print(f"{'ID':<14} {'TENANT':<20} {'MODELS':<30} {'RPM':>6} {'TPM':>8}  STATUS")
    for r in records:
        status = "active" if r.active else "revoked"
        print(f"{r.id:<14} {r.tenant:<20} {','.join(r.models) or '*':<30} {r.rpm or '-':>6} {r.tpm or '-':>8}  {status}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from inferplane.auth.keys import revoke_key

    record = revoke_key(keys_path(args), args.key_id)
    if record is None:
        print(f"inferplane keys revoke: no active key {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked key {record.id} of tenant {record.tenant!r}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from inferplane.auth.service import serve

    config = load_model(AuthConfig, args.config, "auth") if args.config else AuthConfig()
    if args.keys_file:
        config.keys_file = args.keys_file
    if args.port is not None:
        config.port = args.port
    if not config.keys_file:
        raise ConfigError("auth.keys_file is not set: there are no keys to enforce")
    return serve(config)
